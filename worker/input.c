/*
 * worker/input.c - loading task inputs from storage (see run.h).
 *
 * A map task's input is [idx[i], idx[i+1]) of the data in jobs/<job>/in,
 * where idx is the little-endian uint64 array after the object's header
 * (invoc.h).  Only the header (once), the two index entries a task needs
 * and its own bytes are read, with ranged reads, so a worker touches a
 * small part of a large job's input.  For an invocation of many small tasks
 * that is still three reads per task, so input_prefetch reads the index
 * entries of a run of consecutive tasks, and their data when it is bounded,
 * in one read each; input_load then takes a task's input from that cache.
 * A reducer's input is the list of map results named by the manifest
 * jobs/<job>/reduce.in, each a range of an output object.
 *
 * Everything read here is checked before use: an index entry pointing
 * backwards, beyond the data or above RUN_INPUT_MAX fails the task with a
 * reason, never the worker.
 */
#include "run.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_KEY_MAX 256

struct input_src {
    struct store *store;           /* borrowed */
    const struct invoc_spec *spec; /* borrowed */
    char input_key[INPUT_KEY_MAX];
    char manifest_key[INPUT_KEY_MAX];
    uint64_t ninputs; /* from the header, once read */
    uint64_t base;    /* where the data starts; 0 until the header is read */
    /* The bulk cache (input_prefetch) covers tasks bulk_first ..
     * bulk_first + bulk_n - 1.  bulk_idx (NULL when the read failed) holds
     * their bulk_n + 1 index entries as stored, unchecked; bulk_data, when
     * not NULL, the bulk_len bytes of data from offset bulk_idx[0] on. */
    uint32_t bulk_first;
    uint32_t bulk_n;    /* 0: nothing tried yet */
    uint64_t *bulk_idx; /* owned */
    char *bulk_data;    /* owned */
    uint64_t bulk_len;
};

int
input_src_new(struct store *st, const struct invoc_spec *spec, struct input_src **out)
{
    struct input_src *src = calloc(1, sizeof(*src));
    if (src == NULL)
        return -ENOMEM;
    src->store = st;
    src->spec = spec;
    if (invoc_key_input(src->input_key, sizeof(src->input_key), spec->job) != 0 ||
        invoc_key_reduce_manifest(src->manifest_key, sizeof(src->manifest_key),
                                  spec->job) != 0) {
        free(src); /* cannot happen: a uint64 job id fits */
        return -ENAMETOOLONG;
    }
    *out = src;
    return 0;
}

static void
bulk_drop(struct input_src *src)
{
    free(src->bulk_idx);
    free(src->bulk_data);
    src->bulk_idx = NULL;
    src->bulk_data = NULL;
    src->bulk_n = 0;
    src->bulk_len = 0;
}

void
input_src_free(struct input_src *src)
{
    if (src != NULL)
        bulk_drop(src);
    free(src);
}

void
input_release(struct run_input *in)
{
    if (in->parts != NULL && !in->borrowed) {
        for (size_t i = 0; i < in->nparts; i++)
            free(in->parts[i].iov_base);
    }
    free(in->parts);
    memset(in, 0, sizeof(*in));
}

static int fail(int rc, char *reason, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Writes the reason and returns rc, so callers can `return fail(...)`. */
static int
fail(int rc, char *reason, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, size, fmt, ap);
    va_end(ap);
    return rc;
}

static uint64_t
le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Reads exactly [off, off + len) of key into *data (malloc'ed; NULL when len
 * is 0).  A short object is an error: -ENODATA. */
static int
read_exact(struct input_src *src, const char *key, uint64_t off, uint64_t len,
           char **data, char *reason, size_t size)
{
    size_t got = 0;
    *data = NULL;
    if (len == 0)
        return 0;
    int rc = store_read(src->store, key, off, len, data, &got);
    if (rc != 0)
        return fail(rc, reason, size, "cannot read %s: %s", key, strerror(-rc));
    if (got != len) {
        free(*data);
        *data = NULL;
        return fail(-ENODATA, reason, size,
                    "%s is truncated: %" PRIu64 " bytes at offset %" PRIu64
                    " expected, %zu found",
                    key, len, off, got);
    }
    return 0;
}

/* Reads and checks the input object's header, once per invocation. */
static int
load_header(struct input_src *src, char *reason, size_t size)
{
    if (src->base != 0)
        return 0;
    char *hdr = NULL;
    int rc = read_exact(src, src->input_key, 0, INVOC_INPUT_HEADER, &hdr, reason, size);
    if (rc != 0)
        return rc;
    bool magic = memcmp(hdr, INVOC_INPUT_MAGIC, 8) == 0;
    uint64_t n = le64((const unsigned char *)hdr + 8);
    free(hdr);
    if (!magic || n > (UINT64_MAX - INVOC_INPUT_HEADER) / 8 - 1)
        return fail(-EINVAL, reason, size, "%s is not an input object", src->input_key);
    src->ninputs = n;
    src->base = INVOC_INPUT_HEADER + (n + 1) * 8;
    return 0;
}

void
input_prefetch(struct input_src *src, const struct invoc_task *tasks, uint32_t n)
{
    char reason[RUN_REASON_MAX];
    if (src->spec->reduce || n < 2)
        return;
    uint32_t first = tasks[0].index;
    if (src->bulk_n > 0 && first >= src->bulk_first &&
        first - src->bulk_first < src->bulk_n)
        return; /* covered, or tried and failed: per-task reads will do */
    if (load_header(src, reason, sizeof(reason)) != 0 || first >= src->ninputs)
        return; /* input_load reports it */
    uint32_t k = 1;
    while (k < n && k < INPUT_BULK_TASKS && tasks[k].index == first + k &&
           (uint64_t)first + k < src->ninputs)
        k++;
    if (k < 2)
        return; /* not a run: one task's reads are as cheap */

    bulk_drop(src);
    /* Whatever happens below, this run is not tried again. */
    src->bulk_first = first;
    src->bulk_n = k;
    char *raw = NULL;
    if (read_exact(src, src->input_key, INVOC_INPUT_HEADER + (uint64_t)first * 8,
                   ((uint64_t)k + 1) * 8, &raw, reason, sizeof(reason)) != 0)
        return;
    src->bulk_idx = malloc(((size_t)k + 1) * sizeof(*src->bulk_idx));
    if (src->bulk_idx == NULL) {
        free(raw);
        return;
    }
    for (uint32_t i = 0; i <= k; i++)
        src->bulk_idx[i] = le64((const unsigned char *)raw + (size_t)i * 8);
    free(raw);

    /* The data in one read when it is one sane range: each task's own range
     * is checked against it in load_map. */
    uint64_t limit = INPUT_BULK_MAX;
    uint64_t mem = (uint64_t)src->spec->memory_mb * 1024u * 1024u / 8u;
    if (mem > 0 && mem < limit)
        limit = mem; /* leave a small limit to the function */
    uint64_t a = src->bulk_idx[0], b = src->bulk_idx[k];
    if (b <= a || a > UINT64_MAX - src->base || b - a > limit)
        return;
    char *data = NULL;
    if (read_exact(src, src->input_key, src->base + a, b - a, &data, reason,
                   sizeof(reason)) != 0)
        return;            /* truncated, say: each task finds out for itself */
    src->bulk_data = data; /* owned by src */
    src->bulk_len = b - a;
}

static int
load_map(struct input_src *src, uint32_t task, struct run_input *in, char *reason,
         size_t size)
{
    int rc = load_header(src, reason, size);
    if (rc != 0)
        return rc;
    if (task >= src->ninputs)
        return fail(-EINVAL, reason, size,
                    "no input for task %" PRIu32 ": %s holds %" PRIu64, task,
                    src->input_key, src->ninputs);
    uint64_t a, b;
    bool cached = src->bulk_idx != NULL && task >= src->bulk_first &&
                  task - src->bulk_first < src->bulk_n;
    if (cached) {
        a = src->bulk_idx[task - src->bulk_first];
        b = src->bulk_idx[task - src->bulk_first + 1];
    } else {
        char *idx = NULL;
        rc = read_exact(src, src->input_key, INVOC_INPUT_HEADER + (uint64_t)task * 8, 16,
                        &idx, reason, size);
        if (rc != 0)
            return rc;
        a = le64((const unsigned char *)idx);
        b = le64((const unsigned char *)idx + 8);
        free(idx);
    }
    if (b < a || a > UINT64_MAX - src->base)
        return fail(-EINVAL, reason, size, "bad input index for task %" PRIu32, task);
    if (b - a > RUN_INPUT_MAX)
        return fail(-EFBIG, reason, size,
                    "input of task %" PRIu32 " is too large (%" PRIu64 " bytes)", task,
                    b - a);
    in->parts = calloc(1, sizeof(*in->parts));
    if (in->parts == NULL)
        return fail(-ENOMEM, reason, size, "out of memory");
    in->nparts = 1;
    if (cached && src->bulk_data != NULL && a >= src->bulk_idx[0] &&
        b - src->bulk_idx[0] <= src->bulk_len) {
        in->parts[0].iov_base = src->bulk_data + (a - src->bulk_idx[0]);
        in->parts[0].iov_len = (size_t)(b - a);
        in->total = b - a;
        in->borrowed = true; /* the bytes stay src's */
        return 0;
    }
    char *data;
    rc = read_exact(src, src->input_key, src->base + a, b - a, &data, reason, size);
    if (rc != 0)
        return rc;
    in->parts[0].iov_base = data; /* owned by in */
    in->parts[0].iov_len = (size_t)(b - a);
    in->total = b - a;
    return 0;
}

static int
load_reduce(struct input_src *src, struct run_input *in, char *reason, size_t size)
{
    char *buf = NULL;
    size_t len = 0;
    struct invoc_part *parts = NULL;
    size_t n = 0;
    int rc = store_read(src->store, src->manifest_key, 0, STORE_TO_END, &buf, &len);
    if (rc != 0)
        return fail(rc, reason, size, "cannot read %s: %s", src->manifest_key,
                    strerror(-rc));
    rc = invoc_manifest_decode(buf, len, &parts, &n);
    free(buf);
    if (rc != 0)
        return fail(rc, reason, size, "%s is malformed", src->manifest_key);

    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].len > RUN_INPUT_MAX || parts[i].len > RUN_REDUCE_MAX - total) {
            rc = fail(-EFBIG, reason, size, "reducer input is too large (part %zu)", i);
            goto out;
        }
        total += parts[i].len;
    }
    in->parts = calloc(n ? n : 1, sizeof(*in->parts));
    if (in->parts == NULL) {
        rc = fail(-ENOMEM, reason, size, "out of memory");
        goto out;
    }
    in->nparts = n;
    for (size_t i = 0; i < n; i++) {
        char *data;
        rc = read_exact(src, parts[i].key, parts[i].off, parts[i].len, &data, reason,
                        size);
        if (rc != 0)
            goto out;
        in->parts[i].iov_base = data; /* owned by in */
        in->parts[i].iov_len = (size_t)parts[i].len;
    }
    in->total = total;
    rc = 0;
out:
    invoc_manifest_free(parts, n);
    return rc;
}

int
input_load(struct input_src *src, uint32_t task_index, struct run_input *in, char *reason,
           size_t reason_size)
{
    memset(in, 0, sizeof(*in));
    reason[0] = '\0';
    int rc = src->spec->reduce ? load_reduce(src, in, reason, reason_size)
                               : load_map(src, task_index, in, reason, reason_size);
    if (rc != 0)
        input_release(in);
    return rc;
}
