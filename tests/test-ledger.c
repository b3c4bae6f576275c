/*
 * tests/test-ledger.c - unit tests of daemon/ledger.c against real SQLite
 * files, each test in its own temporary directory.  Besides the API's
 * behaviour they inject faults: a read-only directory and file, garbage and
 * damaged files, a newer schema, a full database (max_page_count) and a
 * COMMIT whose write fails (RLIMIT_FSIZE, in a child process).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "ledger.h"

struct fx {
    char dir[64];
    char path[128];
    struct ledger *l; /* owned; NULL while a test has it closed */
};

static int
rm_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test-ledger.XXXXXX");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof(fx->path), "%s/ledger.db", fx->dir);
    if (ledger_open(fx->path, &fx->l) != 0) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *fx = *state;
    ledger_close(fx->l);
    /* A test may have made parts read-only; make them removable again. */
    chmod(fx->dir, 0700);
    nftw(fx->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void
reopen(struct fx *fx)
{
    ledger_close(fx->l);
    fx->l = NULL;
    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
}

/* What burstd does at a clean stop. */
static void
settle(struct fx *fx)
{
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_ids_settle(fx->l), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
}

/* A job with every field set to something recognisable. */
static void
job_fill(struct ledger_job *j, uint32_t owner, uint32_t total)
{
    memset(j, 0, sizeof(*j));
    j->owner_uid = owner;
    j->kind = BURST_KIND_MAP;
    j->state = BURST_JOB_QUEUED;
    j->total = total;
    j->chunksize = 1;
    j->backend = "local";
    j->fn.kind = BURST_FN_EXEC;
    j->fn.arg = "tr a-z A-Z";
    j->reduce.kind = -1;
    j->created_ms = 1000;
}

static uint64_t
add_job(struct ledger *l, uint32_t owner, uint32_t nrows)
{
    struct ledger_job j;
    job_fill(&j, owner, nrows);
    assert_int_equal(ledger_begin(l), 0);
    assert_int_equal(ledger_job_insert(l, &j, nrows), 0);
    assert_int_equal(ledger_commit(l), 0);
    assert_true(j.id > 0);
    return j.id;
}

static struct ledger_task
task(struct ledger *l, uint64_t job, uint32_t idx)
{
    struct ledger_task t;
    assert_int_equal(ledger_task_get(l, job, idx, &t), 0);
    return t;
}

static void
end_one(struct ledger *l, uint64_t job, uint32_t idx, int state, int64_t retry_at,
        size_t *applied)
{
    struct ledger_task_end e = {
        .index = idx, .state = state, .exit_status = 1, .retry_at_ms = retry_at};
    assert_int_equal(ledger_begin(l), 0);
    assert_int_equal(ledger_tasks_end(l, job, &e, 1, 50, applied), 0);
    assert_int_equal(ledger_commit(l), 0);
}

static void
dispatch_one(struct ledger *l, uint64_t job, uint32_t idx, uint32_t *attempts)
{
    uint64_t d;
    assert_int_equal(ledger_begin(l), 0);
    assert_int_equal(ledger_next_dispatch(l, &d), 0);
    assert_int_equal(ledger_tasks_dispatch(l, job, &idx, 1, d, 10, attempts), 0);
    assert_int_equal(ledger_commit(l), 0);
}

/* ---- opening, persistence, transactions --------------------------------- */

static void
test_open_mode(void **state)
{
    struct fx *fx = *state;
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    add_job(fx->l, 1, 3); /* makes the -wal file exist */
    char wal[160];
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    assert_int_equal(stat(wal, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_false(ledger_in_txn(fx->l));
}

static void
test_reopen_persists(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 7, 5);
    uint64_t seq;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_event_append(fx->l, id, "abc", 3, &seq), 0);
    assert_int_equal(ledger_quota_set(fx->l, 12), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    uint32_t attempts;
    dispatch_one(fx->l, id, 2, &attempts);
    end_one(fx->l, id, 2, BURST_TASK_SUCCEEDED, 0, NULL);

    reopen(fx);
    struct ledger_job j;
    assert_int_equal(ledger_job_get(fx->l, id, &j), 0);
    assert_int_equal(j.owner_uid, 7);
    assert_int_equal(j.total, 5);
    assert_int_equal(j.last_seq, 1);
    ledger_job_free(&j);
    uint32_t counts[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, counts), 0);
    assert_int_equal(counts[BURST_TASK_QUEUED], 4);
    assert_int_equal(counts[BURST_TASK_SUCCEEDED], 1);
    uint32_t q;
    bool found;
    assert_int_equal(ledger_quota_get(fx->l, &q, &found), 0);
    assert_true(found);
    assert_int_equal(q, 12);
}

static void
test_transactions(void **state)
{
    struct fx *fx = *state;
    assert_false(ledger_in_txn(fx->l));
    assert_int_equal(ledger_commit(fx->l), 0); /* none open: no-op */
    ledger_rollback(fx->l);                    /* none open: no-op */
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_true(ledger_in_txn(fx->l));
    assert_int_equal(ledger_begin(fx->l), 0); /* already open: kept */
    struct ledger_job j;
    job_fill(&j, 1, 3);
    assert_int_equal(ledger_job_insert(fx->l, &j, 3), 0);
    ledger_rollback(fx->l);
    assert_false(ledger_in_txn(fx->l));
    struct ledger_job got;
    assert_int_equal(ledger_job_get(fx->l, j.id, &got), BURST_ENOJOB);
}

static int
count_cb(void *arg, const struct ledger_job *job)
{
    (void)job;
    (*(int *)arg)++;
    return 0;
}

/* An admin's sqlite3 shell reading the ledger must not stop the daemon. */
static void
test_reader_does_not_block(void **state)
{
    struct fx *fx = *state;
    add_job(fx->l, 1, 2);
    sqlite3 *rd;
    assert_int_equal(sqlite3_open_v2(fx->path, &rd, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(rd, "BEGIN; SELECT count(*) FROM runs;", NULL, NULL, NULL),
        SQLITE_OK);
    add_job(fx->l, 1, 2); /* commits while the reader holds its snapshot */
    int n = 0;
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, false, count_cb, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(sqlite3_exec(rd, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(rd);
}

/* ---- jobs ---------------------------------------------------------------- */

static void
test_job_roundtrip(void **state)
{
    struct fx *fx = *state;
    struct ledger_job j = {
        .owner_uid = 1234,
        .kind = BURST_KIND_MAP_REDUCE,
        .state = BURST_JOB_QUEUED,
        .total = 9,
        .chunksize = 3,
        .retries = 2,
        .timeout_ms = 60000,
        .memory_mb = 512,
        .cancel_on_disconnect = true,
        .backend = "codeengine",
        .name = "nightly \xc3\xa9t\xc3\xa9",
        .error = NULL,
        .fn = {.kind = BURST_FN_SO, .arg = "ab12cd", .symbol = "square"},
        .reduce = {.kind = BURST_FN_EXEC, .arg = "wc -l", .symbol = NULL},
        .created_ms = 1700000000123,
        .started_ms = 0,
        .finished_ms = 0,
        .last_seq = 0,
    };
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, j.total + 1), 0);
    assert_int_equal(ledger_commit(fx->l), 0);

    struct ledger_job g;
    assert_int_equal(ledger_job_get(fx->l, j.id, &g), 0);
    assert_int_equal(g.id, j.id);
    assert_int_equal(g.owner_uid, 1234);
    assert_int_equal(g.kind, BURST_KIND_MAP_REDUCE);
    assert_int_equal(g.state, BURST_JOB_QUEUED);
    assert_int_equal(g.total, 9);
    assert_int_equal(g.chunksize, 3);
    assert_int_equal(g.retries, 2);
    assert_int_equal(g.timeout_ms, 60000);
    assert_int_equal(g.memory_mb, 512);
    assert_true(g.cancel_on_disconnect);
    assert_string_equal(g.backend, "codeengine");
    assert_string_equal(g.name, "nightly \xc3\xa9t\xc3\xa9");
    assert_null(g.error);
    assert_int_equal(g.fn.kind, BURST_FN_SO);
    assert_string_equal(g.fn.arg, "ab12cd");
    assert_string_equal(g.fn.symbol, "square");
    assert_int_equal(g.reduce.kind, BURST_FN_EXEC);
    assert_string_equal(g.reduce.arg, "wc -l");
    assert_null(g.reduce.symbol);
    assert_int_equal(g.created_ms, 1700000000123);
    assert_int_equal(g.started_ms, 0);
    assert_int_equal(g.finished_ms, 0);
    assert_int_equal(g.last_seq, 0);
    ledger_job_free(&g);

    /* Task rows 0..total, the reducer included, all queued with defaults. */
    struct ledger_task t = task(fx->l, j.id, 9);
    assert_int_equal(t.index, 9);
    assert_int_equal(t.state, BURST_TASK_QUEUED);
    assert_int_equal(t.attempts, 0);
    assert_int_equal(t.exit_status, -1);
    assert_int_equal(t.signal, 0);
    assert_string_equal(t.reason, "");
    assert_false(t.has_out);
    assert_int_equal(t.dispatch, 0);
    assert_int_equal(ledger_task_get(fx->l, j.id, 10, &t), BURST_ENOTASK);

    /* Ids grow and are never handed out twice. */
    uint64_t id2 = add_job(fx->l, 1, 0);
    assert_true(id2 > j.id);
}

static void
test_reserve_job_id(void **state)
{
    struct fx *fx = *state;
    uint64_t r1, r2, r0;
    /* Reserved before any job exists. */
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r1), 0);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r2), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(r1, 1);
    assert_int_equal(r2, 2);

    /* A job inserted under a reserved id keeps it; others skip past it. */
    struct ledger_job j;
    job_fill(&j, 1, 2);
    j.id = r2;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 2), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(j.id, r2);
    uint64_t fresh = add_job(fx->l, 1, 1);
    assert_int_equal(fresh, 3);
    job_fill(&j, 1, 2);
    j.id = r1;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 2), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    struct ledger_job g;
    assert_int_equal(ledger_job_get(fx->l, r1, &g), 0);
    assert_int_equal(g.total, 2);
    ledger_job_free(&g);

    /* An id already in use is refused. */
    job_fill(&j, 1, 1);
    j.id = fresh;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 1), BURST_ELEDGER);
    ledger_rollback(fx->l);

    /* A reservation is never handed out again by this process, even when
     * its job never got in; a job without an id gets one above them all. */
    assert_int_equal(ledger_reserve_job_id(fx->l, &r0), 0);
    assert_int_equal(r0, 4);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r0), 0);
    assert_int_equal(r0, 5);
    assert_int_equal(add_job(fx->l, 1, 1), 6);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r0), 0);
    assert_int_equal(r0, 7);
    /* Without a clean stop, ids start above the bound: a job up to it may
     * have run before its commit was durable (ledger_job_ids_bound). */
    uint64_t bound = ledger_job_ids_bound(fx->l);
    assert_true(bound >= 7);
    reopen(fx);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r0), 0);
    assert_int_equal(r0, bound + 1);
    /* A clean stop settles the bound at the last id handed out, and ids go
     * on from there. */
    settle(fx);
    reopen(fx);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r0), 0);
    assert_int_equal(r0, bound + 2);
    uint64_t newest = add_job(fx->l, 1, 1);
    assert_int_equal(newest, bound + 3);
    settle(fx);
    /* A deleted newest job's id is not given out again: AUTOINCREMENT's
     * counter remembers it, even in a ledger without the bound. */
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    char sql[160];
    snprintf(sql, sizeof(sql),
             "PRAGMA foreign_keys=ON; DELETE FROM jobs WHERE id = %llu;"
             " DELETE FROM meta WHERE key = 'job_ids_bound'",
             (unsigned long long)newest);
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
    assert_int_equal(ledger_reserve_job_id(fx->l, &r0), 0);
    assert_int_equal(r0, newest + 1);
}

/* The job id bound moves ahead of the jobs inserted, and only with a
 * commit: a rolled-back insertion leaves it where the ledger has it. */
static void
test_job_ids_bound(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(ledger_job_ids_bound(fx->l), 0);
    uint64_t id = add_job(fx->l, 1, 1);
    uint64_t bound = ledger_job_ids_bound(fx->l);
    assert_true(bound > id);
    /* Within the bound: no write moves it. */
    add_job(fx->l, 1, 1);
    assert_int_equal(ledger_job_ids_bound(fx->l), bound);

    struct ledger_job j;
    job_fill(&j, 1, 1);
    j.id = bound + 10;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 1), 0);
    assert_int_equal(ledger_job_ids_bound(fx->l), bound); /* not committed yet */
    ledger_rollback(fx->l);
    assert_int_equal(ledger_job_ids_bound(fx->l), bound);
    reopen(fx);
    assert_int_equal(ledger_job_ids_bound(fx->l), bound);

    job_fill(&j, 1, 1);
    j.id = bound + 10;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 1), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    uint64_t moved = ledger_job_ids_bound(fx->l);
    assert_true(moved > bound + 10);
    reopen(fx);
    assert_int_equal(ledger_job_ids_bound(fx->l), moved);
    uint64_t r;
    assert_int_equal(ledger_reserve_job_id(fx->l, &r), 0);
    assert_int_equal(r, moved + 1);
}

/* Dispatch numbers only grow, across rollbacks and reopening. */
static void
test_dispatch_monotonic(void **state)
{
    struct fx *fx = *state;
    uint64_t a, b, c;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &a), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &b), 0);
    ledger_rollback(fx->l); /* a worker may already run under b */
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &c), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_true(a < b && b < c);
    reopen(fx);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &a), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_true(a > c);
}

static void
test_job_set_state(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 1);
    struct ledger_job g;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_set_state(fx->l, id, BURST_JOB_RUNNING, NULL, 2000), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_job_get(fx->l, id, &g), 0);
    assert_int_equal(g.state, BURST_JOB_RUNNING);
    assert_int_equal(g.started_ms, 2000);
    assert_int_equal(g.finished_ms, 0);
    ledger_job_free(&g);

    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(
        ledger_job_set_state(fx->l, id, BURST_JOB_FAILED, "task 0 failed", 3000), 0);
    /* A later call without an error keeps the recorded one and end time. */
    assert_int_equal(ledger_job_set_state(fx->l, id, BURST_JOB_FAILED, NULL, 4000), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_job_get(fx->l, id, &g), 0);
    assert_int_equal(g.state, BURST_JOB_FAILED);
    assert_int_equal(g.started_ms, 2000);
    assert_int_equal(g.finished_ms, 3000);
    assert_string_equal(g.error, "task 0 failed");
    ledger_job_free(&g);

    /* A job cancelled before it ran gets both times. */
    uint64_t id2 = add_job(fx->l, 1, 1);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_set_state(fx->l, id2, BURST_JOB_CANCELLED, NULL, 5000),
                     0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_job_get(fx->l, id2, &g), 0);
    assert_int_equal(g.started_ms, 5000);
    assert_int_equal(g.finished_ms, 5000);
    ledger_job_free(&g);
}

static void
test_counts(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 6);
    uint32_t a;
    dispatch_one(fx->l, id, 0, &a);
    dispatch_one(fx->l, id, 1, &a);
    dispatch_one(fx->l, id, 2, &a);
    end_one(fx->l, id, 1, BURST_TASK_SUCCEEDED, 0, NULL);
    end_one(fx->l, id, 2, BURST_TASK_RETRYING, 99, NULL);
    uint32_t idx = 0;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_set_state(fx->l, id, &idx, 1, BURST_TASK_RUNNING, 20),
                     0);
    assert_int_equal(ledger_commit(fx->l), 0);

    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_QUEUED], 3);
    assert_int_equal(c[BURST_TASK_DISPATCHED], 0);
    assert_int_equal(c[BURST_TASK_RUNNING], 1);
    assert_int_equal(c[BURST_TASK_SUCCEEDED], 1);
    assert_int_equal(c[BURST_TASK_RETRYING], 1);
    assert_int_equal(c[BURST_TASK_FAILED], 0);
    assert_int_equal(c[BURST_TASK_CANCELLED], 0);
    assert_int_equal(task(fx->l, id, 0).started_ms, 20);
}

struct jobs_seen {
    uint64_t ids[16];
    int n;
    int stop_after;
};

static int
jobs_cb(void *arg, const struct ledger_job *job)
{
    struct jobs_seen *s = arg;
    assert_non_null(job->backend);
    s->ids[s->n++] = job->id;
    return s->stop_after != 0 && s->n == s->stop_after ? 42 : 0;
}

static void
test_jobs_foreach(void **state)
{
    struct fx *fx = *state;
    uint64_t a = add_job(fx->l, 100, 1);
    uint64_t b = add_job(fx->l, 200, 1);
    uint64_t c = add_job(fx->l, 100, 1);
    uint64_t d = add_job(fx->l, 100, 1);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_set_state(fx->l, c, BURST_JOB_SUCCEEDED, NULL, 1), 0);
    assert_int_equal(ledger_job_set_state(fx->l, d, BURST_JOB_RUNNING, NULL, 1), 0);
    assert_int_equal(ledger_commit(fx->l), 0);

    struct jobs_seen s = {0};
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, false, jobs_cb, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.ids[0], a);
    assert_int_equal(s.ids[1], b);
    assert_int_equal(s.ids[2], c);
    assert_int_equal(s.ids[3], d);

    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, true, jobs_cb, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ids[2], d);

    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_jobs_foreach(fx->l, 100, false, jobs_cb, &s), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ids[0], a);
    assert_int_equal(s.ids[1], c);

    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_jobs_foreach(fx->l, 100, true, jobs_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.ids[0], a);
    assert_int_equal(s.ids[1], d);

    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_jobs_foreach(fx->l, 300, false, jobs_cb, &s), 0);
    assert_int_equal(s.n, 0);

    memset(&s, 0, sizeof(s));
    s.stop_after = 2;
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, false, jobs_cb, &s), 42);
    assert_int_equal(s.n, 2);
    /* The walk was closed properly: a new one starts from the beginning. */
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, false, jobs_cb, &s), 0);
    assert_int_equal(s.n, 4);
}

struct nested {
    struct ledger *l;
    int inner_rc;
    uint32_t queued;
};

static int
nested_cb(void *arg, const struct ledger_job *job)
{
    struct nested *n = arg;
    uint32_t c[BURST_TASK_NSTATES];
    /* Other statements are fine inside a walk... */
    assert_int_equal(ledger_job_counts(n->l, job->id, c), 0);
    n->queued += c[BURST_TASK_QUEUED];
    /* ...the walk's own statement is not. */
    int dummy = 0;
    n->inner_rc = ledger_jobs_foreach(n->l, -1, false, count_cb, &dummy);
    return 0;
}

static void
test_nested_walk(void **state)
{
    struct fx *fx = *state;
    add_job(fx->l, 1, 4);
    add_job(fx->l, 1, 5);
    struct nested n = {.l = fx->l};
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, false, nested_cb, &n), 0);
    assert_int_equal(n.inner_rc, BURST_EINTERNAL);
    assert_int_equal(n.queued, 9);
}

/* ---- tasks --------------------------------------------------------------- */

static void
test_pending_order_and_limit(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 10);
    uint32_t idx[16], n;
    assert_int_equal(ledger_tasks_pending(fx->l, id, 10, 0, 3, idx, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], 1);
    assert_int_equal(idx[2], 2);

    /* idx_limit holds back the reducer (or the rest of a job). */
    assert_int_equal(ledger_tasks_pending(fx->l, id, 2, 0, 16, idx, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ledger_tasks_pending(fx->l, id, 10, 0, 0, idx, &n), 0);
    assert_int_equal(n, 0);

    uint32_t take[] = {0, 1, 2, 5}, att[4];
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_dispatch(fx->l, id, take, 4, 1, 10, att), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_tasks_pending(fx->l, id, 10, 0, 16, idx, &n), 0);
    assert_int_equal(n, 6);
    const uint32_t want[] = {3, 4, 6, 7, 8, 9};
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(idx[i], want[i]);
}

static void
test_retrying(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 3);
    uint32_t a, idx[8], n;
    int64_t at;
    bool found;
    assert_int_equal(ledger_tasks_next_retry(fx->l, id, &at, &found), 0);
    assert_false(found);

    for (uint32_t i = 0; i < 3; i++)
        dispatch_one(fx->l, id, i, &a);
    end_one(fx->l, id, 1, BURST_TASK_RETRYING, 1000, NULL);
    end_one(fx->l, id, 2, BURST_TASK_RETRYING, 700, NULL);
    assert_int_equal(task(fx->l, id, 1).retry_at_ms, 1000);

    assert_int_equal(ledger_tasks_next_retry(fx->l, id, &at, &found), 0);
    assert_true(found);
    assert_int_equal(at, 700);

    assert_int_equal(ledger_tasks_pending(fx->l, id, 3, 500, 8, idx, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ledger_tasks_pending(fx->l, id, 3, 700, 8, idx, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(idx[0], 2);
    assert_int_equal(ledger_tasks_pending(fx->l, id, 3, 1000, 8, idx, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);

    /* Once dispatched again a task is no longer waiting for its retry. */
    dispatch_one(fx->l, id, 2, &a);
    assert_int_equal(a, 2);
    assert_int_equal(ledger_tasks_next_retry(fx->l, id, &at, &found), 0);
    assert_true(found);
    assert_int_equal(at, 1000);
    dispatch_one(fx->l, id, 1, &a);
    assert_int_equal(ledger_tasks_next_retry(fx->l, id, &at, &found), 0);
    assert_false(found);
}

/* A map_reduce job has a run for its reduce task after the map tasks:
 * dispatching every map task leaves it queued, whether the ledger had the
 * job's size at hand (it inserted the job) or had to look it up. */
static void
test_reduce_task_apart(void **state)
{
    struct fx *fx = *state;
    for (int fresh = 0; fresh < 2; fresh++) {
        struct ledger_job j;
        job_fill(&j, 1, 3);
        j.kind = BURST_KIND_MAP_REDUCE;
        j.reduce.kind = BURST_FN_EXEC;
        j.reduce.arg = "cat";
        assert_int_equal(ledger_begin(fx->l), 0);
        assert_int_equal(ledger_job_insert(fx->l, &j, 4), 0);
        assert_int_equal(ledger_commit(fx->l), 0);
        if (fresh)
            reopen(fx);
        uint32_t idx[] = {0, 1, 2}, att[3];
        uint64_t d;
        assert_int_equal(ledger_begin(fx->l), 0);
        assert_int_equal(ledger_next_dispatch(fx->l, &d), 0);
        assert_int_equal(ledger_tasks_dispatch(fx->l, j.id, idx, 3, d, 100, att), 0);
        assert_int_equal(ledger_commit(fx->l), 0);
        for (uint32_t i = 0; i < 3; i++)
            assert_int_equal(task(fx->l, j.id, i).state, BURST_TASK_DISPATCHED);
        struct ledger_task r = task(fx->l, j.id, 3);
        assert_int_equal(r.state, BURST_TASK_QUEUED);
        assert_int_equal(r.attempts, 0);
    }
}

static void
test_dispatch_attempts(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 4);
    uint64_t d1, d2;
    uint32_t idx[] = {0, 1, 2}, att[3];
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &d1), 0);
    assert_int_equal(ledger_tasks_dispatch(fx->l, id, idx, 3, d1, 100, att), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(att[i], 1);
    struct ledger_task t = task(fx->l, id, 1);
    assert_int_equal(t.state, BURST_TASK_DISPATCHED);
    assert_int_equal(t.dispatch, d1);
    assert_int_equal(t.attempts, 1);
    assert_int_equal(t.started_ms, 100);

    /* A lost attempt handed back keeps its count; the next adds one. */
    uint32_t back = 1;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_set_state(fx->l, id, &back, 1, BURST_TASK_QUEUED, 150),
                     0);
    assert_int_equal(ledger_commit(fx->l), 0);
    t = task(fx->l, id, 1);
    assert_int_equal(t.state, BURST_TASK_QUEUED);
    assert_int_equal(t.attempts, 1);

    end_one(fx->l, id, 2, BURST_TASK_SUCCEEDED, 0, NULL);
    uint32_t again[] = {1, 2, 3, 77};
    uint32_t att2[4];
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &d2), 0);
    assert_true(d2 > d1);
    assert_int_equal(ledger_tasks_dispatch(fx->l, id, again, 4, d2, 200, att2), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(att2[0], 2);
    assert_int_equal(att2[1], 0); /* final: left alone */
    assert_int_equal(att2[2], 1);
    assert_int_equal(att2[3], 0); /* no such task */
    t = task(fx->l, id, 2);
    assert_int_equal(t.state, BURST_TASK_SUCCEEDED);
    assert_int_equal(t.dispatch, d1);
    assert_int_equal(task(fx->l, id, 1).dispatch, d2);
}

static void
test_end_exactly_once(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 3);
    uint32_t a;
    for (uint32_t i = 0; i < 3; i++)
        dispatch_one(fx->l, id, i, &a);

    struct ledger_task_end ok = {.index = 0,
                                 .state = BURST_TASK_SUCCEEDED,
                                 .exit_status = 0,
                                 .has_out = true,
                                 .out_dispatch = 5,
                                 .out_n = 2,
                                 .res_off = 10,
                                 .res_len = 20,
                                 .log_off = 30,
                                 .log_len = 40};
    struct ledger_task_end batch[] = {
        ok,
        {.index = 1,
         .state = BURST_TASK_FAILED,
         .exit_status = -1,
         .signal = 9,
         .reason = "killed"},
    };
    size_t applied = 99;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_end(fx->l, id, batch, 2, 500, &applied), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(applied, 2);

    struct ledger_task t = task(fx->l, id, 0);
    assert_int_equal(t.state, BURST_TASK_SUCCEEDED);
    assert_int_equal(t.exit_status, 0);
    assert_true(t.has_out);
    assert_int_equal(t.out_dispatch, 5);
    assert_int_equal(t.out_n, 2);
    assert_int_equal(t.res_off, 10);
    assert_int_equal(t.res_len, 20);
    assert_int_equal(t.log_off, 30);
    assert_int_equal(t.log_len, 40);
    assert_int_equal(t.finished_ms, 500);
    t = task(fx->l, id, 1);
    assert_int_equal(t.state, BURST_TASK_FAILED);
    assert_int_equal(t.signal, 9);
    assert_string_equal(t.reason, "killed");
    assert_false(t.has_out);

    /* A duplicate report of task 0 (another output, a different verdict)
     * and a late one for task 1 change nothing; task 2 is new. */
    struct ledger_task_end dup[] = {
        {.index = 0,
         .state = BURST_TASK_FAILED,
         .exit_status = 3,
         .has_out = true,
         .out_dispatch = 6,
         .res_len = 1},
        {.index = 1, .state = BURST_TASK_SUCCEEDED},
        {.index = 2, .state = BURST_TASK_TIMEOUT, .reason = ""},
        {.index = 9, .state = BURST_TASK_SUCCEEDED}, /* no such task */
    };
    bool which[4] = {true, true, false, true};
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_end_marked(fx->l, id, dup, 4, 600, &applied, which), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(applied, 1);
    /* Which of them: only task 2 (what the scheduler tells subscribers). */
    assert_false(which[0]);
    assert_false(which[1]);
    assert_true(which[2]);
    assert_false(which[3]);
    t = task(fx->l, id, 0);
    assert_int_equal(t.state, BURST_TASK_SUCCEEDED);
    assert_int_equal(t.out_dispatch, 5);
    assert_int_equal(t.res_len, 20);
    assert_int_equal(t.finished_ms, 500);
    assert_int_equal(task(fx->l, id, 1).state, BURST_TASK_FAILED);
    assert_int_equal(task(fx->l, id, 2).state, BURST_TASK_TIMEOUT);
    assert_string_equal(task(fx->l, id, 2).reason, "");

    /* Nor do set_state and cancel touch a final task. */
    uint32_t zero = 0;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(
        ledger_tasks_set_state(fx->l, id, &zero, 1, BURST_TASK_CANCELLED, 700), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(task(fx->l, id, 0).state, BURST_TASK_SUCCEEDED);

    /* A state that is not an end is refused before anything changes. */
    struct ledger_task_end bad[] = {
        {.index = 2, .state = BURST_TASK_SUCCEEDED},
        {.index = 2, .state = BURST_TASK_RUNNING},
    };
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_end(fx->l, id, bad, 2, 800, NULL), -EINVAL);
    ledger_rollback(fx->l);
}

static void
test_end_keeps_last_output_and_reason(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 1);
    uint32_t a;
    dispatch_one(fx->l, id, 0, &a);
    struct ledger_task_end e = {.index = 0,
                                .state = BURST_TASK_RETRYING,
                                .exit_status = 2,
                                .retry_at_ms = 900,
                                .reason = "exit 2",
                                .has_out = true,
                                .out_dispatch = 1,
                                .out_n = 0,
                                .log_len = 7};
    size_t applied;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_end(fx->l, id, &e, 1, 100, &applied), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(applied, 1);

    /* The second attempt dies without output: the first one's log stays. */
    dispatch_one(fx->l, id, 0, &a);
    assert_int_equal(a, 2);
    assert_int_equal(task(fx->l, id, 0).retry_at_ms, 0);
    char longr[400];
    /* 199 two-byte characters: the cut must land between two of them. */
    for (int i = 0; i < 199; i++) {
        longr[2 * i] = '\xc3';
        longr[2 * i + 1] = '\xa9';
    }
    longr[398] = '\0';
    struct ledger_task_end e2 = {.index = 0,
                                 .state = BURST_TASK_FAILED,
                                 .exit_status = -1,
                                 .signal = 11,
                                 .reason = longr};
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_end(fx->l, id, &e2, 1, 200, &applied), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    struct ledger_task t = task(fx->l, id, 0);
    assert_int_equal(t.state, BURST_TASK_FAILED);
    assert_int_equal(t.retry_at_ms, 0);
    assert_true(t.has_out);
    assert_int_equal(t.out_dispatch, 1);
    assert_int_equal(t.log_len, 7);
    size_t rl = strlen(t.reason);
    assert_int_equal(rl, 158); /* 79 whole characters in 159 bytes */
    assert_memory_equal(t.reason, longr, rl);
}

static void
test_cancel_pending(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 5);
    uint32_t a;
    dispatch_one(fx->l, id, 1, &a); /* dispatched */
    dispatch_one(fx->l, id, 2, &a);
    end_one(fx->l, id, 2, BURST_TASK_RETRYING, 5000, NULL);
    dispatch_one(fx->l, id, 3, &a);
    end_one(fx->l, id, 3, BURST_TASK_SUCCEEDED, 0, NULL);

    uint32_t n = 0;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_cancel_pending(fx->l, id, 777, &n), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(n, 3); /* 0, 4 (queued) and 2 (retrying) */
    assert_int_equal(task(fx->l, id, 0).state, BURST_TASK_CANCELLED);
    assert_int_equal(task(fx->l, id, 0).finished_ms, 777);
    assert_int_equal(task(fx->l, id, 1).state, BURST_TASK_DISPATCHED);
    assert_int_equal(task(fx->l, id, 2).state, BURST_TASK_CANCELLED);
    assert_int_equal(task(fx->l, id, 3).state, BURST_TASK_SUCCEEDED);
    assert_int_equal(task(fx->l, id, 4).state, BURST_TASK_CANCELLED);
    uint32_t idx[4];
    int64_t at;
    bool found;
    assert_int_equal(ledger_tasks_pending(fx->l, id, 5, INT64_MAX, 4, idx, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ledger_tasks_next_retry(fx->l, id, &at, &found), 0);
    assert_false(found);

    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_cancel_pending(fx->l, id, 778, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ledger_commit(fx->l), 0);
}

struct seen_tasks {
    uint64_t job[16];
    uint32_t idx[16];
    uint64_t dispatch[16];
    int state[16];
    int n;
    int stop_after;
};

static int
inflight_cb(void *arg, uint64_t job, const struct ledger_task *t)
{
    struct seen_tasks *s = arg;
    s->job[s->n] = job;
    s->idx[s->n] = t->index;
    s->dispatch[s->n] = t->dispatch;
    s->state[s->n] = t->state;
    s->n++;
    return s->stop_after != 0 && s->n == s->stop_after ? -5 : 0;
}

static void
test_inflight(void **state)
{
    struct fx *fx = *state;
    uint64_t j1 = add_job(fx->l, 1, 6);
    uint64_t j2 = add_job(fx->l, 2, 3);
    uint32_t att[3];
    uint32_t first[] = {4, 5}, second[] = {0, 1}, other[] = {2};
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_dispatch(fx->l, j2, other, 1, 1, 1, att), 0);
    assert_int_equal(ledger_tasks_dispatch(fx->l, j1, first, 2, 2, 1, att), 0);
    assert_int_equal(ledger_tasks_dispatch(fx->l, j1, second, 2, 3, 1, att), 0);
    assert_int_equal(
        ledger_tasks_set_state(fx->l, j1, &first[1], 1, BURST_TASK_RUNNING, 2), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    end_one(fx->l, j1, 0, BURST_TASK_SUCCEEDED, 0, NULL);

    struct seen_tasks s = {0};
    assert_int_equal(ledger_tasks_inflight(fx->l, inflight_cb, &s), 0);
    assert_int_equal(s.n, 4);
    /* (job, dispatch, index) order. */
    assert_int_equal(s.job[0], j1);
    assert_int_equal(s.dispatch[0], 2);
    assert_int_equal(s.idx[0], 4);
    assert_int_equal(s.state[0], BURST_TASK_DISPATCHED);
    assert_int_equal(s.idx[1], 5);
    assert_int_equal(s.state[1], BURST_TASK_RUNNING);
    assert_int_equal(s.dispatch[2], 3);
    assert_int_equal(s.idx[2], 1);
    assert_int_equal(s.job[3], j2);
    assert_int_equal(s.idx[3], 2);

    memset(&s, 0, sizeof(s));
    s.stop_after = 1;
    assert_int_equal(ledger_tasks_inflight(fx->l, inflight_cb, &s), -5);
    assert_int_equal(s.n, 1);
}

static int
tasks_cb(void *arg, const struct ledger_task *t)
{
    struct seen_tasks *s = arg;
    s->idx[s->n] = t->index;
    s->state[s->n] = t->state;
    s->n++;
    return 0;
}

static void
test_tasks_foreach(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 8);
    uint32_t a;
    dispatch_one(fx->l, id, 3, &a);
    end_one(fx->l, id, 3, BURST_TASK_FAILED, 0, NULL);
    dispatch_one(fx->l, id, 6, &a);
    end_one(fx->l, id, 6, BURST_TASK_FAILED, 0, NULL);

    struct seen_tasks s = {0};
    assert_int_equal(ledger_tasks_foreach(fx->l, id, -1, 0, 0, tasks_cb, &s), 0);
    assert_int_equal(s.n, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(s.idx[i], i);
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_tasks_foreach(fx->l, id, -1, 5, 2, tasks_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.idx[0], 5);
    assert_int_equal(s.idx[1], 6);
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        ledger_tasks_foreach(fx->l, id, BURST_TASK_FAILED, 0, 0, tasks_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.idx[0], 3);
    assert_int_equal(s.idx[1], 6);
    memset(&s, 0, sizeof(s));
    assert_int_equal(
        ledger_tasks_foreach(fx->l, id, BURST_TASK_FAILED, 4, 0, tasks_cb, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.idx[0], 6);
}

/* ---- events -------------------------------------------------------------- */

struct seen_events {
    uint64_t seq[16];
    char body[16][16];
    size_t len[16];
    int n;
};

static int
events_cb(void *arg, uint64_t seq, const void *body, size_t len)
{
    struct seen_events *s = arg;
    assert_true(len < sizeof(s->body[0]));
    s->seq[s->n] = seq;
    if (len > 0)
        memcpy(s->body[s->n], body, len);
    s->len[s->n] = len;
    s->n++;
    return 0;
}

static void
test_events(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 1);
    uint64_t other = add_job(fx->l, 1, 1);
    assert_int_equal(ledger_begin(fx->l), 0);
    for (int i = 1; i <= 5; i++) {
        char b[16];
        int n = snprintf(b, sizeof(b), "ev%d", i);
        uint64_t seq = 0;
        assert_int_equal(ledger_event_append(fx->l, id, b, (size_t)n, &seq), 0);
        assert_int_equal(seq, (uint64_t)i);
    }
    uint64_t seq = 0;
    assert_int_equal(ledger_event_append(fx->l, other, "x", 1, &seq), 0);
    assert_int_equal(seq, 1); /* numbered per job */
    assert_int_equal(ledger_event_append(fx->l, id, NULL, 0, &seq), 0);
    assert_int_equal(seq, 6);
    assert_int_equal(ledger_commit(fx->l), 0);

    struct seen_events s = {0};
    assert_int_equal(ledger_events_since(fx->l, id, 0, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 6);
    for (int i = 0; i < 5; i++) {
        char b[16];
        snprintf(b, sizeof(b), "ev%d", i + 1);
        assert_int_equal(s.seq[i], i + 1);
        assert_int_equal(s.len[i], strlen(b));
        assert_memory_equal(s.body[i], b, s.len[i]);
    }
    assert_int_equal(s.len[5], 0);

    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_events_since(fx->l, id, 2, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.seq[0], 3);
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_events_since(fx->l, id, 2, 2, events_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seq[0], 3);
    assert_int_equal(s.seq[1], 4);
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_events_since(fx->l, id, 6, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(ledger_events_since(fx->l, id, UINT64_MAX, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 0);

    struct ledger_job j;
    assert_int_equal(ledger_job_get(fx->l, id, &j), 0);
    assert_int_equal(j.last_seq, 6);
    ledger_job_free(&j);

    /* Several at once: consecutive seqs after the last, bodies in order. */
    struct ledger_event_body three[3] = {{"a", 1}, {NULL, 0}, {"ccc", 3}};
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_events_append(fx->l, id, three, 3, &seq), 0);
    assert_int_equal(seq, 7);
    assert_int_equal(ledger_events_append(fx->l, id, three, 0, &seq), 0); /* nothing */
    assert_int_equal(ledger_event_append(fx->l, id, "d", 1, &seq), 0);
    assert_int_equal(seq, 10);
    assert_int_equal(ledger_events_append(fx->l, 987654, three, 3, &seq), BURST_ENOJOB);
    assert_int_equal(ledger_commit(fx->l), 0);
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_events_since(fx->l, id, 6, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(s.seq[i], 7 + i);
    assert_int_equal(s.len[0], 1);
    assert_memory_equal(s.body[0], "a", 1);
    assert_int_equal(s.len[1], 0);
    assert_int_equal(s.len[2], 3);
    assert_memory_equal(s.body[2], "ccc", 3);
    assert_memory_equal(s.body[3], "d", 1);
    assert_int_equal(ledger_job_get(fx->l, id, &j), 0);
    assert_int_equal(j.last_seq, 10);
    ledger_job_free(&j);
}

/* ---- settings ------------------------------------------------------------ */

static void
test_quota(void **state)
{
    struct fx *fx = *state;
    uint32_t q = 5;
    bool found = true;
    assert_int_equal(ledger_quota_get(fx->l, &q, &found), 0);
    assert_false(found);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_quota_set(fx->l, 42), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_quota_get(fx->l, &q, &found), 0);
    assert_true(found);
    assert_int_equal(q, 42);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_quota_set(fx->l, UINT32_MAX), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    reopen(fx);
    assert_int_equal(ledger_quota_get(fx->l, &q, &found), 0);
    assert_int_equal(q, UINT32_MAX);
}

static void
test_next_dispatch_monotonic(void **state)
{
    struct fx *fx = *state;
    uint64_t d[3];
    assert_int_equal(ledger_begin(fx->l), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ledger_next_dispatch(fx->l, &d[i]), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(d[0], 1); /* 0 is "never dispatched" */
    assert_int_equal(d[1], 2);
    assert_int_equal(d[2], 3);
    /* The block reserved above serves the next transactions without a
     * write of their own. */
    uint64_t e;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &e), 0);
    assert_false(ledger_txn_changed(fx->l));
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(e, 4);
    /* After a reopen (as after a crash) a new block is reserved, and the
     * numbers go on past every one handed out. */
    reopen(fx);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &e), 0);
    assert_true(ledger_txn_changed(fx->l)); /* a new block */
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_true(e > 4);
    reopen(fx);
    uint64_t f;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &f), 0);
    ledger_rollback(fx->l);
    /* The block reserved by the rolled-back transaction is not in the
     * ledger: the next transaction reserves again, beyond f. */
    uint64_t g;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &g), 0);
    assert_true(ledger_txn_changed(fx->l));
    assert_int_equal(ledger_commit(fx->l), 0);
    reopen(fx);
    uint64_t h;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_next_dispatch(fx->l, &h), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_true(e < f && f < g && g < h);
}

/* Counts the statements that are not among the rare ones allowed a
 * scratch b-tree, and prints them. */
static void
note_scratch(void *arg, const char *sql)
{
    static const char *const rare[] = {
        "INSERT INTO meta(key, value) VALUES('next_dispatch'", /* once a block */
        "UPDATE runs SET state = 7,",                          /* a cancel */
    };
    for (size_t i = 0; i < sizeof(rare) / sizeof(rare[0]); i++)
        if (strncmp(sql, rare[i], strlen(rare[i])) == 0)
            return;
    print_message("builds a scratch b-tree at each run: %s\n", sql);
    (*(int *)arg)++;
}

/*
 * No statement of a submission, a dispatch, an end or a reply builds a
 * scratch b-tree each time it runs: SQLite makes one for an IN list of
 * three or more, RETURNING, an INSERT ... SELECT from its own table, or a
 * GROUP BY or ORDER BY no index serves, and zeroing its pages was a fifth
 * of burstd's instructions under bench B6.
 */
static void
test_no_scratch_btrees(void **state)
{
    struct fx *fx = *state;
    int unexpected = 0;
    assert_true(ledger_stmts_with_scratch(fx->l, note_scratch, &unexpected) >= 0);
    assert_int_equal(unexpected, 0);
}

/* ---- unknown jobs ---------------------------------------------------------- */

static int
never_cb(void *arg, const struct ledger_task *t)
{
    (void)arg;
    (void)t;
    fail();
    return 0;
}

static int
never_ev_cb(void *arg, uint64_t seq, const void *body, size_t len)
{
    (void)arg;
    (void)seq;
    (void)body;
    (void)len;
    fail();
    return 0;
}

static void
test_unknown_job(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 1);
    uint64_t bad = id + 100;
    struct ledger_job j;
    struct ledger_task t;
    uint32_t c[BURST_TASK_NSTATES], idx[2], n;
    int64_t at;
    bool found;
    uint64_t seq;
    assert_int_equal(ledger_job_get(fx->l, bad, &j), BURST_ENOJOB);
    assert_int_equal(ledger_job_counts(fx->l, bad, c), BURST_ENOJOB);
    assert_int_equal(ledger_task_get(fx->l, bad, 0, &t), BURST_ENOJOB);
    assert_int_equal(ledger_task_get(fx->l, id, 1, &t), BURST_ENOTASK);
    assert_int_equal(ledger_tasks_foreach(fx->l, bad, -1, 0, 0, never_cb, NULL),
                     BURST_ENOJOB);
    assert_int_equal(ledger_tasks_pending(fx->l, bad, 10, 0, 2, idx, &n), BURST_ENOJOB);
    assert_int_equal(ledger_tasks_next_retry(fx->l, bad, &at, &found), BURST_ENOJOB);
    assert_int_equal(ledger_events_since(fx->l, bad, 0, 0, never_ev_cb, NULL),
                     BURST_ENOJOB);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_set_state(fx->l, bad, BURST_JOB_RUNNING, NULL, 1),
                     BURST_ENOJOB);
    assert_int_equal(ledger_job_cancel_pending(fx->l, bad, 1, &n), BURST_ENOJOB);
    assert_int_equal(ledger_event_append(fx->l, bad, "x", 1, &seq), BURST_ENOJOB);
    ledger_rollback(fx->l);
}

/* ---- fault injection ------------------------------------------------------- */

/* Both a missing ledger in a read-only directory and an existing read-only
 * ledger must fail cleanly.  Returns 0 when both did. */
static int
readonly_opens(const char *dir)
{
    char path[160];
    struct ledger *l = NULL;
    snprintf(path, sizeof(path), "%s/ro/ledger.db", dir);
    int rc = ledger_open(path, &l);
    if (l != NULL || (rc != -EACCES && rc != BURST_ELEDGER))
        return 1;
    snprintf(path, sizeof(path), "%s/ro/new.db", dir);
    rc = ledger_open(path, &l);
    if (l != NULL || (rc != -EACCES && rc != BURST_ELEDGER))
        return 2;
    return 0;
}

static void
test_fault_readonly(void **state)
{
    struct fx *fx = *state;
    char ro[128], path[160];
    snprintf(ro, sizeof(ro), "%s/ro", fx->dir);
    assert_int_equal(mkdir(ro, 0700), 0);
    snprintf(path, sizeof(path), "%s/ledger.db", ro);
    struct ledger *l;
    assert_int_equal(ledger_open(path, &l), 0);
    ledger_close(l);
    assert_int_equal(chmod(path, 0444), 0);
    assert_int_equal(chmod(ro, 0555), 0);

    if (geteuid() != 0) {
        assert_int_equal(readonly_opens(fx->dir), 0);
    } else {
        /* root ignores permission bits: test as an unprivileged user. */
        assert_int_equal(chmod(fx->dir, 0755), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (setgid(65534) != 0 || setuid(65534) != 0)
                _exit(77);
            _exit(readonly_opens(fx->dir));
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 77)
            skip();
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    /* And a path whose directory does not exist. */
    snprintf(path, sizeof(path), "%s/missing/ledger.db", fx->dir);
    assert_int_equal(ledger_open(path, &l), -ENOENT);
}

static void
write_file(const char *path, off_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
    close(fd);
}

/* What sql, a count with the job as ?1, says in the database at path,
 * opened on a connection of its own with flags. */
static int64_t
count_of_job(const char *path, int flags, const char *sql, uint64_t job)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)job);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* The events of job in a copy of the ledger's files as they are now, opened
 * the way burstd would after a power cut that the page cache survived. */
static int64_t
events_in_copy(struct fx *fx, uint64_t job)
{
    char src[200], dst[200];
    static const char *const suffix[] = {"", "-wal"};
    snprintf(dst, sizeof(dst), "%s/copy.db-shm", fx->dir);
    unlink(dst);
    for (size_t i = 0; i < 2; i++) {
        snprintf(src, sizeof(src), "%s%s", fx->path, suffix[i]);
        snprintf(dst, sizeof(dst), "%s/copy.db%s", fx->dir, suffix[i]);
        int in = open(src, O_RDONLY);
        int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(in >= 0 && out >= 0);
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0)
            assert_int_equal(write(out, buf, (size_t)n), n);
        assert_int_equal(n, 0);
        close(in);
        close(out);
    }
    snprintf(dst, sizeof(dst), "%s/copy.db", fx->dir);
    return count_of_job(dst, SQLITE_OPEN_READWRITE,
                        "SELECT count(*) FROM events WHERE job = ?1", job);
}

/*
 * As burstd runs it (SQLite does not sync commits itself), a commit is in
 * the files the moment ledger_commit returns: the ledger gathers a
 * transaction's WAL frames into one write (ledger_vfs.h), and none may be
 * left behind in the process -- not for a commit larger than what it
 * gathers at once, nor after a rolled-back transaction.
 */
static void
test_commit_reaches_wal(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(ledger_defer_sync(fx->l), 0);
    assert_true(ledger_sync_deferred(fx->l));
    uint64_t id = add_job(fx->l, 1, 10);
    int64_t want = events_in_copy(fx, id);
    char body[1024];
    memset(body, 'e', sizeof(body));
    static const int sizes[] = {1, 3, 200, 1}; /* 200 KB: several writes */
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        assert_int_equal(ledger_begin(fx->l), 0);
        for (int i = 0; i < 5; i++)
            assert_int_equal(ledger_event_append(fx->l, id, body, sizeof(body), NULL), 0);
        ledger_rollback(fx->l);
        assert_int_equal(ledger_begin(fx->l), 0);
        for (int i = 0; i < sizes[k]; i++)
            assert_int_equal(ledger_event_append(fx->l, id, body, sizeof(body), NULL), 0);
        assert_int_equal(ledger_commit(fx->l), 0);
        want += sizes[k];
        assert_int_equal(events_in_copy(fx, id), want);
    }
    /* And the ledger itself reads back what it wrote. */
    reopen(fx);
    assert_int_equal(events_in_copy(fx, id), want);
}

static void
test_fault_garbage_file(void **state)
{
    struct fx *fx = *state;
    char path[160], junk[8192];
    snprintf(path, sizeof(path), "%s/junk.db", fx->dir);
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 7 + 3);
    write_file(path, 0, junk, sizeof(junk));
    struct ledger *l = NULL;
    assert_int_equal(ledger_open(path, &l), BURST_ELEDGER);
    assert_null(l);
}

static void
test_fault_damaged_pages(void **state)
{
    struct fx *fx = *state;
    /* A job is a few rows now, however many tasks it has: events fill the
     * file instead, so that there are pages to damage. */
    uint64_t id = add_job(fx->l, 1, 20000);
    char body[1024];
    memset(body, 'e', sizeof(body));
    assert_int_equal(ledger_begin(fx->l), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(ledger_event_append(fx->l, id, body, sizeof(body), NULL), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    ledger_close(fx->l); /* checkpoints everything into the main file */
    fx->l = NULL;
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), 0);
    assert_true(sb.st_size > 64 * 1024);
    size_t len = (size_t)sb.st_size / 3;
    char *junk = malloc(len);
    assert_non_null(junk);
    memset(junk, 0x5a, len);
    write_file(fx->path, sb.st_size / 3, junk, len);
    free(junk);
    assert_int_equal(ledger_open(fx->path, &fx->l), BURST_ELEDGER);
    assert_null(fx->l);
}

static void
test_fault_schema(void **state)
{
    struct fx *fx = *state;
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), 0);
    sqlite3_close(db);
    assert_int_equal(ledger_open(fx->path, &fx->l), BURST_ELEDGER);

    /* Some other application's database is not taken over either. */
    char other[160];
    snprintf(other, sizeof(other), "%s/other.db", fx->dir);
    assert_int_equal(sqlite3_open(other, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), 0);
    sqlite3_close(db);
    struct ledger *l = NULL;
    assert_int_equal(ledger_open(other, &l), BURST_ELEDGER);
    assert_null(l);
}

static void
test_fault_full(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 10);
    uint64_t seq;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_event_append(fx->l, id, "hello", 5, &seq), 0);
    assert_int_equal(ledger_commit(fx->l), 0);

    /* A cap below the current size holds the file where it is. */
    assert_int_equal(ledger_set_max_size(fx->l, 1), 0);
    /* A job is a few rows whatever its size; a large event must grow it. */
    size_t biglen = 1024 * 1024;
    char *bigbody = calloc(1, biglen);
    assert_non_null(bigbody);
    int rc = ledger_begin(fx->l);
    if (rc == 0) {
        rc = ledger_event_append(fx->l, id, bigbody, biglen, NULL);
        if (rc == 0)
            rc = ledger_commit(fx->l);
    }
    free(bigbody);
    assert_int_equal(rc, BURST_ELEDGER);
    ledger_rollback(fx->l);
    assert_false(ledger_in_txn(fx->l));

    /* Committed data is intact and readable. */
    struct ledger_job j;
    assert_int_equal(ledger_job_get(fx->l, id, &j), 0);
    assert_int_equal(j.total, 10);
    assert_int_equal(j.last_seq, 1);
    ledger_job_free(&j);
    int n = 0;
    assert_int_equal(ledger_jobs_foreach(fx->l, -1, false, count_cb, &n), 0);
    assert_int_equal(n, 1);
    struct seen_events s = {0};
    assert_int_equal(ledger_events_since(fx->l, id, 0, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 1);
    assert_memory_equal(s.body[0], "hello", 5);

    /* Small writes that fit the existing pages still work. */
    uint32_t a;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_set_state(fx->l, id, BURST_JOB_RUNNING, NULL, 5), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    dispatch_one(fx->l, id, 0, &a);
    end_one(fx->l, id, 0, BURST_TASK_SUCCEEDED, 0, NULL);
    assert_int_equal(task(fx->l, id, 0).state, BURST_TASK_SUCCEEDED);

    /* With room again, the large job goes in. */
    assert_int_equal(ledger_set_max_size(fx->l, 0), 0);
    uint64_t id2 = add_job(fx->l, 2, 200000);
    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id2, c), 0);
    assert_int_equal(c[BURST_TASK_QUEUED], 200000);
    reopen(fx);
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_SUCCEEDED], 1);
    assert_int_equal(c[BURST_TASK_QUEUED], 9);
}

/* In a child: a COMMIT whose WAL write fails (file size limit) must return
 * BURST_ELEDGER and leave no transaction open; the ledger then works on. */
static int
commit_failure_child(const char *path)
{
    struct ledger *l;
    if (ledger_open(path, &l) != 0)
        return 10;
    uint64_t id = 0;
    struct ledger_job j;
    job_fill(&j, 1, 3);
    if (ledger_begin(l) != 0 || ledger_job_insert(l, &j, 3) != 0 || ledger_commit(l) != 0)
        return 11;
    id = j.id;

    char wal[160];
    struct stat sb;
    snprintf(wal, sizeof(wal), "%s-wal", path);
    if (stat(wal, &sb) != 0)
        return 12;
    /* A commit writes only to the WAL: it may not grow.  (The database
     * file is larger, and is not written until a checkpoint.) */
    off_t limit = sb.st_size;
    struct rlimit old, lim;
    if (getrlimit(RLIMIT_FSIZE, &old) != 0)
        return 14;
    lim = old;
    lim.rlim_cur = (rlim_t)limit;
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0)
        return 15;

    /* Small enough to stay in the page cache until COMMIT writes it. */
    struct ledger_job k;
    job_fill(&k, 1, 50);
    if (ledger_begin(l) != 0 || ledger_job_insert(l, &k, 50) != 0)
        return 16;
    if (ledger_commit(l) != BURST_ELEDGER)
        return 17;
    if (ledger_in_txn(l))
        return 18;
    if (setrlimit(RLIMIT_FSIZE, &old) != 0)
        return 19;

    struct ledger_job g;
    if (ledger_job_get(l, id, &g) != 0)
        return 20;
    ledger_job_free(&g);
    if (ledger_begin(l) != 0 ||
        ledger_job_set_state(l, id, BURST_JOB_RUNNING, NULL, 1) != 0 ||
        ledger_commit(l) != 0)
        return 21;
    int n = 0;
    if (ledger_jobs_foreach(l, -1, false, count_cb, &n) != 0 || n != 1)
        return 22;
    ledger_close(l);
    return 0;
}

static void
test_fault_commit_fails(void **state)
{
    struct fx *fx = *state;
    ledger_close(fx->l);
    fx->l = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(commit_failure_child(fx->path));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* And the file is sound for the next daemon. */
    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
    struct ledger_job g;
    assert_int_equal(ledger_job_get(fx->l, 1, &g), 0);
    assert_int_equal(g.state, BURST_JOB_RUNNING);
    ledger_job_free(&g);
    assert_int_equal(ledger_job_get(fx->l, 2, &g), BURST_ENOJOB);
}

/* ---- size ------------------------------------------------------------------ */

static void
test_large_insert(void **state)
{
    struct fx *fx = *state;
    const uint32_t n = 200000;
    uint64_t id = add_job(fx->l, 1, n + 1);
    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_QUEUED], n + 1);
    assert_int_equal(task(fx->l, id, n).index, n);
    struct ledger_task t;
    assert_int_equal(ledger_task_get(fx->l, id, n + 1, &t), BURST_ENOTASK);
    uint32_t idx[4], got;
    assert_int_equal(ledger_tasks_pending(fx->l, id, n, 0, 4, idx, &got), 0);
    assert_int_equal(got, 4);
    assert_int_equal(idx[3], 3);
    /* A second job numbers its tasks from 0 again. */
    uint64_t id2 = add_job(fx->l, 1, n);
    assert_int_equal(ledger_job_counts(fx->l, id2, c), 0);
    assert_int_equal(c[BURST_TASK_QUEUED], n);
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_QUEUED], n + 1);
}

/* ---- runs: a row covers a range of tasks that share everything ---- */

/* How many run rows job has, read with a second connection as an admin's
 * sqlite3 shell would. */
static int
run_rows(struct fx *fx, uint64_t job)
{
    return (int)count_of_job(fx->path, SQLITE_OPEN_READONLY,
                             "SELECT count(*) FROM runs WHERE job = ?1", job);
}

/* Dispatches the stretch [lo, hi) as one dispatch; returns its number. */
static uint64_t
dispatch_range(struct ledger *l, uint64_t job, uint32_t lo, uint32_t hi, uint32_t *att)
{
    uint32_t idx[64];
    assert_true(hi - lo <= 64);
    for (uint32_t i = lo; i < hi; i++)
        idx[i - lo] = i;
    uint64_t d;
    assert_int_equal(ledger_begin(l), 0);
    assert_int_equal(ledger_next_dispatch(l, &d), 0);
    assert_int_equal(ledger_tasks_dispatch(l, job, idx, hi - lo, d, 10, att), 0);
    assert_int_equal(ledger_commit(l), 0);
    return d;
}

/* The end of task i of dispatch d with recognisable output locations. */
static struct ledger_task_end
end_ok(uint32_t i, uint64_t d)
{
    return (struct ledger_task_end){.index = i,
                                    .state = BURST_TASK_SUCCEEDED,
                                    .exit_status = 0,
                                    .has_out = true,
                                    .out_dispatch = d,
                                    .res_off = 1000 + i * 10,
                                    .res_len = i + 1,
                                    .log_off = 5000 + i,
                                    .log_len = 2 * i};
}

static void
ends_apply(struct ledger *l, uint64_t job, const struct ledger_task_end *e, size_t n,
           size_t expect_applied)
{
    size_t applied;
    assert_int_equal(ledger_begin(l), 0);
    assert_int_equal(ledger_tasks_end(l, job, e, n, 60, &applied), 0);
    assert_int_equal(ledger_commit(l), 0);
    assert_int_equal(applied, expect_applied);
}

static void
assert_out(struct ledger *l, uint64_t job, uint32_t i, uint64_t d)
{
    struct ledger_task t = task(l, job, i);
    assert_int_equal(t.state, BURST_TASK_SUCCEEDED);
    assert_true(t.has_out);
    assert_int_equal(t.out_dispatch, d);
    assert_int_equal(t.res_off, 1000 + i * 10);
    assert_int_equal(t.res_len, i + 1);
    assert_int_equal(t.log_off, 5000 + i);
    assert_int_equal(t.log_len, 2 * i);
}

/* A submission is one row; a chunk dispatched and ended whole is one more,
 * and each task still has its own result location. */
static void
test_runs_chunk(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 1000000);
    assert_int_equal(run_rows(fx, id), 1);
    uint32_t att[64];
    uint64_t d = dispatch_range(fx->l, id, 0, 40, att);
    for (int i = 0; i < 40; i++)
        assert_int_equal(att[i], 1);
    assert_int_equal(run_rows(fx, id), 2);
    struct ledger_task_end e[40];
    for (uint32_t i = 0; i < 40; i++)
        e[i] = end_ok(i, d);
    ends_apply(fx->l, id, e, 40, 40);
    assert_int_equal(run_rows(fx, id), 2);
    for (uint32_t i = 0; i < 40; i++)
        assert_out(fx->l, id, i, d);
    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_SUCCEEDED], 40);
    assert_int_equal(c[BURST_TASK_QUEUED], 1000000 - 40);
    /* A second end of the same tasks changes nothing: exactly once. */
    for (uint32_t i = 0; i < 40; i++)
        e[i].res_off = 7;
    ends_apply(fx->l, id, e, 40, 0);
    assert_out(fx->l, id, 17, d);
}

/* A failure in the middle of a chunk splits its run in three; the tasks on
 * either side keep their own result locations. */
static void
test_runs_fail_in_middle(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 12);
    uint32_t att[64];
    uint64_t d = dispatch_range(fx->l, id, 0, 10, att);
    struct ledger_task_end e[10];
    for (uint32_t i = 0; i < 10; i++)
        e[i] = end_ok(i, d);
    e[4].state = BURST_TASK_FAILED;
    e[4].exit_status = 3;
    e[4].reason = "failed";
    ends_apply(fx->l, id, e, 10, 10);
    /* [0,4) [4,5) [5,10) and the queued [10,12). */
    assert_int_equal(run_rows(fx, id), 4);
    for (uint32_t i = 0; i < 10; i++)
        if (i != 4)
            assert_out(fx->l, id, i, d);
    struct ledger_task t = task(fx->l, id, 4);
    assert_int_equal(t.state, BURST_TASK_FAILED);
    assert_int_equal(t.exit_status, 3);
    assert_string_equal(t.reason, "failed");
    assert_int_equal(t.log_off, 5004);
    assert_int_equal(task(fx->l, id, 3).exit_status, 0);
    assert_string_equal(task(fx->l, id, 5).reason, "");

    /* Listing by state sees the split as tasks, in index order. */
    struct seen_tasks s = {0};
    assert_int_equal(
        ledger_tasks_foreach(fx->l, id, BURST_TASK_SUCCEEDED, 2, 0, tasks_cb, &s), 0);
    assert_int_equal(s.n, 7);
    assert_int_equal(s.idx[0], 2);
    assert_int_equal(s.idx[1], 3);
    assert_int_equal(s.idx[2], 5);
    assert_int_equal(s.idx[6], 9);
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_tasks_foreach(fx->l, id, -1, 3, 4, tasks_cb, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.idx[0], 3);
    assert_int_equal(s.state[1], BURST_TASK_FAILED);
    assert_int_equal(s.idx[3], 6);
}

/* A retry of one task between two succeeded chunks runs alone and leaves
 * its neighbours' runs and results as they were. */
static void
test_runs_retry_neighbours(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 10);
    uint32_t att[64];
    uint64_t d1 = dispatch_range(fx->l, id, 0, 5, att);
    uint64_t d2 = dispatch_range(fx->l, id, 5, 10, att);
    struct ledger_task_end e[10];
    for (uint32_t i = 0; i < 5; i++)
        e[i] = end_ok(i, d1);
    ends_apply(fx->l, id, e, 5, 5);
    for (uint32_t i = 5; i < 10; i++)
        e[i] = end_ok(i, d2);
    e[5].state = BURST_TASK_RETRYING;
    e[5].retry_at_ms = 70;
    e[5].reason = "killed by a signal";
    ends_apply(fx->l, id, e + 5, 5, 5);
    assert_int_equal(run_rows(fx, id), 3);

    uint32_t idx[10], got;
    assert_int_equal(ledger_tasks_pending(fx->l, id, 10, 100, 10, idx, &got), 0);
    assert_int_equal(got, 1);
    assert_int_equal(idx[0], 5);
    uint64_t d3 = dispatch_range(fx->l, id, 5, 6, att);
    assert_int_equal(att[0], 2);
    struct ledger_task_end again = end_ok(5, d3);
    again.res_off = 1050; /* what end_ok gives, from another object */
    ends_apply(fx->l, id, &again, 1, 1);
    assert_out(fx->l, id, 5, d3);
    assert_int_equal(task(fx->l, id, 5).attempts, 2);
    for (uint32_t i = 0; i < 5; i++)
        assert_out(fx->l, id, i, d1);
    for (uint32_t i = 6; i < 10; i++) {
        assert_out(fx->l, id, i, d2);
        assert_int_equal(task(fx->l, id, i).attempts, 1);
    }
    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_SUCCEEDED], 10);
}

/* Dispatching part of a run that holds output locations (tasks handed back
 * with their logs) splits the locations with it. */
static void
test_runs_split_keeps_outputs(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 10);
    uint32_t att[64];
    uint64_t d = dispatch_range(fx->l, id, 0, 10, att);
    struct ledger_task_end e[10];
    for (uint32_t i = 0; i < 10; i++) {
        e[i] = end_ok(i, d);
        e[i].state = BURST_TASK_RETRYING;
        e[i].retry_at_ms = 50;
    }
    ends_apply(fx->l, id, e, 10, 10);
    assert_int_equal(run_rows(fx, id), 1);
    uint64_t d2 = dispatch_range(fx->l, id, 3, 6, att);
    assert_int_equal(att[2], 2);
    assert_int_equal(run_rows(fx, id), 3);
    for (uint32_t i = 0; i < 10; i++) {
        struct ledger_task t = task(fx->l, id, i);
        assert_int_equal(t.state,
                         i >= 3 && i < 6 ? BURST_TASK_DISPATCHED : BURST_TASK_RETRYING);
        assert_int_equal(t.dispatch, i >= 3 && i < 6 ? d2 : d);
        assert_int_equal(t.out_dispatch, d);
        assert_int_equal(t.res_off, 1000 + i * 10);
        assert_int_equal(t.log_len, 2 * i);
    }
}

/* Cancelling a job part of which is in flight cancels the pending runs at
 * once; the in-flight ones end (or are cancelled) as they come back. */
static void
test_runs_cancel_partly_dispatched(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 20);
    uint32_t att[64];
    uint64_t d = dispatch_range(fx->l, id, 5, 10, att);
    uint32_t n = 0;
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_cancel_pending(fx->l, id, 30, &n), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(n, 15);
    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_CANCELLED], 15);
    assert_int_equal(c[BURST_TASK_DISPATCHED], 5);
    /* Task 6 finished; 5, 7, 8, 9 are cancelled as the worker stops. */
    struct ledger_task_end ok = end_ok(6, d);
    ends_apply(fx->l, id, &ok, 1, 1);
    uint32_t rest[] = {5, 7, 8, 9};
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_set_state(fx->l, id, rest, 4, BURST_TASK_CANCELLED, 40),
                     0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_CANCELLED], 19);
    assert_int_equal(c[BURST_TASK_SUCCEEDED], 1);
    assert_int_equal(c[BURST_TASK_DISPATCHED], 0);
    assert_out(fx->l, id, 6, d);
    assert_int_equal(task(fx->l, id, 9).finished_ms, 40);
    assert_int_equal(task(fx->l, id, 19).finished_ms, 30);
    /* Nothing pending is left, and the cancel finds nothing more. */
    uint32_t idx[4], got;
    assert_int_equal(ledger_tasks_pending(fx->l, id, 20, 1000, 4, idx, &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_cancel_pending(fx->l, id, 50, &n), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_int_equal(n, 0);
}

/* After a crash (a reopen), the runs in flight are listed task by task in
 * (job, dispatch, index) order; handing them back as lost records each
 * once, and their result, when it comes, once more. */
static void
test_runs_reconcile(void **state)
{
    struct fx *fx = *state;
    uint64_t id = add_job(fx->l, 1, 10);
    uint32_t att[64];
    uint64_t d2 = dispatch_range(fx->l, id, 6, 10, att);
    uint64_t d1 = dispatch_range(fx->l, id, 0, 6, att);
    uint32_t run[] = {0, 1, 2, 3, 4, 5};
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_tasks_set_state(fx->l, id, run, 6, BURST_TASK_RUNNING, 20),
                     0);
    assert_int_equal(ledger_commit(fx->l), 0);
    reopen(fx);

    struct seen_tasks s = {0};
    assert_int_equal(ledger_tasks_inflight(fx->l, inflight_cb, &s), 0);
    assert_int_equal(s.n, 10);
    assert_int_equal(s.dispatch[0], d2);
    assert_int_equal(s.idx[0], 6);
    assert_int_equal(s.state[0], BURST_TASK_DISPATCHED);
    assert_int_equal(s.idx[3], 9);
    assert_int_equal(s.dispatch[4], d1);
    assert_int_equal(s.idx[4], 0);
    assert_int_equal(s.state[4], BURST_TASK_RUNNING);

    /* d1's output says tasks 0-2 succeeded; 3-5 were lost. */
    struct ledger_task_end e[6];
    for (uint32_t i = 0; i < 6; i++) {
        e[i] = end_ok(i, d1);
        if (i >= 3) {
            e[i] = (struct ledger_task_end){.index = i,
                                            .state = BURST_TASK_RETRYING,
                                            .exit_status = -1,
                                            .reason = "lost: burstd restarted",
                                            .retry_at_ms = 60};
        }
    }
    ends_apply(fx->l, id, e, 6, 6);
    ends_apply(fx->l, id, e, 3, 0); /* read again: already recorded */
    uint32_t c[BURST_TASK_NSTATES];
    assert_int_equal(ledger_job_counts(fx->l, id, c), 0);
    assert_int_equal(c[BURST_TASK_SUCCEEDED], 3);
    assert_int_equal(c[BURST_TASK_RETRYING], 3);
    assert_int_equal(c[BURST_TASK_DISPATCHED], 4);
    struct ledger_task t = task(fx->l, id, 4);
    assert_string_equal(t.reason, "lost: burstd restarted");
    assert_false(t.has_out);
    uint32_t idx[10], got;
    assert_int_equal(ledger_tasks_pending(fx->l, id, 10, 60, 10, idx, &got), 0);
    assert_int_equal(got, 3);
    assert_int_equal(idx[0], 3);
    assert_int_equal(idx[2], 5);
    memset(&s, 0, sizeof(s));
    assert_int_equal(ledger_tasks_inflight(fx->l, inflight_cb, &s), 0);
    assert_int_equal(s.n, 4);
}

/* A ledger of schema version 1 (a row per task) is refused, not read. */
static void
test_fault_old_schema(void **state)
{
    struct fx *fx = *state;
    char old[160];
    snprintf(old, sizeof(old), "%s/old.db", fx->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(old, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE tasks(job, idx, state);"
                                  "INSERT INTO tasks VALUES(1, 0, 0);"
                                  "PRAGMA user_version = 1;"
                                  "PRAGMA application_id = 1651663732;",
                                  NULL, NULL, NULL),
                     0);
    sqlite3_close(db);
    struct ledger *l = NULL;
    assert_int_equal(ledger_open(old, &l), BURST_ELEDGER);
    assert_null(l);
    /* Left as it was, for an older burstd or an admin to take. */
    assert_int_equal(sqlite3_open(old, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM tasks", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* ---- inputs of small jobs ----------------------------------------------- */

/* An input object of n items as api.c builds one: only its bytes matter. */
static size_t
input_fill(unsigned char *buf, size_t size, unsigned char seed)
{
    for (size_t i = 0; i < size; i++)
        buf[i] = (unsigned char)(seed + i * 7);
    return size;
}

/* Reads job's input from the ledger and compares it with want (NULL: none). */
static void
input_expect(struct ledger *l, uint64_t job, const void *want, size_t len)
{
    void *body = NULL;
    size_t got = 99;
    assert_int_equal(ledger_input_get(l, job, &body, &got), 0);
    if (want == NULL) {
        assert_null(body);
        assert_int_equal(got, 0);
        return;
    }
    assert_non_null(body);
    assert_int_equal(got, len);
    assert_memory_equal(body, want, len);
    free(body);
}

/* Stored with the job in one transaction, read back byte for byte, gone
 * with a rollback, forgotten by delete; a job without one reads as none. */
static void
test_inputs(void **state)
{
    struct fx *fx = *state;
    static unsigned char a[65536], b[100];
    input_fill(a, sizeof(a), 1);
    input_fill(b, sizeof(b), 2);

    struct ledger_job j;
    job_fill(&j, 1000, 3);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 3), 0);
    assert_int_equal(ledger_input_put(fx->l, j.id, a, sizeof(a)), 0);
    /* One per job: a second one is a bug of the caller. */
    assert_int_equal(ledger_input_put(fx->l, j.id, b, sizeof(b)), BURST_ELEDGER);
    ledger_rollback(fx->l);
    struct ledger_job got;
    assert_int_equal(ledger_job_get(fx->l, j.id, &got), BURST_ENOJOB);
    input_expect(fx->l, j.id, NULL, 0);

    job_fill(&j, 1000, 3);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 3), 0);
    assert_int_equal(ledger_input_put(fx->l, j.id, a, sizeof(a)), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    uint64_t with = j.id;
    uint64_t without = add_job(fx->l, 1000, 2);

    reopen(fx);
    input_expect(fx->l, with, a, sizeof(a));
    input_expect(fx->l, without, NULL, 0);
    input_expect(fx->l, 12345, NULL, 0);

    /* An empty body is still a body. */
    job_fill(&j, 1000, 1);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 1), 0);
    assert_int_equal(ledger_input_put(fx->l, j.id, "", 0), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    void *body = NULL;
    size_t len = 99;
    assert_int_equal(ledger_input_get(fx->l, j.id, &body, &len), 0);
    assert_non_null(body);
    assert_int_equal(len, 0);
    free(body);

    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_input_delete(fx->l, with), 0);
    assert_int_equal(ledger_input_delete(fx->l, without), 0); /* none: fine */
    assert_int_equal(ledger_commit(fx->l), 0);
    input_expect(fx->l, with, NULL, 0);

    /* Deleting a job (an admin's purge; burstd has none yet) takes its
     * input with it: the foreign key cascades. */
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_input_put(fx->l, without, b, sizeof(b)), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof(sql), "PRAGMA foreign_keys=ON; DELETE FROM jobs WHERE id = %llu",
             (unsigned long long)without);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM inputs", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 1); /* the empty one */
    sqlite3_finalize(st);
    sqlite3_close(db);
    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
    input_expect(fx->l, without, NULL, 0);
}

static int64_t
db_int(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void
output_expect(struct ledger *l, uint64_t job, uint64_t dispatch, uint32_t n, uint64_t off,
              uint64_t len, const void *want, size_t wantlen)
{
    void *data = NULL;
    size_t got = 99;
    int rc = ledger_output_read(l, job, dispatch, n, off, len, &data, &got);
    if (want == NULL) {
        assert_int_equal(rc, 0);
        assert_null(data);
        assert_int_equal(got, 0);
        return;
    }
    assert_int_equal(rc, 1);
    assert_non_null(data);
    assert_int_equal(got, wantlen);
    assert_memory_equal(data, want, wantlen);
    free(data);
}

/* Stored in the transaction that records the ends, read back by range,
 * gone with a rollback and with the job; one of another invocation or
 * dispatch is not mistaken for it. */
static void
test_outputs(void **state)
{
    struct fx *fx = *state;
    static unsigned char a[65536], b[10];
    input_fill(a, sizeof(a), 4);
    input_fill(b, sizeof(b), 5);
    uint64_t job = add_job(fx->l, 1000, 3);

    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_output_put(fx->l, job, 7, 0, a, sizeof(a)), 0);
    ledger_rollback(fx->l);
    output_expect(fx->l, job, 7, 0, 0, UINT64_MAX, NULL, 0);

    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_output_put(fx->l, job, 7, 0, a, sizeof(a)), 0);
    assert_int_equal(ledger_output_put(fx->l, job, 8, 0, b, sizeof(b)), 0);
    assert_int_equal(ledger_output_put(fx->l, job, 9, 0, "", 0), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    reopen(fx);
    output_expect(fx->l, job, 7, 0, 0, UINT64_MAX, a, sizeof(a));
    output_expect(fx->l, job, 7, 0, 1000, 24, a + 1000, 24);
    /* A range past the end is cut short, as storage cuts it. */
    output_expect(fx->l, job, 7, 0, sizeof(a) - 5, 100, a + sizeof(a) - 5, 5);
    output_expect(fx->l, job, 7, 0, sizeof(a) + 5, 100, "", 0);
    output_expect(fx->l, job, 8, 0, 0, UINT64_MAX, b, sizeof(b));
    output_expect(fx->l, job, 9, 0, 0, UINT64_MAX, "", 0); /* empty, but there */
    output_expect(fx->l, job, 7, 1, 0, UINT64_MAX, NULL, 0);
    output_expect(fx->l, job, 10, 0, 0, UINT64_MAX, NULL, 0);
    output_expect(fx->l, job + 1, 7, 0, 0, UINT64_MAX, NULL, 0);

    /* Deleting the job deletes its outputs: the foreign key cascades. */
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof(sql), "PRAGMA foreign_keys=ON; DELETE FROM jobs WHERE id = %llu",
             (unsigned long long)job);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(db_int(fx->path, "SELECT count(*) FROM outputs"), 0);
    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
}

/* A transaction that only read, or whose write changed nothing, is not
 * "changed": burstd commits it without a sync. */
static void
test_txn_changed(void **state)
{
    struct fx *fx = *state;
    uint64_t job = add_job(fx->l, 1000, 2);
    assert_false(ledger_txn_changed(fx->l)); /* no transaction */
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_false(ledger_txn_changed(fx->l));
    struct ledger_job got;
    assert_int_equal(ledger_job_get(fx->l, job, &got), 0);
    ledger_job_free(&got);
    assert_false(ledger_txn_changed(fx->l));
    assert_int_equal(ledger_output_put(fx->l, job, 1, 0, "x", 1), 0);
    assert_true(ledger_txn_changed(fx->l));
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_false(ledger_txn_changed(fx->l));
    /* The same output again is ignored: nothing changed. */
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_output_put(fx->l, job, 1, 0, "y", 1), 0);
    assert_false(ledger_txn_changed(fx->l));
    assert_int_equal(ledger_commit(fx->l), 0);
    output_expect(fx->l, job, 1, 0, 0, UINT64_MAX, "x", 1);
}

/*
 * A version 3 ledger (before outputs could live in it) opens and gains the
 * outputs table in place; its jobs' outputs are all in storage, which a
 * read says.
 */
static void
test_migrate_v3(void **state)
{
    struct fx *fx = *state;
    uint64_t old = add_job(fx->l, 1000, 4);
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "DROP TABLE outputs; PRAGMA user_version = 3", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
    assert_int_equal(db_int(fx->path, "PRAGMA user_version"), 5);
    output_expect(fx->l, old, 1, 0, 0, UINT64_MAX, NULL, 0);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_output_put(fx->l, old, 1, 0, "xy", 2), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    reopen(fx);
    output_expect(fx->l, old, 1, 0, 0, UINT64_MAX, "xy", 2);
}

/* Makes table name of the open database db a WITHOUT ROWID table again, as
 * version 4 had it: same columns and indexes, rows copied. */
static void
make_without_rowid(sqlite3 *db, const char *name)
{
    char sql[4096], *idx[8];
    int nidx = 0;
    sqlite3_stmt *st;
    snprintf(sql, sizeof(sql),
             "SELECT type, sql FROM sqlite_schema WHERE tbl_name = '%s' AND sql IS NOT NULL"
             " ORDER BY type DESC",
             name);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    char *table = NULL;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *type = (const char *)sqlite3_column_text(st, 0);
        char *text = strdup((const char *)sqlite3_column_text(st, 1));
        assert_non_null(text);
        if (strcmp(type, "table") == 0)
            table = text;
        else
            idx[nidx++] = text;
        assert_true(nidx < 8);
    }
    sqlite3_finalize(st);
    assert_non_null(table);
    assert_null(strstr(table, "WITHOUT ROWID"));
    for (int i = 0; i < nidx; i++) {
        /* "CREATE INDEX name ON ...": drop it by its name. */
        char iname[64];
        assert_int_equal(sscanf(idx[i], "CREATE INDEX %63s", iname), 1);
        snprintf(sql, sizeof(sql), "DROP INDEX %s", iname);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    snprintf(sql, sizeof(sql), "ALTER TABLE %s RENAME TO old_%s", name, name);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    snprintf(sql, sizeof(sql), "%s WITHOUT ROWID", table);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    snprintf(sql, sizeof(sql), "INSERT INTO %s SELECT * FROM old_%s; DROP TABLE old_%s",
             name, name, name);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < nidx; i++) {
        assert_int_equal(sqlite3_exec(db, idx[i], NULL, NULL, NULL), SQLITE_OK);
        free(idx[i]);
    }
    free(table);
}

/*
 * A version 4 ledger, whose runs, events and outputs were WITHOUT ROWID
 * tables, opens as version 5 with them rebuilt as rowid tables, and every
 * row, index and output still there: a dispatched task, an ended one with
 * its output, the events.
 */
static void
test_migrate_v4(void **state)
{
    struct fx *fx = *state;
    uint64_t job = add_job(fx->l, 1000, 3);
    uint32_t att;
    dispatch_one(fx->l, job, 0, &att);
    assert_int_equal(ledger_begin(fx->l), 0);
    uint64_t seq;
    assert_int_equal(ledger_event_append(fx->l, job, "ev1", 3, &seq), 0);
    assert_int_equal(ledger_output_put(fx->l, job, 7, 0, "out", 3), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA foreign_keys=ON; BEGIN", NULL, NULL, NULL),
                     SQLITE_OK);
    make_without_rowid(db, "runs");
    make_without_rowid(db, "events");
    make_without_rowid(db, "outputs");
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 4; COMMIT", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(
        db_int(fx->path, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%WITHOUT ROWID%'"
                         " AND name IN ('runs', 'events', 'outputs')"),
        3);

    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
    assert_int_equal(db_int(fx->path, "PRAGMA user_version"), 5);
    assert_int_equal(
        db_int(fx->path, "SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%WITHOUT ROWID%'"
                         " AND name IN ('runs', 'events', 'outputs')"),
        0);
    assert_int_equal(db_int(fx->path, "SELECT count(*) FROM sqlite_schema WHERE type = 'index'"
                                      " AND name IN ('runs_pending', 'runs_retrying',"
                                      " 'runs_inflight')"),
                     3);
    assert_int_equal(db_int(fx->path, "SELECT count(*) FROM sqlite_schema"
                                      " WHERE name LIKE '%_v4'"),
                     0);
    assert_int_equal(task(fx->l, job, 0).state, BURST_TASK_DISPATCHED);
    assert_int_equal(task(fx->l, job, 1).state, BURST_TASK_QUEUED);
    output_expect(fx->l, job, 7, 0, 0, UINT64_MAX, "out", 3);
    struct seen_events s = {0};
    assert_int_equal(ledger_events_since(fx->l, job, 0, 0, events_cb, &s), 0);
    assert_int_equal(s.n, 1);
    assert_memory_equal(s.body[0], "ev1", 3);
    /* The pending index answers as before: tasks 1 and 2 are next. */
    uint32_t idx[4], n = 0;
    assert_int_equal(ledger_tasks_pending(fx->l, job, 3, 0, 4, idx, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(idx[0], 1);
    reopen(fx);
    assert_int_equal(db_int(fx->path, "PRAGMA user_version"), 5);
}

/*
 * A version 2 ledger (before inputs could live in it) opens, gains the
 * inputs and outputs tables in place, keeps its jobs, and takes a new small
 * job.  The version 2 schema is version 5's without those tables (and with
 * its blob tables WITHOUT ROWID, which the upgrade rebuilds either way), so
 * a version 2 file is made by dropping them.
 */
static void
test_migrate_v2(void **state)
{
    struct fx *fx = *state;
    uint64_t old = add_job(fx->l, 1000, 4);
    uint32_t att;
    dispatch_one(fx->l, old, 0, &att);
    ledger_close(fx->l);
    fx->l = NULL;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db, "DROP TABLE inputs; DROP TABLE outputs; PRAGMA user_version = 2",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(db_int(fx->path, "PRAGMA user_version"), 2);

    assert_int_equal(ledger_open(fx->path, &fx->l), 0);
    assert_int_equal(db_int(fx->path, "PRAGMA user_version"), 5);
    assert_int_equal(
        db_int(fx->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'inputs'"), 1);
    assert_int_equal(
        db_int(fx->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'outputs'"), 1);
    struct ledger_job got;
    assert_int_equal(ledger_job_get(fx->l, old, &got), 0);
    assert_int_equal(got.total, 4);
    ledger_job_free(&got);
    assert_int_equal(task(fx->l, old, 0).state, BURST_TASK_DISPATCHED);
    input_expect(fx->l, old, NULL, 0); /* its inputs are in storage */

    static unsigned char in[300];
    input_fill(in, sizeof(in), 3);
    struct ledger_job j;
    job_fill(&j, 1000, 2);
    assert_int_equal(ledger_begin(fx->l), 0);
    assert_int_equal(ledger_job_insert(fx->l, &j, 2), 0);
    assert_int_equal(ledger_input_put(fx->l, j.id, in, sizeof(in)), 0);
    assert_int_equal(ledger_commit(fx->l), 0);
    assert_true(j.id > old);
    reopen(fx); /* version 5 now: opens as it is */
    input_expect(fx->l, j.id, in, sizeof(in));
    assert_int_equal(task(fx->l, old, 0).state, BURST_TASK_DISPATCHED);
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_dispatch_monotonic),
        T(test_open_mode),
        T(test_reopen_persists),
        T(test_transactions),
        T(test_reader_does_not_block),
        T(test_job_roundtrip),
        T(test_reserve_job_id),
        T(test_job_ids_bound),
        T(test_job_set_state),
        T(test_counts),
        T(test_jobs_foreach),
        T(test_nested_walk),
        T(test_pending_order_and_limit),
        T(test_retrying),
        T(test_dispatch_attempts),
        T(test_reduce_task_apart),
        T(test_end_exactly_once),
        T(test_end_keeps_last_output_and_reason),
        T(test_cancel_pending),
        T(test_inflight),
        T(test_tasks_foreach),
        T(test_events),
        T(test_quota),
        T(test_next_dispatch_monotonic),
        T(test_no_scratch_btrees),
        T(test_unknown_job),
        T(test_fault_readonly),
        T(test_fault_garbage_file),
        T(test_commit_reaches_wal),
        T(test_fault_damaged_pages),
        T(test_fault_schema),
        T(test_fault_full),
        T(test_fault_commit_fails),
        T(test_large_insert),
        T(test_runs_chunk),
        T(test_runs_fail_in_middle),
        T(test_runs_retry_neighbours),
        T(test_runs_split_keeps_outputs),
        T(test_runs_cancel_partly_dispatched),
        T(test_runs_reconcile),
        T(test_fault_old_schema),
        T(test_inputs),
        T(test_migrate_v2),
        T(test_outputs),
        T(test_txn_changed),
        T(test_migrate_v3),
        T(test_migrate_v4),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
