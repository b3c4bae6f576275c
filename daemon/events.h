/*
 * daemon/events.h - each job's event log and its subscribers.
 *
 * Changes are collected during a loop iteration (events_job_state,
 * events_task), appended to the ledger as a few batched log entries just
 * before the iteration's commit (events_flush_to_ledger), and pushed to the
 * subscribed connections only after that commit (events_publish): a client
 * never sees an event the ledger could lose.  A subscriber that reconnects
 * replays from any sequence number and gets every missed event exactly
 * once, in order, before the live ones.
 */
#ifndef BURST_DAEMON_EVENTS_H
#define BURST_DAEMON_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

struct burstd;
struct conn;
struct events;
struct events_batch;

int events_new(struct burstd *d, struct events **out);
void events_free(struct events *ev);

/* Queue a change (cheap; no I/O).  Returns 0 or -ENOMEM. */
int events_job_state(struct events *ev, uint64_t job, int state);
int events_task(struct events *ev, uint64_t job, uint32_t index, int state,
                uint32_t attempts);

/* Appends what was queued to the ledger in its open transaction. */
int events_flush_to_ledger(struct events *ev);
/* After the commit: sends the flushed events to their subscribers. */
void events_publish(struct events *ev);
/* The commit failed: forget what was flushed (it is not in the ledger). */
void events_discard(struct events *ev);
/* After a commit whose sync is still to come: takes what was flushed, to
 * publish with events_publish_batch() once it is durable (and frees it). */
struct events_batch *events_detach(struct events *ev);
void events_publish_batch(struct events *ev, struct events_batch *b);
/* How soon somebody is likely to wait for b to be durable.  A job's end
 * is waited for (burst wait, burst_map): now.  Any other event of a job
 * somebody follows is progress, heard a little later without harm: soon,
 * so that the task ends of a busy job share syncs instead of costing one
 * each.  The rest (a dispatch, a task's start or end nobody follows) can
 * share a later commit's sync: a client that asks for status or results
 * waits for that sync itself (burstd_after_durable). */
enum events_need {
    EVENTS_SYNC_LATER,
    EVENTS_SYNC_SOON,
    EVENTS_SYNC_NOW,
};
enum events_need events_batch_need(const struct events *ev, const struct events_batch *b);
/* Changes queued that no transaction holds yet. */
bool events_queued(const struct events *ev);
/* Whether every event of job is durable: none queued, none in the open
 * transaction, none in a commit still waiting for its sync.  Every change
 * a crash must not undo once told (a job's acceptance, a state, a task's
 * end, a cancel) comes with an event, so a reply about job alone may go
 * out at once when this is true. */
bool events_job_durable(const struct events *ev, uint64_t job);

/* 0 when c may subscribe to job (it already is, or it is under the
 * config's max_subscriptions), else BURST_ETOOBIG.  Lets the caller refuse
 * before it replies. */
int events_subscribe_check(const struct events *ev, const struct conn *c, uint64_t job);
/* Replays events after from_seq to c, then keeps it subscribed.  Returns 0,
 * BURST_ETOOBIG (a new subscription beyond the limit: nothing changed),
 * -ENOMEM or a ledger error of the replay. */
int events_subscribe(struct events *ev, struct conn *c, uint64_t job, uint64_t from_seq);
void events_unsubscribe(struct events *ev, struct conn *c, uint64_t job);
void events_conn_closed(struct events *ev, struct conn *c);

#endif /* BURST_DAEMON_EVENTS_H */
