/*
 * tests/activate.c - a stand-in for systemd in tests/test-systemd.sh: socket
 * activation and the readiness protocol without a service manager.
 *
 *   activate [--listen PATH [--mode OCTAL] [--no-listen] [--wrong-pid]]
 *            [--notify PATH|@NAME] [--log FILE] [--pidfile FILE] -- PROG ARG...
 *
 * --listen binds (and, unless --no-listen, listens on) a Unix stream socket
 * at PATH with the given mode, puts it at fd 3 of the child and sets
 * LISTEN_FDS=1 and LISTEN_PID to the child's pid (after the fork, before the
 * exec, as systemd does); --wrong-pid sets LISTEN_PID to another pid.
 * --notify binds a datagram socket with SO_PASSCRED and sets NOTIFY_SOCKET.
 * The log gets "listen socket:[INODE]" first, then one "PID LINE" per line of
 * every notification received (PID is the sender's, from SCM_CREDENTIALS),
 * and "exit N" or "signal N" when the child ends.  The launcher keeps the
 * listening socket open, as systemd does, forwards SIGTERM and SIGINT to the
 * child, and exits with the child's status (128 + N after signal N).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t forward_sig;

static void
on_signal(int sig)
{
    forward_sig = sig;
}

static void
usage(void)
{
    fprintf(stderr, "usage: activate [--listen PATH [--mode OCTAL] [--no-listen] "
                    "[--wrong-pid]] [--notify PATH|@NAME] [--log FILE] "
                    "[--pidfile FILE] -- PROG ARG...\n");
    exit(2);
}

/* Fills sa/len from a path or an '@' abstract name. */
static int
unix_addr(const char *name, struct sockaddr_un *sa, socklen_t *len)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof(sa->sun_path))
        return -1;
    memcpy(sa->sun_path, name, n);
    if (name[0] == '@') {
        sa->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* Reads every queued notification into log; returns when none is left. */
static void
drain(int nfd, FILE *log)
{
    for (;;) {
        char buf[4097];
        union {
            struct cmsghdr h;
            char space[CMSG_SPACE(sizeof(struct ucred))];
        } ctl;
        struct iovec iov = {buf, sizeof(buf) - 1};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = &ctl,
                            .msg_controllen = sizeof(ctl)};
        ssize_t n = recvmsg(nfd, &mh, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return;
        buf[n] = '\0';
        long pid = -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred cred;
                memcpy(&cred, CMSG_DATA(c), sizeof(cred));
                pid = (long)cred.pid;
            }
        }
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line != NULL;
             line = strtok_r(NULL, "\n", &save))
            fprintf(log, "%ld %s\n", pid, line);
        fflush(log);
    }
}

int
main(int argc, char **argv)
{
    const char *listen_path = NULL, *notify = NULL, *log_path = NULL, *pidfile = NULL;
    mode_t mode = 0600;
    int do_listen = 1, wrong_pid = 0;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "--no-listen") == 0) {
            do_listen = 0;
        } else if (strcmp(a, "--wrong-pid") == 0) {
            wrong_pid = 1;
        } else if (i + 1 < argc && strcmp(a, "--listen") == 0) {
            listen_path = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--mode") == 0) {
            mode = (mode_t)strtoul(argv[++i], NULL, 8);
        } else if (i + 1 < argc && strcmp(a, "--notify") == 0) {
            notify = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--log") == 0) {
            log_path = argv[++i];
        } else if (i + 1 < argc && strcmp(a, "--pidfile") == 0) {
            pidfile = argv[++i];
        } else {
            usage();
        }
    }
    if (i >= argc)
        usage();

    FILE *log = log_path != NULL ? fopen(log_path, "we") : stdout;
    if (log == NULL) {
        perror(log_path);
        return 2;
    }
    struct sockaddr_un sa;
    socklen_t salen;
    int lfd = -1, nfd = -1;
    if (listen_path != NULL) {
        if (unix_addr(listen_path, &sa, &salen) != 0 || listen_path[0] == '@') {
            fprintf(stderr, "activate: bad --listen path\n");
            return 2;
        }
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        unlink(listen_path);
        if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, salen) != 0 ||
            chmod(listen_path, mode) != 0 || (do_listen && listen(lfd, 16) != 0)) {
            perror("activate: listen socket");
            return 2;
        }
        struct stat st;
        if (fstat(lfd, &st) != 0) {
            perror("activate: fstat");
            return 2;
        }
        fprintf(log, "listen socket:[%lu]\n", (unsigned long)st.st_ino);
        fflush(log);
    }
    if (notify != NULL) {
        int one = 1;
        nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (notify[0] != '@')
            unlink(notify);
        if (nfd < 0 || unix_addr(notify, &sa, &salen) != 0 ||
            bind(nfd, (struct sockaddr *)&sa, salen) != 0 ||
            setsockopt(nfd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) != 0) {
            perror("activate: notify socket");
            return 2;
        }
        setenv("NOTIFY_SOCKET", notify, 1);
    }

    struct sigaction act = {.sa_handler = on_signal};
    sigemptyset(&act.sa_mask);
    sigaction(SIGTERM, &act, NULL);
    sigaction(SIGINT, &act, NULL);

    pid_t child = fork();
    if (child < 0) {
        perror("activate: fork");
        return 2;
    }
    if (child == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        if (lfd >= 0) {
            /* dup2 clears close-on-exec on the new fd; when lfd already is
             * 3, clear it by hand. */
            if (lfd == 3) {
                fcntl(3, F_SETFD, 0);
            } else if (dup2(lfd, 3) != 3) {
                _exit(127);
            }
            char pid[32];
            snprintf(pid, sizeof(pid), "%ld", (long)getpid() + (wrong_pid ? 1 : 0));
            setenv("LISTEN_PID", pid, 1);
            setenv("LISTEN_FDS", "1", 1);
            setenv("LISTEN_FDNAMES", "burstd.socket", 1);
        }
        execvp(argv[i], argv + i);
        perror("activate: exec");
        _exit(127);
    }
    if (pidfile != NULL) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", pidfile);
        FILE *f = fopen(tmp, "we");
        if (f == NULL || fprintf(f, "%ld\n", (long)child) < 0 || fclose(f) != 0 ||
            rename(tmp, pidfile) != 0) {
            perror("activate: pidfile");
            kill(child, SIGKILL);
            return 2;
        }
    }

    int status = 0;
    for (;;) {
        if (forward_sig != 0) {
            kill(child, forward_sig);
            forward_sig = 0;
        }
        pid_t w = waitpid(child, &status, WNOHANG);
        if (w == child)
            break;
        if (w < 0 && errno != EINTR) {
            perror("activate: waitpid");
            return 2;
        }
        struct pollfd p = {.fd = nfd, .events = POLLIN};
        /* With no notify socket, poll just sleeps (a negative fd is
         * ignored); the timeout is only how often we look at the child. */
        if (poll(&p, 1, 50) > 0)
            drain(nfd, log);
    }
    if (nfd >= 0)
        drain(nfd, log);
    int rc;
    if (WIFEXITED(status)) {
        fprintf(log, "exit %d\n", WEXITSTATUS(status));
        rc = WEXITSTATUS(status);
    } else {
        fprintf(log, "signal %d\n", WTERMSIG(status));
        rc = 128 + WTERMSIG(status);
    }
    fflush(log);
    return rc;
}
