/*
 * tests/testd.h - a real burstd for the integration tests: started on a
 * temporary directory (socket, state dir, config, log), killed, restarted
 * on the same state, stopped with SIGTERM (it must exit 0), cleaned up.
 * Failures are cmocka failures of the calling test.
 */
#ifndef BURST_TESTS_TESTD_H
#define BURST_TESTS_TESTD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct testd {
    char dir[64];    /* the test's temporary directory */
    char sock[128];  /* dir/burst.sock */
    char state[128]; /* dir/state */
    char log[128];   /* dir/burstd.log: every run appends */
    char cfg[128];   /* dir/burstd.conf */
    pid_t pid;       /* the running burstd, 0 when none */
};

/* Makes /tmp/burst-test-NAME.XXXXXX and writes config (may be NULL). */
void testd_init(struct testd *d, const char *name, const char *config);
/* Starts $BURSTD on d with extra arguments (NULL-terminated, may be NULL)
 * and waits until it accepts connections.  The daemon gets SIGTERM should
 * the test process die first. */
void testd_start(struct testd *d, const char *const *extra);
/* SIGKILL, as a crash would. */
void testd_kill9(struct testd *d);
/* SIGTERM: burstd must exit 0 by itself and remove its socket. */
void testd_stop(struct testd *d);
/* Kills what still runs; on failure shows the end of the log; removes dir. */
void testd_cleanup(struct testd *d, bool passed);

/* Sleeping and a monotonic clock, for the polls of every integration test. */
/* Raw protocol access, for tests that write frames by hand. */
/* A connection to the Unix socket at path: its fd, or -1 (no assertion,
 * so a forked child can use it too). */
int testd_connect(const char *path);
/* Writes all of buf; gives up quietly if the daemon dropped the connection
 * (the read side then tells). */
void testd_write_all(int fd, const void *buf, size_t len);
/* Reads one frame within timeout_ms: its payload length, with the payload in
 * *payload (malloc'ed), or -1 at EOF or timeout. */
ssize_t testd_read_frame(int fd, int timeout_ms, char **payload);

void testd_sleep_ms(int ms);
int64_t testd_now_ms(void);

#endif /* BURST_TESTS_TESTD_H */
