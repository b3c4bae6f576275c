/*
 * daemon/syncer.c - the ledger's sync thread (syncer.h).
 */
#include "syncer.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

struct syncer {
    uv_loop_t *loop;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    uv_async_t async; /* the thread's "done" to the loop */
    void (*done)(void *arg, int err);
    void *arg;
    /* Under mu. */
    int fd;
    bool requested; /* a sync for the thread to start */
    bool finished;  /* a sync the loop has not heard of */
    bool quit;
    int err;
    /* Loop thread only. */
    bool busy;
};

static void
sync_thread(void *arg)
{
    struct syncer *s = arg;
    uv_mutex_lock(&s->mu);
    for (;;) {
        while (!s->requested && !s->quit)
            uv_cond_wait(&s->cv, &s->mu);
        if (s->quit)
            break;
        int fd = s->fd;
        s->requested = false;
        uv_mutex_unlock(&s->mu);
        int err = fdatasync(fd) != 0 ? errno : 0;
        uv_mutex_lock(&s->mu);
        s->err = err;
        s->finished = true;
        uv_cond_broadcast(&s->cv);
        uv_async_send(&s->async);
    }
    uv_mutex_unlock(&s->mu);
}

/* Hands a finished sync to done, once. */
static void
deliver(struct syncer *s)
{
    uv_mutex_lock(&s->mu);
    bool finished = s->finished;
    int err = s->err;
    s->finished = false;
    uv_mutex_unlock(&s->mu);
    if (!finished)
        return;
    s->busy = false;
    s->done(s->arg, err);
}

static void
on_async(uv_async_t *h)
{
    deliver(h->data);
}

/* Ends the thread, after the sync it may be in. */
static void
thread_stop(struct syncer *s)
{
    uv_mutex_lock(&s->mu);
    s->quit = true;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
}

int
syncer_new(uv_loop_t *loop, void (*done)(void *arg, int err), void *arg,
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
    if ((rc = uv_cond_init(&s->cv)) != 0)
        goto fail_mutex;
    /* The thread first: it touches the handle only after a request, and a
     * handle never initialized needs no closing on the way out. */
    if ((rc = uv_thread_create(&s->thread, sync_thread, s)) != 0)
        goto fail_cond;
    if ((rc = uv_async_init(loop, &s->async, on_async)) != 0) {
        thread_stop(s);
        goto fail_cond;
    }
    s->async.data = s;
    /* The thread's wake-up alone must not keep the loop running. */
    uv_unref((uv_handle_t *)&s->async);
    *out = s;
    return 0;
fail_cond:
    uv_cond_destroy(&s->cv);
fail_mutex:
    uv_mutex_destroy(&s->mu);
fail_free:
    free(s);
    return rc;
}

void
syncer_start(struct syncer *s, int fd)
{
    s->busy = true;
    uv_mutex_lock(&s->mu);
    s->fd = fd;
    s->requested = true;
    uv_cond_signal(&s->cv);
    uv_mutex_unlock(&s->mu);
}

bool
syncer_busy(const struct syncer *s)
{
    return s->busy;
}

void
syncer_wait(struct syncer *s)
{
    if (s == NULL || !s->busy)
        return;
    uv_mutex_lock(&s->mu);
    while (!s->finished)
        uv_cond_wait(&s->cv, &s->mu);
    uv_mutex_unlock(&s->mu);
    deliver(s);
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
    thread_stop(s);
    uv_cond_destroy(&s->cv);
    uv_mutex_destroy(&s->mu);
    uv_close((uv_handle_t *)&s->async, on_closed);
}
