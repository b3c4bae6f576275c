/*
 * daemon/api.c - see api.h.  One function per operation of proto/msg.h.
 *
 * Synchronous operations (status, jobs, tasks, cancel, quota, subscribe)
 * answer at once from the ledger and the scheduler.  Operations that touch
 * storage (submit, put_fn, results, logs) hold the connection: reading stops
 * until they reply, which keeps the request's bytes in place (decoded
 * strings point into them) and bounds each client to one storage operation
 * at a time.
 *
 * A submission is acknowledged only after its inputs are durable and its
 * job (with all its tasks as one run) is committed to the ledger (DESIGN.md,
 * step 2).  A small job's input object (at most INLINE_INPUT_MAX bytes) goes
 * into the ledger in the job's own transaction, so one commit makes it
 * durable, and sched.c hands it to the workers from there (or copies it to
 * storage first); a larger one is first written durably to storage.
 */
#include "api.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "burst_config.h"
#include "burstd.h"
#include "compute.h"
#include "events.h"
#include "invoc.h"
#include "ledger.h"
#include "outputs.h"
#include "log.h"
#include "msg.h"
#include "scheduler.h"
#include "server.h"
#include "storage.h"

#define KEY_MAX 128

/*
 * The largest input object (header, offsets and data) kept in the ledger
 * rather than in storage.  Below it, the three fsyncs of a durable storage
 * put (directory, file, rename) cost far more than writing the bytes into
 * the WAL that the submission's commit fsyncs anyway; 64 KiB is still a
 * small write next to that fsync, a copy of it into one buffer is cheap,
 * and the ledger (which keeps the blob until the job ends) stays small even
 * with thousands of queued jobs.  Above it, the bytes would be written
 * twice (WAL, then checkpoint) and the shared commit would grow with one
 * client's data: storage is the better home.
 */
#define INLINE_INPUT_MAX (64u * 1024u)

/* A job's task rows: its tasks, and a map_reduce job's reducer. */
static uint64_t
job_rows(const struct ledger_job *job)
{
    return (uint64_t)job->total + (job->kind == BURST_KIND_MAP_REDUCE ? 1 : 0);
}

static void
reply_send(struct conn *c, struct proto_reply *rep)
{
    struct proto_buf b;
    proto_buf_init(&b);
    int rc = proto_encode_reply(&b, rep);
    if (rc == 0) {
        conn_send(c, &b);
    } else {
        proto_buf_reset(&b);
        if (proto_encode_error(&b, rep->re, rc == BURST_ETOOBIG ? rc : BURST_EINTERNAL,
                               "the reply could not be encoded: %s", burst_strerror(rc)) == 0)
            conn_send(c, &b);
    }
    proto_buf_free(&b);
}

static void
reply_ok(struct conn *c, enum proto_op op, uint64_t re)
{
    struct proto_reply rep = {.op = op, .re = re, .ok = true};
    reply_send(c, &rep);
}

/* Loads a job the caller may see.  Sends the error reply itself and
 * returns non-zero when it may not. */
static int
job_for(struct burstd *d, struct conn *c, uint64_t re, uint64_t id, struct ledger_job *job)
{
    int rc = ledger_job_get(d->ledger, id, job);
    if (rc == BURST_ENOJOB) {
        conn_send_error(c, re, rc, "no such job: %llu", (unsigned long long)id);
        return rc;
    }
    if (rc != 0) {
        conn_send_error(c, re, rc, "cannot read job %llu from the ledger",
                        (unsigned long long)id);
        return rc;
    }
    /* Ownership is the uid SO_PEERCRED gave at accept, never a field of
     * the request.  The refusal names the job but not its owner. */
    if (!c->admin && job->owner_uid != c->uid) {
        conn_send_error(c, re, BURST_EPERM,
                        "permission denied: job %llu belongs to another user (uid %u "
                        "may only see and steer its own jobs)",
                        (unsigned long long)id, (unsigned)c->uid);
        ledger_job_free(job);
        return BURST_EPERM;
    }
    return 0;
}

/* ---- hello ---- */

static int
op_hello(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    if (req->u.hello.version != PROTO_VERSION) {
        conn_send_error(c, req->id, BURST_EVERSION,
                        "protocol version %u is not supported; this burstd speaks %u",
                        req->u.hello.version, PROTO_VERSION);
        return 0;
    }
    c->hello = true;
    struct proto_reply rep = {.op = PROTO_OP_HELLO, .re = req->id, .ok = true};
    rep.u.hello.version = PROTO_VERSION;
    rep.u.hello.revision = PROTO_REVISION;
    rep.u.hello.server = proto_str_c("burstd " BURST_VERSION);
    rep.u.hello.uid = c->uid;
    rep.u.hello.admin = c->admin;
    rep.u.hello.limits = d->cfg->limits;
    rep.u.hello.limits.max_subscriptions = d->cfg->max_subscriptions;
    reply_send(c, &rep);
    return 0;
}

/* ---- status and lists ---- */

static void
describe_fn(char *buf, size_t size, const struct ledger_fn *fn)
{
    if (fn->kind == BURST_FN_EXEC)
        snprintf(buf, size, "exec: %s", fn->arg ? fn->arg : "");
    else if (fn->kind == BURST_FN_SO)
        snprintf(buf, size, "so: %s", fn->symbol ? fn->symbol : "");
    else
        buf[0] = '\0';
}

/* Fills info from job; strings point into job and fnbuf. */
static int
job_info_fill(struct burstd *d, const struct ledger_job *job, char *fnbuf, size_t fnsize,
              struct proto_job_info *info)
{
    memset(info, 0, sizeof(*info));
    info->id = job->id;
    info->owner_uid = job->owner_uid;
    info->kind = job->kind;
    info->state = job->state;
    info->total = job->total;
    info->created_ms = job->created_ms;
    info->started_ms = job->started_ms;
    info->finished_ms = job->finished_ms;
    info->backend = proto_str_c(job->backend);
    info->name = proto_str_c(job->name);
    info->error = proto_str_c(job->error);
    info->last_seq = job->last_seq;
    describe_fn(fnbuf, fnsize, &job->fn);
    info->function = proto_str_c(fnbuf);
    if (sched_counts(d->sched, job->id, info->counts) == 0)
        return 0;
    return ledger_job_counts(d->ledger, job->id, info->counts);
}

static int
op_status(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct ledger_job job;
    if (job_for(d, c, req->id, req->u.job.job, &job) != 0)
        return 0;
    struct proto_reply rep = {.op = PROTO_OP_STATUS, .re = req->id, .ok = true};
    char fnbuf[512];
    int rc = job_info_fill(d, &job, fnbuf, sizeof(fnbuf), &rep.u.status);
    if (rc == 0)
        reply_send(c, &rep);
    else
        conn_send_error(c, req->id, rc, "cannot count the tasks of job %llu",
                        (unsigned long long)job.id);
    ledger_job_free(&job);
    return 0;
}

struct jobs_ctx {
    struct burstd *d;
    struct ledger_job *jobs;
    size_t n, cap;
};

static int
jobs_collect(void *arg, const struct ledger_job *job)
{
    struct jobs_ctx *x = arg;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 16;
        struct ledger_job *j = realloc(x->jobs, cap * sizeof(*j));
        if (j == NULL)
            return -ENOMEM;
        x->jobs = j;
        x->cap = cap;
    }
    /* The walk's job is only valid during the call: keep our own copy. */
    struct ledger_job *dst = &x->jobs[x->n];
    *dst = *job;
    dst->backend = job->backend ? strdup(job->backend) : NULL;
    dst->name = job->name ? strdup(job->name) : NULL;
    dst->error = job->error ? strdup(job->error) : NULL;
    dst->fn.arg = job->fn.arg ? strdup(job->fn.arg) : NULL;
    dst->fn.symbol = job->fn.symbol ? strdup(job->fn.symbol) : NULL;
    dst->reduce.arg = dst->reduce.symbol = NULL;
    x->n++;
    if ((job->backend && !dst->backend) || (job->name && !dst->name) ||
        (job->error && !dst->error) || (job->fn.arg && !dst->fn.arg) ||
        (job->fn.symbol && !dst->fn.symbol))
        return -ENOMEM;
    return 0;
}

static int
op_jobs(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct jobs_ctx x = {.d = d};
    int64_t owner = (req->u.jobs.all && c->admin) ? -1 : (int64_t)c->uid;
    bool active_only = !req->u.jobs.all;
    int rc = ledger_jobs_foreach(d->ledger, owner, active_only, jobs_collect, &x);
    struct proto_reply rep = {.op = PROTO_OP_JOBS, .re = req->id, .ok = true};
    char(*fnbufs)[256] = NULL;
    if (rc == 0 && x.n > 0) {
        rep.u.jobs.jobs = calloc(x.n, sizeof(*rep.u.jobs.jobs));
        fnbufs = calloc(x.n, sizeof(*fnbufs));
        if (rep.u.jobs.jobs == NULL || fnbufs == NULL)
            rc = -ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < x.n; i++)
        rc = job_info_fill(d, &x.jobs[i], fnbufs[i], sizeof(fnbufs[i]), &rep.u.jobs.jobs[i]);
    if (rc == 0) {
        rep.u.jobs.n = (uint32_t)x.n;
        reply_send(c, &rep);
    } else {
        conn_send_error(c, req->id, rc, "cannot list jobs: %s", burst_strerror(rc));
    }
    for (size_t i = 0; i < x.n; i++)
        ledger_job_free(&x.jobs[i]);
    free(x.jobs);
    free(rep.u.jobs.jobs);
    free(fnbufs);
    return 0;
}

struct tasks_ctx {
    struct proto_task_info *tasks;
    char (*reasons)[160];
    uint32_t n, max;
};

static int
tasks_collect(void *arg, const struct ledger_task *t)
{
    struct tasks_ctx *x = arg;
    if (x->n == x->max)
        return 1; /* one more than a page: there is more */
    struct proto_task_info *ti = &x->tasks[x->n];
    ti->index = t->index;
    ti->state = t->state;
    ti->attempts = t->attempts;
    ti->exit_status = t->exit_status;
    ti->signal = t->signal;
    ti->started_ms = t->started_ms;
    ti->finished_ms = t->finished_ms;
    memcpy(x->reasons[x->n], t->reason, sizeof(x->reasons[0]));
    x->reasons[x->n][sizeof(x->reasons[0]) - 1] = '\0';
    ti->reason = proto_str_c(x->reasons[x->n]);
    x->n++;
    return 0;
}

static int
op_tasks(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct ledger_job job;
    if (job_for(d, c, req->id, req->u.tasks.job, &job) != 0)
        return 0;
    uint64_t ntasks = job_rows(&job);
    ledger_job_free(&job);
    uint32_t limit = req->u.tasks.limit;
    if (limit == 0 || limit > d->cfg->limits.page_tasks)
        limit = d->cfg->limits.page_tasks;
    /* Room for what the job has, not for a whole page: a page is 10,000
     * tasks and most jobs are small. */
    uint32_t room = ntasks < limit ? (uint32_t)ntasks : limit;
    struct tasks_ctx x = {.max = room};
    x.tasks = calloc(room ? room : 1, sizeof(*x.tasks));
    x.reasons = calloc(room ? room : 1, sizeof(*x.reasons));
    int rc = (x.tasks && x.reasons) ? 0 : -ENOMEM;
    if (rc == 0)
        rc = ledger_tasks_foreach(d->ledger, req->u.tasks.job, req->u.tasks.state,
                                  req->u.tasks.offset, limit + 1, tasks_collect, &x);
    if (rc >= 0) {
        struct proto_reply rep = {.op = PROTO_OP_TASKS, .re = req->id, .ok = true};
        rep.u.tasks.n = x.n;
        rep.u.tasks.tasks = x.tasks;
        rep.u.tasks.more = rc == 1;
        reply_send(c, &rep);
    } else {
        conn_send_error(c, req->id, rc, "cannot list tasks: %s", burst_strerror(rc));
    }
    free(x.tasks);
    free(x.reasons);
    return 0;
}

static int
op_cancel(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct ledger_job job;
    if (job_for(d, c, req->id, req->u.job.job, &job) != 0)
        return 0;
    ledger_job_free(&job);
    int state;
    int rc = sched_cancel(d->sched, req->u.job.job, &state);
    if (rc == 0)
        rc = burstd_commit(d);
    if (rc != 0) {
        conn_send_error(c, req->id, rc, "cannot cancel job %llu: %s",
                        (unsigned long long)req->u.job.job, burst_strerror(rc));
        return 0;
    }
    struct proto_reply rep = {.op = PROTO_OP_CANCEL, .re = req->id, .ok = true};
    rep.u.cancel.state = state;
    reply_send(c, &rep);
    return 0;
}

static int
op_quota(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    if (req->u.quota.has_set) {
        if (!c->admin) {
            conn_send_error(c, req->id, BURST_EPERM,
                            "only an admin may change the quota (uid %u is not one)",
                            (unsigned)c->uid);
            return 0;
        }
        int rc = ledger_begin(d->ledger);
        if (rc == 0)
            rc = ledger_quota_set(d->ledger, req->u.quota.set);
        if (rc == 0)
            rc = burstd_commit(d);
        if (rc != 0) {
            conn_send_error(c, req->id, rc, "cannot record the quota: %s",
                            burst_strerror(rc));
            return 0;
        }
        sched_set_quota(d->sched, req->u.quota.set);
        log_info("quota set to %u by uid %u", req->u.quota.set, (unsigned)c->uid);
    }
    struct proto_reply rep = {.op = PROTO_OP_QUOTA, .re = req->id, .ok = true};
    rep.u.quota.quota = sched_quota(d->sched);
    rep.u.quota.in_use = sched_in_use(d->sched);
    reply_send(c, &rep);
    return 0;
}

static int
op_subscribe(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct ledger_job job;
    if (job_for(d, c, req->id, req->u.subscribe.job, &job) != 0)
        return 0;
    ledger_job_free(&job);
    if (events_subscribe_check(d->events, c, req->u.subscribe.job) != 0) {
        conn_send_error(c, req->id, BURST_ETOOBIG,
                        "cannot subscribe to job %llu: this connection already follows "
                        "%u jobs (limits.max_subscriptions); unsubscribe first",
                        (unsigned long long)req->u.subscribe.job, c->nsubs);
        return 0;
    }
    /* The reply goes first so the client knows that events follow.  The
     * check above holds until events_subscribe: nothing runs in between. */
    reply_ok(c, PROTO_OP_SUBSCRIBE, req->id);
    int rc = events_subscribe(d->events, c, req->u.subscribe.job, req->u.subscribe.from_seq);
    if (rc != 0)
        log_warnx("client %llu: replay of job %llu failed: %s",
                  (unsigned long long)c->serial, (unsigned long long)req->u.subscribe.job,
                  burst_strerror(rc));
    return rc == -ENOMEM ? rc : 0;
}

static int
op_unsubscribe(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    events_unsubscribe(d->events, c, req->u.job.job);
    reply_ok(c, PROTO_OP_UNSUBSCRIBE, req->id);
    return 0;
}

/* ---- put_fn: verify the hash off the loop, then store ---- */

/*
 * Libraries known to be in storage.  burstd never removes one (they are
 * content-addressed and shared), so a submission naming a library seen
 * before skips the storage lookup, a round trip through the thread pool
 * (local) or the network (S3).  One removed by hand from storage then fails
 * the tasks that need it ("function library ... not found in storage", the
 * worker says) instead of the submission.  Direct-mapped by a hash of the
 * key: a collision costs one lookup again.
 */
#define FNS_SEEN 256

static size_t
fns_slot(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        h = (h ^ *p) * 16777619u;
    return h % FNS_SEEN;
}

static bool
fn_seen(const struct burstd *d, const char *key)
{
    return d->fns_seen != NULL && strcmp(d->fns_seen[fns_slot(key)], key) == 0;
}

static void
fn_seen_add(struct burstd *d, const char *key)
{
    if (d->fns_seen == NULL && (d->fns_seen = calloc(FNS_SEEN, sizeof(*d->fns_seen))) == NULL)
        return; /* only a cache */
    if (strlen(key) < sizeof(*d->fns_seen))
        strcpy(d->fns_seen[fns_slot(key)], key);
}

struct put_fn_op {
    uv_work_t work;
    struct burstd *d;
    struct conn *c;    /* held */
    uint64_t re;
    const char *data;  /* borrowed from the held conn's frame */
    size_t len;
    char hash[65];
    bool match;
    char key[KEY_MAX];
    uv_buf_t buf;
};

static void
put_fn_finish(struct put_fn_op *op)
{
    struct conn *c = op->c;
    free(op);
    conn_resume(c);
    conn_release(c);
}

static void
put_fn_hash(uv_work_t *w)
{
    struct put_fn_op *op = w->data;
    unsigned char md[32];
    unsigned int mdlen = 0;
    op->match = false;
    if (EVP_Digest(op->data, op->len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return;
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    op->match = memcmp(hex, op->hash, 64) == 0;
    /* OpenSSL keeps per-thread state that nothing frees when libuv's pool
     * threads end with the process: release it now. */
    OPENSSL_thread_stop();
}

static void
put_fn_stored(void *arg, int status)
{
    struct put_fn_op *op = arg;
    if (status == 0) {
        fn_seen_add(op->d, op->key);
        reply_ok(op->c, PROTO_OP_PUT_FN, op->re);
    } else
        conn_send_error(op->c, op->re, BURST_ESTORAGE, "cannot store the library: %s",
                        uv_strerror(status));
    put_fn_finish(op);
}

static void
put_fn_hashed(uv_work_t *w, int status)
{
    struct put_fn_op *op = w->data;
    if (status != 0 || !op->match) {
        conn_send_error(op->c, op->re, BURST_EBADFIELD,
                        "the library's SHA-256 is not %s: upload damaged or hash wrong",
                        op->hash);
        put_fn_finish(op);
        return;
    }
    op->buf = uv_buf_init((char *)op->data, (unsigned)op->len);
    int rc = storage_put(op->d->storage, op->key, &op->buf, 1, true, put_fn_stored, op);
    if (rc != 0)
        put_fn_stored(op, rc);
}

static int
op_put_fn(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct put_fn_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        conn_send_error(c, req->id, -ENOMEM, "out of memory");
        return 0;
    }
    op->d = d;
    op->c = c;
    op->re = req->id;
    op->data = req->u.put_fn.data.ptr;
    op->len = req->u.put_fn.data.len;
    proto_str_copy(op->hash, sizeof(op->hash), req->u.put_fn.hash);
    if (invoc_key_fn(op->key, sizeof(op->key), op->hash) != 0) {
        conn_send_error(c, req->id, BURST_EBADFIELD, "bad library hash");
        free(op);
        return 0;
    }
    op->work.data = op;
    conn_hold(c);
    int rc = uv_queue_work(d->loop, &op->work, put_fn_hash, put_fn_hashed);
    if (rc != 0) {
        conn_send_error(c, req->id, BURST_EINTERNAL, "cannot queue work: %s",
                        uv_strerror(rc));
        put_fn_finish(op);
    }
    return 0;
}

/* ---- submit ---- */

struct submit_op {
    struct burstd *d;
    struct conn *c;            /* held */
    struct proto_request req;  /* owned (decoded); strings borrowed from c's frame */
    uint64_t job;              /* reserved id */
    uint32_t n;                /* tasks */
    int pending;               /* storage operations outstanding */
    int err;                   /* first failure */
    char errmsg[256];
    uint64_t *offsets;         /* owned: n + 1 little-endian offsets */
    uv_buf_t *bufs;            /* owned: header, offsets, then the inputs */
    unsigned nbufs;
    unsigned char header[INVOC_INPUT_HEADER];
    char *inline_input;        /* owned: the whole input object, when small */
    size_t inline_len;
    char fn_key[KEY_MAX], red_key[KEY_MAX];
    char input_key[KEY_MAX];
    struct burstd_waiter waiter; /* for the commit that holds the job */
    struct burstd_waiter written; /* for its write, before it is durable */
};

static void
submit_finish(struct submit_op *op)
{
    struct conn *c = op->c;
    proto_request_free(&op->req);
    free(op->offsets);
    free(op->bufs);
    free(op->inline_input);
    free(op);
    conn_resume(c);
    conn_release(c);
}

static void
submit_fail(struct submit_op *op, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
submit_fail(struct submit_op *op, int code, const char *fmt, ...)
{
    if (op->err != 0)
        return;
    op->err = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->errmsg, sizeof(op->errmsg), fmt, ap);
    va_end(ap);
}

static char *
str_dup(struct proto_str s)
{
    if (s.ptr == NULL)
        return NULL;
    char *p = malloc(s.len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s.ptr, s.len);
    p[s.len] = '\0';
    return p;
}

static int
fn_from_proto(struct ledger_fn *dst, const struct proto_fn *src)
{
    dst->kind = src->kind;
    dst->arg = str_dup(src->kind == BURST_FN_EXEC ? src->cmd : src->hash);
    dst->symbol = src->kind == BURST_FN_SO ? str_dup(src->symbol) : NULL;
    if (dst->arg == NULL || (src->kind == BURST_FN_SO && dst->symbol == NULL))
        return -ENOMEM;
    return 0;
}

static void uncork_when_durable(struct burstd *d, struct conn *c);

/*
 * The commit that held the job is over: acknowledge it (rc 0), or tell the
 * client nothing was accepted.  A job committed while its client left is
 * scheduled all the same: it exists now.
 */
static void
submit_committed(void *arg, int rc)
{
    struct submit_op *op = arg;
    struct burstd *d = op->d;
    struct conn *c = op->c;
    const struct proto_submit *sub = &op->req.u.submit;
    if (rc != 0) {
        conn_send_error(c, op->req.id, rc == -ENOMEM ? rc : BURST_ELEDGER,
                        "the job could not be recorded (%s); nothing was accepted",
                        burst_strerror(rc));
        submit_finish(op);
        return;
    }
    /* Committed: from here on the job exists whatever happens. */
    log_info("job %llu: %s of %u tasks submitted by uid %u", (unsigned long long)op->job,
             burst_job_kind_name(sub->kind), op->n, (unsigned)c->uid);
    if (sched_job_added(d->sched, op->job, (int32_t)c->pid) != 0)
        log_warnx("job %llu: not scheduled now; it will be at the next start",
                  (unsigned long long)op->job);
    if (sub->opts.cancel_on_disconnect && c->closing) {
        /* The client left while its job waited for the commit: what its
         * disconnect would have cancelled, cancel now. */
        int state;
        if (sched_cancel(d->sched, op->job, &state) == 0)
            log_info("job %llu: cancelled because its client disconnected",
                     (unsigned long long)op->job);
    } else if (sub->opts.cancel_on_disconnect) {
        struct conn_job *cj = malloc(sizeof(*cj));
        if (cj != NULL) {
            cj->job = op->job;
            cj->next = c->cancel_jobs;
            c->cancel_jobs = cj;
        }
    }
    struct proto_reply rep = {.op = PROTO_OP_SUBMIT, .re = op->req.id, .ok = true};
    rep.u.submit.job = op->job;
    rep.u.submit.total = op->n;
    reply_send(c, &rep);
    if (sub->subscribe) {
        /* The job may have run on ahead of its commit (submit_written):
         * the events the subscription replays may come from commits not
         * durable yet, and wait for them (the acknowledgment does not). */
        conn_cork(c);
        events_subscribe(d->events, c, op->job, 0);
        if (events_job_durable(d->events, op->job))
            conn_uncork(c);
        else
            uncork_when_durable(d, c);
    }
    submit_finish(op);
}

/*
 * The job's commit is written, not yet durable.  If a crash now could not
 * make its id come back for another job (ledger_job_ids_bound), let it run
 * while the disk syncs: the sync and the work overlap.  A crash before the
 * sync forgets the job, and its client, never acknowledged, is told the
 * submission failed, as when the crash comes before the commit; the job
 * may have run, as a task may run twice when a crash comes after.
 */
static void
submit_written(void *arg, int rc)
{
    struct submit_op *op = arg;
    struct burstd *d = op->d;
    const struct proto_submit *sub = &op->req.u.submit;
    (void)rc; /* always 0: not called for a failed commit */
    if (op->job > d->ids_durable || (sub->opts.cancel_on_disconnect && op->c->closing))
        return;
    if (sched_job_added(d->sched, op->job, (int32_t)op->c->pid) == 0)
        d->sched_again = true;
}

/* Inputs are durable, or small and go in with the job: write the job and
 * its tasks; the next commit (shared with whatever else this loop
 * iteration did) acknowledges it. */
static void
submit_commit(struct submit_op *op)
{
    struct burstd *d = op->d;
    struct conn *c = op->c;
    const struct proto_submit *sub = &op->req.u.submit;
    if (c->closing) {
        /* Nobody is left to acknowledge: do not create a job no one knows of. */
        submit_finish(op);
        return;
    }
    struct ledger_job job = {0};
    job.id = op->job;
    job.owner_uid = c->uid;
    job.kind = sub->kind;
    job.state = BURST_JOB_QUEUED;
    job.total = op->n;
    job.chunksize = sub->opts.chunksize ? sub->opts.chunksize : 1;
    job.retries = sub->opts.retries;
    job.timeout_ms = sub->opts.timeout_ms;
    job.memory_mb = sub->opts.memory_mb;
    job.cancel_on_disconnect = sub->opts.cancel_on_disconnect;
    job.created_ms = burstd_now_ms();
    job.reduce.kind = -1;
    int rc = 0;
    job.backend = strdup(d->compute->name);
    job.name = str_dup(sub->opts.name);
    if (job.backend == NULL || (sub->opts.name.ptr != NULL && job.name == NULL))
        rc = -ENOMEM;
    if (rc == 0)
        rc = fn_from_proto(&job.fn, &sub->fn);
    if (rc == 0 && sub->kind == BURST_KIND_MAP_REDUCE)
        rc = fn_from_proto(&job.reduce, &sub->reduce);
    uint32_t rows = op->n + (sub->kind == BURST_KIND_MAP_REDUCE ? 1 : 0);
    if (rc != 0) {
        ledger_job_free(&job);
        submit_committed(op, rc); /* nothing was written */
        return;
    }
    rc = ledger_begin(d->ledger);
    if (rc == 0)
        rc = ledger_job_insert(d->ledger, &job, rows);
    if (rc == 0 && op->inline_input != NULL)
        rc = ledger_input_put(d->ledger, job.id, op->inline_input, op->inline_len);
    if (rc == 0)
        rc = events_job_state(d->events, job.id, BURST_JOB_QUEUED);
    ledger_job_free(&job);
    /* A failure undoes the whole transaction, with whatever else it held
     * (other submissions waiting for this commit are told too). */
    burstd_after_commit(d, &op->waiter, submit_committed, op);
    if (rc != 0)
        burstd_abort(d, rc);
    else
        burstd_after_write(d, &op->written, submit_written, op);
}

static void
submit_step_done(void *arg, int status)
{
    struct submit_op *op = arg;
    if (status != 0)
        submit_fail(op, BURST_ESTORAGE, "cannot store the job's inputs: %s",
                    uv_strerror(status));
    if (--op->pending > 0)
        return;
    if (op->err != 0) {
        conn_send_error(op->c, op->req.id, op->err, "%s", op->errmsg);
        submit_finish(op);
        return;
    }
    submit_commit(op);
}

/* Builds the input object (offsets index, then the inputs) and either keeps
 * it for the ledger (small) or starts writing it to storage. */
static void
submit_write_inputs(struct submit_op *op)
{
    const struct proto_submit *sub = &op->req.u.submit;
    struct burstd *d = op->d;
    op->offsets = malloc(((size_t)op->n + 1) * sizeof(uint64_t));
    /* The input object (invoc.h): header, offsets, then the inputs, written
     * from the request's own buffers without a copy. */
    size_t ndata = sub->input_mode == PROTO_INPUT_LINES ? 1 : op->n;
    op->bufs = malloc((ndata + 2) * sizeof(*op->bufs));
    if (op->offsets == NULL || op->bufs == NULL)
        goto nomem;
    uv_buf_t *data = op->bufs + 2;
    uint64_t off = 0;
    if (sub->input_mode == PROTO_INPUT_LINES) {
        const char *p = sub->blob.ptr, *end = p + sub->blob.len;
        uint32_t i = 0;
        op->offsets[0] = 0;
        while (p < end && i < op->n) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            p = nl ? nl + 1 : end;
            op->offsets[++i] = (uint64_t)(p - sub->blob.ptr);
        }
        op->n = i;
        data[0] = uv_buf_init((char *)sub->blob.ptr, (unsigned)sub->blob.len);
    } else {
        for (uint32_t i = 0; i < op->n; i++) {
            op->offsets[i] = off;
            off += sub->inputs[i].len;
            data[i] = uv_buf_init((char *)sub->inputs[i].ptr, (unsigned)sub->inputs[i].len);
        }
        op->offsets[op->n] = off;
    }
    op->nbufs = (unsigned)ndata + 2;
    for (uint32_t i = 0; i <= op->n; i++)
        op->offsets[i] = htole64(op->offsets[i]);
    invoc_input_header(op->header, op->n);
    op->bufs[0] = uv_buf_init((char *)op->header, sizeof(op->header));
    op->bufs[1] = uv_buf_init((char *)op->offsets,
                              (unsigned)(((size_t)op->n + 1) * sizeof(uint64_t)));
    size_t total = 0;
    for (unsigned i = 0; i < op->nbufs; i++)
        total += op->bufs[i].len;
    if (total <= INLINE_INPUT_MAX) {
        /* Kept whole, byte for byte what storage would have held. */
        op->inline_input = malloc(total);
        if (op->inline_input == NULL)
            goto nomem;
        op->inline_len = 0;
        for (unsigned i = 0; i < op->nbufs; i++) {
            if (op->bufs[i].len > 0) /* an empty input may have no pointer */
                memcpy(op->inline_input + op->inline_len, op->bufs[i].base,
                       op->bufs[i].len);
            op->inline_len += op->bufs[i].len;
        }
        submit_commit(op);
        return;
    }
    invoc_key_input(op->input_key, sizeof(op->input_key), op->job);
    op->pending = 1;
    int rc = storage_put(d->storage, op->input_key, op->bufs, op->nbufs, true,
                         submit_step_done, op);
    if (rc != 0)
        submit_step_done(op, rc);
    return;
nomem:
    conn_send_error(op->c, op->req.id, -ENOMEM, "out of memory storing the inputs");
    submit_finish(op);
}

static void
submit_fn_checked(void *arg, int status)
{
    struct submit_op *op = arg;
    if (status == -ENOENT)
        submit_fail(op, BURST_ENOFN,
                    "function library not uploaded (put_fn it first): unknown hash");
    else if (status != 0)
        submit_fail(op, BURST_ESTORAGE, "cannot look up the function library: %s",
                    uv_strerror(status));
    if (--op->pending > 0)
        return;
    if (op->err != 0) {
        conn_send_error(op->c, op->req.id, op->err, "%s", op->errmsg);
        submit_finish(op);
        return;
    }
    if (op->fn_key[0] != '\0')
        fn_seen_add(op->d, op->fn_key);
    if (op->red_key[0] != '\0')
        fn_seen_add(op->d, op->red_key);
    submit_write_inputs(op);
}

static int
op_submit(struct burstd *d, struct conn *c, struct proto_request *req)
{
    struct proto_submit *sub = &req->u.submit;
    if (d->stopping) {
        conn_send_error(c, req->id, BURST_ESHUTDOWN, "burstd is shutting down");
        return 0;
    }
    if (sub->opts.backend.ptr != NULL && !proto_str_eq(sub->opts.backend, d->compute->name)) {
        char b[64];
        proto_str_copy(b, sizeof(b), sub->opts.backend);
        conn_send_error(c, req->id, BURST_EBADFIELD,
                        "unknown backend '%s' (this burstd has: %s)", b, d->compute->name);
        return 0;
    }
    if (d->compute->ops->admit != NULL) {
        char why[512];
        if (d->compute->ops->admit(d->compute, c->uid, why, sizeof(why)) != 0) {
            conn_send_error(c, req->id, BURST_EPERM, "%s", why);
            return 0;
        }
    }
    /* Refused before anything is accepted: a job acknowledged with the
     * promised subscription silently missing would never report back.
     * The conn is paused until the commit, so the count cannot grow. */
    if (sub->subscribe && c->nsubs >= d->cfg->max_subscriptions) {
        conn_send_error(c, req->id, BURST_ETOOBIG,
                        "cannot submit with a subscription: this connection already "
                        "follows %u jobs (limits.max_subscriptions); unsubscribe first",
                        c->nsubs);
        return 0;
    }
    struct submit_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        conn_send_error(c, req->id, -ENOMEM, "out of memory");
        return 0;
    }
    op->d = d;
    op->c = c;
    /* The decoded request (and its arrays) now belongs to the operation. */
    op->req = *req;
    req->priv_ = NULL;
    sub = &op->req.u.submit;
    op->n = sub->ninputs;
    /* In memory only: no transaction (an empty one would still cost a
     * commit and a sync while the submission's inputs are checked). */
    int rc = ledger_reserve_job_id(d->ledger, &op->job);
    if (rc != 0) {
        conn_send_error(c, req->id, BURST_ELEDGER,
                        "the ledger cannot take new jobs now (%s)", burst_strerror(rc));
        proto_request_free(&op->req);
        free(op);
        return 0;
    }
    conn_hold(c);
    op->pending = 1;
    char hash[65];
    if (sub->fn.kind == BURST_FN_SO) {
        proto_str_copy(hash, sizeof(hash), sub->fn.hash);
        invoc_key_fn(op->fn_key, sizeof(op->fn_key), hash);
        op->pending++;
        if (fn_seen(d, op->fn_key))
            submit_fn_checked(op, 0);
        else if (d->storage->ops->exists(d->storage, op->fn_key, submit_fn_checked, op) != 0)
            submit_fn_checked(op, -EIO);
    }
    if (sub->kind == BURST_KIND_MAP_REDUCE && sub->reduce.kind == BURST_FN_SO) {
        proto_str_copy(hash, sizeof(hash), sub->reduce.hash);
        invoc_key_fn(op->red_key, sizeof(op->red_key), hash);
        op->pending++;
        if (fn_seen(d, op->red_key))
            submit_fn_checked(op, 0);
        else if (d->storage->ops->exists(d->storage, op->red_key, submit_fn_checked, op) != 0)
            submit_fn_checked(op, -EIO);
    }
    submit_fn_checked(op, 0); /* releases the initial count */
    return 0;
}

/* ---- results and logs: ranged reads of output objects ---- */

struct read_op {
    struct burstd *d;
    struct conn *c; /* held */
    uint64_t re;
    enum proto_op op;
    uint32_t n;                   /* items */
    uint32_t nranges;
    struct storage_range *ranges; /* owned; data freed here */
    char (*keys)[KEY_MAX];        /* owned */
    struct output_ref *refs;      /* owned: the output object of each range */
    uint64_t job;
    struct proto_result_item *items; /* owned */
    int32_t *range_of;            /* item -> range index or -1 */
    uint64_t *data_off;           /* item -> where its bytes start in its range */
    bool more;
    /* logs */
    struct ledger_task task;
};

static void
read_op_free(struct read_op *op)
{
    struct conn *c = op->c;
    for (uint32_t i = 0; op->ranges != NULL && i < op->nranges; i++)
        free(op->ranges[i].data);
    free(op->ranges);
    free(op->keys);
    free(op->refs);
    free(op->items);
    free(op->range_of);
    free(op->data_off);
    free(op);
    conn_resume(c);
    conn_release(c);
}

static void
results_read(void *arg, int status)
{
    struct read_op *op = arg;
    if (status != 0) {
        conn_send_error(op->c, op->re, BURST_ESTORAGE, "cannot read results: %s",
                        burst_strerror(status));
        read_op_free(op);
        return;
    }
    for (uint32_t i = 0; i < op->n; i++) {
        int32_t r = op->range_of[i];
        if (r < 0)
            continue;
        struct storage_range *rg = &op->ranges[r];
        uint64_t off = op->data_off[i], len = op->items[i].data.len;
        if (rg->status != 0 || rg->got < off || rg->got - off < len) {
            conn_send_error(op->c, op->re, BURST_ESTORAGE,
                            "the result of task %u cannot be read: %s",
                            op->items[i].index,
                            rg->status ? burst_strerror(rg->status)
                                       : "its output object is shorter than the ledger says");
            read_op_free(op);
            return;
        }
        /* Borrowed from the range's buffer until the reply is encoded. */
        op->items[i].data.ptr = rg->data ? rg->data + off : "";
    }
    struct proto_reply rep = {.op = PROTO_OP_RESULTS, .re = op->re, .ok = true};
    rep.u.results.n = op->n;
    rep.u.results.items = op->items;
    rep.u.results.more = op->more;
    reply_send(op->c, &rep);
    read_op_free(op);
}

/* Results of neighbouring tasks sit close together in their output object,
 * separated by their metadata and logs: reading them as one range when the
 * gap is at most this many bytes turns a page of 10,000 results from one
 * read each into a few reads.  The gaps count against the page's byte
 * budget, so they cannot make a page's memory grow past it. */
#define RESULTS_GAP_MAX 4096

struct results_ctx {
    struct read_op *op;
    uint64_t job;
    uint32_t max;
    uint64_t budget; /* bytes */
    uint64_t bytes;
    uint32_t nranges;
    uint64_t last_dispatch; /* the object of the last range */
    uint32_t last_n;
};

static int
results_collect(void *arg, const struct ledger_task *t)
{
    struct results_ctx *x = arg;
    struct read_op *op = x->op;
    if (op->n == x->max || (op->n > 0 && x->bytes >= x->budget)) {
        op->more = true;
        return 1;
    }
    struct proto_result_item *it = &op->items[op->n];
    it->index = t->index;
    op->range_of[op->n] = -1;
    if (t->state == BURST_TASK_SUCCEEDED && t->has_out) {
        struct storage_range *prev = x->nranges > 0 ? &op->ranges[x->nranges - 1] : NULL;
        uint64_t end = prev != NULL ? prev->off + prev->len : 0;
        uint32_t r;
        if (prev != NULL && x->last_dispatch == t->out_dispatch && x->last_n == t->out_n &&
            t->res_off >= end && t->res_off - end <= RESULTS_GAP_MAX) {
            r = x->nranges - 1; /* the same object, just after: one read */
            x->bytes += t->res_off - end;
            prev->len = t->res_off + t->res_len - prev->off;
        } else {
            r = x->nranges;
            if (invoc_key_output(op->keys[r], KEY_MAX, x->job, t->out_dispatch,
                                 t->out_n) != 0)
                return -EINVAL;
            x->nranges++;
            op->ranges[r].key = op->keys[r];
            op->ranges[r].off = t->res_off;
            op->ranges[r].len = t->res_len;
            op->refs[r].dispatch = t->out_dispatch;
            op->refs[r].n = t->out_n;
            x->last_dispatch = t->out_dispatch;
            x->last_n = t->out_n;
        }
        op->range_of[op->n] = (int32_t)r;
        op->data_off[op->n] = t->res_off - op->ranges[r].off;
        it->data.len = t->res_len;
        it->has_data = true;
        x->bytes += t->res_len;
    }
    op->n++;
    return 0;
}

static int
op_results(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct ledger_job job;
    if (job_for(d, c, req->id, req->u.results.job, &job) != 0)
        return 0;
    uint64_t job_id = job.id;
    /* A map_reduce job's map outputs only fed its reducer; a client asking
     * for the final results would otherwise need a status round trip to
     * know to skip them. */
    uint32_t from = req->u.results.from;
    if (req->u.results.final && job.kind == BURST_KIND_MAP_REDUCE && from < job.total)
        from = job.total;
    /* Room for the tasks the page can hold, not for a whole page of
     * 10,000: most jobs are small (as op_tasks). */
    uint64_t ntasks = job_rows(&job);
    uint64_t left = ntasks > from ? ntasks - from : 1;
    ledger_job_free(&job);
    uint32_t max = d->cfg->limits.page_tasks;
    if (left < max)
        max = (uint32_t)left;
    uint64_t budget = req->u.results.max_bytes;
    if (budget == 0 || budget > d->cfg->limits.page_bytes)
        budget = d->cfg->limits.page_bytes;
    struct read_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        conn_send_error(c, req->id, -ENOMEM, "out of memory");
        return 0;
    }
    op->d = d;
    op->c = c;
    op->re = req->id;
    op->op = PROTO_OP_RESULTS;
    op->items = calloc(max, sizeof(*op->items));
    op->range_of = calloc(max, sizeof(*op->range_of));
    op->data_off = calloc(max, sizeof(*op->data_off));
    op->ranges = calloc(max, sizeof(*op->ranges));
    op->keys = calloc(max, sizeof(*op->keys));
    op->refs = calloc(max, sizeof(*op->refs));
    op->job = job_id;
    conn_hold(c);
    if (op->items == NULL || op->range_of == NULL || op->data_off == NULL ||
        op->ranges == NULL || op->keys == NULL || op->refs == NULL) {
        conn_send_error(c, req->id, -ENOMEM, "out of memory");
        read_op_free(op);
        return 0;
    }
    struct results_ctx x = {.op = op, .job = job_id, .max = max, .budget = budget};
    int rc =
        ledger_tasks_foreach(d->ledger, job_id, -1, from, max + 1, results_collect, &x);
    if (rc < 0) {
        conn_send_error(c, req->id, rc, "cannot read the ledger: %s", burst_strerror(rc));
        read_op_free(op);
        return 0;
    }
    op->nranges = x.nranges;
    if (x.nranges == 0) {
        results_read(op, 0);
        return 0;
    }
    rc = outputs_getv(d, job_id, op->refs, op->ranges, x.nranges, results_read, op);
    if (rc != 0)
        results_read(op, rc);
    return 0;
}

static void
logs_read(void *arg, int status)
{
    struct read_op *op = arg;
    struct proto_reply rep = {.op = PROTO_OP_LOGS, .re = op->re, .ok = true};
    rep.u.logs.attempts = op->task.attempts;
    rep.u.logs.reason = proto_str_c(op->task.reason);
    rep.u.logs.log = proto_str_c("");
    if (op->ranges != NULL) {
        struct storage_range *rg = &op->ranges[0];
        if (status != 0 || rg->status != 0) {
            conn_send_error(op->c, op->re, BURST_ESTORAGE, "cannot read the log: %s",
                            burst_strerror(status ? status : rg->status));
            read_op_free(op);
            return;
        }
        rep.u.logs.log.ptr = rg->data ? rg->data : "";
        rep.u.logs.log.len = rg->got;
    }
    reply_send(op->c, &rep);
    read_op_free(op);
}

static int
op_logs(struct burstd *d, struct conn *c, const struct proto_request *req)
{
    struct ledger_job job;
    if (job_for(d, c, req->id, req->u.logs.job, &job) != 0)
        return 0;
    ledger_job_free(&job);
    struct read_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        conn_send_error(c, req->id, -ENOMEM, "out of memory");
        return 0;
    }
    op->d = d;
    op->c = c;
    op->re = req->id;
    op->op = PROTO_OP_LOGS;
    conn_hold(c);
    int rc = ledger_task_get(d->ledger, req->u.logs.job, req->u.logs.task, &op->task);
    if (rc != 0) {
        if (rc == BURST_ENOTASK)
            conn_send_error(c, req->id, rc, "job %llu has no task %u",
                            (unsigned long long)req->u.logs.job, req->u.logs.task);
        else
            conn_send_error(c, req->id, rc, "cannot read the ledger: %s", burst_strerror(rc));
        read_op_free(op);
        return 0;
    }
    if (!op->task.has_out || op->task.log_len == 0) {
        logs_read(op, 0);
        return 0;
    }
    op->nranges = 1;
    op->ranges = calloc(1, sizeof(*op->ranges));
    op->keys = calloc(1, sizeof(*op->keys));
    op->refs = calloc(1, sizeof(*op->refs));
    if (op->ranges == NULL || op->keys == NULL || op->refs == NULL) {
        conn_send_error(c, req->id, -ENOMEM, "out of memory");
        read_op_free(op);
        return 0;
    }
    invoc_key_output(op->keys[0], KEY_MAX, req->u.logs.job, op->task.out_dispatch,
                     op->task.out_n);
    op->ranges[0].key = op->keys[0];
    op->ranges[0].off = op->task.log_off;
    op->ranges[0].len = op->task.log_len;
    op->refs[0].dispatch = op->task.out_dispatch;
    op->refs[0].n = op->task.out_n;
    rc = outputs_getv(d, req->u.logs.job, op->refs, op->ranges, 1, logs_read, op);
    if (rc != 0)
        logs_read(op, rc);
    return 0;
}

/* ---- entry points ---- */

/* A conn's replies held back until the state they were read from is
 * durable. */
struct uncork {
    struct burstd_waiter waiter;
    struct conn *c;
};

static void
uncork_durable(void *arg, int rc)
{
    (void)rc; /* a failed commit was rolled back: what was read is gone either way */
    struct uncork *u = arg;
    conn_uncork(u->c);
    free(u);
}

/*
 * Lets c's replies go once what they say cannot be undone by a crash (all
 * of it; api_handle lets a reply about one job go once that job's part is).  A
 * reply is built from the ledger and the scheduler as they are now, which
 * may include the open transaction or a commit whose sync is in flight; a
 * client must not read a result, a state or an event that a restart would
 * take back (exactly-once results).  When everything is durable already
 * (an idle daemon) this costs nothing.
 */
static void
uncork_when_durable(struct burstd *d, struct conn *c)
{
    struct uncork *u;
    if (burstd_is_durable(d) || (u = malloc(sizeof(*u))) == NULL) {
        /* Out of memory: better late durability than a stuck client. */
        conn_uncork(c);
        return;
    }
    u->c = c;
    burstd_after_durable(d, &u->waiter, uncork_durable, u);
}

int
api_handle(struct burstd *d, struct conn *c, const char *payload, size_t len)
{
    struct proto_request req;
    struct proto_error err;
    uint64_t id = 0;
    int rc = proto_decode_request(payload, len, &d->cfg->limits, &req, &err, &id);
    if (rc != 0) {
        char msg[512];
        proto_str_copy(msg, sizeof(msg), err.message);
        conn_send_error(c, id, rc, "%s", msg);
        log_debug("client %llu: bad request: %s", (unsigned long long)c->serial, msg);
        /* A frame we cannot even read as a map means the stream is not
         * speaking our protocol: drop it.  A well-formed but wrong request
         * only gets its error. */
        return rc == BURST_EPROTO && id == 0 ? rc : 0;
    }
    if (!c->hello && req.op != PROTO_OP_HELLO) {
        conn_send_error(c, req.id, BURST_EPROTO, "say hello first (with protocol version %u)",
                        PROTO_VERSION);
        proto_request_free(&req);
        return 0;
    }
    conn_cork(c);
    switch (req.op) {
    case PROTO_OP_HELLO: rc = op_hello(d, c, &req); break;
    case PROTO_OP_SUBMIT: rc = op_submit(d, c, &req); break;
    case PROTO_OP_PUT_FN: rc = op_put_fn(d, c, &req); break;
    case PROTO_OP_STATUS: rc = op_status(d, c, &req); break;
    case PROTO_OP_JOBS: rc = op_jobs(d, c, &req); break;
    case PROTO_OP_TASKS: rc = op_tasks(d, c, &req); break;
    case PROTO_OP_RESULTS: rc = op_results(d, c, &req); break;
    case PROTO_OP_CANCEL: rc = op_cancel(d, c, &req); break;
    case PROTO_OP_LOGS: rc = op_logs(d, c, &req); break;
    case PROTO_OP_QUOTA: rc = op_quota(d, c, &req); break;
    case PROTO_OP_SUBSCRIBE: rc = op_subscribe(d, c, &req); break;
    case PROTO_OP_UNSUBSCRIBE: rc = op_unsubscribe(d, c, &req); break;
    default:
        conn_send_error(c, req.id, BURST_EUNKNOWNOP, "unknown operation");
        rc = 0;
    }
    /* A reply about one job waits only for that job's changes; the job
     * list and the quota for everything; hello, put_fn, submit and
     * unsubscribe report no state (a submission's acknowledgment waits
     * for its own commit). */
    uint64_t about = 0;
    bool stateless = false;
    switch (req.op) {
    case PROTO_OP_HELLO:
    case PROTO_OP_PUT_FN:
    case PROTO_OP_SUBMIT:
    case PROTO_OP_UNSUBSCRIBE: stateless = true; break;
    case PROTO_OP_STATUS:
    case PROTO_OP_CANCEL: about = req.u.job.job; break;
    case PROTO_OP_TASKS: about = req.u.tasks.job; break;
    case PROTO_OP_RESULTS: about = req.u.results.job; break;
    case PROTO_OP_LOGS: about = req.u.logs.job; break;
    case PROTO_OP_SUBSCRIBE: about = req.u.subscribe.job; break;
    default: break;
    }
    proto_request_free(&req);
    if (stateless || (about != 0 && events_job_durable(d->events, about)))
        conn_uncork(c);
    else
        uncork_when_durable(d, c);
    return rc;
}

void
api_conn_closed(struct burstd *d, struct conn *c)
{
    events_conn_closed(d->events, c);
    for (struct conn_job *j = c->cancel_jobs; j != NULL; j = j->next) {
        int state;
        if (sched_cancel(d->sched, j->job, &state) == 0 && !burst_job_state_is_final(state))
            log_info("job %llu: cancelled because its client disconnected",
                     (unsigned long long)j->job);
    }
}
