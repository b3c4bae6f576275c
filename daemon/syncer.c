/*
 * daemon/syncer.c - the ledger's sync threads (syncer.h).
 */
#include "syncer.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* One thread and the sync it runs.  Fields under syncer.mu unless said. */
struct sync_slot {
    struct syncer *s;
    uv_thread_t thread;
    uv_cond_t cv; /* a request or quit for this thread: waking only the one
                   * thread a sync is for keeps the others off the mutex */
    bool started; /* the thread exists (loop thread only) */
    int fd;
    uint64_t tag;
    bool requested; /* a sync for the thread to start */
    bool finished;  /* a sync the loop has not heard of */
    int err;
    bool busy; /* loop thread only: requested and not delivered */
};

struct syncer {
    uv_loop_t *loop;
    uv_mutex_t mu;
    uv_cond_t done_cv; /* a sync finished (for syncer_wait) */
    uv_async_t async; /* the threads' "done" to the loop */
    void (*done)(void *arg, uint64_t tag, int err);
    void *arg;
    /* syncer_written's tag: stored after the write it tags returned, so a
     * thread that loads it before its fdatasync syncs that write */
    _Atomic uint64_t written;
    bool quit; /* under mu */
    struct sync_slot slot[SYNCER_SLOTS];
};

static void
sync_thread(void *arg)
{
    struct sync_slot *t = arg;
    struct syncer *s = t->s;
    uv_mutex_lock(&s->mu);
    for (;;) {
        while (!t->requested && !s->quit)
            uv_cond_wait(&t->cv, &s->mu);
        if (s->quit)
            break;
        int fd = t->fd;
        uint64_t tag = t->tag;
        t->requested = false;
        uv_mutex_unlock(&s->mu);
        uint64_t written = atomic_load_explicit(&s->written, memory_order_acquire);
        if (written > tag)
            tag = written;
        int err = fdatasync(fd) != 0 ? errno : 0;
        uv_mutex_lock(&s->mu);
        t->tag = tag;
        t->err = err;
        t->finished = true;
        uv_cond_signal(&s->done_cv);
        uv_async_send(&s->async);
    }
    uv_mutex_unlock(&s->mu);
}

/* Hands every finished sync to done, once each, oldest tag first.  Returns
 * how many. */
static int
deliver(struct syncer *s)
{
    int n = 0;
    for (;;) {
        struct sync_slot *first = NULL;
        uv_mutex_lock(&s->mu);
        for (int i = 0; i < SYNCER_SLOTS; i++) {
            struct sync_slot *t = &s->slot[i];
            if (t->finished && (first == NULL || t->tag < first->tag))
                first = t;
        }
        uint64_t tag = 0;
        int err = 0;
        if (first != NULL) {
            first->finished = false;
            tag = first->tag;
            err = first->err;
        }
        uv_mutex_unlock(&s->mu);
        if (first == NULL)
            return n;
        first->busy = false;
        n++;
        s->done(s->arg, tag, err); /* may start another sync */
    }
}

static void
on_async(uv_async_t *h)
{
    deliver(h->data);
}

/* Ends the threads, after the syncs they may be in. */
static void
threads_stop(struct syncer *s)
{
    uv_mutex_lock(&s->mu);
    s->quit = true;
    for (int i = 0; i < SYNCER_SLOTS; i++)
        if (s->slot[i].started)
            uv_cond_signal(&s->slot[i].cv);
    uv_mutex_unlock(&s->mu);
    for (int i = 0; i < SYNCER_SLOTS; i++)
        if (s->slot[i].started)
            uv_thread_join(&s->slot[i].thread);
}

int
syncer_new(uv_loop_t *loop, void (*done)(void *arg, uint64_t tag, int err), void *arg,
           struct syncer **out)
{
    struct syncer *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->loop = loop;
    s->done = done;
    s->arg = arg;
    int rc = uv_mutex_init(&s->mu);
    if (rc != 0)
        goto fail_free;
    int ncv = 0;
    if ((rc = uv_cond_init(&s->done_cv)) != 0)
        goto fail_mutex;
    while (ncv < SYNCER_SLOTS && (rc = uv_cond_init(&s->slot[ncv].cv)) == 0)
        ncv++;
    if (rc != 0)
        goto fail_cond;
    /* The threads first: they touch the handle only after a request, and a
     * handle never initialized needs no closing on the way out. */
    for (int i = 0; i < SYNCER_SLOTS; i++) {
        s->slot[i].s = s;
        if ((rc = uv_thread_create(&s->slot[i].thread, sync_thread, &s->slot[i])) != 0) {
            threads_stop(s);
            goto fail_cond;
        }
        s->slot[i].started = true;
    }
    if ((rc = uv_async_init(loop, &s->async, on_async)) != 0) {
        threads_stop(s);
        goto fail_cond;
    }
    s->async.data = s;
    /* The threads' wake-ups alone must not keep the loop running. */
    uv_unref((uv_handle_t *)&s->async);
    *out = s;
    return 0;
fail_cond:
    while (ncv > 0)
        uv_cond_destroy(&s->slot[--ncv].cv);
    uv_cond_destroy(&s->done_cv);
fail_mutex:
    uv_mutex_destroy(&s->mu);
fail_free:
    free(s);
    return rc;
}

void
syncer_start(struct syncer *s, int fd, uint64_t tag)
{
    struct sync_slot *t = NULL;
    for (int i = 0; i < SYNCER_SLOTS && t == NULL; i++)
        if (!s->slot[i].busy)
            t = &s->slot[i];
    if (t == NULL)
        abort(); /* the caller asks syncer_busy first */
    t->busy = true;
    uv_mutex_lock(&s->mu);
    t->fd = fd;
    t->tag = tag;
    t->requested = true;
    uv_cond_signal(&t->cv);
    uv_mutex_unlock(&s->mu);
}

void
syncer_written(struct syncer *s, uint64_t tag)
{
    atomic_store_explicit(&s->written, tag, memory_order_release);
}

bool
syncer_busy(const struct syncer *s)
{
    for (int i = 0; i < SYNCER_SLOTS; i++)
        if (!s->slot[i].busy)
            return false;
    return true;
}

static bool
any_busy(const struct syncer *s)
{
    for (int i = 0; i < SYNCER_SLOTS; i++)
        if (s->slot[i].busy)
            return true;
    return false;
}

void
syncer_wait(struct syncer *s)
{
    if (s == NULL)
        return;
    while (any_busy(s)) {
        uv_mutex_lock(&s->mu);
        for (;;) {
            bool some = false;
            for (int i = 0; i < SYNCER_SLOTS; i++)
                some = some || s->slot[i].finished;
            if (some)
                break;
            uv_cond_wait(&s->done_cv, &s->mu);
        }
        uv_mutex_unlock(&s->mu);
        deliver(s);
    }
}

static void
on_closed(uv_handle_t *h)
{
    free(h->data);
}

void
syncer_free(struct syncer *s)
{
    if (s == NULL)
        return;
    threads_stop(s);
    for (int i = 0; i < SYNCER_SLOTS; i++)
        uv_cond_destroy(&s->slot[i].cv);
    uv_cond_destroy(&s->done_cv);
    uv_mutex_destroy(&s->mu);
    uv_close((uv_handle_t *)&s->async, on_closed);
}
