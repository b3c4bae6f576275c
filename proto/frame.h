/*
 * proto/frame.h - length-prefixed framing of the byte stream.
 *
 * A frame is a 4-byte big-endian payload length followed by the payload.
 * struct frame_reader accumulates bytes as they arrive (in whatever pieces the
 * socket hands over) and yields complete payloads; it refuses a length of 0
 * or above its limit as soon as the 4 prefix bytes are in, so an oversized
 * frame costs no memory.
 */
#ifndef BURST_PROTO_FRAME_H
#define BURST_PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER_SIZE 4

struct frame_reader {
    char *buf;        /* owned: bytes received and not yet consumed */
    size_t len;       /* bytes in buf */
    size_t cap;
    size_t consumed;  /* bytes of buf already handed out by frame_next */
    uint32_t max_payload;
};

void frame_reader_init(struct frame_reader *r, uint32_t max_payload);
void frame_reader_free(struct frame_reader *r);

/* Space for the next read: *base receives a pointer to at least want (>= 1)
 * writable bytes at the end of the buffer.  Returns 0 or -ENOMEM. */
int frame_reader_space(struct frame_reader *r, size_t want, char **base, size_t *avail);
/* The free end of the buffer, where bytes can be appended without moving
 * anything: a frame frame_next handed out stays valid while only this is
 * written to (and committed). */
void frame_reader_tail(struct frame_reader *r, char **base, size_t *avail);
/* The caller wrote n bytes at the pointer frame_reader_space gave. */
void frame_reader_commit(struct frame_reader *r, size_t n);
/* Appends n bytes (copying); for callers that do not read in place. */
int frame_reader_feed(struct frame_reader *r, const char *data, size_t n);

/*
 * Next complete payload.  Returns 1 and sets *payload and *len (valid until the
 * next call of any frame_reader function), 0 when more bytes are needed, or
 * BURST_ETOOBIG / BURST_EPROTO (length 0) when the stream is unusable.
 */
int frame_next(struct frame_reader *r, const char **payload, size_t *len);

/* True when a partial frame is buffered (used for idle half-frame timeouts). */
int frame_reader_partial(const struct frame_reader *r);

/* Writes the 4-byte prefix for a payload of n bytes. */
void frame_put_header(char out[FRAME_HEADER_SIZE], uint32_t n);

#endif /* BURST_PROTO_FRAME_H */
