/*
 * daemon/config.h - burstd's configuration: built-in defaults, then the
 * optional config file (--config), then the command line.
 *
 * The file is lines of `key = value`; '#' starts a comment; blank lines are
 * ignored.  Unknown keys and bad values are errors that name the file, the
 * line and the key, so a typo never silently falls back to a default.
 * No secret is ever read from here into argv or logs.
 */
#ifndef BURST_DAEMON_CONFIG_H
#define BURST_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_limits.h"

struct config {
    char *socket_path;  /* owned; NULL = default */
    char *state_dir;    /* owned; NULL = default */
    char *worker_path;  /* owned; NULL = found next to burstd */
    char *admin_group;  /* owned; NULL = none */
    /* owned; NULL = the socket is 0600, for the daemon's user alone.  A
     * group name makes it 0660 and that group's (system mode).  No other
     * mode is configurable: the socket is never world-accessible. */
    char *socket_group;
    /* owned; NULL = none.  Where backends find their secret files (one
     * per credential, named for it); main.c fills it from systemd's
     * $CREDENTIALS_DIRECTORY (LoadCredential=) when the file does not set
     * it.  Only names are ever logged, never contents. */
    char *credentials_dir;
    char *compute;      /* owned: "local" */
    char *storage;      /* owned: "local" */
    uint32_t quota;     /* 0 = number of cores */
    uint32_t max_connections;
    uint32_t idle_timeout_ms; /* a half-received frame older than this drops the client */
    uint32_t max_connections_per_uid; /* non-admin connections of one uid; 0 = no cap */
    uint32_t max_subscriptions;       /* jobs one connection may subscribe to */
    uint32_t ledger_max_mb;   /* cap on the ledger file; 0 = none (the disk is the cap) */
    int verbose;
    struct proto_limits limits;
};

void config_init(struct config *cfg);
void config_free(struct config *cfg);

/*
 * Reads path into cfg, overriding what it sets.  Returns 0, or -1 with a
 * message (file:line: what is wrong) written to err (errsize bytes).
 */
int config_load(struct config *cfg, const char *path, char *err, size_t errsize);

/* Parses one "key = value" pair (also used for command-line overrides). */
int config_set(struct config *cfg, const char *key, const char *value, char *err,
               size_t errsize);

#endif /* BURST_DAEMON_CONFIG_H */
