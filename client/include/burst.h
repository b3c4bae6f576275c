/*
 * burst.h - the public C interface of libburst, the thin client of burstd.
 *
 * A program connects to the daemon's Unix socket, submits map, map_reduce or
 * single-call jobs, and either waits for them (Pool.map style) or drives the
 * connection from its own event loop (burst_fd() + burst_dispatch()).
 * Results are read through the daemon; a client never needs cloud
 * credentials.  See DESIGN.md and proto/PROTOCOL.md for the wire format.
 *
 * Every function returns 0 (or a count) on success and a negative code on
 * failure: a BURST_E* code below, or a negated errno value.  burst_strerror()
 * names a code; burst_last_error() gives the daemon's own message for the
 * last failure on a connection.
 *
 * The error codes and state names here are also the ones on the wire; the
 * daemon and the protocol module share them so that a code means one thing
 * everywhere.
 */
#ifndef BURST_H
#define BURST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Domain errors.  Values below -1000 so they never collide with -errno. */
enum burst_error {
    BURST_OK = 0,
    BURST_EPROTO = -1001,      /* "protocol": malformed frame or message */
    BURST_ETOOBIG = -1002,     /* "too_large": a limit was exceeded */
    BURST_EVERSION = -1003,    /* "version": unsupported protocol version */
    BURST_EUNKNOWNOP = -1004,  /* "unknown_op": no such operation */
    BURST_EBADFIELD = -1005,   /* "bad_field": missing field, wrong type or value */
    BURST_ENOJOB = -1006,      /* "no_such_job" */
    BURST_ENOTASK = -1007,     /* "no_such_task" */
    BURST_EPERM = -1008,       /* "permission": not yours, or admin only */
    BURST_ENOFN = -1009,       /* "no_such_function": library not uploaded */
    BURST_ENOSYM = -1010,      /* "no_such_symbol": symbol not in the library */
    BURST_ESTORAGE = -1011,    /* "storage": the storage backend failed */
    BURST_ELEDGER = -1012,     /* "ledger": the ledger could not be written */
    BURST_EBUSY = -1013,       /* "busy": too many connections or requests */
    BURST_ESHUTDOWN = -1014,   /* "shutting_down": the daemon is stopping */
    BURST_EINTERNAL = -1015,   /* "internal": a bug; the daemon logged it */
    BURST_ENORESULT = -1016,   /* "no_result": the task has no result (yet) */
    BURST_ENOTREADY = -1017,   /* "not_ready": the job has not ended yet */
    BURST_ECONNECT = -1018,    /* client side: cannot reach the daemon */
    BURST_EJOBFAILED = -1019,  /* client side: the job ended failed */
    BURST_ECANCELLED = -1020,  /* client side: the job ended cancelled */
    BURST_EINPUT = -1021,      /* client side: an input file could not be read */
};

/* Job states, in the batch-system convention (squeue/sacct names). */
enum burst_job_state {
    BURST_JOB_QUEUED = 0,
    BURST_JOB_RUNNING = 1,
    BURST_JOB_SUCCEEDED = 2,
    BURST_JOB_FAILED = 3,
    BURST_JOB_CANCELLED = 4,
    BURST_JOB_NSTATES
};

/* Task states: the job states plus dispatched, timeout and retrying.
 * succeeded, failed, timeout and cancelled are final. */
enum burst_task_state {
    BURST_TASK_QUEUED = 0,
    BURST_TASK_DISPATCHED = 1,
    BURST_TASK_RUNNING = 2,
    BURST_TASK_SUCCEEDED = 3,
    BURST_TASK_FAILED = 4,
    BURST_TASK_TIMEOUT = 5,
    BURST_TASK_RETRYING = 6,
    BURST_TASK_CANCELLED = 7,
    BURST_TASK_NSTATES
};

enum burst_job_kind {
    BURST_KIND_MAP = 0,
    BURST_KIND_MAP_REDUCE = 1,
    BURST_KIND_CALL = 2,
};

/* Names used on the wire and by the CLI ("queued", "no_such_job", ...).
 * Unknown values give NULL (states) or a generic text (errors). */
const char *burst_strerror(int code);
const char *burst_error_name(int code);
int burst_error_from_name(const char *name, size_t len); /* BURST_EINTERNAL if unknown */
const char *burst_job_state_name(int state);
const char *burst_task_state_name(int state);
int burst_job_state_from_name(const char *name, size_t len);  /* -1 if unknown */
int burst_task_state_from_name(const char *name, size_t len); /* -1 if unknown */
const char *burst_job_kind_name(int kind);
int burst_task_state_is_final(int state);
int burst_job_state_is_final(int state);

/* ---- connection ---------------------------------------------------------- */

typedef struct burst_client burst_client;

/* Resolves the default socket: $BURST_SOCKET, else $XDG_RUNTIME_DIR/burst.sock,
 * else /run/user/<uid>/burst.sock.  Writes at most size bytes (NUL included);
 * returns the length or a negative code. */
int burst_default_socket(char *buf, size_t size);

/* Connects and says hello.  path may be NULL for the default socket.
 * On success *out owns the connection; release it with burst_close(). */
int burst_connect(const char *path, burst_client **out);
/* The same, and on failure writes why into err (errsize bytes, always
 * NUL-terminated), e.g. "cannot connect to PATH: No such file or directory":
 * without a connection there is no burst_last_error() to ask. */
int burst_connect_ex(const char *path, burst_client **out, char *err, size_t errsize);
void burst_close(burst_client *c);

/* The daemon's message for the last failed call on c (never NULL). */
const char *burst_last_error(const burst_client *c);

/* ---- describing work ----------------------------------------------------- */

enum burst_fn_kind { BURST_FN_EXEC = 0, BURST_FN_SO = 1 };

typedef struct burst_fn {
    int kind;            /* BURST_FN_EXEC or BURST_FN_SO */
    const char *cmd;     /* exec: run as /bin/sh -c cmd */
    const char *path;    /* so: path of the shared library on this machine */
    const char *symbol;  /* so: int symbol(const burst_input *, burst_output *) */
} burst_fn;

typedef struct burst_bytes {
    const void *data;
    size_t len;
} burst_bytes;

/* A job's progress, as burst_subscribe() and burst_opts.on_event deliver it
 * (defined below, with the asynchronous use). */
typedef struct burst_event burst_event;
typedef void (*burst_event_cb)(void *arg, const burst_event *ev);

typedef struct burst_opts {
    uint32_t chunksize;   /* tasks per invocation; 0 = 1 */
    uint32_t retries;     /* extra attempts after a failure */
    uint64_t timeout_ms;  /* per task; 0 = none */
    uint32_t memory_mb;   /* per task; 0 = none */
    const char *backend;  /* NULL = the daemon's default */
    const char *name;     /* optional label shown by `burst jobs` */
    int cancel_on_disconnect;
    /* Non-NULL: the submission also subscribes to the job's events from
     * its first, in the same round trip (as burst_subscribe() with from_seq
     * 0 right after, without the second request).  Called with event_arg. */
    burst_event_cb on_event;
    void *event_arg;
} burst_opts;

#define BURST_OPTS_INIT {1, 0, 0, 0, NULL, NULL, 0, NULL, NULL}

/* Submissions return as soon as the daemon has durably accepted the job;
 * *job receives its id.  so libraries are uploaded (content-addressed) first
 * and checked locally for the symbol, so a missing symbol fails here. */
int burst_submit_map(burst_client *c, const burst_fn *fn, const burst_bytes *inputs,
                     size_t n, const burst_opts *opts, uint64_t *job);
/* Every line of blob (newline included) is the input of one task. */
int burst_submit_map_lines(burst_client *c, const burst_fn *fn, const void *blob,
                           size_t len, const burst_opts *opts, uint64_t *job);
int burst_submit_map_reduce(burst_client *c, const burst_fn *fn, const burst_fn *reduce,
                            const burst_bytes *inputs, size_t n, const burst_opts *opts,
                            uint64_t *job);
int burst_submit_map_reduce_lines(burst_client *c, const burst_fn *fn,
                                  const burst_fn *reduce, const void *blob, size_t len,
                                  const burst_opts *opts, uint64_t *job);

/* ---- inspecting and steering --------------------------------------------- */

typedef struct burst_job_info {
    uint64_t id;
    uint32_t owner_uid;
    int kind;                         /* enum burst_job_kind */
    int state;                        /* enum burst_job_state */
    uint32_t total;                   /* map tasks */
    uint32_t counts[BURST_TASK_NSTATES];
    int64_t created_ms, started_ms, finished_ms; /* unix ms; 0 = not yet */
    char backend[32];
    char name[128];
    char function[256];               /* "exec: CMD" or "so: SYMBOL" (truncated) */
    char error[256];                  /* why it failed, or empty */
    uint64_t last_seq;                /* the job's newest event: a from_seq
                                         for burst_subscribe() */
} burst_job_info;

typedef struct burst_task_info {
    uint32_t index;                   /* the reducer of map_reduce is index total */
    int state;                        /* enum burst_task_state */
    uint32_t attempts;
    int exit_status;                  /* -1 when none */
    int signal;                       /* 0 when none */
    int64_t started_ms, finished_ms;
    char reason[160];                 /* recorded reason of a failure */
} burst_task_info;

int burst_status(burst_client *c, uint64_t job, burst_job_info *info);
/* Jobs the caller may see: all = 0 only active ones of the caller, 1 every
 * job it may see.  *out is malloc'ed (free()), *n its length. */
int burst_jobs(burst_client *c, int all, burst_job_info **out, size_t *n);
/* state < 0: every task.  *out is malloc'ed (free()). */
int burst_tasks(burst_client *c, uint64_t job, int state, burst_task_info **out,
                size_t *n);
int burst_cancel(burst_client *c, uint64_t job);
/* The stderr of the task's last attempt.  *log is malloc'ed (free()). */
int burst_logs(burst_client *c, uint64_t job, uint32_t task, char **log, size_t *len);
/* set < 0 reads; otherwise sets (admin only).  Returns the quota or a code. */
int burst_quota(burst_client *c, int set, uint32_t *in_use);

/* Blocks until the job ends.  Returns 0 when it succeeded, BURST_EJOBFAILED or
 * BURST_ECANCELLED otherwise; info (may be NULL) receives the final status. */
int burst_wait(burst_client *c, uint64_t job, burst_job_info *info);

/* ---- results ------------------------------------------------------------- */

/* Called once per task in task order (map) or once with the reducer's output
 * (map_reduce).  data is NULL when the task has no result (it failed).
 * Returning non-zero stops the iteration with that value. */
typedef int (*burst_result_cb)(void *arg, uint32_t index, const void *data, size_t len);

/* Streams the results of an ended job in pages; memory stays bounded. */
int burst_results(burst_client *c, uint64_t job, burst_result_cb cb, void *arg);

/* Pool.map: submit, wait, and return the results in input order.
 * *results is a malloc'ed array of n burst_bytes whose data are malloc'ed;
 * release with burst_free_results().  A failed task gives data NULL.
 * When the job failed, BURST_EJOBFAILED is returned and *results is still
 * filled (and must be released); on any other error *results is NULL. */
int burst_map(burst_client *c, const burst_fn *fn, const burst_bytes *inputs, size_t n,
              const burst_opts *opts, burst_bytes **results);
void burst_free_results(burst_bytes *results, size_t n);

/* One task, synchronously: *out is malloc'ed. */
int burst_call(burst_client *c, const burst_fn *fn, const void *input, size_t len,
               const burst_opts *opts, void **out, size_t *out_len);

/* ---- asynchronous use ---------------------------------------------------- */

struct burst_event {
    uint64_t job;
    uint64_t seq;          /* per-job sequence number, from 1 */
    int type;              /* BURST_EV_JOB or BURST_EV_TASK */
    int job_state;         /* BURST_EV_JOB: the new state */
    uint32_t task;         /* BURST_EV_TASK: the task index */
    int task_state;        /* BURST_EV_TASK: the new state */
    uint32_t attempts;     /* BURST_EV_TASK */
};

enum { BURST_EV_JOB = 0, BURST_EV_TASK = 1 };

/* Subscribes to a job's events after sequence number from_seq (0 = from the
 * start): every event is delivered exactly once, in order, through
 * burst_dispatch() (or while a synchronous call waits).  The job's final
 * event (BURST_EV_JOB, a final state) is its last, and ends the
 * subscription on the daemon's side; burst_unsubscribe() after it only
 * forgets the callback. */
int burst_subscribe(burst_client *c, uint64_t job, uint64_t from_seq, burst_event_cb cb,
                    void *arg);
int burst_unsubscribe(burst_client *c, uint64_t job);

/* The connection's fd: poll it for reading, then call burst_dispatch(), which
 * never blocks, reads what is there and runs callbacks.  Returns the number
 * of events delivered or a negative code (the connection is then dead). */
int burst_fd(const burst_client *c);
int burst_dispatch(burst_client *c);
/* Events already read from the socket (during a synchronous call) and
 * waiting for burst_dispatch(): poll() cannot see them, so an event loop
 * calls burst_dispatch() without polling while this is non-zero. */
int burst_pending(const burst_client *c);

/* imap_unordered: calls cb for each task as it succeeds (and with data NULL
 * as it fails for good), in completion order, until the job ends.  Returns as
 * burst_wait() does. */
int burst_imap_unordered(burst_client *c, uint64_t job, burst_result_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif /* BURST_H */
