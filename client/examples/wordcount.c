/*
 * client/examples/wordcount.c - libburst by example: counts the words of a
 * text with a map_reduce job (one map task per line, one reducer adding
 * the counts) twice, once with shell commands and once with the C
 * functions of wc_fns.so, and checks both totals against a count made
 * here.
 *
 *   usage: wordcount TEXT WC_FNS.so [SOCKET]
 *
 * Exit status 0 when the three counts agree, 1 when they do not, 2 on a
 * usage error, 3 when a job could not be run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <burst.h>

static char *
read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            char *b = realloc(buf, cap);
            if (b == NULL)
                goto fail;
            buf = b;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    *len = n;
    return buf;
fail:
    free(buf);
    fclose(f);
    return NULL;
}

/* Words as `wc -w` counts them in the C locale. */
static unsigned long long
count_local(const char *text, size_t len)
{
    unsigned long long words = 0;
    int in_word = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)text[i];
        int space = ch == ' ' || (ch >= '\t' && ch <= '\r');
        if (space)
            in_word = 0;
        else if (!in_word)
            words++, in_word = 1;
    }
    return words;
}

/* The reducer's output is the result at index total (burst.h). */
struct reduced {
    uint32_t index;
    char text[64];
    int found;
};

static int
on_result(void *arg, uint32_t index, const void *data, size_t len)
{
    struct reduced *r = arg;

    if (index != r->index || data == NULL)
        return 0;
    if (len >= sizeof(r->text))
        len = sizeof(r->text) - 1;
    memcpy(r->text, data, len);
    r->text[len] = '\0';
    r->found = 1;
    return 0;
}

/* Runs one word-count job and parses its total into *words. */
static int
run(burst_client *c, const char *label, const burst_fn *map, const burst_fn *reduce,
    const char *text, size_t len, unsigned long long *words)
{
    burst_opts opts = BURST_OPTS_INIT;
    burst_job_info info;
    uint64_t job;

    opts.chunksize = 16; /* many short lines: run them sixteen to a worker */
    opts.name = label;
    int rc = burst_submit_map_reduce_lines(c, map, reduce, text, len, &opts, &job);
    if (rc < 0) {
        fprintf(stderr, "wordcount: %s: cannot submit: %s\n", label, burst_last_error(c));
        return rc;
    }
    rc = burst_wait(c, job, &info);
    if (rc < 0) {
        fprintf(stderr, "wordcount: %s: %s\n", label, burst_last_error(c));
        return rc;
    }
    struct reduced r = {.index = info.total};
    rc = burst_results(c, job, on_result, &r);
    if (rc < 0) {
        fprintf(stderr, "wordcount: %s: results: %s\n", label, burst_last_error(c));
        return rc;
    }
    char *end;
    if (!r.found || (*words = strtoull(r.text, &end, 10), end == r.text)) {
        fprintf(stderr, "wordcount: %s: job %llu gave no number\n", label,
                (unsigned long long)job);
        return BURST_ENORESULT;
    }
    printf("%-6s %llu words (job %llu, %u lines)\n", label, *words,
           (unsigned long long)job, info.total);
    return 0;
}

int
main(int argc, char **argv)
{
    unsigned long long exec_words = 0, so_words = 0;
    char err[1200];
    burst_client *c;
    size_t len;

    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: wordcount TEXT WC_FNS.so [SOCKET]\n");
        return 2;
    }
    char *text = read_text(argv[1], &len);
    if (text == NULL) {
        perror(argv[1]);
        return 3;
    }
    unsigned long long local = count_local(text, len);

    if (burst_connect_ex(argc == 4 ? argv[3] : NULL, &c, err, sizeof(err)) < 0) {
        fprintf(stderr, "wordcount: %s\n", err);
        free(text);
        return 3;
    }
    const burst_fn exec_map = {.kind = BURST_FN_EXEC, .cmd = "wc -w"};
    const burst_fn exec_reduce = {.kind = BURST_FN_EXEC,
                                  .cmd = "awk '{ s += $1 } END { print s + 0 }'"};
    const burst_fn so_map = {
        .kind = BURST_FN_SO, .path = argv[2], .symbol = "count_words"};
    const burst_fn so_reduce = {
        .kind = BURST_FN_SO, .path = argv[2], .symbol = "sum_counts"};

    int status = 3;
    if (run(c, "exec", &exec_map, &exec_reduce, text, len, &exec_words) == 0 &&
        run(c, "so", &so_map, &so_reduce, text, len, &so_words) == 0) {
        printf("%-6s %llu words\n", "local", local);
        status = exec_words == local && so_words == local ? 0 : 1;
        printf("%s\n", status == 0 ? "all three counts agree" : "the counts differ");
    }
    burst_close(c);
    free(text);
    return status;
}
