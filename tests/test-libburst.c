/*
 * tests/test-libburst.c - libburst against a real burstd and real workers,
 * through the public interface (burst.h) only.
 *
 * One daemon serves the whole group, on a temporary socket and state dir.
 * Every test opens its own connections and checks outcomes: result bytes
 * and their order, task states and attempts, event sequences, replays from
 * the ledger, that a cancel leaves no process of the job behind, that the
 * quota holds with two client processes at once, and the error codes.
 *
 * No assertion depends on how fast anything runs; the loops that wait for
 * something have a generous safety limit (SAFETY_MS) so that a bug fails
 * the test instead of hanging it until meson's timeout.
 */
#include <ctype.h>
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
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "burst.h"
#include "testd.h"

/* Only ever a safety net: how long a loop waits before it calls it a bug. */
#define SAFETY_MS (240 * 1000)

static struct testd D;
static const char *test_fns; /* borrowed from the environment: test_fns.so */

/* ---- small helpers ----------------------------------------------------------- */

/* A malloc'ed printf; the test fails rather than go on without it. */
static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    return s;
}

/* ---- the daemon ------------------------------------------------------------------ */

/* Starts burstd with the given config lines and waits until it answers. */
static void
daemon_start(struct testd *d, const char *config)
{
    testd_init(d, "libburst", config);
    testd_start(d, NULL);
}

/* SIGTERM, and the daemon must exit 0 by itself and remove its socket. */
static void
daemon_stop(struct testd *d)
{
    testd_stop(d);
    testd_cleanup(d, true);
}

static burst_client *
client_open(void)
{
    burst_client *c = NULL;
    char err[512] = "";
    int rc = burst_connect_ex(D.sock, &c, err, sizeof(err));
    if (rc != 0)
        fail_msg("cannot connect: %s (%s)", burst_strerror(rc), err);
    return c;
}

/* A fresh directory under the daemon's for one test's files. */
static char *
test_dir(const char *name)
{
    char *dir = xasprintf("%s/%s", D.dir, name);
    assert_int_equal(mkdir(dir, 0700), 0);
    return dir;
}

/* ---- inputs -------------------------------------------------------------------- */

struct inputs {
    size_t n;
    burst_bytes *b; /* owned, and so is every b[i].data */
};

static void
inputs_alloc(struct inputs *in, size_t n)
{
    in->n = n;
    in->b = calloc(n ? n : 1, sizeof(*in->b));
    assert_non_null(in->b);
}

/* n lines of mixed case, digits and punctuation, of varying length. */
static void
inputs_text(struct inputs *in, size_t n)
{
    inputs_alloc(in, n);
    for (size_t i = 0; i < n; i++) {
        char *s = xasprintf("Line %zu: the Quick brown Fox, jumps=%zu %.*s!\n", i, i * 7,
                            (int)(i % 37), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJK");
        in->b[i] = (burst_bytes){s, strlen(s)};
    }
}

/* n inputs from a format taking the index. */
static void
inputs_fmt(struct inputs *in, size_t n, const char *fmt)
{
    inputs_alloc(in, n);
    for (size_t i = 0; i < n; i++) {
        char *s = xasprintf(fmt, i);
        in->b[i] = (burst_bytes){s, strlen(s)};
    }
}

static void
inputs_free(struct inputs *in)
{
    for (size_t i = 0; i < in->n; i++)
        free((void *)in->b[i].data);
    free(in->b);
    in->b = NULL;
    in->n = 0;
}

/* out[i] must be in[i] upper-cased (ASCII), byte for byte. */
static void
check_upper(const struct inputs *in, const burst_bytes *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const unsigned char *src = in->b[i].data;
        const unsigned char *got = out[i].data;
        assert_non_null(got);
        assert_int_equal(out[i].len, in->b[i].len);
        for (size_t k = 0; k < in->b[i].len; k++) {
            if (got[k] != (unsigned char)toupper(src[k]))
                fail_msg("result %zu byte %zu: got 0x%02x, want 0x%02x", i, k, got[k],
                         toupper(src[k]));
        }
    }
}

/* ---- results and events collected by callbacks --------------------------------- */

/* Callbacks never assert (a cmocka failure would jump out of the library
 * in the middle of a call); they note the first problem for the test. */
struct collected {
    const struct inputs *want; /* borrowed: expected results, or NULL */
    uint32_t next;             /* the index expected next */
    uint32_t calls;
    uint32_t last_index;
    char *data; /* owned: the last result */
    size_t len;
    char problem[256];
};

static void note(char *problem, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
note(char *problem, size_t size, const char *fmt, ...)
{
    if (problem[0] != '\0')
        return; /* the first one is the one that matters */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, size, fmt, ap);
    va_end(ap);
}

/* burst_results callback: results in task order, each equal to want. */
static int
collect_in_order(void *arg, uint32_t index, const void *data, size_t len)
{
    struct collected *col = arg;
    col->calls++;
    if (index != col->next)
        note(col->problem, sizeof(col->problem), "index %u where %u was due", index,
             col->next);
    col->next = index + 1;
    if (col->want != NULL && index < col->want->n) {
        const burst_bytes *w = &col->want->b[index];
        if (data == NULL || len != w->len || memcmp(data, w->data, len) != 0)
            note(col->problem, sizeof(col->problem), "result %u: got %zu bytes '%.*s'",
                 index, len, data ? (int)(len > 40 ? 40 : len) : 4,
                 data ? (const char *)data : "NULL");
    }
    return 0;
}

/* burst_results callback that keeps the last result (map_reduce). */
static int
collect_last(void *arg, uint32_t index, const void *data, size_t len)
{
    struct collected *col = arg;
    col->calls++;
    col->last_index = index;
    free(col->data);
    col->data = NULL;
    col->len = 0;
    if (data != NULL) {
        col->data = malloc(len + 1);
        if (col->data == NULL)
            return -ENOMEM;
        memcpy(col->data, data, len);
        col->data[len] = '\0';
        col->len = len;
    }
    return 0;
}

struct evlog {
    uint64_t job;
    burst_event *ev; /* owned */
    size_t n, cap;
    bool ended; /* a job event with a final state arrived */
    bool oom;
};

static void
evlog_cb(void *arg, const burst_event *ev)
{
    struct evlog *log = arg;
    if (log->n == log->cap) {
        size_t cap = log->cap ? log->cap * 2 : 64;
        burst_event *p = realloc(log->ev, cap * sizeof(*p));
        if (p == NULL) {
            log->oom = true;
            return;
        }
        log->ev = p;
        log->cap = cap;
    }
    log->ev[log->n++] = *ev;
    if (ev->type == BURST_EV_JOB && burst_job_state_is_final(ev->job_state))
        log->ended = true;
}

static void
evlog_free(struct evlog *log)
{
    free(log->ev);
    memset(log, 0, sizeof(*log));
}

/*
 * The event loop of a caller that has its own: poll the connection's fd,
 * burst_dispatch() when it is readable, and dispatch without polling while
 * burst_pending() says events wait already (poll cannot see those).  Runs
 * until the job's final job event arrived.
 */
static void
drive_until_end(burst_client *c, struct evlog *log)
{
    int64_t start = testd_now_ms();
    while (!log->ended) {
        assert_false(log->oom);
        if (testd_now_ms() - start > SAFETY_MS)
            fail_msg("no final job event for job %llu after %d s (%zu events)",
                     (unsigned long long)log->job, SAFETY_MS / 1000, log->n);
        if (burst_pending(c) == 0) {
            struct pollfd p = {.fd = burst_fd(c), .events = POLLIN};
            int n = poll(&p, 1, 1000);
            if (n < 0)
                assert_int_equal(errno, EINTR);
            if (n == 0)
                continue;
        }
        int rc = burst_dispatch(c);
        if (rc < 0)
            fail_msg("burst_dispatch: %s (%s)", burst_strerror(rc), burst_last_error(c));
    }
}

/* After the final event: a round trip reads whatever else the daemon sent
 * before its reply, and a dispatch delivers it.  There must be nothing. */
static void
expect_no_more_events(burst_client *c, struct evlog *log, uint64_t job)
{
    size_t n = log->n;
    burst_job_info info;
    assert_int_equal(burst_status(c, job, &info), 0);
    assert_true(burst_dispatch(c) >= 0);
    assert_int_equal(log->n, n);
    assert_int_equal(info.last_seq, log->ev[n - 1].seq);
}

/*
 * The invariants of one job's event stream from_seq on: the first event has
 * seq from_seq + 1, and every later one the same seq as the one before it
 * (the task changes of one log entry, delivered one per task) or the next.
 */
static void
check_seq(const struct evlog *log, uint64_t from_seq)
{
    assert_true(log->n > 0);
    assert_int_equal(log->ev[0].seq, from_seq + 1);
    for (size_t i = 0; i < log->n; i++) {
        const burst_event *e = &log->ev[i];
        assert_int_equal(e->job, log->job);
        if (i == 0)
            continue;
        const burst_event *p = &log->ev[i - 1];
        if (e->seq == p->seq) {
            if (e->type != BURST_EV_TASK || p->type != BURST_EV_TASK)
                fail_msg("event %zu: seq %llu repeated outside a batch of task changes",
                         i, (unsigned long long)e->seq);
        } else if (e->seq != p->seq + 1) {
            fail_msg("event %zu: seq %llu after %llu", i, (unsigned long long)e->seq,
                     (unsigned long long)p->seq);
        }
    }
}

/* ---- group setup ------------------------------------------------------------------- */

static int
group_setup(void **state)
{
    (void)state;
    test_fns = getenv("TEST_FNS");
    assert_non_null(test_fns);
    daemon_start(&D, "");
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    daemon_stop(&D);
    return 0;
}

/* ---- 1, 2: burst_map -----------------------------------------------------------------
 */

/* burst_map of n text lines through exec `tr a-z A-Z`, every result checked. */
static void
map_upper(burst_client *c, size_t n)
{
    struct inputs in;
    inputs_text(&in, n);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    burst_opts opts = BURST_OPTS_INIT;
    burst_bytes *out = NULL;
    int rc = burst_map(c, &fn, in.b, in.n, &opts, &out);
    if (rc != 0)
        fail_msg("burst_map: %s: %s", burst_strerror(rc), burst_last_error(c));
    check_upper(&in, out);
    burst_free_results(out, in.n);
    inputs_free(&in);
}

/* Calls wait for their replies even on a socket the application made
 * non-blocking (it may, to poll burst_fd() from its own loop). */
static void
test_nonblocking_fd(void **state)
{
    (void)state;
    burst_client *c = client_open();
    int fd = burst_fd(c);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
    for (int i = 0; i < 3; i++)
        assert_true(burst_quota(c, -1, NULL) > 0);
    map_upper(c, 20);
    burst_close(c);
}

static void
test_map_exec(void **state)
{
    (void)state;
    burst_client *c = client_open();
    map_upper(c, 200);
    burst_close(c);
}

static void
test_map_so(void **state)
{
    (void)state;
    burst_client *c = client_open();
    struct inputs in;
    inputs_text(&in, 200);
    burst_fn fn = {.kind = BURST_FN_SO, .path = test_fns, .symbol = "upper"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 16; /* 13 invocations, the last one short */
    burst_bytes *out = NULL;
    int rc = burst_map(c, &fn, in.b, in.n, &opts, &out);
    if (rc != 0)
        fail_msg("burst_map: %s: %s", burst_strerror(rc), burst_last_error(c));
    check_upper(&in, out);
    burst_free_results(out, in.n);
    inputs_free(&in);

    /* 1 MiB holding every byte value, and an empty input, through echo. */
    size_t big = 1024 * 1024;
    unsigned char *blob = malloc(big);
    assert_non_null(blob);
    for (size_t i = 0; i < big; i++)
        blob[i] = (unsigned char)(i * 131 + i / 256);
    burst_bytes bin[2] = {{blob, big}, {"", 0}};
    fn.symbol = "echo";
    opts.chunksize = 1;
    rc = burst_map(c, &fn, bin, 2, &opts, &out);
    if (rc != 0)
        fail_msg("burst_map: %s: %s", burst_strerror(rc), burst_last_error(c));
    assert_int_equal(out[0].len, big);
    assert_memory_equal(out[0].data, blob, big);
    assert_non_null(out[1].data); /* it succeeded: empty, not missing */
    assert_int_equal(out[1].len, 0);
    burst_free_results(out, 2);
    free(blob);
    burst_close(c);
}

/* ---- 3: map_reduce ---------------------------------------------------------------- */

static void
test_map_reduce(void **state)
{
    (void)state;
    burst_client *c = client_open();

    /* exec: a word count. */
    struct inputs in;
    inputs_alloc(&in, 60);
    unsigned words = 0;
    for (size_t i = 0; i < in.n; i++) {
        unsigned w = (unsigned)(i % 7) + 1;
        char *s = xasprintf("%.*s\n", (int)(w * 4 - 1), "abc def ghi jkl mno pqr stu");
        words += w;
        in.b[i] = (burst_bytes){s, strlen(s)};
    }
    burst_fn map = {.kind = BURST_FN_EXEC, .cmd = "wc -w"};
    burst_fn reduce = {.kind = BURST_FN_EXEC, .cmd = "awk '{ s += $1 } END { print s }'"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 4;
    uint64_t job;
    int rc = burst_submit_map_reduce(c, &map, &reduce, in.b, in.n, &opts, &job);
    if (rc != 0)
        fail_msg("submit: %s: %s", burst_strerror(rc), burst_last_error(c));
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), 0);
    assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
    assert_int_equal(info.kind, BURST_KIND_MAP_REDUCE);
    assert_int_equal(info.total, in.n);
    struct collected col = {0};
    assert_int_equal(burst_results(c, job, collect_last, &col), 0);
    assert_int_equal(col.calls, 1); /* only the reducer's output */
    assert_int_equal(col.last_index, in.n);
    char *want = xasprintf("%u\n", words);
    assert_non_null(col.data);
    assert_string_equal(col.data, want);
    free(want);
    free(col.data);
    inputs_free(&in);

    /* so: echo of numbers, summed by sum_numbers. */
    inputs_fmt(&in, 100, "%zu\n");
    map = (burst_fn){.kind = BURST_FN_SO, .path = test_fns, .symbol = "echo"};
    reduce = (burst_fn){.kind = BURST_FN_SO, .path = test_fns, .symbol = "sum_numbers"};
    rc = burst_submit_map_reduce(c, &map, &reduce, in.b, in.n, &opts, &job);
    if (rc != 0)
        fail_msg("submit: %s: %s", burst_strerror(rc), burst_last_error(c));
    assert_int_equal(burst_wait(c, job, NULL), 0);
    col = (struct collected){0};
    assert_int_equal(burst_results(c, job, collect_last, &col), 0);
    assert_int_equal(col.calls, 1);
    assert_int_equal(col.last_index, in.n);
    assert_non_null(col.data);
    assert_string_equal(col.data, "4950\n"); /* 0 + 1 + ... + 99 */
    free(col.data);
    inputs_free(&in);
    burst_close(c);
}

/* ---- 4: burst_call
 * --------------------------------------------------------------------- */

static void
test_call(void **state)
{
    (void)state;
    burst_client *c = client_open();
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    void *out = NULL;
    size_t len = 0;
    int rc = burst_call(c, &fn, "hello, call\n", 12, NULL, &out, &len);
    if (rc != 0)
        fail_msg("burst_call: %s: %s", burst_strerror(rc), burst_last_error(c));
    assert_int_equal(len, 12);
    assert_memory_equal(out, "HELLO, CALL\n", 12);
    free(out);

    fn = (burst_fn){.kind = BURST_FN_SO, .path = test_fns, .symbol = "upper"};
    assert_int_equal(burst_call(c, &fn, "so too", 6, NULL, &out, &len), 0);
    assert_int_equal(len, 6);
    assert_memory_equal(out, "SO TOO", 6);
    free(out);

    /* A call that fails says so, and returns no result. */
    fn = (burst_fn){.kind = BURST_FN_EXEC, .cmd = "exit 4"};
    assert_int_equal(burst_call(c, &fn, "x", 1, NULL, &out, &len), BURST_EJOBFAILED);
    assert_null(out);
    /* Why: the job's own error, from its status. */
    assert_non_null(strstr(burst_last_error(c), "failed"));
    assert_non_null(strstr(burst_last_error(c), "job "));
    burst_close(c);
}

/* ---- 5: many results, streamed in order
 * -------------------------------------------------- */

static void
test_results_streaming(void **state)
{
    (void)state;
    burst_client *c = client_open();
    struct inputs in;
    inputs_fmt(&in, 20000, "task %zu\n");
    burst_fn fn = {.kind = BURST_FN_SO, .path = test_fns, .symbol = "echo"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 500;
    uint64_t job;
    int rc = burst_submit_map(c, &fn, in.b, in.n, &opts, &job);
    if (rc != 0)
        fail_msg("submit: %s: %s", burst_strerror(rc), burst_last_error(c));
    burst_job_info info;
    rc = burst_wait(c, job, &info);
    if (rc != 0)
        fail_msg("wait: %s: %s", burst_strerror(rc), burst_last_error(c));
    assert_int_equal(info.counts[BURST_TASK_SUCCEEDED], in.n);

    struct collected col = {.want = &in};
    assert_int_equal(burst_results(c, job, collect_in_order, &col), 0);
    if (col.problem[0] != '\0')
        fail_msg("%s", col.problem);
    assert_int_equal(col.calls, in.n);
    assert_int_equal(col.next, in.n);

    /* Twice: results are read again from storage, not consumed. */
    col = (struct collected){.want = &in};
    assert_int_equal(burst_results(c, job, collect_in_order, &col), 0);
    assert_string_equal(col.problem, "");
    assert_int_equal(col.calls, in.n);
    inputs_free(&in);
    burst_close(c);
}

/* ---- 6: imap_unordered
 * --------------------------------------------------------------------- */

struct unordered {
    const struct inputs *in; /* borrowed */
    unsigned *count;         /* owned: reports per task */
    unsigned calls;
    char problem[256];
};

static bool
is_crash(const burst_bytes *b)
{
    return b->len >= 5 && memcmp(b->data, "CRASH", 5) == 0;
}

static int
collect_unordered(void *arg, uint32_t index, const void *data, size_t len)
{
    struct unordered *u = arg;
    u->calls++;
    if (index >= u->in->n) {
        note(u->problem, sizeof(u->problem), "index %u out of range", index);
        return 0;
    }
    u->count[index]++;
    const burst_bytes *w = &u->in->b[index];
    if (is_crash(w)) {
        if (data != NULL)
            note(u->problem, sizeof(u->problem), "crashed task %u has a result", index);
    } else if (data == NULL || len != w->len || memcmp(data, w->data, len) != 0) {
        note(u->problem, sizeof(u->problem), "task %u: wrong result", index);
    }
    return 0;
}

static void
test_imap_unordered(void **state)
{
    (void)state;
    burst_client *c = client_open();
    struct inputs in;
    inputs_alloc(&in, 40);
    for (size_t i = 0; i < in.n; i++) {
        char *s = xasprintf(i % 5 == 2 ? "CRASH %zu\n" : "fine %zu\n", i);
        in.b[i] = (burst_bytes){s, strlen(s)};
    }
    burst_fn fn = {.kind = BURST_FN_SO, .path = test_fns, .symbol = "crash_on_marker"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 3; /* crashes in the middle of invocations too */
    uint64_t job;
    assert_int_equal(burst_submit_map(c, &fn, in.b, in.n, &opts, &job), 0);

    struct unordered u = {.in = &in, .count = calloc(in.n, sizeof(unsigned))};
    assert_non_null(u.count);
    int rc = burst_imap_unordered(c, job, collect_unordered, &u);
    assert_int_equal(rc, BURST_EJOBFAILED);
    if (u.problem[0] != '\0')
        fail_msg("%s", u.problem);
    assert_int_equal(u.calls, in.n);
    for (size_t i = 0; i < in.n; i++)
        if (u.count[i] != 1)
            fail_msg("task %zu reported %u times", i, u.count[i]);

    burst_task_info *tasks;
    size_t n;
    assert_int_equal(burst_tasks(c, job, -1, &tasks, &n), 0);
    assert_int_equal(n, in.n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(tasks[i].index, i);
        if (is_crash(&in.b[i])) {
            assert_int_equal(tasks[i].state, BURST_TASK_FAILED);
            assert_int_equal(tasks[i].signal, SIGSEGV);
        } else {
            assert_int_equal(tasks[i].state, BURST_TASK_SUCCEEDED);
        }
    }
    free(tasks);

    /* After the end: every task once more, straight from the sweep. */
    memset(u.count, 0, in.n * sizeof(unsigned));
    u.calls = 0;
    assert_int_equal(burst_imap_unordered(c, job, collect_unordered, &u),
                     BURST_EJOBFAILED);
    assert_string_equal(u.problem, "");
    assert_int_equal(u.calls, in.n);
    free(u.count);
    inputs_free(&in);
    burst_close(c);
}

/* ---- 7: the asynchronous interface
 * ------------------------------------------------------- */

/* Every event of a job once, in order, with the subscription made by
 * burst_subscribe() after the submission or (with_submit) by the
 * submission itself. */
static void
async_events(bool with_submit)
{
    burst_client *c = client_open();
    struct inputs in;
    inputs_fmt(&in, 12, "async %zu\n");
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    struct evlog log = {0};
    if (with_submit) {
        opts.on_event = evlog_cb;
        opts.event_arg = &log;
    }
    uint64_t job;
    assert_int_equal(burst_submit_map(c, &fn, in.b, in.n, &opts, &job), 0);
    log.job = job;
    if (!with_submit)
        assert_int_equal(burst_subscribe(c, job, 0, evlog_cb, &log), 0);
    drive_until_end(c, &log);

    check_seq(&log, 0);
    const burst_event *last = &log.ev[log.n - 1];
    assert_int_equal(last->type, BURST_EV_JOB);
    assert_int_equal(last->job_state, BURST_JOB_SUCCEEDED);
    unsigned *succeeded = calloc(in.n, sizeof(unsigned));
    assert_non_null(succeeded);
    /* The job itself goes queued, running, succeeded: once each. */
    int job_states[8];
    size_t njob = 0;
    for (size_t i = 0; i < log.n; i++) {
        const burst_event *e = &log.ev[i];
        if (e->type == BURST_EV_JOB) {
            assert_true(njob < 8);
            job_states[njob++] = e->job_state;
            continue;
        }
        assert_true(e->task < in.n);
        assert_true(e->task_state >= 0 && e->task_state < BURST_TASK_NSTATES);
        if (e->task_state == BURST_TASK_SUCCEEDED) {
            succeeded[e->task]++;
            assert_int_equal(e->attempts, 1);
        }
    }
    for (size_t i = 0; i < in.n; i++)
        if (succeeded[i] != 1)
            fail_msg("task %zu: %u succeeded events", i, succeeded[i]);
    free(succeeded);
    assert_int_equal(njob, 3);
    assert_int_equal(job_states[0], BURST_JOB_QUEUED);
    assert_int_equal(job_states[1], BURST_JOB_RUNNING);
    assert_int_equal(job_states[2], BURST_JOB_SUCCEEDED);
    expect_no_more_events(c, &log, job);
    assert_int_equal(burst_unsubscribe(c, job), 0);
    evlog_free(&log);
    inputs_free(&in);
    burst_close(c);
}

static void
test_async_events(void **state)
{
    (void)state;
    async_events(false);
}

static void
test_async_events_with_submit(void **state)
{
    (void)state;
    async_events(true);
}

/* ---- 8: replay from the ledger
 * ------------------------------------------------------------ */

static void
test_replay(void **state)
{
    (void)state;
    burst_client *a = client_open();
    struct inputs in;
    inputs_fmt(&in, 16, "replay %zu\n");
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 2;
    uint64_t job;
    assert_int_equal(burst_submit_map(a, &fn, in.b, in.n, &opts, &job), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(a, job, &info), 0);
    burst_close(a);

    /* The whole log, replayed from the start on a new connection. */
    burst_client *b = client_open();
    struct evlog full = {.job = job};
    assert_int_equal(burst_subscribe(b, job, 0, evlog_cb, &full), 0);
    drive_until_end(b, &full);
    check_seq(&full, 0);
    expect_no_more_events(b, &full, job);
    uint64_t last_seq = full.ev[full.n - 1].seq;
    assert_int_equal(last_seq, info.last_seq);
    assert_true(last_seq >= 3);

    /* From the middle, on yet another connection: exactly the tail. */
    uint64_t k = last_seq / 2;
    burst_client *c = client_open();
    struct evlog tail = {.job = job};
    assert_int_equal(burst_subscribe(c, job, k, evlog_cb, &tail), 0);
    drive_until_end(c, &tail);
    check_seq(&tail, k);
    expect_no_more_events(c, &tail, job);
    size_t first = 0;
    while (first < full.n && full.ev[first].seq <= k)
        first++;
    assert_int_equal(tail.n, full.n - first);
    for (size_t i = 0; i < tail.n; i++) {
        const burst_event *x = &tail.ev[i], *y = &full.ev[first + i];
        if (x->seq != y->seq || x->type != y->type || x->job_state != y->job_state ||
            x->task != y->task || x->task_state != y->task_state ||
            x->attempts != y->attempts)
            fail_msg("replayed event %zu differs from the full log's", i);
    }
    evlog_free(&full);
    evlog_free(&tail);
    inputs_free(&in);
    burst_close(b);
    burst_close(c);
}

/* ---- 9: retries and timeouts
 * ------------------------------------------------------------- */

static void
test_retries_and_timeout(void **state)
{
    (void)state;
    burst_client *c = client_open();
    char *flags = test_dir("flags");
    /* Fails the first attempt of every task (no flag yet), succeeds after. */
    char *cmd = xasprintf("if [ -e %s/flag_$BURST_TASK_INDEX ]; then cat; "
                          "else touch %s/flag_$BURST_TASK_INDEX; exit 1; fi",
                          flags, flags);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    struct inputs in;
    inputs_fmt(&in, 5, "flaky %zu\n");
    burst_opts opts = BURST_OPTS_INIT;
    opts.retries = 2;
    uint64_t job;
    assert_int_equal(burst_submit_map(c, &fn, in.b, in.n, &opts, &job), 0);
    int rc = burst_wait(c, job, NULL);
    if (rc != 0)
        fail_msg("wait: %s: %s", burst_strerror(rc), burst_last_error(c));
    struct collected col = {.want = &in};
    assert_int_equal(burst_results(c, job, collect_in_order, &col), 0);
    assert_string_equal(col.problem, "");
    assert_int_equal(col.calls, in.n);
    burst_task_info *tasks;
    size_t n;
    assert_int_equal(burst_tasks(c, job, -1, &tasks, &n), 0);
    assert_int_equal(n, in.n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(tasks[i].state, BURST_TASK_SUCCEEDED);
        assert_int_equal(tasks[i].attempts, 2);
        assert_int_equal(tasks[i].exit_status, 0);
    }
    free(tasks);
    inputs_free(&in);
    free(cmd);
    free(flags);

    /* sleep 30 under a 300 ms timeout. */
    fn = (burst_fn){.kind = BURST_FN_EXEC, .cmd = "sleep 30"};
    opts = (burst_opts)BURST_OPTS_INIT;
    opts.timeout_ms = 300;
    assert_int_equal(burst_submit_map_lines(c, &fn, "x\n", 2, &opts, &job), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), BURST_EJOBFAILED);
    assert_int_equal(info.state, BURST_JOB_FAILED);
    assert_int_equal(info.counts[BURST_TASK_TIMEOUT], 1);
    assert_int_equal(burst_tasks(c, job, -1, &tasks, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(tasks[0].state, BURST_TASK_TIMEOUT);
    assert_int_equal(tasks[0].attempts, 1);
    free(tasks);
    burst_close(c);
}

/* ---- 10, 11: cancel
 * -------------------------------------------------------------------- */

/* True when pid is gone: no such process, or a zombie nobody reaped yet
 * (in a container, pid 1 may never reap the orphans it adopts). */
static bool
proc_gone(pid_t pid)
{
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the state follows "(comm)" */
    return p != NULL && p[1] == ' ' && p[2] == 'Z';
}

static void
test_cancel(void **state)
{
    (void)state;
    burst_client *c = client_open();
    char *dir = test_dir("cancel");
    /* Each task records its shell's pid and its background sleep's, then
     * waits: both must be gone after the cancel. */
    char *cmd = xasprintf("sleep 30 & echo $$ $! > %s/t_$BURST_TASK_INDEX && "
                          "mv %s/t_$BURST_TASK_INDEX %s/p_$BURST_TASK_INDEX; wait",
                          dir, dir, dir);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    struct inputs in;
    inputs_fmt(&in, 50, "%zu\n");
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job;
    assert_int_equal(burst_submit_map(c, &fn, in.b, in.n, &opts, &job), 0);

    /* Cancel only once some tasks really run. */
    int64_t start = testd_now_ms();
    for (bool running = false; !running;) {
        for (size_t i = 0; i < in.n && !running; i++) {
            char *p = xasprintf("%s/p_%zu", dir, i);
            running = access(p, F_OK) == 0;
            free(p);
        }
        if (!running) {
            if (testd_now_ms() - start > SAFETY_MS)
                fail_msg("no task of job %llu started", (unsigned long long)job);
            testd_sleep_ms(20);
        }
    }
    assert_int_equal(burst_cancel(c, job), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), BURST_ECANCELLED);
    assert_int_equal(info.state, BURST_JOB_CANCELLED);
    assert_int_equal(info.counts[BURST_TASK_SUCCEEDED], 0);
    burst_task_info *tasks;
    size_t n;
    assert_int_equal(burst_tasks(c, job, -1, &tasks, &n), 0);
    assert_int_equal(n, in.n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tasks[i].state, BURST_TASK_CANCELLED);
    free(tasks);

    /* Every process a task started goes away. */
    unsigned checked = 0;
    for (size_t i = 0; i < in.n; i++) {
        char *p = xasprintf("%s/p_%zu", dir, i);
        FILE *f = fopen(p, "r");
        free(p);
        if (f == NULL)
            continue; /* never started */
        long pids[2];
        int got = fscanf(f, "%ld %ld", &pids[0], &pids[1]);
        fclose(f);
        assert_int_equal(got, 2);
        for (int k = 0; k < 2; k++) {
            start = testd_now_ms();
            while (!proc_gone((pid_t)pids[k])) {
                if (testd_now_ms() - start > SAFETY_MS)
                    fail_msg("task %zu: process %ld survived the cancel", i, pids[k]);
                testd_sleep_ms(20);
            }
            checked++;
        }
    }
    assert_true(checked >= 2);
    inputs_free(&in);
    free(cmd);
    free(dir);
    burst_close(c);
}

static void
test_cancel_on_disconnect(void **state)
{
    (void)state;
    burst_client *c = client_open();
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "sleep 30"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.cancel_on_disconnect = 1;
    uint64_t job;
    assert_int_equal(burst_submit_map_lines(c, &fn, "1\n2\n3\n4\n", 8, &opts, &job), 0);
    burst_close(c);

    c = client_open();
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), BURST_ECANCELLED);
    assert_int_equal(info.state, BURST_JOB_CANCELLED);
    assert_int_equal(info.counts[BURST_TASK_SUCCEEDED], 0);

    /* Without the option the same disconnect cancels nothing. */
    opts.cancel_on_disconnect = 0;
    fn.cmd = "cat";
    assert_int_equal(burst_submit_map_lines(c, &fn, "1\n2\n", 4, &opts, &job), 0);
    burst_close(c);
    c = client_open();
    assert_int_equal(burst_wait(c, job, &info), 0);
    burst_close(c);
}

/* ---- 12: two client processes under quota 1
 * -------------------------------------------- */

/* A child process: no cmocka here (a failure would unwind into the parent's
 * copy of the test run); the exit status says how it went. */
static void
child_map(int which)
{
    burst_client *c = NULL;
    if (burst_connect(D.sock, &c) != 0)
        _exit(2);
    struct inputs in = {0};
    in.n = 20;
    in.b = calloc(in.n, sizeof(*in.b));
    if (in.b == NULL)
        _exit(3);
    for (size_t i = 0; i < in.n; i++) {
        char *s = NULL;
        if (asprintf(&s, "child %d line %zu\n", which, i) < 0)
            _exit(3);
        in.b[i] = (burst_bytes){s, strlen(s)};
    }
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "sleep 0.05; cat"};
    burst_opts opts = BURST_OPTS_INIT;
    burst_bytes *out = NULL;
    int rc = burst_map(c, &fn, in.b, in.n, &opts, &out);
    if (rc != 0) {
        fprintf(stderr, "child %d: burst_map: %s\n", which, burst_last_error(c));
        _exit(4);
    }
    for (size_t i = 0; i < in.n; i++) {
        if (out[i].len != in.b[i].len || memcmp(out[i].data, in.b[i].data, in.b[i].len))
            _exit(5);
    }
    burst_free_results(out, in.n);
    for (size_t i = 0; i < in.n; i++)
        free((void *)in.b[i].data);
    free(in.b);
    burst_close(c);
    _exit(0);
}

static void
test_two_processes_quota(void **state)
{
    (void)state;
    burst_client *c = client_open();
    int old = burst_quota(c, -1, NULL);
    assert_true(old >= 1);
    assert_int_equal(burst_quota(c, 1, NULL), 1);
    uint32_t in_use = 0;
    assert_int_equal(burst_quota(c, -1, &in_use), 1);

    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        fflush(NULL);
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0)
            child_map(i);
    }
    /* While they run, the quota holds: never more than one in use. */
    int status[2];
    bool done[2] = {false, false};
    int64_t start = testd_now_ms();
    uint32_t most = 0;
    while (!done[0] || !done[1]) {
        for (int i = 0; i < 2; i++)
            if (!done[i] && waitpid(kids[i], &status[i], WNOHANG) == kids[i])
                done[i] = true;
        assert_int_equal(burst_quota(c, -1, &in_use), 1);
        if (in_use > most)
            most = in_use;
        if (testd_now_ms() - start > SAFETY_MS) {
            kill(kids[0], SIGKILL);
            kill(kids[1], SIGKILL);
            fail_msg("the two clients did not finish");
        }
        testd_sleep_ms(10);
    }
    assert_int_equal(burst_quota(c, old, NULL), old);
    assert_true(most <= 1);
    for (int i = 0; i < 2; i++) {
        assert_true(WIFEXITED(status[i]));
        assert_int_equal(WEXITSTATUS(status[i]), 0);
    }
    assert_int_equal(burst_quota(c, -1, NULL), old);
    burst_close(c);
}

/* ---- 13: errors ---------------------------------------------------------------------
 */

static void
test_errors(void **state)
{
    (void)state;
    burst_client *c = client_open();

    /* A symbol the library lacks: refused before anything is submitted. */
    burst_fn fn = {.kind = BURST_FN_SO, .path = test_fns, .symbol = "no_such_function"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job = 99;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &job), BURST_ENOSYM);
    assert_non_null(strstr(burst_last_error(c), "no_such_function"));
    burst_bytes in1 = {"a\n", 2};
    burst_bytes *out = (burst_bytes *)&in1;
    assert_int_equal(burst_map(c, &fn, &in1, 1, &opts, &out), BURST_ENOSYM);
    assert_null(out);
    assert_non_null(strstr(burst_last_error(c), "no_such_function"));

    /* Unknown jobs. */
    burst_job_info info;
    assert_int_equal(burst_status(c, 987654321, &info), BURST_ENOJOB);
    assert_non_null(strstr(burst_last_error(c), "987654321"));
    assert_int_equal(burst_wait(c, 987654321, NULL), BURST_ENOJOB);
    assert_int_equal(burst_cancel(c, 987654321), BURST_ENOJOB);
    struct collected col = {0};
    assert_int_equal(burst_results(c, 987654321, collect_last, &col), BURST_ENOJOB);
    assert_int_equal(col.calls, 0);

    /* The stderr of exec and so tasks comes back through burst_logs. */
    fn = (burst_fn){.kind = BURST_FN_EXEC,
                    .cmd = "echo \"oops from $BURST_TASK_INDEX\" >&2; cat"};
    assert_int_equal(burst_submit_map_lines(c, &fn, "x\ny\nz\n", 6, &opts, &job), 0);
    assert_int_equal(burst_wait(c, job, NULL), 0);
    char *log = NULL;
    size_t len = 0;
    assert_int_equal(burst_logs(c, job, 1, &log, &len), 0);
    assert_int_equal(len, strlen("oops from 1\n"));
    assert_string_equal(log, "oops from 1\n");
    free(log);
    assert_int_equal(burst_logs(c, job, 3, &log, &len), BURST_ENOTASK);
    assert_null(log);

    fn = (burst_fn){.kind = BURST_FN_SO, .path = test_fns, .symbol = "write_stderr"};
    assert_int_equal(burst_submit_map_lines(c, &fn, "x\ny\nz\n", 6, &opts, &job), 0);
    assert_int_equal(burst_wait(c, job, NULL), 0);
    assert_int_equal(burst_logs(c, job, 2, &log, &len), 0);
    assert_non_null(strstr(log, "stderr of task 2\n"));
    assert_null(strstr(log, "task 1"));
    free(log);
    burst_close(c);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_exec),
        cmocka_unit_test(test_map_so),
        cmocka_unit_test(test_map_reduce),
        cmocka_unit_test(test_call),
        cmocka_unit_test(test_results_streaming),
        cmocka_unit_test(test_imap_unordered),
        cmocka_unit_test(test_async_events),
        cmocka_unit_test(test_async_events_with_submit),
        cmocka_unit_test(test_nonblocking_fd),
        cmocka_unit_test(test_replay),
        cmocka_unit_test(test_retries_and_timeout),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cancel_on_disconnect),
        cmocka_unit_test(test_two_processes_quota),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
