/*
 * proto/msg.c - encoding and decoding of every message in msg.h; the wire
 * format itself is specified in proto/PROTOCOL.md.
 *
 * Decoding runs in three steps, each cheap next to the work a message asks
 * for:
 *   1. a byte-level walk of the payload (scan_*) proves it is exactly one
 *      complete msgpack map within the depth limit.  msgpack-c allocates an
 *      array or map as soon as it reads its header, so without this walk a
 *      5-byte frame announcing 4 billion elements would make it try to
 *      allocate about 100 GB; after it, every allocation is backed by bytes
 *      that are really there.
 *   2. msgpack_unpack_next() builds the object tree; strings and byte strings
 *      point into the payload, so nothing is copied.
 *   3. the dec_* functions check each field's presence, type and bounds and
 *      fill the C structs.
 * Requests come from untrusted clients and get precise error messages;
 * replies and events come from the daemon, so the client checks structure
 * and types but not the daemon's limits.
 *
 * Encoding packs straight into a struct proto_buf through a msgpack_packer
 * write callback: no per-field allocation, one memcpy per string.  The
 * 4-byte frame header is reserved first and filled in at the end.
 */
#include "msg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "frame.h"

/* msgpack-c refuses more nested containers than its fixed parser stack. */
#define MSGPACK_DEPTH_CAP 32u
/* Longest so symbol accepted (dlsym has no limit; ours keeps logs sane). */
#define SYMBOL_MAX 255u
/* Backend names are short identifiers ("local", "codeengine"). */
#define BACKEND_MAX 31u
/* Replies are not held to the daemon's limits, only to the frame's. */
#define NO_LIMIT SIZE_MAX

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- small helpers ------------------------------------------------------ */

static const char *const op_names[PROTO_OP_COUNT_] = {
    [PROTO_OP_HELLO] = "hello",         [PROTO_OP_SUBMIT] = "submit",
    [PROTO_OP_PUT_FN] = "put_fn",       [PROTO_OP_STATUS] = "status",
    [PROTO_OP_JOBS] = "jobs",           [PROTO_OP_TASKS] = "tasks",
    [PROTO_OP_RESULTS] = "results",     [PROTO_OP_CANCEL] = "cancel",
    [PROTO_OP_LOGS] = "logs",           [PROTO_OP_QUOTA] = "quota",
    [PROTO_OP_SUBSCRIBE] = "subscribe", [PROTO_OP_UNSUBSCRIBE] = "unsubscribe",
};

const char *
proto_op_name(enum proto_op op)
{
    if ((int)op <= 0 || op >= PROTO_OP_COUNT_)
        return NULL;
    return op_names[op];
}

static int
op_from_name(const char *name, size_t len)
{
    for (int op = 1; op < PROTO_OP_COUNT_; op++)
        if (strlen(op_names[op]) == len && memcmp(op_names[op], name, len) == 0)
            return op;
    return 0;
}

static const char *
fn_kind_name(int kind)
{
    switch (kind) {
    case BURST_FN_EXEC:
        return "exec";
    case BURST_FN_SO:
        return "so";
    default:
        return NULL;
    }
}

struct proto_str
proto_str_c(const char *s)
{
    struct proto_str r = {s, s != NULL ? strlen(s) : 0};
    return r;
}

void
proto_str_copy(char *dst, size_t size, struct proto_str s)
{
    if (size == 0)
        return;
    size_t n = s.ptr != NULL ? s.len : 0;
    if (n > size - 1)
        n = size - 1;
    if (n > 0)
        memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

bool
proto_str_eq(struct proto_str s, const char *c)
{
    if (s.ptr == NULL || c == NULL)
        return s.ptr == NULL && c == NULL;
    return strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0;
}

void
proto_buf_init(struct proto_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void
proto_buf_free(struct proto_buf *b)
{
    free(b->data);
    proto_buf_init(b);
}

void
proto_buf_reset(struct proto_buf *b)
{
    b->len = 0;
}

/* Makes room for extra more bytes.  Returns 0 or -ENOMEM. */
static int
buf_reserve(struct proto_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* ---- error messages ----------------------------------------------------- */

/* The text of the last decoding failure on this thread; struct proto_error
 * borrows it (msg.h tells callers to copy it before the next call). */
static _Thread_local char dec_msg[512];

static int __attribute__((format(printf, 2, 3))) dec_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dec_msg, sizeof(dec_msg), fmt, ap);
    va_end(ap);
    return code;
}

/* A field's dotted path ("opts.chunksize") as printf arguments for "%s%s%s". */
#define PATH_ARGS(where, name) (where), (*(where) != '\0' ? "." : ""), (name)

/* Copies at most 40 bytes of untrusted text into out (>= 48 bytes) with
 * anything unprintable replaced, so it can be quoted in a message. */
static const char *
sanitize(char *out, const char *s, size_t len)
{
    size_t n = len > 40 ? 40 : len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c < 0x20 || c >= 0x7f || c == '\'') ? '?' : (char)c;
    }
    strcpy(out + n, len > n ? "..." : "");
    return out;
}

/* ---- step 1: the byte-level walk ---------------------------------------- */

struct scan {
    const unsigned char *p;
    const unsigned char *end;
    unsigned max_depth;
};

static int
scan_truncated(void)
{
    return dec_fail(BURST_EPROTO, "truncated msgpack: the message ends inside a value");
}

static int
scan_read_be(struct scan *s, size_t n, uint64_t *out)
{
    if ((size_t)(s->end - s->p) < n)
        return scan_truncated();
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | s->p[i];
    s->p += n;
    *out = v;
    return 0;
}

/*
 * Skips one msgpack value at s->p, checking that it is complete and that no
 * container nests deeper than s->max_depth (depth counts the containers
 * around the value).  Recursion is bounded by max_depth, at most 32.
 */
static int
scan_value(struct scan *s, unsigned depth)
{
    if (s->p >= s->end)
        return scan_truncated();
    unsigned char c = *s->p++;
    uint64_t n = 0, skip = 0;
    int rc = 0;
    int container = 0; /* 1 array, 2 map */

    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 0; /* fixint, nil, bool */
    if ((c & 0xf0) == 0x80) {
        container = 2;
        n = c & 0x0f;
    } else if ((c & 0xf0) == 0x90) {
        container = 1;
        n = c & 0x0f;
    } else if ((c & 0xe0) == 0xa0) {
        skip = c & 0x1f;
    } else {
        switch (c) {
        case 0xc4: /* bin 8 */
        case 0xd9: /* str 8 */
            rc = scan_read_be(s, 1, &skip);
            break;
        case 0xc5:
        case 0xda:
            rc = scan_read_be(s, 2, &skip);
            break;
        case 0xc6:
        case 0xdb:
            rc = scan_read_be(s, 4, &skip);
            break;
        case 0xc7: /* ext 8/16/32: length, then a type byte */
            rc = scan_read_be(s, 1, &skip);
            skip++;
            break;
        case 0xc8:
            rc = scan_read_be(s, 2, &skip);
            skip++;
            break;
        case 0xc9:
            rc = scan_read_be(s, 4, &skip);
            skip++;
            break;
        case 0xca: /* float 32 */
            skip = 4;
            break;
        case 0xcb: /* float 64 */
            skip = 8;
            break;
        case 0xcc:
        case 0xd0:
            skip = 1;
            break;
        case 0xcd:
        case 0xd1:
            skip = 2;
            break;
        case 0xce:
        case 0xd2:
            skip = 4;
            break;
        case 0xcf:
        case 0xd3:
            skip = 8;
            break;
        case 0xd4: /* fixext 1/2/4/8/16 */
            skip = 2;
            break;
        case 0xd5:
            skip = 3;
            break;
        case 0xd6:
            skip = 5;
            break;
        case 0xd7:
            skip = 9;
            break;
        case 0xd8:
            skip = 17;
            break;
        case 0xdc: /* array 16/32 */
            container = 1;
            rc = scan_read_be(s, 2, &n);
            break;
        case 0xdd:
            container = 1;
            rc = scan_read_be(s, 4, &n);
            break;
        case 0xde: /* map 16/32 */
            container = 2;
            rc = scan_read_be(s, 2, &n);
            break;
        case 0xdf:
            container = 2;
            rc = scan_read_be(s, 4, &n);
            break;
        default: /* 0xc1 is the one byte msgpack never uses */
            return dec_fail(BURST_EPROTO, "invalid msgpack: byte 0x%02x", c);
        }
        if (rc != 0)
            return rc;
    }

    size_t left = (size_t)(s->end - s->p);
    if (container == 0) {
        if (skip > left)
            return scan_truncated();
        s->p += skip;
        return 0;
    }
    if (depth + 1 > s->max_depth)
        return dec_fail(BURST_ETOOBIG, "the message nests deeper than %u levels",
                        s->max_depth);
    /* Every element takes at least one byte: a count larger than what is
     * left cannot be honest, and this check keeps the loop short. */
    uint64_t elems = container == 2 ? 2 * n : n;
    if (elems > left)
        return scan_truncated();
    for (uint64_t i = 0; i < elems; i++) {
        rc = scan_value(s, depth + 1);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static unsigned
depth_limit(const struct proto_limits *lim)
{
    unsigned d = lim != NULL ? lim->max_depth : MSGPACK_DEPTH_CAP;
    if (d == 0 || d > MSGPACK_DEPTH_CAP)
        d = MSGPACK_DEPTH_CAP;
    return d;
}

static bool
is_map_byte(unsigned char c)
{
    return (c & 0xf0) == 0x80 || c == 0xde || c == 0xdf;
}

/* Checks that payload holds exactly one complete msgpack map. */
static int
scan_payload(const char *payload, size_t len, unsigned max_depth)
{
    if (len == 0)
        return dec_fail(BURST_EPROTO, "empty message");
    if (!is_map_byte((unsigned char)payload[0]))
        return dec_fail(BURST_EPROTO, "a message must be a msgpack map");
    struct scan s = {(const unsigned char *)payload, (const unsigned char *)payload + len,
                     max_depth};
    int rc = scan_value(&s, 0);
    if (rc != 0)
        return rc;
    if (s.p != s.end)
        return dec_fail(BURST_EPROTO, "%zu bytes of trailing data after the message",
                        (size_t)(s.end - s.p));
    return 0;
}

/* The routing keys of a message, read without decoding the rest. */
struct head {
    bool has_op, has_id, has_re, has_ev;
    bool id_ok, re_ok; /* the value was an unsigned integer */
    uint64_t id, re;
};

/* Reads an unsigned integer value at s->p, if it is one; never fails. */
static bool
scan_peek_uint(const struct scan *s, uint64_t *out)
{
    struct scan t = *s;
    if (t.p >= t.end)
        return false;
    unsigned char c = *t.p++;
    uint64_t v = 0;
    if (c <= 0x7f) {
        *out = c;
        return true;
    }
    static const size_t sizes[] = {1, 2, 4, 8};
    if (c >= 0xcc && c <= 0xcf) {
        if (scan_read_be(&t, sizes[c - 0xcc], &v) != 0)
            return false;
        *out = v;
        return true;
    }
    if (c >= 0xd0 && c <= 0xd3) { /* a signed type holding a value >= 0 */
        size_t n = sizes[c - 0xd0];
        if (scan_read_be(&t, n, &v) != 0 || (v >> (8 * n - 1)) != 0)
            return false;
        *out = v;
        return true;
    }
    return false;
}

/* Reads a str header at s->p; returns true and the string if it is one. */
static bool
scan_str(struct scan *s, const char **str, size_t *len)
{
    if (s->p >= s->end)
        return false;
    unsigned char c = *s->p;
    uint64_t n = 0;
    struct scan t = *s;
    t.p++;
    if ((c & 0xe0) == 0xa0)
        n = c & 0x1f;
    else if (c == 0xd9 || c == 0xda || c == 0xdb) {
        if (scan_read_be(&t, (size_t)1 << (c - 0xd9), &n) != 0)
            return false;
    } else
        return false;
    if (n > (uint64_t)(t.end - t.p))
        return false;
    *str = (const char *)t.p;
    *len = (size_t)n;
    s->p = t.p + n;
    return true;
}

/*
 * Walks the top-level map of payload until it has seen every routing key or
 * hit something malformed, and records what it saw.  stop_at_route: return
 * as soon as "re" or "ev" is seen (replies put "re" first, so proto_peek is
 * O(1) even for a large results page).
 */
static void
scan_head(const char *payload, size_t len, bool stop_at_route, struct head *h)
{
    memset(h, 0, sizeof(*h));
    struct scan s = {(const unsigned char *)payload, (const unsigned char *)payload + len,
                     MSGPACK_DEPTH_CAP};
    if (len == 0 || !is_map_byte(s.p[0]))
        return;
    uint64_t n = 0;
    unsigned char c = *s.p++;
    if ((c & 0xf0) == 0x80)
        n = c & 0x0f;
    else if (scan_read_be(&s, c == 0xde ? 2 : 4, &n) != 0)
        return;
    for (uint64_t i = 0; i < n; i++) {
        const char *k = NULL;
        size_t klen = 0;
        if (!scan_str(&s, &k, &klen)) {
            if (scan_value(&s, 1) != 0)
                return;
        }
        bool is_id = klen == 2 && memcmp(k, "id", 2) == 0;
        bool is_re = klen == 2 && memcmp(k, "re", 2) == 0;
        if (is_id && !h->has_id) {
            h->has_id = true;
            h->id_ok = scan_peek_uint(&s, &h->id);
        } else if (is_re && !h->has_re) {
            h->has_re = true;
            h->re_ok = scan_peek_uint(&s, &h->re);
        } else if (klen == 2 && memcmp(k, "op", 2) == 0) {
            h->has_op = true;
        } else if (klen == 2 && memcmp(k, "ev", 2) == 0) {
            h->has_ev = true;
        }
        if (stop_at_route && (h->has_re || h->has_ev))
            return;
        if (h->has_op && h->has_id)
            return;
        if (scan_value(&s, 1) != 0)
            return;
    }
}

int
proto_peek(const char *payload, size_t len, enum proto_kind *kind, uint64_t *re)
{
    struct head h;
    scan_head(payload, len, true, &h);
    *re = 0;
    if (h.has_re) {
        if (!h.re_ok)
            return BURST_EPROTO;
        *kind = PROTO_KIND_REPLY;
        *re = h.re;
        return 0;
    }
    if (h.has_ev) {
        *kind = PROTO_KIND_EVENT;
        return 0;
    }
    if (h.has_op) {
        *kind = PROTO_KIND_REQUEST;
        return 0;
    }
    return BURST_EPROTO;
}

/* Step 2: validates the bytes, then lets msgpack-c build the tree in up
 * (which the caller initialised and destroys, on failure too). */
static int
unpack_payload(const char *payload, size_t len, unsigned max_depth, msgpack_unpacked *up)
{
    int rc = scan_payload(payload, len, max_depth);
    if (rc != 0)
        return rc;
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack_next(up, payload, len, &off);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR)
        return dec_fail(-ENOMEM, "out of memory while decoding a message");
    /* The walk above accepted it, so anything else is a disagreement between
     * the walk and msgpack-c; refuse the message rather than guess. */
    if (r != MSGPACK_UNPACK_SUCCESS || off != len || up->data.type != MSGPACK_OBJECT_MAP)
        return dec_fail(BURST_EPROTO, "malformed msgpack");
    return 0;
}

/* ---- step 3: fields ----------------------------------------------------- */

/* One expected key of a map, and where its value was found. */
struct fld {
    const char *name;
    size_t len;
    const msgpack_object *v; /* borrowed from the tree; NULL if absent or nil */
    bool seen;
};

#define FLD(s)                                                                           \
    {                                                                                    \
        s, sizeof(s) - 1, NULL, false                                                    \
    }

/*
 * Finds the values of the keys listed in f (n of them) in map.  Keys must be
 * strings and may not repeat (two readers could otherwise see two different
 * values); unknown keys are ignored; a nil value counts as absent, which is
 * how msgpack libraries in other languages write an unset option.
 */
static int
fields_get(const msgpack_object *map, const char *where, struct fld *f, size_t n)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) {
            if (*where != '\0')
                return dec_fail(BURST_EPROTO, "keys of map '%s' must be strings", where);
            return dec_fail(BURST_EPROTO, "map keys must be strings");
        }
        for (size_t j = 0; j < n; j++) {
            if (f[j].len != kv->key.via.str.size ||
                memcmp(f[j].name, kv->key.via.str.ptr, f[j].len) != 0)
                continue;
            if (f[j].seen)
                return dec_fail(BURST_EPROTO, "duplicate key '%s%s%s'",
                                PATH_ARGS(where, f[j].name));
            f[j].seen = true;
            f[j].v = kv->val.type == MSGPACK_OBJECT_NIL ? NULL : &kv->val;
            break;
        }
    }
    return 0;
}

static int
missing(const struct fld *f, const char *where)
{
    return dec_fail(BURST_EBADFIELD, "missing field '%s%s%s'", PATH_ARGS(where, f->name));
}

/* Unsigned integer in lo..hi.  Absent: an error if required, else *out is
 * left as it was (the caller set the default). */
static int
get_uint(const struct fld *f, const char *where, bool required, uint64_t lo, uint64_t hi,
         uint64_t *out)
{
    const msgpack_object *v = f->v;
    if (v == NULL)
        return required ? missing(f, where) : 0;
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 < lo ||
        v->via.u64 > hi) {
        if (lo == 0 && hi == UINT64_MAX)
            return dec_fail(BURST_EBADFIELD,
                            "field '%s%s%s' must be a non-negative integer",
                            PATH_ARGS(where, f->name));
        return dec_fail(
            BURST_EBADFIELD, "field '%s%s%s' must be an integer from %llu to %llu",
            PATH_ARGS(where, f->name), (unsigned long long)lo, (unsigned long long)hi);
    }
    *out = v->via.u64;
    return 0;
}

static int
get_u64(const struct fld *f, const char *where, bool required, uint64_t *out)
{
    return get_uint(f, where, required, 0, UINT64_MAX, out);
}

static int
get_u32(const struct fld *f, const char *where, bool required, uint32_t lo, uint32_t hi,
        uint32_t *out)
{
    uint64_t v = *out;
    int rc = get_uint(f, where, required, lo, hi, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

static int
get_i64(const struct fld *f, const char *where, bool required, int64_t lo, int64_t hi,
        int64_t *out)
{
    const msgpack_object *v = f->v;
    if (v == NULL)
        return required ? missing(f, where) : 0;
    int64_t x = 0;
    bool ok = true;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= (uint64_t)INT64_MAX)
        x = (int64_t)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        x = v->via.i64;
    else
        ok = false;
    if (!ok || x < lo || x > hi)
        return dec_fail(BURST_EBADFIELD,
                        "field '%s%s%s' must be an integer from %lld to %lld",
                        PATH_ARGS(where, f->name), (long long)lo, (long long)hi);
    *out = x;
    return 0;
}

static int
get_i32(const struct fld *f, const char *where, bool required, int32_t *out)
{
    int64_t v = *out;
    int rc = get_i64(f, where, required, INT32_MIN, INT32_MAX, &v);
    if (rc == 0)
        *out = (int32_t)v;
    return rc;
}

static int
get_bool(const struct fld *f, const char *where, bool required, bool *out)
{
    const msgpack_object *v = f->v;
    if (v == NULL)
        return required ? missing(f, where) : 0;
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return dec_fail(BURST_EBADFIELD, "field '%s%s%s' must be a boolean",
                        PATH_ARGS(where, f->name));
    *out = v->via.boolean;
    return 0;
}

/* A str value of at most maxlen bytes (longer: BURST_ETOOBIG). */
static int
get_str(const struct fld *f, const char *where, bool required, size_t maxlen,
        struct proto_str *out)
{
    const msgpack_object *v = f->v;
    if (v == NULL)
        return required ? missing(f, where) : 0;
    if (v->type != MSGPACK_OBJECT_STR)
        return dec_fail(BURST_EBADFIELD, "field '%s%s%s' must be a string",
                        PATH_ARGS(where, f->name));
    if (v->via.str.size > maxlen)
        return dec_fail(BURST_ETOOBIG, "field '%s%s%s' is longer than %zu bytes",
                        PATH_ARGS(where, f->name), maxlen);
    out->ptr = v->via.str.ptr;
    out->len = v->via.str.size;
    return 0;
}

/* A bin value (or, when accept_str, a str) of at most maxlen bytes. */
static int
get_bytes(const struct fld *f, const char *where, bool required, size_t maxlen,
          bool accept_str, struct proto_str *out)
{
    const msgpack_object *v = f->v;
    if (v == NULL)
        return required ? missing(f, where) : 0;
    if (v->type == MSGPACK_OBJECT_BIN) {
        out->ptr = v->via.bin.ptr;
        out->len = v->via.bin.size;
    } else if (v->type == MSGPACK_OBJECT_STR && accept_str) {
        out->ptr = v->via.str.ptr;
        out->len = v->via.str.size;
    } else {
        return dec_fail(BURST_EBADFIELD, "field '%s%s%s' must be a byte string (bin)",
                        PATH_ARGS(where, f->name));
    }
    if (out->len > maxlen) {
        size_t len = out->len;
        out->ptr = NULL;
        out->len = 0;
        return dec_fail(BURST_ETOOBIG,
                        "field '%s%s%s' is %zu bytes, more than the limit of %zu",
                        PATH_ARGS(where, f->name), len, maxlen);
    }
    return 0;
}

/* A str naming one of n values of an enumeration (name(i) for i < n). */
static int
get_enum(const struct fld *f, const char *where, bool required, const char *(*name)(int),
         int n, int *out)
{
    struct proto_str s = {NULL, 0};
    int rc = get_str(f, where, required, NO_LIMIT, &s);
    if (rc != 0 || s.ptr == NULL)
        return rc;
    for (int i = 0; i < n; i++) {
        if (proto_str_eq(s, name(i))) {
            *out = i;
            return 0;
        }
    }
    int k = snprintf(dec_msg, sizeof(dec_msg), "field '%s%s%s' must be one of",
                     PATH_ARGS(where, f->name));
    for (int i = 0; i < n && k > 0 && (size_t)k < sizeof(dec_msg); i++)
        k += snprintf(dec_msg + k, sizeof(dec_msg) - (size_t)k, "%s \"%s\"",
                      i == 0 ? "" : ",", name(i));
    return BURST_EBADFIELD;
}

static const msgpack_object *
get_map(const struct fld *f, const char *where, int *rc)
{
    *rc = 0;
    if (f->v != NULL && f->v->type != MSGPACK_OBJECT_MAP) {
        *rc = dec_fail(BURST_EBADFIELD, "field '%s%s%s' must be a map",
                       PATH_ARGS(where, f->name));
        return NULL;
    }
    return f->v;
}

static const msgpack_object *
get_array(const struct fld *f, const char *where, int *rc)
{
    *rc = 0;
    if (f->v != NULL && f->v->type != MSGPACK_OBJECT_ARRAY) {
        *rc = dec_fail(BURST_EBADFIELD, "field '%s%s%s' must be an array",
                       PATH_ARGS(where, f->name));
        return NULL;
    }
    return f->v;
}

/* ---- requests ----------------------------------------------------------- */

/* What proto_request.priv_ points at. */
struct req_priv {
    msgpack_unpacked up;      /* owned: the tree, borrowing from the payload */
    struct proto_str *inputs; /* owned: submit's inputs array */
};

static bool
is_hash(struct proto_str s)
{
    if (s.len != 64)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

static bool
is_ident_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static bool
is_symbol(struct proto_str s)
{
    if (s.len == 0 || s.len > SYMBOL_MAX)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_ident_char(s.ptr[i], i == 0))
            return false;
    return true;
}

static bool
is_backend_name(struct proto_str s)
{
    if (s.len == 0 || s.len > BACKEND_MAX)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];
        if (!is_ident_char(c, false) && c != '-' && c != '.')
            return false;
    }
    return true;
}

/* fn or reduce: {"kind": "exec", "cmd": str} | {"kind": "so", "hash", "symbol"} */
static int
dec_fn(const struct fld *ff, const struct proto_limits *lim, struct proto_fn *fn)
{
    const char *where = ff->name;
    int rc;
    const msgpack_object *m = get_map(ff, "", &rc);
    if (rc != 0)
        return rc;
    struct fld f[] = {FLD("kind"), FLD("cmd"), FLD("hash"), FLD("symbol")};
    if ((rc = fields_get(m, where, f, NELEM(f))) != 0)
        return rc;
    if ((rc = get_enum(&f[0], where, true, fn_kind_name, 2, &fn->kind)) != 0)
        return rc;
    if (fn->kind == BURST_FN_EXEC) {
        if ((rc = get_str(&f[1], where, true, lim->max_string, &fn->cmd)) != 0)
            return rc;
        if (fn->cmd.len == 0)
            return dec_fail(BURST_EBADFIELD, "field '%s.cmd' must not be empty", where);
        if (memchr(fn->cmd.ptr, '\0', fn->cmd.len) != NULL)
            return dec_fail(BURST_EBADFIELD, "field '%s.cmd' must not contain NUL bytes",
                            where);
        return 0;
    }
    if ((rc = get_str(&f[2], where, true, NO_LIMIT, &fn->hash)) != 0)
        return rc;
    if (!is_hash(fn->hash))
        return dec_fail(BURST_EBADFIELD,
                        "field '%s.hash' must be a SHA-256 as 64 lowercase hex digits",
                        where);
    if ((rc = get_str(&f[3], where, true, NO_LIMIT, &fn->symbol)) != 0)
        return rc;
    if (!is_symbol(fn->symbol))
        return dec_fail(BURST_EBADFIELD,
                        "field '%s.symbol' must be a C identifier of at most %u bytes",
                        where, SYMBOL_MAX);
    return 0;
}

static int
dec_opts(const msgpack_object *m, const struct proto_limits *lim, struct proto_opts *o)
{
    const char *where = "opts";
    o->chunksize = 1;
    if (m == NULL)
        return 0;
    struct fld f[] = {FLD("chunksize"),           FLD("retries"), FLD("timeout_ms"),
                      FLD("memory_mb"),           FLD("backend"), FLD("name"),
                      FLD("cancel_on_disconnect")};
    int rc;
    if ((rc = fields_get(m, where, f, NELEM(f))) != 0)
        return rc;
    uint32_t maxchunk = lim->max_chunksize > 0 ? lim->max_chunksize : 1;
    if ((rc = get_u32(&f[0], where, false, 1, maxchunk, &o->chunksize)) != 0 ||
        (rc = get_u32(&f[1], where, false, 0, lim->max_retries, &o->retries)) != 0 ||
        (rc = get_u64(&f[2], where, false, &o->timeout_ms)) != 0 ||
        (rc = get_u32(&f[3], where, false, 0, UINT32_MAX, &o->memory_mb)) != 0 ||
        (rc = get_str(&f[4], where, false, NO_LIMIT, &o->backend)) != 0 ||
        (rc = get_str(&f[5], where, false, lim->max_string, &o->name)) != 0 ||
        (rc = get_bool(&f[6], where, false, &o->cancel_on_disconnect)) != 0)
        return rc;
    if (o->backend.ptr != NULL && !is_backend_name(o->backend))
        return dec_fail(
            BURST_EBADFIELD,
            "field 'opts.backend' must be 1 to %u letters, digits, '_', '-' or '.'",
            BACKEND_MAX);
    return 0;
}

/* Counts the lines of a "lines" blob and checks each against max_input. */
static int
count_lines(struct proto_str blob, const struct proto_limits *lim, uint32_t *out)
{
    const char *p = blob.ptr, *end = blob.ptr + blob.len;
    uint64_t n = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl != NULL ? nl + 1 : end;
        if ((size_t)(stop - p) > lim->max_input)
            return dec_fail(BURST_ETOOBIG, "line %llu of 'lines' is longer than %u bytes",
                            (unsigned long long)n + 1, lim->max_input);
        if (++n > lim->max_tasks)
            return dec_fail(BURST_ETOOBIG,
                            "'lines' holds more than %u lines (tasks per job)",
                            lim->max_tasks);
        p = stop;
    }
    *out = (uint32_t)n;
    return 0;
}

static int
dec_inputs(const msgpack_object *a, const struct proto_limits *lim, struct req_priv *p,
           struct proto_submit *s)
{
    uint32_t n = a->via.array.size;
    if (n == 0)
        return dec_fail(BURST_EBADFIELD, "a job needs at least one input");
    if (n > lim->max_tasks)
        return dec_fail(BURST_ETOOBIG, "%u inputs exceed the limit of %u tasks per job",
                        n, lim->max_tasks);
    p->inputs = malloc((size_t)n * sizeof(*p->inputs));
    if (p->inputs == NULL)
        return dec_fail(-ENOMEM, "out of memory for %u inputs", n);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *o = &a->via.array.ptr[i];
        struct proto_str *in = &p->inputs[i];
        if (o->type == MSGPACK_OBJECT_BIN) {
            in->ptr = o->via.bin.ptr;
            in->len = o->via.bin.size;
        } else if (o->type == MSGPACK_OBJECT_STR) {
            in->ptr = o->via.str.ptr;
            in->len = o->via.str.size;
        } else {
            return dec_fail(BURST_EBADFIELD, "field 'inputs[%u]' must be a byte string",
                            i);
        }
        if (in->len > lim->max_input)
            return dec_fail(BURST_ETOOBIG,
                            "field 'inputs[%u]' is %zu bytes, more than the limit of %u",
                            i, in->len, lim->max_input);
    }
    s->inputs = p->inputs;
    s->ninputs = n;
    s->input_mode = PROTO_INPUT_ARRAY;
    return 0;
}

static int
dec_submit(const msgpack_object *m, const struct proto_limits *lim, struct req_priv *p,
           struct proto_submit *s)
{
    struct fld f[] = {FLD("op"),    FLD("id"),     FLD("kind"),
                      FLD("fn"),    FLD("reduce"), FLD("inputs"),
                      FLD("lines"), FLD("opts"),   FLD("subscribe")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0)
        return rc;
    if ((rc = get_enum(&f[2], "", true, burst_job_kind_name, 3, &s->kind)) != 0)
        return rc;
    if (f[3].v == NULL)
        return missing(&f[3], "");
    if ((rc = dec_fn(&f[3], lim, &s->fn)) != 0)
        return rc;
    if (s->kind == BURST_KIND_MAP_REDUCE) {
        if (f[4].v == NULL)
            return dec_fail(BURST_EBADFIELD, "a map_reduce job needs field 'reduce'");
        if ((rc = dec_fn(&f[4], lim, &s->reduce)) != 0)
            return rc;
    } else if (f[4].v != NULL) {
        return dec_fail(BURST_EBADFIELD,
                        "field 'reduce' is only allowed in map_reduce jobs");
    }

    if (f[5].v != NULL && f[6].v != NULL)
        return dec_fail(BURST_EBADFIELD, "give either 'inputs' or 'lines', not both");
    if (f[5].v != NULL) {
        const msgpack_object *a = get_array(&f[5], "", &rc);
        if (rc != 0)
            return rc;
        if ((rc = dec_inputs(a, lim, p, s)) != 0)
            return rc;
    } else if (f[6].v != NULL) {
        if ((rc = get_bytes(&f[6], "", true, NO_LIMIT, true, &s->blob)) != 0)
            return rc;
        if (s->blob.len == 0)
            return dec_fail(BURST_EBADFIELD,
                            "a job needs at least one input (field 'lines' is empty)");
        if ((rc = count_lines(s->blob, lim, &s->ninputs)) != 0)
            return rc;
        s->input_mode = PROTO_INPUT_LINES;
    } else {
        return dec_fail(BURST_EBADFIELD, "missing field 'inputs' (or 'lines')");
    }
    if (s->kind == BURST_KIND_CALL && s->ninputs != 1)
        return dec_fail(BURST_EBADFIELD, "a call job takes exactly one input, not %u",
                        s->ninputs);

    const msgpack_object *opts = get_map(&f[7], "", &rc);
    if (rc != 0)
        return rc;
    if ((rc = dec_opts(opts, lim, &s->opts)) != 0)
        return rc;
    return get_bool(&f[8], "", false, &s->subscribe);
}

static int
dec_hello(const msgpack_object *m, const struct proto_limits *lim, struct proto_hello *h)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("version"), FLD("client")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u32(&f[2], "", true, 0, UINT32_MAX, &h->version)) != 0 ||
        (rc = get_str(&f[3], "", false, lim->max_string, &h->client)) != 0)
        return rc;
    if (h->version != PROTO_VERSION)
        return dec_fail(
            BURST_EVERSION,
            "protocol version %u is not supported; this side speaks version %d",
            h->version, PROTO_VERSION);
    return 0;
}

static int
dec_put_fn(const msgpack_object *m, const struct proto_limits *lim,
           struct proto_put_fn *pf)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("hash"), FLD("data")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_str(&f[2], "", true, NO_LIMIT, &pf->hash)) != 0)
        return rc;
    if (!is_hash(pf->hash))
        return dec_fail(BURST_EBADFIELD,
                        "field 'hash' must be a SHA-256 as 64 lowercase hex digits");
    if ((rc = get_bytes(&f[3], "", true, lim->max_fn_size, false, &pf->data)) != 0)
        return rc;
    if (pf->data.len == 0)
        return dec_fail(BURST_EBADFIELD, "field 'data' must not be empty");
    return 0;
}

/* status, cancel, unsubscribe: {"job": uint} */
static int
dec_job_ref(const msgpack_object *m, struct proto_job_ref *j)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("job")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0)
        return rc;
    return get_u64(&f[2], "", true, &j->job);
}

static int
dec_jobs(const msgpack_object *m, struct proto_jobs *j)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("all")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0)
        return rc;
    return get_bool(&f[2], "", false, &j->all);
}

static int
dec_tasks(const msgpack_object *m, const struct proto_limits *lim, struct proto_tasks *t)
{
    struct fld f[] = {FLD("op"),    FLD("id"),     FLD("job"),
                      FLD("state"), FLD("offset"), FLD("limit")};
    int rc;
    t->state = -1;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[2], "", true, &t->job)) != 0 ||
        (rc = get_enum(&f[3], "", false, burst_task_state_name, BURST_TASK_NSTATES,
                       &t->state)) != 0 ||
        (rc = get_u32(&f[4], "", false, 0, UINT32_MAX, &t->offset)) != 0 ||
        (rc = get_u32(&f[5], "", false, 0, UINT32_MAX, &t->limit)) != 0)
        return rc;
    /* page_tasks is also the maximum: asking for more is not an error, the
     * reply just says "more". */
    if (t->limit > lim->page_tasks)
        t->limit = lim->page_tasks;
    return 0;
}

static int
dec_results(const msgpack_object *m, const struct proto_limits *lim,
            struct proto_results *r)
{
    struct fld f[] = {FLD("op"),   FLD("id"),        FLD("job"),
                      FLD("from"), FLD("max_bytes"), FLD("final")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[2], "", true, &r->job)) != 0 ||
        (rc = get_u32(&f[3], "", false, 0, UINT32_MAX, &r->from)) != 0 ||
        (rc = get_u32(&f[4], "", false, 0, UINT32_MAX, &r->max_bytes)) != 0 ||
        (rc = get_bool(&f[5], "", false, &r->final)) != 0)
        return rc;
    if (r->max_bytes > lim->page_bytes)
        r->max_bytes = lim->page_bytes;
    return 0;
}

static int
dec_logs(const msgpack_object *m, struct proto_logs *l)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("job"), FLD("task")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[2], "", true, &l->job)) != 0)
        return rc;
    return get_u32(&f[3], "", true, 0, UINT32_MAX, &l->task);
}

static int
dec_quota(const msgpack_object *m, struct proto_quota *q)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("set")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u32(&f[2], "", false, 1, UINT32_MAX, &q->set)) != 0)
        return rc;
    q->has_set = f[2].v != NULL;
    return 0;
}

static int
dec_subscribe(const msgpack_object *m, struct proto_subscribe *s)
{
    struct fld f[] = {FLD("op"), FLD("id"), FLD("job"), FLD("from_seq")};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[2], "", true, &s->job)) != 0)
        return rc;
    return get_u64(&f[3], "", false, &s->from_seq);
}

/* Reads "op" and "id" first (the caller wants the id for its error reply
 * whatever else is wrong), then the op's own fields. */
static int
dec_request(const msgpack_object *m, const struct proto_limits *lim, struct req_priv *p,
            struct proto_request *req, uint64_t *id_out)
{
    const msgpack_object *op = NULL, *id = NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size != 2 ||
            kv->val.type == MSGPACK_OBJECT_NIL)
            continue;
        if (op == NULL && memcmp(kv->key.via.str.ptr, "op", 2) == 0)
            op = &kv->val;
        else if (id == NULL && memcmp(kv->key.via.str.ptr, "id", 2) == 0)
            id = &kv->val;
    }
    if (id != NULL && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *id_out = req->id = id->via.u64;
    if (op == NULL)
        return dec_fail(BURST_EPROTO, "missing field 'op'");
    if (op->type != MSGPACK_OBJECT_STR)
        return dec_fail(BURST_EPROTO, "field 'op' must be a string");
    if (id == NULL)
        return dec_fail(BURST_EPROTO, "missing field 'id'");
    if (id->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return dec_fail(BURST_EPROTO, "field 'id' must be a non-negative integer");
    int o = op_from_name(op->via.str.ptr, op->via.str.size);
    if (o == 0) {
        char name[48];
        return dec_fail(BURST_EUNKNOWNOP, "unknown op '%s'",
                        sanitize(name, op->via.str.ptr, op->via.str.size));
    }
    req->op = (enum proto_op)o;
    switch (req->op) {
    case PROTO_OP_HELLO:
        return dec_hello(m, lim, &req->u.hello);
    case PROTO_OP_SUBMIT:
        return dec_submit(m, lim, p, &req->u.submit);
    case PROTO_OP_PUT_FN:
        return dec_put_fn(m, lim, &req->u.put_fn);
    case PROTO_OP_STATUS:
    case PROTO_OP_CANCEL:
    case PROTO_OP_UNSUBSCRIBE:
        return dec_job_ref(m, &req->u.job);
    case PROTO_OP_JOBS:
        return dec_jobs(m, &req->u.jobs);
    case PROTO_OP_TASKS:
        return dec_tasks(m, lim, &req->u.tasks);
    case PROTO_OP_RESULTS:
        return dec_results(m, lim, &req->u.results);
    case PROTO_OP_LOGS:
        return dec_logs(m, &req->u.logs);
    case PROTO_OP_QUOTA:
        return dec_quota(m, &req->u.quota);
    case PROTO_OP_SUBSCRIBE:
        return dec_subscribe(m, &req->u.subscribe);
    case PROTO_OP_COUNT_:
        break;
    }
    return dec_fail(BURST_EINTERNAL, "op table out of step");
}

int
proto_decode_request(const char *payload, size_t len, const struct proto_limits *lim,
                     struct proto_request *req, struct proto_error *err, uint64_t *id_out)
{
    struct proto_limits deflim;
    uint64_t id_dummy;
    struct proto_error err_dummy;
    if (lim == NULL) {
        proto_limits_default(&deflim);
        lim = &deflim;
    }
    if (id_out == NULL)
        id_out = &id_dummy;
    if (err == NULL)
        err = &err_dummy;
    memset(req, 0, sizeof(*req));
    *id_out = 0;

    /* Find the id even in a message that fails the checks below. */
    struct head h;
    scan_head(payload, len, false, &h);
    if (h.id_ok)
        *id_out = h.id;

    int rc;
    struct req_priv *p = NULL;
    if (len > lim->max_frame) {
        rc = dec_fail(BURST_ETOOBIG, "a message of %zu bytes exceeds the limit of %u",
                      len, lim->max_frame);
        goto fail;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        rc = dec_fail(-ENOMEM, "out of memory while decoding a message");
        goto fail;
    }
    msgpack_unpacked_init(&p->up);
    req->priv_ = p; /* proto_request_free releases p from here on */
    if ((rc = unpack_payload(payload, len, depth_limit(lim), &p->up)) != 0)
        goto fail_req;
    if ((rc = dec_request(&p->up.data, lim, p, req, id_out)) != 0)
        goto fail_req;
    return 0;

fail_req:
    proto_request_free(req);
    memset(req, 0, sizeof(*req));
fail:
    err->code = rc;
    err->message.ptr = dec_msg;
    err->message.len = strlen(dec_msg);
    return rc;
}

void
proto_request_free(struct proto_request *req)
{
    struct req_priv *p = req->priv_;
    if (p == NULL)
        return;
    if (req->op == PROTO_OP_SUBMIT && req->u.submit.inputs == p->inputs) {
        req->u.submit.inputs = NULL;
        req->u.submit.ninputs = 0;
    }
    free(p->inputs);
    msgpack_unpacked_destroy(&p->up);
    free(p);
    req->priv_ = NULL;
}

/* ---- replies ------------------------------------------------------------ */

/* What proto_reply.priv_ points at. */
struct rep_priv {
    msgpack_unpacked up; /* owned */
    void *array;         /* owned: jobs, tasks or results items */
};

static const char *const limit_names[] = {
    "max_frame",   "max_depth",     "max_string",  "max_input",  "max_tasks",
    "max_retries", "max_chunksize", "max_fn_size", "page_tasks", "page_bytes",
    "max_subscriptions",
};

/* The limits in the order of limit_names. */
static uint32_t *
limit_field(struct proto_limits *l, size_t i)
{
    uint32_t *f[] = {&l->max_frame,  &l->max_depth,   &l->max_string,    &l->max_input,
                     &l->max_tasks,  &l->max_retries, &l->max_chunksize, &l->max_fn_size,
                     &l->page_tasks, &l->page_bytes, &l->max_subscriptions};
    return f[i];
}

static int
dec_limits(const msgpack_object *m, struct proto_limits *l)
{
    proto_limits_default(l);
    if (m == NULL)
        return 0;
    struct fld f[NELEM(limit_names)];
    for (size_t i = 0; i < NELEM(limit_names); i++)
        f[i] = (struct fld){limit_names[i], strlen(limit_names[i]), NULL, false};
    int rc = fields_get(m, "limits", f, NELEM(f));
    for (size_t i = 0; rc == 0 && i < NELEM(f); i++)
        rc = get_u32(&f[i], "limits", false, 0, UINT32_MAX, limit_field(l, i));
    return rc;
}

static int
dec_job_info(const msgpack_object *o, const char *where, struct proto_job_info *j)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return dec_fail(BURST_EPROTO, "'%s' must be a map", where);
    struct fld f[] = {FLD("id"),         FLD("owner_uid"),  FLD("kind"),
                      FLD("state"),      FLD("total"),      FLD("counts"),
                      FLD("created_ms"), FLD("started_ms"), FLD("finished_ms"),
                      FLD("backend"),    FLD("name"),       FLD("function"),
                      FLD("error"),      FLD("last_seq")};
    int rc;
    if ((rc = fields_get(o, where, f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[0], where, true, &j->id)) != 0 ||
        (rc = get_u32(&f[1], where, false, 0, UINT32_MAX, &j->owner_uid)) != 0 ||
        (rc = get_enum(&f[2], where, true, burst_job_kind_name, 3, &j->kind)) != 0 ||
        (rc = get_enum(&f[3], where, true, burst_job_state_name, BURST_JOB_NSTATES,
                       &j->state)) != 0 ||
        (rc = get_u32(&f[4], where, false, 0, UINT32_MAX, &j->total)) != 0 ||
        (rc = get_i64(&f[6], where, false, INT64_MIN, INT64_MAX, &j->created_ms)) != 0 ||
        (rc = get_i64(&f[7], where, false, INT64_MIN, INT64_MAX, &j->started_ms)) != 0 ||
        (rc = get_i64(&f[8], where, false, INT64_MIN, INT64_MAX, &j->finished_ms)) != 0 ||
        (rc = get_str(&f[9], where, false, NO_LIMIT, &j->backend)) != 0 ||
        (rc = get_str(&f[10], where, false, NO_LIMIT, &j->name)) != 0 ||
        (rc = get_str(&f[11], where, false, NO_LIMIT, &j->function)) != 0 ||
        (rc = get_str(&f[12], where, false, NO_LIMIT, &j->error)) != 0 ||
        (rc = get_u64(&f[13], where, false, &j->last_seq)) != 0)
        return rc;
    const msgpack_object *counts = get_map(&f[5], where, &rc);
    if (rc != 0 || counts == NULL)
        return rc;
    /* A newer daemon may count states this client does not know: skip them. */
    for (uint32_t i = 0; i < counts->via.map.size; i++) {
        const msgpack_object_kv *kv = &counts->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR ||
            kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
            kv->val.via.u64 > UINT32_MAX)
            return dec_fail(BURST_EPROTO, "'counts' must map state names to counts");
        int s = burst_task_state_from_name(kv->key.via.str.ptr, kv->key.via.str.size);
        if (s >= 0)
            j->counts[s] = (uint32_t)kv->val.via.u64;
    }
    return 0;
}

static int
dec_task_info(const msgpack_object *o, struct proto_task_info *t)
{
    const char *where = "tasks[]";
    if (o->type != MSGPACK_OBJECT_MAP)
        return dec_fail(BURST_EPROTO, "an element of 'tasks' must be a map");
    struct fld f[] = {FLD("index"),       FLD("state"),  FLD("attempts"),
                      FLD("exit_status"), FLD("signal"), FLD("started_ms"),
                      FLD("finished_ms"), FLD("reason")};
    int rc;
    t->exit_status = -1;
    if ((rc = fields_get(o, where, f, NELEM(f))) != 0 ||
        (rc = get_u32(&f[0], where, true, 0, UINT32_MAX, &t->index)) != 0 ||
        (rc = get_enum(&f[1], where, true, burst_task_state_name, BURST_TASK_NSTATES,
                       &t->state)) != 0 ||
        (rc = get_u32(&f[2], where, false, 0, UINT32_MAX, &t->attempts)) != 0 ||
        (rc = get_i32(&f[3], where, false, &t->exit_status)) != 0 ||
        (rc = get_i32(&f[4], where, false, &t->signal)) != 0 ||
        (rc = get_i64(&f[5], where, false, INT64_MIN, INT64_MAX, &t->started_ms)) != 0 ||
        (rc = get_i64(&f[6], where, false, INT64_MIN, INT64_MAX, &t->finished_ms)) != 0)
        return rc;
    return get_str(&f[7], where, false, NO_LIMIT, &t->reason);
}

/* Allocates an array of n elements of size sz for a reply (n may be 0). */
static void *
rep_array(struct rep_priv *p, uint32_t n, size_t sz)
{
    p->array = calloc(n > 0 ? n : 1, sz);
    return p->array;
}

static int
dec_reply_ok(const msgpack_object *m, struct rep_priv *p, struct proto_reply *rep)
{
    int rc;
    switch (rep->op) {
    case PROTO_OP_HELLO: {
        struct proto_hello_reply *h = &rep->u.hello;
        struct fld f[] = {FLD("version"), FLD("server"), FLD("uid"),
                          FLD("admin"),   FLD("limits"), FLD("revision")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
            (rc = get_u32(&f[0], "", true, 0, UINT32_MAX, &h->version)) != 0 ||
            (rc = get_str(&f[1], "", false, NO_LIMIT, &h->server)) != 0 ||
            (rc = get_u32(&f[2], "", false, 0, UINT32_MAX, &h->uid)) != 0 ||
            (rc = get_bool(&f[3], "", false, &h->admin)) != 0 ||
            (rc = get_u32(&f[5], "", false, 0, UINT32_MAX, &h->revision)) != 0)
            return rc;
        const msgpack_object *l = get_map(&f[4], "", &rc);
        return rc != 0 ? rc : dec_limits(l, &h->limits);
    }
    case PROTO_OP_SUBMIT: {
        struct fld f[] = {FLD("job"), FLD("total")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
            (rc = get_u64(&f[0], "", true, &rep->u.submit.job)) != 0)
            return rc;
        return get_u32(&f[1], "", false, 0, UINT32_MAX, &rep->u.submit.total);
    }
    case PROTO_OP_STATUS: {
        struct fld f[] = {FLD("job")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0)
            return rc;
        if (f[0].v == NULL)
            return missing(&f[0], "");
        return dec_job_info(f[0].v, "job", &rep->u.status);
    }
    case PROTO_OP_JOBS: {
        struct fld f[] = {FLD("jobs")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0)
            return rc;
        const msgpack_object *a = get_array(&f[0], "", &rc);
        if (rc != 0)
            return rc;
        uint32_t n = a != NULL ? a->via.array.size : 0;
        struct proto_job_info *jobs = rep_array(p, n, sizeof(*jobs));
        if (jobs == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
            if ((rc = dec_job_info(&a->via.array.ptr[i], "jobs[]", &jobs[i])) != 0)
                return rc;
        rep->u.jobs.jobs = jobs;
        rep->u.jobs.n = n;
        return 0;
    }
    case PROTO_OP_TASKS: {
        struct fld f[] = {FLD("tasks"), FLD("more")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
            (rc = get_bool(&f[1], "", false, &rep->u.tasks.more)) != 0)
            return rc;
        const msgpack_object *a = get_array(&f[0], "", &rc);
        if (rc != 0)
            return rc;
        uint32_t n = a != NULL ? a->via.array.size : 0;
        struct proto_task_info *tasks = rep_array(p, n, sizeof(*tasks));
        if (tasks == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
            if ((rc = dec_task_info(&a->via.array.ptr[i], &tasks[i])) != 0)
                return rc;
        rep->u.tasks.tasks = tasks;
        rep->u.tasks.n = n;
        return 0;
    }
    case PROTO_OP_RESULTS: {
        struct fld f[] = {FLD("items"), FLD("more")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
            (rc = get_bool(&f[1], "", false, &rep->u.results.more)) != 0)
            return rc;
        const msgpack_object *a = get_array(&f[0], "", &rc);
        if (rc != 0)
            return rc;
        uint32_t n = a != NULL ? a->via.array.size : 0;
        struct proto_result_item *items = rep_array(p, n, sizeof(*items));
        if (items == NULL)
            return -ENOMEM;
        for (uint32_t i = 0; i < n; i++) {
            const msgpack_object *it = &a->via.array.ptr[i];
            /* [index, bin | nil] */
            if (it->type != MSGPACK_OBJECT_ARRAY || it->via.array.size != 2 ||
                it->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                it->via.array.ptr[0].via.u64 > UINT32_MAX)
                return dec_fail(BURST_EPROTO, "'items[%u]' must be [index, data]", i);
            const msgpack_object *d = &it->via.array.ptr[1];
            items[i].index = (uint32_t)it->via.array.ptr[0].via.u64;
            if (d->type == MSGPACK_OBJECT_BIN) {
                items[i].has_data = true;
                items[i].data.ptr = d->via.bin.ptr;
                items[i].data.len = d->via.bin.size;
            } else if (d->type == MSGPACK_OBJECT_STR) {
                items[i].has_data = true;
                items[i].data.ptr = d->via.str.ptr;
                items[i].data.len = d->via.str.size;
            } else if (d->type != MSGPACK_OBJECT_NIL) {
                return dec_fail(BURST_EPROTO, "'items[%u]' data must be bin or nil", i);
            }
        }
        rep->u.results.items = items;
        rep->u.results.n = n;
        return 0;
    }
    case PROTO_OP_LOGS: {
        struct proto_logs_reply *l = &rep->u.logs;
        struct fld f[] = {FLD("attempts"), FLD("reason"), FLD("log")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
            (rc = get_u32(&f[0], "", false, 0, UINT32_MAX, &l->attempts)) != 0 ||
            (rc = get_str(&f[1], "", false, NO_LIMIT, &l->reason)) != 0)
            return rc;
        return get_bytes(&f[2], "", false, NO_LIMIT, true, &l->log);
    }
    case PROTO_OP_QUOTA: {
        struct fld f[] = {FLD("quota"), FLD("in_use")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
            (rc = get_u32(&f[0], "", true, 0, UINT32_MAX, &rep->u.quota.quota)) != 0)
            return rc;
        return get_u32(&f[1], "", false, 0, UINT32_MAX, &rep->u.quota.in_use);
    }
    case PROTO_OP_CANCEL: {
        struct fld f[] = {FLD("state")};
        if ((rc = fields_get(m, "", f, NELEM(f))) != 0)
            return rc;
        return get_enum(&f[0], "", true, burst_job_state_name, BURST_JOB_NSTATES,
                        &rep->u.cancel.state);
    }
    case PROTO_OP_PUT_FN:
    case PROTO_OP_SUBSCRIBE:
    case PROTO_OP_UNSUBSCRIBE:
        return 0;
    case PROTO_OP_COUNT_:
        break;
    }
    return -EINVAL;
}

int
proto_decode_reply(const char *payload, size_t len, enum proto_op op,
                   const struct proto_limits *lim, struct proto_reply *rep)
{
    memset(rep, 0, sizeof(*rep));
    rep->op = op;
    if (proto_op_name(op) == NULL)
        return -EINVAL;
    struct rep_priv *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    msgpack_unpacked_init(&p->up);
    rep->priv_ = p; /* proto_reply_free releases p from here on */
    int rc = unpack_payload(payload, len, depth_limit(lim), &p->up);
    if (rc != 0)
        goto fail;

    const msgpack_object *m = &p->up.data;
    struct fld f[] = {FLD("re"), FLD("ok"), FLD("error")};
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[0], "", true, &rep->re)) != 0 ||
        (rc = get_bool(&f[1], "", true, &rep->ok)) != 0)
        goto fail;
    if (rep->ok) {
        rc = dec_reply_ok(m, p, rep);
    } else {
        const msgpack_object *e = get_map(&f[2], "", &rc);
        if (rc == 0 && e == NULL)
            rc = missing(&f[2], "");
        if (rc != 0)
            goto fail;
        struct fld ef[] = {FLD("code"), FLD("message")};
        struct proto_str code = {NULL, 0};
        if ((rc = fields_get(e, "error", ef, NELEM(ef))) != 0 ||
            (rc = get_str(&ef[0], "error", true, NO_LIMIT, &code)) != 0 ||
            (rc = get_str(&ef[1], "error", false, NO_LIMIT, &rep->u.error.message)) != 0)
            goto fail;
        /* An unknown name (a newer daemon) reads as "internal". */
        rep->u.error.code = burst_error_from_name(code.ptr, code.len);
    }
    if (rc != 0)
        goto fail;
    return 0;

fail:
    proto_reply_free(rep);
    memset(rep, 0, sizeof(*rep));
    rep->op = op;
    /* The daemon sent something we cannot read: to the client that is one
     * protocol failure, whatever the field. */
    return rc == -ENOMEM ? rc : BURST_EPROTO;
}

void
proto_reply_free(struct proto_reply *rep)
{
    struct rep_priv *p = rep->priv_;
    if (p == NULL)
        return;
    free(p->array);
    msgpack_unpacked_destroy(&p->up);
    free(p);
    rep->priv_ = NULL;
    switch (rep->op) {
    case PROTO_OP_JOBS:
        rep->u.jobs.jobs = NULL;
        rep->u.jobs.n = 0;
        break;
    case PROTO_OP_TASKS:
        rep->u.tasks.tasks = NULL;
        rep->u.tasks.n = 0;
        break;
    case PROTO_OP_RESULTS:
        rep->u.results.items = NULL;
        rep->u.results.n = 0;
        break;
    default:
        break;
    }
}

/* ---- events ------------------------------------------------------------- */

struct ev_priv {
    msgpack_unpacked up;               /* owned */
    struct proto_event_item *items;    /* owned */
    struct proto_task_change *changes; /* owned: every item's tasks, in order */
};

/* The "tasks" value of an item, if it has one that is an array. */
static const msgpack_object *
event_item_tasks(const msgpack_object *item)
{
    if (item->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < item->via.map.size; i++) {
        const msgpack_object_kv *kv = &item->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 5 &&
            memcmp(kv->key.via.str.ptr, "tasks", 5) == 0 &&
            kv->val.type == MSGPACK_OBJECT_ARRAY)
            return &kv->val;
    }
    return NULL;
}

static int
dec_event_item(const msgpack_object *o, struct proto_event_item *it,
               struct proto_task_change *changes)
{
    const char *where = "items[]";
    if (o->type != MSGPACK_OBJECT_MAP)
        return dec_fail(BURST_EPROTO, "an event item must be a map");
    struct fld f[] = {FLD("seq"), FLD("type"), FLD("state"), FLD("tasks")};
    struct proto_str type = {NULL, 0};
    int rc;
    if ((rc = fields_get(o, where, f, NELEM(f))) != 0 ||
        (rc = get_u64(&f[0], where, true, &it->seq)) != 0 ||
        (rc = get_str(&f[1], where, true, NO_LIMIT, &type)) != 0)
        return rc;
    if (proto_str_eq(type, "job")) {
        it->type = BURST_EV_JOB;
        return get_enum(&f[2], where, true, burst_job_state_name, BURST_JOB_NSTATES,
                        &it->job_state);
    }
    if (!proto_str_eq(type, "tasks"))
        return dec_fail(BURST_EPROTO, "unknown event item type");
    it->type = BURST_EV_TASK;
    const msgpack_object *a = get_array(&f[3], where, &rc);
    if (rc != 0)
        return rc;
    if (a == NULL)
        return missing(&f[3], where);
    it->tasks = changes;
    it->ntasks = a->via.array.size;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        /* [index, state, attempts] */
        const msgpack_object *c = &a->via.array.ptr[i];
        if (c->type != MSGPACK_OBJECT_ARRAY || c->via.array.size != 3)
            return dec_fail(BURST_EPROTO,
                            "a task change must be [index, state, attempts]");
        const msgpack_object *e = c->via.array.ptr;
        if (e[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || e[0].via.u64 > UINT32_MAX ||
            e[1].type != MSGPACK_OBJECT_STR ||
            e[2].type != MSGPACK_OBJECT_POSITIVE_INTEGER || e[2].via.u64 > UINT32_MAX)
            return dec_fail(BURST_EPROTO,
                            "a task change must be [index, state, attempts]");
        int s = burst_task_state_from_name(e[1].via.str.ptr, e[1].via.str.size);
        if (s < 0)
            return dec_fail(BURST_EPROTO, "unknown task state in an event");
        changes[i].index = (uint32_t)e[0].via.u64;
        changes[i].state = s;
        changes[i].attempts = (uint32_t)e[2].via.u64;
    }
    return 0;
}

static int
dec_events(const msgpack_object *m, struct ev_priv *p, struct proto_events *ev)
{
    struct fld f[] = {FLD("ev"), FLD("job"), FLD("items")};
    struct proto_str kind = {NULL, 0};
    int rc;
    if ((rc = fields_get(m, "", f, NELEM(f))) != 0 ||
        (rc = get_str(&f[0], "", true, NO_LIMIT, &kind)) != 0)
        return rc;
    /* Other event frames may come from a newer daemon; the caller may skip. */
    if (!proto_str_eq(kind, "events"))
        return dec_fail(BURST_EUNKNOWNOP, "unknown event frame");
    if ((rc = get_u64(&f[1], "", true, &ev->job)) != 0)
        return rc;
    const msgpack_object *a = get_array(&f[2], "", &rc);
    if (rc != 0)
        return rc;
    if (a == NULL)
        return missing(&f[2], "");

    /* One block for all task changes; count them first. */
    size_t nchanges = 0;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        const msgpack_object *t = event_item_tasks(&a->via.array.ptr[i]);
        if (t != NULL)
            nchanges += t->via.array.size;
    }
    p->items = calloc(a->via.array.size > 0 ? a->via.array.size : 1, sizeof(*p->items));
    p->changes = calloc(nchanges > 0 ? nchanges : 1, sizeof(*p->changes));
    if (p->items == NULL || p->changes == NULL)
        return -ENOMEM;
    size_t used = 0;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        if ((rc = dec_event_item(&a->via.array.ptr[i], &p->items[i],
                                 p->changes + used)) != 0)
            return rc;
        used += p->items[i].ntasks;
    }
    ev->items = p->items;
    ev->nitems = a->via.array.size;
    return 0;
}

int
proto_decode_events(const char *payload, size_t len, const struct proto_limits *lim,
                    struct proto_events *ev, void **priv)
{
    memset(ev, 0, sizeof(*ev));
    *priv = NULL;
    struct ev_priv *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    msgpack_unpacked_init(&p->up);
    int rc = unpack_payload(payload, len, depth_limit(lim), &p->up);
    if (rc == 0)
        rc = dec_events(&p->up.data, p, ev);
    if (rc != 0) {
        proto_events_free(p);
        memset(ev, 0, sizeof(*ev));
        return rc == -ENOMEM || rc == BURST_EUNKNOWNOP ? rc : BURST_EPROTO;
    }
    *priv = p;
    return 0;
}

void
proto_events_free(void *priv)
{
    struct ev_priv *p = priv;
    if (p == NULL)
        return;
    free(p->items);
    free(p->changes);
    msgpack_unpacked_destroy(&p->up);
    free(p);
}

/* ---- encoding ----------------------------------------------------------- */

/* One frame being packed into a proto_buf. */
struct enc {
    msgpack_packer pk;
    struct proto_buf *b; /* borrowed */
    size_t start;        /* offset of this frame's header in b */
    int err;             /* sticky: the first failure, 0 if none */
};

/* msgpack_packer's write callback.  After a failure it refuses everything,
 * so the pk_* helpers need not check each call; enc_end reports it. */
static int
enc_write(void *data, const char *buf, size_t len)
{
    struct enc *e = data;
    if (e->err != 0)
        return -1;
    if (len == 0)
        return 0;
    struct proto_buf *b = e->b;
    if (len > (size_t)PROTO_FRAME_HARD_MAX + FRAME_HEADER_SIZE - (b->len - e->start)) {
        e->err = BURST_ETOOBIG;
        return -1;
    }
    if (buf_reserve(b, len) != 0) {
        e->err = -ENOMEM;
        return -1;
    }
    memcpy(b->data + b->len, buf, len);
    b->len += len;
    return 0;
}

static void
enc_begin(struct enc *e, struct proto_buf *out)
{
    static const char header[FRAME_HEADER_SIZE];
    e->b = out;
    e->start = out->len;
    e->err = 0;
    msgpack_packer_init(&e->pk, e, enc_write);
    enc_write(e, header, sizeof(header));
}

/* Fills in the frame header, or on failure drops the partial frame. */
static int
enc_end(struct enc *e)
{
    if (e->err != 0) {
        e->b->len = e->start;
        return e->err;
    }
    size_t n = e->b->len - e->start - FRAME_HEADER_SIZE;
    frame_put_header(e->b->data + e->start, (uint32_t)n);
    return 0;
}

static void
enc_fail(struct enc *e, int code)
{
    if (e->err == 0)
        e->err = code;
}

/* msgpack-c takes lengths as size_t but stores 32 bits: refuse before it
 * could write a wrong header. */
static bool
enc_len_ok(struct enc *e, size_t len)
{
    if (len > PROTO_FRAME_HARD_MAX) {
        enc_fail(e, BURST_ETOOBIG);
        return false;
    }
    return true;
}

static void
pk_key(struct enc *e, const char *k)
{
    msgpack_pack_str_with_body(&e->pk, k, strlen(k));
}

static void
pk_cstr(struct enc *e, const char *s)
{
    if (s == NULL) {
        enc_fail(e, -EINVAL); /* an enum value without a name */
        return;
    }
    msgpack_pack_str_with_body(&e->pk, s, strlen(s));
}

static void
pk_str(struct enc *e, struct proto_str s)
{
    if (enc_len_ok(e, s.len))
        msgpack_pack_str_with_body(&e->pk, s.ptr, s.len);
}

static void
pk_bin(struct enc *e, struct proto_str s)
{
    if (enc_len_ok(e, s.len))
        msgpack_pack_bin_with_body(&e->pk, s.ptr, s.len);
}

static void
pk_uint(struct enc *e, uint64_t v)
{
    msgpack_pack_uint64(&e->pk, v);
}

static void
pk_int(struct enc *e, int64_t v)
{
    msgpack_pack_int64(&e->pk, v);
}

static void
pk_bool(struct enc *e, bool v)
{
    if (v)
        msgpack_pack_true(&e->pk);
    else
        msgpack_pack_false(&e->pk);
}

static void
pk_map(struct enc *e, size_t n)
{
    msgpack_pack_map(&e->pk, n);
}

static void
pk_array(struct enc *e, size_t n)
{
    if (enc_len_ok(e, n))
        msgpack_pack_array(&e->pk, n);
}

/* The usual key/value pairs. */
static void
kv_uint(struct enc *e, const char *k, uint64_t v)
{
    pk_key(e, k);
    pk_uint(e, v);
}

static void
kv_int(struct enc *e, const char *k, int64_t v)
{
    pk_key(e, k);
    pk_int(e, v);
}

static void
kv_bool(struct enc *e, const char *k, bool v)
{
    pk_key(e, k);
    pk_bool(e, v);
}

static void
kv_str(struct enc *e, const char *k, struct proto_str v)
{
    pk_key(e, k);
    pk_str(e, v);
}

static void
kv_cstr(struct enc *e, const char *k, const char *v)
{
    pk_key(e, k);
    pk_cstr(e, v);
}

static void
kv_bin(struct enc *e, const char *k, struct proto_str v)
{
    pk_key(e, k);
    pk_bin(e, v);
}

static void
enc_fn(struct enc *e, const char *k, const struct proto_fn *fn)
{
    pk_key(e, k);
    if (fn->kind == BURST_FN_EXEC) {
        pk_map(e, 2);
        kv_cstr(e, "kind", "exec");
        kv_str(e, "cmd", fn->cmd);
    } else if (fn->kind == BURST_FN_SO) {
        pk_map(e, 3);
        kv_cstr(e, "kind", "so");
        kv_str(e, "hash", fn->hash);
        kv_str(e, "symbol", fn->symbol);
    } else {
        enc_fail(e, -EINVAL);
    }
}

static void
enc_opts(struct enc *e, const struct proto_opts *o)
{
    pk_key(e, "opts");
    pk_map(e, 5 + (o->backend.ptr != NULL) + (o->name.ptr != NULL));
    kv_uint(e, "chunksize", o->chunksize);
    kv_uint(e, "retries", o->retries);
    kv_uint(e, "timeout_ms", o->timeout_ms);
    kv_uint(e, "memory_mb", o->memory_mb);
    kv_bool(e, "cancel_on_disconnect", o->cancel_on_disconnect);
    if (o->backend.ptr != NULL)
        kv_str(e, "backend", o->backend);
    if (o->name.ptr != NULL)
        kv_str(e, "name", o->name);
}

static void
enc_submit(struct enc *e, const struct proto_submit *s)
{
    bool mr = s->kind == BURST_KIND_MAP_REDUCE;
    kv_cstr(e, "kind", burst_job_kind_name(s->kind));
    enc_fn(e, "fn", &s->fn);
    if (mr)
        enc_fn(e, "reduce", &s->reduce);
    if (s->input_mode == PROTO_INPUT_LINES) {
        kv_bin(e, "lines", s->blob);
    } else {
        if (s->ninputs > 0 && s->inputs == NULL) {
            enc_fail(e, -EINVAL);
            return;
        }
        pk_key(e, "inputs");
        pk_array(e, s->ninputs);
        for (uint32_t i = 0; i < s->ninputs && e->err == 0; i++)
            pk_bin(e, s->inputs[i]);
    }
    enc_opts(e, &s->opts);
    kv_bool(e, "subscribe", s->subscribe);
}

/* The number of keys each request has besides "op" and "id". */
static size_t
request_nkeys(const struct proto_request *req)
{
    switch (req->op) {
    case PROTO_OP_HELLO:
        return 1 + (req->u.hello.client.ptr != NULL);
    case PROTO_OP_SUBMIT:
        return 5 + (req->u.submit.kind == BURST_KIND_MAP_REDUCE);
    case PROTO_OP_PUT_FN:
        return 2;
    case PROTO_OP_STATUS:
    case PROTO_OP_CANCEL:
    case PROTO_OP_UNSUBSCRIBE:
    case PROTO_OP_JOBS:
        return 1;
    case PROTO_OP_TASKS:
        return 3 + (req->u.tasks.state >= 0);
    case PROTO_OP_RESULTS:
        return 4;
    case PROTO_OP_LOGS:
    case PROTO_OP_SUBSCRIBE:
        return 2;
    case PROTO_OP_QUOTA:
        return req->u.quota.has_set;
    case PROTO_OP_COUNT_:
        break;
    }
    return 0;
}

int
proto_encode_request(struct proto_buf *out, const struct proto_request *req)
{
    const char *name = proto_op_name(req->op);
    if (name == NULL)
        return -EINVAL;
    struct enc e;
    enc_begin(&e, out);
    pk_map(&e, 2 + request_nkeys(req));
    kv_cstr(&e, "op", name);
    kv_uint(&e, "id", req->id);
    switch (req->op) {
    case PROTO_OP_HELLO:
        kv_uint(&e, "version", req->u.hello.version);
        if (req->u.hello.client.ptr != NULL)
            kv_str(&e, "client", req->u.hello.client);
        break;
    case PROTO_OP_SUBMIT:
        enc_submit(&e, &req->u.submit);
        break;
    case PROTO_OP_PUT_FN:
        kv_str(&e, "hash", req->u.put_fn.hash);
        kv_bin(&e, "data", req->u.put_fn.data);
        break;
    case PROTO_OP_STATUS:
    case PROTO_OP_CANCEL:
    case PROTO_OP_UNSUBSCRIBE:
        kv_uint(&e, "job", req->u.job.job);
        break;
    case PROTO_OP_JOBS:
        kv_bool(&e, "all", req->u.jobs.all);
        break;
    case PROTO_OP_TASKS:
        kv_uint(&e, "job", req->u.tasks.job);
        if (req->u.tasks.state >= 0)
            kv_cstr(&e, "state", burst_task_state_name(req->u.tasks.state));
        kv_uint(&e, "offset", req->u.tasks.offset);
        kv_uint(&e, "limit", req->u.tasks.limit);
        break;
    case PROTO_OP_RESULTS:
        kv_uint(&e, "job", req->u.results.job);
        kv_uint(&e, "from", req->u.results.from);
        kv_uint(&e, "max_bytes", req->u.results.max_bytes);
        kv_bool(&e, "final", req->u.results.final);
        break;
    case PROTO_OP_LOGS:
        kv_uint(&e, "job", req->u.logs.job);
        kv_uint(&e, "task", req->u.logs.task);
        break;
    case PROTO_OP_QUOTA:
        if (req->u.quota.has_set)
            kv_uint(&e, "set", req->u.quota.set);
        break;
    case PROTO_OP_SUBSCRIBE:
        kv_uint(&e, "job", req->u.subscribe.job);
        kv_uint(&e, "from_seq", req->u.subscribe.from_seq);
        break;
    case PROTO_OP_COUNT_:
        break;
    }
    return enc_end(&e);
}

static void
enc_job_info(struct enc *e, const struct proto_job_info *j)
{
    pk_map(e, 10 + (j->backend.ptr != NULL) + (j->name.ptr != NULL) +
                  (j->function.ptr != NULL) + (j->error.ptr != NULL));
    kv_uint(e, "id", j->id);
    kv_uint(e, "owner_uid", j->owner_uid);
    kv_cstr(e, "kind", burst_job_kind_name(j->kind));
    kv_cstr(e, "state", burst_job_state_name(j->state));
    kv_uint(e, "total", j->total);
    pk_key(e, "counts");
    pk_map(e, BURST_TASK_NSTATES);
    for (int s = 0; s < BURST_TASK_NSTATES; s++)
        kv_uint(e, burst_task_state_name(s), j->counts[s]);
    kv_int(e, "created_ms", j->created_ms);
    kv_int(e, "started_ms", j->started_ms);
    kv_int(e, "finished_ms", j->finished_ms);
    kv_uint(e, "last_seq", j->last_seq);
    if (j->backend.ptr != NULL)
        kv_str(e, "backend", j->backend);
    if (j->name.ptr != NULL)
        kv_str(e, "name", j->name);
    if (j->function.ptr != NULL)
        kv_str(e, "function", j->function);
    if (j->error.ptr != NULL)
        kv_str(e, "error", j->error);
}

static void
enc_task_info(struct enc *e, const struct proto_task_info *t)
{
    pk_map(e, 7 + (t->reason.ptr != NULL));
    kv_uint(e, "index", t->index);
    kv_cstr(e, "state", burst_task_state_name(t->state));
    kv_uint(e, "attempts", t->attempts);
    kv_int(e, "exit_status", t->exit_status);
    kv_int(e, "signal", t->signal);
    kv_int(e, "started_ms", t->started_ms);
    kv_int(e, "finished_ms", t->finished_ms);
    if (t->reason.ptr != NULL)
        kv_str(e, "reason", t->reason);
}

static void
enc_limits(struct enc *e, const struct proto_limits *l)
{
    struct proto_limits copy = *l;
    pk_key(e, "limits");
    pk_map(e, NELEM(limit_names));
    for (size_t i = 0; i < NELEM(limit_names); i++)
        kv_uint(e, limit_names[i], *limit_field(&copy, i));
}

/* The number of keys each successful reply has besides "re" and "ok". */
static size_t
reply_nkeys(const struct proto_reply *rep)
{
    switch (rep->op) {
    case PROTO_OP_HELLO:
        return 5 + (rep->u.hello.server.ptr != NULL);
    case PROTO_OP_SUBMIT:
    case PROTO_OP_TASKS:
    case PROTO_OP_RESULTS:
    case PROTO_OP_QUOTA:
        return 2;
    case PROTO_OP_STATUS:
    case PROTO_OP_JOBS:
    case PROTO_OP_CANCEL:
        return 1;
    case PROTO_OP_LOGS:
        return 2 + (rep->u.logs.reason.ptr != NULL);
    case PROTO_OP_PUT_FN:
    case PROTO_OP_SUBSCRIBE:
    case PROTO_OP_UNSUBSCRIBE:
    case PROTO_OP_COUNT_:
        break;
    }
    return 0;
}

static int
enc_error(struct proto_buf *out, uint64_t re, int code, const char *msg, size_t len)
{
    struct enc e;
    enc_begin(&e, out);
    pk_map(&e, 3);
    kv_uint(&e, "re", re);
    kv_bool(&e, "ok", false);
    pk_key(&e, "error");
    pk_map(&e, 2);
    kv_cstr(&e, "code", burst_error_name(code));
    pk_key(&e, "message");
    pk_str(&e, (struct proto_str){msg, len});
    return enc_end(&e);
}

int
proto_encode_error(struct proto_buf *out, uint64_t re, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    size_t len = (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
    return enc_error(out, re, code, msg, len);
}

int
proto_encode_reply(struct proto_buf *out, const struct proto_reply *rep)
{
    if (!rep->ok)
        return enc_error(out, rep->re, rep->u.error.code, rep->u.error.message.ptr,
                         rep->u.error.message.len);
    if (proto_op_name(rep->op) == NULL)
        return -EINVAL;
    struct enc e;
    enc_begin(&e, out);
    pk_map(&e, 2 + reply_nkeys(rep));
    kv_uint(&e, "re", rep->re);
    kv_bool(&e, "ok", true);
    switch (rep->op) {
    case PROTO_OP_HELLO:
        kv_uint(&e, "version", rep->u.hello.version);
        kv_uint(&e, "revision", rep->u.hello.revision);
        if (rep->u.hello.server.ptr != NULL)
            kv_str(&e, "server", rep->u.hello.server);
        kv_uint(&e, "uid", rep->u.hello.uid);
        kv_bool(&e, "admin", rep->u.hello.admin);
        enc_limits(&e, &rep->u.hello.limits);
        break;
    case PROTO_OP_SUBMIT:
        kv_uint(&e, "job", rep->u.submit.job);
        kv_uint(&e, "total", rep->u.submit.total);
        break;
    case PROTO_OP_STATUS:
        pk_key(&e, "job");
        enc_job_info(&e, &rep->u.status);
        break;
    case PROTO_OP_JOBS:
        pk_key(&e, "jobs");
        pk_array(&e, rep->u.jobs.n);
        for (uint32_t i = 0; i < rep->u.jobs.n && e.err == 0; i++)
            enc_job_info(&e, &rep->u.jobs.jobs[i]);
        break;
    case PROTO_OP_TASKS:
        pk_key(&e, "tasks");
        pk_array(&e, rep->u.tasks.n);
        for (uint32_t i = 0; i < rep->u.tasks.n && e.err == 0; i++)
            enc_task_info(&e, &rep->u.tasks.tasks[i]);
        kv_bool(&e, "more", rep->u.tasks.more);
        break;
    case PROTO_OP_RESULTS:
        pk_key(&e, "items");
        pk_array(&e, rep->u.results.n);
        for (uint32_t i = 0; i < rep->u.results.n && e.err == 0; i++) {
            const struct proto_result_item *it = &rep->u.results.items[i];
            pk_array(&e, 2);
            pk_uint(&e, it->index);
            if (it->has_data)
                pk_bin(&e, it->data);
            else
                msgpack_pack_nil(&e.pk);
        }
        kv_bool(&e, "more", rep->u.results.more);
        break;
    case PROTO_OP_LOGS:
        kv_uint(&e, "attempts", rep->u.logs.attempts);
        if (rep->u.logs.reason.ptr != NULL)
            kv_str(&e, "reason", rep->u.logs.reason);
        kv_bin(&e, "log", rep->u.logs.log);
        break;
    case PROTO_OP_QUOTA:
        kv_uint(&e, "quota", rep->u.quota.quota);
        kv_uint(&e, "in_use", rep->u.quota.in_use);
        break;
    case PROTO_OP_CANCEL:
        kv_cstr(&e, "state", burst_job_state_name(rep->u.cancel.state));
        break;
    case PROTO_OP_PUT_FN:
    case PROTO_OP_SUBSCRIBE:
    case PROTO_OP_UNSUBSCRIBE:
    case PROTO_OP_COUNT_:
        break;
    }
    return enc_end(&e);
}

int
proto_encode_events(struct proto_buf *out, const struct proto_events *ev)
{
    struct enc e;
    enc_begin(&e, out);
    pk_map(&e, 3);
    kv_cstr(&e, "ev", "events");
    kv_uint(&e, "job", ev->job);
    pk_key(&e, "items");
    pk_array(&e, ev->nitems);
    for (uint32_t i = 0; i < ev->nitems && e.err == 0; i++) {
        const struct proto_event_item *it = &ev->items[i];
        pk_map(&e, 3);
        kv_uint(&e, "seq", it->seq);
        if (it->type == BURST_EV_JOB) {
            kv_cstr(&e, "type", "job");
            kv_cstr(&e, "state", burst_job_state_name(it->job_state));
        } else if (it->type == BURST_EV_TASK) {
            kv_cstr(&e, "type", "tasks");
            pk_key(&e, "tasks");
            pk_array(&e, it->ntasks);
            for (uint32_t k = 0; k < it->ntasks && e.err == 0; k++) {
                pk_array(&e, 3);
                pk_uint(&e, it->tasks[k].index);
                pk_cstr(&e, burst_task_state_name(it->tasks[k].state));
                pk_uint(&e, it->tasks[k].attempts);
            }
        } else {
            enc_fail(&e, -EINVAL);
        }
    }
    return enc_end(&e);
}
