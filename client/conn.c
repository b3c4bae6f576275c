/*
 * client/conn.c - libburst's transport: one blocking Unix-socket connection
 * to burstd.  A synchronous call sends a request with a fresh id and reads
 * frames until the reply carrying that id as "re" arrives.  Events may come
 * in between (the daemon pushes them whenever a subscribed job changes);
 * they are decoded at once, queued, and delivered to subscription callbacks
 * later, by burst_dispatch() or by the library's own wait loops, so a
 * callback never runs in the middle of another call's bookkeeping.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client_internal.h"

/* Bytes asked of the socket per read; frames larger than this simply take
 * several reads. */
#define CONN_READ_CHUNK (64u * 1024u)

int
conn_seterr(burst_client *c, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return code;
}

/* Marks the stream unusable: every later call fails with the same code. */
static int
conn_kill(burst_client *c, int code, const char *why)
{
    if (!c->dead) {
        c->dead = true;
        c->dead_code = code;
        conn_seterr(c, code, "connection to burstd lost: %s", why);
    }
    return c->dead_code;
}

int
conn_open(const char *path, burst_client **out, char *err, size_t errsize)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int rc;

    *out = NULL;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errsize, "socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);

    burst_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errsize, "out of memory");
        return -ENOMEM;
    }
    c->solib_settle_ms = SOLIB_SETTLE_MS;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(err, errsize, "cannot create a socket: %s", strerror(errno));
        rc = BURST_ECONNECT;
        goto fail_free;
    }
    while ((rc = connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 &&
           errno == EINTR)
        ;
    if (rc < 0) {
        snprintf(err, errsize, "cannot connect to %s: %s", path, strerror(errno));
        rc = BURST_ECONNECT;
        goto fail_close;
    }
    /* Until hello tells us the daemon's limits, accept any frame the
     * protocol allows: the daemon is the party we chose to trust. */
    frame_reader_init(&c->rd, PROTO_FRAME_HARD_MAX);
    proto_limits_default(&c->limits);
    proto_limits_default(&c->decode_limits);
    c->decode_limits.max_frame = PROTO_FRAME_HARD_MAX;
    c->decode_limits.max_string = PROTO_FRAME_HARD_MAX;
    c->decode_limits.max_input = PROTO_FRAME_HARD_MAX;
    c->decode_limits.page_bytes = PROTO_FRAME_HARD_MAX;
    c->decode_limits.page_tasks = UINT32_MAX;
    c->decode_limits.max_tasks = UINT32_MAX;
    *out = c; /* ownership passes to the caller */
    return 0;

fail_close:
    close(c->fd);
fail_free:
    free(c);
    return rc;
}

void
conn_free(burst_client *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    frame_reader_free(&c->rd);
    free(c->q);
    free(c->subs);
    free(c->uploaded);
    solib_known_free(c);
    free(c);
}

/* ---- subscriptions -------------------------------------------------------- */

struct conn_sub *
conn_sub_find(burst_client *c, uint64_t job)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].job == job)
            return &c->subs[i];
    return NULL;
}

static struct conn_sub *
conn_sub_add(burst_client *c, uint64_t job, uint64_t from_seq)
{
    if (c->nsubs == c->subcap) {
        size_t cap = c->subcap ? c->subcap * 2 : 4;
        struct conn_sub *s = realloc(c->subs, cap * sizeof(*s));
        if (s == NULL)
            return NULL;
        c->subs = s;
        c->subcap = cap;
    }
    struct conn_sub *s = &c->subs[c->nsubs++];
    *s = (struct conn_sub){.job = job, .last_seq = from_seq};
    return s;
}

static void
conn_sub_remove(burst_client *c, uint64_t job)
{
    for (size_t i = 0; i < c->nsubs; i++) {
        if (c->subs[i].job == job) {
            c->subs[i] = c->subs[--c->nsubs];
            return;
        }
    }
}

static int
conn_sub_send(burst_client *c, enum proto_op op, uint64_t job, uint64_t from_seq)
{
    struct proto_request req = {.op = op};
    struct conn_reply rep;

    if (op == PROTO_OP_SUBSCRIBE)
        req.u.subscribe = (struct proto_subscribe){.job = job, .from_seq = from_seq};
    else
        req.u.job.job = job;
    int rc = conn_call(c, &req, &rep);
    if (rc == 0)
        conn_reply_release(&rep);
    return rc;
}

/* Creates the entry before asking the daemon, so that replayed events that
 * arrive ahead of the subscribe reply find it. */
static int
conn_sub_start(burst_client *c, uint64_t job, uint64_t from_seq, struct conn_sub **out)
{
    if (conn_sub_add(c, job, from_seq) == NULL)
        return conn_seterr(c, -ENOMEM, "out of memory");
    int rc = conn_sub_send(c, PROTO_OP_SUBSCRIBE, job, from_seq);
    if (rc < 0) {
        conn_sub_remove(c, job);
        return rc;
    }
    *out = conn_sub_find(c, job);
    return 0;
}

/* Forgets job's subscription when nobody holds it any more, telling the
 * daemon unless the job's final event already ended it there. */
static int
conn_sub_maybe_stop(burst_client *c, uint64_t job)
{
    struct conn_sub *s = conn_sub_find(c, job);

    if (s == NULL || s->cb != NULL || s->internal > 0)
        return 0;
    /* A daemon of revision 0 keeps the subscription until told. */
    bool ended = s->ended && c->revision >= 1;
    conn_sub_remove(c, job);
    if (c->dead || ended)
        return 0;
    return conn_sub_send(c, PROTO_OP_UNSUBSCRIBE, job, 0);
}

int
conn_sub_adopt(burst_client *c, uint64_t job, burst_event_cb cb, void *arg, bool hold)
{
    struct conn_sub *s = conn_sub_find(c, job);

    if (s == NULL && (s = conn_sub_add(c, job, 0)) == NULL)
        return -ENOMEM;
    if (cb != NULL) {
        s->cb = cb;
        s->arg = arg;
    }
    if (hold)
        s->internal++;
    return 0;
}

int
conn_sub_hold(burst_client *c, uint64_t job, uint64_t from_seq)
{
    struct conn_sub *s = conn_sub_find(c, job);

    if (s == NULL) {
        int rc = conn_sub_start(c, job, from_seq, &s);
        if (rc < 0)
            return rc;
    }
    s->internal++;
    return 0;
}

int
conn_sub_release(burst_client *c, uint64_t job)
{
    struct conn_sub *s = conn_sub_find(c, job);

    if (s == NULL || s->internal == 0)
        return 0;
    s->internal--;
    return conn_sub_maybe_stop(c, job);
}

int
conn_sub_user(burst_client *c, uint64_t job, uint64_t from_seq, burst_event_cb cb,
              void *arg)
{
    struct conn_sub *s = conn_sub_find(c, job);
    int rc;

    if (s == NULL) {
        rc = conn_sub_start(c, job, from_seq, &s);
        if (rc < 0)
            return rc;
    } else if (from_seq < s->last_seq) {
        /* The stream is already running past from_seq (a wait loop holds
         * it): ask again for the older events; duplicates are dropped by
         * sequence number as they arrive. */
        s->last_seq = from_seq;
        s->ended = false; /* the replay ends it again */
        rc = conn_sub_send(c, PROTO_OP_SUBSCRIBE, job, from_seq);
        if (rc < 0)
            return rc;
        s = conn_sub_find(c, job);
        if (s == NULL)
            return conn_seterr(c, BURST_EINTERNAL, "subscription vanished");
    }
    s->cb = cb;
    s->arg = arg;
    return 0;
}

int
conn_sub_user_drop(burst_client *c, uint64_t job)
{
    struct conn_sub *s = conn_sub_find(c, job);

    if (s == NULL)
        return 0;
    s->cb = NULL;
    s->arg = NULL;
    return conn_sub_maybe_stop(c, job);
}

void
conn_waiter_add(burst_client *c, struct conn_waiter *w)
{
    w->next = c->waiters;
    c->waiters = w;
}

void
conn_waiter_remove(burst_client *c, struct conn_waiter *w)
{
    for (struct conn_waiter **p = &c->waiters; *p != NULL; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            return;
        }
    }
}

/* ---- the event queue ------------------------------------------------------ */

size_t
conn_pending(const burst_client *c)
{
    return c->qlen;
}

static int
conn_queue_push(burst_client *c, const burst_event *ev)
{
    if (c->qlen == c->qcap) {
        size_t cap = c->qcap ? c->qcap * 2 : 64;
        burst_event *q = malloc(cap * sizeof(*q));
        if (q == NULL)
            return -ENOMEM;
        /* Unroll the ring into the new array so that head is 0 again. */
        for (size_t i = 0; i < c->qlen; i++)
            q[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = q;
        c->qcap = cap;
        c->qhead = 0;
    }
    c->q[(c->qhead + c->qlen) % c->qcap] = *ev;
    c->qlen++;
    return 0;
}

/* Queues the items of one events frame for the jobs someone listens to. */
static int
conn_queue_events(burst_client *c, const char *payload, size_t len)
{
    struct proto_events evs;
    void *priv = NULL;

    int rc = proto_decode_events(payload, len, &c->decode_limits, &evs, &priv);
    if (rc < 0)
        return 0; /* a malformed event is dropped; the wait loops re-poll */
    struct conn_sub *s = conn_sub_find(c, evs.job);
    for (uint32_t i = 0; s != NULL && i < evs.nitems && rc == 0; i++) {
        const struct proto_event_item *it = &evs.items[i];
        /* A replay after a re-subscription repeats what we already have. */
        if (it->seq <= s->last_seq)
            continue;
        s->last_seq = it->seq;
        burst_event ev = {.job = evs.job, .seq = it->seq, .type = it->type};
        if (it->type == BURST_EV_JOB) {
            ev.job_state = it->job_state;
            if (burst_job_state_is_final(it->job_state))
                s->ended = true;
            rc = conn_queue_push(c, &ev);
            continue;
        }
        for (uint32_t t = 0; t < it->ntasks && rc == 0; t++) {
            ev.task = it->tasks[t].index;
            ev.task_state = it->tasks[t].state;
            ev.attempts = it->tasks[t].attempts;
            rc = conn_queue_push(c, &ev);
        }
    }
    proto_events_free(priv);
    if (rc < 0)
        return conn_kill(c, rc, "out of memory for events");
    return 0;
}

int
conn_deliver(burst_client *c)
{
    int delivered = 0;

    while (c->qlen > 0) {
        /* Pop before calling out: a callback may make calls that queue
         * more events or deliver the rest itself. */
        burst_event ev = c->q[c->qhead];
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;

        struct conn_sub *s = conn_sub_find(c, ev.job);
        if (s != NULL && s->cb != NULL) {
            burst_event_cb cb = s->cb;
            cb(s->arg, &ev);
            if (delivered < INT32_MAX)
                delivered++;
        }
        for (struct conn_waiter *w = c->waiters; w != NULL; w = w->next)
            if (w->job == ev.job)
                w->fn(w->arg, &ev);
    }
    return delivered;
}

/* ---- reading -------------------------------------------------------------- */

/*
 * Handles the complete frames already buffered.  Events are queued, replies
 * other than the one wanted are dropped (their caller gave up on them).
 * When the reply with id want (0: none) is found, it is decoded into *out
 * and 1 is returned at once, leaving later frames buffered; otherwise 0 (or
 * a negative code when the stream broke).  *handled counts frames seen.
 */
static int
conn_process(burst_client *c, uint64_t want, enum proto_op op, struct conn_reply *out,
             int *handled)
{
    for (;;) {
        const char *payload;
        size_t len;
        int rc = frame_next(&c->rd, &payload, &len);
        if (rc == 0)
            return 0;
        if (rc < 0)
            return conn_kill(c, rc, "malformed frame from burstd");
        (*handled)++;

        enum proto_kind kind;
        uint64_t re = 0;
        if (proto_peek(payload, len, &kind, &re) < 0)
            continue;
        if (kind == PROTO_KIND_EVENT) {
            rc = conn_queue_events(c, payload, len);
            if (rc < 0)
                return rc;
            continue;
        }
        if (kind == PROTO_KIND_REPLY && re == 0) {
            /* The daemon's last word before it drops us (busy, a frame too
             * large): keep its reason, not a bare "connection closed". */
            struct proto_reply rep;
            if (proto_decode_reply(payload, len, PROTO_OP_HELLO, &c->decode_limits, &rep) ==
                0) {
                if (!rep.ok) {
                    char msg[512];
                    proto_str_copy(msg, sizeof(msg), rep.u.error.message);
                    int code = rep.u.error.code;
                    proto_reply_free(&rep);
                    return conn_kill(c, code, msg);
                }
                proto_reply_free(&rep);
            }
            continue;
        }
        if (kind != PROTO_KIND_REPLY || want == 0 || re != want)
            continue;

        /* Keep a copy: the reply's strings point into it and must outlive
         * the reader's buffer, which the next read reuses. */
        out->payload = malloc(len);
        if (out->payload == NULL)
            return conn_seterr(c, -ENOMEM, "out of memory for a %zu-byte reply", len);
        memcpy(out->payload, payload, len);
        rc = proto_decode_reply(out->payload, len, op, &c->decode_limits, &out->rep);
        if (rc < 0) {
            free(out->payload);
            out->payload = NULL;
            return conn_seterr(c, rc, "malformed %s reply from burstd",
                               proto_op_name(op));
        }
        return 1;
    }
}

/* Moves whatever the socket holds into the frame reader.  timeout_ms as for
 * poll().  Returns 1 when bytes were read, 0 on timeout, or a code. */
static int
conn_fill(burst_client *c, int timeout_ms, bool nonblocking)
{
    if (!nonblocking) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int n;
        while ((n = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
            ;
        if (n < 0)
            return conn_kill(c, BURST_ECONNECT, strerror(errno));
        if (n == 0)
            return 0;
    }
    char *base;
    size_t avail;
    if (frame_reader_space(&c->rd, CONN_READ_CHUNK, &base, &avail) < 0)
        return conn_kill(c, -ENOMEM, "out of memory");
    ssize_t r;
    while ((r = recv(c->fd, base, avail, MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (r < 0)
        return conn_kill(c, BURST_ECONNECT, strerror(errno));
    if (r == 0)
        return conn_kill(c, BURST_ECONNECT, "burstd closed the connection");
    frame_reader_commit(&c->rd, (size_t)r);
    return 1;
}

int
conn_read(burst_client *c, int timeout_ms)
{
    int handled = 0;

    if (c->dead)
        return c->dead_code;
    /* Events queued by a call made since the last delivery (a results
     * fetch in imap_unordered, a user callback's call) are progress too:
     * the socket will not announce them again. */
    if (timeout_ms != 0 && c->qlen > 0)
        return 1;
    /* Frames left over from a previous call count as progress, so nobody
     * blocks on the socket while an event sits in our buffer. */
    int rc = conn_process(c, 0, PROTO_OP_HELLO, NULL, &handled);
    if (rc < 0)
        return rc;
    if (handled > 0)
        return 1;
    if (timeout_ms == 0) {
        /* burst_dispatch: take everything there is, but never wait. */
        int got = 0;
        while ((rc = conn_fill(c, 0, true)) == 1) {
            got = 1;
            rc = conn_process(c, 0, PROTO_OP_HELLO, NULL, &handled);
            if (rc < 0)
                return rc;
        }
        return rc < 0 ? rc : got;
    }
    rc = conn_fill(c, timeout_ms, false);
    if (rc <= 0)
        return rc;
    rc = conn_process(c, 0, PROTO_OP_HELLO, NULL, &handled);
    return rc < 0 ? rc : 1;
}

/* ---- calls ---------------------------------------------------------------- */

/* Writes all of buf.  While the daemon is not reading, what it sends us is
 * buffered (not handled) so that neither side can block the other. */
static int
conn_send(burst_client *c, const char *buf, size_t len)
{
    size_t off = 0;

    while (off < len) {
        ssize_t w = send(c->fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return conn_kill(c, BURST_ECONNECT, strerror(errno));
        struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLOUT};
        int n;
        while ((n = poll(&p, 1, -1)) < 0 && errno == EINTR)
            ;
        if (n < 0)
            return conn_kill(c, BURST_ECONNECT, strerror(errno));
        if (p.revents & POLLIN) {
            int rc = conn_fill(c, 0, true);
            if (rc < 0)
                return rc;
        } else if (p.revents & (POLLERR | POLLHUP)) {
            return conn_kill(c, BURST_ECONNECT, "burstd closed the connection");
        }
    }
    return 0;
}

void
conn_reply_release(struct conn_reply *r)
{
    if (r->payload != NULL) {
        proto_reply_free(&r->rep);
        free(r->payload);
        r->payload = NULL;
    }
}

int
conn_call(burst_client *c, struct proto_request *req, struct conn_reply *out)
{
    return conn_call_then(c, req, out, NULL, NULL);
}

int
conn_call_then(burst_client *c, struct proto_request *req, struct conn_reply *out,
               int (*then)(burst_client *c, const struct conn_reply *rep, void *arg),
               void *arg)
{
    struct proto_buf b;
    int handled = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    if (c->dead)
        return conn_seterr(c, c->dead_code, "connection to burstd lost");
    req->id = ++c->next_id;

    proto_buf_init(&b);
    rc = proto_encode_request(&b, req);
    if (rc == BURST_ETOOBIG) {
        rc = conn_seterr(c, rc, "the %s request is larger than any frame may be",
                         proto_op_name(req->op));
        goto out_buf;
    }
    if (rc < 0) {
        rc = conn_seterr(c, rc, "cannot encode the %s request: %s",
                         proto_op_name(req->op), burst_strerror(rc));
        goto out_buf;
    }
    if (b.len - FRAME_HEADER_SIZE > c->limits.max_frame) {
        rc = conn_seterr(c, BURST_ETOOBIG,
                         "the %s request is %zu bytes, more than burstd accepts "
                         "(max_frame %u bytes); split the work into smaller jobs",
                         proto_op_name(req->op), b.len - FRAME_HEADER_SIZE,
                         c->limits.max_frame);
        goto out_buf;
    }
    rc = conn_send(c, b.data, b.len);
    if (rc < 0)
        goto out_buf;

    for (;;) {
        rc = conn_process(c, req->id, req->op, out, &handled);
        if (rc != 0)
            break;
        rc = conn_fill(c, -1, false);
        if (rc < 0)
            break;
    }
    if (rc < 0)
        goto out_buf;
    if (then != NULL && out->rep.ok && (rc = then(c, out, arg)) < 0) {
        conn_reply_release(out);
        goto out_buf;
    }

    /* Queue any events that came in the same read as the reply, so that
     * burst_pending() tells the caller about them before it polls. */
    struct conn_reply none;
    rc = conn_process(c, 0, PROTO_OP_HELLO, &none, &handled);
    if (rc < 0) {
        conn_reply_release(out);
        goto out_buf;
    }
    if (!out->rep.ok) {
        int code = out->rep.u.error.code;
        if (code >= 0)
            code = BURST_EINTERNAL;
        struct proto_str m = out->rep.u.error.message;
        if (m.ptr != NULL && m.len > 0)
            conn_seterr(c, code, "%.*s", (int)(m.len > 1000 ? 1000 : m.len), m.ptr);
        else
            conn_seterr(c, code, "%s", burst_strerror(code));
        conn_reply_release(out);
        rc = code;
        goto out_buf;
    }
    rc = 0;

out_buf:
    proto_buf_free(&b);
    return rc;
}
