/*
 * daemon/compute_local.c - the local compute backend: every invocation of a
 * dispatch is one burst-worker process on this machine (see compute.h for the
 * interface, worker/invoc.h for what a worker does, DESIGN.md for the flow).
 *
 * Each worker runs in its own session (UV_PROCESS_DETACHED), so its process
 * group id is its pid and kill(-pid) reaches everything it started: a
 * deadline, a cancel or the worker's own exit never leaves a task's children
 * running.  Workers get a filtered copy of the daemon's environment: the
 * daemon's own settings and anything that looks like a credential stay here.
 *
 * Callbacks never run inside submit: started_cb, and ended_cb for an
 * invocation that could not be started, are delivered from an idle handle on
 * a later turn of the loop; ended_cb otherwise runs from the exit callback.
 */
#include "compute.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "burst.h"
#include "log.h"

extern char **environ;

/* A circular doubly linked list with a sentinel head. */
struct cl_link {
    struct cl_link *prev, *next;
};

#define CL_CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void
link_init(struct cl_link *head)
{
    head->prev = head->next = head;
}

static bool
link_empty(const struct cl_link *head)
{
    return head->next == head;
}

static void
link_add_tail(struct cl_link *head, struct cl_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Removes l from its list; safe on a node that is in no list. */
static void
link_remove(struct cl_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

enum inv_state {
    INV_NEW,     /* not spawned yet */
    INV_RUNNING, /* the process is alive (or not reaped yet) */
    INV_FAILED,  /* could not be spawned; ended_cb pending */
    INV_ENDED,   /* ended_cb ran */
};

struct local_dispatch;

struct local_inv {
    uv_process_t proc; /* proc.data = this; closed when the worker exits */
    uv_timer_t timer;  /* timer.data = this; the deadline, then a cancel's grace */
    struct local_dispatch *ld; /* the owner of this array */
    uint32_t index;            /* JOB_INDEX */
    int pid;                   /* also the process group id */
    enum inv_state state;
    bool started_pending; /* started_cb is due */
    bool term_sent;       /* a cancel already sent SIGTERM */
    const char *why;      /* static string or why_buf: why it was ended */
    char why_buf[96];
};

/* A dispatch as this backend sees it.  Allocated by submit, freed when every
 * invocation has ended and every handle it initialized is closed. */
struct local_dispatch {
    struct cl_link link;   /* in cl->dispatches until the last ended_cb */
    struct cl_link notify; /* in cl->notify while callbacks are due */
    struct compute_local *cl;
    struct dispatch *d; /* borrowed from the scheduler; NULL after the last ended_cb */
    uint32_t ninv;
    uint32_t nended;
    unsigned refs; /* initialized handles not yet closed, plus callers on the stack */
    bool done;     /* no more callbacks: every invocation ended, or submit failed */
    struct local_inv inv[];
};

struct compute_local {
    struct compute base; /* first: a struct compute * is a struct compute_local * */
    char *worker_path;   /* owned */
    char *storage_url;   /* owned */
    char **env;          /* owned, NULL-terminated: the filtered daemon environment */
    size_t nenv;
    uv_idle_t idle;            /* delivers the callbacks submit must not make */
    struct cl_link dispatches; /* local_dispatch.link: invocations not all ended */
    struct cl_link notify;     /* local_dispatch.notify: callbacks due */
    unsigned nalive;           /* local_dispatch allocations not yet freed */
    uint32_t nrunning;         /* live worker processes */
    bool closing;
    void (*close_cb)(struct compute *c);
};

static const struct compute_ops compute_local_ops;

static bool
has_prefix_ci(const char *name, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);
    return len >= plen && strncasecmp(name, prefix, plen) == 0;
}

/* name is exactly word, or ends in "_" word. */
static bool
has_word_suffix_ci(const char *name, size_t len, const char *word)
{
    size_t wlen = strlen(word);
    if (len < wlen || strncasecmp(name + len - wlen, word, wlen) != 0)
        return false;
    return len == wlen || name[len - wlen - 1] == '_';
}

/*
 * Whether an environment entry ("NAME=value") must not reach a worker:
 * burstd's own settings (BURST_*, and JOB_INDEX which we set), and names
 * that look like credentials.  Guessing wrong on the side of hiding only
 * costs a task a variable; guessing wrong the other way leaks a key into
 * every task.
 */
static bool
env_hidden(const char *entry)
{
    static const char *const prefixes[] = {"BURST_", "AWS_", "IBM_", "COS_", "CE_"};
    static const char *const words[] = {"KEY", "SECRET", "TOKEN", "PASSWORD", "APIKEY"};
    const char *eq = strchr(entry, '=');
    if (eq == NULL || eq == entry)
        return true;
    size_t len = (size_t)(eq - entry);
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (has_prefix_ci(entry, len, prefixes[i]))
            return true;
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (has_word_suffix_ci(entry, len, words[i]))
            return true;
    }
    return len == strlen("JOB_INDEX") && strncasecmp(entry, "JOB_INDEX", len) == 0;
}

/* Copies the entries of environ a worker may see.  Returns 0 or -ENOMEM. */
static int
env_snapshot(struct compute_local *cl)
{
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        n++;
    cl->env = calloc(n + 1, sizeof(*cl->env));
    if (cl->env == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (env_hidden(environ[i]))
            continue;
        cl->env[cl->nenv] = strdup(environ[i]);
        if (cl->env[cl->nenv] == NULL)
            return -ENOMEM; /* the caller frees what was copied */
        cl->nenv++;
    }
    return 0;
}

static void
cl_free(struct compute_local *cl)
{
    if (cl->env != NULL) {
        for (size_t i = 0; i < cl->nenv; i++)
            free(cl->env[i]);
        free(cl->env);
    }
    free(cl->worker_path);
    free(cl->storage_url);
    free(cl);
}

static void
idle_closed(uv_handle_t *h)
{
    struct compute_local *cl = h->data;
    void (*cb)(struct compute *) = cl->close_cb;
    if (cb != NULL)
        cb(&cl->base);
    /* Released after cb, as libuv releases a handle after its close_cb. */
    cl_free(cl);
}

/* Finishes a close once the last dispatch is freed. */
static void
cl_maybe_closed(struct compute_local *cl)
{
    if (!cl->closing || cl->nalive > 0 || uv_is_closing((uv_handle_t *)&cl->idle))
        return;
    assert(link_empty(&cl->dispatches) && link_empty(&cl->notify));
    uv_close((uv_handle_t *)&cl->idle, idle_closed);
}

static void
ld_unref(struct local_dispatch *ld)
{
    assert(ld->refs > 0);
    if (--ld->refs > 0 || !ld->done)
        return;
    struct compute_local *cl = ld->cl;
    assert(link_empty(&ld->link) && link_empty(&ld->notify));
    free(ld);
    cl->nalive--;
    cl_maybe_closed(cl);
}

static void
handle_closed(uv_handle_t *h)
{
    struct local_inv *inv = h->data;
    ld_unref(inv->ld);
}

/*
 * Reports the end of inv: started_cb first if it is still due, then
 * ended_cb.  The caller holds a reference on inv->ld, so ld outlives this
 * call; the dispatch itself may be freed by the last ended_cb, so nothing
 * here touches it afterwards.
 */
static void
inv_finish(struct local_inv *inv, const struct compute_exit *ex)
{
    struct local_dispatch *ld = inv->ld;
    struct dispatch *d = ld->d;
    assert(d != NULL && inv->state != INV_ENDED);
    assert(ld->refs > 0);
    inv->state = INV_ENDED;
    if (inv->started_pending) {
        inv->started_pending = false;
        if (d->started_cb != NULL)
            d->started_cb(d, inv->index);
    }
    if (++ld->nended == ld->ninv) {
        /* The last one: from here on d belongs to the scheduler alone. */
        ld->d = NULL;
        ld->done = true;
        d->backend_priv = NULL;
        link_remove(&ld->link);
        link_remove(&ld->notify);
    }
    d->ended_cb(d, inv->index, ex);
}

static void
inv_exited(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    struct local_inv *inv = proc->data;
    struct local_dispatch *ld = inv->ld;
    struct compute_local *cl = ld->cl;
    assert(inv->state == INV_RUNNING);

    /* The leader is gone; whatever it left running in its group goes too. */
    if (inv->pid > 0)
        kill(-inv->pid, SIGKILL);
    assert(cl->nrunning > 0);
    cl->nrunning--;
    uv_timer_stop(&inv->timer);
    uv_close((uv_handle_t *)&inv->proc, handle_closed);
    uv_close((uv_handle_t *)&inv->timer, handle_closed);

    struct compute_exit ex = {
        .exit_status = term_signal != 0 ? -1 : exit_status,
        .term_signal = term_signal,
        .why = inv->why,
    };
    /* The two handles just closed hold ld until their close callbacks. */
    inv_finish(inv, &ex);
}

static void
on_timer(uv_timer_t *t)
{
    struct local_inv *inv = t->data;
    assert(inv->state == INV_RUNNING);
    /* A cancel keeps its own reason when its grace runs out. */
    if (inv->why == NULL)
        inv->why = "deadline exceeded";
    kill(-inv->pid, SIGKILL);
}

/* Runs the callbacks that submit deferred, one dispatch at a time. */
static void
on_idle(uv_idle_t *h)
{
    struct compute_local *cl = h->data;
    while (!link_empty(&cl->notify)) {
        struct local_dispatch *ld =
            CL_CONTAINER(cl->notify.next, struct local_dispatch, notify);
        link_remove(&ld->notify);
        ld->refs++;
        for (uint32_t i = 0; i < ld->ninv && ld->d != NULL; i++) {
            struct local_inv *inv = &ld->inv[i];
            struct dispatch *d = ld->d;
            if (inv->started_pending) {
                inv->started_pending = false;
                if (d->started_cb != NULL)
                    d->started_cb(d, i);
            }
            if (inv->state == INV_FAILED && ld->d != NULL) {
                struct compute_exit ex = {
                    .exit_status = -1, .term_signal = 0, .why = inv->why};
                inv_finish(inv, &ex);
            }
        }
        ld_unref(ld);
    }
    uv_idle_stop(h);
}

/*
 * Starts invocation inv with env (whose JOB_INDEX slot the caller filled).
 * Returns 0, or a negative uv code with inv->proc initialized but not
 * closed (libuv initializes the handle even when the spawn fails).
 */
static int
inv_spawn(struct compute_local *cl, struct local_inv *inv, char **env)
{
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_IGNORE},
        /* A worker prints only its own failures; they belong in our log. */
        {.flags = UV_INHERIT_FD, .data.fd = 2},
    };
    char *args[] = {cl->worker_path, NULL};
    uv_process_options_t opt = {
        .exit_cb = inv_exited,
        .file = cl->worker_path,
        .args = args,
        .env = env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc = uv_spawn(cl->base.loop, &inv->proc, &opt);
    inv->proc.data = inv;
    if (rc < 0)
        return rc;
    inv->pid = inv->proc.pid;
    return 0;
}

/* "NAME=value" in a malloc'ed string, or NULL. */
static char *
env_entry(const char *name, const char *value)
{
    size_t len = strlen(name) + 1 + strlen(value) + 1;
    char *s = malloc(len);
    if (s != NULL)
        snprintf(s, len, "%s=%s", name, value);
    return s;
}

/*
 * Spawns one burst-worker per invocation of d.  Returns 0 when at least the
 * first one started (later failures are reported through ended_cb), or the
 * first spawn's error with no callback to come.  d must stay alive until
 * its last ended_cb; d->backend_priv is ours until then.
 */
static int
cl_submit(struct compute *c, struct dispatch *d)
{
    struct compute_local *cl = (struct compute_local *)c;
    if (d == NULL || d->ninv == 0 || d->spec_key == NULL || d->ended_cb == NULL)
        return -EINVAL;
    if (cl->closing)
        return BURST_ESHUTDOWN;
    /* Only a 32-bit size_t can overflow here. */
    uint64_t bytes = (uint64_t)d->ninv * sizeof(struct local_inv);
    if (bytes > (uint64_t)(SIZE_MAX - sizeof(struct local_dispatch)))
        return -ENOMEM;

    int rc = 0;
    struct local_dispatch *ld =
        calloc(1, sizeof(*ld) + (size_t)d->ninv * sizeof(struct local_inv));
    if (ld == NULL)
        return -ENOMEM;
    link_init(&ld->link);
    link_init(&ld->notify);
    ld->cl = cl;
    ld->ninv = d->ninv;

    /* The worker's environment: the filtered snapshot plus its three
     * variables.  uv_spawn forks before it returns, so a stack buffer and
     * an array freed right after are fine. */
    char job_index[32];
    char **env = calloc(cl->nenv + 4, sizeof(*env));
    char *storage = env_entry("BURST_STORAGE", cl->storage_url);
    char *spec = env_entry("BURST_SPEC", d->spec_key);
    if (env == NULL || storage == NULL || spec == NULL)
        goto fail_env;
    memcpy(env, cl->env, cl->nenv * sizeof(*env));
    env[cl->nenv] = storage;
    env[cl->nenv + 1] = spec;
    env[cl->nenv + 2] = job_index;
    env[cl->nenv + 3] = NULL;

    cl->nalive++;
    for (uint32_t i = 0; i < ld->ninv; i++) {
        struct local_inv *inv = &ld->inv[i];
        inv->ld = ld;
        inv->index = i;
        snprintf(job_index, sizeof(job_index), "JOB_INDEX=%" PRIu32, i);
        rc = inv_spawn(cl, inv, env);
        ld->refs++; /* the process handle, spawned or not */
        if (rc < 0) {
            uv_close((uv_handle_t *)&inv->proc, handle_closed);
            if (i == 0)
                goto fail_first;
            log_warnx("compute: cannot start %s: %s", cl->worker_path, uv_strerror(rc));
            inv->state = INV_FAILED;
            snprintf(inv->why_buf, sizeof(inv->why_buf), "cannot start burst-worker: %s",
                     uv_strerror(rc));
            inv->why = inv->why_buf;
            continue;
        }
        inv->state = INV_RUNNING;
        inv->started_pending = true;
        cl->nrunning++;
        uv_timer_init(cl->base.loop, &inv->timer);
        inv->timer.data = inv;
        ld->refs++;
        if (d->deadline_ms > 0)
            uv_timer_start(&inv->timer, on_timer, d->deadline_ms, 0);
    }
    free(spec);
    free(storage);
    free(env);

    ld->d = d;
    d->backend_priv = ld;
    link_add_tail(&cl->dispatches, &ld->link);
    link_add_tail(&cl->notify, &ld->notify);
    uv_idle_start(&cl->idle, on_idle);
    return 0;

fail_first:
    /* Nothing was started, so nothing is reported; the handle's close
     * callback frees ld. */
    log_warnx("compute: cannot start %s: %s", cl->worker_path, uv_strerror(rc));
    ld->done = true;
    free(spec);
    free(storage);
    free(env);
    return rc;

fail_env:
    free(spec);
    free(storage);
    free(env);
    free(ld);
    return -ENOMEM;
}

/*
 * SIGTERM to the group of every running invocation of d, SIGKILL after
 * grace_ms (at once when 0).  An earlier deadline still applies.  Calling
 * it again only ever shortens the grace.  Returns 0.
 */
static int
cl_cancel(struct compute *c, struct dispatch *d, uint64_t grace_ms)
{
    (void)c;
    struct local_dispatch *ld = d != NULL ? d->backend_priv : NULL;
    if (ld == NULL)
        return 0; /* over already, or never submitted */
    for (uint32_t i = 0; i < ld->ninv; i++) {
        struct local_inv *inv = &ld->inv[i];
        if (inv->state != INV_RUNNING)
            continue;
        if (inv->why == NULL)
            inv->why = "cancelled";
        if (grace_ms == 0) {
            kill(-inv->pid, SIGKILL);
            continue;
        }
        if (!inv->term_sent) {
            inv->term_sent = true;
            kill(-inv->pid, SIGTERM);
        }
        uint64_t due = uv_is_active((uv_handle_t *)&inv->timer)
                           ? uv_timer_get_due_in(&inv->timer)
                           : UINT64_MAX;
        if (grace_ms < due)
            uv_timer_start(&inv->timer, on_timer, grace_ms, 0);
    }
    return 0;
}

static uint32_t
cl_running(struct compute *c)
{
    return ((struct compute_local *)c)->nrunning;
}

/*
 * SIGKILLs every running group; each ended_cb runs as its worker is reaped,
 * then cb once every handle is closed.  The backend is freed after cb
 * returns.  A second call is ignored.
 */
static void
cl_close(struct compute *c, void (*cb)(struct compute *c))
{
    struct compute_local *cl = (struct compute_local *)c;
    if (cl->closing)
        return;
    cl->closing = true;
    cl->close_cb = cb;
    for (struct cl_link *l = cl->dispatches.next; l != &cl->dispatches; l = l->next) {
        struct local_dispatch *ld = CL_CONTAINER(l, struct local_dispatch, link);
        for (uint32_t i = 0; i < ld->ninv; i++) {
            struct local_inv *inv = &ld->inv[i];
            if (inv->state != INV_RUNNING)
                continue;
            if (inv->why == NULL)
                inv->why = "backend closed";
            uv_timer_stop(&inv->timer);
            kill(-inv->pid, SIGKILL);
        }
    }
    cl_maybe_closed(cl);
}

static const struct compute_ops compute_local_ops = {
    .name = "local",
    .submit = cl_submit,
    .cancel = cl_cancel,
    .running = cl_running,
    .close = cl_close,
};

/*
 * Creates the local backend.  The environment for workers is taken from
 * environ now, once.  Returns 0 and *out (released with ops->close), or a
 * negative code.
 */
int
compute_local_new(uv_loop_t *loop, const char *worker_path, const char *storage_url,
                  struct compute **out)
{
    if (loop == NULL || worker_path == NULL || worker_path[0] == '\0' ||
        storage_url == NULL || out == NULL)
        return -EINVAL;
    struct compute_local *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return -ENOMEM;
    cl->base.ops = &compute_local_ops;
    cl->base.loop = loop;
    cl->base.name = "local";
    link_init(&cl->dispatches);
    link_init(&cl->notify);
    cl->worker_path = strdup(worker_path);
    cl->storage_url = strdup(storage_url);
    if (cl->worker_path == NULL || cl->storage_url == NULL || env_snapshot(cl) < 0) {
        cl_free(cl);
        return -ENOMEM;
    }
    uv_idle_init(loop, &cl->idle);
    cl->idle.data = cl;
    *out = &cl->base;
    return 0;
}
