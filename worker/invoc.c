/*
 * worker/invoc.c - see invoc.h: storage keys, and msgpack encoding and
 * decoding of invocation specs, invocation outputs and reducer manifests.
 *
 * Decoding never trusts the bytes: before msgpack-c builds objects, a
 * pre-scan (mp_check) proves that every declared length and element count
 * fits in the buffer, so a forged count cannot make msgpack-c allocate
 * gigabytes of object arrays.  After that every field is checked for type
 * and range before use.
 */
#include "invoc.h"

#include <burst.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest string field (command, key, symbol, reason) a decoder accepts. */
#define INVOC_STR_MAX (1024u * 1024u)

/* ---- keys ------------------------------------------------------------------ */

static int key_format(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
key_format(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

int
invoc_key_fn(char *buf, size_t size, const char *sha256_hex)
{
    if (sha256_hex == NULL || sha256_hex[0] == '\0' ||
        strspn(sha256_hex, "0123456789abcdefABCDEF") != strlen(sha256_hex))
        return -EINVAL;
    return key_format(buf, size, "fn/%s.so", sha256_hex);
}

int
invoc_key_input(char *buf, size_t size, uint64_t job)
{
    return key_format(buf, size, "jobs/%" PRIu64 "/in", job);
}

void
invoc_input_header(unsigned char hdr[INVOC_INPUT_HEADER], uint64_t n)
{
    memcpy(hdr, INVOC_INPUT_MAGIC, 8);
    for (int b = 0; b < 8; b++)
        hdr[8 + b] = (unsigned char)(n >> (8 * b));
}

int
invoc_key_spec(char *buf, size_t size, uint64_t job, uint64_t dispatch)
{
    return key_format(buf, size, "jobs/%" PRIu64 "/spec/%" PRIu64, job, dispatch);
}

int
invoc_key_output(char *buf, size_t size, uint64_t job, uint64_t dispatch, uint32_t n)
{
    return key_format(buf, size, "jobs/%" PRIu64 "/out/%" PRIu64 ".%" PRIu32, job,
                      dispatch, n);
}

int
invoc_key_reduce_manifest(char *buf, size_t size, uint64_t job)
{
    return key_format(buf, size, "jobs/%" PRIu64 "/reduce.in", job);
}

/* The trailing '/' matters: "jobs/7" is also a prefix of "jobs/70/...". */
int
invoc_key_job_prefix(char *buf, size_t size, uint64_t job)
{
    return key_format(buf, size, "jobs/%" PRIu64 "/", job);
}

/* ---- msgpack pre-scan ------------------------------------------------------- */

/*
 * The msgpack type bytes 0xc4..0xdf that are not fix-types: how many bytes of
 * big-endian length or count follow (lenbytes), how many fixed payload bytes
 * (skip), and whether the count is of array elements (1) or map pairs (2).
 */
static const struct {
    unsigned char lenbytes;
    unsigned char skip;
    unsigned char container;
} mp_types[0xe0 - 0xc4] = {
    [0xc4 - 0xc4] = {1, 0, 0},  [0xc5 - 0xc4] = {2, 0, 0}, /* bin 8/16 */
    [0xc6 - 0xc4] = {4, 0, 0},                             /* bin 32 */
    [0xc7 - 0xc4] = {1, 1, 0},  [0xc8 - 0xc4] = {2, 1, 0}, /* ext 8/16 */
    [0xc9 - 0xc4] = {4, 1, 0},                             /* ext 32 */
    [0xca - 0xc4] = {0, 4, 0},  [0xcb - 0xc4] = {0, 8, 0}, /* float 32/64 */
    [0xcc - 0xc4] = {0, 1, 0},  [0xcd - 0xc4] = {0, 2, 0}, /* uint 8/16 */
    [0xce - 0xc4] = {0, 4, 0},  [0xcf - 0xc4] = {0, 8, 0}, /* uint 32/64 */
    [0xd0 - 0xc4] = {0, 1, 0},  [0xd1 - 0xc4] = {0, 2, 0}, /* int 8/16 */
    [0xd2 - 0xc4] = {0, 4, 0},  [0xd3 - 0xc4] = {0, 8, 0}, /* int 32/64 */
    [0xd4 - 0xc4] = {0, 2, 0},  [0xd5 - 0xc4] = {0, 3, 0}, /* fixext 1/2 */
    [0xd6 - 0xc4] = {0, 5, 0},  [0xd7 - 0xc4] = {0, 9, 0}, /* fixext 4/8 */
    [0xd8 - 0xc4] = {0, 17, 0},                            /* fixext 16 */
    [0xd9 - 0xc4] = {1, 0, 0},  [0xda - 0xc4] = {2, 0, 0}, /* str 8/16 */
    [0xdb - 0xc4] = {4, 0, 0},                             /* str 32 */
    [0xdc - 0xc4] = {2, 0, 1},  [0xdd - 0xc4] = {4, 0, 1}, /* array 16/32 */
    [0xde - 0xc4] = {2, 0, 2},  [0xdf - 0xc4] = {4, 0, 2}, /* map 16/32 */
};

/*
 * Checks that buf holds exactly one well-formed msgpack object whose every
 * length fits in the buffer and whose element counts could each be backed by
 * at least one byte.  This bounds what msgpack-c allocates to a small
 * multiple of len whatever the input.  Returns 0 or -EINVAL.
 */
static int
mp_check(const char *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    size_t pos = 0;
    uint64_t pending = 1; /* objects still to read */

    while (pending > 0) {
        if (pos >= len)
            return -EINVAL;
        unsigned b = p[pos++];
        uint64_t skip = 0;     /* payload bytes after the header */
        uint64_t children = 0; /* objects contained */

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool: the byte is the whole object */
        } else if (b <= 0x8f) {
            children = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            children = b & 0x0f;
        } else if (b <= 0xbf) {
            skip = b & 0x1f;
        } else if (b == 0xc1) {
            return -EINVAL;
        } else {
            unsigned nb = mp_types[b - 0xc4].lenbytes;
            uint64_t n = 0;
            if (len - pos < nb)
                return -EINVAL;
            for (unsigned i = 0; i < nb; i++)
                n = (n << 8) | p[pos++];
            skip = mp_types[b - 0xc4].skip;
            if (mp_types[b - 0xc4].container == 0)
                skip += n;
            else
                children = n * mp_types[b - 0xc4].container;
        }
        if (skip > len - pos)
            return -EINVAL;
        pos += (size_t)skip;
        pending = pending - 1 + children;
        if (pending > len - pos)
            return -EINVAL;
    }
    return pos == len ? 0 : -EINVAL;
}

/* Unpacks buf (exactly one object) into *res.  Returns 0 or -EINVAL/-ENOMEM;
 * on success the caller destroys res. */
static int
mp_unpack(const char *buf, size_t len, msgpack_unpacked *res)
{
    if (buf == NULL || len == 0 || mp_check(buf, len) != 0)
        return -EINVAL;
    msgpack_unpacked_init(res);
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(res, buf, len, &off);
    if (r == MSGPACK_UNPACK_SUCCESS && off == len)
        return 0;
    msgpack_unpacked_destroy(res);
    return r == MSGPACK_UNPACK_NOMEM_ERROR ? -ENOMEM : -EINVAL;
}

/* ---- decoding helpers ------------------------------------------------------- */

/* The value of key name in map m, or NULL when absent or m is not a map. */
static const msgpack_object *
map_get(const msgpack_object *m, const char *name)
{
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t nlen = strlen(name);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == nlen &&
            memcmp(k->via.str.ptr, name, nlen) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static int
obj_u64(const msgpack_object *o, uint64_t max, uint64_t *out)
{
    if (o == NULL || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
        return -EINVAL;
    *out = o->via.u64;
    return 0;
}

static int
obj_int(const msgpack_object *o, int *out)
{
    if (o == NULL)
        return -EINVAL;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT_MAX) {
        *out = (int)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && o->via.i64 >= INT_MIN) {
        *out = (int)o->via.i64;
        return 0;
    }
    return -EINVAL;
}

static int
obj_u32(const msgpack_object *o, uint32_t *out)
{
    uint64_t v;
    int rc = obj_u64(o, UINT32_MAX, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

/* True when o is a str of at most INVOC_STR_MAX bytes without NUL bytes, so
 * it can become a C string. */
static bool
obj_is_cstr(const msgpack_object *o)
{
    return o != NULL && o->type == MSGPACK_OBJECT_STR &&
           o->via.str.size <= INVOC_STR_MAX &&
           (o->via.str.size == 0 ||
            memchr(o->via.str.ptr, '\0', o->via.str.size) == NULL);
}

/* Copies a str object into a malloc'ed C string (*out owned by the caller). */
static int
obj_strdup(const msgpack_object *o, char **out)
{
    if (!obj_is_cstr(o))
        return -EINVAL;
    char *s = malloc((size_t)o->via.str.size + 1);
    if (s == NULL)
        return -ENOMEM;
    if (o->via.str.size > 0)
        memcpy(s, o->via.str.ptr, o->via.str.size);
    s[o->via.str.size] = '\0';
    *out = s;
    return 0;
}

static bool
obj_str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

static int
check_version(const msgpack_object *root)
{
    uint64_t v;
    if (obj_u64(map_get(root, "v"), UINT64_MAX, &v) != 0 || v != INVOC_VERSION)
        return -EINVAL;
    return 0;
}

/* ---- encoding helpers ------------------------------------------------------- */

static int
pack_cstr(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    if (msgpack_pack_str(pk, n) != 0)
        return -1;
    return n > 0 ? msgpack_pack_str_body(pk, s, n) : 0;
}

static int
pack_bin(msgpack_packer *pk, const void *data, size_t n)
{
    if (msgpack_pack_bin(pk, n) != 0)
        return -1;
    return n > 0 ? msgpack_pack_bin_body(pk, data, n) : 0;
}

/* ---- spec ------------------------------------------------------------------- */

int
invoc_spec_encode(const struct invoc_spec *spec, char **out, size_t *len)
{
    if (spec->fn_kind == BURST_FN_EXEC) {
        if (spec->cmd == NULL)
            return -EINVAL;
    } else if (spec->fn_kind == BURST_FN_SO) {
        if (spec->fn_key == NULL || spec->symbol == NULL)
            return -EINVAL;
    } else {
        return -EINVAL;
    }

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);

    int e = 0;
    e |= msgpack_pack_map(&pk, 8);
    e |= pack_cstr(&pk, "v");
    e |= msgpack_pack_uint64(&pk, INVOC_VERSION);
    e |= pack_cstr(&pk, "job");
    e |= msgpack_pack_uint64(&pk, spec->job);
    e |= pack_cstr(&pk, "dispatch");
    e |= msgpack_pack_uint64(&pk, spec->dispatch);
    e |= pack_cstr(&pk, "fn");
    if (spec->fn_kind == BURST_FN_EXEC) {
        e |= msgpack_pack_map(&pk, 2);
        e |= pack_cstr(&pk, "kind");
        e |= pack_cstr(&pk, "exec");
        e |= pack_cstr(&pk, "cmd");
        e |= pack_cstr(&pk, spec->cmd);
    } else {
        e |= msgpack_pack_map(&pk, 3);
        e |= pack_cstr(&pk, "kind");
        e |= pack_cstr(&pk, "so");
        e |= pack_cstr(&pk, "key");
        e |= pack_cstr(&pk, spec->fn_key);
        e |= pack_cstr(&pk, "symbol");
        e |= pack_cstr(&pk, spec->symbol);
    }
    e |= pack_cstr(&pk, "timeout_ms");
    e |= msgpack_pack_uint64(&pk, spec->timeout_ms);
    e |= pack_cstr(&pk, "memory_mb");
    e |= msgpack_pack_uint32(&pk, spec->memory_mb);
    e |= pack_cstr(&pk, "reduce");
    e |= spec->reduce ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk);
    e |= pack_cstr(&pk, "invocations");
    e |= msgpack_pack_array(&pk, spec->ninvocations);
    for (uint32_t i = 0; i < spec->ninvocations && e == 0; i++) {
        e |= msgpack_pack_array(&pk, spec->ntasks[i]);
        for (uint32_t j = 0; j < spec->ntasks[i] && e == 0; j++) {
            e |= msgpack_pack_array(&pk, 2);
            e |= msgpack_pack_uint32(&pk, spec->tasks[i][j].index);
            e |= msgpack_pack_uint32(&pk, spec->tasks[i][j].attempt);
        }
    }
    if (e != 0) {
        msgpack_sbuffer_destroy(&sb);
        return -ENOMEM;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb); /* ownership passes to the caller */
    return 0;
}

void
invoc_spec_free(struct invoc_spec *spec)
{
    if (spec == NULL)
        return;
    free(spec->cmd);
    free(spec->fn_key);
    free(spec->symbol);
    if (spec->tasks != NULL) {
        for (uint32_t i = 0; i < spec->ninvocations; i++)
            free(spec->tasks[i]);
    }
    free(spec->tasks);
    free(spec->ntasks);
    memset(spec, 0, sizeof(*spec));
}

static int
spec_decode_fn(const msgpack_object *fn, struct invoc_spec *spec)
{
    if (fn == NULL || fn->type != MSGPACK_OBJECT_MAP)
        return -EINVAL;
    const msgpack_object *kind = map_get(fn, "kind");
    if (obj_str_eq(kind, "exec")) {
        spec->fn_kind = BURST_FN_EXEC;
        return obj_strdup(map_get(fn, "cmd"), &spec->cmd);
    }
    if (obj_str_eq(kind, "so")) {
        spec->fn_kind = BURST_FN_SO;
        int rc = obj_strdup(map_get(fn, "key"), &spec->fn_key);
        if (rc != 0)
            return rc;
        rc = obj_strdup(map_get(fn, "symbol"), &spec->symbol);
        if (rc == 0 && spec->symbol[0] == '\0')
            rc = -EINVAL;
        return rc;
    }
    return -EINVAL;
}

static int
spec_decode_invocations(const msgpack_object *inv, struct invoc_spec *spec)
{
    if (inv == NULL || inv->type != MSGPACK_OBJECT_ARRAY)
        return -EINVAL;
    uint32_t n = inv->via.array.size;
    /* calloc(n ? n : 1) so that an empty list still gets a non-NULL pointer. */
    spec->ntasks = calloc(n ? n : 1, sizeof(*spec->ntasks));
    spec->tasks = calloc(n ? n : 1, sizeof(*spec->tasks));
    if (spec->ntasks == NULL || spec->tasks == NULL)
        return -ENOMEM;
    spec->ninvocations = n;
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *tl = &inv->via.array.ptr[i];
        if (tl->type != MSGPACK_OBJECT_ARRAY)
            return -EINVAL;
        uint32_t nt = tl->via.array.size;
        spec->tasks[i] = calloc(nt ? nt : 1, sizeof(struct invoc_task));
        if (spec->tasks[i] == NULL)
            return -ENOMEM;
        spec->ntasks[i] = nt;
        for (uint32_t j = 0; j < nt; j++) {
            const msgpack_object *t = &tl->via.array.ptr[j];
            if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size != 2)
                return -EINVAL;
            struct invoc_task *dst = &spec->tasks[i][j];
            if (obj_u32(&t->via.array.ptr[0], &dst->index) != 0 ||
                obj_u32(&t->via.array.ptr[1], &dst->attempt) != 0 || dst->attempt == 0)
                return -EINVAL;
        }
    }
    return 0;
}

int
invoc_spec_decode(const char *buf, size_t len, struct invoc_spec *spec)
{
    memset(spec, 0, sizeof(*spec));
    msgpack_unpacked res;
    int rc = mp_unpack(buf, len, &res);
    if (rc != 0)
        return rc;
    const msgpack_object *root = &res.data;
    const msgpack_object *reduce;
    uint64_t mem;

    rc = -EINVAL;
    if (root->type != MSGPACK_OBJECT_MAP || check_version(root) != 0)
        goto fail;
    if (obj_u64(map_get(root, "job"), UINT64_MAX, &spec->job) != 0 ||
        obj_u64(map_get(root, "dispatch"), UINT64_MAX, &spec->dispatch) != 0 ||
        obj_u64(map_get(root, "timeout_ms"), UINT64_MAX, &spec->timeout_ms) != 0 ||
        obj_u64(map_get(root, "memory_mb"), UINT32_MAX, &mem) != 0)
        goto fail;
    spec->memory_mb = (uint32_t)mem;
    reduce = map_get(root, "reduce");
    if (reduce == NULL || reduce->type != MSGPACK_OBJECT_BOOLEAN)
        goto fail;
    spec->reduce = reduce->via.boolean;
    rc = spec_decode_fn(map_get(root, "fn"), spec);
    if (rc != 0)
        goto fail;
    rc = spec_decode_invocations(map_get(root, "invocations"), spec);
    if (rc != 0)
        goto fail;
    msgpack_unpacked_destroy(&res);
    return 0;

fail:
    msgpack_unpacked_destroy(&res);
    invoc_spec_free(spec);
    return rc == -ENOMEM ? -ENOMEM : -EINVAL;
}

/* ---- output ----------------------------------------------------------------- */

/*
 * The writer packs task entries into a body buffer that starts with
 * OUT_HEADER_RESERVE spare bytes.  The header (whose array count is only known
 * at the end) is packed at finish and the body slid down behind it, so a
 * large output is never held twice.
 */
#define OUT_HEADER_RESERVE 64

struct invoc_out_writer {
    msgpack_sbuffer body; /* owned: reserve + packed task entries */
    msgpack_packer pk;    /* writes into body */
    uint64_t job;
    uint64_t dispatch;
    uint32_t n;
    uint32_t count; /* task entries in body */
    bool finished;  /* finish handed the body out; the writer is spent */
};

int
invoc_out_writer_new(uint64_t job, uint64_t dispatch, uint32_t n,
                     struct invoc_out_writer **out)
{
    struct invoc_out_writer *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return -ENOMEM;
    msgpack_sbuffer_init(&w->body);
    msgpack_packer_init(&w->pk, &w->body, msgpack_sbuffer_write);
    static const char zeros[OUT_HEADER_RESERVE];
    if (msgpack_sbuffer_write(&w->body, zeros, sizeof(zeros)) != 0) {
        msgpack_sbuffer_destroy(&w->body);
        free(w);
        return -ENOMEM;
    }
    w->job = job;
    w->dispatch = dispatch;
    w->n = n;
    *out = w;
    return 0;
}

/* Appends r.  On -ENOMEM the writer is unchanged (a partial entry is cut off
 * again), so the caller may still finish what it has. */
int
invoc_out_writer_add(struct invoc_out_writer *w, const struct invoc_result *r)
{
    if (w->finished)
        return -EINVAL;
    if (w->count == UINT32_MAX)
        return -E2BIG;
    size_t mark = w->body.size;
    const char *reason = r->reason != NULL ? r->reason : "";
    int e = 0;
    e |= msgpack_pack_array(&w->pk, 8);
    e |= msgpack_pack_uint32(&w->pk, r->index);
    e |= msgpack_pack_uint32(&w->pk, r->attempt);
    e |= msgpack_pack_int(&w->pk, r->status);
    e |= msgpack_pack_int(&w->pk, r->exit_status);
    e |= msgpack_pack_int(&w->pk, r->signal);
    e |= pack_cstr(&w->pk, reason);
    e |= pack_bin(&w->pk, r->result, r->result_len);
    e |= pack_bin(&w->pk, r->log, r->log_len);
    if (e != 0) {
        w->body.size = mark;
        return -ENOMEM;
    }
    w->count++;
    return 0;
}

/* A msgpack write callback into a fixed buffer (the header). */
struct fixed_buf {
    char data[OUT_HEADER_RESERVE];
    size_t len;
};

static int
fixed_buf_write(void *data, const char *buf, size_t len)
{
    struct fixed_buf *fb = data;
    if (len > sizeof(fb->data) - fb->len)
        return -1;
    memcpy(fb->data + fb->len, buf, len);
    fb->len += len;
    return 0;
}

int
invoc_out_writer_finish(struct invoc_out_writer *w, char **buf, size_t *len)
{
    if (w->finished)
        return -EINVAL;
    struct fixed_buf hdr = {.len = 0};
    msgpack_packer hp;
    msgpack_packer_init(&hp, &hdr, fixed_buf_write);
    int e = 0;
    e |= msgpack_pack_map(&hp, 5);
    e |= pack_cstr(&hp, "v");
    e |= msgpack_pack_uint64(&hp, INVOC_VERSION);
    e |= pack_cstr(&hp, "job");
    e |= msgpack_pack_uint64(&hp, w->job);
    e |= pack_cstr(&hp, "dispatch");
    e |= msgpack_pack_uint64(&hp, w->dispatch);
    e |= pack_cstr(&hp, "n");
    e |= msgpack_pack_uint32(&hp, w->n);
    e |= pack_cstr(&hp, "tasks");
    e |= msgpack_pack_array(&hp, w->count);
    if (e != 0) /* cannot happen: the header's largest form fits the reserve */
        return -EOVERFLOW;

    char *data = w->body.data;
    size_t body_len = w->body.size - OUT_HEADER_RESERVE;
    memmove(data + hdr.len, data + OUT_HEADER_RESERVE, body_len);
    memcpy(data, hdr.data, hdr.len);
    *len = hdr.len + body_len;
    *buf = msgpack_sbuffer_release(&w->body); /* ownership passes to the caller */
    w->finished = true;
    return 0;
}

void
invoc_out_writer_free(struct invoc_out_writer *w)
{
    if (w == NULL)
        return;
    msgpack_sbuffer_destroy(&w->body);
    free(w);
}

void
invoc_results_free(struct invoc_result *results, size_t n)
{
    if (results == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free((char *)results[i].reason); /* decode made an owned copy */
    free(results);
}

static int
out_decode_task(const char *buf, const msgpack_object *t, struct invoc_result *r)
{
    if (t->type != MSGPACK_OBJECT_ARRAY || t->via.array.size != 8)
        return -EINVAL;
    const msgpack_object *f = t->via.array.ptr;
    if (obj_u32(&f[0], &r->index) != 0 || obj_u32(&f[1], &r->attempt) != 0 ||
        obj_int(&f[2], &r->status) != 0 || obj_int(&f[3], &r->exit_status) != 0 ||
        obj_int(&f[4], &r->signal) != 0)
        return -EINVAL;
    if (r->status < INVOC_OK || r->status > INVOC_ERROR || r->signal < 0)
        return -EINVAL;
    if (f[6].type != MSGPACK_OBJECT_BIN || f[7].type != MSGPACK_OBJECT_BIN)
        return -EINVAL;
    /* msgpack-c points bin objects into the buffer it unpacked; that is
     * what makes the offsets (and a later ranged read) possible. */
    r->result = f[6].via.bin.ptr;
    r->result_len = f[6].via.bin.size;
    r->result_off = r->result_len > 0 ? (size_t)(r->result - buf) : 0;
    r->log = f[7].via.bin.ptr;
    r->log_len = f[7].via.bin.size;
    r->log_off = r->log_len > 0 ? (size_t)(r->log - buf) : 0;
    char *reason;
    int rc = obj_strdup(&f[5], &reason);
    if (rc != 0)
        return rc;
    r->reason = reason; /* owned by the results array */
    return 0;
}

int
invoc_out_decode(const char *buf, size_t len, uint64_t *job, uint64_t *dispatch,
                 uint32_t *n_inv, struct invoc_result **results, size_t *n)
{
    msgpack_unpacked res;
    int rc = mp_unpack(buf, len, &res);
    if (rc != 0)
        return rc;
    const msgpack_object *root = &res.data;
    const msgpack_object *tasks;
    struct invoc_result *rs = NULL;
    size_t count = 0;
    uint64_t j, d;
    uint32_t inv;

    rc = -EINVAL;
    if (root->type != MSGPACK_OBJECT_MAP || check_version(root) != 0)
        goto fail;
    if (obj_u64(map_get(root, "job"), UINT64_MAX, &j) != 0 ||
        obj_u64(map_get(root, "dispatch"), UINT64_MAX, &d) != 0 ||
        obj_u32(map_get(root, "n"), &inv) != 0)
        goto fail;
    tasks = map_get(root, "tasks");
    if (tasks == NULL || tasks->type != MSGPACK_OBJECT_ARRAY)
        goto fail;
    count = tasks->via.array.size;
    rs = calloc(count ? count : 1, sizeof(*rs));
    if (rs == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        rc = out_decode_task(buf, &tasks->via.array.ptr[i], &rs[i]);
        if (rc != 0)
            goto fail;
    }
    msgpack_unpacked_destroy(&res);
    *job = j;
    *dispatch = d;
    *n_inv = inv;
    *results = rs; /* ownership passes to the caller */
    *n = count;
    return 0;

fail:
    invoc_results_free(rs, count);
    msgpack_unpacked_destroy(&res);
    return rc == -ENOMEM ? -ENOMEM : -EINVAL;
}

/* ---- reducer manifest ------------------------------------------------------- */

int
invoc_manifest_encode(const struct invoc_part *parts, size_t n, char **out, size_t *len)
{
    if (n > UINT32_MAX)
        return -E2BIG;
    for (size_t i = 0; i < n; i++) {
        if (parts[i].key == NULL)
            return -EINVAL;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int e = 0;
    e |= msgpack_pack_map(&pk, 2);
    e |= pack_cstr(&pk, "v");
    e |= msgpack_pack_uint64(&pk, INVOC_VERSION);
    e |= pack_cstr(&pk, "parts");
    e |= msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n && e == 0; i++) {
        e |= msgpack_pack_array(&pk, 3);
        e |= pack_cstr(&pk, parts[i].key);
        e |= msgpack_pack_uint64(&pk, parts[i].off);
        e |= msgpack_pack_uint64(&pk, parts[i].len);
    }
    if (e != 0) {
        msgpack_sbuffer_destroy(&sb);
        return -ENOMEM;
    }
    *len = sb.size;
    *out = msgpack_sbuffer_release(&sb); /* ownership passes to the caller */
    return 0;
}

void
invoc_manifest_free(struct invoc_part *parts, size_t n)
{
    if (parts == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(parts[i].key);
    free(parts);
}

int
invoc_manifest_decode(const char *buf, size_t len, struct invoc_part **parts, size_t *n)
{
    msgpack_unpacked res;
    int rc = mp_unpack(buf, len, &res);
    if (rc != 0)
        return rc;
    const msgpack_object *root = &res.data;
    const msgpack_object *arr;
    struct invoc_part *ps = NULL;
    size_t count = 0;

    rc = -EINVAL;
    if (root->type != MSGPACK_OBJECT_MAP || check_version(root) != 0)
        goto fail;
    arr = map_get(root, "parts");
    if (arr == NULL || arr->type != MSGPACK_OBJECT_ARRAY)
        goto fail;
    count = arr->via.array.size;
    ps = calloc(count ? count : 1, sizeof(*ps));
    if (ps == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < count; i++) {
        const msgpack_object *p = &arr->via.array.ptr[i];
        if (p->type != MSGPACK_OBJECT_ARRAY || p->via.array.size != 3) {
            rc = -EINVAL;
            goto fail;
        }
        rc = obj_strdup(&p->via.array.ptr[0], &ps[i].key);
        if (rc == 0 && ps[i].key[0] == '\0')
            rc = -EINVAL;
        if (rc == 0 &&
            (obj_u64(&p->via.array.ptr[1], UINT64_MAX, &ps[i].off) != 0 ||
             obj_u64(&p->via.array.ptr[2], UINT64_MAX - ps[i].off, &ps[i].len) != 0))
            rc = -EINVAL;
        if (rc != 0)
            goto fail;
    }
    msgpack_unpacked_destroy(&res);
    *parts = ps; /* ownership passes to the caller */
    *n = count;
    return 0;

fail:
    invoc_manifest_free(ps, count);
    msgpack_unpacked_destroy(&res);
    return rc == -ENOMEM ? -ENOMEM : -EINVAL;
}
