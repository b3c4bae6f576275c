/*
 * proto/frame.c - the length-prefixed framing of frame.h.
 *
 * The reader keeps one buffer: bytes [consumed, len) are received and not yet
 * handed out.  Handed-out payloads stay in place until the next call, so the
 * space is reclaimed lazily: the buffer is reset when everything was consumed,
 * compacted when the free tail is too small, and shrunk back after a large
 * frame so an idle connection does not keep hundreds of MB.  Growth doubles
 * (glibc's realloc of large blocks is an mremap, not a copy) but never past
 * the end of the frame being received, so a big frame costs about its size.
 */
#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "burst.h"
#include "proto_limits.h"

/* Small enough to keep for every idle connection, large enough that streams
 * of small frames never reallocate. */
#define FRAME_KEEP_CAP (64u * 1024u)

static uint32_t
frame_get_header(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 |
           (uint32_t)u[3];
}

void
frame_put_header(char out[FRAME_HEADER_SIZE], uint32_t n)
{
    out[0] = (char)(n >> 24);
    out[1] = (char)(n >> 16);
    out[2] = (char)(n >> 8);
    out[3] = (char)n;
}

void
frame_reader_init(struct frame_reader *r, uint32_t max_payload)
{
    memset(r, 0, sizeof(*r));
    if (max_payload == 0 || max_payload > PROTO_FRAME_HARD_MAX)
        max_payload = PROTO_FRAME_HARD_MAX;
    r->max_payload = max_payload;
}

void
frame_reader_free(struct frame_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = r->consumed = 0;
}

/* Moves the unconsumed bytes to the front.  Invalidates handed-out payloads,
 * which the contract of frame_next allows at any frame_reader call. */
static void
frame_compact(struct frame_reader *r)
{
    if (r->consumed == 0)
        return;
    size_t left = r->len - r->consumed;
    if (left > 0)
        memmove(r->buf, r->buf + r->consumed, left);
    r->len = left;
    r->consumed = 0;
}

/* The size of the whole frame at the front (header included) when its
 * header is buffered and valid, else 0.  Call after frame_compact. */
static size_t
frame_pending_size(const struct frame_reader *r)
{
    if (r->len < FRAME_HEADER_SIZE)
        return 0;
    uint32_t n = frame_get_header(r->buf);
    if (n == 0 || n > r->max_payload)
        return 0;
    return FRAME_HEADER_SIZE + (size_t)n;
}

int
frame_reader_space(struct frame_reader *r, size_t want, char **base, size_t *avail)
{
    if (want == 0)
        want = 1;
    if (r->consumed == r->len) {
        r->consumed = r->len = 0;
        /* Give back the memory of a large frame once it is fully handed
         * out; an error here only means we keep the bigger block. */
        if (r->cap > FRAME_KEEP_CAP && want <= FRAME_KEEP_CAP) {
            char *p = realloc(r->buf, FRAME_KEEP_CAP);
            if (p != NULL) {
                r->buf = p;
                r->cap = FRAME_KEEP_CAP;
            }
        }
    }
    if (r->cap - r->len < want || r->consumed > r->cap / 2)
        frame_compact(r);
    if (r->cap - r->len < want) {
        if (want > SIZE_MAX / 2 - r->len)
            return -ENOMEM;
        size_t need = r->len + want;
        size_t cap = r->cap < FRAME_KEEP_CAP / 4 ? FRAME_KEEP_CAP / 4 : r->cap;
        while (cap < need)
            cap *= 2;
        /* Doubling past the end of the frame being received would only
         * reserve memory the next frame may never need. */
        size_t frame = frame_pending_size(r);
        size_t fit = need > frame ? need : frame;
        if (frame > 0 && cap > fit)
            cap = fit;
        char *p = realloc(r->buf, cap);
        if (p == NULL)
            return -ENOMEM;
        r->buf = p;
        r->cap = cap;
    }
    *base = r->buf + r->len;
    *avail = r->cap - r->len;
    return 0;
}

void
frame_reader_commit(struct frame_reader *r, size_t n)
{
    /* The caller may only commit what frame_reader_space offered. */
    if (n > r->cap - r->len)
        n = r->cap - r->len;
    r->len += n;
}

int
frame_reader_feed(struct frame_reader *r, const char *data, size_t n)
{
    while (n > 0) {
        char *base;
        size_t avail;
        int rc = frame_reader_space(r, n, &base, &avail);
        if (rc < 0)
            return rc;
        size_t k = avail < n ? avail : n;
        memcpy(base, data, k);
        frame_reader_commit(r, k);
        data += k;
        n -= k;
    }
    return 0;
}

int
frame_next(struct frame_reader *r, const char **payload, size_t *len)
{
    /* The previous payload is no longer ours to keep valid. */
    if (r->consumed == r->len)
        r->consumed = r->len = 0;
    size_t have = r->len - r->consumed;
    if (have < FRAME_HEADER_SIZE)
        return 0;
    uint32_t n = frame_get_header(r->buf + r->consumed);
    if (n == 0)
        return BURST_EPROTO;
    if (n > r->max_payload)
        return BURST_ETOOBIG;
    if (have - FRAME_HEADER_SIZE < n)
        return 0;
    *payload = r->buf + r->consumed + FRAME_HEADER_SIZE;
    *len = n;
    r->consumed += FRAME_HEADER_SIZE + (size_t)n;
    return 1;
}

void
frame_reader_tail(struct frame_reader *r, char **base, size_t *avail)
{
    *base = r->buf + r->len;
    *avail = r->cap - r->len;
}

int
frame_reader_partial(const struct frame_reader *r)
{
    return r->len > r->consumed;
}
