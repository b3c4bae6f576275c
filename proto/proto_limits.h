/*
 * proto/proto_limits.h - the bounds every message is checked against.
 *
 * The daemon announces its limits in the hello reply so that a client can
 * split work before it is refused.  Defaults are generous for real work and
 * small enough that one client cannot exhaust the daemon's memory.
 */
#ifndef BURST_PROTO_LIMITS_H
#define BURST_PROTO_LIMITS_H

#include <stdint.h>

/* No configuration may raise a frame above this; the length prefix of a
 * larger frame is rejected before any byte of it is buffered. */
#define PROTO_FRAME_HARD_MAX (1024u * 1024u * 1024u)

struct proto_limits {
    uint32_t max_frame;    /* bytes in one frame's payload */
    uint32_t max_depth;    /* msgpack nesting depth */
    uint32_t max_string;   /* bytes in one string (commands, names, messages) */
    uint32_t max_input;    /* bytes in one task input */
    uint32_t max_tasks;    /* tasks in one job */
    uint32_t max_retries;  /* retries per task */
    uint32_t max_chunksize;
    uint32_t max_fn_size;  /* bytes of an uploaded shared library */
    uint32_t page_tasks;   /* default and maximum tasks per TASKS reply */
    uint32_t page_bytes;   /* default and maximum result bytes per RESULTS reply */
    /* Announced in hello, enforced by the daemon per connection (not by
     * the decoder): jobs one connection may follow at once. */
    uint32_t max_subscriptions;
};

#define PROTO_LIMITS_DEFAULT                                                              \
    {                                                                                     \
        .max_frame = 256u * 1024u * 1024u, .max_depth = 16, .max_string = 64u * 1024u,    \
        .max_input = 64u * 1024u * 1024u, .max_tasks = 10u * 1000u * 1000u,               \
        .max_retries = 100, .max_chunksize = 100000, .max_fn_size = 128u * 1024u * 1024u, \
        .page_tasks = 10000, .page_bytes = 4u * 1024u * 1024u, .max_subscriptions = 1024,  \
    }

void proto_limits_default(struct proto_limits *lim);

#endif /* BURST_PROTO_LIMITS_H */
