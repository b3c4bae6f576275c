/*
 * daemon/api.h - the protocol layer of burstd: decodes each request frame,
 * checks who may do what, and carries the request out against the ledger,
 * the scheduler, storage and the event log.  Every request gets exactly one
 * reply (ok or a clear error); a malformed one never affects anyone else.
 */
#ifndef BURST_DAEMON_API_H
#define BURST_DAEMON_API_H

#include <stddef.h>

struct burstd;
struct conn;

/*
 * Handles one frame's payload from c.  Returns 0 (handled, or started
 * asynchronously with the conn held and paused), or a negative code when
 * the connection must be dropped after the error already queued to it.
 * The payload is borrowed; an asynchronous handler relies on the paused
 * conn to keep it in place until it resumes the conn.
 */
int api_handle(struct burstd *d, struct conn *c, const char *payload, size_t len);

/* c is going away: drop its subscriptions, cancel its cancel-on-disconnect jobs. */
void api_conn_closed(struct burstd *d, struct conn *c);

#endif /* BURST_DAEMON_API_H */
