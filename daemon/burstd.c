/*
 * daemon/burstd.c - what ties an iteration of the loop together: the clock
 * and the commit that makes an iteration's changes durable before anyone
 * hears of them.
 */
#include "burstd.h"

#include <time.h>

#include "burst.h"
#include "events.h"
#include "ledger.h"
#include "log.h"
#include "scheduler.h"

int64_t
burstd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
burstd_after_commit(struct burstd *d, struct burstd_waiter *w,
                    void (*cb)(void *arg, int rc), void *arg)
{
    w->cb = cb;
    w->arg = arg;
    w->next = d->waiters;
    d->waiters = w;
}

/* Tells every waiter registered before this commit how it went, oldest
 * first; waiters that callbacks register wait for the next one. */
static void
waiters_run(struct burstd *d, int rc)
{
    struct burstd_waiter *w = d->waiters, *fifo = NULL;
    d->waiters = NULL;
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

void
burstd_abort(struct burstd *d, int rc)
{
    /* The transaction is gone; so are the events that were in it. */
    ledger_rollback(d->ledger);
    events_discard(d->events);
    if (d->sched != NULL)
        sched_resync(d->sched);
    waiters_run(d, rc);
}

int
burstd_commit(struct burstd *d)
{
    /* Said once per change of health, not once per loop iteration. */
    static bool failing;
    int rc = events_flush_to_ledger(d->events);
    if (rc == 0)
        rc = ledger_commit(d->ledger);
    if (rc != 0) {
        if (!failing)
            log_warnx("the ledger cannot be written (%s): new jobs are refused and "
                      "progress is held until it can; reads still work",
                      burst_strerror(rc));
        failing = true;
        burstd_abort(d, rc);
        return rc;
    }
    if (failing)
        log_info("the ledger can be written again");
    failing = false;
    events_publish(d->events);
    waiters_run(d, 0);
    return 0;
}
