/*
 * daemon/syncer.h - threads that fdatasync a file for the loop.
 *
 * The ledger's commits are made durable by an fdatasync of its WAL
 * (ledger_defer_sync) that takes 0.3-2 ms on this kind of disk: on the loop
 * thread it stalls every client.  libuv's thread pool would do, but it is
 * shared with storage work that can queue dozens of slower jobs ahead of
 * it; the syncs get threads of their own, so their wait is the disk's
 * alone.
 *
 * More than one sync may be in flight (SYNCER_SLOTS): a commit made while
 * a sync runs need not wait for it to end before its own starts.  Each
 * sync covers what was written before it started, so one that ends makes
 * every commit before its start durable, whatever became of the syncs
 * started earlier; the tag says which commits those are.  A sync thread
 * may start some time after it was asked to (it waits for a CPU, often
 * the loop's own): what the loop wrote meanwhile (syncer_written) is
 * covered too, and its tag says so.
 */
#ifndef BURST_DAEMON_SYNCER_H
#define BURST_DAEMON_SYNCER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#define SYNCER_SLOTS 3

struct syncer;

/* done(arg, tag, err) runs on the loop thread after each sync: tag as
 * given to syncer_start or the higher one of syncer_written when the sync
 * started, err 0 or errno. */
int syncer_new(uv_loop_t *loop, void (*done)(void *arg, uint64_t tag, int err), void *arg,
               struct syncer **out);
/* Starts an fdatasync of fd on a free thread; only when !syncer_busy. */
void syncer_start(struct syncer *s, int fd, uint64_t tag);
/* What is tagged up to tag is written to the file: a sync that starts from
 * now on covers it.  Loop thread; tags only grow. */
void syncer_written(struct syncer *s, uint64_t tag);
/* Every thread has a sync in flight. */
bool syncer_busy(const struct syncer *s);
/* Blocks until no sync is in flight, running done for each here (a done
 * may start another, which is waited for too); for the last syncs before
 * exit. */
void syncer_wait(struct syncer *s);
/* Stops the threads (waiting for the syncs in flight, whose done then
 * never runs) and closes the handle; the memory goes when the loop has
 * closed it. */
void syncer_free(struct syncer *s);

#endif /* BURST_DAEMON_SYNCER_H */
