/*
 * proto/codes.c - the names of error codes, job and task states and job kinds
 * declared in burst.h.  These strings are the wire form (proto/PROTOCOL.md)
 * and the CLI's vocabulary, so they live in one table each and both
 * directions (code -> name, name -> code) are read from the same table.
 */
#include "burst.h"

#include <stddef.h>
#include <string.h>

struct code_name {
    int code;
    const char *name;
    const char *text;
};

/* Ordered by code, BURST_EPROTO first; burst_error_lookup relies on it. */
static const struct code_name error_names[] = {
    {BURST_EPROTO, "protocol", "malformed frame or message"},
    {BURST_ETOOBIG, "too_large", "a size limit was exceeded"},
    {BURST_EVERSION, "version", "unsupported protocol version"},
    {BURST_EUNKNOWNOP, "unknown_op", "no such operation"},
    {BURST_EBADFIELD, "bad_field", "missing field, wrong type or bad value"},
    {BURST_ENOJOB, "no_such_job", "no such job"},
    {BURST_ENOTASK, "no_such_task", "no such task"},
    {BURST_EPERM, "permission", "permission denied"},
    {BURST_ENOFN, "no_such_function", "function library not uploaded"},
    {BURST_ENOSYM, "no_such_symbol", "symbol not found in the library"},
    {BURST_ESTORAGE, "storage", "the storage backend failed"},
    {BURST_ELEDGER, "ledger", "the ledger could not be written"},
    {BURST_EBUSY, "busy", "too many connections or requests"},
    {BURST_ESHUTDOWN, "shutting_down", "the daemon is shutting down"},
    {BURST_EINTERNAL, "internal", "internal error in the daemon"},
    {BURST_ENORESULT, "no_result", "the task has no result"},
    {BURST_ENOTREADY, "not_ready", "the job has not ended yet"},
    {BURST_ECONNECT, "connect", "cannot reach the daemon"},
    {BURST_EJOBFAILED, "job_failed", "the job failed"},
    {BURST_ECANCELLED, "cancelled", "the job was cancelled"},
    {BURST_EINPUT, "input", "an input could not be read"},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static const char *const job_state_names[BURST_JOB_NSTATES] = {
    [BURST_JOB_QUEUED] = "queued",       [BURST_JOB_RUNNING] = "running",
    [BURST_JOB_SUCCEEDED] = "succeeded", [BURST_JOB_FAILED] = "failed",
    [BURST_JOB_CANCELLED] = "cancelled",
};

static const char *const task_state_names[BURST_TASK_NSTATES] = {
    [BURST_TASK_QUEUED] = "queued",     [BURST_TASK_DISPATCHED] = "dispatched",
    [BURST_TASK_RUNNING] = "running",   [BURST_TASK_SUCCEEDED] = "succeeded",
    [BURST_TASK_FAILED] = "failed",     [BURST_TASK_TIMEOUT] = "timeout",
    [BURST_TASK_RETRYING] = "retrying", [BURST_TASK_CANCELLED] = "cancelled",
};

static const char *const job_kind_names[] = {
    [BURST_KIND_MAP] = "map",
    [BURST_KIND_MAP_REDUCE] = "map_reduce",
    [BURST_KIND_CALL] = "call",
};

static const struct code_name *
error_lookup(int code)
{
    if (code > BURST_EPROTO || code < BURST_EPROTO - (int)NELEM(error_names) + 1)
        return NULL;
    return &error_names[BURST_EPROTO - code];
}

/* Compares a counted string from the wire with a C string. */
static int
name_eq(const char *name, size_t len, const char *c)
{
    return name != NULL && strlen(c) == len && memcmp(name, c, len) == 0;
}

static int
name_index(const char *const *names, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (names[i] != NULL && name_eq(name, len, names[i]))
            return (int)i;
    return -1;
}

const char *
burst_strerror(int code)
{
    if (code == 0)
        return "success";
    const struct code_name *e = error_lookup(code);
    if (e != NULL)
        return e->text;
    /* Codes between -1 and -999 are negated errno values (burst.h). */
    if (code < 0 && code > -1000)
        return strerror(-code);
    return "unknown error";
}

const char *
burst_error_name(int code)
{
    if (code == 0)
        return "ok";
    const struct code_name *e = error_lookup(code);
    /* A code outside the table (a stray errno value) is a daemon-side
     * condition the client cannot act on, so it travels as "internal". */
    return e != NULL ? e->name : "internal";
}

int
burst_error_from_name(const char *name, size_t len)
{
    for (size_t i = 0; i < NELEM(error_names); i++)
        if (name_eq(name, len, error_names[i].name))
            return error_names[i].code;
    return BURST_EINTERNAL;
}

const char *
burst_job_state_name(int state)
{
    if (state < 0 || state >= BURST_JOB_NSTATES)
        return NULL;
    return job_state_names[state];
}

const char *
burst_task_state_name(int state)
{
    if (state < 0 || state >= BURST_TASK_NSTATES)
        return NULL;
    return task_state_names[state];
}

int
burst_job_state_from_name(const char *name, size_t len)
{
    return name_index(job_state_names, NELEM(job_state_names), name, len);
}

int
burst_task_state_from_name(const char *name, size_t len)
{
    return name_index(task_state_names, NELEM(task_state_names), name, len);
}

const char *
burst_job_kind_name(int kind)
{
    if (kind < 0 || (size_t)kind >= NELEM(job_kind_names))
        return NULL;
    return job_kind_names[kind];
}

int
burst_task_state_is_final(int state)
{
    return state == BURST_TASK_SUCCEEDED || state == BURST_TASK_FAILED ||
           state == BURST_TASK_TIMEOUT || state == BURST_TASK_CANCELLED;
}

int
burst_job_state_is_final(int state)
{
    return state == BURST_JOB_SUCCEEDED || state == BURST_JOB_FAILED ||
           state == BURST_JOB_CANCELLED;
}
