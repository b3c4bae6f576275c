/*
 * daemon/config.c - see config.h.  The parser is deliberately strict: a
 * daemon holding other people's work should refuse to start on a config it
 * does not understand rather than guess.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
config_init(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_connections = 1024;
    cfg->idle_timeout_ms = 30000;
    cfg->max_connections_per_uid = 256;
    cfg->max_subscriptions = 1024;
    proto_limits_default(&cfg->limits);
}

void
config_free(struct config *cfg)
{
    free(cfg->socket_path);
    free(cfg->state_dir);
    free(cfg->worker_path);
    free(cfg->admin_group);
    free(cfg->socket_group);
    free(cfg->credentials_dir);
    free(cfg->compute);
    free(cfg->storage);
    memset(cfg, 0, sizeof(*cfg));
}

static int
parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    if (*s == '\0' || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int
set_str(char **dst, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return -1;
    free(*dst);
    *dst = copy;
    return 0;
}

struct u32_key {
    const char *key;
    size_t offset; /* of the uint32_t within struct config */
    uint32_t min, max;
};

#define CFG_U32(k, field, lo, hi) {k, offsetof(struct config, field), lo, hi}

static const struct u32_key u32_keys[] = {
    CFG_U32("quota", quota, 1, 100000),
    CFG_U32("max_connections", max_connections, 1, 1000000),
    CFG_U32("idle_timeout_ms", idle_timeout_ms, 100, 86400000),
    CFG_U32("max_connections_per_uid", max_connections_per_uid, 0, 1000000),
    CFG_U32("limits.max_subscriptions", max_subscriptions, 1, 1000000),
    CFG_U32("ledger_max_mb", ledger_max_mb, 1, 16u * 1024u * 1024u),
    CFG_U32("limits.max_frame", limits.max_frame, 1024, PROTO_FRAME_HARD_MAX),
    CFG_U32("limits.max_depth", limits.max_depth, 4, 32),
    CFG_U32("limits.max_string", limits.max_string, 64, 16u * 1024u * 1024u),
    CFG_U32("limits.max_input", limits.max_input, 1, PROTO_FRAME_HARD_MAX),
    CFG_U32("limits.max_tasks", limits.max_tasks, 1, 100u * 1000u * 1000u),
    CFG_U32("limits.max_retries", limits.max_retries, 0, 1000),
    CFG_U32("limits.max_chunksize", limits.max_chunksize, 1, 10u * 1000u * 1000u),
    CFG_U32("limits.max_fn_size", limits.max_fn_size, 1024, PROTO_FRAME_HARD_MAX),
};

int
config_set(struct config *cfg, const char *key, const char *value, char *err,
           size_t errsize)
{
    for (size_t i = 0; i < sizeof(u32_keys) / sizeof(u32_keys[0]); i++) {
        const struct u32_key *k = &u32_keys[i];
        if (strcmp(key, k->key) != 0)
            continue;
        uint32_t *field = (uint32_t *)((char *)cfg + k->offset);
        if (parse_u32(value, k->min, k->max, field) != 0) {
            snprintf(err, errsize, "%s must be an integer from %u to %u, got '%s'", key,
                     k->min, k->max, value);
            return -1;
        }
        return 0;
    }

    char **str = NULL;
    if (strcmp(key, "socket") == 0)
        str = &cfg->socket_path;
    else if (strcmp(key, "state_dir") == 0)
        str = &cfg->state_dir;
    else if (strcmp(key, "worker") == 0)
        str = &cfg->worker_path;
    else if (strcmp(key, "admin_group") == 0)
        str = &cfg->admin_group;
    else if (strcmp(key, "socket_group") == 0)
        str = &cfg->socket_group;
    else if (strcmp(key, "credentials_dir") == 0)
        str = &cfg->credentials_dir;
    else if (strcmp(key, "compute") == 0 || strcmp(key, "storage") == 0) {
        if (strcmp(value, "local") != 0) {
            snprintf(err, errsize, "%s '%s' is not available (this build has: local)", key,
                     value);
            return -1;
        }
        str = key[0] == 'c' ? &cfg->compute : &cfg->storage;
    } else if (strcmp(key, "verbose") == 0) {
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            cfg->verbose = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            cfg->verbose = 0;
        else {
            snprintf(err, errsize, "verbose must be true or false, got '%s'", value);
            return -1;
        }
        return 0;
    } else {
        snprintf(err, errsize, "unknown setting '%s'", key);
        return -1;
    }
    if (value[0] == '\0') {
        snprintf(err, errsize, "%s must not be empty", key);
        return -1;
    }
    if (set_str(str, value) != 0) {
        snprintf(err, errsize, "out of memory");
        return -1;
    }
    return 0;
}

static char *
trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int
config_load(struct config *cfg, const char *path, char *err, size_t errsize)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(err, errsize, "cannot open config file '%s': %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    unsigned lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            snprintf(err, errsize, "%s:%u: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *s = trim(line);
        if (*s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            snprintf(err, errsize, "%s:%u: expected 'key = value'", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        char *value = trim(eq + 1);
        char msg[512];
        if (config_set(cfg, key, value, msg, sizeof(msg)) != 0) {
            snprintf(err, errsize, "%s:%u: %s", path, lineno, msg);
            rc = -1;
            break;
        }
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errsize, "cannot read config file '%s': %s", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}
