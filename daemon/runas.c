/*
 * daemon/runas.c - see runas.h: whose uid a worker runs as, and what it may
 * reach in local storage.
 */
#include "runas.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "burst.h"

bool
runas_needed(uint32_t uid)
{
    /* burstd never changes its own uid, and this is asked at every
     * submission and dispatch. */
    static uid_t euid = (uid_t)-1;
    if (euid == (uid_t)-1)
        euid = geteuid();
    return (uid_t)uid != euid;
}

/*
 * Accounts looked up lately.  getpwuid_r may ask a directory service over
 * the network, and it runs on the event loop (at every submission and
 * dispatch of another user's job): a short-lived cache keeps that to one
 * lookup per user and minute.  Only the loop thread calls in here.
 */
#define RUNAS_CACHE 64
#define RUNAS_CACHE_SEC 60

static struct {
    struct runas ra;
    time_t at; /* monotonic seconds; 0 = empty */
} runas_cache[RUNAS_CACHE];

static time_t
mono_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1; /* never 0 */
}

static int runas_lookup_uncached(uint32_t uid, struct runas *ra, char *why,
                                 size_t whylen);

int
runas_lookup(uint32_t uid, struct runas *ra, char *why, size_t whylen)
{
    time_t now = mono_sec();
    size_t slot = uid % RUNAS_CACHE;
    if (runas_cache[slot].at != 0 && runas_cache[slot].ra.uid == (uid_t)uid &&
        now - runas_cache[slot].at < RUNAS_CACHE_SEC) {
        *ra = runas_cache[slot].ra;
        return 0;
    }
    int rc = runas_lookup_uncached(uid, ra, why, whylen);
    if (rc == 0) {
        runas_cache[slot].ra = *ra;
        runas_cache[slot].at = now;
    }
    return rc;
}

static int
runas_lookup_uncached(uint32_t uid, struct runas *ra, char *why, size_t whylen)
{
    long size = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t bufsize = size > 0 ? (size_t)size : 16384;
    char *buf = malloc(bufsize);
    if (buf == NULL) {
        snprintf(why, whylen, "out of memory");
        return -ENOMEM;
    }
    struct passwd pw, *found = NULL;
    int err = getpwuid_r((uid_t)uid, &pw, buf, bufsize, &found);
    if (found == NULL) {
        snprintf(why, whylen,
                 "uid %" PRIu32 " has no account on this machine (%s), so burstd cannot "
                 "run its tasks as that user",
                 uid, err != 0 ? strerror(err) : "no passwd entry");
        free(buf);
        return BURST_EPERM;
    }
    ra->uid = (uid_t)uid;
    ra->gid = pw.pw_gid;
    /* Truncation only shortens what the task sees in its environment. */
    snprintf(ra->home, sizeof(ra->home), "HOME=%s", pw.pw_dir ? pw.pw_dir : "/");
    snprintf(ra->user, sizeof(ra->user), "USER=%s", pw.pw_name);
    snprintf(ra->logname, sizeof(ra->logname), "LOGNAME=%s", pw.pw_name);
    free(buf);
    return 0;
}

int
runas_admit(uint32_t uid, char *why, size_t whylen)
{
    if (!runas_needed(uid))
        return 0;
    if (geteuid() != 0) {
        snprintf(why, whylen,
                 "this burstd runs as uid %u and can run tasks only as that user, not as "
                 "uid %" PRIu32 "; start your own burstd, or have the administrator run "
                 "the system one as root (systemd/burstd.service), which runs each job "
                 "as its owner",
                 (unsigned)geteuid(), uid);
        return BURST_EPERM;
    }
    struct runas ra;
    return runas_lookup(uid, &ra, why, whylen);
}

/* Opens directory name under dfd without following a symlink; -errno. */
static int
open_dir(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* As open_dir, making it (0700) when missing: a small job's worker gets
 * its spec and input with its request, so nothing made the job's
 * directory before. */
static int
open_or_make_dir(int dfd, const char *name)
{
    int fd = open_dir(dfd, name);
    if (fd != -ENOENT)
        return fd;
    if (mkdirat(dfd, name, 0700) < 0 && errno != EEXIST)
        return -errno;
    return open_dir(dfd, name);
}

/* chmod 0711 of an open directory: others may pass, not list. */
static int
traversable(int fd)
{
    return fchmod(fd, 0711) < 0 ? -errno : 0;
}

/* Hands file name under dfd to ra when it exists. */
static int
give(int dfd, const char *name, const struct runas *ra)
{
    if (fchownat(dfd, name, ra->uid, ra->gid, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int
runas_grant(int root_fd, uint64_t job, const char *spec_key, const struct runas *ra)
{
    char name[32];
    int jobs = -1, jd = -1, sd = -1, fn = -1;
    int rc = traversable(root_fd);
    if (rc != 0)
        goto out;
    /* fn/ exists when any so function was uploaded; exec jobs need none. */
    fn = open_dir(root_fd, "fn");
    if (fn >= 0)
        rc = traversable(fn);
    else if (fn != -ENOENT)
        rc = fn;
    if (rc != 0)
        goto out;
    jobs = open_or_make_dir(root_fd, "jobs");
    if (jobs < 0 || (rc = traversable(jobs)) != 0)
        goto out_jobs;
    snprintf(name, sizeof(name), "%" PRIu64, job);
    jd = open_or_make_dir(jobs, name);
    if (jd < 0 || (rc = traversable(jd)) != 0)
        goto out_jobs;
    /* The daemon wrote these in a directory only it can write to, so
     * nothing here was planted by the owner. */
    static const char *const own[] = {"in", "reduce.in"};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]) && rc == 0; i++)
        rc = give(jd, own[i], ra);
    if (rc != 0)
        goto out;
    if (mkdirat(jd, "out", 0700) < 0 && errno != EEXIST) {
        rc = -errno;
        goto out;
    }
    if ((rc = give(jd, "out", ra)) != 0)
        goto out;

    /* spec_key is jobs/<job>/spec/<dispatch>: the spec directory must be
     * passable, the spec itself the owner's. */
    const char *slash = strrchr(spec_key, '/');
    snprintf(name, sizeof(name), "%" PRIu64 "/spec/", job);
    if (slash == NULL || strncmp(spec_key, "jobs/", 5) != 0 ||
        strncmp(spec_key + 5, name, strlen(name)) != 0) {
        rc = -EINVAL;
        goto out;
    }
    sd = open_dir(jd, "spec");
    if (sd == -ENOENT) {
        rc = 0; /* the spec goes to the worker with its request */
        goto out;
    }
    if (sd < 0 || (rc = traversable(sd)) != 0)
        goto out_jobs;
    rc = give(sd, slash + 1, ra);
    goto out;

out_jobs:
    if (rc == 0)
        rc = jobs < 0 ? jobs : jd < 0 ? jd : sd;
out:
    if (fn >= 0)
        close(fn);
    if (jobs >= 0)
        close(jobs);
    if (jd >= 0)
        close(jd);
    if (sd >= 0)
        close(sd);
    return rc;
}
