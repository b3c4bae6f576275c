/*
 * daemon/storage_local.c - the local storage backend: objects are files under
 * one root directory (see storage.h for the interface, DESIGN.md for where
 * storage sits in a job's flow).
 *
 * Every operation runs its file I/O on libuv's thread pool (uv_queue_work) and
 * reports on the loop thread (the after-work callback), so a slow disk never
 * stalls the loop.  The worker side opens the same directory through
 * BURST_STORAGE=file:<root>.
 *
 * Atomicity: a put writes a temporary file in the object's own directory and
 * renames it over the key, so a reader opens either the old or the new object.
 * Temporary names start with ".tmp." and no valid key has a segment starting
 * with ".tmp.", so a temporary file left by a crash is never seen as an object.
 */
#include "storage.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"

/* Bounds on keys: far above what invoc.h builds, far below PATH_MAX. */
#define SL_KEY_MAX 1024
#define SL_SEGMENT_MAX 200
#define SL_DEPTH_MAX 64
#define SL_TMP_PREFIX ".tmp."

struct storage_local {
    struct storage base; /* first: a struct storage * is a struct storage_local * */
    char *root;          /* owned: absolute path, no trailing '/' */
    char *url;           /* owned: "file:" + root */
    int root_fd;         /* owned: the root directory, base of every *at() call */
    unsigned pending;    /* operations queued and not yet reported */
};

enum sl_kind { SL_PUT, SL_GETV, SL_EXISTS, SL_REMOVE };

/* One queued operation.  Allocated by the submitting function, freed right
 * after its callback ran on the loop thread. */
struct sl_op {
    uv_work_t req; /* req.data points back to the op */
    struct storage_local *sl;
    enum sl_kind kind;
    storage_cb cb;
    void *arg;
    int status; /* written by the work function, read after it */
    char *key;  /* owned copy: put, exists, remove (the prefix) */
    /* put */
    uv_buf_t *bufs; /* owned array; the bytes are borrowed from the caller */
    unsigned nbufs;
    bool durable;
    /* getv */
    struct storage_range *ranges; /* borrowed until cb */
    size_t nranges;
    struct storage_range **sorted; /* owned: ranges grouped by key */
};

static const struct storage_ops storage_local_ops;

/* Checks one '/'-separated segment [seg, seg + len). */
static bool
segment_valid(const char *seg, size_t len)
{
    if (len == 0 || len > SL_SEGMENT_MAX)
        return false;
    if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
        return false;
    /* The temporary namespace of put; see the top of the file. */
    if (len >= strlen(SL_TMP_PREFIX) &&
        memcmp(seg, SL_TMP_PREFIX, strlen(SL_TMP_PREFIX)) == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = seg[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* A key is 1..SL_KEY_MAX bytes of valid segments joined by single '/'s. */
static bool
key_valid(const char *key)
{
    if (key == NULL)
        return false;
    size_t len = strnlen(key, SL_KEY_MAX + 1);
    if (len == 0 || len > SL_KEY_MAX)
        return false;
    size_t nseg = 0;
    const char *seg = key;
    for (;;) {
        const char *slash = memchr(seg, '/', len - (size_t)(seg - key));
        size_t seglen = slash != NULL ? (size_t)(slash - seg) : len - (size_t)(seg - key);
        if (!segment_valid(seg, seglen) || ++nseg > SL_DEPTH_MAX)
            return false;
        if (slash == NULL)
            return true;
        seg = slash + 1;
    }
}

/* A prefix is "" (everything), a key, or a key followed by '/'. */
static bool
prefix_valid(const char *prefix)
{
    if (prefix == NULL)
        return false;
    size_t len = strnlen(prefix, SL_KEY_MAX + 2);
    if (len == 0)
        return true;
    if (len > SL_KEY_MAX + 1)
        return false;
    if (prefix[len - 1] != '/')
        return key_valid(prefix);
    char buf[SL_KEY_MAX + 1];
    memcpy(buf, prefix, len - 1);
    buf[len - 1] = '\0';
    return key_valid(buf);
}

static int
op_new(struct storage_local *sl, enum sl_kind kind, storage_cb cb, void *arg,
       struct sl_op **out)
{
    struct sl_op *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return -ENOMEM;
    op->req.data = op;
    op->sl = sl;
    op->kind = kind;
    op->cb = cb;
    op->arg = arg;
    *out = op;
    return 0;
}

static void
op_free(struct sl_op *op)
{
    free(op->key);
    free(op->bufs);
    free(op->sorted);
    free(op);
}

static void sl_work(uv_work_t *req);
static void sl_after_work(uv_work_t *req, int status);

/* Queues op on the thread pool; on failure frees it and returns the error. */
static int
op_queue(struct sl_op *op)
{
    struct storage_local *sl = op->sl;
    int rc = uv_queue_work(sl->base.loop, &op->req, sl_work, sl_after_work);
    if (rc < 0) {
        op_free(op);
        return rc;
    }
    sl->pending++;
    return 0;
}

/* ---- work functions: these run on a thread-pool thread ------------------ */

/* Closes fd, keeping the first error in *status. */
static void
close_keep(int fd, int *status)
{
    if (close(fd) < 0 && *status == 0 && errno != EINTR)
        *status = -errno;
}

/*
 * Writes every buffer in order.  A job's inputs arrive as one buffer per
 * task, so they go out IOV_MAX at a time rather than one syscall each.
 */
static int
write_bufs(int fd, const uv_buf_t *bufs, unsigned nbufs)
{
    struct iovec iov[IOV_MAX];
    unsigned i = 0;
    while (i < nbufs) {
        int n = 0;
        for (; i < nbufs && n < IOV_MAX; i++) {
            if (bufs[i].len == 0)
                continue;
            iov[n].iov_base = bufs[i].base;
            iov[n].iov_len = bufs[i].len;
            n++;
        }
        struct iovec *v = iov;
        while (n > 0) {
            ssize_t w = writev(fd, v, n);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            /* Skip what was written; a short write leaves a partial iovec. */
            while (n > 0 && (size_t)w >= v->iov_len) {
                w -= (ssize_t)v->iov_len;
                v++;
                n--;
            }
            if (n > 0) {
                v->iov_base = (char *)v->iov_base + w;
                v->iov_len -= (size_t)w;
            }
        }
    }
    return 0;
}

/* A name unique enough that O_EXCL collisions are only a retry away. */
static void
tmp_name(char *buf, size_t size, const char *base)
{
    static atomic_uint_fast64_t counter;
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        /* No entropy yet (early boot): the counter and pid still make
         * names unique within this process, O_EXCL handles the rest. */
        r = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);
    }
    r ^= atomic_fetch_add(&counter, 1) * 0x9e3779b97f4a7c15ull;
    snprintf(buf, size, SL_TMP_PREFIX "%s.%016llx", base, (unsigned long long)r);
}

/*
 * Opens the directory that holds key (creating missing directories 0700)
 * and points *base at the key's last segment inside path, a writable copy
 * of the key.  Returns the directory fd or a negative errno.  When durable,
 * every directory it creates is fsync'ed into its parent.
 */
static int
open_parent(struct storage_local *sl, char *path, bool create, bool durable,
            const char **base)
{
    int dfd = dup(sl->root_fd);
    if (dfd < 0)
        return -errno;
    char *seg = path;
    char *slash;
    while ((slash = strchr(seg, '/')) != NULL) {
        *slash = '\0';
        if (create) {
            if (mkdirat(dfd, seg, 0700) == 0) {
                if (durable && fsync(dfd) < 0) {
                    int rc = -errno;
                    close(dfd);
                    return rc;
                }
            } else if (errno != EEXIST) {
                int rc = -errno;
                close(dfd);
                return rc;
            }
        }
        /* O_NOFOLLOW: a symlink planted inside the root cannot lead a put
         * or a removal outside of it. */
        int next = openat(dfd, seg, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int rc = next < 0 ? -errno : 0;
        close(dfd);
        *slash = '/';
        if (rc < 0)
            return rc;
        dfd = next;
        seg = slash + 1;
    }
    *base = seg;
    return dfd;
}

static int
do_put(struct sl_op *op)
{
    char path[SL_KEY_MAX + 1];
    snprintf(path, sizeof(path), "%s", op->key);
    const char *base = NULL;
    int dfd = open_parent(op->sl, path, true, op->durable, &base);
    if (dfd < 0)
        return dfd;

    char tmp[NAME_MAX + 1];
    int fd = -1;
    for (int tries = 0; tries < 8 && fd < 0; tries++) {
        tmp_name(tmp, sizeof(tmp), base);
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    int rc = 0;
    if (fd < 0) {
        rc = -errno;
        goto fail_open;
    }
    /* Function libraries are content-addressed and shared by every user's
     * workers, which may run as those users (daemon/runas.h): knowing the
     * key means having the content already. */
    if (strncmp(op->key, "fn/", 3) == 0 && fchmod(fd, 0644) < 0)
        rc = -errno;
    if (rc == 0)
        rc = write_bufs(fd, op->bufs, op->nbufs);
    if (rc == 0 && op->durable && fsync(fd) < 0)
        rc = -errno;
    close_keep(fd, &rc);
    if (rc < 0)
        goto fail_written;
    if (renameat(dfd, tmp, dfd, base) < 0) {
        rc = -errno;
        goto fail_written;
    }
    /* The rename is durable only once the directory entry is. */
    if (op->durable && fsync(dfd) < 0)
        rc = -errno;
    close(dfd);
    return rc;

fail_written:
    unlinkat(dfd, tmp, 0);
fail_open:
    close(dfd);
    return rc;
}

/* Reads range r of the open object fd (size bytes long). */
static void
read_range(int fd, uint64_t size, struct storage_range *r)
{
    uint64_t avail = r->off < size ? size - r->off : 0;
    uint64_t want = r->len < avail ? r->len : avail;
    if (want >= SIZE_MAX || r->off > (uint64_t)INT64_MAX) {
        r->status = -EFBIG;
        return;
    }
    /* One spare byte: the data is NUL-terminated for callers that parse
     * text, which costs nothing and saves them a copy. */
    char *data = malloc((size_t)want + 1);
    if (data == NULL) {
        r->status = -ENOMEM;
        return;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, data + got, (size_t)want - got, (off_t)(r->off + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r->status = -errno;
            free(data);
            return;
        }
        if (n == 0)
            break; /* shorter than fstat said: read what is there */
        got += (size_t)n;
    }
    data[got] = '\0';
    r->data = data;
    r->got = got;
    r->status = 0;
}

static int
range_cmp(const void *a, const void *b)
{
    const struct storage_range *ra = *(struct storage_range *const *)a;
    const struct storage_range *rb = *(struct storage_range *const *)b;
    int c = strcmp(ra->key, rb->key);
    if (c != 0)
        return c;
    return ra < rb ? -1 : ra > rb;
}

/*
 * Opens an object by key for reading; -ENOENT for anything but a plain file.
 * Workers of other users write their outputs into directories they own
 * (daemon/runas.h), so what is found there is not trusted: a symlink
 * (O_NOFOLLOW), a FIFO (O_NONBLOCK keeps the open from waiting) or a hard
 * link to someone else's file (more than one link) is not an object.
 */
static int
open_object(struct storage_local *sl, const char *key, uint64_t *size)
{
    int fd = openat(sl->root_fd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOTDIR || errno == ELOOP ? -ENOENT : -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
        close(fd);
        return -ENOENT;
    }
    *size = (uint64_t)st.st_size;
    return fd;
}

static void
do_getv(struct sl_op *op)
{
    /* Sorted by key so that each object is opened once however many of
     * its ranges are asked for. */
    qsort(op->sorted, op->nranges, sizeof(*op->sorted), range_cmp);
    size_t i = 0;
    while (i < op->nranges) {
        size_t j = i + 1;
        while (j < op->nranges && strcmp(op->sorted[j]->key, op->sorted[i]->key) == 0)
            j++;
        uint64_t size = 0;
        int fd = open_object(op->sl, op->sorted[i]->key, &size);
        for (size_t k = i; k < j; k++) {
            if (fd < 0)
                op->sorted[k]->status = fd;
            else
                read_range(fd, size, op->sorted[k]);
        }
        if (fd >= 0)
            close(fd);
        i = j;
    }
}

static int
do_exists(struct sl_op *op)
{
    struct stat st;
    if (fstatat(op->sl->root_fd, op->key, &st, 0) < 0)
        return errno == ENOTDIR ? -ENOENT : -errno;
    return S_ISREG(st.st_mode) ? 0 : -ENOENT;
}

/*
 * Removes entry name of directory dfd, recursively when it is a directory.
 * depth bounds the recursion (a tree deeper than any key is not ours to
 * walk).  A vanished entry is not an error: removals may race.
 */
static int
remove_entry(int dfd, const char *name, int depth)
{
    if (unlinkat(dfd, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    if (depth > SL_DEPTH_MAX)
        return -ELOOP;
    int unlink_errno = errno;
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        /* Not a directory after all: the unlink's own error is the news. */
        return errno == ENOTDIR ? -unlink_errno : -errno;
    }
    DIR *dir = fdopendir(fd);
    if (dir == NULL) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int r = remove_entry(fd, de->d_name, depth + 1);
        if (r < 0 && rc == 0)
            rc = r;
    }
    closedir(dir);
    if (unlinkat(dfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && rc == 0)
        rc = -errno;
    return rc;
}

/*
 * "jobs/7/" removes the directory jobs/7; "jobs/7/out/3." removes the
 * entries of jobs/7/out whose names start with "3."; "" empties the root.
 */
static int
do_remove(struct sl_op *op)
{
    char path[SL_KEY_MAX + 2];
    snprintf(path, sizeof(path), "%s", op->key);
    size_t len = strlen(path);
    bool whole_dir = len > 0 && path[len - 1] == '/';
    if (whole_dir)
        path[len - 1] = '\0';

    const char *base = path;
    int dfd;
    if (len == 0) {
        dfd = dup(op->sl->root_fd);
        if (dfd < 0)
            return -errno;
    } else {
        dfd = open_parent(op->sl, path, false, false, &base);
        if (dfd < 0)
            return dfd == -ENOENT || dfd == -ENOTDIR ? 0 : dfd;
    }

    int rc = 0;
    if (whole_dir) {
        /* Objects under "jobs/7/" exist only if jobs/7 is a directory; a
         * plain object named "jobs/7" does not start with the prefix. */
        struct stat st;
        if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
            rc = remove_entry(dfd, base, 0);
        close(dfd);
        return rc;
    }

    int fd = dup(dfd);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (dir == NULL) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        close(dfd);
        return rc;
    }
    size_t blen = strlen(base);
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (strncmp(de->d_name, base, blen) != 0)
            continue;
        int r = remove_entry(dfd, de->d_name, 0);
        if (r < 0 && rc == 0)
            rc = r;
    }
    closedir(dir);
    close(dfd);
    return rc;
}

static void
sl_work(uv_work_t *req)
{
    struct sl_op *op = req->data;
    switch (op->kind) {
    case SL_PUT:
        op->status = do_put(op);
        break;
    case SL_GETV:
        do_getv(op);
        op->status = 0;
        break;
    case SL_EXISTS:
        op->status = do_exists(op);
        break;
    case SL_REMOVE:
        op->status = do_remove(op);
        break;
    }
}

/* ---- loop thread ---------------------------------------------------------- */

static void
sl_after_work(uv_work_t *req, int status)
{
    struct sl_op *op = req->data;
    struct storage_local *sl = op->sl;
    assert(sl->pending > 0);
    sl->pending--;
    /* We never uv_cancel, but a cancelled request must still report. */
    int rc = status < 0 ? status : op->status;
    if (op->kind == SL_GETV && status < 0) {
        for (size_t i = 0; i < op->nranges; i++) {
            if (op->ranges[i].status == 0 && op->ranges[i].data == NULL)
                op->ranges[i].status = status;
        }
    }
    if (rc < 0 && rc != -ENOENT) {
        log_warnx("storage: %s %s: %s",
                  op->kind == SL_PUT      ? "put"
                  : op->kind == SL_GETV   ? "getv"
                  : op->kind == SL_EXISTS ? "exists"
                                          : "remove",
                  op->key != NULL ? op->key : "", uv_strerror(rc));
    }
    storage_cb cb = op->cb;
    void *arg = op->arg;
    /* Freed before the callback so the callback may close the storage. */
    op_free(op);
    cb(arg, rc);
}

static int
sl_put(struct storage *s, const char *key, const uv_buf_t *bufs, unsigned nbufs,
       bool durable, storage_cb cb, void *arg)
{
    struct storage_local *sl = (struct storage_local *)s;
    if (!key_valid(key) || cb == NULL || (nbufs > 0 && bufs == NULL))
        return -EINVAL;
    struct sl_op *op;
    int rc = op_new(sl, SL_PUT, cb, arg, &op);
    if (rc < 0)
        return rc;
    op->key = strdup(key);
    /* A copy of the array (not of the bytes): callers may pass a stack
     * array of uv_buf_t and keep only the memory alive. */
    op->bufs = malloc((nbufs > 0 ? nbufs : 1) * sizeof(*bufs));
    if (op->key == NULL || op->bufs == NULL) {
        op_free(op);
        return -ENOMEM;
    }
    if (nbufs > 0)
        memcpy(op->bufs, bufs, nbufs * sizeof(*bufs));
    op->nbufs = nbufs;
    op->durable = durable;
    return op_queue(op);
}

static int
sl_getv(struct storage *s, struct storage_range *ranges, size_t n, storage_cb cb,
        void *arg)
{
    struct storage_local *sl = (struct storage_local *)s;
    if (cb == NULL || (n > 0 && ranges == NULL))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (!key_valid(ranges[i].key))
            return -EINVAL;
    }
    struct sl_op *op;
    int rc = op_new(sl, SL_GETV, cb, arg, &op);
    if (rc < 0)
        return rc;
    op->sorted = calloc(n > 0 ? n : 1, sizeof(*op->sorted));
    if (op->sorted == NULL) {
        op_free(op);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        ranges[i].data = NULL;
        ranges[i].got = 0;
        ranges[i].status = 0;
        op->sorted[i] = &ranges[i];
    }
    op->ranges = ranges;
    op->nranges = n;
    return op_queue(op);
}

static int
sl_keyed(struct storage *s, enum sl_kind kind, const char *key, storage_cb cb, void *arg)
{
    struct storage_local *sl = (struct storage_local *)s;
    bool ok = kind == SL_REMOVE ? prefix_valid(key) : key_valid(key);
    if (!ok || cb == NULL)
        return -EINVAL;
    struct sl_op *op;
    int rc = op_new(sl, kind, cb, arg, &op);
    if (rc < 0)
        return rc;
    op->key = strdup(key);
    if (op->key == NULL) {
        op_free(op);
        return -ENOMEM;
    }
    return op_queue(op);
}

static int
sl_exists(struct storage *s, const char *key, storage_cb cb, void *arg)
{
    return sl_keyed(s, SL_EXISTS, key, cb, arg);
}

static int
sl_remove_prefix(struct storage *s, const char *prefix, storage_cb cb, void *arg)
{
    return sl_keyed(s, SL_REMOVE, prefix, cb, arg);
}

static const char *
sl_worker_url(struct storage *s)
{
    return ((struct storage_local *)s)->url;
}

static void
sl_close(struct storage *s)
{
    struct storage_local *sl = (struct storage_local *)s;
    if (sl == NULL)
        return;
    /* An operation still on the pool would write into freed memory. */
    assert(sl->pending == 0);
    close(sl->root_fd);
    free(sl->root);
    free(sl->url);
    free(sl);
}

static const struct storage_ops storage_local_ops = {
    .name = "local",
    .put = sl_put,
    .getv = sl_getv,
    .exists = sl_exists,
    .remove_prefix = sl_remove_prefix,
    .worker_url = sl_worker_url,
    .close = sl_close,
};

/* mkdir -p with mode 0700 for every directory it creates. */
static int
mkdir_parents(const char *dir)
{
    char *path = strdup(dir);
    if (path == NULL)
        return -ENOMEM;
    int rc = 0;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
            rc = -errno;
            log_warn("storage: cannot create %s", path);
            break;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    free(path);
    return rc;
}

/*
 * Creates (0700, with parents) and opens the root directory.  Runs at
 * start-up, so blocking calls are fine here.  Returns 0 and *out (owned by
 * the caller, released with ops->close) or -errno with a logged reason.
 */
int
storage_local_new(uv_loop_t *loop, const char *dir, struct storage **out)
{
    if (loop == NULL || dir == NULL || dir[0] == '\0' || out == NULL)
        return -EINVAL;
    int rc = mkdir_parents(dir);
    if (rc < 0)
        return rc;

    struct storage_local *sl = calloc(1, sizeof(*sl));
    if (sl == NULL)
        return -ENOMEM;
    sl->base.ops = &storage_local_ops;
    sl->base.loop = loop;
    sl->root_fd = -1;

    sl->root = realpath(dir, NULL);
    if (sl->root == NULL) {
        rc = -errno;
        log_warn("storage: cannot resolve %s", dir);
        goto fail;
    }
    sl->root_fd = open(sl->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sl->root_fd < 0) {
        rc = -errno;
        log_warn("storage: cannot open %s", sl->root);
        goto fail;
    }
    size_t ulen = strlen("file:") + strlen(sl->root) + 1;
    sl->url = malloc(ulen);
    if (sl->url == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    snprintf(sl->url, ulen, "file:%s", sl->root);
    *out = &sl->base;
    return 0;

fail:
    if (sl->root_fd >= 0)
        close(sl->root_fd);
    free(sl->root);
    free(sl);
    return rc;
}
