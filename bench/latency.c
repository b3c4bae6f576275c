/*
 * bench/latency.c - B4: the time from submitting a one-task job to its
 * completion event, for `count` jobs in a row, as a client sees it through
 * libburst: the submission subscribes (burst_opts.on_event) and the client
 * polls its connection until the job's final event.  The job must have
 * succeeded.  Prints p50 and p99 in milliseconds, and the same percentiles
 * of a bare request round trip (burst_quota) as the baseline measured in
 * the same run.
 *
 * usage: bench-latency SOCKET (exec CMD | so LIB SYMBOL) COUNT
 */
#include "stats.h"

#include <burst.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The final state of the job being waited for, -1 until it ends. */
static void
on_event(void *arg, const burst_event *ev)
{
    int *final = arg;
    if (ev->type == BURST_EV_JOB && burst_job_state_is_final(ev->job_state))
        *final = ev->job_state;
}

/* Waits for the final event; returns 0, or a code when the connection
 * dies (a poll error counts as one). */
static int
wait_final(burst_client *c, const int *final)
{
    while (*final < 0) {
        if (burst_pending(c) == 0) {
            struct pollfd p = {.fd = burst_fd(c), .events = POLLIN};
            if (poll(&p, 1, -1) < 0 && errno != EINTR)
                return -errno;
        }
        int n = burst_dispatch(c);
        if (n < 0)
            return n;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench-latency SOCKET (exec CMD | so LIB SYMBOL) COUNT\n");
        return 2;
    }
    burst_fn fn = {0};
    int argi = 2;
    if (strcmp(argv[argi], "exec") == 0 && argc == 5) {
        fn.kind = BURST_FN_EXEC;
        fn.cmd = argv[3];
        argi = 4;
    } else if (strcmp(argv[argi], "so") == 0 && argc == 6) {
        fn.kind = BURST_FN_SO;
        fn.path = argv[3];
        fn.symbol = argv[4];
        argi = 5;
    } else {
        fprintf(stderr, "usage: bench-latency SOCKET (exec CMD | so LIB SYMBOL) COUNT\n");
        return 2;
    }
    size_t count = strtoul(argv[argi], NULL, 10);
    if (count == 0)
        return 2;
    burst_client *c;
    int rc = burst_connect(argv[1], &c);
    if (rc != 0) {
        fprintf(stderr, "bench-latency: cannot connect: %s\n", burst_strerror(rc));
        return 1;
    }
    double *job = calloc(count, sizeof(double));
    double *rtt = calloc(count, sizeof(double));
    if (job == NULL || rtt == NULL)
        return 1;
    burst_opts opts = BURST_OPTS_INIT;
    int final;
    opts.on_event = on_event;
    opts.event_arg = &final;
    for (size_t i = 0; i < count; i++) {
        double t0 = bench_mono_ms();
        if (burst_quota(c, -1, NULL) < 0)
            return 1;
        rtt[i] = bench_mono_ms() - t0;
        uint64_t id;
        final = -1;
        t0 = bench_mono_ms();
        rc = burst_submit_map_lines(c, &fn, "x\n", 2, &opts, &id);
        if (rc == 0)
            rc = wait_final(c, &final);
        if (rc == 0 && final != BURST_JOB_SUCCEEDED)
            rc = BURST_EJOBFAILED;
        if (rc != 0) {
            fprintf(stderr, "bench-latency: job %zu: %s: %s\n", i, burst_strerror(rc),
                    burst_last_error(c));
            return 1;
        }
        job[i] = bench_mono_ms() - t0;
    }
    bench_sort(job, count);
    bench_sort(rtt, count);
    printf("%.3f %.3f %.3f %.3f\n", bench_pct(job, count, 0.5),
           bench_pct(job, count, 0.99), bench_pct(rtt, count, 0.5),
           bench_pct(rtt, count, 0.99));
    burst_close(c);
    free(job);
    free(rtt);
    return 0;
}
