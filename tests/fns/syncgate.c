/*
 * tests/fns/syncgate.c - an LD_PRELOAD library that lets a test hold or
 * fail the fdatasync of a SQLite WAL (a file whose name ends in "-wal"),
 * to check what burstd does while its ledger is not yet durable and when
 * the disk refuses to sync.  Other files sync as usual.
 *
 *   BURST_TEST_SYNC_GATE=PATH  such a sync waits while PATH exists
 *   BURST_TEST_SYNC_FAIL=PATH  such a sync fails with EIO while PATH exists
 *   BURST_TEST_SYNC_ONE=PATH   the first such sync to find PATH renames it
 *                              to PATH.held and waits while that exists,
 *                              then goes on past the gate; the others go
 *                              on to the gate
 *   BURST_TEST_SYNC_SIZES=PATH after each such sync that succeeds, PATH
 *                              says the WAL's size it covered: what a
 *                              power cut would leave of the file (a test
 *                              truncates the WAL to it)
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int
is_wal(int fd)
{
    char link[64], path[4096];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n < 4)
        return 0;
    path[n] = '\0';
    return strcmp(path + n - 4, "-wal") == 0;
}

/* Replaces PATH's content with size, atomically (the test reads it after
 * killing the process, which may be in here). */
static void
record_size(const char *path, off_t size)
{
    char tmp[4096], line[32];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
        return;
    int n = snprintf(line, sizeof(line), "%lld\n", (long long)size);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return;
    int ok = write(fd, line, (size_t)n) == n;
    close(fd);
    if (ok)
        rename(tmp, path);
    else
        unlink(tmp);
}

int
fdatasync(int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (real == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (is_wal(fd)) {
        const char *fail = getenv("BURST_TEST_SYNC_FAIL");
        if (fail != NULL && access(fail, F_OK) == 0) {
            errno = EIO;
            return -1;
        }
        const char *one = getenv("BURST_TEST_SYNC_ONE");
        const char *gate = getenv("BURST_TEST_SYNC_GATE");
        char held[4096];
        struct timespec tick = {0, 2 * 1000 * 1000};
        if (one != NULL &&
            snprintf(held, sizeof(held), "%s.held", one) < (int)sizeof(held) &&
            rename(one, held) == 0) {
            while (access(held, F_OK) == 0)
                nanosleep(&tick, NULL);
        } else {
            while (gate != NULL && access(gate, F_OK) == 0)
                nanosleep(&tick, NULL);
        }
    }
    /* The size before the sync: what was written by then is what it
     * makes durable. */
    struct stat st;
    int have = is_wal(fd) && fstat(fd, &st) == 0;
    int rc = real(fd);
    const char *sizes = getenv("BURST_TEST_SYNC_SIZES");
    if (rc == 0 && have && sizes != NULL) {
        /* Syncs run on several threads and may end out of order: the
         * largest size any of them covered is what is durable. */
        static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
        static off_t durable;
        pthread_mutex_lock(&lock);
        if (st.st_size > durable) {
            durable = st.st_size;
            record_size(sizes, durable);
        }
        pthread_mutex_unlock(&lock);
    }
    return rc;
}
