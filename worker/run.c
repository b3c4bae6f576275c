/*
 * worker/run.c - see run.h: the plumbing both runners share.
 *
 * Signals: the worker keeps SIGTERM, SIGINT and SIGCHLD blocked and opens
 * them only inside ppoll.  A child's exit or a stop request therefore always
 * wakes the one place that waits, and there is no window where a signal
 * arrives between checking a flag and going to sleep.
 */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t run_stop;
/* The mask ppoll waits with: the start-up mask minus our three signals. */
static sigset_t run_wait_mask;

static void
on_stop(int sig)
{
    (void)sig;
    run_stop = 1;
}

static void
on_child(int sig)
{
    /* Nothing to do: interrupting ppoll is the point. */
    (void)sig;
}

int
run_signals_init(void)
{
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &block, &old) != 0)
        return -errno;
    run_wait_mask = old;
    sigdelset(&run_wait_mask, SIGTERM);
    sigdelset(&run_wait_mask, SIGINT);
    sigdelset(&run_wait_mask, SIGCHLD);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -errno;
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) != 0)
        return -errno;
    /* A command that stops reading its stdin must give us EPIPE, not kill us. */
    sa.sa_handler = SIG_IGN;
    sa.sa_flags = 0;
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return -errno;
    return 0;
}

bool
run_stop_requested(void)
{
    return run_stop != 0;
}

void
run_child_setup(pid_t parent, bool crash_defaults)
{
    static const int reset[] = {SIGTERM, SIGINT, SIGCHLD, SIGPIPE};
    static const int crash[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
        sigaction(reset[i], &sa, NULL);
    if (crash_defaults) {
        for (size_t i = 0; i < sizeof(crash) / sizeof(crash[0]); i++)
            sigaction(crash[i], &sa, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* If the worker is killed outright, take its child with it.  The
     * getppid check closes the race with a worker that died before prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
}

int64_t
run_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
run_deadline(uint64_t ms)
{
    /* Beyond a century is "never": it also keeps the sum from overflowing. */
    if (ms == 0 || ms > 100ull * 365 * 24 * 3600 * 1000)
        return -1;
    return run_now_ms() + (int64_t)ms;
}

int
run_poll(struct pollfd *fds, nfds_t nfds, int64_t deadline_ms)
{
    struct timespec ts, *tsp = NULL;
    for (nfds_t i = 0; i < nfds; i++)
        fds[i].revents = 0;
    if (deadline_ms >= 0) {
        int64_t left = deadline_ms - run_now_ms();
        if (left < 0)
            left = 0;
        ts.tv_sec = (time_t)(left / 1000);
        ts.tv_nsec = (long)(left % 1000) * 1000000;
        tsp = &ts;
    }
    int n = ppoll(fds, nfds, tsp, &run_wait_mask);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    return n;
}

int
run_reap(pid_t pid, bool block, int *wstatus, struct rusage *ru)
{
    siginfo_t info;
    for (;;) {
        memset(&info, 0, sizeof(info));
        int flags = WEXITED | WNOWAIT | (block ? 0 : WNOHANG);
        if (waitid(P_PID, (id_t)pid, &info, flags) == 0)
            break;
        if (errno != EINTR)
            return -errno;
    }
    if (info.si_pid == 0)
        return 0; /* still running */
    /* The zombie keeps its pid, and so its group id, from being reused
     * until we reap it: only now is killing the group safe. */
    kill(-pid, SIGKILL);
    struct rusage usage;
    while (wait4(pid, wstatus, 0, ru != NULL ? ru : &usage) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 1;
}

void
run_describe_wait(int wstatus, struct invoc_result *r, char *reason, size_t size)
{
    reason[0] = '\0';
    r->reason = reason;
    if (WIFEXITED(wstatus)) {
        r->exit_status = WEXITSTATUS(wstatus);
        r->signal = 0;
        r->status = r->exit_status == 0 ? INVOC_OK : INVOC_FAILED;
        if (r->exit_status != 0)
            snprintf(reason, size, "exit status %d", r->exit_status);
    } else if (WIFSIGNALED(wstatus)) {
        int sig = WTERMSIG(wstatus);
        r->exit_status = -1;
        r->signal = sig;
        r->status = INVOC_SIGNAL;
        snprintf(reason, size, "killed by signal %d (%s)", sig, strsignal(sig));
    } else {
        r->exit_status = -1;
        r->signal = 0;
        r->status = INVOC_ERROR;
        snprintf(reason, size, "ended with wait status %#x", (unsigned)wstatus);
    }
}

void
run_reason_ensure(struct invoc_result *r)
{
    if (r->status == INVOC_OK || (r->reason != NULL && r->reason[0] != '\0'))
        return;
    switch (r->status) {
    case INVOC_FAILED:
        r->reason = "failed";
        break;
    case INVOC_SIGNAL:
        r->reason = "killed by a signal";
        break;
    case INVOC_TIMEOUT:
        r->reason = "timed out";
        break;
    case INVOC_OOM:
        r->reason = "out of memory";
        break;
    default:
        r->reason = "could not be run";
        break;
    }
}

int
run_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int
run_write2(int fd, const void *a, size_t alen, const void *b, size_t blen)
{
    struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
    ssize_t w;
    do
        w = writev(fd, iov, blen > 0 ? 2 : 1);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -errno;
    size_t done = (size_t)w;
    if (done < alen)
        return run_write2(fd, (const char *)a + done, alen - done, b, blen);
    done -= alen;
    if (done == blen)
        return 0;
    return run_write_all(fd, (const char *)b + done, blen - done);
}

int
run_read_all(int fd, void *data, size_t len)
{
    char *p = data;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r == 0 ? -EPIPE : -errno;
        p += r;
        len -= (size_t)r;
    }
    return 0;
}

int
run_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}
