/*
 * daemon/server.h - the Unix-socket server: listening, connections, framing,
 * and the write side.  Each complete frame is handed to api.c; replies and
 * events come back through conn_send().  Peer identity comes from
 * SO_PEERCRED at accept time and never from the wire.
 */
#ifndef BURST_DAEMON_SERVER_H
#define BURST_DAEMON_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "frame.h"
#include "msg.h"

struct burstd;
struct server;
struct write_req;

/* A job a connection asked to cancel when it goes away. */
struct conn_job {
    uint64_t job;
    struct conn_job *next;
};

struct conn {
    uv_pipe_t pipe;           /* the client socket; pipe.data = this */
    struct server *server;    /* borrowed */
    uint64_t serial;          /* for log lines */
    uid_t uid;                /* from SO_PEERCRED */
    pid_t pid;
    bool admin;               /* root, the daemon's uid, or the admin group */
    bool hello;               /* said hello with a supported version */
    bool closing;
    bool paused;              /* an asynchronous request is in progress */
    bool reading;             /* uv_read_start'ed */
    bool eof;                 /* the client ended while paused: close on resume */
    bool dirty;               /* on the server's list of conns to flush */
    bool broken;              /* a write failed: nothing more is written */
    unsigned busy;            /* async operations that still point at this conn */
    struct frame_reader reader;
    uv_timer_t idle;          /* drops a client stuck mid-frame */
    struct conn_job *cancel_jobs; /* owned list */
    uint32_t nsubs;           /* jobs subscribed to; kept by events.c */
    uint64_t last_active;     /* uv_now() of the last request; for eviction */
    unsigned corks;           /* conn_cork()s not yet undone */
    /* owned: frames not yet handed to the socket, in order; written at the
     * end of the loop iteration, except those queued while corked */
    struct write_req *out, *out_last;
    /* While corked: the last frame queued before the first cork, which may
     * still go (NULL: none may) */
    struct write_req *cork_last;
    size_t out_bytes;
    struct conn *dirty_next;  /* the server's list of conns to flush */
    struct conn *prev, *next; /* the server's list */
};

int server_new(struct burstd *d, struct server **out);
/* Binds path (0600, or 0660 with the config's socket_group; refusing to
 * steal a live daemon's socket) and listens. */
int server_listen(struct server *s, const char *path);

/* The first fd of socket activation (sd_listen_fds' SD_LISTEN_FDS_START). */
#define SERVER_LISTEN_FDS_START 3
/*
 * Socket activation, by hand: returns SERVER_LISTEN_FDS_START when
 * $LISTEN_PID is this process and $LISTEN_FDS >= 1, else -1.  Removes
 * LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from the environment in every
 * case, so call it before any worker starts.  Extra fds are marked
 * close-on-exec and otherwise ignored.
 */
int server_activation_fd(void);
/*
 * Serves on fd, an inherited socket someone else bound and listens on.
 * Checks it is a listening AF_UNIX stream socket, marks it close-on-exec
 * and opens it with uv_pipe_open.  The path belongs to whoever created it:
 * it is never chmod'ed or unlinked.  Takes fd in every case (closed on
 * error, or later by server_close).  Returns 0 or a negative code, logged.
 */
int server_listen_fd(struct server *s, int fd);
/* Stops accepting and closes every connection; cb runs when all are closed. */
void server_close(struct server *s, void (*cb)(struct server *s));
void server_free(struct server *s);
uint32_t server_connections(const struct server *s);

/* Queues the frames in buf for writing; takes buf's memory (buf is left
 * empty).  Returns 0 or a negative code (the conn is then being closed).
 * What a loop iteration queues for one conn goes out in one writev when
 * the iteration's callbacks are done (server_flush), so that a reply and
 * the events that follow it wake the client once. */
int conn_send(struct conn *c, struct proto_buf *buf);
/* Writes what every conn has queued.  Runs by itself after each poll
 * phase; call it after work done outside the poll phase (main.c's tick),
 * before the loop blocks. */
void server_flush(struct server *s);
/* Holds back what conn_send queues from now on (in order, counted against
 * the unsent limit) until as many conn_uncork()s; what was queued before
 * still goes.  Keeps the conn's memory meanwhile.  For replies built from
 * state that is not durable yet (burstd.h). */
void conn_cork(struct conn *c);
void conn_uncork(struct conn *c);
/* Encodes and sends an error reply. */
void conn_send_error(struct conn *c, uint64_t re, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* An async request holds the conn: no frame is handed to api.c until
 * conn_resume, and the memory stays until the matching conn_release.  Bytes
 * that arrive meanwhile are read into the free end of the frame buffer;
 * the frame being handled stays where it is, and reading stops once that
 * end is full. */
void conn_hold(struct conn *c);
void conn_release(struct conn *c);
void conn_resume(struct conn *c);
/* Closes the connection (through uv_close; memory is freed later). */
void conn_close(struct conn *c);

#endif /* BURST_DAEMON_SERVER_H */
