/*
 * daemon/scheduler.h - the scheduler (sched.c): turns queued tasks into
 * invocations of up to chunksize tasks, hands them to the compute backend
 * under one global concurrency quota shared fairly across owners and their
 * jobs, records how each attempt ended (retrying with backoff when the job
 * allows), starts the reducer of a map_reduce when its maps are done, and
 * carries every job to its end.  On start it reconciles what the ledger says
 * was in flight with what storage holds.
 *
 * The ledger is the source of truth; the scheduler keeps only per-job
 * counters and the in-flight dispatches in memory.  (The header is not named
 * sched.h so that it can never shadow the system's <sched.h>.)
 */
#ifndef BURST_DAEMON_SCHEDULER_H
#define BURST_DAEMON_SCHEDULER_H

#include <stdint.h>

#include "burst.h"

struct burstd;
struct sched;

int sched_new(struct burstd *d, uint32_t quota, struct sched **out);
/* Loads the active jobs and reconciles in-flight tasks (asynchronously);
 * dispatching begins once that is done.  Returns 0 or a negative code. */
int sched_start(struct sched *s);
/* Stops dispatching and ignores further completions (shutdown): running
 * workers are asked to stop (SIGTERM, SIGKILL after grace_ms) and what is in
 * flight stays recorded as such, to be reconciled at the next start. */
void sched_stop(struct sched *s, uint64_t grace_ms);
void sched_free(struct sched *s);

/* A commit failed and was rolled back: re-read counters from the ledger. */
void sched_resync(struct sched *s);

/* A job was committed to the ledger: start scheduling it.  pid: the client
 * process that submitted it (the quota is shared fairly between an owner's
 * processes), 0 when unknown.  The commit may be written and not yet
 * durable (see burstd_after_write); adding a job twice is harmless. */
int sched_job_added(struct sched *s, uint64_t job, int32_t pid);
/* Dispatches while the quota allows.  Cheap when there is nothing to do. */
void sched_pump(struct sched *s);
/* Cancels: queued tasks at once, running ones are killed.  *state receives
 * the job's state afterwards.  BURST_ENOJOB when unknown. */
int sched_cancel(struct sched *s, uint64_t job, int *state);
/* Counts per task state of an active job from memory; -ENOENT when the job
 * is not active (ask the ledger). */
int sched_counts(struct sched *s, uint64_t job, uint32_t counts[BURST_TASK_NSTATES]);

uint32_t sched_quota(const struct sched *s);
uint32_t sched_in_use(const struct sched *s);
void sched_set_quota(struct sched *s, uint32_t quota);

#endif /* BURST_DAEMON_SCHEDULER_H */
