/*
 * worker/run_so.c - the so runner: the tasks call a C function from a
 * shared library (worker/include/burst_function.h), without a process per
 * task.
 *
 * The worker forks an executor child that dlopens the library once and
 * calls the function for each task in turn.  The worker never loads the
 * library: a crash, a hang or a corrupted heap stays in the child.  The
 * child reads the inputs itself, in bulk where it can (input_prefetch).
 *
 * Since an invocation can hold many thousands of tasks that each take a
 * microsecond, the protocol avoids a system call or a wake-up per task.
 * Before the fork the worker maps a shared region (struct so_shm):
 *   - a header where the child publishes the task it is running (cur), when
 *     it started and its memory baseline, all before calling the function;
 *   - a ring of finished tasks (struct so_rec: status, result and log
 *     bytes) that the child appends to without a system call.
 * The child wakes the worker with a message on a pipe only every
 * SO_WAKE_TASKS tasks or when the ring is more than half full; the worker
 * drains the ring on each wake-up and when the child has ended.  What does
 * not fit in the ring (a large result, or a ring the worker has not emptied
 * yet) goes through the pipe as before (struct so_msg_hdr); every record
 * and message carries the task's position and the worker reports them in
 * that order, so the two paths never reorder tasks.
 *
 * Crash isolation: a result is in the ring before the child moves on, so
 * when the child dies every task it finished is still recorded, the task in
 * the header (if not finished) fails with the child's verdict (signal,
 * exit, out of memory, timeout) and the log it left in the child's log
 * memfd, and a new child goes on with the next task.  The worker times the
 * running task from the start time in the header (checked against its own
 * observation, since the child can scribble over the region), waking in
 * ppoll at that task's deadline and re-reading the header then.  Everything
 * read from the region is checked like a message from the wire.
 *
 * Each task's stdout and stderr go to the log memfd, which the child reads
 * and empties after a task only when the task wrote to it.
 *
 * A memory limit (run_mem.c) applies to each executor child as a whole; the
 * child measures each task's peak under RLIMIT_AS and sends it along, so
 * that a task that failed near the limit is reported as out of memory.
 *
 * A warm worker (--serve) keeps its executor between invocations, since the
 * fork and dlopen cost more than a small invocation.  After the last task
 * the child says it is idle (SO_MSG_IDLE), frees what the invocation left
 * and blocks on a command pipe; the worker keeps it (so_warm) when nothing
 * about it is in doubt.  The next invocation goes to it when it uses the
 * same library (the key is content-addressed, fn/<sha256>.so) and a new
 * child would get the same memory limit (run_mem_same), and the child is
 * still alive, silent and its ring empty: the worker resets the region's
 * header and sends the spec key (struct so_cmd); the child reads that spec
 * itself, checks it is the invocation the worker described and of its
 * library, looks up the symbol (cached) and runs the tasks as before.  The
 * region is reused: head and tail keep counting, and all that is read from
 * it is checked as before.  Anything else ends the kept child and forks a
 * fresh one, as does a kept child that fails before it starts a task (no
 * task is charged for it).  A child that crashed is gone, the one that took
 * over may be kept; one that ran out of memory, or misbehaved, is not.  An
 * idle child dies with the worker (PR_SET_PDEATHSIG, and the command pipe's
 * EOF), is ended when the worker exits (run_so_shutdown), and sits in its
 * own process group in the worker's session as before, so a cancel that
 * stops the worker stops its task.
 */
#include "run.h"

#include <burst.h>
#include <burst_function.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h> /* malloc_trim */
#endif
/* Free heap above which an idle executor gives memory back. */
#define SO_TRIM_FREE (1 << 20)
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/*
 * Child-to-worker messages on the pipe: a fixed header, then len1 + len2
 * bytes.  Both ends are the same binary (a fork), so the header is sent as
 * the struct it is; the worker still checks every field, since the function
 * runs in the child and may have scribbled over anything.
 */
enum so_msg_type {
    SO_MSG_WAKE = 1,       /* the ring holds results: drain it */
    SO_MSG_DONE = 2,       /* pos, rc, flags, mem_kib; len1 result, len2 log bytes */
    SO_MSG_TASK_ERROR = 3, /* pos: the task could not be started; len1 reason */
    SO_MSG_LOAD_ERROR = 4, /* library or symbol missing; len1 reason */
    SO_MSG_IDLE = 5,       /* pos: all tasks before it are reported; waiting for
                              the next struct so_cmd (--serve) */
};

#define SO_DONE_TOO_LARGE 1u /* the function wrote more than RUN_RESULT_MAX */
#define SO_DONE_NOMEM 2u     /* the result buffer could not grow */
/* so_shm.start_flags: the peak resident set was reset to rss_kib, the
 * current one, so the task's peak can be measured (RLIMIT_AS only). */
#define SO_START_PEAK 1u

struct so_msg_hdr {
    uint32_t type;
    uint32_t pos; /* position in the invocation's task list */
    int32_t rc;
    uint32_t flags;
    uint64_t len1;
    uint64_t len2;
    /* DONE: how many KiB the task's peak rose above its start (0: not
     * measured) */
    uint64_t mem_kib;
};

/* Longest spec key a command carries: store.c's limit. */
#define SO_KEY_MAX 1024
/* How long a kept executor may take to read an invocation's spec and
 * input from its command pipe. */
#define SO_CMD_WAIT_MS 5000

/*
 * Worker-to-child command on the command pipe of a kept executor (--serve):
 * run invocation inv of the spec at key.  job, dispatch and ntasks are what
 * the worker read there, for the child to check that it reads the same.
 * One write, never split: it fits in PIPE_BUF.
 */
struct so_cmd {
    uint64_t job;
    uint64_t dispatch;
    uint32_t inv;
    uint32_t ntasks;
    char key[SO_KEY_MAX + 1]; /* NUL-terminated */
    /* The objects the worker holds in memory for this invocation (its spec
     * and input, from burstd: store_hold): their bytes follow the command,
     * in this order, and the child holds them too. */
    uint32_t nheld;
    struct {
        char key[STORE_HELD_KEY_MAX]; /* NUL-terminated */
        uint32_t len;
    } held[STORE_HELD_MAX];
};
_Static_assert(sizeof(struct so_cmd) <= PIPE_BUF, "a command is one atomic write");

/* ---- the shared region ---------------------------------------------------------- */

/* Bytes of finished tasks the ring holds; a record above half of it goes
 * through the pipe, so that one large result does not stall the ring. */
#define SO_RING_SIZE (2u * 1024u * 1024u)
/* The child wakes the worker after this many tasks even when the ring has
 * room, so results do not sit for long. */
#define SO_WAKE_TASKS 1024u

/* A 64-bit atomic in memory shared by two processes must be lock-free: a
 * lock would live in one process only. */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2,
               "64-bit atomics must be lock-free");

enum so_rec_kind {
    SO_REC_DONE = 1,       /* as SO_MSG_DONE */
    SO_REC_TASK_ERROR = 2, /* as SO_MSG_TASK_ERROR */
    SO_REC_PAD = 3,        /* the rest of the ring is unused: go on at its start */
};

/* A record in the ring: this header, then len1 + len2 bytes, padded to a
 * multiple of 8.  A record never wraps: when the rest of the ring is too
 * small, the child skips it (with a PAD record when a header fits). */
struct so_rec {
    uint32_t kind;
    uint32_t pos;
    int32_t rc;
    uint32_t flags;
    uint64_t mem_kib;
    uint32_t len1;
    uint32_t len2;
};
#define SO_REC_SIZE(len1, len2)                                                          \
    ((sizeof(struct so_rec) + (size_t)(len1) + (size_t)(len2) + 7u) & ~(size_t)7u)

/*
 * The region both processes map (MAP_SHARED, made before the fork).  The
 * child writes everything but tail; the worker writes only tail.  head and
 * tail count bytes since the child started, so head - tail is what the ring
 * holds; a record starts at head % SO_RING_SIZE.
 */
struct so_shm {
    /* The task the child runs or ran last: its position + 1 (0: none yet).
     * Stored with release after the three fields below. */
    _Atomic uint64_t cur;
    _Atomic int64_t start_ms; /* run_now_ms() at its start; 0: not timed */
    _Atomic uint64_t rss_kib; /* its resident size at start, when SO_START_PEAK */
    _Atomic uint32_t start_flags;
    alignas(64) _Atomic uint64_t head; /* release after the bytes it covers */
    alignas(64) _Atomic uint64_t tail; /* release once the worker is done with them */
    alignas(64) unsigned char ring[SO_RING_SIZE];
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

/* What the child keeps about its side of the protocol. */
struct so_child_io {
    struct so_shm *shm; /* borrowed: the shared region */
    int msgfd;
    uint64_t head;       /* our copy of shm->head: only we write it */
    uint32_t since_wake; /* tasks appended since the worker last heard from us */
    bool half_woken;     /* we woke it for a half-full ring it has not drained */
};

/* Appends a record to the ring without a system call.  False when it does
 * not fit (too large, or the worker has not made room yet). */
static bool
ring_append(struct so_child_io *io, const struct so_rec *rec, const void *p1, size_t len1,
            const void *p2, size_t len2)
{
    size_t size = SO_REC_SIZE(len1, len2);
    if (size > SO_RING_SIZE / 2)
        return false;
    /* Acquire: the worker has finished reading what it released. */
    uint64_t tail = atomic_load_explicit(&io->shm->tail, memory_order_acquire);
    size_t off = (size_t)(io->head % SO_RING_SIZE);
    size_t room = SO_RING_SIZE - off;
    size_t pad = room < size ? room : 0;
    if (io->head + pad + size - tail > SO_RING_SIZE)
        return false;
    if (pad >= sizeof(struct so_rec)) {
        struct so_rec skip = {.kind = SO_REC_PAD};
        memcpy(io->shm->ring + off, &skip, sizeof(skip));
    }
    off = (size_t)((io->head + pad) % SO_RING_SIZE);
    unsigned char *p = io->shm->ring + off;
    memcpy(p, rec, sizeof(*rec));
    if (len1 > 0)
        memcpy(p + sizeof(*rec), p1, len1);
    if (len2 > 0)
        memcpy(p + sizeof(*rec) + len1, p2, len2);
    io->head += pad + size;
    /* Release: the bytes above are visible before the head that covers
     * them. */
    atomic_store_explicit(&io->shm->head, io->head, memory_order_release);
    return true;
}

/* Reports task pos: through the ring when it fits, else through the pipe
 * (which wakes the worker by itself); then wakes the worker when it is
 * time to. */
static void
child_report(struct so_child_io *io, uint32_t kind, uint32_t pos, int32_t rc,
             uint32_t flags, uint64_t mem_kib, const void *p1, size_t len1,
             const void *p2, size_t len2)
{
    struct so_rec rec = {
        .kind = kind,
        .pos = pos,
        .rc = rc,
        .flags = flags,
        .mem_kib = mem_kib,
        .len1 = (uint32_t)len1,
        .len2 = (uint32_t)len2,
    };
    if (len1 > UINT32_MAX || len2 > UINT32_MAX ||
        !ring_append(io, &rec, p1, len1, p2, len2)) {
        child_send(io->msgfd, kind == SO_REC_DONE ? SO_MSG_DONE : SO_MSG_TASK_ERROR, pos,
                   rc, flags, mem_kib, p1, len1, p2, len2);
        io->since_wake = 0;
        return;
    }
    io->since_wake++;
    uint64_t used = io->head - atomic_load_explicit(&io->shm->tail, memory_order_relaxed);
    bool half = used > SO_RING_SIZE / 2;
    if (!half)
        io->half_woken = false;
    if (io->since_wake >= SO_WAKE_TASKS || (half && !io->half_woken)) {
        child_send(io->msgfd, SO_MSG_WAKE, pos, 0, 0, 0, NULL, 0, NULL, 0);
        io->since_wake = 0;
        io->half_woken = half;
    }
}

static void
child_report_text(struct so_child_io *io, uint32_t pos, const char *text)
{
    size_t n = strlen(text);
    if (n >= RUN_REASON_MAX)
        n = RUN_REASON_MAX - 1;
    child_report(io, SO_REC_TASK_ERROR, pos, 0, 0, 0, text, n, NULL, 0);
}

static void
child_send_text(int fd, uint32_t type, uint32_t pos, const char *text)
{
    size_t n = strlen(text);
    if (n >= RUN_REASON_MAX)
        n = RUN_REASON_MAX - 1;
    child_send(fd, type, pos, 0, 0, 0, text, n, NULL, 0);
}

/* Reads the last INVOC_LOG_CAP bytes of the log file, which holds size
 * bytes, into buf; returns the length. */
static size_t
log_tail_of(int logfd, off_t size, char *buf)
{
    if (size <= 0)
        return 0;
    off_t off = size > (off_t)INVOC_LOG_CAP ? size - (off_t)INVOC_LOG_CAP : 0;
    size_t want = (size_t)(size - off);
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

/* log_tail_of the whole log file.  Used by the worker after the child died
 * in a task. */
static size_t
log_tail(int logfd, char *buf)
{
    struct stat st;
    if (fstat(logfd, &st) != 0)
        return 0;
    return log_tail_of(logfd, st.st_size, buf);
}

/*
 * Runs tasks pos .. ctx->ntasks of ctx with fn, in order, reporting each
 * through io.  mem says which kind of memory limit is in force, since only
 * RLIMIT_AS needs the per-task peak.
 */
static void
child_run(struct so_child_io *io, const struct run_ctx *ctx, burst_function fn,
          uint32_t pos, int logfd, const struct run_mem *mem)
{
    char reason[RUN_REASON_MAX];
    /* Reading the clock costs a system call on some machines: only when
     * the worker needs it. */
    bool timed = run_deadline(ctx->spec->timeout_ms) >= 0;
    static char logbuf[INVOC_LOG_CAP];
    for (; pos < ctx->ntasks; pos++) {
        const struct invoc_task *t = &ctx->tasks[pos];
        struct run_input in;
        input_prefetch(ctx->input, t, ctx->ntasks - pos);
        if (input_load(ctx->input, t->index, &in, reason, sizeof(reason)) != 0) {
            child_report_text(io, pos, reason);
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
                child_report_text(io, pos, "out of memory");
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

        /* The peak is reset last, so that only the function's own use
         * counts, not the input loaded for it.  The log is empty here: it
         * was emptied after the last task that wrote to it. */
        uint32_t start_flags = 0;
        uint64_t rss_kib = 0;
        if (mem->mode == RUN_MEM_RLIMIT && run_mem_peak_reset(&rss_kib))
            start_flags |= SO_START_PEAK;
        atomic_store_explicit(&io->shm->start_flags, start_flags, memory_order_relaxed);
        atomic_store_explicit(&io->shm->rss_kib, rss_kib, memory_order_relaxed);
        atomic_store_explicit(&io->shm->start_ms, timed ? run_now_ms() : 0,
                              memory_order_relaxed);
        /* Release: the worker that sees this task also sees its start. */
        atomic_store_explicit(&io->shm->cur, (uint64_t)pos + 1, memory_order_release);
        struct so_out out = {.base = {.write = so_out_write}};
        out.base.priv = &out;
        int rc = fn(&bi, &out.base);
        uint64_t grew_kib = 0;
        if (start_flags & SO_START_PEAK) {
            uint64_t peak = run_mem_peak_read();
            grew_kib = peak > rss_kib ? peak - rss_kib : 0;
        }
        /* Without buffered output these make no system call. */
        fflush(stdout);
        fflush(stderr);
        /* The file's size tells whether the task logged anything (through
         * any descriptor of the file); only then is the log read and emptied
         * for the next task.  lseek to the end reads the size for a
         * quarter of fstat's cost (bench B1: fstat was 8% of the worker's
         * time), and moves fds 1 and 2 only when there was something. */
        size_t loglen = 0;
        off_t logsize = lseek(logfd, 0, SEEK_END);
        if (logsize != 0) {
            loglen = log_tail_of(logfd, logsize, logbuf);
            /* fds 1 and 2 share logfd's offset. */
            if (ftruncate(logfd, 0) != 0 || lseek(logfd, 0, SEEK_SET) != 0)
                _exit(5);
        }
        /* A result cut short is no result: the worker reports an error. */
        size_t outlen = out.flags != 0 ? 0 : out.len;
        child_report(io, SO_REC_DONE, pos, rc, out.flags, grew_kib, out.buf, outlen,
                     logbuf, loglen);
        free(out.buf);
        free(parts);
        input_release(&in);
    }
}

/*
 * Looks up ctx's symbol in lib into *fn, unless it is *cached (owned: the
 * name *fn was found for, or NULL).  False, after telling the worker, when
 * the symbol is missing.
 */
static bool
child_lookup(void *lib, const struct run_ctx *ctx, uint32_t pos, int msgfd, char **cached,
             burst_function *fn)
{
    if (*cached != NULL && strcmp(*cached, ctx->spec->symbol) == 0)
        return true;
    free(*cached);
    *cached = NULL;
    dlerror();
    void *sym = dlsym(lib, ctx->spec->symbol);
    const char *err = dlerror();
    if (sym == NULL) {
        char reason[RUN_REASON_MAX];
        snprintf(reason, sizeof(reason), "symbol '%s' not found in %s: %s",
                 ctx->spec->symbol, ctx->spec->fn_key, err != NULL ? err : "it is NULL");
        child_send_text(msgfd, SO_MSG_LOAD_ERROR, pos, reason);
        return false;
    }
    /* ISO C has no object-to-function pointer conversion; POSIX guarantees
     * the representation, so copy the bits. */
    memcpy(fn, &sym, sizeof(*fn));
    *cached = strdup(ctx->spec->symbol); /* NULL only costs a lookup next time */
    return true;
}

/* An invocation a kept executor reads for itself (struct so_cmd). */
struct so_job {
    struct invoc_spec spec;  /* owned */
    struct input_src *input; /* owned */
    struct run_ctx ctx;      /* points into the two above */
};

/* Waits for the worker's next command.  False at EOF (the worker is done
 * with us, or gone) or on anything but a whole command. */
static bool
child_read_cmd(int cmdfd, struct so_cmd *cmd)
{
    size_t got = 0;
    while (got < sizeof(*cmd)) {
        ssize_t r = read(cmdfd, (char *)cmd + got, sizeof(*cmd) - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return cmd->key[sizeof(cmd->key) - 1] == '\0' && cmd->nheld <= STORE_HELD_MAX;
}

/* Reads the bytes of the objects cmd says follow it and holds them in st.
 * False on EOF or anything else amiss. */
static bool
child_read_held(int cmdfd, const struct so_cmd *cmd, struct store *st)
{
    for (uint32_t i = 0; i < cmd->nheld; i++) {
        size_t len = cmd->held[i].len;
        char *data = malloc(len > 0 ? len : 1);
        if (data == NULL || cmd->held[i].key[sizeof(cmd->held[i].key) - 1] != '\0' ||
            run_read_all(cmdfd, data, len) != 0) {
            free(data);
            return false;
        }
        if (store_hold(st, cmd->held[i].key, data, len) != 0)
            return false;
    }
    return true;
}

/*
 * Reads the spec the worker names in cmd from st, as the worker did, and
 * prepares its inputs.  It must be the invocation the worker described, of
 * the library this process loaded (fn_key).  Returns 0 with job filled in
 * (release with child_job_free), or -1.
 */
static int
child_job_load(struct store *st, const char *fn_key, const struct so_cmd *cmd,
               struct so_job *job)
{
    char *buf = NULL;
    size_t len = 0;
    memset(job, 0, sizeof(*job));
    if (store_read(st, cmd->key, 0, STORE_TO_END, &buf, &len) != 0)
        return -1;
    int rc = invoc_spec_decode(buf, len, &job->spec);
    free(buf);
    if (rc != 0)
        return -1;
    const struct invoc_spec *spec = &job->spec;
    if (spec->fn_kind != BURST_FN_SO || spec->fn_key == NULL ||
        strcmp(spec->fn_key, fn_key) != 0 || spec->job != cmd->job ||
        spec->dispatch != cmd->dispatch || cmd->inv >= spec->ninvocations ||
        spec->ntasks[cmd->inv] != cmd->ntasks ||
        input_src_new(st, spec, &job->input) != 0) {
        invoc_spec_free(&job->spec);
        return -1;
    }
    job->ctx = (struct run_ctx){
        .spec = spec,
        .tasks = spec->tasks[cmd->inv],
        .ntasks = cmd->ntasks,
        .input = job->input,
        .store = st,
    };
    return 0;
}

static void
child_job_free(struct so_job *job)
{
    input_src_free(job->input);
    invoc_spec_free(&job->spec);
}

/*
 * Between invocations: tells the worker that all ntasks tasks are reported,
 * then frees job (if not NULL) and gives back what the last invocation left
 * in the heap, so that an idle executor holds little.
 */
static void
child_idle(struct so_child_io *io, uint32_t ntasks, struct so_job *job)
{
    child_send(io->msgfd, SO_MSG_IDLE, ntasks, 0, 0, 0, NULL, 0, NULL, 0);
    io->since_wake = 0;
    io->half_woken = false;
    if (job != NULL)
        child_job_free(job);
#ifdef __GLIBC__
    /* glibc keeps freed memory, a 64 MiB input cache included, for reuse;
     * other C libraries have no such call.  Only when there is much to give
     * back: a trim walks the heap, which after a small invocation costs more
     * than the invocation (and competes with burstd for the CPU). */
    if (mallinfo2().fordblks > SO_TRIM_FREE)
        malloc_trim(0);
#endif
}

/*
 * The executor child: loads the library and runs tasks pos.. of ctx in
 * order.  Never returns.  The worker's stdin is replaced by /dev/null and
 * fds 1 and 2 by the log file.  Its memory limit is already in force.  shm
 * is the shared region, fresh (zeroed) for this child.
 *
 * With a command pipe (cmdfd >= 0, --serve) it then stays: it says it is
 * idle and runs each invocation the worker sends (struct so_cmd) in the same
 * way, with the library already loaded, until the pipe ends.  One that
 * cannot take an invocation exits before starting any task of it, and the
 * worker starts a fresh executor instead.
 */
static void __attribute__((noreturn))
so_child(const struct run_ctx *ctx, const char *path, uint32_t pos, int msgfd, int logfd,
         int cmdfd, const struct run_mem *mem, struct so_shm *shm)
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
    char *symbol = NULL;
    burst_function fn;
    if (!child_lookup(lib, ctx, pos, msgfd, &symbol, &fn))
        _exit(0);
    struct so_child_io io = {.shm = shm, .msgfd = msgfd};
    child_run(&io, ctx, fn, pos, logfd, mem);
    if (cmdfd < 0)
        _exit(0);

    /* The spec and input source came with the fork: this process's copies,
     * which nobody else frees.  The spec stays, for the library's key; the
     * input cache goes. */
    const char *fn_key = ctx->spec->fn_key;
    struct store *st = ctx->store;
    input_src_free(ctx->input);
    store_release(st); /* the objects the worker held when it forked us */
    child_idle(&io, ctx->ntasks, NULL);
    for (;;) {
        struct so_cmd cmd;
        struct so_job job;
        if (!child_read_cmd(cmdfd, &cmd))
            _exit(0);
        if (!child_read_held(cmdfd, &cmd, st) || child_job_load(st, fn_key, &cmd, &job) != 0)
            _exit(6);
        if (!child_lookup(lib, &job.ctx, 0, msgfd, &symbol, &fn))
            _exit(0);
        child_run(&io, &job.ctx, fn, 0, logfd, mem);
        store_release(st);
        child_idle(&io, job.ctx.ntasks, &job);
    }
}

/* ---- the worker side ---------------------------------------------------------- */

/* One executor child as the worker sees it. */
struct so_exec {
    pid_t pid;
    int msgfd;          /* owned: read end of the message pipe, -1 at EOF */
    int cmdfd;          /* owned: write end of the command pipe; -1: not kept */
    char *fn_key;       /* owned: the library it loaded, when cmdfd >= 0 */
    int logfd;          /* owned: the child's stdout/stderr file */
    struct so_shm *shm; /* owned: the shared region (munmap) */
    uint64_t tail;      /* our copy of shm->tail: only we write it */
    bool exited;
    int wstatus;
    struct rusage ru;   /* once exited: ru_maxrss is its peak since the last reset */
    struct run_mem mem; /* owned: the executor's memory limit */
    bool killed;
    bool timed_out;     /* we killed it for the timeout of ... */
    uint32_t timed_pos; /* ... this task */
    bool stopped;
    bool broken;   /* it sent or wrote something that makes no sense */
    bool nomem;    /* we could not store what it sent */
    bool progress; /* we took at least one task's end from it */
    bool doubt;    /* alive, but not to be trusted with another invocation */
    bool reused;   /* kept from an earlier invocation and handed this one */
    bool idle;     /* it reported every task and waits for a command */
    /* Since when its start times are believed: its fork, or the command
     * that handed it this invocation. */
    int64_t spawned_ms;
    /* The worker's own view of the running task, against a start time the
     * child may have scribbled over: seen_cur was first seen at seen_ms. */
    uint64_t seen_cur;
    int64_t seen_ms;
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
    uint32_t pos; /* the next task to report (and to run, for a new child) */
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

/* Whether key names a library by its content (invoc_key_fn of a SHA-256:
 * "fn/<64 hex digits>.so"), so that the same key is the same library. */
static bool
so_key_by_content(const char *key)
{
    size_t n = strlen(key);
    if (n != 3 + 64 + 3 || strncmp(key, "fn/", 3) != 0 || strcmp(key + n - 3, ".so") != 0)
        return false;
    return strspn(key + 3, "0123456789abcdef") == 64;
}

/*
 * Opens the command pipe of an executor that may be kept for the next
 * invocation (--serve, a library named by its content): c[0] for the child,
 * c[1] for ex, non-blocking, since a child that stopped reading must not
 * hang the worker.  c stays {-1, -1} when it is not to be kept, or when the
 * pipe cannot be had (it is then simply not kept).
 */
static void
so_cmd_pipe(const struct so_run *sr, int c[2], char **fn_key)
{
    const struct run_ctx *ctx = sr->ctx;
    c[0] = c[1] = -1;
    *fn_key = NULL;
    if (ctx->spec_key == NULL || strlen(ctx->spec_key) > SO_KEY_MAX ||
        !so_key_by_content(ctx->spec->fn_key))
        return;
    *fn_key = strdup(ctx->spec->fn_key);
    if (*fn_key == NULL || pipe2(c, O_CLOEXEC) != 0 || run_set_nonblock(c[1]) != 0) {
        if (c[0] >= 0) {
            close(c[0]);
            close(c[1]);
        }
        c[0] = c[1] = -1;
        free(*fn_key);
        *fn_key = NULL;
    }
}

/* Forks an executor child for the tasks from sr->pos on.  Returns 0 with ex
 * filled in (its fds, region and memory limit owned by ex: the caller
 * releases them with so_exec_end after supervising), or -errno with
 * nothing left open. */
static int
so_spawn(struct so_run *sr, const char *path, struct so_exec *ex)
{
    int p[2], c[2];
    char *fn_key;
    struct run_mem mem;
    /* A fresh region per child: it starts with an empty ring and no task. */
    struct so_shm *shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED)
        return -errno;
    int logfd = so_memfd();
    if (logfd < 0) {
        munmap(shm, sizeof(*shm));
        return logfd;
    }
    if (pipe2(p, O_CLOEXEC) != 0) {
        int rc = -errno;
        close(logfd);
        munmap(shm, sizeof(*shm));
        return rc;
    }
    so_cmd_pipe(sr, c, &fn_key);
    run_mem_prepare(&mem, sr->ctx->spec->memory_mb, true);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        run_mem_release(&mem);
        if (c[0] >= 0) {
            close(c[0]);
            close(c[1]);
        }
        free(fn_key);
        close(p[0]);
        close(p[1]);
        close(logfd);
        munmap(shm, sizeof(*shm));
        return rc;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* Also PR_SET_PDEATHSIG: a kept executor never outlives the
         * worker, even one killed outright; the command pipe's EOF ends
         * it when the worker exits. */
        run_child_setup(parent, true);
        close(p[0]);
        /* There is no exec to close these: the end of the pipe must be
         * the worker's alone for its EOF to come. */
        if (c[1] >= 0)
            close(c[1]);
        /* Limited before the library is even loaded: its constructors
         * count too. */
        run_mem_child(&mem);
        so_child(sr->ctx, path, sr->pos, p[1], logfd, c[0], &mem, shm);
    }
    if (c[0] >= 0)
        close(c[0]);
    setpgid(pid, pid);
    run_mem_attach(&mem, pid);
    /* The tasks are not announced one by one any more: the cgroup's OOM
     * kills are counted from here, and again after each verdict. */
    run_mem_task_start(&mem);
    close(p[1]);
    run_set_nonblock(p[0]);
    *ex = (struct so_exec){.pid = pid,
                           .msgfd = p[0],
                           .cmdfd = c[1],
                           .fn_key = fn_key,
                           .logfd = logfd,
                           .shm = shm,
                           .mem = mem,
                           .spawned_ms = run_now_ms()};
    return 0;
}

static void
so_kill(struct so_exec *ex)
{
    if (!ex->killed && !ex->exited)
        kill(-ex->pid, SIGKILL);
    ex->killed = true;
}

/* Ends the child of ex, if it still runs, reaps it and releases everything
 * ex owns. */
static void
so_exec_end(struct so_exec *ex)
{
    if (!ex->exited) {
        /* Even when killed already: it has not been reaped. */
        kill(-ex->pid, SIGKILL);
        if (run_reap(ex->pid, true, &ex->wstatus, &ex->ru) == 1)
            ex->exited = true;
    }
    if (ex->msgfd >= 0)
        close(ex->msgfd);
    ex->msgfd = -1;
    if (ex->cmdfd >= 0)
        close(ex->cmdfd);
    ex->cmdfd = -1;
    free(ex->payload);
    ex->payload = NULL;
    free(ex->fn_key);
    ex->fn_key = NULL;
    run_mem_release(&ex->mem);
    close(ex->logfd);
    munmap(ex->shm, sizeof(*ex->shm));
    ex->shm = NULL;
}

/* Stops trusting a child that sent or wrote what cannot be taken: the task
 * it owes fails, and a new child continues after it. */
static void
so_give_up(struct so_exec *ex, bool nomem)
{
    ex->broken = !nomem;
    ex->nomem = nomem;
    so_kill(ex);
    if (ex->msgfd >= 0)
        close(ex->msgfd);
    ex->msgfd = -1;
}

/* Reports the end of task pos (the next one), as the child described it
 * in a ring record or a DONE message. */
static void
so_done(struct so_run *sr, struct so_exec *ex, uint32_t pos, int32_t rc, uint32_t flags,
        uint64_t mem_kib, const char *result, size_t result_len, const char *log,
        size_t log_len)
{
    char reason[RUN_REASON_MAX];
    int status = INVOC_OK;
    int exit_status = rc;
    reason[0] = '\0';
    if (flags & SO_DONE_TOO_LARGE) {
        status = INVOC_ERROR;
        exit_status = -1;
        snprintf(reason, sizeof(reason), "result too large (more than %u MiB)",
                 RUN_RESULT_MAX / (1024u * 1024u));
    } else if ((flags & SO_DONE_NOMEM) && ex->mem.mode != RUN_MEM_NONE) {
        /* The result itself did not fit in the task's memory. */
        struct invoc_result r = {.exit_status = -1};
        run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
        status = r.status;
        exit_status = -1;
    } else if (flags & SO_DONE_NOMEM) {
        status = INVOC_ERROR;
        exit_status = -1;
        snprintf(reason, sizeof(reason), "out of memory collecting the result");
    } else if (rc != 0) {
        status = INVOC_FAILED;
        snprintf(reason, sizeof(reason), "function returned %d", (int)rc);
        /* A careful function returns an error when malloc fails.  mem_kib
         * is 0 when the peak was not measured. */
        if (run_mem_exceeded(&ex->mem, mem_kib)) {
            struct invoc_result r = {.exit_status = exit_status};
            run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
            status = r.status;
        }
        /* The next failure is judged by the OOM kills after this one. */
        run_mem_task_start(&ex->mem);
    }
    /* A process that ran out of memory once is not handed another
     * invocation: what it holds may be what the next one lacks. */
    if (status == INVOC_OOM)
        ex->doubt = true;
    ex->progress = true;
    sr->pos = pos + 1;
    so_report(sr, pos, status, exit_status, 0, reason, result, result_len, log, log_len);
}

/* A task the child could not start (its input, say). */
static void
so_task_error(struct so_run *sr, struct so_exec *ex, uint32_t pos, const char *text,
              size_t len)
{
    char reason[RUN_REASON_MAX];
    snprintf(reason, sizeof(reason), "%.*s", (int)len, text);
    ex->progress = true;
    sr->pos = pos + 1;
    so_report(sr, pos, INVOC_ERROR, -1, 0, reason, NULL, 0, NULL, 0);
}

/*
 * Reports the tasks the ring holds, in order, while they are the next to
 * report: a record further on waits for the pipe message of the task before
 * it.  Every record is checked before use; one that makes no sense gives up
 * on the child.
 */
static void
so_drain(struct so_run *sr, struct so_exec *ex)
{
    if (ex->broken || ex->nomem)
        return;
    /* Acquire: the records it covers are visible. */
    uint64_t head = atomic_load_explicit(&ex->shm->head, memory_order_acquire);
    uint64_t tail = ex->tail;
    if (head - tail > SO_RING_SIZE) {
        so_give_up(ex, false);
        return;
    }
    while (tail != head && sr->fatal == 0) {
        size_t off = (size_t)(tail % SO_RING_SIZE);
        size_t room = SO_RING_SIZE - off;
        struct so_rec rec = {0};
        if (room >= sizeof(rec))
            memcpy(&rec, ex->shm->ring + off, sizeof(rec)); /* read once */
        if (room < sizeof(rec) || rec.kind == SO_REC_PAD) {
            if (room > head - tail)
                goto broken;
            tail += room;
            continue;
        }
        size_t size = SO_REC_SIZE(rec.len1, rec.len2);
        bool valid =
            (rec.kind == SO_REC_DONE && rec.len1 <= RUN_RESULT_MAX &&
             rec.len2 <= INVOC_LOG_CAP) ||
            (rec.kind == SO_REC_TASK_ERROR && rec.len1 < RUN_REASON_MAX && rec.len2 == 0);
        if (!valid || size > room || size > head - tail || rec.pos < sr->pos ||
            rec.pos >= sr->ctx->ntasks)
            goto broken;
        if (rec.pos > sr->pos)
            break; /* a task before it comes through the pipe */
        const char *p1 = (const char *)ex->shm->ring + off + sizeof(rec);
        if (rec.kind == SO_REC_DONE)
            so_done(sr, ex, rec.pos, rec.rc, rec.flags, rec.mem_kib, p1, rec.len1,
                    p1 + rec.len1, rec.len2);
        else
            so_task_error(sr, ex, rec.pos, p1, rec.len1);
        tail += size;
    }
    ex->tail = tail;
    /* Release: we are done reading what the child may now overwrite. */
    atomic_store_explicit(&ex->shm->tail, tail, memory_order_release);
    return;
broken:
    ex->tail = tail;
    so_give_up(ex, false);
}

/* Acts on one complete message. */
static void
so_handle(struct so_run *sr, struct so_exec *ex)
{
    const struct so_msg_hdr *h = &ex->hdr;
    char reason[RUN_REASON_MAX];
    if (ex->broken || ex->nomem || sr->fatal != 0)
        return;

    switch (h->type) {
    case SO_MSG_WAKE:
        return; /* the caller drains the ring */
    case SO_MSG_DONE:
    case SO_MSG_TASK_ERROR:
        /* The tasks before it are in the ring. */
        so_drain(sr, ex);
        if (ex->broken || sr->fatal != 0)
            return;
        if (h->pos != sr->pos)
            break;
        if (h->type == SO_MSG_DONE)
            so_done(sr, ex, h->pos, h->rc, h->flags, h->mem_kib, ex->payload,
                    (size_t)h->len1, ex->payload + h->len1, (size_t)h->len2);
        else
            so_task_error(sr, ex, h->pos, ex->payload, (size_t)h->len1);
        return;
    case SO_MSG_LOAD_ERROR:
        if (ex->progress ||
            atomic_load_explicit(&ex->shm->cur, memory_order_relaxed) != 0)
            break;
        snprintf(reason, sizeof(reason), "%.*s", (int)h->len1, ex->payload);
        ex->progress = true;
        so_fail_rest(sr, reason);
        return;
    case SO_MSG_IDLE:
        /* Only a child with a command pipe waits, and only once every task
         * is reported: the ring's last records come first. */
        so_drain(sr, ex);
        if (ex->broken || sr->fatal != 0)
            return;
        if (ex->cmdfd < 0 || h->pos != sr->ctx->ntasks || sr->pos != sr->ctx->ntasks ||
            atomic_load_explicit(&ex->shm->head, memory_order_acquire) != ex->tail)
            break;
        ex->idle = true;
        return;
    }
    so_give_up(ex, false);
}

/* Checks a header before its payload is read: every length is bounded. */
static bool
so_hdr_valid(const struct so_msg_hdr *h)
{
    switch (h->type) {
    case SO_MSG_WAKE:
    case SO_MSG_IDLE:
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

/* Reads what the pipe holds, handling each message as it completes. */
static void
so_receive(struct so_run *sr, struct so_exec *ex)
{
    /* Whatever an idle child sends after IDLE is not read here: it makes the
     * child unfit for the next invocation (so_warm_take). */
    while (ex->msgfd >= 0 && sr->fatal == 0 && !ex->idle) {
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
 * Which task the child is running, if it has not been reported: sets *pos
 * and returns true.  A task is running from the header's cur until the
 * worker has reported it; between tasks (loading the next input) the child
 * runs none.
 */
static bool
so_running(const struct so_run *sr, const struct so_exec *ex, uint32_t *pos)
{
    /* Acquire: pairs with the child's release, so start_ms and the rest
     * are this task's (or a later one's, which only errs late). */
    uint64_t cur = atomic_load_explicit(&ex->shm->cur, memory_order_acquire);
    if (cur == 0 || cur - 1 < sr->pos || cur - 1 >= sr->ctx->ntasks)
        return false;
    *pos = (uint32_t)(cur - 1);
    return true;
}

/*
 * When the running task's time is up, or -1 without a timeout.  With no task
 * running it is a timeout from now: a task that starts later has a later
 * deadline, and the worker looks again then.  *pos is the task the
 * deadline belongs to (valid when *running).
 */
static int64_t
so_deadline(const struct so_run *sr, struct so_exec *ex, bool *running, uint32_t *pos)
{
    uint64_t ms = sr->ctx->spec->timeout_ms;
    int64_t later = run_deadline(ms);
    *running = false;
    if (later < 0)
        return -1;
    if (!so_running(sr, ex, pos))
        return later;
    *running = true;
    int64_t now = run_now_ms();
    if (ex->seen_cur != (uint64_t)*pos + 1) {
        ex->seen_cur = (uint64_t)*pos + 1;
        ex->seen_ms = now;
    }
    /* The child's start time is exact, but it lives in memory the function
     * can write: one outside [spawn, now] is not believed, and when the
     * worker saw the task start is used instead (later, never earlier). */
    int64_t start = atomic_load_explicit(&ex->shm->start_ms, memory_order_relaxed);
    if (start < ex->spawned_ms || start > now)
        start = ex->seen_ms;
    return start + (int64_t)ms;
}

/*
 * Supervises one executor child until it has ended and its pipe is drained,
 * or until it is idle (it reported every task and waits for the next
 * invocation).  Afterwards reports what the ring still holds and accounts
 * for the task that was in flight, if any.  Returns true when the worker was
 * told to stop.
 */
static bool
so_supervise(struct so_run *sr, struct so_exec *ex)
{
    int64_t grace = -1;
    for (;;) {
        if (ex->idle)
            return false; /* nothing is left to account for */
        if (!ex->exited && run_reap(ex->pid, false, &ex->wstatus, &ex->ru) == 1) {
            ex->exited = true;
            grace = run_now_ms() + RUN_DRAIN_GRACE_MS;
        }
        if (ex->exited && (ex->msgfd < 0 || run_now_ms() >= grace))
            break;
        int64_t deadline = -1;
        if (!ex->exited && !ex->killed) {
            bool running;
            uint32_t pos = 0;
            if (sr->ctx->spec->timeout_ms != 0)
                so_drain(sr, ex); /* a finished task is not timed */
            deadline = so_deadline(sr, ex, &running, &pos);
            if (run_stop_requested()) {
                ex->stopped = true;
                so_kill(ex);
            } else if (sr->fatal != 0) {
                so_kill(ex);
            } else if (running && run_now_ms() >= deadline) {
                ex->timed_out = true;
                ex->timed_pos = pos;
                so_kill(ex);
            }
        }
        struct pollfd pfd = {.fd = ex->msgfd, .events = POLLIN};
        int64_t wake = ex->exited ? grace : (ex->killed ? -1 : deadline);
        int n = run_poll(&pfd, ex->msgfd >= 0 ? 1 : 0, wake);
        if (n < 0) {
            so_kill(ex);
            if (!ex->exited && run_reap(ex->pid, true, &ex->wstatus, &ex->ru) == 1)
                ex->exited = true;
            break;
        }
        if (n > 0)
            so_receive(sr, ex);
        /* Records after a task whose message is still in the pipe wait for
         * it: so_drain stops at them. */
        so_drain(sr, ex);
    }
    if (ex->msgfd >= 0)
        close(ex->msgfd);
    ex->msgfd = -1;
    free(ex->payload);
    ex->payload = NULL;
    /* Every task the child finished is in the ring or was in the pipe: a
     * record left over after this cannot be explained. */
    so_drain(sr, ex);
    if (!ex->broken && !ex->nomem && sr->fatal == 0 &&
        atomic_load_explicit(&ex->shm->head, memory_order_acquire) != ex->tail)
        ex->broken = true;

    if (ex->stopped || sr->fatal != 0)
        return ex->stopped;
    if (sr->pos >= sr->ctx->ntasks)
        return false;

    char reason[RUN_REASON_MAX];
    uint32_t run_pos = 0;
    bool running = so_running(sr, ex, &run_pos);
    if (ex->reused && !ex->progress &&
        atomic_load_explicit(&ex->shm->cur, memory_order_relaxed) == 0) {
        /* A kept executor that ended before starting any task of this
         * invocation (it could not read the spec, an earlier invocation
         * spent its memory, it misbehaved since): no task of this one is to
         * blame, and a fresh executor runs it. */
    } else if (ex->broken || ex->nomem) {
        /* Whatever it was doing, the next task is charged, so that every
         * child makes progress. */
        snprintf(reason, sizeof(reason), "%s",
                 ex->nomem ? "out of memory receiving the result"
                           : "the executor process misbehaved");
        uint32_t pos = sr->pos++;
        so_report(sr, pos, INVOC_ERROR, -1, 0, reason, NULL, 0, NULL, 0);
    } else if (running && run_pos != sr->pos) {
        /* cur ahead of the results: only a scribbled header does that. */
        snprintf(reason, sizeof(reason), "the executor process misbehaved");
        uint32_t pos = sr->pos++;
        so_report(sr, pos, INVOC_ERROR, -1, 0, reason, NULL, 0, NULL, 0);
    } else if (running && ex->timed_out && ex->timed_pos != run_pos) {
        /* We killed it for a task that finished at that very moment: the
         * one it had just started is not at fault, and the next child runs
         * it again. */
    } else if (running) {
        /* The child died or was killed in the middle of task run_pos. */
        static char logbuf[INVOC_LOG_CAP];
        size_t loglen = log_tail(ex->logfd, logbuf);
        struct invoc_result r = {.reason = reason};
        run_describe_wait(ex->wstatus, &r, reason, sizeof(reason));
        if (ex->timed_out) {
            r.status = INVOC_TIMEOUT;
            snprintf(reason, sizeof(reason), "timed out after %" PRIu64 " ms",
                     sr->ctx->spec->timeout_ms);
        } else {
            if (r.status == INVOC_OK || r.status == INVOC_FAILED) {
                /* The function called exit(): the task did not complete. */
                r.status = INVOC_FAILED;
                snprintf(reason, sizeof(reason),
                         "the function exited the process with status %d", r.exit_status);
            }
            /* Whatever killed it (abort() after malloc failed, a crash on
             * its NULL, the kernel's OOM killer), the peak tells. */
            uint32_t flags =
                atomic_load_explicit(&ex->shm->start_flags, memory_order_relaxed);
            uint64_t rss = atomic_load_explicit(&ex->shm->rss_kib, memory_order_relaxed);
            uint64_t maxrss = ex->ru.ru_maxrss > 0 ? (uint64_t)ex->ru.ru_maxrss : 0;
            uint64_t grew = (flags & SO_START_PEAK) && maxrss > rss ? maxrss - rss : 0;
            if (run_mem_exceeded(&ex->mem, grew))
                run_mem_describe(&ex->mem, &r, reason, sizeof(reason));
        }
        sr->pos = run_pos + 1;
        so_report(sr, run_pos, r.status, r.exit_status, r.signal, reason, NULL, 0, logbuf,
                  loglen);
    } else if (!ex->progress &&
               atomic_load_explicit(&ex->shm->cur, memory_order_relaxed) == 0) {
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

/*
 * The executor kept, idle, after an invocation for the next one (--serve).
 * There is at most one: a worker runs one invocation at a time, and a kept
 * executor is ended before another is forked (it would inherit the kept
 * one's pipes).
 */
static struct so_exec so_warm;
static bool so_warm_kept;

/*
 * Whether the kept executor ex is still what it was when it went idle: alive,
 * silent since, and its ring empty.
 */
static bool
so_exec_quiet(struct so_exec *ex)
{
    int rc = run_reap(ex->pid, false, &ex->wstatus, &ex->ru);
    if (rc != 0) {
        ex->exited = rc == 1;
        return false;
    }
    struct pollfd pfd = {.fd = ex->msgfd, .events = POLLIN};
    if (poll(&pfd, 1, 0) != 0)
        return false; /* it wrote after IDLE, or its end is closed */
    return atomic_load_explicit(&ex->shm->head, memory_order_acquire) == ex->tail;
}

/*
 * Hands the invocation of sr to the idle executor ex: a fresh start for
 * everything the worker judges it by, then the command.  Returns 0, or -1
 * when the command could not be written whole.
 */
static int
so_resume(struct so_run *sr, struct so_exec *ex)
{
    const struct run_ctx *ctx = sr->ctx;
    struct so_cmd cmd;
    memset(&cmd, 0, sizeof(cmd)); /* padding too: it goes down the pipe */
    cmd.job = ctx->spec->job;
    cmd.dispatch = ctx->spec->dispatch;
    cmd.inv = ctx->inv;
    cmd.ntasks = ctx->ntasks;
    memcpy(cmd.key, ctx->spec_key, strlen(ctx->spec_key)); /* checked at spawn */
    /* The child is blocked reading its command pipe and writes none of
     * these before it has read the command. */
    atomic_store_explicit(&ex->shm->cur, 0, memory_order_relaxed);
    atomic_store_explicit(&ex->shm->start_ms, 0, memory_order_relaxed);
    atomic_store_explicit(&ex->shm->rss_kib, 0, memory_order_relaxed);
    atomic_store_explicit(&ex->shm->start_flags, 0, memory_order_relaxed);
    run_mem_task_start(&ex->mem);
    ex->killed = ex->timed_out = ex->stopped = false;
    ex->broken = ex->nomem = ex->progress = ex->doubt = ex->idle = false;
    ex->reused = true;
    ex->timed_pos = 0;
    ex->seen_cur = 0;
    ex->seen_ms = 0;
    ex->spawned_ms = run_now_ms();
    const struct store_held *held[STORE_HELD_MAX];
    for (int i = 0; i < STORE_HELD_MAX; i++) {
        const struct store_held *h = &ctx->store->held[i];
        if (h->key[0] == '\0')
            continue;
        if (h->len > UINT32_MAX)
            return -1;
        held[cmd.nheld] = h;
        memcpy(cmd.held[cmd.nheld].key, h->key, sizeof(h->key));
        cmd.held[cmd.nheld].len = (uint32_t)h->len;
        cmd.nheld++;
    }
    /* The command and the objects in one system call: the child, woken by
     * the command, then finds the rest already in the pipe instead of
     * sleeping again for each piece.  The pipe is empty (the child is idle
     * and silent), so at least the command goes in whole. */
    struct iovec iov[1 + STORE_HELD_MAX];
    iov[0] = (struct iovec){&cmd, sizeof(cmd)};
    for (uint32_t i = 0; i < cmd.nheld; i++)
        iov[1 + i] = (struct iovec){held[i]->data, held[i]->len};
    ssize_t w;
    do
        w = writev(ex->cmdfd, iov, (int)(1 + cmd.nheld));
    while (w < 0 && errno == EINTR);
    if (w < (ssize_t)sizeof(cmd))
        return -1;
    size_t done = (size_t)w - sizeof(cmd);
    /* What did not fit, the child reads as the pipe (not blocking on our
     * side) makes room: a spec of thousands of tasks is larger than the
     * pipe holds.  A child that stops reading for SO_CMD_WAIT_MS is given
     * up on, and a fresh one forked. */
    int64_t deadline = run_now_ms() + SO_CMD_WAIT_MS;
    for (uint32_t i = 0; i < cmd.nheld; i++) {
        size_t off = done < held[i]->len ? done : held[i]->len;
        done -= off;
        while (off < held[i]->len) {
            w = write(ex->cmdfd, held[i]->data + off, held[i]->len - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                struct pollfd p = {.fd = ex->cmdfd, .events = POLLOUT};
                if (run_now_ms() >= deadline || run_stop_requested() ||
                    run_poll(&p, 1, deadline) < 0)
                    return -1;
                continue;
            }
            if (w <= 0)
                return -1;
            off += (size_t)w;
        }
    }
    return 0;
}

/*
 * Takes the kept executor for the invocation of sr when it loaded the same
 * library, has the memory limit a new one would get and is in no doubt;
 * then it has been handed the invocation and is in *ex, owned by the caller.
 * Otherwise it is ended, and false returned.
 */
static bool
so_warm_take(struct so_run *sr, struct so_exec *ex)
{
    if (!so_warm_kept)
        return false;
    *ex = so_warm; /* ownership passes to the caller, or to so_exec_end */
    so_warm_kept = false;
    const struct run_ctx *ctx = sr->ctx;
    if (ctx->spec_key != NULL && strlen(ctx->spec_key) <= SO_KEY_MAX &&
        strcmp(ex->fn_key, ctx->spec->fn_key) == 0 &&
        run_mem_same(&ex->mem, ctx->spec->memory_mb) && so_exec_quiet(ex) &&
        so_resume(sr, ex) == 0)
        return true;
    so_exec_end(ex);
    return false;
}

void
run_so_shutdown(void)
{
    if (so_warm_kept)
        so_exec_end(&so_warm);
    so_warm_kept = false;
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

    /* The kept executor, if it fits, runs the invocation first; any other
     * executor is forked for it, as is one after a kept one that failed. */
    struct so_exec ex;
    bool have = so_warm_take(&sr, &ex);
    while (sr.pos < ctx->ntasks && sr.fatal == 0 && !run_stop_requested()) {
        if (!have) {
            rc = so_spawn(&sr, path, &ex);
            if (rc != 0) {
                snprintf(reason, sizeof(reason), "cannot start the executor process: %s",
                         strerror(-rc));
                so_fail_rest(&sr, reason);
                break;
            }
            have = true;
        }
        bool stopped = so_supervise(&sr, &ex);
        if (ex.idle && !ex.doubt && !stopped && sr.fatal == 0 && !run_stop_requested()) {
            so_warm = ex; /* ownership passes to so_warm */
            so_warm_kept = true;
            have = false;
            break; /* idle: every task is reported */
        }
        so_exec_end(&ex);
        have = false;
        if (stopped)
            break;
    }
    if (have)
        so_exec_end(&ex); /* handed the invocation, but stopped before it ran */
    free(path);
    return sr.fatal;
}
