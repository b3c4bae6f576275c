/*
 * bench/fairness.c - B6 of issue 4: many client processes sharing one
 * burstd and its quota at the same time.
 *
 * The parent forks CLIENTS processes.  Each opens its own libburst
 * connection, runs one warm-up job (so the function library is uploaded and
 * the connection is warm before anything is measured), says it is ready and
 * blocks on a pipe.  Once every client is ready and the daemon is idle, the
 * parent measures the idle baseline (bare burst_quota round trips) and
 * closes the pipe: all clients make the crowd baseline's round trips at
 * once, say so, and block on a second pipe, whose closing starts the run.
 *
 * Each client then submits JOBS map jobs of TASKS tasks of LIB:echo with
 * chunksize TASKS, so every job is exactly one invocation.  By default a
 * client submits all its jobs without waiting (WINDOW 0), as a Pool-style
 * caller with a batch of work would; WINDOW N keeps at most N of its jobs
 * unfinished.  Each submission subscribes to its job (burst_opts.on_event;
 * SUBSCRIBE separate: a subscribe request right after the acknowledgment,
 * as before libburst could) and the client follows the events until every
 * job has ended, then reads each job's tasks
 * (their states and the daemon's end times) and results, and checks that
 * every task succeeded and echoed its own input.
 *
 * What is measured:
 * - Fair share.  The window is from the moment the last client got its
 *   first acknowledgment (from then on every client has work queued) to the
 *   moment the first client's last task ended (until then every client has
 *   work).  Each client's tasks that ended inside the window, by the
 *   daemon's own end times, are compared with the fair share, window total
 *   / CLIENTS.  Printed: the worst |share / fair - 1|, and the 5th and 95th
 *   percentiles of share / fair; then the worst of the same over each
 *   quarter of the window, so that a client served late and then in a
 *   burst shows even when its total comes out right.  A job's tasks end
 *   together, so one job more or less moves a share by TASKS / fair; the
 *   details say how much that is.
 * - Requests.  Every request round trip a client makes once started: submit
 *   to acknowledgment, subscribe, tasks, and status (only made when a client
 *   heard nothing for a while).  Reading results (one page) is timed apart
 *   and reported on stderr only, since it carries the result bytes; the
 *   "results (2 round trips)" figures in BENCHMARKS.md predate
 *   burst_results asking with final, when it made a status call first.
 * - Baselines: burst_quota round trips while the daemon is idle, just before
 *   the start, on a connection of the parent; and the crowd baseline, the
 *   same clients all making bare burst_quota round trips at once, as many
 *   as the run's round trips (CROWD_PER_JOB per job), each sent as soon as
 *   the last was answered.  The crowd baseline is the floor of a request
 *   under this many processes on this machine, with no work behind it:
 *   what the run's figures add to it is the cost of the work.
 *
 * stdout, one line:
 *   WORST_PCT SHARE_P5 SHARE_P95 QUARTER_WORST_PCT REQ_P50 REQ_P99 BASE_P50
 *   BASE_P99 WINDOW_S TOTAL_S CROWD_P50 CROWD_P99
 * (nan where a figure could not be had: no window, or no quarter with ends).
 * stderr: the details (per-request-kind percentiles, event lag, time to the
 * first completion per client, submission phase, throughput, quarters of
 * the window).
 *
 * usage: bench-fairness SOCKET LIB.so CLIENTS JOBS TASKS [WINDOW [SUBSCRIBE]]
 */
#include "stats.h"

#include <burst.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CLIENTS 1000u
#define MAX_JOBS 100000u
#define MAX_TASKS 10000u
#define MAX_WINDOW 1000u /* subscriptions a connection may hold (1024) */
#define BASE_COUNT 1000u /* baseline round trips */
#define SILENCE_MS 5000  /* no event for that long: ask the daemon */
#define CLIENT_DEADLINE_MS (3600.0 * 1000.0)
#define LINE_MAX_LEN 48 /* "c%u j%u t%u\n" with 32-bit numbers fits */
#define QUARTERS 4
#define CROWD_PER_JOB 3 /* round trips a job costs the run: submit, tasks, results */

/* The request round trips that count for the p99 figure, and the results
 * reading that is reported apart (see the top of the file). */
enum req_kind {
    REQ_SUBMIT,
    REQ_SUBSCRIBE,
    REQ_TASKS,
    REQ_STATUS,
    REQ_RESULTS,
    REQ_BARE, /* the crowd baseline's round trips, not part of the run */
    REQ_NKINDS
};
static const char *const req_name[REQ_NKINDS] = {
    "submit", "subscribe", "tasks", "status", "results", "bare (crowd baseline)"};

struct cfg {
    const char *socket;
    const char *lib;
    uint32_t clients;
    uint32_t jobs;
    uint32_t tasks;
    uint32_t window; /* 0: all of a client's jobs at once */
    bool separate;   /* subscribe with a request of its own, not the submission */
};

/* What each client writes for the parent; one per client in the shared
 * mapping.  Written only by its client, read by the parent after the
 * client has exited. */
struct client_out {
    int ok; /* 1: everything done and checked */
    char why[256];
    double first_ack; /* unix ms of the client's first acknowledgment */
    uint32_t retried; /* tasks that took more than one attempt */
    uint32_t nlat[REQ_NKINDS];
    uint32_t lost_lat; /* samples beyond lat_room() */
    uint32_t unheard;  /* jobs whose end no event told of */
};

/* The shared mapping, carved into arrays.  Times are unix ms (doubles)
 * unless said otherwise. */
struct shared {
    void *base;
    size_t size;
    struct client_out *out; /* [clients] */
    double *lat;            /* [REQ_NKINDS][clients][lat_room()], monotonic ms */
    double *ack;            /* [clients][jobs]: acknowledgment */
    double *seen;           /* [clients][jobs]: the client learnt the job ended */
    double *job_end;        /* [clients][jobs]: daemon's last task end */
    double *task_end;       /* [clients][jobs][tasks]: daemon's task end */
};

/* Parses a decimal count in [lo, hi]; returns -1 when it is not one. */
static int
parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

/* Round trips of each kind kept per client: one submit, subscribe, tasks
 * and results per job, CROWD_PER_JOB bare ones per job, and room for a
 * status request per silence. */
static size_t
lat_room(const struct cfg *cfg)
{
    return (4 + CROWD_PER_JOB) * (size_t)cfg->jobs + 64;
}

/* Maps the arrays for cfg, zeroed and shared with the children to come.
 * Returns 0, or -1 with errno set. */
static int
shared_map(const struct cfg *cfg, struct shared *sh)
{
    size_t cj = (size_t)cfg->clients * cfg->jobs;
    size_t nlat = REQ_NKINDS * (size_t)cfg->clients * lat_room(cfg);
    size_t doubles = nlat + 3 * cj + cj * cfg->tasks;
    size_t head = (size_t)cfg->clients * sizeof(struct client_out);
    head = (head + sizeof(double) - 1) / sizeof(double) * sizeof(double);
    sh->size = head + doubles * sizeof(double);
    sh->base =
        mmap(NULL, sh->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh->base == MAP_FAILED)
        return -1;
    sh->out = sh->base;
    double *d = (double *)((char *)sh->base + head);
    sh->lat = d;
    d += nlat;
    sh->ack = d;
    d += cj;
    sh->seen = d;
    d += cj;
    sh->job_end = d;
    d += cj;
    sh->task_end = d;
    return 0;
}

/* ---- one client ----------------------------------------------------------- */

struct slot {
    struct client *cl; /* borrowed: the client this job belongs to */
    uint32_t j;
    uint64_t id;
    bool ended;
    int state; /* the job's final state once ended */
};

struct client {
    const struct cfg *cfg;
    struct shared *sh;
    uint32_t ci;
    burst_client *c;    /* owned */
    struct slot *slots; /* owned: [jobs] */
    char *blob;         /* owned: one job's input lines */
    uint32_t submitted;
    uint32_t ended;
    struct client_out *out; /* borrowed from sh */
};

/* Records one round trip of kind k that took ms milliseconds. */
static void
client_lat(struct client *cl, enum req_kind k, double ms)
{
    size_t room = lat_room(cl->cfg);
    if (cl->out->nlat[k] >= room) {
        cl->out->lost_lat++;
        return;
    }
    size_t at = ((size_t)k * cl->cfg->clients + cl->ci) * room + cl->out->nlat[k]++;
    cl->sh->lat[at] = ms;
}

static size_t
job_index(const struct client *cl, uint32_t j)
{
    return (size_t)cl->ci * cl->cfg->jobs + j;
}

/* The input line of task t of job j: what echo must give back. */
static int
task_line(char *buf, size_t size, uint32_t ci, uint32_t j, uint32_t t)
{
    return snprintf(buf, size, "c%" PRIu32 " j%" PRIu32 " t%" PRIu32 "\n", ci, j, t);
}

static void client_fail(struct client *cl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
client_fail(struct client *cl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cl->out->why, sizeof(cl->out->why), fmt, ap);
    va_end(ap);
}

static void
slot_end(struct slot *s, int state)
{
    if (s->ended)
        return;
    s->ended = true;
    s->state = state;
    s->cl->ended++;
    s->cl->sh->seen[job_index(s->cl, s->j)] = bench_unix_ms();
}

static void
on_event(void *arg, const burst_event *ev)
{
    struct slot *s = arg;
    if (ev->type == BURST_EV_JOB && burst_job_state_is_final(ev->job_state))
        slot_end(s, ev->job_state);
}

/* Submits job j, records the acknowledgment, and follows its events. */
static int
client_submit(struct client *cl, const burst_fn *fn, uint32_t j)
{
    const struct cfg *cfg = cl->cfg;
    size_t len = 0;
    for (uint32_t t = 0; t < cfg->tasks; t++)
        len += (size_t)task_line(cl->blob + len, LINE_MAX_LEN, cl->ci, j, t);
    burst_opts opts = BURST_OPTS_INIT;
    opts.chunksize = cfg->tasks; /* one invocation per job */
    /* The ledger cannot tell the clients apart (one uid): the name can. */
    char name[32];
    snprintf(name, sizeof(name), "b6 c%" PRIu32, cl->ci);
    opts.name = name;
    struct slot *s = &cl->slots[j];
    if (!cfg->separate) {
        opts.on_event = on_event;
        opts.event_arg = s;
    }
    double t0 = bench_mono_ms();
    int rc = burst_submit_map_lines(cl->c, fn, cl->blob, len, &opts, &s->id);
    double t1 = bench_mono_ms();
    if (rc != 0) {
        client_fail(cl, "submitting job %" PRIu32 ": %s: %s", j, burst_strerror(rc),
                    burst_last_error(cl->c));
        return -1;
    }
    double now = bench_unix_ms();
    client_lat(cl, REQ_SUBMIT, t1 - t0);
    cl->sh->ack[job_index(cl, j)] = now;
    if (j == 0)
        cl->out->first_ack = now;
    if (!cfg->separate)
        return 0;
    t0 = bench_mono_ms();
    rc = burst_subscribe(cl->c, s->id, 0, on_event, s);
    client_lat(cl, REQ_SUBSCRIBE, bench_mono_ms() - t0);
    if (rc != 0) {
        client_fail(cl, "subscribing to job %" PRIu64 ": %s: %s", s->id,
                    burst_strerror(rc), burst_last_error(cl->c));
        return -1;
    }
    return 0;
}

/* Nothing heard for SILENCE_MS: rather than trust that no event can go
 * missing, ask for the state of the oldest unfinished job, and of all of
 * them when that one turns out to have ended unheard.  A client whose jobs
 * all wait behind others' makes one status request per silence. */
static int
client_repoll(struct client *cl)
{
    bool all = false;
    for (uint32_t j = 0; j < cl->submitted; j++) {
        struct slot *s = &cl->slots[j];
        if (s->ended)
            continue;
        burst_job_info st;
        double t0 = bench_mono_ms();
        int rc = burst_status(cl->c, s->id, &st);
        client_lat(cl, REQ_STATUS, bench_mono_ms() - t0);
        if (rc != 0) {
            client_fail(cl, "status of job %" PRIu64 ": %s: %s", s->id,
                        burst_strerror(rc), burst_last_error(cl->c));
            return -1;
        }
        if (!burst_job_state_is_final(st.state)) {
            if (!all)
                return 0;
            continue;
        }
        /* Its event may have come in while we waited for the reply. */
        if (burst_dispatch(cl->c) < 0) {
            client_fail(cl, "connection lost: %s", burst_last_error(cl->c));
            return -1;
        }
        if (s->ended && !all)
            return 0;
        if (!s->ended) {
            cl->out->unheard++;
            slot_end(s, st.state);
            all = true;
        }
    }
    return 0;
}

/* Submits (all at once, or keeping `window` unfinished) and follows the
 * events until every job has ended. */
static int
client_run(struct client *cl, const burst_fn *fn)
{
    const struct cfg *cfg = cl->cfg;
    uint32_t window = cfg->window != 0 ? cfg->window : cfg->jobs;
    double deadline = bench_mono_ms() + CLIENT_DEADLINE_MS;
    while (cl->ended < cfg->jobs) {
        while (cl->submitted < cfg->jobs && cl->submitted - cl->ended < window) {
            if (client_submit(cl, fn, cl->submitted) != 0)
                return -1;
            cl->submitted++;
            /* Hand out what arrived meanwhile, so an end is not noted late
             * just because this client was still submitting. */
            if (burst_dispatch(cl->c) < 0)
                goto lost;
        }
        /* Events read during a call wait in libburst, out of poll's sight. */
        if (burst_pending(cl->c) > 0) {
            if (burst_dispatch(cl->c) < 0)
                goto lost;
            continue;
        }
        if (bench_mono_ms() > deadline) {
            client_fail(cl,
                        "%" PRIu32 " of %" PRIu32 " jobs still unfinished after %.0f s",
                        cfg->jobs - cl->ended, cfg->jobs, CLIENT_DEADLINE_MS / 1e3);
            return -1;
        }
        struct pollfd p = {.fd = burst_fd(cl->c), .events = POLLIN};
        int n = poll(&p, 1, SILENCE_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            client_fail(cl, "poll: %s", strerror(errno));
            return -1;
        }
        if (n == 0) {
            if (client_repoll(cl) != 0)
                return -1;
            continue;
        }
        if (burst_dispatch(cl->c) < 0)
            goto lost;
    }
    return 0;
lost:
    client_fail(cl, "connection lost while waiting for events: %s",
                burst_last_error(cl->c));
    return -1;
}

struct check {
    struct client *cl;
    uint32_t j;
    uint32_t seen;
    int bad; /* index + 1 of the first wrong result, 0 none */
};

static int
check_result(void *arg, uint32_t index, const void *data, size_t len)
{
    struct check *k = arg;
    char want[LINE_MAX_LEN];
    int n = task_line(want, sizeof(want), k->cl->ci, k->j, index);
    if (index >= k->cl->cfg->tasks || data == NULL || len != (size_t)n ||
        memcmp(data, want, len) != 0) {
        if (k->bad == 0)
            k->bad = (int)index + 1;
        return 0;
    }
    k->seen++;
    return 0;
}

/* Reads every job's tasks (end times, states) and results, and checks them. */
static int
client_check(struct client *cl)
{
    const struct cfg *cfg = cl->cfg;
    for (uint32_t j = 0; j < cfg->jobs; j++) {
        struct slot *s = &cl->slots[j];
        if (s->state != BURST_JOB_SUCCEEDED) {
            client_fail(cl, "job %" PRIu64 " ended %s", s->id,
                        burst_job_state_name(s->state));
            return -1;
        }
        burst_task_info *ti;
        size_t n;
        double t0 = bench_mono_ms();
        int rc = burst_tasks(cl->c, s->id, -1, &ti, &n);
        client_lat(cl, REQ_TASKS, bench_mono_ms() - t0);
        if (rc != 0) {
            client_fail(cl, "tasks of job %" PRIu64 ": %s: %s", s->id, burst_strerror(rc),
                        burst_last_error(cl->c));
            return -1;
        }
        double last = 0;
        size_t base = job_index(cl, j) * cfg->tasks;
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (ti[i].index >= cfg->tasks || ti[i].state != BURST_TASK_SUCCEEDED ||
                ti[i].finished_ms <= 0)
                rc = -1;
            else {
                cl->sh->task_end[base + ti[i].index] = (double)ti[i].finished_ms;
                if ((double)ti[i].finished_ms > last)
                    last = (double)ti[i].finished_ms;
                if (ti[i].attempts > 1)
                    cl->out->retried++;
            }
        }
        free(ti);
        if (rc != 0 || n != cfg->tasks) {
            client_fail(cl,
                        "job %" PRIu64 ": %zu tasks listed, not %" PRIu32
                        " that all succeeded",
                        s->id, n, cfg->tasks);
            return -1;
        }
        cl->sh->job_end[job_index(cl, j)] = last;
        struct check k = {.cl = cl, .j = j};
        t0 = bench_mono_ms();
        rc = burst_results(cl->c, s->id, check_result, &k);
        client_lat(cl, REQ_RESULTS, bench_mono_ms() - t0);
        if (rc != 0) {
            client_fail(cl, "results of job %" PRIu64 ": %s: %s", s->id,
                        burst_strerror(rc), burst_last_error(cl->c));
            return -1;
        }
        if (k.bad != 0 || k.seen != cfg->tasks) {
            client_fail(cl,
                        "job %" PRIu64 ": %" PRIu32 " of %" PRIu32
                        " results right, task %d is wrong or missing",
                        s->id, k.seen, cfg->tasks, k.bad > 0 ? k.bad - 1 : -1);
            return -1;
        }
    }
    return 0;
}

/* Blocks until the parent closes fd (all clients see that at once), then
 * closes it.  Returns 0, or -1 when the barrier broke. */
static int
barrier(int fd)
{
    char b;
    ssize_t got;
    while ((got = read(fd, &b, 1)) < 0 && errno == EINTR)
        ;
    close(fd);
    return got == 0 ? 0 : -1;
}

/* The crowd baseline: CROWD_PER_JOB bare round trips per job, back to back. */
static int
client_crowd(struct client *cl)
{
    uint32_t n = CROWD_PER_JOB * cl->cfg->jobs;
    for (uint32_t i = 0; i < n; i++) {
        double t0 = bench_mono_ms();
        int rc = burst_quota(cl->c, -1, NULL);
        client_lat(cl, REQ_BARE, bench_mono_ms() - t0);
        if (rc < 0) {
            client_fail(cl, "quota: %s: %s", burst_strerror(rc), burst_last_error(cl->c));
            return -1;
        }
    }
    return 0;
}

/* The body of client process ci: returns its exit status. */
static int
client_main(const struct cfg *cfg, struct shared *sh, uint32_t ci, int ready_fd,
            int go_fd, int run_fd)
{
    struct client cl = {.cfg = cfg, .sh = sh, .ci = ci, .out = &sh->out[ci]};
    char err[256];
    int status = 1;

    cl.slots = calloc(cfg->jobs, sizeof(*cl.slots));
    cl.blob = malloc((size_t)cfg->tasks * LINE_MAX_LEN);
    if (cl.slots == NULL || cl.blob == NULL) {
        client_fail(&cl, "out of memory for %" PRIu32 " jobs", cfg->jobs);
        goto out_free;
    }
    for (uint32_t j = 0; j < cfg->jobs; j++)
        cl.slots[j] = (struct slot){.cl = &cl, .j = j};
    int rc = burst_connect_ex(cfg->socket, &cl.c, err, sizeof(err));
    if (rc != 0) {
        client_fail(&cl, "cannot connect: %s", err);
        goto out_free;
    }
    /* Warm-up: uploads the library (once per connection) and runs one job,
     * so the measured submissions are all alike. */
    burst_fn noop = {.kind = BURST_FN_SO, .path = cfg->lib, .symbol = "noop"};
    burst_opts opts = BURST_OPTS_INIT;
    uint64_t id;
    rc = burst_submit_map_lines(cl.c, &noop, "w\n", 2, &opts, &id);
    if (rc == 0)
        rc = burst_wait(cl.c, id, NULL);
    if (rc != 0) {
        client_fail(&cl, "warm-up job: %s: %s", burst_strerror(rc),
                    burst_last_error(cl.c));
        goto out_close;
    }
    if (write(ready_fd, "r", 1) != 1) {
        client_fail(&cl, "cannot tell the parent it is ready: %s", strerror(errno));
        goto out_close;
    }
    if (barrier(go_fd) != 0) {
        client_fail(&cl, "the crowd baseline's barrier broke");
        goto out_close;
    }
    if (client_crowd(&cl) != 0)
        goto out_close;
    if (write(ready_fd, "c", 1) != 1) {
        client_fail(&cl, "cannot tell the parent the crowd baseline is done: %s",
                    strerror(errno));
        goto out_close;
    }
    close(ready_fd);
    if (barrier(run_fd) != 0) {
        client_fail(&cl, "the start barrier broke");
        goto out_close;
    }
    burst_fn echo = {.kind = BURST_FN_SO, .path = cfg->lib, .symbol = "echo"};
    if (client_run(&cl, &echo) != 0 || client_check(&cl) != 0)
        goto out_close;
    cl.out->ok = 1;
    status = 0;
out_close:
    burst_close(cl.c);
out_free:
    free(cl.slots);
    free(cl.blob);
    return status;
}

/* ---- the parent ----------------------------------------------------------- */

/* The baseline: BASE_COUNT bare request round trips on an idle daemon.
 * Writes p50 and p99 in ms and the quota; returns 0 or -1 (said why). */
static int
baseline(const struct cfg *cfg, double *p50, double *p99, int *quota)
{
    char err[256];
    burst_client *c;
    int rc = burst_connect_ex(cfg->socket, &c, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "bench-fairness: cannot connect: %s\n", err);
        return -1;
    }
    double *v = calloc(BASE_COUNT, sizeof(*v));
    if (v == NULL) {
        fprintf(stderr, "bench-fairness: out of memory\n");
        burst_close(c);
        return -1;
    }
    for (uint32_t i = 0; i < BASE_COUNT; i++) {
        double t0 = bench_mono_ms();
        rc = burst_quota(c, -1, NULL);
        v[i] = bench_mono_ms() - t0;
        if (rc < 0) {
            fprintf(stderr, "bench-fairness: quota: %s: %s\n", burst_strerror(rc),
                    burst_last_error(c));
            free(v);
            burst_close(c);
            return -1;
        }
        *quota = rc;
    }
    bench_sort(v, BASE_COUNT);
    *p50 = bench_pct(v, BASE_COUNT, 0.5);
    *p99 = bench_pct(v, BASE_COUNT, 0.99);
    free(v);
    burst_close(c);
    return 0;
}

/* Forks the clients; each reports on ready[1] when warm, waits on go[0],
 * makes the crowd baseline's round trips, reports again, and waits on
 * run[0].  pids receives their ids; returns how many were started. */
static uint32_t
start_clients(const struct cfg *cfg, struct shared *sh, pid_t *pids, int ready[2],
              int go[2], int run[2])
{
    fflush(NULL);
    for (uint32_t i = 0; i < cfg->clients; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "bench-fairness: fork of client %" PRIu32 ": %s\n", i,
                    strerror(errno));
            return i;
        }
        if (pid == 0) {
            close(ready[0]);
            close(go[1]);
            close(run[1]);
            int st = client_main(cfg, sh, i, ready[1], go[0], run[0]);
            fflush(stderr);
            _exit(st);
        }
        pids[i] = pid;
    }
    return cfg->clients;
}

/* Reads one byte from each of n clients on fd; returns 0, or -1 on an early
 * EOF: some client gave up (it says why when reaped). */
static int
await_clients(int fd, uint32_t n)
{
    uint32_t got_all = 0;
    while (got_all < n) {
        char b[64];
        ssize_t got = read(fd, b, n - got_all < sizeof(b) ? n - got_all : sizeof(b));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        got_all += (uint32_t)got;
    }
    return 0;
}

/* Reaps every client; returns how many failed (said why on stderr). */
static uint32_t
reap_clients(const struct shared *sh, const pid_t *pids, uint32_t n)
{
    uint32_t failed = 0;
    for (uint32_t i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        const struct client_out *o = &sh->out[i];
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && o->ok)
            continue;
        if (failed++ < 10) {
            if (WIFSIGNALED(st))
                fprintf(stderr,
                        "bench-fairness: client %" PRIu32 " killed by signal %d\n", i,
                        WTERMSIG(st));
            else
                fprintf(stderr, "bench-fairness: client %" PRIu32 ": %s\n", i,
                        o->why[0] != '\0' ? o->why : "failed");
        }
    }
    return failed;
}

/* Sorts v[0..n) and prints its p50/p99/max on stderr under name. */
static void
report_lat(const char *name, double *v, size_t n)
{
    bench_sort(v, n);
    fprintf(stderr, "  %-28s n=%-7zu p50 %8.3f  p99 %8.3f  max %8.3f ms\n", name, n,
            bench_pct(v, n, 0.5), bench_pct(v, n, 0.99), n > 0 ? v[n - 1] : NAN);
}

struct fairness {
    double ws, we;  /* the window, unix ms */
    double worst;   /* max |share / fair - 1| */
    double p5, p95; /* of share / fair */
    double job_pct; /* one job's tasks in percent of the fair share */
};

/* Each client's share of the tasks that ended in (ws, we], against the fair
 * share (half open, so that quarters do not count a task twice).  ratio
 * gets [clients] scratch room.  Returns -1 when no task ended in the
 * window. */
static int
share_in(const struct cfg *cfg, const struct shared *sh, double ws, double we,
         double *ratio, struct fairness *f)
{
    size_t per = (size_t)cfg->jobs * cfg->tasks;
    double total = 0;
    for (uint32_t c = 0; c < cfg->clients; c++) {
        const double *te = sh->task_end + (size_t)c * per;
        double k = 0;
        for (size_t i = 0; i < per; i++)
            if (te[i] > ws && te[i] <= we)
                k++;
        ratio[c] = k;
        total += k;
    }
    if (total == 0)
        return -1;
    double fair = total / cfg->clients;
    f->job_pct = 100.0 * cfg->tasks / fair;
    f->worst = 0;
    for (uint32_t c = 0; c < cfg->clients; c++) {
        ratio[c] /= fair;
        if (fabs(ratio[c] - 1) > f->worst)
            f->worst = fabs(ratio[c] - 1);
    }
    bench_sort(ratio, cfg->clients);
    f->p5 = bench_pct(ratio, cfg->clients, 0.05);
    f->p95 = bench_pct(ratio, cfg->clients, 0.95);
    f->ws = ws;
    f->we = we;
    return 0;
}

/* Everything the clients recorded, turned into the figures. */
static int
analyse(const struct cfg *cfg, struct shared *sh, double release, double base50,
        double base99, int quota)
{
    size_t cj = (size_t)cfg->clients * cfg->jobs;
    size_t per = (size_t)cfg->jobs * cfg->tasks;
    double ws = 0, we = INFINITY, last_end = 0, last_ack = 0;
    double first_done_min = INFINITY, first_done_max = 0;
    uint32_t retried = 0, lost_lat = 0, unheard = 0;
    for (uint32_t c = 0; c < cfg->clients; c++) {
        const struct client_out *o = &sh->out[c];
        if (o->first_ack > ws)
            ws = o->first_ack;
        retried += o->retried;
        lost_lat += o->lost_lat;
        unheard += o->unheard;
        double mine_last = 0, mine_first = INFINITY;
        for (size_t i = 0; i < per; i++) {
            double t = sh->task_end[(size_t)c * per + i];
            mine_last = t > mine_last ? t : mine_last;
            mine_first = t < mine_first ? t : mine_first;
        }
        we = mine_last < we ? mine_last : we;
        last_end = mine_last > last_end ? mine_last : last_end;
        first_done_min = mine_first < first_done_min ? mine_first : first_done_min;
        first_done_max = mine_first > first_done_max ? mine_first : first_done_max;
        for (uint32_t j = 0; j < cfg->jobs; j++) {
            double a = sh->ack[(size_t)c * cfg->jobs + j];
            last_ack = a > last_ack ? a : last_ack;
        }
    }

    double *ratio = calloc(cfg->clients, sizeof(*ratio));
    size_t room = lat_room(cfg);
    double *all = calloc(REQ_NKINDS * (size_t)cfg->clients * room, sizeof(*all));
    if (ratio == NULL || all == NULL) {
        fprintf(stderr, "bench-fairness: out of memory\n");
        free(ratio);
        free(all);
        return -1;
    }
    struct fairness f = {.worst = NAN, .p5 = NAN, .p95 = NAN, .job_pct = NAN};
    if (we <= ws || share_in(cfg, sh, ws, we, ratio, &f) != 0) {
        fprintf(stderr,
                "bench-fairness: no window where every client had work: the first "
                "client finished %.0f ms before the last one's first ack\n",
                ws - we);
        f.ws = ws;
        f.we = ws;
    }

    fprintf(stderr,
            "B6 details: %" PRIu32 " clients x %" PRIu32 " jobs x %" PRIu32
            " tasks (chunksize %" PRIu32 ", window %s, subscribed %s), quota %d\n",
            cfg->clients, cfg->jobs, cfg->tasks, cfg->tasks,
            cfg->window ? "bounded" : "all at once",
            cfg->separate ? "by a request of its own" : "by the submission", quota);
    if (cfg->window)
        fprintf(stderr, "  window: at most %" PRIu32 " unfinished jobs per client\n",
                cfg->window);
    fprintf(stderr,
            "  run: %.2f s from the start to the last task end, %.0f tasks/s; "
            "submissions took %.2f s\n",
            (last_end - release) / 1e3,
            (double)cj * cfg->tasks / ((last_end - release) / 1e3),
            (last_ack - release) / 1e3);
    fprintf(stderr, "  fairness window: %.2f s .. %.2f s after the start (%.2f s)\n",
            (f.ws - release) / 1e3, (f.we - release) / 1e3, (f.we - f.ws) / 1e3);
    fprintf(stderr,
            "  share of fair in the window: worst %.1f%%, p5 %.3f, p95 %.3f (one job is "
            "%.1f%% of a fair share)\n",
            f.worst * 100, f.p5, f.p95, f.job_pct);
    /* The same over each quarter of the window: "over time" in slices.  A
     * job's tasks end together, so one job more or less moves a client's
     * share by TASKS / fair: that is the resolution of each figure. */
    double qworst = NAN;
    if (f.we > f.ws) {
        double q = (f.we - f.ws) / QUARTERS;
        for (int i = 0; i < QUARTERS; i++) {
            struct fairness g;
            if (share_in(cfg, sh, f.ws + q * i, f.ws + q * (i + 1), ratio, &g) != 0) {
                fprintf(stderr, "    quarter %d: no task ended\n", i + 1);
                continue;
            }
            fprintf(stderr,
                    "    quarter %d: worst %.1f%%, p5 %.3f, p95 %.3f (one job is %.1f%% "
                    "of a fair share)\n",
                    i + 1, g.worst * 100, g.p5, g.p95, g.job_pct);
            if (isnan(qworst) || g.worst > qworst)
                qworst = g.worst;
        }
    }
    fprintf(stderr, "  first completion per client: %.2f s .. %.2f s after the start\n",
            (first_done_min - release) / 1e3, (first_done_max - release) / 1e3);
    fprintf(stderr,
            "  tasks retried: %" PRIu32 "; jobs whose end no event told of: %" PRIu32
            "\n",
            retried, unheard);

    /* Requests: the p99 figure takes every single round trip of the run,
     * not the crowd baseline's. */
    size_t nall = 0;
    double crowd50 = NAN, crowd99 = NAN;
    for (int k = 0; k < REQ_NKINDS; k++) {
        size_t n = 0;
        double *v = all + nall;
        for (uint32_t c = 0; c < cfg->clients; c++) {
            const double *src = sh->lat + ((size_t)k * cfg->clients + c) * room;
            memcpy(v + n, src, sh->out[c].nlat[k] * sizeof(double));
            n += sh->out[c].nlat[k];
        }
        char name[64];
        snprintf(name, sizeof(name), "%s%s", req_name[k],
                 k == REQ_RESULTS ? " (1 page)" : "");
        report_lat(name, v, n);
        if (k == REQ_BARE) {
            crowd50 = bench_pct(v, n, 0.5);
            crowd99 = bench_pct(v, n, 0.99);
        }
        if (k != REQ_RESULTS && k != REQ_BARE)
            nall += n;
    }
    if (lost_lat > 0)
        fprintf(stderr, "  (%" PRIu32 " samples not kept: no room)\n", lost_lat);
    report_lat("all single round trips", all, nall);
    double r50 = bench_pct(all, nall, 0.5), r99 = bench_pct(all, nall, 0.99);

    /* How late a client heard of a job's end, after the daemon recorded it
     * (ms resolution on the daemon's side). */
    size_t nl = 0;
    for (size_t i = 0; i < cj; i++)
        all[nl++] = sh->seen[i] - sh->job_end[i];
    report_lat("event lag (end -> client)", all, nl);
    fprintf(stderr, "  baseline: bare request round trip, idle: p50 %.3f p99 %.3f ms\n",
            base50, base99);
    fprintf(stderr,
            "  crowd baseline: bare round trips, all clients at once: p50 %.3f p99 %.3f "
            "ms; the run's p99 is %.2fx its p99\n",
            crowd50, crowd99, r99 / crowd99);

    printf("%.1f %.3f %.3f %.1f %.3f %.3f %.3f %.3f %.2f %.2f %.3f %.3f\n", f.worst * 100,
           f.p5, f.p95, qworst * 100, r50, r99, base50, base99, (f.we - f.ws) / 1e3,
           (last_end - release) / 1e3, crowd50, crowd99);
    free(ratio);
    free(all);
    return 0;
}

int
main(int argc, char **argv)
{
    struct cfg cfg = {0};
    if (argc == 8 && strcmp(argv[7], "separate") == 0)
        cfg.separate = true;
    else if (argc == 8 && strcmp(argv[7], "submit") != 0)
        argc = 0; /* usage */
    if (argc < 6 || argc > 8 || parse_u32(argv[3], 1, MAX_CLIENTS, &cfg.clients) != 0 ||
        parse_u32(argv[4], 1, MAX_JOBS, &cfg.jobs) != 0 ||
        parse_u32(argv[5], 1, MAX_TASKS, &cfg.tasks) != 0 ||
        (argc >= 7 && parse_u32(argv[6], 0, MAX_WINDOW, &cfg.window) != 0)) {
        fprintf(stderr,
                "usage: bench-fairness SOCKET LIB.so CLIENTS JOBS TASKS [WINDOW "
                "[SUBSCRIBE]]\n"
                "  CLIENTS 1..%u, JOBS 1..%u, TASKS 1..%u; WINDOW 0 (all jobs at once, "
                "the default) or 1..%u unfinished jobs per client; SUBSCRIBE submit (the "
                "submission follows its job, the default) or separate (a subscribe "
                "request after it)\n",
                MAX_CLIENTS, MAX_JOBS, MAX_TASKS, MAX_WINDOW);
        return 2;
    }
    cfg.socket = argv[1];
    cfg.lib = argv[2];
    if (cfg.window == 0 && cfg.jobs > MAX_WINDOW) {
        fprintf(stderr,
                "bench-fairness: %" PRIu32 " jobs at once would need more "
                "subscriptions than a connection may hold; give a WINDOW of at "
                "most %u\n",
                cfg.jobs, MAX_WINDOW);
        return 2;
    }

    struct shared sh;
    if (shared_map(&cfg, &sh) != 0) {
        fprintf(stderr, "bench-fairness: cannot map the shared results: %s\n",
                strerror(errno));
        return 1;
    }
    pid_t *pids = calloc(cfg.clients, sizeof(*pids));
    int ready[2], go[2], run[2];
    if (pids == NULL) {
        fprintf(stderr, "bench-fairness: out of memory\n");
        goto fail_map;
    }
    if (pipe(ready) != 0 || pipe(go) != 0 || pipe(run) != 0) {
        fprintf(stderr, "bench-fairness: pipe: %s\n", strerror(errno));
        goto fail_map;
    }
    uint32_t started = start_clients(&cfg, &sh, pids, ready, go, run);
    close(ready[1]);
    close(go[0]);
    close(run[0]);
    double base50 = 0, base99 = 0;
    int quota = 0;
    bool go_on = started == cfg.clients && await_clients(ready[0], cfg.clients) == 0 &&
                 baseline(&cfg, &base50, &base99, &quota) == 0;
    close(go[1]); /* the crowd baseline */
    go_on = go_on && await_clients(ready[0], cfg.clients) == 0;
    close(ready[0]);
    if (!go_on) {
        /* Stop the clients we started: they are ours, named by pid. */
        for (uint32_t i = 0; i < started; i++)
            kill(pids[i], SIGTERM);
    }
    double release = bench_unix_ms();
    close(run[1]); /* the start */
    uint32_t failed = reap_clients(&sh, pids, started);
    if (!go_on || failed > 0) {
        if (failed > 0)
            fprintf(stderr, "bench-fairness: %" PRIu32 " of %" PRIu32 " clients failed\n",
                    failed, cfg.clients);
        goto fail_map;
    }
    int rc = analyse(&cfg, &sh, release, base50, base99, quota);
    free(pids);
    munmap(sh.base, sh.size);
    return rc == 0 ? 0 : 1;
fail_map:
    free(pids);
    munmap(sh.base, sh.size);
    return 1;
}
