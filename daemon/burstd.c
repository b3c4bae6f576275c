/*
 * daemon/burstd.c - what ties an iteration of the loop together: the clock
 * and the commit that makes an iteration's changes durable before anyone
 * hears of them.
 */
#include "burstd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "burst.h"
#include "events.h"
#include "ledger.h"
#include "log.h"
#include "scheduler.h"
#include "server.h"
#include "syncer.h"

int64_t
burstd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sync_kick(struct burstd *d);

/* A commit waiting for its sync: what to tell once it is durable. */
struct burstd_pending {
    uint64_t seq;                  /* commits are numbered from 1 */
    uint64_t ids_bound;            /* the ledger's job id bound at this commit */
    struct burstd_waiter *waiters; /* newest first */
    struct events_batch *events;
    struct burstd_pending *next;
};

void
burstd_after_commit(struct burstd *d, struct burstd_waiter *w,
                    void (*cb)(void *arg, int rc), void *arg)
{
    w->cb = cb;
    w->arg = arg;
    w->next = d->waiters;
    d->waiters = w;
}

void
burstd_after_write(struct burstd *d, struct burstd_waiter *w, void (*cb)(void *arg, int rc),
                   void *arg)
{
    w->cb = cb;
    w->arg = arg;
    w->next = d->written;
    d->written = w;
}

/* Tells every waiter of a newest-first list how it went, oldest first;
 * waiters that callbacks register wait for a later commit. */
static void
waiters_run_list(struct burstd_waiter *w, int rc)
{
    struct burstd_waiter *fifo = NULL;
    while (w != NULL) {
        struct burstd_waiter *next = w->next;
        w->next = fifo;
        fifo = w;
        w = next;
    }
    while (fifo != NULL) {
        struct burstd_waiter *next = fifo->next;
        fifo->cb(fifo->arg, rc); /* may free fifo */
        fifo = next;
    }
}

static void
waiters_run(struct burstd *d, int rc)
{
    struct burstd_waiter *w = d->waiters;
    d->waiters = NULL;
    waiters_run_list(w, rc);
}

bool
burstd_is_durable(const struct burstd *d)
{
    return d->pending == NULL && !ledger_in_txn(d->ledger) && !events_queued(d->events);
}

void
burstd_after_durable(struct burstd *d, struct burstd_waiter *w,
                     void (*cb)(void *arg, int rc), void *arg)
{
    if (ledger_in_txn(d->ledger) || events_queued(d->events) || d->pending_last == NULL) {
        burstd_after_commit(d, w, cb, arg);
        return;
    }
    w->cb = cb;
    w->arg = arg;
    w->next = d->pending_last->waiters;
    d->pending_last->waiters = w;
    d->urgent_seq = d->pending_last->seq;
    sync_kick(d);
}

void
burstd_abort(struct burstd *d, int rc)
{
    /* The transaction is gone; so are the events that were in it. */
    ledger_rollback(d->ledger);
    events_discard(d->events);
    d->written = NULL; /* nothing was written; the waiters below say so */
    if (d->sched != NULL)
        sched_resync(d->sched);
    waiters_run(d, rc);
}

/* Every commit up to number seq is durable: tell their waiters and
 * subscribers, oldest commit first. */
static void
pending_done(struct burstd *d, uint64_t seq)
{
    while (d->pending != NULL && d->pending->seq <= seq) {
        struct burstd_pending *p = d->pending;
        d->pending = p->next;
        if (d->pending == NULL)
            d->pending_last = NULL;
        if (p->ids_bound > d->ids_durable)
            d->ids_durable = p->ids_bound;
        events_publish_batch(d->events, p->events);
        struct burstd_waiter *w = p->waiters;
        free(p);
        waiters_run_list(w, 0);
    }
}

static void
sync_fatal(int err)
{
    fatalx("the ledger's sync to disk failed (%s): stopping, since what the disk holds is "
           "no longer known; the restart recovers from the ledger, and nothing of what "
           "was not synced was acknowledged",
           strerror(err));
}

static void sync_start(struct burstd *d);

void
burstd_sync_done(void *arg, uint64_t seq, int err)
{
    struct burstd *d = arg;
    if (err != 0)
        sync_fatal(err);
    /* A sync started after commit seq was written: it and all before it are
     * durable, whether the syncs started earlier have ended or not. */
    pending_done(d, seq);
    if (seq > d->sync_seq)
        d->sync_seq = seq; /* it covered more than it was asked to */
    sync_kick(d);
    /* The replies and events it released go out now, not after whatever
     * else this poll phase handles. */
    if (d->server != NULL)
        server_flush(d->server);
}

/* Starts a sync covering every commit so far, unless one in flight already
 * does or every sync thread is busy (the commits meanwhile share the next
 * sync: group commit across syncs). */
static void
sync_start(struct burstd *d)
{
    if (d->pending_last == NULL || d->pending_last->seq <= d->sync_seq ||
        syncer_busy(d->syncer))
        return;
    int fd = ledger_sync_fd(d->ledger);
    if (fd < 0)
        sync_fatal(EIO);
    d->sync_seq = d->pending_last->seq;
    syncer_start(d->syncer, fd, d->sync_seq);
}

/* A commit nobody waits for yet is synced with a later one that somebody
 * does, or after this long at the latest: the disk completes syncs one
 * after another, so one less ahead of an awaited commit's sync is that
 * much sooner an answer. */
#define SYNC_LAZY_MS 10
/* Progress somebody follows (EVENTS_SYNC_SOON) is synced after this long
 * at the latest: a job of short tasks then costs a sync per few task
 * ends, not one each (bench B2), and a follower hears of each end at
 * most this much later. */
#define SYNC_SOON_MS 5

static void
on_sync_timer(uv_timer_t *t)
{
    struct burstd *d = t->data;
    d->urgent_seq = d->commit_seq;
    sync_kick(d);
}

/* Starts the sync that commits waited for need, or else arms the timer
 * for those nobody waits for. */
static void
sync_kick(struct burstd *d)
{
    if (d->urgent_seq > d->sync_seq) {
        sync_start(d);
        return;
    }
    if (d->pending_last == NULL || d->pending_last->seq <= d->sync_seq)
        return;
    if (!d->sync_timer_ready) {
        if (d->stopping) {
            sync_start(d);
            return;
        }
        uv_timer_init(d->loop, &d->sync_timer);
        d->sync_timer.data = d;
        d->sync_timer_ready = true;
    }
    uint64_t within = d->soon_seq > d->sync_seq ? SYNC_SOON_MS : SYNC_LAZY_MS;
    if (!uv_is_active((uv_handle_t *)&d->sync_timer) ||
        uv_timer_get_due_in(&d->sync_timer) > within)
        uv_timer_start(&d->sync_timer, on_sync_timer, within, 0);
}

void
burstd_stop_lazy_sync(struct burstd *d)
{
    d->urgent_seq = d->commit_seq;
    sync_kick(d);
    if (d->sync_timer_ready) {
        uv_close((uv_handle_t *)&d->sync_timer, NULL);
        d->sync_timer_ready = false;
    }
}

void
burstd_sync_now(struct burstd *d)
{
    syncer_wait(d->syncer); /* those in flight, and any their dones start */
    if (d->pending == NULL)
        return;
    int fd = ledger_sync_fd(d->ledger);
    if (fd < 0 || fdatasync(fd) != 0)
        sync_fatal(fd < 0 ? EIO : errno);
    pending_done(d, d->pending_last->seq);
}

int
burstd_commit(struct burstd *d)
{
    /* Said once per change of health, not once per loop iteration. */
    static bool failing;
    bool deferred = ledger_sync_deferred(d->ledger);
    bool wrote = ledger_txn_changed(d->ledger) || events_queued(d->events);
    struct burstd_pending *p = NULL;
    int rc = 0;
    if (deferred && wrote && (p = calloc(1, sizeof(*p))) == NULL)
        rc = -ENOMEM; /* no room to wait for the sync: as if the write failed */
    if (rc == 0)
        rc = events_flush_to_ledger(d->events);
    if (rc == 0)
        rc = ledger_commit(d->ledger);
    if (rc != 0) {
        if (!failing)
            log_warnx("the ledger cannot be written (%s): new jobs are refused and "
                      "progress is held until it can; reads still work",
                      burst_strerror(rc));
        failing = true;
        free(p);
        burstd_abort(d, rc);
        return rc;
    }
    if (failing)
        log_info("the ledger can be written again");
    failing = false;
    struct burstd_waiter *written = d->written;
    d->written = NULL;
    waiters_run_list(written, 0);
    if (!deferred) {
        /* The commit synced itself. */
        d->ids_durable = ledger_job_ids_bound(d->ledger);
        events_publish(d->events);
        waiters_run(d, 0);
        return 0;
    }
    if (!wrote) {
        /* Nothing new: the waiters saw what the last commit holds. */
        if (d->pending_last == NULL) {
            waiters_run(d, 0);
        } else if (d->waiters != NULL) {
            struct burstd_waiter *w = d->waiters, *tail = w;
            while (tail->next != NULL)
                tail = tail->next;
            tail->next = d->pending_last->waiters;
            d->pending_last->waiters = w;
            d->waiters = NULL;
            d->urgent_seq = d->pending_last->seq;
            sync_kick(d);
        }
        return 0;
    }
    p->seq = ++d->commit_seq;
    syncer_written(d->syncer, p->seq);
    p->ids_bound = ledger_job_ids_bound(d->ledger);
    p->waiters = d->waiters;
    d->waiters = NULL;
    p->events = events_detach(d->events);
    if (d->pending_last != NULL)
        d->pending_last->next = p;
    else
        d->pending = p;
    d->pending_last = p;
    enum events_need need = events_batch_need(d->events, p->events);
    if (d->stopping || p->waiters != NULL || p->ids_bound > d->ids_durable ||
        need == EVENTS_SYNC_NOW)
        d->urgent_seq = p->seq;
    else if (need == EVENTS_SYNC_SOON)
        d->soon_seq = p->seq;
    sync_kick(d);
    return 0;
}
