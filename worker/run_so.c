/*
 * worker/run_so.c - the so runner: the tasks call a C function from a
 * shared library (worker/include/burst_function.h), without a process per
 * task.
 *
 * The worker forks an executor child that dlopens the library once and
 * calls the function for each task in turn, reading each input from
 * storage itself.  The worker never loads the library: a crash, a hang or a
 * corrupted heap stays in the child.  The child tells the worker over a pipe
 * when a task starts and how it ended (messages below); its stdout and
 * stderr go to a memfd that it empties before each task, so every task has
 * its own log, and the worker can still read the log of a task whose child
 * died.  The worker times each task, and when the child dies or is killed in
 * the middle of one, records that task and forks a new child that goes on
 * with the next, so a crashing task fails alone.
 *
 * A memory limit (run_mem.c) applies to each executor child as a whole; the
 * child measures each task's peak under RLIMIT_AS and sends it along, so
 * that a task that failed near the limit is reported as out of memory.
 */
#include "run.h"

#include <burst.h>
#include <burst_function.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Child-to-worker messages: a fixed header, then len1 + len2 bytes.  Both
 * ends are the same binary (a fork), so the header is sent as the struct it
 * is; the worker still checks every field, since the function runs in the
 * child and may have scribbled over anything.
 */
enum so_msg_type {
    SO_MSG_START = 1,      /* pos, flags, mem_kib: the task is about to be called */
    SO_MSG_DONE = 2,       /* pos, rc, flags, mem_kib; len1 result, len2 log bytes */
    SO_MSG_TASK_ERROR = 3, /* pos: the task could not be started; len1 reason */
    SO_MSG_LOAD_ERROR = 4, /* library or symbol missing; len1 reason */
};

#define SO_DONE_TOO_LARGE 1u /* the function wrote more than RUN_RESULT_MAX */
#define SO_DONE_NOMEM 2u     /* the result buffer could not grow */
/* START: the peak resident set was reset to mem_kib, the current one, so the
 * task's peak can be measured (RLIMIT_AS only). */
#define SO_START_PEAK 1u

struct so_msg_hdr {
    uint32_t type;
    uint32_t pos; /* position in the invocation's task list */
    int32_t rc;
    uint32_t flags;
    uint64_t len1;
    uint64_t len2;
    /* START: resident KiB when the task starts; DONE: how many KiB the
     * task's peak rose above that (0: not measured) */
    uint64_t mem_kib;
};

/* ---- the executor child ------------------------------------------------------- */

/* The burst_output the function writes its result through. */
struct so_out {
    burst_output base;
    char *buf; /* owned */
    size_t len;
    size_t cap;
    unsigned flags; /* SO_DONE_* */
};

static int
so_out_write(burst_output *o, const void *data, size_t len)
{
    struct so_out *so = o->priv;
    if (len == 0)
        return 0;
    if (data == NULL || len > RUN_RESULT_MAX - so->len) {
        so->flags |= SO_DONE_TOO_LARGE;
        return -1;
    }
    if (so->cap - so->len < len) {
        size_t cap = so->cap ? so->cap : 4096;
        while (cap - so->len < len)
            cap = cap > RUN_RESULT_MAX / 2 ? RUN_RESULT_MAX : cap * 2;
        char *nb = realloc(so->buf, cap);
        if (nb == NULL) {
            so->flags |= SO_DONE_NOMEM;
            return -1;
        }
        so->buf = nb;
        so->cap = cap;
    }
    memcpy(so->buf + so->len, data, len);
    so->len += len;
    return 0;
}

static void
child_send(int fd, uint32_t type, uint32_t pos, int32_t rc, uint32_t flags,
           uint64_t mem_kib, const void *p1, size_t len1, const void *p2, size_t len2)
{
    struct so_msg_hdr h = {type, pos, rc, flags, len1, len2, mem_kib};
    if (run_write_all(fd, &h, sizeof(h)) != 0 ||
        (len1 > 0 && run_write_all(fd, p1, len1) != 0) ||
        (len2 > 0 && run_write_all(fd, p2, len2) != 0))
        _exit(3); /* the worker is gone or broke the pipe: nobody to tell */
}

static void
child_send_text(int fd, uint32_t type, uint32_t pos, const char *text)
{
    size_t n = strlen(text);
    if (n >= RUN_REASON_MAX)
        n = RUN_REASON_MAX - 1;
    child_send(fd, type, pos, 0, 0, 0, text, n, NULL, 0);
}

/* Reads the last INVOC_LOG_CAP bytes of the log file into buf; returns the
 * length.  Used by both the child (after a task) and the worker (after the
 * child died in one). */
static size_t
log_tail(int logfd, char *buf)
{
    struct stat st;
    if (fstat(logfd, &st) != 0 || st.st_size <= 0)
        return 0;
    off_t off = st.st_size > (off_t)INVOC_LOG_CAP ? st.st_size - (off_t)INVOC_LOG_CAP : 0;
    size_t want = (size_t)(st.st_size - off);
    size_t got = 0;
    while (got < want) {
        ssize_t r = pread(logfd, buf + got, want - got, off + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/*
 * The executor child: loads the library and runs tasks pos.. in order.
 * Never returns.  The worker's stdin is replaced by /dev/null and fds 1 and
 * 2 by the log file.  Its memory limit is already in force; mem says which
 * kind, since only RLIMIT_AS needs the per-task peak.
 */
static void __attribute__((noreturn))
so_child(const struct run_ctx *ctx, const char *path, uint32_t pos, int msgfd, int logfd,
         const struct run_mem *mem)
{
    char reason[RUN_REASON_MAX];
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0 || dup2(logfd, STDOUT_FILENO) < 0 ||
        dup2(logfd, STDERR_FILENO) < 0)
        _exit(4);
    /* A crash in the user's function must end this process by its signal,
     * so the parent can report it: drop any handler inherited from the
     * worker (a sanitizer's, for one) that would turn it into an exit. */
    static const int fatal_signals[] = {SIGSEGV, SIGBUS,  SIGFPE,
                                        SIGILL,  SIGABRT, SIGTRAP};
    for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++)
        signal(fatal_signals[i], SIG_DFL);

    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        snprintf(reason, sizeof(reason), "cannot load %s: %s", ctx->spec->fn_key,
                 dlerror());
        child_send_text(msgfd, SO_MSG_LOAD_ERROR, pos, reason);
        _exit(0);
    }
    dlerror();
    void *sym = dlsym(lib, ctx->spec->symbol);
    const char *err = dlerror();
    if (sym == NULL) {
        snprintf(reason, sizeof(reason), "symbol '%s' not found in %s: %s",
                 ctx->spec->symbol, ctx->spec->fn_key, err != NULL ? err : "it is NULL");
        child_send_text(msgfd, SO_MSG_LOAD_ERROR, pos, reason);
        _exit(0);
    }
    /* ISO C has no object-to-function pointer conversion; POSIX guarantees
     * the representation, so copy the bits. */
    burst_function fn;
    memcpy(&fn, &sym, sizeof(fn));

    static char logbuf[INVOC_LOG_CAP];
    for (; pos < ctx->ntasks; pos++) {
        const struct invoc_task *t = &ctx->tasks[pos];
        struct run_input in;
        if (input_load(ctx->input, t->index, &in, reason, sizeof(reason)) != 0) {
            child_send_text(msgfd, SO_MSG_TASK_ERROR, pos, reason);
            continue;
        }
        burst_part *parts = NULL;
        burst_input bi = {
            .job_id = ctx->spec->job,
            .task_index = t->index,
            .attempt = t->attempt,
        };
        if (ctx->spec->reduce) {
            parts = calloc(in.nparts ? in.nparts : 1, sizeof(*parts));
            if (parts == NULL) {
                input_release(&in);
                child_send_text(msgfd, SO_MSG_TASK_ERROR, pos, "out of memory");
                continue;
            }
            /* Empty parts get a valid pointer too: authors memcpy from it. */
            for (size_t i = 0; i < in.nparts; i++)
                parts[i] = (burst_part){in.parts[i].iov_base ? in.parts[i].iov_base : "",
                                        in.parts[i].iov_len};
            bi.parts = parts;
            bi.nparts = in.nparts;
        } else {
            bi.data = in.nparts == 1 && in.parts[0].iov_base ? in.parts[0].iov_base : "";
            bi.len = in.nparts == 1 ? in.parts[0].iov_len : 0;
        }

        /* A fresh log for this task: fds 1 and 2 share logfd's offset. */
        if (ftruncate(logfd, 0) != 0 || lseek(logfd, 0, SEEK_SET) != 0)
            _exit(5);
        /* The peak is reset last, so that only the function's own use
         * counts, not the input the worker loaded for it. */
        uint32_t start_flags = 0;
        uint64_t rss_kib = 0;
        if (mem->mode == RUN_MEM_RLIMIT && run_mem_peak_reset(&rss_kib))
            start_flags |= SO_START_PEAK;
        child_send(msgfd, SO_MSG_START, pos, 0, start_flags, rss_kib, NULL, 0, NULL, 0);
        struct so_out out = {.base = {.write = so_out_write}};
        out.base.priv = &out;
        int rc = fn(&bi, &out.base);
        uint64_t grew_kib = 0;
        if (start_flags & SO_START_PEAK) {
            uint64_t peak = run_mem_peak_read();
            grew_kib = peak > rss_kib ? peak - rss_kib : 0;
        }
        fflush(stdout);
        fflush(stderr);
        size_t loglen = log_tail(logfd, logbuf);
        /* A result cut short is no result: the worker reports an error. */
        size_t outlen = out.flags != 0 ? 0 : out.len;
        child_send(msgfd, SO_MSG_DONE, pos, rc, out.flags, grew_kib, out.buf, outlen,
                   logbuf, loglen);
        free(out.buf);
        free(parts);
        input_release(&in);
    }
    _exit(0);
}

/* ---- the worker side ---------------------------------------------------------- */

/* One executor child as the worker sees it. */
struct so_exec {
    pid_t pid;
    int msgfd; /* owned: read end of the message pipe, -1 at EOF */
    int logfd; /* owned: the child's stdout/stderr file */
    bool exited;
    int wstatus;
    struct rusage ru;   /* once exited: ru_maxrss is its peak since the last reset */
    struct run_mem mem; /* owned: the executor's memory limit */
    bool killed;
    bool timed_out;
    bool stopped;
    bool broken;          /* it sent something that makes no sense */
    bool nomem;           /* we could not store what it sent */
    bool progress;        /* it started or refused at least one task */
    bool running;         /* a task is in flight ... */
    uint32_t run_pos;     /* ... this one */
    bool run_peak;        /* ... its peak is measured from ... */
    uint64_t run_rss_kib; /* ... this resident size */
    int64_t deadline;
    /* the message being received */
    struct so_msg_hdr hdr;
    size_t hdr_got;
    char *payload; /* owned */
    size_t payload_len;
    size_t payload_got;
};

/* What run_so keeps across executor children. */
struct so_run {
    const struct run_ctx *ctx;
    uint32_t pos; /* the next task to run */
    int fatal;    /* what ctx->done returned, once it failed */
};

/* Reports task pos with everything but the buffers filled in. */
static int
so_report(struct so_run *sr, uint32_t pos, int status, int exit_status, int sig,
          const char *reason, const char *result, size_t result_len, const char *log,
          size_t log_len)
{
    const struct invoc_task *t = &sr->ctx->tasks[pos];
    struct invoc_result r = {
        .index = t->index,
        .attempt = t->attempt,
        .status = status,
        .exit_status = exit_status,
        .signal = sig,
        .reason = reason,
        .result = result,
        .result_len = result_len,
        .log = log,
        .log_len = log_len,
    };
    run_reason_ensure(&r);
    int rc = sr->ctx->done(sr->ctx->arg, &r);
    if (rc != 0 && sr->fatal == 0)
        sr->fatal = rc;
    return rc;
}

/* Fails every task from sr->pos on with the same reason. */
static void
so_fail_rest(struct so_run *sr, const char *reason)
{
    while (sr->pos < sr->ctx->ntasks && sr->fatal == 0) {
        so_report(sr, sr->pos, INVOC_ERROR, -1, 0, reason, NULL, 0, NULL, 0);
        sr->pos++;
    }
}

static int
so_memfd(void)
{
    int fd = memfd_create("burst-task-log", MFD_CLOEXEC);
    if (fd >= 0)
        return fd;
    /* No memfd (an old kernel or a seccomp filter): an unlinked temp file. */
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/burst-log.XXXXXX", dir != NULL ? dir : "/tmp");
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

/* Forks an executor child for the tasks from sr->pos on.  Returns 0 with ex
 * filled in (its fds and memory limit owned by ex: the caller closes logfd
 * and releases mem after supervising), or -errno with nothing left open. */
static int
so_spawn(struct so_run *sr, const char *path, struct so_exec *ex)
{
    int p[2];
    struct run_mem mem;
    int logfd = so_memfd();
    if (logfd < 0)
        return logfd;
    if (pipe2(p, O_CLOEXEC) != 0) {
        int rc = -errno;
        close(logfd);
        return rc;
    }
    run_mem_prepare(&mem, sr->ctx->spec->memory_mb, true);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        run_mem_release(&mem);
        close(p[0]);
        close(p[1]);
        close(logfd);
        return rc;
    }
    if (pid == 0) {
        setpgid(0, 0);
        run_child_setup(parent, true);
        close(p[0]);
        /* Limited before the library is even loaded: its constructors
         * count too. */
        run_mem_child(&mem);
        so_child(sr->ctx, path, sr->pos, p[1], logfd, &mem);
    }
    setpgid(pid, pid);
    run_mem_attach(&mem, pid);
    close(p[1]);
    run_set_nonblock(p[0]);
    *ex = (struct so_exec){
        .pid = pid, .msgfd = p[0], .logfd = logfd, .mem = mem, .deadline = -1};
    return 0;
}

static void
so_kill(struct so_exec *ex)
{
    if (!ex->killed && !ex->exited)
        kill(-ex->pid, SIGKILL);
    ex->killed = true;
}

/* Acts on one complete message. */
static void
so_handle(struct so_run *sr, struct so_exec *ex)
{
    const struct so_msg_hdr *h = &ex->hdr;
    char reason[RUN_REASON_MAX];
    if (ex->killed)
        return; /* we gave up on this child: what it still says is moot */

    switch (h->type) {
    case SO_MSG_START:
        if (ex->running || h->pos != sr->pos)
            break;
        ex->running = true;
        ex->progress = true;
        ex->run_pos = h->pos;
        ex->run_peak = (h->flags & SO_START_PEAK) != 0;
        ex->run_rss_kib = h->mem_kib;
        ex->deadline = run_deadline(sr->ctx->spec->timeout_ms);
        run_mem_task_start(&ex->mem);
        return;
    case SO_MSG_DONE: {
        if (!ex->running || h->pos != ex->run_pos)
            break;
        const char *result = ex->payload;
        const char *log = ex->payload + h->len1;
        int status = INVOC_OK;
        int exit_status = h->rc;
        reason[0] = '\0';
        if (h->flags & SO_DONE_TOO_LARGE) {
            status = INVOC_ERROR;
            exit_status = -1;
            snprintf(reason, sizeof(reason), "result too large (more than %u MiB)",
                     RUN_RESULT_MAX / (1024u * 1024u));
        } else if ((h->flags & SO_DONE_NOMEM) && ex->mem.mode != RUN_MEM_NONE) {
            /* The result itself did not fit in the task's memory. */
            struct invoc_result r = {.exit_status = -1};
            run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
            status = r.status;
            exit_status = -1;
        } else if (h->flags & SO_DONE_NOMEM) {
            status = INVOC_ERROR;
            exit_status = -1;
            snprintf(reason, sizeof(reason), "out of memory collecting the result");
        } else if (h->rc != 0) {
            status = INVOC_FAILED;
            snprintf(reason, sizeof(reason), "function returned %d", (int)h->rc);
            /* A careful function returns an error when malloc fails. */
            if (run_mem_exceeded(&ex->mem, ex->run_peak ? h->mem_kib : 0)) {
                struct invoc_result r = {.exit_status = exit_status};
                run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
                status = r.status;
            }
        }
        ex->running = false;
        ex->deadline = -1;
        sr->pos = h->pos + 1;
        so_report(sr, h->pos, status, exit_status, 0, reason, result, (size_t)h->len1,
                  log, (size_t)h->len2);
        return;
    }
    case SO_MSG_TASK_ERROR:
        if (ex->running || h->pos != sr->pos)
            break;
        snprintf(reason, sizeof(reason), "%.*s", (int)h->len1, ex->payload);
        ex->progress = true;
        sr->pos++;
        so_report(sr, h->pos, INVOC_ERROR, -1, 0, reason, NULL, 0, NULL, 0);
        return;
    case SO_MSG_LOAD_ERROR:
        if (ex->running)
            break;
        snprintf(reason, sizeof(reason), "%.*s", (int)h->len1, ex->payload);
        ex->progress = true;
        so_fail_rest(sr, reason);
        return;
    }
    ex->broken = true;
    so_kill(ex);
}

/* Checks a header before its payload is read: every length is bounded. */
static bool
so_hdr_valid(const struct so_msg_hdr *h)
{
    switch (h->type) {
    case SO_MSG_START:
        return h->len1 == 0 && h->len2 == 0;
    case SO_MSG_DONE:
        return h->len1 <= RUN_RESULT_MAX && h->len2 <= INVOC_LOG_CAP;
    case SO_MSG_TASK_ERROR:
    case SO_MSG_LOAD_ERROR:
        return h->len1 < RUN_REASON_MAX && h->len2 == 0;
    default:
        return false;
    }
}

/* Gives up on a child whose messages cannot be taken: the task in flight
 * (if any) fails, and a new child continues after it. */
static void
so_give_up(struct so_exec *ex, bool nomem)
{
    ex->broken = !nomem;
    ex->nomem = nomem;
    so_kill(ex);
    close(ex->msgfd);
    ex->msgfd = -1;
}

/* Reads what the pipe holds, handling each message as it completes. */
static void
so_receive(struct so_run *sr, struct so_exec *ex)
{
    while (ex->msgfd >= 0 && sr->fatal == 0) {
        bool in_hdr = ex->hdr_got < sizeof(ex->hdr);
        char *dst =
            in_hdr ? (char *)&ex->hdr + ex->hdr_got : ex->payload + ex->payload_got;
        size_t want =
            in_hdr ? sizeof(ex->hdr) - ex->hdr_got : ex->payload_len - ex->payload_got;
        ssize_t r = read(ex->msgfd, dst, want);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            close(ex->msgfd);
            ex->msgfd = -1;
            return;
        }
        if (in_hdr) {
            ex->hdr_got += (size_t)r;
            if (ex->hdr_got < sizeof(ex->hdr))
                continue;
            if (!so_hdr_valid(&ex->hdr)) {
                so_give_up(ex, false);
                return;
            }
            ex->payload_len = (size_t)(ex->hdr.len1 + ex->hdr.len2);
            ex->payload_got = 0;
            ex->payload = malloc(ex->payload_len ? ex->payload_len : 1);
            if (ex->payload == NULL) {
                so_give_up(ex, true);
                return;
            }
        } else {
            ex->payload_got += (size_t)r;
        }
        /* want is never 0 above: a message without payload ends here. */
        if (ex->payload_got == ex->payload_len) {
            so_handle(sr, ex);
            free(ex->payload);
            ex->payload = NULL;
            ex->hdr_got = 0;
        }
    }
}

/*
 * Supervises one executor child until it has ended and its pipe is drained.
 * Afterwards accounts for the task that was in flight, if any.  Returns true
 * when the worker was told to stop.
 */
static bool
so_supervise(struct so_run *sr, struct so_exec *ex)
{
    int64_t grace = -1;
    for (;;) {
        if (!ex->exited && run_reap(ex->pid, false, &ex->wstatus, &ex->ru) == 1) {
            ex->exited = true;
            grace = run_now_ms() + RUN_DRAIN_GRACE_MS;
        }
        if (ex->exited && (ex->msgfd < 0 || run_now_ms() >= grace))
            break;
        if (!ex->exited && !ex->killed) {
            if (run_stop_requested()) {
                ex->stopped = true;
                so_kill(ex);
            } else if (sr->fatal != 0) {
                so_kill(ex);
            } else if (ex->running && ex->deadline >= 0 && run_now_ms() >= ex->deadline) {
                ex->timed_out = true;
                so_kill(ex);
            }
        }
        struct pollfd pfd = {.fd = ex->msgfd, .events = POLLIN};
        int64_t wake = ex->exited ? grace : (ex->killed ? -1 : ex->deadline);
        int n = run_poll(&pfd, ex->msgfd >= 0 ? 1 : 0, wake);
        if (n < 0) {
            so_kill(ex);
            if (!ex->exited && run_reap(ex->pid, true, &ex->wstatus, &ex->ru) == 1)
                ex->exited = true;
            break;
        }
        if (n > 0)
            so_receive(sr, ex);
    }
    if (ex->msgfd >= 0)
        close(ex->msgfd);
    ex->msgfd = -1;
    free(ex->payload);
    ex->payload = NULL;

    if (ex->stopped || sr->fatal != 0)
        return ex->stopped;

    char reason[RUN_REASON_MAX];
    if (ex->running) {
        /* The child died or was killed in the middle of task run_pos. */
        static char logbuf[INVOC_LOG_CAP];
        size_t loglen = log_tail(ex->logfd, logbuf);
        struct invoc_result r = {.reason = reason};
        run_describe_wait(ex->wstatus, &r, reason, sizeof(reason));
        if (ex->timed_out) {
            r.status = INVOC_TIMEOUT;
            snprintf(reason, sizeof(reason), "timed out after %" PRIu64 " ms",
                     sr->ctx->spec->timeout_ms);
        } else if (ex->broken || ex->nomem) {
            r.status = INVOC_ERROR;
            snprintf(reason, sizeof(reason), "%s",
                     ex->nomem ? "out of memory receiving the result"
                               : "the executor process misbehaved");
        } else {
            if (r.status == INVOC_OK || r.status == INVOC_FAILED) {
                /* The function called exit(): the task did not complete. */
                r.status = INVOC_FAILED;
                snprintf(reason, sizeof(reason),
                         "the function exited the process with status %d", r.exit_status);
            }
            /* Whatever killed it (abort() after malloc failed, a crash on
             * its NULL, the kernel's OOM killer), the peak tells. */
            uint64_t maxrss = ex->ru.ru_maxrss > 0 ? (uint64_t)ex->ru.ru_maxrss : 0;
            uint64_t grew =
                ex->run_peak && maxrss > ex->run_rss_kib ? maxrss - ex->run_rss_kib : 0;
            if (run_mem_exceeded(&ex->mem, grew))
                run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
        }
        sr->pos = ex->run_pos + 1;
        so_report(sr, ex->run_pos, r.status, r.exit_status, r.signal, reason, NULL, 0,
                  logbuf, loglen);
    } else if (!ex->progress && sr->pos < sr->ctx->ntasks) {
        /* It died before starting anything (a library constructor crashed,
         * say): charge the next task so that every child makes progress. */
        struct invoc_result r = {.reason = reason};
        char why[RUN_REASON_MAX / 2];
        run_describe_wait(ex->wstatus, &r, why, sizeof(why));
        snprintf(reason, sizeof(reason),
                 "the executor process died before the task started (%s)",
                 why[0] != '\0' ? why : "exit status 0");
        int status = INVOC_ERROR;
        /* Loading the library alone can exhaust a cgroup's memory (no peak
         * is measured before a task starts, so RLIMIT_AS cannot tell). */
        if (run_mem_exceeded(&ex->mem, 0)) {
            run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
            status = r.status;
        }
        uint32_t pos = sr->pos++;
        so_report(sr, pos, status, -1, 0, reason, NULL, 0, NULL, 0);
    }
    return false;
}

int
run_so(const struct run_ctx *ctx)
{
    struct so_run sr = {.ctx = ctx, .pos = 0, .fatal = 0};
    char reason[RUN_REASON_MAX];
    char *path = NULL;
    if (ctx->ntasks == 0 || run_stop_requested())
        return 0;

    int rc = store_fetch_file(ctx->store, ctx->spec->fn_key, &path);
    if (rc != 0) {
        if (rc == -ENOENT)
            snprintf(reason, sizeof(reason), "function library %s not found in storage",
                     ctx->spec->fn_key);
        else
            snprintf(reason, sizeof(reason), "cannot fetch function library %s: %s",
                     ctx->spec->fn_key, strerror(-rc));
        so_fail_rest(&sr, reason);
        return sr.fatal;
    }

    while (sr.pos < ctx->ntasks && sr.fatal == 0 && !run_stop_requested()) {
        struct so_exec ex;
        rc = so_spawn(&sr, path, &ex);
        if (rc != 0) {
            snprintf(reason, sizeof(reason), "cannot start the executor process: %s",
                     strerror(-rc));
            so_fail_rest(&sr, reason);
            break;
        }
        bool stopped = so_supervise(&sr, &ex);
        run_mem_release(&ex.mem);
        close(ex.logfd);
        if (stopped)
            break;
    }
    free(path);
    return sr.fatal;
}
