/*
 * worker/run_exec.c - the exec runner: each task is `/bin/sh -c CMD` in its
 * own process group, with the task input on stdin, stdout as the result and
 * stderr (its tail, INVOC_LOG_CAP bytes) as the log.
 *
 * One loop per task feeds stdin and drains stdout and stderr together under
 * ppoll, so neither a large input nor a large output can deadlock against
 * the command.  The loop also enforces the task's timeout, and when the
 * shell ends, kills whatever it left running in its process group.  The
 * task's memory limit (run_mem.c) covers the shell and everything it starts.
 */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define EXEC_IO_CHUNK (64u * 1024u)

/* The state of one running task. */
struct exec_task {
    pid_t pid;
    int in_fd;  /* owned: write end of the command's stdin, -1 once closed */
    int out_fd; /* owned: read end of its stdout, -1 at EOF */
    int err_fd; /* owned: read end of its stderr, -1 at EOF */
    const struct run_input *input; /* borrowed: what goes to stdin */
    size_t part;                   /* stdin progress: current part ... */
    size_t part_off;               /* ... and offset within it */
    char *out;                     /* owned: the result so far */
    size_t out_len;
    size_t out_cap;
    char *log; /* owned: the last INVOC_LOG_CAP bytes of stderr */
    size_t log_len;
    bool exited;
    int wstatus;
    struct rusage ru;   /* of the shell and what it waited for, once exited */
    struct run_mem mem; /* owned: the task's memory limit */
    bool killed;        /* we sent SIGKILL to the group */
    bool timed_out;     /* ... because of the timeout */
    bool stopped;       /* ... because the worker was told to stop */
    bool too_large;     /* ... because the result passed RUN_RESULT_MAX */
    bool nomem;         /* ... because the result could not be stored */
};

/* The environment of a task: ours, with the three BURST_* task variables
 * replaced. */
struct exec_env {
    char **envp; /* owned array; the strings are environ's or vars' */
    char vars[3][64];
};

static bool
env_is_task_var(const char *e)
{
    return strncmp(e, "BURST_JOB_ID=", 13) == 0 ||
           strncmp(e, "BURST_TASK_INDEX=", 17) == 0 ||
           strncmp(e, "BURST_ATTEMPT=", 14) == 0;
}

static int
exec_env_build(struct exec_env *env, uint64_t job, const struct invoc_task *t)
{
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    env->envp = calloc(n + 4, sizeof(char *));
    if (env->envp == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!env_is_task_var(environ[i]))
            env->envp[k++] = environ[i];
    }
    snprintf(env->vars[0], sizeof(env->vars[0]), "BURST_JOB_ID=%" PRIu64, job);
    snprintf(env->vars[1], sizeof(env->vars[1]), "BURST_TASK_INDEX=%" PRIu32, t->index);
    snprintf(env->vars[2], sizeof(env->vars[2]), "BURST_ATTEMPT=%" PRIu32, t->attempt);
    for (int i = 0; i < 3; i++)
        env->envp[k++] = env->vars[i];
    env->envp[k] = NULL;
    return 0;
}

static void
close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void
kill_group(struct exec_task *et)
{
    if (!et->killed && !et->exited)
        kill(-et->pid, SIGKILL);
    et->killed = true;
}

/*
 * Forks the shell for one task with pipes on its stdin, stdout and stderr.
 * Returns 0 with et->pid and the parent's pipe ends set, or -errno (nothing
 * left open).
 */
static int
exec_spawn(const struct run_ctx *ctx, const struct invoc_task *t, struct exec_task *et)
{
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
    struct exec_env env = {.envp = NULL};
    int rc = exec_env_build(&env, ctx->spec->job, t);
    if (rc != 0)
        return rc;
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 ||
        pipe2(err, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out_close;
    }
    run_mem_prepare(&et->mem, ctx->spec->memory_mb, false);
    pid_t parent = getpid();
    /* vfork: the child borrows our memory until its execve, instead of a
     * copy of our page tables that the execve throws away at once; on a VM
     * that is most of a task's start-up (bench B2, B4).  The child below
     * only makes system calls, which a vfork child may.  Not when the child
     * must wait for our word on the cgroup (run_mem_child): we are
     * suspended until it execs. */
    /* Until the child has put its signal handlers back to the defaults
     * (run_child_setup), one of ours must not run in it: in a vfork child
     * it would write our memory. */
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid_t pid = et->mem.sync_rd < 0 ? vfork() : fork();
    int fork_errno = errno;
    if (pid != 0)
        sigprocmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        rc = -fork_errno;
        run_mem_release(&et->mem);
        goto out_close;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls from here to execve. */
        setpgid(0, 0);
        run_child_setup(parent, false);
        /* In its cgroup (or under its rlimit) before the task allocates. */
        run_mem_child(&et->mem);
        if (dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0 ||
            dup2(err[1], STDERR_FILENO) < 0)
            _exit(126);
        char *argv[] = {"sh", "-c", ctx->spec->cmd, NULL};
        execve("/bin/sh", argv, env.envp);
        static const char msg[] = "burst-worker: cannot execute /bin/sh\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)w;
        _exit(127);
    }
    /* Both sides set the group so that it exists before either relies on it
     * (the kill below may come before the child has run at all). */
    setpgid(pid, pid);
    run_mem_attach(&et->mem, pid);
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    et->pid = pid;
    et->in_fd = in[1]; /* the three parent ends now belong to et */
    et->out_fd = out[0];
    et->err_fd = err[0];
    run_set_nonblock(et->in_fd);
    run_set_nonblock(et->out_fd);
    run_set_nonblock(et->err_fd);
    free(env.envp);
    return 0;

out_close:
    for (int i = 0; i < 2; i++) {
        close_fd(&in[i]);
        close_fd(&out[i]);
        close_fd(&err[i]);
    }
    free(env.envp);
    return rc;
}

/* Writes what the pipe takes of the remaining input; closes stdin at the
 * end, or when the command will not read more (EPIPE), which is its right. */
static void
exec_feed(struct exec_task *et)
{
    while (et->in_fd >= 0) {
        if (et->part >= et->input->nparts) {
            close_fd(&et->in_fd);
            return;
        }
        const struct iovec *p = &et->input->parts[et->part];
        size_t left = p->iov_len - et->part_off;
        if (left == 0) {
            et->part++;
            et->part_off = 0;
            continue;
        }
        if (left > EXEC_IO_CHUNK)
            left = EXEC_IO_CHUNK;
        ssize_t w = write(et->in_fd, (const char *)p->iov_base + et->part_off, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                close_fd(&et->in_fd);
            return;
        }
        et->part_off += (size_t)w;
    }
}

/* Reads what stdout has; grows the result buffer up to RUN_RESULT_MAX. */
static void
exec_drain_out(struct exec_task *et)
{
    while (et->out_fd >= 0) {
        if (et->out_cap - et->out_len < EXEC_IO_CHUNK) {
            /* One chunk beyond the cap leaves room to notice the overflow. */
            size_t max = (size_t)RUN_RESULT_MAX + EXEC_IO_CHUNK;
            size_t cap = et->out_cap ? et->out_cap * 2 : 4 * EXEC_IO_CHUNK;
            if (cap > max)
                cap = max;
            char *nb = realloc(et->out, cap);
            if (nb == NULL) {
                et->nomem = true;
                kill_group(et);
                close_fd(&et->out_fd);
                return;
            }
            et->out = nb;
            et->out_cap = cap;
        }
        ssize_t r = read(et->out_fd, et->out + et->out_len, et->out_cap - et->out_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            close_fd(&et->out_fd);
            return;
        }
        et->out_len += (size_t)r;
        if (et->out_len > RUN_RESULT_MAX) {
            et->too_large = true;
            kill_group(et);
            close_fd(&et->out_fd);
            return;
        }
    }
}

/* Reads what stderr has, keeping only the last INVOC_LOG_CAP bytes. */
static void
exec_drain_err(struct exec_task *et)
{
    char buf[EXEC_IO_CHUNK];
    while (et->err_fd >= 0) {
        ssize_t r = read(et->err_fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            close_fd(&et->err_fd);
            return;
        }
        size_t n = (size_t)r;
        const char *src = buf;
        if (n >= INVOC_LOG_CAP) {
            src += n - INVOC_LOG_CAP;
            n = INVOC_LOG_CAP;
            et->log_len = 0;
        } else if (et->log_len + n > INVOC_LOG_CAP) {
            size_t drop = et->log_len + n - INVOC_LOG_CAP;
            memmove(et->log, et->log + drop, et->log_len - drop);
            et->log_len -= drop;
        }
        memcpy(et->log + et->log_len, src, n);
        et->log_len += n;
    }
}

/*
 * Supervises a spawned task until the shell has ended and its pipes are
 * drained (or RUN_DRAIN_GRACE_MS passed after its end).  Kills the process
 * group on timeout, on a stop request or an oversized result.
 */
static void
exec_supervise(const struct run_ctx *ctx, struct exec_task *et)
{
    int64_t deadline = run_deadline(ctx->spec->timeout_ms);
    int64_t grace = -1;
    exec_feed(et);
    for (;;) {
        if (!et->exited && run_reap(et->pid, false, &et->wstatus, &et->ru) == 1) {
            et->exited = true;
            /* Nobody reads stdin any more; whatever holds stdout after the
             * group kill gets a short grace, then is cut off. */
            close_fd(&et->in_fd);
            grace = run_now_ms() + RUN_DRAIN_GRACE_MS;
        }
        if (et->exited && (et->out_fd < 0 && et->err_fd < 0))
            break;
        if (et->exited && run_now_ms() >= grace)
            break;
        if (!et->exited && !et->killed) {
            if (run_stop_requested()) {
                et->stopped = true;
                kill_group(et);
            } else if (deadline >= 0 && run_now_ms() >= deadline) {
                et->timed_out = true;
                kill_group(et);
            }
        }

        struct pollfd pfd[3];
        int *which[3];
        nfds_t n = 0;
        if (et->in_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = et->in_fd, .events = POLLOUT};
            which[n++] = &et->in_fd;
        }
        if (et->out_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = et->out_fd, .events = POLLIN};
            which[n++] = &et->out_fd;
        }
        if (et->err_fd >= 0) {
            pfd[n] = (struct pollfd){.fd = et->err_fd, .events = POLLIN};
            which[n++] = &et->err_fd;
        }
        int64_t wake = et->exited ? grace : (et->killed ? -1 : deadline);
        if (run_poll(pfd, n, wake) < 0) {
            /* ppoll itself failed (cannot really happen): do not spin. */
            kill_group(et);
            if (!et->exited && run_reap(et->pid, true, &et->wstatus, &et->ru) == 1)
                et->exited = true;
            break;
        }
        for (nfds_t i = 0; i < n; i++) {
            if (pfd[i].revents == 0)
                continue;
            if (which[i] == &et->in_fd)
                exec_feed(et);
            else if (which[i] == &et->out_fd)
                exec_drain_out(et);
            else
                exec_drain_err(et);
        }
    }
    close_fd(&et->in_fd);
    close_fd(&et->out_fd);
    close_fd(&et->err_fd);
}

/*
 * Runs one task.  Returns 1 and fills r (result and log point into et, valid
 * until exec_task_free) when the task ended, or 0 when the worker was told
 * to stop and the task was killed without a result.
 */
static int
exec_one(const struct run_ctx *ctx, const struct invoc_task *t,
         const struct run_input *in, struct exec_task *et, struct invoc_result *r,
         char *reason, size_t size)
{
    et->input = in;
    et->log = malloc(INVOC_LOG_CAP);
    if (et->log == NULL) {
        r->status = INVOC_ERROR;
        snprintf(reason, size, "out of memory");
        return 1;
    }
    int rc = exec_spawn(ctx, t, et);
    if (rc != 0) {
        r->status = INVOC_ERROR;
        snprintf(reason, size, "cannot start /bin/sh: %s", strerror(-rc));
        return 1;
    }
    exec_supervise(ctx, et);
    if (!et->exited) {
        /* ppoll failed and the child is still ours: wait it out. */
        if (run_reap(et->pid, true, &et->wstatus, &et->ru) != 1)
            et->wstatus = 0;
        et->exited = true;
    }
    if (et->stopped) {
        run_mem_release(&et->mem);
        return 0;
    }

    run_describe_wait(et->wstatus, r, reason, size);
    if (et->too_large) {
        r->status = INVOC_ERROR;
        snprintf(reason, size, "result too large (more than %u MiB)",
                 RUN_RESULT_MAX / (1024u * 1024u));
    } else if (et->nomem) {
        r->status = INVOC_ERROR;
        snprintf(reason, size, "out of memory collecting the result");
    } else if (et->timed_out) {
        r->status = INVOC_TIMEOUT;
        snprintf(reason, size, "timed out after %" PRIu64 " ms", ctx->spec->timeout_ms);
    } else if (r->status != INVOC_OK &&
               run_mem_exceeded(&et->mem, (uint64_t)et->ru.ru_maxrss)) {
        run_mem_describe(&et->mem, r, reason, size);
    }
    /* Kills anything of the task that escaped its process group but not its
     * cgroup. */
    run_mem_release(&et->mem);
    /* A result cut short is no result: only the reason and log are kept. */
    if (!et->too_large && !et->nomem) {
        r->result = et->out;
        r->result_len = et->out_len;
    }
    r->log = et->log;
    r->log_len = et->log_len;
    return 1;
}

int
run_exec(const struct run_ctx *ctx)
{
    for (uint32_t i = 0; i < ctx->ntasks && !run_stop_requested(); i++) {
        const struct invoc_task *t = &ctx->tasks[i];
        char reason[RUN_REASON_MAX] = "";
        struct invoc_result r = {
            .index = t->index,
            .attempt = t->attempt,
            .status = INVOC_ERROR,
            .exit_status = -1,
            .reason = reason,
        };
        struct run_input in;
        struct exec_task et = {.pid = -1,
                               .in_fd = -1,
                               .out_fd = -1,
                               .err_fd = -1,
                               .mem = {.sync_rd = -1, .sync_wr = -1}};
        int ended = 1;
        if (input_load(ctx->input, t->index, &in, reason, sizeof(reason)) == 0) {
            ended = exec_one(ctx, t, &in, &et, &r, reason, sizeof(reason));
            input_release(&in);
        }
        run_reason_ensure(&r);
        int rc = ended ? ctx->done(ctx->arg, &r) : 0;
        free(et.out);
        free(et.log);
        if (rc != 0)
            return rc;
    }
    return 0;
}
