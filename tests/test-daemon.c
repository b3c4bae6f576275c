/*
 * tests/test-daemon.c - a live burstd against hostile and broken input.
 *
 * Starts the real daemon on a temporary socket and state dir, throws a table
 * of bad frames at it (each must get the documented error, and either keep
 * the connection usable or drop it), checks start-up errors and a clean
 * SIGTERM, and proves after every abuse that another client is still served
 * correctly through libburst.
 */
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
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
#include "frame.h"
#include "msg.h"
#include "testd.h"

static struct testd D;

/* Starts burstd with extra config lines; waits until it answers. */
static void
daemon_start(struct testd *d, const char *config)
{
    testd_init(d, "daemon", config);
    testd_start(d, NULL);
}

/* SIGTERM, and the daemon must exit 0 by itself. */
static void
daemon_stop(struct testd *d)
{
    testd_stop(d);
    testd_cleanup(d, true);
}

static int
raw_connect(const char *path)
{
    int fd = testd_connect(path);
    assert_true(fd >= 0);
    return fd;
}

/* The error code of the next reply (0 if it was ok), or 1 at EOF. */
static int
reply_code(int fd, enum proto_op op, char *msg, size_t msgsize)
{
    char *payload;
    ssize_t len = testd_read_frame(fd, 20000, &payload);
    if (len < 0)
        return 1;
    struct proto_limits lim;
    proto_limits_default(&lim);
    struct proto_reply rep;
    int rc = proto_decode_reply(payload, (size_t)len, op, &lim, &rep);
    assert_int_equal(rc, 0);
    int code = rep.ok ? 0 : rep.u.error.code;
    if (!rep.ok && msg != NULL)
        proto_str_copy(msg, msgsize, rep.u.error.message);
    proto_reply_free(&rep);
    free(payload);
    return code;
}

/* True when the daemon closed the connection (EOF within the timeout). */
static bool
is_closed(int fd)
{
    char c;
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 20000) <= 0)
        return false;
    return read(fd, &c, 1) == 0;
}

static void
send_payload(int fd, const char *payload, size_t len)
{
    char hdr[4];
    frame_put_header(hdr, (uint32_t)len);
    testd_write_all(fd, hdr, 4);
    testd_write_all(fd, payload, len);
}

static void
send_hello(int fd)
{
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_request req = {.op = PROTO_OP_HELLO, .id = 1};
    req.u.hello.version = PROTO_VERSION;
    req.u.hello.client = proto_str_c("test-daemon");
    assert_int_equal(proto_encode_request(&b, &req), 0);
    testd_write_all(fd, b.data, b.len);
    proto_buf_free(&b);
    assert_int_equal(reply_code(fd, PROTO_OP_HELLO, NULL, 0), 0);
}

/* A payload built with the msgpack packer: {"op": op, "id": 9, extra...} */
static void
pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* The proof after each abuse: a fresh client still gets correct work done. */
static void
still_serves(void)
{
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    burst_bytes in[2] = {{"ab\n", 3}, {"cd\n", 3}};
    burst_opts opts = BURST_OPTS_INIT;
    burst_bytes *out = NULL;
    assert_int_equal(burst_map(c, &fn, in, 2, &opts, &out), 0);
    assert_int_equal(out[0].len, 3);
    assert_memory_equal(out[0].data, "AB\n", 3);
    assert_memory_equal(out[1].data, "CD\n", 3);
    burst_free_results(out, 2);
    burst_close(c);
}

static int
group_setup(void **state)
{
    (void)state;
    daemon_start(&D, "idle_timeout_ms = 500\nlimits.max_frame = 65536\n"
                     "limits.max_subscriptions = 77\n");
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    daemon_stop(&D);
    return 0;
}

/* ---- frame-level abuse: error, then the connection is dropped ---- */

static void
test_oversized_frame(void **state)
{
    (void)state;
    int fd = raw_connect(D.sock);
    char hdr[4];
    frame_put_header(hdr, 1u << 30); /* 1 GiB announced: refused at once */
    testd_write_all(fd, hdr, 4);
    char msg[256] = "";
    assert_int_equal(reply_code(fd, PROTO_OP_HELLO, msg, sizeof(msg)), BURST_ETOOBIG);
    assert_non_null(strstr(msg, "limit"));
    assert_true(is_closed(fd));
    close(fd);
    still_serves();
}

static void
test_zero_frame(void **state)
{
    (void)state;
    int fd = raw_connect(D.sock);
    char hdr[4] = {0, 0, 0, 0};
    testd_write_all(fd, hdr, 4);
    assert_int_equal(reply_code(fd, PROTO_OP_HELLO, NULL, 0), BURST_EPROTO);
    assert_true(is_closed(fd));
    close(fd);
    still_serves();
}

static void
test_garbage(void **state)
{
    (void)state;
    /* Not msgpack at all, a truncated map, and a map inside an array. */
    const char *payloads[] = {"\xc1\xc1\xc1 garbage", "\x82\xa2op", "\x91\x80"};
    size_t lens[] = {11, 4, 2};
    for (int i = 0; i < 3; i++) {
        int fd = raw_connect(D.sock);
        send_payload(fd, payloads[i], lens[i]);
        assert_int_equal(reply_code(fd, PROTO_OP_HELLO, NULL, 0), BURST_EPROTO);
        assert_true(is_closed(fd));
        close(fd);
    }
    still_serves();
}

static void
test_random_bytes(void **state)
{
    (void)state;
    srandom(42);
    for (int i = 0; i < 50; i++) {
        int fd = raw_connect(D.sock);
        char buf[300];
        for (size_t k = 0; k < sizeof(buf); k++)
            buf[k] = (char)random();
        size_t n = 1 + (size_t)random() % sizeof(buf);
        testd_write_all(fd, buf, n);
        close(fd);
    }
    still_serves();
}

static void
test_slow_half_frame(void **state)
{
    (void)state;
    int fd = raw_connect(D.sock);
    send_hello(fd);
    char hdr[4];
    frame_put_header(hdr, 100);
    testd_write_all(fd, hdr, 4);
    testd_write_all(fd, "\x82", 1); /* and then nothing: dropped after idle_timeout_ms */
    assert_true(is_closed(fd));
    close(fd);
    still_serves();
}

/* ---- request-level errors: an error reply, the connection stays ---- */

struct bad_case {
    const char *name;
    void (*pack)(msgpack_packer *pk);
    enum proto_op op;
    int code;
    const char *words; /* must appear in the message */
};

static void
pk_unknown_op(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    pack_str(pk, "op");
    pack_str(pk, "explode");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
}

static void
pk_status_str_job(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "op");
    pack_str(pk, "status");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "job");
    pack_str(pk, "seven");
}

static void
pk_status_unknown_job(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "op");
    pack_str(pk, "status");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "job");
    msgpack_pack_uint64(pk, 987654);
}

static void
pk_submit_missing_fn(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    pack_str(pk, "op");
    pack_str(pk, "submit");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "kind");
    pack_str(pk, "map");
    pack_str(pk, "lines");
    msgpack_pack_bin(pk, 2);
    msgpack_pack_bin_body(pk, "a\n", 2);
}

static void
pk_submit_unknown_library(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 5);
    pack_str(pk, "op");
    pack_str(pk, "submit");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "kind");
    pack_str(pk, "map");
    pack_str(pk, "fn");
    msgpack_pack_map(pk, 3);
    pack_str(pk, "kind");
    pack_str(pk, "so");
    pack_str(pk, "hash");
    pack_str(pk, "0000000000000000000000000000000000000000000000000000000000000000");
    pack_str(pk, "symbol");
    pack_str(pk, "nothing");
    pack_str(pk, "lines");
    msgpack_pack_bin(pk, 2);
    msgpack_pack_bin_body(pk, "a\n", 2);
}

static void
pk_put_fn_wrong_hash(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    pack_str(pk, "op");
    pack_str(pk, "put_fn");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "hash");
    pack_str(pk, "1111111111111111111111111111111111111111111111111111111111111111");
    pack_str(pk, "data");
    msgpack_pack_bin(pk, 5);
    msgpack_pack_bin_body(pk, "hello", 5);
}

static void
pk_cancel_unknown(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "op");
    pack_str(pk, "cancel");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "job");
    msgpack_pack_uint64(pk, 424242);
}

static void
pk_results_final_int(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    pack_str(pk, "op");
    pack_str(pk, "results");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "job");
    msgpack_pack_uint64(pk, 1);
    pack_str(pk, "final");
    msgpack_pack_uint64(pk, 1);
}

static void
pk_deep(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "op");
    pack_str(pk, "status");
    pack_str(pk, "id");
    msgpack_pack_uint64(pk, 9);
    pack_str(pk, "x");
    for (int i = 0; i < 30; i++)
        msgpack_pack_array(pk, 1);
    msgpack_pack_nil(pk);
}

static const struct bad_case bad_cases[] = {
    {"unknown op", pk_unknown_op, PROTO_OP_STATUS, BURST_EUNKNOWNOP, "explode"},
    {"job as a string", pk_status_str_job, PROTO_OP_STATUS, BURST_EBADFIELD, "job"},
    {"unknown job", pk_status_unknown_job, PROTO_OP_STATUS, BURST_ENOJOB, "987654"},
    {"submit without fn", pk_submit_missing_fn, PROTO_OP_SUBMIT, BURST_EBADFIELD, "fn"},
    {"library never uploaded", pk_submit_unknown_library, PROTO_OP_SUBMIT, BURST_ENOFN,
     "library"},
    {"put_fn with a wrong hash", pk_put_fn_wrong_hash, PROTO_OP_PUT_FN, BURST_EBADFIELD,
     "SHA-256"},
    {"cancel of an unknown job", pk_cancel_unknown, PROTO_OP_CANCEL, BURST_ENOJOB,
     "424242"},
    {"results final not a bool", pk_results_final_int, PROTO_OP_RESULTS, BURST_EBADFIELD,
     "field 'final' must be a boolean"},
    {"nesting too deep", pk_deep, PROTO_OP_STATUS, BURST_ETOOBIG, "deep"},
};

static void
test_bad_requests(void **state)
{
    (void)state;
    int fd = raw_connect(D.sock);
    send_hello(fd);
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *bc = &bad_cases[i];
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bc->pack(&pk);
        send_payload(fd, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        char msg[512] = "";
        int code = reply_code(fd, bc->op, msg, sizeof(msg));
        print_message("%-26s -> %s: %s\n", bc->name, burst_error_name(code), msg);
        assert_int_equal(code, bc->code);
        assert_non_null(strstr(msg, bc->words));
    }
    /* The same connection still works after all of that. */
    send_hello(fd);
    close(fd);
    still_serves();
}

static void
test_hello_first_and_version(void **state)
{
    (void)state;
    int fd = raw_connect(D.sock);
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_request req = {.op = PROTO_OP_QUOTA, .id = 3};
    assert_int_equal(proto_encode_request(&b, &req), 0);
    testd_write_all(fd, b.data, b.len);
    char msg[256] = "";
    assert_int_equal(reply_code(fd, PROTO_OP_QUOTA, msg, sizeof(msg)), BURST_EPROTO);
    assert_non_null(strstr(msg, "hello"));
    proto_buf_reset(&b);
    req = (struct proto_request){.op = PROTO_OP_HELLO, .id = 4};
    req.u.hello.version = 99;
    assert_int_equal(proto_encode_request(&b, &req), 0);
    testd_write_all(fd, b.data, b.len);
    assert_int_equal(reply_code(fd, PROTO_OP_HELLO, msg, sizeof(msg)), BURST_EVERSION);
    assert_non_null(strstr(msg, "99"));
    proto_buf_free(&b);
    close(fd);
}

/* hello announces the configured limits, the per-connection ones too. */
static void
test_hello_limits(void **state)
{
    (void)state;
    int fd = raw_connect(D.sock);
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_request req = {.op = PROTO_OP_HELLO, .id = 1};
    req.u.hello.version = PROTO_VERSION;
    assert_int_equal(proto_encode_request(&b, &req), 0);
    testd_write_all(fd, b.data, b.len);
    proto_buf_free(&b);
    char *payload;
    ssize_t len = testd_read_frame(fd, 20000, &payload);
    assert_true(len > 0);
    struct proto_limits lim;
    proto_limits_default(&lim);
    struct proto_reply rep;
    assert_int_equal(proto_decode_reply(payload, (size_t)len, PROTO_OP_HELLO, &lim, &rep), 0);
    assert_true(rep.ok);
    assert_int_equal(rep.u.hello.limits.max_frame, 65536);
    assert_int_equal(rep.u.hello.limits.max_subscriptions, 77);
    proto_reply_free(&rep);
    free(payload);
    close(fd);
}

/* libburst's view of the same errors: codes and the daemon's message. */
static void
test_client_errors(void **state)
{
    (void)state;
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_job_info info;
    assert_int_equal(burst_status(c, 31337, &info), BURST_ENOJOB);
    assert_non_null(strstr(burst_last_error(c), "31337"));
    burst_fn fn = {.kind = BURST_FN_SO, .path = "/nonexistent/lib.so", .symbol = "f"};
    uint64_t job;
    burst_opts opts = BURST_OPTS_INIT;
    assert_int_not_equal(burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &job), 0);
    assert_non_null(strstr(burst_last_error(c), "/nonexistent/lib.so"));
    burst_close(c);
    burst_client *none;
    assert_int_equal(burst_connect("/nonexistent/burst.sock", &none), BURST_ECONNECT);
}

/* Start-up errors are clear and the process exits non-zero. */
static void
test_startup_errors(void **state)
{
    (void)state;
    const char *burstd = getenv("BURSTD");
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "%s --socket /nonexistent-dir/b.sock --state-dir %s/s2 2>&1 | grep -q "
             "'cannot create socket /nonexistent-dir/b.sock'",
             burstd, D.dir);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd),
             "%s --socket %s/x.sock --state-dir /proc/burst-state 2>&1 | grep -q "
             "'cannot create state directory /proc/burst-state'",
             burstd, D.dir);
    assert_int_equal(system(cmd), 0);
    /* A second daemon on a live socket refuses to steal it. */
    snprintf(cmd, sizeof(cmd),
             "%s --socket %s --state-dir %s/s3 2>&1 | grep -q 'already listening'", burstd,
             D.sock, D.dir);
    assert_int_equal(system(cmd), 0);
    /* A second daemon on a live daemon's state directory refuses to run
     * (it would dispatch the same tasks again), whatever its socket. */
    snprintf(cmd, sizeof(cmd),
             "%s --socket %s/y.sock --state-dir %s 2>&1 | grep -q 'another burstd runs on "
             "the state directory'",
             burstd, D.dir, D.state);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "printf 'quota = lots\\n' > %s/bad.conf && %s --config "
                               "%s/bad.conf 2>&1 | grep -q 'bad.conf:1: quota must be'",
             D.dir, burstd, D.dir);
    assert_int_equal(system(cmd), 0);
    still_serves();
}

/*
 * Ledger full: a daemon whose ledger is capped at 1 MiB refuses a job too
 * big to record with a clear error, loses nothing it acknowledged before,
 * keeps answering reads, and accepts a small job again afterwards.  A job
 * is a couple of rows however many tasks it has, so what makes this one too
 * big is its name: 2 MiB, which a raised limits.max_string lets through to
 * the ledger.
 */
static void
test_ledger_full(void **state)
{
    (void)state;
    struct testd full;
    daemon_start(&full, "ledger_max_mb = 1\nlimits.max_string = 4194304\n");
    burst_client *c;
    assert_int_equal(burst_connect(full.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t small;
    assert_int_equal(burst_submit_map_lines(c, &fn, "ab\ncd\n", 6, &opts, &small), 0);
    assert_int_equal(burst_wait(c, small, NULL), 0);

    size_t namelen = 2u * 1024u * 1024u;
    char *name = malloc(namelen + 1);
    assert_non_null(name);
    memset(name, 'n', namelen);
    name[namelen] = '\0';
    burst_opts big_opts = BURST_OPTS_INIT;
    big_opts.name = name;
    uint64_t big = 0;
    int rc = burst_submit_map_lines(c, &fn, "x\n", 2, &big_opts, &big);
    free(name);
    print_message("a job with a 2 MiB name on a 1 MiB ledger: %s: %s\n",
                  burst_error_name(rc), burst_last_error(c));
    assert_int_equal(rc, BURST_ELEDGER);
    assert_non_null(strstr(burst_last_error(c), "nothing was accepted"));

    /* Reads still work and the acknowledged job is intact. */
    burst_job_info info;
    assert_int_equal(burst_status(c, small, &info), 0);
    assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
    burst_bytes in[1] = {{"ok\n", 3}};
    burst_bytes *out = NULL;
    assert_int_equal(burst_map(c, &fn, in, 1, &opts, &out), 0);
    assert_memory_equal(out[0].data, "OK\n", 3);
    burst_free_results(out, 1);
    burst_close(c);
    daemon_stop(&full);
}

/* ---- inputs of small jobs (daemon/api.c, INLINE_INPUT_MAX) ---- */

/* The largest input object kept in the ledger (api.c), and its layout
 * (worker/invoc.h): a 16-byte header, n + 1 offsets of 8 bytes, the data. */
#define INLINE_MAX 65536u
#define OBJ_SIZE(n, data) (16u + ((n) + 1u) * 8u + (data))

struct want {
    const burst_bytes *items;
    size_t n;
    uint32_t base; /* the index of items[0]: a map_reduce's reducer is total */
    size_t next;
};

static int
on_want(void *arg, uint32_t index, const void *data, size_t len)
{
    struct want *w = arg;
    if (index != w->base + w->next || w->next >= w->n)
        fail_msg("result of task %u, expected task %zu", index, w->base + w->next);
    const burst_bytes *b = &w->items[w->next];
    if (len != b->len || (len > 0 && memcmp(data, b->data, len) != 0))
        fail_msg("task %u: %zu bytes, expected %zu", index, len, b->len);
    w->next++;
    return 0;
}

/* The job succeeded and its results are exactly want[0 .. n). */
static void
expect_results_from(burst_client *c, uint64_t job, uint32_t base, const burst_bytes *want,
                    size_t n)
{
    burst_job_info info;
    int rc = burst_wait(c, job, &info);
    if (rc != 0 || info.state != BURST_JOB_SUCCEEDED)
        fail_msg("job %llu: %s, %s (%s)", (unsigned long long)job, burst_strerror(rc),
                 burst_job_state_name(info.state), info.error);
    struct want w = {want, n, base, 0};
    assert_int_equal(burst_results(c, job, on_want, &w), 0);
    assert_int_equal(w.next, n);
}

static void
expect_results(burst_client *c, uint64_t job, const burst_bytes *want, size_t n)
{
    expect_results_from(c, job, 0, want, n);
}

/* Whether jobs/<job>/in is in t's storage. */
static bool
input_in_storage(const struct testd *t, uint64_t job)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/storage/jobs/%llu/in", t->state,
             (unsigned long long)job);
    return access(path, F_OK) == 0;
}

static uint64_t
submit_list(burst_client *c, const char *cmd, const burst_bytes *in, size_t n)
{
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = cmd};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t job = 0;
    int rc = burst_submit_map(c, &fn, in, n, &opts, &job);
    if (rc != 0)
        fail_msg("submit: %s (%s)", burst_strerror(rc), burst_last_error(c));
    return job;
}

/* Appends the frame of req to b. */
static void
encode_into(struct proto_buf *b, struct proto_request *req)
{
    assert_int_equal(proto_encode_request(b, req), 0);
}

/* The next reply: must answer request re with ok; decodes it as op into
 * *rep, whose strings and items borrow from the returned payload (the
 * caller frees it after rep). */
static char *
expect_reply_kept(int fd, enum proto_op op, uint64_t re, struct proto_reply *rep)
{
    char *payload;
    ssize_t len = testd_read_frame(fd, 20000, &payload);
    assert_true(len > 0);
    struct proto_limits lim;
    proto_limits_default(&lim);
    assert_int_equal(proto_decode_reply(payload, (size_t)len, op, &lim, rep), 0);
    assert_int_equal(rep->re, re);
    assert_true(rep->ok);
    return payload;
}

/* The same, for callers that use none of what a reply borrows. */
static void
expect_reply(int fd, enum proto_op op, uint64_t re, struct proto_reply *rep)
{
    free(expect_reply_kept(fd, op, re, rep));
}

/*
 * Requests a client sends while an earlier one is still in progress (a
 * submission waits for its sync), more of them than the daemon's read
 * buffer holds, then the end of its side of the socket: every one is
 * answered, in order, and both jobs are kept and run.
 */
static void
test_pipelined_while_held(void **state)
{
    (void)state;
    enum { QUOTAS = 6000 }; /* ~100 KB of frames: past the read buffer */
    int fd = raw_connect(D.sock);
    send_hello(fd);
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_request req = {.op = PROTO_OP_SUBMIT, .id = 2};
    req.u.submit.kind = BURST_KIND_MAP;
    req.u.submit.fn.kind = BURST_FN_EXEC;
    req.u.submit.fn.cmd = proto_str_c("tr a-z A-Z");
    req.u.submit.input_mode = PROTO_INPUT_LINES;
    req.u.submit.blob = proto_str_c("one\ntwo\n");
    req.u.submit.ninputs = 2;
    req.u.submit.opts.chunksize = 1;
    encode_into(&b, &req);
    for (uint64_t i = 0; i < QUOTAS; i++) {
        struct proto_request q = {.op = PROTO_OP_QUOTA, .id = 3 + i};
        encode_into(&b, &q);
    }
    req.id = 3 + QUOTAS;
    encode_into(&b, &req);
    testd_write_all(fd, b.data, b.len);
    proto_buf_free(&b);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);

    struct proto_reply rep;
    expect_reply(fd, PROTO_OP_SUBMIT, 2, &rep);
    uint64_t job1 = rep.u.submit.job;
    proto_reply_free(&rep);
    for (uint64_t i = 0; i < QUOTAS; i++) {
        expect_reply(fd, PROTO_OP_QUOTA, 3 + i, &rep);
        assert_true(rep.u.quota.quota >= 1);
        proto_reply_free(&rep);
    }
    expect_reply(fd, PROTO_OP_SUBMIT, 3 + QUOTAS, &rep);
    uint64_t job2 = rep.u.submit.job;
    proto_reply_free(&rep);
    assert_true(job2 > job1);
    assert_true(is_closed(fd));
    close(fd);

    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_bytes want[2] = {{"ONE\n", 4}, {"TWO\n", 4}};
    for (uint64_t job = job1; job <= job2; job += job2 - job1) {
        burst_job_info info;
        assert_int_equal(burst_wait(c, job, &info), 0);
        assert_int_equal(info.state, BURST_JOB_SUCCEEDED);
        expect_results(c, job, want, 2);
    }
    burst_close(c);
}

/* One results page as a raw client sees it, copied out of the frame. */
struct raw_page {
    uint32_t n;
    uint32_t index[8];
    bool has[8];
    size_t len[8];
    char data[8][16];
    bool more;
};

static void
raw_results(int fd, uint64_t id, uint64_t job, uint32_t from, bool final,
            struct raw_page *pg)
{
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_request req = {.op = PROTO_OP_RESULTS, .id = id};
    req.u.results = (struct proto_results){.job = job, .from = from, .final = final};
    encode_into(&b, &req);
    testd_write_all(fd, b.data, b.len);
    proto_buf_free(&b);

    struct proto_reply rep;
    char *payload = expect_reply_kept(fd, PROTO_OP_RESULTS, id, &rep);
    memset(pg, 0, sizeof(*pg));
    assert_true(rep.u.results.n <= 8);
    pg->n = rep.u.results.n;
    pg->more = rep.u.results.more;
    for (uint32_t i = 0; i < pg->n; i++) {
        const struct proto_result_item *it = &rep.u.results.items[i];
        pg->index[i] = it->index;
        pg->has[i] = it->has_data;
        assert_true(it->data.len < sizeof(pg->data[i]));
        pg->len[i] = it->data.len;
        if (it->has_data && it->data.len > 0)
            memcpy(pg->data[i], it->data.ptr, it->data.len);
    }
    proto_reply_free(&rep); /* the items borrow from the payload: copied first */
    free(payload);
}

/*
 * results with final: a map_reduce job gives just its reducer's item, from
 * any from at or below total; without final its map items come too.  A map
 * job gives every task either way.
 */
static void
test_results_final(void **state)
{
    (void)state;
    burst_client *c;
    assert_int_equal(burst_connect(D.sock, &c), 0);
    burst_fn upper = {.kind = BURST_FN_EXEC, .cmd = "tr a-z A-Z"};
    burst_fn cat = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_bytes in[3] = {{"a\n", 2}, {"b\n", 2}, {"c\n", 2}};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t j_mr = 0, j_map = 0;
    assert_int_equal(burst_submit_map_reduce(c, &upper, &cat, in, 3, &opts, &j_mr), 0);
    assert_int_equal(burst_submit_map(c, &upper, in, 3, &opts, &j_map), 0);
    burst_job_info info;
    assert_int_equal(burst_wait(c, j_mr, &info), 0);
    assert_int_equal(info.total, 3);
    assert_int_equal(burst_wait(c, j_map, &info), 0);
    burst_close(c);

    int fd = raw_connect(D.sock);
    send_hello(fd);
    struct raw_page pg;

    /* Without final: the three maps, then the reducer at index total. */
    raw_results(fd, 2, j_mr, 0, false, &pg);
    assert_int_equal(pg.n, 4);
    assert_false(pg.more);
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(pg.index[i], i);
    assert_memory_equal(pg.data[0], "A\n", 2);
    assert_int_equal(pg.len[3], 6);
    assert_memory_equal(pg.data[3], "A\nB\nC\n", 6);

    /* With final, from 0, from inside the maps and from total alike. */
    const uint32_t froms[] = {0, 2, 3};
    for (size_t k = 0; k < sizeof(froms) / sizeof(froms[0]); k++) {
        raw_results(fd, 3 + k, j_mr, froms[k], true, &pg);
        assert_int_equal(pg.n, 1);
        assert_false(pg.more);
        assert_int_equal(pg.index[0], 3);
        assert_true(pg.has[0]);
        assert_int_equal(pg.len[0], 6);
        assert_memory_equal(pg.data[0], "A\nB\nC\n", 6);
    }
    /* Past the reducer there is nothing, as without final. */
    raw_results(fd, 6, j_mr, 4, true, &pg);
    assert_int_equal(pg.n, 0);
    assert_false(pg.more);

    /* A map job: final changes nothing. */
    for (int with_final = 0; with_final <= 1; with_final++) {
        raw_results(fd, 7 + (uint64_t)with_final, j_map, 0, with_final, &pg);
        assert_int_equal(pg.n, 3);
        for (uint32_t i = 0; i < 3; i++) {
            assert_int_equal(pg.index[i], i);
            assert_int_equal(pg.len[i], 2);
        }
        assert_memory_equal(pg.data[2], "C\n", 2);
    }
    close(fd);
}

/*
 * A small job's inputs go into the ledger, not storage; a job one byte
 * over the limit takes the storage path.  With quota 1 and a first job
 * that holds the only slot until a file appears, every later job waits
 * queued: its jobs/<id>/in must not exist yet (or must, over the limit).
 * Then all run, and every result is byte for byte its input (list and
 * lines modes, empty items, map_reduce).  A small map job's input goes to
 * its worker with the request and never reaches storage; a map_reduce
 * job's is written there before its first dispatch (its reducer works
 * from storage).
 */
static void
test_inline_inputs(void **state)
{
    (void)state;
    struct testd t;
    daemon_start(&t, "quota = 1\n");
    burst_client *c;
    assert_int_equal(burst_connect(t.sock, &c), 0);

    char gate[160], cmd[256];
    snprintf(gate, sizeof(gate), "%s/go", t.dir);
    snprintf(cmd, sizeof(cmd), "while [ ! -e %s ]; do sleep 0.01; done; cat", gate);
    burst_bytes one = {"blocker\n", 8};
    uint64_t blocker = submit_list(c, cmd, &one, 1);
    burst_job_info info;
    for (int64_t t0 = testd_now_ms();; testd_sleep_ms(10)) {
        assert_int_equal(burst_status(c, blocker, &info), 0);
        if (info.state == BURST_JOB_RUNNING)
            break;
        assert_true(testd_now_ms() - t0 < 60000);
    }

    /* List mode with empty items. */
    burst_bytes list[4] = {{"ab\n", 3}, {"", 0}, {"x", 1}, {"", 0}};
    uint64_t j_list = submit_list(c, "cat", list, 4);
    /* Lines mode. */
    burst_fn cat = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 2;
    uint64_t j_lines = 0;
    assert_int_equal(burst_submit_map_lines(c, &cat, "one\ntwo\n\nfour", 13, &opts, &j_lines),
                     0);
    burst_bytes lines[4] = {{"one\n", 4}, {"two\n", 4}, {"\n", 1}, {"four", 4}};
    /* map_reduce: its reducer reads the maps' results, not the input. */
    burst_fn wc = {.kind = BURST_FN_EXEC, .cmd = "wc -c | tr -d ' '"};
    uint64_t j_mr = 0;
    burst_opts mr_opts = BURST_OPTS_INIT;
    assert_int_equal(burst_submit_map_reduce(c, &cat, &wc, list, 4, &mr_opts, &j_mr), 0);
    /* An input object of exactly the limit, and one of a byte more. */
    size_t at = INLINE_MAX - OBJ_SIZE(1u, 0u);
    char *big = malloc(at + 1);
    assert_non_null(big);
    for (size_t i = 0; i < at + 1; i++)
        big[i] = (char)('a' + i % 26);
    burst_bytes b_at = {big, at}, b_over = {big, at + 1};
    uint64_t j_at = submit_list(c, "cat", &b_at, 1);
    uint64_t j_over = submit_list(c, "cat", &b_over, 1);

    /* Acknowledged, not dispatched: the small ones are in the ledger only. */
    uint64_t small[] = {j_list, j_lines, j_mr, j_at};
    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
        assert_int_equal(burst_status(c, small[i], &info), 0);
        assert_int_equal(info.state, BURST_JOB_QUEUED);
        if (input_in_storage(&t, small[i]))
            fail_msg("job %llu: its input is in storage before its dispatch",
                     (unsigned long long)small[i]);
    }
    assert_true(input_in_storage(&t, j_over));

    int fd = open(gate, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    expect_results(c, blocker, &one, 1);
    expect_results(c, j_list, list, 4);
    expect_results(c, j_lines, lines, 4);
    burst_bytes sum = {"4\n", 2}; /* ab\n + x: 4 bytes through wc -c */
    expect_results_from(c, j_mr, 4, &sum, 1); /* the reducer is task 4 */
    expect_results(c, j_at, &b_at, 1);
    expect_results(c, j_over, &b_over, 1);
    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++)
        if (input_in_storage(&t, small[i]) != (small[i] == j_mr))
            fail_msg("job %llu: its input is %sin storage", (unsigned long long)small[i],
                     small[i] == j_mr ? "not " : "");
    free(big);
    burst_close(c);
    daemon_stop(&t);
}

/*
 * A small map job never touches storage: its input and spec go to the
 * worker with the request, and its output comes back with the reply into
 * the ledger.  Its results and logs are read from there, also by the next
 * burstd.  A job whose output is over the limit still gets a file.
 */
static void
test_small_job_in_ledger(void **state)
{
    (void)state;
    struct testd t;
    daemon_start(&t, NULL);
    burst_client *c;
    assert_int_equal(burst_connect(t.sock, &c), 0);
    burst_bytes in[3] = {{"ab\n", 3}, {"", 0}, {"xyz", 3}};
    uint64_t job = submit_list(c, "echo to-the-log >&2; tr a-z A-Z", in, 3);
    burst_job_info info;
    assert_int_equal(burst_wait(c, job, &info), 0);
    burst_bytes want[3] = {{"AB\n", 3}, {"", 0}, {"XYZ", 3}};
    expect_results(c, job, want, 3);
    char *log = NULL;
    size_t len = 0;
    assert_int_equal(burst_logs(c, job, 2, &log, &len), 0);
    assert_int_equal(len, strlen("to-the-log\n"));
    assert_memory_equal(log, "to-the-log\n", len);
    free(log);
    char path[256];
    snprintf(path, sizeof(path), "%s/storage/jobs/%llu", t.state, (unsigned long long)job);
    if (access(path, F_OK) == 0)
        fail_msg("%s exists: the small job went through storage", path);

    /* Two results of 40,000 bytes: their output object is a file. */
    burst_bytes two[2] = {{"a", 1}, {"b", 1}};
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = 2;
    burst_fn big = {.kind = BURST_FN_EXEC, .cmd = "head -c 40000 /dev/zero"};
    uint64_t bjob = 0;
    assert_int_equal(burst_submit_map(c, &big, two, 2, &opts, &bjob), 0);
    assert_int_equal(burst_wait(c, bjob, &info), 0);
    snprintf(path, sizeof(path), "%s/storage/jobs/%llu/out", t.state,
             (unsigned long long)bjob);
    assert_int_equal(access(path, F_OK), 0);
    burst_close(c);

    testd_stop(&t);
    testd_start(&t, NULL);
    assert_int_equal(burst_connect(t.sock, &c), 0);
    expect_results(c, job, want, 3);
    char *zeros = calloc(1, 40000);
    assert_non_null(zeros);
    burst_bytes bwant[2] = {{zeros, 40000}, {zeros, 40000}};
    expect_results(c, bjob, bwant, 2);
    free(zeros);
    burst_close(c);
    daemon_stop(&t);
}

/*
 * The copy of a small job's input to storage fails (a directory stands
 * where jobs/<id>/in goes; job ids start at 1 in a fresh state dir): the
 * dispatch fails as a failed spec write does, the task is retried (the
 * copy is tried again) and, its retries spent, fails with the reason.  The
 * next job is not affected.  Only a map_reduce job's input is copied (a
 * map job's goes to its worker with the request).
 */
static void
test_inline_input_write_fails(void **state)
{
    (void)state;
    struct testd t;
    daemon_start(&t, "quota = 1\n");
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/storage/jobs/1/in/blocked", t.state);
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s", dir);
    assert_int_equal(system(cmd), 0);

    burst_client *c;
    assert_int_equal(burst_connect(t.sock, &c), 0);
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    burst_opts opts = BURST_OPTS_INIT;
    opts.retries = 1;
    burst_bytes in = {"hi\n", 3};
    uint64_t job = 0;
    burst_fn red = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    assert_int_equal(burst_submit_map_reduce(c, &fn, &red, &in, 1, &opts, &job), 0);
    assert_int_equal(job, 1);
    burst_job_info info;
    burst_wait(c, job, &info);
    assert_int_equal(info.state, BURST_JOB_FAILED);
    burst_task_info *ti = NULL;
    size_t nt = 0;
    assert_int_equal(burst_tasks(c, job, -1, &ti, &nt), 0);
    assert_true(nt >= 1); /* the map task, then the reducer */
    assert_int_equal(ti[0].index, 0);
    assert_int_equal(ti[0].attempts, 2);
    if (strstr(ti[0].reason, "cannot write the job's input") == NULL)
        fail_msg("reason: %s", ti[0].reason);
    free(ti);

    uint64_t next = submit_list(c, "cat", &in, 1);
    expect_results(c, next, &in, 1);
    burst_close(c);
    daemon_stop(&t);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oversized_frame),
        cmocka_unit_test(test_zero_frame),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_slow_half_frame),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_hello_first_and_version),
        cmocka_unit_test(test_hello_limits),
        cmocka_unit_test(test_client_errors),
        cmocka_unit_test(test_startup_errors),
        cmocka_unit_test(test_ledger_full),
        cmocka_unit_test(test_inline_inputs),
        cmocka_unit_test(test_inline_input_write_fails),
        cmocka_unit_test(test_small_job_in_ledger),
        cmocka_unit_test(test_pipelined_while_held),
        cmocka_unit_test(test_results_final),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
