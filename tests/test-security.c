/*
 * tests/test-security.c - bounded connections and subscriptions against a
 * live burstd, and a second uid through libburst.
 *
 * Each test starts its own daemon (max_connections = 64,
 * max_connections_per_uid = 8, limits.max_subscriptions = 3,
 * idle_timeout_ms = 500), so the connection counts of one test never leak
 * into the next.  The flood tests hold every slot in the three ways a
 * client can -- idle after a valid hello, stuck in the middle of a frame,
 * working (subscribed) -- and check what an honest client then gets: in
 * at once by evicting the longest idle, in after the idle timeout, or a
 * clear "busy" refusal until a slot frees.  As root, a child that drops
 * to nobody checks the per-uid cap and that libburst gets a permission
 * error for another user's job (tests/test-security.sh covers the CLI).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "burst.h"
#include "testd.h"
#include "frame.h"
#include "msg.h"

#define MAX_CONNS 64
#define PER_UID 8
#define MAX_SUBS 3
#define SAFETY_MS 30000 /* only a safety net: never a speed assertion */

static struct testd D;

static int
daemon_setup(void **state)
{
    (void)state;
    char cfg[256];
    snprintf(cfg, sizeof(cfg),
             "idle_timeout_ms = 500\nmax_connections = %d\nmax_connections_per_uid = %d\n"
             "limits.max_subscriptions = %d\n",
             MAX_CONNS, PER_UID, MAX_SUBS);
    testd_init(&D, "sec", cfg);
    /* Traversable, so that a second uid can reach the socket when the
     * test opens it; the state dir inside stays burstd's own 0700. */
    assert_int_equal(chmod(D.dir, 0755), 0);
    static const char *const extra[] = {"--quota", "4", NULL};
    testd_start(&D, extra);
    return 0;
}

/* SIGTERM; the daemon must exit 0 by itself. */
static int
daemon_teardown(void **state)
{
    (void)state;
    testd_stop(&D);
    testd_cleanup(&D, true);
    return 0;
}

/* ---- raw protocol ---- */

static int
raw_connect(void)
{
    int fd = testd_connect(D.sock);
    assert_true(fd >= 0);
    return fd;
}

/* Final job events read so far, by reply_next on its way to a reply too. */
static int finals;

static void
count_finals(const char *payload, size_t len)
{
    struct proto_limits lim;
    proto_limits_default(&lim);
    struct proto_events ev;
    void *priv;
    assert_int_equal(proto_decode_events(payload, len, &lim, &ev, &priv), 0);
    for (uint32_t i = 0; i < ev.nitems; i++)
        if (ev.items[i].type == BURST_EV_JOB &&
            burst_job_state_is_final(ev.items[i].job_state))
            finals++;
    proto_events_free(priv);
}

/* The next reply's error code (0 when ok), skipping event frames; 1 at EOF.
 * msg gets the error's message; *value a submit reply's job id. */
static int
reply_next(int fd, enum proto_op op, char *msg, size_t msgsize, uint64_t *value)
{
    for (;;) {
        char *payload;
        ssize_t n = testd_read_frame(fd, SAFETY_MS, &payload);
        if (n < 0)
            return 1;
        size_t len = (size_t)n;
        assert_true(len > 0);
        enum proto_kind kind;
        uint64_t re;
        assert_int_equal(proto_peek(payload, len, &kind, &re), 0);
        if (kind == PROTO_KIND_EVENT) {
            count_finals(payload, len);
            free(payload);
            continue;
        }
        struct proto_limits lim;
        proto_limits_default(&lim);
        struct proto_reply rep;
        assert_int_equal(proto_decode_reply(payload, len, op, &lim, &rep), 0);
        int code = rep.ok ? 0 : rep.u.error.code;
        if (!rep.ok && msg != NULL)
            proto_str_copy(msg, msgsize, rep.u.error.message);
        if (rep.ok && op == PROTO_OP_SUBMIT && value != NULL)
            *value = rep.u.submit.job;
        proto_reply_free(&rep);
        free(payload);
        return code;
    }
}

static void
send_request(int fd, const struct proto_request *req)
{
    struct proto_buf b;
    proto_buf_init(&b);
    assert_int_equal(proto_encode_request(&b, req), 0);
    testd_write_all(fd, b.data, b.len);
    proto_buf_free(&b);
}

/* hello; returns the reply's code (0, an error, or 1 when dropped). */
static int
raw_hello(int fd, char *msg, size_t msgsize)
{
    struct proto_request req = {.op = PROTO_OP_HELLO, .id = 1};
    req.u.hello.version = PROTO_VERSION;
    req.u.hello.client = proto_str_c("test-security");
    send_request(fd, &req);
    return reply_next(fd, PROTO_OP_HELLO, msg, msgsize, NULL);
}

static int
raw_subscribe(int fd, uint64_t job, char *msg, size_t msgsize)
{
    struct proto_request req = {.op = PROTO_OP_SUBSCRIBE, .id = 2};
    req.u.subscribe.job = job;
    send_request(fd, &req);
    return reply_next(fd, PROTO_OP_SUBSCRIBE, msg, msgsize, NULL);
}

/* A job of one exec task running cmd: "cat" ends at once, "sleep 600"
 * keeps the job (and its subscriptions) alive until it is cancelled. */
static int
raw_submit(int fd, bool subscribe, const char *cmd, uint64_t *job, char *msg,
           size_t msgsize)
{
    struct proto_str in = proto_str_c("x\n");
    struct proto_request req = {.op = PROTO_OP_SUBMIT, .id = 3};
    req.u.submit.kind = BURST_KIND_MAP;
    req.u.submit.fn.kind = BURST_FN_EXEC;
    req.u.submit.fn.cmd = proto_str_c(cmd);
    req.u.submit.ninputs = 1;
    req.u.submit.inputs = &in;
    req.u.submit.opts.chunksize = 1;
    req.u.submit.subscribe = subscribe;
    send_request(fd, &req);
    return reply_next(fd, PROTO_OP_SUBMIT, msg, msgsize, job);
}

static int
raw_cancel(int fd, uint64_t job)
{
    struct proto_request req = {.op = PROTO_OP_CANCEL, .id = 5};
    req.u.job.job = job;
    send_request(fd, &req);
    return reply_next(fd, PROTO_OP_CANCEL, NULL, 0, NULL);
}

/* Reads fd's frames until finals (see reply_next) reaches n, then
 * starts it again from 0. */
static void
final_events(int fd, int n)
{
    while (finals < n) {
        char *payload;
        ssize_t len = testd_read_frame(fd, SAFETY_MS, &payload);
        assert_true(len > 0);
        enum proto_kind kind;
        uint64_t re;
        assert_int_equal(proto_peek(payload, (size_t)len, &kind, &re), 0);
        assert_int_equal(kind, PROTO_KIND_EVENT);
        count_finals(payload, (size_t)len);
        free(payload);
    }
    assert_int_equal(finals, n);
    finals = 0;
}

/* A quota read: the cheapest proof that a connection is still served. */
static int
raw_quota(int fd)
{
    struct proto_request req = {.op = PROTO_OP_QUOTA, .id = 4};
    send_request(fd, &req);
    return reply_next(fd, PROTO_OP_QUOTA, NULL, 0, NULL);
}

/* True when the daemon closed fd (EOF, after any frames it still sent). */
static bool
is_closed(int fd)
{
    char buf[4096];
    int64_t end = testd_now_ms() + SAFETY_MS;
    while (testd_now_ms() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 1000) < 0 && errno != EINTR)
            return false;
        if (!(p.revents & (POLLIN | POLLHUP)))
            continue;
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
    }
    return false;
}

/* An honest client's whole round trip through libburst: connect, submit,
 * wait, read the results.  Returns 0 or the first error. */
static int
honest_map(void)
{
    burst_client *c;
    int rc = burst_connect(D.sock, &c);
    if (rc != 0)
        return rc;
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    burst_bytes in[2] = {{"ab\n", 3}, {"cd\n", 3}};
    burst_opts opts = BURST_OPTS_INIT;
    burst_bytes *out = NULL;
    rc = burst_map(c, &fn, in, 2, &opts, &out);
    if (rc == 0) {
        assert_int_equal(out[0].len, 3);
        assert_memory_equal(out[0].data, "AB\n", 3);
        assert_memory_equal(out[1].data, "CD\n", 3);
        burst_free_results(out, 2);
    }
    burst_close(c);
    return rc;
}

/* Retries honest_map until it works; a refusal on the way must be "busy". */
static void
honest_map_eventually(void)
{
    int64_t end = testd_now_ms() + SAFETY_MS;
    for (;;) {
        int rc = honest_map();
        if (rc == 0)
            return;
        if (rc != BURST_EBUSY && rc != BURST_ECONNECT && rc != BURST_EPROTO)
            fail_msg("honest client: unexpected error %s", burst_error_name(rc));
        if (testd_now_ms() > end)
            fail_msg("honest client never got in (last error %s)", burst_error_name(rc));
        testd_sleep_ms(50);
    }
}

/* ---- subscriptions per connection ---- */

static void
test_subscription_limit(void **state)
{
    (void)state;
    int fd = raw_connect();
    assert_int_equal(raw_hello(fd, NULL, 0), 0);
    uint64_t jobs[MAX_SUBS + 1];
    char msg[512];
    for (int i = 0; i <= MAX_SUBS; i++)
        assert_int_equal(raw_submit(fd, false, "sleep 600", &jobs[i], msg, sizeof(msg)),
                         0);
    for (int i = 0; i < MAX_SUBS; i++)
        assert_int_equal(raw_subscribe(fd, jobs[i], msg, sizeof(msg)), 0);

    /* One more job is refused, clearly... */
    msg[0] = '\0';
    assert_int_equal(raw_subscribe(fd, jobs[MAX_SUBS], msg, sizeof(msg)), BURST_ETOOBIG);
    assert_non_null(strstr(msg, "max_subscriptions"));
    char want[64];
    snprintf(want, sizeof(want), "job %llu", (unsigned long long)jobs[MAX_SUBS]);
    assert_non_null(strstr(msg, want));
    /* ...and so is a submission that would add a subscription, before any
     * job is created. */
    uint64_t extra = 0;
    assert_int_equal(raw_submit(fd, true, "cat", &extra, msg, sizeof(msg)),
                     BURST_ETOOBIG);
    assert_non_null(strstr(msg, "max_subscriptions"));
    /* Renewing one it has (a replay) costs nothing. */
    assert_int_equal(raw_subscribe(fd, jobs[0], msg, sizeof(msg)), 0);
    /* Unsubscribing frees a slot. */
    struct proto_request req = {.op = PROTO_OP_UNSUBSCRIBE, .id = 7};
    req.u.job.job = jobs[1];
    send_request(fd, &req);
    assert_int_equal(reply_next(fd, PROTO_OP_UNSUBSCRIBE, NULL, 0, NULL), 0);
    assert_int_equal(raw_subscribe(fd, jobs[MAX_SUBS], msg, sizeof(msg)), 0);
    assert_int_equal(raw_quota(fd), 0);
    /* A job's final event ends its subscriptions: once the jobs are
     * cancelled, the connection follows nothing and may subscribe again
     * without having unsubscribed. */
    finals = 0;
    for (int i = 0; i <= MAX_SUBS; i++)
        assert_int_equal(raw_cancel(fd, jobs[i]), 0);
    final_events(fd, MAX_SUBS);
    for (int i = 0; i < MAX_SUBS; i++)
        assert_int_equal(raw_submit(fd, true, "cat", &jobs[i], msg, sizeof(msg)), 0);
    final_events(fd, MAX_SUBS);
    for (int i = 0; i < MAX_SUBS; i++)
        assert_int_equal(raw_submit(fd, true, "cat", &jobs[i], msg, sizeof(msg)), 0);
    /* Subscribing to an ended job replays its events, final one included,
     * and ends there too. */
    final_events(fd, MAX_SUBS);
    for (int i = 0; i <= MAX_SUBS; i++) {
        assert_int_equal(raw_subscribe(fd, jobs[i % MAX_SUBS], msg, sizeof(msg)), 0);
        final_events(fd, 1);
    }
    assert_int_equal(raw_quota(fd), 0);
    close(fd);

    /* Another connection has its own count. */
    fd = raw_connect();
    assert_int_equal(raw_hello(fd, NULL, 0), 0);
    assert_int_equal(raw_submit(fd, true, "cat", &extra, msg, sizeof(msg)), 0);
    assert_true(extra > jobs[MAX_SUBS]);
    close(fd);
    honest_map_eventually();
}

/* ---- connection floods ---- */

/* Every slot held by a client that said hello and then sits idle: the
 * honest client gets in at once, and the longest idle one goes. */
static void
test_flood_idle(void **state)
{
    (void)state;
    int fds[MAX_CONNS];
    for (int i = 0; i < MAX_CONNS; i++) {
        fds[i] = raw_connect();
        assert_int_equal(raw_hello(fds[i], NULL, 0), 0);
    }
    assert_int_equal(honest_map(), 0);
    /* The oldest idle connection was dropped with a reason... */
    char msg[512] = "";
    assert_int_equal(reply_next(fds[0], PROTO_OP_HELLO, msg, sizeof(msg), NULL),
                     BURST_EBUSY);
    assert_non_null(strstr(msg, "idle"));
    assert_true(is_closed(fds[0]));
    close(fds[0]);
    /* ...and every other one is still served. */
    for (int i = 1; i < MAX_CONNS; i++) {
        assert_int_equal(raw_quota(fds[i]), 0);
        close(fds[i]);
    }
    honest_map_eventually();
}

/* Every slot held by a client stuck in the middle of a frame: they are not
 * idle (they may be sending a big job), but idle_timeout_ms drops them,
 * and the honest client gets in. */
static void
test_flood_half_frames(void **state)
{
    (void)state;
    int fds[MAX_CONNS];
    for (int i = 0; i < MAX_CONNS; i++) {
        fds[i] = raw_connect();
        if (i % 2 == 0)
            assert_int_equal(raw_hello(fds[i], NULL, 0), 0);
        char hdr[FRAME_HEADER_SIZE];
        frame_put_header(hdr, 100);
        testd_write_all(fds[i], hdr, sizeof(hdr));
        testd_write_all(fds[i], "\x82", 1); /* and then nothing */
    }
    honest_map_eventually();
    for (int i = 0; i < MAX_CONNS; i++) {
        assert_true(is_closed(fds[i]));
        close(fds[i]);
    }
    assert_int_equal(honest_map(), 0);
}

/* Every slot held by a working client (subscribed to a job): nobody is
 * evicted; the extra client gets "busy" and is closed; once a slot frees
 * the honest client gets in. */
static void
test_flood_working(void **state)
{
    (void)state;
    int fds[MAX_CONNS];
    uint64_t job = 0;
    char msg[512];
    for (int i = 0; i < MAX_CONNS; i++) {
        fds[i] = raw_connect();
        assert_int_equal(raw_hello(fds[i], NULL, 0), 0);
        /* A job that does not end: its subscribers stay busy. */
        if (i == 0)
            assert_int_equal(
                raw_submit(fds[0], false, "sleep 600", &job, msg, sizeof(msg)), 0);
        assert_int_equal(raw_subscribe(fds[i], job, msg, sizeof(msg)), 0);
    }
    int extra = raw_connect();
    msg[0] = '\0';
    assert_int_equal(reply_next(extra, PROTO_OP_HELLO, msg, sizeof(msg), NULL),
                     BURST_EBUSY);
    assert_non_null(strstr(msg, "too many connections"));
    assert_true(is_closed(extra));
    close(extra);
    /* libburst reports the daemon's "busy" when that frame arrives before
     * the connection's reset does (the daemon closes with our hello unread,
     * which may reset the stream first): either way a clear refusal. */
    int rc = honest_map();
    assert_true(rc == BURST_EBUSY || rc == BURST_ECONNECT);
    for (int i = 0; i < MAX_CONNS; i++)
        assert_int_equal(raw_quota(fds[i]), 0);
    close(fds[MAX_CONNS - 1]);
    honest_map_eventually();
    assert_int_equal(raw_cancel(fds[0], job), 0);
    for (int i = 0; i < MAX_CONNS - 1; i++)
        close(fds[i]);
}

/* ---- a second uid (root only) ---- */

static void
event_ignored(void *arg, const burst_event *ev)
{
    (void)arg;
    (void)ev;
}

/* In the child, as nobody: returns 0 or the number of the failed check. */
static int
as_nobody_checks(uint64_t root_job)
{
    if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0)
        return 1;
    burst_client *c;
    if (burst_connect(D.sock, &c) != 0)
        return 2;
    char want[64];
    snprintf(want, sizeof(want), "job %llu", (unsigned long long)root_job);
    int rc = burst_subscribe(c, root_job, 0, event_ignored, NULL);
    if (rc != BURST_EPERM || strstr(burst_last_error(c), "permission") == NULL ||
        strstr(burst_last_error(c), want) == NULL)
        return 3;
    burst_job_info info;
    if (burst_status(c, root_job, &info) != BURST_EPERM)
        return 4;
    if (burst_cancel(c, root_job) != BURST_EPERM)
        return 5;
    if (burst_wait(c, root_job, &info) != BURST_EPERM)
        return 6;
    /* Its own job works, subscription included. */
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t mine;
    if (burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &mine) != 0)
        return 7;
    if (burst_subscribe(c, mine, 0, event_ignored, NULL) != 0)
        return 8;
    if (burst_wait(c, mine, &info) != 0)
        return 9;
    burst_close(c);

    /* The per-uid cap: PER_UID connections, then "busy". */
    int fds[PER_UID + 1];
    for (int i = 0; i < PER_UID; i++) {
        fds[i] = testd_connect(D.sock);
        if (fds[i] < 0 || raw_hello(fds[i], NULL, 0) != 0)
            return 10;
    }
    char msg[512] = "";
    fds[PER_UID] = testd_connect(D.sock);
    if (fds[PER_UID] < 0)
        return 11;
    if (reply_next(fds[PER_UID], PROTO_OP_HELLO, msg, sizeof(msg), NULL) != BURST_EBUSY ||
        strstr(msg, "max_connections_per_uid") == NULL || !is_closed(fds[PER_UID]))
        return 11;
    for (int i = 0; i <= PER_UID; i++)
        close(fds[i]);
    return 0;
}

static void
test_second_uid(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        skip();
        return;
    }
    /* Deliberately opened to nobody for this test (burstd makes it 0600). */
    struct stat sb;
    assert_int_equal(stat(D.sock, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(chmod(D.sock, 0666), 0);

    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "sleep 300"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t root_job;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &root_job), 0);

    /* Hold PER_UID root connections too: admins are not capped, and the
     * child's cap counts only its own. */
    int held[PER_UID];
    for (int i = 0; i < PER_UID; i++) {
        held[i] = raw_connect();
        assert_int_equal(raw_hello(held[i], NULL, 0), 0);
    }
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(as_nobody_checks(root_job));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("check %d failed as nobody", WEXITSTATUS(status));
    for (int i = 0; i < PER_UID; i++) {
        assert_int_equal(raw_quota(held[i]), 0);
        close(held[i]);
    }
    /* Untouched by nobody's cancel. */
    burst_job_info info;
    assert_int_equal(burst_status(c, root_job, &info), 0);
    assert_false(burst_job_state_is_final(info.state));
    assert_int_equal(burst_cancel(c, root_job), 0);
    burst_close(c);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_subscription_limit, daemon_setup,
                                        daemon_teardown),
        cmocka_unit_test_setup_teardown(test_flood_idle, daemon_setup, daemon_teardown),
        cmocka_unit_test_setup_teardown(test_flood_half_frames, daemon_setup,
                                        daemon_teardown),
        cmocka_unit_test_setup_teardown(test_flood_working, daemon_setup,
                                        daemon_teardown),
        cmocka_unit_test_setup_teardown(test_second_uid, daemon_setup, daemon_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
