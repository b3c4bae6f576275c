/*
 * tests/test-worker.c - burst-worker and the storage object formats.
 *
 * Unit tests round-trip every invoc.h object and feed the decoders garbage.
 * The rest run the real burst-worker (BURST_WORKER, set by meson) against a
 * fresh storage directory: each test writes a job's inputs and a spec, runs
 * the worker with BURST_STORAGE / BURST_SPEC / JOB_INDEX, and decodes the
 * output object it wrote.  so tests use the functions in tests/fns
 * (BURST_TEST_FNS), stored content-addressed as fn/<sha256>.so.  The serve
 * tests talk to `burst-worker --serve` as burstd does ("SPEC INDEX\n" in,
 * "STATUS\n" out) to see what a warm worker keeps between invocations.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <burst.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "invoc.h"
#include "run.h"
#include <msgpack.h>

/* Safety net only: no test expects the worker to take anywhere near this. */
#define WORKER_SAFETY_MS 120000

/* ---- helpers ------------------------------------------------------------------ */

struct fx {
    char dir[1024]; /* the storage root */
    char url[1100];
};

static int
fx_setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof(fx->dir), "%s/burst-worker-test.XXXXXX",
             tmp != NULL ? tmp : "/tmp");
    if (mkdtemp(fx->dir) == NULL) {
        free(fx);
        return -1;
    }
    snprintf(fx->url, sizeof(fx->url), "file:%s", fx->dir);
    *state = fx;
    return 0;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
fx_teardown(void **state)
{
    struct fx *fx = *state;
    nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static void
mkparents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
}

static void
put_file(struct fx *fx, const char *key, const void *data, size_t len)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/%s", fx->dir, key);
    mkparents(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len > 0)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Reads a whole file into a malloc'ed buffer; NULL when missing. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* The input object for n inputs (lens[i] bytes each), malloc'ed. */
static unsigned char *
input_object(const char *const *in, const size_t *lens, size_t n, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    size_t base = INVOC_INPUT_HEADER + (n + 1) * 8;
    unsigned char *obj = malloc(base + total);
    assert_non_null(obj);
    invoc_input_header(obj, n);
    unsigned char *idx = obj + INVOC_INPUT_HEADER;
    uint64_t off = 0;
    for (size_t i = 0; i <= n; i++) {
        for (int b = 0; b < 8; b++)
            idx[i * 8 + (size_t)b] = (unsigned char)(off >> (8 * b));
        if (i < n) {
            memcpy(obj + base + off, in[i], lens[i]);
            off += lens[i];
        }
    }
    *len = base + total;
    return obj;
}

/* Writes the input object jobs/<job>/in for n inputs (lens[i] bytes each). */
static void
put_inputs(struct fx *fx, uint64_t job, const char *const *in, const size_t *lens,
           size_t n)
{
    size_t len;
    unsigned char *obj = input_object(in, lens, n, &len);
    char key[128];
    assert_int_equal(invoc_key_input(key, sizeof(key), job), 0);
    put_file(fx, key, obj, len);
    free(obj);
}

/* put_inputs for NUL-terminated strings. */
static void
put_str_inputs(struct fx *fx, uint64_t job, const char *const *in, size_t n)
{
    size_t lens[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(in[i]);
    put_inputs(fx, job, in, lens, n);
}

/* A spec with one invocation of tasks 0..n-1, attempt 1.  Free with
 * invoc_spec_free. */
static void
spec_init(struct invoc_spec *s, uint64_t job, uint64_t dispatch, uint32_t n)
{
    memset(s, 0, sizeof(*s));
    s->job = job;
    s->dispatch = dispatch;
    s->fn_kind = BURST_FN_EXEC;
    s->ninvocations = 1;
    s->ntasks = calloc(1, sizeof(uint32_t));
    s->tasks = calloc(1, sizeof(struct invoc_task *));
    assert_non_null(s->ntasks);
    assert_non_null(s->tasks);
    s->ntasks[0] = n;
    s->tasks[0] = calloc(n ? n : 1, sizeof(struct invoc_task));
    assert_non_null(s->tasks[0]);
    for (uint32_t i = 0; i < n; i++)
        s->tasks[0][i] = (struct invoc_task){i, 1};
}

static void
spec_exec(struct invoc_spec *s, const char *cmd)
{
    s->fn_kind = BURST_FN_EXEC;
    s->cmd = strdup(cmd);
    assert_non_null(s->cmd);
}

/* Stores the test function library content-addressed and points the spec
 * at symbol in it. */
static void
spec_so(struct fx *fx, struct invoc_spec *s, const char *symbol)
{
    const char *lib = getenv("BURST_TEST_FNS");
    assert_non_null(lib);
    size_t len;
    char *data = slurp(lib, &len);
    assert_non_null(data);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL), 1);
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    char key[256];
    assert_int_equal(invoc_key_fn(key, sizeof(key), hex), 0);
    /* Content-addressed: an object already there is this library, which a
     * warm worker's executor may have mapped (rewriting it in place would
     * pull it from under the executor). */
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/%s", fx->dir, key);
    if (access(path, F_OK) != 0)
        put_file(fx, key, data, len);
    free(data);
    s->fn_kind = BURST_FN_SO;
    s->fn_key = strdup(key);
    s->symbol = strdup(symbol);
    assert_non_null(s->fn_key);
    assert_non_null(s->symbol);
}

static void
put_spec(struct fx *fx, const struct invoc_spec *s)
{
    char *buf;
    size_t len;
    char key[128];
    assert_int_equal(invoc_spec_encode(s, &buf, &len), 0);
    assert_int_equal(invoc_key_spec(key, sizeof(key), s->job, s->dispatch), 0);
    put_file(fx, key, buf, len);
    free(buf);
}

/* Starts burst-worker with the given environment (NULL values are left
 * unset).  Returns its pid. */
static pid_t
worker_start(const char *storage, const char *spec_key, const char *job_index)
{
    const char *worker = getenv("BURST_WORKER");
    assert_non_null(worker);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsetenv("BURST_STORAGE");
        unsetenv("BURST_SPEC");
        unsetenv("JOB_INDEX");
        if (storage != NULL)
            setenv("BURST_STORAGE", storage, 1);
        if (spec_key != NULL)
            setenv("BURST_SPEC", spec_key, 1);
        if (job_index != NULL)
            setenv("JOB_INDEX", job_index, 1);
        /* Keep the worker's complaints out of the test output unless
         * asked: set BURST_TEST_VERBOSE to see them. */
        if (getenv("BURST_TEST_VERBOSE") == NULL) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0)
                dup2(fd, STDERR_FILENO);
        }
        execl(worker, "burst-worker", (char *)NULL);
        _exit(99);
    }
    return pid;
}

/* Waits for the worker (killing it past the safety net, which fails the
 * test) and returns its exit status. */
static int
worker_wait(pid_t pid)
{
    int64_t end = now_ms() + WORKER_SAFETY_MS;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            break;
        assert_int_equal(r, 0);
        if (now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("burst-worker did not finish");
        }
        sleep_ms(5);
    }
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static int
worker_run(struct fx *fx, uint64_t job, uint64_t dispatch, const char *job_index)
{
    char key[128];
    assert_int_equal(invoc_key_spec(key, sizeof(key), job, dispatch), 0);
    return worker_wait(worker_start(fx->url, key, job_index));
}

/* A decoded output object. */
struct out {
    char *buf;
    size_t len;
    uint64_t job, dispatch;
    uint32_t n;
    struct invoc_result *r;
    size_t nr;
};

static void
out_read(struct fx *fx, uint64_t job, uint64_t dispatch, uint32_t n, struct out *o)
{
    char key[128], path[PATH_MAX * 2];
    assert_int_equal(invoc_key_output(key, sizeof(key), job, dispatch, n), 0);
    snprintf(path, sizeof(path), "%s/%s", fx->dir, key);
    memset(o, 0, sizeof(*o));
    o->buf = slurp(path, &o->len);
    assert_non_null(o->buf);
    assert_int_equal(
        invoc_out_decode(o->buf, o->len, &o->job, &o->dispatch, &o->n, &o->r, &o->nr), 0);
    assert_true(o->job == job);
    assert_true(o->dispatch == dispatch);
    assert_int_equal(o->n, n);
    /* Whatever the test: a task that did not succeed always says why. */
    for (size_t i = 0; i < o->nr; i++) {
        if (o->r[i].status != INVOC_OK) {
            assert_non_null(o->r[i].reason);
            assert_true(o->r[i].reason[0] != '\0');
        }
    }
}

static void
out_free(struct out *o)
{
    invoc_results_free(o->r, o->nr);
    free(o->buf);
}

static void
assert_result(const struct invoc_result *r, const char *want)
{
    size_t n = strlen(want);
    assert_int_equal(r->result_len, n);
    if (n > 0)
        assert_memory_equal(r->result, want, n);
}

static bool
log_contains(const struct invoc_result *r, const char *s)
{
    return r->log_len > 0 && memmem(r->log, r->log_len, s, strlen(s)) != NULL;
}

/* Runs a one-invocation job of the given inputs: the common case. */
static void
run_simple(struct fx *fx, struct invoc_spec *s, const char *const *in, size_t n,
           struct out *o)
{
    put_str_inputs(fx, s->job, in, n);
    put_spec(fx, s);
    assert_int_equal(worker_run(fx, s->job, s->dispatch, NULL), 0);
    out_read(fx, s->job, s->dispatch, 0, o);
}

/* True when pid is gone (or a zombie waiting for init), waiting up to the
 * safety net for SIGKILL to take effect. */
static bool
process_gone(pid_t pid)
{
    int64_t end = now_ms() + 10000;
    for (;;) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        size_t len;
        char *st = slurp(path, &len);
        if (st == NULL)
            return true;
        char *rp = memrchr(st, ')', len);
        bool zombie = rp != NULL && (size_t)(rp - st) + 2 < len && rp[2] == 'Z';
        free(st);
        if (zombie)
            return true;
        if (now_ms() > end)
            return false;
        sleep_ms(10);
    }
}

/* Waits until path exists and holds a pid; returns it. */
static pid_t
wait_pidfile(const char *path)
{
    int64_t end = now_ms() + WORKER_SAFETY_MS;
    for (;;) {
        size_t len;
        char *s = slurp(path, &len);
        if (s != NULL && len > 0) {
            s[len - 1] = '\0';
            pid_t pid = (pid_t)atol(s);
            free(s);
            if (pid > 0)
                return pid;
        }
        free(s);
        if (now_ms() > end)
            fail_msg("no pid file %s", path);
        sleep_ms(10);
    }
}

/* ---- invoc.c unit tests ------------------------------------------------------------ */

static void
on_alarm(int sig)
{
    (void)sig; /* only there to interrupt writev */
}

/*
 * run_write2 (a worker's reply: its line, then an inline output) gets all
 * of both across a pipe whose writes signals keep interrupting, as a stop
 * request may: a partial write goes on where it stopped, in order.
 */
static void
test_write2_interrupted(void **state)
{
    (void)state;
    size_t blen = 4 << 20;
    unsigned char *b = malloc(blen);
    assert_non_null(b);
    for (size_t i = 0; i < blen; i++)
        b[i] = (unsigned char)(i * 7 + i / 4096);
    const char a[] = "0 4194304\n";
    int p[2], sum[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(pipe(sum), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Reads slowly, in small pieces, and reports how much matched. */
        close(p[1]);
        char buf[3000];
        uint64_t got = 0, bad = 0;
        ssize_t n;
        while ((n = read(p[0], buf, sizeof(buf))) > 0) {
            for (ssize_t k = 0; k < n; k++, got++) {
                unsigned char want = got < sizeof(a) - 1
                                         ? (unsigned char)a[got]
                                         : b[got - (sizeof(a) - 1)];
                bad += (unsigned char)buf[k] != want;
            }
            if (got % 97 == 0)
                usleep(100);
        }
        uint64_t out[2] = {got, bad};
        _exit(write(sum[1], out, sizeof(out)) == (ssize_t)sizeof(out) ? 0 : 1);
    }
    close(p[0]);
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
    struct sigaction old;
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    struct itimerval it = {{0, 200}, {0, 200}};
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    int rc = run_write2(p[1], a, sizeof(a) - 1, b, blen);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    assert_int_equal(rc, 0);
    close(p[1]);
    uint64_t res[2];
    assert_int_equal(read(sum[0], res, sizeof(res)), (ssize_t)sizeof(res));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(res[0], sizeof(a) - 1 + blen);
    assert_int_equal(res[1], 0);
    close(sum[0]);
    close(sum[1]);
    free(b);
}

static void
test_keys(void **state)
{
    (void)state;
    char buf[64];
    assert_int_equal(invoc_key_fn(buf, sizeof(buf), "ab12"), 0);
    assert_string_equal(buf, "fn/ab12.so");
    assert_int_equal(invoc_key_input(buf, sizeof(buf), 7), 0);
    assert_string_equal(buf, "jobs/7/in");
    assert_int_equal(invoc_key_spec(buf, sizeof(buf), 7, 12), 0);
    assert_string_equal(buf, "jobs/7/spec/12");
    assert_int_equal(invoc_key_output(buf, sizeof(buf), 7, 12, 3), 0);
    assert_string_equal(buf, "jobs/7/out/12.3");
    assert_int_equal(invoc_key_reduce_manifest(buf, sizeof(buf), 7), 0);
    assert_string_equal(buf, "jobs/7/reduce.in");
    assert_int_equal(invoc_key_job_prefix(buf, sizeof(buf), 7), 0);
    assert_string_equal(buf, "jobs/7/");
    assert_int_equal(invoc_key_output(buf, 10, 7, 12, 3), -ENAMETOOLONG);
    assert_int_equal(invoc_key_spec(buf, sizeof(buf), UINT64_MAX, UINT64_MAX), 0);
    assert_string_equal(buf, "jobs/18446744073709551615/spec/18446744073709551615");
    assert_int_equal(invoc_key_fn(buf, sizeof(buf), "../x"), -EINVAL);
}

static void
test_spec_roundtrip(void **state)
{
    (void)state;
    struct invoc_spec s, d;
    spec_init(&s, 42, 9, 3);
    spec_exec(&s, "tr a-z A-Z");
    s.timeout_ms = 1500;
    s.memory_mb = 256;
    s.tasks[0][2].attempt = 4;
    char *buf;
    size_t len;
    assert_int_equal(invoc_spec_encode(&s, &buf, &len), 0);
    assert_int_equal(invoc_spec_decode(buf, len, &d), 0);
    assert_true(d.job == 42 && d.dispatch == 9);
    assert_int_equal(d.fn_kind, BURST_FN_EXEC);
    assert_string_equal(d.cmd, "tr a-z A-Z");
    assert_null(d.fn_key);
    assert_true(d.timeout_ms == 1500);
    assert_int_equal(d.memory_mb, 256);
    assert_false(d.reduce);
    assert_int_equal(d.ninvocations, 1);
    assert_int_equal(d.ntasks[0], 3);
    assert_int_equal(d.tasks[0][1].index, 1);
    assert_int_equal(d.tasks[0][2].attempt, 4);
    free(buf);
    invoc_spec_free(&d);
    invoc_spec_free(&s);

    /* so, reduce, several invocations of different sizes, an empty one */
    memset(&s, 0, sizeof(s));
    s.job = UINT64_MAX;
    s.dispatch = 1;
    s.fn_kind = BURST_FN_SO;
    s.fn_key = strdup("fn/abcd.so");
    s.symbol = strdup("upper");
    s.reduce = true;
    s.ninvocations = 3;
    s.ntasks = calloc(3, sizeof(uint32_t));
    s.tasks = calloc(3, sizeof(struct invoc_task *));
    uint32_t counts[3] = {2, 0, 5};
    for (int i = 0; i < 3; i++) {
        s.ntasks[i] = counts[i];
        s.tasks[i] = calloc(counts[i] ? counts[i] : 1, sizeof(struct invoc_task));
        for (uint32_t j = 0; j < counts[i]; j++)
            s.tasks[i][j] = (struct invoc_task){100u * (uint32_t)i + j, j + 1};
    }
    assert_int_equal(invoc_spec_encode(&s, &buf, &len), 0);
    assert_int_equal(invoc_spec_decode(buf, len, &d), 0);
    assert_int_equal(d.fn_kind, BURST_FN_SO);
    assert_string_equal(d.fn_key, "fn/abcd.so");
    assert_string_equal(d.symbol, "upper");
    assert_null(d.cmd);
    assert_true(d.reduce);
    assert_true(d.job == UINT64_MAX);
    assert_int_equal(d.ninvocations, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d.ntasks[i], counts[i]);
        for (uint32_t j = 0; j < counts[i]; j++) {
            assert_int_equal(d.tasks[i][j].index, 100u * (uint32_t)i + j);
            assert_int_equal(d.tasks[i][j].attempt, j + 1);
        }
    }
    free(buf);
    invoc_spec_free(&d);
    invoc_spec_free(&s);
}

static void
test_output_roundtrip(void **state)
{
    (void)state;
    struct invoc_out_writer *w;
    assert_int_equal(invoc_out_writer_new(5, 6, 7, &w), 0);
    static char big[300000];
    memset(big, 'b', sizeof(big));
    struct invoc_result in[3] = {
        {.index = 0,
         .attempt = 1,
         .status = INVOC_OK,
         .exit_status = 0,
         .result = "HELLO\n",
         .result_len = 6,
         .log = "log0",
         .log_len = 4},
        {.index = 1,
         .attempt = 2,
         .status = INVOC_SIGNAL,
         .exit_status = -1,
         .signal = 11,
         .reason = "killed by signal 11 (Segmentation fault)"},
        {.index = 9,
         .attempt = 1,
         .status = INVOC_FAILED,
         .exit_status = 3,
         .reason = "exit status 3",
         .result = big,
         .result_len = sizeof(big)},
    };
    for (int i = 0; i < 3; i++)
        assert_int_equal(invoc_out_writer_add(w, &in[i]), 0);
    char *buf;
    size_t len;
    assert_int_equal(invoc_out_writer_finish(w, &buf, &len), 0);
    /* spent: no more adds */
    assert_int_equal(invoc_out_writer_add(w, &in[0]), -EINVAL);
    invoc_out_writer_free(w);

    uint64_t job, disp;
    uint32_t n;
    struct invoc_result *r;
    size_t nr;
    assert_int_equal(invoc_out_decode(buf, len, &job, &disp, &n, &r, &nr), 0);
    assert_true(job == 5 && disp == 6);
    assert_int_equal(n, 7);
    assert_int_equal(nr, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r[i].index, in[i].index);
        assert_int_equal(r[i].attempt, in[i].attempt);
        assert_int_equal(r[i].status, in[i].status);
        assert_int_equal(r[i].exit_status, in[i].exit_status);
        assert_int_equal(r[i].signal, in[i].signal);
        assert_string_equal(r[i].reason, in[i].reason ? in[i].reason : "");
        assert_int_equal(r[i].result_len, in[i].result_len);
        assert_int_equal(r[i].log_len, in[i].log_len);
        if (r[i].result_len > 0) {
            assert_memory_equal(r[i].result, in[i].result, in[i].result_len);
            /* The offsets allow a ranged read of one result. */
            assert_ptr_equal(buf + r[i].result_off, r[i].result);
            assert_memory_equal(buf + r[i].result_off, in[i].result, in[i].result_len);
        }
        if (r[i].log_len > 0)
            assert_memory_equal(buf + r[i].log_off, in[i].log, in[i].log_len);
    }
    invoc_results_free(r, nr);
    free(buf);

    /* An empty output */
    assert_int_equal(invoc_out_writer_new(1, 2, 0, &w), 0);
    assert_int_equal(invoc_out_writer_finish(w, &buf, &len), 0);
    invoc_out_writer_free(w);
    assert_int_equal(invoc_out_decode(buf, len, &job, &disp, &n, &r, &nr), 0);
    assert_int_equal(nr, 0);
    invoc_results_free(r, nr);
    free(buf);
}

static void
test_manifest_roundtrip(void **state)
{
    (void)state;
    struct invoc_part parts[3] = {
        {"jobs/1/out/1.0", 10, 20},
        {"jobs/1/out/1.1", 0, 0},
        {"jobs/1/out/2.0", UINT64_MAX - 5, 5},
    };
    char *buf;
    size_t len;
    assert_int_equal(invoc_manifest_encode(parts, 3, &buf, &len), 0);
    struct invoc_part *d;
    size_t n;
    assert_int_equal(invoc_manifest_decode(buf, len, &d, &n), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(d[i].key, parts[i].key);
        assert_true(d[i].off == parts[i].off);
        assert_true(d[i].len == parts[i].len);
    }
    invoc_manifest_free(d, n);
    free(buf);

    /* off + len past 2^64 is refused */
    parts[2].len = 6;
    assert_int_equal(invoc_manifest_encode(parts, 3, &buf, &len), 0);
    assert_int_equal(invoc_manifest_decode(buf, len, &d, &n), -EINVAL);
    free(buf);
}

/* Every decoder on one buffer: none may crash or succeed wrongly typed. */
static void
decode_all(const char *buf, size_t len, int *ok)
{
    struct invoc_spec s;
    if (invoc_spec_decode(buf, len, &s) == 0) {
        ok[0]++;
        invoc_spec_free(&s);
    }
    uint64_t j, d;
    uint32_t n;
    struct invoc_result *r;
    size_t nr;
    if (invoc_out_decode(buf, len, &j, &d, &n, &r, &nr) == 0) {
        ok[1]++;
        invoc_results_free(r, nr);
    }
    struct invoc_part *p;
    size_t np;
    if (invoc_manifest_decode(buf, len, &p, &np) == 0) {
        ok[2]++;
        invoc_manifest_free(p, np);
    }
}

/* Hand-made malformed msgpack. */
static const struct {
    const char *name;
    const char *bytes;
    size_t len;
} garbage[] = {
    {"empty", "", 0},
    {"nil", "\xc0", 1},
    {"never used byte", "\xc1", 1},
    {"array32 claiming 4G elements", "\xdd\xff\xff\xff\xff", 5},
    {"map32 claiming 4G pairs", "\xdf\xff\xff\xff\xff\xa1v\x01", 8},
    {"str32 longer than the buffer", "\x81\xdb\xff\xff\xff\xf0v", 7},
    {"bin32 longer than the buffer", "\x81\xa1v\xc6\x7f\xff\xff\xff", 8},
    {"trailing byte", "\x81\xa1v\x01\x00", 5},
    {"version 2", "\x81\xa1v\x02", 4},
    {"v is a string", "\x81\xa1v\xa1\x31", 5},
    {"deep nesting",
     "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
     "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91"
     "\x91\x91\x91\x91\x91\x91\x91\x91\xc0",
     41},
};

static void
test_decode_garbage(void **state)
{
    (void)state;
    int ok[3] = {0, 0, 0};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        decode_all(garbage[i].bytes, garbage[i].len, ok);
        if (ok[0] + ok[1] + ok[2] != 0)
            fail_msg("garbage '%s' was accepted", garbage[i].name);
    }
    assert_int_equal(invoc_spec_decode(NULL, 0, &(struct invoc_spec){0}), -EINVAL);

    /* Every truncation and every single-byte corruption of valid objects. */
    struct invoc_spec s;
    spec_init(&s, 3, 4, 5);
    spec_exec(&s, "cat");
    char *objs[3];
    size_t lens[3];
    assert_int_equal(invoc_spec_encode(&s, &objs[0], &lens[0]), 0);
    invoc_spec_free(&s);
    struct invoc_out_writer *w;
    assert_int_equal(invoc_out_writer_new(1, 2, 3, &w), 0);
    struct invoc_result r = {.index = 1,
                             .attempt = 1,
                             .status = INVOC_OK,
                             .result = "abc",
                             .result_len = 3,
                             .log = "x",
                             .log_len = 1};
    assert_int_equal(invoc_out_writer_add(w, &r), 0);
    assert_int_equal(invoc_out_writer_finish(w, &objs[1], &lens[1]), 0);
    invoc_out_writer_free(w);
    struct invoc_part part = {"jobs/1/out/1.0", 1, 2};
    assert_int_equal(invoc_manifest_encode(&part, 1, &objs[2], &lens[2]), 0);

    for (int o = 0; o < 3; o++) {
        for (size_t cut = 0; cut < lens[o]; cut++) {
            memset(ok, 0, sizeof(ok));
            /* a copy of exactly cut bytes, so ASan sees any overread */
            char *c = malloc(cut ? cut : 1);
            memcpy(c, objs[o], cut);
            decode_all(c, cut, ok);
            free(c);
            assert_int_equal(ok[0] + ok[1] + ok[2], 0);
        }
        char *c = malloc(lens[o]);
        for (size_t pos = 0; pos < lens[o]; pos++) {
            for (int v = 0; v < 256; v += 7) {
                memcpy(c, objs[o], lens[o]);
                c[pos] = (char)v;
                decode_all(c, lens[o], ok); /* may or may not decode: must not crash */
            }
        }
        free(c);
        free(objs[o]);
    }

    /* Random bytes, seeded so a failure reproduces. */
    unsigned seed = 12345;
    char rnd[512];
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof(rnd));
        for (size_t k = 0; k < len; k++)
            rnd[k] = (char)rand_r(&seed);
        if (len > 0 && i % 2 == 0)
            rnd[0] = (char)(0x80 | (rand_r(&seed) & 0x0f)); /* a map, like ours */
        decode_all(rnd, len, ok);
    }
}

static void
pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Well-formed msgpack with one field wrong at a time: a spec whose cmd is
 * cmd_len bytes, and an output with one task of the given status whose
 * result is bin or (wrongly) str. */
static void
pack_spec_like(msgpack_sbuffer *sb, const char *cmd, size_t cmd_len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    pack_str(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "job", 3);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "dispatch", 8);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "fn", 2);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "kind", 4);
    pack_str(&pk, "exec", 4);
    pack_str(&pk, "cmd", 3);
    pack_str(&pk, cmd, cmd_len);
    pack_str(&pk, "timeout_ms", 10);
    msgpack_pack_uint8(&pk, 0);
    pack_str(&pk, "memory_mb", 9);
    msgpack_pack_uint8(&pk, 0);
    pack_str(&pk, "reduce", 6);
    msgpack_pack_false(&pk);
    pack_str(&pk, "invocations", 11);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint8(&pk, 1);
}

static void
pack_output_like(msgpack_sbuffer *sb, int status, bool result_as_str)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "job", 3);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "dispatch", 8);
    msgpack_pack_uint8(&pk, 1);
    pack_str(&pk, "n", 1);
    msgpack_pack_uint8(&pk, 0);
    pack_str(&pk, "tasks", 5);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_int(&pk, status);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_int(&pk, 0);
    pack_str(&pk, "", 0);
    if (result_as_str) {
        pack_str(&pk, "res", 3);
    } else {
        msgpack_pack_bin(&pk, 3);
        msgpack_pack_bin_body(&pk, "res", 3);
    }
    msgpack_pack_bin(&pk, 0);
}

static void
test_decode_semantics(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    struct invoc_spec spec;
    msgpack_sbuffer_init(&sb);
    pack_spec_like(&sb, "a b", 3); /* the control: valid */
    assert_int_equal(invoc_spec_decode(sb.data, sb.size, &spec), 0);
    assert_string_equal(spec.cmd, "a b");
    invoc_spec_free(&spec);
    msgpack_sbuffer_clear(&sb);
    pack_spec_like(&sb, "a\0b", 3); /* a NUL cannot become a C string */
    assert_int_equal(invoc_spec_decode(sb.data, sb.size, &spec), -EINVAL);
    msgpack_sbuffer_clear(&sb);

    uint64_t j, d;
    uint32_t n;
    struct invoc_result *r;
    size_t nr;
    pack_output_like(&sb, INVOC_TIMEOUT, false); /* the control: valid */
    assert_int_equal(invoc_out_decode(sb.data, sb.size, &j, &d, &n, &r, &nr), 0);
    assert_int_equal(r[0].status, INVOC_TIMEOUT);
    assert_memory_equal(sb.data + r[0].result_off, "res", 3);
    invoc_results_free(r, nr);
    msgpack_sbuffer_clear(&sb);
    pack_output_like(&sb, 9, false); /* no such status */
    assert_int_equal(invoc_out_decode(sb.data, sb.size, &j, &d, &n, &r, &nr), -EINVAL);
    msgpack_sbuffer_clear(&sb);
    pack_output_like(&sb, -1, false);
    assert_int_equal(invoc_out_decode(sb.data, sb.size, &j, &d, &n, &r, &nr), -EINVAL);
    msgpack_sbuffer_clear(&sb);
    pack_output_like(&sb, INVOC_OK, true); /* result must be bin */
    assert_int_equal(invoc_out_decode(sb.data, sb.size, &j, &d, &n, &r, &nr), -EINVAL);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- exec ------------------------------------------------------------------------- */

static void
test_exec_upper(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 1, 1, 4);
    spec_exec(&s, "tr a-z A-Z");
    const char *in[] = {"hello\n", "world\n", "", "Mixed Case 123\n"};
    struct out o;
    run_simple(fx, &s, in, 4, &o);
    assert_int_equal(o.nr, 4);
    const char *want[] = {"HELLO\n", "WORLD\n", "", "MIXED CASE 123\n"};
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(o.r[i].index, i);
        assert_int_equal(o.r[i].attempt, 1);
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_int_equal(o.r[i].exit_status, 0);
        assert_int_equal(o.r[i].signal, 0);
        assert_string_equal(o.r[i].reason, "");
        assert_result(&o.r[i], want[i]);
    }
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_exec_env(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 77, 3, 2);
    s.tasks[0][0] = (struct invoc_task){5, 1};
    s.tasks[0][1] = (struct invoc_task){1, 3};
    spec_exec(&s, "printf '%s %s %s' \"$BURST_JOB_ID\" \"$BURST_TASK_INDEX\" "
                  "\"$BURST_ATTEMPT\"");
    const char *in[] = {"a", "b", "c", "d", "e", "f"};
    struct out o;
    run_simple(fx, &s, in, 6, &o);
    assert_int_equal(o.nr, 2);
    /* tasks run in spec order, not index order */
    assert_int_equal(o.r[0].index, 5);
    assert_result(&o.r[0], "77 5 1");
    assert_int_equal(o.r[1].index, 1);
    assert_int_equal(o.r[1].attempt, 3);
    assert_result(&o.r[1], "77 1 3");
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_exec_exit_status(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 2, 1, 3);
    spec_exec(&s, "read x; echo \"got $x\"; [ \"$x\" = ok ] || exit 3");
    const char *in[] = {"ok\n", "bad\n", "ok\n"};
    struct out o;
    run_simple(fx, &s, in, 3, &o);
    assert_int_equal(o.nr, 3);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_int_equal(o.r[1].status, INVOC_FAILED);
    assert_int_equal(o.r[1].exit_status, 3);
    assert_int_equal(o.r[1].signal, 0);
    assert_string_equal(o.r[1].reason, "exit status 3");
    assert_result(&o.r[1], "got bad\n"); /* what it wrote is kept */
    assert_int_equal(o.r[2].status, INVOC_OK);
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_exec_signal(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 3, 1, 2);
    spec_exec(&s, "if [ \"$BURST_TASK_INDEX\" = 0 ]; then kill -SEGV $$; fi; cat");
    const char *in[] = {"x", "y"};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 2);
    assert_int_equal(o.r[0].status, INVOC_SIGNAL);
    assert_int_equal(o.r[0].signal, SIGSEGV);
    assert_int_equal(o.r[0].exit_status, -1);
    assert_non_null(strstr(o.r[0].reason, "signal 11"));
    assert_int_equal(o.r[1].status, INVOC_OK);
    assert_result(&o.r[1], "y");
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_exec_timeout(void **state)
{
    struct fx *fx = *state;
    char cmd[PATH_MAX * 2];
    snprintf(cmd, sizeof(cmd),
             "if [ \"$BURST_TASK_INDEX\" = 0 ]; then echo $$ > %s/sleep.pid; "
             "exec sleep 30; fi; cat",
             fx->dir);
    struct invoc_spec s;
    spec_init(&s, 4, 1, 1);
    spec_exec(&s, cmd);
    s.timeout_ms = 200;
    const char *in[] = {"", "after"};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 1);
    assert_int_equal(o.r[0].status, INVOC_TIMEOUT);
    assert_int_equal(o.r[0].exit_status, -1);
    assert_string_equal(o.r[0].reason, "timed out after 200 ms");
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/sleep.pid", fx->dir);
    assert_true(process_gone(wait_pidfile(path)));
    out_free(&o);
    invoc_spec_free(&s);

    /* The next task runs after a timeout.  Its timeout is generous so that
     * a loaded machine cannot time out the quick `cat` too. */
    spec_init(&s, 4, 2, 2);
    spec_exec(&s, cmd);
    s.timeout_ms = 3000;
    put_spec(fx, &s);
    assert_int_equal(worker_run(fx, 4, 2, NULL), 0);
    out_read(fx, 4, 2, 0, &o);
    assert_int_equal(o.nr, 2);
    assert_int_equal(o.r[0].status, INVOC_TIMEOUT);
    assert_int_equal(o.r[1].status, INVOC_OK);
    assert_result(&o.r[1], "after");
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_exec_stragglers(void **state)
{
    struct fx *fx = *state;
    char cmd[PATH_MAX * 2];
    /* The background sleep keeps stdout open: without the group kill the
     * worker would wait for it. */
    snprintf(cmd, sizeof(cmd), "sleep 30 & echo $! > %s/bg.pid; echo done", fx->dir);
    struct invoc_spec s;
    spec_init(&s, 5, 1, 1);
    spec_exec(&s, cmd);
    const char *in[] = {""};
    struct out o;
    run_simple(fx, &s, in, 1, &o);
    assert_int_equal(o.nr, 1);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "done\n");
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/bg.pid", fx->dir);
    assert_true(process_gone(wait_pidfile(path)));
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_exec_large(void **state)
{
    struct fx *fx = *state;
    size_t n = 8u * 1024u * 1024u;
    char *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    const char *in[] = {big, "small"};
    size_t lens[] = {n, 5};
    struct invoc_spec s;
    spec_init(&s, 6, 1, 2);
    spec_exec(&s, "cat");
    put_inputs(fx, 6, in, lens, 2);
    put_spec(fx, &s);
    assert_int_equal(worker_run(fx, 6, 1, NULL), 0);
    struct out o;
    out_read(fx, 6, 1, 0, &o);
    assert_int_equal(o.nr, 2);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_int_equal(o.r[0].result_len, n);
    assert_memory_equal(o.r[0].result, big, n);
    assert_result(&o.r[1], "small");

    /* A command that reads none of its large input still succeeds. */
    out_free(&o);
    invoc_spec_free(&s);
    spec_init(&s, 6, 2, 1);
    spec_exec(&s, "echo ignored");
    put_spec(fx, &s);
    assert_int_equal(worker_run(fx, 6, 2, NULL), 0);
    out_read(fx, 6, 2, 0, &o);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "ignored\n");
    out_free(&o);
    invoc_spec_free(&s);
    free(big);
}

static void
test_exec_stderr_capped(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 7, 1, 2);
    spec_exec(&s, "if [ \"$BURST_TASK_INDEX\" = 0 ]; then "
                  "head -c 200000 /dev/zero | tr '\\0' x >&2; printf END >&2; fi; "
                  "echo \"task $BURST_TASK_INDEX\" >&2; echo out");
    const char *in[] = {"", ""};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 2);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "out\n");
    assert_int_equal(o.r[0].log_len, INVOC_LOG_CAP);
    const char *tail = "ENDtask 0\n";
    assert_memory_equal(o.r[0].log + INVOC_LOG_CAP - strlen(tail), tail, strlen(tail));
    assert_int_equal(o.r[0].log[0], 'x');
    /* each task has its own log */
    assert_int_equal(o.r[1].log_len, strlen("task 1\n"));
    assert_memory_equal(o.r[1].log, "task 1\n", 7);
    out_free(&o);
    invoc_spec_free(&s);
}

/* The memory-limit tests run with RLIMIT_AS forced and, where the machine
 * may offer cgroup v2 (/sys/fs/cgroup is cgroup2), again with whatever the
 * worker chooses.  Elsewhere the second run would repeat the first. */
static const char *const mem_modes[] = {"rlimit", NULL};

static size_t
mem_nmodes(void)
{
    struct statfs sfs;
    bool v2 = statfs("/sys/fs/cgroup", &sfs) == 0 && sfs.f_type == CGROUP2_SUPER_MAGIC;
    return v2 ? 2 : 1;
}

static void
mem_mode_set(const char *mode)
{
    if (mode != NULL)
        assert_int_equal(setenv("BURST_MEMORY_LIMIT", mode, 1), 0);
    else
        assert_int_equal(unsetenv("BURST_MEMORY_LIMIT"), 0);
}

static void
test_exec_memory_limit(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 8, 1, 1);
    spec_exec(&s, "ulimit -v");
    s.memory_mb = 64;
    const char *in[] = {""};
    struct out o;
    mem_mode_set("rlimit");
    run_simple(fx, &s, in, 1, &o);
    mem_mode_set(NULL);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "65536\n"); /* KiB */
    out_free(&o);
    invoc_spec_free(&s);
}

/*
 * An exec task that needs far more than its limit ends INVOC_OOM, while
 * tasks under the limit, or failing for another reason, are untouched.
 * GNU tail keeps a line until it ends, and /dev/zero has none: tail holds
 * all it reads, page by page, until the limit stops it (a refused malloc
 * under RLIMIT_AS, the OOM killer in a cgroup).  head bounds it, so that
 * even without any limit the test ends.
 */
static void
test_exec_oom(void **state)
{
    struct fx *fx = *state;
    for (size_t m = 0; m < mem_nmodes(); m++) {
        struct invoc_spec s;
        spec_init(&s, 10, m + 1, 4);
        spec_exec(&s, "read n; [ \"$n\" = fail ] && exit 3; "
                      "head -c $((n * 1048576)) /dev/zero | tail");
        s.memory_mb = 24;
        const char *in[] = {"128\n", "2\n", "fail\n", "256\n"};
        struct out o;
        mem_mode_set(mem_modes[m]);
        run_simple(fx, &s, in, 4, &o);
        mem_mode_set(NULL);
        assert_int_equal(o.nr, 4);
        for (int i = 0; i < 4; i += 3) {
            assert_int_equal(o.r[i].status, INVOC_OOM);
            assert_string_equal(o.r[i].reason, "out of memory (limit 24 MiB)");
        }
        assert_int_equal(o.r[1].status, INVOC_OK);
        assert_int_equal(o.r[1].result_len, 2u << 20);
        assert_int_equal(o.r[1].result[0], '\0');
        assert_int_equal(o.r[2].status, INVOC_FAILED);
        assert_string_equal(o.r[2].reason, "exit status 3");
        out_free(&o);
        invoc_spec_free(&s);
    }
}

/*
 * The same for so functions: gobble allocates until its input's MiB or its
 * limit.  Under RLIMIT_AS its allocation fails and it returns 12, or aborts
 * the executor; in a cgroup the kernel kills the executor.  Either way the
 * tasks after it run.
 */
static void
test_so_oom(void **state)
{
    struct fx *fx = *state;
    for (size_t m = 0; m < mem_nmodes(); m++) {
        struct invoc_spec s;
        spec_init(&s, 27, m + 1, 5);
        spec_so(fx, &s, "gobble");
        s.memory_mb = 64;
        /* "4?" aborts holding 4 MiB, right after a task that reached the
         * limit in the same executor: a crash, not out of memory (each task's
         * peak is its own).  "1024!" aborts when it runs out: the executor
         * dies of it. */
        const char *in[] = {"1024", "4?", "8", "1024!", "16"};
        struct out o;
        mem_mode_set(mem_modes[m]);
        run_simple(fx, &s, in, 5, &o);
        mem_mode_set(NULL);
        assert_int_equal(o.nr, 5);
        for (int i = 0; i < 5; i += 3) {
            assert_int_equal(o.r[i].status, INVOC_OOM);
            assert_string_equal(o.r[i].reason, "out of memory (limit 64 MiB)");
            assert_int_equal(o.r[i].result_len, 0);
        }
        assert_int_equal(o.r[1].status, INVOC_SIGNAL);
        assert_int_equal(o.r[1].signal, SIGABRT);
        assert_int_equal(o.r[2].status, INVOC_OK);
        assert_result(&o.r[2], "gobbled 8 MiB");
        assert_int_equal(o.r[4].status, INVOC_OK);
        assert_result(&o.r[4], "gobbled 16 MiB");
        out_free(&o);
        invoc_spec_free(&s);
    }
}

static void
test_exec_input_errors(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 9, 1, 3);
    spec_exec(&s, "cat");
    /* only two inputs: task 2 is beyond the index */
    const char *in[] = {"a", "b"};
    put_str_inputs(fx, 9, in, 2);
    put_spec(fx, &s);
    assert_int_equal(worker_run(fx, 9, 1, NULL), 0);
    struct out o;
    out_read(fx, 9, 1, 0, &o);
    assert_int_equal(o.nr, 3);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_int_equal(o.r[1].status, INVOC_OK);
    assert_int_equal(o.r[2].status, INVOC_ERROR);
    assert_non_null(strstr(o.r[2].reason, "no input for task 2"));
    out_free(&o);

    /* data shorter than the index says: header 16 + 3 offsets, then "a" */
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/jobs/9/in", fx->dir);
    assert_int_equal(truncate(path, INVOC_INPUT_HEADER + 3 * 8 + 1), 0);
    assert_int_equal(worker_run(fx, 9, 1, NULL), 0);
    out_read(fx, 9, 1, 0, &o);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_int_equal(o.r[1].status, INVOC_ERROR);
    assert_non_null(strstr(o.r[1].reason, "truncated"));
    out_free(&o);

    /* not an input object at all */
    put_file(fx, "jobs/9/in", "not an input object, really", 27);
    assert_int_equal(worker_run(fx, 9, 1, NULL), 0);
    out_read(fx, 9, 1, 0, &o);
    assert_int_equal(o.r[0].status, INVOC_ERROR);
    assert_non_null(strstr(o.r[0].reason, "not an input object"));
    out_free(&o);
    invoc_spec_free(&s);
}

/* ---- so --------------------------------------------------------------------------- */

static void
test_so_echo_upper(void **state)
{
    struct fx *fx = *state;
    const char *in[] = {"abc", "", "Hello, World\n"};
    const char *syms[] = {"echo", "upper"};
    for (int k = 0; k < 2; k++) {
        struct invoc_spec s;
        spec_init(&s, 20, (uint64_t)k + 1, 3);
        spec_so(fx, &s, syms[k]);
        struct out o;
        run_simple(fx, &s, in, 3, &o);
        assert_int_equal(o.nr, 3);
        for (uint32_t i = 0; i < 3; i++) {
            assert_int_equal(o.r[i].index, i);
            assert_int_equal(o.r[i].status, INVOC_OK);
            assert_int_equal(o.r[i].exit_status, 0);
        }
        assert_result(&o.r[0], k == 0 ? "abc" : "ABC");
        assert_result(&o.r[1], "");
        assert_result(&o.r[2], k == 0 ? "Hello, World\n" : "HELLO, WORLD\n");
        out_free(&o);
        invoc_spec_free(&s);
    }
}

static void
test_so_crash(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 21, 1, 4);
    spec_so(fx, &s, "crash_on_marker");
    const char *in[] = {"first", "CRASH here", "third", "fourth"};
    struct out o;
    run_simple(fx, &s, in, 4, &o);
    assert_int_equal(o.nr, 4);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "first");
    assert_int_equal(o.r[1].index, 1);
    assert_int_equal(o.r[1].status, INVOC_SIGNAL);
    assert_int_equal(o.r[1].signal, SIGSEGV);
    assert_non_null(strstr(o.r[1].reason, "signal 11"));
    /* the log of the crashed task survives the crash */
    assert_true(log_contains(&o.r[1], "about to crash"));
    assert_int_equal(o.r[2].status, INVOC_OK);
    assert_result(&o.r[2], "third");
    assert_int_equal(o.r[3].status, INVOC_OK);
    assert_result(&o.r[3], "fourth");
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_so_fail3(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 22, 1, 2);
    spec_so(fx, &s, "fail3");
    const char *in[] = {"x", "y"};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(o.r[i].status, INVOC_FAILED);
        assert_int_equal(o.r[i].exit_status, 3);
        assert_int_equal(o.r[i].signal, 0);
        assert_non_null(strstr(o.r[i].reason, "3"));
        assert_result(&o.r[i], "partial");
    }
    assert_true(log_contains(&o.r[0], "failing task 0"));
    assert_false(log_contains(&o.r[1], "failing task 0"));
    assert_true(log_contains(&o.r[1], "failing task 1"));
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_so_logs(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 23, 1, 3);
    spec_so(fx, &s, "write_stderr");
    const char *in[] = {"a", "b", "c"};
    struct out o;
    run_simple(fx, &s, in, 3, &o);
    assert_int_equal(o.nr, 3);
    for (uint32_t i = 0; i < 3; i++) {
        char want[128];
        snprintf(want, sizeof(want), "stderr of task %u\nstdout of task %u\n", i, i);
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_int_equal(o.r[i].log_len, strlen(want));
        assert_memory_equal(o.r[i].log, want, strlen(want));
        assert_result(&o.r[i], in[i]);
    }
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_so_timeout(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 24, 1, 2);
    spec_so(fx, &s, "hang");
    s.timeout_ms = 200;
    char path[2048];
    snprintf(path, sizeof(path), "%s/hang.pid", fx->dir);
    const char *in[] = {path, ""};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(o.r[i].status, INVOC_TIMEOUT);
        assert_string_equal(o.r[i].reason, "timed out after 200 ms");
    }
    assert_true(process_gone(wait_pidfile(path)));
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_so_missing_symbol(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 25, 1, 2);
    spec_so(fx, &s, "no_such_function");
    const char *in[] = {"a", "b"};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(o.r[i].status, INVOC_ERROR);
        assert_non_null(strstr(o.r[i].reason, "symbol 'no_such_function' not found"));
        assert_non_null(strstr(o.r[i].reason, s.fn_key));
    }
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_so_missing_library(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 26, 1, 2);
    s.fn_kind = BURST_FN_SO;
    s.fn_key =
        strdup("fn/0000000000000000000000000000000000000000000000000000000000000000.so");
    s.symbol = strdup("echo");
    const char *in[] = {"a", "b"};
    struct out o;
    run_simple(fx, &s, in, 2, &o);
    assert_int_equal(o.nr, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(o.r[i].status, INVOC_ERROR);
        assert_non_null(strstr(o.r[i].reason, "not found"));
        assert_non_null(strstr(o.r[i].reason, s.fn_key));
    }
    out_free(&o);

    /* present but not a library */
    put_file(fx, s.fn_key, "not an ELF file", 15);
    assert_int_equal(worker_run(fx, 26, 1, NULL), 0);
    out_read(fx, 26, 1, 0, &o);
    assert_int_equal(o.r[0].status, INVOC_ERROR);
    assert_non_null(strstr(o.r[0].reason, "cannot load"));
    out_free(&o);
    invoc_spec_free(&s);
}

/* ---- so: many tasks per executor (the shared ring) ---------------------------- */

/* n inputs, input i being fmt with i (each malloc'ed; free with
 * free_inputs). */
static char **
make_inputs(size_t n, const char *fmt)
{
    char **in = calloc(n, sizeof(*in));
    assert_non_null(in);
    for (size_t i = 0; i < n; i++) {
        assert_true(asprintf(&in[i], fmt, i) > 0);
    }
    return in;
}

static void
free_inputs(char **in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(in[i]);
    free(in);
}

/* Writes the n inputs and the spec, runs the worker and reads its output. */
static void
run_many(struct fx *fx, struct invoc_spec *s, char *const *in, size_t n, struct out *o)
{
    size_t *lens = calloc(n, sizeof(*lens));
    assert_non_null(lens);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(in[i]);
    put_inputs(fx, s->job, (const char *const *)in, lens, n);
    free(lens);
    put_spec(fx, s);
    assert_int_equal(worker_run(fx, s->job, s->dispatch, NULL), 0);
    out_read(fx, s->job, s->dispatch, 0, o);
}

/* A crash after thousands of tasks in one executor (several wake-ups of the
 * worker, most results still in the ring): every earlier task is recorded
 * exactly once and in order, the crashing one fails with SIGSEGV and its
 * log, and the tasks after it run in a new executor. */
static void
test_so_crash_many(void **state)
{
    struct fx *fx = *state;
    enum { N = 3000, CRASH = 2500 };
    char **in = make_inputs(N, "task %zu");
    free(in[CRASH]);
    in[CRASH] = strdup("CRASH now");
    assert_non_null(in[CRASH]);
    struct invoc_spec s;
    spec_init(&s, 70, 1, N);
    spec_so(fx, &s, "crash_on_marker");
    struct out o;
    run_many(fx, &s, in, N, &o);
    assert_int_equal(o.nr, N);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(o.r[i].index, i);
        if (i == CRASH)
            continue;
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_result(&o.r[i], in[i]);
        assert_int_equal(o.r[i].log_len, 0);
    }
    assert_int_equal(o.r[CRASH].status, INVOC_SIGNAL);
    assert_int_equal(o.r[CRASH].signal, SIGSEGV);
    assert_true(log_contains(&o.r[CRASH], "about to crash"));
    out_free(&o);
    invoc_spec_free(&s);
    free_inputs(in, N);
}

/* Results larger than the ring go through the pipe, between results that
 * go through the ring: all arrive, in order. */
static void
test_so_large_result(void **state)
{
    struct fx *fx = *state;
    enum { N = 2503, BIG1 = 1000, BIG2 = 1001, BIG3 = 2500 };
    static const size_t big_len[] = {3u << 20, (3u << 20) / 2, 5u << 20};
    static const size_t big_at[] = {BIG1, BIG2, BIG3};
    char **in = make_inputs(N, "small %zu");
    for (size_t k = 0; k < 3; k++) {
        free(in[big_at[k]]);
        in[big_at[k]] = malloc(big_len[k] + 1);
        assert_non_null(in[big_at[k]]);
        memset(in[big_at[k]], 'a' + (int)k, big_len[k]);
        in[big_at[k]][big_len[k]] = '\0';
    }
    struct invoc_spec s;
    spec_init(&s, 71, 1, N);
    spec_so(fx, &s, "echo");
    struct out o;
    run_many(fx, &s, in, N, &o);
    assert_int_equal(o.nr, N);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(o.r[i].index, i);
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_result(&o.r[i], in[i]);
    }
    out_free(&o);
    invoc_spec_free(&s);
    free_inputs(in, N);
}

/* Inputs the executor cannot read in one go: tasks out of order or retried
 * (no run of consecutive indexes), data above the bulk limit (a small
 * memory limit lowers it), and data cut short.  Each task still gets its
 * own input, or its own error. */
static void
test_so_input_fallback(void **state)
{
    struct fx *fx = *state;
    /* out of order, with a retried attempt */
    const char *in[] = {"zero", "one", "two", "three", "four", "five"};
    static const uint32_t order[] = {3, 1, 2, 0, 5, 4};
    struct invoc_spec s;
    spec_init(&s, 72, 1, 6);
    spec_so(fx, &s, "echo");
    for (uint32_t i = 0; i < 6; i++)
        s.tasks[0][i] = (struct invoc_task){order[i], 1 + order[i] % 2};
    struct out o;
    run_simple(fx, &s, in, 6, &o);
    assert_int_equal(o.nr, 6);
    for (uint32_t i = 0; i < 6; i++) {
        assert_int_equal(o.r[i].index, order[i]);
        assert_int_equal(o.r[i].attempt, 1 + order[i] % 2);
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_result(&o.r[i], in[order[i]]);
    }
    out_free(&o);
    invoc_spec_free(&s);

    /* 8 inputs of 700 KiB: 5.6 MiB, above the 4 MiB a 32 MiB limit allows
     * in one read */
    enum { NB = 8, LEN = 700 * 1024 };
    char **big = make_inputs(NB, "%zu");
    for (size_t i = 0; i < NB; i++) {
        free(big[i]);
        big[i] = malloc(LEN + 1);
        assert_non_null(big[i]);
        memset(big[i], 'A' + (int)i, LEN);
        big[i][LEN] = '\0';
    }
    spec_init(&s, 73, 1, NB);
    spec_so(fx, &s, "echo");
    s.memory_mb = 32;
    run_many(fx, &s, big, NB, &o);
    assert_int_equal(o.nr, NB);
    for (uint32_t i = 0; i < NB; i++) {
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_result(&o.r[i], big[i]);
    }
    out_free(&o);
    invoc_spec_free(&s);
    free_inputs(big, NB);

    /* the data ends in the middle of task 1: task 0 runs, the rest fail */
    const char *cut[] = {"a", "bb", "ccc"};
    spec_init(&s, 74, 1, 3);
    spec_so(fx, &s, "echo");
    put_str_inputs(fx, 74, cut, 3);
    put_spec(fx, &s);
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/jobs/74/in", fx->dir);
    assert_int_equal(truncate(path, INVOC_INPUT_HEADER + 4 * 8 + 2), 0);
    assert_int_equal(worker_run(fx, 74, 1, NULL), 0);
    out_read(fx, 74, 1, 0, &o);
    assert_int_equal(o.nr, 3);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "a");
    for (int i = 1; i < 3; i++) {
        assert_int_equal(o.r[i].status, INVOC_ERROR);
        assert_non_null(strstr(o.r[i].reason, "truncated"));
    }
    out_free(&o);
    invoc_spec_free(&s);
}

/* A task that hangs among thousands of quick ones still times out, and
 * only it. */
static void
test_so_timeout_many(void **state)
{
    struct fx *fx = *state;
    enum { N = 4001, HANG = 2000 };
    char path[2048];
    snprintf(path, sizeof(path), "%s/hang.pid", fx->dir);
    char **in = make_inputs(N, "noop %zu");
    free(in[HANG]);
    in[HANG] = strdup(path);
    assert_non_null(in[HANG]);
    struct invoc_spec s;
    spec_init(&s, 75, 1, N);
    spec_so(fx, &s, "hang");
    s.timeout_ms = 300;
    struct out o;
    run_many(fx, &s, in, N, &o);
    assert_int_equal(o.nr, N);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(o.r[i].index, i);
        if (i == HANG)
            continue;
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_result(&o.r[i], in[i]);
    }
    assert_int_equal(o.r[HANG].status, INVOC_TIMEOUT);
    assert_string_equal(o.r[HANG].reason, "timed out after 300 ms");
    assert_true(process_gone(wait_pidfile(path)));
    out_free(&o);
    invoc_spec_free(&s);
    free_inputs(in, N);
}

/* The log is read and emptied only after tasks that wrote to it: a task
 * that logs nothing has an empty log, whatever came before. */
static void
test_so_logs_sparse(void **state)
{
    struct fx *fx = *state;
    const char *in[] = {"LOG a", "b", "c", "LOG d", "LOG e", "f"};
    struct invoc_spec s;
    spec_init(&s, 76, 1, 6);
    spec_so(fx, &s, "log_on_marker");
    struct out o;
    run_simple(fx, &s, in, 6, &o);
    assert_int_equal(o.nr, 6);
    for (uint32_t i = 0; i < 6; i++) {
        assert_int_equal(o.r[i].status, INVOC_OK);
        assert_result(&o.r[i], in[i]);
        if (in[i][0] == 'L') {
            char want[64];
            snprintf(want, sizeof(want), "log of task %u\n", i);
            assert_int_equal(o.r[i].log_len, strlen(want));
            assert_memory_equal(o.r[i].log, want, strlen(want));
        } else {
            assert_int_equal(o.r[i].log_len, 0);
        }
    }
    out_free(&o);
    invoc_spec_free(&s);
}

/* ---- reasons ---------------------------------------------------------------------- */

/* Runs spec s (one invocation) over in and checks each task's status and
 * exact reason; want_reason "" for success. */
static void
check_reasons(struct fx *fx, struct invoc_spec *s, const char *const *in, size_t n,
              const int *want_status, const char *const *want_reason)
{
    struct out o;
    run_simple(fx, s, in, n, &o);
    assert_int_equal(o.nr, n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(o.r[i].index, i);
        assert_int_equal(o.r[i].status, want_status[i]);
        assert_string_equal(o.r[i].reason, want_reason[i]);
    }
    out_free(&o);
}

/* Every way a task can end has its own reason, worded the same for exec
 * and so tasks where the cause is the same.  (Out of memory: test_exec_oom
 * and test_so_oom; a task that cannot be started: the input and library
 * tests.)  The timeouts run alone, so that a slow machine cannot push the
 * quick tasks past them. */
static void
test_reasons(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;

    spec_init(&s, 28, 1, 3);
    spec_exec(&s, "read x; case $x in fail) exit 3;; crash) kill -SEGV $$;; esac; "
                  "echo fine");
    const char *exec_in[] = {"fail\n", "crash\n", "ok\n"};
    const int exec_st[] = {INVOC_FAILED, INVOC_SIGNAL, INVOC_OK};
    const char *exec_why[] = {"exit status 3", "killed by signal 11 (Segmentation fault)",
                              ""};
    check_reasons(fx, &s, exec_in, 3, exec_st, exec_why);
    invoc_spec_free(&s);

    spec_init(&s, 28, 2, 1);
    spec_exec(&s, "exec sleep 30");
    s.timeout_ms = 300;
    const int tmo_st[] = {INVOC_TIMEOUT};
    const char *tmo_why[] = {"timed out after 300 ms"};
    check_reasons(fx, &s, exec_in, 1, tmo_st, tmo_why);
    invoc_spec_free(&s);

    spec_init(&s, 29, 1, 2);
    spec_so(fx, &s, "fail3");
    const char *so_in[] = {"x", "CRASH"};
    const int fail_st[] = {INVOC_FAILED, INVOC_FAILED};
    const char *fail_why[] = {"function returned 3", "function returned 3"};
    check_reasons(fx, &s, so_in, 2, fail_st, fail_why);
    invoc_spec_free(&s);

    spec_init(&s, 29, 2, 2);
    spec_so(fx, &s, "crash_on_marker");
    const int crash_st[] = {INVOC_OK, INVOC_SIGNAL};
    const char *crash_why[] = {"", "killed by signal 11 (Segmentation fault)"};
    check_reasons(fx, &s, so_in, 2, crash_st, crash_why);
    invoc_spec_free(&s);

    spec_init(&s, 29, 3, 1);
    spec_so(fx, &s, "hang");
    s.timeout_ms = 300;
    const char *hang_in[] = {""};
    check_reasons(fx, &s, hang_in, 1, tmo_st, tmo_why);
    invoc_spec_free(&s);
}

/* ---- reduce ----------------------------------------------------------------------- */

/* Writes a map output object with the given results, and a manifest
 * pointing at them the way the daemon would (through result_off). */
static void
put_map_outputs(struct fx *fx, uint64_t job, const char *const *results, size_t n)
{
    struct invoc_out_writer *w;
    assert_int_equal(invoc_out_writer_new(job, 1, 0, &w), 0);
    for (size_t i = 0; i < n; i++) {
        struct invoc_result r = {.index = (uint32_t)i,
                                 .attempt = 1,
                                 .status = INVOC_OK,
                                 .result = results[i],
                                 .result_len = strlen(results[i]),
                                 .log = "noise",
                                 .log_len = 5};
        assert_int_equal(invoc_out_writer_add(w, &r), 0);
    }
    char *buf;
    size_t len;
    assert_int_equal(invoc_out_writer_finish(w, &buf, &len), 0);
    invoc_out_writer_free(w);
    char key[128];
    assert_int_equal(invoc_key_output(key, sizeof(key), job, 1, 0), 0);
    put_file(fx, key, buf, len);

    uint64_t j, d;
    uint32_t inv;
    struct invoc_result *rs;
    size_t nr;
    assert_int_equal(invoc_out_decode(buf, len, &j, &d, &inv, &rs, &nr), 0);
    struct invoc_part *parts = calloc(n, sizeof(*parts));
    assert_non_null(parts);
    for (size_t i = 0; i < n; i++)
        parts[i] = (struct invoc_part){key, rs[i].result_off, rs[i].result_len};
    char *mbuf;
    size_t mlen;
    assert_int_equal(invoc_manifest_encode(parts, n, &mbuf, &mlen), 0);
    char mkey[128];
    assert_int_equal(invoc_key_reduce_manifest(mkey, sizeof(mkey), job), 0);
    put_file(fx, mkey, mbuf, mlen);
    free(mbuf);
    free(parts); /* the keys were borrowed */
    invoc_results_free(rs, nr);
    free(buf);
}

static void
reduce_run(struct fx *fx, struct invoc_spec *s, struct out *o)
{
    s->reduce = true;
    put_spec(fx, s);
    assert_int_equal(worker_run(fx, s->job, s->dispatch, NULL), 0);
    out_read(fx, s->job, s->dispatch, 0, o);
    assert_int_equal(o->nr, 1);
}

static void
test_reduce_exec(void **state)
{
    struct fx *fx = *state;
    const char *results[] = {"a\nb\n", "", "c\n", "d\ne\nf\n"};
    put_map_outputs(fx, 30, results, 4);
    struct invoc_spec s;
    spec_init(&s, 30, 2, 1);
    spec_exec(&s, "wc -l | tr -d ' '");
    struct out o;
    reduce_run(fx, &s, &o);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "6\n");
    out_free(&o);
    invoc_spec_free(&s);

    /* order is kept */
    spec_init(&s, 30, 3, 1);
    spec_exec(&s, "cat");
    reduce_run(fx, &s, &o);
    assert_result(&o.r[0], "a\nb\nc\nd\ne\nf\n");
    out_free(&o);
    invoc_spec_free(&s);
}

static void
test_reduce_so(void **state)
{
    struct fx *fx = *state;
    const char *results[] = {"10\n", "20 30\n", "-5\n"};
    put_map_outputs(fx, 31, results, 3);
    struct invoc_spec s;
    spec_init(&s, 31, 2, 1);
    spec_so(fx, &s, "sum_numbers");
    struct out o;
    reduce_run(fx, &s, &o);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "55\n");
    out_free(&o);
    invoc_spec_free(&s);

    spec_init(&s, 31, 3, 1);
    spec_so(fx, &s, "concat");
    reduce_run(fx, &s, &o);
    assert_result(&o.r[0], "10\n20 30\n-5\n");
    out_free(&o);
    invoc_spec_free(&s);

    /* a missing manifest fails the reducer task, not the worker */
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/jobs/31/reduce.in", fx->dir);
    assert_int_equal(unlink(path), 0);
    spec_init(&s, 31, 4, 1);
    spec_so(fx, &s, "concat");
    reduce_run(fx, &s, &o);
    assert_int_equal(o.r[0].status, INVOC_ERROR);
    assert_non_null(strstr(o.r[0].reason, "reduce.in"));
    out_free(&o);
    invoc_spec_free(&s);
}

/* ---- environment and invocations -------------------------------------------------- */

static void
test_job_index(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    memset(&s, 0, sizeof(s));
    s.job = 40;
    s.dispatch = 2;
    spec_exec(&s, "tr a-z A-Z");
    s.ninvocations = 2;
    s.ntasks = calloc(2, sizeof(uint32_t));
    s.tasks = calloc(2, sizeof(struct invoc_task *));
    s.ntasks[0] = 2;
    s.ntasks[1] = 2;
    s.tasks[0] = calloc(2, sizeof(struct invoc_task));
    s.tasks[1] = calloc(2, sizeof(struct invoc_task));
    s.tasks[0][0] = (struct invoc_task){0, 1};
    s.tasks[0][1] = (struct invoc_task){1, 1};
    s.tasks[1][0] = (struct invoc_task){2, 1};
    s.tasks[1][1] = (struct invoc_task){3, 2};
    const char *in[] = {"a", "b", "c", "d"};
    put_str_inputs(fx, 40, in, 4);
    put_spec(fx, &s);
    assert_int_equal(worker_run(fx, 40, 2, "1"), 0);
    struct out o;
    out_read(fx, 40, 2, 1, &o);
    assert_int_equal(o.nr, 2);
    assert_int_equal(o.r[0].index, 2);
    assert_result(&o.r[0], "C");
    assert_int_equal(o.r[1].index, 3);
    assert_int_equal(o.r[1].attempt, 2);
    assert_result(&o.r[1], "D");
    out_free(&o);
    /* invocation 0 was not run by that worker */
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/jobs/40/out/2.0", fx->dir);
    assert_int_equal(access(path, F_OK), -1);
    invoc_spec_free(&s);
}

static void
test_bad_env(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 50, 1, 1);
    spec_exec(&s, "cat");
    const char *in[] = {"x"};
    put_str_inputs(fx, 50, in, 1);
    put_spec(fx, &s);
    invoc_spec_free(&s);
    const char *key = "jobs/50/spec/1";

    assert_int_equal(worker_wait(worker_start(NULL, key, NULL)), 2);
    assert_int_equal(worker_wait(worker_start(fx->url, NULL, NULL)), 2);
    assert_int_equal(worker_wait(worker_start("s4://nowhere", key, NULL)), 2);
    assert_int_equal(worker_wait(worker_start("file:relative/dir", key, NULL)), 2);
    assert_int_equal(worker_wait(worker_start("file:/nonexistent/burst", key, NULL)), 2);
    assert_int_equal(worker_wait(worker_start(fx->url, "../etc/passwd", NULL)), 2);
    assert_int_equal(worker_wait(worker_start(fx->url, key, "abc")), 2);
    assert_int_equal(worker_wait(worker_start(fx->url, key, "-1")), 2);
    assert_int_equal(worker_wait(worker_start(fx->url, key, "1")), 2); /* out of range */
    assert_int_equal(worker_wait(worker_start(fx->url, "jobs/50/spec/2", NULL)), 3);
    put_file(fx, "jobs/50/spec/3", "\x81\xa1v\x01", 4);
    assert_int_equal(worker_wait(worker_start(fx->url, "jobs/50/spec/3", NULL)), 3);
    put_file(fx, "jobs/50/spec/4", "garbage!", 8);
    assert_int_equal(worker_wait(worker_start(fx->url, "jobs/50/spec/4", NULL)), 3);
    /* and with everything right, it works */
    assert_int_equal(worker_wait(worker_start(fx->url, key, "0")), 0);
    struct out o;
    out_read(fx, 50, 1, 0, &o);
    assert_result(&o.r[0], "x");
    out_free(&o);
}

static void
test_output_unwritable(void **state)
{
    struct fx *fx = *state;
    struct invoc_spec s;
    spec_init(&s, 51, 1, 1);
    spec_exec(&s, "cat");
    const char *in[] = {"x"};
    put_str_inputs(fx, 51, in, 1);
    put_spec(fx, &s);
    invoc_spec_free(&s);
    /* a file where the out directory should be */
    put_file(fx, "jobs/51/out", "", 0);
    assert_int_equal(worker_run(fx, 51, 1, NULL), 4);
}

/* SIGTERM while task 1 of 3 runs: the output has task 0 only, and the
 * task's process is gone. */
static void
sigterm_case(struct fx *fx, struct invoc_spec *s, const char *pidfile, uint64_t job)
{
    put_spec(fx, s);
    char key[128];
    assert_int_equal(invoc_key_spec(key, sizeof(key), job, 1), 0);
    pid_t w = worker_start(fx->url, key, NULL);
    pid_t task = wait_pidfile(pidfile);
    assert_int_equal(kill(w, SIGTERM), 0);
    assert_int_equal(worker_wait(w), 0);
    assert_true(process_gone(task));
    struct out o;
    out_read(fx, job, 1, 0, &o);
    assert_int_equal(o.nr, 1);
    assert_int_equal(o.r[0].index, 0);
    assert_int_equal(o.r[0].status, INVOC_OK);
    out_free(&o);
}

static void
test_sigterm_exec(void **state)
{
    struct fx *fx = *state;
    char cmd[8192], pidfile[2048];
    snprintf(pidfile, sizeof(pidfile), "%s/t.pid", fx->dir);
    snprintf(cmd, sizeof(cmd),
             "if [ \"$BURST_TASK_INDEX\" = 1 ]; then echo $$ > %s.tmp; mv %s.tmp %s; "
             "exec sleep 30; fi; cat",
             pidfile, pidfile, pidfile);
    struct invoc_spec s;
    spec_init(&s, 60, 1, 3);
    spec_exec(&s, cmd);
    const char *in[] = {"a", "b", "c"};
    put_str_inputs(fx, 60, in, 3);
    sigterm_case(fx, &s, pidfile, 60);
    invoc_spec_free(&s);
}

static void
test_sigterm_so(void **state)
{
    struct fx *fx = *state;
    char pidfile[2048];
    snprintf(pidfile, sizeof(pidfile), "%s/h.pid", fx->dir);
    struct invoc_spec s;
    spec_init(&s, 61, 1, 3);
    spec_so(fx, &s, "hang");
    const char *in[] = {"noop", pidfile, "noop"};
    put_str_inputs(fx, 61, in, 3);
    sigterm_case(fx, &s, pidfile, 61);
    invoc_spec_free(&s);
}

/* ---- so executors kept warm (--serve) ------------------------------------------- */

/* A `burst-worker --serve` and the two ends of burstd's conversation with it. */
struct served {
    pid_t pid;
    int req; /* its stdin */
    int rep; /* its stdout */
};

static void
serve_start(struct fx *fx, struct served *w)
{
    const char *worker = getenv("BURST_WORKER");
    assert_non_null(worker);
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(in[0], STDIN_FILENO) < 0 || dup2(out[1], STDOUT_FILENO) < 0)
            _exit(98);
        unsetenv("BURST_SPEC");
        unsetenv("JOB_INDEX");
        setenv("BURST_STORAGE", fx->url, 1);
        if (getenv("BURST_TEST_VERBOSE") == NULL) {
            int fd = open("/dev/null", O_WRONLY);
            if (fd >= 0)
                dup2(fd, STDERR_FILENO);
        }
        execl(worker, "burst-worker", "--serve", (char *)NULL);
        _exit(99);
    }
    close(in[0]);
    close(out[1]);
    *w = (struct served){.pid = pid, .req = in[1], .rep = out[0]};
}

/* Hands w invocation inv of the spec of (job, dispatch). */
static void
serve_send(struct served *w, uint64_t job, uint64_t dispatch, uint32_t inv)
{
    char key[128], line[160];
    assert_int_equal(invoc_key_spec(key, sizeof(key), job, dispatch), 0);
    int n = snprintf(line, sizeof(line), "%s %" PRIu32 "\n", key, inv);
    assert_int_equal(write(w->req, line, (size_t)n), n);
}

/* Waits for w's reply to what it was handed and returns the status. */
static int
serve_reply(struct served *w)
{
    char reply[32];
    size_t got = 0;
    int64_t end = now_ms() + WORKER_SAFETY_MS;
    while (got == 0 || reply[got - 1] != '\n') {
        struct pollfd p = {.fd = w->rep, .events = POLLIN};
        int64_t left = end - now_ms();
        if (left <= 0)
            fail_msg("burst-worker --serve did not reply");
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        assert_true(got < sizeof(reply) - 1);
        ssize_t r = read(w->rep, reply + got, sizeof(reply) - 1 - got);
        if (r <= 0)
            fail_msg("burst-worker --serve ended instead of replying");
        got += (size_t)r;
    }
    reply[got] = '\0';
    return atoi(reply);
}

/* Closes w's stdin, as burstd does to an idle worker, and returns its exit
 * status. */
static int
serve_stop(struct served *w)
{
    close(w->req);
    close(w->rep);
    return worker_wait(w->pid);
}

/* Runs s, a one-invocation job of inputs in, in w and reads its output. */
static void
serve_job(struct fx *fx, struct served *w, struct invoc_spec *s, const char *const *in,
          size_t n, struct out *o)
{
    put_str_inputs(fx, s->job, in, n);
    put_spec(fx, s);
    serve_send(w, s->job, s->dispatch, 0);
    assert_int_equal(serve_reply(w), 0);
    out_read(fx, s->job, s->dispatch, 0, o);
    assert_int_equal(o->nr, n);
}

/* A result of count_calls: the how-manieth call in which process. */
struct calls {
    unsigned long n;
    long pid;
};

static struct calls
calls_of(const struct invoc_result *r)
{
    struct calls c = {0, 0};
    char buf[64];
    assert_int_equal(r->status, INVOC_OK);
    assert_true(r->result_len < sizeof(buf));
    memcpy(buf, r->result, r->result_len);
    buf[r->result_len] = '\0';
    assert_int_equal(sscanf(buf, "%lu %ld", &c.n, &c.pid), 2);
    return c;
}

/* Runs a one-task job of symbol (count_calls or count_calls_too) in w and
 * returns what it counted. */
static struct calls
serve_count(struct fx *fx, struct served *w, uint64_t job, uint64_t dispatch,
            const char *symbol, uint32_t memory_mb)
{
    struct invoc_spec s;
    spec_init(&s, job, dispatch, 1);
    spec_so(fx, &s, symbol);
    s.memory_mb = memory_mb;
    const char *in[] = {"x"};
    struct out o;
    serve_job(fx, w, &s, in, 1, &o);
    struct calls c = calls_of(&o.r[0]);
    out_free(&o);
    invoc_spec_free(&s);
    return c;
}

/*
 * Hands w invocation 0 of s with its spec and its inputs in the request
 * (out_max: how much output may come back the same way), as burstd does
 * for a small job.  Returns the status; *out gets the output that came
 * back with the reply (malloc'ed, NULL if none).
 */
static int
serve_handover(struct served *w, const struct invoc_spec *s, const char *const *in,
               size_t n, uint32_t out_max, char **out, size_t *out_len)
{
    size_t *lens = calloc(n ? n : 1, sizeof(*lens));
    assert_non_null(lens);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(in[i]);
    size_t in_len;
    unsigned char *obj = input_object(in, lens, n, &in_len);
    free(lens);
    char *spec;
    size_t spec_len;
    assert_int_equal(invoc_spec_encode(s, &spec, &spec_len), 0);
    char key[128], in_key[128], line[512];
    assert_int_equal(invoc_key_spec(key, sizeof(key), s->job, s->dispatch), 0);
    assert_int_equal(invoc_key_input(in_key, sizeof(in_key), s->job), 0);
    int len = snprintf(line, sizeof(line), "%s 0 out=%" PRIu32 " spec=%zu in=%zu:%s\n", key,
                       out_max, spec_len, in_len, in_key);
    assert_int_equal(write(w->req, line, (size_t)len), len);
    assert_int_equal(write(w->req, spec, spec_len), (ssize_t)spec_len);
    assert_int_equal(write(w->req, obj, in_len), (ssize_t)in_len);
    assert_true(spec_len + in_len <= 1024 * 1024);
    free(spec);
    free(obj);

    /* The reply line, then as many bytes as it says. */
    char reply[64];
    size_t got = 0;
    while (got == 0 || reply[got - 1] != '\n') {
        assert_true(got < sizeof(reply) - 1);
        struct pollfd p = {.fd = w->rep, .events = POLLIN};
        assert_int_equal(poll(&p, 1, WORKER_SAFETY_MS), 1);
        ssize_t r = read(w->rep, reply + got, 1);
        assert_int_equal(r, 1);
        got++;
    }
    reply[got] = '\0';
    int status = -1;
    unsigned long long olen = 0;
    *out = NULL;
    *out_len = 0;
    if (sscanf(reply, "%d %llu", &status, &olen) == 2) {
        assert_int_equal(status, 0);
        assert_true(olen <= out_max);
        *out = malloc(olen ? olen : 1);
        assert_non_null(*out);
        for (size_t k = 0; k < olen;) {
            ssize_t r = read(w->rep, *out + k, olen - k);
            assert_true(r > 0);
            k += (size_t)r;
        }
        *out_len = olen;
    } else {
        status = atoi(reply);
    }
    return status;
}

/* Whether storage holds anything of job (its directory). */
static bool
job_in_storage(struct fx *fx, uint64_t job)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/jobs/%" PRIu64, fx->dir, job);
    return access(path, F_OK) == 0;
}

/*
 * A small invocation touches no storage: its spec and inputs come with the
 * request and its output goes back with the reply, for exec and so tasks,
 * a kept executor included (it gets them through its command pipe).  An
 * output over the size the request allows goes to storage as before.  A
 * request that cannot be parsed ends the worker: the length of what
 * follows it is unknown.
 */
static void
test_serve_handover(void **state)
{
    struct fx *fx = *state;
    struct served w;
    serve_start(fx, &w);
    const char *in[] = {"alpha", "", "gamma"};
    const char *up[] = {"ALPHA", "", "GAMMA"};
    char *out;
    size_t out_len;

    struct invoc_spec s;
    spec_init(&s, 90, 1, 3);
    spec_exec(&s, "tr a-z A-Z");
    assert_int_equal(serve_handover(&w, &s, in, 3, 65536, &out, &out_len), 0);
    assert_non_null(out);
    struct invoc_result *r;
    size_t nr;
    uint64_t job, dispatch;
    uint32_t n;
    assert_int_equal(invoc_out_decode(out, out_len, &job, &dispatch, &n, &r, &nr), 0);
    assert_true(job == 90 && dispatch == 1 && n == 0);
    assert_int_equal(nr, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(r[i].status, INVOC_OK);
        assert_int_equal(r[i].result_len, strlen(up[i]));
        assert_memory_equal(r[i].result, up[i], r[i].result_len);
    }
    invoc_results_free(r, nr);
    free(out);
    invoc_spec_free(&s);
    assert_false(job_in_storage(fx, 90));

    /* so, twice: the second goes to the executor kept from the first. */
    unsigned long first = 0;
    for (uint64_t d = 1; d <= 2; d++) {
        spec_init(&s, 91, d, 1);
        spec_so(fx, &s, "count_calls");
        const char *x[] = {"x"};
        assert_int_equal(serve_handover(&w, &s, x, 1, 65536, &out, &out_len), 0);
        assert_non_null(out);
        assert_int_equal(invoc_out_decode(out, out_len, &job, &dispatch, &n, &r, &nr), 0);
        assert_int_equal(nr, 1);
        struct calls c = calls_of(&r[0]);
        if (d == 1)
            first = c.n;
        else
            assert_int_equal(c.n, first + 1); /* the same executor */
        invoc_results_free(r, nr);
        free(out);
        invoc_spec_free(&s);
    }
    /* A spec larger than a pipe holds (20,000 tasks): the kept executor
     * still gets it, and counts on. */
    enum { NBIG = 20000 };
    const char **many = calloc(NBIG, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < NBIG; i++)
        many[i] = "x";
    spec_init(&s, 91, 3, NBIG);
    spec_so(fx, &s, "count_calls");
    char *big_spec;
    size_t big_len;
    assert_int_equal(invoc_spec_encode(&s, &big_spec, &big_len), 0);
    assert_true(big_len > 65536);
    free(big_spec);
    assert_int_equal(serve_handover(&w, &s, many, NBIG, 1024 * 1024, &out, &out_len), 0);
    assert_non_null(out);
    assert_int_equal(invoc_out_decode(out, out_len, &job, &dispatch, &n, &r, &nr), 0);
    assert_int_equal(nr, NBIG);
    assert_int_equal(calls_of(&r[NBIG - 1]).n, first + 1 + NBIG);
    invoc_results_free(r, nr);
    free(out);
    invoc_spec_free(&s);
    free(many);
    spec_init(&s, 92, 1, 3);
    spec_so(fx, &s, "upper");
    assert_int_equal(serve_handover(&w, &s, in, 3, 65536, &out, &out_len), 0);
    assert_int_equal(invoc_out_decode(out, out_len, &job, &dispatch, &n, &r, &nr), 0);
    assert_int_equal(nr, 3);
    for (size_t i = 0; i < 3; i++)
        assert_memory_equal(r[i].result, up[i], r[i].result_len);
    invoc_results_free(r, nr);
    free(out);
    invoc_spec_free(&s);
    assert_false(job_in_storage(fx, 91));
    assert_false(job_in_storage(fx, 92));

    /* Over the limit: the output is in storage, the reply only a status. */
    spec_init(&s, 93, 1, 3);
    spec_exec(&s, "tr a-z A-Z");
    assert_int_equal(serve_handover(&w, &s, in, 3, 10, &out, &out_len), 0);
    assert_null(out);
    struct out o;
    out_read(fx, 93, 1, 0, &o);
    assert_int_equal(o.nr, 3);
    assert_memory_equal(o.r[0].result, "ALPHA", 5);
    out_free(&o);
    invoc_spec_free(&s);

    /* Nonsense ends it, after a reply. */
    const char bad[] = "jobs/94/spec/1 0 spec=12 what=1\n";
    assert_int_equal(write(w.req, bad, sizeof(bad) - 1), (ssize_t)(sizeof(bad) - 1));
    assert_int_not_equal(serve_reply(&w), 0);
    assert_int_not_equal(serve_stop(&w), 0);
}

/*
 * Invocations of one library in a warm worker share one executor: its
 * static state carries on, whatever the symbol, the job, or the exec
 * invocations in between.  It ends when the worker's stdin does.
 */
static void
test_serve_so_reuse(void **state)
{
    struct fx *fx = *state;
    struct served w;
    serve_start(fx, &w);

    struct invoc_spec s;
    spec_init(&s, 70, 1, 2);
    spec_so(fx, &s, "count_calls");
    const char *in[] = {"a", "b"};
    struct out o;
    serve_job(fx, &w, &s, in, 2, &o);
    struct calls c0 = calls_of(&o.r[0]), c1 = calls_of(&o.r[1]);
    assert_int_equal(c0.n, 1);
    assert_int_equal(c1.n, 2);
    assert_int_equal(c1.pid, c0.pid);
    assert_int_not_equal(c0.pid, w.pid);
    out_free(&o);
    invoc_spec_free(&s);

    struct calls c = serve_count(fx, &w, 70, 2, "count_calls_too", 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(c.pid, c0.pid);
    c = serve_count(fx, &w, 71, 1, "count_calls", 0);
    assert_int_equal(c.n, 4);
    assert_int_equal(c.pid, c0.pid);

    /* An exec invocation in between leaves it be. */
    spec_init(&s, 72, 1, 1);
    spec_exec(&s, "cat");
    const char *ein[] = {"exec"};
    serve_job(fx, &w, &s, ein, 1, &o);
    assert_int_equal(o.r[0].status, INVOC_OK);
    assert_result(&o.r[0], "exec");
    out_free(&o);
    invoc_spec_free(&s);
    c = serve_count(fx, &w, 71, 2, "count_calls", 0);
    assert_int_equal(c.n, 5);
    assert_int_equal(c.pid, c0.pid);

    assert_int_equal(serve_stop(&w), 0);
    assert_true(process_gone((pid_t)c0.pid));
}

/* Stores the test library a second time under another content-shaped key
 * and points s at symbol in it: to the worker, another library. */
static void
spec_so_other(struct fx *fx, struct invoc_spec *s, const char *symbol)
{
    spec_so(fx, s, symbol);
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/%s", fx->dir, s->fn_key);
    size_t len;
    char *data = slurp(path, &len);
    assert_non_null(data);
    char key[256];
    assert_int_equal(invoc_key_fn(key, sizeof(key),
                                  "0123456789abcdef0123456789abcdef"
                                  "0123456789abcdef0123456789abcdef"),
                     0);
    put_file(fx, key, data, len);
    free(data);
    free(s->fn_key);
    s->fn_key = strdup(key);
    assert_non_null(s->fn_key);
}

/*
 * What a warm worker does not reuse: an executor that crashed (the one that
 * took over after the crash goes on), one of another library or memory
 * limit, one that ran out of memory and lived.
 */
static void
test_serve_so_fresh(void **state)
{
    struct fx *fx = *state;
    struct served w;
    mem_mode_set("rlimit"); /* a task that runs out survives it (gobble) */
    serve_start(fx, &w);
    mem_mode_set(NULL);
    struct calls c0 = serve_count(fx, &w, 80, 1, "count_calls", 0);
    assert_int_equal(c0.n, 1);

    /* The invocation's last task crashes the executor: the next one starts
     * afresh. */
    struct invoc_spec s;
    spec_init(&s, 81, 1, 2);
    spec_so(fx, &s, "count_calls");
    const char *crash_last[] = {"a", "CRASH"};
    struct out o;
    serve_job(fx, &w, &s, crash_last, 2, &o);
    struct calls c = calls_of(&o.r[0]);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.pid, c0.pid);
    assert_int_equal(o.r[1].status, INVOC_SIGNAL);
    assert_int_equal(o.r[1].signal, SIGSEGV);
    out_free(&o);
    invoc_spec_free(&s);
    struct calls c1 = serve_count(fx, &w, 81, 2, "count_calls", 0);
    assert_int_equal(c1.n, 1);
    assert_int_not_equal(c1.pid, c0.pid);
    assert_true(process_gone((pid_t)c0.pid));

    /* A crash in the middle: a fresh executor takes the rest, and is the
     * one kept. */
    spec_init(&s, 82, 1, 3);
    spec_so(fx, &s, "count_calls");
    const char *crash_mid[] = {"a", "CRASH", "b"};
    serve_job(fx, &w, &s, crash_mid, 3, &o);
    c = calls_of(&o.r[0]);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.pid, c1.pid);
    assert_int_equal(o.r[1].status, INVOC_SIGNAL);
    struct calls c2 = calls_of(&o.r[2]);
    assert_int_equal(c2.n, 1);
    assert_int_not_equal(c2.pid, c1.pid);
    out_free(&o);
    invoc_spec_free(&s);
    c = serve_count(fx, &w, 82, 2, "count_calls", 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.pid, c2.pid);

    /* Another memory limit, then the same one again, then none. */
    struct calls c3 = serve_count(fx, &w, 83, 1, "count_calls", 64);
    assert_int_equal(c3.n, 1);
    assert_int_not_equal(c3.pid, c2.pid);
    c = serve_count(fx, &w, 83, 2, "count_calls", 64);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.pid, c3.pid);
    struct calls c4 = serve_count(fx, &w, 83, 3, "count_calls", 0);
    assert_int_equal(c4.n, 1);
    assert_int_not_equal(c4.pid, c3.pid);

    /* Another library (the same bytes, but the worker cannot know). */
    spec_init(&s, 84, 1, 1);
    spec_so_other(fx, &s, "count_calls");
    const char *one[] = {"x"};
    serve_job(fx, &w, &s, one, 1, &o);
    struct calls c5 = calls_of(&o.r[0]);
    assert_int_equal(c5.n, 1);
    assert_int_not_equal(c5.pid, c4.pid);
    out_free(&o);
    invoc_spec_free(&s);

    /* A task that ran out of memory and returned: its executor is not
     * trusted with the next invocation. */
    struct calls c6 = serve_count(fx, &w, 85, 1, "count_calls", 64);
    assert_int_equal(c6.n, 1);
    spec_init(&s, 85, 2, 1);
    spec_so(fx, &s, "gobble");
    s.memory_mb = 64;
    const char *gob[] = {"1024"};
    serve_job(fx, &w, &s, gob, 1, &o);
    assert_int_equal(o.r[0].status, INVOC_OOM);
    out_free(&o);
    invoc_spec_free(&s);
    c = serve_count(fx, &w, 85, 3, "count_calls", 64);
    assert_int_equal(c.n, 1);
    assert_int_not_equal(c.pid, c6.pid);

    assert_int_equal(serve_stop(&w), 0);
    assert_true(process_gone((pid_t)c.pid));
}

/* An idle executor dies with its worker, even one killed outright. */
static void
test_serve_so_worker_killed(void **state)
{
    struct fx *fx = *state;
    struct served w;
    serve_start(fx, &w);
    struct calls c = serve_count(fx, &w, 90, 1, "count_calls", 0);
    assert_int_equal(kill(w.pid, SIGKILL), 0);
    int st;
    assert_int_equal(waitpid(w.pid, &st, 0), w.pid);
    close(w.req);
    close(w.rep);
    assert_true(process_gone((pid_t)c.pid));
}

/* SIGTERM (a cancel) stops the task that a kept executor runs, as it stops
 * a fresh one's. */
static void
test_serve_so_sigterm(void **state)
{
    struct fx *fx = *state;
    struct served w;
    serve_start(fx, &w);
    struct calls c = serve_count(fx, &w, 91, 1, "count_calls", 0);

    char pidfile[2048];
    snprintf(pidfile, sizeof(pidfile), "%s/h.pid", fx->dir);
    struct invoc_spec s;
    spec_init(&s, 92, 1, 3);
    spec_so(fx, &s, "hang");
    const char *in[] = {"noop", pidfile, "noop"};
    put_str_inputs(fx, 92, in, 3);
    put_spec(fx, &s);
    serve_send(&w, 92, 1, 0);
    pid_t task = wait_pidfile(pidfile);
    assert_int_equal(kill(w.pid, SIGTERM), 0);
    assert_int_equal(serve_reply(&w), 0);
    assert_int_equal(serve_stop(&w), 0);
    assert_true(process_gone(task));
    assert_int_equal(task, (pid_t)c.pid); /* the kept executor ran it */
    struct out o;
    out_read(fx, 92, 1, 0, &o);
    assert_int_equal(o.nr, 1);
    assert_int_equal(o.r[0].status, INVOC_OK);
    out_free(&o);
    invoc_spec_free(&s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_write2_interrupted),
        cmocka_unit_test(test_spec_roundtrip),
        cmocka_unit_test(test_output_roundtrip),
        cmocka_unit_test(test_manifest_roundtrip),
        cmocka_unit_test(test_decode_garbage),
        cmocka_unit_test(test_decode_semantics),
        cmocka_unit_test_setup_teardown(test_exec_upper, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_env, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_exit_status, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_signal, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_stragglers, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_large, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_stderr_capped, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_memory_limit, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_oom, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_oom, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_exec_input_errors, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_echo_upper, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_crash, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_fail3, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_logs, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_timeout, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_missing_symbol, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_missing_library, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_crash_many, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_large_result, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_input_fallback, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_timeout_many, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_so_logs_sparse, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reasons, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reduce_exec, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_reduce_so, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_job_index, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_bad_env, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_output_unwritable, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_exec, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_so, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_serve_so_reuse, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_serve_handover, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_serve_so_fresh, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_serve_so_worker_killed, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_serve_so_sigterm, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
