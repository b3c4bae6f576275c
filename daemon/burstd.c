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

int
burstd_commit(struct burstd *d)
{
    /* Said once per change of health, not once per loop iteration. */
    static bool failing;
    int rc = events_flush_to_ledger(d->events);
    if (rc == 0)
        rc = ledger_commit(d->ledger);
    if (rc != 0) {
        /* The transaction is gone; so are the events that were in it. */
        ledger_rollback(d->ledger);
        events_discard(d->events);
        if (!failing)
            log_warnx("the ledger cannot be written (%s): new jobs are refused and "
                      "progress is held until it can; reads still work",
                      burst_strerror(rc));
        failing = true;
        if (d->sched != NULL)
            sched_resync(d->sched);
        return rc;
    }
    if (failing)
        log_info("the ledger can be written again");
    failing = false;
    events_publish(d->events);
    return 0;
}
