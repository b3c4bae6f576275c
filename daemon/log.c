/*
 * daemon/log.c - see log.h.  Writes whole lines with one write(2) each so
 * lines from the daemon and its workers do not interleave mid-line.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *log_progname = "burstd";
static int log_verbose;

void
log_init(const char *progname, int verbose)
{
    if (progname != NULL)
        log_progname = progname;
    log_verbose = verbose;
}

void
log_set_verbose(int verbose)
{
    log_verbose = verbose;
}

static void
vlog(const char *level, int with_errno, int saved_errno, const char *fmt, va_list ap)
{
    char line[2048];
    int n = snprintf(line, sizeof(line), "%s: %s", log_progname, level);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if (m < 0)
        return;
    size_t len = strlen(line);
    if (with_errno && len < sizeof(line) - 1)
        len += (size_t)snprintf(line + len, sizeof(line) - len, ": %s", strerror(saved_errno));
    if (len >= sizeof(line) - 1)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nowhere left to report a failing stderr */
}

void
log_warn(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vlog("warning: ", 1, e, fmt, ap);
    va_end(ap);
    errno = e;
}

void
log_warnx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("warning: ", 0, 0, fmt, ap);
    va_end(ap);
}

void
log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("", 0, 0, fmt, ap);
    va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
    if (!log_verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog("debug: ", 0, 0, fmt, ap);
    va_end(ap);
}

void
fatal(const char *fmt, ...)
{
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vlog("fatal: ", 1, e, fmt, ap);
    va_end(ap);
    exit(1);
}

void
fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog("fatal: ", 0, 0, fmt, ap);
    va_end(ap);
    exit(1);
}
