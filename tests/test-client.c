/*
 * tests/test-client.c - unit tests of libburst and the burst CLI's helpers
 * that need no real daemon: the so-library checks (SHA-256, ELF .dynsym
 * lookup on the real wc_fns.so, damaged images), JSON escaping, tables,
 * argument parsing, and libburst's call and event machinery against a
 * scripted fake daemon on a temporary Unix socket (replies matched by id,
 * events interleaved with replies, paging, size limits, uploads).
 *
 * usage: test-client WC_FNS.so
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli.h"
#include "client_internal.h"

static const char *wc_fns_path;

/* ---- helpers ---------------------------------------------------------------- */

static char *
slurp(const char *path, size_t *len)
{
    char err[256];
    char *data;

    int rc = solib_read(path, 1u << 30, &data, len, NULL, err, sizeof(err));
    assert_int_equal(rc, 0);
    return data;
}

/* Runs fn with a memory stream as its FILE and returns what it wrote. */
static char *
capture(void (*fn)(FILE *f, void *arg), void *arg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    fn(f, arg);
    assert_int_equal(fclose(f), 0);
    return buf;
}

struct esc {
    const char *s;
    size_t len;
};

static void
write_escaped(FILE *f, void *arg)
{
    struct esc *e = arg;
    json_write_string(f, e->s, e->len);
}

static void
assert_escapes(const char *in, size_t len, const char *want)
{
    struct esc e = {in, len};
    char *got = capture(write_escaped, &e);
    assert_string_equal(got, want);
    free(got);
}

/* ---- solib ------------------------------------------------------------------ */

static void
test_sha256_vectors(void **state)
{
    char hex[65];

    (void)state;
    assert_int_equal(solib_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(
        hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(solib_sha256_hex("", 0, hex), 0);
    assert_string_equal(
        hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_elf_symbols(void **state)
{
    size_t len;
    char *so = slurp(wc_fns_path, &len);

    (void)state;
    assert_int_equal(solib_find_symbol(so, len, "count_words"), 0);
    assert_int_equal(solib_find_symbol(so, len, "sum_counts"), 0);
    assert_int_equal(solib_find_symbol(so, len, "no_such_function"), BURST_ENOSYM);
    /* A static helper is not in .dynsym; an imported function is undefined. */
    assert_int_equal(solib_find_symbol(so, len, "write_number"), BURST_ENOSYM);
    assert_int_equal(solib_find_symbol(so, len, "snprintf"), BURST_ENOSYM);
    /* A prefix of a name is not the name. */
    assert_int_equal(solib_find_symbol(so, len, "count"), BURST_ENOSYM);
    free(so);
}

static void
test_elf_not_a_library(void **state)
{
    static const char text[] = "#!/bin/sh\necho not a library\n";
    size_t len;
    char *so = slurp(wc_fns_path, &len);

    (void)state;
    assert_int_equal(solib_find_symbol(text, sizeof(text), "count_words"), -ENOEXEC);
    assert_int_equal(solib_find_symbol(so, 0, "count_words"), -ENOEXEC);
    assert_int_equal(solib_find_symbol(so, 20, "count_words"), -ENOEXEC);
    /* An executable (ET_EXEC) is not a shared library. */
    so[16] = 2;
    so[17] = 0;
    assert_int_equal(solib_find_symbol(so, len, "count_words"), -ENOEXEC);
    free(so);
}

/* Damaged images must give an answer, never a read out of bounds (this
 * test is most useful under -Db_sanitize=address). */
static void
test_elf_damaged(void **state)
{
    size_t len;
    char *so = slurp(wc_fns_path, &len);
    uint32_t seed = 12345;

    (void)state;
    for (size_t cut = 0; cut < len; cut += 13) {
        char *copy = malloc(cut ? cut : 1);
        assert_non_null(copy);
        memcpy(copy, so, cut);
        int rc = solib_find_symbol(copy, cut, "count_words");
        assert_true(rc == 0 || rc == BURST_ENOSYM || rc == -ENOEXEC);
        free(copy);
    }
    char *copy = malloc(len);
    assert_non_null(copy);
    for (int round = 0; round < 2000; round++) {
        memcpy(copy, so, len);
        for (int k = 0; k < 4; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t pos = (seed >> 8) % (len < 4096 ? len : 4096);
            seed = seed * 1103515245u + 12345u;
            copy[pos] = (char)(seed >> 16);
        }
        int rc = solib_find_symbol(copy, len, "sum_counts");
        assert_true(rc == 0 || rc == BURST_ENOSYM || rc == -ENOEXEC);
    }
    free(copy);
    free(so);
}

static void
test_solib_read_errors(void **state)
{
    char err[256];
    char *data;
    size_t len;

    (void)state;
    int rc = solib_read("/nonexistent/lib.so", 1000, &data, &len, NULL, err, sizeof(err));
    assert_int_equal(rc, BURST_EINPUT);
    assert_string_equal(err,
                        "cannot read /nonexistent/lib.so: No such file or directory");
    assert_null(data);
    rc = solib_read("/", 1000, &data, &len, NULL, err, sizeof(err));
    assert_int_equal(rc, BURST_EINPUT);
    rc = solib_read(wc_fns_path, 10, &data, &len, NULL, err, sizeof(err));
    assert_int_equal(rc, BURST_ETOOBIG);
}

static void
test_symbol_names(void **state)
{
    (void)state;
    assert_true(solib_symbol_valid("count_words"));
    assert_true(solib_symbol_valid("_x9"));
    assert_false(solib_symbol_valid(""));
    assert_false(solib_symbol_valid("9x"));
    assert_false(solib_symbol_valid("a-b"));
    assert_false(solib_symbol_valid("a b"));
    assert_false(solib_symbol_valid(NULL));
}

/* ---- JSON -------------------------------------------------------------------- */

static void
test_json_escape(void **state)
{
    (void)state;
    assert_escapes("plain", 5, "\"plain\"");
    assert_escapes("", 0, "\"\"");
    assert_escapes("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    assert_escapes("l1\nl2\r\t\b\f", 9, "\"l1\\nl2\\r\\t\\b\\f\"");
    assert_escapes("\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\"");
    assert_escapes("nul\0in", 6, "\"nul\\u0000in\"");
    /* Valid UTF-8 passes through: é, €, 𝄞. */
    assert_escapes("\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e", 9,
                   "\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\"");
    /* Invalid: a lone continuation byte, a truncated sequence, an overlong
     * '/', a surrogate, a code point above U+10FFFF, 0xff. */
    assert_escapes("a\x80z", 3, "\"a\\ufffdz\"");
    assert_escapes("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");
    assert_escapes("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");
    assert_escapes("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"");
    assert_escapes("\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
    assert_escapes("\xff", 1, "\"\\ufffd\"");
}

static void
write_doc(FILE *f, void *arg)
{
    struct json j;

    (void)arg;
    json_init(&j, f);
    json_begin_object(&j);
    json_key(&j, "id");
    json_uint(&j, 7);
    json_key(&j, "name");
    json_str(&j, "a\"b");
    json_key(&j, "none");
    json_null(&j);
    json_key(&j, "list");
    json_begin_array(&j);
    json_int(&j, -1);
    json_bool(&j, true);
    json_end_array(&j);
    json_key(&j, "empty");
    json_begin_object(&j);
    json_end_object(&j);
    json_end_object(&j);
    json_finish(&j);
}

static void
test_json_document(void **state)
{
    (void)state;
    char *got = capture(write_doc, NULL);
    assert_string_equal(got, "{\n"
                             "  \"id\": 7,\n"
                             "  \"name\": \"a\\\"b\",\n"
                             "  \"none\": null,\n"
                             "  \"list\": [\n"
                             "    -1,\n"
                             "    true\n"
                             "  ],\n"
                             "  \"empty\": {}\n"
                             "}\n");
    free(got);
}

static void
write_job(FILE *f, void *arg)
{
    struct json j;

    json_init(&j, f);
    cli_job_json(&j, arg);
    json_finish(&j);
}

static void
test_job_json_fields(void **state)
{
    burst_job_info info = {.id = 12, .state = BURST_JOB_RUNNING, .total = 5};

    (void)state;
    info.counts[BURST_TASK_SUCCEEDED] = 3;
    info.counts[BURST_TASK_RUNNING] = 2;
    snprintf(info.function, sizeof(info.function), "exec: tr a-z A-Z");
    char *got = capture(write_job, &info);
    assert_non_null(strstr(got, "\"id\": 12,"));
    assert_non_null(strstr(got, "\"state\": \"running\","));
    assert_non_null(strstr(got, "\"total\": 5,"));
    assert_non_null(strstr(got, "\"succeeded\": 3"));
    assert_non_null(strstr(got, "\"running\": 2"));
    assert_non_null(strstr(got, "\"queued\": 0"));
    assert_non_null(strstr(got, "\"function\": \"exec: tr a-z A-Z\""));
    assert_non_null(strstr(got, "\"error\": null"));
    assert_non_null(strstr(got, "\"started\": null"));
    free(got);
}

/* ---- tables and formatting --------------------------------------------------- */

static void
print_table(FILE *f, void *arg)
{
    table_print(arg, f);
}

static void
test_table_layout(void **state)
{
    static const char *const headers[] = {"ID", "NAME", "N", "LAST"};
    const char *r1[] = {"7", "short", "12", "x"};
    const char *r2[] = {"1234", "caf\xc3\xa9 au lait", "3", "tab\there"};
    struct table t;

    (void)state;
    table_init(&t, 4, headers, 1u << 0 | 1u << 2);
    assert_int_equal(table_add(&t, r1), 0);
    assert_int_equal(table_add(&t, r2), 0);
    char *got = capture(print_table, &t);
    /* Numbers right-aligned, text left-aligned, widths in characters (é is
     * one), a control character blanked, no trailing blanks. */
    assert_string_equal(got, "  ID  NAME           N  LAST\n"
                             "   7  short         12  x\n"
                             "1234  caf\xc3\xa9 au lait   3  tab here\n");
    free(got);
    table_free(&t);
}

static void
test_elapsed_format(void **state)
{
    char buf[32];

    (void)state;
    cli_format_elapsed(0, buf, sizeof(buf));
    assert_string_equal(buf, "0:00");
    cli_format_elapsed(61500, buf, sizeof(buf));
    assert_string_equal(buf, "1:01");
    cli_format_elapsed(3600000 + 2 * 60000 + 3000, buf, sizeof(buf));
    assert_string_equal(buf, "1:02:03");
    cli_format_elapsed((2 * 86400 + 5) * 1000LL, buf, sizeof(buf));
    assert_string_equal(buf, "2-00:00:05");
    assert_string_equal(cli_job_state_upper(BURST_JOB_CANCELLED, buf, sizeof(buf)),
                        "CANCELLED");
    assert_string_equal(cli_task_state_upper(BURST_TASK_TIMEOUT, buf, sizeof(buf)),
                        "TIMEOUT");
}

/* ---- argument parsing -------------------------------------------------------- */

static void
test_parse_numbers(void **state)
{
    char err[256];
    uint32_t v;
    uint64_t ms, job;

    (void)state;
    assert_int_equal(cli_parse_u32("--chunksize", "7", 1, 100000, &v, err, sizeof(err)),
                     0);
    assert_int_equal(v, 7);
    assert_int_equal(cli_parse_u32("--chunksize", "x", 1, 100000, &v, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "--chunksize must be an integer from 1 to 100000, got 'x'");
    assert_int_equal(cli_parse_u32("--chunksize", "0", 1, 100000, &v, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(
        cli_parse_u32("--chunksize", "100001", 1, 100000, &v, err, sizeof(err)), -EINVAL);
    assert_int_equal(cli_parse_u32("--retries", "-1", 0, 100, &v, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(
        cli_parse_u32("--retries", "99999999999999999999", 0, 100, &v, err, sizeof(err)),
        -EINVAL);
    assert_int_equal(cli_parse_u32("--retries", "", 0, 100, &v, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(cli_parse_u32("--retries", "5 ", 0, 100, &v, err, sizeof(err)),
                     -EINVAL);

    assert_int_equal(cli_parse_seconds("--timeout", "0.5", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(cli_parse_seconds("--timeout", "30", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(cli_parse_seconds("--timeout", "1.25", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1250);
    assert_int_equal(cli_parse_seconds("--timeout", ".5", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(cli_parse_seconds("--timeout", "0.0001", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 1); /* rounded up, never "no timeout" */
    assert_int_equal(cli_parse_seconds("--timeout", "0", &ms, err, sizeof(err)), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(cli_parse_seconds("--timeout", "abc", &ms, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "--timeout must be a number of seconds"));
    assert_non_null(strstr(err, "got 'abc'"));
    assert_int_equal(cli_parse_seconds("--timeout", "-1", &ms, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(cli_parse_seconds("--timeout", ".", &ms, err, sizeof(err)), -EINVAL);
    assert_int_equal(cli_parse_seconds("--timeout", "1e3", &ms, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(
        cli_parse_seconds("--timeout", "99999999999999999", &ms, err, sizeof(err)),
        -EINVAL);

    assert_int_equal(cli_parse_job("42", &job, err, sizeof(err)), 0);
    assert_int_equal(job, 42);
    assert_int_equal(cli_parse_job("0", &job, err, sizeof(err)), -EINVAL);
    assert_int_equal(cli_parse_job("4x", &job, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "JOB must be a job id (a positive integer), got '4x'");
    assert_int_equal(cli_parse_job("99999999999999999999999", &job, err, sizeof(err)),
                     -EINVAL);
}

static void
test_parse_so_and_state(void **state)
{
    char path[64], sym[32], err[256];
    int st;

    (void)state;
    assert_int_equal(cli_parse_so("--so", "lib/x.so:upper", path, sizeof(path), sym,
                                  sizeof(sym), err, sizeof(err)),
                     0);
    assert_string_equal(path, "lib/x.so");
    assert_string_equal(sym, "upper");
    assert_int_equal(cli_parse_so("--so", "a:b.so:f", path, sizeof(path), sym,
                                  sizeof(sym), err, sizeof(err)),
                     0);
    assert_string_equal(path, "a:b.so");
    assert_string_equal(sym, "f");
    assert_int_equal(cli_parse_so("--so", "x.so", path, sizeof(path), sym, sizeof(sym),
                                  err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "--so must be LIB.so:SYMBOL, got 'x.so'");
    assert_int_equal(cli_parse_so("--so", "x.so:", path, sizeof(path), sym, sizeof(sym),
                                  err, sizeof(err)),
                     -EINVAL);

    assert_int_equal(cli_parse_task_state("SUCCEEDED", &st, err, sizeof(err)), 0);
    assert_int_equal(st, BURST_TASK_SUCCEEDED);
    assert_int_equal(cli_parse_task_state("timeout", &st, err, sizeof(err)), 0);
    assert_int_equal(st, BURST_TASK_TIMEOUT);
    assert_int_equal(cli_parse_task_state("done", &st, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "got 'done'"));
}

static void
test_parse_options(void **state)
{
    const char *exec = NULL, *n = NULL;
    bool wait = false;
    const struct cli_opt opts[] = {
        {"--exec", &exec, NULL}, {"--chunksize", &n, NULL}, {"--wait", NULL, &wait}};
    char *pos[2];
    size_t npos;
    char err[256];

    (void)state;
    char *a1[] = {"map", "--exec", "tr a-z A-Z", "--chunksize=7",
                  "12",  "--wait", "--",         "-x"};
    assert_int_equal(cli_parse(8, a1, opts, 3, pos, 2, &npos, err, sizeof(err)), 0);
    assert_string_equal(exec, "tr a-z A-Z");
    assert_string_equal(n, "7");
    assert_true(wait);
    assert_int_equal(npos, 2);
    assert_string_equal(pos[0], "12");
    assert_string_equal(pos[1], "-x");

    char *a2[] = {"map", "--bogus"};
    assert_int_equal(cli_parse(2, a2, opts, 3, pos, 2, &npos, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unknown option '--bogus'");
    char *a3[] = {"map", "--exec"};
    assert_int_equal(cli_parse(2, a3, opts, 3, pos, 2, &npos, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "--exec needs a value");
    char *a4[] = {"map", "--wait=1"};
    assert_int_equal(cli_parse(2, a4, opts, 3, pos, 2, &npos, err, sizeof(err)), -EINVAL);
    char *a5[] = {"map", "a", "b", "c"};
    assert_int_equal(cli_parse(4, a5, opts, 3, pos, 2, &npos, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "unexpected argument 'c'");
    char *a6[] = {"map", "--exec", "x", "--help"};
    assert_int_equal(cli_parse(4, a6, opts, 3, pos, 2, &npos, err, sizeof(err)),
                     CLI_PARSE_HELP);
    /* "-" is stdin, a value, not an option. */
    char *a7[] = {"map", "-"};
    assert_int_equal(cli_parse(2, a7, opts, 3, pos, 2, &npos, err, sizeof(err)), 0);
    assert_int_equal(npos, 1);
}

static void
test_read_file_errors(void **state)
{
    char err[256];
    char *data;
    size_t len;

    (void)state;
    assert_int_equal(cli_read_file("/nonexistent/f.txt", &data, &len, err, sizeof(err)),
                     -ENOENT);
    assert_string_equal(err,
                        "cannot read '/nonexistent/f.txt': No such file or directory");
    assert_int_equal(cli_read_file("/", &data, &len, err, sizeof(err)), -EISDIR);
}

static void
test_default_socket(void **state)
{
    char buf[256];
    char tiny[4];

    (void)state;
    setenv("BURST_SOCKET", "/tmp/x.sock", 1);
    assert_int_equal(burst_default_socket(buf, sizeof(buf)), 11);
    assert_string_equal(buf, "/tmp/x.sock");
    assert_int_equal(burst_default_socket(tiny, sizeof(tiny)), -ENAMETOOLONG);
    unsetenv("BURST_SOCKET");
    setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
    assert_true(burst_default_socket(buf, sizeof(buf)) > 0);
    assert_string_equal(buf, "/run/user/1234/burst.sock");
    unsetenv("XDG_RUNTIME_DIR");
    assert_true(burst_default_socket(buf, sizeof(buf)) > 0);
    char want[64];
    snprintf(want, sizeof(want), "/run/user/%u/burst.sock", (unsigned)getuid());
    assert_string_equal(buf, want);
}

/* ---- a scripted fake daemon ------------------------------------------------- */

/*
 * The fake serves one connection on a thread.  It answers hello itself and
 * hands every other request to the test's handler, which replies (and may
 * push events) through the fk_* helpers.  The server thread never asserts:
 * it records what it saw, and the test checks that after fake_stop().
 */
struct fake;
typedef void (*fake_handler)(struct fake *f, const struct proto_request *req);

struct fake {
    char dir[64];
    char path[128];
    int lfd;
    int fd;
    pthread_t th;
    fake_handler handle;
    uint32_t version;           /* what hello answers */
    uint32_t revision;          /* and the revision it announces */
    struct proto_limits limits; /* what hello announces */

    /* What the server saw. */
    int seen[PROTO_OP_COUNT_];
    uint64_t sub_from;
    uint32_t results_from[16];
    uint32_t results_max[16];
    bool results_final[16];
    int nresults;
    int status_calls;
    char put_hash[65];
    size_t put_len;
    int submit_mode;
    uint32_t submit_n;
    int submit_kind;
    int fn_kind;
    char fn_hash[65];
    char fn_symbol[64];
    char blob[64];
    bool submit_subscribe;
};

static void
fk_write(struct fake *f, const struct proto_buf *b)
{
    size_t off = 0;

    while (off < b->len) {
        ssize_t w = send(f->fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        off += (size_t)w;
    }
}

static void
fk_reply(struct fake *f, struct proto_reply *rep)
{
    struct proto_buf b;

    proto_buf_init(&b);
    if (proto_encode_reply(&b, rep) == 0)
        fk_write(f, &b);
    proto_buf_free(&b);
}

static void
fk_ok(struct fake *f, const struct proto_request *req)
{
    struct proto_reply rep = {.op = req->op, .re = req->id, .ok = true};
    fk_reply(f, &rep);
}

static void
fk_error(struct fake *f, uint64_t re, int code, const char *msg)
{
    struct proto_buf b;

    proto_buf_init(&b);
    if (proto_encode_error(&b, re, code, "%s", msg) == 0)
        fk_write(f, &b);
    proto_buf_free(&b);
}

static void
fk_events(struct fake *f, uint64_t job, struct proto_event_item *items, uint32_t n)
{
    struct proto_events ev = {.job = job, .nitems = n, .items = items};
    struct proto_buf b;

    proto_buf_init(&b);
    if (proto_encode_events(&b, &ev) == 0)
        fk_write(f, &b);
    proto_buf_free(&b);
}

static void
fk_status(struct fake *f, const struct proto_request *req, int kind, int state,
          uint32_t total, uint64_t last_seq)
{
    struct proto_reply rep = {.op = PROTO_OP_STATUS, .re = req->id, .ok = true};
    struct proto_job_info *j = &rep.u.status;

    j->id = req->u.job.job;
    j->owner_uid = 1000;
    j->kind = kind;
    j->state = state;
    j->total = total;
    j->counts[state == BURST_JOB_SUCCEEDED ? BURST_TASK_SUCCEEDED : BURST_TASK_QUEUED] =
        total;
    j->created_ms = 1700000000000;
    j->backend = proto_str_c("local");
    j->name = proto_str_c("fake");
    j->function = proto_str_c("exec: cat");
    j->error = proto_str_c(state == BURST_JOB_FAILED ? "task 1 failed" : NULL);
    j->last_seq = last_seq;
    fk_reply(f, &rep);
}

static void
fk_hello(struct fake *f, const struct proto_request *req)
{
    struct proto_reply rep = {.op = PROTO_OP_HELLO, .re = req->id, .ok = true};

    rep.u.hello.version = f->version;
    rep.u.hello.server = proto_str_c("fake 0");
    rep.u.hello.uid = 1000;
    rep.u.hello.limits = f->limits;
    rep.u.hello.revision = f->revision;
    fk_reply(f, &rep);
}

static void *
fake_main(void *arg)
{
    struct fake *f = arg;
    struct frame_reader rd;
    struct proto_limits lim;

    proto_limits_default(&lim);
    f->fd = accept(f->lfd, NULL, NULL);
    if (f->fd < 0)
        return NULL;
    frame_reader_init(&rd, PROTO_FRAME_HARD_MAX);
    for (;;) {
        char *base;
        size_t avail;
        if (frame_reader_space(&rd, 65536, &base, &avail) < 0)
            break;
        ssize_t r = recv(f->fd, base, avail, 0);
        if (r <= 0)
            break;
        frame_reader_commit(&rd, (size_t)r);
        const char *payload;
        size_t len;
        int rc;
        while ((rc = frame_next(&rd, &payload, &len)) == 1) {
            struct proto_request req;
            struct proto_error err;
            uint64_t id;
            if (proto_decode_request(payload, len, &lim, &req, &err, &id) < 0) {
                fk_error(f, id, err.code, "bad request");
                continue;
            }
            if (req.op < PROTO_OP_COUNT_)
                f->seen[req.op]++;
            if (req.op == PROTO_OP_HELLO)
                fk_hello(f, &req);
            else
                f->handle(f, &req);
            proto_request_free(&req);
        }
        if (rc < 0)
            break;
    }
    frame_reader_free(&rd);
    close(f->fd);
    return NULL;
}

static void
fake_start(struct fake *f, fake_handler handle)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    memset(f, 0, sizeof(*f));
    f->handle = handle;
    f->version = PROTO_VERSION;
    f->revision = PROTO_REVISION;
    proto_limits_default(&f->limits);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test-client-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/s.sock", f->dir);
    memcpy(sa.sun_path, f->path, strlen(f->path) + 1);
    f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 4), 0);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

/* Call after burst_close(): the server thread ends at end of stream. */
static void
fake_stop(struct fake *f)
{
    pthread_join(f->th, NULL);
    close(f->lfd);
    unlink(f->path);
    rmdir(f->dir);
}

static burst_client *
fake_connect(struct fake *f)
{
    burst_client *c = NULL;
    char err[512];

    int rc = burst_connect_ex(f->path, &c, err, sizeof(err));
    if (rc != 0)
        fail_msg("connect: %s", err);
    return c;
}

/* ---- libburst against the fake ---------------------------------------------- */

static void
h_status(struct fake *f, const struct proto_request *req)
{
    if (req->op != PROTO_OP_STATUS) {
        fk_error(f, req->id, BURST_EUNKNOWNOP, "unexpected");
        return;
    }
    if (req->u.job.job == 7)
        fk_status(f, req, BURST_KIND_MAP, BURST_JOB_RUNNING, 3, 4);
    else
        fk_error(f, req->id, BURST_ENOJOB, "no such job 8");
}

static void
test_status_and_errors(void **state)
{
    struct fake f;
    burst_job_info info;

    (void)state;
    fake_start(&f, h_status);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_status(c, 7, &info), 0);
    assert_int_equal(info.id, 7);
    assert_int_equal(info.state, BURST_JOB_RUNNING);
    assert_int_equal(info.total, 3);
    assert_int_equal(info.counts[BURST_TASK_QUEUED], 3);
    assert_int_equal(info.last_seq, 4);
    assert_int_equal(info.owner_uid, 1000);
    assert_string_equal(info.backend, "local");
    assert_string_equal(info.name, "fake");
    assert_string_equal(info.function, "exec: cat");
    assert_int_equal(burst_status(c, 8, &info), BURST_ENOJOB);
    assert_string_equal(burst_last_error(c), "no such job 8");
    /* The connection is still good after a refusal. */
    assert_int_equal(burst_status(c, 7, &info), 0);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_HELLO], 1);
    assert_int_equal(f.seen[PROTO_OP_STATUS], 3);
}

static void
test_connect_failures(void **state)
{
    struct fake f;
    burst_client *c = NULL;
    char err[512];

    (void)state;
    int rc = burst_connect_ex("/nonexistent/dir/burst.sock", &c, err, sizeof(err));
    assert_int_equal(rc, BURST_ECONNECT);
    assert_null(c);
    assert_string_equal(err,
                        "cannot connect to /nonexistent/dir/burst.sock: No such file or "
                        "directory");

    fake_start(&f, h_status);
    f.version = PROTO_VERSION + 1;
    rc = burst_connect_ex(f.path, &c, err, sizeof(err));
    assert_int_equal(rc, BURST_EVERSION);
    assert_null(c);
    assert_non_null(strstr(err, "protocol version"));
    fake_stop(&f);
}

/* wait: events (one stale, then task changes and the end) arrive before
 * the subscribe reply; the client must still see the end. */
static void
h_wait(struct fake *f, const struct proto_request *req)
{
    struct proto_task_change tc[2] = {{0, BURST_TASK_SUCCEEDED, 1},
                                      {1, BURST_TASK_FAILED, 1}};
    struct proto_event_item items[3] = {
        {.seq = 3, .type = BURST_EV_JOB, .job_state = BURST_JOB_RUNNING},
        {.seq = 5, .type = BURST_EV_TASK, .ntasks = 2, .tasks = tc},
        {.seq = 6, .type = BURST_EV_JOB, .job_state = BURST_JOB_FAILED},
    };

    switch (req->op) {
    case PROTO_OP_STATUS:
        f->status_calls++;
        fk_status(f, req, BURST_KIND_MAP,
                  f->status_calls == 1 ? BURST_JOB_RUNNING : BURST_JOB_FAILED, 2, 4);
        break;
    case PROTO_OP_SUBSCRIBE:
        f->sub_from = req->u.subscribe.from_seq;
        fk_events(f, req->u.subscribe.job, items, 1);
        fk_events(f, req->u.subscribe.job, items + 1, 2);
        fk_ok(f, req);
        break;
    case PROTO_OP_UNSUBSCRIBE:
        fk_ok(f, req);
        break;
    default:
        fk_error(f, req->id, BURST_EUNKNOWNOP, "unexpected");
    }
}

static void
test_wait_with_interleaved_events(void **state)
{
    struct fake f;
    burst_job_info info;

    (void)state;
    fake_start(&f, h_wait);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_wait(c, 7, &info), BURST_EJOBFAILED);
    assert_int_equal(info.state, BURST_JOB_FAILED);
    assert_string_equal(burst_last_error(c), "job 7 failed: task 1 failed");
    /* Nothing was subscribed by the user: nothing is left to deliver. */
    assert_int_equal(burst_dispatch(c), 0);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.sub_from, 4);
    assert_int_equal(f.seen[PROTO_OP_SUBSCRIBE], 1);
    /* The job's final event ended the subscription on the daemon's side. */
    assert_int_equal(f.seen[PROTO_OP_UNSUBSCRIBE], 0);
    assert_int_equal(f.status_calls, 2); /* no fallback poll was needed */
}

/* results in two pages; the third task failed and has no data.  Only
 * results requests are answered: burst_results asks with final and needs
 * no status to learn the job's kind. */
static void
h_results(struct fake *f, const struct proto_request *req)
{
    struct proto_result_item p1[2] = {{0, true, {"zero", 4}}, {1, true, {"", 0}}};
    struct proto_result_item p2[2] = {{2, false, {NULL, 0}}, {3, true, {"th\0ree", 6}}};

    /* Only a daemon of revision 0 is asked (it ignores final). */
    if (req->op == PROTO_OP_STATUS && f->revision == 0) {
        fk_status(f, req, BURST_KIND_MAP_REDUCE, BURST_JOB_SUCCEEDED, 2, 5);
        return;
    }
    if (req->op != PROTO_OP_RESULTS) {
        fk_error(f, req->id, BURST_EUNKNOWNOP, "unexpected");
        return;
    }
    if (f->nresults < 16) {
        f->results_from[f->nresults] = req->u.results.from;
        f->results_max[f->nresults] = req->u.results.max_bytes;
        f->results_final[f->nresults] = req->u.results.final;
        f->nresults++;
    }
    struct proto_reply rep = {.op = PROTO_OP_RESULTS, .re = req->id, .ok = true};
    rep.u.results.n = 2;
    rep.u.results.items = req->u.results.from == 0 ? p1 : p2;
    rep.u.results.more = req->u.results.from == 0;
    fk_reply(f, &rep);
}

struct got {
    int n;
    uint32_t index[8];
    char data[8][16];
    size_t len[8];
    bool null[8];
};

static int
on_got(void *arg, uint32_t index, const void *data, size_t len)
{
    struct got *g = arg;

    if (g->n < 8) {
        g->index[g->n] = index;
        g->null[g->n] = data == NULL;
        g->len[g->n] = len;
        if (data != NULL && len < 16)
            memcpy(g->data[g->n], data, len);
        g->n++;
    }
    return 0;
}

static void
test_results_pages(void **state)
{
    struct fake f;
    struct got g = {0};

    (void)state;
    fake_start(&f, h_results);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_results(c, 7, on_got, &g), 0);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(g.n, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(g.index[i], (uint32_t)i);
    assert_memory_equal(g.data[0], "zero", 4);
    assert_false(g.null[1]);
    assert_int_equal(g.len[1], 0);
    assert_true(g.null[2]);
    assert_int_equal(g.len[3], 6);
    assert_memory_equal(g.data[3], "th\0ree", 6);
    assert_int_equal(f.nresults, 2);
    assert_int_equal(f.results_from[0], 0);
    assert_int_equal(f.results_from[1], 2);
    assert_true(f.results_final[0]);
    assert_true(f.results_final[1]);
    assert_int_equal(f.seen[PROTO_OP_STATUS], 0);
    assert_int_equal(f.seen[PROTO_OP_RESULTS], 2);
}

/* A user subscription driven by poll() + burst_dispatch(). */
static void
h_events(struct fake *f, const struct proto_request *req)
{
    struct proto_task_change t0 = {0, BURST_TASK_RUNNING, 1};
    struct proto_task_change t1 = {0, BURST_TASK_SUCCEEDED, 1};
    struct proto_event_item a[2] = {
        {.seq = 1, .type = BURST_EV_TASK, .ntasks = 1, .tasks = &t0},
        {.seq = 2, .type = BURST_EV_TASK, .ntasks = 1, .tasks = &t1},
    };
    struct proto_event_item dup = {
        .seq = 2, .type = BURST_EV_JOB, .job_state = BURST_JOB_FAILED};
    struct proto_event_item end = {
        .seq = 3, .type = BURST_EV_JOB, .job_state = BURST_JOB_SUCCEEDED};

    if (req->op != PROTO_OP_SUBSCRIBE) {
        fk_ok(f, req);
        return;
    }
    f->sub_from = req->u.subscribe.from_seq;
    fk_ok(f, req);
    fk_events(f, 9, a, 2);
    fk_events(f, 10, &end, 1); /* a job nobody subscribed to */
    fk_events(f, 9, &dup, 1);  /* a replayed sequence number */
    fk_events(f, 9, &end, 1);
}

struct evlog {
    int n;
    burst_event ev[8];
};

static void
on_event(void *arg, const burst_event *ev)
{
    struct evlog *l = arg;

    if (l->n < 8)
        l->ev[l->n] = *ev;
    l->n++;
}

static void
test_dispatch_events(void **state)
{
    struct fake f;
    struct evlog log = {0};

    (void)state;
    fake_start(&f, h_events);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_subscribe(c, 9, 0, on_event, &log), 0);
    /* Poll until the job's end arrives; the timeout is only a safety net. */
    for (int rounds = 0; rounds < 1000; rounds++) {
        bool ended = log.n > 0 && log.ev[log.n - 1].type == BURST_EV_JOB;
        if (ended)
            break;
        struct pollfd p = {.fd = burst_fd(c), .events = POLLIN};
        if (burst_pending(c) == 0)
            assert_true(poll(&p, 1, 10000) >= 0);
        assert_true(burst_dispatch(c) >= 0);
    }
    assert_int_equal(log.n, 3);
    assert_int_equal(log.ev[0].seq, 1);
    assert_int_equal(log.ev[0].type, BURST_EV_TASK);
    assert_int_equal(log.ev[0].task_state, BURST_TASK_RUNNING);
    assert_int_equal(log.ev[1].seq, 2);
    assert_int_equal(log.ev[1].task_state, BURST_TASK_SUCCEEDED);
    assert_int_equal(log.ev[2].seq, 3);
    assert_int_equal(log.ev[2].job_state, BURST_JOB_SUCCEEDED);
    assert_int_equal(log.ev[2].job, 9);
    assert_int_equal(burst_unsubscribe(c, 9), 0);
    /* After the final event there is nothing to tell the daemon; before
     * it, the daemon is told. */
    assert_int_equal(f.seen[PROTO_OP_UNSUBSCRIBE], 0);
    assert_int_equal(burst_subscribe(c, 11, 0, on_event, &log), 0);
    assert_int_equal(burst_unsubscribe(c, 11), 0);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_SUBSCRIBE], 2);
    assert_int_equal(f.seen[PROTO_OP_UNSUBSCRIBE], 1);
}

/* A daemon of revision 0 (before results' final and subscriptions that
 * end by themselves): burst_results learns the kind from the status and
 * keeps the reducer's output alone; an ended subscription is still
 * unsubscribed. */
static void
test_old_daemon(void **state)
{
    struct fake f;
    struct got g = {0};

    (void)state;
    fake_start(&f, h_results);
    f.revision = 0;
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_results(c, 7, on_got, &g), 0);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_STATUS], 1);
    assert_int_equal(f.nresults, 1);
    assert_int_equal(f.results_from[0], 2);
    assert_false(f.results_final[0]);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.index[0], 2);
    assert_true(g.null[0]);

    struct evlog log = {0};
    fake_start(&f, h_events);
    f.revision = 0;
    c = fake_connect(&f);
    assert_int_equal(burst_subscribe(c, 9, 0, on_event, &log), 0);
    for (int rounds = 0;
         rounds < 1000 && !(log.n > 0 && log.ev[log.n - 1].type == BURST_EV_JOB);
         rounds++) {
        struct pollfd p = {.fd = burst_fd(c), .events = POLLIN};
        if (burst_pending(c) == 0)
            assert_true(poll(&p, 1, 10000) >= 0);
        assert_true(burst_dispatch(c) >= 0);
    }
    assert_int_equal(log.ev[log.n - 1].job_state, BURST_JOB_SUCCEEDED);
    assert_int_equal(burst_unsubscribe(c, 9), 0);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_UNSUBSCRIBE], 1);
}

/* Submissions: limits checked before sending, libraries uploaded once. */
static void
h_submit(struct fake *f, const struct proto_request *req)
{
    if (req->op == PROTO_OP_PUT_FN) {
        proto_str_copy(f->put_hash, sizeof(f->put_hash), req->u.put_fn.hash);
        f->put_len = req->u.put_fn.data.len;
        fk_ok(f, req);
        return;
    }
    if (req->op != PROTO_OP_SUBMIT) {
        fk_error(f, req->id, BURST_EUNKNOWNOP, "unexpected");
        return;
    }
    const struct proto_submit *s = &req->u.submit;
    f->submit_kind = s->kind;
    f->submit_mode = s->input_mode;
    f->submit_n = s->ninputs;
    f->fn_kind = s->fn.kind;
    proto_str_copy(f->fn_hash, sizeof(f->fn_hash), s->fn.hash);
    proto_str_copy(f->fn_symbol, sizeof(f->fn_symbol), s->fn.symbol);
    proto_str_copy(f->blob, sizeof(f->blob), s->blob);
    struct proto_reply rep = {.op = PROTO_OP_SUBMIT, .re = req->id, .ok = true};
    rep.u.submit.job = 42;
    rep.u.submit.total = s->ninputs;
    fk_reply(f, &rep);
}

static void
test_submit_limits(void **state)
{
    struct fake f;
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    uint64_t job = 99;

    (void)state;
    fake_start(&f, h_submit);
    f.limits.max_frame = 4096;
    burst_client *c = fake_connect(&f);
    char *big = calloc(1, 10000);
    assert_non_null(big);
    burst_bytes in = {big, 10000};
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), BURST_ETOOBIG);
    assert_int_equal(job, 0);
    assert_non_null(strstr(burst_last_error(c), "max_frame"));
    /* The connection is still good, and a small job goes through. */
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\nb\nc", 5, NULL, &job), 0);
    assert_int_equal(job, 42);
    burst_close(c);
    free(big);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_SUBMIT], 1);
    assert_int_equal(f.submit_mode, PROTO_INPUT_LINES);
    assert_int_equal(f.submit_n, 3);
    assert_string_equal(f.blob, "a\nb\nc");
    assert_int_equal(f.fn_kind, BURST_FN_EXEC);
}

static void
test_submit_so(void **state)
{
    struct fake f;
    burst_fn fn = {.kind = BURST_FN_SO, .path = wc_fns_path, .symbol = "count_words"};
    burst_bytes in = {"one two\n", 8};
    char want[65];
    size_t len;
    uint64_t job;

    (void)state;
    char *so = slurp(wc_fns_path, &len);
    assert_int_equal(solib_sha256_hex(so, len, want), 0);
    free(so);

    fake_start(&f, h_submit);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(job, 42);
    /* The same library again: no second upload. */
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);

    fn.symbol = "nope";
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), BURST_ENOSYM);
    char msg[600];
    snprintf(msg, sizeof(msg), "%s: symbol 'nope' not found", wc_fns_path);
    assert_string_equal(burst_last_error(c), msg);

    fn.symbol = "count_words";
    fn.path = "/nonexistent/lib.so";
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), BURST_EINPUT);
    assert_string_equal(burst_last_error(c),
                        "cannot read /nonexistent/lib.so: No such file or directory");

    char text[128];
    snprintf(text, sizeof(text), "%s/not-elf.so", f.dir);
    FILE *t = fopen(text, "w");
    assert_non_null(t);
    fputs("just text\n", t);
    fclose(t);
    fn.path = text;
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), -ENOEXEC);
    snprintf(msg, sizeof(msg), "%s is not an ELF shared library", text);
    assert_string_equal(burst_last_error(c), msg);
    unlink(text);

    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_PUT_FN], 1);
    assert_int_equal(f.seen[PROTO_OP_SUBMIT], 2);
    assert_string_equal(f.put_hash, want);
    assert_int_equal(f.put_len, len);
    assert_int_equal(f.fn_kind, BURST_FN_SO);
    assert_string_equal(f.fn_hash, want);
    assert_string_equal(f.fn_symbol, "count_words");
    assert_int_equal(f.submit_mode, PROTO_INPUT_ARRAY);
}

/* Writes len bytes of data to path, replacing the file in place (same
 * inode) or, with renamed, through a new file renamed over it. */
static void
write_lib(const char *path, const char *data, size_t len, bool renamed)
{
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    const char *to = renamed ? tmp : path;
    FILE *f = fopen(to, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    if (renamed)
        assert_int_equal(rename(tmp, path), 0);
}

/* A library already sent on this connection is not read and hashed again
 * for each submission while its file is unchanged, and is as soon as the
 * file changes in any way. */
static void
test_submit_so_known(void **state)
{
    struct fake f;
    burst_bytes in = {"one two\n", 8};
    char lib[128], hash_a[65], hash_b[65];
    size_t len;
    uint64_t job;

    (void)state;
    char *a = slurp(wc_fns_path, &len);
    /* Bytes after the sections keep it a valid library of another hash. */
    char *b = malloc(len + 1);
    assert_non_null(b);
    memcpy(b, a, len);
    b[len] = '\n';
    assert_int_equal(solib_sha256_hex(a, len, hash_a), 0);
    assert_int_equal(solib_sha256_hex(b, len + 1, hash_b), 0);

    fake_start(&f, h_submit);
    snprintf(lib, sizeof(lib), "%s/lib.so", f.dir);
    write_lib(lib, a, len, false);
    burst_fn fn = {.kind = BURST_FN_SO, .path = lib, .symbol = "count_words"};
    burst_client *c = fake_connect(&f);

    /* Just written: its ctime could still be that of a change to come. */
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(c->solib_reads, 2);
    assert_string_equal(f.fn_hash, hash_a);

    /* Settled (the test's clock): read once, then known. */
    c->solib_settle_ms = 0;
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(c->solib_reads, 3);
    assert_string_equal(f.fn_hash, hash_a);

    /* Another symbol of the same file is checked once on its own. */
    fn.symbol = "nope";
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), BURST_ENOSYM);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), BURST_ENOSYM);
    assert_int_equal(c->solib_reads, 5);
    fn.symbol = "count_words";

    /* Rewritten in place: read, hashed and uploaded again. */
    write_lib(lib, b, len + 1, false);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(c->solib_reads, 6);
    assert_string_equal(f.fn_hash, hash_b);
    assert_string_equal(f.put_hash, hash_b);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(c->solib_reads, 6);

    /* Replaced by a rename (a new inode, as `cp` to a temporary and `mv`
     * or a linker writing a new file do). */
    write_lib(lib, a, len, true);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), 0);
    assert_int_equal(c->solib_reads, 7);
    assert_string_equal(f.fn_hash, hash_a);

    /* Gone: the submission fails as before, and nothing stale is used. */
    assert_int_equal(unlink(lib), 0);
    assert_int_equal(burst_submit_map(c, &fn, &in, 1, NULL, &job), BURST_EINPUT);

    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_PUT_FN], 2);
    assert_int_equal(f.seen[PROTO_OP_SUBMIT], 8);
    free(a);
    free(b);
}

/* A daemon whose submit reply and the job's events (when subscribed) go
 * out in one write, so the client reads them together. */
static void
h_subscribed(struct fake *f, const struct proto_request *req)
{
    struct proto_task_change run = {0, BURST_TASK_RUNNING, 1};
    struct proto_task_change ok = {0, BURST_TASK_SUCCEEDED, 1};
    struct proto_event_item items[3] = {
        {.seq = 1, .type = BURST_EV_TASK, .ntasks = 1, .tasks = &run},
        {.seq = 2, .type = BURST_EV_TASK, .ntasks = 1, .tasks = &ok},
        {.seq = 3, .type = BURST_EV_JOB, .job_state = BURST_JOB_SUCCEEDED},
    };
    struct proto_result_item res = {0, true, {"r", 1}};

    switch (req->op) {
    case PROTO_OP_SUBMIT: {
        f->submit_subscribe = req->u.submit.subscribe;
        struct proto_reply rep = {.op = PROTO_OP_SUBMIT, .re = req->id, .ok = true};
        rep.u.submit.job = 42;
        rep.u.submit.total = 1;
        struct proto_events ev = {.job = 42, .nitems = 3, .items = items};
        struct proto_buf b;
        proto_buf_init(&b);
        if (proto_encode_reply(&b, &rep) == 0 &&
            (!f->submit_subscribe || proto_encode_events(&b, &ev) == 0))
            fk_write(f, &b);
        proto_buf_free(&b);
        break;
    }
    case PROTO_OP_STATUS:
        fk_status(f, req, BURST_KIND_MAP, BURST_JOB_SUCCEEDED, 1, 3);
        break;
    case PROTO_OP_RESULTS: {
        struct proto_reply rep = {.op = PROTO_OP_RESULTS, .re = req->id, .ok = true};
        rep.u.results.n = 1;
        rep.u.results.items = &res;
        fk_reply(f, &rep);
        break;
    }
    default:
        fk_error(f, req->id, BURST_EUNKNOWNOP, "unexpected");
    }
}

/* burst_opts.on_event: the submission subscribes in its own round trip, and
 * events read together with its reply reach the callback; burst_map and
 * burst_call follow their job the same way, and need no unsubscribe after
 * its final event. */
static void
test_submit_subscribed(void **state)
{
    struct fake f;
    struct evlog log = {0};
    burst_fn fn = {.kind = BURST_FN_EXEC, .cmd = "cat"};
    uint64_t job = 0;

    (void)state;
    fake_start(&f, h_subscribed);
    burst_client *c = fake_connect(&f);
    burst_opts opts = BURST_OPTS_INIT;
    opts.on_event = on_event;
    opts.event_arg = &log;
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\n", 2, &opts, &job), 0);
    assert_int_equal(job, 42);
    assert_true(f.submit_subscribe);
    /* Already read with the reply: nothing to poll for. */
    assert_true(burst_pending(c) > 0);
    assert_int_equal(burst_dispatch(c), 3);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.ev[0].task_state, BURST_TASK_RUNNING);
    assert_int_equal(log.ev[1].task_state, BURST_TASK_SUCCEEDED);
    assert_int_equal(log.ev[2].job_state, BURST_JOB_SUCCEEDED);
    assert_int_equal(log.ev[2].job, 42);
    assert_int_equal(burst_unsubscribe(c, 42), 0);

    /* Without a callback, no subscription is asked for. */
    assert_int_equal(burst_submit_map_lines(c, &fn, "a\n", 2, NULL, &job), 0);
    assert_false(f.submit_subscribe);

    burst_bytes in = {"a\n", 2};
    burst_bytes *res = NULL;
    assert_int_equal(burst_map(c, &fn, &in, 1, NULL, &res), 0);
    assert_true(f.submit_subscribe);
    assert_non_null(res);
    assert_int_equal(res[0].len, 1);
    assert_memory_equal(res[0].data, "r", 1);
    burst_free_results(res, 1);
    void *out = NULL;
    size_t out_len = 0;
    assert_int_equal(burst_call(c, &fn, "a\n", 2, NULL, &out, &out_len), 0);
    assert_int_equal(out_len, 1);
    free(out);
    assert_int_equal(log.n, 3); /* the user's callback saw only its job */
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(f.seen[PROTO_OP_SUBMIT], 4);
    assert_int_equal(f.seen[PROTO_OP_SUBSCRIBE], 0);
    assert_int_equal(f.seen[PROTO_OP_UNSUBSCRIBE], 0);
    /* burst_map and burst_call learnt that their job succeeded from its
     * final event, and ask for results with final: no status at all. */
    assert_int_equal(f.seen[PROTO_OP_STATUS], 0);
}

/* imap_unordered: task 0 has already succeeded when the client looks; task
 * 2 fails and task 1 succeeds afterwards, announced by events. */
static void
h_imap(struct fake *f, const struct proto_request *req)
{
    struct proto_task_change fail2 = {2, BURST_TASK_FAILED, 1};
    struct proto_task_change ok1 = {1, BURST_TASK_SUCCEEDED, 1};
    struct proto_event_item items[3] = {
        {.seq = 1, .type = BURST_EV_TASK, .ntasks = 1, .tasks = &fail2},
        {.seq = 2, .type = BURST_EV_TASK, .ntasks = 1, .tasks = &ok1},
        {.seq = 3, .type = BURST_EV_JOB, .job_state = BURST_JOB_FAILED},
    };
    struct proto_task_info tasks[3] = {
        {.index = 0, .state = BURST_TASK_SUCCEEDED, .attempts = 1},
        {.index = 1, .state = BURST_TASK_RUNNING, .attempts = 1},
        {.index = 2, .state = BURST_TASK_QUEUED},
    };

    switch (req->op) {
    case PROTO_OP_STATUS:
        f->status_calls++;
        fk_status(f, req, BURST_KIND_MAP,
                  f->status_calls == 1 ? BURST_JOB_RUNNING : BURST_JOB_FAILED, 3, 0);
        break;
    case PROTO_OP_SUBSCRIBE:
    case PROTO_OP_UNSUBSCRIBE:
        fk_ok(f, req);
        break;
    case PROTO_OP_TASKS: {
        struct proto_reply rep = {.op = PROTO_OP_TASKS, .re = req->id, .ok = true};
        if (f->seen[PROTO_OP_TASKS] > 1) {
            /* The final sweep: everything has ended. */
            tasks[1].state = BURST_TASK_SUCCEEDED;
            tasks[2].state = BURST_TASK_FAILED;
        }
        rep.u.tasks.n = 3;
        rep.u.tasks.tasks = tasks;
        fk_reply(f, &rep);
        break;
    }
    case PROTO_OP_RESULTS: {
        uint32_t from = req->u.results.from;
        char data[8];
        snprintf(data, sizeof(data), "r%u", from);
        struct proto_result_item it = {from, true, {data, strlen(data)}};
        struct proto_reply rep = {.op = PROTO_OP_RESULTS, .re = req->id, .ok = true};
        if (f->nresults < 16) {
            f->results_from[f->nresults] = from;
            f->results_max[f->nresults] = req->u.results.max_bytes;
            f->results_final[f->nresults] = req->u.results.final;
            f->nresults++;
        }
        rep.u.results.n = 1;
        rep.u.results.items = &it;
        fk_reply(f, &rep);
        if (from == 0)
            fk_events(f, 7, items, 3);
        break;
    }
    default:
        fk_error(f, req->id, BURST_EUNKNOWNOP, "unexpected");
    }
}

static void
test_imap_unordered(void **state)
{
    struct fake f;
    struct got g = {0};

    (void)state;
    fake_start(&f, h_imap);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_imap_unordered(c, 7, on_got, &g), BURST_EJOBFAILED);
    burst_close(c);
    fake_stop(&f);
    assert_int_equal(g.n, 3);
    assert_int_equal(g.index[0], 0);
    assert_memory_equal(g.data[0], "r0", 2);
    assert_int_equal(g.index[1], 2);
    assert_true(g.null[1]);
    assert_int_equal(g.index[2], 1);
    assert_memory_equal(g.data[2], "r1", 2);
    assert_int_equal(f.nresults, 2);
    assert_int_equal(f.results_max[0], 1);
    /* Every task is reported, a map_reduce job's map tasks too. */
    assert_false(f.results_final[0]);
    assert_false(f.results_final[1]);
    /* The events ended the wait: the silence fallback never had to ask
     * for the status (only the first and the final status calls). */
    assert_int_equal(f.status_calls, 2);
}

/* The daemon goes away in the middle of a call. */
static void
h_hangup(struct fake *f, const struct proto_request *req)
{
    (void)req;
    shutdown(f->fd, SHUT_RDWR);
}

static void
test_connection_lost(void **state)
{
    struct fake f;
    burst_job_info info;

    (void)state;
    fake_start(&f, h_hangup);
    burst_client *c = fake_connect(&f);
    assert_int_equal(burst_status(c, 1, &info), BURST_ECONNECT);
    assert_non_null(strstr(burst_last_error(c), "connection to burstd lost"));
    /* Every later call fails at once instead of hanging. */
    assert_int_equal(burst_status(c, 1, &info), BURST_ECONNECT);
    assert_true(burst_dispatch(c) < 0);
    burst_close(c);
    fake_stop(&f);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_elf_symbols),
        cmocka_unit_test(test_elf_not_a_library),
        cmocka_unit_test(test_elf_damaged),
        cmocka_unit_test(test_solib_read_errors),
        cmocka_unit_test(test_symbol_names),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_json_document),
        cmocka_unit_test(test_job_json_fields),
        cmocka_unit_test(test_table_layout),
        cmocka_unit_test(test_elapsed_format),
        cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_parse_so_and_state),
        cmocka_unit_test(test_parse_options),
        cmocka_unit_test(test_read_file_errors),
        cmocka_unit_test(test_default_socket),
        cmocka_unit_test(test_status_and_errors),
        cmocka_unit_test(test_connect_failures),
        cmocka_unit_test(test_wait_with_interleaved_events),
        cmocka_unit_test(test_results_pages),
        cmocka_unit_test(test_old_daemon),
        cmocka_unit_test(test_dispatch_events),
        cmocka_unit_test(test_submit_limits),
        cmocka_unit_test(test_submit_so),
        cmocka_unit_test(test_submit_so_known),
        cmocka_unit_test(test_submit_subscribed),
        cmocka_unit_test(test_imap_unordered),
        cmocka_unit_test(test_connection_lost),
    };

    if (argc != 2) {
        fprintf(stderr, "usage: %s WC_FNS.so\n", argv[0]);
        return 2;
    }
    wc_fns_path = argv[1];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
