/*
 * daemon/log.h - logging in the OpenBSD daemon shape.
 *
 * log_warn appends strerror(errno); log_warnx does not; log_info and
 * log_debug are for the operator.  fatal/fatalx exit and are only for
 * start-up and for a failed sync of the ledger (burstd.c).  Lines go to
 * stderr (journald adds the time when run by systemd), prefixed with the
 * level.  Never log secrets or job payloads.
 */
#ifndef BURST_DAEMON_LOG_H
#define BURST_DAEMON_LOG_H

#include <stdarg.h>

void log_init(const char *progname, int verbose);
void log_set_verbose(int verbose);
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif /* BURST_DAEMON_LOG_H */
