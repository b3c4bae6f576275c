/*
 * tests/fuzz-config.c - the fuzz target of burstd's config parser
 * (daemon/config.c).  Built as a libFuzzer binary with clang and driven by
 * tests/fuzz-config-main.c (the 'config-fuzz-smoke' test) otherwise.
 *
 * The first input byte picks the mode and the size of the error buffer:
 * even, the rest is a whole config file, read by config_load() itself
 * through a memfd (the parser sees a real file, line buffer and all); odd,
 * the rest is "key\0value" handed to config_set(), as a command-line
 * override would be.  Besides "no crash, no leak, no sanitizer report", it
 * checks that every failure leaves a NUL-terminated message inside the
 * buffer and nothing past it, that an accepted config keeps the bounds
 * burstd relies on, and that reading the same file twice gives the same
 * config.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "proto_limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken property is a bug: crash so the fuzzer reports the input. */
#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond))                                                                     \
            abort();                                                                     \
    } while (0)

#define ERR_MAX 600
#define CANARY 0x5a

static bool
str_same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The error contract: -1 comes with a message that fits errsize. */
static void
check_error(const char *err, size_t errsize)
{
    CHECK(memchr(err, '\0', errsize) != NULL);
    CHECK(errsize == 1 || err[0] != '\0');
    for (size_t i = errsize; i < ERR_MAX; i++)
        CHECK((unsigned char)err[i] == CANARY);
}

/* What burstd relies on after a successful parse. */
static void
check_config(const struct config *cfg)
{
    CHECK(cfg->max_connections >= 1);
    CHECK(cfg->idle_timeout_ms >= 1);
    CHECK(cfg->limits.max_frame >= 1 && cfg->limits.max_frame <= PROTO_FRAME_HARD_MAX);
    CHECK(cfg->limits.max_depth >= 1);
    CHECK(cfg->verbose == 0 || cfg->verbose == 1);
    const char *strs[] = {cfg->socket_path, cfg->state_dir, cfg->worker_path,
                          cfg->admin_group};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        CHECK(strs[i] == NULL || strs[i][0] != '\0');
    CHECK(cfg->compute == NULL || strcmp(cfg->compute, "local") == 0);
    CHECK(cfg->storage == NULL || strcmp(cfg->storage, "local") == 0);
}

static bool
config_same(const struct config *a, const struct config *b)
{
    return a->quota == b->quota && a->max_connections == b->max_connections &&
           a->idle_timeout_ms == b->idle_timeout_ms && a->verbose == b->verbose &&
           memcmp(&a->limits, &b->limits, sizeof(a->limits)) == 0 &&
           str_same(a->socket_path, b->socket_path) &&
           str_same(a->state_dir, b->state_dir) &&
           str_same(a->worker_path, b->worker_path) &&
           str_same(a->admin_group, b->admin_group) && str_same(a->compute, b->compute) &&
           str_same(a->storage, b->storage);
}

static void
fuzz_file(const uint8_t *data, size_t size, size_t errsize)
{
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("fuzz-config", MFD_CLOEXEC);
        CHECK(fd >= 0);
    }
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

    char err[ERR_MAX];
    memset(err, CANARY, sizeof(err));
    struct config a, b;
    config_init(&a);
    int rc = config_load(&a, path, err, errsize);
    CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        check_error(err, errsize);
        config_free(&a);
        return;
    }
    check_config(&a);
    /* The parser keeps no state between files. */
    config_init(&b);
    CHECK(config_load(&b, path, err, errsize) == 0);
    CHECK(config_same(&a, &b));
    config_free(&b);
    config_free(&a);
}

static void
fuzz_set(const uint8_t *data, size_t size, size_t errsize)
{
    /* key\0value, both NUL-terminated copies, so ASan sees their ends. */
    const uint8_t *nul = memchr(data, '\0', size);
    size_t klen = nul ? (size_t)(nul - data) : size;
    size_t vlen = nul ? size - klen - 1 : 0;
    char *key = malloc(klen + 1), *value = malloc(vlen + 1);
    if (key == NULL || value == NULL) {
        free(key);
        free(value);
        return;
    }
    memcpy(key, data, klen);
    key[klen] = '\0';
    if (vlen > 0)
        memcpy(value, nul + 1, vlen);
    value[vlen] = '\0';

    char err[ERR_MAX];
    memset(err, CANARY, sizeof(err));
    struct config cfg;
    config_init(&cfg);
    int rc = config_set(&cfg, key, value, err, errsize);
    CHECK(rc == 0 || rc == -1);
    if (rc != 0)
        check_error(err, errsize);
    else
        check_config(&cfg);
    /* Setting the same pair again (a file, then the command line) is fine. */
    if (rc == 0) {
        memset(err, CANARY, sizeof(err));
        CHECK(config_set(&cfg, key, value, err, errsize) == 0);
    }
    config_free(&cfg);
    free(key);
    free(value);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* Mostly a roomy buffer; now and then a tiny one, to check truncation. */
    unsigned sel = data[0] >> 1;
    size_t errsize = sel < 16 ? 1 + sel : ERR_MAX - 88;
    if ((data[0] & 1) == 0)
        fuzz_file(data + 1, size - 1, errsize);
    else
        fuzz_set(data + 1, size - 1, errsize);
    return 0;
}
