/*
 * daemon/server.c - the Unix-socket server (see server.h and DESIGN.md,
 * "Security model").  It owns the listening socket and every connection:
 * accepting (with SO_PEERCRED identity and a connection limit), reading into
 * a frame reader, handing complete frames to api.c, writing replies, and
 * closing through uv_close so that nothing is freed in the middle of its own
 * callback.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "api.h"
#include "burstd.h"
#include "log.h"

struct server {
    struct burstd *d;          /* borrowed */
    uv_pipe_t listener;
    bool listening;
    bool closing;
    char *path;                /* owned: unlinked on close */
    struct conn *conns;        /* owned list */
    uint32_t nconns;
    uint64_t next_serial;
    unsigned open_handles;     /* listener + conns + flush still to be closed */
    uv_check_t flush;          /* writes what the iteration queued */
    struct conn *dirty;        /* conns with frames to write; via dirty_next */
    void (*close_cb)(struct server *s);
};

/* Bytes of replies and events a connection may leave unread before it is
 * dropped: several result pages and a large replay fit. */
#define CONN_MAX_UNSENT (256u * 1024u * 1024u)

/* At most this many frames go to one writev. */
#define CONN_WRITE_BATCH 64

struct write_req {
    uv_write_t req;
    struct conn *conn; /* held (busy) while libuv has it */
    char *data;        /* owned */
    size_t len;
    size_t off;        /* bytes already written */
    struct write_req *next; /* in the conn's queue */
};

static void conn_maybe_free(struct conn *c);
static void conn_process(struct conn *c);
static void conn_flush(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_close_after_flush(struct conn *c);

static void
on_flush(uv_check_t *h)
{
    server_flush(h->data);
}

int
server_new(struct burstd *d, struct server **out)
{
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->d = d;
    s->next_serial = 1;
    uv_check_init(d->loop, &s->flush);
    s->flush.data = s;
    uv_check_start(&s->flush, on_flush);
    /* It has work only when a conn has: it must not keep the loop alive. */
    uv_unref((uv_handle_t *)&s->flush);
    s->open_handles++;
    *out = s;
    return 0;
}

void
server_flush(struct server *s)
{
    while (s->dirty != NULL) {
        struct conn *c = s->dirty;
        s->dirty = c->dirty_next;
        c->dirty_next = NULL;
        c->dirty = false;
        conn_flush(c);
        conn_release(c);
    }
}

uint32_t
server_connections(const struct server *s)
{
    return s->nconns;
}

/* Is uid a member of gid, by primary or supplementary group? */
static bool
uid_in_group(uid_t uid, gid_t primary, gid_t gid)
{
    if (primary == gid)
        return true;
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || res == NULL)
        return false;
    gid_t groups[256];
    int n = 256;
    if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
        return false;
    for (int i = 0; i < n; i++)
        if (groups[i] == gid)
            return true;
    return false;
}

static void
on_idle_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    log_info("client %llu (uid %u): dropped, a frame stayed incomplete too long",
             (unsigned long long)c->serial, (unsigned)c->uid);
    conn_close(c);
}

static void
conn_read_stop(struct conn *c)
{
    if (c->reading) {
        c->reading = false;
        uv_read_stop((uv_stream_t *)&c->pipe);
    }
}

static void
conn_read_start(struct conn *c)
{
    if (!c->reading && !c->closing) {
        c->reading = true;
        uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    }
}

/* A paused conn reads on only while the buffer's free end has room: the
 * frame being handled must not move.  Stopping and starting to read costs
 * the loop two epoll_ctl calls, and a paused conn is the common case (a
 * submission waits for its sync). */
static void
conn_paused_read_check(struct conn *c)
{
    char *base;
    size_t avail;
    frame_reader_tail(&c->reader, &base, &avail);
    if (avail == 0)
        conn_read_stop(c);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    char *base;
    size_t avail;
    if (suggested < 65536)
        suggested = 65536;
    if (c->paused) {
        frame_reader_tail(&c->reader, &base, &avail); /* not 0: see above */
        buf->base = base;
        buf->len = avail;
        return;
    }
    if (frame_reader_space(&c->reader, suggested, &base, &avail) != 0) {
        /* libuv reports UV_ENOBUFS to on_read, which closes the conn. */
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = base;
    buf->len = avail;
}

static void
on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;
    (void)buf;
    if (nread < 0) {
        /* A client may end its side once its last request is out: what it
         * sent is answered, and the replies are written, before the conn
         * closes. */
        if (nread == UV_EOF) {
            if (c->paused) {
                c->eof = true;
                conn_read_stop(c);
            } else {
                conn_close_after_flush(c);
            }
            return;
        }
        log_debug("client %llu: read: %s", (unsigned long long)c->serial,
                  uv_strerror((int)nread));
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    frame_reader_commit(&c->reader, (size_t)nread);
    if (c->paused) {
        conn_paused_read_check(c);
        return;
    }
    conn_process(c);
    /* The replies to what arrived together go out together, and before the
     * next client's requests are handled. */
    server_flush(c->server);
}

static void
on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    (void)status;
    free(req);
    conn_close(c);
    conn_release(c);
}

/* Sends what is queued, then closes: used after a fatal protocol error so
 * the client can read why it is being dropped. */
static void
conn_close_after_flush(struct conn *c)
{
    if (c->closing)
        return;
    conn_read_stop(c);
    c->paused = true;
    conn_flush(c);
    if (c->closing)
        return; /* the write failed */
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (req == NULL) {
        conn_close(c);
        return;
    }
    req->data = c;
    conn_hold(c);
    if (uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
        free(req);
        conn_release(c);
        conn_close(c);
    }
}

/* Hands every complete buffered frame to the API layer, until one of them
 * starts an asynchronous operation (which pauses the conn). */
static void
conn_process(struct conn *c)
{
    struct burstd *d = c->server->d;
    while (!c->paused && !c->closing) {
        const char *payload;
        size_t len;
        int rc = frame_next(&c->reader, &payload, &len);
        if (rc == 0)
            break;
        if (rc < 0) {
            if (rc == BURST_ETOOBIG)
                conn_send_error(c, 0, rc, "frame larger than the limit of %u bytes",
                                d->cfg->limits.max_frame);
            else
                conn_send_error(c, 0, rc, "malformed frame: zero length");
            log_info("client %llu (uid %u): dropped: %s", (unsigned long long)c->serial,
                     (unsigned)c->uid, burst_strerror(rc));
            conn_close_after_flush(c);
            return;
        }
        c->last_active = uv_now(d->loop);
        rc = api_handle(d, c, payload, len);
        if (rc < 0) {
            conn_close_after_flush(c);
            return;
        }
    }
    if (c->closing)
        return;
    if (frame_reader_partial(&c->reader)) {
        if (!uv_is_active((uv_handle_t *)&c->idle))
            uv_timer_start(&c->idle, on_idle_timeout, d->cfg->idle_timeout_ms, 0);
    } else {
        uv_timer_stop(&c->idle);
    }
}

static void
on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    /* Two handles (pipe, idle timer) each count once. */
    c->busy--;
    conn_maybe_free(c);
}

static void
conn_maybe_free(struct conn *c)
{
    if (!c->closing || c->busy > 0)
        return;
    struct server *s = c->server;
    frame_reader_free(&c->reader);
    while (c->out != NULL) {
        struct write_req *w = c->out;
        c->out = w->next;
        free(w->data);
        free(w);
    }
    while (c->cancel_jobs != NULL) {
        struct conn_job *j = c->cancel_jobs;
        c->cancel_jobs = j->next;
        free(j);
    }
    free(c);
    s->open_handles--;
    if (s->closing && s->open_handles == 0 && s->close_cb != NULL)
        s->close_cb(s);
}

void
conn_close(struct conn *c)
{
    if (c->closing)
        return;
    struct server *s = c->server;
    /* What is queued and not held back goes out if the socket takes it
     * now; anything else is dropped with the conn. */
    conn_flush(c);
    c->closing = true;
    api_conn_closed(s->d, c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nconns--;
    c->busy += 2;
    uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

void
conn_hold(struct conn *c)
{
    c->busy++;
    if (!c->paused) {
        c->paused = true;
        if (!c->closing)
            conn_paused_read_check(c);
    }
}

void
conn_release(struct conn *c)
{
    c->busy--;
    conn_maybe_free(c);
}

void
conn_resume(struct conn *c)
{
    if (c->closing || !c->paused)
        return;
    c->paused = false;
    conn_process(c);
    if (c->paused || c->closing)
        return;
    if (c->eof)
        conn_close_after_flush(c);
    else
        conn_read_start(c);
}

static void
on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = w->conn;
    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED && !c->closing) {
        log_debug("client %llu: write: %s", (unsigned long long)c->serial,
                  uv_strerror(status));
        c->broken = true;
        conn_close(c);
    }
    conn_release(c);
}

/* Hands w's unwritten bytes to libuv, which writes them when the socket
 * has room (the conn is held until then). */
static int
write_queue(struct conn *c, struct write_req *w)
{
    uv_buf_t b = uv_buf_init(w->data + w->off, (unsigned)(w->len - w->off));
    c->busy++;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
    if (rc != 0) {
        free(w->data);
        free(w);
        c->busy--;
    }
    return rc;
}

/* Writes the conn's queue: as much as the socket takes now in one writev
 * per batch of frames, the rest through libuv's write queue.  Writing
 * directly also spares libuv's completion pass, which re-arms the socket's
 * epoll entry once per write. */
static void
conn_flush(struct conn *c)
{
    if (c->closing || c->broken)
        return;
    /* Corked, frames up to `last` go, and the rest waits for the uncork. */
    struct write_req *last = c->corks > 0 ? c->cork_last : NULL;
    if (c->corks > 0 && last == NULL)
        return;
    int rc;
    bool more = true; /* frames that may go are left */
    while (c->out != NULL && more) {
        uv_buf_t bufs[CONN_WRITE_BATCH];
        unsigned n = 0;
        bool all = false; /* bufs reaches the last frame that may go */
        for (struct write_req *w = c->out; w != NULL && n < CONN_WRITE_BATCH;
             w = w->next) {
            bufs[n++] = uv_buf_init(w->data + w->off, (unsigned)(w->len - w->off));
            if (w == last || w->next == NULL) {
                all = true;
                break;
            }
        }
        /* UV_EAGAIN also when libuv still has earlier bytes queued. */
        rc = uv_try_write((uv_stream_t *)&c->pipe, bufs, n);
        if (rc < 0 && rc != UV_EAGAIN)
            goto broken;
        size_t done = rc > 0 ? (size_t)rc : 0;
        c->out_bytes -= done;
        while (more && c->out != NULL && done >= c->out->len - c->out->off) {
            struct write_req *w = c->out;
            done -= w->len - w->off;
            c->out = w->next;
            more = w != last;
            free(w->data);
            free(w);
        }
        if (c->out == NULL || !more)
            break;
        c->out->off += done;
        if (rc == UV_EAGAIN || c->out->off > 0 || all) {
            /* The socket is full: the rest that may go waits in libuv's
             * queue. */
            while (more && c->out != NULL) {
                struct write_req *w = c->out;
                c->out = w->next;
                more = w != last;
                c->out_bytes -= w->len - w->off;
                if ((rc = write_queue(c, w)) != 0)
                    goto broken;
            }
        }
    }
    if (c->out == NULL)
        c->out_last = NULL;
    if (c->corks > 0)
        c->cork_last = NULL; /* gone, or was never reached: see above */
    return;
broken:
    log_debug("client %llu: write: %s", (unsigned long long)c->serial, uv_strerror(rc));
    c->broken = true;
    conn_close(c);
}

static void
conn_mark_dirty(struct conn *c)
{
    if (c->dirty || (c->corks > 0 && c->cork_last == NULL) || c->out == NULL)
        return;
    struct server *s = c->server;
    c->dirty = true;
    c->busy++; /* dropped by server_flush */
    c->dirty_next = s->dirty;
    s->dirty = c;
}

int
conn_send(struct conn *c, struct proto_buf *buf)
{
    if (buf->len == 0)
        return 0;
    if (c->closing) {
        proto_buf_free(buf);
        return UV_ECANCELED;
    }
    /* A client that never reads must not make the daemon hold its replies
     * and events without bound. */
    size_t queued = uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) + c->out_bytes;
    if (queued > CONN_MAX_UNSENT) {
        log_info("client %llu (uid %u): dropped, it left %zu bytes of replies unread",
                 (unsigned long long)c->serial, (unsigned)c->uid, queued);
        proto_buf_free(buf);
        conn_close(c);
        return UV_ENOBUFS;
    }
    struct write_req *w = malloc(sizeof(*w));
    if (w == NULL) {
        proto_buf_free(buf);
        conn_close(c);
        return -ENOMEM;
    }
    /* Ownership of the bytes moves to the write request. */
    w->data = buf->data;
    w->len = buf->len;
    w->off = 0;
    w->conn = c;
    w->next = NULL;
    buf->data = NULL;
    buf->len = buf->cap = 0;
    if (c->out != NULL)
        c->out_last->next = w;
    else
        c->out = w;
    c->out_last = w;
    c->out_bytes += w->len;
    conn_mark_dirty(c);
    return 0;
}

void
conn_cork(struct conn *c)
{
    if (c->corks++ == 0)
        c->cork_last = c->out != NULL ? c->out_last : NULL;
    c->busy++;
}

void
conn_uncork(struct conn *c)
{
    if (--c->corks == 0) {
        c->cork_last = NULL;
        conn_mark_dirty(c);
    }
    conn_release(c);
}

void
conn_send_error(struct conn *c, uint64_t re, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct proto_buf b;
    proto_buf_init(&b);
    if (proto_encode_error(&b, re, code, "%s", msg) == 0)
        conn_send(c, &b);
    proto_buf_free(&b);
}

static void
reject_conn_closed(uv_handle_t *h)
{
    free(h);
}

/* Open connections of uid, not counting except. */
static uint32_t
server_conns_of(const struct server *s, uid_t uid, const struct conn *except)
{
    uint32_t n = 0;
    for (const struct conn *c = s->conns; c != NULL; c = c->next)
        if (c != except && c->uid == uid && !c->closing)
            n++;
    return n;
}

/*
 * Makes room for newcomer when every slot is taken, so that clients which
 * connect and then sit idle cannot lock everyone else out: closes the
 * connection that has been quiet longest -- no subscription, no request in
 * progress, no half-received frame.  Those that are working keep their
 * slot.  Returns true when one was closed (nconns dropped by one).
 */
static bool
server_evict_idle(struct server *s, const struct conn *newcomer)
{
    struct conn *victim = NULL;
    for (struct conn *c = s->conns; c != NULL; c = c->next) {
        /* A cancel-on-disconnect client is never idle: dropping it would
         * cancel its jobs. */
        if (c == newcomer || c->closing || c->paused || c->nsubs > 0 ||
            c->cancel_jobs != NULL || frame_reader_partial(&c->reader))
            continue;
        /* Ties (the clock counts milliseconds) go to the older connection. */
        if (victim == NULL || c->last_active < victim->last_active ||
            (c->last_active == victim->last_active && c->serial < victim->serial))
            victim = c;
    }
    if (victim == NULL)
        return false;
    log_info("client %llu (uid %u): dropped, idle while burstd is at max_connections",
             (unsigned long long)victim->serial, (unsigned)victim->uid);
    /* Say why if the socket takes it at once; a queued write would be
     * cancelled by the close, and waiting for it would hold the slot. */
    struct proto_buf b;
    proto_buf_init(&b);
    if (proto_encode_error(&b, 0, BURST_EBUSY,
                           "dropped: burstd is at its connection limit and this "
                           "connection was the longest idle") == 0) {
        uv_buf_t ub = uv_buf_init(b.data, (unsigned)b.len);
        (void)uv_try_write((uv_stream_t *)&victim->pipe, &ub, 1);
    }
    proto_buf_free(&b);
    conn_close(victim);
    return true;
}

static void
on_connection(uv_stream_t *listener, int status)
{
    struct server *s = listener->data;
    struct burstd *d = s->d;
    if (status < 0) {
        log_warnx("accept: %s", uv_strerror(status));
        return;
    }
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        /* Accept and drop, so the backlog does not fill with a client we
         * cannot serve; libuv needs a handle to accept into. */
        uv_pipe_t *p = malloc(sizeof(*p));
        if (p != NULL && uv_pipe_init(d->loop, p, 0) == 0) {
            if (uv_accept(listener, (uv_stream_t *)p) != 0)
                log_warnx("accept failed while out of memory");
            uv_close((uv_handle_t *)p, reject_conn_closed);
        } else {
            free(p);
        }
        return;
    }
    c->server = s;
    c->serial = s->next_serial++;
    frame_reader_init(&c->reader, d->cfg->limits.max_frame);
    uv_pipe_init(d->loop, &c->pipe, 0);
    c->pipe.data = c;
    uv_timer_init(d->loop, &c->idle);
    c->idle.data = c;
    s->open_handles++;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;

    if (uv_accept(listener, (uv_stream_t *)&c->pipe) != 0) {
        conn_close(c);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t clen = sizeof(cred);
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
        log_warn("client %llu: cannot read peer credentials; dropped",
                 (unsigned long long)c->serial);
        conn_close(c);
        return;
    }
    c->uid = cred.uid;
    c->pid = cred.pid;
    c->admin = cred.uid == 0 || cred.uid == d->uid ||
               (d->has_admin_gid && uid_in_group(cred.uid, cred.gid, d->admin_gid));
    c->last_active = uv_now(d->loop);
    /* One user may not take every slot (admins are trusted). */
    uint32_t per_uid = d->cfg->max_connections_per_uid;
    if (!c->admin && per_uid > 0 && !d->stopping &&
        server_conns_of(s, c->uid, c) >= per_uid) {
        conn_send_error(c, 0, BURST_EBUSY,
                        "too many connections of uid %u (max_connections_per_uid is %u); "
                        "close some or try again later",
                        (unsigned)c->uid, per_uid);
        conn_close_after_flush(c);
        return;
    }
    if (d->stopping ||
        (s->nconns > d->cfg->max_connections && !server_evict_idle(s, c))) {
        int code = d->stopping ? BURST_ESHUTDOWN : BURST_EBUSY;
        conn_send_error(c, 0, code, "%s",
                        d->stopping ? "burstd is shutting down"
                                    : "too many connections; try again later");
        conn_close_after_flush(c);
        return;
    }
    log_debug("client %llu: connected (uid %u, pid %d%s)", (unsigned long long)c->serial,
              (unsigned)c->uid, (int)c->pid, c->admin ? ", admin" : "");
    conn_read_start(c);
}

/* Refuses to take over a socket a live daemon still answers on; removes a
 * stale one left by a crash. */
static int
prepare_socket_path(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_warnx("%s exists and is not a socket; refusing to replace it", path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    /* Who listened: a child that a killed burstd forked and that has not
     * exec'ed yet holds the listening socket for a moment after its
     * parent died; that socket is stale, nobody will answer on it. */
    struct ucred cred = {0};
    socklen_t clen = sizeof(cred);
    bool gone = rc == 0 && getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 &&
                cred.pid > 0 && kill(cred.pid, 0) != 0 && errno == ESRCH;
    close(fd);
    if (rc == 0 && !gone) {
        log_warnx("another burstd is already listening on %s", path);
        return -EADDRINUSE;
    }
    if (gone)
        e = ECONNREFUSED;
    if (e != ECONNREFUSED && e != ENOENT) {
        log_warnx("cannot probe existing socket %s: %s", path, strerror(e));
        return -e;
    }
    if (unlink(path) != 0 && errno != ENOENT)
        return -errno;
    log_info("removed stale socket %s", path);
    return 0;
}

/*
 * Gives the freshly bound socket at path its final owner group and mode:
 * 0600 by default, or 0660 and group `group` (system mode: members of the
 * group are the daemon's users).  Never world-accessible.  Runs before
 * listen(), so nobody can connect while the mode is still changing.
 * Returns 0 or a negative errno code, logged.
 */
static int
socket_set_group(const char *path, const char *group)
{
    mode_t mode = 0600;
    if (group != NULL) {
        struct group gr, *res = NULL;
        char buf[4096];
        int e = getgrnam_r(group, &gr, buf, sizeof(buf), &res);
        if (e != 0 || res == NULL) {
            log_warnx("socket_group '%s' does not exist", group);
            return e != 0 ? -e : -ENOENT;
        }
        /* chown before chmod: the group gains access only once it is the
         * right group. */
        if (chown(path, (uid_t)-1, gr.gr_gid) != 0) {
            int rc = -errno;
            log_warn("cannot give socket %s to group %s (burstd's user must be a "
                     "member of it)",
                     path, group);
            return rc;
        }
        mode = 0660;
    }
    if (chmod(path, mode) != 0) {
        int rc = -errno;
        log_warn("chmod %s", path);
        return rc;
    }
    return 0;
}

int
server_listen(struct server *s, const char *path)
{
    struct burstd *d = s->d;
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        log_warnx("socket path too long (at most %zu bytes): %s", sizeof(sa.sun_path) - 1,
                  path);
        return -ENAMETOOLONG;
    }
    int rc = prepare_socket_path(path);
    if (rc != 0)
        return rc;
    s->path = strdup(path);
    if (s->path == NULL)
        return -ENOMEM;
    rc = uv_pipe_init(d->loop, &s->listener, 0);
    if (rc != 0)
        return rc;
    s->listener.data = s;
    s->open_handles++;
    s->listening = true;
    /* The socket is the trust boundary: create it 0600 from the start so no
     * other user can connect in the window before chmod. */
    mode_t old = umask(0177);
    rc = uv_pipe_bind(&s->listener, path);
    umask(old);
    if (rc != 0) {
        log_warnx("cannot create socket %s: %s", path, uv_strerror(rc));
        return rc;
    }
    rc = socket_set_group(path, d->cfg->socket_group);
    if (rc != 0)
        return rc;
    rc = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
    if (rc != 0) {
        log_warnx("cannot listen on %s: %s", path, uv_strerror(rc));
        return rc;
    }
    return 0;
}

/* Parses a decimal environment value into *out; false when unset or bad. */
static bool
env_long(const char *name, long *out)
{
    const char *v = getenv(name);
    if (v == NULL || *v < '0' || *v > '9')
        return false;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = n;
    return true;
}

int
server_activation_fd(void)
{
    long pid = 0, nfds = 0;
    bool ours = env_long("LISTEN_PID", &pid) && pid == (long)getpid() &&
                env_long("LISTEN_FDS", &nfds) && nfds >= 1;
    /* Whatever they said, the variables describe this process only:
     * workers must not believe they were activated. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (!ours)
        return -1;
    /* Only the first socket is used; the others must at least not leak
     * into workers.  The bound keeps a hostile LISTEN_FDS from making this
     * loop long. */
    for (long i = 1; i < nfds && i < 1024; i++) {
        int fd = SERVER_LISTEN_FDS_START + (int)i;
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
            log_warnx("socket activation passed fd %d as well; only fd %d is used", fd,
                      SERVER_LISTEN_FDS_START);
    }
    return SERVER_LISTEN_FDS_START;
}

int
server_listen_fd(struct server *s, int fd)
{
    struct burstd *d = s->d;
    int type = 0, acc = 0;
    socklen_t len = sizeof(type);
    struct sockaddr_un sa;
    socklen_t salen = sizeof(sa);
    memset(&sa, 0, sizeof(sa));
    /* Check before trusting: a launcher's mistake (a file, a UDP socket, a
     * socket nobody called listen() on) must stop start-up with a clear
     * error, not turn into a loop that never accepts. */
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
        int rc = -errno;
        log_warn("inherited fd %d is not a socket", fd);
        close(fd);
        return rc;
    }
    len = sizeof(acc);
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) != 0 ||
        sa.sun_family != AF_UNIX || type != SOCK_STREAM) {
        log_warnx("inherited fd %d is not a Unix stream socket", fd);
        close(fd);
        return -ENOTSOCK;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0 || !acc) {
        log_warnx("inherited socket (fd %d) is not listening", fd);
        close(fd);
        return -EINVAL;
    }
    /* The listening socket must not reach workers (a task could accept
     * the daemon's clients). */
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
        int rc = -errno;
        log_warn("fcntl FD_CLOEXEC on the inherited socket");
        close(fd);
        return rc;
    }
    int rc = uv_pipe_init(d->loop, &s->listener, 0);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    s->listener.data = s;
    s->open_handles++;
    s->listening = true;
    /* From here fd belongs to the listener handle: server_close closes it.
     * s->path stays NULL: whoever created the path owns it, so it is
     * neither chmod'ed nor unlinked. */
    rc = uv_pipe_open(&s->listener, fd);
    if (rc != 0) {
        log_warnx("cannot use the inherited socket: %s", uv_strerror(rc));
        close(fd);
        return rc;
    }
    /* listen() again only sets the backlog; SOMAXCONN keeps whatever depth
     * the launcher chose (systemd's default) rather than shrinking it. */
    rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, on_connection);
    if (rc != 0) {
        log_warnx("cannot listen on the inherited socket: %s", uv_strerror(rc));
        return rc;
    }
    if (salen > offsetof(struct sockaddr_un, sun_path) && sa.sun_path[0] != '\0')
        log_info("using the socket passed by socket activation: %.*s",
                 (int)(salen - offsetof(struct sockaddr_un, sun_path)), sa.sun_path);
    else
        log_info("using the socket passed by socket activation (fd %d)", fd);
    return 0;
}

static void
on_server_handle_closed(uv_handle_t *h)
{
    struct server *s = h->data;
    s->open_handles--;
    if (s->closing && s->open_handles == 0 && s->close_cb != NULL)
        s->close_cb(s);
}

void
server_close(struct server *s, void (*cb)(struct server *s))
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_cb = cb;
    if (s->path != NULL) {
        unlink(s->path);
    }
    while (s->conns != NULL)
        conn_close(s->conns);
    server_flush(s);
    uv_close((uv_handle_t *)&s->flush, on_server_handle_closed);
    if (s->listening)
        uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
}

void
server_free(struct server *s)
{
    if (s == NULL)
        return;
    free(s->path);
    free(s);
}
