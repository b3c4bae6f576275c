/*
 * daemon/events.c - see events.h.  Task changes that happen together are
 * folded into one log entry (up to EV_BATCH tasks), so a million-task job
 * writes thousands of event rows, not millions, and a subscriber receives a
 * few frames per loop iteration however many tasks finished in it.
 *
 * Ledger body of an entry (msgpack): [0, job_state] or
 * [1, [[index, task_state, attempts], ...]].
 */
#include "events.h"

#include <errno.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "burstd.h"
#include "ledger.h"
#include "log.h"
#include "msg.h"
#include "server.h"

#define EV_BATCH 10000u /* task changes per log entry */
#define EV_REPLAY 1000u /* log entries per replayed frame */

struct ev_item {
    int type;  /* BURST_EV_JOB or BURST_EV_TASK */
    int state; /* JOB */
    uint32_t n, cap;
    struct proto_task_change *tasks; /* owned; TASK */
    uint64_t seq;                    /* assigned when flushed */
};

struct ev_job {
    uint64_t job;
    struct ev_item *items; /* owned */
    uint32_t nitems, cap;
    struct ev_job *next;
};

#define EV_SUB_BUCKETS 4096 /* a power of two */

struct ev_sub {
    struct conn *conn; /* borrowed; removed in events_conn_closed */
    uint64_t job;
    uint64_t last_seq; /* newest event this subscriber has been sent */
    bool ended;        /* it has been sent the job's final event */
    struct ev_sub *next;
};

/* A job with events not yet durable (queued, in the open transaction, or
 * committed and waiting for the sync), and how many lists hold some. */
struct ev_pend {
    uint64_t job;
    uint32_t n;
    struct ev_pend *next;
};

struct events {
    struct burstd *d;       /* borrowed */
    struct ev_job *queued;  /* owned: changes of this iteration */
    struct ev_job *last;    /* cache: the job most recently touched */
    struct ev_job *flushed; /* owned: in the ledger, waiting for the commit */
    /* owned: subscriptions hashed by job id (ids are sequential, so the
     * low bits spread them), so that publishing the events of a job and
     * subscribing cost the subscriptions of that job, not all of them */
    struct ev_sub *subs[EV_SUB_BUCKETS];
    struct ev_pend *pend[EV_SUB_BUCKETS]; /* owned, hashed like subs */
    bool pend_lost; /* a count could not be kept (out of memory) */
    /* Sending to a subscriber can drop its conn (too much unsent), which
     * ends its subscriptions while a loop over them is under way: meanwhile
     * they are only cut from their conn, and freed once the sending ends. */
    bool sending;
    bool orphans; /* subscriptions cut from their conn wait to be freed */
};

/* Counts one more (delta 1) or one fewer (-1) list holding job's events. */
static void
ev_pend_move(struct events *ev, uint64_t job, int delta)
{
    struct ev_pend **pp = &ev->pend[job & (EV_SUB_BUCKETS - 1)];
    while (*pp != NULL && (*pp)->job != job)
        pp = &(*pp)->next;
    struct ev_pend *p = *pp;
    if (p == NULL) {
        if (delta < 0)
            return;
        p = calloc(1, sizeof(*p));
        if (p == NULL) {
            /* Cannot count it: the job's readers then wait for every
             * commit (events_job_durable says so while any is pending). */
            ev->pend_lost = true;
            return;
        }
        p->job = job;
        *pp = p;
    }
    if (delta > 0) {
        p->n++;
    } else if (--p->n == 0) {
        *pp = p->next;
        free(p);
    }
}

bool
events_job_durable(const struct events *ev, uint64_t job)
{
    if (ev->pend_lost)
        return false;
    for (const struct ev_pend *p = ev->pend[job & (EV_SUB_BUCKETS - 1)]; p != NULL;
         p = p->next)
        if (p->job == job)
            return false;
    return true;
}

static struct ev_sub **
ev_bucket(struct events *ev, uint64_t job)
{
    return &ev->subs[job & (EV_SUB_BUCKETS - 1)];
}

int
events_new(struct burstd *d, struct events **out)
{
    struct events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL)
        return -ENOMEM;
    ev->d = d;
    *out = ev;
    return 0;
}

/* Frees a list whose events are now durable (published) or gone. */
static void
ev_jobs_free(struct events *ev, struct ev_job *j)
{
    while (j != NULL) {
        struct ev_job *next = j->next;
        ev_pend_move(ev, j->job, -1);
        for (uint32_t i = 0; i < j->nitems; i++)
            free(j->items[i].tasks);
        free(j->items);
        free(j);
        j = next;
    }
}

void
events_free(struct events *ev)
{
    if (ev == NULL)
        return;
    ev_jobs_free(ev, ev->queued);
    ev_jobs_free(ev, ev->flushed);
    for (size_t b = 0; b < EV_SUB_BUCKETS; b++) {
        while (ev->pend[b] != NULL) {
            struct ev_pend *p = ev->pend[b];
            ev->pend[b] = p->next;
            free(p);
        }
        while (ev->subs[b] != NULL) {
            struct ev_sub *s = ev->subs[b];
            ev->subs[b] = s->next;
            free(s);
        }
    }
    free(ev);
}

static struct ev_job *
ev_job_get(struct events *ev, uint64_t job)
{
    if (ev->last != NULL && ev->last->job == job)
        return ev->last;
    for (struct ev_job *j = ev->queued; j != NULL; j = j->next)
        if (j->job == job)
            return ev->last = j;
    struct ev_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->job = job;
    j->next = ev->queued;
    ev->queued = j;
    ev_pend_move(ev, job, 1);
    return ev->last = j;
}

static struct ev_item *
ev_item_new(struct ev_job *j, int type)
{
    if (j->nitems == j->cap) {
        uint32_t cap = j->cap ? j->cap * 2 : 4;
        struct ev_item *items = realloc(j->items, cap * sizeof(*items));
        if (items == NULL)
            return NULL;
        j->items = items;
        j->cap = cap;
    }
    struct ev_item *it = &j->items[j->nitems++];
    memset(it, 0, sizeof(*it));
    it->type = type;
    return it;
}

int
events_job_state(struct events *ev, uint64_t job, int state)
{
    struct ev_job *j = ev_job_get(ev, job);
    if (j == NULL)
        return -ENOMEM;
    struct ev_item *it = ev_item_new(j, BURST_EV_JOB);
    if (it == NULL)
        return -ENOMEM;
    it->state = state;
    return 0;
}

int
events_task(struct events *ev, uint64_t job, uint32_t index, int state, uint32_t attempts)
{
    struct ev_job *j = ev_job_get(ev, job);
    if (j == NULL)
        return -ENOMEM;
    struct ev_item *it = j->nitems > 0 ? &j->items[j->nitems - 1] : NULL;
    if (it == NULL || it->type != BURST_EV_TASK || it->n == EV_BATCH) {
        it = ev_item_new(j, BURST_EV_TASK);
        if (it == NULL)
            return -ENOMEM;
    }
    if (it->n == it->cap) {
        uint32_t cap = it->cap ? it->cap * 2 : 16;
        if (cap > EV_BATCH)
            cap = EV_BATCH;
        struct proto_task_change *t = realloc(it->tasks, cap * sizeof(*t));
        if (t == NULL)
            return -ENOMEM;
        it->tasks = t;
        it->cap = cap;
    }
    it->tasks[it->n++] = (struct proto_task_change){index, state, attempts};
    return 0;
}

static int
ev_body_encode(const struct ev_item *it, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_array(&pk, 2);
    rc |= msgpack_pack_int(&pk, it->type);
    if (it->type == BURST_EV_JOB) {
        rc |= msgpack_pack_int(&pk, it->state);
    } else {
        rc |= msgpack_pack_array(&pk, it->n);
        for (uint32_t i = 0; i < it->n; i++) {
            rc |= msgpack_pack_array(&pk, 3);
            rc |= msgpack_pack_uint32(&pk, it->tasks[i].index);
            rc |= msgpack_pack_int(&pk, it->tasks[i].state);
            rc |= msgpack_pack_uint32(&pk, it->tasks[i].attempts);
        }
    }
    return rc == 0 ? 0 : -ENOMEM;
}

int
events_flush_to_ledger(struct events *ev)
{
    struct burstd *d = ev->d;
    if (ev->queued == NULL)
        return 0;
    int rc = ledger_begin(d->ledger);
    if (rc != 0)
        return rc;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* A job's items go in batches that share one sequence update. */
    enum { BATCH = 16 };
    for (struct ev_job *j = ev->queued; j != NULL; j = j->next) {
        for (uint32_t i = 0; i < j->nitems; i += BATCH) {
            uint32_t n = j->nitems - i < BATCH ? j->nitems - i : BATCH;
            size_t end[BATCH];
            struct ledger_event_body bodies[BATCH];
            msgpack_sbuffer_clear(&sb);
            for (uint32_t k = 0; k < n && rc == 0; k++) {
                rc = ev_body_encode(&j->items[i + k], &sb);
                end[k] = sb.size;
            }
            /* The buffer may move while it grows: point into it after. */
            for (uint32_t k = 0; k < n && rc == 0; k++) {
                size_t from = k == 0 ? 0 : end[k - 1];
                bodies[k] = (struct ledger_event_body){sb.data + from, end[k] - from};
            }
            uint64_t first = 0;
            if (rc == 0)
                rc = ledger_events_append(d->ledger, j->job, bodies, n, &first);
            if (rc != 0)
                goto fail;
            for (uint32_t k = 0; k < n; k++)
                j->items[i + k].seq = first + k;
        }
    }
    msgpack_sbuffer_destroy(&sb);
    /* Appended: they now wait for the commit. */
    struct ev_job *tail = ev->queued;
    while (tail->next != NULL)
        tail = tail->next;
    tail->next = ev->flushed;
    ev->flushed = ev->queued;
    ev->queued = NULL;
    ev->last = NULL;
    return 0;
fail:
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

void
events_discard(struct events *ev)
{
    ev_jobs_free(ev, ev->flushed);
    ev->flushed = NULL;
}

/* A job's final event is its last: the subscriptions that were sent it
 * end, so a client following many jobs one after another need not
 * unsubscribe from each (max_subscriptions counts only live ones). */
static void
ev_subs_drop_ended(struct events *ev, uint64_t job)
{
    struct ev_sub **pp = ev_bucket(ev, job);
    while (*pp != NULL) {
        struct ev_sub *s = *pp;
        if (s->job == job && s->ended) {
            *pp = s->next;
            if (s->conn != NULL)
                s->conn->nsubs--;
            free(s);
        } else {
            pp = &s->next;
        }
    }
}

/* Ends the sending, freeing what it orphaned. */
static void
ev_sending_done(struct events *ev)
{
    ev->sending = false;
    if (!ev->orphans)
        return;
    ev->orphans = false;
    for (size_t b = 0; b < EV_SUB_BUCKETS; b++) {
        struct ev_sub **pp = &ev->subs[b];
        while (*pp != NULL) {
            struct ev_sub *s = *pp;
            if (s->conn == NULL) {
                *pp = s->next;
                free(s);
            } else {
                pp = &s->next;
            }
        }
    }
}

/* Sends items[0..n) of one job to one subscriber, skipping what it has. */
static void
ev_send(struct ev_sub *s, struct proto_event_item *items, uint32_t n)
{
    if (s->conn == NULL)
        return; /* its conn was dropped by an earlier send */
    uint32_t first = 0;
    while (first < n && items[first].seq <= s->last_seq)
        first++;
    if (first == n)
        return;
    struct proto_events pe = {.job = s->job, .nitems = n - first, .items = items + first};
    struct proto_buf b;
    proto_buf_init(&b);
    if (proto_encode_events(&b, &pe) == 0) {
        s->last_seq = items[n - 1].seq;
        for (uint32_t i = first; i < n; i++)
            if (items[i].type == BURST_EV_JOB &&
                burst_job_state_is_final(items[i].job_state))
                s->ended = true;
        conn_send(s->conn, &b);
    } else {
        log_warnx("cannot encode events of job %llu for a subscriber",
                  (unsigned long long)s->job);
    }
    proto_buf_free(&b);
}

/* Sends a list of flushed jobs' events to their subscribers and frees it. */
static void
ev_publish_list(struct events *ev, struct ev_job *list)
{
    ev->sending = true;
    for (struct ev_job *j = list; j != NULL; j = j->next) {
        bool any = false;
        for (struct ev_sub *s = *ev_bucket(ev, j->job); s != NULL && !any; s = s->next)
            any = s->job == j->job;
        if (!any || j->nitems == 0)
            continue;
        struct proto_event_item *items = calloc(j->nitems, sizeof(*items));
        if (items == NULL) {
            log_warnx("out of memory publishing events of job %llu",
                      (unsigned long long)j->job);
            continue;
        }
        for (uint32_t i = 0; i < j->nitems; i++) {
            items[i].seq = j->items[i].seq;
            items[i].type = j->items[i].type;
            items[i].job_state = j->items[i].state;
            items[i].ntasks = j->items[i].n;
            items[i].tasks = j->items[i].tasks;
        }
        for (struct ev_sub *s = *ev_bucket(ev, j->job); s != NULL; s = s->next)
            if (s->job == j->job)
                ev_send(s, items, j->nitems);
        free(items);
        ev_subs_drop_ended(ev, j->job);
    }
    ev_sending_done(ev);
    ev_jobs_free(ev, list);
}

void
events_publish(struct events *ev)
{
    struct ev_job *list = ev->flushed;
    ev->flushed = NULL;
    ev_publish_list(ev, list);
}

struct events_batch *
events_detach(struct events *ev)
{
    struct ev_job *list = ev->flushed;
    ev->flushed = NULL;
    return (struct events_batch *)list;
}

void
events_publish_batch(struct events *ev, struct events_batch *b)
{
    ev_publish_list(ev, (struct ev_job *)b);
}

enum events_need
events_batch_need(const struct events *ev, const struct events_batch *b)
{
    enum events_need need = EVENTS_SYNC_LATER;
    for (const struct ev_job *j = (const struct ev_job *)b; j != NULL; j = j->next) {
        for (uint32_t i = 0; i < j->nitems; i++) {
            const struct ev_item *it = &j->items[i];
            if (it->type == BURST_EV_JOB && burst_job_state_is_final(it->state))
                return EVENTS_SYNC_NOW;
        }
        if (need == EVENTS_SYNC_LATER)
            for (const struct ev_sub *s = ev->subs[j->job & (EV_SUB_BUCKETS - 1)];
                 s != NULL; s = s->next)
                if (s->job == j->job) {
                    need = EVENTS_SYNC_SOON;
                    break;
                }
    }
    return need;
}

bool
events_queued(const struct events *ev)
{
    return ev->queued != NULL;
}

/* ---- replay ---- */

struct replay {
    struct ev_sub *sub;
    struct proto_event_item items[EV_REPLAY];
    uint32_t n;
    int err;
};

static void
replay_flush(struct replay *r)
{
    if (r->n == 0)
        return;
    ev_send(r->sub, r->items, r->n);
    for (uint32_t i = 0; i < r->n; i++)
        free(r->items[i].tasks);
    r->n = 0;
}

static int
replay_decode(const void *body, size_t len, struct proto_event_item *it)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -EINVAL;
    if (msgpack_unpack_next(&u, body, len, &off) != MSGPACK_UNPACK_SUCCESS)
        goto out;
    msgpack_object o = u.data;
    if (o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size != 2 ||
        o.via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        goto out;
    it->type = (int)o.via.array.ptr[0].via.u64;
    msgpack_object v = o.via.array.ptr[1];
    if (it->type == BURST_EV_JOB) {
        if (v.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            goto out;
        it->job_state = (int)v.via.u64;
        rc = 0;
    } else if (it->type == BURST_EV_TASK && v.type == MSGPACK_OBJECT_ARRAY) {
        it->ntasks = v.via.array.size;
        it->tasks = calloc(it->ntasks ? it->ntasks : 1, sizeof(*it->tasks));
        if (it->tasks == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        for (uint32_t i = 0; i < it->ntasks; i++) {
            msgpack_object t = v.via.array.ptr[i];
            if (t.type != MSGPACK_OBJECT_ARRAY || t.via.array.size != 3)
                goto bad_task;
            for (int k = 0; k < 3; k++)
                if (t.via.array.ptr[k].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                    goto bad_task;
            it->tasks[i].index = (uint32_t)t.via.array.ptr[0].via.u64;
            it->tasks[i].state = (int)t.via.array.ptr[1].via.u64;
            it->tasks[i].attempts = (uint32_t)t.via.array.ptr[2].via.u64;
        }
        rc = 0;
    }
    goto out;
bad_task:
    free(it->tasks);
    it->tasks = NULL;
out:
    msgpack_unpacked_destroy(&u);
    return rc;
}

static int
replay_one(void *arg, uint64_t seq, const void *body, size_t len)
{
    struct replay *r = arg;
    struct proto_event_item *it = &r->items[r->n];
    memset(it, 0, sizeof(*it));
    int rc = replay_decode(body, len, it);
    if (rc != 0) {
        log_warnx("job %llu: event %llu in the ledger is malformed; skipped",
                  (unsigned long long)r->sub->job, (unsigned long long)seq);
        return rc == -ENOMEM ? rc : 0;
    }
    it->seq = seq;
    r->n++;
    if (r->n == EV_REPLAY)
        replay_flush(r);
    return 0;
}

static struct ev_sub *
ev_sub_find(const struct events *ev, const struct conn *c, uint64_t job)
{
    for (struct ev_sub *s = ev->subs[job & (EV_SUB_BUCKETS - 1)]; s != NULL; s = s->next)
        if (s->conn == c && s->job == job)
            return s;
    return NULL;
}

int
events_subscribe_check(const struct events *ev, const struct conn *c, uint64_t job)
{
    /* Renewing a subscription (a replay from another sequence number)
     * costs nothing; only a new job counts against the limit. */
    if (c->nsubs < ev->d->cfg->max_subscriptions || ev_sub_find(ev, c, job) != NULL)
        return 0;
    return BURST_ETOOBIG;
}

int
events_subscribe(struct events *ev, struct conn *c, uint64_t job, uint64_t from_seq)
{
    struct ev_sub *s = ev_sub_find(ev, c, job);
    if (s == NULL) {
        if (c->nsubs >= ev->d->cfg->max_subscriptions)
            return BURST_ETOOBIG;
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -ENOMEM;
        s->conn = c;
        s->job = job;
        s->next = *ev_bucket(ev, job);
        *ev_bucket(ev, job) = s;
        c->nsubs++;
    }
    s->last_seq = from_seq;
    struct replay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->sub = s;
    s->ended = false;
    ev->sending = true;
    int rc = ledger_events_since(ev->d->ledger, job, from_seq, 0, replay_one, r);
    replay_flush(r);
    free(r);
    ev_subs_drop_ended(ev, job);
    ev_sending_done(ev);
    return rc;
}

void
events_unsubscribe(struct events *ev, struct conn *c, uint64_t job)
{
    struct ev_sub **pp = ev_bucket(ev, job);
    while (*pp != NULL) {
        struct ev_sub *s = *pp;
        if (s->conn == c && s->job == job) {
            *pp = s->next;
            free(s);
            c->nsubs--;
        } else {
            pp = &s->next;
        }
    }
}

void
events_conn_closed(struct events *ev, struct conn *c)
{
    for (size_t b = 0; b < EV_SUB_BUCKETS && c->nsubs > 0; b++) {
        struct ev_sub **pp = &ev->subs[b];
        while (*pp != NULL) {
            struct ev_sub *s = *pp;
            if (s->conn == c && ev->sending) {
                s->conn = NULL;
                s->ended = true;
                ev->orphans = true;
                c->nsubs--;
                pp = &s->next;
            } else if (s->conn == c) {
                *pp = s->next;
                free(s);
                c->nsubs--;
            } else {
                pp = &s->next;
            }
        }
    }
    c->nsubs = 0;
}
