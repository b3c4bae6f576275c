/*
 * daemon/syncer.h - one thread that fdatasyncs a file for the loop.
 *
 * The ledger's commits are made durable by an fdatasync of its WAL
 * (ledger_defer_sync) that takes 0.3-2 ms on this kind of disk: on the loop
 * thread it stalls every client.  libuv's thread pool would do, but it is
 * shared with storage work that can queue dozens of slower jobs ahead of
 * it; the sync gets a thread of its own, so its wait is the disk's alone.
 */
#ifndef BURST_DAEMON_SYNCER_H
#define BURST_DAEMON_SYNCER_H

#include <stdbool.h>
#include <uv.h>

struct syncer;

/* done(arg, err) runs on the loop thread after each sync: err 0 or errno. */
int syncer_new(uv_loop_t *loop, void (*done)(void *arg, int err), void *arg,
               struct syncer **out);
/* Starts an fdatasync of fd; one at a time (syncer_busy says). */
void syncer_start(struct syncer *s, int fd);
bool syncer_busy(const struct syncer *s);
/* Blocks until the sync in flight, if any, is over, and runs done for it
 * here; for the last sync before exit. */
void syncer_wait(struct syncer *s);
/* Stops the thread (waiting for a sync in flight, whose done then never
 * runs) and closes the handle; the memory goes when the loop has closed it. */
void syncer_free(struct syncer *s);

#endif /* BURST_DAEMON_SYNCER_H */
