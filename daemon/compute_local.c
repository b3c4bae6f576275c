/*
 * daemon/compute_local.c - the local compute backend: every invocation of a
 * dispatch runs in a burst-worker process on this machine (see compute.h for
 * the interface, worker/invoc.h for what a worker does, DESIGN.md for the
 * flow).
 *
 * Workers are kept warm: a worker is started as `burst-worker --serve` and
 * runs one invocation at a time, handed to it on its stdin ("SPEC INDEX",
 * with the spec and the input themselves when the dispatch carries them)
 * and answered on its stdout with the exit status a one-shot worker would
 * have had, and a small output with it (struct wproc below).  A worker
 * that finished goes back to an idle list, by uid, for the next
 * invocation; on this kind of machine a
 * process start costs more than a small invocation.  Idle workers end
 * after WARM_IDLE_MS, beyond WARM_IDLE_MAX, and at close.  While a worker
 * runs an invocation, everything below treats the two as one: its pid is
 * the invocation's, and a deadline, a cancel or close stop the worker
 * itself, which then takes no more work.
 *
 * Each worker runs in its own session (UV_PROCESS_DETACHED): its process
 * group and session ids are its pid.  The worker puts every task in a
 * process group of its own, inside that session, so kill(-pid) reaches the
 * worker but not its tasks; what reaches everything is the session.  Workers
 * get a filtered copy of the daemon's environment: the daemon's own settings
 * and anything that looks like a credential stay here.
 *
 * Nothing a worker started may outlive what it was started for, even when
 * burstd itself is killed outright.  Three layers see to it:
 *
 *  1. A worker dies with burstd.  BURST_PARENT_PID in its environment makes
 *     it ask the kernel for SIGTERM when we die (PR_SET_PDEATHSIG; it checks
 *     getppid() afterwards, so a burstd that died before the prctl is seen
 *     too).  SIGTERM is the worker's "stop": it kills the process group of
 *     the task in flight and writes the output of the tasks it finished, which
 *     the next burstd's reconciliation records instead of running them again.
 *     A task's direct child dies with the worker (the worker sets its own
 *     PDEATHSIG on it).  The variable is only set here: under Code Engine the
 *     worker runs as before.
 *  2. Killing a worker kills its session.  A deadline, a cancel's grace or
 *     close SIGKILLs the worker's group and then every process of its
 *     session, found in /proc, while the worker is not reaped yet: Linux
 *     does not reuse a pid that is still some process's session id, so
 *     while the leader is ours, so is everyone in its session.  A worker
 *     that was asked to stop (a cancel's SIGTERM) or died of a signal
 *     nobody here sent (the OOM killer, a crash) gets the same sweep once
 *     it is reaped, with the checks of (3).  A worker that just finished
 *     is not swept: its tasks' groups are gone, and a /proc scan per
 *     invocation would cost more than what it could find.
 *  3. What a crash left behind is reaped at the next start.  With
 *     compute_local_track(), each running invocation has a record,
 *     <dir>/<pid of its worker>, written when the worker takes it and
 *     emptied when it ends (the file goes when the worker exits): the pid
 *     and start time (field 22 of /proc/<pid>/stat) of the worker and of
 *     this burstd, the boot id and the spec key.  A record still there (and
 *     not empty) at start-up is a
 *     worker whose end nobody saw.  Its session's members are found in /proc
 *     and SIGKILLed if they are a live process of our uid (or of any uid,
 *     for a root burstd: runas.h), started no earlier than the worker,
 *     whose environment carries the invocation's BURST_SPEC and the
 *     worker's BURST_STORAGE (a worker sets BURST_SPEC for the tasks of
 *     each invocation; the worker itself ends by layer 1, and at the EOF
 *     on its stdin that our death makes): once the leader is gone its session id
 *     is only held by survivors, and the environment is what tells them
 *     from a new session that got a recycled id.  The start-up waits until
 *     they are gone, so nothing of the old run writes to storage while the
 *     scheduler reconciles.  A record whose burstd still runs (another
 *     daemon on the same state dir) is left alone; a record from an earlier
 *     boot is simply removed.
 *
 * What escapes: a process that starts a session of its own (setsid), and
 * at start-up one that left its task's process group and cleared its
 * environment; only a cgroup would hold those (README.md, "Guarantees").
 * The record is written just after the invocation is handed over, so a
 * burstd killed in between leaves no record: layer (1) still ends the
 * worker and its task.
 *
 * Callbacks never run inside submit: started_cb, and ended_cb for an
 * invocation that could not be started, are delivered from an idle handle on
 * a later turn of the loop; ended_cb otherwise runs when the worker replies
 * or exits.
 */
#include "compute.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "burst.h"
#include "log.h"
#include "runas.h"

extern char **environ;

/* A circular doubly linked list with a sentinel head. */
struct cl_link {
    struct cl_link *prev, *next;
};

#define CL_CONTAINER(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void
link_init(struct cl_link *head)
{
    head->prev = head->next = head;
}

static bool
link_empty(const struct cl_link *head)
{
    return head->next == head;
}

static void
link_add_tail(struct cl_link *head, struct cl_link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Removes l from its list; safe on a node that is in no list. */
static void
link_remove(struct cl_link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

enum inv_state {
    INV_NEW,     /* not spawned yet */
    INV_RUNNING, /* the process is alive (or not reaped yet) */
    INV_FAILED,  /* could not be spawned; ended_cb pending */
    INV_ENDED,   /* ended_cb ran */
};

struct local_dispatch;

struct wproc;

struct local_inv {
    struct wproc *w;  /* the worker running it, while INV_RUNNING */
    uv_timer_t timer; /* timer.data = this; the deadline, then a cancel's grace */
    struct local_dispatch *ld; /* the owner of this array */
    uint32_t index;            /* JOB_INDEX */
    int pid;                   /* its worker's pid: also the group and session id */
    unsigned long long start;  /* the worker's start time (/proc stat field 22) */
    enum inv_state state;
    bool started_pending; /* started_cb is due */
    bool term_sent;       /* a cancel already sent SIGTERM */
    bool swept;           /* its session was SIGKILLed while it was unreaped */
    bool recorded;        /* it has a record in cl->run_fd */
    const char *why;      /* static string or why_buf: why it was ended */
    char why_buf[96];
};

/* A dispatch as this backend sees it.  Allocated by submit, freed when every
 * invocation has ended and every handle it initialized is closed. */
struct local_dispatch {
    struct cl_link link;   /* in cl->dispatches until the last ended_cb */
    struct cl_link notify; /* in cl->notify while callbacks are due */
    struct compute_local *cl;
    struct dispatch *d; /* borrowed from the scheduler; NULL after the last ended_cb */
    uint32_t ninv;
    uint32_t nended;
    unsigned refs; /* initialized handles not yet closed, plus callers on the stack */
    bool done;     /* no more callbacks: every invocation ended, or submit failed */
    struct local_inv inv[];
};

struct compute_local {
    struct compute base; /* first: a struct compute * is a struct compute_local * */
    char *worker_path;   /* owned */
    char *storage_url;   /* owned */
    char **env;          /* owned, NULL-terminated: the filtered daemon environment */
    size_t nenv;
    char *storage_entry;           /* owned: "BURST_STORAGE=<storage_url>" */
    char *parent_entry;            /* owned: "BURST_PARENT_PID=<our pid>" */
    int run_fd;                    /* owned: the worker records' directory, -1 = none */
    int root_fd;                   /* owned: the local storage root, handed to workers
                                    * that run as another uid (runas.h); -1 = none */
    bool record_warned;            /* a failure to write a record was logged */
    unsigned long long self_start; /* our start time, for the records */
    pid_t self_pid;                /* burstd never changes either: asked once, */
    uid_t self_uid;                /* not in every dispatch */
    char boot_id[40];              /* /proc/sys/kernel/random/boot_id */
    uv_idle_t idle;                /* delivers the callbacks submit must not make */
    struct cl_link dispatches;     /* local_dispatch.link: invocations not all ended */
    struct cl_link notify;         /* local_dispatch.notify: callbacks due */
    unsigned nalive;               /* local_dispatch allocations not yet freed */
    uint32_t nrunning;             /* invocations running */
    struct cl_link warm;           /* wproc.link: idle workers, most recent last */
    unsigned nwarm;                /* in warm */
    unsigned nwproc;               /* wproc allocations not yet freed */
    bool closing;
    void (*close_cb)(struct compute *c);
};

static const struct compute_ops compute_local_ops;

static bool
has_prefix_ci(const char *name, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);
    return len >= plen && strncasecmp(name, prefix, plen) == 0;
}

/* name is exactly word, or ends in "_" word. */
static bool
has_word_suffix_ci(const char *name, size_t len, const char *word)
{
    size_t wlen = strlen(word);
    if (len < wlen || strncasecmp(name + len - wlen, word, wlen) != 0)
        return false;
    return len == wlen || name[len - wlen - 1] == '_';
}

/*
 * Whether an environment entry ("NAME=value") must not reach a worker:
 * burstd's own settings (BURST_*, and JOB_INDEX which we set), and names
 * that look like credentials.  Guessing wrong on the side of hiding only
 * costs a task a variable; guessing wrong the other way leaks a key into
 * every task.
 */
static bool
env_hidden(const char *entry)
{
    static const char *const prefixes[] = {"BURST_", "AWS_", "IBM_", "COS_", "CE_"};
    static const char *const words[] = {"KEY", "SECRET", "TOKEN", "PASSWORD", "APIKEY"};
    const char *eq = strchr(entry, '=');
    if (eq == NULL || eq == entry)
        return true;
    size_t len = (size_t)(eq - entry);
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (has_prefix_ci(entry, len, prefixes[i]))
            return true;
    }
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (has_word_suffix_ci(entry, len, words[i]))
            return true;
    }
    return len == strlen("JOB_INDEX") && strncasecmp(entry, "JOB_INDEX", len) == 0;
}

/* Copies the entries of environ a worker may see.  Returns 0 or -ENOMEM. */
static int
env_snapshot(struct compute_local *cl)
{
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        n++;
    cl->env = calloc(n + 1, sizeof(*cl->env));
    if (cl->env == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (env_hidden(environ[i]))
            continue;
        cl->env[cl->nenv] = strdup(environ[i]);
        if (cl->env[cl->nenv] == NULL)
            return -ENOMEM; /* the caller frees what was copied */
        cl->nenv++;
    }
    return 0;
}

static void
cl_free(struct compute_local *cl)
{
    if (cl->env != NULL) {
        for (size_t i = 0; i < cl->nenv; i++)
            free(cl->env[i]);
        free(cl->env);
    }
    free(cl->worker_path);
    free(cl->storage_url);
    free(cl->storage_entry);
    free(cl->parent_entry);
    if (cl->run_fd >= 0)
        close(cl->run_fd);
    if (cl->root_fd >= 0)
        close(cl->root_fd);
    free(cl);
}

/* ---- processes, sessions and worker records (layers 2 and 3 above) ---- */

/* How long start-up waits for what it SIGKILLed to be gone, and how many
 * passes over /proc a sweep makes while the session keeps forking. */
#define REAP_WAIT_MS 10000
#define REAP_PASSES 16
/* The most of a process's environment read to check it. */
#define ENVIRON_MAX (1u << 20)
#define RECORD_MAGIC "burst-worker-record 1"
#define RECORD_MAX 1024
#define RECORD_IDLE "-" /* the first byte of a voided record (record_remove) */

/* What /proc/<pid>/stat says of a process that matters here. */
struct proc_info {
    char state;               /* R, S, D, Z, ... */
    pid_t sid;                /* its session */
    unsigned long long start; /* clock ticks after boot (field 22) */
};

/* Reads /proc/<pid>/stat.  Returns 0, -ENOENT (no such process) or another
 * negative code. */
static int
proc_info_read(pid_t pid, struct proc_info *pi)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ESRCH ? -ENOENT : -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    int err = n < 0 ? errno : EINVAL;
    close(fd);
    if (n <= 0)
        return err == ESRCH ? -ENOENT : -err;
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: the fields that
     * follow it start after the last ')'. */
    const char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return -EINVAL;
    int ppid, pgrp, sid;
    if (sscanf(p + 2,
               "%c %d %d %d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d "
               "%llu",
               &pi->state, &ppid, &pgrp, &sid, &pi->start) != 5)
        return -EINVAL;
    pi->sid = (pid_t)sid;
    return 0;
}

/* Whether pid is a live process (not a zombie) that started at start. */
static bool
proc_alive(pid_t pid, unsigned long long start)
{
    struct proc_info pi;
    if (pid <= 0 || proc_info_read(pid, &pi) != 0)
        return false;
    return pi.state != 'Z' && pi.state != 'X' && pi.start == start;
}

/*
 * Whether the environment pid started with holds every entry of want[]
 * exactly ("NAME=value").  Any doubt (unreadable, too large, out of memory)
 * is a no: this decides whether to kill.
 */
static bool
proc_env_has(pid_t pid, const char *const *want, size_t nwant)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    bool ok = buf != NULL;
    while (ok) {
        if (len == cap) {
            char *nb = cap < ENVIRON_MAX ? realloc(buf, cap * 2) : NULL;
            if (nb == NULL) {
                ok = false;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            ok = false;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    size_t found = 0;
    for (size_t i = 0; ok && i < nwant; i++) {
        size_t wlen = strlen(want[i]);
        for (size_t off = 0; off < len;) {
            const char *e = buf + off;
            const char *nul = memchr(e, '\0', len - off);
            size_t elen = nul != NULL ? (size_t)(nul - e) : len - off;
            if (elen == wlen && memcmp(e, want[i], wlen) == 0) {
                found++;
                break;
            }
            off += elen + 1;
        }
    }
    free(buf);
    return ok && found == nwant;
}

/* A pidfd for pid, so that a check and a signal reach the same process:
 * >= 0, or -ESRCH (gone), or another code when the kernel has none. */
static int
proc_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd >= 0 ? (int)fd : -errno;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

static void
proc_kill(pid_t pid, int pidfd)
{
#ifdef SYS_pidfd_send_signal
    if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0)
        return;
    if (pidfd >= 0 && errno == ESRCH)
        return; /* the process we checked is gone; pid may be someone else's now */
#endif
    kill(pid, SIGKILL);
}

/* A session to sweep. */
struct reap_target {
    pid_t sid;                /* the worker's pid */
    unsigned long long start; /* the worker's start time: nothing older is its */
    const char *spec_entry;   /* "BURST_SPEC=..." a member must carry; NULL when
                                 the worker is not reaped yet, so that all of
                                 its session is certainly ours */
};

/* A process, by pid and start time, so that a recycled pid is not it. */
struct proc_id {
    pid_t pid;
    unsigned long long start;
};

/* The processes a sweep has SIGKILLed. */
struct reaped {
    struct proc_id *v; /* owned */
    size_t n, cap;
};

static bool
reaped_has(const struct reaped *r, pid_t pid, unsigned long long start)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->v[i].pid == pid && r->v[i].start == start)
            return true;
    }
    return false;
}

static int
reaped_add(struct reaped *r, pid_t pid, unsigned long long start)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        struct proc_id *v = realloc(r->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n].pid = pid;
    r->v[r->n].start = start;
    r->n++;
    return 0;
}

/* Whether the process behind pidfd (pid) is one target t may kill. */
static bool
reap_allowed(const struct compute_local *cl, const struct reap_target *t, pid_t pid,
             struct proc_info *pi)
{
    /* Read again now that the pidfd holds it: if pid was recycled since the
     * scan, this reads the newcomer and the pidfd's signal cannot land. */
    if (proc_info_read(pid, pi) != 0 || pi->state == 'Z' || pi->state == 'X' ||
        pi->sid != t->sid)
        return false;
    if (t->spec_entry == NULL)
        return true;
    if (pi->start < t->start)
        return false;
    char path[64];
    struct stat st;
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    if (stat(path, &st) != 0)
        return false;
    /* A root burstd runs the workers of other users' jobs as those users,
     * with the storage root on a descriptor (runas.h). */
    if (st.st_uid == geteuid()) {
        const char *want[] = {t->spec_entry, cl->storage_entry};
        return proc_env_has(pid, want, 2);
    }
    const char *want[] = {t->spec_entry, RUNAS_STORAGE_ENTRY};
    return geteuid() == 0 && proc_env_has(pid, want, 2);
}

/*
 * One pass over /proc: SIGKILLs every live process of a target's session
 * that the target allows and that is not in done yet, and adds it there.
 * Returns how many it killed, or a negative code.
 */
static int
reap_pass(const struct compute_local *cl, const struct reap_target *t, size_t nt,
          struct reaped *done)
{
    DIR *dir = opendir("/proc");
    if (dir == NULL)
        return -errno;
    int killed = 0, rc = 0;
    pid_t self = getpid();
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        char *end;
        long v = strtol(de->d_name, &end, 10);
        if (de->d_name[0] < '1' || de->d_name[0] > '9' || *end != '\0' || v > INT32_MAX)
            continue;
        pid_t pid = (pid_t)v;
        struct proc_info pi;
        if (pid == self || proc_info_read(pid, &pi) != 0 || pi.state == 'Z' ||
            pi.state == 'X')
            continue;
        const struct reap_target *tt = NULL;
        for (size_t i = 0; i < nt && tt == NULL; i++) {
            if (t[i].sid == pi.sid)
                tt = &t[i];
        }
        if (tt == NULL || reaped_has(done, pid, pi.start))
            continue;
        int pidfd = proc_open(pid);
        if (pidfd == -ESRCH)
            continue;
        if (reap_allowed(cl, tt, pid, &pi)) {
            proc_kill(pid, pidfd);
            killed++;
            rc = reaped_add(done, pid, pi.start);
        }
        if (pidfd >= 0)
            close(pidfd);
        if (rc != 0)
            break;
    }
    closedir(dir);
    return rc != 0 ? rc : killed;
}

/*
 * SIGKILLs the sessions of t[0 .. nt): passes over /proc until one finds
 * nothing new, since a member may fork while a pass runs (a process with
 * SIGKILL pending forks no more).  done (may be NULL) receives what was
 * killed.  Returns the number killed, or a negative code.
 */
static int
reap_sessions(const struct compute_local *cl, const struct reap_target *t, size_t nt,
              struct reaped *done)
{
    struct reaped local = {0};
    struct reaped *r = done != NULL ? done : &local;
    size_t before = r->n;
    int rc = 0;
    for (int pass = 0; pass < REAP_PASSES; pass++) {
        rc = reap_pass(cl, t, nt, r);
        if (rc <= 0)
            break;
    }
    if (rc > 0)
        log_warnx("compute: a worker's session was still forking after %d sweeps",
                  REAP_PASSES);
    else if (rc < 0)
        log_warnx("compute: cannot sweep a worker's session: %s", strerror(-rc));
    int n = (int)(r->n - before);
    free(local.v);
    return rc < 0 ? rc : n;
}

/* SIGKILLs inv's worker and everything of its session.  Only while the
 * worker is not reaped: then nothing else can be in its session. */
static void
inv_kill(struct compute_local *cl, struct local_inv *inv)
{
    assert(inv->state == INV_RUNNING);
    kill(-inv->pid, SIGKILL);
    struct reap_target t = {.sid = inv->pid, .start = inv->start, .spec_entry = NULL};
    reap_sessions(cl, &t, 1, NULL);
    inv->swept = true;
}


static void
idle_closed(uv_handle_t *h)
{
    struct compute_local *cl = h->data;
    void (*cb)(struct compute *) = cl->close_cb;
    if (cb != NULL)
        cb(&cl->base);
    /* Released after cb, as libuv releases a handle after its close_cb. */
    cl_free(cl);
}

/* Finishes a close once the last dispatch is freed. */
static void
cl_maybe_closed(struct compute_local *cl)
{
    if (!cl->closing || cl->nalive > 0 || cl->nwproc > 0 ||
        uv_is_closing((uv_handle_t *)&cl->idle))
        return;
    assert(link_empty(&cl->dispatches) && link_empty(&cl->notify));
    uv_close((uv_handle_t *)&cl->idle, idle_closed);
}

static void
ld_unref(struct local_dispatch *ld)
{
    assert(ld->refs > 0);
    if (--ld->refs > 0 || !ld->done)
        return;
    struct compute_local *cl = ld->cl;
    assert(link_empty(&ld->link) && link_empty(&ld->notify));
    free(ld);
    cl->nalive--;
    cl_maybe_closed(cl);
}

static void
handle_closed(uv_handle_t *h)
{
    struct local_inv *inv = h->data;
    ld_unref(inv->ld);
}

/*
 * Reports the end of inv: started_cb first if it is still due, then
 * ended_cb.  The caller holds a reference on inv->ld, so ld outlives this
 * call; the dispatch itself may be freed by the last ended_cb, so nothing
 * here touches it afterwards.
 */
static void
inv_finish(struct local_inv *inv, const struct compute_exit *ex)
{
    struct local_dispatch *ld = inv->ld;
    struct dispatch *d = ld->d;
    assert(d != NULL && inv->state != INV_ENDED);
    assert(ld->refs > 0);
    inv->state = INV_ENDED;
    if (inv->started_pending) {
        inv->started_pending = false;
        if (d->started_cb != NULL)
            d->started_cb(d, inv->index);
    }
    if (++ld->nended == ld->ninv) {
        /* The last one: from here on d belongs to the scheduler alone. */
        ld->d = NULL;
        ld->done = true;
        d->backend_priv = NULL;
        link_remove(&ld->link);
        link_remove(&ld->notify);
    }
    d->ended_cb(d, inv->index, ex);
}

/*
 * Ends inv, which its worker w was running: as reported by w (exited false:
 * the worker replied with exit_status) or because w itself ended.
 */
static void inv_ended(struct wproc *w, struct local_inv *inv, int64_t exit_status,
                      int term_signal, bool exited, const char *out, size_t out_len);

/* ---- warm workers: burst-worker --serve, one invocation at a time ---- */

/* Idle workers kept, and for how long. */
#define WARM_IDLE_MAX 16
#define WARM_IDLE_MS 10000
/* Room for a request line: a spec key (at most 1024 bytes), an index, the
 * inline sizes and the input's key (at most 128 bytes). */
#define WARM_REQ_MAX 1300
/* What a request may carry besides its line: the spec and the input. */
#define WARM_INLINE_MAX (128u * 1024u)

/*
 * A worker process that runs invocations one after another (worker/main.c,
 * serve()).  Invocations are handed to it on its stdin and it replies with
 * what a one-shot worker's exit status would have been, so everything
 * above (records, deadlines, cancel, sweeps) treats "w is running inv" as
 * it treated "inv's own worker runs".  A worker that was told to stop,
 * killed or is no longer wanted is retired: it takes no more work and its
 * stdin is closed, which ends it.
 */
struct wproc {
    uv_process_t proc; /* .data = this */
    uv_pipe_t in;      /* its stdin: requests */
    uv_pipe_t out;     /* its stdout: replies */
    uv_timer_t idle;   /* retires it after WARM_IDLE_MS idle */
    uv_write_t wr;
    char *wbuf; /* owned while wr is in flight: the request with its payload */
    struct compute_local *cl;
    struct cl_link link;   /* in cl->warm while idle */
    uid_t uid;             /* whom it runs as */
    int pid;               /* also its process group and session id */
    struct local_inv *inv; /* what it runs; NULL when idle */
    unsigned open;         /* handles not closed yet */
    bool exited;           /* reaped */
    bool retired;
    bool parked;  /* in cl->warm */
    bool writing; /* wr is in flight */
    char req[WARM_REQ_MAX];
    char reply[48];
    size_t nreply;
    uint32_t out_max; /* what the request allowed to come back inline */
    char *obuf;       /* owned: the output being received, out_len bytes */
    int rec_fd;       /* owned: its record in cl->run_fd, -1 until needed */
    size_t rec_len;   /* the record file's length */
    unsigned long long start; /* its start time (/proc stat field 22), 0 = not read */
    size_t out_len;
    size_t out_got;
};

/* Notes the start time of inv's worker, just spawned (a zombie at worst:
 * not reaped before the loop runs), and writes its record (layer 3).  A
 * failure is logged, once per streak: the worker runs anyway, and layer 1
 * still ends it with us. */
static void
record_add(struct compute_local *cl, struct wproc *w, struct local_inv *inv,
           const char *spec_key)
{
    char name[32], line[RECORD_MAX];
    struct proc_info pi;
    int rc = 0;
    if (w->start == 0) { /* once per worker: it is the same process */
        rc = proc_info_read(inv->pid, &pi);
        if (rc == 0)
            w->start = pi.start;
    }
    inv->start = w->start;
    if (cl->run_fd < 0)
        return;
    int len =
        snprintf(line, sizeof(line), "%s %d %llu %d %llu %s %s\n", RECORD_MAGIC, inv->pid,
                 inv->start, (int)cl->self_pid, cl->self_start, cl->boot_id, spec_key);
    if (rc == 0 && (len < 0 || (size_t)len >= sizeof(line)))
        rc = -ENAMETOOLONG;
    snprintf(name, sizeof(name), "%d", inv->pid);
    if (rc == 0 && w->rec_fd < 0) {
        w->rec_fd = openat(cl->run_fd, name,
                           O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (w->rec_fd < 0)
            rc = -errno;
        w->rec_len = 0;
    }
    /* The record was voided, not cut, when the last invocation ended: a
     * longer leftover needs cutting. */
    errno = 0;
    if (rc == 0 && (pwrite(w->rec_fd, line, (size_t)len, 0) != len ||
                    (w->rec_len > (size_t)len && ftruncate(w->rec_fd, len) != 0)))
        rc = errno != 0 ? -errno : -ENOSPC; /* a short write: the disk is full */
    if (rc != 0) {
        if (w->rec_fd >= 0 && ftruncate(w->rec_fd, 0) != 0)
            log_warn("compute: cannot clear the record of worker %d", inv->pid);
        else if (w->rec_fd >= 0)
            w->rec_len = 0;
        if (!cl->record_warned)
            log_warnx("compute: cannot record worker %d: %s; if burstd dies now, what it "
                      "leaves behind is not reaped at the next start",
                      inv->pid, strerror(-rc));
        cl->record_warned = true;
        return;
    }
    w->rec_len = (size_t)len;
    cl->record_warned = false;
    inv->recorded = true;
}

/* inv, which w ran, is over: its record is voided, not removed, so that a
 * warm worker's next invocation rewrites the same file (a file created and
 * removed per invocation costs an inode each time).  Its first byte becomes
 * RECORD_IDLE, which no record starts with, so start-up reads it as
 * nothing to reap, as it would an empty one: one byte written in place
 * instead of a truncation, which ext4 makes a metadata change to journal
 * (a few percent of burstd's time under bench B6). */
static void
record_remove(struct wproc *w, struct local_inv *inv)
{
    if (!inv->recorded)
        return;
    if (pwrite(w->rec_fd, RECORD_IDLE, 1, 0) != 1)
        log_warn("compute: cannot clear the record of worker %d", inv->pid);
    inv->recorded = false;
}

/* w has exited: its record file goes (before its pid can be reused). */
static void
record_drop(struct compute_local *cl, struct wproc *w)
{
    if (w->rec_fd < 0)
        return;
    close(w->rec_fd);
    w->rec_fd = -1;
    char name[32];
    snprintf(name, sizeof(name), "%d", w->pid);
    if (unlinkat(cl->run_fd, name, 0) != 0 && errno != ENOENT)
        log_warn("compute: cannot remove the record of worker %d", w->pid);
}

static void
wproc_handle_closed(uv_handle_t *h)
{
    struct wproc *w = h->data;
    if (--w->open > 0)
        return;
    struct compute_local *cl = w->cl;
    if (w->rec_fd >= 0)
        close(w->rec_fd); /* its exit, which removes the file, was never seen */
    free(w->obuf);
    free(w->wbuf);
    free(w);
    cl->nwproc--;
    cl_maybe_closed(cl);
}

/* Closes every handle of w once it has exited; w is freed after the last. */
static void
wproc_close(struct wproc *w)
{
    uv_handle_t *hs[] = {(uv_handle_t *)&w->proc, (uv_handle_t *)&w->in,
                         (uv_handle_t *)&w->out, (uv_handle_t *)&w->idle};
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], wproc_handle_closed);
}

/* No more work for w: its stdin is closed, so it ends once it has replied
 * for what it runs. */
static void
wproc_retire(struct wproc *w)
{
    if (!w->retired) {
        w->retired = true;
        if (w->parked) {
            link_remove(&w->link);
            w->parked = false;
            w->cl->nwarm--;
        }
        uv_timer_stop(&w->idle);
        if (!uv_is_closing((uv_handle_t *)&w->in))
            uv_close((uv_handle_t *)&w->in, wproc_handle_closed);
    }
}

static void
wproc_idle_expired(uv_timer_t *t)
{
    wproc_retire(t->data);
}

/* Puts w, just done with an invocation, back among the idle ones. */
static void
wproc_park(struct wproc *w)
{
    struct compute_local *cl = w->cl;
    if (w->retired || w->exited || cl->closing) {
        wproc_retire(w);
        return;
    }
    if (cl->nwarm >= WARM_IDLE_MAX) /* the one idle longest makes room */
        wproc_retire(CL_CONTAINER(cl->warm.next, struct wproc, link));
    link_add_tail(&cl->warm, &w->link);
    w->parked = true;
    cl->nwarm++;
    uv_timer_start(&w->idle, wproc_idle_expired, WARM_IDLE_MS, 0);
}

/* The idle worker of uid used last, taken out of the idle list; or NULL. */
static struct wproc *
wproc_take(struct compute_local *cl, uid_t uid)
{
    for (struct cl_link *l = cl->warm.prev; l != &cl->warm; l = l->prev) {
        struct wproc *w = CL_CONTAINER(l, struct wproc, link);
        if (w->uid != uid)
            continue;
        link_remove(&w->link);
        w->parked = false;
        cl->nwarm--;
        uv_timer_stop(&w->idle);
        return w;
    }
    return NULL;
}

static void
wproc_exited(uv_process_t *proc, int64_t exit_status, int term_signal)
{
    struct wproc *w = proc->data;
    w->exited = true;
    /* The leader is gone; whatever it left running in its group goes too. */
    if (w->pid > 0)
        kill(-w->pid, SIGKILL);
    struct local_inv *inv = w->inv;
    wproc_retire(w);
    wproc_close(w);
    if (inv != NULL)
        inv_ended(w, inv, exit_status, term_signal, true, NULL, 0);
    record_drop(w->cl, w);
}

static void
wproc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct wproc *w = h->data;
    (void)suggested;
    if (w->obuf != NULL) /* the output's bytes go straight to their place */
        *buf = uv_buf_init(w->obuf + w->out_got, (unsigned)(w->out_len - w->out_got));
    else
        *buf = uv_buf_init(w->reply + w->nreply,
                           (unsigned)(sizeof(w->reply) - 1 - w->nreply));
}

/* w replied nonsense: it is stopped, and its exit ends what it ran. */
static void
wproc_garbled(struct wproc *w, const char *what)
{
    log_warnx("compute: worker %d %s; stopping it", w->pid, what);
    uv_read_stop((uv_stream_t *)&w->out);
    kill(-w->pid, SIGKILL);
}

/* The output handed back is complete: the invocation is over. */
static void
wproc_out_done(struct wproc *w)
{
    char *out = w->obuf;
    size_t len = w->out_len;
    w->obuf = NULL;
    w->out_len = w->out_got = 0;
    inv_ended(w, w->inv, 0, 0, false, out, len);
    free(out);
}

/* A reply: "STATUS\n", or "0 LEN\n" and LEN bytes of output, for the
 * invocation w runs. */
static void
wproc_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct wproc *w = st->data;
    (void)buf;
    if (nread < 0) {
        /* EOF or an error: the worker is ending; its exit says the rest. */
        uv_read_stop(st);
        return;
    }
    if (w->obuf != NULL) {
        w->out_got += (size_t)nread;
        if (w->out_got == w->out_len)
            wproc_out_done(w);
        return;
    }
    w->nreply += (size_t)nread;
    w->reply[w->nreply] = '\0';
    char *nl = strchr(w->reply, '\n');
    if (nl == NULL) {
        if (w->nreply + 1 >= sizeof(w->reply)) {
            log_warnx("compute: worker %d replied nonsense; stopping it", w->pid);
            uv_read_stop(st);
            kill(-w->pid, SIGKILL);
        }
        return;
    }
    *nl = '\0';
    char *end;
    long status = strtol(w->reply, &end, 10);
    bool ok = end != w->reply && status >= 0 && status < 256;
    unsigned long long out_len = 0;
    bool has_out = ok && *end == ' ';
    if (has_out) {
        char *lend;
        out_len = strtoull(end + 1, &lend, 10);
        ok = status == 0 && lend != end + 1 && *lend == '\0' && end[1] >= '0' &&
             end[1] <= '9' && out_len <= w->out_max;
    } else {
        ok = ok && *end == '\0';
    }
    size_t used = (size_t)(nl + 1 - w->reply);
    size_t rest = w->nreply - used;
    struct local_inv *inv = w->inv;
    if (!ok || inv == NULL || (!has_out && rest > 0) || (has_out && rest > out_len)) {
        wproc_garbled(w, "replied out of turn");
        return;
    }
    w->nreply = 0;
    if (!has_out) {
        inv_ended(w, inv, status, 0, false, NULL, 0);
        return;
    }
    w->obuf = malloc(out_len > 0 ? out_len : 1);
    if (w->obuf == NULL) {
        wproc_garbled(w, "handed back an output there is no memory for");
        return;
    }
    w->out_len = out_len;
    w->out_got = rest;
    memcpy(w->obuf, nl + 1, rest);
    if (w->out_got == w->out_len)
        wproc_out_done(w);
}

static void
wproc_written(uv_write_t *req, int status)
{
    struct wproc *w = req->data;
    w->writing = false;
    free(w->wbuf);
    w->wbuf = NULL;
    /* A worker that cannot take its request is ending: its exit reports
     * the invocation as lost. */
    if (status < 0 && status != UV_ECANCELED && !w->exited)
        kill(-w->pid, SIGKILL);
}

/*
 * Hands inv (JOB_INDEX index of d's spec) to w, with the spec and the input
 * when d carries them (worker/main.c, serve()).  Returns 0 or a uv code.
 */
static int
wproc_send(struct wproc *w, struct local_inv *inv, const struct dispatch *d, uint32_t index)
{
    size_t spec_len = d->spec_data != NULL ? d->spec_len : 0;
    size_t in_len = d->spec_data != NULL && d->in_key != NULL ? d->in_len : 0;
    char out[32] = "", spec[32] = "", in[160] = "";
    if (d->inline_out_max > 0)
        snprintf(out, sizeof(out), " out=%" PRIu32, d->inline_out_max);
    if (d->spec_data != NULL)
        snprintf(spec, sizeof(spec), " spec=%zu", spec_len);
    if (d->spec_data != NULL && d->in_key != NULL &&
        snprintf(in, sizeof(in), " in=%zu:%s", in_len, d->in_key) >= (int)sizeof(in))
        return UV_ENAMETOOLONG;
    int len = snprintf(w->req, sizeof(w->req), "%s %" PRIu32 "%s%s%s\n", d->spec_key, index,
                       out, spec, in);
    if (len < 0 || (size_t)len >= sizeof(w->req))
        return UV_ENAMETOOLONG;
    if (spec_len + in_len > WARM_INLINE_MAX)
        return UV_E2BIG; /* the scheduler asks compute.inline_max first */
    uv_buf_t b = uv_buf_init(w->req, (unsigned)len);
    if (spec_len + in_len > 0) {
        /* A copy: the dispatch's buffers are only lent for submit. */
        w->wbuf = malloc((size_t)len + spec_len + in_len);
        if (w->wbuf == NULL)
            return UV_ENOMEM;
        memcpy(w->wbuf, w->req, (size_t)len);
        memcpy(w->wbuf + len, d->spec_data, spec_len);
        if (in_len > 0)
            memcpy(w->wbuf + len + spec_len, d->in_data, in_len);
        b = uv_buf_init(w->wbuf, (unsigned)((size_t)len + spec_len + in_len));
    }
    w->out_max = d->inline_out_max;
    w->wr.data = w;
    int rc = uv_write(&w->wr, (uv_stream_t *)&w->in, &b, 1, wproc_written);
    if (rc < 0) {
        free(w->wbuf);
        w->wbuf = NULL;
        return rc;
    }
    w->writing = true;
    w->inv = inv;
    return 0;
}

_Static_assert(RUNAS_STORAGE_FD == 3, "the fourth stdio slot of wproc_spawn");

/*
 * Starts a warm worker with env, as ra's uid when ra is not NULL.  Returns
 * it, or NULL with *err set to a negative uv code (nothing left behind).
 */
static struct wproc *
wproc_spawn(struct compute_local *cl, char **env, const struct runas *ra, int *err)
{
    struct wproc *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        *err = UV_ENOMEM;
        return NULL;
    }
    w->cl = cl;
    w->rec_fd = -1;
    w->uid = ra != NULL ? ra->uid : cl->self_uid;
    link_init(&w->link);
    cl->nwproc++;
    uv_pipe_init(cl->base.loop, &w->in, 0);
    uv_pipe_init(cl->base.loop, &w->out, 0);
    uv_timer_init(cl->base.loop, &w->idle);
    w->in.data = w->out.data = w->idle.data = w->proc.data = w;
    w->open = 4;
    uv_stdio_container_t stdio[4] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE,
         .data.stream = (uv_stream_t *)&w->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE,
         .data.stream = (uv_stream_t *)&w->out},
        /* A worker prints only its own failures; they belong in our log. */
        {.flags = UV_INHERIT_FD, .data.fd = 2},
        /* RUNAS_STORAGE_FD for a worker that runs as the job's owner. */
        {.flags = UV_INHERIT_FD, .data.fd = cl->root_fd},
    };
    char *args[] = {cl->worker_path, "--serve", NULL};
    uv_process_options_t opt = {
        .exit_cb = wproc_exited,
        .file = cl->worker_path,
        .args = args,
        .env = env,
        .flags = UV_PROCESS_DETACHED,
        .stdio_count = 3,
        .stdio = stdio,
    };
    if (ra != NULL) {
        /* libuv drops the supplementary groups before setgid/setuid. */
        opt.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        opt.uid = ra->uid;
        opt.gid = ra->gid;
        opt.stdio_count = 4;
        /* burstd's own working directory may be closed to the owner. */
        opt.cwd = "/";
    }
    int rc = uv_spawn(cl->base.loop, &w->proc, &opt);
    w->proc.data = w;
    if (rc < 0) {
        /* libuv initializes the process handle even when the spawn fails. */
        w->exited = w->retired = true;
        wproc_close(w);
        *err = rc;
        return NULL;
    }
    w->pid = w->proc.pid;
    rc = uv_read_start((uv_stream_t *)&w->out, wproc_alloc, wproc_read);
    if (rc < 0) {
        kill(-w->pid, SIGKILL); /* its exit closes it */
        wproc_retire(w);
        *err = rc;
        return NULL;
    }
    return w;
}

static void
inv_ended(struct wproc *w, struct local_inv *inv, int64_t exit_status, int term_signal,
          bool exited, const char *out, size_t out_len)
{
    struct local_dispatch *ld = inv->ld;
    struct compute_local *cl = ld->cl;
    assert(inv->state == INV_RUNNING && w->inv == inv);
    w->inv = NULL;
    inv->w = NULL;

    /* Told to stop (a cancel's SIGTERM), or killed by a signal nobody here
     * sent (the OOM killer, a crash): what its tasks started outside their
     * process groups may survive it.  The worker is reaped, so only members
     * that show it is theirs are killed (layer 2).  A worker that simply
     * finished is not swept: a /proc scan per invocation costs too much. */
    if (exited && (term_signal != 0 || inv->term_sent) && !inv->swept && ld->d != NULL) {
        char spec_entry[600];
        int len =
            snprintf(spec_entry, sizeof(spec_entry), "BURST_SPEC=%s", ld->d->spec_key);
        struct reap_target t = {
            .sid = inv->pid, .start = inv->start, .spec_entry = spec_entry};
        if (len > 0 && (size_t)len < sizeof(spec_entry))
            reap_sessions(cl, &t, 1, NULL);
    }
    record_remove(w, inv);
    assert(cl->nrunning > 0);
    cl->nrunning--;
    uv_timer_stop(&inv->timer);
    uv_close((uv_handle_t *)&inv->timer, handle_closed);

    /* A worker that was told to stop or swept has done its last.  One that
     * replied to a cancel's SIGTERM is still alive, so all of its session
     * is certainly ours: it goes with whatever its tasks left there. */
    if (inv->term_sent && !exited && !inv->swept) {
        struct reap_target t = {.sid = inv->pid, .start = inv->start, .spec_entry = NULL};
        reap_sessions(cl, &t, 1, NULL);
    }
    if (inv->term_sent || inv->swept)
        wproc_retire(w);
    else if (!exited)
        wproc_park(w);

    struct compute_exit ex = {
        .exit_status = term_signal != 0 ? -1 : exit_status,
        .term_signal = term_signal,
        .why = inv->why,
        .out = out,
        .out_len = out_len,
    };
    /* The timer just closed holds ld until its close callback. */
    inv_finish(inv, &ex);
}

static void
on_timer(uv_timer_t *t)
{
    struct local_inv *inv = t->data;
    assert(inv->state == INV_RUNNING);
    /* A cancel keeps its own reason when its grace runs out. */
    if (inv->why == NULL)
        inv->why = "deadline exceeded";
    inv_kill(inv->ld->cl, inv);
}

/* Runs the callbacks that submit deferred, one dispatch at a time. */
static void
on_idle(uv_idle_t *h)
{
    struct compute_local *cl = h->data;
    while (!link_empty(&cl->notify)) {
        struct local_dispatch *ld =
            CL_CONTAINER(cl->notify.next, struct local_dispatch, notify);
        link_remove(&ld->notify);
        ld->refs++;
        for (uint32_t i = 0; i < ld->ninv && ld->d != NULL; i++) {
            struct local_inv *inv = &ld->inv[i];
            struct dispatch *d = ld->d;
            if (inv->started_pending) {
                inv->started_pending = false;
                if (d->started_cb != NULL)
                    d->started_cb(d, i);
            }
            if (inv->state == INV_FAILED && ld->d != NULL) {
                struct compute_exit ex = {
                    .exit_status = -1, .term_signal = 0, .why = inv->why};
                inv_finish(inv, &ex);
            }
        }
        ld_unref(ld);
    }
    uv_idle_stop(h);
}

/* "NAME=value" in a malloc'ed string, or NULL. */
static char *
env_entry(const char *name, const char *value)
{
    size_t len = strlen(name) + 1 + strlen(value) + 1;
    char *s = malloc(len);
    if (s != NULL)
        snprintf(s, len, "%s=%s", name, value);
    return s;
}

/*
 * Spawns one burst-worker per invocation of d.  Returns 0 when at least the
 * first one started (later failures are reported through ended_cb), or the
 * first spawn's error with no callback to come.  d must stay alive until
 * its last ended_cb; d->backend_priv is ours until then.
 */
static int
cl_submit(struct compute *c, struct dispatch *d)
{
    struct compute_local *cl = (struct compute_local *)c;
    if (d == NULL || d->ninv == 0 || d->spec_key == NULL || d->ended_cb == NULL)
        return -EINVAL;
    if (cl->closing)
        return BURST_ESHUTDOWN;
    /* Only a 32-bit size_t can overflow here. */
    uint64_t bytes = (uint64_t)d->ninv * sizeof(struct local_inv);
    if (bytes > (uint64_t)(SIZE_MAX - sizeof(struct local_dispatch)))
        return -ENOMEM;

    int rc = 0;
    struct local_dispatch *ld =
        calloc(1, sizeof(*ld) + (size_t)d->ninv * sizeof(struct local_inv));
    if (ld == NULL)
        return -ENOMEM;
    link_init(&ld->link);
    link_init(&ld->notify);
    ld->cl = cl;
    ld->ninv = d->ninv;

    /* A job of another uid runs as that uid, with storage reached through
     * the descriptor runas_grant() prepared (runas.h). */
    struct runas ra_buf, *ra = NULL;
    if (runas_needed(d->owner_uid)) {
        char why[256];
        if (cl->root_fd < 0) {
            log_warnx("compute: job %" PRIu64 " of uid %" PRIu32 " cannot start: only a "
                      "burstd running as root with local storage runs other users' tasks",
                      d->job, d->owner_uid);
            rc = BURST_EPERM;
            goto fail_early;
        }
        rc = runas_lookup(d->owner_uid, &ra_buf, why, sizeof(why));
        if (rc == 0) {
            rc = runas_grant(cl->root_fd, d->job, d->spec_key, &ra_buf);
            snprintf(why, sizeof(why), "cannot open storage to it: %s", strerror(-rc));
        }
        if (rc != 0) {
            log_warnx("compute: job %" PRIu64 " of uid %" PRIu32 ": %s", d->job,
                      d->owner_uid, why);
            goto fail_early;
        }
        ra = &ra_buf;
    }

    /* The environment of a new worker: the filtered snapshot plus
     * BURST_STORAGE and BURST_PARENT_PID (layer 1); as another uid, also
     * that user's HOME, USER and LOGNAME instead of ours.  BURST_SPEC and
     * JOB_INDEX come with each request (wproc_send).  uv_spawn forks before
     * it returns, so an array freed right after is fine. */
    char **env = calloc(cl->nenv + 8, sizeof(*env));
    if (env == NULL)
        goto fail_env;
    size_t ne = 0;
    for (size_t i = 0; i < cl->nenv; i++) {
        if (ra != NULL && (strncmp(cl->env[i], "HOME=", 5) == 0 ||
                           strncmp(cl->env[i], "USER=", 5) == 0 ||
                           strncmp(cl->env[i], "LOGNAME=", 8) == 0))
            continue;
        env[ne++] = cl->env[i];
    }
    if (ra != NULL) {
        env[ne++] = ra->home;
        env[ne++] = ra->user;
        env[ne++] = ra->logname;
    }
    env[ne++] = ra != NULL ? (char *)RUNAS_STORAGE_ENTRY : cl->storage_entry;
    env[ne++] = cl->parent_entry;
    env[ne] = NULL;

    uid_t uid = ra != NULL ? ra->uid : cl->self_uid;
    for (uint32_t i = 0; i < ld->ninv; i++) {
        struct local_inv *inv = &ld->inv[i];
        inv->ld = ld;
        inv->index = i;
        /* An idle worker of the same uid if there is one, else a new one. */
        int err = 0;
        struct wproc *w = wproc_take(cl, uid);
        if (w == NULL)
            w = wproc_spawn(cl, env, ra, &err);
        if (w != NULL && (err = wproc_send(w, inv, d, i)) < 0) {
            kill(-w->pid, SIGKILL); /* its exit closes it; nothing was handed over */
            wproc_retire(w);
            w = NULL;
        }
        if (w == NULL) {
            rc = err;
            if (i == 0)
                goto fail_first;
            log_warnx("compute: cannot start %s: %s", cl->worker_path, uv_strerror(rc));
            inv->state = INV_FAILED;
            snprintf(inv->why_buf, sizeof(inv->why_buf), "cannot start burst-worker: %s",
                     uv_strerror(rc));
            inv->why = inv->why_buf;
            continue;
        }
        if (i == 0)
            cl->nalive++;
        inv->w = w;
        inv->pid = w->pid;
        record_add(cl, w, inv, d->spec_key);
        inv->state = INV_RUNNING;
        inv->started_pending = true;
        cl->nrunning++;
        uv_timer_init(cl->base.loop, &inv->timer);
        inv->timer.data = inv;
        ld->refs++;
        if (d->deadline_ms > 0)
            uv_timer_start(&inv->timer, on_timer, d->deadline_ms, 0);
    }
    free(env);

    ld->d = d;
    d->backend_priv = ld;
    link_add_tail(&cl->dispatches, &ld->link);
    link_add_tail(&cl->notify, &ld->notify);
    uv_idle_start(&cl->idle, on_idle);
    return 0;

fail_first:
    /* Nothing was started, so nothing is reported. */
    log_warnx("compute: cannot start %s: %s", cl->worker_path, uv_strerror(rc));
    free(env);
    free(ld);
    return rc;

fail_env:
    free(ld);
    return -ENOMEM;

fail_early:
    free(ld);
    return rc;
}

/*
 * SIGTERM to the group of every running invocation of d, SIGKILL after
 * grace_ms (at once when 0).  An earlier deadline still applies.  Calling
 * it again only ever shortens the grace.  Returns 0.
 */
static int
cl_cancel(struct compute *c, struct dispatch *d, uint64_t grace_ms)
{
    (void)c;
    struct local_dispatch *ld = d != NULL ? d->backend_priv : NULL;
    if (ld == NULL)
        return 0; /* over already, or never submitted */
    for (uint32_t i = 0; i < ld->ninv; i++) {
        struct local_inv *inv = &ld->inv[i];
        if (inv->state != INV_RUNNING)
            continue;
        if (inv->why == NULL)
            inv->why = "cancelled";
        if (grace_ms == 0) {
            inv_kill(ld->cl, inv);
            continue;
        }
        if (!inv->term_sent) {
            inv->term_sent = true;
            kill(-inv->pid, SIGTERM);
        }
        uint64_t due = uv_is_active((uv_handle_t *)&inv->timer)
                           ? uv_timer_get_due_in(&inv->timer)
                           : UINT64_MAX;
        if (grace_ms < due)
            uv_timer_start(&inv->timer, on_timer, grace_ms, 0);
    }
    return 0;
}

static uint32_t
cl_running(struct compute *c)
{
    return ((struct compute_local *)c)->nrunning;
}

/*
 * SIGKILLs every running group; each ended_cb runs as its worker is reaped,
 * then cb once every handle is closed.  The backend is freed after cb
 * returns.  A second call is ignored.
 */
static void
cl_close(struct compute *c, void (*cb)(struct compute *c))
{
    struct compute_local *cl = (struct compute_local *)c;
    if (cl->closing)
        return;
    cl->closing = true;
    cl->close_cb = cb;
    for (struct cl_link *l = cl->dispatches.next; l != &cl->dispatches; l = l->next) {
        struct local_dispatch *ld = CL_CONTAINER(l, struct local_dispatch, link);
        for (uint32_t i = 0; i < ld->ninv; i++) {
            struct local_inv *inv = &ld->inv[i];
            if (inv->state != INV_RUNNING)
                continue;
            if (inv->why == NULL)
                inv->why = "backend closed";
            uv_timer_stop(&inv->timer);
            inv_kill(cl, inv);
        }
    }
    /* Idle workers end at the EOF on their stdin. */
    while (!link_empty(&cl->warm))
        wproc_retire(CL_CONTAINER(cl->warm.next, struct wproc, link));
    cl_maybe_closed(cl);
}

/* Tasks run here as the job's owner (runas.h). */
static int
cl_admit(struct compute *c, uint32_t uid, char *why, size_t whylen)
{
    struct compute_local *cl = (struct compute_local *)c;
    int rc = runas_admit(uid, why, whylen);
    if (rc == 0 && runas_needed(uid) && cl->root_fd < 0) {
        snprintf(why, whylen,
                 "this burstd cannot run tasks as uid %" PRIu32 ": its storage is not a "
                 "local directory it could open to that user",
                 uid);
        rc = BURST_EPERM;
    }
    return rc;
}

static const struct compute_ops compute_local_ops = {
    .name = "local",
    .submit = cl_submit,
    .admit = cl_admit,
    .cancel = cl_cancel,
    .running = cl_running,
    .close = cl_close,
};

/*
 * Creates the local backend.  The environment for workers is taken from
 * environ now, once.  Returns 0 and *out (released with ops->close), or a
 * negative code.
 */
int
compute_local_new(uv_loop_t *loop, const char *worker_path, const char *storage_url,
                  struct compute **out)
{
    if (loop == NULL || worker_path == NULL || worker_path[0] == '\0' ||
        storage_url == NULL || out == NULL)
        return -EINVAL;
    struct compute_local *cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return -ENOMEM;
    cl->base.ops = &compute_local_ops;
    cl->base.inline_max = WARM_INLINE_MAX;
    cl->base.runs_at_submit = true;
    cl->base.loop = loop;
    cl->base.name = "local";
    link_init(&cl->dispatches);
    link_init(&cl->notify);
    link_init(&cl->warm);
    cl->run_fd = -1;
    cl->root_fd = -1;
    cl->self_pid = getpid();
    cl->self_uid = geteuid();
    cl->worker_path = strdup(worker_path);
    cl->storage_url = strdup(storage_url);
    cl->storage_entry = env_entry("BURST_STORAGE", storage_url);
    char parent[32];
    snprintf(parent, sizeof(parent), "%d", (int)getpid());
    cl->parent_entry = env_entry("BURST_PARENT_PID", parent);
    if (cl->worker_path == NULL || cl->storage_url == NULL || cl->storage_entry == NULL ||
        cl->parent_entry == NULL || env_snapshot(cl) < 0) {
        cl_free(cl);
        return -ENOMEM;
    }
    /* Only root can start workers as other users, and they need the
     * storage root as a descriptor: the state directory is closed to them. */
    if (geteuid() == 0 && strncmp(storage_url, "file:", 5) == 0) {
        const char *dir = storage_url + 5;
        if (strncmp(dir, "//", 2) == 0)
            dir += 2;
        cl->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cl->root_fd < 0)
            log_warn("compute: cannot open the storage root %s; jobs of other users "
                     "will fail to start",
                     dir);
    }
    uv_idle_init(loop, &cl->idle);
    cl->idle.data = cl;
    *out = &cl->base;
    return 0;
}

/* A record read back at start-up. */
struct orphan {
    struct reap_target t;
    char name[256];       /* the record's file name */
    char spec_entry[600]; /* t.spec_entry points here */
};

/*
 * Parses one record.  Returns 1 when o describes a worker to reap, 0 when
 * the record is to be removed with nothing to do (malformed, or from before
 * a reboot), -EBUSY when the burstd that wrote it still runs.
 */
static int
orphan_parse(const struct compute_local *cl, const char *line, struct orphan *o)
{
    int wpid, dpid, n = 0;
    unsigned long long wstart, dstart;
    char boot[40], spec[512];
    if (sscanf(line, RECORD_MAGIC " %d %llu %d %llu %39s %511s%n", &wpid, &wstart, &dpid,
               &dstart, boot, spec, &n) != 6 ||
        line[n] != '\n' || wpid <= 1 || dpid <= 1)
        return 0;
    if (strcmp(boot, cl->boot_id) != 0)
        return 0; /* the reboot ended all of it */
    if (dpid != getpid() && proc_alive(dpid, dstart))
        return -EBUSY;
    o->t.sid = wpid;
    o->t.start = wstart;
    snprintf(o->spec_entry, sizeof(o->spec_entry), "BURST_SPEC=%s", spec);
    o->t.spec_entry = o->spec_entry;
    return 1;
}

/* Waits, up to REAP_WAIT_MS, until every process in r is gone or a zombie
 * (it runs no more code: its output is written or never will be). */
static void
reap_wait(const struct reaped *r)
{
    struct timespec tick = {0, 10 * 1000000L};
    for (int waited = 0;; waited += 10) {
        size_t alive = 0;
        for (size_t i = 0; i < r->n; i++)
            alive += proc_alive(r->v[i].pid, r->v[i].start);
        if (alive == 0)
            return;
        if (waited >= REAP_WAIT_MS) {
            log_warnx("compute: %zu processes left by an earlier burstd survive SIGKILL",
                      alive);
            return;
        }
        nanosleep(&tick, NULL);
    }
}

/*
 * Layer 3: reaps what the workers of a burstd that died left behind, from
 * the records in cl->run_fd, and removes those records.  Blocks (start-up
 * only) until what it killed is gone.  Returns 0 or a negative code; a
 * record it could not act on stays for the next start.
 */
static int
orphans_reap(struct compute_local *cl)
{
    int dfd = openat(cl->run_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (dir == NULL) {
        int rc = -errno;
        if (dfd >= 0)
            close(dfd);
        return rc;
    }
    struct orphan *o = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct orphan *no = realloc(o, ncap * sizeof(*no));
            if (no == NULL) {
                rc = -ENOMEM;
                break;
            }
            o = no;
            cap = ncap;
        }
        char line[RECORD_MAX];
        ssize_t len = -1;
        int fd = openat(cl->run_fd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            len = read(fd, line, sizeof(line) - 1);
            close(fd);
        }
        line[len > 0 ? len : 0] = '\0';
        int kind = orphan_parse(cl, line, &o[n]);
        if (kind == -EBUSY) {
            log_warnx("compute: worker record %s belongs to a burstd that still runs on "
                      "this state directory; leaving it",
                      de->d_name);
            continue;
        }
        snprintf(o[n].name, sizeof(o[n].name), "%s", de->d_name);
        if (kind == 0) {
            unlinkat(cl->run_fd, de->d_name, 0);
            continue;
        }
        /* The spec entry moves with the array: point at it on use. */
        n++;
    }
    closedir(dir);

    if (rc == 0 && n > 0) {
        struct reap_target *t = calloc(n, sizeof(*t));
        struct reaped done = {0};
        if (t == NULL) {
            rc = -ENOMEM;
        } else {
            for (size_t i = 0; i < n; i++) {
                t[i] = o[i].t;
                t[i].spec_entry = o[i].spec_entry;
            }
            rc = reap_sessions(cl, t, n, &done);
            reap_wait(&done);
            if (rc >= 0) {
                log_info("compute: %zu workers of an earlier burstd ended unseen; %zu of "
                         "their processes were still running and are killed",
                         n, done.n);
                for (size_t i = 0; i < n; i++)
                    unlinkat(cl->run_fd, o[i].name, 0);
                rc = 0;
            }
        }
        free(done.v);
        free(t);
    }
    free(o);
    return rc;
}

/* mkdir -p of dir, the directories it creates private to us. */
static int
mkdir_private(const char *dir)
{
    char buf[4096];
    if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -errno;
        if (c == '\0')
            return 0;
        *p = c;
    }
}

/* See compute.h.  The records written from here on carry our pid, start
 * time and the boot id, which is how the next burstd tells a record of a
 * dead daemon from one of a daemon that still runs. */
int
compute_local_track(struct compute *c, const char *dir)
{
    struct compute_local *cl = (struct compute_local *)c;
    if (c == NULL || c->ops != &compute_local_ops || dir == NULL || dir[0] == '\0' ||
        cl->run_fd >= 0)
        return -EINVAL;
    int rc = mkdir_private(dir);
    if (rc != 0)
        return rc;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    cl->run_fd = fd;

    struct proc_info self;
    rc = proc_info_read(getpid(), &self);
    if (rc != 0) {
        log_warnx("compute: cannot read /proc/%d/stat: %s; workers are not recorded",
                  (int)getpid(), strerror(-rc));
        goto fail_self;
    }
    cl->self_start = self.start;
    /* Without a boot id, "-": every record then looks like this boot's,
     * which only costs the checks of a sweep that finds nothing. */
    snprintf(cl->boot_id, sizeof(cl->boot_id), "-");
    int bfd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (bfd >= 0) {
        char b[64];
        ssize_t n = read(bfd, b, sizeof(b) - 1);
        close(bfd);
        b[n > 0 ? n : 0] = '\0';
        b[strcspn(b, " \t\n")] = '\0';
        size_t len = strlen(b);
        if (len > 0 && len < sizeof(cl->boot_id))
            memcpy(cl->boot_id, b, len + 1);
    }
    rc = orphans_reap(cl);
    if (rc != 0)
        log_warnx("compute: cannot reap the workers an earlier burstd left in %s: %s",
                  dir, strerror(-rc));
    return 0;

fail_self:
    close(cl->run_fd);
    cl->run_fd = -1;
    return rc;
}
