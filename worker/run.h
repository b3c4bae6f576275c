/*
 * worker/run.h - private declarations shared by burst-worker's files.
 *
 * The flow (main.c): read the spec, then hand the invocation's tasks to the
 * runner of the function's kind (run_exec.c: a shell command per task;
 * run_so.c: a C function called in an executor child), which loads each
 * task's input (input.c) and reports each finished task, in order, through
 * run_ctx.done.  run.c holds what both runners need: signal handling,
 * waiting with a deadline, and turning a wait status into a task status;
 * run_mem.c the per-task memory limit and the out-of-memory verdict.
 */
#ifndef BURST_WORKER_RUN_H
#define BURST_WORKER_RUN_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "invoc.h"
#include "store.h"

/* A task's result above this fails the task (INVOC_ERROR "result too large"). */
#define RUN_RESULT_MAX (1024u * 1024u * 1024u)
/* A single task input (or reducer part) above this is refused. */
#define RUN_INPUT_MAX (1024ull * 1024u * 1024u)
/* input_prefetch reads at most this many bytes of data, and the index
 * entries of at most INPUT_BULK_TASKS tasks, at a time: enough to make the
 * reads of an invocation of small tasks a handful, little enough not to
 * crowd the function's own memory. */
#define INPUT_BULK_MAX (64ull * 1024u * 1024u)
#define INPUT_BULK_TASKS 65536u
/* All reducer parts together. */
#define RUN_REDUCE_MAX (4ull * 1024u * 1024u * 1024u)
/* Room for a reason text, NUL included. */
#define RUN_REASON_MAX 1024
/* How long to keep draining a task's pipes after its process ended and its
 * process group was killed: only a process that left the group can still
 * hold them open, and we do not wait for it. */
#define RUN_DRAIN_GRACE_MS 1000

/* ---- task inputs (input.c) --------------------------------------------------- */

/* One task's input: a map task has one part, a reducer one per map result. */
struct run_input {
    struct iovec *parts; /* owned, and so is every parts[i].iov_base ... */
    size_t nparts;
    uint64_t total; /* sum of the parts' lengths */
    /* ... unless the bytes are borrowed from the input source's bulk cache
     * (input_prefetch): then they stay valid until the next input_prefetch
     * or input_src_free. */
    bool borrowed;
};

struct input_src;

/* Prepares to read the inputs of spec's job from st (both borrowed, and must
 * outlive the source).  Returns 0 or -ENOMEM; *out is freed with
 * input_src_free. */
int input_src_new(struct store *st, const struct invoc_spec *spec,
                  struct input_src **out);
void input_src_free(struct input_src *src);

/*
 * Before input_load of tasks[0] (the next task to run; tasks[1 .. n) follow
 * it): makes the source read, in one ranged read each, the index entries of
 * the run of consecutive task indexes that starts at tasks[0] and, when
 * their data is one range of at most INPUT_BULK_MAX bytes (less under a
 * small memory limit), that data too.  Does nothing when the cache already
 * covers tasks[0], for a reducer, or when tasks[0] and tasks[1] are not
 * consecutive.  Never fails: whatever it could not read, input_load reads
 * per task as before, and reports each task's error there.
 */
void input_prefetch(struct input_src *src, const struct invoc_task *tasks, uint32_t n);

/*
 * Loads the input of task task_index (for a reduce spec: the manifest's parts)
 * with ranged reads.  Returns 0 and fills *in (release with input_release),
 * or a negative code with a sentence for the task's reason in reason.
 */
int input_load(struct input_src *src, uint32_t task_index, struct run_input *in,
               char *reason, size_t reason_size);
void input_release(struct run_input *in);

/* ---- running an invocation (run_exec.c, run_so.c) ----------------------------- */

struct run_ctx {
    const struct invoc_spec *spec;  /* borrowed */
    const struct invoc_task *tasks; /* borrowed: the invocation's tasks, in order */
    uint32_t ntasks;
    struct input_src *input; /* borrowed */
    struct store *store;     /* borrowed: the so runner fetches its library */
    /* Called once for every task that ended, in execution order.  r and all
     * it points to are borrowed for the duration of the call.  A non-zero
     * return stops the run, and the runner returns that value. */
    int (*done)(void *arg, const struct invoc_result *r);
    void *arg;
    /* --serve only, NULL otherwise: the key the spec was read from and the
     * invocation's index in it.  With them the so runner may keep its
     * executor for the next invocation, which then reads its spec itself. */
    const char *spec_key; /* borrowed */
    uint32_t inv;
};

/*
 * Run every task of ctx in order and report each through ctx->done.  A task
 * that cannot even be started is reported with INVOC_ERROR, so these return
 * 0 both when all tasks ran and when a stop was requested (SIGTERM: the task
 * in flight is killed and not reported).  A negative return is what done
 * returned.
 */
int run_exec(const struct run_ctx *ctx);
int run_so(const struct run_ctx *ctx);
/* Ends the so executor run_so kept for a next invocation, if any (--serve,
 * before the worker exits). */
void run_so_shutdown(void);

/* ---- memory limits (run_mem.c) ---------------------------------------------------- */

/* How a task process's memory is limited (run_mem.c explains both). */
enum run_mem_mode {
    RUN_MEM_NONE = 0,   /* memory_mb 0: no limit */
    RUN_MEM_CGROUP = 1, /* its own cgroup v2 with memory.max */
    RUN_MEM_RLIMIT = 2, /* RLIMIT_AS */
};

/* The limit of one task process (an exec task, or an so executor). */
struct run_mem {
    uint32_t limit_mb;
    bool relative;     /* RLIMIT_AS above the process's size when applied */
    int mode;          /* enum run_mem_mode: what the process got */
    char *cgroup;      /* owned: its cgroup directory, or NULL */
    int sync_rd;       /* owned: the child waits here for the parent's word */
    int sync_wr;       /* owned */
    uint64_t oom_seen; /* the cgroup's oom_kill count when the task started */
};

/*
 * Before fork: sets up the limit of limit_mb MiB (0: none).  Uses a cgroup
 * when the system delegates one (creating it now), else RLIMIT_AS; never
 * fails, since RLIMIT_AS is always there.  relative: the rlimit counts from
 * the child's size when it applies it (the so executor, which carries the
 * worker's mappings).  Release with run_mem_release in every case.
 */
void run_mem_prepare(struct run_mem *m, uint32_t limit_mb, bool relative);
/* In the child, after fork and before running anything of the task: waits
 * until the parent has moved it into the cgroup, or applies RLIMIT_AS. */
void run_mem_child(const struct run_mem *m);
/* In the parent right after fork: moves pid into the cgroup and lets the
 * child go on (falling back to RLIMIT_AS when the move fails). */
void run_mem_attach(struct run_mem *m, pid_t pid);
/* Marks the start of a task in a process that runs several (so executor). */
void run_mem_task_start(struct run_mem *m);
/* Whether a task that failed ran out of memory: the cgroup's OOM kills, or
 * under RLIMIT_AS its peak resident memory (peak_kib, KiB) near the limit.
 * Call before run_mem_release. */
bool run_mem_exceeded(const struct run_mem *m, uint64_t peak_kib);
/* Sets r to INVOC_OOM with the reason "out of memory (limit N MiB)";
 * exit_status and signal are left as they were. */
void run_mem_describe(const struct run_mem *m, struct invoc_result *r, char *reason,
                      size_t size);
/* Whether a process that got m (after run_mem_attach) has the limit that
 * run_mem_prepare(limit_mb) would give a new one: the same size, by the
 * same mechanism. */
bool run_mem_same(const struct run_mem *m, uint32_t limit_mb);
/* Kills what is left in the cgroup, removes it, closes the pipe.  Safe to
 * call twice. */
void run_mem_release(struct run_mem *m);
/* In the so executor: resets the kernel's peak resident set of the process
 * to its current size, stored in *rss_kib.  False when it cannot. */
bool run_mem_peak_reset(uint64_t *rss_kib);
/* The process's peak resident set (VmHWM) in KiB; 0 when unknown. */
uint64_t run_mem_peak_read(void);

/* ---- shared plumbing (run.c) ---------------------------------------------------- */

/* Blocks SIGTERM, SIGINT and SIGCHLD everywhere but inside run_poll, where
 * they interrupt the wait; ignores SIGPIPE.  Call once, first thing. */
int run_signals_init(void);
/* True once SIGTERM or SIGINT arrived. */
bool run_stop_requested(void);
/* In a freshly forked child: default dispositions, nothing blocked, and
 * SIGKILL when the worker dies.  crash_defaults also restores the default
 * action of the crash signals (undoing any handler a sanitizer installed) so
 * that a crash is seen as the signal it is. */
void run_child_setup(pid_t parent, bool crash_defaults);

/* Milliseconds on the monotonic clock. */
int64_t run_now_ms(void);
/* now + ms, or -1 (no deadline) for 0 or an absurdly large ms. */
int64_t run_deadline(uint64_t ms);
/* ppoll until an fd is ready, a signal arrives or deadline_ms passes (-1: no
 * deadline).  revents are cleared first.  Returns ppoll's count, 0 on signal
 * or deadline, or -errno. */
int run_poll(struct pollfd *fds, nfds_t nfds, int64_t deadline_ms);

/* If child pid has ended: kills what is left of its process group (while
 * the zombie still pins the group id), reaps it, stores its wait status in
 * *wstatus and its resource use in *ru (may be NULL: ru_maxrss is the
 * largest peak of it and its waited-for descendants) and returns 1.
 * Returns 0 while it runs.  block: wait for it. */
int run_reap(pid_t pid, bool block, int *wstatus, struct rusage *ru);

/* Fills r->status, exit_status and signal from a wait status, and writes
 * the reason ("exit status 3", "killed by signal 11 (Segmentation fault)"). */
void run_describe_wait(int wstatus, struct invoc_result *r, char *reason, size_t size);
/* A task that did not succeed always has a reason: r's own, or when it is
 * empty a sentence for its status ("timed out", "out of memory", ...).  The
 * runners pass every result through this before reporting it. */
void run_reason_ensure(struct invoc_result *r);

/* Writes all len bytes to fd, blocking.  Returns 0 or -errno. */
int run_write_all(int fd, const void *data, size_t len);
/* The same for a then b, in one write when the pipe takes both (one
 * wake-up of the reader instead of two). */
int run_write2(int fd, const void *a, size_t alen, const void *b, size_t blen);
/* Reads exactly len bytes from fd (blocking), retrying on EINTR.  Returns
 * 0, -EPIPE at an early EOF, or -errno. */
int run_read_all(int fd, void *data, size_t len);
/* Marks fd non-blocking.  Returns 0 or -errno. */
int run_set_nonblock(int fd);

#endif /* BURST_WORKER_RUN_H */
