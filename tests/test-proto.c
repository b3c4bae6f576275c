/*
 * tests/test-proto.c - unit tests of proto/: names of codes and states, the
 * frame reader, round trips of every request, reply and event, and a table
 * of bad payloads with the exact error each must get.
 *
 * The bad payloads are written in a small notation that this file turns into
 * msgpack (see dsl_*): {k: v, ...} maps with bare or 'quoted' keys, [..]
 * arrays, 'text' str, b'bytes' bin (escapes \0 \n \xNN), integers, true,
 * false, nil, and #hex# for raw bytes.  Values written one after another are
 * concatenated, so "{op:'jobs',id:1} #c0#" is a map followed by garbage.
 */
#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "burst.h"
#include "frame.h"
#include "msg.h"
#include "proto_limits.h"

/* ---- helpers ------------------------------------------------------------ */

static uint32_t
be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void
assert_pstr_eq(struct proto_str a, struct proto_str b)
{
    if (a.ptr == NULL || b.ptr == NULL) {
        assert_null(a.ptr);
        assert_null(b.ptr);
        return;
    }
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.ptr, b.ptr, a.len);
}

/* True when s points into the len bytes at base (decoding copies nothing). */
static int
borrowed_from(struct proto_str s, const char *base, size_t len)
{
    return s.ptr >= base && s.ptr + s.len <= base + len;
}

static struct proto_str
bytes(const char *p, size_t n)
{
    struct proto_str s = {p, n};
    return s;
}

/* Encodes req, passes the frame through a frame reader, decodes it into out.
 * The frame stays in *buf, which out borrows from. */
static void
roundtrip_request(const struct proto_request *in, struct proto_request *out,
                  struct proto_buf *buf, struct frame_reader *fr)
{
    proto_buf_reset(buf);
    assert_int_equal(proto_encode_request(buf, in), 0);
    assert_true(buf->len > FRAME_HEADER_SIZE);
    assert_int_equal(be32(buf->data), buf->len - FRAME_HEADER_SIZE);
    const char *payload;
    size_t len;
    assert_int_equal(frame_reader_feed(fr, buf->data, buf->len), 0);
    assert_int_equal(frame_next(fr, &payload, &len), 1);
    assert_int_equal(len, buf->len - FRAME_HEADER_SIZE);
    assert_memory_equal(payload, buf->data + FRAME_HEADER_SIZE, len);

    enum proto_kind kind;
    uint64_t re;
    assert_int_equal(proto_peek(payload, len, &kind, &re), 0);
    assert_int_equal(kind, PROTO_KIND_REQUEST);

    /* Decode from buf (stable), not from the reader's buffer. */
    struct proto_error err = {0, {NULL, 0}};
    uint64_t id = 12345;
    int rc =
        proto_decode_request(buf->data + FRAME_HEADER_SIZE, len, NULL, out, &err, &id);
    if (rc != 0)
        print_error("decode failed: %.*s\n", (int)err.message.len, err.message.ptr);
    assert_int_equal(rc, 0);
    assert_int_equal(id, in->id);
    assert_int_equal(out->id, in->id);
    assert_int_equal(out->op, in->op);
}

static void
roundtrip_reply(const struct proto_reply *in, struct proto_reply *out,
                struct proto_buf *buf)
{
    proto_buf_reset(buf);
    assert_int_equal(proto_encode_reply(buf, in), 0);
    assert_int_equal(be32(buf->data), buf->len - FRAME_HEADER_SIZE);
    const char *payload = buf->data + FRAME_HEADER_SIZE;
    size_t len = buf->len - FRAME_HEADER_SIZE;
    enum proto_kind kind;
    uint64_t re = 0;
    assert_int_equal(proto_peek(payload, len, &kind, &re), 0);
    assert_int_equal(kind, PROTO_KIND_REPLY);
    assert_int_equal(re, in->re);
    assert_int_equal(proto_decode_reply(payload, len, in->op, NULL, out), 0);
    assert_int_equal(out->re, in->re);
    assert_int_equal(out->ok, in->ok);
    assert_int_equal(out->op, in->op);
}

/* ---- codes -------------------------------------------------------------- */

static void
test_codes(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } errs[] = {
        {BURST_EPROTO, "protocol"},
        {BURST_ETOOBIG, "too_large"},
        {BURST_EVERSION, "version"},
        {BURST_EUNKNOWNOP, "unknown_op"},
        {BURST_EBADFIELD, "bad_field"},
        {BURST_ENOJOB, "no_such_job"},
        {BURST_ENOTASK, "no_such_task"},
        {BURST_EPERM, "permission"},
        {BURST_ENOFN, "no_such_function"},
        {BURST_ENOSYM, "no_such_symbol"},
        {BURST_ESTORAGE, "storage"},
        {BURST_ELEDGER, "ledger"},
        {BURST_EBUSY, "busy"},
        {BURST_ESHUTDOWN, "shutting_down"},
        {BURST_EINTERNAL, "internal"},
        {BURST_ENORESULT, "no_result"},
        {BURST_ENOTREADY, "not_ready"},
        {BURST_ECONNECT, "connect"},
        {BURST_EJOBFAILED, "job_failed"},
        {BURST_ECANCELLED, "cancelled"},
        {BURST_EINPUT, "input"},
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        assert_string_equal(burst_error_name(errs[i].code), errs[i].name);
        assert_int_equal(burst_error_from_name(errs[i].name, strlen(errs[i].name)),
                         errs[i].code);
        const char *text = burst_strerror(errs[i].code);
        assert_non_null(text);
        assert_true(strlen(text) > 0);
        assert_string_not_equal(text, "unknown error");
    }
    assert_int_equal(burst_error_from_name("nope", 4), BURST_EINTERNAL);
    assert_int_equal(burst_error_from_name(NULL, 0), BURST_EINTERNAL);
    /* A prefix of a name is not the name. */
    assert_int_equal(burst_error_from_name("protocolX", 8), BURST_EPROTO);
    assert_int_equal(burst_error_from_name("protoco", 7), BURST_EINTERNAL);
    assert_string_equal(burst_error_name(-ENOENT), "internal");
    assert_string_equal(burst_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(burst_strerror(-EPIPE), strerror(EPIPE));
    assert_string_equal(burst_strerror(-5000), "unknown error");
    assert_string_equal(burst_strerror(0), "success");

    static const char *const tstates[] = {"queued",    "dispatched", "running",
                                          "succeeded", "failed",     "timeout",
                                          "retrying",  "cancelled"};
    for (int s = 0; s < BURST_TASK_NSTATES; s++) {
        assert_string_equal(burst_task_state_name(s), tstates[s]);
        assert_int_equal(burst_task_state_from_name(tstates[s], strlen(tstates[s])), s);
    }
    assert_null(burst_task_state_name(-1));
    assert_null(burst_task_state_name(BURST_TASK_NSTATES));
    assert_int_equal(burst_task_state_from_name("done", 4), -1);

    static const char *const jstates[] = {"queued", "running", "succeeded", "failed",
                                          "cancelled"};
    for (int s = 0; s < BURST_JOB_NSTATES; s++) {
        assert_string_equal(burst_job_state_name(s), jstates[s]);
        assert_int_equal(burst_job_state_from_name(jstates[s], strlen(jstates[s])), s);
    }
    assert_int_equal(burst_job_state_from_name("dispatched", 10), -1);
    assert_null(burst_job_state_name(BURST_JOB_NSTATES));

    assert_string_equal(burst_job_kind_name(BURST_KIND_MAP), "map");
    assert_string_equal(burst_job_kind_name(BURST_KIND_MAP_REDUCE), "map_reduce");
    assert_string_equal(burst_job_kind_name(BURST_KIND_CALL), "call");
    assert_null(burst_job_kind_name(3));

    int final_tasks = 0;
    for (int s = 0; s < BURST_TASK_NSTATES; s++)
        final_tasks += burst_task_state_is_final(s) ? 1 : 0;
    assert_int_equal(final_tasks, 4);
    assert_true(burst_task_state_is_final(BURST_TASK_TIMEOUT));
    assert_false(burst_task_state_is_final(BURST_TASK_RETRYING));
    assert_true(burst_job_state_is_final(BURST_JOB_CANCELLED));
    assert_false(burst_job_state_is_final(BURST_JOB_RUNNING));
    assert_false(burst_job_state_is_final(BURST_JOB_QUEUED));

    assert_string_equal(proto_op_name(PROTO_OP_PUT_FN), "put_fn");
    assert_null(proto_op_name(PROTO_OP_COUNT_));
    assert_null(proto_op_name((enum proto_op)0));

    struct proto_limits lim;
    proto_limits_default(&lim);
    assert_int_equal(lim.max_depth, 16);
    assert_int_equal(lim.max_chunksize, 100000);
    assert_true(lim.max_frame <= PROTO_FRAME_HARD_MAX);
}

static void
test_str_helpers(void **state)
{
    (void)state;
    char small[4];
    proto_str_copy(small, sizeof(small), proto_str_c("abcdef"));
    assert_string_equal(small, "abc");
    proto_str_copy(small, sizeof(small), proto_str_c(NULL));
    assert_string_equal(small, "");
    assert_true(proto_str_eq(proto_str_c("x"), "x"));
    assert_false(proto_str_eq(bytes("xy", 1), "xy"));
    assert_true(proto_str_eq(proto_str_c(NULL), NULL));
    assert_false(proto_str_eq(proto_str_c(NULL), ""));
}

/* ---- frame reader ------------------------------------------------------- */

/* Appends frames with payloads "p0", "p1"... of growing sizes to buf. */
static size_t
make_frames(char *buf, size_t cap, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        size_t plen = (size_t)(i % 50) + 1;
        assert_true(len + FRAME_HEADER_SIZE + plen <= cap);
        frame_put_header(buf + len, (uint32_t)plen);
        for (size_t k = 0; k < plen; k++)
            buf[len + FRAME_HEADER_SIZE + k] = (char)('a' + (i + (int)k) % 26);
        len += FRAME_HEADER_SIZE + plen;
    }
    return len;
}

static void
check_frames(struct frame_reader *r, const char *stream, int *next, size_t *off)
{
    const char *p;
    size_t len;
    int rc;
    while ((rc = frame_next(r, &p, &len)) == 1) {
        size_t plen = (size_t)(*next % 50) + 1;
        assert_int_equal(len, plen);
        assert_memory_equal(p, stream + *off + FRAME_HEADER_SIZE, len);
        *off += FRAME_HEADER_SIZE + plen;
        (*next)++;
    }
    assert_int_equal(rc, 0);
}

static void
test_frame_byte_by_byte(void **state)
{
    (void)state;
    static char stream[64 * 1024];
    size_t n = make_frames(stream, sizeof(stream), 500);
    struct frame_reader r;
    frame_reader_init(&r, 1024);
    int next = 0;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        char *base;
        size_t avail;
        assert_int_equal(frame_reader_space(&r, 1, &base, &avail), 0);
        assert_true(avail >= 1);
        *base = stream[i];
        frame_reader_commit(&r, 1);
        check_frames(&r, stream, &next, &off);
        /* Between frames, nothing partial is buffered. */
        assert_int_equal(frame_reader_partial(&r) != 0, off != i + 1);
    }
    assert_int_equal(next, 500);
    assert_false(frame_reader_partial(&r));
    /* Many small frames must not make the buffer grow. */
    assert_true(r.cap <= 64 * 1024);
    frame_reader_free(&r);
}

static void
test_frame_chunks(void **state)
{
    (void)state;
    static char stream[256 * 1024];
    size_t n = make_frames(stream, sizeof(stream), 5000);
    static const size_t chunks[] = {3, 7, 64, 1000, 4096, 65536, 200000};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct frame_reader r;
        frame_reader_init(&r, 1024);
        int next = 0;
        size_t off = 0;
        for (size_t i = 0; i < n; i += chunks[c]) {
            size_t k = n - i < chunks[c] ? n - i : chunks[c];
            assert_int_equal(frame_reader_feed(&r, stream + i, k), 0);
            check_frames(&r, stream, &next, &off);
        }
        assert_int_equal(next, 5000);
        assert_int_equal(off, n);
        assert_false(frame_reader_partial(&r));
        frame_reader_free(&r);
    }
}

static void
test_frame_several_in_one_feed(void **state)
{
    (void)state;
    char stream[4096];
    size_t n = make_frames(stream, sizeof(stream), 20);
    struct frame_reader r;
    frame_reader_init(&r, 1024);
    /* All 20 frames plus the first 2 bytes of a 21st header. */
    assert_int_equal(frame_reader_feed(&r, stream, n), 0);
    assert_int_equal(frame_reader_feed(&r, "\0\0", 2), 0);
    int next = 0;
    size_t off = 0;
    check_frames(&r, stream, &next, &off);
    assert_int_equal(next, 20);
    assert_true(frame_reader_partial(&r));
    assert_int_equal(frame_reader_feed(&r, "\0\1Z", 3), 0);
    const char *p;
    size_t len;
    assert_int_equal(frame_next(&r, &p, &len), 1);
    assert_int_equal(len, 1);
    assert_int_equal(p[0], 'Z');
    assert_int_equal(frame_next(&r, &p, &len), 0);
    frame_reader_free(&r);
}

static void
test_frame_bad_lengths(void **state)
{
    (void)state;
    struct frame_reader r;
    const char *p;
    size_t len;

    frame_reader_init(&r, 1000);
    assert_int_equal(frame_reader_feed(&r, "\0\0\0\0", 4), 0);
    assert_int_equal(frame_next(&r, &p, &len), BURST_EPROTO);
    frame_reader_free(&r);

    frame_reader_init(&r, 1000);
    assert_int_equal(frame_reader_feed(&r, "\0\0\x03\xe9", 4), 0);
    assert_int_equal(frame_next(&r, &p, &len), BURST_ETOOBIG);
    frame_reader_free(&r);

    /* Rejected on the header alone, before any memory is set aside for the
     * payload; and an acceptable but large header reserves nothing yet. */
    frame_reader_init(&r, 100u * 1024 * 1024);
    assert_int_equal(frame_reader_feed(&r, "\x10\0\0\0", 4), 0);
    assert_int_equal(frame_next(&r, &p, &len), BURST_ETOOBIG);
    assert_true(r.cap <= 64 * 1024);
    frame_reader_free(&r);
    frame_reader_init(&r, 100u * 1024 * 1024);
    assert_int_equal(frame_reader_feed(&r, "\x04\0\0\0", 4), 0);
    assert_int_equal(frame_next(&r, &p, &len), 0);
    assert_true(r.cap <= 64 * 1024);
    frame_reader_free(&r);

    frame_reader_init(&r, 1000);
    assert_int_equal(frame_reader_feed(&r, "\0\0\x03\xe8", 4), 0);
    assert_int_equal(frame_next(&r, &p, &len), 0); /* exactly the limit: fine */
    frame_reader_free(&r);

    /* A limit above the hard maximum is clamped to it. */
    frame_reader_init(&r, UINT32_MAX);
    assert_int_equal(r.max_payload, PROTO_FRAME_HARD_MAX);
    assert_int_equal(frame_reader_feed(&r, "\x40\0\0\x01", 4), 0);
    assert_int_equal(frame_next(&r, &p, &len), BURST_ETOOBIG);
    frame_reader_free(&r);
}

static void
test_frame_large(void **state)
{
    (void)state;
    /* One 24 MB frame read in place in 64 KB pieces, then a small one: the
     * buffer grows about to the frame's size and shrinks back afterwards. */
    size_t big = 24u * 1024 * 1024;
    struct frame_reader r;
    frame_reader_init(&r, 32u * 1024 * 1024);
    char hdr[FRAME_HEADER_SIZE];
    frame_put_header(hdr, (uint32_t)big);
    assert_int_equal(frame_reader_feed(&r, hdr, sizeof(hdr)), 0);
    size_t sent = 0;
    const char *p;
    size_t len;
    while (sent < big) {
        char *base;
        size_t avail;
        assert_int_equal(frame_reader_space(&r, 65536, &base, &avail), 0);
        assert_true(avail >= 65536 || avail >= big - sent);
        size_t k = big - sent < 65536 ? big - sent : 65536;
        for (size_t i = 0; i < k; i++)
            base[i] = (char)((sent + i) * 7);
        frame_reader_commit(&r, k);
        sent += k;
        if (sent < big)
            assert_int_equal(frame_next(&r, &p, &len), 0);
    }
    assert_true(r.cap <= big + FRAME_HEADER_SIZE + 65536);
    assert_int_equal(frame_next(&r, &p, &len), 1);
    assert_int_equal(len, big);
    for (size_t i = 0; i < big; i += 4099)
        assert_int_equal(p[i], (char)(i * 7));
    assert_int_equal(frame_reader_feed(&r, "\0\0\0\2hi", 6), 0);
    assert_int_equal(frame_next(&r, &p, &len), 1);
    assert_memory_equal(p, "hi", 2);
    assert_true(r.cap <= 64 * 1024);
    frame_reader_free(&r);
}

/* ---- request round trips ------------------------------------------------ */

static const char hash_a[] =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static void
test_rt_hello(void **state)
{
    (void)state;
    struct proto_buf buf;
    proto_buf_init(&buf);
    struct frame_reader fr;
    frame_reader_init(&fr, 0);
    struct proto_request in = {.op = PROTO_OP_HELLO, .id = 1};
    in.u.hello.version = PROTO_VERSION;
    in.u.hello.client = proto_str_c("libburst 0.1.0");
    struct proto_request out;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.hello.version, PROTO_VERSION);
    assert_pstr_eq(out.u.hello.client, in.u.hello.client);
    assert_true(borrowed_from(out.u.hello.client, buf.data, buf.len));
    proto_request_free(&out);

    /* Without the optional client string. */
    in.u.hello.client = proto_str_c(NULL);
    roundtrip_request(&in, &out, &buf, &fr);
    assert_null(out.u.hello.client.ptr);
    proto_request_free(&out);
    frame_reader_free(&fr);
    proto_buf_free(&buf);
}

static void
check_fn(const struct proto_fn *a, const struct proto_fn *b)
{
    assert_int_equal(a->kind, b->kind);
    if (a->kind == BURST_FN_EXEC) {
        assert_pstr_eq(a->cmd, b->cmd);
    } else {
        assert_pstr_eq(a->hash, b->hash);
        assert_pstr_eq(a->symbol, b->symbol);
    }
}

static void
check_opts(const struct proto_opts *a, const struct proto_opts *b)
{
    assert_int_equal(a->chunksize, b->chunksize);
    assert_int_equal(a->retries, b->retries);
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->memory_mb, b->memory_mb);
    assert_pstr_eq(a->backend, b->backend);
    assert_pstr_eq(a->name, b->name);
    assert_int_equal(a->cancel_on_disconnect, b->cancel_on_disconnect);
}

static void
test_rt_submit(void **state)
{
    (void)state;
    struct proto_buf buf;
    proto_buf_init(&buf);
    struct frame_reader fr;
    frame_reader_init(&fr, 0);
    struct proto_request in, out;

    /* map, array of inputs, every option set, one empty input. */
    struct proto_str inputs[4] = {proto_str_c("alpha\n"), bytes("\0\1\2", 3),
                                  bytes("", 0), proto_str_c("delta")};
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBMIT;
    in.id = 7;
    struct proto_submit *s = &in.u.submit;
    s->kind = BURST_KIND_MAP;
    s->fn.kind = BURST_FN_EXEC;
    s->fn.cmd = proto_str_c("tr a-z A-Z");
    s->input_mode = PROTO_INPUT_ARRAY;
    s->ninputs = 4;
    s->inputs = inputs;
    s->opts.chunksize = 3;
    s->opts.retries = 2;
    s->opts.timeout_ms = 1ull << 40;
    s->opts.memory_mb = 512;
    s->opts.backend = proto_str_c("codeengine");
    s->opts.name = proto_str_c("nightly");
    s->opts.cancel_on_disconnect = true;
    s->subscribe = true;
    roundtrip_request(&in, &out, &buf, &fr);
    const struct proto_submit *o = &out.u.submit;
    assert_int_equal(o->kind, BURST_KIND_MAP);
    check_fn(&o->fn, &s->fn);
    assert_int_equal(o->input_mode, PROTO_INPUT_ARRAY);
    assert_int_equal(o->ninputs, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(o->inputs[i].len, inputs[i].len);
        assert_memory_equal(o->inputs[i].ptr, inputs[i].ptr, inputs[i].len);
        assert_true(borrowed_from(o->inputs[i], buf.data, buf.len));
    }
    check_opts(&o->opts, &s->opts);
    assert_true(o->subscribe);
    proto_request_free(&out);
    assert_null(out.priv_);

    /* map_reduce of so functions over lines, default options. */
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBMIT;
    in.id = UINT64_MAX;
    s->kind = BURST_KIND_MAP_REDUCE;
    s->fn.kind = BURST_FN_SO;
    s->fn.hash = proto_str_c(hash_a);
    s->fn.symbol = proto_str_c("word_count");
    s->reduce.kind = BURST_FN_EXEC;
    s->reduce.cmd = proto_str_c("awk '{s+=$1} END {print s}'");
    s->input_mode = PROTO_INPUT_LINES;
    s->blob = proto_str_c("one\ntwo\n\nfour");
    s->opts.chunksize = 1;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(o->kind, BURST_KIND_MAP_REDUCE);
    check_fn(&o->fn, &s->fn);
    check_fn(&o->reduce, &s->reduce);
    assert_int_equal(o->input_mode, PROTO_INPUT_LINES);
    assert_int_equal(o->ninputs, 4); /* "one\n" "two\n" "\n" "four" */
    assert_pstr_eq(o->blob, s->blob);
    check_opts(&o->opts, &s->opts);
    assert_false(o->subscribe);
    proto_request_free(&out);

    /* call: one input. */
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBMIT;
    in.id = 9;
    s->kind = BURST_KIND_CALL;
    s->fn.kind = BURST_FN_EXEC;
    s->fn.cmd = proto_str_c("wc -c");
    s->ninputs = 1;
    s->inputs = inputs;
    s->opts.chunksize = 1;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(o->kind, BURST_KIND_CALL);
    assert_int_equal(o->ninputs, 1);
    proto_request_free(&out);

    frame_reader_free(&fr);
    proto_buf_free(&buf);
}

static void
test_rt_submit_many(void **state)
{
    (void)state;
    /* 200,000 inputs: the encoder and decoder scale linearly and the
     * decoded inputs still borrow from the frame. */
    uint32_t n = 200000;
    struct proto_str *inputs = malloc(n * sizeof(*inputs));
    char *text = malloc((size_t)n * 8);
    assert_non_null(inputs);
    assert_non_null(text);
    for (uint32_t i = 0; i < n; i++) {
        int k = snprintf(text + (size_t)i * 8, 8, "%u", i);
        inputs[i] = bytes(text + (size_t)i * 8, (size_t)k);
    }
    struct proto_request in, out;
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBMIT;
    in.id = 3;
    in.u.submit.kind = BURST_KIND_MAP;
    in.u.submit.fn.kind = BURST_FN_EXEC;
    in.u.submit.fn.cmd = proto_str_c("cat");
    in.u.submit.ninputs = n;
    in.u.submit.inputs = inputs;
    in.u.submit.opts.chunksize = 100;
    struct proto_buf buf;
    proto_buf_init(&buf);
    struct frame_reader fr;
    frame_reader_init(&fr, 0);
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.submit.ninputs, n);
    for (uint32_t i = 0; i < n; i += 997) {
        assert_pstr_eq(out.u.submit.inputs[i], inputs[i]);
        assert_true(borrowed_from(out.u.submit.inputs[i], buf.data, buf.len));
    }
    assert_pstr_eq(out.u.submit.inputs[n - 1], inputs[n - 1]);
    proto_request_free(&out);
    frame_reader_free(&fr);
    proto_buf_free(&buf);
    free(text);
    free(inputs);
}

static void
test_rt_small_requests(void **state)
{
    (void)state;
    struct proto_buf buf;
    proto_buf_init(&buf);
    struct frame_reader fr;
    frame_reader_init(&fr, 0);
    struct proto_request in, out;

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_PUT_FN;
    in.id = 2;
    in.u.put_fn.hash = proto_str_c(hash_a);
    in.u.put_fn.data = bytes("\x7f"
                             "ELF\0\0\1",
                             7);
    roundtrip_request(&in, &out, &buf, &fr);
    assert_pstr_eq(out.u.put_fn.hash, in.u.put_fn.hash);
    assert_pstr_eq(out.u.put_fn.data, in.u.put_fn.data);
    proto_request_free(&out);

    static const enum proto_op refs[] = {PROTO_OP_STATUS, PROTO_OP_CANCEL,
                                         PROTO_OP_UNSUBSCRIBE};
    for (size_t i = 0; i < 3; i++) {
        memset(&in, 0, sizeof(in));
        in.op = refs[i];
        in.id = 10 + i;
        in.u.job.job = 0x123456789ull + i;
        roundtrip_request(&in, &out, &buf, &fr);
        assert_int_equal(out.u.job.job, in.u.job.job);
        proto_request_free(&out);
    }

    for (int all = 0; all < 2; all++) {
        memset(&in, 0, sizeof(in));
        in.op = PROTO_OP_JOBS;
        in.id = 20;
        in.u.jobs.all = all;
        roundtrip_request(&in, &out, &buf, &fr);
        assert_int_equal(out.u.jobs.all, all);
        proto_request_free(&out);
    }

    for (int st = -1; st < BURST_TASK_NSTATES; st++) {
        memset(&in, 0, sizeof(in));
        in.op = PROTO_OP_TASKS;
        in.id = 30;
        in.u.tasks.job = 5;
        in.u.tasks.state = st;
        in.u.tasks.offset = 100;
        in.u.tasks.limit = 50;
        roundtrip_request(&in, &out, &buf, &fr);
        assert_int_equal(out.u.tasks.job, 5);
        assert_int_equal(out.u.tasks.state, st);
        assert_int_equal(out.u.tasks.offset, 100);
        assert_int_equal(out.u.tasks.limit, 50);
        proto_request_free(&out);
    }
    /* A limit above page_tasks is clamped to it. */
    in.u.tasks.limit = UINT32_MAX;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.tasks.limit, 10000);
    proto_request_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_RESULTS;
    in.id = 40;
    in.u.results.job = 6;
    in.u.results.from = 77;
    in.u.results.max_bytes = 1024;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.results.job, 6);
    assert_int_equal(out.u.results.from, 77);
    assert_int_equal(out.u.results.max_bytes, 1024);
    assert_false(out.u.results.final);
    proto_request_free(&out);
    in.u.results.final = true;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.results.job, 6);
    assert_int_equal(out.u.results.from, 77);
    assert_int_equal(out.u.results.max_bytes, 1024);
    assert_true(out.u.results.final);
    proto_request_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_LOGS;
    in.id = 50;
    in.u.logs.job = 8;
    in.u.logs.task = 4000000000u;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.logs.job, 8);
    assert_int_equal(out.u.logs.task, 4000000000u);
    proto_request_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_QUOTA;
    in.id = 60;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_false(out.u.quota.has_set);
    proto_request_free(&out);
    in.u.quota.has_set = true;
    in.u.quota.set = 64;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_true(out.u.quota.has_set);
    assert_int_equal(out.u.quota.set, 64);
    proto_request_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBSCRIBE;
    in.id = 70;
    in.u.subscribe.job = 9;
    in.u.subscribe.from_seq = 12345678901ull;
    roundtrip_request(&in, &out, &buf, &fr);
    assert_int_equal(out.u.subscribe.job, 9);
    assert_int_equal(out.u.subscribe.from_seq, 12345678901ull);
    proto_request_free(&out);

    /* Several frames in one buffer decode one after another. */
    proto_buf_reset(&buf);
    for (int i = 0; i < 3; i++) {
        memset(&in, 0, sizeof(in));
        in.op = PROTO_OP_STATUS;
        in.id = 100 + (uint64_t)i;
        in.u.job.job = (uint64_t)i;
        assert_int_equal(proto_encode_request(&buf, &in), 0);
    }
    assert_int_equal(frame_reader_feed(&fr, buf.data, buf.len), 0);
    for (int i = 0; i < 3; i++) {
        const char *p;
        size_t len;
        struct proto_error err;
        uint64_t id;
        assert_int_equal(frame_next(&fr, &p, &len), 1);
        assert_int_equal(proto_decode_request(p, len, NULL, &out, &err, &id), 0);
        assert_int_equal(out.id, 100 + (uint64_t)i);
        assert_int_equal(out.u.job.job, (uint64_t)i);
        proto_request_free(&out);
    }

    frame_reader_free(&fr);
    proto_buf_free(&buf);
}

static void
test_encode_invalid(void **state)
{
    (void)state;
    struct proto_buf buf;
    proto_buf_init(&buf);
    struct proto_request in;
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_STATUS;
    in.id = 1;
    assert_int_equal(proto_encode_request(&buf, &in), 0);
    size_t good = buf.len;

    /* A bad enum fails the call and leaves earlier frames untouched. */
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBMIT;
    in.u.submit.kind = 17;
    assert_int_equal(proto_encode_request(&buf, &in), -EINVAL);
    assert_int_equal(buf.len, good);
    in.op = (enum proto_op)99;
    assert_int_equal(proto_encode_request(&buf, &in), -EINVAL);
    assert_int_equal(buf.len, good);
    proto_buf_free(&buf);
}

/* ---- reply round trips -------------------------------------------------- */

static void
fill_job_info(struct proto_job_info *j, uint64_t id, bool strings)
{
    memset(j, 0, sizeof(*j));
    j->id = id;
    j->owner_uid = 1000;
    j->kind = BURST_KIND_MAP_REDUCE;
    j->state = BURST_JOB_RUNNING;
    j->total = 1000;
    for (int s = 0; s < BURST_TASK_NSTATES; s++)
        j->counts[s] = (uint32_t)(s * 100 + (int)id);
    j->created_ms = 1700000000000;
    j->started_ms = 1700000000500;
    j->finished_ms = 0;
    j->last_seq = 4242;
    if (strings) {
        j->backend = proto_str_c("local");
        j->name = proto_str_c("nightly run");
        j->function = proto_str_c("exec: tr a-z A-Z");
        j->error = proto_str_c("");
    }
}

static void
check_job_info(const struct proto_job_info *a, const struct proto_job_info *b)
{
    assert_int_equal(a->id, b->id);
    assert_int_equal(a->owner_uid, b->owner_uid);
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->state, b->state);
    assert_int_equal(a->total, b->total);
    assert_memory_equal(a->counts, b->counts, sizeof(a->counts));
    assert_int_equal(a->created_ms, b->created_ms);
    assert_int_equal(a->started_ms, b->started_ms);
    assert_int_equal(a->finished_ms, b->finished_ms);
    assert_int_equal(a->last_seq, b->last_seq);
    assert_pstr_eq(a->backend, b->backend);
    assert_pstr_eq(a->name, b->name);
    assert_pstr_eq(a->function, b->function);
    assert_pstr_eq(a->error, b->error);
}

static void
test_rt_replies(void **state)
{
    (void)state;
    struct proto_buf buf;
    proto_buf_init(&buf);
    struct proto_reply in, out;

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_HELLO;
    in.re = 1;
    in.ok = true;
    in.u.hello.version = PROTO_VERSION;
    in.u.hello.server = proto_str_c("burstd 0.1.0");
    in.u.hello.uid = 1000;
    in.u.hello.admin = true;
    proto_limits_default(&in.u.hello.limits);
    in.u.hello.limits.max_tasks = 123;
    in.u.hello.limits.page_bytes = 456;
    in.u.hello.limits.max_subscriptions = 789;
    in.u.hello.revision = PROTO_REVISION;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.hello.version, PROTO_VERSION);
    assert_int_equal(out.u.hello.revision, PROTO_REVISION);
    assert_pstr_eq(out.u.hello.server, in.u.hello.server);
    assert_int_equal(out.u.hello.uid, 1000);
    assert_true(out.u.hello.admin);
    assert_memory_equal(&out.u.hello.limits, &in.u.hello.limits,
                        sizeof(struct proto_limits));
    proto_reply_free(&out);

    /* A daemon from before revisions says none: revision 0. */
    {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        msgpack_pack_str_with_body(&pk, "re", 2);
        msgpack_pack_uint64(&pk, 1);
        msgpack_pack_str_with_body(&pk, "ok", 2);
        msgpack_pack_true(&pk);
        msgpack_pack_str_with_body(&pk, "version", 7);
        msgpack_pack_uint32(&pk, PROTO_VERSION);
        msgpack_pack_str_with_body(&pk, "limits", 6);
        msgpack_pack_map(&pk, 0);
        struct proto_limits lim;
        proto_limits_default(&lim);
        assert_int_equal(proto_decode_reply(sb.data, sb.size, PROTO_OP_HELLO, &lim, &out),
                         0);
        assert_int_equal(out.u.hello.version, PROTO_VERSION);
        assert_int_equal(out.u.hello.revision, 0);
        proto_reply_free(&out);
        msgpack_sbuffer_destroy(&sb);
    }

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_SUBMIT;
    in.re = 2;
    in.ok = true;
    in.u.submit.job = 77;
    in.u.submit.total = 1000000;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.submit.job, 77);
    assert_int_equal(out.u.submit.total, 1000000);
    proto_reply_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_STATUS;
    in.re = 3;
    in.ok = true;
    fill_job_info(&in.u.status, 77, true);
    in.u.status.created_ms = -5; /* not expected, but representable */
    roundtrip_reply(&in, &out, &buf);
    check_job_info(&out.u.status, &in.u.status);
    proto_reply_free(&out);

    struct proto_job_info jobs[3];
    for (int i = 0; i < 3; i++)
        fill_job_info(&jobs[i], (uint64_t)i + 1, i != 1);
    jobs[2].state = BURST_JOB_FAILED;
    jobs[2].error = proto_str_c("3 tasks failed");
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_JOBS;
    in.re = 4;
    in.ok = true;
    in.u.jobs.n = 3;
    in.u.jobs.jobs = jobs;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.jobs.n, 3);
    for (int i = 0; i < 3; i++)
        check_job_info(&out.u.jobs.jobs[i], &jobs[i]);
    proto_reply_free(&out);
    in.u.jobs.n = 0; /* an empty list */
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.jobs.n, 0);
    proto_reply_free(&out);

    struct proto_task_info tasks[2] = {
        {.index = 0,
         .state = BURST_TASK_SUCCEEDED,
         .attempts = 1,
         .exit_status = 0,
         .signal = 0,
         .started_ms = 10,
         .finished_ms = 20,
         .reason = {NULL, 0}},
        {.index = 1,
         .state = BURST_TASK_FAILED,
         .attempts = 3,
         .exit_status = -1,
         .signal = 9,
         .started_ms = 11,
         .finished_ms = 30,
         .reason = proto_str_c("killed by signal 9")},
    };
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_TASKS;
    in.re = 5;
    in.ok = true;
    in.u.tasks.n = 2;
    in.u.tasks.tasks = tasks;
    in.u.tasks.more = true;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.tasks.n, 2);
    assert_true(out.u.tasks.more);
    for (int i = 0; i < 2; i++) {
        const struct proto_task_info *a = &out.u.tasks.tasks[i], *b = &tasks[i];
        assert_int_equal(a->index, b->index);
        assert_int_equal(a->state, b->state);
        assert_int_equal(a->attempts, b->attempts);
        assert_int_equal(a->exit_status, b->exit_status);
        assert_int_equal(a->signal, b->signal);
        assert_int_equal(a->started_ms, b->started_ms);
        assert_int_equal(a->finished_ms, b->finished_ms);
        assert_pstr_eq(a->reason, b->reason);
    }
    proto_reply_free(&out);

    struct proto_result_item items[3] = {
        {.index = 0, .has_data = true, .data = proto_str_c("HELLO\n")},
        {.index = 1, .has_data = false, .data = {NULL, 0}},
        {.index = 2, .has_data = true, .data = bytes("", 0)},
    };
    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_RESULTS;
    in.re = 6;
    in.ok = true;
    in.u.results.n = 3;
    in.u.results.items = items;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.results.n, 3);
    assert_false(out.u.results.more);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out.u.results.items[i].index, items[i].index);
        assert_int_equal(out.u.results.items[i].has_data, items[i].has_data);
        if (items[i].has_data) {
            assert_int_equal(out.u.results.items[i].data.len, items[i].data.len);
            assert_memory_equal(out.u.results.items[i].data.ptr, items[i].data.ptr,
                                items[i].data.len);
        }
    }
    proto_reply_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_LOGS;
    in.re = 7;
    in.ok = true;
    in.u.logs.attempts = 2;
    in.u.logs.reason = proto_str_c("exit status 1");
    in.u.logs.log = bytes("error: \xff\0oops\n", 14);
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.logs.attempts, 2);
    assert_pstr_eq(out.u.logs.reason, in.u.logs.reason);
    assert_pstr_eq(out.u.logs.log, in.u.logs.log);
    proto_reply_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_QUOTA;
    in.re = 8;
    in.ok = true;
    in.u.quota.quota = 64;
    in.u.quota.in_use = 17;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.quota.quota, 64);
    assert_int_equal(out.u.quota.in_use, 17);
    proto_reply_free(&out);

    memset(&in, 0, sizeof(in));
    in.op = PROTO_OP_CANCEL;
    in.re = 9;
    in.ok = true;
    in.u.cancel.state = BURST_JOB_CANCELLED;
    roundtrip_reply(&in, &out, &buf);
    assert_int_equal(out.u.cancel.state, BURST_JOB_CANCELLED);
    proto_reply_free(&out);

    static const enum proto_op bare[] = {PROTO_OP_PUT_FN, PROTO_OP_SUBSCRIBE,
                                         PROTO_OP_UNSUBSCRIBE};
    for (size_t i = 0; i < 3; i++) {
        memset(&in, 0, sizeof(in));
        in.op = bare[i];
        in.re = 10 + i;
        in.ok = true;
        roundtrip_reply(&in, &out, &buf);
        proto_reply_free(&out);
    }

    /* Error replies, through both encoders, for every op. */
    for (int op = PROTO_OP_HELLO; op < PROTO_OP_COUNT_; op++) {
        memset(&in, 0, sizeof(in));
        in.op = (enum proto_op)op;
        in.re = 100 + (uint64_t)op;
        in.ok = false;
        in.u.error.code = BURST_ENOJOB;
        in.u.error.message = proto_str_c("no job 42");
        roundtrip_reply(&in, &out, &buf);
        assert_int_equal(out.u.error.code, BURST_ENOJOB);
        assert_pstr_eq(out.u.error.message, in.u.error.message);
        proto_reply_free(&out);
    }
    proto_buf_reset(&buf);
    assert_int_equal(
        proto_encode_error(&buf, 55, BURST_EBADFIELD, "field '%s' is bad", "x"), 0);
    assert_int_equal(
        proto_decode_reply(buf.data + 4, buf.len - 4, PROTO_OP_SUBMIT, NULL, &out), 0);
    assert_int_equal(out.re, 55);
    assert_false(out.ok);
    assert_int_equal(out.u.error.code, BURST_EBADFIELD);
    assert_true(proto_str_eq(out.u.error.message, "field 'x' is bad"));
    proto_reply_free(&out);
    /* An errno value travels as "internal". */
    proto_buf_reset(&buf);
    assert_int_equal(proto_encode_error(&buf, 56, -ENOMEM, "out of memory"), 0);
    assert_int_equal(
        proto_decode_reply(buf.data + 4, buf.len - 4, PROTO_OP_JOBS, NULL, &out), 0);
    assert_int_equal(out.u.error.code, BURST_EINTERNAL);
    proto_reply_free(&out);

    proto_buf_free(&buf);
}

/* ---- events ------------------------------------------------------------- */

static void
test_rt_events(void **state)
{
    (void)state;
    struct proto_task_change ch1[3] = {{0, BURST_TASK_RUNNING, 1},
                                       {1, BURST_TASK_SUCCEEDED, 1},
                                       {2, BURST_TASK_RETRYING, 2}};
    struct proto_task_change ch2[1] = {{4000000000u, BURST_TASK_TIMEOUT, 7}};
    struct proto_event_item items[4] = {
        {.seq = 1, .type = BURST_EV_JOB, .job_state = BURST_JOB_RUNNING},
        {.seq = 2, .type = BURST_EV_TASK, .ntasks = 3, .tasks = ch1},
        {.seq = 3, .type = BURST_EV_TASK, .ntasks = 1, .tasks = ch2},
        {.seq = UINT64_MAX, .type = BURST_EV_JOB, .job_state = BURST_JOB_SUCCEEDED},
    };
    struct proto_events in = {.job = 99, .nitems = 4, .items = items};
    struct proto_buf buf;
    proto_buf_init(&buf);
    assert_int_equal(proto_encode_events(&buf, &in), 0);
    const char *payload = buf.data + 4;
    size_t len = buf.len - 4;
    assert_int_equal(be32(buf.data), len);
    enum proto_kind kind;
    uint64_t re = 1;
    assert_int_equal(proto_peek(payload, len, &kind, &re), 0);
    assert_int_equal(kind, PROTO_KIND_EVENT);

    struct proto_events out;
    void *priv;
    assert_int_equal(proto_decode_events(payload, len, NULL, &out, &priv), 0);
    assert_int_equal(out.job, 99);
    assert_int_equal(out.nitems, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out.items[i].seq, items[i].seq);
        assert_int_equal(out.items[i].type, items[i].type);
        if (items[i].type == BURST_EV_JOB) {
            assert_int_equal(out.items[i].job_state, items[i].job_state);
            continue;
        }
        assert_int_equal(out.items[i].ntasks, items[i].ntasks);
        for (uint32_t k = 0; k < items[i].ntasks; k++) {
            assert_int_equal(out.items[i].tasks[k].index, items[i].tasks[k].index);
            assert_int_equal(out.items[i].tasks[k].state, items[i].tasks[k].state);
            assert_int_equal(out.items[i].tasks[k].attempts, items[i].tasks[k].attempts);
        }
    }
    proto_events_free(priv);

    /* No items at all is a valid (if useless) frame. */
    struct proto_events empty = {.job = 5, .nitems = 0, .items = NULL};
    proto_buf_reset(&buf);
    assert_int_equal(proto_encode_events(&buf, &empty), 0);
    assert_int_equal(proto_decode_events(buf.data + 4, buf.len - 4, NULL, &out, &priv),
                     0);
    assert_int_equal(out.nitems, 0);
    assert_int_equal(out.job, 5);
    proto_events_free(priv);
    proto_buf_free(&buf);
}

/* ---- a notation for hand-written payloads ------------------------------- */

struct dsl {
    const char *p;
    msgpack_packer pk;
    msgpack_sbuffer sb;
};

static void dsl_value(struct dsl *d);

static void
dsl_ws(struct dsl *d)
{
    while (*d->p == ' ' || *d->p == '\n')
        d->p++;
}

/* Skips one value without packing it (to count container elements). */
static void
dsl_skip(const char **pp)
{
    const char *p = *pp;
    int depth = 0;
    do {
        while (*p == ' ')
            p++;
        if (*p == '\'' || (*p == 'b' && p[1] == '\'')) {
            p += *p == 'b' ? 2 : 1;
            while (*p != '\'') {
                assert_true(*p != '\0');
                p += *p == '\\' ? 2 : 1;
            }
            p++;
        } else if (*p == '#') {
            p = strchr(p + 1, '#') + 1;
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else if (*p == ',' || *p == ':') {
            p++;
        } else {
            while (*p != '\0' && strchr(" ,:]}", *p) == NULL)
                p++;
        }
    } while (depth > 0);
    *pp = p;
}

/* Counts the elements of the container whose opening bracket is at p;
 * a map entry (key: value) counts once. */
static uint32_t
dsl_count(const char *p, char close, bool map)
{
    uint32_t n = 0;
    p++;
    for (;;) {
        while (*p == ' ' || *p == '\n')
            p++;
        if (*p == close)
            return n;
        dsl_skip(&p);
        if (map) {
            while (*p == ' ')
                p++;
            assert_int_equal(*p, ':');
            p++;
            dsl_skip(&p);
        }
        n++;
        while (*p == ' ' || *p == '\n')
            p++;
        if (*p == ',')
            p++;
    }
}

static void
dsl_string(struct dsl *d, bool bin)
{
    char buf[4096];
    size_t n = 0;
    d->p++; /* the quote */
    while (*d->p != '\'') {
        assert_true(*d->p != '\0' && n < sizeof(buf));
        if (*d->p == '\\') {
            d->p++;
            if (*d->p == '0')
                buf[n++] = '\0', d->p++;
            else if (*d->p == 'n')
                buf[n++] = '\n', d->p++;
            else if (*d->p == 'x') {
                buf[n++] = (char)strtoul((char[]){d->p[1], d->p[2], 0}, NULL, 16);
                d->p += 3;
            } else
                buf[n++] = *d->p++;
        } else {
            buf[n++] = *d->p++;
        }
    }
    d->p++;
    if (bin)
        msgpack_pack_bin_with_body(&d->pk, buf, n);
    else
        msgpack_pack_str_with_body(&d->pk, buf, n);
}

static void
dsl_value(struct dsl *d)
{
    dsl_ws(d);
    char c = *d->p;
    if (c == '{' || c == '[') {
        bool map = c == '{';
        char close = map ? '}' : ']';
        uint32_t n = dsl_count(d->p, close, map);
        if (map)
            msgpack_pack_map(&d->pk, n);
        else
            msgpack_pack_array(&d->pk, n);
        d->p++;
        for (uint32_t i = 0; i < n; i++) {
            dsl_ws(d);
            if (map && (isalpha((unsigned char)*d->p) || *d->p == '_') &&
                strncmp(d->p, "nil", 3) != 0 && strncmp(d->p, "true", 4) != 0 &&
                d->p[1] != '\'') {
                const char *k = d->p;
                while (isalnum((unsigned char)*d->p) || *d->p == '_')
                    d->p++;
                msgpack_pack_str_with_body(&d->pk, k, (size_t)(d->p - k));
            } else if (map) {
                dsl_value(d);
            }
            dsl_ws(d);
            if (map) {
                assert_int_equal(*d->p, ':');
                d->p++;
            }
            dsl_value(d);
            dsl_ws(d);
            if (*d->p == ',')
                d->p++;
        }
        dsl_ws(d);
        assert_int_equal(*d->p, close);
        d->p++;
    } else if (c == '\'') {
        dsl_string(d, false);
    } else if (c == 'b' && d->p[1] == '\'') {
        d->p++;
        dsl_string(d, true);
    } else if (c == '#') {
        d->p++;
        while (*d->p != '#') {
            if (*d->p == ' ') {
                d->p++;
                continue;
            }
            char h[3] = {d->p[0], d->p[1], 0};
            char byte = (char)strtoul(h, NULL, 16);
            msgpack_sbuffer_write(&d->sb, &byte, 1);
            d->p += 2;
        }
        d->p++;
    } else if (strncmp(d->p, "true", 4) == 0) {
        msgpack_pack_true(&d->pk);
        d->p += 4;
    } else if (strncmp(d->p, "false", 5) == 0) {
        msgpack_pack_false(&d->pk);
        d->p += 5;
    } else if (strncmp(d->p, "nil", 3) == 0) {
        msgpack_pack_nil(&d->pk);
        d->p += 3;
    } else if (c == '-') {
        char *end;
        long long v = strtoll(d->p, &end, 10);
        msgpack_pack_int64(&d->pk, v);
        d->p = end;
    } else if (isdigit((unsigned char)c)) {
        char *end;
        unsigned long long v = strtoull(d->p, &end, 10);
        if (*end == '.') {
            double f = strtod(d->p, &end);
            msgpack_pack_double(&d->pk, f);
        } else {
            msgpack_pack_uint64(&d->pk, v);
        }
        d->p = end;
    } else {
        fail_msg("bad notation at '%s'", d->p);
    }
}

/* Turns the notation into bytes; the caller frees *out with free(). */
static size_t
dsl_pack(const char *text, char **out)
{
    struct dsl d;
    d.p = text;
    msgpack_sbuffer_init(&d.sb);
    msgpack_packer_init(&d.pk, &d.sb, msgpack_sbuffer_write);
    for (;;) {
        dsl_ws(&d);
        if (*d.p == '\0')
            break;
        dsl_value(&d);
    }
    *out = d.sb.data;
    return d.sb.size;
}

/* ---- the table of bad payloads ------------------------------------------ */

/* Small limits so the table can spell out every excess by hand. */
static const struct proto_limits table_limits = {
    .max_frame = 4096,
    .max_depth = 6,
    .max_string = 16,
    .max_input = 8,
    .max_tasks = 4,
    .max_retries = 5,
    .max_chunksize = 100,
    .max_fn_size = 32,
    .page_tasks = 10,
    .page_bytes = 1000,
};

#define EXEC "fn:{kind:'exec',cmd:'cat'}"
#define SO(h, s) "fn:{kind:'so',hash:'" h "',symbol:'" s "'}"
#define H64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SUB(rest) "{op:'submit',id:7,kind:'map'," EXEC ",inputs:[b'a']" rest "}"

struct bad_case {
    const char *name;
    const char *text;   /* notation; framed: the raw stream */
    int code;           /* expected error */
    uint64_t id;        /* expected *id_out */
    const char *in_msg; /* a substring the message must contain, or NULL */
    bool framed;        /* feed to a frame reader instead of the decoder */
};

static const struct bad_case bad_cases[] = {
    /* framing */
    {"zero length frame", "#00000000#", BURST_EPROTO, 0, NULL, true},
    {"oversized frame length", "#00001001#", BURST_ETOOBIG, 0, NULL, true},
    {"huge frame length", "#ffffffff#", BURST_ETOOBIG, 0, NULL, true},
    /* msgpack shape */
    {"empty payload", "", BURST_EPROTO, 0, "empty", false},
    {"not a map", "[1,2]", BURST_EPROTO, 0, "map", false},
    {"a string", "'op'", BURST_EPROTO, 0, "map", false},
    {"truncated msgpack", "#82a26f70a5#", BURST_EPROTO, 0, "truncated", false},
    {"truncated after id", "#82a26964 07 a26f70#", BURST_EPROTO, 7, "truncated", false},
    {"map header without entries", "#df7fffffff#", BURST_EPROTO, 0, "truncated", false},
    {"huge array header", "{op:'jobs',id:3,x:#ddffffffff#}", BURST_EPROTO, 3, "truncated",
     false},
    {"invalid byte c1", "{op:'jobs',id:4,x:#c1#}", BURST_EPROTO, 4, "0xc1", false},
    {"trailing garbage", "{op:'jobs',id:5} #c0#", BURST_EPROTO, 5, "trailing", false},
    {"two maps", "{op:'jobs',id:6} {op:'jobs',id:6}", BURST_EPROTO, 6, "trailing", false},
    {"depth too deep", "{op:'jobs',id:8,x:[[[[[[1]]]]]]}", BURST_ETOOBIG, 8, "deeper",
     false},
    {"depth at the limit", "{op:'jobs',id:8,x:[[[[[1]]]]]}", 0, 8, NULL, false},
    {"non-string key", "{op:'jobs',id:9,1:2}", BURST_EPROTO, 9, "keys", false},
    {"duplicate key", "{op:'jobs',id:9,all:true,all:false}", BURST_EPROTO, 9, "duplicate",
     false},
    {"message above max_frame",
     "{op:'jobs',id:10,pad:b'"
     "\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\0\\"
     "0"
     "'}",
     0, 10, NULL, false},
    /* op and id */
    {"missing op", "{id:11}", BURST_EPROTO, 11, "'op'", false},
    {"op not a string", "{op:3,id:12}", BURST_EPROTO, 12, "'op'", false},
    {"op is bin", "{op:b'jobs',id:12}", BURST_EPROTO, 12, "'op'", false},
    {"unknown op", "{op:'frobnicate',id:13}", BURST_EUNKNOWNOP, 13, "'frobnicate'",
     false},
    {"unknown op, unprintable", "{op:'a\\nb',id:13}", BURST_EUNKNOWNOP, 13, "'a?b'",
     false},
    {"missing id", "{op:'jobs'}", BURST_EPROTO, 0, "'id'", false},
    {"nil id", "{op:'jobs',id:nil}", BURST_EPROTO, 0, "'id'", false},
    {"negative id", "{op:'jobs',id:-1}", BURST_EPROTO, 0, "'id'", false},
    {"string id", "{op:'jobs',id:'1'}", BURST_EPROTO, 0, "'id'", false},
    {"float id", "{op:'jobs',id:1.5}", BURST_EPROTO, 0, "'id'", false},
    {"id as int8 value", "{op:'jobs',id:#d005#}", 0, 5, NULL, false},
    /* hello */
    {"bad version", "{op:'hello',id:1,version:2}", BURST_EVERSION, 1, "version 2", false},
    {"version 0", "{op:'hello',id:1,version:0}", BURST_EVERSION, 1, NULL, false},
    {"version missing", "{op:'hello',id:1}", BURST_EBADFIELD, 1, "'version'", false},
    {"version a string", "{op:'hello',id:1,version:'1'}", BURST_EBADFIELD, 1, "'version'",
     false},
    {"client too long", "{op:'hello',id:1,version:1,client:'12345678901234567'}",
     BURST_ETOOBIG, 1, "'client'", false},
    {"good hello", "{op:'hello',id:1,version:1,client:'x',extra:[1,{a:2}]}", 0, 1, NULL,
     false},
    /* submit: each field */
    {"good submit", SUB(""), 0, 7, NULL, false},
    {"kind missing", "{op:'submit',id:7," EXEC ",inputs:[b'a']}", BURST_EBADFIELD, 7,
     "'kind'", false},
    {"kind unknown", "{op:'submit',id:7,kind:'reduce'," EXEC ",inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'kind' must be one of", false},
    {"kind an integer", "{op:'submit',id:7,kind:0," EXEC ",inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'kind'", false},
    {"fn missing", "{op:'submit',id:7,kind:'map',inputs:[b'a']}", BURST_EBADFIELD, 7,
     "'fn'", false},
    {"fn not a map", "{op:'submit',id:7,kind:'map',fn:'cat',inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn' must be a map", false},
    {"fn.kind unknown",
     "{op:'submit',id:7,kind:'map',fn:{kind:'python',cmd:'x'},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.kind'", false},
    {"fn.cmd missing", "{op:'submit',id:7,kind:'map',fn:{kind:'exec'},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.cmd'", false},
    {"fn.cmd bin",
     "{op:'submit',id:7,kind:'map',fn:{kind:'exec',cmd:b'cat'},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.cmd' must be a string", false},
    {"fn.cmd empty",
     "{op:'submit',id:7,kind:'map',fn:{kind:'exec',cmd:''},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.cmd' must not be empty", false},
    {"exec cmd with NUL",
     "{op:'submit',id:7,kind:'map',fn:{kind:'exec',cmd:'cat\\0-n'},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "NUL", false},
    {"string too long",
     "{op:'submit',id:7,kind:'map',fn:{kind:'exec',cmd:'12345678901234567'},inputs:[b'a']"
     "}",
     BURST_ETOOBIG, 7, "'fn.cmd' is longer than 16", false},
    {"good so", "{op:'submit',id:7,kind:'map'," SO(H64, "_fn1") ",inputs:[b'a']}", 0, 7,
     NULL, false},
    {"bad hash: upper case",
     "{op:'submit',id:7,kind:'map'," SO(
         "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
         "f") ",inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.hash'", false},
    {"bad hash: short", "{op:'submit',id:7,kind:'map'," SO("0123", "f") ",inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.hash'", false},
    {"bad hash: not hex",
     "{op:'submit',id:7,kind:'map'," SO(
         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
         "f") ",inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.hash'", false},
    {"hash missing",
     "{op:'submit',id:7,kind:'map',fn:{kind:'so',symbol:'f'},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.hash'", false},
    {"bad symbol: leading digit",
     "{op:'submit',id:7,kind:'map'," SO(H64, "1fn") ",inputs:[b'a']}", BURST_EBADFIELD, 7,
     "'fn.symbol'", false},
    {"bad symbol: dash",
     "{op:'submit',id:7,kind:'map'," SO(H64, "my-fn") ",inputs:[b'a']}", BURST_EBADFIELD,
     7, "'fn.symbol'", false},
    {"bad symbol: empty", "{op:'submit',id:7,kind:'map'," SO(H64, "") ",inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'fn.symbol'", false},
    {"map_reduce without reduce",
     "{op:'submit',id:7,kind:'map_reduce'," EXEC ",inputs:[b'a']}", BURST_EBADFIELD, 7,
     "'reduce'", false},
    {"good map_reduce",
     "{op:'submit',id:7,kind:'map_reduce'," EXEC
     ",reduce:{kind:'exec',cmd:'wc'},inputs:[b'a']}",
     0, 7, NULL, false},
    {"reduce with bad cmd",
     "{op:'submit',id:7,kind:'map_reduce'," EXEC
     ",reduce:{kind:'exec',cmd:''},inputs:[b'a']}",
     BURST_EBADFIELD, 7, "'reduce.cmd'", false},
    {"reduce on a map job", SUB(",reduce:{kind:'exec',cmd:'wc'}"), BURST_EBADFIELD, 7,
     "'reduce'", false},
    {"no inputs at all", "{op:'submit',id:7,kind:'map'," EXEC "}", BURST_EBADFIELD, 7,
     "'inputs'", false},
    {"inputs not an array", "{op:'submit',id:7,kind:'map'," EXEC ",inputs:b'a'}",
     BURST_EBADFIELD, 7, "'inputs' must be an array", false},
    {"empty inputs", "{op:'submit',id:7,kind:'map'," EXEC ",inputs:[]}", BURST_EBADFIELD,
     7, "at least one input", false},
    {"input an integer", "{op:'submit',id:7,kind:'map'," EXEC ",inputs:[b'a',5]}",
     BURST_EBADFIELD, 7, "'inputs[1]'", false},
    {"input as str is accepted", "{op:'submit',id:7,kind:'map'," EXEC ",inputs:['a']}", 0,
     7, NULL, false},
    {"too many inputs",
     "{op:'submit',id:7,kind:'map'," EXEC ",inputs:[b'1',b'2',b'3',b'4',b'5']}",
     BURST_ETOOBIG, 7, "5 inputs", false},
    {"input too long",
     "{op:'submit',id:7,kind:'map'," EXEC ",inputs:[b'a',b'123456789']}", BURST_ETOOBIG,
     7, "'inputs[1]'", false},
    {"inputs and lines", SUB(",lines:b'a\\n'"), BURST_EBADFIELD, 7, "not both", false},
    {"empty lines blob", "{op:'submit',id:7,kind:'map'," EXEC ",lines:b''}",
     BURST_EBADFIELD, 7, "at least one input", false},
    {"lines an integer", "{op:'submit',id:7,kind:'map'," EXEC ",lines:3}",
     BURST_EBADFIELD, 7, "'lines'", false},
    {"too many lines",
     "{op:'submit',id:7,kind:'map'," EXEC ",lines:b'1\\n2\\n3\\n4\\n5'}", BURST_ETOOBIG,
     7, "'lines'", false},
    {"four lines are fine",
     "{op:'submit',id:7,kind:'map'," EXEC ",lines:b'1\\n2\\n3\\n4\\n'}", 0, 7, NULL,
     false},
    {"line too long", "{op:'submit',id:7,kind:'map'," EXEC ",lines:b'1\\n123456789'}",
     BURST_ETOOBIG, 7, "line 2", false},
    {"call with two inputs", "{op:'submit',id:7,kind:'call'," EXEC ",inputs:[b'a',b'b']}",
     BURST_EBADFIELD, 7, "exactly one input", false},
    {"opts not a map", SUB(",opts:[1]"), BURST_EBADFIELD, 7, "'opts' must be a map",
     false},
    {"chunksize 0", SUB(",opts:{chunksize:0}"), BURST_EBADFIELD, 7,
     "field 'opts.chunksize' must be an integer from 1 to 100", false},
    {"chunksize too big", SUB(",opts:{chunksize:101}"), BURST_EBADFIELD, 7,
     "'opts.chunksize'", false},
    {"chunksize a string", SUB(",opts:{chunksize:'2'}"), BURST_EBADFIELD, 7,
     "'opts.chunksize'", false},
    {"chunksize negative", SUB(",opts:{chunksize:-2}"), BURST_EBADFIELD, 7,
     "'opts.chunksize'", false},
    {"chunksize nil means default", SUB(",opts:{chunksize:nil}"), 0, 7, NULL, false},
    {"retries too many", SUB(",opts:{retries:6}"), BURST_EBADFIELD, 7, "'opts.retries'",
     false},
    {"retries a bool", SUB(",opts:{retries:true}"), BURST_EBADFIELD, 7, "'opts.retries'",
     false},
    {"timeout negative", SUB(",opts:{timeout_ms:-1}"), BURST_EBADFIELD, 7,
     "'opts.timeout_ms'", false},
    {"timeout a float", SUB(",opts:{timeout_ms:1.5}"), BURST_EBADFIELD, 7,
     "'opts.timeout_ms'", false},
    {"memory above 32 bits", SUB(",opts:{memory_mb:4294967296}"), BURST_EBADFIELD, 7,
     "'opts.memory_mb'", false},
    {"backend bin", SUB(",opts:{backend:b'local'}"), BURST_EBADFIELD, 7, "'opts.backend'",
     false},
    {"backend with a slash", SUB(",opts:{backend:'../x'}"), BURST_EBADFIELD, 7,
     "'opts.backend'", false},
    {"backend empty", SUB(",opts:{backend:''}"), BURST_EBADFIELD, 7, "'opts.backend'",
     false},
    {"name too long", SUB(",opts:{name:'12345678901234567'}"), BURST_ETOOBIG, 7,
     "'opts.name'", false},
    {"name a number", SUB(",opts:{name:5}"), BURST_EBADFIELD, 7, "'opts.name'", false},
    {"cancel_on_disconnect 1", SUB(",opts:{cancel_on_disconnect:1}"), BURST_EBADFIELD, 7,
     "'opts.cancel_on_disconnect'", false},
    {"subscribe a string", SUB(",subscribe:'yes'"), BURST_EBADFIELD, 7, "'subscribe'",
     false},
    {"opts keys not strings", SUB(",opts:{1:2}"), BURST_EPROTO, 7, "'opts'", false},
    /* put_fn */
    {"put_fn good", "{op:'put_fn',id:2,hash:'" H64 "',data:b'ELF'}", 0, 2, NULL, false},
    {"put_fn bad hash", "{op:'put_fn',id:2,hash:'abc',data:b'ELF'}", BURST_EBADFIELD, 2,
     "'hash'", false},
    {"put_fn data str", "{op:'put_fn',id:2,hash:'" H64 "',data:'ELF'}", BURST_EBADFIELD,
     2, "'data'", false},
    {"put_fn data empty", "{op:'put_fn',id:2,hash:'" H64 "',data:b''}", BURST_EBADFIELD,
     2, "'data'", false},
    {"put_fn data too big",
     "{op:'put_fn',id:2,hash:'" H64 "',data:b'123456789012345678901234567890123'}",
     BURST_ETOOBIG, 2, "'data'", false},
    /* the small requests */
    {"status without job", "{op:'status',id:3}", BURST_EBADFIELD, 3, "'job'", false},
    {"status job negative", "{op:'status',id:3,job:-4}", BURST_EBADFIELD, 3, "'job'",
     false},
    {"cancel job a string", "{op:'cancel',id:3,job:'4'}", BURST_EBADFIELD, 3, "'job'",
     false},
    {"unsubscribe good", "{op:'unsubscribe',id:3,job:4}", 0, 3, NULL, false},
    {"jobs all an integer", "{op:'jobs',id:3,all:1}", BURST_EBADFIELD, 3, "'all'", false},
    {"tasks bad state", "{op:'tasks',id:3,job:1,state:'done'}", BURST_EBADFIELD, 3,
     "'state' must be one of", false},
    {"tasks offset negative", "{op:'tasks',id:3,job:1,offset:-1}", BURST_EBADFIELD, 3,
     "'offset'", false},
    {"tasks limit a string", "{op:'tasks',id:3,job:1,limit:'all'}", BURST_EBADFIELD, 3,
     "'limit'", false},
    {"results from above 32 bits", "{op:'results',id:3,job:1,from:4294967296}",
     BURST_EBADFIELD, 3, "'from'", false},
    {"results max_bytes a string", "{op:'results',id:3,job:1,max_bytes:'1k'}",
     BURST_EBADFIELD, 3, "'max_bytes'", false},
    {"results final an integer", "{op:'results',id:3,job:1,final:1}", BURST_EBADFIELD, 3,
     "field 'final' must be a boolean", false},
    {"results final a string", "{op:'results',id:3,job:1,final:'true'}", BURST_EBADFIELD,
     3, "field 'final' must be a boolean", false},
    {"logs without task", "{op:'logs',id:3,job:1}", BURST_EBADFIELD, 3, "'task'", false},
    {"quota set 0", "{op:'quota',id:3,set:0}", BURST_EBADFIELD, 3, "'set'", false},
    {"quota set negative", "{op:'quota',id:3,set:-5}", BURST_EBADFIELD, 3, "'set'",
     false},
    {"subscribe without job", "{op:'subscribe',id:3,from_seq:0}", BURST_EBADFIELD, 3,
     "'job'", false},
    {"subscribe from_seq a string", "{op:'subscribe',id:3,job:1,from_seq:'0'}",
     BURST_EBADFIELD, 3, "'from_seq'", false},
};

static void
run_bad_case(const struct bad_case *c)
{
    char *bytes_ = NULL;
    size_t len = dsl_pack(c->text, &bytes_);
    if (c->framed) {
        struct frame_reader r;
        frame_reader_init(&r, table_limits.max_frame);
        assert_int_equal(frame_reader_feed(&r, bytes_, len), 0);
        const char *p;
        size_t plen;
        int rc = frame_next(&r, &p, &plen);
        if (rc != c->code)
            fail_msg("case '%s': frame_next gave %d, expected %d", c->name, rc, c->code);
        frame_reader_free(&r);
        free(bytes_);
        return;
    }
    struct proto_limits lim = table_limits;
    if (strcmp(c->name, "message above max_frame") == 0) {
        /* The same message passes with the table's limit and fails with a
         * limit one byte below its size. */
        struct proto_request req;
        struct proto_error err;
        uint64_t id;
        assert_int_equal(proto_decode_request(bytes_, len, &lim, &req, &err, &id), 0);
        proto_request_free(&req);
        lim.max_frame = (uint32_t)len - 1;
        assert_int_equal(proto_decode_request(bytes_, len, &lim, &req, &err, &id),
                         BURST_ETOOBIG);
        assert_int_equal(err.code, BURST_ETOOBIG);
        assert_int_equal(id, c->id);
        assert_null(req.priv_);
        free(bytes_);
        return;
    }
    struct proto_request req;
    struct proto_error err = {0, {NULL, 0}};
    uint64_t id = 999999;
    int rc = proto_decode_request(bytes_, len, &lim, &req, &err, &id);
    if (rc != c->code)
        fail_msg("case '%s': got %d (%s: %.*s), expected %d", c->name, rc,
                 burst_error_name(rc), (int)err.message.len,
                 err.message.ptr != NULL ? err.message.ptr : "", c->code);
    if (id != c->id)
        fail_msg("case '%s': id_out %llu, expected %llu", c->name, (unsigned long long)id,
                 (unsigned long long)c->id);
    if (rc == 0) {
        proto_request_free(&req);
    } else {
        assert_int_equal(err.code, rc);
        assert_non_null(err.message.ptr);
        assert_int_equal(strlen(err.message.ptr), err.message.len);
        assert_true(err.message.len > 0);
        assert_null(req.priv_); /* nothing to free on failure */
        if (c->in_msg != NULL && strstr(err.message.ptr, c->in_msg) == NULL)
            fail_msg("case '%s': message \"%s\" lacks \"%s\"", c->name, err.message.ptr,
                     c->in_msg);
    }
    free(bytes_);
}

/* final is optional: absent or nil is false, as for a client that predates
 * it. */
static void
test_results_final_default(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        bool final;
    } cases[] = {
        {"{op:'results',id:3,job:1}", false},
        {"{op:'results',id:3,job:1,final:nil}", false},
        {"{op:'results',id:3,job:1,final:false}", false},
        {"{op:'results',id:3,job:1,from:2,final:true}", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = NULL;
        size_t len = dsl_pack(cases[i].text, &b);
        struct proto_limits lim = table_limits;
        struct proto_request req;
        struct proto_error err;
        uint64_t id;
        int rc = proto_decode_request(b, len, &lim, &req, &err, &id);
        if (rc != 0)
            fail_msg("'%s': got %d", cases[i].text, rc);
        assert_int_equal(req.op, PROTO_OP_RESULTS);
        assert_int_equal(req.u.results.job, 1);
        if (req.u.results.final != cases[i].final)
            fail_msg("'%s': final is %d", cases[i].text, req.u.results.final);
        proto_request_free(&req);
        free(b);
    }
}

static void
test_bad_payloads(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
        run_bad_case(&bad_cases[i]);
}

/* Every prefix of a valid submit is refused cleanly, never crashes. */
static void
test_truncations(void **state)
{
    (void)state;
    char *b = NULL;
    size_t len = dsl_pack("{op:'submit',id:7,kind:'map_reduce'," EXEC
                          ",reduce:{kind:'so',hash:'" H64 "',symbol:'r'},"
                          "lines:b'a\\nb\\n',opts:{chunksize:2,name:'n'},subscribe:true}",
                          &b);
    struct proto_request req;
    struct proto_error err;
    uint64_t id;
    assert_int_equal(proto_decode_request(b, len, &table_limits, &req, &err, &id), 0);
    assert_int_equal(req.u.submit.ninputs, 2);
    assert_int_equal(req.u.submit.opts.chunksize, 2);
    proto_request_free(&req);
    for (size_t n = 0; n < len; n++) {
        int rc = proto_decode_request(b, n, &table_limits, &req, &err, &id);
        assert_int_equal(rc, BURST_EPROTO);
        /* Once the id is in, it is reported. */
        if (n >= 15)
            assert_int_equal(id, 7);
    }
    free(b);
}

/* ---- client-side decoding of bad replies -------------------------------- */

static void
test_bad_replies(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        enum proto_op op;
        int code;
    } cases[] = {
        {"{re:1,ok:true,job:5,total:2}", PROTO_OP_SUBMIT, 0},
        {"{re:1,ok:true,total:2}", PROTO_OP_SUBMIT, BURST_EPROTO},
        {"{re:1,ok:'yes',job:5}", PROTO_OP_SUBMIT, BURST_EPROTO},
        {"{ok:true,job:5}", PROTO_OP_SUBMIT, BURST_EPROTO},
        {"{re:-1,ok:true,job:5}", PROTO_OP_SUBMIT, BURST_EPROTO},
        {"{re:1,ok:false}", PROTO_OP_SUBMIT, BURST_EPROTO},
        {"{re:1,ok:false,error:{message:'x'}}", PROTO_OP_SUBMIT, BURST_EPROTO},
        {"{re:1,ok:false,error:{code:'brand_new'}}", PROTO_OP_SUBMIT, 0},
        {"{re:1,ok:true,jobs:[{id:1,kind:'map',state:'queued',counts:{queued:1,new:2}}]}",
         PROTO_OP_JOBS, 0},
        {"{re:1,ok:true,jobs:[{id:1,kind:'map',state:'paused'}]}", PROTO_OP_JOBS,
         BURST_EPROTO},
        {"{re:1,ok:true,jobs:[5]}", PROTO_OP_JOBS, BURST_EPROTO},
        {"{re:1,ok:true,jobs:{}}", PROTO_OP_JOBS, BURST_EPROTO},
        {"{re:1,ok:true,jobs:[{id:1,kind:'map',state:'queued',counts:{queued:-1}}]}",
         PROTO_OP_JOBS, BURST_EPROTO},
        {"{re:1,ok:true,items:[[0,b'x'],[1,nil]],more:true}", PROTO_OP_RESULTS, 0},
        {"{re:1,ok:true,items:[[0]]}", PROTO_OP_RESULTS, BURST_EPROTO},
        {"{re:1,ok:true,items:[[0,5]]}", PROTO_OP_RESULTS, BURST_EPROTO},
        {"{re:1,ok:true,items:[[-1,b'x']]}", PROTO_OP_RESULTS, BURST_EPROTO},
        {"{re:1,ok:true,tasks:[{index:0,state:'running',exit_status:4294967296}]}",
         PROTO_OP_TASKS, BURST_EPROTO},
        {"{re:1,ok:true,tasks:[{index:0,state:'running',exit_status:-2147483648}]}",
         PROTO_OP_TASKS, 0},
        {"{re:1,ok:true,state:'cancelled'}", PROTO_OP_CANCEL, 0},
        {"{re:1,ok:true,state:3}", PROTO_OP_CANCEL, BURST_EPROTO},
        {"{re:1,ok:true,version:1,limits:{max_tasks:9}}", PROTO_OP_HELLO, 0},
        {"{re:1,ok:true,version:1,limits:[]}", PROTO_OP_HELLO, BURST_EPROTO},
        {"{re:1,ok:true} #00#", PROTO_OP_PUT_FN, BURST_EPROTO},
        {"[1]", PROTO_OP_PUT_FN, BURST_EPROTO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = NULL;
        size_t len = dsl_pack(cases[i].text, &b);
        struct proto_reply rep;
        int rc = proto_decode_reply(b, len, cases[i].op, NULL, &rep);
        if (rc != cases[i].code)
            fail_msg("reply '%s': got %d, expected %d", cases[i].text, rc, cases[i].code);
        if (rc == 0)
            proto_reply_free(&rep);
        else
            assert_null(rep.priv_);
        free(b);
    }
    /* Specific values of the accepted ones. */
    char *b = NULL;
    size_t len = dsl_pack("{re:1,ok:false,error:{code:'brand_new'}}", &b);
    struct proto_reply rep;
    assert_int_equal(proto_decode_reply(b, len, PROTO_OP_STATUS, NULL, &rep), 0);
    assert_int_equal(rep.u.error.code, BURST_EINTERNAL);
    assert_null(rep.u.error.message.ptr);
    proto_reply_free(&rep);
    free(b);
    len = dsl_pack("{re:1,ok:true,version:1,limits:{max_tasks:9}}", &b);
    assert_int_equal(proto_decode_reply(b, len, PROTO_OP_HELLO, NULL, &rep), 0);
    assert_int_equal(rep.u.hello.limits.max_tasks, 9);
    assert_int_equal(rep.u.hello.limits.max_depth, 16); /* absent: the default */
    proto_reply_free(&rep);
    free(b);
    len = dsl_pack("{re:1,ok:true,jobs:[{id:1,kind:'map',state:'queued',"
                   "counts:{queued:1,new:2}}]}",
                   &b);
    assert_int_equal(proto_decode_reply(b, len, PROTO_OP_JOBS, NULL, &rep), 0);
    assert_int_equal(rep.u.jobs.jobs[0].counts[BURST_TASK_QUEUED], 1);
    proto_reply_free(&rep);
    free(b);
}

static void
test_bad_events(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int code;
    } cases[] = {
        {"{ev:'events',job:1,items:[{seq:1,type:'job',state:'running'}]}", 0},
        {"{ev:'events',job:1,items:[{seq:1,type:'tasks',tasks:[[0,'queued',0]]}]}", 0},
        {"{ev:'other',job:1,items:[]}", BURST_EUNKNOWNOP},
        {"{ev:'events',items:[]}", BURST_EPROTO},
        {"{ev:'events',job:1}", BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'job',state:'dispatched'}]}",
         BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'party'}]}", BURST_EPROTO},
        {"{ev:'events',job:1,items:[{type:'job',state:'running'}]}", BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'tasks'}]}", BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'tasks',tasks:[[0,'queued']]}]}",
         BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'tasks',tasks:[[0,2,0]]}]}",
         BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'tasks',tasks:[[0,'done',0]]}]}",
         BURST_EPROTO},
        {"{ev:'events',job:1,items:[{seq:1,type:'tasks',tasks:5}]}", BURST_EPROTO},
        {"{ev:'events',job:1,items:[7]}", BURST_EPROTO},
        {"#83a2#", BURST_EPROTO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = NULL;
        size_t len = dsl_pack(cases[i].text, &b);
        struct proto_events ev;
        void *priv = (void *)1;
        int rc = proto_decode_events(b, len, NULL, &ev, &priv);
        if (rc != cases[i].code)
            fail_msg("events '%s': got %d, expected %d", cases[i].text, rc,
                     cases[i].code);
        if (rc == 0)
            proto_events_free(priv);
        else
            assert_null(priv);
        free(b);
    }
}

static void
test_peek(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        enum proto_kind kind;
        uint64_t re;
    } cases[] = {
        {"{re:42,ok:true}", 0, PROTO_KIND_REPLY, 42},
        {"{ok:true,re:43}", 0, PROTO_KIND_REPLY, 43},
        {"{x:[1,2,{y:3}],re:44,ok:true}", 0, PROTO_KIND_REPLY, 44},
        {"{ev:'events',job:1,items:[]}", 0, PROTO_KIND_EVENT, 0},
        {"{op:'jobs',id:1}", 0, PROTO_KIND_REQUEST, 0},
        {"{re:'x',ok:true}", BURST_EPROTO, PROTO_KIND_REPLY, 0},
        {"{a:1}", BURST_EPROTO, PROTO_KIND_REPLY, 0},
        {"[1]", BURST_EPROTO, PROTO_KIND_REPLY, 0},
        {"", BURST_EPROTO, PROTO_KIND_REPLY, 0},
        {"#82a1#", BURST_EPROTO, PROTO_KIND_REPLY, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *b = NULL;
        size_t len = dsl_pack(cases[i].text, &b);
        enum proto_kind kind = PROTO_KIND_REPLY;
        uint64_t re = 7;
        int rc = proto_peek(b, len, &kind, &re);
        if (rc != cases[i].rc)
            fail_msg("peek '%s': got %d", cases[i].text, rc);
        if (rc == 0) {
            assert_int_equal(kind, cases[i].kind);
            assert_int_equal(re, cases[i].re);
        }
        free(b);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_str_helpers),
        cmocka_unit_test(test_frame_byte_by_byte),
        cmocka_unit_test(test_frame_chunks),
        cmocka_unit_test(test_frame_several_in_one_feed),
        cmocka_unit_test(test_frame_bad_lengths),
        cmocka_unit_test(test_frame_large),
        cmocka_unit_test(test_rt_hello),
        cmocka_unit_test(test_rt_submit),
        cmocka_unit_test(test_rt_submit_many),
        cmocka_unit_test(test_rt_small_requests),
        cmocka_unit_test(test_encode_invalid),
        cmocka_unit_test(test_rt_replies),
        cmocka_unit_test(test_rt_events),
        cmocka_unit_test(test_results_final_default),
        cmocka_unit_test(test_bad_payloads),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_bad_replies),
        cmocka_unit_test(test_bad_events),
        cmocka_unit_test(test_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
