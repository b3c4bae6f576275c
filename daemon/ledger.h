/*
 * daemon/ledger.h - the persistent task ledger (SQLite, WAL, one writer).
 *
 * The ledger is the daemon's single source of truth: jobs, their tasks, each
 * job's append-only event log, and settings such as the quota.  The
 * scheduler keeps only counters in memory and asks the ledger for the next
 * tasks to run, so a job of millions of tasks costs no RAM per task.
 *
 * Tasks are stored as runs, not rows: one row covers a range [lo, hi) of a
 * job's task indexes that share state, attempts, dispatch, times, exit
 * status, reason and output object (ledger.c, "The schema").  A submission
 * is one run; dispatching, starting and ending a chunk whose tasks all fare
 * alike update one row; only a task to which something different happens
 * (a failure, a retry, a cancel of part of a range) is split off.  Each
 * task's result and log locations are kept per run, in one blob.  The API
 * below still speaks of tasks: lists of indexes go in (consecutive ones are
 * handled as one range), tasks come out one by one, so the callers need
 * not know about runs.  Opening a ledger of the old row-per-task schema
 * (version 1) fails with BURST_ELEDGER and a logged explanation; one of
 * version 2 or 3 is upgraded in place (it gains the inputs and outputs
 * tables).
 *
 * Writes happen inside a transaction the caller opens with ledger_begin() and
 * closes with ledger_commit(); the daemon commits once per loop iteration so
 * many small updates share one fsync, and syncs on a thread of its own
 * (ledger_defer_sync) before anyone hears of a commit.  Mutating functions assert that a transaction is
 * open.  Every function returns 0 or a negative code (BURST_ENOJOB,
 * BURST_ENOTASK, BURST_ELEDGER for SQLite failures, -ENOMEM); SQLite codes
 * never leak out, and the SQLite message is logged here.  After an error
 * from a mutating function the caller must ledger_rollback(): SQLite may
 * already have undone part or all of the transaction (e.g. on a full disk).
 *
 * A map_reduce job has total + 1 tasks: index total is the reducer.
 */
#ifndef BURST_DAEMON_LEDGER_H
#define BURST_DAEMON_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "burst.h"

struct ledger;

struct ledger_fn {
    int kind;     /* BURST_FN_EXEC or BURST_FN_SO; -1 = none (no reducer) */
    char *arg;    /* owned: the command (exec) or the library's SHA-256 (so) */
    char *symbol; /* owned: so only, else NULL */
};

struct ledger_job {
    uint64_t id;
    uint32_t owner_uid;
    int kind;       /* enum burst_job_kind */
    int state;      /* enum burst_job_state */
    uint32_t total; /* map tasks (the reducer not counted) */
    uint32_t chunksize;
    uint32_t retries;
    uint64_t timeout_ms;
    uint32_t memory_mb;
    bool cancel_on_disconnect;
    char *backend; /* owned */
    char *name;    /* owned, may be NULL */
    char *error;   /* owned, may be NULL: why the job failed */
    struct ledger_fn fn;
    struct ledger_fn reduce;
    int64_t created_ms, started_ms, finished_ms; /* 0 = not yet */
    uint64_t last_seq;                           /* newest event's sequence number */
};

void ledger_job_free(struct ledger_job *job); /* frees the owned strings only */

struct ledger_task {
    uint32_t index;
    int state; /* enum burst_task_state */
    uint32_t attempts;
    int exit_status;  /* -1 = none */
    int signal;       /* 0 = none */
    char reason[160]; /* why the last attempt failed ("" = none) */
    int64_t started_ms, finished_ms, retry_at_ms;
    uint64_t dispatch; /* the dispatch that last ran it (0 = never) */
    /* Where the last attempt's output object is, and the result and log
     * within it; has_out is false until an attempt has ended with output. */
    bool has_out;
    uint64_t out_dispatch;
    uint32_t out_n;
    uint64_t res_off, res_len;
    uint64_t log_off, log_len;
};

/* Opens (creating if need be) the ledger at path, sets WAL and
 * synchronous=FULL, creates the schema, and runs PRAGMA quick_check.
 * Returns 0, BURST_ELEDGER (corrupt or unusable: logged), or -errno. */
int ledger_open(const char *path, struct ledger **out);
void ledger_close(struct ledger *l);
/* For tests: calls cb with the SQL of each of the ledger's statements
 * whose every execution builds a scratch b-tree (an ephemeral table: an
 * IN list of three or more, RETURNING, an ORDER BY or GROUP BY no index
 * serves), and returns how many, or an error. */
int ledger_stmts_with_scratch(struct ledger *l, void (*cb)(void *arg, const char *sql),
                              void *arg);
/* Caps the database file at about bytes (0 = no cap); a write that would
 * grow it further fails with BURST_ELEDGER as on a full disk.  Never lowers
 * the cap below the current size.  For a configured ledger size limit, and
 * how the tests inject "disk full". */
int ledger_set_max_size(struct ledger *l, uint64_t bytes);

int ledger_begin(struct ledger *l);  /* opens a transaction unless one is open */
int ledger_commit(struct ledger *l); /* commits the open one; no-op if none */
void ledger_rollback(struct ledger *l);
bool ledger_in_txn(const struct ledger *l);
/* The open transaction changed a row (one that only read, or found nothing
 * to change, needs no sync after its commit). */
bool ledger_txn_changed(const struct ledger *l);

/*
 * Moves the sync out of the commit: from now on ledger_commit() writes the
 * transaction to the WAL without waiting for the disk
 * (synchronous=NORMAL), and a commit is durable only once the caller has
 * fdatasync'ed ledger_sync_fd() after it, which it may do on another
 * thread while the loop goes on.  Without WAL mode this is a no-op and
 * ledger_sync_fd() says -1.  Returns 0 or a negative code.
 */
int ledger_defer_sync(struct ledger *l);
/*
 * Holds the file's lock for this connection until it closes: SQLite then
 * stops taking and dropping POSIX locks around every statement (4 to 8
 * fcntl calls per request, a visible share of the daemon's time under
 * load).  Other connections (the sqlite3 shell) cannot write, and cannot
 * read once burstd has written; main.c's state directory lock keeps a
 * second burstd out before it gets here.
 */
int ledger_take_exclusive(struct ledger *l);
/* Whether ledger_defer_sync() took effect. */
bool ledger_sync_deferred(const struct ledger *l);
/* The file whose fdatasync makes every commit so far durable; -1 when
 * commits sync themselves, -2 when it cannot be had (logged): treat as a
 * failed sync.  Loop thread only. */
int ledger_sync_fd(struct ledger *l);

/* A fresh dispatch number, reserved in the ledger (a block at a time, in
 * the open transaction when a new block is needed).  Never reused: not
 * even after a rollback, within this process, nor after a restart. */
int ledger_next_dispatch(struct ledger *l, uint64_t *out);

/* ---- jobs ---- */

/* Reserves a fresh job id, so that a job's inputs can be written to storage
 * under its id before the job itself is inserted.  Above every id given out
 * so far; kept in memory only (no transaction needed, no write): inserting
 * the job persists it, and an id whose job never got in may come back after
 * a restart, unless it is within the bound below. */
int ledger_reserve_job_id(struct ledger *l, uint64_t *out);
/*
 * A job may be dispatched before the commit that records it is synced, so
 * that the sync and the work overlap.  A crash in between forgets a job that
 * may have run, and may have left objects in storage under its id: that id
 * must never be given to another job.  So the ledger keeps a bound, written
 * with the jobs it covers and moved ahead a block at a time: after a
 * restart ids start above it.  ledger_job_ids_bound() is the bound as of
 * the last commit; a job may run before its own commit is durable only if
 * its id is at most a bound already durable.  ledger_job_ids_settle(), in a
 * transaction at a clean stop, brings the bound back to the last id so that
 * ids go on without a gap.
 */
uint64_t ledger_job_ids_bound(const struct ledger *l);
int ledger_job_ids_settle(struct ledger *l);

/* Inserts job with nrows queued tasks 0..nrows-1 (one run), in the open
 * transaction.  When job->id is 0 a fresh id is assigned and written back to
 * job->id; otherwise it must be one from ledger_reserve_job_id() (an id
 * already in use fails with BURST_ELEDGER). */
int ledger_job_insert(struct ledger *l, struct ledger_job *job, uint32_t nrows);
/* Fills *out (free with ledger_job_free).  BURST_ENOJOB when unknown. */
int ledger_job_get(struct ledger *l, uint64_t id, struct ledger_job *out);
/* Sets the state; started_ms is set on the first move to running (or an end
 * state), finished_ms on a final state; error may be NULL. */
int ledger_job_set_state(struct ledger *l, uint64_t id, int state, const char *error,
                         int64_t now_ms);
/* Task counts per state (index = enum burst_task_state), reducer included. */
int ledger_job_counts(struct ledger *l, uint64_t id, uint32_t counts[BURST_TASK_NSTATES]);

typedef int (*ledger_job_cb)(void *arg, const struct ledger_job *job);
/* Calls cb for each job (by ascending id) of owner (or every owner when
 * owner < 0), only non-final ones when active_only.  A non-zero return from
 * cb stops the walk and is returned.  The job is valid during the call. */
int ledger_jobs_foreach(struct ledger *l, int64_t owner, bool active_only,
                        ledger_job_cb cb, void *arg);

/* ---- tasks ---- */

int ledger_task_get(struct ledger *l, uint64_t job, uint32_t index,
                    struct ledger_task *out);

typedef int (*ledger_task_cb)(void *arg, const struct ledger_task *t);
/* Tasks of job with index >= offset in index order, at most limit (0 = no
 * limit), only those in state (or any when state < 0). */
int ledger_tasks_foreach(struct ledger *l, uint64_t job, int state, uint32_t offset,
                         uint32_t limit, ledger_task_cb cb, void *arg);

/* Up to max indexes of tasks ready to run, ascending: queued, or retrying
 * with retry_at_ms <= now_ms; only indexes < idx_limit. */
int ledger_tasks_pending(struct ledger *l, uint64_t job, uint32_t idx_limit,
                         int64_t now_ms, uint32_t max, uint32_t *idx_out,
                         uint32_t *n_out);
/* The earliest retry_at_ms among retrying tasks; *found false when none. */
int ledger_tasks_next_retry(struct ledger *l, uint64_t job, int64_t *at_ms, bool *found);

/* Marks the tasks dispatched under dispatch, attempts + 1 each; writes each
 * task's new attempt number to attempts_out[i], or 0 for a task that is
 * already final or does not exist (left unchanged).  Each stretch of
 * consecutive indexes in idx costs one UPDATE, so idx should be ascending
 * (as ledger_tasks_pending() gives it). */
int ledger_tasks_dispatch(struct ledger *l, uint64_t job, const uint32_t *idx, uint32_t n,
                          uint64_t dispatch, int64_t now_ms, uint32_t *attempts_out);
/* Moves tasks to state (running: sets started_ms; queued: a lost attempt
 * handed back, attempts unchanged; cancelled: sets finished_ms).  Tasks
 * already final are left unchanged. */
int ledger_tasks_set_state(struct ledger *l, uint64_t job, const uint32_t *idx,
                           uint32_t n, int state, int64_t now_ms);

struct ledger_task_end {
    uint32_t index;
    int state; /* succeeded, failed, timeout, or retrying */
    int exit_status;
    int signal;
    const char *reason;  /* borrowed; NULL or "" = none */
    int64_t retry_at_ms; /* retrying only */
    bool has_out;
    uint64_t out_dispatch;
    uint32_t out_n;
    uint64_t res_off, res_len, log_off, log_len;
};
/* Records the end of attempts.  A task already in a final state is left as
 * it is (so a result is recorded exactly once) and *n_applied counts the
 * ones that changed (may be NULL).  Consecutive entries for consecutive
 * indexes that end alike (same state, status, reason, retry time and output
 * object: only the result and log locations differ) are one UPDATE. */
int ledger_tasks_end(struct ledger *l, uint64_t job, const struct ledger_task_end *ends,
                     size_t n, int64_t now_ms, size_t *n_applied);
/* ledger_tasks_end that also says which: applied[i] (n entries) is true
 * when ends[i] was recorded, false when its task had already ended. */
int ledger_tasks_end_marked(struct ledger *l, uint64_t job, const struct ledger_task_end *ends,
                            size_t n, int64_t now_ms, size_t *n_applied, bool *applied);
/* Every queued or retrying task of job becomes cancelled. */
int ledger_job_cancel_pending(struct ledger *l, uint64_t job, int64_t now_ms,
                              uint32_t *n_cancelled);

/* Every task in dispatched or running state, over all jobs, ordered by
 * (job, dispatch, index): what restart reconciliation must look at. */
typedef int (*ledger_inflight_cb)(void *arg, uint64_t job, const struct ledger_task *t);
int ledger_tasks_inflight(struct ledger *l, ledger_inflight_cb cb, void *arg);

/* ---- events ---- */

struct ledger_event_body {
    const void *data;
    size_t len;
};
/* Appends n events to job's log, with seqs last_seq + 1 .. last_seq + n in
 * order (the first written back to *first_seq): one sequence update for
 * all. */
int ledger_events_append(struct ledger *l, uint64_t job, const struct ledger_event_body *bodies,
                         uint32_t n, uint64_t *first_seq);
/* Appends an event to job's log with seq = last_seq + 1 (written back to
 * *seq).  body is opaque bytes (the events module's encoding). */
int ledger_event_append(struct ledger *l, uint64_t job, const void *body, size_t len,
                        uint64_t *seq);
typedef int (*ledger_event_cb)(void *arg, uint64_t seq, const void *body, size_t len);
/* Events of job with seq > from_seq, ascending, at most max (0 = all). */
int ledger_events_since(struct ledger *l, uint64_t job, uint64_t from_seq, uint32_t max,
                        ledger_event_cb cb, void *arg);

/* ---- inputs of small jobs ---- */

/* A small job's input object (worker/invoc.h: header, offsets, data) kept
 * in the ledger instead of storage, so that its submission is durable with
 * the commit alone (daemon/api.c); the scheduler writes it to storage
 * before the job's first dispatch in each burstd process (daemon/sched.c).
 * Deleting the job deletes it too (ON DELETE CASCADE). */

/* Stores job's input object in the open transaction; the job must have
 * been inserted.  body is borrowed for the call only. */
int ledger_input_put(struct ledger *l, uint64_t job, const void *body, size_t len);
/* Reads it: *body is malloc'ed (the caller frees it) with *len bytes, or
 * NULL when the job has none (its inputs are in storage). */
int ledger_input_get(struct ledger *l, uint64_t job, void **body, size_t *len);
/* Forgets it (a no-op when there is none): an ended job needs it no more. */
int ledger_input_delete(struct ledger *l, uint64_t job);

/* ---- outputs of small invocations ---- */

/* The output object (worker/invoc.h) of invocation n of a dispatch, when it
 * came back through the worker's pipe instead of storage (daemon/sched.c).
 * A run's has_out points at (job, out_dispatch, out_n): here if there is a
 * row, in storage otherwise.  Deleting the job deletes it too. */

/* Stores it in the open transaction, the one that records the ends of its
 * tasks.  body is borrowed for the call only. */
int ledger_output_put(struct ledger *l, uint64_t job, uint64_t dispatch, uint32_t n,
                      const void *body, size_t len);
/* Reads at most len bytes from off of it into *data (malloc'ed, the caller
 * frees it; *got bytes, fewer at the end of the object).  Returns 1, 0 when
 * the ledger has no such output (it is in storage), or a negative code. */
int ledger_output_read(struct ledger *l, uint64_t job, uint64_t dispatch, uint32_t n,
                       uint64_t off, uint64_t len, void **data, size_t *got);

/* ---- settings ---- */

/* The persisted quota; *found false when none was ever set. */
int ledger_quota_get(struct ledger *l, uint32_t *quota, bool *found);
int ledger_quota_set(struct ledger *l, uint32_t quota);

#endif /* BURST_DAEMON_LEDGER_H */
