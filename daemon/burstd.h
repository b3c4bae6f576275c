/*
 * daemon/burstd.h - the daemon's parts and who holds them.
 *
 * main.c builds one struct burstd and hands it to every module; each module
 * owns its own state and reaches the others only through their headers.
 * The flow of a request is one way (DESIGN.md "How a job flows"):
 * server.c (socket) -> api.c (protocol) -> ledger.c -> sched.c ->
 * compute/storage backends -> sched.c -> ledger.c -> events.c -> server.c.
 */
#ifndef BURST_DAEMON_BURSTD_H
#define BURST_DAEMON_BURSTD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config.h"

struct ledger;
struct storage;
struct compute;
struct sched;
struct events;
struct server;

/* A wait for the next commit (burstd_after_commit); the waiter's memory. */
struct burstd_waiter {
    void (*cb)(void *arg, int rc);
    void *arg;
    struct burstd_waiter *next;
};

struct burstd {
    uv_loop_t *loop;         /* borrowed: the default loop */
    struct config *cfg;      /* borrowed from main */
    struct ledger *ledger;   /* owned */
    struct storage *storage; /* owned */
    struct compute *compute; /* owned */
    struct sched *sched;     /* owned */
    struct events *events;   /* owned */
    struct server *server;   /* owned */
    uid_t uid;               /* the daemon's own uid: an admin of itself */
    bool has_admin_gid;
    gid_t admin_gid;               /* members see and steer every job */
    bool stopping;                 /* SIGTERM received */
    struct burstd_waiter *waiters; /* for the next commit, newest first */
    uv_prepare_t tick;             /* commits the ledger once per loop iteration */
};

/* Milliseconds since the epoch (the ledger's clock). */
int64_t burstd_now_ms(void);

/* Commits the ledger (appending pending events first) and publishes the
 * events to subscribers.  Called at the end of every loop iteration and
 * before any acknowledgment that promises durability.  Returns 0 or
 * BURST_ELEDGER. */
int burstd_commit(struct burstd *d);

/* Undoes the open transaction after a failed write: rolls it back, drops
 * its events, makes the scheduler re-read the ledger, and tells every
 * waiter rc. */
void burstd_abort(struct burstd *d, int rc);

/*
 * Calls cb(arg, rc) right after the next burstd_commit(), whoever makes it
 * (normally the one at the end of this loop iteration): rc 0 once what the
 * caller wrote to the ledger is durable, else the error that undid it.  So
 * acknowledgments that arrive together share one commit and one fsync
 * (group commit) instead of one each.  w belongs to the caller and must
 * stay alive until cb runs.
 */
void burstd_after_commit(struct burstd *d, struct burstd_waiter *w,
                         void (*cb)(void *arg, int rc), void *arg);

#endif /* BURST_DAEMON_BURSTD_H */
