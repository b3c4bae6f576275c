/*
 * daemon/storage.h - the storage backend interface of burstd.
 *
 * Storage holds what workers read and write (see worker/invoc.h for the key
 * layout): function libraries, job inputs, invocation specs and outputs.
 * Every operation is asynchronous on the daemon's libuv loop and never blocks
 * it; the local backend does file I/O on libuv's thread pool, the S3 backend
 * (later) drives libcurl multi from the loop.
 *
 * Contract of every operation: it returns 0 and later calls cb exactly once
 * on the loop thread, or returns a negative code and never calls cb.  Keys are
 * relative paths of '/'-separated segments of [A-Za-z0-9._-] (no "..", no
 * leading '/'); other keys get -EINVAL.  Status codes in callbacks: 0,
 * -ENOENT (no such object), or another negative errno / BURST_ESTORAGE.
 *
 * A new backend is one new file that fills a struct storage_ops.
 */
#ifndef BURST_DAEMON_STORAGE_H
#define BURST_DAEMON_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct storage;

typedef void (*storage_cb)(void *arg, int status);

/* One range to read; getv fills data/len/status of each. */
struct storage_range {
    const char *key; /* borrowed: must live until the callback */
    uint64_t off;
    uint64_t len;    /* UINT64_MAX: to the end of the object */
    char *data;      /* out: malloc'ed, owned by the caller after the callback */
    size_t got;      /* out: bytes read (less than len only at the object's end) */
    int status;      /* out: 0 or a negative code for this range */
};

struct storage_ops {
    const char *name;
    /* Writes the concatenation of bufs as object key, replacing it
     * atomically (readers see the old or the new object, never a part).
     * durable: the object survives a power cut once cb(0) runs.  bufs and
     * their memory are borrowed until cb. */
    int (*put)(struct storage *s, const char *key, const uv_buf_t *bufs, unsigned nbufs,
               bool durable, storage_cb cb, void *arg);
    /* Reads n ranges (of the same or different objects).  cb's status is 0
     * when the operation ran; each range has its own status. */
    int (*getv)(struct storage *s, struct storage_range *ranges, size_t n, storage_cb cb,
                void *arg);
    /* cb(0) when key exists, cb(-ENOENT) when not. */
    int (*exists)(struct storage *s, const char *key, storage_cb cb, void *arg);
    /* Removes every object whose key starts with prefix (a job's leftovers). */
    int (*remove_prefix)(struct storage *s, const char *prefix, storage_cb cb, void *arg);
    /* The value of BURST_STORAGE that lets a worker reach this storage. */
    const char *(*worker_url)(struct storage *s);
    /* Frees the backend.  Only call when no operation is outstanding. */
    void (*close)(struct storage *s);
};

struct storage {
    const struct storage_ops *ops;
    uv_loop_t *loop; /* borrowed */
};

/* The embedded default: objects are files under dir (created 0700 if
 * missing).  Returns 0, or -errno with a logged reason. */
int storage_local_new(uv_loop_t *loop, const char *dir, struct storage **out);

/* Helpers that forward to ops. */
static inline int
storage_put(struct storage *s, const char *key, const uv_buf_t *bufs, unsigned nbufs,
            bool durable, storage_cb cb, void *arg)
{
    return s->ops->put(s, key, bufs, nbufs, durable, cb, arg);
}

static inline int
storage_getv(struct storage *s, struct storage_range *r, size_t n, storage_cb cb, void *arg)
{
    return s->ops->getv(s, r, n, cb, arg);
}

#endif /* BURST_DAEMON_STORAGE_H */
