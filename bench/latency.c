/*
 * bench/latency.c - B4: the time from submitting a one-task job to its
 * completion event, for `count` jobs in a row, as a client sees it through
 * libburst: the submission subscribes (burst_opts.on_event) and the client
 * polls its connection until the job's final event.  The job must have
 * succeeded.  Prints p50 and p99 in milliseconds, and the same percentiles
 * of a bare request round trip (burst_quota) as the baseline measured in
 * the same run.
 *
 * With FLOOR_DIR (a directory on the state directory's filesystem) it also
 * measures, before the jobs, the floor a job's latency stands on here:
 * - two commits made durable one after the other (a job's acceptance and
 *   its end: its client hears of its end only once both are on disk),
 *   each FLOOR_WRITE bytes, about what the ledger writes per commit, then
 *   fdatasync, into a file of blocks already allocated, as the ledger's
 *   write-ahead log mostly is;
 * - for exec, a spawn of `/bin/sh -c CMD` with pipes on its stdin and
 *   stdout, to its exit.
 * and prints their p50s after the four figures (nan when not measured).
 *
 * usage: bench-latency SOCKET (exec CMD | so LIB SYMBOL) COUNT [FLOOR_DIR]
 */
#include "stats.h"

#include <burst.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FLOOR_WRITE (40 * 1024)
#define FLOOR_FILE (1024 * 1024) /* written once, then overwritten in turn */
#define FLOOR_COUNT 500

extern char **environ;

/* Writes FLOOR_WRITE bytes at *off (wrapping in the file) and syncs them. */
static int
durable_write(int fd, const char *buf, off_t *off)
{
    if (*off + FLOOR_WRITE > FLOOR_FILE)
        *off = 0;
    if (pwrite(fd, buf, FLOOR_WRITE, *off) != FLOOR_WRITE || fdatasync(fd) != 0)
        return -1;
    *off += FLOOR_WRITE;
    return 0;
}

/* p50 of two durable writes in series, in a scratch file in dir; NAN and a
 * message when it cannot be measured. */
static double
floor_syncs(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/bench-floor.XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "bench-latency: no scratch file in %s: %s\n", dir, strerror(errno));
        return NAN;
    }
    unlink(path);
    char *buf = calloc(1, FLOOR_FILE);
    double *v = calloc(FLOOR_COUNT, sizeof(*v));
    double p50 = NAN;
    off_t off = 0;
    if (buf == NULL || v == NULL || pwrite(fd, buf, FLOOR_FILE, 0) != FLOOR_FILE ||
        fsync(fd) != 0)
        goto out;
    memset(buf, 'x', FLOOR_WRITE);
    for (size_t i = 0; i < FLOOR_COUNT; i++) {
        double t0 = bench_mono_ms();
        if (durable_write(fd, buf, &off) != 0 || durable_write(fd, buf, &off) != 0)
            goto out;
        v[i] = bench_mono_ms() - t0;
    }
    bench_sort(v, FLOOR_COUNT);
    p50 = bench_pct(v, FLOOR_COUNT, 0.5);
out:
    if (isnan(p50))
        fprintf(stderr, "bench-latency: floor: %s\n", strerror(errno));
    free(buf);
    free(v);
    close(fd);
    return p50;
}

/* p50 of spawning `/bin/sh -c cmd` with "x\n" on its stdin and its stdout
 * read to the end, to its exit; NAN when it cannot be measured. */
static double
floor_spawn(const char *cmd)
{
    double *v = calloc(FLOOR_COUNT, sizeof(*v));
    double p50 = NAN;
    if (v == NULL)
        return NAN;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < FLOOR_COUNT; i++) {
        int in[2], out[2];
        if (pipe2(in, O_CLOEXEC) != 0)
            goto out;
        if (pipe2(out, O_CLOEXEC) != 0) {
            close(in[0]);
            close(in[1]);
            goto out;
        }
        double t0 = bench_mono_ms();
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        char *argv[] = {"sh", "-c", (char *)cmd, NULL};
        pid_t pid;
        int rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(in[0]);
        close(out[1]);
        char b[256];
        ssize_t got = write(in[1], "x\n", 2); /* EPIPE when cmd exited first */
        close(in[1]);
        while (rc == 0 && (got = read(out[0], b, sizeof(b))) > 0)
            ;
        close(out[0]);
        int st;
        if (rc != 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
            goto out;
        v[i] = bench_mono_ms() - t0;
    }
    bench_sort(v, FLOOR_COUNT);
    p50 = bench_pct(v, FLOOR_COUNT, 0.5);
out:
    if (isnan(p50))
        fprintf(stderr, "bench-latency: cannot spawn /bin/sh -c %s\n", cmd);
    free(v);
    return p50;
}

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
    static const char usage[] =
        "usage: bench-latency SOCKET (exec CMD | so LIB SYMBOL) COUNT [FLOOR_DIR]\n";
    if (argc < 4) {
        fputs(usage, stderr);
        return 2;
    }
    burst_fn fn = {0};
    int argi = 2;
    if (strcmp(argv[argi], "exec") == 0 && (argc == 5 || argc == 6)) {
        fn.kind = BURST_FN_EXEC;
        fn.cmd = argv[3];
        argi = 4;
    } else if (strcmp(argv[argi], "so") == 0 && (argc == 6 || argc == 7)) {
        fn.kind = BURST_FN_SO;
        fn.path = argv[3];
        fn.symbol = argv[4];
        argi = 5;
    } else {
        fputs(usage, stderr);
        return 2;
    }
    size_t count = strtoul(argv[argi], NULL, 10);
    if (count == 0)
        return 2;
    const char *floor_dir = argi + 1 < argc ? argv[argi + 1] : NULL;
    double syncs50 = NAN, spawn50 = NAN;
    if (floor_dir != NULL) {
        syncs50 = floor_syncs(floor_dir);
        if (fn.kind == BURST_FN_EXEC)
            spawn50 = floor_spawn(fn.cmd);
    }
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
    printf("%.3f %.3f %.3f %.3f %.3f %.3f\n", bench_pct(job, count, 0.5),
           bench_pct(job, count, 0.99), bench_pct(rtt, count, 0.5),
           bench_pct(rtt, count, 0.99), syncs50, spawn50);
    burst_close(c);
    free(job);
    free(rtt);
    return 0;
}
