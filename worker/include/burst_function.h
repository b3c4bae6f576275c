/*
 * burst_function.h - what a C function run by burst looks like.
 *
 * Write a function with this signature in a shared library:
 *
 *     #include <burst_function.h>
 *     int upper(const burst_input *in, burst_output *out)
 *     {
 *         ... read in->data[0 .. in->len) ...
 *         return burst_write(out, buf, n);
 *     }
 *
 * and submit it with `burst map --so lib.so:upper`.  Returning 0 means the
 * task succeeded and what was written is its result; any other value fails
 * the task with that value as its exit status.  Anything written to stderr
 * becomes the task's log.  The function may be called many times in one
 * process (once per task of an invocation), so it must not leak or keep
 * state between calls it cannot afford to keep.  A crash fails only the
 * task that crashed.
 *
 * That process may also outlive the invocation: a warm worker keeps it, the
 * library loaded, for the next invocation of the same library (of this job
 * or another of the same user), as a warm serverless container would.  A
 * function's globals and static state may therefore survive between
 * invocations, or may not (a fresh process follows a crash, a timeout, an
 * out-of-memory end, another memory limit, a worker's end): do not rely on
 * them either way.
 *
 * A map_reduce reducer of kind so receives the map outputs in task order as
 * in->parts[0 .. in->nparts); in->data/len are then NULL/0.
 */
#ifndef BURST_FUNCTION_H
#define BURST_FUNCTION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BURST_FUNCTION_ABI 1

typedef struct burst_part {
    const void *data;
    size_t len;
} burst_part;

typedef struct burst_input {
    const void *data;        /* this task's input (not NUL-terminated) */
    size_t len;
    uint64_t job_id;
    uint32_t task_index;
    uint32_t attempt;        /* 1 for the first attempt */
    size_t nparts;           /* reducer only */
    const burst_part *parts; /* reducer only */
} burst_input;

typedef struct burst_output burst_output;
struct burst_output {
    /* Appends len bytes to the task's result; returns 0 or -1 (out of memory). */
    int (*write)(burst_output *out, const void *data, size_t len);
    void *priv; /* the worker's */
};

static inline int
burst_write(burst_output *out, const void *data, size_t len)
{
    return out->write(out, data, len);
}

typedef int (*burst_function)(const burst_input *in, burst_output *out);

#ifdef __cplusplus
}
#endif
#endif /* BURST_FUNCTION_H */
