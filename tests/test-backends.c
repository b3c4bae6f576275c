/*
 * tests/test-backends.c - the local storage and compute backends
 * (daemon/storage_local.c, daemon/compute_local.c).
 *
 * Every test has its own libuv loop and temporary directory.  The compute
 * tests run a small shell script in place of burst-worker that records its
 * environment in files of that directory and exits, sleeps or ignores
 * SIGTERM as a "mode" file says.  Timers here are only safety nets: no
 * assertion depends on how fast the machine is.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "compute.h"
#include "storage.h"

/* Generous: a loaded CI machine under ASan is slow, never this slow. */
#define SAFETY_MS 60000

struct tctx {
    uv_loop_t loop;
    char dir[256]; /* short, so that every path built from it fits PATH_MAX */
};

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 ? -1 : 0;
}

static int
setup(void **state)
{
    struct tctx *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -1;
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 200)
        tmp = "/tmp";
    snprintf(t->dir, sizeof(t->dir), "%s/burst-test-backends-XXXXXX", tmp);
    if (mkdtemp(t->dir) == NULL || uv_loop_init(&t->loop) != 0) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

/* After a failed test: stop whatever it left running, so that teardown
 * does not wait for a worker that sleeps. */
static void
walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_PROCESS)
        kill(-((uv_process_t *)h)->pid, SIGKILL);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int
teardown(void **state)
{
    struct tctx *t = *state;
    /* A test that closed everything leaves nothing to run; uv_loop_close
     * then proves that no handle was leaked. */
    uv_run(&t->loop, UV_RUN_NOWAIT);
    int rc = uv_loop_close(&t->loop);
    if (rc != 0) {
        uv_walk(&t->loop, walk_close, NULL);
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
    }
    nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(t);
    assert_int_equal(rc, 0);
    return 0;
}

/* ---- running the loop until something happened -------------------------- */

typedef bool (*pred_fn)(void *arg);

static void
safety_fired(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

static void
tick(uv_timer_t *t)
{
    (void)t; /* only wakes the loop so that file-based predicates are rechecked */
}

/* Runs the loop until pred(arg) holds; fails the test if the safety net
 * runs out first. */
static void
run_until(uv_loop_t *loop, pred_fn pred, void *arg)
{
    bool expired = false;
    uv_timer_t safety, poll;
    uv_timer_init(loop, &safety);
    uv_timer_init(loop, &poll);
    safety.data = &expired;
    uv_timer_start(&safety, safety_fired, SAFETY_MS, 0);
    uv_timer_start(&poll, tick, 5, 5);
    while (!pred(arg) && !expired)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&safety, NULL);
    uv_close((uv_handle_t *)&poll, NULL);
    uv_run(loop, UV_RUN_NOWAIT); /* runs the two close callbacks */
    assert_false(expired);
}

static bool
int_reached(void *arg)
{
    int *p = arg;
    return p[0] >= p[1];
}

/* ---- storage helpers ------------------------------------------------------ */

struct res {
    int calls;
    int status;
};

static void
res_cb(void *arg, int status)
{
    struct res *r = arg;
    r->calls++;
    r->status = status;
}

static bool
res_done(void *arg)
{
    return ((struct res *)arg)->calls > 0;
}

static struct storage *
storage_open(struct tctx *t, const char *sub)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, sub);
    struct storage *s = NULL;
    assert_int_equal(storage_local_new(&t->loop, path, &s), 0);
    assert_non_null(s);
    return s;
}

static int
put_str(struct tctx *t, struct storage *s, const char *key, const char *str, bool durable)
{
    struct res r = {0};
    uv_buf_t b = uv_buf_init((char *)str, (unsigned)strlen(str));
    int rc = storage_put(s, key, &b, 1, durable, res_cb, &r);
    if (rc < 0)
        return rc;
    run_until(&t->loop, res_done, &r);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(r.calls, 1);
    return r.status;
}

static int
exists_sync(struct tctx *t, struct storage *s, const char *key)
{
    struct res r = {0};
    int rc = s->ops->exists(s, key, res_cb, &r);
    if (rc < 0)
        return rc;
    run_until(&t->loop, res_done, &r);
    assert_int_equal(r.calls, 1);
    return r.status;
}

static int
remove_sync(struct tctx *t, struct storage *s, const char *prefix)
{
    struct res r = {0};
    int rc = s->ops->remove_prefix(s, prefix, res_cb, &r);
    if (rc < 0)
        return rc;
    run_until(&t->loop, res_done, &r);
    assert_int_equal(r.calls, 1);
    return r.status;
}

/* Reads the whole object key; returns its status, *out malloc'ed on 0. */
static int
get_all(struct tctx *t, struct storage *s, const char *key, char **out, size_t *len)
{
    struct storage_range r = {.key = key, .off = 0, .len = UINT64_MAX};
    struct res res = {0};
    assert_int_equal(storage_getv(s, &r, 1, res_cb, &res), 0);
    run_until(&t->loop, res_done, &res);
    assert_int_equal(res.status, 0);
    *out = r.data;
    *len = r.got;
    return r.status;
}

/* Names in directory path (relative to the test dir) starting with prefix. */
static int
count_entries(struct tctx *t, const char *sub, const char *prefix)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, sub);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
            strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            n++;
    }
    closedir(d);
    return n;
}

/* ---- storage tests -------------------------------------------------------- */

static void
test_storage_roundtrip(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "store");
    assert_string_equal(s->ops->name, "local");

    uv_buf_t bufs[3] = {
        uv_buf_init("hello ", 6),
        uv_buf_init("", 0),
        uv_buf_init("wide world", 10),
    };
    struct res r = {0};
    assert_int_equal(storage_put(s, "jobs/1/in.data", bufs, 3, true, res_cb, &r), 0);
    assert_int_equal(r.calls, 0); /* never from inside put */
    run_until(&t->loop, res_done, &r);
    assert_int_equal(r.status, 0);

    struct storage_range rg[] = {
        {.key = "jobs/1/in.data", .off = 0, .len = UINT64_MAX},
        {.key = "jobs/1/in.data", .off = 6, .len = 4},
        {.key = "jobs/1/in.data", .off = 11, .len = 100},
        {.key = "jobs/1/missing", .off = 0, .len = 10},
        {.key = "jobs/1/in.data", .off = 100, .len = 5},
        {.key = "jobs/1/in.data", .off = 3, .len = 0},
        {.key = "jobs/1/missing", .off = 0, .len = UINT64_MAX},
        {.key = "jobs/1/in.data/below", .off = 0, .len = 1},
        {.key = "jobs/1", .off = 0, .len = 1}, /* a directory is no object */
    };
    size_t n = sizeof(rg) / sizeof(rg[0]);
    for (size_t i = 0; i < n; i++) {
        rg[i].data = (char *)"stale";
        rg[i].got = 99;
        rg[i].status = 1;
    }
    struct res gr = {0};
    assert_int_equal(storage_getv(s, rg, n, res_cb, &gr), 0);
    run_until(&t->loop, res_done, &gr);
    assert_int_equal(gr.calls, 1);
    assert_int_equal(gr.status, 0);

    assert_int_equal(rg[0].status, 0);
    assert_int_equal(rg[0].got, 16);
    assert_memory_equal(rg[0].data, "hello wide world", 16);
    assert_int_equal(rg[1].status, 0);
    assert_int_equal(rg[1].got, 4);
    assert_memory_equal(rg[1].data, "wide", 4);
    assert_int_equal(rg[2].status, 0);
    assert_int_equal(rg[2].got, 5);
    assert_memory_equal(rg[2].data, "world", 5);
    assert_int_equal(rg[3].status, -ENOENT);
    assert_null(rg[3].data);
    assert_int_equal(rg[3].got, 0);
    assert_int_equal(rg[4].status, 0);
    assert_int_equal(rg[4].got, 0);
    assert_int_equal(rg[5].status, 0);
    assert_int_equal(rg[5].got, 0);
    assert_int_equal(rg[6].status, -ENOENT);
    assert_int_equal(rg[7].status, -ENOENT);
    assert_int_equal(rg[8].status, -ENOENT);
    for (size_t i = 0; i < n; i++)
        free(rg[i].data);

    /* An empty object is an object. */
    assert_int_equal(put_str(t, s, "empty", "", false), 0);
    char *data;
    size_t len;
    assert_int_equal(get_all(t, s, "empty", &data, &len), 0);
    assert_int_equal(len, 0);
    free(data);

    s->ops->close(s);
}

static void
test_storage_overwrite_atomic(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "store");

    assert_int_equal(put_str(t, s, "x/obj", "first version", true), 0);
    assert_int_equal(put_str(t, s, "x/obj", "the second, longer version", true), 0);
    char *data;
    size_t len;
    assert_int_equal(get_all(t, s, "x/obj", &data, &len), 0);
    assert_int_equal(len, strlen("the second, longer version"));
    assert_memory_equal(data, "the second, longer version", len);
    free(data);
    assert_int_equal(count_entries(t, "store/x", ""), 1);
    assert_int_equal(count_entries(t, "store/x", ".tmp."), 0);

    /* Two writers of one key at once: the object is one of them, whole. */
    static char big_a[100000], big_b[150000];
    memset(big_a, 'a', sizeof(big_a));
    memset(big_b, 'b', sizeof(big_b));
    uv_buf_t ba = uv_buf_init(big_a, sizeof(big_a));
    uv_buf_t bb = uv_buf_init(big_b, sizeof(big_b));
    struct res ra = {0}, rb = {0};
    assert_int_equal(storage_put(s, "x/obj", &ba, 1, false, res_cb, &ra), 0);
    assert_int_equal(storage_put(s, "x/obj", &bb, 1, false, res_cb, &rb), 0);
    run_until(&t->loop, res_done, &ra);
    run_until(&t->loop, res_done, &rb);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(ra.calls, 1);
    assert_int_equal(rb.calls, 1);
    assert_int_equal(ra.status, 0);
    assert_int_equal(rb.status, 0);
    assert_int_equal(get_all(t, s, "x/obj", &data, &len), 0);
    assert_true(len == sizeof(big_a) || len == sizeof(big_b));
    for (size_t i = 1; i < len; i++)
        assert_int_equal(data[i], data[0]);
    assert_int_equal(len, data[0] == 'a' ? sizeof(big_a) : sizeof(big_b));
    free(data);
    assert_int_equal(count_entries(t, "store/x", ".tmp."), 0);

    /* A temporary file left by a crashed put is not an object. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/store/x/.tmp.obj.0123456789abcdef", t->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("partial", f);
    fclose(f);
    assert_int_equal(exists_sync(t, s, ".tmp.obj.0123456789abcdef"), -EINVAL);
    assert_int_equal(s->ops->exists(s, "x/.tmp.obj.0123456789abcdef", res_cb, &ra),
                     -EINVAL);

    s->ops->close(s);
}

static void
test_storage_invalid_keys(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "store");
    char longkey[1100];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    char longseg[300];
    memset(longseg, 's', sizeof(longseg) - 1);
    longseg[sizeof(longseg) - 1] = '\0';

    const char *bad[] = {
        "",       "/abs",  "a//b",        "a/./b", "../x",      "a/..",      "a/b/",
        "sp ace", "a\\b",  "caf\xc3\xa9", ".",     "..",        "a/.tmp.x",  "x\ny",
        longkey,  longseg, "a/b/../c",    "/",     "a/b/c/./d", "tab\there",
    };
    struct res r = {0};
    uv_buf_t b = uv_buf_init("x", 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(storage_put(s, bad[i], &b, 1, false, res_cb, &r), -EINVAL);
        assert_int_equal(s->ops->exists(s, bad[i], res_cb, &r), -EINVAL);
        struct storage_range rg[2] = {
            {.key = "fine", .off = 0, .len = 1},
            {.key = bad[i], .off = 0, .len = 1},
        };
        assert_int_equal(storage_getv(s, rg, 2, res_cb, &r), -EINVAL);
    }
    assert_int_equal(storage_put(s, NULL, &b, 1, false, res_cb, &r), -EINVAL);
    struct storage_range nullkey = {.key = NULL};
    assert_int_equal(storage_getv(s, &nullkey, 1, res_cb, &r), -EINVAL);
    const char *bad_prefix[] = {"/", "a//", "../", "a/../", "//", ".tmp.", longkey};
    for (size_t i = 0; i < sizeof(bad_prefix) / sizeof(bad_prefix[0]); i++)
        assert_int_equal(s->ops->remove_prefix(s, bad_prefix[i], res_cb, &r), -EINVAL);

    /* Valid edge cases are accepted. */
    assert_int_equal(put_str(t, s, ".hidden", "h", false), 0);
    assert_int_equal(put_str(t, s, "a.b-c_D/0.9", "v", false), 0);
    assert_int_equal(put_str(t, s, "..x/x..", "v", false), 0);

    /* No callback ever comes for a refused operation. */
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(r.calls, 0);
    s->ops->close(s);
}

static void
test_storage_exists(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "store");
    assert_int_equal(exists_sync(t, s, "fn/abc.so"), -ENOENT);
    assert_int_equal(put_str(t, s, "fn/abc.so", "ELF", true), 0);
    assert_int_equal(exists_sync(t, s, "fn/abc.so"), 0);
    assert_int_equal(exists_sync(t, s, "fn"), -ENOENT); /* a directory */
    assert_int_equal(exists_sync(t, s, "fn/abc.so/x"), -ENOENT);
    assert_int_equal(exists_sync(t, s, "nothing/here"), -ENOENT);
    s->ops->close(s);
}

static void
test_storage_remove_prefix(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "store");
    const char *keys[] = {
        "jobs/7/in.data",  "jobs/7/in.idx",   "jobs/7/out/1.0", "jobs/7/out/1.1",
        "jobs/7/spec/1",   "jobs/70/in.data", "jobs/8/out/3.0", "jobs/8/out/3.1",
        "jobs/8/out/30.0", "fn/x.so",
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_int_equal(put_str(t, s, keys[i], keys[i], false), 0);

    assert_int_equal(remove_sync(t, s, "jobs/7/"), 0);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(exists_sync(t, s, keys[i]), -ENOENT);
    for (size_t i = 5; i < sizeof(keys) / sizeof(keys[0]); i++)
        assert_int_equal(exists_sync(t, s, keys[i]), 0);
    assert_int_equal(count_entries(t, "store/jobs", "7"), 1); /* only "70" */

    /* A prefix that is not a directory matches names, as strings do. */
    assert_int_equal(remove_sync(t, s, "jobs/8/out/3."), 0);
    assert_int_equal(exists_sync(t, s, "jobs/8/out/3.0"), -ENOENT);
    assert_int_equal(exists_sync(t, s, "jobs/8/out/3.1"), -ENOENT);
    assert_int_equal(exists_sync(t, s, "jobs/8/out/30.0"), 0);

    /* Nothing to remove is not an error. */
    assert_int_equal(remove_sync(t, s, "jobs/999/"), 0);
    assert_int_equal(remove_sync(t, s, "nowhere/at/all"), 0);
    assert_int_equal(remove_sync(t, s, "fn/x.so/"), 0); /* a file, not a tree */
    assert_int_equal(exists_sync(t, s, "fn/x.so"), 0);

    /* "" removes everything but keeps the root usable. */
    assert_int_equal(remove_sync(t, s, ""), 0);
    assert_int_equal(exists_sync(t, s, "fn/x.so"), -ENOENT);
    assert_int_equal(count_entries(t, "store", ""), 0);
    assert_int_equal(put_str(t, s, "again", "1", false), 0);
    assert_int_equal(exists_sync(t, s, "again"), 0);
    s->ops->close(s);
}

#define MANY 200

static void
test_storage_many_puts(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "store");
    static char vals[MANY][32];
    static char keys[MANY][32];
    struct res r[MANY];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < MANY; i++) {
        snprintf(keys[i], sizeof(keys[i]), "many/%d/v", i % 7);
        snprintf(keys[i] + strlen(keys[i]), sizeof(keys[i]) - strlen(keys[i]), "%d", i);
        snprintf(vals[i], sizeof(vals[i]), "value-%d", i);
        uv_buf_t b = uv_buf_init(vals[i], (unsigned)strlen(vals[i]));
        assert_int_equal(storage_put(s, keys[i], &b, 1, i % 2 == 0, res_cb, &r[i]), 0);
    }
    for (int i = 0; i < MANY; i++)
        run_until(&t->loop, res_done, &r[i]);
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
    }

    struct storage_range rg[MANY];
    memset(rg, 0, sizeof(rg));
    for (int i = 0; i < MANY; i++) {
        rg[MANY - 1 - i].key = keys[i]; /* reversed: order must not matter */
        rg[MANY - 1 - i].len = UINT64_MAX;
    }
    struct res gr = {0};
    assert_int_equal(storage_getv(s, rg, MANY, res_cb, &gr), 0);
    run_until(&t->loop, res_done, &gr);
    for (int i = 0; i < MANY; i++) {
        struct storage_range *g = &rg[MANY - 1 - i];
        assert_int_equal(g->status, 0);
        assert_int_equal(g->got, strlen(vals[i]));
        assert_memory_equal(g->data, vals[i], g->got);
        free(g->data);
    }
    for (int d = 0; d < 7; d++) {
        char sub[32];
        snprintf(sub, sizeof(sub), "store/many/%d", d);
        assert_int_equal(count_entries(t, sub, ".tmp."), 0);
    }
    s->ops->close(s);
}

static void
test_storage_worker_url(void **state)
{
    struct tctx *t = *state;
    struct storage *s = storage_open(t, "deep/er/root");
    char real[PATH_MAX], want[PATH_MAX + 8];
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/deep/er/root", t->dir);
    assert_non_null(realpath(path, real));
    snprintf(want, sizeof(want), "file:%s", real);
    assert_string_equal(s->ops->worker_url(s), want);
    assert_true(real[0] == '/');

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(put_str(t, s, "a/b/c", "x", true), 0);
    snprintf(path, sizeof(path), "%s/deep/er/root/a/b", t->dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    s->ops->close(s);

    /* A file in the way of the root is refused at start-up. */
    snprintf(path, sizeof(path), "%s/deep/er/root/a/b/c", t->dir);
    struct storage *s2 = NULL;
    assert_true(storage_local_new(&t->loop, path, &s2) < 0);
    assert_null(s2);
}

/* ---- compute helpers ------------------------------------------------------ */

#define MAXINV 8

struct rec {
    struct dispatch d;
    uint32_t ninv;
    bool in_submit;
    int reentered; /* callbacks made from inside submit */
    int started[MAXINV];
    int ended[MAXINV];
    int started_after_end;
    int nstarted;
    int nended;
    int64_t status[MAXINV];
    int sig[MAXINV];
    char why[MAXINV][128];
    int wanted[2]; /* for int_reached: {nended, target} */
};

static void
rec_started(struct dispatch *d, uint32_t inv)
{
    struct rec *r = d->data;
    assert_true(inv < r->ninv);
    if (r->in_submit)
        r->reentered++;
    if (r->ended[inv] > 0)
        r->started_after_end++;
    r->started[inv]++;
    r->nstarted++;
}

static void
rec_ended(struct dispatch *d, uint32_t inv, const struct compute_exit *ex)
{
    struct rec *r = d->data;
    assert_true(inv < r->ninv);
    if (r->in_submit)
        r->reentered++;
    r->ended[inv]++;
    r->nended++;
    r->wanted[0] = r->nended;
    r->status[inv] = ex->exit_status;
    r->sig[inv] = ex->term_signal;
    snprintf(r->why[inv], sizeof(r->why[inv]), "%s", ex->why != NULL ? ex->why : "");
}

static void
rec_init(struct rec *r, uint32_t ninv, char *spec_key)
{
    memset(r, 0, sizeof(*r));
    r->ninv = ninv;
    r->d.job = 7;
    r->d.owner_uid = geteuid();
    r->d.dispatch = 1;
    r->d.spec_key = spec_key;
    r->d.ninv = ninv;
    r->d.started_cb = rec_started;
    r->d.ended_cb = rec_ended;
    r->d.data = r;
    r->wanted[1] = (int)ninv;
}

static int
rec_submit(struct compute *c, struct rec *r)
{
    r->in_submit = true;
    int rc = c->ops->submit(c, &r->d);
    r->in_submit = false;
    return rc;
}

static void
write_file(struct tctx *t, const char *name, const char *content)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    assert_int_equal(fclose(f), 0);
}

static void
unlink_in(struct tctx *t, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    unlink(path);
}

/* Returns the malloc'ed content of a file of the test dir, or NULL. */
static char *
read_file(struct tctx *t, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", t->dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The worker stand-in: a `burst-worker --serve` that runs each request
 * ("SPEC INDEX") as the test's files say, replying with the exit status a
 * one-shot worker would have had.  Files are written to a temporary name
 * and renamed so the test never reads half of one. */
static void
write_worker(struct tctx *t, char *path, size_t size)
{
    snprintf(path, size, "%s/worker.sh", t->dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f,
            "#!/bin/sh\n"
            "[ \"$1\" = --serve ] || exit 2\n"
            "d='%s'\n"
            "while read -r BURST_SPEC JOB_INDEX; do\n"
            "export BURST_SPEC JOB_INDEX\n"
            "i=\"$JOB_INDEX\"\n"
            "env > \"$d/env.$i.tmp\" && mv \"$d/env.$i.tmp\" \"$d/env.$i\"\n"
            "echo $$ > \"$d/pid.$i.tmp\" && mv \"$d/pid.$i.tmp\" \"$d/pid.$i\"\n"
            "mode=$(cat \"$d/mode\" 2>/dev/null)\n"
            "if [ \"$mode\" = trap ]; then trap '' TERM; fi\n"
            "if [ \"$mode\" = sleep ] || [ \"$mode\" = trap ]; then\n"
            "  sleep 1000 &\n"
            "  echo $! > \"$d/gc.$i.tmp\" && mv \"$d/gc.$i.tmp\" \"$d/gc.$i\"\n"
            "  wait\n"
            "  exit 0\n"
            "fi\n"
            "if [ \"$mode\" = orphan ]; then\n"
            "  sleep 1000 &\n"
            "  echo $! > \"$d/gc.$i.tmp\" && mv \"$d/gc.$i.tmp\" \"$d/gc.$i\"\n"
            "fi\n"
            "code=$(cat \"$d/code.$i\" 2>/dev/null || echo 0)\n"
            "echo \"$code\"\n"
            "done\n",
            t->dir);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0700), 0);
}

/* Whether the line NAME=value (exactly) is in an env dump. */
static bool
env_has(const char *dump, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = dump; p != NULL && *p != '\0';) {
        if (strncmp(p, line, len) == 0 && (p[len] == '\n' || p[len] == '\0'))
            return true;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return false;
}

/* Whether any line of the dump starts with NAME=. */
static bool
env_has_name(const char *dump, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = dump; p != NULL && *p != '\0';) {
        if (strncmp(p, name, len) == 0 && p[len] == '=')
            return true;
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return false;
}

struct closer {
    int calls;
    struct rec *r; /* when set: every ended_cb must have run before cb */
    int ended_at_close;
};

static void
closer_cb(struct compute *c)
{
    struct closer *cl = c->data;
    cl->calls++;
    if (cl->r != NULL)
        cl->ended_at_close = cl->r->nended;
}

static bool
closer_done(void *arg)
{
    return ((struct closer *)arg)->calls > 0;
}

static void
compute_close_sync(struct tctx *t, struct compute *c, struct closer *cl)
{
    c->data = cl;
    c->ops->close(c, closer_cb);
    assert_int_equal(cl->calls, 0); /* only from a close callback */
    run_until(&t->loop, closer_done, cl);
    uv_run(&t->loop, UV_RUN_NOWAIT);
    assert_int_equal(cl->calls, 1);
}

static struct compute *
compute_open(struct tctx *t, const char *worker)
{
    struct compute *c = NULL;
    assert_int_equal(compute_local_new(&t->loop, worker, "file:/srv/burst-store", &c), 0);
    assert_non_null(c);
    assert_string_equal(c->ops->name, "local");
    return c;
}

/* Whether the process is gone (or a zombie nobody reaped yet: it runs no
 * more code either way). */
static bool
pid_gone(int pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return true;
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

static bool
pid_gone_pred(void *arg)
{
    return pid_gone(*(int *)arg);
}

struct files_wait {
    struct tctx *t;
    const char *prefix;
    uint32_t n;
    struct rec *r; /* stop early when the invocations ended */
};

static bool
files_present(void *arg)
{
    struct files_wait *w = arg;
    if (w->r != NULL && w->r->nended >= (int)w->r->ninv)
        return true;
    for (uint32_t i = 0; i < w->n; i++) {
        char name[64], path[PATH_MAX];
        snprintf(name, sizeof(name), "%s.%u", w->prefix, i);
        snprintf(path, sizeof(path), "%s/%s", w->t->dir, name);
        if (access(path, F_OK) != 0)
            return false;
    }
    return true;
}

static int
read_pid(struct tctx *t, uint32_t i)
{
    char name[32];
    snprintf(name, sizeof(name), "gc.%u", i);
    char *s = read_file(t, name);
    if (s == NULL)
        return -1;
    int pid = atoi(s);
    free(s);
    return pid;
}

/* ---- compute tests -------------------------------------------------------- */

/* A worker that finished an invocation runs the next one of the same uid:
 * the process start is paid once.  Closing the backend ends idle workers
 * (teardown proves no handle is left). */
static void
test_compute_warm_reuse(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    struct compute *c = compute_open(t, worker);
    char spec1[] = "jobs/7/spec/1", spec2[] = "jobs/7/spec/2";
    struct rec r1, r2;
    rec_init(&r1, 1, spec1);
    assert_int_equal(rec_submit(c, &r1), 0);
    run_until(&t->loop, int_reached, r1.wanted);
    char *pid1 = read_file(t, "pid.0");
    assert_non_null(pid1);
    assert_int_equal(c->ops->running(c), 0);

    rec_init(&r2, 1, spec2);
    r2.d.dispatch = 2;
    assert_int_equal(rec_submit(c, &r2), 0);
    run_until(&t->loop, int_reached, r2.wanted);
    assert_int_equal(r2.status[0], 0);
    char *pid2 = read_file(t, "pid.0");
    assert_non_null(pid2);
    assert_string_equal(pid1, pid2);
    char *env = read_file(t, "env.0");
    assert_non_null(env);
    assert_true(env_has(env, "BURST_SPEC=jobs/7/spec/2"));
    free(env);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
    assert_true(pid_gone(atoi(pid1)));
    free(pid1);
    free(pid2);
}

static void
test_compute_three_invocations(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    write_file(t, "code.1", "3\n");
    write_file(t, "code.2", "7\n");
    struct compute *c = compute_open(t, worker);

    struct rec r;
    char spec[] = "jobs/7/spec/1";
    rec_init(&r, 3, spec);
    assert_int_equal(rec_submit(c, &r), 0);
    assert_int_equal(r.nstarted + r.nended, 0);
    assert_int_equal(c->ops->running(c), 3);
    run_until(&t->loop, int_reached, r.wanted);
    uv_run(&t->loop, UV_RUN_NOWAIT);

    assert_int_equal(r.reentered, 0);
    assert_int_equal(r.started_after_end, 0);
    assert_int_equal(r.nended, 3);
    const int64_t codes[3] = {0, 3, 7};
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r.started[i], 1);
        assert_int_equal(r.ended[i], 1);
        assert_int_equal(r.status[i], codes[i]);
        assert_int_equal(r.sig[i], 0);
        assert_string_equal(r.why[i], "");

        char name[32], line[64];
        snprintf(name, sizeof(name), "env.%u", i);
        char *env = read_file(t, name);
        assert_non_null(env);
        snprintf(line, sizeof(line), "JOB_INDEX=%u", i);
        assert_true(env_has(env, line));
        assert_true(env_has(env, "BURST_STORAGE=file:/srv/burst-store"));
        assert_true(env_has(env, "BURST_SPEC=jobs/7/spec/1"));
        free(env);
    }
    assert_null(r.d.backend_priv);
    assert_int_equal(c->ops->running(c), 0);
    /* Cancelling a finished dispatch is harmless. */
    assert_int_equal(c->ops->cancel(c, &r.d, 0), 0);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
}

static void
test_compute_env_filtered(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    static const char *const hidden[][2] = {
        {"FOO_SECRET", "s3cr3t"},   {"AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"},
        {"AWS_SESSION", "x"},       {"MY_API_TOKEN", "tok"},
        {"IBM_CLOUD_REGION", "us"}, {"COS_ENDPOINT", "e"},
        {"CE_PROJECT", "p"},        {"DB_PASSWORD", "pw"},
        {"IBMCLOUD_APIKEY", "k"},   {"HMAC_KEY", "k"},
        {"BURST_SOCKET", "/run/x"}, {"BURST_STORAGE", "file:/wrong"},
        {"JOB_INDEX", "99"},
    };
    size_t nh = sizeof(hidden) / sizeof(hidden[0]);
    for (size_t i = 0; i < nh; i++)
        assert_int_equal(setenv(hidden[i][0], hidden[i][1], 1), 0);
    assert_int_equal(setenv("BKTEST_PLAIN", "visible", 1), 0);
    assert_int_equal(setenv("KEYBOARD_LAYOUT", "us", 1), 0); /* not a _KEY */
    struct compute *c = compute_open(t, worker);
    for (size_t i = 0; i < nh; i++)
        unsetenv(hidden[i][0]);
    unsetenv("BKTEST_PLAIN");
    unsetenv("KEYBOARD_LAYOUT");

    struct rec r;
    char spec[] = "jobs/7/spec/2";
    rec_init(&r, 1, spec);
    assert_int_equal(rec_submit(c, &r), 0);
    run_until(&t->loop, int_reached, r.wanted);
    assert_int_equal(r.status[0], 0);

    char *env = read_file(t, "env.0");
    assert_non_null(env);
    for (size_t i = 0; i < nh; i++) {
        if (strcmp(hidden[i][0], "BURST_STORAGE") == 0 ||
            strcmp(hidden[i][0], "JOB_INDEX") == 0)
            continue;
        if (env_has_name(env, hidden[i][0]))
            fail_msg("%s reached the worker", hidden[i][0]);
    }
    assert_null(strstr(env, "s3cr3t"));
    assert_null(strstr(env, "AKIAEXAMPLE"));
    assert_null(strstr(env, "file:/wrong"));
    assert_true(env_has(env, "JOB_INDEX=0"));
    assert_true(env_has(env, "BURST_STORAGE=file:/srv/burst-store"));
    assert_true(env_has(env, "BKTEST_PLAIN=visible"));
    assert_true(env_has(env, "KEYBOARD_LAYOUT=us"));
    /* Exactly one JOB_INDEX line. */
    const char *first = strstr(env, "JOB_INDEX=");
    assert_non_null(first);
    assert_null(strstr(first + 1, "\nJOB_INDEX="));
    free(env);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
}

static void
test_compute_deadline(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    write_file(t, "mode", "sleep\n");
    struct compute *c = compute_open(t, worker);

    /* The deadline must outlast the script's start for the grandchild's pid
     * to be recorded; on a machine too slow for that, try a longer one. */
    static const uint64_t deadlines[] = {300, 2000, 10000, 30000};
    bool checked = false;
    for (size_t k = 0; k < sizeof(deadlines) / sizeof(deadlines[0]) && !checked; k++) {
        unlink_in(t, "gc.0");
        struct rec r;
        char spec[] = "jobs/7/spec/3";
        rec_init(&r, 1, spec);
        r.d.deadline_ms = deadlines[k];
        assert_int_equal(rec_submit(c, &r), 0);
        run_until(&t->loop, int_reached, r.wanted);

        assert_int_equal(r.ended[0], 1);
        assert_int_equal(r.started[0], 1);
        assert_int_equal(r.sig[0], SIGKILL);
        assert_int_equal(r.status[0], -1);
        assert_string_equal(r.why[0], "deadline exceeded");
        int gc = read_pid(t, 0);
        if (gc <= 0)
            continue;
        /* The grandchild shared the worker's group, so it went too. */
        run_until(&t->loop, pid_gone_pred, &gc);
        checked = true;
    }
    assert_true(checked);
    assert_int_equal(c->ops->running(c), 0);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
}

static void
test_compute_stragglers_killed(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    write_file(t, "mode", "orphan\n"); /* leaves a sleep behind and exits */
    write_file(t, "code.0", "5\n");
    struct compute *c = compute_open(t, worker);

    struct rec r;
    char spec[] = "jobs/7/spec/9";
    rec_init(&r, 1, spec);
    assert_int_equal(rec_submit(c, &r), 0);
    run_until(&t->loop, int_reached, r.wanted);
    assert_int_equal(r.status[0], 5);
    assert_int_equal(r.sig[0], 0);
    /* The script wrote the pid before exiting, so it is there now. */
    int gc = read_pid(t, 0);
    assert_true(gc > 0);
    run_until(&t->loop, pid_gone_pred, &gc);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
}

static void
test_compute_cancel(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    write_file(t, "mode", "sleep\n");
    struct compute *c = compute_open(t, worker);

    struct rec r;
    char spec[] = "jobs/7/spec/4";
    rec_init(&r, 2, spec);
    assert_int_equal(rec_submit(c, &r), 0);
    struct files_wait w = {.t = t, .prefix = "gc", .n = 2, .r = &r};
    run_until(&t->loop, files_present, &w);
    assert_int_equal(r.nended, 0); /* they sleep until cancelled */
    assert_int_equal(c->ops->running(c), 2);
    int gc[2] = {read_pid(t, 0), read_pid(t, 1)};
    assert_true(gc[0] > 0 && gc[1] > 0);

    /* A long grace: the workers die of the SIGTERM itself. */
    assert_int_equal(c->ops->cancel(c, &r.d, 600000), 0);
    assert_int_equal(c->ops->cancel(c, &r.d, 600000), 0);
    run_until(&t->loop, int_reached, r.wanted);
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal(r.started[i], 1);
        assert_int_equal(r.ended[i], 1);
        assert_int_equal(r.sig[i], SIGTERM);
        assert_int_equal(r.status[i], -1);
        assert_string_equal(r.why[i], "cancelled");
        run_until(&t->loop, pid_gone_pred, &gc[i]);
    }
    assert_int_equal(c->ops->running(c), 0);
    assert_int_equal(c->ops->cancel(c, &r.d, 0), 0);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
}

static void
test_compute_cancel_grace(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    write_file(t, "mode", "trap\n"); /* ignores SIGTERM */
    struct compute *c = compute_open(t, worker);

    struct rec r;
    char spec[] = "jobs/7/spec/5";
    rec_init(&r, 1, spec);
    assert_int_equal(rec_submit(c, &r), 0);
    struct files_wait w = {.t = t, .prefix = "gc", .n = 1, .r = &r};
    run_until(&t->loop, files_present, &w);
    assert_int_equal(r.nended, 0);
    int gc = read_pid(t, 0);
    assert_true(gc > 0);

    assert_int_equal(c->ops->cancel(c, &r.d, 600000), 0);
    /* A second cancel may only shorten the grace. */
    assert_int_equal(c->ops->cancel(c, &r.d, 20), 0);
    run_until(&t->loop, int_reached, r.wanted);
    assert_int_equal(r.sig[0], SIGKILL);
    assert_int_equal(r.status[0], -1);
    assert_string_equal(r.why[0], "cancelled");
    run_until(&t->loop, pid_gone_pred, &gc);

    struct closer cl = {0};
    compute_close_sync(t, c, &cl);
}

static void
test_compute_missing_worker(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    snprintf(worker, sizeof(worker), "%s/no-such-worker", t->dir);
    struct compute *c = compute_open(t, worker);

    struct rec r;
    char spec[] = "jobs/7/spec/6";
    rec_init(&r, 3, spec);
    assert_int_equal(rec_submit(c, &r), UV_ENOENT);
    assert_int_equal(c->ops->running(c), 0);

    /* Not executable: refused the same way. */
    write_file(t, "not-exec", "#!/bin/sh\nexit 0\n");
    struct compute *c2;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/not-exec", t->dir);
    assert_int_equal(compute_local_new(&t->loop, path, "file:/x", &c2), 0);
    struct rec r2;
    rec_init(&r2, 1, spec);
    assert_int_equal(rec_submit(c2, &r2), UV_EACCES);

    /* Bad dispatches are refused before anything starts. */
    struct rec r3;
    rec_init(&r3, 0, spec);
    assert_int_equal(rec_submit(c, &r3), -EINVAL);
    rec_init(&r3, 1, NULL);
    assert_int_equal(rec_submit(c, &r3), -EINVAL);

    struct closer cl = {0}, cl2 = {0};
    compute_close_sync(t, c, &cl);
    compute_close_sync(t, c2, &cl2);
    assert_int_equal(r.nstarted + r.nended + r2.nstarted + r2.nended, 0);
    assert_int_equal(r3.nstarted + r3.nended, 0);
}

static void
test_compute_close_running(void **state)
{
    struct tctx *t = *state;
    char worker[PATH_MAX];
    write_worker(t, worker, sizeof(worker));
    write_file(t, "mode", "trap\n"); /* only SIGKILL stops them */
    struct compute *c = compute_open(t, worker);

    struct rec r;
    char spec[] = "jobs/7/spec/7";
    rec_init(&r, 3, spec);
    assert_int_equal(rec_submit(c, &r), 0);
    struct files_wait w = {.t = t, .prefix = "gc", .n = 3, .r = &r};
    run_until(&t->loop, files_present, &w);
    int gc[3] = {read_pid(t, 0), read_pid(t, 1), read_pid(t, 2)};

    /* A second dispatch closed before its callbacks were even due. */
    struct rec r2;
    char spec2[] = "jobs/7/spec/8";
    rec_init(&r2, 2, spec2);
    assert_int_equal(rec_submit(c, &r2), 0);

    struct closer cl = {.r = &r};
    compute_close_sync(t, c, &cl);
    assert_int_equal(cl.ended_at_close, 3);
    assert_int_equal(r.nended, 3);
    assert_int_equal(r2.nended, 2);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r.ended[i], 1);
        assert_int_equal(r.started[i], 1);
        assert_int_equal(r.sig[i], SIGKILL);
        assert_string_equal(r.why[i], "backend closed");
        assert_true(gc[i] > 0);
        run_until(&t->loop, pid_gone_pred, &gc[i]);
    }
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal(r2.ended[i], 1);
        assert_true(r2.started[i] <= 1);
        assert_int_equal(r2.started_after_end, 0);
    }
    assert_int_equal(r.reentered + r2.reentered, 0);
}

int
main(void)
{
    /* A worker inherits our stderr; keep it, but never die of SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_storage_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_overwrite_atomic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_invalid_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_exists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_remove_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_many_puts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_storage_worker_url, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_warm_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_three_invocations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_env_filtered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_stragglers_killed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_cancel_grace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_missing_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compute_close_running, setup, teardown),
    };
    return cmocka_run_group_tests_name("backends", tests, NULL, NULL);
}
