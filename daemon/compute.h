/*
 * daemon/compute.h - the compute backend interface of burstd.
 *
 * The scheduler hands a compute backend one dispatch at a time: a spec object
 * already written to storage (worker/invoc.h) describing ninv invocations.
 * The backend starts one burst-worker per invocation, each with
 * BURST_STORAGE, BURST_SPEC and JOB_INDEX=i in its environment, and reports
 * back when each invocation starts and ends.  The local backend spawns
 * processes with uv_spawn; the Code Engine backend (later) creates one job
 * run with scale_array_spec "0-(ninv-1)".
 *
 * What a worker produced is read from storage by the scheduler, not passed
 * through here: the backend only says "invocation i is over" and how the
 * worker ended, so that a worker that died without output can be told
 * apart.  The exception is a small output: a backend whose workers can
 * hand one back directly (the local one) does so when the dispatch allows
 * it (inline_out_max), and ended_cb gets the output object itself.
 *
 * Contract: submit returns 0 and then calls started_cb at most once and
 * ended_cb exactly once per invocation, on the loop thread; or returns a
 * negative code and calls nothing.  The dispatch must stay alive until every
 * ended_cb has run.
 */
#ifndef BURST_DAEMON_COMPUTE_H
#define BURST_DAEMON_COMPUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct compute;
struct dispatch;

/* How a worker process (or container) ended, as the platform saw it. */
struct compute_exit {
    int64_t exit_status; /* -1 when it did not exit normally */
    int term_signal;     /* 0 when none */
    const char *why;     /* borrowed, may be NULL: e.g. "killed: deadline" */
    /* The invocation's output object, when the worker handed it back
     * instead of writing it to storage (exit_status is then 0); borrowed
     * for the callback.  NULL otherwise. */
    const char *out;
    size_t out_len;
};

struct dispatch {
    /* Filled by the scheduler. */
    uint64_t job;
    uint32_t owner_uid;   /* who submitted the job: its tasks run as that user
                           * where the backend runs them on this machine */
    uint64_t dispatch;    /* ledger dispatch number */
    char *spec_key;       /* owned by the scheduler */
    uint32_t ninv;        /* invocations in the spec (JOB_INDEX 0..ninv-1) */
    uint64_t deadline_ms; /* wall time allowed per invocation, 0 = none: a
                           * safety net beyond the worker's own per-task
                           * timeouts */
    uint32_t memory_mb;   /* per task, passed on for the platform's sizing */
    uint32_t inline_out_max; /* bytes of output a worker may hand back instead
                              * of writing it to storage; 0 = none */
    /* When not NULL, the spec itself (spec_len bytes), and the job's input
     * object in_data under key in_key (in_key NULL: none), for a backend
     * that hands them to its workers directly (compute.inline_max): they
     * are then not in storage.  Borrowed until submit returns. */
    const char *spec_data;
    size_t spec_len;
    const char *in_key;
    const char *in_data;
    size_t in_len;
    void (*started_cb)(struct dispatch *d, uint32_t inv);
    void (*ended_cb)(struct dispatch *d, uint32_t inv, const struct compute_exit *ex);
    void *data;           /* the scheduler's */
    /* Owned by the backend between submit and the last ended_cb. */
    void *backend_priv;
};

struct compute_ops {
    const char *name;
    int (*submit)(struct compute *c, struct dispatch *d);
    /* Asks every still running invocation of d to stop: SIGTERM, then
     * SIGKILL of its whole process group after grace_ms.  ended_cb still
     * runs for each.  Idempotent. */
    int (*cancel)(struct compute *c, struct dispatch *d, uint64_t grace_ms);
    /* Whether this backend can run tasks for uid: 0, or BURST_EPERM with a
     * sentence for the client in why.  Asked before a job is accepted. */
    int (*admit)(struct compute *c, uint32_t uid, char *why, size_t whylen);
    /* How many invocations are running now (for quota accounting checks). */
    uint32_t (*running)(struct compute *c);
    /* Stops the backend: kills what runs, and calls cb once every handle is
     * closed and every ended_cb has run. */
    void (*close)(struct compute *c, void (*cb)(struct compute *c));
};

struct compute {
    const struct compute_ops *ops;
    /* How many bytes of spec and input together the backend can hand its
     * workers with a dispatch (spec_data, in_data); 0 = none: they must be
     * in storage. */
    size_t inline_max;
    /* An invocation runs once submit returns 0 (a local worker has its
     * request): the scheduler may record it as running then, in the same
     * commit as its dispatch, instead of waiting for started_cb. */
    bool runs_at_submit;
    uv_loop_t *loop;       /* borrowed */
    const char *name;      /* the backend's configured name, e.g. "local" */
    void *data;            /* the owner's */
};

/* The local backend.  worker_path: the burst-worker executable;
 * storage_url: BURST_STORAGE for workers.  Both are copied. */
int compute_local_new(uv_loop_t *loop, const char *worker_path, const char *storage_url,
                      struct compute **out);

/*
 * Makes the local backend c keep a record of every worker it starts in dir
 * (created 0700 when missing), and first reaps what the workers of a burstd
 * that died without seeing them end left running, as the records in dir
 * say.  Blocks until those processes are gone (a few seconds at most):
 * call it at start-up, before the scheduler reconciles.  Returns 0 (a
 * failure to reap is logged, the records stay for the next start), or a
 * negative code when dir cannot be used: workers then run unrecorded.
 * Once per backend.
 */
int compute_local_track(struct compute *c, const char *dir);

#endif /* BURST_DAEMON_COMPUTE_H */
