/*
 * client/libburst.c - the public API of burst.h on top of the transport in
 * conn.c: hello, submissions (uploading so libraries first), the inspecting
 * and steering calls, and the blocking conveniences (wait, results, map,
 * call, imap_unordered) that Pool-style callers use.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "burst_config.h"
#include "client_internal.h"

/* ---- connection ----------------------------------------------------------- */

int
burst_default_socket(char *buf, size_t size)
{
    const char *env = getenv("BURST_SOCKET");
    int n;

    if (buf == NULL || size == 0)
        return -EINVAL;
    if (env != NULL && env[0] != '\0') {
        n = snprintf(buf, size, "%s", env);
    } else {
        const char *run = getenv("XDG_RUNTIME_DIR");
        if (run != NULL && run[0] != '\0')
            n = snprintf(buf, size, "%s/burst.sock", run);
        else
            n = snprintf(buf, size, "/run/user/%u/burst.sock", (unsigned)getuid());
    }
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return n;
}

static int
client_hello(burst_client *c)
{
    struct proto_request req = {.op = PROTO_OP_HELLO};
    struct conn_reply rep;

    req.u.hello.version = PROTO_VERSION;
    req.u.hello.client = proto_str_c("libburst " BURST_VERSION);
    int rc = conn_call(c, &req, &rep);
    if (rc < 0)
        return rc;
    const struct proto_hello_reply *h = &rep.rep.u.hello;
    if (h->version != PROTO_VERSION) {
        rc = conn_seterr(c, BURST_EVERSION,
                         "burstd speaks protocol version %u, this libburst %u",
                         h->version, PROTO_VERSION);
        goto out;
    }
    /* A zero limit would make every submission fail; read it as "the
     * default" rather than trust a daemon that forgot to fill it in. */
    struct proto_limits def;
    proto_limits_default(&def);
    c->limits = h->limits;
    if (c->limits.max_frame == 0)
        c->limits.max_frame = def.max_frame;
    if (c->limits.max_fn_size == 0)
        c->limits.max_fn_size = def.max_fn_size;
    if (c->limits.max_tasks == 0)
        c->limits.max_tasks = def.max_tasks;
    if (c->limits.max_input == 0)
        c->limits.max_input = def.max_input;
    c->uid = h->uid;
    c->admin = h->admin;
    c->revision = h->revision;
out:
    conn_reply_release(&rep);
    return rc;
}

int
burst_connect_ex(const char *path, burst_client **out, char *err, size_t errsize)
{
    char def[4096];
    char dummy[1];
    burst_client *c;

    if (err == NULL || errsize == 0) {
        err = dummy;
        errsize = sizeof(dummy);
    }
    err[0] = '\0';
    if (out == NULL) {
        snprintf(err, errsize, "no place for the connection");
        return -EINVAL;
    }
    *out = NULL;
    if (path == NULL) {
        int n = burst_default_socket(def, sizeof(def));
        if (n < 0) {
            snprintf(err, errsize, "the default socket path is too long");
            return n;
        }
        path = def;
    }
    int rc = conn_open(path, &c, err, errsize);
    if (rc < 0)
        return rc;
    rc = client_hello(c);
    if (rc < 0) {
        snprintf(err, errsize, "%s: %s", path, c->err);
        conn_free(c);
        return rc;
    }
    *out = c; /* ownership passes to the caller */
    return 0;
}

int
burst_connect(const char *path, burst_client **out)
{
    return burst_connect_ex(path, out, NULL, 0);
}

void
burst_close(burst_client *c)
{
    conn_free(c);
}

const char *
burst_last_error(const burst_client *c)
{
    return c != NULL ? c->err : "no connection";
}

int
burst_fd(const burst_client *c)
{
    return c != NULL ? c->fd : -EINVAL;
}

int
burst_pending(const burst_client *c)
{
    if (c == NULL)
        return -EINVAL;
    return c->qlen > INT_MAX ? INT_MAX : (int)c->qlen;
}

int
burst_dispatch(burst_client *c)
{
    if (c == NULL)
        return -EINVAL;
    int rc = c->dead ? c->dead_code : conn_read(c, 0);
    /* Deliver what arrived even when the connection just died: those
     * events happened. */
    int n = conn_deliver(c);
    if (rc < 0 && n == 0)
        return rc;
    return n;
}

/* ---- functions and submissions ------------------------------------------- */

static bool
client_uploaded(const burst_client *c, const char *hash)
{
    for (size_t i = 0; i < c->nuploaded; i++)
        if (memcmp(c->uploaded[i], hash, 65) == 0)
            return true;
    return false;
}

static void
client_remember_upload(burst_client *c, const char *hash)
{
    char(*u)[65] = realloc(c->uploaded, (c->nuploaded + 1) * sizeof(*u));

    /* Forgetting costs only a repeated upload, so no error here. */
    if (u == NULL)
        return;
    c->uploaded = u;
    memcpy(c->uploaded[c->nuploaded++], hash, 65);
}

/*
 * Turns fn into its wire form.  For an so function this reads the library,
 * checks the symbol and uploads it (once per connection); the hash is
 * written into hash, which pf->hash then points to.
 */
static int
client_prepare_fn(burst_client *c, const burst_fn *fn, struct proto_fn *pf, char hash[65])
{
    char msg[sizeof(c->err)];
    char *data = NULL;
    size_t len = 0;
    int rc;

    memset(pf, 0, sizeof(*pf));
    if (fn == NULL)
        return conn_seterr(c, -EINVAL, "no function given");
    if (fn->kind == BURST_FN_EXEC) {
        if (fn->cmd == NULL || fn->cmd[0] == '\0')
            return conn_seterr(c, -EINVAL, "the exec command is empty");
        if (strlen(fn->cmd) > c->limits.max_string)
            return conn_seterr(c, BURST_ETOOBIG,
                               "the exec command is %zu bytes, more than burstd "
                               "accepts (%u)",
                               strlen(fn->cmd), c->limits.max_string);
        pf->kind = BURST_FN_EXEC;
        pf->cmd = proto_str_c(fn->cmd);
        return 0;
    }
    if (fn->kind != BURST_FN_SO)
        return conn_seterr(c, -EINVAL, "unknown function kind %d", fn->kind);
    if (fn->path == NULL || fn->path[0] == '\0')
        return conn_seterr(c, -EINVAL, "no library path given");
    if (!solib_symbol_valid(fn->symbol))
        return conn_seterr(c, -EINVAL, "'%s' is not a valid C symbol name",
                           fn->symbol != NULL ? fn->symbol : "");

    /* A library this connection already sent, unchanged since: no need to
     * read and hash it again for every submission. */
    const char *known = solib_known_hash(c, fn->path, fn->symbol);
    if (known != NULL && client_uploaded(c, known)) {
        memcpy(hash, known, 65);
        pf->kind = BURST_FN_SO;
        pf->hash = (struct proto_str){hash, 64};
        pf->symbol = proto_str_c(fn->symbol);
        return 0;
    }
    struct stat st;
    rc = solib_read(fn->path, c->limits.max_fn_size, &data, &len, &st, msg, sizeof(msg));
    if (rc < 0)
        return conn_seterr(c, rc, "%s", msg);
    c->solib_reads++;
    rc = solib_find_symbol(data, len, fn->symbol);
    if (rc == -ENOEXEC) {
        rc = conn_seterr(c, rc, "%s is not an ELF shared library", fn->path);
        goto out;
    }
    if (rc < 0) {
        rc = conn_seterr(c, rc, "%s: symbol '%s' not found", fn->path, fn->symbol);
        goto out;
    }
    rc = solib_sha256_hex(data, len, hash);
    if (rc < 0) {
        rc = conn_seterr(c, rc, "cannot hash %s", fn->path);
        goto out;
    }
    if (!client_uploaded(c, hash)) {
        struct proto_request req = {.op = PROTO_OP_PUT_FN};
        struct conn_reply rep;
        req.u.put_fn.hash = (struct proto_str){hash, 64};
        req.u.put_fn.data = (struct proto_str){data, len};
        rc = conn_call(c, &req, &rep);
        if (rc < 0)
            goto out;
        conn_reply_release(&rep);
        client_remember_upload(c, hash);
    }
    solib_known_add(c, fn->path, fn->symbol, &st, hash);
    pf->kind = BURST_FN_SO;
    pf->hash = (struct proto_str){hash, 64};
    pf->symbol = proto_str_c(fn->symbol);
out:
    free(data);
    return rc;
}

/* Checks the task count and each input against the daemon's limits. */
static int
client_check_inputs(burst_client *c, const burst_bytes *inputs, size_t n)
{
    if (n > c->limits.max_tasks)
        return conn_seterr(c, BURST_ETOOBIG,
                           "%zu tasks, more than burstd accepts in one job (%u)", n,
                           c->limits.max_tasks);
    if (n > 0 && inputs == NULL)
        return conn_seterr(c, -EINVAL, "no inputs given");
    for (size_t i = 0; i < n; i++) {
        if (inputs[i].len > 0 && inputs[i].data == NULL)
            return conn_seterr(c, -EINVAL, "input %zu has no data", i);
        if (inputs[i].len > c->limits.max_input)
            return conn_seterr(c, BURST_ETOOBIG,
                               "input %zu is %zu bytes, more than burstd accepts (%u)", i,
                               inputs[i].len, c->limits.max_input);
    }
    return 0;
}

/* Counts the lines of blob as the daemon will split it, checking each. */
static int
client_count_lines(burst_client *c, const char *blob, size_t len, uint32_t *count)
{
    size_t lines = 0, start = 0;

    if (len > 0 && blob == NULL)
        return conn_seterr(c, -EINVAL, "no input given");
    while (start < len) {
        const char *nl = memchr(blob + start, '\n', len - start);
        size_t end = nl != NULL ? (size_t)(nl - blob) + 1 : len;
        if (end - start > c->limits.max_input)
            return conn_seterr(c, BURST_ETOOBIG,
                               "line %zu is %zu bytes, more than burstd accepts (%u)",
                               lines + 1, end - start, c->limits.max_input);
        lines++;
        start = end;
    }
    if (lines > c->limits.max_tasks || lines > UINT32_MAX)
        return conn_seterr(c, BURST_ETOOBIG,
                           "%zu lines, more than burstd accepts in one job (%u)", lines,
                           c->limits.max_tasks);
    *count = (uint32_t)lines;
    return 0;
}

static void
client_opts(struct proto_opts *po, const burst_opts *opts)
{
    static const burst_opts def = BURST_OPTS_INIT;

    if (opts == NULL)
        opts = &def;
    po->chunksize = opts->chunksize ? opts->chunksize : 1;
    po->retries = opts->retries;
    po->timeout_ms = opts->timeout_ms;
    po->memory_mb = opts->memory_mb;
    po->backend = proto_str_c(opts->backend);
    po->name = proto_str_c(opts->name);
    po->cancel_on_disconnect = opts->cancel_on_disconnect != 0;
}

/* What one submission consists of; the public functions fill it in. */
struct submission {
    int kind;
    const burst_fn *fn;
    const burst_fn *reduce;    /* map_reduce only */
    const burst_bytes *inputs; /* array mode */
    size_t n;
    const void *blob; /* lines mode when non-NULL or lines is set */
    size_t len;
    bool lines;
    /* The library waits for the job itself: subscribe with the submission
     * and hold the subscription (released by the caller). */
    bool hold;
};

/* The subscription a submission asks for, recorded from its reply. */
struct adopt {
    burst_event_cb cb;
    void *arg;
    bool hold;
};

/* Records the subscription as soon as the acknowledgment names the job:
 * the job's first events may be in the same read, right behind it. */
static int
submit_adopt(burst_client *c, const struct conn_reply *rep, void *arg)
{
    const struct adopt *ad = arg;
    uint64_t job = rep->rep.u.submit.job;
    if (conn_sub_adopt(c, job, ad->cb, ad->arg, ad->hold) < 0)
        return conn_seterr(c, -ENOMEM,
                           "job %llu was submitted, but its events cannot be followed: "
                           "out of memory",
                           (unsigned long long)job);
    return 0;
}

static int
client_submit(burst_client *c, const struct submission *s, const burst_opts *opts,
              uint64_t *job)
{
    struct proto_request req = {.op = PROTO_OP_SUBMIT};
    struct proto_submit *ps = &req.u.submit;
    struct proto_str *arr = NULL;
    struct conn_reply rep;
    char hash[65], rhash[65];
    int rc;

    if (c == NULL)
        return -EINVAL;
    if (job == NULL)
        return conn_seterr(c, -EINVAL, "no place for the job id");
    *job = 0;
    ps->kind = s->kind;
    client_opts(&ps->opts, opts);
    if (s->lines) {
        ps->input_mode = PROTO_INPUT_LINES;
        rc = client_count_lines(c, s->blob, s->len, &ps->ninputs);
        if (rc < 0)
            return rc;
        ps->blob = (struct proto_str){s->blob, s->len};
    } else {
        ps->input_mode = PROTO_INPUT_ARRAY;
        rc = client_check_inputs(c, s->inputs, s->n);
        if (rc < 0)
            return rc;
        if (s->n > 0) {
            arr = calloc(s->n, sizeof(*arr));
            if (arr == NULL)
                return conn_seterr(c, -ENOMEM, "out of memory for %zu inputs", s->n);
            for (size_t i = 0; i < s->n; i++)
                arr[i] = (struct proto_str){s->inputs[i].data, s->inputs[i].len};
        }
        ps->ninputs = (uint32_t)s->n;
        ps->inputs = arr; /* borrowed by the request, freed below */
    }
    /* Libraries go up before the submission that names them. */
    rc = client_prepare_fn(c, s->fn, &ps->fn, hash);
    if (rc < 0)
        goto out;
    if (s->kind == BURST_KIND_MAP_REDUCE) {
        rc = client_prepare_fn(c, s->reduce, &ps->reduce, rhash);
        if (rc < 0)
            goto out;
    }
    struct adopt ad = {.cb = opts != NULL ? opts->on_event : NULL,
                       .arg = opts != NULL ? opts->event_arg : NULL,
                       .hold = s->hold};
    ps->subscribe = ad.cb != NULL || ad.hold;
    rc = conn_call_then(c, &req, &rep, ps->subscribe ? submit_adopt : NULL, &ad);
    if (rc < 0)
        goto out;
    *job = rep.rep.u.submit.job;
    conn_reply_release(&rep);
out:
    free(arr);
    return rc;
}

int
burst_submit_map(burst_client *c, const burst_fn *fn, const burst_bytes *inputs, size_t n,
                 const burst_opts *opts, uint64_t *job)
{
    struct submission s = {.kind = BURST_KIND_MAP, .fn = fn, .inputs = inputs, .n = n};
    return client_submit(c, &s, opts, job);
}

int
burst_submit_map_lines(burst_client *c, const burst_fn *fn, const void *blob, size_t len,
                       const burst_opts *opts, uint64_t *job)
{
    struct submission s = {
        .kind = BURST_KIND_MAP, .fn = fn, .blob = blob, .len = len, .lines = true};
    return client_submit(c, &s, opts, job);
}

int
burst_submit_map_reduce(burst_client *c, const burst_fn *fn, const burst_fn *reduce,
                        const burst_bytes *inputs, size_t n, const burst_opts *opts,
                        uint64_t *job)
{
    struct submission s = {.kind = BURST_KIND_MAP_REDUCE,
                           .fn = fn,
                           .reduce = reduce,
                           .inputs = inputs,
                           .n = n};
    return client_submit(c, &s, opts, job);
}

int
burst_submit_map_reduce_lines(burst_client *c, const burst_fn *fn, const burst_fn *reduce,
                              const void *blob, size_t len, const burst_opts *opts,
                              uint64_t *job)
{
    struct submission s = {.kind = BURST_KIND_MAP_REDUCE,
                           .fn = fn,
                           .reduce = reduce,
                           .blob = blob,
                           .len = len,
                           .lines = true};
    return client_submit(c, &s, opts, job);
}

/* ---- inspecting and steering --------------------------------------------- */

static void
client_job_info(burst_job_info *dst, const struct proto_job_info *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->id = src->id;
    dst->owner_uid = src->owner_uid;
    dst->kind = src->kind;
    dst->state = src->state;
    dst->total = src->total;
    memcpy(dst->counts, src->counts, sizeof(dst->counts));
    dst->created_ms = src->created_ms;
    dst->started_ms = src->started_ms;
    dst->finished_ms = src->finished_ms;
    proto_str_copy(dst->backend, sizeof(dst->backend), src->backend);
    proto_str_copy(dst->name, sizeof(dst->name), src->name);
    proto_str_copy(dst->function, sizeof(dst->function), src->function);
    proto_str_copy(dst->error, sizeof(dst->error), src->error);
    dst->last_seq = src->last_seq;
}

int
burst_status(burst_client *c, uint64_t job, burst_job_info *info)
{
    struct proto_request req = {.op = PROTO_OP_STATUS};
    struct conn_reply rep;

    if (c == NULL || info == NULL)
        return -EINVAL;
    req.u.job.job = job;
    int rc = conn_call(c, &req, &rep);
    if (rc < 0)
        return rc;
    client_job_info(info, &rep.rep.u.status);
    conn_reply_release(&rep);
    return 0;
}

int
burst_jobs(burst_client *c, int all, burst_job_info **out, size_t *n)
{
    struct proto_request req = {.op = PROTO_OP_JOBS};
    struct conn_reply rep;

    if (c == NULL || out == NULL || n == NULL)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    req.u.jobs.all = all != 0;
    int rc = conn_call(c, &req, &rep);
    if (rc < 0)
        return rc;
    const struct proto_jobs_reply *jr = &rep.rep.u.jobs;
    if (jr->n > 0) {
        burst_job_info *arr = calloc(jr->n, sizeof(*arr));
        if (arr == NULL) {
            rc = conn_seterr(c, -ENOMEM, "out of memory for %u jobs", jr->n);
            goto out;
        }
        for (uint32_t i = 0; i < jr->n; i++)
            client_job_info(&arr[i], &jr->jobs[i]);
        *out = arr; /* ownership passes to the caller */
        *n = jr->n;
    }
out:
    conn_reply_release(&rep);
    return rc;
}

int
burst_tasks(burst_client *c, uint64_t job, int state, burst_task_info **out, size_t *n)
{
    burst_task_info *arr = NULL;
    size_t len = 0, cap = 0;
    uint32_t offset = 0;
    int rc = 0;

    if (c == NULL || out == NULL || n == NULL)
        return -EINVAL;
    *out = NULL;
    *n = 0;
    for (;;) {
        struct proto_request req = {.op = PROTO_OP_TASKS};
        struct conn_reply rep;
        req.u.tasks = (struct proto_tasks){
            .job = job, .state = state < 0 ? -1 : state, .offset = offset};
        rc = conn_call(c, &req, &rep);
        if (rc < 0)
            goto fail;
        const struct proto_tasks_reply *tr = &rep.rep.u.tasks;
        if (len + tr->n > cap) {
            size_t ncap = cap ? cap : 64;
            while (ncap < len + tr->n)
                ncap *= 2;
            burst_task_info *a = realloc(arr, ncap * sizeof(*a));
            if (a == NULL) {
                conn_reply_release(&rep);
                rc = conn_seterr(c, -ENOMEM, "out of memory for %zu tasks", ncap);
                goto fail;
            }
            arr = a;
            cap = ncap;
        }
        for (uint32_t i = 0; i < tr->n; i++) {
            const struct proto_task_info *t = &tr->tasks[i];
            burst_task_info *d = &arr[len++];
            memset(d, 0, sizeof(*d));
            d->index = t->index;
            d->state = t->state;
            d->attempts = t->attempts;
            d->exit_status = t->exit_status;
            d->signal = t->signal;
            d->started_ms = t->started_ms;
            d->finished_ms = t->finished_ms;
            proto_str_copy(d->reason, sizeof(d->reason), t->reason);
        }
        bool more = tr->more;
        uint32_t last = tr->n > 0 ? tr->tasks[tr->n - 1].index : 0;
        bool progress = tr->n > 0 && last >= offset && last < UINT32_MAX;
        conn_reply_release(&rep);
        if (!more)
            break;
        /* A page that does not move forward would loop for ever. */
        if (!progress) {
            rc = conn_seterr(c, BURST_EPROTO, "burstd sent a tasks page out of order");
            goto fail;
        }
        offset = last + 1;
    }
    *out = arr; /* ownership passes to the caller */
    *n = len;
    return 0;
fail:
    free(arr);
    return rc;
}

int
burst_cancel(burst_client *c, uint64_t job)
{
    struct proto_request req = {.op = PROTO_OP_CANCEL};
    struct conn_reply rep;

    if (c == NULL)
        return -EINVAL;
    req.u.job.job = job;
    int rc = conn_call(c, &req, &rep);
    if (rc == 0)
        conn_reply_release(&rep);
    return rc;
}

int
burst_logs(burst_client *c, uint64_t job, uint32_t task, char **log, size_t *len)
{
    struct proto_request req = {.op = PROTO_OP_LOGS};
    struct conn_reply rep;

    if (c == NULL || log == NULL || len == NULL)
        return -EINVAL;
    *log = NULL;
    *len = 0;
    req.u.logs = (struct proto_logs){.job = job, .task = task};
    int rc = conn_call(c, &req, &rep);
    if (rc < 0)
        return rc;
    struct proto_str l = rep.rep.u.logs.log;
    char *buf = malloc(l.len + 1);
    if (buf == NULL) {
        rc = conn_seterr(c, -ENOMEM, "out of memory for a %zu-byte log", l.len);
        goto out;
    }
    if (l.len > 0)
        memcpy(buf, l.ptr, l.len);
    buf[l.len] = '\0';
    *log = buf; /* ownership passes to the caller */
    *len = l.len;
out:
    conn_reply_release(&rep);
    return rc;
}

int
burst_quota(burst_client *c, int set, uint32_t *in_use)
{
    struct proto_request req = {.op = PROTO_OP_QUOTA};
    struct conn_reply rep;

    if (c == NULL)
        return -EINVAL;
    if (set == 0)
        return conn_seterr(c, -EINVAL, "the quota must be at least 1");
    if (set > 0) {
        req.u.quota.has_set = true;
        req.u.quota.set = (uint32_t)set;
    }
    int rc = conn_call(c, &req, &rep);
    if (rc < 0)
        return rc;
    if (in_use != NULL)
        *in_use = rep.rep.u.quota.in_use;
    rc = rep.rep.u.quota.quota > INT_MAX ? INT_MAX : (int)rep.rep.u.quota.quota;
    conn_reply_release(&rep);
    return rc;
}

/* ---- subscriptions and waiting ------------------------------------------- */

int
burst_subscribe(burst_client *c, uint64_t job, uint64_t from_seq, burst_event_cb cb,
                void *arg)
{
    if (c == NULL || cb == NULL)
        return -EINVAL;
    return conn_sub_user(c, job, from_seq, cb, arg);
}

int
burst_unsubscribe(burst_client *c, uint64_t job)
{
    if (c == NULL)
        return -EINVAL;
    return conn_sub_user_drop(c, job);
}

/* The outcome of an ended job as burst_wait() returns it. */
static int
client_job_outcome(burst_client *c, const burst_job_info *st)
{
    if (st->state == BURST_JOB_SUCCEEDED)
        return 0;
    if (st->state == BURST_JOB_CANCELLED)
        return conn_seterr(c, BURST_ECANCELLED, "job %llu was cancelled",
                           (unsigned long long)st->id);
    if (st->error[0] != '\0')
        return conn_seterr(c, BURST_EJOBFAILED, "job %llu failed: %s",
                           (unsigned long long)st->id, st->error);
    return conn_seterr(c, BURST_EJOBFAILED, "job %llu failed",
                       (unsigned long long)st->id);
}

static void
wait_on_event(void *arg, const burst_event *ev)
{
    int *final = arg;

    if (ev->type == BURST_EV_JOB && burst_job_state_is_final(ev->job_state))
        *final = ev->job_state;
}

/*
 * burst_wait(), and with held, for a job whose subscription the caller
 * holds since its submission (client_submit with hold): every event of
 * the job comes, so no status is needed first.  The hold is released.
 */
static int
client_wait(burst_client *c, uint64_t job, burst_job_info *info, bool held)
{
    burst_job_info st;
    int final = -1; /* the state the job's final event gave */
    int rc = 0;

    if (!held) {
        rc = burst_status(c, job, &st);
        if (rc < 0)
            return rc;
        /* Everything after the status we just read arrives as events. */
        if (!burst_job_state_is_final(st.state))
            rc = conn_sub_hold(c, job, st.last_seq);
        if (rc < 0)
            return rc;
    }
    if (held || !burst_job_state_is_final(st.state)) {
        struct conn_waiter w = {.job = job, .fn = wait_on_event, .arg = &final};
        conn_waiter_add(c, &w);
        while (rc >= 0) {
            conn_deliver(c);
            if (final >= 0)
                break;
            rc = conn_read(c, CONN_WAIT_POLL_MS);
            if (rc == 0) {
                /* Silence: check by hand rather than trust that no event
                 * could ever go missing. */
                rc = burst_status(c, job, &st);
                if (rc == 0 && burst_job_state_is_final(st.state))
                    break;
            }
        }
        conn_waiter_remove(c, &w);
        int rel = c->dead ? 0 : conn_sub_release(c, job);
        if (rc < 0)
            return rc;
        if (rel < 0)
            return rel;
        /* A caller that wants no details of a job that succeeded, or was
         * cancelled, has its answer in the event; a failure's reason is
         * in the status. */
        if (info == NULL && final == BURST_JOB_SUCCEEDED)
            return 0;
        if (info == NULL && final == BURST_JOB_CANCELLED)
            return conn_seterr(c, BURST_ECANCELLED, "job %llu was cancelled",
                               (unsigned long long)job);
        rc = burst_status(c, job, &st);
        if (rc < 0)
            return rc;
    }
    if (info != NULL)
        *info = st;
    return client_job_outcome(c, &st);
}

int
burst_wait(burst_client *c, uint64_t job, burst_job_info *info)
{
    if (c == NULL)
        return -EINVAL;
    return client_wait(c, job, info, false);
}

/* ---- results -------------------------------------------------------------- */

/* One page of results from task index from; max_bytes 0 = server default.
 * final asks the daemon to skip what only fed a reducer (PROTOCOL.md,
 * "results"). */
static int
client_results_page(burst_client *c, uint64_t job, uint32_t from, uint32_t max_bytes,
                    bool final, struct conn_reply *rep)
{
    struct proto_request req = {.op = PROTO_OP_RESULTS};

    req.u.results = (struct proto_results){
        .job = job, .from = from, .max_bytes = max_bytes, .final = final};
    return conn_call(c, &req, rep);
}

int
burst_results(burst_client *c, uint64_t job, burst_result_cb cb, void *arg)
{
    uint32_t from = 0;

    if (c == NULL || cb == NULL)
        return -EINVAL;
    /* With final the daemon leaves out a map_reduce job's map outputs
     * itself, so every item is a result and no status call is needed to
     * learn the job's kind.  A daemon of revision 0 ignores final: the
     * kind comes from its status, and the reducer's output (index total)
     * is picked here. */
    bool final = c->revision >= 1;
    bool reduce = false;
    uint32_t reducer = 0;
    if (!final) {
        burst_job_info st;
        int rc = burst_status(c, job, &st);
        if (rc < 0)
            return rc;
        reduce = st.kind == BURST_KIND_MAP_REDUCE;
        if (reduce)
            from = reducer = st.total;
    }
    for (;;) {
        struct conn_reply rep;
        int rc = client_results_page(c, job, from, 0, final, &rep);
        if (rc < 0)
            return rc;
        const struct proto_results_reply *rr = &rep.rep.u.results;
        for (uint32_t i = 0; i < rr->n; i++) {
            const struct proto_result_item *it = &rr->items[i];
            if (reduce && it->index != reducer)
                continue;
            /* The reply is our own copy: cb may make calls of its own. */
            rc = cb(arg, it->index, it->has_data ? it->data.ptr : NULL,
                    it->has_data ? it->data.len : 0);
            if (rc != 0) {
                conn_reply_release(&rep);
                return rc;
            }
        }
        bool more = rr->more;
        uint32_t last = rr->n > 0 ? rr->items[rr->n - 1].index : 0;
        bool progress = rr->n > 0 && last >= from && last < UINT32_MAX;
        conn_reply_release(&rep);
        if (!more || (reduce && last >= reducer))
            return 0;
        if (!progress)
            return conn_seterr(c, BURST_EPROTO,
                               "burstd sent a results page out of order");
        from = last + 1;
    }
}

void
burst_free_results(burst_bytes *results, size_t n)
{
    if (results == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free((void *)results[i].data);
    free(results);
}

struct collect {
    burst_bytes *res; /* owned until handed to the caller */
    size_t n;
    int err;
};

static int
collect_result(void *arg, uint32_t index, const void *data, size_t len)
{
    struct collect *col = arg;

    if (index >= col->n || data == NULL)
        return 0; /* the reducer's output, or a failed task */
    /* malloc(0) may return NULL; keep one byte so data is never NULL for
     * a task that succeeded with an empty result. */
    void *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        col->err = -ENOMEM;
        return -ENOMEM;
    }
    memcpy(copy, data, len);
    free((void *)col->res[index].data);
    col->res[index] = (burst_bytes){copy, len};
    return 0;
}

int
burst_map(burst_client *c, const burst_fn *fn, const burst_bytes *inputs, size_t n,
          const burst_opts *opts, burst_bytes **results)
{
    uint64_t job;

    if (c == NULL || results == NULL)
        return -EINVAL;
    *results = NULL;
    struct submission sub = {
        .kind = BURST_KIND_MAP, .fn = fn, .inputs = inputs, .n = n, .hold = true};
    int rc = client_submit(c, &sub, opts, &job);
    if (rc < 0)
        return rc;
    int outcome = client_wait(c, job, NULL, true);
    if (outcome < 0 && outcome != BURST_EJOBFAILED)
        return outcome;

    struct collect col = {.n = n};
    col.res = calloc(n ? n : 1, sizeof(*col.res));
    if (col.res == NULL)
        return conn_seterr(c, -ENOMEM, "out of memory for %zu results", n);
    char saved[sizeof(c->err)];
    memcpy(saved, c->err, sizeof(saved));
    rc = burst_results(c, job, collect_result, &col);
    if (rc < 0 || col.err < 0) {
        burst_free_results(col.res, n);
        if (col.err < 0)
            return conn_seterr(c, col.err, "out of memory for the results");
        return rc;
    }
    memcpy(c->err, saved, sizeof(saved)); /* keep why the job failed */
    *results = col.res;                   /* ownership passes to the caller */
    return outcome;
}

struct single {
    void *data; /* owned until handed to the caller */
    size_t len;
    bool found;
    int err;
};

static int
single_result(void *arg, uint32_t index, const void *data, size_t len)
{
    struct single *s = arg;

    if (index != 0 || data == NULL)
        return 0;
    s->data = malloc(len ? len : 1);
    if (s->data == NULL) {
        s->err = -ENOMEM;
        return -ENOMEM;
    }
    memcpy(s->data, data, len);
    s->len = len;
    s->found = true;
    return 1; /* only the one task: stop */
}

int
burst_call(burst_client *c, const burst_fn *fn, const void *input, size_t len,
           const burst_opts *opts, void **out, size_t *out_len)
{
    uint64_t job;

    if (c == NULL || out == NULL || out_len == NULL)
        return -EINVAL;
    *out = NULL;
    *out_len = 0;
    burst_bytes in = {input, len};
    struct submission sub = {
        .kind = BURST_KIND_CALL, .fn = fn, .inputs = &in, .n = 1, .hold = true};
    int rc = client_submit(c, &sub, opts, &job);
    if (rc < 0)
        return rc;
    rc = client_wait(c, job, NULL, true);
    if (rc < 0)
        return rc;
    struct single s = {0};
    rc = burst_results(c, job, single_result, &s);
    if (rc < 0 || s.err < 0) {
        free(s.data);
        return s.err < 0 ? conn_seterr(c, s.err, "out of memory for the result") : rc;
    }
    if (!s.found)
        return conn_seterr(c, BURST_ENORESULT, "job %llu has no result",
                           (unsigned long long)job);
    *out = s.data; /* ownership passes to the caller */
    *out_len = s.len;
    return 0;
}

/* ---- imap_unordered ------------------------------------------------------- */

struct imap {
    uint64_t job;
    uint32_t limit;             /* indices 0 .. limit-1 are tracked (reducer included) */
    unsigned char *seen;        /* owned bitmap: reported already */
    uint32_t *pending;          /* owned: final tasks not yet reported */
    int *pstate;                /* owned: their states */
    size_t head, npending, cap; /* pending[head .. npending) wait */
    bool done;                  /* the job ended */
    int err;
};

static void
imap_note(struct imap *m, uint32_t index, int state)
{
    if (!burst_task_state_is_final(state) || index >= m->limit)
        return;
    if (m->seen[index / 8] & (1u << (index % 8)))
        return;
    if (m->head == m->npending)
        m->head = m->npending = 0;
    if (m->npending == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        uint32_t *p = realloc(m->pending, cap * sizeof(*p));
        if (p == NULL) {
            m->err = -ENOMEM;
            return;
        }
        m->pending = p;
        int *s = realloc(m->pstate, cap * sizeof(*s));
        if (s == NULL) {
            m->err = -ENOMEM;
            return;
        }
        m->pstate = s;
        m->cap = cap;
    }
    m->seen[index / 8] |= (unsigned char)(1u << (index % 8));
    m->pending[m->npending] = index;
    m->pstate[m->npending] = state;
    m->npending++;
}

static void
imap_on_event(void *arg, const burst_event *ev)
{
    struct imap *m = arg;

    if (ev->type == BURST_EV_TASK)
        imap_note(m, ev->task, ev->task_state);
    else if (burst_job_state_is_final(ev->job_state))
        m->done = true;
}

/* Notes every task already in a final state (tasks that ended before the
 * subscription, or whose event a re-poll must make up for). */
static int
imap_sweep(burst_client *c, struct imap *m)
{
    burst_task_info *tasks;
    size_t n;

    int rc = burst_tasks(c, m->job, -1, &tasks, &n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        imap_note(m, tasks[i].index, tasks[i].state);
    free(tasks);
    return m->err;
}

/* Reports the pending tasks: a succeeded one with its result fetched. */
static int
imap_report(burst_client *c, struct imap *m, burst_result_cb cb, void *arg)
{
    while (m->head < m->npending && m->err == 0) {
        uint32_t index = m->pending[m->head];
        int state = m->pstate[m->head];
        m->head++;
        if (state != BURST_TASK_SUCCEEDED) {
            int rc = cb(arg, index, NULL, 0);
            if (rc != 0)
                return rc;
            continue;
        }
        /* max_bytes 1: the reply holds just the first item, ours.  Not
         * final: a map_reduce job's map tasks are reported too. */
        struct conn_reply rep;
        int rc = client_results_page(c, m->job, index, 1, false, &rep);
        if (rc < 0)
            return rc;
        const struct proto_results_reply *rr = &rep.rep.u.results;
        const struct proto_result_item *it = NULL;
        for (uint32_t i = 0; i < rr->n; i++)
            if (rr->items[i].index == index)
                it = &rr->items[i];
        bool has = it != NULL && it->has_data;
        rc = cb(arg, index, has ? it->data.ptr : NULL, has ? it->data.len : 0);
        conn_reply_release(&rep);
        if (rc != 0)
            return rc;
    }
    return m->err;
}

int
burst_imap_unordered(burst_client *c, uint64_t job, burst_result_cb cb, void *arg)
{
    burst_job_info st;
    struct imap m = {.job = job};
    int rc;

    if (c == NULL || cb == NULL)
        return -EINVAL;
    rc = burst_status(c, job, &st);
    if (rc < 0)
        return rc;
    /* map_reduce keeps its reducer at index total. */
    m.limit = st.kind == BURST_KIND_MAP_REDUCE && st.total < UINT32_MAX ? st.total + 1
                                                                        : st.total;
    m.seen = calloc((size_t)m.limit / 8 + 1, 1);
    if (m.seen == NULL)
        return conn_seterr(c, -ENOMEM, "out of memory for %u tasks", m.limit);

    rc = conn_sub_hold(c, job, st.last_seq);
    if (rc < 0)
        goto out_free;
    struct conn_waiter w = {.job = job, .fn = imap_on_event, .arg = &m};
    conn_waiter_add(c, &w);
    /* Subscribed first, then look: a task ending in between is both in
     * the sweep and in an event, and the bitmap reports it once. */
    m.done = burst_job_state_is_final(st.state);
    rc = imap_sweep(c, &m);
    while (rc == 0) {
        conn_deliver(c);
        rc = imap_report(c, &m, cb, arg);
        if (rc != 0 || m.done)
            break;
        rc = conn_read(c, CONN_WAIT_POLL_MS);
        if (rc == 0) {
            rc = burst_status(c, job, &st);
            if (rc == 0 && burst_job_state_is_final(st.state))
                m.done = true;
        }
        if (rc > 0)
            rc = 0;
    }
    if (rc == 0) {
        /* The job ended: make up for any task whose event never came. */
        rc = imap_sweep(c, &m);
        if (rc == 0)
            rc = imap_report(c, &m, cb, arg);
    }
    conn_waiter_remove(c, &w);
    if (!c->dead)
        conn_sub_release(c, job);
    if (rc == 0) {
        rc = burst_status(c, job, &st);
        if (rc == 0)
            rc = client_job_outcome(c, &st);
    }
out_free:
    free(m.seen);
    free(m.pending);
    free(m.pstate);
    return rc;
}
