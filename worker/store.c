/*
 * worker/store.c - see store.h: key checks, URL dispatch, and the "file:"
 * backend (objects are files under a directory, the same layout the daemon's
 * local storage backend writes).
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_KEY_MAX 1024

int
store_key_valid(const char *key)
{
    if (key == NULL)
        return 0;
    size_t n = strlen(key);
    if (n == 0 || n > STORE_KEY_MAX)
        return 0;
    const char *seg = key;
    for (;;) {
        size_t len = strspn(seg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789._-");
        if (len == 0)
            return 0; /* empty segment: leading, trailing or double '/' */
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        if (seg[len] == '\0')
            return 1;
        if (seg[len] != '/')
            return 0;
        seg += len + 1;
    }
}

/* ---- file backend ----------------------------------------------------------- */

struct store_file {
    struct store base;
    char *root; /* owned: absolute directory, no trailing '/' */
};

/* *path = root/key, malloc'ed. */
static int
file_path(struct store_file *f, const char *key, char **path)
{
    if (asprintf(path, "%s/%s", f->root, key) < 0)
        return -ENOMEM;
    return 0;
}

static int
file_read(struct store *s, const char *key, uint64_t off, uint64_t len, char **data,
          size_t *got)
{
    struct store_file *f = (struct store_file *)s;
    char *path = NULL;
    char *buf = NULL;
    int fd = -1;
    int rc = file_path(f, key, &path);
    if (rc != 0)
        return rc;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out_free;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -ENOENT; /* a directory where an object is expected */
        goto out_close;
    }
    /* Clamp to what the file holds before allocating: a length taken from an
     * index must not decide how much memory we ask for. */
    uint64_t size = (uint64_t)st.st_size;
    uint64_t want = off >= size ? 0 : size - off;
    if (len < want)
        want = len;
    if (want > STORE_READ_MAX) {
        rc = -EFBIG;
        goto out_close;
    }
    size_t done = 0;
    if (want > 0) {
        buf = malloc((size_t)want);
        if (buf == NULL) {
            rc = -ENOMEM;
            goto out_close;
        }
        while (done < want) {
            ssize_t r = pread(fd, buf + done, (size_t)want - done, (off_t)(off + done));
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0) {
                rc = -errno;
                goto out_close;
            }
            if (r == 0)
                break; /* the file shrank under us: report what we got */
            done += (size_t)r;
        }
    }
    *data = buf; /* ownership passes to the caller */
    buf = NULL;
    *got = done;
    rc = 0;
out_close:
    close(fd);
out_free:
    free(buf);
    free(path);
    return rc;
}

/* Creates the directories between the root (path[0 .. rootlen)) and the
 * object's file name in path, mode 0700. */
static int
file_mkparents(char *path, size_t rootlen)
{
    for (char *p = strchr(path + rootlen + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        *p = '\0';
        int r = mkdir(path, 0700);
        int e = errno;
        *p = '/';
        if (r != 0 && e != EEXIST)
            return -e;
    }
    return 0;
}

static int
write_all(int fd, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return -errno;
            p += w;
            left -= (size_t)w;
        }
    }
    return 0;
}

/*
 * Writes a temporary file in the object's directory, fsyncs it, renames it
 * over the object and fsyncs the directory: the rename is the atomic step,
 * the two fsyncs make it durable.
 */
static int
file_put(struct store *s, const char *key, const struct iovec *iov, int iovcnt)
{
    struct store_file *f = (struct store_file *)s;
    char *path = NULL;
    char *tmp = NULL;
    int fd = -1;
    int dfd = -1;
    int rc = file_path(f, key, &path);
    if (rc != 0)
        return rc;
    rc = file_mkparents(path, strlen(f->root));
    if (rc != 0)
        goto out_path;
    char *slash = strrchr(path, '/');
    /* The dot prefix keeps half-written files out of anyone's listing. */
    if (asprintf(&tmp, "%.*s/.tmp.%s.XXXXXX", (int)(slash - path), path, slash + 1) < 0) {
        tmp = NULL;
        rc = -ENOMEM;
        goto out_path;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out_tmpname;
    }
    rc = write_all(fd, iov, iovcnt);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        goto out_unlink;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out_unlink;
    }
    *slash = '\0';
    dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0)
        rc = -errno;
    if (dfd >= 0)
        close(dfd);
    goto out_tmpname;

out_unlink:
    unlink(tmp);
out_tmpname:
    free(tmp);
out_path:
    free(path);
    return rc;
}

static int
file_fetch(struct store *s, const char *key, char **path)
{
    struct store_file *f = (struct store_file *)s;
    char *p = NULL;
    int rc = file_path(f, key, &p);
    if (rc != 0)
        return rc;
    struct stat st;
    if (stat(p, &st) != 0) {
        rc = -errno;
        free(p);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        free(p);
        return -ENOENT;
    }
    *path = p; /* ownership passes to the caller */
    return 0;
}

static void
file_close(struct store *s)
{
    struct store_file *f = (struct store_file *)s;
    free(f->root);
    free(f);
}

static const struct store_ops store_file_ops = {
    .scheme = "file",
    .read = file_read,
    .put = file_put,
    .fetch_file = file_fetch,
    .close = file_close,
};

/* "file:/abs/dir" or "file:///abs/dir"; the directory must exist. */
static int
store_file_open(const char *rest, struct store **out)
{
    if (strncmp(rest, "//", 2) == 0)
        rest += 2; /* file:///abs: an empty authority */
    if (rest[0] != '/')
        return -EINVAL;
    size_t n = strlen(rest);
    while (n > 1 && rest[n - 1] == '/')
        n--;
    if (n >= PATH_MAX)
        return -ENAMETOOLONG;
    struct store_file *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    f->root = strndup(rest, n);
    if (f->root == NULL) {
        free(f);
        return -ENOMEM;
    }
    struct stat st;
    int rc = 0;
    if (stat(f->root, &st) != 0)
        rc = -errno;
    else if (!S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    if (rc != 0) {
        file_close(&f->base);
        return rc;
    }
    f->base.ops = &store_file_ops;
    *out = &f->base; /* ownership passes to the caller */
    return 0;
}

/* ---- entry points ----------------------------------------------------------- */

int
store_open(const char *url, struct store **out)
{
    if (url == NULL)
        return -EINVAL;
    if (strncmp(url, "file:", 5) == 0)
        return store_file_open(url + 5, out);
    return -EPROTONOSUPPORT;
}

void
store_close(struct store *s)
{
    if (s != NULL) {
        store_release(s);
        s->ops->close(s);
    }
}

int
store_hold(struct store *s, const char *key, char *data, size_t len)
{
    if (!store_key_valid(key) || strlen(key) >= STORE_HELD_KEY_MAX) {
        free(data);
        return -EINVAL;
    }
    for (int i = 0; i < STORE_HELD_MAX; i++) {
        struct store_held *h = &s->held[i];
        if (h->key[0] != '\0' && strcmp(h->key, key) != 0)
            continue;
        free(h->data); /* a second hold of the same key replaces it */
        snprintf(h->key, sizeof(h->key), "%s", key);
        h->data = data;
        h->len = len;
        return 0;
    }
    free(data);
    return -ENOSPC;
}

const struct store_held *
store_held_get(const struct store *s, const char *key)
{
    for (int i = 0; i < STORE_HELD_MAX; i++)
        if (s->held[i].key[0] != '\0' && strcmp(s->held[i].key, key) == 0)
            return &s->held[i];
    return NULL;
}

void
store_release(struct store *s)
{
    for (int i = 0; i < STORE_HELD_MAX; i++) {
        free(s->held[i].data);
        s->held[i] = (struct store_held){.data = NULL};
    }
}

/* A read of a held object: the same contract as a backend's read. */
static int
held_read(const struct store_held *h, uint64_t off, uint64_t len, char **data,
          size_t *got)
{
    *data = NULL;
    *got = 0;
    if (off >= h->len)
        return 0;
    uint64_t n = h->len - off < len ? h->len - off : len;
    if (n > STORE_READ_MAX)
        return -EFBIG;
    char *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL)
        return -ENOMEM;
    memcpy(buf, h->data + off, n);
    *data = buf;
    *got = n;
    return 0;
}

int
store_read(struct store *s, const char *key, uint64_t off, uint64_t len, char **data,
           size_t *got)
{
    if (!store_key_valid(key))
        return -EINVAL;
    const struct store_held *h = store_held_get(s, key);
    if (h != NULL)
        return held_read(h, off, len, data, got);
    return s->ops->read(s, key, off, len, data, got);
}

int
store_put(struct store *s, const char *key, const struct iovec *iov, int iovcnt)
{
    if (!store_key_valid(key) || iovcnt < 0)
        return -EINVAL;
    return s->ops->put(s, key, iov, iovcnt);
}

int
store_fetch_file(struct store *s, const char *key, char **path)
{
    if (!store_key_valid(key))
        return -EINVAL;
    return s->ops->fetch_file(s, key, path);
}
