/*
 * tests/test-durable.c - nobody hears of what a crash could undo.
 *
 * burstd commits its ledger on the loop thread and syncs the WAL on a
 * thread of its own (daemon/syncer.c), so the loop serves requests while
 * the disk works.  What a client is told must still wait for that sync:
 * the acknowledgment of a submission, and any reply built from state that
 * is committed but not synced yet.  tests/fns/syncgate.c (LD_PRELOAD into
 * burstd) holds the WAL's fdatasync while a file exists, so these tests
 * can look at the daemon in that window; it can also make the sync fail,
 * after which burstd must stop rather than go on with a disk it cannot
 * trust.
 */
#include <errno.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "burst.h"
#include "testd.h"

/* Long enough that a reply the gate did not hold would have come. */
#define HELD_MS 300
#define ANSWER_MS 30000

static struct testd D;
static char gate[192], failf[192], one[192], held[200], sizes[192];
/* What child_submit_cmd runs. */
static char run_cmd[512];
static bool passed;

static void
touch(const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

static int
setup(void **state)
{
    (void)state;
    passed = false;
    testd_init(&D, "durable", "quota = 2\n");
    snprintf(gate, sizeof(gate), "%s/gate", D.dir);
    snprintf(failf, sizeof(failf), "%s/fail", D.dir);
    snprintf(one, sizeof(one), "%s/one", D.dir);
    snprintf(held, sizeof(held), "%s.held", one);
    snprintf(sizes, sizeof(sizes), "%s/synced", D.dir);
    const char *lib = getenv("TEST_SYNCGATE");
    assert_non_null(lib);
    /* Inherited by burstd only: this process is already running. */
    setenv("LD_PRELOAD", lib, 1);
    setenv("BURST_TEST_SYNC_GATE", gate, 1);
    setenv("BURST_TEST_SYNC_FAIL", failf, 1);
    setenv("BURST_TEST_SYNC_ONE", one, 1);
    setenv("BURST_TEST_SYNC_SIZES", sizes, 1);
    /* Under ASan the preloaded library comes before the sanitizer's
     * runtime; that is the point here. */
    const char *asan = getenv("ASAN_OPTIONS");
    char opts[512];
    snprintf(opts, sizeof(opts), "%s%sverify_asan_link_order=0", asan ? asan : "",
             asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    testd_start(&D, NULL);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    unlink(gate);
    unlink(failf);
    unlink(one);
    unlink(held);
    testd_cleanup(&D, passed);
    unsetenv("LD_PRELOAD");
    return 0;
}

/* What a child does with its connection: rc, and a value in *value. */
typedef int (*child_fn)(burst_client *c, uint64_t arg, int64_t *value);

/* A child process that connects, runs fn and writes (rc, value) to a
 * pipe; returns the pipe's read end. */
static int
in_child(child_fn fn, uint64_t arg, pid_t *pid)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    *pid = fork();
    assert_true(*pid >= 0);
    if (*pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[0]);
        int64_t out[2] = {0, -1};
        burst_client *c;
        int rc = burst_connect(D.sock, &c);
        if (rc == 0) {
            rc = fn(c, arg, &out[1]);
            burst_close(c);
        }
        out[0] = rc;
        if (write(p[1], out, sizeof(out)) != (ssize_t)sizeof(out))
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    return p[0];
}

/* Submits a one-task exec job; its id. */
static int
child_submit(burst_client *c, uint64_t arg, int64_t *value)
{
    (void)arg;
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job = 0;
    int rc = burst_submit_map_lines(c, &fn, "x\n", 2, &opts, &job);
    *value = (int64_t)job;
    return rc;
}

/* Submits a one-task exec job running run_cmd; its id. */
static int
child_submit_cmd(burst_client *c, uint64_t arg, int64_t *value)
{
    (void)arg;
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = run_cmd};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job = 0;
    int rc = burst_submit_map_lines(c, &fn, "x\n", 2, &opts, &job);
    *value = (int64_t)job;
    return rc;
}

static void
count_event(void *arg, const burst_event *ev)
{
    (void)ev;
    (*(int *)arg)++;
}

/* Submits a one-task exec job running run_cmd that follows its job
 * (burst_opts.on_event); its id.  Fails with 1000 + n when n events came
 * with the acknowledgment. */
static int
child_submit_follow(burst_client *c, uint64_t arg, int64_t *value)
{
    (void)arg;
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = run_cmd};
    burst_opts opts = BURST_OPTS_INIT;
    int events = 0;
    opts.on_event = count_event;
    opts.event_arg = &events;
    uint64_t job = 0;
    int rc = burst_submit_map_lines(c, &fn, "x\n", 2, &opts, &job);
    *value = (int64_t)job;
    if (rc == 0 && (burst_pending(c) > 0 || events > 0))
        rc = 1000 + (int)burst_pending(c) + events;
    return rc;
}

/* The state of job arg. */
static int
child_status(burst_client *c, uint64_t arg, int64_t *value)
{
    burst_job_info info;
    int rc = burst_status(c, arg, &info);
    if (rc == 0)
        *value = info.state;
    return rc;
}

static int
submit_in_child(pid_t *pid)
{
    return in_child(child_submit, 0, pid);
}

/* Whether fd has something to read within ms. */
static bool
readable(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    return poll(&pfd, 1, ms) == 1;
}

static void
read_all(int fd, void *buf, size_t len)
{
    assert_true(readable(fd, ANSWER_MS));
    assert_int_equal(read(fd, buf, len), (ssize_t)len);
}

static void
reap(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Job id ran to success, as a new connection sees it. */
static void
expect_succeeded(uint64_t id)
{
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(c, id, &info), 0);
    assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
    burst_close(c);
}

/* The acknowledgment of a submission waits for the sync of its commit. */
static void
test_ack_waits_for_sync(void **state)
{
    (void)state;
    touch(gate);
    pid_t pid;
    int fd = submit_in_child(&pid);
    assert_false(readable(fd, HELD_MS));
    unlink(gate);
    int64_t out[2];
    read_all(fd, out, sizeof(out));
    assert_int_equal(out[0], 0);
    assert_true(out[1] > 0);
    close(fd);
    reap(pid);
    expect_succeeded((uint64_t)out[1]);
    testd_stop(&D);
    passed = true;
}

/*
 * A sync covers every commit written before it started, so a later one
 * that ends releases an earlier one still held: the first submission's
 * sync is held; the second's starts beside it (more than one sync may be
 * in flight) and, once it ends, both submissions are acknowledged while
 * the first sync still waits.
 */
static void
test_later_sync_releases_earlier(void **state)
{
    (void)state;
    touch(one);
    pid_t pa, pb;
    int fa = submit_in_child(&pa);
    for (int waited = 0; access(held, F_OK) != 0; waited += 2) {
        assert_true(waited < ANSWER_MS);
        usleep(2000);
    }
    assert_false(readable(fa, HELD_MS));
    int fb = submit_in_child(&pb);
    int64_t a[2], b[2];
    read_all(fb, b, sizeof(b));
    read_all(fa, a, sizeof(a));
    assert_int_equal(access(held, F_OK), 0); /* the first sync is still held */
    assert_int_equal(a[0], 0);
    assert_int_equal(b[0], 0);
    assert_true(b[1] > a[1] && a[1] > 0);
    unlink(held);
    close(fa);
    close(fb);
    reap(pa);
    reap(pb);
    testd_stop(&D);
    passed = true;
}

/* Submits a job in this process and waits for its end; its id. */
static uint64_t
run_job(void)
{
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &job), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), 0);
    assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
    burst_close(c);
    return job;
}

/* Waits for path to hold a number (what the job below writes): it. */
static uint64_t
wait_number(const char *path)
{
    for (int waited = 0; waited < ANSWER_MS; waited += 5) {
        FILE *f = fopen(path, "r");
        unsigned long long v = 0;
        int n = f != NULL ? fscanf(f, "%llu", &v) : 0;
        if (f != NULL)
            fclose(f);
        if (n == 1)
            return v;
        usleep(5000);
    }
    fail_msg("%s never got a number", path);
    return 0;
}

/* With every WAL sync held, submits in a child a job whose task writes its
 * job id to D.dir/ran; the child's pipe (see in_child).  The job's id, once
 * the task has run, is wait_number(ran). */
static int
submit_marked_held(char *ran, size_t size, pid_t *pid)
{
    snprintf(ran, size, "%s/ran", D.dir);
    snprintf(run_cmd, sizeof(run_cmd), "cat >/dev/null && echo $BURST_JOB_ID >%s", ran);
    touch(gate);
    return in_child(child_submit_cmd, 0, pid);
}

/*
 * A job runs while the commit that accepted it syncs: the sync and the
 * work overlap.  Its task has run (and written its job id) while the
 * acknowledgment still waits for the sync; then both come.
 */
static void
test_runs_while_syncing(void **state)
{
    (void)state;
    run_job(); /* the first job moves the id bound; the next is within it */
    char ran[256];
    pid_t pid;
    int fd = submit_marked_held(ran, sizeof(ran), &pid);
    uint64_t id = wait_number(ran);
    assert_false(readable(fd, HELD_MS)); /* ran, not yet acknowledged */
    unlink(gate);
    int64_t out[2];
    read_all(fd, out, sizeof(out));
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], (int64_t)id);
    close(fd);
    reap(pid);
    expect_succeeded(id);
    testd_stop(&D);
    passed = true;
}

/*
 * A submission that follows its job is acknowledged once its own commit is
 * durable, even when the job's later commits are not: the acknowledgment
 * goes, and the events its subscription replays wait for those commits'
 * sync.  A two-task job holds both slots of the quota while the follower's
 * acceptance syncs and that sync is held (one); then the slots free, the
 * follower starts (a commit after that sync's start, so not covered by it)
 * and every later sync is held (gate) until the end.
 */
static void
test_ack_not_held_by_later_commits(void **state)
{
    (void)state;
    run_job(); /* the first job moves the id bound; the next is within it */
    char ran[200], release[200], busy[200], free_slots[200];
    snprintf(ran, sizeof(ran), "%s/ran", D.dir);
    snprintf(release, sizeof(release), "%s/release", D.dir);
    snprintf(busy, sizeof(busy), "%s/busy", D.dir);
    snprintf(free_slots, sizeof(free_slots), "%s/free", D.dir);
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    char blocker[512];
    snprintf(blocker, sizeof(blocker),
             "cat >/dev/null && touch %s.$BURST_TASK_INDEX && "
             "while [ ! -e %s ]; do sleep 0.01; done",
             busy, free_slots);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = blocker};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t both;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\nb\n", 4, &opts, &both), 0);
    char busy0[208], busy1[208];
    snprintf(busy0, sizeof(busy0), "%s.0", busy);
    snprintf(busy1, sizeof(busy1), "%s.1", busy);
    for (int waited = 0; access(busy0, F_OK) != 0 || access(busy1, F_OK) != 0;
         waited += 2) {
        assert_true(waited < ANSWER_MS);
        usleep(2000);
    }
    snprintf(run_cmd, sizeof(run_cmd),
             "cat >/dev/null && echo $BURST_JOB_ID >%s && "
             "while [ ! -e %s ]; do sleep 0.01; done",
             ran, release);
    /* Its reply waits until all is durable: no sync of the blocker's
     * commits is left to take the one below. */
    assert_true(burst_quota(c, -1, NULL) >= 0);
    touch(one);
    touch(gate);
    pid_t pid;
    int fd = in_child(child_submit_follow, 0, &pid);
    for (int waited = 0; access(held, F_OK) != 0; waited += 2) {
        assert_true(waited < ANSWER_MS);
        usleep(2000);
    }
    /* The slots free, and the follower runs (until release). */
    touch(free_slots);
    uint64_t id = wait_number(ran);
    assert_false(readable(fd, HELD_MS)); /* running, not yet acknowledged */
    unlink(held); /* the acceptance's sync ends; later ones stay held */
    int64_t out[2];
    read_all(fd, out, sizeof(out));
    assert_int_equal(out[0], 0); /* acknowledged, with no event */
    assert_int_equal(out[1], (int64_t)id);
    assert_int_equal(access(gate, F_OK), 0);
    unlink(gate);
    touch(release);
    close(fd);
    reap(pid);
    expect_succeeded(id);
    expect_succeeded(both);
    burst_close(c);
    testd_stop(&D);
    passed = true;
}

/*
 * A power cut before that sync: the job ran, but the ledger on disk never
 * had it, and its client was never told it was accepted.  Simulated by
 * killing burstd and cutting the WAL back to what the last sync covered.
 * After the restart the job is unknown, and its id is never given to
 * another job (whatever it left in storage under that id stays its own);
 * after a clean stop, ids go on without a gap.
 */
static void
test_power_cut_forgets_unacknowledged(void **state)
{
    (void)state;
    uint64_t first = run_job();
    char ran[256];
    pid_t pid;
    int fd = submit_marked_held(ran, sizeof(ran), &pid);
    uint64_t lost = wait_number(ran);
    assert_true(lost > first);
    testd_kill9(&D);
    int64_t out[2];
    read_all(fd, out, sizeof(out));
    assert_int_not_equal(out[0], 0); /* never acknowledged */
    close(fd);
    reap(pid);

    FILE *f = fopen(sizes, "r");
    assert_non_null(f);
    long long synced = -1;
    assert_int_equal(fscanf(f, "%lld", &synced), 1);
    fclose(f);
    char wal[192];
    snprintf(wal, sizeof(wal), "%s/ledger.db-wal", D.state);
    struct stat st;
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size > synced); /* the job's commit was written, not synced */
    assert_int_equal(truncate(wal, synced), 0);
    unlink(gate);

    testd_start(&D, NULL);
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_job_info info;
    assert_int_equal(burst_status(c, first, &info), 0);
    assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
    assert_int_equal(burst_status(c, lost, &info), BURST_ENOJOB);
    burst_close(c);
    uint64_t next = run_job();
    assert_true(next > lost);
    testd_stop(&D);
    testd_start(&D, NULL);
    assert_int_equal(run_job(), next + 1);
    testd_stop(&D);
    passed = true;
}

/* The WAL's size the last successful sync covered, and its size now. */
static void
wal_sizes(long long *synced, long long *now)
{
    *synced = -1;
    FILE *f = fopen(sizes, "r");
    if (f != NULL) {
        if (fscanf(f, "%lld", synced) != 1)
            *synced = -1;
        fclose(f);
    }
    char wal[192];
    struct stat st;
    snprintf(wal, sizeof(wal), "%s/ledger.db-wal", D.state);
    assert_int_equal(stat(wal, &st), 0);
    *now = (long long)st.st_size;
}

/*
 * A commit nobody waits for (a task's dispatch and start, with no
 * subscriber and no end) shares a later commit's sync -- but is synced by
 * itself soon when no such commit comes.  Nobody asks the daemon anything
 * meanwhile: a question would make it sync at once.
 */
static void
test_unawaited_commit_synced(void **state)
{
    (void)state;
    char started[256], cmd[512];
    snprintf(started, sizeof(started), "%s/started", D.dir);
    snprintf(cmd, sizeof(cmd), "touch %s && exec sleep 60", started);
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job = 0;
    assert_int_equal(burst_submit_map_lines(c, &fn, "x\n", 2, &opts, &job), 0);
    int64_t t0 = testd_now_ms();
    while (access(started, F_OK) != 0) {
        assert_true(testd_now_ms() - t0 < ANSWER_MS);
        testd_sleep_ms(10);
    }
    /* Until the WAL stops changing and a sync has covered all of it. */
    long long synced, now, last = -1;
    for (;;) {
        wal_sizes(&synced, &now);
        if (synced == now && now == last)
            break;
        last = now;
        assert_true(testd_now_ms() - t0 < ANSWER_MS);
        testd_sleep_ms(50);
    }
    burst_job_info info;
    assert_int_equal(burst_cancel(c, job), 0);
    assert_int_equal(burst_wait(c, job, &info), BURST_ECANCELLED);
    assert_int_equal(info.state, BURST_JOB_CANCELLED);
    burst_close(c);
    testd_stop(&D);
    passed = true;
}

/* What a follower has heard: task 0's end, its job's end. */
struct heard {
    bool task0_done;
    bool job_done;
};

static void
note_event(void *arg, const burst_event *ev)
{
    struct heard *h = arg;
    if (ev->type == BURST_EV_TASK && ev->task == 0 && ev->task_state == BURST_TASK_SUCCEEDED)
        h->task0_done = true;
    if (ev->type == BURST_EV_JOB && burst_job_state_is_final(ev->job_state))
        h->job_done = true;
}

/* Runs c's callbacks for up to ms, until *flag. */
static void
dispatch_until(burst_client *c, const bool *flag, int ms)
{
    int64_t t0 = testd_now_ms();
    while (!*flag && testd_now_ms() - t0 < ms) {
        if (burst_pending(c) == 0 && !readable(burst_fd(c), 10))
            continue;
        assert_true(burst_dispatch(c) >= 0);
    }
}

/*
 * A follower hears of a task's end only once it is durable, and while
 * the job still runs: the end of a task somebody follows is synced soon
 * by itself, not held for the job's end.  Task 0 ends while syncs are
 * held; task 1 runs until the test has heard task 0's end.
 */
static void
test_followed_progress_synced(void **state)
{
    (void)state;
    char go[200], release[200], cmd[640];
    snprintf(go, sizeof(go), "%s/go", D.dir);
    snprintf(release, sizeof(release), "%s/release", D.dir);
    snprintf(cmd, sizeof(cmd),
             "cat >/dev/null; if [ $BURST_TASK_INDEX = 0 ]; then f=%s; else f=%s; fi; "
             "while [ ! -e $f ]; do sleep 0.01; done",
             go, release);
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    burst_opts opts = BURST_OPTS_INIT;
    struct heard h = {0};
    opts.on_event = note_event;
    opts.event_arg = &h;
    uint64_t job = 0;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\nb\n", 4, &opts, &job), 0);
    touch(gate);
    touch(go);
    dispatch_until(c, &h.task0_done, HELD_MS);
    assert_false(h.task0_done); /* ended, perhaps, but not durable */
    unlink(gate);
    dispatch_until(c, &h.task0_done, ANSWER_MS);
    assert_true(h.task0_done);
    assert_false(h.job_done);
    touch(release);
    dispatch_until(c, &h.job_done, ANSWER_MS);
    assert_true(h.job_done);
    burst_close(c);
    expect_succeeded(job);
    testd_stop(&D);
    passed = true;
}

/*
 * A client already connected asks for the job list while another's
 * submission is committed but not synced: its reply, which would show that
 * job, waits for the sync too; then it shows the job.
 */
static void
test_reads_wait_for_sync(void **state)
{
    (void)state;
    int to_child[2], from_child[2];
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(from_child), 0);
    pid_t reader = fork();
    assert_true(reader >= 0);
    if (reader == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        burst_client *c;
        if (burst_connect(D.sock, &c) != 0)
            _exit(1);
        char go;
        if (write(from_child[1], "r", 1) != 1 || read(to_child[0], &go, 1) != 1)
            _exit(1);
        burst_job_info *jobs = NULL;
        size_t n = 0;
        int64_t out[2] = {burst_jobs(c, 1, &jobs, &n), 0};
        for (size_t i = 0; i < n; i++)
            if (jobs[i].id > (uint64_t)out[1])
                out[1] = (int64_t)jobs[i].id;
        free(jobs);
        burst_close(c);
        if (write(from_child[1], out, sizeof(out)) != (ssize_t)sizeof(out))
            _exit(1);
        _exit(0);
    }
    close(to_child[0]);
    close(from_child[1]);
    char ready;
    read_all(from_child[0], &ready, 1);

    touch(gate);
    pid_t submitter;
    int fd = submit_in_child(&submitter);
    assert_false(readable(fd, HELD_MS)); /* committed, not synced */
    assert_int_equal(write(to_child[1], "g", 1), 1);
    assert_false(readable(from_child[0], HELD_MS));
    unlink(gate);

    int64_t sub[2], list[2];
    read_all(fd, sub, sizeof(sub));
    read_all(from_child[0], list, sizeof(list));
    assert_int_equal(sub[0], 0);
    assert_int_equal(list[0], 0);
    assert_int_equal(list[1], sub[1]); /* the list, once out, shows the job */
    reap(submitter);
    reap(reader);
    close(fd);
    close(to_child[1]);
    close(from_child[0]);
    testd_stop(&D);
    passed = true;
}

/*
 * A reply about one job waits for that job's changes only: while another
 * job's acceptance waits for its sync, the status of a finished job comes
 * at once, and the status of the new job (whose id a client could guess)
 * comes only after the sync.
 */
static void
test_status_waits_for_its_job(void **state)
{
    (void)state;
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t done;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &done), 0);
    assert_int_equal(burst_wait(c, done, NULL), 0);
    burst_close(c);

    touch(gate);
    pid_t submitter, old_reader, new_reader;
    int sub = submit_in_child(&submitter);
    assert_false(readable(sub, HELD_MS)); /* the new job is committed, not synced */
    int old_fd = in_child(child_status, done, &old_reader);
    int64_t out[2];
    read_all(old_fd, out, sizeof(out)); /* the gate is still closed */
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], BURST_JOB_SUCCEEDED);
    int new_fd = in_child(child_status, done + 1, &new_reader);
    assert_false(readable(new_fd, HELD_MS));
    unlink(gate);
    read_all(new_fd, out, sizeof(out));
    assert_int_equal(out[0], 0);
    int64_t acked[2];
    read_all(sub, acked, sizeof(acked));
    assert_int_equal(acked[0], 0);
    assert_int_equal(acked[1], (int64_t)(done + 1));
    reap(submitter);
    reap(old_reader);
    reap(new_reader);
    close(sub);
    close(old_fd);
    close(new_fd);
    testd_stop(&D);
    passed = true;
}

/* A failed sync stops burstd (exit 1, said why) before anyone hears of the
 * commit; a restart on the same state serves again. */
static void
test_failed_sync_stops(void **state)
{
    (void)state;
    touch(failf);
    pid_t pid;
    int fd = submit_in_child(&pid);
    int64_t out[2];
    read_all(fd, out, sizeof(out));
    assert_int_not_equal(out[0], 0); /* never acknowledged */
    close(fd);
    reap(pid);
    int status;
    assert_int_equal(waitpid(D.pid, &status, 0), D.pid);
    D.pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    FILE *f = fopen(D.log, "r");
    assert_non_null(f);
    char line[1024];
    bool said = false;
    while (fgets(line, sizeof(line), f) != NULL)
        said = said || strstr(line, "sync to disk failed") != NULL;
    fclose(f);
    assert_true(said);

    unlink(failf);
    testd_start(&D, NULL);
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job;
    assert_int_equal(burst_submit_map_lines(c, &fn, "y\n", 2, &opts, &job), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), 0);
    assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
    burst_close(c);
    testd_stop(&D);
    passed = true;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ack_waits_for_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reads_wait_for_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_later_sync_releases_earlier, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_status_waits_for_its_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_while_syncing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_not_held_by_later_commits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unawaited_commit_synced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_followed_progress_synced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_cut_forgets_unacknowledged, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
