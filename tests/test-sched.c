/*
 * tests/test-sched.c - the scheduler against the real ledger, local storage
 * and local compute backend (real burst-worker processes): fairness of the
 * quota across owners and jobs, grouping into chunks, and reconciliation of
 * tasks left in flight by a previous daemon.
 *
 * Owners are plain uids written into the ledger; no second user is needed to
 * test how the quota is divided between them.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "burstd.h"
#include "compute.h"
#include "events.h"
#include "invoc.h"
#include "ledger.h"
#include "scheduler.h"
#include "storage.h"

struct fixture {
    char dir[64];
    struct config cfg;
    struct burstd d;
    uv_loop_t loop;
    uv_prepare_t tick;
    uv_timer_t poll;
    uv_timer_t guard;
    uint64_t jobs[16];
    int njobs;
    int32_t pid; /* the client process job_create says submitted a job */
    bool timed_out;
};

static void
on_tick(uv_prepare_t *h)
{
    struct burstd *d = h->data;
    if (d->sched != NULL)
        sched_pump(d->sched);
    burstd_commit(d);
}

/* The owners of these tests (1001, 2002) are labels for fairness, not
 * accounts: the real local backend runs every dispatch as the test's uid. */
static struct compute_ops local_ops, as_me_ops;

static int
as_me_submit(struct compute *c, struct dispatch *disp)
{
    disp->owner_uid = geteuid();
    return local_ops.submit(c, disp);
}

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/burst-test-sched.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    config_init(&f->cfg);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    struct burstd *d = &f->d;
    d->loop = &f->loop;
    d->cfg = &f->cfg;
    d->uid = getuid();
    char path[128];
    snprintf(path, sizeof(path), "%s/ledger.db", f->dir);
    assert_int_equal(ledger_open(path, &d->ledger), 0);
    snprintf(path, sizeof(path), "%s/storage", f->dir);
    assert_int_equal(storage_local_new(d->loop, path, &d->storage), 0);
    const char *worker = getenv("BURST_WORKER");
    assert_non_null(worker);
    assert_int_equal(compute_local_new(d->loop, worker, d->storage->ops->worker_url(d->storage),
                                       &d->compute),
                     0);
    local_ops = *d->compute->ops;
    as_me_ops = local_ops;
    as_me_ops.submit = as_me_submit;
    d->compute->ops = &as_me_ops;
    assert_int_equal(events_new(d, &d->events), 0);
    uv_prepare_init(d->loop, &f->tick);
    f->tick.data = d;
    uv_prepare_start(&f->tick, on_tick);
    *state = f;
    return 0;
}

static void
compute_closed(struct compute *c)
{
    (void)c;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    if (d->sched != NULL)
        sched_stop(d->sched, 0);
    d->compute->ops->close(d->compute, compute_closed);
    uv_close((uv_handle_t *)&f->tick, NULL);
    if (d->sched != NULL)
        sched_free(d->sched);
    uv_run(d->loop, UV_RUN_DEFAULT);
    events_free(d->events);
    d->storage->ops->close(d->storage);
    ledger_close(d->ledger);
    assert_int_equal(uv_loop_close(d->loop), 0);
    config_free(&f->cfg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void
on_put(void *arg, int status)
{
    int *done = arg;
    *done = status == 0 ? 1 : -1;
}

/* Writes an object and runs the loop until it is durable. */
static void
put_sync(struct burstd *d, const char *key, const void *data, size_t len)
{
    int done = 0;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    assert_int_equal(storage_put(d->storage, key, &b, 1, true, on_put, &done), 0);
    while (done == 0)
        uv_run(d->loop, UV_RUN_ONCE);
    assert_int_equal(done, 1);
}

/* A map job of n tasks "xN\n" for owner, inserted as api.c would. */
static uint64_t
job_create(struct fixture *f, uint32_t owner, const char *cmd, uint32_t n, uint32_t chunk,
           uint32_t retries)
{
    struct burstd *d = &f->d;
    uint64_t id;
    assert_int_equal(ledger_begin(d->ledger), 0);
    assert_int_equal(ledger_reserve_job_id(d->ledger, &id), 0);
    /* The input object (worker/invoc.h): header, offsets, data. */
    size_t base = INVOC_INPUT_HEADER + ((size_t)n + 1) * 8;
    unsigned char *obj = malloc(base + (size_t)n * 16);
    assert_non_null(obj);
    invoc_input_header(obj, n);
    uint64_t *idx = (uint64_t *)(void *)(obj + INVOC_INPUT_HEADER);
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        idx[i] = htole64(off);
        off += (size_t)sprintf((char *)obj + base + off, "x%u\n", i);
    }
    idx[n] = htole64(off);
    char key[128];
    invoc_key_input(key, sizeof(key), id);
    put_sync(d, key, obj, base + off);
    free(obj);

    struct ledger_job job = {0};
    job.id = id;
    job.owner_uid = owner;
    job.kind = BURST_KIND_MAP;
    job.state = BURST_JOB_QUEUED;
    job.total = n;
    job.chunksize = chunk;
    job.retries = retries;
    job.backend = "local";
    job.fn.kind = BURST_FN_EXEC;
    job.fn.arg = (char *)cmd;
    job.reduce.kind = -1;
    assert_int_equal(ledger_begin(d->ledger), 0);
    assert_int_equal(ledger_job_insert(d->ledger, &job, n), 0);
    assert_int_equal(burstd_commit(d), 0);
    if (d->sched != NULL)
        assert_int_equal(sched_job_added(d->sched, id, f->pid), 0);
    f->jobs[f->njobs++] = id;
    return id;
}

static void
on_poll(uv_timer_t *t)
{
    struct fixture *f = t->data;
    for (int i = 0; i < f->njobs; i++) {
        struct ledger_job j;
        assert_int_equal(ledger_job_get(f->d.ledger, f->jobs[i], &j), 0);
        int st = j.state;
        ledger_job_free(&j);
        if (!burst_job_state_is_final(st))
            return;
    }
    uv_stop(t->loop);
}

static void
on_guard(uv_timer_t *t)
{
    struct fixture *f = t->data;
    f->timed_out = true;
    uv_stop(t->loop);
}

/* Runs the loop until every job of the fixture has ended (or a generous
 * safety limit passes, which fails the test rather than hanging it). */
static void
run_until_done(struct fixture *f)
{
    uv_timer_init(f->d.loop, &f->poll);
    uv_timer_init(f->d.loop, &f->guard);
    f->poll.data = f->guard.data = f;
    uv_timer_start(&f->poll, on_poll, 20, 20);
    uv_timer_start(&f->guard, on_guard, 240000, 0);
    uv_run(f->d.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&f->poll, NULL);
    uv_close((uv_handle_t *)&f->guard, NULL);
    uv_run(f->d.loop, UV_RUN_NOWAIT);
    assert_false(f->timed_out);
}

static int
job_state(struct fixture *f, uint64_t id)
{
    struct ledger_job j;
    assert_int_equal(ledger_job_get(f->d.ledger, id, &j), 0);
    int st = j.state;
    ledger_job_free(&j);
    return st;
}

struct disp_rec {
    uint64_t dispatch;
    uint64_t job;
};

struct collect {
    struct disp_rec *recs;
    size_t n;
    uint64_t job;
};

static int
collect_dispatch(void *arg, const struct ledger_task *t)
{
    struct collect *c = arg;
    c->recs[c->n++] = (struct disp_rec){t->dispatch, c->job};
    return 0;
}

static int
cmp_disp(const void *a, const void *b)
{
    const struct disp_rec *x = a, *y = b;
    return x->dispatch < y->dispatch ? -1 : x->dispatch > y->dispatch;
}

/* Two owners, one with three jobs and one with one: while both have work,
 * each owner gets half of the invocations, and the three jobs of the first
 * share its half evenly. */
static void
test_fair_share(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    assert_int_equal(sched_new(d, 2, &d->sched), 0);
    uint64_t a1 = job_create(f, 1001, "cat", 30, 1, 0);
    uint64_t a2 = job_create(f, 1001, "cat", 30, 1, 0);
    uint64_t a3 = job_create(f, 1001, "cat", 30, 1, 0);
    uint64_t b1 = job_create(f, 2002, "cat", 30, 1, 0);
    assert_int_equal(sched_start(d->sched), 0);
    run_until_done(f);
    for (int i = 0; i < f->njobs; i++)
        assert_int_equal(job_state(f, f->jobs[i]), BURST_JOB_SUCCEEDED);

    struct collect c = {.recs = calloc(120, sizeof(struct disp_rec))};
    assert_non_null(c.recs);
    uint64_t ids[] = {a1, a2, a3, b1};
    for (int i = 0; i < 4; i++) {
        c.job = ids[i];
        assert_int_equal(ledger_tasks_foreach(d->ledger, ids[i], -1, 0, 0, collect_dispatch, &c),
                         0);
    }
    assert_int_equal(c.n, 120);
    qsort(c.recs, c.n, sizeof(*c.recs), cmp_disp);
    /* The first 40 invocations: owner 2002 has work throughout them. */
    unsigned b = 0, per_job[3] = {0, 0, 0};
    for (size_t i = 0; i < 40; i++) {
        if (c.recs[i].job == b1)
            b++;
        else
            per_job[c.recs[i].job == a1 ? 0 : c.recs[i].job == a2 ? 1 : 2]++;
    }
    print_message("owner 2002 got %u of the first 40 invocations; jobs of 1001: %u %u %u\n",
                  b, per_job[0], per_job[1], per_job[2]);
    assert_in_range(b, 16, 24); /* fair is 20: within 20% */
    for (int i = 0; i < 3; i++)
        assert_in_range(per_job[i], 4, 9); /* fair is 6.7 */
    free(c.recs);
}

static int
first_dispatch(void *arg, const struct ledger_task *t)
{
    uint64_t *d = arg;
    *d = t->dispatch;
    return 0;
}

/*
 * Two client processes of one owner: the second submits its jobs after all
 * of the first's, yet they take turns (the first's oldest first), instead
 * of the second waiting for all of the first's to start.
 */
static void
test_fair_processes(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    assert_int_equal(sched_new(d, 1, &d->sched), 0);
    uint64_t ids[12];
    for (int i = 0; i < 12; i++) {
        f->pid = i < 6 ? 100 : 200;
        ids[i] = job_create(f, 1001, "cat", 1, 1, 0);
    }
    assert_int_equal(sched_start(d->sched), 0);
    run_until_done(f);
    uint64_t disp[12];
    for (int i = 0; i < 12; i++) {
        assert_int_equal(job_state(f, ids[i]), BURST_JOB_SUCCEEDED);
        assert_int_equal(ledger_tasks_foreach(d->ledger, ids[i], -1, 0, 0, first_dispatch,
                                              &disp[i]),
                         0);
    }
    /* Turns: job k of the first process, then job k of the second. */
    for (int k = 0; k < 6; k++) {
        assert_true(disp[k] < disp[6 + k]);
        if (k > 0)
            assert_true(disp[6 + k - 1] < disp[k]);
    }
}

/* Jobs alike (one owner, nothing running, never served) start in the order
 * they were submitted: the oldest waits least. */
static void
test_equal_jobs_fifo(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    assert_int_equal(sched_new(d, 1, &d->sched), 0);
    uint64_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = job_create(f, 1001, "cat", 1, 1, 0);
    assert_int_equal(sched_start(d->sched), 0);
    run_until_done(f);
    uint64_t prev = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(job_state(f, ids[i]), BURST_JOB_SUCCEEDED);
        uint64_t disp = 0;
        assert_int_equal(ledger_tasks_foreach(d->ledger, ids[i], -1, 0, 0, first_dispatch, &disp),
                         0);
        assert_true(disp > prev);
        prev = disp;
    }
}

static int
count_dispatch(void *arg, const struct ledger_task *t)
{
    uint64_t *seen = arg;
    /* seen[0]: distinct dispatches counted as runs of equal ids */
    if (t->dispatch != seen[1]) {
        seen[0]++;
        seen[1] = t->dispatch;
    }
    return 0;
}

/* chunksize groups consecutive tasks into one invocation. */
static void
test_chunks(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    assert_int_equal(sched_new(d, 2, &d->sched), 0);
    uint64_t j = job_create(f, 1001, "tr a-z A-Z", 25, 10, 0);
    assert_int_equal(sched_start(d->sched), 0);
    run_until_done(f);
    assert_int_equal(job_state(f, j), BURST_JOB_SUCCEEDED);
    uint64_t seen[2] = {0, 0};
    assert_int_equal(ledger_tasks_foreach(d->ledger, j, -1, 0, 0, count_dispatch, seen), 0);
    assert_int_equal(seen[0], 3); /* 10 + 10 + 5 */
}

/* A job added again once it has ended (its acceptance became durable after
 * its end) is not taken back into the scheduler. */
static void
test_added_after_end(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    assert_int_equal(sched_new(d, 2, &d->sched), 0);
    uint64_t j = job_create(f, 1001, "cat", 3, 1, 0);
    assert_int_equal(sched_start(d->sched), 0);
    uint32_t counts[BURST_TASK_NSTATES];
    assert_int_equal(sched_counts(d->sched, j, counts), 0);
    run_until_done(f);
    assert_int_equal(job_state(f, j), BURST_JOB_SUCCEEDED);
    assert_int_equal(sched_counts(d->sched, j, counts), -ENOENT);
    assert_int_equal(sched_job_added(d->sched, j, f->pid), 0);
    assert_int_equal(sched_counts(d->sched, j, counts), -ENOENT);
}

/* A failing command with retries is tried retries + 1 times, then fails. */
static void
test_retries_exhausted(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    assert_int_equal(sched_new(d, 2, &d->sched), 0);
    uint64_t j = job_create(f, 1001, "exit 7", 2, 1, 2);
    assert_int_equal(sched_start(d->sched), 0);
    run_until_done(f);
    assert_int_equal(job_state(f, j), BURST_JOB_FAILED);
    struct ledger_task t;
    assert_int_equal(ledger_task_get(d->ledger, j, 1, &t), 0);
    assert_int_equal(t.state, BURST_TASK_FAILED);
    assert_int_equal(t.attempts, 3);
    assert_int_equal(t.exit_status, 7);
}

/*
 * Restart: a previous daemon dispatched tasks 0-1 (their output object is in
 * storage) and 2-3 (no output: the worker was lost).  On start the first two
 * are recorded from storage without running again, the others run again.
 */
static void
test_reconcile(void **state)
{
    struct fixture *f = *state;
    struct burstd *d = &f->d;
    uint64_t j = job_create(f, 1001, "tr a-z A-Z", 4, 2, 0);
    uint64_t disp1, disp2;
    uint32_t att[2];
    uint32_t first[2] = {0, 1}, second[2] = {2, 3};
    assert_int_equal(ledger_begin(d->ledger), 0);
    assert_int_equal(ledger_next_dispatch(d->ledger, &disp1), 0);
    assert_int_equal(ledger_tasks_dispatch(d->ledger, j, first, 2, disp1, 1, att), 0);
    assert_int_equal(ledger_next_dispatch(d->ledger, &disp2), 0);
    assert_int_equal(ledger_tasks_dispatch(d->ledger, j, second, 2, disp2, 1, att), 0);
    assert_int_equal(ledger_commit(d->ledger), 0);

    /* The output the lost daemon's worker left for dispatch 1. */
    struct invoc_out_writer *w;
    assert_int_equal(invoc_out_writer_new(j, disp1, 0, &w), 0);
    for (uint32_t i = 0; i < 2; i++) {
        char res[16];
        int n = snprintf(res, sizeof(res), "FROM-OLD-%u\n", i);
        struct invoc_result r = {.index = i, .attempt = 1, .status = INVOC_OK,
                                 .exit_status = 0, .reason = "", .result = res,
                                 .result_len = (size_t)n, .log = "", .log_len = 0};
        assert_int_equal(invoc_out_writer_add(w, &r), 0);
    }
    char *buf;
    size_t len;
    assert_int_equal(invoc_out_writer_finish(w, &buf, &len), 0);
    invoc_out_writer_free(w);
    char key[128];
    invoc_key_output(key, sizeof(key), j, disp1, 0);
    put_sync(d, key, buf, len);
    free(buf);

    assert_int_equal(sched_new(d, 2, &d->sched), 0);
    assert_int_equal(sched_start(d->sched), 0);
    run_until_done(f);
    assert_int_equal(job_state(f, j), BURST_JOB_SUCCEEDED);
    struct ledger_task t;
    assert_int_equal(ledger_task_get(d->ledger, j, 0, &t), 0);
    assert_int_equal(t.attempts, 1);          /* not run again */
    assert_int_equal(t.out_dispatch, disp1);
    assert_int_equal(ledger_task_get(d->ledger, j, 3, &t), 0);
    assert_int_equal(t.attempts, 2);          /* run again */
    assert_true(t.out_dispatch != disp2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fair_share, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fair_processes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_equal_jobs_fifo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_added_after_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_exhausted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconcile, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
