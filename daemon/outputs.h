/*
 * daemon/outputs.h - reading ranges of invocations' output objects, wherever
 * they are.
 *
 * An invocation's output object (worker/invoc.h) is in the ledger when it
 * was small enough to come back through the worker's pipe (sched.c), and
 * in storage otherwise.  The ledger's task runs only say which object
 * (out_dispatch, out_n) and where in it; this is the one place that knows
 * to look in both.
 */
#ifndef BURST_DAEMON_OUTPUTS_H
#define BURST_DAEMON_OUTPUTS_H

#include <stddef.h>
#include <stdint.h>

#include "storage.h"

struct burstd;

/* Which output object a range of outputs_getv() reads. */
struct output_ref {
    uint64_t dispatch;
    uint32_t n;
};

/*
 * Reads ranges[i] (key: the object's storage key, off, len) of the output
 * object refs[i] of job, as storage_getv() does: fills data, got and status
 * of each range, then calls cb(arg, 0).  Ranges of objects the ledger
 * holds are read at once; the rest from storage.  cb may run before this
 * returns.  Returns 0, or a negative code without calling cb.  ranges and
 * refs are borrowed until cb.
 */
int outputs_getv(struct burstd *d, uint64_t job, const struct output_ref *refs,
                 struct storage_range *ranges, size_t n, storage_cb cb, void *arg);

#endif /* BURST_DAEMON_OUTPUTS_H */
