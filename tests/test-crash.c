/*
 * tests/test-crash.c - burstd killed with SIGKILL at any moment.
 *
 * Each test runs a real burstd on its own temporary socket and state dir,
 * kills it with SIGKILL while a job runs, and starts it again on the same
 * socket and state dir, as a supervisor would.  What must hold afterwards
 * (README.md, "Guarantees"): every acknowledged job runs to its end, its
 * results are complete and byte-for-byte right in task order, and each
 * task's success is recorded exactly once (counted in the job's replayed
 * event log), however many times it ran.  test_orphans_reaped checks that
 * what a killed daemon's workers were running does not outlive the restart
 * (daemon/compute_local.c).
 *
 * Kills are placed by progress (so many tasks done) plus a pseudo-random
 * delay from a fixed seed, never by how fast the machine is; every wait is
 * a poll with a generous safety limit.  KEEP_TEST_DIR=1 keeps the state
 * dirs and daemon logs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <uv.h>

#include "burst.h"
#include "testd.h"
#include "compute.h"

/* Safety nets only: nothing here waits this long on a working daemon. */
#define SAFETY_MS (300 * 1000)
#define POLL_MS 20

struct lines {
    char *blob; /* every input line, concatenated */
    size_t len;
    char **upper;    /* upper[i]: line i upper-cased, what `tr a-z A-Z` gives */
    char *all_upper; /* upper[0 .. n) concatenated */
    uint32_t n;
};

/* A process, named by pid and start time so that a recycled pid is not it. */
struct proc {
    pid_t pid;
    unsigned long long start;
    char comm[32];
};

struct daemon {
    struct testd t;  /* the daemon, its directory, socket, state and log */
    unsigned kills;  /* SIGKILLs so far */
    bool passed;     /* set at the end of a test: keep quiet in teardown */
    /* What a test allocates, here so that teardown frees it after a
     * failed assertion too. */
    struct lines lines;
    struct proc *ps, *rest;
};

static uint32_t rnd_state = 0x9e3779b9u;

/* xorshift32 from a fixed seed: the same "random" kill moments every run. */
static uint32_t
rnd(void)
{
    uint32_t x = rnd_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rnd_state = x;
}

/* ---- the daemon ---- */

static void
daemon_init(struct daemon *d, const char *config)
{
    memset(d, 0, sizeof(*d));
    testd_init(&d->t, "crash", config);
}

/* Starts burstd on d's socket and state dir and waits until it answers. */
static void
daemon_start(struct daemon *d)
{
    testd_start(&d->t, NULL);
}

static void
daemon_kill9(struct daemon *d)
{
    testd_kill9(&d->t);
    d->kills++;
}

static void
daemon_restart(struct daemon *d)
{
    daemon_kill9(d);
    daemon_start(d);
}

/* SIGTERM: the daemon must exit 0 by itself. */
static void
daemon_stop(struct daemon *d)
{
    testd_stop(&d->t);
}

static void
daemon_cleanup(struct daemon *d)
{
    const char *keep = getenv("KEEP_TEST_DIR");
    if (keep != NULL && strcmp(keep, "1") == 0) {
        if (d->t.pid > 0) {
            kill(d->t.pid, SIGKILL);
            waitpid(d->t.pid, NULL, 0);
            d->t.pid = 0;
        }
        return;
    }
    testd_cleanup(&d->t, d->passed);
}

static burst_client *
client_open(const struct daemon *d)
{
    burst_client *c = NULL;
    assert_int_equal(burst_connect(d->t.sock, &c), 0);
    return c;
}

/* The job's status through a fresh connection. */
static void
job_status(const struct daemon *d, uint64_t job, burst_job_info *info)
{
    burst_client *c = client_open(d);
    int rc = burst_status(c, job, info);
    if (rc != 0)
        fail_msg("status of job %llu: %s (%s)", (unsigned long long)job,
                 burst_strerror(rc), burst_last_error(c));
    burst_close(c);
}

/* Polls until at least n tasks of the job succeeded. */
static void
wait_succeeded(const struct daemon *d, uint64_t job, uint32_t n)
{
    burst_job_info info;
    for (int64_t t0 = testd_now_ms(); testd_now_ms() - t0 < SAFETY_MS; testd_sleep_ms(POLL_MS)) {
        job_status(d, job, &info);
        if (info.counts[BURST_TASK_SUCCEEDED] >= n)
            return;
        if (burst_job_state_is_final(info.state))
            fail_msg("job %llu ended %s with %u tasks succeeded, before %u",
                     (unsigned long long)job, burst_job_state_name(info.state),
                     info.counts[BURST_TASK_SUCCEEDED], n);
    }
    fail_msg("job %llu: fewer than %u tasks succeeded in time", (unsigned long long)job,
             n);
}

/*
 * Polls until the job ends; it must have succeeded.  Polling rather than
 * burst_wait, so that a job that never ends fails the test: when its state
 * and counts have not moved for STALL_MS (a safety net far beyond any
 * single step of these jobs), or after SAFETY_MS in all.
 */
#define STALL_MS (60 * 1000)
static void
wait_job_end(const struct daemon *d, uint64_t job, burst_job_info *out)
{
    burst_job_info info, last;
    memset(&last, 0, sizeof(last));
    last.state = -1;
    int64_t t0 = testd_now_ms(), moved = t0;
    for (;; testd_sleep_ms(POLL_MS)) {
        job_status(d, job, &info);
        if (burst_job_state_is_final(info.state))
            break;
        if (info.state != last.state ||
            memcmp(info.counts, last.counts, sizeof(info.counts)) != 0) {
            last = info;
            moved = testd_now_ms();
        }
        if (testd_now_ms() - moved > STALL_MS || testd_now_ms() - t0 > SAFETY_MS) {
            char counts[256] = "";
            size_t off = 0;
            for (int k = 0; k < BURST_TASK_NSTATES; k++)
                off += (size_t)snprintf(counts + off, sizeof(counts) - off, " %s=%u",
                                        burst_task_state_name(k), info.counts[k]);
            fail_msg("job %llu stuck %s:%s", (unsigned long long)job,
                     burst_job_state_name(info.state), counts);
        }
    }
    *out = info;
}

static void
wait_job_succeeded(const struct daemon *d, uint64_t job, uint32_t total)
{
    burst_job_info info;
    wait_job_end(d, job, &info);
    if (info.state != BURST_JOB_SUCCEEDED)
        fail_msg("job %llu ended %s: %s", (unsigned long long)job,
                 burst_job_state_name(info.state), info.error);
    assert_int_equal(info.total, total);
    assert_true(info.counts[BURST_TASK_SUCCEEDED] >= total);
}

/* ---- checks on an ended job ---- */

struct results_check {
    const char *const *want; /* want[i]: the result of task base + i */
    uint32_t n;
    uint32_t base; /* 0, or a map_reduce's total: its reducer's index */
    uint32_t next; /* results seen so far */
};

static int
on_result(void *arg, uint32_t index, const void *data, size_t len)
{
    struct results_check *rc = arg;
    if (rc->next >= rc->n || index != rc->base + rc->next)
        fail_msg("result for task %u, expected task %u", index, rc->base + rc->next);
    if (data == NULL)
        fail_msg("task %u has no result", index);
    const char *w = rc->want[rc->next];
    if (len != strlen(w) || memcmp(data, w, len) != 0)
        fail_msg("task %u: result '%.*s', expected '%s'", index, (int)len,
                 (const char *)data, w);
    rc->next++;
    return 0;
}

/* burst_results gives exactly want[0 .. n), for tasks base .. base + n in
 * order. */
static void
check_results(const struct daemon *d, uint64_t job, const char *const *want, uint32_t n,
              uint32_t base)
{
    burst_client *c = client_open(d);
    struct results_check rc = {want, n, base, 0};
    int r = burst_results(c, job, on_result, &rc);
    if (r != 0)
        fail_msg("results of job %llu: %s (%s)", (unsigned long long)job,
                 burst_strerror(r), burst_last_error(c));
    assert_int_equal(rc.next, n);
    burst_close(c);
}

/* Every task succeeded; returns how many ran more than once. */
static uint32_t
check_tasks(const struct daemon *d, uint64_t job, uint32_t n)
{
    burst_client *c = client_open(d);
    burst_task_info *t = NULL;
    size_t nt = 0;
    assert_int_equal(burst_tasks(c, job, -1, &t, &nt), 0);
    assert_int_equal(nt, n);
    uint32_t again = 0;
    for (size_t i = 0; i < nt; i++) {
        if (t[i].state != BURST_TASK_SUCCEEDED)
            fail_msg("task %u is %s (%s)", t[i].index, burst_task_state_name(t[i].state),
                     t[i].reason);
        assert_true(t[i].attempts >= 1);
        again += t[i].attempts > 1;
    }
    free(t);
    burst_close(c);
    return again;
}

struct event_count {
    uint32_t n;
    uint32_t *succeeded; /* per task index: "succeeded" events */
    uint64_t last_seq;
    int final; /* the job's final state, -1 until seen */
};

static void
on_event(void *arg, const burst_event *ev)
{
    struct event_count *ec = arg;
    /* Changes recorded together share an entry, and so a sequence number. */
    if (ev->seq < ec->last_seq)
        fail_msg("event %llu after %llu", (unsigned long long)ev->seq,
                 (unsigned long long)ec->last_seq);
    ec->last_seq = ev->seq;
    if (ev->type == BURST_EV_JOB && burst_job_state_is_final(ev->job_state)) {
        assert_int_equal(ec->final, -1); /* the job ends once */
        ec->final = ev->job_state;
    }
    if (ev->type == BURST_EV_TASK && ev->task_state == BURST_TASK_SUCCEEDED) {
        assert_true(ev->task < ec->n);
        ec->succeeded[ev->task]++;
    }
}

/*
 * Replays the job's whole event log: every task's success is in it exactly
 * once, and so is the job's end.  n counts the reducer of a map_reduce.
 */
static void
check_events_once(const struct daemon *d, uint64_t job, uint32_t n)
{
    burst_client *c = client_open(d);
    struct event_count ec = {.n = n, .final = -1};
    ec.succeeded = calloc(n, sizeof(*ec.succeeded));
    assert_non_null(ec.succeeded);
    assert_int_equal(burst_subscribe(c, job, 0, on_event, &ec), 0);
    for (int64_t t0 = testd_now_ms(); ec.final < 0 && testd_now_ms() - t0 < SAFETY_MS;) {
        if (burst_pending(c) == 0) {
            struct pollfd p = {burst_fd(c), POLLIN, 0};
            assert_true(poll(&p, 1, 1000) >= 0);
        }
        assert_true(burst_dispatch(c) >= 0);
    }
    assert_int_equal(ec.final, BURST_JOB_SUCCEEDED);
    for (uint32_t i = 0; i < n; i++) {
        if (ec.succeeded[i] != 1)
            fail_msg("task %u: %u 'succeeded' events, expected exactly 1", i,
                     ec.succeeded[i]);
    }
    free(ec.succeeded);
    burst_close(c);
}

/* ---- inputs ---- */

#define LINE_MAX_LEN 256 /* of a line of lines_make, newline included */

static void
lines_make(struct lines *l, uint32_t n, const char *word)
{
    l->n = n;
    l->blob = malloc((size_t)n * LINE_MAX_LEN + 1);
    l->all_upper = malloc((size_t)n * LINE_MAX_LEN + 1);
    l->upper = calloc(n, sizeof(*l->upper));
    assert_true(l->blob != NULL && l->all_upper != NULL && l->upper != NULL);
    l->len = 0;
    for (uint32_t i = 0; i < n; i++) {
        char line[LINE_MAX_LEN];
        int len = snprintf(line, sizeof(line), "%s %05u\n", word, i);
        assert_true(len > 0 && (size_t)len < sizeof(line));
        memcpy(l->blob + l->len, line, (size_t)len);
        for (int k = 0; k < len; k++) {
            if (line[k] >= 'a' && line[k] <= 'z')
                line[k] = (char)(line[k] - 'a' + 'A');
        }
        memcpy(l->all_upper + l->len, line, (size_t)len);
        l->len += (size_t)len;
        l->upper[i] = strdup(line);
        assert_non_null(l->upper[i]);
    }
    l->blob[l->len] = '\0';
    l->all_upper[l->len] = '\0';
}

static void
lines_free(struct lines *l)
{
    for (uint32_t i = 0; l->upper != NULL && i < l->n; i++)
        free(l->upper[i]);
    free(l->upper);
    free(l->blob);
    free(l->all_upper);
    memset(l, 0, sizeof(*l));
}

static uint64_t
submit_map(const struct daemon *d, const char *cmd, const struct lines *l,
           uint32_t chunksize)
{
    burst_client *c = client_open(d);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = chunksize;
    opts.retries = 0; /* a crash must never count as a task's failure */
    uint64_t job = 0;
    int rc = burst_submit_map_lines(c, &fn, l->blob, l->len, &opts, &job);
    if (rc != 0)
        fail_msg("submit: %s (%s)", burst_strerror(rc), burst_last_error(c));
    burst_close(c);
    return job;
}

/* ---- tests ---- */

static int
setup(void **state)
{
    struct daemon *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -1;
    *state = d;
    return 0;
}

static size_t procs_of(const struct daemon *d, struct proc *out, size_t max);
static void proc_kill_if_running(const struct proc *p);

static int
teardown(void **state)
{
    struct daemon *d = *state;
    if (d->t.dir[0] != '\0' && !d->passed) {
        /* A test that failed half-way may leave a 300 s sleep behind. */
        if (d->t.pid > 0) {
            kill(d->t.pid, SIGKILL);
            waitpid(d->t.pid, NULL, 0);
            d->t.pid = 0;
        }
        struct proc left[64];
        size_t n = procs_of(d, left, 64);
        for (size_t i = 0; i < n; i++)
            proc_kill_if_running(&left[i]);
    }
    daemon_cleanup(d);
    lines_free(&d->lines);
    free(d->ps);
    free(d->rest);
    free(d);
    return 0;
}

/*
 * A job of 1200 tasks in 150 invocations; burstd is SIGKILLed seven times
 * while it runs: four times once a share of the tasks is done, three times
 * right after a restart (while it reconciles), each after a pseudo-random
 * delay.  The job must end succeeded with every result right, once.
 */
static void
test_kill9_many_times(void **state)
{
    struct daemon *d = *state;
    enum { NTASKS = 1200, NKILLS = 7 };
    daemon_init(d, "quota = 4\n");
    daemon_start(d);
    struct lines *l = &d->lines;
    lines_make(l, NTASKS, "line");
    uint64_t job = submit_map(d, "sleep 0.01; tr a-z A-Z", l, 8);

    for (int k = 0; k < NKILLS; k++) {
        if (k % 2 == 0)
            wait_succeeded(d, job, (uint32_t)(NTASKS * (k + 1) / 10));
        testd_sleep_ms((int)(rnd() % 150));
        burst_job_info info;
        job_status(d, job, &info);
        /* Still running: this kill lands in the middle of the job. */
        assert_false(burst_job_state_is_final(info.state));
        print_message("kill %d: %u of %u tasks succeeded\n", k + 1,
                      info.counts[BURST_TASK_SUCCEEDED], NTASKS);
        daemon_restart(d);
    }
    assert_int_equal(d->kills, NKILLS);

    wait_job_succeeded(d, job, NTASKS);
    check_results(d, job, (const char *const *)l->upper, NTASKS, 0);
    uint32_t again = check_tasks(d, job, NTASKS);
    check_events_once(d, job, NTASKS);
    print_message("%u tasks ran more than once\n", again);
    daemon_stop(d);
    d->passed = true;
}

/*
 * SIGKILL the moment a submission is acknowledged, and again the moment
 * the restarted daemon answers: the job was acknowledged, so it runs.
 */
static void
test_kill9_after_ack(void **state)
{
    struct daemon *d = *state;
    enum { NTASKS = 300 };
    daemon_init(d, "quota = 4\n");
    daemon_start(d);
    struct lines *l = &d->lines;
    lines_make(l, NTASKS, "ack");
    uint64_t job = submit_map(d, "tr a-z A-Z", l, 5);
    daemon_restart(d); /* no delay: right after the acknowledgement */
    daemon_restart(d); /* and right after the restart */

    wait_job_succeeded(d, job, NTASKS);
    check_results(d, job, (const char *const *)l->upper, NTASKS, 0);
    check_tasks(d, job, NTASKS);
    check_events_once(d, job, NTASKS);
    daemon_stop(d);
    d->passed = true;
}

/* ---- inputs of small jobs, kept in the ledger until dispatch ---- */

/* Whether jobs/<job>/in is in d's storage. */
static bool
input_in_storage(const struct daemon *d, uint64_t job)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/storage/jobs/%llu/in", d->t.state,
             (unsigned long long)job);
    return access(path, F_OK) == 0;
}

/* Submits a job of n tasks that each wait for file gate to appear: with
 * quota n, nothing else runs until then.  Returns once all of them run. */
static uint64_t
submit_blocker(const struct daemon *d, const char *gate, uint32_t n)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "while [ ! -e %s ]; do sleep 0.01; done; cat", gate);
    burst_client *c = client_open(d);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job = 0;
    char lines[64] = "";
    for (uint32_t i = 0; i < n && i < 30; i++)
        strcat(lines, "b\n");
    assert_int_equal(burst_submit_map_lines(c, &fn, lines, strlen(lines), &opts, &job), 0);
    burst_close(c);
    for (int64_t t0 = testd_now_ms();; testd_sleep_ms(POLL_MS)) {
        burst_job_info info;
        job_status(d, job, &info);
        if (info.counts[BURST_TASK_DISPATCHED] + info.counts[BURST_TASK_RUNNING] == n)
            return job;
        if (testd_now_ms() - t0 > SAFETY_MS)
            fail_msg("the blocking job did not start");
    }
}

static void
open_gate(const char *gate)
{
    int fd = open(gate, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
}

/*
 * A small job is acknowledged while every slot of the quota is taken, so
 * it is not dispatched: its input is in the ledger only (no jobs/<id>/in).
 * burstd is SIGKILLed and restarted: the job runs with its input intact,
 * handed to each worker from the ledger by the new process, and still
 * never written to storage.  Quota 2 and chunks of one task.
 */
static void
test_kill9_small_job_queued(void **state)
{
    struct daemon *d = *state;
    enum { NTASKS = 40 };
    daemon_init(d, "quota = 2\n");
    daemon_start(d);
    char gate[160];
    snprintf(gate, sizeof(gate), "%s/go", d->t.dir);
    uint64_t blocker = submit_blocker(d, gate, 2);

    struct lines *l = &d->lines;
    lines_make(l, NTASKS, "small");
    uint64_t job = submit_map(d, "tr a-z A-Z", l, 1);
    burst_job_info info;
    job_status(d, job, &info);
    assert_int_equal(info.state, BURST_JOB_QUEUED);
    assert_false(input_in_storage(d, job)); /* acknowledged from the ledger alone */
    daemon_kill9(d);
    assert_false(input_in_storage(d, job));
    daemon_start(d);
    open_gate(gate);

    wait_job_succeeded(d, blocker, 2);
    wait_job_succeeded(d, job, NTASKS);
    assert_false(input_in_storage(d, job));
    check_results(d, job, (const char *const *)l->upper, NTASKS, 0);
    check_tasks(d, job, NTASKS);
    check_events_once(d, job, NTASKS);
    daemon_stop(d);
    d->passed = true;
}

/* Runs sql on d's ledger (burstd stopped). */
static void
ledger_sql(const struct daemon *d, const char *sql)
{
    char path[192];
    snprintf(path, sizeof(path), "%s/ledger.db", d->t.state);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* Writes every input the ledger holds to storage (jobs/<id>/in), where a
 * version 2 burstd kept them (burstd stopped). */
static void
ledger_inputs_to_storage(const struct daemon *d)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/ledger.db", d->t.state);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT job, body FROM inputs", -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        unsigned long long job = (unsigned long long)sqlite3_column_int64(st, 0);
        snprintf(path, sizeof(path), "%s/storage/jobs/%llu", d->t.state, job);
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "mkdir -p %s", path);
        assert_int_equal(system(cmd), 0);
        strcat(path, "/in");
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        size_t n = (size_t)sqlite3_column_bytes(st, 1);
        assert_int_equal(fwrite(sqlite3_column_blob(st, 1), 1, n, f), n);
        assert_int_equal(fclose(f), 0);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/*
 * A ledger of schema version 2 (before inputs and outputs could live in
 * it; version 5 is version 2 plus the inputs and outputs tables, and
 * rowid tables where version 2 had WITHOUT ROWID ones, which the upgrade
 * rebuilds either way, so dropping the two tables makes one) holding a queued job whose inputs are in
 * storage: burstd opens it, upgrades it in place, runs that job and then a
 * new small one.
 */
static void
test_ledger_v2_upgrade(void **state)
{
    struct daemon *d = *state;
    enum { NTASKS = 6 };
    daemon_init(d, "quota = 1\n");
    daemon_start(d);
    char gate[160];
    snprintf(gate, sizeof(gate), "%s/go", d->t.dir);
    uint64_t blocker = submit_blocker(d, gate, 1);
    /* Over the limit (320 lines of 208 bytes, 8 more each in the index):
     * its inputs go to storage, as every version 2 job's. */
    enum { NBIG = 320 };
    char word[202];
    memset(word, 'v', sizeof(word) - 1);
    word[sizeof(word) - 1] = '\0';
    struct lines *l = &d->lines;
    lines_make(l, NBIG, word);
    assert_true(l->len + (NBIG + 1) * 8 + 16 > 65536);
    uint64_t old = submit_map(d, "tr a-z A-Z", l, 20);
    assert_true(input_in_storage(d, old));
    daemon_kill9(d);
    /* The blocker's input is in the ledger (small jobs' inputs never reach
     * storage now); a version 2 burstd had it in storage. */
    ledger_inputs_to_storage(d);
    ledger_sql(d, "DROP TABLE inputs; DROP TABLE outputs; PRAGMA user_version = 2;");
    daemon_start(d);
    open_gate(gate);
    wait_job_succeeded(d, blocker, 1);
    wait_job_succeeded(d, old, NBIG);
    check_results(d, old, (const char *const *)l->upper, NBIG, 0);
    lines_free(l);

    lines_make(l, NTASKS, "version three");
    uint64_t job = submit_map(d, "tr a-z A-Z", l, 1);
    wait_job_succeeded(d, job, NTASKS);
    check_results(d, job, (const char *const *)l->upper, NTASKS, 0);
    daemon_stop(d);
    d->passed = true;
}

/* How many files in dir start with prefix; *pid gets the number after the
 * prefix of one of them. */
static int
count_files(const char *dir, const char *prefix, pid_t *pid)
{
    DIR *dh = opendir(dir);
    assert_non_null(dh);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        n++;
        if (pid != NULL)
            *pid = (pid_t)atol(de->d_name + strlen(prefix));
    }
    closedir(dh);
    return n;
}

/* What /proc/<pid>/stat says: state (0 when gone) and start time. */
static char
proc_state(pid_t pid, unsigned long long *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    char st = 0;
    unsigned long long s = 0;
    if (p == NULL ||
        sscanf(p + 2,
               "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
               "%*d %llu",
               &st, &s) != 2)
        return 0;
    if (start != NULL)
        *start = s;
    return st;
}

/* Whether it still runs code: gone, a zombie, or a recycled pid are not. */
static bool
proc_running(const struct proc *p)
{
    unsigned long long start = 0;
    char st = proc_state(p->pid, &start);
    return st != 0 && st != 'Z' && st != 'X' && start == p->start;
}

static void
proc_kill_if_running(const struct proc *p)
{
    if (proc_running(p))
        kill(p->pid, SIGKILL);
}

/* Whether the environment pid started with has the entry ("NAME=value"). */
static bool
proc_env_has(pid_t pid, const char *entry)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return false;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    ssize_t n;
    while (len < cap && (n = read(fd, buf + len, cap - len)) > 0)
        len += (size_t)n;
    close(fd);
    bool found = false;
    size_t elen = strlen(entry);
    for (size_t off = 0; off < len && !found;) {
        const char *e = buf + off;
        size_t l = strnlen(e, len - off);
        found = l == elen && memcmp(e, entry, elen) == 0;
        off += l + 1;
    }
    free(buf);
    return found;
}

/* Every running process started for d's storage (workers, tasks and what
 * the tasks started): they all carry its BURST_STORAGE. */
static size_t
procs_of(const struct daemon *d, struct proc *out, size_t max)
{
    char entry[256];
    snprintf(entry, sizeof(entry), "BURST_STORAGE=file:%s/storage", d->t.state);
    DIR *dh = opendir("/proc");
    assert_non_null(dh);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(dh)) != NULL && n < max) {
        if (de->d_name[0] < '1' || de->d_name[0] > '9')
            continue;
        struct proc p = {.pid = (pid_t)atol(de->d_name)};
        char st = proc_state(p.pid, &p.start);
        if (st == 0 || st == 'Z' || st == 'X' || !proc_env_has(p.pid, entry))
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)p.pid);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(p.comm, sizeof(p.comm), f) != NULL)
                p.comm[strcspn(p.comm, "\n")] = '\0';
            fclose(f);
        }
        out[n++] = p;
    }
    closedir(dh);
    return n;
}

/* Polls until none of ps[0 .. n) runs code any more. */
static void
wait_procs_gone(const struct proc *ps, size_t n, const char *what)
{
    for (int64_t t0 = testd_now_ms(); testd_now_ms() - t0 < SAFETY_MS / 5; testd_sleep_ms(POLL_MS)) {
        size_t alive = 0;
        for (size_t i = 0; i < n; i++)
            alive += proc_running(&ps[i]);
        if (alive == 0)
            return;
    }
    for (size_t i = 0; i < n; i++) {
        if (proc_running(&ps[i]))
            fail_msg("%s: pid %d (%s) still runs", what, (int)ps[i].pid, ps[i].comm);
    }
}

/*
 * Waits until ntasks tasks of the orphan test run at once, each with its
 * worker, its in-group sleep and its escaped sleep, and nfiles escaped
 * pids have been written (the tasks so far, earlier runs included).
 * Returns how many processes of d it found, in ps.
 */
static size_t
wait_tasks_running(const struct daemon *d, size_t ntasks, int nfiles, struct proc *ps,
                   size_t max)
{
    for (int64_t t0 = testd_now_ms();; testd_sleep_ms(POLL_MS)) {
        if (testd_now_ms() - t0 > SAFETY_MS)
            fail_msg("the tasks did not all start");
        if (count_files(d->t.dir, "escaped.", NULL) < nfiles)
            continue;
        size_t np = procs_of(d, ps, max), nworkers = 0, nsleeps = 0;
        for (size_t i = 0; i < np; i++) {
            nworkers += strcmp(ps[i].comm, "burst-worker") == 0;
            nsleeps += strcmp(ps[i].comm, "sleep") == 0;
        }
        if (nworkers == ntasks && nsleeps == 2 * ntasks)
            return np;
    }
}

/*
 * A map_reduce whose reducer is held at a gate until burstd has been
 * SIGKILLed: the kill lands while the reducer runs, for sure.  The
 * reducer must run again after the restart and its output be the result.
 */
static void
test_kill9_during_reduce(void **state)
{
    struct daemon *d = *state;
    enum { NTASKS = 200 };
    daemon_init(d, "quota = 4\n");
    daemon_start(d);
    struct lines *l = &d->lines;
    lines_make(l, NTASKS, "reduce me");
    char reduce_cmd[512];
    snprintf(reduce_cmd, sizeof(reduce_cmd),
             "touch %s/reducing.$$; while [ ! -e %s/go ]; do sleep 0.02; done; cat",
             d->t.dir, d->t.dir);
    burst_client *c = client_open(d);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    burst_fn red = {.kind = BURST_FN_EXEC, .cmd = reduce_cmd};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 20;
    uint64_t job = 0;
    int rc = burst_submit_map_reduce_lines(c, &fn, &red, l->blob, l->len, &opts, &job);
    if (rc != 0)
        fail_msg("submit: %s (%s)", burst_strerror(rc), burst_last_error(c));
    burst_close(c);

    pid_t first = 0;
    for (int64_t t0 = testd_now_ms(); count_files(d->t.dir, "reducing.", &first) == 0;
         testd_sleep_ms(POLL_MS)) {
        if (testd_now_ms() - t0 > SAFETY_MS)
            fail_msg("the reducer never started");
    }
    struct proc reducer = {.pid = first};
    assert_true(proc_state(first, &reducer.start) != 0);
    daemon_kill9(d);
    char go[128];
    snprintf(go, sizeof(go), "%s/go", d->t.dir);
    int fd = open(go, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    daemon_start(d);

    wait_job_succeeded(d, job, NTASKS);
    const char *want[] = {l->all_upper};
    check_results(d, job, want, 1, NTASKS);
    check_events_once(d, job, NTASKS + 1);
    /* The reducer ran again; the one the kill interrupted is gone. */
    assert_true(count_files(d->t.dir, "reducing.", NULL) >= 2);
    wait_procs_gone(&reducer, 1, "the interrupted reducer");
    daemon_stop(d);
    d->passed = true;
}

/*
 * Nothing outlives a killed burstd's workers.  Each task leaves a `sleep
 * 300` in its process group and starts another in a process group of its
 * own (perl's setpgrp), out of reach of the worker's group kill.  After
 * the SIGKILL, the workers stop by themselves and take their task groups
 * along; the escaped sleeps are still there until the restart, which
 * reaps them before it goes on.  A cancel afterwards leaves nothing either.
 */
static void
test_orphans_reaped(void **state)
{
    struct daemon *d = *state;
    enum { NTASKS = 4, MAXP = 256 };
    daemon_init(d, "quota = 4\n");
    daemon_start(d);
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "perl -e 'setpgrp(0, 0); exec qw(sleep 300)' & echo $! > $(mktemp "
             "%s/escaped.XXXXXX); "
             "sleep 300; echo done",
             d->t.dir);
    struct lines *l = &d->lines;
    lines_make(l, NTASKS, "orphan");
    uint64_t job = submit_map(d, cmd, l, 1);

    struct proc *ps = d->ps = calloc(MAXP, sizeof(*ps));
    assert_non_null(ps);
    size_t np = wait_tasks_running(d, NTASKS, NTASKS, ps, MAXP);
    /* The escaped ones, by the pids the tasks wrote. */
    struct proc escaped[NTASKS];
    size_t ne = 0;
    DIR *dh = opendir(d->t.dir);
    assert_non_null(dh);
    struct dirent *de;
    while ((de = readdir(dh)) != NULL) {
        if (strncmp(de->d_name, "escaped.", 8) != 0)
            continue;
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", d->t.dir, de->d_name);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        int pid = 0;
        assert_int_equal(fscanf(f, "%d", &pid), 1);
        fclose(f);
        assert_true(ne < NTASKS);
        escaped[ne].pid = pid;
        assert_true(proc_state(pid, &escaped[ne].start) != 0);
        ne++;
    }
    closedir(dh);
    assert_int_equal(ne, NTASKS);
    /* The rest: workers, their shells and in-group sleeps. */
    struct proc *rest = d->rest = calloc(MAXP, sizeof(*rest));
    assert_non_null(rest);
    size_t nr = 0;
    for (size_t i = 0; i < np; i++) {
        bool esc = false;
        for (size_t k = 0; k < ne; k++)
            esc = esc || ps[i].pid == escaped[k].pid;
        if (!esc)
            rest[nr++] = ps[i];
    }
    assert_true(nr >= 3 * NTASKS);

    daemon_kill9(d);
    /* The workers stop on their own, their task groups with them. */
    wait_procs_gone(rest, nr, "after the SIGKILL, a worker or task");
    /* Only the restart can reach what left its task's process group. */
    for (size_t k = 0; k < ne; k++)
        assert_true(proc_running(&escaped[k]));
    daemon_start(d);
    for (size_t k = 0; k < ne; k++) {
        if (proc_running(&escaped[k]))
            fail_msg("the restart left pid %d of the killed daemon's tasks running",
                     (int)escaped[k].pid);
    }

    /* The restarted daemon runs the tasks again; a cancel ends it all,
     * the escaped processes of the new run included. */
    np = wait_tasks_running(d, NTASKS, 2 * NTASKS, ps, MAXP);
    burst_client *c = client_open(d);
    assert_int_equal(burst_cancel(c, job), 0);
    burst_close(c);
    burst_job_info info;
    wait_job_end(d, job, &info);
    assert_int_equal(info.state, BURST_JOB_CANCELLED);
    wait_procs_gone(ps, np, "after the cancel, a process of the job");

    daemon_stop(d);
    d->passed = true;
}

/* ---- compute_local_track on its own: records and what they may kill ---- */

/* Forks a process in a session of its own, with env as its environment:
 * it runs `sleep 300`, or first starts that sleep in a process group of
 * its own and exits (leader_exits): a worker that is gone, and what its
 * task left behind.  Returns the session leader's pid; *straggler gets the
 * sleep's pid when the leader exits. */
static pid_t
spawn_session(char *const env[], bool leader_exits, pid_t *straggler)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        setsid();
        pid_t s = getpid();
        if (leader_exits) {
            s = fork();
            if (s == 0) {
                setpgid(0, 0);
                execle("/bin/sleep", "sleep", "300", (char *)NULL, env);
                _exit(127);
            }
        }
        if (write(p[1], &s, sizeof(s)) != sizeof(s))
            _exit(126);
        close(p[1]);
        if (leader_exits)
            _exit(0);
        execle("/bin/sleep", "sleep", "300", (char *)NULL, env);
        _exit(127);
    }
    close(p[1]);
    pid_t s = 0;
    assert_int_equal(read(p[0], &s, sizeof(s)), sizeof(s));
    close(p[0]);
    if (straggler != NULL)
        *straggler = s;
    if (leader_exits)
        assert_int_equal(waitpid(pid, NULL, 0), pid); /* the "worker" is gone */
    /* Wait for the exec, so that the environment checked is the new one. */
    for (int64_t t0 = testd_now_ms(); testd_now_ms() - t0 < SAFETY_MS; testd_sleep_ms(5)) {
        char path[64], comm[32] = "";
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)s);
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            if (fgets(comm, sizeof(comm), f) == NULL)
                comm[0] = '\0';
            fclose(f);
        }
        if (strncmp(comm, "sleep", 5) == 0)
            break;
    }
    return pid;
}

static void
write_record(const char *dir, pid_t wpid, unsigned long long wstart, pid_t dpid,
             unsigned long long dstart, const char *boot, const char *spec)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%d", dir, (int)wpid);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "burst-worker-record 1 %d %llu %d %llu %s %s\n", (int)wpid, wstart,
            (int)dpid, dstart, boot, spec);
    fclose(f);
}

static bool
file_exists(const char *dir, const char *name)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static void
on_compute_closed(struct compute *c)
{
    *(int *)c->data = 1;
}

static void
compute_close(uv_loop_t *loop, struct compute *c)
{
    int closed = 0;
    c->data = &closed;
    c->ops->close(c, on_compute_closed);
    while (!closed)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(uv_loop_close(loop), 0);
}

/*
 * At start-up, a record's session is swept only of what proves it is the
 * worker's: a leftover whose worker is gone, or a worker still running,
 * are killed; a process with the recorded pid but not the worker's
 * environment (a recycled pid), one recorded before a reboot, one whose
 * burstd still runs, and an idle worker (its record voided when its last
 * invocation ended) are not.
 */
static void
test_track_reaps_only_its_own(void **state)
{
    struct daemon *d = *state;
    daemon_init(d, "");
    char dir[160], boot[64] = "";
    snprintf(dir, sizeof(dir), "%s/run/workers", d->t.state);
    char mk[256];
    snprintf(mk, sizeof(mk), "mkdir -p %s", dir);
    assert_int_equal(system(mk), 0);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f != NULL) {
        if (fgets(boot, sizeof(boot), f) == NULL)
            boot[0] = '\0';
        fclose(f);
    }
    boot[strcspn(boot, "\n")] = '\0';
    if (boot[0] == '\0')
        snprintf(boot, sizeof(boot), "-");

    char *ours[] = {"BURST_SPEC=jobs/1/spec/7", "BURST_STORAGE=file:/x", NULL};
    char *other_spec[] = {"BURST_SPEC=jobs/2/spec/7", "BURST_STORAGE=file:/x", NULL};
    char *other_store[] = {"BURST_SPEC=jobs/1/spec/7", "BURST_STORAGE=file:/y", NULL};
    /* A dead burstd: a child of ours, reaped. */
    pid_t dead = fork();
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);

    struct proc gone_leader = {0}, straggler = {0}, alive = {0}, recycled = {0},
                elsewhere = {0}, old_boot = {0}, busy = {0}, idle = {0};
    gone_leader.pid = spawn_session(ours, true, &straggler.pid);
    alive.pid = spawn_session(ours, false, NULL);
    recycled.pid = spawn_session(other_spec, false, NULL);
    elsewhere.pid = spawn_session(other_store, false, NULL);
    old_boot.pid = spawn_session(ours, false, NULL);
    busy.pid = spawn_session(ours, false, NULL);
    idle.pid = spawn_session(ours, false, NULL);
    struct proc *all[] = {&straggler, &alive, &recycled, &elsewhere, &old_boot, &busy, &idle};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        assert_true(proc_state(all[i]->pid, &all[i]->start) != 0);
    /* The leader is gone; its start time is what its straggler's is at most. */
    gone_leader.start = straggler.start;

    write_record(dir, gone_leader.pid, gone_leader.start, dead, 1, boot, "jobs/1/spec/7");
    write_record(dir, alive.pid, alive.start, dead, 1, boot, "jobs/1/spec/7");
    write_record(dir, recycled.pid, recycled.start, dead, 1, boot, "jobs/1/spec/7");
    write_record(dir, elsewhere.pid, elsewhere.start, dead, 1, boot, "jobs/1/spec/7");
    write_record(dir, old_boot.pid, old_boot.start, dead, 1,
                 "00000000-0000-0000-0000-000000000000", "jobs/1/spec/7");
    /* Its "burstd" is a live process: the recycled one will do. */
    write_record(dir, busy.pid, busy.start, recycled.pid, recycled.start, boot,
                 "jobs/1/spec/7");
    write_record(dir, idle.pid, idle.start, dead, 1, boot, "jobs/1/spec/7");
    char junk[256];
    snprintf(junk, sizeof(junk), "%s/%d", dir, (int)idle.pid);
    f = fopen(junk, "r+");
    assert_non_null(f);
    fputc('-', f); /* as record_remove voids it */
    fclose(f);
    snprintf(junk, sizeof(junk), "%s/junk", dir);
    f = fopen(junk, "w");
    assert_non_null(f);
    fputs("burst-worker-record 1 12 oops\n", f);
    fclose(f);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct compute *c = NULL;
    assert_int_equal(compute_local_new(&loop, "/bin/true", "file:/x", &c), 0);
    assert_int_equal(compute_local_track(c, dir), 0);
    /* Once per backend. */
    assert_int_equal(compute_local_track(c, dir), -EINVAL);

    /* It returns once what it killed is gone. */
    assert_false(proc_running(&straggler));
    assert_false(proc_running(&alive));
    assert_true(proc_running(&recycled));
    assert_true(proc_running(&elsewhere));
    assert_true(proc_running(&old_boot));
    assert_true(proc_running(&busy));
    assert_true(proc_running(&idle));
    char name[32];
    snprintf(name, sizeof(name), "%d", (int)busy.pid);
    assert_true(file_exists(dir, name)); /* left for its own burstd */
    const struct proc *handled[] = {&gone_leader, &alive, &recycled, &elsewhere,
                                    &old_boot,    &idle};
    for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++) {
        snprintf(name, sizeof(name), "%d", (int)handled[i]->pid);
        assert_false(file_exists(dir, name));
    }
    assert_false(file_exists(dir, "junk"));

    compute_close(&loop, c);
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] != &straggler)
            kill(all[i]->pid, SIGKILL);
    }
    const pid_t children[] = {alive.pid,    recycled.pid, elsewhere.pid,
                              old_boot.pid, busy.pid,     idle.pid};
    for (size_t i = 0; i < sizeof(children) / sizeof(children[0]); i++)
        assert_int_equal(waitpid(children[i], NULL, 0), children[i]);
    d->passed = true;
}

static int ended_count;

static void
on_ended(struct dispatch *disp, uint32_t inv, const struct compute_exit *ex)
{
    (void)disp;
    (void)inv;
    (void)ex;
    ended_count++;
}

/*
 * A worker started by a tracking backend has a record while it runs, and
 * none once it is reaped; it is told who its burstd is (BURST_PARENT_PID).
 */
static void
test_track_records_workers(void **state)
{
    struct daemon *d = *state;
    daemon_init(d, "");
    char dir[160], worker[160], envfile[160];
    snprintf(dir, sizeof(dir), "%s/run/workers", d->t.state);
    snprintf(worker, sizeof(worker), "%s/worker.sh", d->t.dir);
    snprintf(envfile, sizeof(envfile), "%s/env", d->t.dir);
    FILE *f = fopen(worker, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\nenv > %s.tmp && mv %s.tmp %s\nsleep 300\n", envfile, envfile,
            envfile);
    fclose(f);
    assert_int_equal(chmod(worker, 0700), 0);

    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct compute *c = NULL;
    assert_int_equal(compute_local_new(&loop, worker, "file:/x", &c), 0);
    assert_int_equal(compute_local_track(c, dir), 0);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    char spec[] = "jobs/3/spec/1";
    struct dispatch disp = {.job = 3,
                            .owner_uid = geteuid(),
                            .dispatch = 1,
                            .spec_key = spec,
                            .ninv = 1,
                            .ended_cb = on_ended};
    ended_count = 0;
    assert_int_equal(c->ops->submit(c, &disp), 0);
    for (int64_t t0 = testd_now_ms(); !file_exists(d->t.dir, "env"); testd_sleep_ms(POLL_MS)) {
        if (testd_now_ms() - t0 > SAFETY_MS)
            fail_msg("the worker did not start");
        uv_run(&loop, UV_RUN_NOWAIT);
    }
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "grep -qx 'BURST_PARENT_PID=%d' %s", (int)getpid(),
             envfile);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(count_files(dir, "", NULL), 3); /* ".", ".." and the record */

    assert_int_equal(c->ops->cancel(c, &disp, 0), 0);
    while (ended_count == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(count_files(dir, "", NULL), 2);
    compute_close(&loop, c);
    d->passed = true;
}

int
main(void)
{
    /* A write to a daemon that was just killed must fail, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_track_reaps_only_its_own, setup, teardown),
        cmocka_unit_test_setup_teardown(test_track_records_workers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphans_reaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_after_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_small_job_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_v2_upgrade, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_reduce, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_many_times, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
