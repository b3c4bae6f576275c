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
struct burstd_pending;
struct syncer;

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
    struct burstd_waiter *written; /* for the next commit's write, newest first */
    uv_prepare_t tick;             /* commits the ledger once per loop iteration */
    /* Commits whose fdatasync runs on a thread (ledger_defer_sync), oldest
     * first, numbered: commit_seq is the last number given, sync_seq the
     * last commit a sync in flight (or done) covers. */
    struct burstd_pending *pending, *pending_last;
    uint64_t commit_seq, sync_seq;
    /* The newest commit someone waits for (or may soon): a sync must cover
     * it now.  Commits after it wait for the next such sync, or for
     * sync_timer. */
    uint64_t urgent_seq;
    /* The newest commit with progress somebody follows (EVENTS_SYNC_SOON):
     * sync_timer fires within SYNC_SOON_MS for it. */
    uint64_t soon_seq;
    uv_timer_t sync_timer;
    bool sync_timer_ready; /* initialised (and not yet closed) */
    /* The ledger's job id bound as of the last durable commit: jobs with
     * ids up to it may run before their own commit is durable. */
    uint64_t ids_durable;
    /* A burstd_after_write callback handed the scheduler a job: the tick
     * runs the scheduler again rather than wait for the next iteration. */
    bool sched_again;
    /* api.c: keys of function libraries known to be in storage (malloc'ed
     * on first use, freed at exit). */
    char (*fns_seen)[128];
    struct syncer *syncer; /* owned; calls burstd_sync_done */
};

/* Milliseconds since the epoch (the ledger's clock). */
int64_t burstd_now_ms(void);

/*
 * Commits the ledger (appending pending events first).  Called at the end
 * of every loop iteration and where a request must know at once whether
 * its write took.  When the ledger syncs apart (ledger_defer_sync), the
 * commit returns once SQLite has the transaction, and a thread fdatasyncs
 * the WAL while the loop goes on; the commit's events reach subscribers and
 * its waiters run only after that sync, so nobody hears of a change a
 * crash could undo.  A failed sync stops burstd (fatal): the page cache no
 * longer says what is on disk, and only a restart from the ledger does.
 * Returns 0 or BURST_ELEDGER (the COMMIT itself failed: rolled back).
 */
int burstd_commit(struct burstd *d);

/* Makes every commit so far durable before returning (blocks): for the
 * last commit before exit. */
void burstd_sync_now(struct burstd *d);
/* The syncer's done (syncer.h): arg is the struct burstd. */
void burstd_sync_done(void *arg, uint64_t seq, int err);

/* Nothing written that is not durable yet: no open transaction, no queued
 * events, no commit waiting for its sync.  A reply built from the daemon's
 * state may go out at once only then. */
bool burstd_is_durable(const struct burstd *d);

/* Calls cb(arg, rc) once everything written so far is durable: after the
 * next commit if a transaction is open, else after the sync of the last
 * commit.  Only when !burstd_is_durable(d).  w as for burstd_after_commit. */
void burstd_after_durable(struct burstd *d, struct burstd_waiter *w,
                          void (*cb)(void *arg, int rc), void *arg);

/* Undoes the open transaction after a failed write: rolls it back, drops
 * its events, makes the scheduler re-read the ledger, and tells every
 * waiter rc. */
void burstd_abort(struct burstd *d, int rc);

/* At shutdown: every commit from now on is synced at once, and the
 * deferred-sync timer is closed (after starting the sync it waited for). */
void burstd_stop_lazy_sync(struct burstd *d);

/*
 * Calls cb(arg, rc) after the next burstd_commit(), whoever makes it
 * (normally the one at the end of this loop iteration), once it is durable:
 * rc 0 once what the caller wrote to the ledger is durable, else the error
 * that undid it.  So
 * acknowledgments that arrive together share one commit and one fsync
 * (group commit) instead of one each.  w belongs to the caller and must
 * stay alive until cb runs.
 */
void burstd_after_commit(struct burstd *d, struct burstd_waiter *w,
                         void (*cb)(void *arg, int rc), void *arg);

/*
 * Calls cb(arg) right after the next burstd_commit() has written the
 * transaction, before it is durable, so that work can start while the disk
 * syncs.  Only for what a crash may undo without anyone having been told:
 * nothing a client sees may come from cb.  Not called when the commit
 * fails (the after_commit waiters hear of that).  w as for
 * burstd_after_commit, and not the same waiter.
 */
void burstd_after_write(struct burstd *d, struct burstd_waiter *w, void (*cb)(void *arg, int rc),
                        void *arg);

#endif /* BURST_DAEMON_BURSTD_H */
