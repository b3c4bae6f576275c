/*
 * tests/test-syncer.c - the ledger's sync threads (daemon/syncer.c): what
 * a finished sync says it covered, and a failed one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "syncer.h"

struct seen {
    int n;
    uint64_t tag; /* the last one's */
    int err;
    unsigned tags; /* bit t for each tag t seen */
};

static void
on_done(void *arg, uint64_t tag, int err)
{
    struct seen *s = arg;
    s->n++;
    s->tag = tag;
    s->err = err;
    s->tags |= 1u << (tag & 31);
}

struct fixture {
    uv_loop_t loop;
    struct syncer *sy;
    struct seen seen;
    char path[64];
    int fd;
};

static int
setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(syncer_new(&f->loop, on_done, &f->seen, &f->sy), 0);
    snprintf(f->path, sizeof(f->path), "/tmp/burst-test-syncer.XXXXXX");
    f->fd = mkstemp(f->path);
    assert_true(f->fd >= 0);
    assert_int_equal(write(f->fd, "x", 1), 1);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    syncer_free(f->sy);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    close(f->fd);
    unlink(f->path);
    free(f);
    return 0;
}

/* A sync covers what was written before it started, not only what it was
 * asked for: its tag is the larger of the two. */
static void
test_tag_covers_what_was_written(void **state)
{
    struct fixture *f = *state;
    syncer_written(f->sy, 7);
    syncer_start(f->sy, f->fd, 3);
    syncer_wait(f->sy);
    assert_int_equal(f->seen.n, 1);
    assert_int_equal(f->seen.err, 0);
    assert_int_equal(f->seen.tag, 7);
    /* Asked for more than is known written: the tag it was given. */
    syncer_start(f->sy, f->fd, 9);
    syncer_wait(f->sy);
    assert_int_equal(f->seen.n, 2);
    assert_int_equal(f->seen.tag, 9);
}

/* A sync that fails says why, with the tag it was given. */
static void
test_failed_sync(void **state)
{
    struct fixture *f = *state;
    syncer_start(f->sy, -1, 4);
    syncer_wait(f->sy);
    assert_int_equal(f->seen.n, 1);
    assert_int_equal(f->seen.err, EBADF);
    assert_int_equal(f->seen.tag, 4);
}

/* Every thread busy: syncer_busy says so, and each sync is delivered. */
static void
test_all_threads_busy(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < SYNCER_SLOTS; i++) {
        assert_false(syncer_busy(f->sy));
        syncer_start(f->sy, f->fd, (uint64_t)i + 1);
    }
    assert_true(syncer_busy(f->sy));
    syncer_wait(f->sy);
    assert_false(syncer_busy(f->sy));
    assert_int_equal(f->seen.n, SYNCER_SLOTS);
    assert_int_equal(f->seen.tags, ((1u << SYNCER_SLOTS) - 1) << 1); /* 1 .. SLOTS */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tag_covers_what_was_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_threads_busy, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
