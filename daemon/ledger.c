/*
 * daemon/ledger.c - the persistent task ledger: jobs, tasks, per-job event
 * logs and settings in one SQLite database (see ledger.h and DESIGN.md,
 * "The ledger").
 *
 * The daemon is the only writer and calls in from the loop thread alone, so
 * there is no locking here.  Every statement is prepared once in
 * ledger_open() and reused; a statement is always reset before the function
 * that used it returns, so no read transaction is left open behind the
 * caller's back.  SQLite result codes are translated at the edge of this
 * file: -ENOMEM for SQLITE_NOMEM, BURST_ELEDGER for everything else, with
 * the SQLite message logged.
 *
 * States are stored as the integers of enum burst_job_state and
 * enum burst_task_state; the SQL below spells the sets it needs as literal
 * lists or ranges, and the static_asserts pin them to the enums.
 */
#include "ledger.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ledger_vfs.h"
#include "log.h"

/* Bump when the schema changes, and teach ledger_schema() to migrate.
 * Version 1 held a row per task; version 2 holds runs of tasks; version 3
 * adds the inputs table, version 4 the outputs table, and an older ledger
 * gains them in place.  A version 1 ledger is refused: it was never
 * released. */
#define LEDGER_SCHEMA_VERSION 5
/* "brst": tells a burst ledger apart from any other SQLite file. */
#define LEDGER_APPLICATION_ID 0x62727374
/* Long enough that an admin's sqlite3 shell holding a lock briefly does not
 * fail a write; short enough that a stuck lock surfaces as an error. */
#define LEDGER_BUSY_TIMEOUT_MS 5000
/* How far ahead of the last job the id bound is moved: one meta write per
 * this many jobs, and as many ids skipped after a crash (none after a clean
 * stop, which settles the bound). */
#define LEDGER_JOB_ID_BLOCK 1024
/* Dispatch numbers are reserved as many at a time: the ledger's
 * 'next_dispatch' is written once per block, not in every commit that
 * dispatches (a statement and a dirtied page each, bench B6), and says
 * that no number above it was handed out. */
#define LEDGER_DISPATCH_BLOCK 1024
/* Reasons are kept as short as struct ledger_task can hold them. */
#define LEDGER_REASON_MAX (sizeof(((struct ledger_task *)NULL)->reason) - 1)

static_assert(BURST_TASK_QUEUED == 0 && BURST_TASK_DISPATCHED == 1 &&
                  BURST_TASK_RUNNING == 2 && BURST_TASK_SUCCEEDED == 3 &&
                  BURST_TASK_FAILED == 4 && BURST_TASK_TIMEOUT == 5 &&
                  BURST_TASK_RETRYING == 6 && BURST_TASK_CANCELLED == 7,
              "the SQL below spells task states as these integers");
static_assert(BURST_JOB_QUEUED == 0 && BURST_JOB_RUNNING == 1 &&
                  BURST_JOB_SUCCEEDED == 2 && BURST_JOB_FAILED == 3 &&
                  BURST_JOB_CANCELLED == 4,
              "the SQL below spells job states as these integers");

#define SQL_TASK_PENDING "(0, 6)"  /* queued, retrying */
#define SQL_TASK_INFLIGHT "(1, 2)" /* dispatched, running */
#define SQL_JOB_ACTIVE "(0, 1)"    /* queued, running */
/* Whether state x is final, as comparisons: SQLite builds an ephemeral
 * table for every execution of a statement with "x IN" a list of three or
 * more (two become an OR), and these are in the statements of every
 * dispatch and end (about a fifth of burstd's instructions under bench
 * B6).  Task: succeeded, failed, timeout, cancelled.  Job: succeeded,
 * failed, cancelled. */
#define SQL_TASK_IS_FINAL(x) "(" x " BETWEEN 3 AND 5 OR " x " = 7)"
#define SQL_JOB_IS_FINAL(x) "(" x " BETWEEN 2 AND 4)"

/*
 * The schema.  Tasks live in runs: a row covers the task indexes [lo, hi) of
 * one job that share everything the ledger records (state, attempt count,
 * dispatch, times, exit status, reason, output object).  A submission
 * inserts one run for the whole job; dispatching a chunk splits off the run
 * of its indexes and updates that one row; an invocation whose tasks all
 * succeed updates it again.  Only a task to which something different
 * happens (a failure, a retry with its own backoff, a cancel of part of a
 * range) is split off into a run of its own, so the row count follows what
 * happens, not how many tasks there are.  Runs of a job never overlap and
 * their union is [0, rows), rows being total (+1 for a reducer).
 *
 * outs holds, for a run whose attempts wrote output (has_out), where each
 * task's result and log are within that object: hi - lo entries of
 * LEDGER_OUT_ENTRY bytes, four little-endian uint64 (res_off, res_len,
 * log_off, log_len), entry k for task lo + k.  A blob per run instead of a
 * row per task keeps an end of 10,000 tasks one UPDATE, and splitting a run
 * splits its blob with substr(), which SQLite applies to blobs byte-wise.
 *
 * The invariant retry_at_ms = 0 unless state = retrying lets the pending
 * lookup test one column for both queued and retrying runs.  The partial
 * indexes hold only the few runs the scheduler looks for (pending,
 * retrying, in flight), so finished runs cost nothing to skip.
 */
#define LEDGER_OUT_ENTRY 32
#define SQL_OUT_ENTRY "32"

/*
 * inputs holds the input object (worker/invoc.h) of a job small enough to
 * keep it here instead of in storage (api.c): written in the submission's
 * own transaction, so the job is durable with one commit; the scheduler
 * copies it to storage before the job's first dispatch.  Version 3; the
 * migration from version 2 runs this same statement.
 */
#define LEDGER_INPUTS_SQL                                                                \
    "CREATE TABLE inputs ("                                                              \
    " job INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,"                    \
    " body BLOB NOT NULL);"

/*
 * outputs holds the output object (worker/invoc.h) of an invocation small
 * enough to come back from its worker through a pipe instead of storage
 * (sched.c): written in the transaction that records its tasks' ends, so
 * one commit makes the results durable.  A task whose run says has_out
 * finds its result here first, under (job, out_dispatch, out_n), and in
 * storage when there is no row.  Version 4; the migration from older
 * versions runs this same statement.
 */
#define LEDGER_OUTPUTS_SQL                                                               \
    "CREATE TABLE outputs ("                                                             \
    " job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"                       \
    " dispatch INTEGER NOT NULL,"                                                        \
    " n INTEGER NOT NULL,"                                                               \
    " body BLOB NOT NULL,"                                                               \
    " PRIMARY KEY(job, dispatch, n));"

/*
 * Tables whose rows carry blobs (a run's outs, an event's body, an output)
 * are rowid tables, looked up through their primary key's index.  In a
 * WITHOUT ROWID table the whole row is the B-tree's key, so a lookup that
 * meets a row larger than a page reassembles it from its overflow pages
 * for each comparison: after one job of 1,000,000 tasks (its runs hold
 * 320 KB of outs each), a fifth of burstd's time went into such copies.
 * Version 5; the upgrade from version 4 rebuilds these three tables.
 */
#define LEDGER_RUNS_SQL                                                                  \
    "CREATE TABLE runs ("                                                                \
    " job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"                       \
    " lo INTEGER NOT NULL,"                                                              \
    " hi INTEGER NOT NULL CHECK (hi > lo),"                                              \
    " state INTEGER NOT NULL DEFAULT 0,"                                                 \
    " attempts INTEGER NOT NULL DEFAULT 0,"                                              \
    " exit_status INTEGER NOT NULL DEFAULT -1,"                                          \
    " signal INTEGER NOT NULL DEFAULT 0,"                                                \
    " reason TEXT,"                                                                      \
    " started_ms INTEGER NOT NULL DEFAULT 0,"                                            \
    " finished_ms INTEGER NOT NULL DEFAULT 0,"                                           \
    " retry_at_ms INTEGER NOT NULL DEFAULT 0,"                                           \
    " dispatch INTEGER NOT NULL DEFAULT 0,"                                              \
    " has_out INTEGER NOT NULL DEFAULT 0,"                                               \
    " out_dispatch INTEGER NOT NULL DEFAULT 0,"                                          \
    " out_n INTEGER NOT NULL DEFAULT 0,"                                                 \
    " outs BLOB,"                                                                        \
    " PRIMARY KEY (job, lo));"                                                           \
    "CREATE INDEX runs_pending ON runs(job, lo, retry_at_ms, state)"                     \
    " WHERE state IN " SQL_TASK_PENDING ";"                                              \
    "CREATE INDEX runs_retrying ON runs(job, retry_at_ms) WHERE state = 6;"              \
    "CREATE INDEX runs_inflight ON runs(job, dispatch, lo)"                              \
    " WHERE state IN " SQL_TASK_INFLIGHT ";"

#define LEDGER_EVENTS_SQL                                                                \
    "CREATE TABLE events ("                                                              \
    " job INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"                       \
    " seq INTEGER NOT NULL,"                                                             \
    " body BLOB NOT NULL,"                                                               \
    " PRIMARY KEY (job, seq));"

static const char ledger_schema_sql[] =
    "CREATE TABLE jobs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT," /* AUTOINCREMENT: ids never reused */
    " owner INTEGER NOT NULL,"
    " kind INTEGER NOT NULL,"
    " state INTEGER NOT NULL,"
    " total INTEGER NOT NULL,"
    " chunksize INTEGER NOT NULL,"
    " retries INTEGER NOT NULL,"
    " timeout_ms INTEGER NOT NULL,"
    " memory_mb INTEGER NOT NULL,"
    " cod INTEGER NOT NULL,"
    " backend TEXT,"
    " name TEXT,"
    " error TEXT,"
    " fn_kind INTEGER NOT NULL,"
    " fn_arg TEXT,"
    " fn_symbol TEXT,"
    " red_kind INTEGER NOT NULL DEFAULT -1,"
    " red_arg TEXT,"
    " red_symbol TEXT,"
    " created_ms INTEGER NOT NULL DEFAULT 0,"
    " started_ms INTEGER NOT NULL DEFAULT 0,"
    " finished_ms INTEGER NOT NULL DEFAULT 0,"
    " last_seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_owner ON jobs(owner, id);"
    "CREATE INDEX jobs_active ON jobs(id) WHERE state IN " SQL_JOB_ACTIVE ";"
    LEDGER_RUNS_SQL
    LEDGER_EVENTS_SQL
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    LEDGER_INPUTS_SQL LEDGER_OUTPUTS_SQL;

#define JOB_COLS                                                                         \
    "id, owner, kind, state, total, chunksize, retries, timeout_ms, memory_mb, cod,"     \
    " backend, name, error, fn_kind, fn_arg, fn_symbol, red_kind, red_arg, red_symbol,"  \
    " created_ms, started_ms, finished_ms, last_seq"
#define RUN_COLS                                                                         \
    "lo, hi, state, attempts, exit_status, signal, reason, started_ms, finished_ms,"     \
    " retry_at_ms, dispatch, has_out, out_dispatch, out_n, outs"
/* The run holding task ?2 of job ?1 (the primary key finds it in one seek). */
#define SQL_RUN_AT(idx)                                                                  \
    "lo = (SELECT max(lo) FROM runs WHERE job = ?1 AND lo <= " idx ") AND hi > " idx
/* The run that strictly contains boundary k: it starts before k, ends after. */
#define SQL_RUN_ACROSS(k)                                                                \
    "lo = (SELECT max(lo) FROM runs WHERE job = ?1 AND lo < " k ") AND hi > " k

enum ledger_stmt {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_NEXT_DISPATCH,
    ST_META_GET,
    ST_META_SET,
    ST_JOB_EXISTS,
    ST_JOB_LAST,
    ST_JOB_INSERT,
    ST_RUN_INSERT,
    ST_JOB_GET,
    ST_JOB_SET_STATE,
    ST_JOB_COUNTS,
    ST_JOBS_ALL,
    ST_JOBS_ACTIVE,
    ST_JOBS_OWNER,
    ST_JOBS_OWNER_ACTIVE,
    ST_TASK_GET,
    ST_TASKS_LIST,
    ST_TASKS_PENDING,
    ST_TASKS_NEXT_RETRY,
    ST_RUN_ACROSS,
    ST_RUN_SPLIT_COPY,
    ST_RUN_SPLIT_CUT,
    ST_RUNS_OPEN,
    ST_TASK_DISPATCH,
    ST_TASK_SET_STATE,
    ST_TASK_END,
    ST_JOB_CANCEL_PENDING,
    ST_TASKS_INFLIGHT,
    ST_EVENT_SEQ_GET,
    ST_EVENT_SEQ_SET,
    ST_JOB_RUNS_END,
    ST_EVENT_INSERT,
    ST_EVENTS_SINCE,
    ST_INPUT_PUT,
    ST_INPUT_GET,
    ST_INPUT_DELETE,
    ST_OUTPUT_PUT,
    ST_OUTPUT_READ,
    ST_COUNT
};

static const char *const ledger_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    /* Reserves the block (?2 numbers) after the higher of the stored bound
     * and ?1, the highest number handed out by this process, which a
     * rollback does not take back (see struct ledger); returns its end.
     * The first number is 1, since 0 means "never dispatched".  A ledger of
     * an earlier burstd stored the last number handed out: a bound too. */
    [ST_NEXT_DISPATCH] = "INSERT INTO meta(key, value) VALUES('next_dispatch', ?1 + ?2)"
                         " ON CONFLICT(key) DO UPDATE SET value = max(value, ?1) + ?2"
                         " RETURNING value",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_SET] = "INSERT INTO meta(key, value) VALUES(?1, ?2)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE id = ?1",
    /* The highest job id ever given out: AUTOINCREMENT's counter (which
     * survives deleted jobs), or the ids themselves before the counter
     * exists. */
    [ST_JOB_LAST] = "SELECT max(coalesce((SELECT seq FROM sqlite_sequence"
                    " WHERE name = 'jobs'), 0), coalesce((SELECT max(id) FROM jobs), 0)),"
                    " coalesce((SELECT value FROM meta WHERE key = 'job_ids_bound'), 0)",
    /* ?23 NULL: AUTOINCREMENT assigns the id. */
    [ST_JOB_INSERT] =
        "INSERT INTO jobs(id, owner, kind, state, total, chunksize, retries,"
        " timeout_ms, memory_mb, cod, backend, name, error, fn_kind, fn_arg,"
        " fn_symbol, red_kind, red_arg, red_symbol, created_ms, started_ms,"
        " finished_ms, last_seq) VALUES(?23, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
        " ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
    /* A whole job is one queued run: [0, ?2). */
    [ST_RUN_INSERT] = "INSERT INTO runs(job, lo, hi) VALUES(?1, 0, ?2)",
    [ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE id = ?1",
    /* ?2 new state, ?3 error (NULL keeps it), ?4 now. */
    [ST_JOB_SET_STATE] =
        "UPDATE jobs SET state = ?2, error = coalesce(?3, error),"
        " started_ms = CASE WHEN started_ms = 0 AND ?2 <> 0"
        "  THEN ?4 ELSE started_ms END,"
        " finished_ms = CASE WHEN finished_ms = 0 AND " SQL_JOB_IS_FINAL("?2")
        "  THEN ?4 ELSE finished_ms END"
        " WHERE id = ?1",
    /* Summed by the caller: a GROUP BY would sort in a scratch b-tree. */
    [ST_JOB_COUNTS] = "SELECT state, hi - lo FROM runs WHERE job = ?1",
    [ST_JOBS_ALL] = "SELECT " JOB_COLS " FROM jobs ORDER BY id",
    [ST_JOBS_ACTIVE] =
        "SELECT " JOB_COLS " FROM jobs WHERE state IN " SQL_JOB_ACTIVE " ORDER BY id",
    [ST_JOBS_OWNER] = "SELECT " JOB_COLS " FROM jobs WHERE owner = ?1 ORDER BY id",
    [ST_JOBS_OWNER_ACTIVE] = "SELECT " JOB_COLS " FROM jobs WHERE owner = ?1"
                             " AND state IN " SQL_JOB_ACTIVE " ORDER BY id",
    [ST_TASK_GET] = "SELECT " RUN_COLS " FROM runs WHERE job = ?1 AND " SQL_RUN_AT("?2"),
    /* Runs overlapping [?2, end) in index order, starting with the one that
     * holds ?2; ?3 < 0: any state.  The caller stops at its limit. */
    [ST_TASKS_LIST] = "SELECT " RUN_COLS " FROM runs WHERE job = ?1"
                      " AND lo >= coalesce((SELECT max(lo) FROM runs"
                      "  WHERE job = ?1 AND lo <= ?2), 0) AND hi > ?2"
                      " AND (?3 < 0 OR state = ?3) ORDER BY lo",
    /* The state term repeats the index's WHERE so runs_pending is used. */
    [ST_TASKS_PENDING] =
        "SELECT lo, hi FROM runs WHERE job = ?1 AND state IN " SQL_TASK_PENDING
        " AND lo < ?2 AND retry_at_ms <= ?3 ORDER BY lo LIMIT ?4",
    [ST_TASKS_NEXT_RETRY] =
        "SELECT min(retry_at_ms) FROM runs WHERE job = ?1 AND state = 6",
    /* Splitting the non-final run that strictly contains boundary ?2 into
     * [lo, ?2) and [?2, hi): the run is read, a copy of its upper part is
     * inserted from the values read (?3 .. ?16: its columns after lo, in
     * RUN_COLS order; ?17: its lo), then the original is cut (the copy
     * starts at ?2, so the cut still finds the original as the last run
     * starting before ?2).  An INSERT ... SELECT from runs itself would
     * copy the rows to a scratch b-tree first. */
    [ST_RUN_ACROSS] = "SELECT " RUN_COLS " FROM runs WHERE job = ?1 AND " SQL_RUN_ACROSS(
        "?2") " AND NOT " SQL_TASK_IS_FINAL("state"),
    [ST_RUN_SPLIT_COPY] =
        "INSERT INTO runs(job, lo, hi, state, attempts, exit_status, signal, reason,"
        " started_ms, finished_ms, retry_at_ms, dispatch, has_out, out_dispatch, out_n,"
        " outs) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
        " CASE WHEN ?16 IS NULL THEN NULL"
        "  ELSE substr(?16, (?2 - ?17) * " SQL_OUT_ENTRY " + 1) END)",
    [ST_RUN_SPLIT_CUT] =
        "UPDATE runs SET hi = ?2, outs = CASE WHEN outs IS NULL THEN NULL"
        "  ELSE substr(outs, 1, (?2 - lo) * " SQL_OUT_ENTRY ") END"
        " WHERE job = ?1 AND " SQL_RUN_ACROSS("?2") " AND NOT " SQL_TASK_IS_FINAL("state"),
    /* The statements below change the runs inside [?2, ?3), which the
     * caller has split at both ends first.  Final runs are never touched:
     * a result is recorded exactly once. */
    /* The runs that an UPDATE of [?2, ?3) below changes, read just before
     * it: what a RETURNING clause would say, without the scratch b-tree
     * SQLite builds for one in every execution. */
    [ST_RUNS_OPEN] = "SELECT lo, hi, attempts FROM runs"
                     " WHERE job = ?1 AND lo >= ?2 AND lo < ?3 AND NOT " SQL_TASK_IS_FINAL("state"),
    [ST_TASK_DISPATCH] =
        "UPDATE runs SET state = 1, attempts = attempts + 1, dispatch = ?4,"
        " started_ms = ?5, finished_ms = 0, retry_at_ms = 0"
        " WHERE job = ?1 AND lo >= ?2 AND lo < ?3 AND NOT " SQL_TASK_IS_FINAL("state"),
    [ST_TASK_SET_STATE] =
        "UPDATE runs SET state = ?4,"
        " started_ms = CASE WHEN ?4 = 2 THEN ?5 ELSE started_ms END,"
        " finished_ms = CASE WHEN " SQL_TASK_IS_FINAL("?4") " THEN ?5 ELSE finished_ms END,"
        " retry_at_ms = CASE WHEN ?4 = 6 THEN retry_at_ms ELSE 0 END"
        " WHERE job = ?1 AND lo >= ?2 AND lo < ?3 AND NOT " SQL_TASK_IS_FINAL("state"),
    /* ?10 has_out: when false the previous attempt's output location stays;
     * when true ?13 holds the entries of [?2, ?3) and each run takes its
     * slice. */
    [ST_TASK_END] =
        "UPDATE runs SET state = ?4, exit_status = ?5, signal = ?6, reason = ?7,"
        " retry_at_ms = CASE WHEN ?4 = 6 THEN ?8 ELSE 0 END, finished_ms = ?9,"
        " has_out = CASE WHEN ?10 THEN 1 ELSE has_out END,"
        " out_dispatch = CASE WHEN ?10 THEN ?11 ELSE out_dispatch END,"
        " out_n = CASE WHEN ?10 THEN ?12 ELSE out_n END,"
        " outs = CASE WHEN ?10 THEN substr(?13, (lo - ?2) * " SQL_OUT_ENTRY " + 1,"
        "  (hi - lo) * " SQL_OUT_ENTRY ") ELSE outs END"
        " WHERE job = ?1 AND lo >= ?2 AND lo < ?3 AND NOT " SQL_TASK_IS_FINAL("state"),
    [ST_JOB_CANCEL_PENDING] =
        "UPDATE runs SET state = 7, finished_ms = ?2, retry_at_ms = 0"
        " WHERE job = ?1 AND state IN " SQL_TASK_PENDING " RETURNING hi - lo",
    [ST_TASKS_INFLIGHT] =
        "SELECT job, " RUN_COLS " FROM runs WHERE state IN " SQL_TASK_INFLIGHT
        " ORDER BY job, dispatch, lo",
    /* Two statements, not one UPDATE ... RETURNING (see ST_RUNS_OPEN). */
    [ST_EVENT_SEQ_GET] = "SELECT last_seq FROM jobs WHERE id = ?1",
    [ST_EVENT_SEQ_SET] = "UPDATE jobs SET last_seq = ?2 WHERE id = ?1",
    [ST_EVENT_INSERT] = "INSERT INTO events(job, seq, body) VALUES(?1, ?2, ?3)",
    /* A map_reduce job (kind 1) has one run more: its reduce task. */
    [ST_JOB_RUNS_END] = "SELECT total + (kind = 1) FROM jobs WHERE id = ?1",
    /* ?3 = -1: no limit. */
    [ST_EVENTS_SINCE] = "SELECT seq, body FROM events WHERE job = ?1 AND seq > ?2"
                        " ORDER BY seq LIMIT ?3",
    [ST_INPUT_PUT] = "INSERT INTO inputs(job, body) VALUES(?1, ?2)",
    [ST_INPUT_GET] = "SELECT body FROM inputs WHERE job = ?1",
    [ST_INPUT_DELETE] = "DELETE FROM inputs WHERE job = ?1",
    /* OR IGNORE: an output is written once; a second report of the same
     * invocation (it cannot happen: dispatch numbers are never reused)
     * would change nothing the runs point at. */
    [ST_OUTPUT_PUT] = "INSERT OR IGNORE INTO outputs(job, dispatch, n, body)"
                      " VALUES(?1, ?2, ?3, ?4)",
    /* substr() of a blob is byte-wise and 1-based; only the range is copied
     * out of the page cache.  ?5 < 0: to the end (a huge length would
     * overflow inside substr). */
    [ST_OUTPUT_READ] = "SELECT CASE WHEN ?5 < 0 THEN substr(body, ?4 + 1)"
                       " ELSE substr(body, ?4 + 1, ?5) END FROM outputs"
                       " WHERE job = ?1 AND dispatch = ?2 AND n = ?3",
};

struct ledger {
    sqlite3 *db;                  /* owned */
    sqlite3_stmt *stmt[ST_COUNT]; /* owned: prepared once, in ledger_open */
    bool stmt_busy[ST_COUNT];     /* a walk is inside its callback */
    /* The last dispatch number and job id handed out.  A rolled-back
     * transaction takes its counters back in SQLite, but a worker may
     * already run under that dispatch and a client may have seen the job
     * id refused: neither number is given out again by this process. */
    uint64_t last_dispatch, last_job;
    /* Dispatch numbers up to this bound are reserved: dispatch_bound as
     * the open transaction has it, dispatch_committed as the last commit
     * does.  A reservation rolled back reserves nothing. */
    uint64_t dispatch_bound, dispatch_committed;
    /* No job id above this bound was ever given to a job that could have
     * run: ids_bound as the open transaction has it, ids_committed as the
     * last commit does (see ledger_job_ids_bound). */
    uint64_t ids_bound, ids_committed;
    int64_t begin_changes; /* sqlite3_total_changes64 when the txn began */
    /* ledger_defer_sync: the WAL, opened by us for ledger_sync; -1 while
     * commits sync themselves (synchronous=FULL). */
    int wal_fd;
    char *wal_path; /* owned */
    /* Where the runs of jobs worked on lately end (their task count), by
     * job id modulo the size: no split is looked for at or past it.  Job
     * ids are never reused, so an entry is never wrong, only missing. */
    struct {
        uint64_t job;
        int64_t end;
    } runs_end[64];
};

/*
 * Logs why SQLite failed (the message and the code's name) and translates
 * rc: -ENOMEM for SQLITE_NOMEM, BURST_ELEDGER for everything else (full
 * disk, I/O error, read-only, busy, corruption, constraint...).
 */
static int
ledger_fail(struct ledger *l, int rc, const char *what)
{
    const char *msg = sqlite3_errmsg(l->db), *kind = sqlite3_errstr(rc);
    if (strcmp(msg, kind) == 0)
        log_warnx("ledger: %s: %s (SQLite code %d)", what, msg, rc);
    else
        log_warnx("ledger: %s: %s (%s, SQLite code %d)", what, msg, kind, rc);
    if ((rc & 0xff) == SQLITE_NOMEM)
        return -ENOMEM;
    return BURST_ELEDGER;
}

/*
 * Takes statement id for one use: the caller binds, steps, and gives it back
 * with stmt_put().  NULL when the statement is already in use, which only a
 * callback re-entering its own walk can cause (a bug, logged).
 */
static sqlite3_stmt *
stmt_take(struct ledger *l, enum ledger_stmt id)
{
    if (l->stmt_busy[id]) {
        log_warnx("ledger: \"%.40s\" re-entered from a callback", ledger_sql[id]);
        return NULL;
    }
    l->stmt_busy[id] = true;
    return l->stmt[id];
}

/* Resets statement id so it holds no read transaction and no bound values. */
static void
stmt_put(struct ledger *l, enum ledger_stmt id)
{
    /* reset repeats the last step's error, which was handled already. */
    (void)sqlite3_reset(l->stmt[id]);
    (void)sqlite3_clear_bindings(l->stmt[id]);
    l->stmt_busy[id] = false;
}

/* Binds v[0..n-1] to parameters 1..n.  Returns an SQLite code. */
static int
stmt_bind_ints(sqlite3_stmt *st, int n, const int64_t *v)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_bind_int64(st, i + 1, v[i]);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* Binds s (NULL binds SQL NULL) to parameter i.  Returns an SQLite code. */
static int
stmt_bind_text(sqlite3_stmt *st, int i, const char *s, size_t len)
{
    if (s == NULL)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_text64(st, i, s, len, SQLITE_TRANSIENT, SQLITE_UTF8);
}

/* The length of s cut to at most max bytes without splitting a UTF-8
 * sequence (bytes 10xxxxxx continue the character before them). */
static size_t
utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* Steps a statement that returns no rows.  Returns 0 or a translated code. */
static int
stmt_exec(struct ledger *l, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        return ledger_fail(l, rc, what);
    return 0;
}

/* 0 when job exists, BURST_ENOJOB when not, or a translated code. */
static int
ledger_job_check(struct ledger *l, uint64_t job)
{
    sqlite3_stmt *st = stmt_take(l, ST_JOB_EXISTS);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)job);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        err = BURST_ENOJOB;
    else if (rc != SQLITE_ROW)
        err = ledger_fail(l, rc, "job lookup");
    stmt_put(l, ST_JOB_EXISTS);
    return err;
}

/* ---- opening ------------------------------------------------------------ */

/* Runs one PRAGMA (or other statement) whose rows, if any, are ignored. */
static int
ledger_exec(struct ledger *l, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(l->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        log_warnx("ledger: %s: %s (%s)", sql, msg != NULL ? msg : sqlite3_errmsg(l->db),
                  sqlite3_errstr(rc));
        sqlite3_free(msg);
        return (rc & 0xff) == SQLITE_NOMEM ? -ENOMEM : BURST_ELEDGER;
    }
    return 0;
}

/* Runs a PRAGMA returning one integer into *out. */
static int
ledger_pragma_int(struct ledger *l, const char *sql, int64_t *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return ledger_fail(l, rc, sql);
    int err = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else
        err = ledger_fail(l, rc, sql);
    sqlite3_finalize(st);
    return err;
}

/*
 * Sets WAL mode.  A file system without shared memory for WAL keeps the
 * rollback journal, which is just as durable; we say so and go on.  This is
 * also the first statement that reads the file, so a file that is not a
 * database fails here.
 */
static int
ledger_set_wal(struct ledger *l)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return ledger_fail(l, rc, "PRAGMA journal_mode");
    int err = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (mode == NULL || strcmp(mode, "wal") != 0)
            log_warnx("ledger: WAL mode unavailable, journal mode is %s",
                      mode != NULL ? mode : "unknown");
    } else {
        err = ledger_fail(l, rc, "PRAGMA journal_mode");
    }
    sqlite3_finalize(st);
    return err;
}

/* Logs one row of quick_check output on one line: rows hold newlines. */
static void
log_integrity_row(const char *row)
{
    char line[256];
    size_t n = 0;
    for (; row != NULL && row[n] != '\0' && n < sizeof(line) - 1; n++)
        line[n] = row[n] == '\n' ? ' ' : row[n];
    line[n] = '\0';
    log_warnx("ledger: integrity check: %s", line);
}

/* PRAGMA quick_check: "ok", or rows describing the damage (logged). */
static int
ledger_quick_check(struct ledger *l)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(l->db, "PRAGMA quick_check", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return ledger_fail(l, rc, "PRAGMA quick_check");
    int err = 0;
    int nrows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(st, 0);
        if (nrows == 0 && row != NULL && strcmp(row, "ok") == 0)
            break;
        /* A badly damaged file can give thousands of rows; a few say enough. */
        if (nrows < 5)
            log_integrity_row(row);
        nrows++;
        err = BURST_ELEDGER;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "PRAGMA quick_check");
    else if (err != 0)
        log_warnx("ledger: the database is damaged; restore it or move it aside");
    sqlite3_finalize(st);
    return err;
}

/*
 * Creates the schema in a new file, or checks that an existing one is a
 * burst ledger of a version we understand.  Done under BEGIN IMMEDIATE so a
 * second process opening the same file at the same moment cannot create it
 * twice.
 */
static int
ledger_schema(struct ledger *l)
{
    int err = ledger_exec(l, "BEGIN IMMEDIATE");
    if (err != 0)
        return err;
    int64_t version = 0, app_id = 0, nobjects = 0;
    err = ledger_pragma_int(l, "PRAGMA user_version", &version);
    if (err == 0)
        err = ledger_pragma_int(l, "PRAGMA application_id", &app_id);
    if (err == 0)
        err = ledger_pragma_int(l, "SELECT count(*) FROM sqlite_schema", &nobjects);
    if (err != 0)
        goto fail_rollback;

    if (app_id != 0 && app_id != LEDGER_APPLICATION_ID) {
        log_warnx("ledger: the file belongs to another application (id %#" PRIx64 ")",
                  (uint64_t)app_id);
        err = BURST_ELEDGER;
        goto fail_rollback;
    }
    if (version > LEDGER_SCHEMA_VERSION) {
        log_warnx("ledger: schema version %" PRId64 " is newer than this burstd's (%d);"
                  " run a newer burstd or restore an older ledger",
                  version, LEDGER_SCHEMA_VERSION);
        err = BURST_ELEDGER;
        goto fail_rollback;
    }
    if (version == 1) {
        log_warnx("ledger: schema version %" PRId64 " is from an older burstd (a row per"
                  " task); this burstd needs version %d and cannot convert it: move the"
                  " ledger aside to start afresh",
                  version, LEDGER_SCHEMA_VERSION);
        err = BURST_ELEDGER;
        goto fail_rollback;
    }
    if (version == 2) {
        /* Version 3 only adds a table: every row of version 2 means the
         * same, and a job without an inputs row has its inputs in storage,
         * as every version 2 job has. */
        err = ledger_exec(l, LEDGER_INPUTS_SQL);
        if (err == 0)
            err = ledger_exec(l, "PRAGMA user_version = 3");
        if (err != 0)
            goto fail_rollback;
        log_info("ledger: schema upgraded from version 2 to 3 (inputs of small jobs)");
        version = 3;
    }
    if (version == 3) {
        /* Likewise: an output without a row is in storage, as every output
         * of version 3 is. */
        err = ledger_exec(l, LEDGER_OUTPUTS_SQL);
        if (err == 0)
            err = ledger_exec(l, "PRAGMA user_version = 4");
        if (err != 0)
            goto fail_rollback;
        log_info("ledger: schema upgraded from version 3 to 4 (outputs of small"
                 " invocations)");
        version = 4;
    }
    if (version == 4) {
        /* Same columns, rowid tables: copied over, indexes made again. */
        err = ledger_exec(l, "DROP INDEX runs_pending; DROP INDEX runs_retrying;"
                             " DROP INDEX runs_inflight;"
                             " ALTER TABLE runs RENAME TO runs_v4;"
                             " ALTER TABLE events RENAME TO events_v4;"
                             " ALTER TABLE outputs RENAME TO outputs_v4;" LEDGER_RUNS_SQL
                                 LEDGER_EVENTS_SQL LEDGER_OUTPUTS_SQL
                             "INSERT INTO runs SELECT * FROM runs_v4;"
                             " INSERT INTO events SELECT * FROM events_v4;"
                             " INSERT INTO outputs SELECT * FROM outputs_v4;"
                             " DROP TABLE runs_v4; DROP TABLE events_v4;"
                             " DROP TABLE outputs_v4; PRAGMA user_version = 5");
        if (err != 0)
            goto fail_rollback;
        log_info("ledger: schema upgraded from version 4 to 5 (tables with blobs keyed by"
                 " rowid)");
    }
    if (version == 0) {
        if (nobjects != 0) {
            log_warnx("ledger: the file holds tables but no burst schema version");
            err = BURST_ELEDGER;
            goto fail_rollback;
        }
        char set[128];
        snprintf(set, sizeof(set), "PRAGMA user_version = %d; PRAGMA application_id = %d",
                 LEDGER_SCHEMA_VERSION, LEDGER_APPLICATION_ID);
        err = ledger_exec(l, ledger_schema_sql);
        if (err == 0)
            err = ledger_exec(l, set);
        if (err != 0)
            goto fail_rollback;
    }
    return ledger_exec(l, "COMMIT");

fail_rollback:
    (void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

static int
ledger_prepare(struct ledger *l)
{
    for (int i = 0; i < ST_COUNT; i++) {
        int rc = sqlite3_prepare_v3(l->db, ledger_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &l->stmt[i], NULL);
        if (rc != SQLITE_OK)
            return ledger_fail(l, rc, ledger_sql[i]);
    }
    return 0;
}

int
ledger_stmts_with_scratch(struct ledger *l, void (*cb)(void *arg, const char *sql), void *arg)
{
    int n = 0;
    for (int i = 0; i < ST_COUNT; i++) {
        char *sql = sqlite3_mprintf("EXPLAIN %s", ledger_sql[i]);
        if (sql == NULL)
            return -ENOMEM;
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
        sqlite3_free(sql);
        if (rc != SQLITE_OK)
            return ledger_fail(l, rc, "explain");
        bool scratch = false;
        while (!scratch && sqlite3_step(st) == SQLITE_ROW) {
            const char *op = (const char *)sqlite3_column_text(st, 1);
            scratch = op != NULL &&
                      (strcmp(op, "OpenEphemeral") == 0 || strcmp(op, "SorterOpen") == 0);
        }
        sqlite3_finalize(st);
        if (scratch) {
            cb(arg, ledger_sql[i]);
            n++;
        }
    }
    return n;
}

/*
 * Creates the file with mode 0600 if it does not exist (SQLite would use
 * 0644 less the umask; its -wal and -shm files copy the database's mode).
 * Opening it read-write first also turns "read-only file" or "directory
 * not writable" into a plain -errno before SQLite quietly falls back to
 * read-only.
 */
static int
ledger_create_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        log_warn("ledger: %s", path);
        return -e;
    }
    close(fd);
    return 0;
}

int
ledger_open(const char *path, struct ledger **out)
{
    *out = NULL;
    if (path == NULL || *path == '\0')
        return -EINVAL;
    int err = ledger_create_file(path);
    if (err != 0)
        return err;

    struct ledger *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    l->wal_fd = -1;
    /* NOMUTEX: one thread only, so SQLite's own locking is wasted work. */
    int rc = sqlite3_open_v2(
        path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
        ledger_vfs_name());
    if (rc != SQLITE_OK) {
        if (l->db == NULL) {
            err = -ENOMEM;
            goto fail_free;
        }
        log_warnx("ledger: %s: %s", path, sqlite3_errmsg(l->db));
        err = (rc & 0xff) == SQLITE_NOMEM ? -ENOMEM : BURST_ELEDGER;
        goto fail_close;
    }
    sqlite3_extended_result_codes(l->db, 1);
    if (sqlite3_db_readonly(l->db, "main") != 0) {
        log_warnx("ledger: %s: opened read-only; the daemon needs to write it", path);
        err = BURST_ELEDGER;
        goto fail_close;
    }
    sqlite3_busy_timeout(l->db, LEDGER_BUSY_TIMEOUT_MS);

    if ((err = ledger_set_wal(l)) != 0 || (err = ledger_quick_check(l)) != 0)
        goto fail_close;
    if ((err = ledger_exec(l, "PRAGMA synchronous=FULL")) != 0 ||
        (err = ledger_exec(l, "PRAGMA foreign_keys=ON")) != 0)
        goto fail_close;
    if ((err = ledger_schema(l)) != 0 || (err = ledger_prepare(l)) != 0)
        goto fail_close;
    sqlite3_stmt *st = stmt_take(l, ST_JOB_LAST);
    rc = st != NULL ? sqlite3_step(st) : SQLITE_MISUSE;
    if (rc == SQLITE_ROW) {
        /* After a crash, ids up to the bound may have been jobs that ran
         * but were never committed: the next id comes after all of them. */
        uint64_t used = (uint64_t)sqlite3_column_int64(st, 0);
        l->ids_bound = l->ids_committed = (uint64_t)sqlite3_column_int64(st, 1);
        l->last_job = used > l->ids_bound ? used : l->ids_bound;
    } else {
        err = ledger_fail(l, rc, "read the last job id");
    }
    if (st != NULL)
        stmt_put(l, ST_JOB_LAST);
    if (err != 0)
        goto fail_close;

    *out = l; /* ownership to the caller: ledger_close() */
    return 0;

fail_close:
    ledger_close(l);
    return err;
fail_free:
    free(l);
    return err;
}

void
ledger_close(struct ledger *l)
{
    if (l == NULL)
        return;
    if (l->db != NULL && ledger_in_txn(l))
        log_warnx("ledger: closing with an open transaction; it is rolled back");
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(l->stmt[i]);
    if (l->wal_fd >= 0)
        close(l->wal_fd);
    free(l->wal_path);
    /* The last connection to close checkpoints the WAL into the file. */
    if (l->db != NULL && sqlite3_close(l->db) != SQLITE_OK)
        log_warnx("ledger: close: %s", sqlite3_errmsg(l->db));
    free(l);
}

int
ledger_set_max_size(struct ledger *l, uint64_t bytes)
{
    int64_t page_size = 0, pages = 0;
    int err = ledger_pragma_int(l, "PRAGMA page_size", &page_size);
    if (err != 0)
        return err;
    if (page_size <= 0)
        return BURST_ELEDGER;
    uint64_t max = bytes / (uint64_t)page_size;
    if (bytes == 0 || max > UINT32_MAX)
        max = 0xfffffffe; /* SQLite's own ceiling */
    else if (max == 0)
        max = 1;
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %" PRIu64, max);
    /* SQLite never lowers the limit below the current size; it reports the
     * limit in force, which we do not need. */
    return ledger_pragma_int(l, sql, &pages);
}

/* ---- transactions ------------------------------------------------------- */

/* Opens the WAL for ledger_sync and makes its name durable in the directory:
 * with synchronous=NORMAL SQLite syncs neither until a checkpoint, and a
 * WAL whose directory entry is lost takes its transactions with it. */
static int
wal_open(struct ledger *l)
{
    int fd = open(l->wal_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    char *dir = strdup(l->wal_path);
    if (dir == NULL) {
        close(fd);
        return -ENOMEM;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash != NULL)
        *slash = '\0';
    int dfd = open(slash != NULL ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    int err = 0;
    if (dfd < 0 || fsync(dfd) != 0)
        err = -errno;
    if (dfd >= 0)
        close(dfd);
    if (err != 0) {
        close(fd);
        return err;
    }
    if (l->wal_fd >= 0)
        close(l->wal_fd);
    l->wal_fd = fd;
    return 0;
}

int
ledger_defer_sync(struct ledger *l)
{
    const char *db = sqlite3_db_filename(l->db, "main");
    char *mode = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(l->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL)
        mode = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    bool wal = mode != NULL && strcmp(mode, "wal") == 0;
    free(mode);
    if (!wal || db == NULL || *db == '\0')
        return 0; /* a rollback journal syncs in the commit, as before */
    size_t len = strlen(db) + sizeof("-wal");
    l->wal_path = malloc(len);
    if (l->wal_path == NULL)
        return -ENOMEM;
    snprintf(l->wal_path, len, "%s-wal", db);
    /* The WAL exists once the schema was read or written (ledger_open). */
    int err = wal_open(l);
    if (err == 0)
        err = ledger_exec(l, "PRAGMA synchronous=NORMAL");
    if (err != 0) {
        log_warnx("ledger: %s: cannot sync it apart (%s); commits sync themselves",
                  l->wal_path, strerror(err < 0 ? -err : EIO));
        if (l->wal_fd >= 0)
            close(l->wal_fd);
        l->wal_fd = -1;
        (void)ledger_exec(l, "PRAGMA synchronous=FULL");
        return 0;
    }
    return 0;
}

int
ledger_take_exclusive(struct ledger *l)
{
    /* The lock is taken by the next read and then held. */
    int err = ledger_exec(l, "PRAGMA locking_mode=EXCLUSIVE");
    if (err == 0)
        err = ledger_exec(l, "SELECT count(*) FROM meta");
    return err;
}

bool
ledger_sync_deferred(const struct ledger *l)
{
    return l->wal_fd >= 0;
}

int
ledger_sync_fd(struct ledger *l)
{
    if (l->wal_fd < 0)
        return -1;
    /* SQLite unlinks the WAL only when the last connection closes, but a
     * WAL replaced behind our back must not be synced in its stead. */
    struct stat st;
    if (fstat(l->wal_fd, &st) != 0 || st.st_nlink == 0) {
        int err = wal_open(l);
        if (err != 0) {
            log_warnx("ledger: %s: cannot reopen: %s", l->wal_path, strerror(-err));
            return -2;
        }
    }
    return l->wal_fd;
}

bool
ledger_in_txn(const struct ledger *l)
{
    /* SQLite's own view, not a flag of ours: an error such as SQLITE_FULL
     * may roll the transaction back by itself. */
    return sqlite3_get_autocommit(l->db) == 0;
}

int
ledger_begin(struct ledger *l)
{
    if (ledger_in_txn(l))
        return 0;
    /* A transaction that SQLite rolled back by itself (SQLITE_FULL, say)
     * never reached ledger_rollback: what it reserved is not in the
     * ledger. */
    l->ids_bound = l->ids_committed;
    l->dispatch_bound = l->dispatch_committed;
    sqlite3_stmt *st = stmt_take(l, ST_BEGIN);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = stmt_exec(l, st, "begin");
    stmt_put(l, ST_BEGIN);
    l->begin_changes = sqlite3_total_changes64(l->db);
    return err;
}

bool
ledger_txn_changed(const struct ledger *l)
{
    return ledger_in_txn(l) && sqlite3_total_changes64(l->db) != l->begin_changes;
}

int
ledger_commit(struct ledger *l)
{
    if (!ledger_in_txn(l))
        return 0;
    sqlite3_stmt *st = stmt_take(l, ST_COMMIT);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = stmt_exec(l, st, "commit");
    stmt_put(l, ST_COMMIT);
    if (err == 0) {
        l->ids_committed = l->ids_bound;
        l->dispatch_committed = l->dispatch_bound;
    }
    if (err != 0) {
        /* Nothing of the transaction is durable: undo it in memory too, so
         * the next ledger_begin() starts clean. */
        ledger_rollback(l);
        return err == -ENOMEM ? err : BURST_ELEDGER;
    }
    return 0;
}

void
ledger_rollback(struct ledger *l)
{
    if (!ledger_in_txn(l))
        return;
    sqlite3_stmt *st = stmt_take(l, ST_ROLLBACK);
    if (st == NULL)
        return;
    (void)stmt_exec(l, st, "rollback"); /* logged; nothing more to do */
    stmt_put(l, ST_ROLLBACK);
    l->ids_bound = l->ids_committed;
    l->dispatch_bound = l->dispatch_committed;
}

int
ledger_next_dispatch(struct ledger *l, uint64_t *out)
{
    assert(ledger_in_txn(l));
    if (l->last_dispatch < l->dispatch_bound) {
        *out = ++l->last_dispatch;
        return 0;
    }
    sqlite3_stmt *st = stmt_take(l, ST_NEXT_DISPATCH);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = stmt_bind_ints(
        st, 2, (const int64_t[]){(int64_t)l->last_dispatch, LEDGER_DISPATCH_BLOCK});
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        l->dispatch_bound = (uint64_t)sqlite3_column_int64(st, 0);
        l->last_dispatch = l->dispatch_bound - LEDGER_DISPATCH_BLOCK;
        *out = ++l->last_dispatch;
    } else {
        err = ledger_fail(l, rc, "next dispatch");
    }
    stmt_put(l, ST_NEXT_DISPATCH);
    return err;
}

/* ---- jobs --------------------------------------------------------------- */

static int
meta_set(struct ledger *l, const char *key, int64_t value)
{
    assert(ledger_in_txn(l));
    sqlite3_stmt *st = stmt_take(l, ST_META_SET);
    if (st == NULL)
        return BURST_EINTERNAL;
    int rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, value);
    char what[64];
    snprintf(what, sizeof(what), "set %s", key);
    int err = rc == SQLITE_OK ? stmt_exec(l, st, what) : ledger_fail(l, rc, what);
    stmt_put(l, ST_META_SET);
    return err;
}

static int
ids_bound_set(struct ledger *l, uint64_t bound)
{
    int err = meta_set(l, "job_ids_bound", (int64_t)bound);
    if (err == 0)
        l->ids_bound = bound;
    return err;
}

uint64_t
ledger_job_ids_bound(const struct ledger *l)
{
    return l->ids_committed;
}

int
ledger_job_ids_settle(struct ledger *l)
{
    return ids_bound_set(l, l->last_job);
}

int
ledger_reserve_job_id(struct ledger *l, uint64_t *out)
{
    /* Kept in memory: the job's insertion persists its id, and an id whose
     * job never got in (the submission failed) needs no record. */
    *out = ++l->last_job;
    return 0;
}

void
ledger_job_free(struct ledger_job *job)
{
    if (job == NULL)
        return;
    free(job->backend);
    free(job->name);
    free(job->error);
    free(job->fn.arg);
    free(job->fn.symbol);
    free(job->reduce.arg);
    free(job->reduce.symbol);
    job->backend = job->name = job->error = NULL;
    job->fn.arg = job->fn.symbol = job->reduce.arg = job->reduce.symbol = NULL;
}

/*
 * Points *out at column col's text.  With copy it is a malloc'ed copy the
 * caller owns; without, it is borrowed from st until its next step or reset
 * (the const is cast away because struct ledger_job holds owned strings, and
 * a borrowed job only reaches callbacks as const).  SQL NULL gives NULL.
 */
static int
col_text(sqlite3_stmt *st, int col, bool copy, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return 0;
    const char *s = (const char *)sqlite3_column_text(st, col);
    if (s == NULL)
        return -ENOMEM; /* the only way a non-NULL value gives no text */
    if (!copy) {
        *out = (char *)s;
        return 0;
    }
    *out = strdup(s);
    return *out != NULL ? 0 : -ENOMEM;
}

/* Fills job from a row of JOB_COLS; see col_text() for copy.  On failure
 * nothing is left allocated. */
static int
job_from_row(sqlite3_stmt *st, bool copy, struct ledger_job *job)
{
    memset(job, 0, sizeof(*job));
    job->id = (uint64_t)sqlite3_column_int64(st, 0);
    job->owner_uid = (uint32_t)sqlite3_column_int64(st, 1);
    job->kind = sqlite3_column_int(st, 2);
    job->state = sqlite3_column_int(st, 3);
    job->total = (uint32_t)sqlite3_column_int64(st, 4);
    job->chunksize = (uint32_t)sqlite3_column_int64(st, 5);
    job->retries = (uint32_t)sqlite3_column_int64(st, 6);
    job->timeout_ms = (uint64_t)sqlite3_column_int64(st, 7);
    job->memory_mb = (uint32_t)sqlite3_column_int64(st, 8);
    job->cancel_on_disconnect = sqlite3_column_int(st, 9) != 0;
    job->fn.kind = sqlite3_column_int(st, 13);
    job->reduce.kind = sqlite3_column_int(st, 16);
    job->created_ms = sqlite3_column_int64(st, 19);
    job->started_ms = sqlite3_column_int64(st, 20);
    job->finished_ms = sqlite3_column_int64(st, 21);
    job->last_seq = (uint64_t)sqlite3_column_int64(st, 22);

    int err = col_text(st, 10, copy, &job->backend);
    if (err == 0)
        err = col_text(st, 11, copy, &job->name);
    if (err == 0)
        err = col_text(st, 12, copy, &job->error);
    if (err == 0)
        err = col_text(st, 14, copy, &job->fn.arg);
    if (err == 0)
        err = col_text(st, 15, copy, &job->fn.symbol);
    if (err == 0)
        err = col_text(st, 17, copy, &job->reduce.arg);
    if (err == 0)
        err = col_text(st, 18, copy, &job->reduce.symbol);
    if (err != 0 && copy)
        ledger_job_free(job);
    return err;
}

static int
job_bind(sqlite3_stmt *st, const struct ledger_job *job)
{
    const int64_t v[] = {
        job->owner_uid,
        job->kind,
        job->state,
        job->total,
        job->chunksize,
        job->retries,
        (int64_t)job->timeout_ms,
        job->memory_mb,
        job->cancel_on_disconnect,
    };
    int rc = stmt_bind_ints(st, 9, v);
    const char *const text[] = {job->backend, job->name, job->error};
    for (int i = 0; i < 3 && rc == SQLITE_OK; i++)
        rc = stmt_bind_text(st, 10 + i, text[i], text[i] != NULL ? strlen(text[i]) : 0);
    const struct ledger_fn *fns[] = {&job->fn, &job->reduce};
    for (int i = 0; i < 2 && rc == SQLITE_OK; i++) {
        const struct ledger_fn *fn = fns[i];
        rc = sqlite3_bind_int(st, 13 + 3 * i, fn->kind);
        if (rc == SQLITE_OK)
            rc = stmt_bind_text(st, 14 + 3 * i, fn->arg,
                                fn->arg != NULL ? strlen(fn->arg) : 0);
        if (rc == SQLITE_OK)
            rc = stmt_bind_text(st, 15 + 3 * i, fn->symbol,
                                fn->symbol != NULL ? strlen(fn->symbol) : 0);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 19, job->created_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 20, job->started_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 21, job->finished_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 22, (int64_t)job->last_seq);
    if (rc == SQLITE_OK)
        rc = job->id != 0 ? sqlite3_bind_int64(st, 23, (int64_t)job->id)
                          : sqlite3_bind_null(st, 23);
    return rc;
}

/*
 * Inserts the job row, then one queued run [0, nrows) for all its tasks:
 * a submission costs two rows however many tasks it has.
 */
int
ledger_job_insert(struct ledger *l, struct ledger_job *job, uint32_t nrows)
{
    assert(ledger_in_txn(l));
    sqlite3_stmt *st = stmt_take(l, ST_JOB_INSERT);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    /* No id: the next one, so that it cannot meet an id reserved for a
     * submission still writing its inputs. */
    uint64_t asked = job->id;
    if (job->id == 0)
        job->id = l->last_job + 1;
    int rc = job_bind(st, job);
    job->id = asked;
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "insert job");
    stmt_put(l, ST_JOB_INSERT);
    if (err != 0)
        return err;
    int64_t id = sqlite3_last_insert_rowid(l->db);
    if (nrows > 0) {
        st = stmt_take(l, ST_RUN_INSERT);
        if (st == NULL)
            return BURST_EINTERNAL;
        rc = stmt_bind_ints(st, 2, (const int64_t[]){id, nrows});
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            err = ledger_fail(l, rc, "insert tasks");
        stmt_put(l, ST_RUN_INSERT);
    }
    if (err == 0) {
        job->id = (uint64_t)id;
        size_t slot = job->id % (sizeof(l->runs_end) / sizeof(l->runs_end[0]));
        l->runs_end[slot].job = job->id;
        l->runs_end[slot].end = nrows;
    }
    if (err == 0 && job->id > l->last_job)
        l->last_job = job->id;
    if (err == 0 && job->id > l->ids_bound)
        err = ids_bound_set(l, job->id + LEDGER_JOB_ID_BLOCK);
    return err;
}

int
ledger_job_get(struct ledger *l, uint64_t id, struct ledger_job *out)
{
    sqlite3_stmt *st = stmt_take(l, ST_JOB_GET);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = job_from_row(st, true, out);
    else if (rc == SQLITE_DONE)
        err = BURST_ENOJOB;
    else
        err = ledger_fail(l, rc, "get job");
    stmt_put(l, ST_JOB_GET);
    return err;
}

int
ledger_job_set_state(struct ledger *l, uint64_t id, int state, const char *error,
                     int64_t now_ms)
{
    assert(ledger_in_txn(l));
    assert(state >= 0 && state < BURST_JOB_NSTATES);
    sqlite3_stmt *st = stmt_take(l, ST_JOB_SET_STATE);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = stmt_bind_ints(st, 2, (const int64_t[]){(int64_t)id, state});
    if (rc == SQLITE_OK)
        rc = stmt_bind_text(st, 3, error, error != NULL ? strlen(error) : 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 4, now_ms);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "set job state");
    else if (sqlite3_changes(l->db) == 0)
        err = BURST_ENOJOB;
    stmt_put(l, ST_JOB_SET_STATE);
    return err;
}

int
ledger_job_counts(struct ledger *l, uint64_t id, uint32_t counts[BURST_TASK_NSTATES])
{
    memset(counts, 0, sizeof(uint32_t) * BURST_TASK_NSTATES);
    int err = ledger_job_check(l, id);
    if (err != 0)
        return err;
    sqlite3_stmt *st = stmt_take(l, ST_JOB_COUNTS);
    if (st == NULL)
        return BURST_EINTERNAL;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)id);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int state = sqlite3_column_int(st, 0);
        if (state >= 0 && state < BURST_TASK_NSTATES)
            counts[state] += (uint32_t)sqlite3_column_int64(st, 1);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "count tasks");
    stmt_put(l, ST_JOB_COUNTS);
    return err;
}

int
ledger_jobs_foreach(struct ledger *l, int64_t owner, bool active_only, ledger_job_cb cb,
                    void *arg)
{
    enum ledger_stmt id;
    if (owner < 0)
        id = active_only ? ST_JOBS_ACTIVE : ST_JOBS_ALL;
    else
        id = active_only ? ST_JOBS_OWNER_ACTIVE : ST_JOBS_OWNER;
    sqlite3_stmt *st = stmt_take(l, id);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = owner >= 0 ? sqlite3_bind_int64(st, 1, owner) : SQLITE_OK;
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct ledger_job job;
        /* Borrowed strings: no allocation per job, valid during the call. */
        if ((err = job_from_row(st, false, &job)) != 0 || (err = cb(arg, &job)) != 0)
            break;
        rc = SQLITE_OK;
    }
    if (err == 0 && rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "list jobs");
    stmt_put(l, id);
    return err;
}

/* ---- tasks -------------------------------------------------------------- */

/* Copies reason (len bytes) into dst (size bytes), cut at a character
 * boundary and NUL-terminated. */
static void
reason_copy(char *dst, size_t size, const char *reason, size_t len)
{
    size_t n = reason != NULL ? utf8_cut(reason, len, size - 1) : 0;
    if (n > 0)
        memcpy(dst, reason, n);
    dst[n] = '\0';
}

/*
 * A run as read from a row of RUN_COLS: what its tasks share, and its blob
 * of output locations (borrowed from the statement until its next step or
 * reset).
 */
struct run_row {
    int64_t lo, hi;
    struct ledger_task t; /* index and output locations unset */
    const unsigned char *outs;
    size_t outs_len;
};

static uint64_t
le64_get(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void
le64_put(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        p[i] = (unsigned char)v;
}

/* Fills r from a row of RUN_COLS starting at column c. */
static void
run_from_row(sqlite3_stmt *st, int c, struct run_row *r)
{
    memset(r, 0, sizeof(*r));
    r->lo = sqlite3_column_int64(st, c + 0);
    r->hi = sqlite3_column_int64(st, c + 1);
    struct ledger_task *t = &r->t;
    t->state = sqlite3_column_int(st, c + 2);
    t->attempts = (uint32_t)sqlite3_column_int64(st, c + 3);
    t->exit_status = sqlite3_column_int(st, c + 4);
    t->signal = sqlite3_column_int(st, c + 5);
    /* A NULL here is "no reason" or, rarely, no memory to convert: either
     * way an empty reason is the safe answer. */
    const char *reason = (const char *)sqlite3_column_text(st, c + 6);
    reason_copy(t->reason, sizeof(t->reason), reason,
                (size_t)sqlite3_column_bytes(st, c + 6));
    t->started_ms = sqlite3_column_int64(st, c + 7);
    t->finished_ms = sqlite3_column_int64(st, c + 8);
    t->retry_at_ms = sqlite3_column_int64(st, c + 9);
    t->dispatch = (uint64_t)sqlite3_column_int64(st, c + 10);
    t->has_out = sqlite3_column_int(st, c + 11) != 0;
    t->out_dispatch = (uint64_t)sqlite3_column_int64(st, c + 12);
    t->out_n = (uint32_t)sqlite3_column_int64(st, c + 13);
    r->outs = sqlite3_column_blob(st, c + 14);
    r->outs_len = (size_t)sqlite3_column_bytes(st, c + 14);
}

/* Task index of run r (lo <= index < hi) as a struct ledger_task.  A blob
 * too short for the index (never written so) leaves the locations at 0,
 * which reads as an empty result rather than someone else's bytes. */
static void
run_task(const struct run_row *r, uint32_t index, struct ledger_task *t)
{
    *t = r->t;
    t->index = index;
    size_t k = (size_t)(index - r->lo) * LEDGER_OUT_ENTRY;
    if (t->has_out && r->outs != NULL && r->outs_len >= LEDGER_OUT_ENTRY &&
        k <= r->outs_len - LEDGER_OUT_ENTRY) {
        const unsigned char *e = r->outs + k;
        t->res_off = le64_get(e);
        t->res_len = le64_get(e + 8);
        t->log_off = le64_get(e + 16);
        t->log_len = le64_get(e + 24);
    }
}

int
ledger_task_get(struct ledger *l, uint64_t job, uint32_t index, struct ledger_task *out)
{
    sqlite3_stmt *st = stmt_take(l, ST_TASK_GET);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = stmt_bind_ints(st, 2, (const int64_t[]){(int64_t)job, index});
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        struct run_row r;
        run_from_row(st, 0, &r);
        run_task(&r, index, out);
    } else if (rc == SQLITE_DONE) {
        err = BURST_ENOTASK;
    } else {
        err = ledger_fail(l, rc, "get task");
    }
    stmt_put(l, ST_TASK_GET);
    /* Tell an unknown job from an unknown index of a known job. */
    if (err == BURST_ENOTASK && ledger_job_check(l, job) == BURST_ENOJOB)
        err = BURST_ENOJOB;
    return err;
}

int
ledger_tasks_foreach(struct ledger *l, uint64_t job, int state, uint32_t offset,
                     uint32_t limit, ledger_task_cb cb, void *arg)
{
    int err = ledger_job_check(l, job);
    if (err != 0)
        return err;
    sqlite3_stmt *st = stmt_take(l, ST_TASKS_LIST);
    if (st == NULL)
        return BURST_EINTERNAL;
    int rc = stmt_bind_ints(
        st, 3, (const int64_t[]){(int64_t)job, offset, state < 0 ? -1 : state});
    uint32_t n = 0;
    while (err == 0 && (limit == 0 || n < limit) && rc == SQLITE_OK &&
           (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct run_row r;
        run_from_row(st, 0, &r);
        /* Expanded task by task: a run is one row, a listing is per task. */
        for (int64_t i = r.lo > offset ? r.lo : offset; i < r.hi; i++) {
            if (limit != 0 && n == limit)
                break;
            struct ledger_task t;
            run_task(&r, (uint32_t)i, &t);
            n++;
            if ((err = cb(arg, &t)) != 0)
                break;
        }
        rc = SQLITE_OK;
    }
    if (err == 0 && rc != SQLITE_DONE && rc != SQLITE_OK)
        err = ledger_fail(l, rc, "list tasks");
    stmt_put(l, ST_TASKS_LIST);
    return err;
}

int
ledger_tasks_pending(struct ledger *l, uint64_t job, uint32_t idx_limit, int64_t now_ms,
                     uint32_t max, uint32_t *idx_out, uint32_t *n_out)
{
    *n_out = 0;
    int err = ledger_job_check(l, job);
    if (err != 0 || max == 0 || idx_limit == 0)
        return err;
    sqlite3_stmt *st = stmt_take(l, ST_TASKS_PENDING);
    if (st == NULL)
        return BURST_EINTERNAL;
    /* Every run holds at least one task, so max runs are always enough. */
    int rc =
        stmt_bind_ints(st, 4, (const int64_t[]){(int64_t)job, idx_limit, now_ms, max});
    uint32_t n = 0;
    while (rc == SQLITE_OK && n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t lo = sqlite3_column_int64(st, 0), hi = sqlite3_column_int64(st, 1);
        if (hi > idx_limit)
            hi = idx_limit;
        for (int64_t i = lo; i < hi && n < max; i++)
            idx_out[n++] = (uint32_t)i;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        err = ledger_fail(l, rc, "pending tasks");
    else
        *n_out = n;
    stmt_put(l, ST_TASKS_PENDING);
    return err;
}

int
ledger_tasks_next_retry(struct ledger *l, uint64_t job, int64_t *at_ms, bool *found)
{
    *found = false;
    int err = ledger_job_check(l, job);
    if (err != 0)
        return err;
    sqlite3_stmt *st = stmt_take(l, ST_TASKS_NEXT_RETRY);
    if (st == NULL)
        return BURST_EINTERNAL;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)job);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        /* min() over no rows is one NULL row. */
        if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
            *at_ms = sqlite3_column_int64(st, 0);
            *found = true;
        }
    } else {
        err = ledger_fail(l, rc, "next retry");
    }
    stmt_put(l, ST_TASKS_NEXT_RETRY);
    return err;
}

/* Splits the non-final run of job that strictly contains boundary k, if
 * there is one, so that no non-final run crosses k.  A final run is never
 * split: nothing will change it, whatever range crosses it.  Most
 * boundaries (a chunk's end at the previous chunk's start) have no such
 * run, and then nothing is written. */
static int
run_split(struct ledger *l, uint64_t job, int64_t k)
{
    if (k <= 0)
        return 0; /* no run starts below task 0 */
    sqlite3_stmt *across = stmt_take(l, ST_RUN_ACROSS);
    if (across == NULL)
        return BURST_EINTERNAL;
    int rc = stmt_bind_ints(across, 2, (const int64_t[]){(int64_t)job, k});
    if (rc == SQLITE_OK)
        rc = sqlite3_step(across);
    if (rc != SQLITE_ROW) {
        stmt_put(l, ST_RUN_ACROSS);
        return rc == SQLITE_DONE ? 0 : ledger_fail(l, rc, "split a run");
    }
    sqlite3_stmt *copy = stmt_take(l, ST_RUN_SPLIT_COPY);
    if (copy == NULL) {
        stmt_put(l, ST_RUN_ACROSS);
        return BURST_EINTERNAL;
    }
    /* Binding copies the values: the read ends before the write. */
    rc = stmt_bind_ints(copy, 2, (const int64_t[]){(int64_t)job, k});
    for (int col = 1; rc == SQLITE_OK && col <= 14; col++)
        rc = sqlite3_bind_value(copy, col + 2, sqlite3_column_value(across, col));
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_value(copy, 17, sqlite3_column_value(across, 0));
    stmt_put(l, ST_RUN_ACROSS);
    int err =
        rc == SQLITE_OK ? stmt_exec(l, copy, "split a run") : ledger_fail(l, rc, "split a run");
    stmt_put(l, ST_RUN_SPLIT_COPY);
    if (err != 0)
        return err;
    sqlite3_stmt *cut = stmt_take(l, ST_RUN_SPLIT_CUT);
    if (cut == NULL)
        return BURST_EINTERNAL;
    rc = stmt_bind_ints(cut, 2, (const int64_t[]){(int64_t)job, k});
    err = rc == SQLITE_OK ? stmt_exec(l, cut, "split a run") : ledger_fail(l, rc, "split a run");
    stmt_put(l, ST_RUN_SPLIT_CUT);
    return err;
}

/* Where job's runs end, from the cache or else the job's row; INT64_MAX
 * when that cannot be read (the caller then looks for splits anyway). */
static int64_t
runs_end(struct ledger *l, uint64_t job)
{
    size_t slot = job % (sizeof(l->runs_end) / sizeof(l->runs_end[0]));
    if (l->runs_end[slot].job == job)
        return l->runs_end[slot].end;
    sqlite3_stmt *st = stmt_take(l, ST_JOB_RUNS_END);
    if (st == NULL)
        return INT64_MAX;
    int64_t end = INT64_MAX;
    if (sqlite3_bind_int64(st, 1, (int64_t)job) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        end = sqlite3_column_int64(st, 0);
    stmt_put(l, ST_JOB_RUNS_END);
    if (end != INT64_MAX) {
        l->runs_end[slot].job = job;
        l->runs_end[slot].end = end;
    }
    return end;
}

/* Makes [lo, hi) a union of whole runs (as far as non-final runs go).  No
 * run crosses the job's end: a chunk that reaches it needs no split there,
 * and the lookup costs less than the split's statements. */
static int
runs_isolate(struct ledger *l, uint64_t job, int64_t lo, int64_t hi)
{
    int64_t end = runs_end(l, job);
    int err = lo < end ? run_split(l, job, lo) : 0;
    if (err == 0 && hi < end)
        err = run_split(l, job, hi);
    return err;
}

/* The length of the stretch of consecutive indexes idx[i], idx[i] + 1, ...
 * that starts at i (at least 1, at most n - i). */
static uint32_t
stretch_len(const uint32_t *idx, uint32_t n, uint32_t i)
{
    uint32_t k = i + 1;
    while (k < n && idx[k - 1] != UINT32_MAX && idx[k] == idx[k - 1] + 1)
        k++;
    return k - i;
}

/* Binds the range [lo, hi) to ?2 and ?3 and the job to ?1. */
static int
stmt_bind_range(sqlite3_stmt *st, uint64_t job, int64_t lo, int64_t hi)
{
    return stmt_bind_ints(st, 3, (const int64_t[]){(int64_t)job, lo, hi});
}

/* Calls cb for each run of job starting in [lo, hi) that is not final,
 * as it is now: the runs an UPDATE over the same range and condition will
 * change next.  Returns 0 or an error. */
static int
runs_open_each(struct ledger *l, uint64_t job, int64_t lo, int64_t hi,
               void (*cb)(void *arg, int64_t rlo, int64_t rhi, uint32_t attempts),
               void *arg)
{
    sqlite3_stmt *st = stmt_take(l, ST_RUNS_OPEN);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = stmt_bind_range(st, job, lo, hi);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        cb(arg, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
           (uint32_t)sqlite3_column_int64(st, 2));
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "read runs");
    stmt_put(l, ST_RUNS_OPEN);
    return err;
}

/* A stretch [lo, hi) of indexes and what is noted per index of it. */
struct stretch {
    int64_t lo, hi;
    uint32_t *attempts; /* the attempt each dispatched task starts */
    bool *applied;      /* each task whose end was recorded, or NULL */
    size_t n_applied;
};

static void
stretch_dispatched(void *arg, int64_t rlo, int64_t rhi, uint32_t attempts)
{
    struct stretch *sr = arg;
    for (int64_t k = rlo < sr->lo ? sr->lo : rlo; k < rhi && k < sr->hi; k++)
        sr->attempts[k - sr->lo] = attempts + 1; /* the UPDATE adds one */
}

static void
stretch_ended(void *arg, int64_t rlo, int64_t rhi, uint32_t attempts)
{
    struct stretch *sr = arg;
    (void)attempts;
    sr->n_applied += (size_t)(rhi - rlo);
    for (int64_t k = rlo; sr->applied != NULL && k < rhi; k++)
        if (k >= sr->lo && k < sr->hi)
            sr->applied[k - sr->lo] = true;
}

int
ledger_tasks_dispatch(struct ledger *l, uint64_t job, const uint32_t *idx, uint32_t n,
                      uint64_t dispatch, int64_t now_ms, uint32_t *attempts_out)
{
    assert(ledger_in_txn(l));
    int err = 0;
    /* One UPDATE per stretch of consecutive indexes: a chunk of fresh tasks
     * is one stretch, and one run once split off. */
    for (uint32_t i = 0; i < n && err == 0;) {
        uint32_t len = stretch_len(idx, n, i);
        int64_t lo = idx[i], hi = (int64_t)idx[i] + len;
        memset(&attempts_out[i], 0, len * sizeof(*attempts_out));
        /* Unknown or already final tasks keep their 0. */
        struct stretch sr = {.lo = lo, .hi = hi, .attempts = &attempts_out[i]};
        if ((err = runs_isolate(l, job, lo, hi)) != 0 ||
            (err = runs_open_each(l, job, lo, hi, stretch_dispatched, &sr)) != 0)
            break;
        sqlite3_stmt *st = stmt_take(l, ST_TASK_DISPATCH);
        if (st == NULL)
            return BURST_EINTERNAL;
        int rc = stmt_bind_range(st, job, lo, hi);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 4, (int64_t)dispatch);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 5, now_ms);
        err = rc == SQLITE_OK ? stmt_exec(l, st, "dispatch tasks")
                              : ledger_fail(l, rc, "dispatch tasks");
        stmt_put(l, ST_TASK_DISPATCH);
        i += len;
    }
    return err;
}

int
ledger_tasks_set_state(struct ledger *l, uint64_t job, const uint32_t *idx, uint32_t n,
                       int state, int64_t now_ms)
{
    assert(ledger_in_txn(l));
    assert(state >= 0 && state < BURST_TASK_NSTATES);
    int err = 0;
    for (uint32_t i = 0; i < n && err == 0;) {
        uint32_t len = stretch_len(idx, n, i);
        int64_t lo = idx[i], hi = (int64_t)idx[i] + len;
        if ((err = runs_isolate(l, job, lo, hi)) != 0)
            break;
        sqlite3_stmt *st = stmt_take(l, ST_TASK_SET_STATE);
        if (st == NULL)
            return BURST_EINTERNAL;
        int rc = stmt_bind_range(st, job, lo, hi);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int(st, 4, state);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 5, now_ms);
        err = rc == SQLITE_OK ? stmt_exec(l, st, "set task state")
                              : ledger_fail(l, rc, "set task state");
        stmt_put(l, ST_TASK_SET_STATE);
        i += len;
    }
    return err;
}

static bool
task_end_state_ok(int state)
{
    return state == BURST_TASK_SUCCEEDED || state == BURST_TASK_FAILED ||
           state == BURST_TASK_TIMEOUT || state == BURST_TASK_RETRYING;
}

static const char *
end_reason(const struct ledger_task_end *e)
{
    return e->reason != NULL ? e->reason : "";
}

/* Whether b can share a run with a, b's index following a's: everything
 * the run row records is the same (the output locations are per task). */
static bool
end_same(const struct ledger_task_end *a, const struct ledger_task_end *b)
{
    return a->index != UINT32_MAX && b->index == a->index + 1 && a->state == b->state &&
           a->exit_status == b->exit_status && a->signal == b->signal &&
           (a->state != BURST_TASK_RETRYING || a->retry_at_ms == b->retry_at_ms) &&
           a->has_out == b->has_out &&
           (!a->has_out ||
            (a->out_dispatch == b->out_dispatch && a->out_n == b->out_n)) &&
           strcmp(end_reason(a), end_reason(b)) == 0;
}

/* Binds the end shared by ends[0..len) to ST_TASK_END, with the blob of
 * their output locations in *blob (malloc'ed here, freed by the caller). */
static int
task_end_bind(sqlite3_stmt *st, uint64_t job, const struct ledger_task_end *ends,
              uint32_t len, int64_t now_ms, unsigned char **blob)
{
    const struct ledger_task_end *e = &ends[0];
    int rc = stmt_bind_range(st, job, e->index, (int64_t)e->index + len);
    const int64_t v[] = {e->state, e->exit_status, e->signal};
    for (int i = 0; i < 3 && rc == SQLITE_OK; i++)
        rc = sqlite3_bind_int64(st, 4 + i, v[i]);
    if (rc == SQLITE_OK) {
        const char *r = *end_reason(e) != '\0' ? e->reason : NULL;
        /* Stored as it will be read back: at most 159 bytes, whole characters. */
        size_t rlen = r != NULL ? utf8_cut(r, strlen(r), LEDGER_REASON_MAX) : 0;
        rc = stmt_bind_text(st, 7, r, rlen);
    }
    const int64_t w[] = {
        e->state == BURST_TASK_RETRYING ? e->retry_at_ms : 0,
        now_ms,
        e->has_out,
        (int64_t)e->out_dispatch,
        e->out_n,
    };
    for (int i = 0; i < 5 && rc == SQLITE_OK; i++)
        rc = sqlite3_bind_int64(st, 8 + i, w[i]);
    if (rc != SQLITE_OK || !e->has_out)
        return rc;
    size_t size = (size_t)len * LEDGER_OUT_ENTRY;
    *blob = malloc(size);
    if (*blob == NULL)
        return SQLITE_NOMEM;
    for (uint32_t i = 0; i < len; i++) {
        unsigned char *p = *blob + (size_t)i * LEDGER_OUT_ENTRY;
        le64_put(p, ends[i].res_off);
        le64_put(p + 8, ends[i].res_len);
        le64_put(p + 16, ends[i].log_off);
        le64_put(p + 24, ends[i].log_len);
    }
    return sqlite3_bind_blob64(st, 13, *blob, size, SQLITE_STATIC); /* until reset */
}

int
ledger_tasks_end(struct ledger *l, uint64_t job, const struct ledger_task_end *ends,
                 size_t n, int64_t now_ms, size_t *n_applied)
{
    return ledger_tasks_end_marked(l, job, ends, n, now_ms, n_applied, NULL);
}

int
ledger_tasks_end_marked(struct ledger *l, uint64_t job, const struct ledger_task_end *ends,
                        size_t n, int64_t now_ms, size_t *n_applied, bool *applied_out)
{
    assert(ledger_in_txn(l));
    if (n_applied != NULL)
        *n_applied = 0;
    if (applied_out != NULL)
        memset(applied_out, 0, n * sizeof(*applied_out));
    /* Check the whole batch first so a bad entry changes nothing. */
    for (size_t i = 0; i < n; i++) {
        if (!task_end_state_ok(ends[i].state)) {
            log_warnx("ledger: task %" PRIu64 "/%" PRIu32 " cannot end in state %d", job,
                      ends[i].index, ends[i].state);
            return -EINVAL;
        }
    }
    int err = 0;
    size_t applied = 0;
    /* Ends alike and consecutive become one UPDATE of one stretch: an
     * invocation whose tasks all succeeded is one. */
    for (size_t i = 0; i < n && err == 0;) {
        uint32_t len = 1;
        while (i + len < n && len < UINT32_MAX &&
               end_same(&ends[i + len - 1], &ends[i + len]))
            len++;
        int64_t lo = ends[i].index, hi = lo + len;
        /* Already final (or unknown) tasks are not among the open runs. */
        struct stretch sr = {
            .lo = lo, .hi = hi, .applied = applied_out != NULL ? &applied_out[i] : NULL};
        if ((err = runs_isolate(l, job, lo, hi)) != 0 ||
            (err = runs_open_each(l, job, lo, hi, stretch_ended, &sr)) != 0)
            break;
        applied += sr.n_applied;
        sqlite3_stmt *st = stmt_take(l, ST_TASK_END);
        if (st == NULL)
            return BURST_EINTERNAL;
        unsigned char *blob = NULL;
        int rc = task_end_bind(st, job, &ends[i], len, now_ms, &blob);
        err = rc == SQLITE_OK ? stmt_exec(l, st, "end tasks") : ledger_fail(l, rc, "end tasks");
        stmt_put(l, ST_TASK_END);
        free(blob);
        i += len;
    }
    if (n_applied != NULL)
        *n_applied = applied;
    return err;
}

int
ledger_job_cancel_pending(struct ledger *l, uint64_t job, int64_t now_ms,
                          uint32_t *n_cancelled)
{
    assert(ledger_in_txn(l));
    if (n_cancelled != NULL)
        *n_cancelled = 0;
    int err = ledger_job_check(l, job);
    if (err != 0)
        return err;
    sqlite3_stmt *st = stmt_take(l, ST_JOB_CANCEL_PENDING);
    if (st == NULL)
        return BURST_EINTERNAL;
    uint64_t n = 0;
    int rc = stmt_bind_ints(st, 2, (const int64_t[]){(int64_t)job, now_ms});
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        n += (uint64_t)sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "cancel tasks");
    else if (n_cancelled != NULL)
        *n_cancelled = (uint32_t)n;
    stmt_put(l, ST_JOB_CANCEL_PENDING);
    return err;
}

int
ledger_tasks_inflight(struct ledger *l, ledger_inflight_cb cb, void *arg)
{
    sqlite3_stmt *st = stmt_take(l, ST_TASKS_INFLIGHT);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc;
    while (err == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t job = (uint64_t)sqlite3_column_int64(st, 0);
        struct run_row r;
        run_from_row(st, 1, &r);
        for (int64_t i = r.lo; i < r.hi && err == 0; i++) {
            struct ledger_task t;
            run_task(&r, (uint32_t)i, &t);
            err = cb(arg, job, &t);
        }
    }
    if (err == 0 && rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "in-flight tasks");
    stmt_put(l, ST_TASKS_INFLIGHT);
    return err;
}

/* ---- events ------------------------------------------------------------- */

int
ledger_events_append(struct ledger *l, uint64_t job, const struct ledger_event_body *bodies,
                     uint32_t n, uint64_t *first_seq)
{
    assert(ledger_in_txn(l));
    if (n == 0)
        return 0;
    /* One sequence update for all of them. */
    sqlite3_stmt *st = stmt_take(l, ST_EVENT_SEQ_GET);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int64_t last = 0;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)job);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        last = sqlite3_column_int64(st, 0) + (int64_t)n;
    else if (rc == SQLITE_DONE)
        err = BURST_ENOJOB;
    else
        err = ledger_fail(l, rc, "event sequence");
    stmt_put(l, ST_EVENT_SEQ_GET);
    if (err != 0)
        return err;
    if ((st = stmt_take(l, ST_EVENT_SEQ_SET)) == NULL)
        return BURST_EINTERNAL;
    rc = stmt_bind_ints(st, 2, (const int64_t[]){(int64_t)job, last});
    err = rc == SQLITE_OK ? stmt_exec(l, st, "event sequence")
                          : ledger_fail(l, rc, "event sequence");
    stmt_put(l, ST_EVENT_SEQ_SET);
    if (err != 0)
        return err;

    int64_t first = last - (int64_t)n + 1;
    for (uint32_t i = 0; i < n && err == 0; i++) {
        st = stmt_take(l, ST_EVENT_INSERT);
        if (st == NULL)
            return BURST_EINTERNAL;
        rc = stmt_bind_ints(st, 2, (const int64_t[]){(int64_t)job, first + i});
        /* A zero-length blob, not NULL: body is NOT NULL. */
        if (rc == SQLITE_OK)
            rc = bodies[i].len == 0 || bodies[i].data == NULL
                     ? sqlite3_bind_zeroblob(st, 3, 0)
                     : sqlite3_bind_blob64(st, 3, bodies[i].data, bodies[i].len,
                                           SQLITE_STATIC); /* until step */
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
            err = ledger_fail(l, rc, "append event");
        stmt_put(l, ST_EVENT_INSERT);
    }
    if (err == 0 && first_seq != NULL)
        *first_seq = (uint64_t)first;
    return err;
}

int
ledger_event_append(struct ledger *l, uint64_t job, const void *body, size_t len,
                    uint64_t *seq)
{
    struct ledger_event_body b = {body, len};
    return ledger_events_append(l, job, &b, 1, seq);
}

int
ledger_events_since(struct ledger *l, uint64_t job, uint64_t from_seq, uint32_t max,
                    ledger_event_cb cb, void *arg)
{
    int err = ledger_job_check(l, job);
    if (err != 0)
        return err;
    sqlite3_stmt *st = stmt_take(l, ST_EVENTS_SINCE);
    if (st == NULL)
        return BURST_EINTERNAL;
    int64_t from = from_seq > INT64_MAX ? INT64_MAX : (int64_t)from_seq;
    int rc = stmt_bind_ints(
        st, 3, (const int64_t[]){(int64_t)job, from, max == 0 ? -1 : (int64_t)max});
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        const void *body = sqlite3_column_blob(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        if (body == NULL && len > 0) {
            err = -ENOMEM;
            break;
        }
        if ((err = cb(arg, seq, body, len)) != 0)
            break;
        rc = SQLITE_OK;
    }
    if (err == 0 && rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "read events");
    stmt_put(l, ST_EVENTS_SINCE);
    return err;
}

/* ---- settings ----------------------------------------------------------- */

int
ledger_quota_get(struct ledger *l, uint32_t *quota, bool *found)
{
    *found = false;
    sqlite3_stmt *st = stmt_take(l, ST_META_GET);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = sqlite3_bind_text(st, 1, "quota", -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        int64_t v = sqlite3_column_int64(st, 0);
        if (v < 0 || v > UINT32_MAX) {
            log_warnx("ledger: stored quota %" PRId64 " is out of range", v);
            err = BURST_ELEDGER;
        } else {
            *quota = (uint32_t)v;
            *found = true;
        }
    } else if (rc != SQLITE_DONE) {
        err = ledger_fail(l, rc, "get quota");
    }
    stmt_put(l, ST_META_GET);
    return err;
}

int
ledger_quota_set(struct ledger *l, uint32_t quota)
{
    return meta_set(l, "quota", quota);
}

/* ---- inputs of small jobs ----------------------------------------------- */

/* A malloc'ed copy of column col's blob, which the caller owns (*len
 * bytes).  An empty blob reads as NULL from SQLite: it is still a row, so
 * still a (1-byte, empty) copy.  0 or -ENOMEM. */
static int
column_blob_copy(sqlite3_stmt *st, int col, void **out, size_t *len)
{
    const void *p = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    void *copy = malloc(n > 0 ? n : 1);
    if (copy == NULL || (p == NULL && n > 0)) {
        free(copy);
        return -ENOMEM;
    }
    if (n > 0)
        memcpy(copy, p, n);
    *out = copy;
    *len = n;
    return 0;
}

int
ledger_input_put(struct ledger *l, uint64_t job, const void *body, size_t len)
{
    assert(ledger_in_txn(l));
    sqlite3_stmt *st = stmt_take(l, ST_INPUT_PUT);
    if (st == NULL)
        return BURST_EINTERNAL;
    /* STATIC: the statement is stepped and reset before we return, so
     * SQLite never needs the bytes after that; no copy of up to 64 KiB. */
    int rc = sqlite3_bind_int64(st, 1, (int64_t)job);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob64(st, 2, body, len, SQLITE_STATIC);
    int err = rc == SQLITE_OK ? stmt_exec(l, st, "store inputs")
                              : ledger_fail(l, rc, "store inputs");
    stmt_put(l, ST_INPUT_PUT);
    return err;
}

int
ledger_input_get(struct ledger *l, uint64_t job, void **body, size_t *len)
{
    *body = NULL;
    *len = 0;
    sqlite3_stmt *st = stmt_take(l, ST_INPUT_GET);
    if (st == NULL)
        return BURST_EINTERNAL;
    int err = 0;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)job);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = column_blob_copy(st, 0, body, len);
    else if (rc != SQLITE_DONE)
        err = ledger_fail(l, rc, "read inputs");
    stmt_put(l, ST_INPUT_GET);
    return err;
}

int
ledger_input_delete(struct ledger *l, uint64_t job)
{
    assert(ledger_in_txn(l));
    sqlite3_stmt *st = stmt_take(l, ST_INPUT_DELETE);
    if (st == NULL)
        return BURST_EINTERNAL;
    int rc = sqlite3_bind_int64(st, 1, (int64_t)job);
    int err = rc == SQLITE_OK ? stmt_exec(l, st, "delete inputs")
                              : ledger_fail(l, rc, "delete inputs");
    stmt_put(l, ST_INPUT_DELETE);
    return err;
}

/* ---- outputs of small invocations ---------------------------------------- */

int
ledger_output_put(struct ledger *l, uint64_t job, uint64_t dispatch, uint32_t n,
                  const void *body, size_t len)
{
    assert(ledger_in_txn(l));
    sqlite3_stmt *st = stmt_take(l, ST_OUTPUT_PUT);
    if (st == NULL)
        return BURST_EINTERNAL;
    int rc = stmt_bind_ints(st, 3, (const int64_t[]){(int64_t)job, (int64_t)dispatch, n});
    if (rc == SQLITE_OK) /* STATIC: stepped and reset before we return */
        rc = sqlite3_bind_blob64(st, 4, len > 0 ? body : "", len, SQLITE_STATIC);
    int err = rc == SQLITE_OK ? stmt_exec(l, st, "store an output")
                              : ledger_fail(l, rc, "store an output");
    stmt_put(l, ST_OUTPUT_PUT);
    return err;
}

int
ledger_output_read(struct ledger *l, uint64_t job, uint64_t dispatch, uint32_t n,
                   uint64_t off, uint64_t len, void **data, size_t *got)
{
    *data = NULL;
    *got = 0;
    if (off > INT64_MAX)
        return -EINVAL;
    sqlite3_stmt *st = stmt_take(l, ST_OUTPUT_READ);
    if (st == NULL)
        return BURST_EINTERNAL;
    int found = 0;
    /* A length past what substr() takes reads to the end (-1). */
    int rc = stmt_bind_ints(st, 5,
                            (const int64_t[]){(int64_t)job, (int64_t)dispatch, n,
                                              (int64_t)off,
                                              len > INT32_MAX ? -1 : (int64_t)len});
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        void *copy;
        found = column_blob_copy(st, 0, &copy, got);
        if (found == 0) {
            *data = copy;
            found = 1;
        }
    } else if (rc != SQLITE_DONE) {
        found = ledger_fail(l, rc, "read an output");
    }
    stmt_put(l, ST_OUTPUT_READ);
    return found;
}
