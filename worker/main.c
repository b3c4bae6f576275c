/*
 * worker/main.c - burst-worker: runs one invocation of a dispatch.
 *
 * Everything it needs comes from its environment and storage (invoc.h), so
 * the same binary runs under the local compute backend and inside a Code
 * Engine container:
 *
 *   BURST_STORAGE  where storage is ("file:/abs/dir")
 *   BURST_SPEC     the spec key ("jobs/<job>/spec/<dispatch>")
 *   JOB_INDEX      which invocation of the spec to run (default 0)
 *
 * It reads the spec, runs the invocation's tasks in order (run_exec.c or
 * run_so.c) and writes one output object, jobs/<job>/out/<dispatch>.<n>,
 * atomically.  On SIGTERM or SIGINT it kills the task in flight and writes
 * the output with the tasks finished so far.
 *
 * `burst-worker --serve` is the same worker kept warm by burstd's local
 * backend: it runs one invocation after another, as told on stdin (see
 * serve() below), so the process start is paid once; a small invocation's
 * spec, input and output pass through its stdin and stdout instead of
 * storage.
 *
 * Exit status: 0 when the output object was written, whatever became of the
 * tasks; otherwise, with a message on stderr,
 *   2  bad environment (a variable missing or malformed, unknown storage)
 *   3  the spec could not be read or is malformed
 *   4  the output object could not be written
 *   5  out of memory or another internal failure before any task ran
 */
#include "burst_config.h"
#include "run.h"

#include <burst.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

enum {
    EXIT_ENV = 2,
    EXIT_SPEC = 3,
    EXIT_OUTPUT = 4,
    EXIT_INTERNAL = 5,
};

/* Pipes and files we open must never land on 0, 1 or 2: the children dup2
 * onto those numbers.  A worker started with one of them closed gets
 * /dev/null there. */
static int
std_fds_open(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0)
            continue;
        int n = open("/dev/null", O_RDWR);
        if (n < 0)
            return -errno;
        if (n != fd)
            return -EBADF; /* cannot happen: open takes the lowest free fd */
    }
    return 0;
}

/* Parses JOB_INDEX: unset or empty means 0; anything but a decimal uint32
 * is an error. */
static int
parse_job_index(const char *s, uint32_t *out)
{
    if (s == NULL || s[0] == '\0') {
        *out = 0;
        return 0;
    }
    uint64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return -ERANGE;
    }
    *out = (uint32_t)v;
    return 0;
}

/* run_ctx.done: every finished task goes straight into the output. */
static int
add_result(void *arg, const struct invoc_result *r)
{
    struct invoc_out_writer *w = arg;
    int rc = invoc_out_writer_add(w, r);
    if (rc != 0)
        warnx("cannot record task %" PRIu32 ": %s", r->index, strerror(-rc));
    return rc;
}

/* Reads and decodes the spec; exits on failure. */
static int
load_spec(struct store *st, const char *key, struct invoc_spec *spec)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = store_read(st, key, 0, STORE_TO_END, &buf, &len);
    if (rc != 0) {
        warnx("cannot read spec %s: %s", key, strerror(-rc));
        return rc;
    }
    rc = invoc_spec_decode(buf, len, spec);
    free(buf);
    if (rc == -ENOMEM)
        warnx("cannot decode spec %s: out of memory", key);
    else if (rc != 0)
        warnx("spec %s is malformed", key);
    return rc;
}

/* Where an invocation's output goes, under --serve: up to max bytes of it
 * may come back to burstd through the pipe (*buf, malloc'ed), instead of
 * being written to storage.  max 0: storage only. */
struct inline_out {
    size_t max;
    char *buf;
    size_t len;
};

/* Finishes the output and writes it, or hands it to io when it fits;
 * returns 0 or the failure. */
static int
write_output(struct store *st, const struct invoc_spec *spec, uint32_t inv,
             struct invoc_out_writer *w, struct inline_out *io)
{
    char key[256];
    char *buf = NULL;
    size_t len = 0;
    int rc = invoc_key_output(key, sizeof(key), spec->job, spec->dispatch, inv);
    if (rc == 0)
        rc = invoc_out_writer_finish(w, &buf, &len);
    if (rc != 0) {
        warnx("cannot build the output object: %s", strerror(-rc));
        return rc;
    }
    /* A stop request may mean burstd is gone: storage is where the next one
     * looks for what was finished. */
    if (io != NULL && len <= io->max && !run_stop_requested()) {
        io->buf = buf;
        io->len = len;
        return 0;
    }
    struct iovec iov = {buf, len};
    rc = store_put(st, key, &iov, 1);
    if (rc != 0)
        warnx("cannot write output %s: %s", key, strerror(-rc));
    free(buf);
    return rc;
}

/*
 * Runs invocation inv of the spec at spec_key against storage st and writes
 * its output, to io when it fits there (io may be NULL).  serving: under
 * --serve, where the so runner may keep its executor for the next
 * invocation.  Returns the exit status of a one-shot worker (see above).
 */
static int
run_invocation(struct store *st, const char *spec_key, uint32_t inv, bool serving,
               struct inline_out *io)
{
    int status = EXIT_INTERNAL;
    struct invoc_spec spec;
    struct input_src *src = NULL;
    struct invoc_out_writer *w = NULL;
    memset(&spec, 0, sizeof(spec));

    int rc = load_spec(st, spec_key, &spec);
    if (rc != 0)
        return rc == -ENOMEM ? EXIT_INTERNAL : EXIT_SPEC;
    if (inv >= spec.ninvocations) {
        warnx("JOB_INDEX %" PRIu32 " is out of range: spec %s has %" PRIu32
              " invocations",
              inv, spec_key, spec.ninvocations);
        status = EXIT_ENV;
        goto out_spec;
    }
    if (spec.reduce && spec.ntasks[inv] != 1) {
        warnx("spec %s is malformed: a reduce invocation has exactly one task", spec_key);
        status = EXIT_SPEC;
        goto out_spec;
    }
    if (input_src_new(st, &spec, &src) != 0 ||
        invoc_out_writer_new(spec.job, spec.dispatch, inv, &w) != 0) {
        warnx("out of memory");
        goto out_writer;
    }

    struct run_ctx ctx = {
        .spec = &spec,
        .tasks = spec.tasks[inv],
        .ntasks = spec.ntasks[inv],
        .input = src,
        .store = st,
        .done = add_result,
        .arg = w,
        .spec_key = serving ? spec_key : NULL,
        .inv = inv,
    };
    rc = spec.fn_kind == BURST_FN_SO ? run_so(&ctx) : run_exec(&ctx);
    /* A failure to record a task leaves the writer as it was: the tasks
     * recorded so far are still worth writing, the rest count as lost. */
    if (rc != 0)
        warnx("stopped early; the tasks not in the output did not finish");
    if (run_stop_requested())
        warnx("stopped by a signal; writing the tasks finished so far");
    status = write_output(st, &spec, inv, w, io) == 0 ? 0 : EXIT_OUTPUT;

out_writer:
    invoc_out_writer_free(w);
    input_src_free(src);
out_spec:
    invoc_spec_free(&spec);
    return status;
}

/* Longest request line of --serve: the spec's key and the input's (store.c
 * allows 1024 bytes each), an index and three sizes. */
#define SERVE_LINE_MAX (2 * 1024 + 64)
/* The most output a request may ask to get back through the pipe. */
#define SERVE_INLINE_MAX (1024 * 1024)

/*
 * Moves fd (0 or 1) to a new close-on-exec descriptor and puts /dev/null in
 * its place, so that nothing a task or a function does with its standard
 * streams can touch the conversation with burstd.  Returns the new fd or -1.
 */
static int
serve_take_fd(int fd)
{
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (moved < 0 || null < 0 || dup2(null, fd) < 0) {
        if (moved >= 0)
            close(moved);
        moved = -1;
    }
    if (null >= 0)
        close(null);
    return moved;
}

/* Reads one request line into buf (NUL-terminated, without the newline).
 * Returns 1, 0 at EOF or on a stop request, or -errno. */
static int
serve_read_line(int fd, char *buf, size_t size, size_t *have)
{
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        if (nl != NULL) {
            *nl = '\0';
            return 1;
        }
        if (*have + 1 >= size)
            return -E2BIG;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = run_poll(&p, 1, -1);
        if (run_stop_requested())
            return 0;
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue; /* a child's SIGCHLD: nothing to do here */
        ssize_t n = read(fd, buf + *have, size - 1 - *have);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 0;
        *have += (size_t)n;
    }
}

/* A request of --serve, parsed in place from its line. */
struct serve_req {
    const char *key; /* the spec's key */
    uint32_t inv;
    size_t out_max;  /* out=N: how much output may come back inline */
    size_t spec_len; /* spec=N: the spec's bytes follow the line */
    size_t in_len;   /* in=N:KEY: then the bytes of object KEY */
    const char *in_key;
};

/* Parses a decimal size of at most max into *out; 0 or -EINVAL. */
static int
parse_size(const char *p, size_t max, size_t *out)
{
    uint32_t v;
    if (p[0] == '\0' || parse_job_index(p, &v) != 0 || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/*
 * Parses "SPEC_KEY JOB_INDEX[ out=N][ spec=N][ in=N:KEY]" in place.
 * Returns 0 or -EINVAL.
 */
static int
serve_parse(char *line, struct serve_req *r)
{
    memset(r, 0, sizeof(*r));
    char *save = NULL;
    char *key = strtok_r(line, " ", &save), *idx = strtok_r(NULL, " ", &save);
    if (key == NULL || idx == NULL || !store_key_valid(key) || idx[0] == '\0' ||
        parse_job_index(idx, &r->inv) != 0)
        return -EINVAL;
    r->key = key;
    char *tok;
    while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
        if (strncmp(tok, "out=", 4) == 0) {
            if (parse_size(tok + 4, SERVE_INLINE_MAX, &r->out_max) != 0)
                return -EINVAL;
        } else if (strncmp(tok, "spec=", 5) == 0) {
            if (parse_size(tok + 5, SERVE_INLINE_MAX, &r->spec_len) != 0)
                return -EINVAL;
        } else if (strncmp(tok, "in=", 3) == 0) {
            char *colon = strchr(tok + 3, ':');
            if (colon == NULL)
                return -EINVAL;
            *colon = '\0';
            if (parse_size(tok + 3, SERVE_INLINE_MAX, &r->in_len) != 0 ||
                !store_key_valid(colon + 1) || strcmp(colon + 1, key) == 0)
                return -EINVAL;
            r->in_key = colon + 1;
        } else {
            return -EINVAL;
        }
    }
    return 0;
}

/* Reads n bytes into a new buffer: first what buf[*have] holds past used,
 * then from fd.  Returns 0 with *out malloc'ed, or -errno / -EPIPE at EOF. */
static int
serve_read_payload(int fd, char *buf, size_t *have, size_t used, size_t n, char **out)
{
    char *p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        return -ENOMEM;
    size_t got = *have - used < n ? *have - used : n;
    memcpy(p, buf + used, got);
    memmove(buf + used, buf + used + got, *have - used - got);
    *have -= got;
    int rc = run_read_all(fd, p + got, n - got);
    if (rc != 0) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* Holds the request's spec and input (either may be NULL) as objects of st;
 * both buffers pass to st, or are freed on failure. */
static int
serve_hold(struct store *st, const struct serve_req *r, char *spec, char *input)
{
    int rc = spec != NULL ? store_hold(st, r->key, spec, r->spec_len) : 0;
    if (input != NULL) {
        if (rc == 0)
            rc = store_hold(st, r->in_key, input, r->in_len);
        else
            free(input);
    }
    return rc;
}

/*
 * --serve: a warm worker for burstd's local backend.  Each request on stdin
 * is "SPEC_KEY JOB_INDEX[ out=N][ spec=N][ in=N:KEY]\n", run as a one-shot
 * worker would run it (with BURST_SPEC and JOB_INDEX set for the tasks);
 * the reply on stdout is the exit status that worker would have had, as
 * "STATUS\n".
 *
 * A small invocation need not touch storage at all.  With spec=N the
 * spec's N bytes follow the line, and with in=N:KEY then the N bytes of
 * the job's input object KEY: both are read as those objects (store_hold)
 * for this invocation.  With out=N, an output object of at most N bytes is
 * not written to storage: the reply is "0 LEN\n" followed by its LEN bytes,
 * and burstd keeps it (in its ledger) instead.  That saves, per small job,
 * the files and directories in storage and the durable write of the
 * output.  A request that cannot be parsed ends the worker (its payload's
 * length is then unknown) after the reply.  Ends at EOF, on
 * SIGTERM (after replying for the invocation it was running, whose output
 * then goes to storage), or when a request cannot be read.  The process
 * start, the dynamic linking and the storage set-up are paid once instead
 * of once per invocation, and so is the so runner's executor while
 * invocations keep to one library (run_so.c).
 */
static int
serve(struct store *st)
{
    int in = serve_take_fd(0), out = serve_take_fd(1);
    if (in < 0 || out < 0) {
        warn("cannot set up --serve");
        return EXIT_INTERNAL;
    }
    char line[SERVE_LINE_MAX + 2];
    size_t have = 0;
    int rc;
    while ((rc = serve_read_line(in, line, sizeof(line), &have)) == 1) {
        size_t used = strlen(line) + 1;
        struct serve_req req;
        struct inline_out io = {0};
        int status;
        char index[16];
        bool broken = false;
        char *spec = NULL, *input = NULL;
        if (serve_parse(line, &req) != 0) {
            warnx("--serve: malformed request");
            status = EXIT_ENV;
            broken = true;
        } else if ((rc = req.spec_len > 0 ? serve_read_payload(in, line, &have, used,
                                                               req.spec_len, &spec)
                                          : 0) != 0 ||
                   (rc = req.in_key != NULL ? serve_read_payload(in, line, &have, used,
                                                                 req.in_len, &input)
                                            : 0) != 0) {
            free(spec);
            warnx("--serve: cannot read a request: %s", strerror(-rc));
            return EXIT_INTERNAL;
        } else if (serve_hold(st, &req, spec, input) != 0) {
            warnx("--serve: cannot keep the request's objects");
            status = EXIT_INTERNAL;
        } else if (snprintf(index, sizeof(index), "%" PRIu32, req.inv) < 0 ||
                   setenv("BURST_SPEC", req.key, 1) != 0 ||
                   setenv("JOB_INDEX", index, 1) != 0) {
            warnx("out of memory");
            status = EXIT_INTERNAL;
        } else {
            io.max = req.out_max;
            status = run_invocation(st, req.key, req.inv, true, io.max > 0 ? &io : NULL);
        }
        store_release(st);
        char reply[48];
        int len = io.buf != NULL
                      ? snprintf(reply, sizeof(reply), "%d %zu\n", status, io.len)
                      : snprintf(reply, sizeof(reply), "%d\n", status);
        int wrc = run_write2(out, reply, (size_t)len, io.buf, io.buf != NULL ? io.len : 0);
        free(io.buf);
        if (wrc != 0) {
            warnx("--serve: cannot reply: %s", strerror(-wrc));
            return EXIT_INTERNAL;
        }
        memmove(line, line + used, have - used);
        have -= used;
        if (broken)
            return EXIT_INTERNAL;
        if (run_stop_requested())
            return 0;
    }
    if (rc < 0) {
        warnx("--serve: cannot read a request: %s", strerror(-rc));
        return EXIT_INTERNAL;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    bool serving = false;
    if (argc > 1) {
        if (strcmp(argv[1], "--version") == 0) {
            printf("burst-worker %s\n", BURST_VERSION);
            return 0;
        }
        if (strcmp(argv[1], "--serve") == 0 && argc == 2) {
            serving = true;
        } else {
            fprintf(stderr,
                    "usage: burst-worker (configured by BURST_STORAGE, BURST_SPEC "
                    "and JOB_INDEX in the environment)\n"
                    "       burst-worker --serve (BURST_STORAGE; requests on "
                    "stdin)\n");
            return EXIT_ENV;
        }
    }
    if (std_fds_open() != 0 || run_signals_init() != 0) {
        warn("cannot set up the process");
        return EXIT_INTERNAL;
    }
    /* Under burstd's local backend: stop when burstd dies, as on SIGTERM
     * (daemon/compute_local.c, layer 1).  The getppid check catches a
     * burstd that died before the prctl. */
    const char *parent = getenv("BURST_PARENT_PID");
    if (parent != NULL) {
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != (pid_t)atol(parent)) {
            warnx("burstd (pid %s) is gone", parent);
            return EXIT_ENV;
        }
        unsetenv("BURST_PARENT_PID"); /* not the tasks' business */
    }

    const char *url = getenv("BURST_STORAGE");
    const char *spec_key = getenv("BURST_SPEC");
    const char *job_index = getenv("JOB_INDEX");
    uint32_t inv = 0;
    if (url == NULL || url[0] == '\0') {
        warnx("BURST_STORAGE is not set");
        return EXIT_ENV;
    }
    if (!serving && (spec_key == NULL || !store_key_valid(spec_key))) {
        warnx(spec_key == NULL ? "BURST_SPEC is not set"
                               : "BURST_SPEC is not a valid key");
        return EXIT_ENV;
    }
    if (!serving && parse_job_index(job_index, &inv) != 0) {
        warnx("JOB_INDEX is not a number: %s", job_index);
        return EXIT_ENV;
    }

    /* A worker started as the job's owner reaches storage through a
     * descriptor (file:/proc/self/fd/N: burstd's daemon/runas.h).  The
     * worker and its forked executors use it by that path; exec'd tasks
     * have no use for it. */
    const char *fdpath = "file:/proc/self/fd/";
    if (strncmp(url, fdpath, strlen(fdpath)) == 0) {
        int fd = atoi(url + strlen(fdpath));
        int fl = fcntl(fd, F_GETFD);
        if (fd > 2 && fl >= 0)
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }

    struct store *st = NULL;
    int rc = store_open(url, &st);
    if (rc != 0) {
        const char *why = strerror(-rc);
        if (rc == -EPROTONOSUPPORT || rc == -EINVAL)
            why = "expected file:/absolute/dir";
        warnx("cannot open storage %s: %s", url, why);
        return EXIT_ENV;
    }
    int status = serving ? serve(st) : run_invocation(st, spec_key, inv, false, NULL);
    /* A kept so executor ends with the worker, cgroup and all. */
    run_so_shutdown();
    store_close(st);
    return status;
}
