/*
 * client/client_internal.h - libburst's private declarations, shared by its
 * files (conn.c: transport and events, solib.c: function libraries,
 * libburst.c: the public API) and by tests/test-client.c.  Never installed.
 */
#ifndef BURST_CLIENT_INTERNAL_H
#define BURST_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "burst.h"
#include "frame.h"
#include "msg.h"

/* How long a wait loop lets the socket stay silent before it asks for the
 * job's status itself: a safety net should an event ever be missed, not a
 * polling interval (events normally end the wait). */
#define CONN_WAIT_POLL_MS 5000

/* A subscription to one job's events on this connection.  Both the user
 * (burst_subscribe) and the library's own wait loops hold it; the daemon is
 * told to stop only when neither does. */
struct conn_sub {
    uint64_t job;
    uint64_t last_seq; /* newest event sequence number queued for this job */
    burst_event_cb cb; /* the user's, or NULL */
    void *arg;         /* borrowed: the user's */
    unsigned internal; /* how many library wait loops hold it */
    bool ended;        /* the job's final event came: the daemon ended it */
};

/* A wait loop in progress (burst_wait, burst_imap_unordered).  It lives on
 * the waiting function's stack and sees every event of its job as it is
 * delivered, in addition to the user's callback. */
struct conn_waiter {
    uint64_t job;
    void (*fn)(void *arg, const burst_event *ev);
    void *arg;                /* borrowed */
    struct conn_waiter *next; /* borrowed: the next waiter in the list */
};

struct burst_client {
    int fd;                            /* owned */
    uint64_t next_id;                  /* last request id used */
    struct frame_reader rd;            /* owned: bytes from the daemon */
    struct proto_limits limits;        /* the daemon's, from the hello reply */
    struct proto_limits decode_limits; /* what we accept in the daemon's replies */
    uint32_t uid;                      /* the uid the daemon saw */
    uint32_t revision;                 /* the daemon's PROTO_REVISION */
    bool admin;
    bool dead; /* the stream is unusable */
    int dead_code;
    char err[1024]; /* burst_last_error() */

    burst_event *q; /* owned ring of undelivered events */
    size_t qhead, qlen, qcap;
    struct conn_sub *subs; /* owned array */
    size_t nsubs, subcap;
    struct conn_waiter *waiters; /* borrowed: stack frames of wait loops */

    char (*uploaded)[65]; /* owned: libraries put on this connection */
    size_t nuploaded;
    struct solib_known *known; /* owned: [SOLIB_KNOWN_MAX], NULL until used */
    size_t nknown, known_next;
    long solib_settle_ms;      /* SOLIB_SETTLE_MS; tests lower it */
    unsigned long solib_reads; /* libraries read, for tests */
};

/* A decoded reply and the copy of its frame that its strings point into. */
struct conn_reply {
    struct proto_reply rep;
    char *payload; /* owned */
};

/* ---- conn.c --------------------------------------------------------------- */

/*
 * Connects a new client to the Unix socket at path (no hello yet).
 * Returns 0 and *out, or BURST_ECONNECT / -ENAMETOOLONG / -ENOMEM with a
 * message in err.
 */
int conn_open(const char *path, burst_client **out, char *err, size_t errsize);
void conn_free(burst_client *c);

/* Records a client-side error message for burst_last_error(); returns code. */
int conn_seterr(burst_client *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Sends req (its id is assigned here) and blocks until the reply with that
 * id arrives; events read meanwhile are queued.  On success returns 0 and
 * fills *out, to be released with conn_reply_release().  A refusal by the
 * daemon returns its code (the message is kept for burst_last_error());
 * nothing needs releasing then.
 */
int conn_call(burst_client *c, struct proto_request *req, struct conn_reply *out);
/* conn_call, and then(c, reply, arg) on a successful reply before any
 * frame that came after it is looked at (events that follow a reply may
 * be for what the reply created).  A negative return from then is the
 * call's (with its message set), and *out is released. */
int conn_call_then(burst_client *c, struct proto_request *req, struct conn_reply *out,
                   int (*then)(burst_client *c, const struct conn_reply *rep, void *arg),
                   void *arg);
void conn_reply_release(struct conn_reply *r);

/*
 * Reads what the socket has within timeout_ms (-1: block, 0: do not wait)
 * and queues the events among it.  Returns 1 when something was read, was
 * already buffered or events wait in the queue (a blocking read never waits
 * while there is something to deliver), 0 on timeout, or a negative code
 * when the connection died.
 */
int conn_read(burst_client *c, int timeout_ms);

/* Runs the callbacks of the queued events.  Returns how many events reached
 * a user callback. */
int conn_deliver(burst_client *c);

struct conn_sub *conn_sub_find(burst_client *c, uint64_t job);
/* Records the subscription a submission made ("subscribe": true) to job,
 * from its first event, for the user's cb (may be NULL) and, with hold,
 * an internal hold as conn_sub_hold() takes.  Sends nothing.  Returns 0 or
 * -ENOMEM. */
int conn_sub_adopt(burst_client *c, uint64_t job, burst_event_cb cb, void *arg,
                   bool hold);
/* Takes an internal hold on job's subscription, subscribing from from_seq if
 * nobody holds it yet.  Returns 0 or a code. */
int conn_sub_hold(burst_client *c, uint64_t job, uint64_t from_seq);
/* Drops an internal hold; unsubscribes when nobody holds it any more. */
int conn_sub_release(burst_client *c, uint64_t job);
/* The user's side of the same (burst_subscribe, burst_unsubscribe). */
int conn_sub_user(burst_client *c, uint64_t job, uint64_t from_seq, burst_event_cb cb,
                  void *arg);
int conn_sub_user_drop(burst_client *c, uint64_t job);

void conn_waiter_add(burst_client *c, struct conn_waiter *w);
void conn_waiter_remove(burst_client *c, struct conn_waiter *w);

/* Number of events queued but not yet delivered. */
size_t conn_pending(const burst_client *c);

/* ---- solib.c -------------------------------------------------------------- */

/*
 * A library this connection has read, checked for a symbol and hashed, and
 * the identity of the file it read: a later submission of the same path
 * and symbol whose file still has that identity reuses the hash instead of
 * reading and hashing the whole library again.  Any write to a file
 * changes its ctime, but only to the kernel's coarse clock: a file changed
 * within one tick of the read would keep the identity that was read.  So a
 * file is remembered only once its ctime is SOLIB_SETTLE_MS in the past.
 */
struct solib_known {
    char *path;   /* owned */
    char *symbol; /* owned */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    char hash[65];
};
#define SOLIB_KNOWN_MAX 16
#define SOLIB_SETTLE_MS 2000

/* The hash of path when this connection knows its current file to hold
 * symbol, else NULL. */
const char *solib_known_hash(burst_client *c, const char *path, const char *symbol);
/* Remembers that the file st describes, at path, holds symbol and hashes to
 * hash, when its last change is settled (else does nothing). */
void solib_known_add(burst_client *c, const char *path, const char *symbol,
                     const struct stat *st, const char *hash);
void solib_known_free(burst_client *c);

/*
 * Reads the whole file at path into *data (malloc'ed, caller frees).
 * Files above max bytes are refused with BURST_ETOOBIG.  On failure returns
 * BURST_EINPUT (unreadable), BURST_ETOOBIG or -ENOMEM and writes a message
 * such as "cannot read lib.so: No such file or directory" into err.  st,
 * when not NULL, receives the file's status as it was opened.
 */
int solib_read(const char *path, size_t max, char **data, size_t *len, struct stat *st,
               char *err, size_t errsize);

/* Writes the lowercase hex SHA-256 of data into hex.  Returns 0 or -ENOMEM. */
int solib_sha256_hex(const void *data, size_t len, char hex[65]);

/*
 * Looks symbol up in the .dynsym section of the ELF image data.  Returns 0
 * when it is a defined function (STT_FUNC or STT_GNU_IFUNC, global or weak),
 * BURST_ENOSYM when it is not, or -ENOEXEC when data is not a well-formed
 * ELF shared library.  Never reads outside data.
 */
int solib_find_symbol(const void *data, size_t len, const char *symbol);

/* True when s is a C identifier of 1..255 bytes. */
bool solib_symbol_valid(const char *s);

#endif /* BURST_CLIENT_INTERNAL_H */
