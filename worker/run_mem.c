/*
 * worker/run_mem.c - see run.h: a task's memory limit (spec.memory_mb) and
 * telling an out-of-memory end from any other failure.
 *
 * Two mechanisms, chosen when a task process is about to start:
 *
 * cgroup v2, when /sys/fs/cgroup is a cgroup2 file system and the parent of
 * the worker's own cgroup is delegated to it (writable, with the memory
 * controller enabled for its children).  A task gets a child cgroup there,
 * "burst-task.<worker pid>.<n>", with memory.max set to the limit,
 * memory.swap.max to 0 (swap would only turn a clear failure into a crawl)
 * and memory.oom.group to 1 (the kernel kills the whole task, not one
 * process of a pipeline).  It has to be a sibling of the worker's cgroup,
 * not a child: a cgroup that holds processes (the worker) cannot hand the
 * memory controller to children.  The parent moves the forked child into the
 * cgroup and only then lets it go on to exec (it waits on a pipe), so not
 * one byte of the task is allocated outside the limit.  The verdict is
 * exact: memory.events counts oom_kill.  When the task ends, whatever is
 * left in the cgroup (a process that escaped the process group) is killed
 * and the cgroup removed.
 *
 * setrlimit(RLIMIT_AS) in the child otherwise (no cgroup v2, no delegation,
 * or BURST_MEMORY_LIMIT=rlimit in the environment).  An allocation beyond
 * the limit fails (malloc returns NULL, mmap and brk ENOMEM), and the
 * program fails in its own way: an error exit, abort() or a crash.  The
 * kernel keeps no record of a refused allocation, so the verdict is a
 * heuristic, and honest about being one: a task that failed is taken to
 * have run out of memory when its peak resident memory came within a
 * quarter of the limit.  The peak is the wait4() rusage ru_maxrss of the
 * task process, which covers every process of the task that was waited for
 * (the kernel keeps the largest): `sh -c 'a | b'` reports b's peak.  Reading
 * VmPeak from /proc/<pid>/status of the zombie (waitid WNOWAIT) does not
 * work: a zombie has no memory map left, and the lines are gone.  The so
 * executor, which runs many tasks in one process, resets the kernel's
 * high-water mark before each task (/proc/self/clear_refs) and measures the
 * growth from there.  What the heuristic misses: a single allocation larger
 * than what is left (`bytearray(1 << 30)` under 64 MiB) is refused while
 * the task is still small; the task then fails with its own status and its
 * log usually says why.  What it can get wrong: a task that used more than
 * three quarters of its limit and failed for an unrelated reason.
 *
 * Memory is charged per task for exec tasks.  An so executor runs the
 * invocation's tasks one after another in one process, so its limit (a
 * cgroup, or RLIMIT_AS above the size the executor had when it started) is
 * shared by those tasks in turn: what one task leaks, the next one lacks.
 * A warm worker (--serve) may keep that executor, with its limit, for the
 * next invocation of the same library when run_mem_same says a new one
 * would get the same limit.
 */
#include "run.h"

#include <dirent.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#define MEM_CGROUP_ROOT "/sys/fs/cgroup"
#define MEM_CGROUP_PREFIX "burst-task."
/* How long a task's cgroup may take to empty once everything in it was
 * killed.  It is usually immediate; the bound only keeps a stuck process
 * (in uninterruptible sleep, say) from holding the worker. */
#define MEM_RMDIR_GRACE_MS 2000
#define MEM_MIB (1024ull * 1024ull)

/* Where task cgroups go: probed once, on the first task with a limit. */
static struct {
    bool probed;
    bool usable;
    char base[PATH_MAX]; /* the delegated parent directory */
    uint32_t seq;        /* for the next cgroup's name */
} mem_cg;

/* ---- small file helpers --------------------------------------------------------- */

/* Reads up to size - 1 bytes of path into buf, NUL-terminated.  Returns the
 * length or -errno. */
static ssize_t
mem_read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t r = read(fd, buf + got, size - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int rc = -errno;
            close(fd);
            return rc;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    return (ssize_t)got;
}

/* Writes s to dir/name in one write(), as cgroup files want.  Returns 0 or
 * -errno. */
static int
mem_write_file(const char *dir, const char *name, const char *s)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
        return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t len = strlen(s);
    ssize_t w;
    do
        w = write(fd, s, len);
    while (w < 0 && errno == EINTR);
    int rc = w < 0 ? -errno : (size_t)w == len ? 0 : -EIO;
    close(fd);
    return rc;
}

/* The value of "key N" in a "key value" per line file (memory.events,
 * /proc/self/status), or -1 when the key is missing. */
static int64_t
mem_find_value(const char *text, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == '\t')) {
            char *end;
            unsigned long long v = strtoull(p + klen, &end, 10);
            return end == p + klen ? -1 : (int64_t)(v > INT64_MAX ? INT64_MAX : v);
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

/* True when word is one of the space-separated words of list. */
static bool
mem_has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)) != NULL; p += n) {
        bool start = p == list || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ' ' || p[n] == '\n';
        if (start && end)
            return true;
    }
    return false;
}

/* ---- cgroup v2 ---------------------------------------------------------------- */

/* Removes the empty task cgroups that workers killed outright left behind.
 * Only those of dead workers are tried, and rmdir refuses a cgroup that
 * still holds a process, so a live task is never touched. */
static void
mem_cgroup_sweep(void)
{
    DIR *d = opendir(mem_cg.base);
    if (d == NULL)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, MEM_CGROUP_PREFIX, strlen(MEM_CGROUP_PREFIX)) != 0)
            continue;
        char *end;
        long pid = strtol(de->d_name + strlen(MEM_CGROUP_PREFIX), &end, 10);
        if (pid <= 0 || *end != '.' || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", mem_cg.base, de->d_name) <
            sizeof(path))
            rmdir(path);
    }
    closedir(d);
}

/* Decides once whether task cgroups can be used, and where. */
static void
mem_cgroup_probe(void)
{
    mem_cg.probed = true;
    const char *force = getenv("BURST_MEMORY_LIMIT");
    if (force != NULL && strcmp(force, "rlimit") == 0)
        return;
    struct statfs sfs;
    if (statfs(MEM_CGROUP_ROOT, &sfs) != 0 || sfs.f_type != CGROUP2_SUPER_MAGIC)
        return; /* cgroup v1 or hybrid: its memory controller is not ours */

    /* On a cgroup v2 system /proc/self/cgroup is the single line "0::/path". */
    char buf[PATH_MAX + 64];
    if (mem_read_file("/proc/self/cgroup", buf, sizeof(buf)) <= 0)
        return;
    char *own = NULL;
    for (char *p = buf; p != NULL && *p != '\0';) {
        if (strncmp(p, "0::", 3) == 0) {
            own = p + 3;
            break;
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    if (own == NULL)
        return;
    own[strcspn(own, "\n")] = '\0';
    if (own[0] != '/' || strstr(own, "/..") != NULL || strchr(own, ' ') != NULL)
        return;
    /* The parent of our cgroup; at the root ("/") the root itself, which
     * may hold processes and still give controllers to its children. */
    size_t plen = (size_t)(strrchr(own, '/') - own);
    if ((size_t)snprintf(mem_cg.base, sizeof(mem_cg.base), "%s%.*s", MEM_CGROUP_ROOT,
                         (int)plen, own) >= sizeof(mem_cg.base))
        return;

    char path[PATH_MAX + 32], ctl[256];
    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", mem_cg.base);
    if (mem_read_file(path, ctl, sizeof(ctl)) < 0 || !mem_has_word(ctl, "memory"))
        return;
    snprintf(path, sizeof(path), "%s/cgroup.procs", mem_cg.base);
    if (access(mem_cg.base, W_OK | X_OK) != 0 || access(path, W_OK) != 0)
        return;
    mem_cg.usable = true;
    mem_cgroup_sweep();
}

/* Creates the task's cgroup with its limits.  Returns 0 with m->cgroup set,
 * or -errno with nothing left behind. */
static int
mem_cgroup_create(struct run_mem *m)
{
    char path[PATH_MAX];
    int rc = -EEXIST;
    for (int tries = 0; tries < 16 && rc == -EEXIST; tries++) {
        if ((size_t)snprintf(path, sizeof(path), "%s/" MEM_CGROUP_PREFIX "%ld.%" PRIu32,
                             mem_cg.base, (long)getpid(), mem_cg.seq++) >= sizeof(path))
            return -ENAMETOOLONG;
        rc = mkdir(path, 0755) == 0 ? 0 : -errno;
    }
    if (rc != 0) {
        /* Not allowed after all (a read-only mount, a policy): stop trying. */
        if (rc == -EACCES || rc == -EPERM || rc == -EROFS)
            mem_cg.usable = false;
        return rc;
    }
    char val[32];
    snprintf(val, sizeof(val), "%llu", (unsigned long long)m->limit_mb * MEM_MIB);
    rc = mem_write_file(path, "memory.max", val);
    if (rc != 0) {
        rmdir(path);
        return rc;
    }
    /* Both are refinements: a kernel without swap accounting has no
     * memory.swap.max, one before 4.19 no memory.oom.group. */
    mem_write_file(path, "memory.swap.max", "0");
    mem_write_file(path, "memory.oom.group", "1");
    m->cgroup = strdup(path);
    if (m->cgroup == NULL) {
        rmdir(path);
        return -ENOMEM;
    }
    return 0;
}

/* The cgroup's oom_kill count, or 0 when it cannot be read. */
static uint64_t
mem_cgroup_oom_kills(const struct run_mem *m)
{
    char path[PATH_MAX + 32], text[1024];
    snprintf(path, sizeof(path), "%s/memory.events", m->cgroup);
    if (mem_read_file(path, text, sizeof(text)) < 0)
        return 0;
    /* oom_kill came in Linux 4.13; before it, "oom" (the limit was hit and
     * an allocation was about to fail) is the next best witness. */
    int64_t n = mem_find_value(text, "oom_kill");
    if (n < 0)
        n = mem_find_value(text, "oom");
    return n > 0 ? (uint64_t)n : 0;
}

/* SIGKILLs everything in the cgroup: cgroup.kill where the kernel has it
 * (5.14), else every pid cgroup.procs lists. */
static void
mem_cgroup_kill(const char *cg)
{
    if (mem_write_file(cg, "cgroup.kill", "1") == 0)
        return;
    char path[PATH_MAX + 32], pids[4096];
    snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
    if (mem_read_file(path, pids, sizeof(pids)) <= 0)
        return;
    for (char *p = pids; *p != '\0';) {
        char *end;
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        if (pid > 0)
            kill((pid_t)pid, SIGKILL);
        p = end;
        while (*p == '\n')
            p++;
    }
}

/* ---- RLIMIT_AS ---------------------------------------------------------------- */

/* The calling process's size (statm field 0) or resident set (field 1) in
 * bytes, or 0 when unknown.  Only open, read and close: safe in a child. */
static uint64_t
mem_statm(int field)
{
    char buf[256];
    if (mem_read_file("/proc/self/statm", buf, sizeof(buf)) <= 0)
        return 0;
    char *p = buf;
    for (int i = 0; i < field; i++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return 0;
        p++;
    }
    return strtoull(p, NULL, 10) * (uint64_t)getpagesize();
}

static void
mem_apply_rlimit(const struct run_mem *m)
{
    uint64_t lim = (uint64_t)m->limit_mb * MEM_MIB;
    /* The so executor already carries the worker's mappings (a sanitizer's
     * shadow alone is terabytes of address space): the limit is what the
     * functions may add on top. */
    if (m->relative) {
        uint64_t base = mem_statm(0);
        lim = base > UINT64_MAX - lim ? UINT64_MAX : base + lim;
    }
    struct rlimit rl = {(rlim_t)lim, (rlim_t)lim};
    setrlimit(RLIMIT_AS, &rl);
}

/* ---- the interface ------------------------------------------------------------ */

void
run_mem_prepare(struct run_mem *m, uint32_t limit_mb, bool relative)
{
    *m = (struct run_mem){
        .limit_mb = limit_mb,
        .relative = relative,
        .mode = RUN_MEM_NONE,
        .sync_rd = -1,
        .sync_wr = -1,
    };
    if (limit_mb == 0)
        return;
    m->mode = RUN_MEM_RLIMIT;
    if (!mem_cg.probed)
        mem_cgroup_probe();
    if (!mem_cg.usable || mem_cgroup_create(m) != 0)
        return;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        run_mem_release(m);
        m->mode = RUN_MEM_RLIMIT;
        return;
    }
    m->sync_rd = p[0]; /* both ends belong to m until attach or release */
    m->sync_wr = p[1];
    m->mode = RUN_MEM_CGROUP;
}

void
run_mem_child(const struct run_mem *m)
{
    if (m->mode == RUN_MEM_NONE)
        return;
    if (m->sync_rd >= 0) {
        /* Wait for the parent's word: 'c' once we are in the cgroup, 'r'
         * when moving us failed.  EOF (the parent died) falls back too. */
        char word = 'r';
        ssize_t r;
        close(m->sync_wr);
        do
            r = read(m->sync_rd, &word, 1);
        while (r < 0 && errno == EINTR);
        close(m->sync_rd);
        if (r == 1 && word == 'c')
            return;
    }
    mem_apply_rlimit(m);
}

void
run_mem_attach(struct run_mem *m, pid_t pid)
{
    if (m->sync_wr < 0)
        return;
    char word = 'c';
    char buf[32];
    snprintf(buf, sizeof(buf), "%ld\n", (long)pid);
    if (mem_write_file(m->cgroup, "cgroup.procs", buf) != 0) {
        /* The child is not in the cgroup: it limits itself instead. */
        word = 'r';
        rmdir(m->cgroup);
        free(m->cgroup);
        m->cgroup = NULL;
        m->mode = RUN_MEM_RLIMIT;
    }
    ssize_t w;
    do
        w = write(m->sync_wr, &word, 1);
    while (w < 0 && errno == EINTR);
    close(m->sync_rd);
    close(m->sync_wr);
    m->sync_rd = -1;
    m->sync_wr = -1;
}

void
run_mem_task_start(struct run_mem *m)
{
    if (m->mode == RUN_MEM_CGROUP && m->cgroup != NULL)
        m->oom_seen = mem_cgroup_oom_kills(m);
}

bool
run_mem_exceeded(const struct run_mem *m, uint64_t peak_kib)
{
    switch (m->mode) {
    case RUN_MEM_CGROUP:
        return m->cgroup != NULL && mem_cgroup_oom_kills(m) > m->oom_seen;
    case RUN_MEM_RLIMIT:
        return peak_kib >= (uint64_t)m->limit_mb * 1024u / 4u * 3u;
    default:
        return false;
    }
}

void
run_mem_describe(const struct run_mem *m, struct invoc_result *r, char *reason,
                 size_t size)
{
    r->status = INVOC_OOM;
    r->reason = reason;
    snprintf(reason, size, "out of memory (limit %" PRIu32 " MiB)", m->limit_mb);
}

bool
run_mem_same(const struct run_mem *m, uint32_t limit_mb)
{
    if (m->limit_mb != limit_mb)
        return false;
    if (limit_mb == 0)
        return m->mode == RUN_MEM_NONE;
    /* Prepared with a limit, so probed: a new process would get a cgroup
     * exactly when they are usable (one whose creation fails falls back,
     * and so does the one we compare with). */
    if (m->mode == RUN_MEM_CGROUP)
        return mem_cg.usable && m->cgroup != NULL;
    return m->mode == RUN_MEM_RLIMIT && !mem_cg.usable;
}

void
run_mem_release(struct run_mem *m)
{
    if (m->sync_rd >= 0)
        close(m->sync_rd);
    if (m->sync_wr >= 0)
        close(m->sync_wr);
    m->sync_rd = -1;
    m->sync_wr = -1;
    if (m->cgroup == NULL)
        return;
    /* rmdir fails (EBUSY) while a process lives in the cgroup; killed ones
     * leave it as they exit, zombies included. */
    int64_t end = run_now_ms() + MEM_RMDIR_GRACE_MS;
    mem_cgroup_kill(m->cgroup);
    while (rmdir(m->cgroup) != 0) {
        if (errno != EBUSY || run_now_ms() >= end) {
            warn("cannot remove task cgroup %s", m->cgroup);
            break;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        mem_cgroup_kill(m->cgroup);
    }
    free(m->cgroup);
    m->cgroup = NULL;
}

bool
run_mem_peak_reset(uint64_t *rss_kib)
{
    /* "5" resets the peak resident set (VmHWM) to the current one (Linux
     * 4.0). */
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t w;
    do
        w = write(fd, "5", 1);
    while (w < 0 && errno == EINTR);
    close(fd);
    uint64_t rss = mem_statm(1);
    if (w != 1 || rss == 0)
        return false;
    *rss_kib = rss / 1024u;
    return true;
}

uint64_t
run_mem_peak_read(void)
{
    char text[4096];
    if (mem_read_file("/proc/self/status", text, sizeof(text)) <= 0)
        return 0;
    int64_t v = mem_find_value(text, "VmHWM:");
    return v > 0 ? (uint64_t)v : 0;
}
