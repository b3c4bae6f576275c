/*
 * daemon/sched.c - the scheduler; see scheduler.h and DESIGN.md ("How a
 * job flows", steps 3-5).
 *
 * One pass of sched_pump() picks, while the quota has room, the owner with
 * the fewest invocations running (ties: the one served longest ago), then
 * that owner's client process, then its job, likewise (pick_job), asks the
 * ledger for up to chunksize ready tasks of it, marks them dispatched,
 * writes the invocation spec to storage (or hands it to the backend with
 * the dispatch) and submits it to the compute backend.  When an invocation
 * ends, its output object is read back and every task's end is recorded in
 * one batch; a task the worker never reported is treated as a lost attempt.
 *
 * A small invocation's output object comes back from the worker with its
 * end, when the backend can do that (compute.h), and is stored in the
 * ledger in the transaction that records its tasks' ends: one commit
 * instead of a durable file, its directory and then the commit.  A
 * map_reduce job's map outputs always go to storage, where its reducer
 * reads them.
 *
 * A small job's input object lives in the ledger (api.c).  It goes to each
 * worker with the dispatch when the backend takes it and it fits
 * (disp_hand_over); otherwise (a map_reduce job, a spec too large to go
 * along) it is written to storage before the job's first such dispatch in
 * this process (not durably: after a crash the ledger still has it, and
 * the next process writes it again), and a worker starts only once both
 * its spec and the job's input are there.
 *
 * Task counters: a task whose attempt is handed back (failed with retries
 * left, or lost) is "retrying", so when a ready task is dispatched its new
 * attempt number tells where it came from: 1 = queued, more = retrying.
 */
#include "scheduler.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "burstd.h"
#include "compute.h"
#include "events.h"
#include "invoc.h"
#include "ledger.h"
#include "log.h"
#include "storage.h"

#define RETRY_BASE_MS 500
#define RETRY_MAX_MS 30000
#define CANCEL_GRACE_MS 1000
#define DEADLINE_SLACK_MS 30000
/* The largest output object a worker may hand back instead of writing it
 * to storage; it is then kept in the ledger (as small inputs are, api.c). */
#define INLINE_OUTPUT_MAX (64u * 1024u)

struct sched_source;

struct sched_owner {
    uint32_t uid;
    uint32_t running; /* invocations in flight */
    uint64_t served;  /* pass number when last picked */
    struct sched_source *sources; /* owned */
    struct sched_owner *next;
};

/*
 * The client process that submitted jobs (its pid, 0 for jobs loaded from
 * the ledger at start): the quota is shared fairly between owners, and
 * within an owner between its processes, so that several local processes
 * of one user share it too (bench B6: 100 client processes of one uid).
 * Freed with its last job.
 */
struct sched_source {
    struct sched_owner *owner; /* borrowed */
    int32_t pid;
    uint32_t running;
    uint64_t served;
    uint32_t njobs; /* active jobs that point here */
    /* Its jobs that may have work (maybe_ready, not cancelled), a binary
     * min-heap in the order pick_job takes them: fewest running, served
     * longest ago, oldest.  Picking scanned every active job, and under
     * 10,000 of them (bench B6) that was a quarter of burstd's time. */
    struct sched_job **heap;
    size_t nheap, capheap;
    struct sched_source *next;
};

struct sched_job {
    uint64_t id;
    struct sched_owner *owner; /* borrowed from sched.owners */
    struct sched_source *source; /* borrowed: owner's, counts this job */
    int kind;
    int state;
    uint32_t total;
    uint32_t chunksize;
    uint32_t retries;
    uint64_t timeout_ms;
    uint32_t memory_mb;
    struct ledger_fn fn;     /* owned */
    struct ledger_fn reduce; /* owned */
    uint32_t counts[BURST_TASK_NSTATES];
    uint32_t running;        /* invocations in flight */
    bool maybe_ready;        /* the ledger may hold tasks ready to run */
    int64_t next_retry_ms;   /* earliest retry_at of a retrying task, 0 none */
    bool cancelled;
    bool reduce_ready;       /* the reducer's manifest is written */
    bool reduce_preparing;
    int reduce_state;        /* state of task `total` (map_reduce) */
    /* jobs/<id>/in is in storage as far as this process knows: written by
     * the submission (large inputs) or by input_materialize. */
    bool input_ready;
    bool input_writing;      /* input_materialize's write is under way */
    struct sched_disp *input_waiters; /* borrowed: dispatches waiting for it */
    uint64_t served;
    struct sched_job *next, *prev; /* in sched.jobs, newest first */
    struct sched_job *hnext;       /* in its bucket of sched.byid */
    size_t heap_pos;               /* in source->heap, or SIZE_MAX */
};

struct sched_disp {
    struct dispatch d;       /* d.data = this */
    struct sched *s;
    struct sched_job *job;   /* borrowed; the job outlives its dispatches */
    uint32_t n;
    uint32_t *idx;           /* owned */
    uint32_t *attempts;      /* owned */
    bool reduce;
    bool started;
    bool submitted;
    bool recon;              /* rebuilt from the ledger, not dispatched by us */
    bool reading;            /* recon: its output is being read */
    bool slot_free;          /* the worker is done: its quota slot is back */
    char *spec;              /* owned: encoded spec, kept until written */
    size_t spec_len;
    char *in_body;           /* owned: the job's input, handed over with the spec */
    char in_key[64];
    uv_buf_t buf;
    int pending;             /* writes (spec, job input) before the worker starts */
    char why[128];           /* the first of them that failed, "" if none */
    struct sched_disp *input_next; /* in job.input_waiters */
    struct storage_range out; /* the output object being read */
    char out_key[128];
    struct sched_disp *next; /* sched.inflight */
};

struct sched {
    struct burstd *d;        /* borrowed */
    uint32_t quota;
    uint32_t in_use;
    bool started;            /* reconciliation done */
    bool stopping;
    uint64_t pass;
    struct sched_owner *owners; /* owned */
    struct sched_job *jobs;     /* owned: active jobs */
    /* The same jobs by id: a request about a job (status, a submission's
     * registration) must not scan thousands of them (bench B6).  nbyid is
     * a power of two, grown to keep about one job per bucket. */
    struct sched_job **byid;
    size_t nbyid;
    size_t njobs;
    struct sched_disp *inflight;/* owned */
    uv_timer_t retry_timer;
    uint32_t pending_io;     /* reconciliation reads outstanding */
};

static void job_check_end(struct sched *s, struct sched_job *j);
static void source_put(struct sched_source *x);
static void retry_timer_arm(struct sched *s);
static int load_active(void *arg, const struct ledger_job *lj);
static int inflight_add(void *arg, uint64_t job, const struct ledger_task *t);
static void recon_start_reads(struct sched *s);
static void disp_free(struct sched_disp *sd);

/* ---- small helpers ---- */

static bool
is_nonfinal(int st)
{
    return st == BURST_TASK_QUEUED || st == BURST_TASK_DISPATCHED ||
           st == BURST_TASK_RUNNING || st == BURST_TASK_RETRYING;
}

static uint32_t
job_nonfinal(const struct sched_job *j)
{
    return j->counts[BURST_TASK_QUEUED] + j->counts[BURST_TASK_DISPATCHED] +
           j->counts[BURST_TASK_RUNNING] + j->counts[BURST_TASK_RETRYING];
}

static void
count_move(struct sched_job *j, int from, int to)
{
    if (from >= 0 && j->counts[from] > 0)
        j->counts[from]--;
    j->counts[to]++;
}

static size_t
job_bucket(const struct sched *s, uint64_t id)
{
    /* Fibonacci hashing: ids are consecutive, the high bits spread them. */
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (s->nbyid - 1);
}

static struct sched_job *
job_find(struct sched *s, uint64_t id)
{
    if (s->nbyid == 0)
        return NULL;
    for (struct sched_job *j = s->byid[job_bucket(s, id)]; j != NULL; j = j->hnext)
        if (j->id == id)
            return j;
    return NULL;
}

/* Puts j in sched.byid, growing it first when full.  Returns 0 or -ENOMEM. */
static int
job_index(struct sched *s, struct sched_job *j)
{
    if (s->njobs + 1 > s->nbyid) {
        size_t n = s->nbyid ? s->nbyid * 2 : 64;
        struct sched_job **tab = calloc(n, sizeof(*tab));
        if (tab == NULL)
            return -ENOMEM;
        struct sched_job **old = s->byid;
        size_t nold = s->nbyid;
        s->byid = tab;
        s->nbyid = n;
        for (size_t i = 0; i < nold; i++) {
            for (struct sched_job *x = old[i], *next; x != NULL; x = next) {
                next = x->hnext;
                size_t b = job_bucket(s, x->id);
                x->hnext = tab[b];
                tab[b] = x;
            }
        }
        free(old);
    }
    size_t b = job_bucket(s, j->id);
    j->hnext = s->byid[b];
    s->byid[b] = j;
    s->njobs++;
    return 0;
}

/* pick_job's order of a source's jobs. */
static bool
job_before(const struct sched_job *a, const struct sched_job *b)
{
    if (a->running != b->running)
        return a->running < b->running;
    if (a->served != b->served)
        return a->served < b->served;
    return a->id < b->id;
}

static void
heap_set(struct sched_source *o, size_t i, struct sched_job *j)
{
    o->heap[i] = j;
    j->heap_pos = i;
}

static void
heap_up(struct sched_source *o, size_t i)
{
    struct sched_job *j = o->heap[i];
    while (i > 0 && job_before(j, o->heap[(i - 1) / 2])) {
        heap_set(o, i, o->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(o, i, j);
}

static void
heap_down(struct sched_source *o, size_t i)
{
    struct sched_job *j = o->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= o->nheap)
            break;
        if (c + 1 < o->nheap && job_before(o->heap[c + 1], o->heap[c]))
            c++;
        if (!job_before(o->heap[c], j))
            break;
        heap_set(o, i, o->heap[c]);
        i = c;
    }
    heap_set(o, i, j);
}

static void
heap_remove(struct sched_source *o, struct sched_job *j)
{
    size_t i = j->heap_pos;
    if (i == SIZE_MAX)
        return;
    j->heap_pos = SIZE_MAX;
    struct sched_job *last = o->heap[--o->nheap];
    if (last == j)
        return;
    heap_set(o, i, last);
    heap_up(o, i);
    heap_down(o, last->heap_pos);
}

/* Room in x's heap for n jobs: made when a job is loaded, so that
 * job_requeue never needs memory.  0 or -ENOMEM. */
static int
heap_reserve(struct sched_source *x, size_t n)
{
    if (n <= x->capheap)
        return 0;
    size_t cap = x->capheap ? x->capheap : 16;
    while (cap < n)
        cap *= 2;
    struct sched_job **h = realloc(x->heap, cap * sizeof(*h));
    if (h == NULL)
        return -ENOMEM;
    x->heap = h;
    x->capheap = cap;
    return 0;
}

/*
 * Puts j where pick_job will find it after a change of anything it orders
 * by (running, served) or of whether it may have work (maybe_ready,
 * cancelled).  Every such change calls this.
 */
static void
job_requeue(struct sched_job *j)
{
    struct sched_source *o = j->source;
    heap_remove(o, j);
    if (!j->maybe_ready || j->cancelled)
        return;
    assert(o->nheap < o->capheap); /* heap_reserve: room for every job */
    o->nheap++;
    heap_set(o, o->nheap - 1, j);
    heap_up(o, o->nheap - 1);
}

static void
job_unindex(struct sched *s, struct sched_job *j)
{
    struct sched_job **pp = &s->byid[job_bucket(s, j->id)];
    while (*pp != NULL && *pp != j)
        pp = &(*pp)->hnext;
    if (*pp == j) {
        *pp = j->hnext;
        s->njobs--;
    }
}

static struct sched_owner *
owner_get(struct sched *s, uint32_t uid)
{
    for (struct sched_owner *o = s->owners; o != NULL; o = o->next)
        if (o->uid == uid)
            return o;
    struct sched_owner *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->uid = uid;
    o->next = s->owners;
    s->owners = o;
    return o;
}

/* The source of owner o for pid, made when new; NULL when out of memory.
 * The caller counts its job in (njobs). */
static struct sched_source *
source_get(struct sched_owner *o, int32_t pid)
{
    for (struct sched_source *x = o->sources; x != NULL; x = x->next)
        if (x->pid == pid)
            return x;
    struct sched_source *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->owner = o;
    x->pid = pid;
    x->next = o->sources;
    o->sources = x;
    return x;
}

static void
source_free(struct sched_source *x)
{
    free(x->heap);
    free(x);
}

/* One job less for x: gone with its last (its heap is empty then). */
static void
source_put(struct sched_source *x)
{
    if (x == NULL || --x->njobs > 0)
        return;
    struct sched_source **pp = &x->owner->sources;
    while (*pp != NULL && *pp != x)
        pp = &(*pp)->next;
    if (*pp == x)
        *pp = x->next;
    source_free(x);
}

static void
ledger_fn_clear(struct ledger_fn *f)
{
    free(f->arg);
    free(f->symbol);
    f->arg = f->symbol = NULL;
}

static void
job_free(struct sched_job *j)
{
    ledger_fn_clear(&j->fn);
    ledger_fn_clear(&j->reduce);
    free(j);
}

static void
job_remove(struct sched *s, struct sched_job *j)
{
    /* O(1): jobs end oldest first, at the far end of the list, and under
     * thousands of active jobs (bench B6) a scan per end showed in perf. */
    if (j->prev != NULL)
        j->prev->next = j->next;
    else if (s->jobs == j)
        s->jobs = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    job_unindex(s, j);
    heap_remove(j->source, j);
    source_put(j->source);
    job_free(j);
}

/* Backoff before attempt `attempt + 1`: exponential with +-25% jitter so
 * many tasks failing together do not come back together. */
static int64_t
retry_delay_ms(uint32_t attempt)
{
    uint64_t d = RETRY_BASE_MS;
    for (uint32_t i = 1; i < attempt && d < RETRY_MAX_MS; i++)
        d *= 2;
    if (d > RETRY_MAX_MS)
        d = RETRY_MAX_MS;
    int64_t jitter = (int64_t)(d / 4);
    return (int64_t)d - jitter + (jitter > 0 ? (int64_t)(random() % (2 * jitter + 1)) : 0);
}

static void
on_retry_timer(uv_timer_t *t)
{
    struct sched *s = t->data;
    int64_t now = burstd_now_ms();
    for (struct sched_job *j = s->jobs; j != NULL; j = j->next)
        if (j->next_retry_ms != 0 && j->next_retry_ms <= now) {
            j->next_retry_ms = 0;
            j->maybe_ready = true;
            job_requeue(j);
        }
    /* The loop's clock and the wall clock differ by a little: re-arm for
     * whatever is not due yet.  sched_pump runs from the loop's prepare
     * phase right after this. */
    retry_timer_arm(s);
}

/* Arms the retry timer for the earliest pending retry of any job. */
static void
retry_timer_arm(struct sched *s)
{
    int64_t first = 0;
    for (struct sched_job *j = s->jobs; j != NULL; j = j->next)
        if (j->next_retry_ms != 0 && (first == 0 || j->next_retry_ms < first))
            first = j->next_retry_ms;
    if (first == 0) {
        uv_timer_stop(&s->retry_timer);
        return;
    }
    int64_t delay = first - burstd_now_ms();
    uv_timer_start(&s->retry_timer, on_retry_timer, delay > 0 ? (uint64_t)delay : 0, 0);
}

static void
job_note_retry(struct sched *s, struct sched_job *j, int64_t at)
{
    if (j->next_retry_ms == 0 || at < j->next_retry_ms)
        j->next_retry_ms = at;
    retry_timer_arm(s);
}

/* ---- lifecycle ---- */

int
sched_new(struct burstd *d, uint32_t quota, struct sched **out)
{
    struct sched *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->d = d;
    s->quota = quota > 0 ? quota : 1;
    uv_timer_init(d->loop, &s->retry_timer);
    s->retry_timer.data = s;
    /* Not a reference that keeps the loop alive by itself. */
    uv_unref((uv_handle_t *)&s->retry_timer);
    *out = s;
    return 0;
}

static void
on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

void
sched_free(struct sched *s)
{
    if (s == NULL)
        return;
    while (s->inflight != NULL) {
        struct sched_disp *sd = s->inflight;
        s->inflight = sd->next;
        disp_free(sd);
    }
    while (s->jobs != NULL) {
        struct sched_job *j = s->jobs;
        s->jobs = j->next;
        job_free(j);
    }
    free(s->byid);
    while (s->owners != NULL) {
        struct sched_owner *o = s->owners;
        s->owners = o->next;
        while (o->sources != NULL) {
            struct sched_source *x = o->sources;
            o->sources = x->next;
            source_free(x);
        }
        free(o);
    }
    /* The timer handle lives inside s: free s in its close callback. */
    uv_close((uv_handle_t *)&s->retry_timer, on_timer_closed);
}

void
sched_stop(struct sched *s, uint64_t grace_ms)
{
    s->stopping = true;
    uv_timer_stop(&s->retry_timer);
    /* SIGTERM lets each worker write the output of the tasks it finished,
     * which the next start records; what it had not finished runs again. */
    for (struct sched_disp *sd = s->inflight; sd != NULL; sd = sd->next)
        if (sd->submitted)
            s->d->compute->ops->cancel(s->d->compute, &sd->d, grace_ms);
}

uint32_t
sched_quota(const struct sched *s)
{
    return s->quota;
}

uint32_t
sched_in_use(const struct sched *s)
{
    return s->in_use;
}

void
sched_set_quota(struct sched *s, uint32_t quota)
{
    s->quota = quota > 0 ? quota : 1;
}

int
sched_counts(struct sched *s, uint64_t job, uint32_t counts[BURST_TASK_NSTATES])
{
    struct sched_job *j = job_find(s, job);
    if (j == NULL)
        return -ENOENT;
    memcpy(counts, j->counts, sizeof(j->counts));
    return 0;
}

static int
fn_copy(struct ledger_fn *dst, const struct ledger_fn *src)
{
    dst->kind = src->kind;
    dst->arg = src->arg ? strdup(src->arg) : NULL;
    dst->symbol = src->symbol ? strdup(src->symbol) : NULL;
    if ((src->arg && !dst->arg) || (src->symbol && !dst->symbol))
        return -ENOMEM;
    return 0;
}

/* Loads job id, submitted by process pid (0: unknown), from the ledger into
 * memory (with its counters).  A job that has ended is not loaded (*out
 * NULL): one that started before its acceptance was durable may end first,
 * and the acceptance then adds it again. */
static int
job_load(struct sched *s, uint64_t id, int32_t pid, struct sched_job **out)
{
    struct burstd *d = s->d;
    struct ledger_job lj;
    *out = NULL;
    int rc = ledger_job_get(d->ledger, id, &lj);
    if (rc != 0)
        return rc;
    if (burst_job_state_is_final(lj.state)) {
        ledger_job_free(&lj);
        return 0;
    }
    struct sched_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        ledger_job_free(&lj);
        return -ENOMEM;
    }
    j->id = id;
    j->heap_pos = SIZE_MAX;
    j->kind = lj.kind;
    j->state = lj.state;
    j->total = lj.total;
    j->chunksize = lj.chunksize ? lj.chunksize : 1;
    j->retries = lj.retries;
    j->timeout_ms = lj.timeout_ms;
    j->memory_mb = lj.memory_mb;
    j->owner = owner_get(s, lj.owner_uid);
    rc = j->owner ? 0 : -ENOMEM;
    if (rc == 0)
        rc = fn_copy(&j->fn, &lj.fn);
    if (rc == 0)
        rc = fn_copy(&j->reduce, &lj.reduce);
    ledger_job_free(&lj);
    if (rc == 0)
        rc = ledger_job_counts(d->ledger, id, j->counts);
    if (rc == 0 && j->kind == BURST_KIND_MAP_REDUCE) {
        struct ledger_task t;
        rc = ledger_task_get(d->ledger, id, j->total, &t);
        if (rc == 0)
            j->reduce_state = t.state;
        /* A reducer that was ever dispatched had its manifest written. */
        if (rc == 0 && t.state != BURST_TASK_QUEUED)
            j->reduce_ready = true;
    }
    if (rc == 0 && (j->source = source_get(j->owner, pid)) == NULL)
        rc = -ENOMEM;
    if (rc == 0)
        rc = heap_reserve(j->source, (size_t)j->source->njobs + 1);
    if (rc == 0)
        rc = job_index(s, j);
    if (rc != 0) {
        if (j->source != NULL && j->source->njobs == 0) {
            j->source->njobs = 1; /* so that source_put frees it */
            source_put(j->source);
        }
        job_free(j);
        return rc;
    }
    j->source->njobs++;
    j->maybe_ready = true;
    job_requeue(j);
    j->prev = NULL;
    j->next = s->jobs;
    if (s->jobs != NULL)
        s->jobs->prev = j;
    s->jobs = j;
    *out = j;
    return 0;
}

int
sched_job_added(struct sched *s, uint64_t job, int32_t pid)
{
    struct sched_job *j;
    if (job_find(s, job) != NULL)
        return 0;
    return job_load(s, job, pid, &j);
}

/* ---- ending attempts ---- */

static const char *
status_reason(int status)
{
    switch (status) {
    case INVOC_FAILED: return "failed";
    case INVOC_SIGNAL: return "killed by a signal";
    case INVOC_TIMEOUT: return "timed out";
    case INVOC_OOM: return "out of memory";
    case INVOC_ERROR: return "could not be run";
    default: return "";
    }
}

/*
 * Decides what an ended attempt means for the task: success, a retry (when
 * the job has retries left and the failure may be transient), or a final
 * failure.  Fills e->state and e->retry_at_ms.
 */
static void
attempt_outcome(struct sched *s, struct sched_job *j, int status, uint32_t attempt,
                int64_t now, struct ledger_task_end *e)
{
    (void)s;
    if (status == INVOC_OK) {
        e->state = BURST_TASK_SUCCEEDED;
        return;
    }
    /* A missing library or symbol will not appear by retrying, and the
     * same memory limit will be exceeded again. */
    bool retryable = status != INVOC_ERROR && status != INVOC_OOM && !j->cancelled;
    if (retryable && attempt < j->retries + 1) {
        e->state = BURST_TASK_RETRYING;
        e->retry_at_ms = now + retry_delay_ms(attempt);
        return;
    }
    e->state = status == INVOC_TIMEOUT ? BURST_TASK_TIMEOUT : BURST_TASK_FAILED;
}

/* The position of index in sd->idx, or -1.  sd->idx is ascending when
 * sorted (what the ledger hands out always is), so a binary search finds it;
 * otherwise a scan does. */
static int64_t
disp_slot(const struct sched_disp *sd, bool sorted, uint32_t index)
{
    if (!sorted) {
        for (uint32_t i = 0; i < sd->n; i++)
            if (sd->idx[i] == index)
                return i;
        return -1;
    }
    uint32_t lo = 0, hi = sd->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (sd->idx[mid] < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sd->n && sd->idx[lo] == index ? (int64_t)lo : -1;
}

/* Fills by_slot[i] with the result reported for task sd->idx[i] in the
 * attempt this dispatch ran, or NULL.  One pass over the results instead of
 * one per task: an invocation of 10,000 tasks would otherwise cost 10^8
 * comparisons. */
static void
disp_match(const struct sched_disp *sd, const struct invoc_result *results, size_t nres,
           const struct invoc_result **by_slot)
{
    bool sorted = true;
    for (uint32_t i = 1; i < sd->n && sorted; i++)
        sorted = sd->idx[i - 1] < sd->idx[i];
    for (size_t k = 0; k < nres; k++) {
        int64_t i = disp_slot(sd, sorted, results[k].index);
        /* The first report wins, as the scan this replaces did. */
        if (i >= 0 && results[k].attempt == sd->attempts[i] && by_slot[i] == NULL)
            by_slot[i] = &results[k];
    }
}

/*
 * Records the end of every task of a dispatch: those in the output object
 * (results may be NULL) as the worker reported them, the others as lost.
 * lost_why explains a missing output.  Runs in the loop's open transaction.
 */
static void
disp_record(struct sched *s, struct sched_disp *sd, const struct invoc_result *results,
            size_t nres, const char *lost_why, const char *out, size_t out_len)
{
    struct burstd *d = s->d;
    struct sched_job *j = sd->job;
    int64_t now = burstd_now_ms();
    int rc = ledger_begin(d->ledger);
    if (rc != 0) {
        log_warnx("job %llu: cannot record dispatch %llu: ledger unavailable",
                  (unsigned long long)j->id, (unsigned long long)sd->d.dispatch);
        return;
    }
    struct ledger_task_end *ends = calloc(sd->n, sizeof(*ends));
    uint32_t *cancel_idx = calloc(sd->n, sizeof(*cancel_idx));
    /* The attempt that ended, for each entry of ends and of cancel_idx:
     * the events carry it, as the running event did. */
    uint32_t *end_att = calloc(sd->n, sizeof(*end_att));
    uint32_t *cancel_att = calloc(sd->n, sizeof(*cancel_att));
    char(*reasons)[192] = calloc(sd->n, sizeof(*reasons));
    const struct invoc_result **by_slot = calloc(sd->n ? sd->n : 1, sizeof(*by_slot));
    bool *recorded = calloc(sd->n ? sd->n : 1, sizeof(*recorded)); /* per entry of ends */
    if (ends == NULL || cancel_idx == NULL || end_att == NULL || cancel_att == NULL ||
        reasons == NULL || by_slot == NULL || recorded == NULL) {
        log_warnx("job %llu: out of memory recording dispatch %llu",
                  (unsigned long long)j->id, (unsigned long long)sd->d.dispatch);
        goto out;
    }
    size_t nends = 0;
    uint32_t ncancel = 0;
    int prev = sd->started ? BURST_TASK_RUNNING : BURST_TASK_DISPATCHED;
    disp_match(sd, results, nres, by_slot);
    for (uint32_t i = 0; i < sd->n; i++) {
        const struct invoc_result *r = by_slot[i];
        if (j->cancelled && (r == NULL || r->status != INVOC_OK)) {
            cancel_att[ncancel] = sd->attempts[i];
            cancel_idx[ncancel++] = sd->idx[i];
            continue;
        }
        struct ledger_task_end *e = &ends[nends];
        end_att[nends] = sd->attempts[i];
        e->index = sd->idx[i];
        e->exit_status = -1;
        if (r != NULL) {
            e->exit_status = r->exit_status;
            e->signal = r->signal;
            if (r->reason != NULL && r->reason[0] != '\0')
                snprintf(reasons[nends], sizeof(reasons[0]), "%s", r->reason);
            else if (r->status != INVOC_OK)
                snprintf(reasons[nends], sizeof(reasons[0]), "%s",
                         status_reason(r->status));
            e->has_out = true;
            e->out_dispatch = sd->d.dispatch;
            e->out_n = 0;
            e->res_off = r->result_off;
            e->res_len = r->result_len;
            e->log_off = r->log_off;
            e->log_len = r->log_len;
            attempt_outcome(s, j, r->status, sd->attempts[i], now, e);
        } else if (sd->recon) {
            /* The daemon, not the task, lost this attempt: it does not count
             * against the task's retries. */
            snprintf(reasons[nends], sizeof(reasons[0]), "lost: %s", lost_why);
            e->state = BURST_TASK_RETRYING;
            e->retry_at_ms = now;
        } else {
            snprintf(reasons[nends], sizeof(reasons[0]), "lost: %s", lost_why);
            attempt_outcome(s, j, INVOC_SIGNAL, sd->attempts[i], now, e);
        }
        e->reason = reasons[nends];
        nends++;
    }
    size_t applied = 0;
    /* The output the ends point at goes in first, in the same transaction:
     * a result is never recorded without its bytes. */
    rc = out != NULL ? ledger_output_put(d->ledger, j->id, sd->d.dispatch, 0, out, out_len)
                     : 0;
    if (rc == 0)
        rc = ledger_tasks_end_marked(d->ledger, j->id, ends, nends, now, &applied,
                                     recorded);
    if (rc == 0 && ncancel > 0)
        rc = ledger_tasks_set_state(d->ledger, j->id, cancel_idx, ncancel,
                                    BURST_TASK_CANCELLED, now);
    if (rc != 0) {
        log_warnx("job %llu: cannot record the end of dispatch %llu",
                  (unsigned long long)j->id, (unsigned long long)sd->d.dispatch);
        goto out;
    }
    for (size_t i = 0; i < nends; i++) {
        /* A late duplicate (the task had already ended, e.g. by the
         * reconciliation of an earlier dispatch) changed nothing: no event. */
        if (!recorded[i])
            continue;
        count_move(j, prev, ends[i].state);
        events_task(d->events, j->id, ends[i].index, ends[i].state, end_att[i]);
        if (ends[i].index == j->total && j->kind == BURST_KIND_MAP_REDUCE)
            j->reduce_state = ends[i].state;
        if (ends[i].state == BURST_TASK_RETRYING) {
            j->maybe_ready = true;
            job_requeue(j);
            job_note_retry(s, j, ends[i].retry_at_ms);
        }
    }
    for (uint32_t i = 0; i < ncancel; i++) {
        count_move(j, prev, BURST_TASK_CANCELLED);
        events_task(d->events, j->id, cancel_idx[i], BURST_TASK_CANCELLED, cancel_att[i]);
        if (cancel_idx[i] == j->total && j->kind == BURST_KIND_MAP_REDUCE)
            j->reduce_state = BURST_TASK_CANCELLED;
    }
    if (applied != nends) {
        /* Some task had already ended (a late duplicate): trust the ledger. */
        ledger_job_counts(d->ledger, j->id, j->counts);
    }
out:
    free(ends);
    free(cancel_idx);
    free(end_att);
    free(cancel_att);
    free(reasons);
    free(by_slot);
    free(recorded);
}

static void
disp_unlink(struct sched *s, struct sched_disp *sd)
{
    struct sched_disp **pp = &s->inflight;
    while (*pp != NULL && *pp != sd)
        pp = &(*pp)->next;
    if (*pp == sd)
        *pp = sd->next;
}

static void
disp_free(struct sched_disp *sd)
{
    free(sd->d.spec_key);
    free(sd->idx);
    free(sd->attempts);
    free(sd->spec);
    free(sd->in_body);
    free(sd->out.data);
    free(sd);
}

/* The dispatch is over: release its quota and look at its job. */
static void
disp_done(struct sched *s, struct sched_disp *sd)
{
    struct sched_job *j = sd->job;
    disp_unlink(s, sd);
    if (!sd->slot_free && s->in_use > 0)
        s->in_use--;
    if (j->running > 0)
        j->running--;
    if (j->owner->running > 0)
        j->owner->running--;
    if (j->source->running > 0)
        j->source->running--;
    job_requeue(j);
    disp_free(sd);
    job_check_end(s, j);
}

static void
on_output_read(void *arg, int status)
{
    struct sched_disp *sd = arg;
    struct sched *s = sd->s;
    if (s->stopping)
        return; /* handed back: reconciled at the next start */
    const char *why = "the worker ended without writing its output";
    struct invoc_result *results = NULL;
    size_t nres = 0;
    uint64_t job, dispatch;
    uint32_t n_inv;
    if (status == 0 && sd->out.status == 0) {
        if (invoc_out_decode(sd->out.data, sd->out.got, &job, &dispatch, &n_inv, &results,
                             &nres) != 0 ||
            job != sd->job->id || dispatch != sd->d.dispatch) {
            why = "the worker's output is malformed";
            if (results != NULL)
                invoc_results_free(results, nres);
            results = NULL;
            nres = 0;
        }
    } else if (sd->out.status != -ENOENT) {
        why = "the worker's output could not be read";
    }
    char lost[160];
    snprintf(lost, sizeof(lost), "%s", why);
    disp_record(s, sd, results, nres, lost, NULL, 0);
    if (results != NULL)
        invoc_results_free(results, nres);
    disp_done(s, sd);
}

/* The worker handed its output back (compute.h): it is recorded, and kept
 * in the ledger, at once. */
static void
disp_inline(struct sched *s, struct sched_disp *sd, const char *out, size_t len)
{
    struct invoc_result *results = NULL;
    size_t nres = 0;
    uint64_t job, dispatch;
    uint32_t n_inv;
    if (invoc_out_decode(out, len, &job, &dispatch, &n_inv, &results, &nres) != 0 ||
        job != sd->job->id || dispatch != sd->d.dispatch || n_inv != 0) {
        if (results != NULL)
            invoc_results_free(results, nres);
        disp_record(s, sd, NULL, 0, "the worker's output is malformed", NULL, 0);
    } else {
        disp_record(s, sd, results, nres, "the worker's output lacks the task", out, len);
        invoc_results_free(results, nres);
    }
    disp_done(s, sd);
}

static void
on_started(struct dispatch *d, uint32_t inv)
{
    struct sched_disp *sd = d->data;
    struct sched *s = sd->s;
    (void)inv;
    if (s->stopping || sd->started)
        return;
    sd->started = true;
    struct sched_job *j = sd->job;
    int64_t now = burstd_now_ms();
    if (ledger_begin(s->d->ledger) != 0 ||
        ledger_tasks_set_state(s->d->ledger, j->id, sd->idx, sd->n, BURST_TASK_RUNNING,
                               now) != 0) {
        log_warnx("job %llu: cannot record dispatch %llu as running",
                  (unsigned long long)j->id, (unsigned long long)d->dispatch);
        return;
    }
    for (uint32_t i = 0; i < sd->n; i++) {
        count_move(j, BURST_TASK_DISPATCHED, BURST_TASK_RUNNING);
        events_task(s->d->events, j->id, sd->idx[i], BURST_TASK_RUNNING, sd->attempts[i]);
    }
}

static void
on_ended(struct dispatch *d, uint32_t inv, const struct compute_exit *ex)
{
    struct sched_disp *sd = d->data;
    struct sched *s = sd->s;
    if (s->stopping)
        return;
    /* The worker's own account is in its output object; the exit status
     * only explains a missing one. */
    char why[160];
    if (ex->why != NULL)
        snprintf(why, sizeof(why), "%s", ex->why);
    else if (ex->term_signal != 0)
        snprintf(why, sizeof(why), "worker killed by signal %d", ex->term_signal);
    else
        snprintf(why, sizeof(why), "worker exited with status %lld",
                 (long long)ex->exit_status);
    if (ex->out != NULL) {
        disp_inline(s, sd, ex->out, ex->out_len);
        return;
    }
    if (invoc_key_output(sd->out_key, sizeof(sd->out_key), sd->job->id, d->dispatch,
                         inv) != 0)
        goto lost;
    sd->out.key = sd->out_key;
    sd->out.off = 0;
    sd->out.len = UINT64_MAX;
    if (storage_getv(s->d->storage, &sd->out, 1, on_output_read, sd) == 0) {
        /* The worker is free: the next invocation need not wait for this
         * one's output to be read and recorded. */
        sd->slot_free = true;
        if (s->in_use > 0)
            s->in_use--;
        return;
    }
lost:
    disp_record(s, sd, NULL, 0, why, NULL, 0);
    disp_done(s, sd);
}

/* ---- dispatching ---- */

/* The dispatch could not be started at all: hand its tasks back. */
static void
disp_fail(struct sched *s, struct sched_disp *sd, const char *why)
{
    log_warnx("job %llu: dispatch %llu failed: %s", (unsigned long long)sd->job->id,
              (unsigned long long)sd->d.dispatch, why);
    disp_record(s, sd, NULL, 0, why, NULL, 0);
    disp_done(s, sd);
}

/*
 * One of the writes the worker needs (its spec, the job's input) is over;
 * what (a name for the log) says which.  The worker starts after the last
 * one, or the dispatch fails as a whole when any of them failed.
 */
static void
disp_write_done(struct sched *s, struct sched_disp *sd, int status, const char *what)
{
    if (status != 0 && sd->why[0] == '\0')
        snprintf(sd->why, sizeof(sd->why), "cannot write the %s: %s", what,
                 burst_strerror(status)); /* -errno, or the ledger's BURST_E* */
    if (--sd->pending > 0)
        return;
    if (sd->why[0] != '\0') {
        char why[sizeof(sd->why)];
        memcpy(why, sd->why, sizeof(why)); /* sd is freed on the way */
        disp_fail(s, sd, why);
        return;
    }
    int rc = s->d->compute->ops->submit(s->d->compute, &sd->d);
    /* Whatever was handed over with the dispatch was copied by submit. */
    sd->d.spec_data = sd->d.in_key = sd->d.in_data = NULL;
    free(sd->spec);
    free(sd->in_body);
    sd->spec = sd->in_body = NULL;
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot start the worker: %s", uv_strerror(rc));
        disp_fail(s, sd, why);
        return;
    }
    sd->submitted = true;
    if (s->d->compute->runs_at_submit)
        on_started(&sd->d, 0);
    if (sd->job->cancelled)
        s->d->compute->ops->cancel(s->d->compute, &sd->d, CANCEL_GRACE_MS);
}

static void
on_spec_written(void *arg, int status)
{
    struct sched_disp *sd = arg;
    struct sched *s = sd->s;
    free(sd->spec);
    sd->spec = NULL;
    if (s->stopping)
        return;
    disp_write_done(s, sd, status, "invocation spec");
}

/* A small job's input object on its way from the ledger to storage. */
struct input_write {
    struct sched *s;
    struct sched_job *j; /* borrowed: its waiting dispatches keep it alive */
    char *body;          /* owned */
    uv_buf_t buf;
    char key[128];
};

/* The job's input is written (or not): every dispatch waiting for it goes
 * on.  The job may be gone when this returns (a failed last dispatch can
 * end it). */
static void
input_done(struct sched *s, struct sched_job *j, int status)
{
    j->input_writing = false;
    j->input_ready = status == 0;
    struct sched_disp *w = j->input_waiters;
    j->input_waiters = NULL;
    while (w != NULL) {
        struct sched_disp *next = w->input_next;
        w->input_next = NULL;
        disp_write_done(s, w, status, "job's input");
        w = next;
    }
}

static void
on_input_written(void *arg, int status)
{
    struct input_write *iw = arg;
    struct sched *s = iw->s;
    struct sched_job *j = iw->j;
    free(iw->body);
    free(iw);
    if (s->stopping)
        return;
    if (status != 0)
        log_warnx("job %llu: cannot write its input to storage: %s",
                  (unsigned long long)j->id, burst_strerror(status));
    input_done(s, j, status);
}

/*
 * Makes sure jobs/<id>/in is in storage before sd's worker starts: at once
 * when it is there already (or a reducer, which reads its manifest only),
 * else sd waits for the write, which the first waiter starts from the
 * ledger's copy.  A job without one in the ledger has its input in storage
 * since its submission.  Releases sd's count for the input either way.
 */
static void
input_materialize(struct sched *s, struct sched_disp *sd)
{
    struct sched_job *j = sd->job;
    if (sd->reduce || j->input_ready) {
        disp_write_done(s, sd, 0, NULL);
        return;
    }
    sd->input_next = j->input_waiters;
    j->input_waiters = sd;
    if (j->input_writing)
        return;
    void *body = NULL;
    size_t len = 0;
    struct input_write *iw = NULL;
    int rc = ledger_input_get(s->d->ledger, j->id, &body, &len);
    if (rc == 0 && body == NULL) {
        input_done(s, j, 0);
        return;
    }
    if (rc == 0 && len > UINT_MAX)
        rc = -EFBIG; /* api.c keeps only small ones: a damaged ledger */
    if (rc == 0 && (iw = calloc(1, sizeof(*iw))) == NULL)
        rc = -ENOMEM;
    if (rc == 0)
        rc = invoc_key_input(iw->key, sizeof(iw->key), j->id);
    if (rc != 0) {
        free(body);
        free(iw);
        input_done(s, j, rc);
        return;
    }
    iw->s = s;
    iw->j = j;
    iw->body = body; /* ownership to iw, freed when written */
    iw->buf = uv_buf_init(body, (unsigned)len);
    j->input_writing = true;
    /* Not durable: the ledger holds the job's input; a copy lost in a
     * crash is written again by the next process's first dispatch. */
    rc = storage_put(s->d->storage, iw->key, &iw->buf, 1, false, on_input_written, iw);
    if (rc != 0) {
        free(iw->body);
        free(iw);
        input_done(s, j, rc);
    }
}

static int
disp_encode_spec(struct sched_disp *sd)
{
    struct sched_job *j = sd->job;
    const struct ledger_fn *fn = sd->reduce ? &j->reduce : &j->fn;
    char fn_key[128];
    struct invoc_task *tasks = calloc(sd->n, sizeof(*tasks));
    if (tasks == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < sd->n; i++)
        tasks[i] = (struct invoc_task){sd->idx[i], sd->attempts[i]};
    struct invoc_spec spec = {
        .job = j->id,
        .dispatch = sd->d.dispatch,
        .fn_kind = fn->kind,
        .timeout_ms = j->timeout_ms,
        .memory_mb = j->memory_mb,
        .reduce = sd->reduce,
        .ninvocations = 1,
        .ntasks = &sd->n,
        .tasks = &tasks,
    };
    if (fn->kind == BURST_FN_EXEC) {
        spec.cmd = fn->arg;
    } else {
        if (invoc_key_fn(fn_key, sizeof(fn_key), fn->arg) != 0) {
            free(tasks);
            return -EINVAL;
        }
        spec.fn_key = fn_key;
        spec.symbol = fn->symbol;
    }
    int rc = invoc_spec_encode(&spec, &sd->spec, &sd->spec_len);
    free(tasks);
    return rc;
}

/*
 * Whether sd's spec goes to the worker with the dispatch instead of through
 * storage: when the backend can take it (compute.inline_max), for a map
 * job (a reducer reads the map outputs from storage, which stay there).
 * The job's input goes along when it is in the ledger and fits too; it is
 * then never written to storage.  A small job thus runs without a file:
 * its input, spec and output travel between the ledger and the worker.
 */
static bool
disp_hand_over(struct sched *s, struct sched_disp *sd)
{
    struct sched_job *j = sd->job;
    size_t max = s->d->compute->inline_max;
    if (max == 0 || sd->spec_len > max || j->kind == BURST_KIND_MAP_REDUCE)
        return false;
    sd->d.spec_data = sd->spec;
    sd->d.spec_len = sd->spec_len;
    if (j->input_ready)
        return true;
    void *body = NULL;
    size_t len = 0;
    if (ledger_input_get(s->d->ledger, j->id, &body, &len) != 0)
        return true; /* input_materialize tries, and says what failed */
    if (body == NULL) {
        j->input_ready = true; /* in storage since its submission */
        return true;
    }
    if (len > max - sd->spec_len ||
        invoc_key_input(sd->in_key, sizeof(sd->in_key), j->id) != 0) {
        free(body);
        return true;
    }
    sd->in_body = body;
    sd->d.in_key = sd->in_key;
    sd->d.in_data = body;
    sd->d.in_len = len;
    return true;
}

/* Marks the job running on its first dispatch. */
static void
job_mark_running(struct sched *s, struct sched_job *j, int64_t now)
{
    if (j->state != BURST_JOB_QUEUED)
        return;
    if (ledger_job_set_state(s->d->ledger, j->id, BURST_JOB_RUNNING, NULL, now) == 0) {
        j->state = BURST_JOB_RUNNING;
        events_job_state(s->d->events, j->id, BURST_JOB_RUNNING);
    }
}

/* Dispatches idx[0..n) of j.  Returns 0 or a negative code (nothing done). */
static int
disp_start(struct sched *s, struct sched_job *j, const uint32_t *idx, uint32_t n,
           bool reduce)
{
    struct burstd *d = s->d;
    int64_t now = burstd_now_ms();
    struct sched_disp *sd = calloc(1, sizeof(*sd));
    if (sd == NULL)
        return -ENOMEM;
    sd->s = s;
    sd->job = j;
    sd->n = n;
    sd->reduce = reduce;
    sd->idx = malloc(n * sizeof(*sd->idx));
    sd->attempts = malloc(n * sizeof(*sd->attempts));
    sd->d.spec_key = malloc(128);
    int rc = -ENOMEM;
    if (sd->idx == NULL || sd->attempts == NULL || sd->d.spec_key == NULL)
        goto fail;
    memcpy(sd->idx, idx, n * sizeof(*idx));
    rc = ledger_begin(d->ledger);
    if (rc == 0)
        rc = ledger_next_dispatch(d->ledger, &sd->d.dispatch);
    if (rc == 0)
        rc = ledger_tasks_dispatch(d->ledger, j->id, idx, n, sd->d.dispatch, now,
                                   sd->attempts);
    if (rc != 0)
        goto fail;
    for (uint32_t i = 0; i < n; i++)
        count_move(j, sd->attempts[i] > 1 ? BURST_TASK_RETRYING : BURST_TASK_QUEUED,
                   BURST_TASK_DISPATCHED);
    if (reduce)
        j->reduce_state = BURST_TASK_DISPATCHED;
    job_mark_running(s, j, now);

    sd->d.job = j->id;
    sd->d.owner_uid = j->owner->uid;
    sd->d.ninv = 1;
    sd->d.memory_mb = j->memory_mb;
    sd->d.inline_out_max = j->kind == BURST_KIND_MAP_REDUCE ? 0 : INLINE_OUTPUT_MAX;
    sd->d.deadline_ms = j->timeout_ms ? j->timeout_ms * n + DEADLINE_SLACK_MS : 0;
    sd->d.started_cb = on_started;
    sd->d.ended_cb = on_ended;
    sd->d.data = sd;
    invoc_key_spec(sd->d.spec_key, 128, j->id, sd->d.dispatch);

    s->in_use++;
    j->running++;
    j->owner->running++;
    j->source->running++;
    job_requeue(j);
    sd->next = s->inflight;
    s->inflight = sd;

    rc = disp_encode_spec(sd);
    if (rc == 0 && disp_hand_over(s, sd)) {
        /* The spec goes with the dispatch; the input too, or it is in
         * storage, or it is written there first. */
        sd->pending = 2;
        if (sd->in_body != NULL || j->input_ready)
            disp_write_done(s, sd, 0, NULL);
        else
            input_materialize(s, sd);
        disp_write_done(s, sd, 0, NULL);
        return 0;
    }
    if (rc == 0) {
        sd->buf = uv_buf_init(sd->spec, (unsigned)sd->spec_len);
        /* Two writes before the worker: the spec, and the job's input. */
        sd->pending = 2;
        /* Not durable: a spec lost in a crash means the dispatch is lost,
         * and reconciliation hands its tasks back anyway. */
        rc = storage_put(d->storage, sd->d.spec_key, &sd->buf, 1, false, on_spec_written,
                         sd);
    }
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof(why), "cannot prepare the invocation: %s", uv_strerror(rc));
        disp_fail(s, sd, why);
        return 0;
    }
    input_materialize(s, sd);
    return 0;
fail:
    disp_free(sd);
    return rc;
}

/* Whether source x goes before y of the same owner: fewer running, served
 * longer ago, then the one with the older job first. */
static bool
source_before(const struct sched_source *x, const struct sched_source *y)
{
    if (x->running != y->running)
        return x->running < y->running;
    if (x->served != y->served)
        return x->served < y->served;
    return x->heap[0]->id < y->heap[0]->id;
}

/*
 * The job that should get the next invocation: of the owner with the fewest
 * running invocations, then of that owner's client process with the
 * fewest, then that process's job with the fewest.  Ties go to the one
 * served longest ago (a job never served first), and then to the older
 * job: without that last rule, the job list's order (newest first) made
 * equal jobs run newest first, and a client whose jobs were submitted
 * early waited behind every later one (bench B6).
 */
static struct sched_job *
pick_job(struct sched *s)
{
    struct sched_job *best = NULL;
    for (struct sched_owner *o = s->owners; o != NULL; o = o->next) {
        struct sched_source *bx = NULL;
        for (struct sched_source *x = o->sources; x != NULL; x = x->next)
            if (x->nheap > 0 && (bx == NULL || source_before(x, bx)))
                bx = x;
        if (bx == NULL)
            continue;
        struct sched_job *j = bx->heap[0];
        if (best == NULL) {
            best = j;
            continue;
        }
        struct sched_owner *bo = best->owner;
        if (o->running < bo->running ||
            (o->running == bo->running &&
             (o->served < bo->served || (o->served == bo->served && j->id < best->id))))
            best = j;
    }
    return best;
}

void
sched_pump(struct sched *s)
{
    if (!s->started || s->stopping)
        return;
    uint32_t *idx = NULL;
    uint32_t cap = 0;
    int64_t now = burstd_now_ms();
    while (s->in_use < s->quota) {
        struct sched_job *j = pick_job(s);
        if (j == NULL)
            break;
        uint32_t want = j->chunksize;
        uint32_t limit = j->total;
        bool reduce = false;
        if (j->kind == BURST_KIND_MAP_REDUCE && j->reduce_ready &&
            (j->reduce_state == BURST_TASK_QUEUED || j->reduce_state == BURST_TASK_RETRYING)) {
            limit = j->total + 1;
        }
        if (want > cap) {
            uint32_t *n = realloc(idx, want * sizeof(*idx));
            if (n == NULL)
                break;
            idx = n;
            cap = want;
        }
        uint32_t got = 0;
        if (ledger_tasks_pending(s->d->ledger, j->id, limit, now, want, idx, &got) != 0) {
            j->maybe_ready = false;
            job_requeue(j);
            continue;
        }
        if (got > 0 && idx[got - 1] == j->total && j->kind == BURST_KIND_MAP_REDUCE) {
            /* The reducer runs alone, as its own invocation. */
            if (got > 1)
                got--;
            else
                reduce = true;
        }
        if (got == 0) {
            j->maybe_ready = false;
            job_requeue(j);
            bool found = false;
            int64_t at;
            /* A retry already due is one of a task this pass may not run
             * yet (the reducer before its maps end): no timer for it. */
            if (ledger_tasks_next_retry(s->d->ledger, j->id, &at, &found) == 0 && found &&
                at > now)
                job_note_retry(s, j, at);
            continue;
        }
        s->pass++;
        j->served = s->pass;
        j->owner->served = s->pass;
        j->source->served = s->pass;
        job_requeue(j);
        if (disp_start(s, j, idx, got, reduce) != 0) {
            log_warnx("job %llu: cannot dispatch tasks now", (unsigned long long)j->id);
            j->maybe_ready = false;
            job_requeue(j);
            job_note_retry(s, j, now + RETRY_BASE_MS);
            break;
        }
    }
    free(idx);
}

/* ---- the end of a job ---- */

struct manifest_ctx {
    struct sched *s;
    struct sched_job *j;
    struct invoc_part *parts;
    size_t n;
    int err;
    char *buf;
    size_t len;
    uv_buf_t ub;
    char key[128];
};

static int
manifest_add(void *arg, const struct ledger_task *t)
{
    struct manifest_ctx *m = arg;
    if (t->index >= m->j->total || !t->has_out)
        return 0;
    struct invoc_part *p = &m->parts[m->n];
    char key[128];
    if (invoc_key_output(key, sizeof(key), m->j->id, t->out_dispatch, t->out_n) != 0)
        return -EINVAL;
    p->key = strdup(key);
    if (p->key == NULL)
        return -ENOMEM;
    p->off = t->res_off;
    p->len = t->res_len;
    m->n++;
    return 0;
}

static void
manifest_free(struct manifest_ctx *m)
{
    if (m->parts != NULL)
        invoc_manifest_free(m->parts, m->n);
    free(m->buf);
    free(m);
}

static void
on_manifest_written(void *arg, int status)
{
    struct manifest_ctx *m = arg;
    struct sched *s = m->s;
    struct sched_job *j = m->j;
    j->reduce_preparing = false;
    if (!s->stopping) {
        if (status == 0) {
            j->reduce_ready = true;
            j->maybe_ready = true;
            job_requeue(j);
        } else {
            log_warnx("job %llu: cannot write the reducer's input: %s; will retry",
                      (unsigned long long)j->id, uv_strerror(status));
            job_note_retry(s, j, burstd_now_ms() + RETRY_BASE_MS);
        }
    }
    manifest_free(m);
    if (!s->stopping)
        job_check_end(s, j);
}

/* Writes the reducer's manifest: where each map result is, in task order. */
static void
reduce_prepare(struct sched *s, struct sched_job *j)
{
    struct manifest_ctx *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return;
    m->s = s;
    m->j = j;
    m->parts = calloc(j->total ? j->total : 1, sizeof(*m->parts));
    int rc = m->parts ? 0 : -ENOMEM;
    if (rc == 0)
        rc = ledger_tasks_foreach(s->d->ledger, j->id, BURST_TASK_SUCCEEDED, 0, j->total,
                                  manifest_add, m);
    if (rc == 0)
        rc = invoc_manifest_encode(m->parts, m->n, &m->buf, &m->len);
    if (rc == 0)
        rc = invoc_key_reduce_manifest(m->key, sizeof(m->key), j->id);
    if (rc == 0) {
        m->ub = uv_buf_init(m->buf, (unsigned)m->len);
        j->reduce_preparing = true;
        rc = storage_put(s->d->storage, m->key, &m->ub, 1, true, on_manifest_written, m);
        if (rc != 0)
            j->reduce_preparing = false;
    }
    if (rc != 0) {
        log_warnx("job %llu: cannot prepare the reducer: %s", (unsigned long long)j->id,
                  uv_strerror(rc));
        manifest_free(m);
        job_note_retry(s, j, burstd_now_ms() + RETRY_BASE_MS);
    }
}

static void
job_finish(struct sched *s, struct sched_job *j, int state, const char *error)
{
    int64_t now = burstd_now_ms();
    /* The ledger's copy of a small job's input is needed no more: an
     * ended job is never dispatched again. */
    if (ledger_begin(s->d->ledger) != 0 ||
        ledger_input_delete(s->d->ledger, j->id) != 0 ||
        ledger_job_set_state(s->d->ledger, j->id, state, error, now) != 0) {
        log_warnx("job %llu: cannot record its end", (unsigned long long)j->id);
        return;
    }
    events_job_state(s->d->events, j->id, state);
    log_info("job %llu %s%s%s", (unsigned long long)j->id, burst_job_state_name(state),
             error ? ": " : "", error ? error : "");
    job_remove(s, j);
}

/* Moves a job on when nothing of it is in flight: starts the reducer, or
 * records the job's final state. */
static void
job_check_end(struct sched *s, struct sched_job *j)
{
    if (s->stopping || j->running > 0 || j->reduce_preparing)
        return;
    uint32_t nonfinal = job_nonfinal(j);
    if (j->kind == BURST_KIND_MAP_REDUCE && !j->cancelled) {
        bool reducer_open = is_nonfinal(j->reduce_state);
        uint32_t maps_open = nonfinal - (reducer_open ? 1 : 0);
        if (maps_open == 0 && j->reduce_state == BURST_TASK_QUEUED && !j->reduce_ready) {
            if (j->counts[BURST_TASK_SUCCEEDED] == j->total) {
                reduce_prepare(s, j);
                return;
            }
            /* A map failed for good: the reducer will never run. */
            uint32_t r = j->total;
            if (ledger_begin(s->d->ledger) == 0 &&
                ledger_tasks_set_state(s->d->ledger, j->id, &r, 1, BURST_TASK_CANCELLED,
                                       burstd_now_ms()) == 0) {
                count_move(j, BURST_TASK_QUEUED, BURST_TASK_CANCELLED);
                j->reduce_state = BURST_TASK_CANCELLED;
                events_task(s->d->events, j->id, r, BURST_TASK_CANCELLED, 0);
                nonfinal = job_nonfinal(j);
            }
        }
    }
    if (nonfinal > 0)
        return;
    if (j->cancelled) {
        job_finish(s, j, BURST_JOB_CANCELLED, "cancelled");
        return;
    }
    uint32_t rows = j->total + (j->kind == BURST_KIND_MAP_REDUCE ? 1 : 0);
    if (j->counts[BURST_TASK_SUCCEEDED] == rows) {
        job_finish(s, j, BURST_JOB_SUCCEEDED, NULL);
        return;
    }
    char err[160];
    uint32_t bad = j->counts[BURST_TASK_FAILED] + j->counts[BURST_TASK_TIMEOUT];
    if (j->kind == BURST_KIND_MAP_REDUCE && j->reduce_state != BURST_TASK_SUCCEEDED &&
        j->counts[BURST_TASK_SUCCEEDED] == j->total)
        snprintf(err, sizeof(err), "the reducer %s",
                 burst_task_state_name(j->reduce_state));
    else
        snprintf(err, sizeof(err), "%u of %u tasks failed", bad, j->total);
    job_finish(s, j, BURST_JOB_FAILED, err);
}

int
sched_cancel(struct sched *s, uint64_t job, int *state)
{
    struct burstd *d = s->d;
    struct sched_job *j = job_find(s, job);
    if (j == NULL) {
        struct ledger_job lj;
        int rc = ledger_job_get(d->ledger, job, &lj);
        if (rc != 0)
            return rc;
        *state = lj.state;
        ledger_job_free(&lj);
        return 0;
    }
    if (!j->cancelled) {
        j->cancelled = true;
        job_requeue(j);
        uint32_t n = 0;
        int rc = ledger_begin(d->ledger);
        if (rc == 0)
            rc = ledger_job_cancel_pending(d->ledger, job, burstd_now_ms(), &n);
        if (rc != 0)
            return rc;
        j->counts[BURST_TASK_CANCELLED] += j->counts[BURST_TASK_QUEUED] +
                                           j->counts[BURST_TASK_RETRYING];
        j->counts[BURST_TASK_QUEUED] = j->counts[BURST_TASK_RETRYING] = 0;
        if (is_nonfinal(j->reduce_state) && j->reduce_state != BURST_TASK_DISPATCHED &&
            j->reduce_state != BURST_TASK_RUNNING)
            j->reduce_state = BURST_TASK_CANCELLED;
        for (struct sched_disp *sd = s->inflight; sd != NULL; sd = sd->next)
            if (sd->job == j && sd->submitted)
                d->compute->ops->cancel(d->compute, &sd->d, CANCEL_GRACE_MS);
        log_info("job %llu: cancel requested (%u queued tasks cancelled)",
                 (unsigned long long)job, n);
    }
    *state = j->state;
    job_check_end(s, j);
    /* j may be gone now; the ledger has the final word. */
    if (job_find(s, job) == NULL)
        *state = BURST_JOB_CANCELLED;
    return 0;
}

/*
 * After a failed commit the ledger no longer holds what this iteration
 * changed (dispatches, task ends, job ends), so the counters in memory are
 * wrong.  Re-read them, and the set of active jobs, from the ledger.  Work
 * whose dispatch was rolled back may run twice; that is at-least-once, and
 * its result is still recorded once, since the ledger ignores a second end.
 */
void
sched_resync(struct sched *s)
{
    struct burstd *d = s->d;
    for (struct sched_job *j = s->jobs; j != NULL; j = j->next) {
        struct ledger_job lj;
        if (ledger_job_get(d->ledger, j->id, &lj) == 0) {
            j->state = lj.state;
            ledger_job_free(&lj);
        }
        ledger_job_counts(d->ledger, j->id, j->counts);
        if (j->kind == BURST_KIND_MAP_REDUCE) {
            struct ledger_task t;
            if (ledger_task_get(d->ledger, j->id, j->total, &t) == 0)
                j->reduce_state = t.state;
        }
        j->maybe_ready = true;
        job_requeue(j);
    }
    /* A job whose end was rolled back left memory but is active again. */
    ledger_jobs_foreach(d->ledger, -1, true, load_active, s);
    /* Tasks whose end could not be recorded are in flight for the ledger
     * only: reconcile them as at start.  An output in storage is recorded;
     * a small one that came back with its worker was in the transaction
     * that was undone, so its tasks run again. */
    if (s->started && !s->stopping &&
        ledger_tasks_inflight(d->ledger, inflight_add, s) == 0)
        recon_start_reads(s);
}

/* ---- start-up reconciliation ---- */

struct recon {
    struct sched *s;
    struct sched_disp *sd; /* a dispatch rebuilt from the ledger */
};

static int
load_active(void *arg, const struct ledger_job *lj)
{
    struct sched *s = arg;
    struct sched_job *j;
    if (job_find(s, lj->id) != NULL)
        return 0;
    return job_load(s, lj->id, 0, &j);
}

static void
recon_done_one(struct sched *s)
{
    if (s->pending_io > 0 && --s->pending_io > 0)
        return;
    if (s->started)
        return;
    s->started = true;
    for (struct sched_job *j = s->jobs; j != NULL;) {
        struct sched_job *next = j->next;
        job_check_end(s, j);
        j = next;
    }
    unsigned n = 0;
    for (struct sched_job *j = s->jobs; j != NULL; j = j->next)
        n++;
    log_info("scheduler started: %u active jobs, quota %u", n, s->quota);
}

static struct sched_disp *
disp_find(struct sched *s, uint64_t job, uint64_t dispatch)
{
    for (struct sched_disp *sd = s->inflight; sd != NULL; sd = sd->next)
        if (sd->job->id == job && sd->d.dispatch == dispatch)
            return sd;
    return NULL;
}

/* Rebuilds, from the ledger's in-flight tasks, the dispatches nobody is
 * tracking (all of them at start-up; after a rolled-back commit, those whose
 * end could not be recorded). */
static int
inflight_add(void *arg, uint64_t job, const struct ledger_task *t)
{
    struct sched *s = arg;
    struct sched_job *j = job_find(s, job);
    if (j == NULL)
        return 0; /* a finished job cannot have tasks in flight; ignore */
    struct sched_disp *sd = disp_find(s, job, t->dispatch);
    if (sd != NULL && (!sd->recon || sd->reading))
        return 0; /* really in flight, or already being reconciled */
    if (sd == NULL) {
        sd = calloc(1, sizeof(*sd));
        if (sd == NULL)
            return -ENOMEM;
        sd->s = s;
        sd->job = j;
        sd->d.dispatch = t->dispatch;
        sd->d.data = sd;
        sd->recon = true;
        sd->next = s->inflight;
        s->inflight = sd;
        s->in_use++;
        j->running++;
        j->owner->running++;
        j->source->running++;
        job_requeue(j);
    }
    uint32_t *idx = realloc(sd->idx, (sd->n + 1) * sizeof(*idx));
    if (idx == NULL)
        return -ENOMEM;
    sd->idx = idx;
    uint32_t *att = realloc(sd->attempts, (sd->n + 1) * sizeof(*att));
    if (att == NULL)
        return -ENOMEM;
    sd->attempts = att;
    sd->idx[sd->n] = t->index;
    sd->attempts[sd->n] = t->attempts;
    if (t->state == BURST_TASK_RUNNING)
        sd->started = true;
    sd->n++;
    return 0;
}

static void
on_recon_read(void *arg, int status)
{
    struct sched_disp *sd = arg;
    struct sched *s = sd->s;
    /* The normal path records what the output says and hands the rest
     * back as lost. */
    on_output_read(sd, status);
    recon_done_one(s);
}

/* Reads the output of every rebuilt dispatch not being read yet. */
static void
recon_start_reads(struct sched *s)
{
    struct burstd *d = s->d;
    s->pending_io++; /* released below, after every read has started */
    /* Reading may end a dispatch (and unlink it) before the walk moves on. */
    struct sched_disp *sd = s->inflight, *next;
    for (; sd != NULL; sd = next) {
        next = sd->next;
        if (!sd->recon || sd->reading)
            continue;
        sd->reading = true;
        log_info("job %llu: reconciling %u tasks of dispatch %llu", (unsigned long long)sd->job->id,
                 sd->n, (unsigned long long)sd->d.dispatch);
        /* Dispatches of this scheduler are single invocations (JOB_INDEX 0). */
        sd->out.key = sd->out_key;
        sd->out.off = 0;
        sd->out.len = UINT64_MAX;
        s->pending_io++;
        if (invoc_key_output(sd->out_key, sizeof(sd->out_key), sd->job->id, sd->d.dispatch,
                             0) != 0 ||
            storage_getv(d->storage, &sd->out, 1, on_recon_read, sd) != 0) {
            s->pending_io--;
            sd->out.status = -ENOENT;
            on_output_read(sd, 0);
        }
    }
    recon_done_one(s);
}

int
sched_start(struct sched *s)
{
    struct burstd *d = s->d;
    int rc = ledger_jobs_foreach(d->ledger, -1, true, load_active, s);
    if (rc != 0)
        return rc;
    rc = ledger_tasks_inflight(d->ledger, inflight_add, s);
    if (rc != 0)
        return rc;
    recon_start_reads(s);
    return 0;
}
