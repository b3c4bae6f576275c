/*
 * proto/msg.h - every message of the burst wire protocol, as C structs, and
 * the one module that encodes and decodes them (proto/msg.c).  The daemon and
 * libburst both use it, so the two sides cannot drift apart.  The format is
 * documented for other implementers in proto/PROTOCOL.md.
 *
 * A frame is a 4-byte big-endian length N followed by N bytes holding one
 * msgpack map (proto/frame.h).  Three shapes of map travel:
 *   request  {"op": str, "id": uint, ...}          client -> daemon
 *   reply    {"re": uint, "ok": true, ...}         daemon -> client
 *            {"re": uint, "ok": false, "error": {"code": str, "message": str}}
 *   event    {"ev": "events", "job": uint, "items": [...]}  daemon -> client
 *
 * Decoding never trusts the wire: every field is checked for presence, type
 * and bounds against struct proto_limits; unknown keys are ignored (so newer
 * clients can add optional fields).  Decoded strings and byte strings are
 * borrowed from the frame buffer (struct proto_str is not NUL-terminated)
 * and stay valid until the message is freed and the buffer is released.
 */
#ifndef BURST_PROTO_MSG_H
#define BURST_PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "burst.h"
#include "proto_limits.h"

#define PROTO_VERSION 1
/*
 * Additions within a version that an older peer ignores rather than
 * refuses, announced in the hello reply (absent: 0) so that a client uses
 * them only with a daemon that has them:
 *   1: results with "final"; a subscription ends with its job's final event
 */
#define PROTO_REVISION 1

struct proto_str {
    const char *ptr; /* borrowed from the frame; NULL when absent */
    size_t len;
};

/* A growable output buffer holding one or more complete frames. */
struct proto_buf {
    char *data; /* owned */
    size_t len;
    size_t cap;
};

void proto_buf_init(struct proto_buf *b);
void proto_buf_free(struct proto_buf *b);
void proto_buf_reset(struct proto_buf *b); /* len = 0, keeps memory */

enum proto_op {
    PROTO_OP_HELLO = 1,
    PROTO_OP_SUBMIT,
    PROTO_OP_PUT_FN,
    PROTO_OP_STATUS,
    PROTO_OP_JOBS,
    PROTO_OP_TASKS,
    PROTO_OP_RESULTS,
    PROTO_OP_CANCEL,
    PROTO_OP_LOGS,
    PROTO_OP_QUOTA,
    PROTO_OP_SUBSCRIBE,
    PROTO_OP_UNSUBSCRIBE,
    PROTO_OP_COUNT_ /* one past the last */
};

const char *proto_op_name(enum proto_op op);

/* ---- pieces ------------------------------------------------------------- */

struct proto_fn {
    int kind;                /* BURST_FN_EXEC or BURST_FN_SO */
    struct proto_str cmd;    /* exec: the shell command, 1..limits.max_string */
    struct proto_str hash;   /* so: SHA-256 of the library, 64 lowercase hex */
    struct proto_str symbol; /* so: a C identifier, 1..255 bytes */
};

struct proto_opts {
    uint32_t chunksize;  /* >= 1; default 1 */
    uint32_t retries;    /* default 0, at most limits.max_retries */
    uint64_t timeout_ms; /* 0 = none */
    uint32_t memory_mb;  /* 0 = none */
    struct proto_str backend; /* absent = daemon default */
    struct proto_str name;    /* absent = none */
    bool cancel_on_disconnect;
};

/* ---- requests ----------------------------------------------------------- */

struct proto_hello {
    uint32_t version;        /* must be PROTO_VERSION */
    struct proto_str client; /* free text, e.g. "libburst 0.1.0" */
};

/* Inputs come either as an array of byte strings (one per task) or as one
 * byte string split after every '\n' (a last line without one counts too). */
enum proto_input_mode { PROTO_INPUT_ARRAY = 0, PROTO_INPUT_LINES = 1 };

struct proto_submit {
    int kind;                 /* enum burst_job_kind */
    struct proto_fn fn;
    struct proto_fn reduce;   /* map_reduce only */
    int input_mode;           /* enum proto_input_mode */
    uint32_t ninputs;         /* ARRAY: number of inputs; LINES: number of lines */
    struct proto_str *inputs; /* ARRAY: owned array of borrowed byte strings */
    struct proto_str blob;    /* LINES: the whole text */
    struct proto_opts opts;
    bool subscribe;           /* also subscribe this connection to the job */
};

struct proto_put_fn {
    struct proto_str hash; /* 64 lowercase hex; the daemon verifies it */
    struct proto_str data; /* the shared library's bytes */
};

struct proto_job_ref { /* status, cancel, unsubscribe */
    uint64_t job;
};

struct proto_jobs {
    bool all; /* false: the caller's active jobs; true: every job it may see */
};

struct proto_tasks {
    uint64_t job;
    int state;       /* -1 = any */
    uint32_t offset; /* first task index to consider */
    uint32_t limit;  /* 0 = server default (limits.page_tasks) */
};

struct proto_results {
    uint64_t job;
    uint32_t from;      /* first task index wanted */
    uint32_t max_bytes; /* 0 = server default; the reply holds >= 1 item */
    bool final;         /* only the results a user sees: a map_reduce job's reducer */
};

struct proto_logs {
    uint64_t job;
    uint32_t task;
};

struct proto_quota {
    bool has_set;
    uint32_t set; /* >= 1 */
};

struct proto_subscribe {
    uint64_t job;
    uint64_t from_seq; /* events with seq > from_seq are sent; 0 = all */
};

struct proto_request {
    enum proto_op op;
    uint64_t id;
    union {
        struct proto_hello hello;
        struct proto_submit submit;
        struct proto_put_fn put_fn;
        struct proto_job_ref job; /* STATUS, CANCEL, UNSUBSCRIBE */
        struct proto_jobs jobs;
        struct proto_tasks tasks;
        struct proto_results results;
        struct proto_logs logs;
        struct proto_quota quota;
        struct proto_subscribe subscribe;
    } u;
    void *priv_; /* owned: decoder state (msgpack zone, arrays) */
};

/* ---- replies ------------------------------------------------------------ */

struct proto_error {
    int code;                /* BURST_E* */
    struct proto_str message; /* human text, borrowed */
};

struct proto_hello_reply {
    uint32_t version;
    uint32_t revision;       /* PROTO_REVISION of the daemon; 0 when absent */
    struct proto_str server; /* "burstd 0.1.0" */
    uint32_t uid;            /* the caller's uid as the daemon saw it */
    bool admin;
    struct proto_limits limits;
};

struct proto_submit_reply {
    uint64_t job;
    uint32_t total;
};

struct proto_job_info { /* STATUS reply; an element of JOBS */
    uint64_t id;
    uint32_t owner_uid;
    int kind;
    int state;
    uint32_t total;
    uint32_t counts[BURST_TASK_NSTATES]; /* on the wire: map state name -> n */
    int64_t created_ms, started_ms, finished_ms;
    struct proto_str backend;
    struct proto_str name;
    struct proto_str function; /* "exec: CMD" or "so: SYMBOL" */
    struct proto_str error;
    uint64_t last_seq;         /* the job's newest event */
};

struct proto_jobs_reply {
    uint32_t n;
    struct proto_job_info *jobs; /* owned array */
};

struct proto_task_info {
    uint32_t index;
    int state;
    uint32_t attempts;
    int32_t exit_status; /* -1 = none */
    int32_t signal;      /* 0 = none */
    int64_t started_ms, finished_ms;
    struct proto_str reason;
};

struct proto_tasks_reply {
    uint32_t n;
    struct proto_task_info *tasks; /* owned array */
    bool more;                     /* more tasks after the last one */
};

struct proto_result_item {
    uint32_t index;
    bool has_data;         /* false: the task has no result (it failed) */
    struct proto_str data;
};

struct proto_results_reply {
    uint32_t n;
    struct proto_result_item *items; /* owned array */
    bool more;                       /* call again from = last index + 1 */
};

struct proto_logs_reply {
    uint32_t attempts;
    struct proto_str reason;
    struct proto_str log;
};

struct proto_quota_reply {
    uint32_t quota;
    uint32_t in_use;
};

struct proto_cancel_reply {
    int state; /* the job's state after the call */
};

struct proto_reply {
    enum proto_op op; /* not on the wire: the decoder needs to be told */
    uint64_t re;
    bool ok;
    union {
        struct proto_error error; /* when !ok */
        struct proto_hello_reply hello;
        struct proto_submit_reply submit;
        struct proto_job_info status;
        struct proto_jobs_reply jobs;
        struct proto_tasks_reply tasks;
        struct proto_results_reply results;
        struct proto_logs_reply logs;
        struct proto_quota_reply quota;
        struct proto_cancel_reply cancel;
        /* PUT_FN, SUBSCRIBE, UNSUBSCRIBE: nothing beyond ok */
    } u;
    void *priv_;
};

/* ---- events ------------------------------------------------------------- */

/* One entry of a job's event log.  A TASK item may cover several tasks that
 * changed together; on the wire it is {"seq", "type": "tasks",
 * "tasks": [[index, state, attempts], ...]}; a JOB item is
 * {"seq", "type": "job", "state": str}. */
struct proto_task_change {
    uint32_t index;
    int state;
    uint32_t attempts;
};

struct proto_event_item {
    uint64_t seq;
    int type;                        /* BURST_EV_JOB or BURST_EV_TASK */
    int job_state;                   /* JOB */
    uint32_t ntasks;                 /* TASK */
    struct proto_task_change *tasks; /* TASK: owned by the decoder/encoder caller */
};

struct proto_events {
    uint64_t job;
    uint32_t nitems;
    struct proto_event_item *items;
};

/* ---- decoding ----------------------------------------------------------- */

/* What kind of map a frame holds, without decoding the rest. */
enum proto_kind { PROTO_KIND_REQUEST, PROTO_KIND_REPLY, PROTO_KIND_EVENT };

/*
 * Decodes the payload of one frame (without the length prefix).
 * Returns 0 and fills *req, which must then be released with
 * proto_request_free(); the payload must outlive *req.
 * On failure returns a BURST_E* code, fills err->code/message (message is a
 * static or thread-local string: copy it before the next call) and sets
 * *id_out to the request id when one could be read (else 0), so the caller
 * can address its error reply.  Nothing needs freeing on failure.
 * lim, err and id_out may be NULL (default limits; no report).  Decoding
 * normalises: absent options take their defaults, tasks.limit and
 * results.max_bytes are clamped to page_tasks / page_bytes.
 */
int proto_decode_request(const char *payload, size_t len, const struct proto_limits *lim,
                         struct proto_request *req, struct proto_error *err,
                         uint64_t *id_out);
void proto_request_free(struct proto_request *req);

/* Client side.  proto_peek() says whether a payload is a reply or an event
 * and, for a reply, its "re".  The client then decodes with the op it
 * remembered for that request id.
 * proto_decode_reply returns 0 for any well-formed reply, error replies
 * included (rep->ok false, rep->u.error.code a BURST_E*; unknown code names
 * read as BURST_EINTERNAL); BURST_EPROTO when the daemon sent something
 * malformed; -ENOMEM; -EINVAL for an op out of range.  Only a 0 return needs
 * proto_reply_free().  lim may be NULL; replies are checked for structure,
 * types and lim->max_depth, not for the daemon's own limits.
 * proto_decode_events returns 0 (release *priv with proto_events_free),
 * BURST_EUNKNOWNOP for an event frame of a kind this side does not know (skip
 * it), BURST_EPROTO or -ENOMEM; on failure *priv is NULL. */
int proto_peek(const char *payload, size_t len, enum proto_kind *kind, uint64_t *re);
int proto_decode_reply(const char *payload, size_t len, enum proto_op op,
                       const struct proto_limits *lim, struct proto_reply *rep);
void proto_reply_free(struct proto_reply *rep);
int proto_decode_events(const char *payload, size_t len, const struct proto_limits *lim,
                        struct proto_events *ev, void **priv);
void proto_events_free(void *priv);

/* ---- encoding ----------------------------------------------------------- */

/* Each appends one complete frame (length prefix included) to out.
 * Returns 0, -ENOMEM, or BURST_ETOOBIG when the frame would exceed
 * PROTO_FRAME_HARD_MAX, or -EINVAL when a field has no wire form (an enum
 * value out of range, inputs NULL with ninputs > 0).  On failure out is left
 * as it was.  The encoders trust their input: validation is the decoder's
 * job.  A proto_str with ptr NULL is left out where the field is optional. */
int proto_encode_request(struct proto_buf *out, const struct proto_request *req);
int proto_encode_reply(struct proto_buf *out, const struct proto_reply *rep);
int proto_encode_error(struct proto_buf *out, uint64_t re, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int proto_encode_events(struct proto_buf *out, const struct proto_events *ev);

/* Convenience for building a struct proto_str from a C string (may be NULL). */
struct proto_str proto_str_c(const char *s);
/* Copies s into dst (size bytes, always NUL-terminated, truncated if need be). */
void proto_str_copy(char *dst, size_t size, struct proto_str s);
bool proto_str_eq(struct proto_str s, const char *c);

#endif /* BURST_PROTO_MSG_H */
