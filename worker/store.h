/*
 * worker/store.h - the worker's synchronous view of storage.
 *
 * burst-worker reaches storage only through BURST_STORAGE (see invoc.h), so
 * it has its own small, blocking client rather than the daemon's
 * asynchronous one.  A backend is a struct store_ops; "file:/abs/dir" is
 * built in (store.c) and an "s3://" backend is one more file filling the
 * same struct.
 *
 * Keys follow the daemon's rules (daemon/storage.h): '/'-separated segments
 * of [A-Za-z0-9._-], no "." or ".." segment, no leading or trailing '/'.
 * Every entry point checks the key, so a key read from a spec can never
 * reach outside the storage root.
 *
 * All functions return 0 or a negative errno code: -ENOENT for a missing
 * object, -EINVAL for a bad key or URL, -EFBIG for a read above
 * STORE_READ_MAX, -ENOMEM, or the I/O error.
 */
#ifndef BURST_WORKER_STORE_H
#define BURST_WORKER_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* A read of len STORE_TO_END reads from off to the end of the object. */
#define STORE_TO_END UINT64_MAX
/* No single read returns more than this (a result is capped at 1 GiB, its
 * output object carries a little more). */
#define STORE_READ_MAX (2ull * 1024u * 1024u * 1024u)

struct store;

struct store_ops {
    const char *scheme; /* the URL prefix it serves, e.g. "file" */
    /* Reads [off, off + len) of key into a malloc'ed *data (owned by the
     * caller; may be NULL when *got is 0).  *got is less than len only at the
     * end of the object. */
    int (*read)(struct store *s, const char *key, uint64_t off, uint64_t len, char **data,
                size_t *got);
    /* Writes the concatenation of iov as object key, atomically and durably:
     * readers see the old object or the whole new one, and it survives a
     * power cut once put returns 0. */
    int (*put)(struct store *s, const char *key, const struct iovec *iov, int iovcnt);
    /* Makes key available as a local file (for dlopen) and returns its path
     * in *path (malloc'ed, owned by the caller).  A remote backend downloads
     * into a cache directory; the file backend returns the object's own
     * path. */
    int (*fetch_file)(struct store *s, const char *key, char **path);
    void (*close)(struct store *s);
};

/* Objects held in memory (store_hold), at most this many at a time. */
#define STORE_HELD_MAX 2
#define STORE_HELD_KEY_MAX 256

struct store_held {
    char key[STORE_HELD_KEY_MAX]; /* "" = unused */
    char *data;                   /* owned */
    size_t len;
};

struct store {
    const struct store_ops *ops;
    /* Served by store_read instead of the backend (zeroed by the backend's
     * open). */
    struct store_held held[STORE_HELD_MAX];
};

/* Opens the storage named by url ("file:/abs/dir" or "file:///abs/dir").
 * On success *out is owned by the caller (store_close). */
int store_open(const char *url, struct store **out);
void store_close(struct store *s);

/* True when key follows the key rules above. */
int store_key_valid(const char *key);

/* The entry points: check the key, then forward to the backend. */
int store_read(struct store *s, const char *key, uint64_t off, uint64_t len, char **data,
               size_t *got);
int store_put(struct store *s, const char *key, const struct iovec *iov, int iovcnt);
int store_fetch_file(struct store *s, const char *key, char **path);

/*
 * Makes key read as data (len bytes, ownership passes to s) until
 * store_release: a warm worker gets the spec and the input of a small
 * invocation through its pipe from burstd, which then never writes them to
 * storage.  Everything that reads through s (the runners, input.c, a forked
 * executor) sees them as objects.  Returns 0, or -EINVAL (bad key) or
 * -ENOSPC (STORE_HELD_MAX held already) with data freed.
 */
int store_hold(struct store *s, const char *key, char *data, size_t len);
/* The held object key, or NULL (borrowed until store_release). */
const struct store_held *store_held_get(const struct store *s, const char *key);
/* Forgets every held object. */
void store_release(struct store *s);

#endif /* BURST_WORKER_STORE_H */
