/*
 * daemon/main.c - burstd's start-up and shutdown: arguments and config,
 * the state dir and socket of the embedded default, opening the ledger and
 * the backends, signals, and the loop (DESIGN.md, "The CLI contract").
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "burst.h"
#include "burst_config.h"
#include "burstd.h"
#include "compute.h"
#include "config.h"
#include "events.h"
#include "ledger.h"
#include "log.h"
#include "notify.h"
#include "scheduler.h"
#include "server.h"
#include "storage.h"
#include "syncer.h"

static struct burstd daemon_ctx;
static uv_signal_t sig_term, sig_int, sig_hup;
static const char *config_path;
static uv_timer_t drain_timer;

/* How long a worker gets to write what it finished before SIGKILL. */
#define SHUTDOWN_GRACE_MS 2000

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: burstd [--socket PATH] [--state-dir DIR] [--config FILE] [--quota N]\n"
            "              [--worker PATH] [--verbose] [--version]\n"
            "Runs the burst dispatcher in the foreground; SIGTERM stops it cleanly,\n"
            "SIGHUP re-reads the config file.\n");
}

/* mkdir -p with mode for the directories it creates. */
static int
mkdirs(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/*
 * Makes the state dir exist and be private to burstd's uid: created 0700;
 * an existing one with any group or other permission is set back to 0700
 * (and logged); one owned by another uid is refused, because its owner
 * could read or forge every user's jobs.  Start-up only: fails through
 * fatal.
 */
/*
 * One burstd per state directory: two would both dispatch the same tasks
 * and each sweep the other's workers.  The lock (flock on the directory,
 * held until exit) goes with the process, even on kill -9.
 */
static void
state_dir_lock(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fatal("cannot open the state directory %s", dir);
    /* A child a killed burstd forked and that has not exec'ed yet holds
     * the lock a moment longer: wait that long before blaming a live one. */
    int rc;
    for (int tries = 0; (rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EWOULDBLOCK &&
                        tries < 200;
         tries++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (rc != 0) {
        if (errno == EWOULDBLOCK)
            fatalx("another burstd runs on the state directory %s; stop it first, or give "
                   "this one its own (--state-dir)",
                   dir);
        fatal("cannot lock the state directory %s", dir);
    }
    /* fd stays open, and locked, for the life of the process. */
}

static void
state_dir_prepare(const char *dir)
{
    int rc = mkdirs(dir, 0700);
    if (rc != 0)
        fatalx("cannot create state directory %s: %s", dir, strerror(-rc));
    /* Check and fix through one fd, so what we check is what we chmod. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        fatal("cannot open state directory %s", dir);
    struct stat st;
    if (fstat(fd, &st) != 0)
        fatal("cannot stat state directory %s", dir);
    if (st.st_uid != geteuid())
        fatalx("state directory %s belongs to uid %u, not to burstd's uid %u; refusing "
               "to use it (chown it, or choose another --state-dir)",
               dir, (unsigned)st.st_uid, (unsigned)geteuid());
    if ((st.st_mode & 077) != 0) {
        if (fchmod(fd, 0700) != 0)
            fatal("cannot make state directory %s private (chmod 0700)", dir);
        log_info("state directory %s was mode %04o; it is now 0700", dir,
                 (unsigned)(st.st_mode & 07777));
    }
    close(fd);
    if (access(dir, W_OK | X_OK) != 0)
        fatal("state directory %s is not writable", dir);
}

/*
 * Records where secrets live: the config's credentials_dir, else systemd's
 * $CREDENTIALS_DIRECTORY (LoadCredential=), which is then removed from the
 * environment so workers are not pointed at it.  Logs, at debug level, the
 * names of the credentials found; their contents are never read here.
 */
static void
credentials_prepare(struct config *cfg)
{
    char err[512];
    const char *env = getenv("CREDENTIALS_DIRECTORY");
    if (env != NULL && env[0] != '\0' && cfg->credentials_dir == NULL &&
        config_set(cfg, "credentials_dir", env, err, sizeof(err)) != 0)
        fatalx("%s", err);
    unsetenv("CREDENTIALS_DIRECTORY");
    if (cfg->credentials_dir == NULL)
        return;
    DIR *dir = opendir(cfg->credentials_dir);
    if (dir == NULL) {
        log_warn("cannot read the credentials directory %s", cfg->credentials_dir);
        return;
    }
    unsigned n = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        log_debug("credential available: %s", e->d_name);
        n++;
    }
    closedir(dir);
    log_debug("%u credential(s) in %s", n, cfg->credentials_dir);
}

static char *
join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s != NULL)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* The embedded default: $XDG_STATE_HOME/burst, else ~/.local/state/burst. */
static char *
default_state_dir(void)
{
    const char *x = getenv("XDG_STATE_HOME");
    if (x != NULL && x[0] == '/')
        return join(x, "burst");
    const char *home = getenv("HOME");
    if (home == NULL || home[0] != '/')
        return NULL;
    return join(home, ".local/state/burst");
}

/* burst-worker: $BURST_WORKER, the config, beside burstd (installed or in
 * the build tree), or the libexec dir. */
static char *
find_worker(const struct config *cfg)
{
    const char *env = getenv("BURST_WORKER");
    if (env != NULL && env[0] != '\0')
        return strdup(env);
    if (cfg->worker_path != NULL)
        return strdup(cfg->worker_path);
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash != NULL) {
            *slash = '\0';
            const char *cands[] = {"burst-worker", "../worker/burst-worker",
                                   "../libexec/burst-worker"};
            for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
                char *p = join(self, cands[i]);
                if (p != NULL && access(p, X_OK) == 0)
                    return p;
                free(p);
            }
        }
    }
    return join(BURST_LIBEXECDIR, "burst-worker");
}

static void
on_server_closed(struct server *s)
{
    (void)s;
}

static void
on_compute_closed(struct compute *c)
{
    (void)c;
}

static void
on_drain(uv_timer_t *t)
{
    struct burstd *d = t->data;
    if (d->compute->ops->running(d->compute) > 0)
        return;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    d->compute->ops->close(d->compute, on_compute_closed);
}

static void
shutdown_begin(struct burstd *d)
{
    if (d->stopping)
        return;
    d->stopping = true;
    notify_send("STOPPING=1\nSTATUS=stopping: handing work in flight back to the ledger");
    log_info("stopping: no new clients; work in flight is handed back to the ledger");
    sched_stop(d->sched, SHUTDOWN_GRACE_MS);
    burstd_commit(d);
    server_close(d->server, on_server_closed);
    /* The backend closes once the workers told to stop have exited. */
    uv_timer_init(d->loop, &drain_timer);
    drain_timer.data = d;
    uv_timer_start(&drain_timer, on_drain, 0, 50);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_prepare_stop(&d->tick);
    uv_close((uv_handle_t *)&d->tick, NULL);
    burstd_stop_lazy_sync(d);
}

static void
on_signal(uv_signal_t *h, int signum)
{
    struct burstd *d = h->data;
    if (signum == SIGHUP) {
        if (config_path == NULL) {
            log_info("SIGHUP: no config file to reload");
            return;
        }
        struct config fresh;
        char err[512];
        config_init(&fresh);
        if (config_load(&fresh, config_path, err, sizeof(err)) != 0) {
            log_warnx("SIGHUP: config not reloaded: %s", err);
        } else {
            if (fresh.quota > 0) {
                sched_set_quota(d->sched, fresh.quota);
                log_info("SIGHUP: quota is now %u", fresh.quota);
            }
            log_set_verbose(fresh.verbose || d->cfg->verbose);
        }
        config_free(&fresh);
        return;
    }
    shutdown_begin(d);
}

/* Once per loop iteration, before the loop blocks: dispatch what the quota
 * allows, then make the iteration's changes durable and tell subscribers. */
static void
on_tick(uv_prepare_t *h)
{
    struct burstd *d = h->data;
    sched_pump(d->sched);
    burstd_commit(d);
    /* The commit handed over jobs that may start while it syncs: start
     * them now, and record that they did, rather than one wake-up later. */
    if (d->sched_again) {
        d->sched_again = false;
        sched_pump(d->sched);
        burstd_commit(d);
    }
    /* The loop may block next: what the iteration queued goes out now. */
    server_flush(d->server);
}

int
main(int argc, char **argv)
{
    struct config cfg;
    struct burstd *d = &daemon_ctx;
    char err[512];
    const char *opt_socket = NULL, *opt_state = NULL, *opt_worker = NULL;
    long opt_quota = 0;
    int verbose = 0;

    /* glibc gives freed memory back to the kernel as soon as the top of the
     * heap is 128 KiB free, and maps every block above 128 KiB on its own.
     * Each such unmap in a process with threads (libuv's pool) costs a TLB
     * shootdown on every core; in a VM that is an interrupt per core, and
     * under load (bench B6) it was most of the daemon's CPU.  Keeping up
     * to 32 MiB free, and mapping only blocks of 16 MiB or more, removes
     * that churn; the peak memory does not change. */
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
    mallopt(M_MMAP_THRESHOLD, 16 << 20);

    config_init(&cfg);
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"state-dir", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'},
        {"quota", required_argument, NULL, 'q'},
        {"worker", required_argument, NULL, 'w'},
        {"verbose", no_argument, NULL, 'v'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "s:d:c:q:w:vVh", longopts, NULL)) != -1) {
        switch (ch) {
        case 's': opt_socket = optarg; break;
        case 'd': opt_state = optarg; break;
        case 'c': config_path = optarg; break;
        case 'w': opt_worker = optarg; break;
        case 'v': verbose = 1; break;
        case 'q': {
            char *end;
            errno = 0;
            opt_quota = strtol(optarg, &end, 10);
            if (errno || *end || opt_quota < 1 || opt_quota > 100000) {
                fprintf(stderr, "burstd: --quota must be an integer from 1 to 100000, "
                                "got '%s'\n", optarg);
                return 2;
            }
            break;
        }
        case 'V': printf("burstd %s\n", BURST_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "burstd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (config_path != NULL && config_load(&cfg, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "burstd: %s\n", err);
        return 2;
    }
    if ((opt_socket && config_set(&cfg, "socket", opt_socket, err, sizeof(err))) ||
        (opt_state && config_set(&cfg, "state_dir", opt_state, err, sizeof(err))) ||
        (opt_worker && config_set(&cfg, "worker", opt_worker, err, sizeof(err)))) {
        fprintf(stderr, "burstd: %s\n", err);
        return 2;
    }
    if (opt_quota > 0)
        cfg.quota = (uint32_t)opt_quota;
    if (verbose)
        cfg.verbose = 1;
    log_init("burstd", cfg.verbose);

    /* What a service manager handed us, read and removed from the
     * environment before any worker can inherit it. */
    int rc = notify_init();
    if (rc != 0)
        log_warnx("NOTIFY_SOCKET ignored: %s", strerror(-rc));
    int listen_fd = server_activation_fd();
    credentials_prepare(&cfg);

    /* Paths of the embedded default. */
    char *state_dir = cfg.state_dir ? strdup(cfg.state_dir) : default_state_dir();
    if (state_dir == NULL)
        fatalx("no state directory: set XDG_STATE_HOME or HOME, or pass --state-dir");
    char *socket_path = NULL;
    if (listen_fd >= 0) {
        /* Socket activation: the inherited socket wins over --socket. */
        if (cfg.socket_path != NULL)
            log_debug("socket activation: the inherited socket is used, not %s",
                      cfg.socket_path);
        socket_path = strdup("the socket passed by socket activation");
    } else if (cfg.socket_path != NULL) {
        socket_path = strdup(cfg.socket_path);
    } else {
        const char *rt = getenv("XDG_RUNTIME_DIR");
        if (rt == NULL || rt[0] != '/')
            fatalx("no socket path: XDG_RUNTIME_DIR is not set; pass --socket PATH");
        socket_path = join(rt, "burst.sock");
    }
    if (socket_path == NULL)
        fatalx("out of memory");
    state_dir_prepare(state_dir);
    state_dir_lock(state_dir);

    memset(d, 0, sizeof(*d));
    d->loop = uv_default_loop();
    d->cfg = &cfg;
    d->uid = getuid();
    if (cfg.admin_group != NULL) {
        struct group *gr = getgrnam(cfg.admin_group);
        if (gr == NULL)
            fatalx("admin_group '%s' does not exist", cfg.admin_group);
        d->admin_gid = gr->gr_gid;
        d->has_admin_gid = true;
    }
    /* Checked now so a typo stops start-up before the ledger is opened;
     * server_listen resolves it again when it creates the socket. */
    if (listen_fd < 0 && cfg.socket_group != NULL && getgrnam(cfg.socket_group) == NULL)
        fatalx("socket_group '%s' does not exist", cfg.socket_group);
    signal(SIGPIPE, SIG_IGN);

    char *ledger_path = join(state_dir, "ledger.db");
    char *storage_dir = join(state_dir, "storage");
    if (ledger_path == NULL || storage_dir == NULL)
        fatalx("out of memory");
    rc = ledger_open(ledger_path, &d->ledger);
    if (rc != 0)
        fatalx("cannot open the ledger %s: %s", ledger_path, burst_strerror(rc));
    d->ids_durable = ledger_job_ids_bound(d->ledger); /* as read from the disk */
    if (cfg.ledger_max_mb > 0 &&
        ledger_set_max_size(d->ledger, (uint64_t)cfg.ledger_max_mb * 1024 * 1024) != 0)
        fatalx("cannot cap the ledger at %u MiB", cfg.ledger_max_mb);
    /* Commits sync on a thread, so the loop serves requests meanwhile. */
    rc = ledger_defer_sync(d->ledger);
    if (rc == 0)
        rc = ledger_take_exclusive(d->ledger);
    if (rc == 0)
        rc = syncer_new(d->loop, burstd_sync_done, d, &d->syncer);
    if (rc != 0)
        fatalx("cannot set up the ledger's sync: %s", burst_strerror(rc));
    rc = storage_local_new(d->loop, storage_dir, &d->storage);
    if (rc != 0)
        fatalx("cannot use storage directory %s: %s", storage_dir, burst_strerror(rc));
    char *worker = find_worker(&cfg);
    if (worker == NULL)
        fatalx("out of memory");
    if (access(worker, X_OK) != 0)
        fatal("burst-worker not found or not executable at %s (set BURST_WORKER or the "
              "'worker' setting)",
              worker);
    rc = compute_local_new(d->loop, worker, d->storage->ops->worker_url(d->storage),
                           &d->compute);
    if (rc != 0)
        fatalx("cannot start the local compute backend: %s", burst_strerror(rc));
    /* Before the scheduler reconciles: what a killed burstd's workers left
     * running is reaped first (compute_local.c). */
    char *workers_dir = join(state_dir, "run/workers");
    if (workers_dir == NULL)
        fatalx("out of memory");
    rc = compute_local_track(d->compute, workers_dir);
    if (rc != 0)
        log_warnx("cannot keep worker records in %s: %s; what workers leave behind if "
                  "burstd is killed will not be reaped",
                  workers_dir, strerror(-rc));
    free(workers_dir);

    uint32_t quota = cfg.quota;
    bool found = false;
    uint32_t persisted = 0;
    if (ledger_quota_get(d->ledger, &persisted, &found) == 0 && found && cfg.quota == 0)
        quota = persisted;
    if (quota == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        quota = n > 0 ? (uint32_t)n : 1;
    }
    if (sched_new(d, quota, &d->sched) != 0 || events_new(d, &d->events) != 0 ||
        server_new(d, &d->server) != 0)
        fatalx("out of memory");
    if (listen_fd >= 0)
        rc = server_listen_fd(d->server, listen_fd); /* the server owns the fd now */
    else
        rc = server_listen(d->server, socket_path);
    if (rc != 0)
        fatalx("cannot listen on %s: %s", socket_path, burst_strerror(rc));
    rc = sched_start(d->sched);
    if (rc != 0)
        fatalx("cannot load the active jobs from the ledger: %s", burst_strerror(rc));

    uv_prepare_init(d->loop, &d->tick);
    d->tick.data = d;
    uv_prepare_start(&d->tick, on_tick);
    uv_signal_init(d->loop, &sig_term);
    uv_signal_init(d->loop, &sig_int);
    uv_signal_init(d->loop, &sig_hup);
    sig_term.data = sig_int.data = sig_hup.data = d;
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);

    /* Ready means clients are accepted, acknowledged work is moving and
     * SIGTERM is handled: systemd starts units ordered after burstd (and
     * may stop it) only from now on. */
    notify_send("READY=1\nSTATUS=serving on %s (quota %u)", socket_path, quota);
    log_info("burstd %s listening on %s (state %s, worker %s, quota %u)", BURST_VERSION,
             socket_path, state_dir, worker, quota);
    uv_run(d->loop, UV_RUN_DEFAULT);

    /* A clean stop: no job id above the last one ever ran, so the next
     * start goes on from it.  In a transaction of its own, so that a
     * failure undoes nothing else. */
    burstd_commit(d);
    if (ledger_begin(d->ledger) == 0 && ledger_job_ids_settle(d->ledger) != 0)
        ledger_rollback(d->ledger);
    burstd_commit(d);
    burstd_sync_now(d);
    syncer_free(d->syncer);
    sched_free(d->sched);
    uv_run(d->loop, UV_RUN_DEFAULT); /* let the freed handles close */
    events_free(d->events);
    server_free(d->server);
    d->storage->ops->close(d->storage);
    ledger_close(d->ledger);
    free(d->fns_seen);
    if (uv_loop_close(d->loop) != 0)
        log_debug("loop closed with handles still open");
    log_info("stopped");
    notify_close();
    free(worker);
    free(ledger_path);
    free(storage_dir);
    free(state_dir);
    free(socket_path);
    config_free(&cfg);
    return 0;
}
