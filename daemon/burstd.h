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

struct burstd {
    uv_loop_t *loop;          /* borrowed: the default loop */
    struct config *cfg;       /* borrowed from main */
    struct ledger *ledger;    /* owned */
    struct storage *storage;  /* owned */
    struct compute *compute;  /* owned */
    struct sched *sched;      /* owned */
    struct events *events;    /* owned */
    struct server *server;    /* owned */
    uid_t uid;                /* the daemon's own uid: an admin of itself */
    bool has_admin_gid;
    gid_t admin_gid;          /* members see and steer every job */
    bool stopping;            /* SIGTERM received */
    uv_prepare_t tick;        /* commits the ledger once per loop iteration */
};

/* Milliseconds since the epoch (the ledger's clock). */
int64_t burstd_now_ms(void);

/* Commits the ledger (appending pending events first) and publishes the
 * events to subscribers.  Called at the end of every loop iteration and
 * before any acknowledgment that promises durability.  Returns 0 or
 * BURST_ELEDGER. */
int burstd_commit(struct burstd *d);

#endif /* BURST_DAEMON_BURSTD_H */
