/*
 * tests/testd.c - see testd.h.  Every wait is a poll with a generous safety
 * limit: tests check behaviour, never speed.
 */
#include "testd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define TESTD_SAFETY_MS 60000
#define TESTD_POLL_MS 20

void
testd_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int64_t
testd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
testd_init(struct testd *d, const char *name, const char *config)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "/tmp/burst-test-%s.XXXXXX", name);
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->sock, sizeof(d->sock), "%s/burst.sock", d->dir);
    snprintf(d->state, sizeof(d->state), "%s/state", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/burstd.log", d->dir);
    snprintf(d->cfg, sizeof(d->cfg), "%s/burstd.conf", d->dir);
    FILE *f = fopen(d->cfg, "w");
    assert_non_null(f);
    fputs(config ? config : "", f);
    fclose(f);
}

/* True when something accepts on the socket (a killed daemon's socket file
 * stays behind, so only an answer tells that the new one is up). */
static bool
answers(const char *path, pid_t pid)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    /* The listener must be the daemon just started: a child the killed
     * one forked and that has not exec'ed yet still holds the old
     * listening socket for a moment (seen under load), and a connect to it
     * succeeds although nobody will ever answer. */
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (ok)
        ok = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid == pid;
    close(fd);
    return ok;
}

void
testd_start(struct testd *d, const char *const *extra)
{
    const char *burstd = getenv("BURSTD");
    assert_non_null(burstd);
    assert_int_equal(d->pid, 0);
    const char *argv[32] = {"burstd", "--socket", d->sock, "--state-dir",
                            d->state, "--config", d->cfg};
    size_t argc = 7;
    for (size_t i = 0; extra != NULL && extra[i] != NULL && argc < 31; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t parent = getpid();
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        /* A test that dies must not leave a daemon (and its workers). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(126);
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        execv(burstd, (char *const *)argv);
        _exit(127);
    }
    for (int64_t t0 = testd_now_ms(); testd_now_ms() - t0 < TESTD_SAFETY_MS;
         testd_sleep_ms(TESTD_POLL_MS)) {
        if (answers(d->sock, d->pid))
            return;
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            fail_msg("burstd exited at start-up (status %#x); see %s", (unsigned)status,
                     d->log);
        }
    }
    fail_msg("burstd did not answer on %s", d->sock);
}

void
testd_kill9(struct testd *d)
{
    assert_true(d->pid > 0);
    assert_int_equal(kill(d->pid, SIGKILL), 0);
    int status;
    assert_int_equal(waitpid(d->pid, &status, 0), d->pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    d->pid = 0;
}

void
testd_stop(struct testd *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    int status = 0;
    pid_t r = 0;
    for (int64_t t0 = testd_now_ms(); r == 0 && testd_now_ms() - t0 < TESTD_SAFETY_MS;
         testd_sleep_ms(TESTD_POLL_MS))
        r = waitpid(d->pid, &status, WNOHANG);
    pid_t pid = d->pid;
    d->pid = 0;
    if (r != pid) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail_msg("burstd did not stop on SIGTERM");
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    struct stat st;
    assert_int_not_equal(stat(d->sock, &st), 0); /* it removed its socket */
}

void
testd_cleanup(struct testd *d, bool passed)
{
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
    if (d->dir[0] == '\0')
        return;
    if (!passed) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "tail -n 40 %s >&2", d->log);
        fprintf(stderr, "---- %s (last lines) ----\n", d->log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d->dir);
    d->dir[0] = '\0';
}

/* ---- raw protocol ---- */

int
testd_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void
testd_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/* Reads exactly len bytes, each within timeout_ms; false at EOF or timeout. */
static bool
read_full(int fd, char *buf, size_t len, int timeout_ms)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, timeout_ms) <= 0)
            return false;
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        got += (size_t)n;
    }
    return true;
}

ssize_t
testd_read_frame(int fd, int timeout_ms, char **payload)
{
    unsigned char hdr[4];
    if (!read_full(fd, (char *)hdr, sizeof(hdr), timeout_ms))
        return -1;
    uint32_t len = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) |
                   ((uint32_t)hdr[2] << 8) | hdr[3];
    char *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    if (!read_full(fd, buf, len, timeout_ms)) {
        free(buf);
        return -1;
    }
    *payload = buf;
    return (ssize_t)len;
}
