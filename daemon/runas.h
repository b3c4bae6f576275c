/*
 * daemon/runas.h - running a job's tasks as the job's owner on this machine.
 *
 * A burstd shared by several users (system mode) must not run one user's
 * code as burstd's own user: that user can read every job in the state
 * directory.  So the local compute backend starts each worker as the uid
 * that submitted the job, which only a burstd running as root can do; a
 * burstd that is not root accepts jobs from its own uid alone (runas_admit).
 *
 * A worker running as another uid cannot reach the state directory (0700),
 * so it gets the storage root as an inherited descriptor (fd 3, reached as
 * /proc/self/fd/3), and runas_grant() opens exactly what the worker needs:
 *   - the directories on the way (storage root, jobs/, jobs/<job>/, spec/,
 *     fn/) become 0711: traversable, not listable;
 *     jobs/ and jobs/<job>/ are made when missing: a small job's spec
 *     and input travel with the worker's request, not through storage;
 *   - the job's own files (in, reduce.in) and the dispatch's
 *     spec object, those that are in storage, are chowned to the owner;
 *   - jobs/<job>/out/ is created, owned by the owner (0700): the only place
 *     the worker writes.
 * Other users' jobs stay unreadable (owned by them or by root, 0600), and
 * names cannot be listed.  Function libraries (fn/<sha256>.so) are readable
 * by every uid that knows the hash, i.e. that has the content already.
 *
 * Everything the daemon later reads back from jobs/<job>/out/ lives in a
 * directory the owner controls: storage_local opens objects without
 * following symlinks and accepts only regular files with a single link, so
 * a planted symlink, FIFO or hard link cannot make burstd read a file on the
 * owner's behalf.
 */
#ifndef BURST_DAEMON_RUNAS_H
#define BURST_DAEMON_RUNAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The fd a switched worker finds the storage root on. */
#define RUNAS_STORAGE_FD 3
#define RUNAS_STORAGE_ENTRY "BURST_STORAGE=file:/proc/self/fd/3"

struct runas {
    uid_t uid;
    gid_t gid;      /* the account's primary group */
    char home[256]; /* "HOME=..." */
    char user[64];  /* "USER=..." */
    char logname[72];
};

/* Whether tasks of uid must run under another uid than burstd's own. */
bool runas_needed(uint32_t uid);

/*
 * Whether this burstd can run tasks as uid: 0, or BURST_EPERM with the
 * reason in why (a sentence for the client).  Not root: only its own uid.
 * Root: any uid with an account (a passwd entry gives its group and home).
 */
int runas_admit(uint32_t uid, char *why, size_t whylen);

/* Fills ra for uid from its passwd entry (remembered for a minute: it runs
 * on the event loop).  0, or BURST_EPERM with why. */
int runas_lookup(uint32_t uid, struct runas *ra, char *why, size_t whylen);

/*
 * Gives ra's uid what a worker of dispatch spec_key of job needs under the
 * storage root root_fd (see above).  Idempotent.  0 or -errno.
 */
int runas_grant(int root_fd, uint64_t job, const char *spec_key, const struct runas *ra);

#endif /* BURST_DAEMON_RUNAS_H */
