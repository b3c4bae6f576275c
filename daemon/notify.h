/*
 * daemon/notify.h - the systemd readiness protocol (sd_notify), written by
 * hand so burstd needs no libsystemd.
 *
 * A service manager that wants to know when burstd is ready (Type=notify)
 * names an AF_UNIX datagram socket in $NOTIFY_SOCKET; burstd sends it
 * newline-separated "KEY=value" assignments: READY=1 once it listens and the
 * scheduler runs, STOPPING=1 on SIGTERM, STATUS=... for `systemctl status`.
 * Without $NOTIFY_SOCKET every call is a no-op, so the daemon behaves the
 * same in a terminal, under a test, or under systemd.
 *
 * The module holds one process-wide socket: the protocol is per process.
 */
#ifndef BURST_DAEMON_NOTIFY_H
#define BURST_DAEMON_NOTIFY_H

#include <stdbool.h>

/*
 * Reads $NOTIFY_SOCKET (a path, or '@' + a name in the abstract namespace)
 * and removes it from the environment, so workers spawned later never
 * inherit it and cannot impersonate the daemon.  Call it once, early in
 * main, before any child process is started.  Returns 0 (also when the
 * variable is unset: notifications are then off) or a negative errno code
 * when the address is unusable (notifications are then off as well; the
 * caller decides whether to log it).
 */
int notify_init(void);

/* Whether notify_init found a usable $NOTIFY_SOCKET. */
bool notify_enabled(void);

/*
 * Sends one message: fmt expands to one or more "KEY=value" lines joined
 * by '\n' ("READY=1\nSTATUS=serving").  A message that does not fit in 4 KiB
 * is refused.  Never blocks for more than about a second (a stalled service
 * manager must not freeze the loop).  Returns 0, also when notifications are
 * off, or a negative errno code; a failure loses only that message.
 */
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Closes the socket; later calls are no-ops. */
void notify_close(void);

#endif /* BURST_DAEMON_NOTIFY_H */
