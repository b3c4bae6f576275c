/*
 * daemon/notify.c - see notify.h.  main.c calls notify_init before anything
 * else starts, notify_send("READY=1...") once the server listens and the
 * scheduler runs, and notify_send("STOPPING=1") when a SIGTERM begins the
 * shutdown.  systemd matches the sender's pid (SCM_CREDENTIALS, which the
 * kernel attaches for a receiver with SO_PASSCRED) to the service's main
 * pid, so the messages must come from burstd itself, never from a worker.
 */
#include "notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* The process-wide notification target; fd < 0 means notifications are off. */
static struct {
    int fd; /* owned: an unbound AF_UNIX datagram socket */
    struct sockaddr_un addr;
    socklen_t addrlen;
} notify_target = {.fd = -1};

/*
 * Fills sa and *len from a $NOTIFY_SOCKET value.  Returns 0, or -EINVAL /
 * -ENAMETOOLONG / -EAFNOSUPPORT for an empty, oversized or non-Unix address
 * (newer managers may also offer "vsock:..."; burstd does not speak it).
 */
static int
notify_parse(const char *value, struct sockaddr_un *sa, socklen_t *len)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    size_t n = strlen(value);
    if (value[0] == '@') {
        /* Abstract namespace: a leading NUL, then the name, and the length
         * says where the name ends (it is not NUL-terminated). */
        if (n < 2)
            return -EINVAL;
        if (n > sizeof(sa->sun_path))
            return -ENAMETOOLONG;
        memcpy(sa->sun_path + 1, value + 1, n - 1);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        return 0;
    }
    if (value[0] != '/')
        return -EAFNOSUPPORT;
    if (n >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    memcpy(sa->sun_path, value, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int
notify_init(void)
{
    if (notify_target.fd >= 0)
        return 0;
    const char *value = getenv("NOTIFY_SOCKET");
    if (value == NULL)
        return 0;
    int rc = value[0] == '\0'
                 ? 0
                 : notify_parse(value, &notify_target.addr, &notify_target.addrlen);
    /* value points into the environment: done with it before unsetenv. */
    unsetenv("NOTIFY_SOCKET");
    if (rc != 0 || notify_target.addrlen == 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* A full receive queue would block sendto; a second is plenty for a
     * healthy manager and bounds the stall of a sick one. */
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    notify_target.fd = fd;
    return 0;
}

bool
notify_enabled(void)
{
    return notify_target.fd >= 0;
}

int
notify_send(const char *fmt, ...)
{
    if (notify_target.fd < 0)
        return 0;
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof(msg))
        return -EMSGSIZE;
    ssize_t sent;
    do {
        sent =
            sendto(notify_target.fd, msg, (size_t)n, MSG_NOSIGNAL,
                   (const struct sockaddr *)&notify_target.addr, notify_target.addrlen);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0)
        return -errno;
    return 0;
}

void
notify_close(void)
{
    if (notify_target.fd >= 0)
        close(notify_target.fd);
    notify_target.fd = -1;
}
