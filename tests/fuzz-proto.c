/*
 * tests/fuzz-proto.c - the fuzz target of proto/: arbitrary bytes through the
 * frame reader and every decoder.  Built as a libFuzzer binary with clang and
 * driven by tests/fuzz-main.c (the 'proto-fuzz-smoke' test) otherwise.
 *
 * The first input byte picks the mode: even, the rest is one payload; odd,
 * the rest is a byte stream cut into reads whose sizes derive from the mode
 * byte.  Besides "no crash, no leak, no sanitizer report", it checks that
 * whatever decodes also re-encodes and decodes again the same way, and that
 * failures leave nothing to free.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "burst.h"
#include "frame.h"
#include "msg.h"
#include "proto_limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken property is a bug: crash so the fuzzer reports the input. */
#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

static const struct proto_limits small_limits = {
    .max_frame = 1u << 20,
    .max_depth = 5,
    .max_string = 32,
    .max_input = 16,
    .max_tasks = 8,
    .max_retries = 3,
    .max_chunksize = 4,
    .max_fn_size = 64,
    .page_tasks = 5,
    .page_bytes = 100,
};

static void
fuzz_request(const char *p, size_t n, const struct proto_limits *lim,
             struct proto_buf *buf)
{
    struct proto_request req, again;
    struct proto_error err = {0, {NULL, 0}};
    uint64_t id = 0;
    int rc = proto_decode_request(p, n, lim, &req, &err, &id);
    if (rc != 0) {
        CHECK(rc < 0);
        CHECK(err.code == rc);
        CHECK(err.message.ptr != NULL && strlen(err.message.ptr) == err.message.len);
        CHECK(req.priv_ == NULL);
        return;
    }
    CHECK(req.id == id);
    proto_buf_reset(buf);
    CHECK(proto_encode_request(buf, &req) == 0);
    rc = proto_decode_request(buf->data + FRAME_HEADER_SIZE, buf->len - FRAME_HEADER_SIZE,
                              lim, &again, &err, &id);
    CHECK(rc == 0);
    CHECK(again.op == req.op && again.id == req.id);
    if (req.op == PROTO_OP_SUBMIT) {
        CHECK(again.u.submit.ninputs == req.u.submit.ninputs);
        CHECK(again.u.submit.kind == req.u.submit.kind);
    }
    proto_request_free(&again);
    proto_request_free(&req);
}

static void
fuzz_replies(const char *p, size_t n, const struct proto_limits *lim,
             struct proto_buf *buf)
{
    enum proto_kind kind;
    uint64_t re;
    (void)proto_peek(p, n, &kind, &re);
    for (int op = PROTO_OP_HELLO; op < PROTO_OP_COUNT_; op++) {
        struct proto_reply rep, again;
        int rc = proto_decode_reply(p, n, (enum proto_op)op, lim, &rep);
        if (rc != 0) {
            CHECK(rep.priv_ == NULL);
            continue;
        }
        proto_buf_reset(buf);
        CHECK(proto_encode_reply(buf, &rep) == 0);
        rc = proto_decode_reply(buf->data + FRAME_HEADER_SIZE,
                                buf->len - FRAME_HEADER_SIZE, (enum proto_op)op, lim,
                                &again);
        CHECK(rc == 0);
        CHECK(again.re == rep.re && again.ok == rep.ok);
        proto_reply_free(&again);
        proto_reply_free(&rep);
    }
}

static void
fuzz_events(const char *p, size_t n, const struct proto_limits *lim,
            struct proto_buf *buf)
{
    struct proto_events ev, again;
    void *priv = NULL, *priv2 = NULL;
    if (proto_decode_events(p, n, lim, &ev, &priv) != 0) {
        CHECK(priv == NULL);
        return;
    }
    proto_buf_reset(buf);
    CHECK(proto_encode_events(buf, &ev) == 0);
    CHECK(proto_decode_events(buf->data + FRAME_HEADER_SIZE, buf->len - FRAME_HEADER_SIZE,
                              lim, &again, &priv2) == 0);
    CHECK(again.job == ev.job && again.nitems == ev.nitems);
    for (uint32_t i = 0; i < ev.nitems; i++)
        CHECK(again.items[i].seq == ev.items[i].seq &&
              again.items[i].ntasks == ev.items[i].ntasks);
    proto_events_free(priv2);
    proto_events_free(priv);
}

static void
fuzz_payload(const char *p, size_t n)
{
    struct proto_limits def;
    proto_limits_default(&def);
    struct proto_buf buf;
    proto_buf_init(&buf);
    fuzz_request(p, n, &def, &buf);
    fuzz_request(p, n, &small_limits, &buf);
    fuzz_replies(p, n, &def, &buf);
    fuzz_events(p, n, &def, &buf);
    proto_buf_free(&buf);
}

static void
fuzz_stream(const char *p, size_t n, unsigned pattern)
{
    /* Read sizes cycle through a few values chosen by the pattern, so one
     * input also exercises partial headers and frames split anywhere. */
    static const size_t sizes[] = {1, 2, 3, 5, 7, 64, 4096, 65536};
    struct frame_reader r;
    frame_reader_init(&r, small_limits.max_frame);
    size_t off = 0;
    unsigned k = pattern;
    int rc = 0;
    while (off < n && rc >= 0) {
        size_t want = sizes[k++ % 8];
        size_t chunk = n - off < want ? n - off : want;
        char *base;
        size_t avail;
        if (k & 1) {
            CHECK(frame_reader_feed(&r, p + off, chunk) == 0);
        } else {
            CHECK(frame_reader_space(&r, want, &base, &avail) == 0);
            CHECK(avail >= want);
            memcpy(base, p + off, chunk);
            frame_reader_commit(&r, chunk);
        }
        off += chunk;
        const char *payload;
        size_t len;
        while ((rc = frame_next(&r, &payload, &len)) == 1) {
            CHECK(len > 0 && len <= small_limits.max_frame);
            fuzz_payload(payload, len);
        }
        CHECK(rc == 0 || rc == BURST_EPROTO || rc == BURST_ETOOBIG);
    }
    frame_reader_free(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    if ((data[0] & 1) == 0) {
        /* Copied so that ASan catches a read one byte past the payload. */
        char *copy = malloc(size - 1 > 0 ? size - 1 : 1);
        if (copy == NULL)
            return 0;
        memcpy(copy, rest, size - 1);
        fuzz_payload(copy, size - 1);
        free(copy);
    } else {
        fuzz_stream(rest, size - 1, data[0] >> 1);
    }
    return 0;
}
