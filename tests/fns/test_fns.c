/*
 * tests/fns/test_fns.c - functions for burst-worker's tests
 * (tests/test-worker.c), written as a function author would against
 * burst_function.h: map functions (echo, upper, fail3, crash_on_marker,
 * hang, write_stderr, log_on_marker, gobble, count_calls, count_calls_too) and
 * reducers (concat, sum_numbers).
 */
#include <burst_function.h>

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int echo(const burst_input *in, burst_output *out);
int upper(const burst_input *in, burst_output *out);
int fail3(const burst_input *in, burst_output *out);
int crash_on_marker(const burst_input *in, burst_output *out);
int hang(const burst_input *in, burst_output *out);
int write_stderr(const burst_input *in, burst_output *out);
int log_on_marker(const burst_input *in, burst_output *out);
int gobble(const burst_input *in, burst_output *out);
int count_calls(const burst_input *in, burst_output *out);
int count_calls_too(const burst_input *in, burst_output *out);
int concat(const burst_input *in, burst_output *out);
int sum_numbers(const burst_input *in, burst_output *out);

/* The result is the input. */
int
echo(const burst_input *in, burst_output *out)
{
    return burst_write(out, in->data, in->len);
}

/* The result is the input in upper case. */
int
upper(const burst_input *in, burst_output *out)
{
    if (in->len == 0)
        return 0;
    char *buf = malloc(in->len);
    if (buf == NULL)
        return 12;
    const unsigned char *p = in->data;
    for (size_t i = 0; i < in->len; i++)
        buf[i] = (char)toupper(p[i]);
    int rc = burst_write(out, buf, in->len);
    free(buf);
    return rc;
}

/* Writes a little, logs why, and fails with 3. */
int
fail3(const burst_input *in, burst_output *out)
{
    fprintf(stderr, "fail3: failing task %u on purpose\n", in->task_index);
    burst_write(out, "partial", 7);
    return 3;
}

/* Echoes, except that an input starting with "CRASH" dereferences NULL.
 * The pointer is laundered through a volatile so that the compiler cannot
 * turn the fault into a trap instruction: the test wants a real SIGSEGV. */
int
crash_on_marker(const burst_input *in, burst_output *out)
{
    if (in->len >= 5 && memcmp(in->data, "CRASH", 5) == 0) {
        fprintf(stderr, "crash_on_marker: about to crash\n");
        volatile int *volatile p = NULL;
        *p = 42;
    }
    return burst_write(out, in->data, in->len);
}

/* Never returns, unless the input starts with "noop" (then it echoes).
 * Any other non-empty input is a path where it first writes its pid, so a
 * test knows it is running and which process to look for. */
int
hang(const burst_input *in, burst_output *out)
{
    if (in->len >= 4 && memcmp(in->data, "noop", 4) == 0)
        return burst_write(out, in->data, in->len);
    if (in->len > 0 && in->len < 4096) {
        char path[4096];
        memcpy(path, in->data, in->len);
        path[in->len] = '\0';
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        FILE *f = fopen(tmp, "w");
        if (f != NULL) {
            fprintf(f, "%ld\n", (long)getpid());
            fclose(f);
            rename(tmp, path);
        }
    }
    for (;;)
        pause();
}

/* Logs one line naming the task and echoes. */
int
write_stderr(const burst_input *in, burst_output *out)
{
    fprintf(stderr, "stderr of task %u\n", in->task_index);
    printf("stdout of task %u\n", in->task_index);
    return burst_write(out, in->data, in->len);
}

/* Echoes, and logs a line naming the task only when the input starts with
 * "LOG": the worker must not carry one task's log into the next. */
int
log_on_marker(const burst_input *in, burst_output *out)
{
    if (in->len >= 3 && memcmp(in->data, "LOG", 3) == 0)
        fprintf(stderr, "log of task %u\n", in->task_index);
    return burst_write(out, in->data, in->len);
}

/* Allocates memory 1 MiB at a time and touches every page of it, until it
 * holds as many MiB as its input says (a decimal number, at most 4096).  It
 * then frees it all and writes "gobbled N MiB".  When an allocation fails
 * first, it logs how far it got, frees it all and returns 12 (ENOMEM), as a
 * careful function would, or, when the number is followed by '!', calls
 * abort() as a careless one would; under a cgroup limit the kernel kills it
 * instead.  Followed by '?', it aborts once it holds them all: a crash that
 * has nothing to do with memory.  The cap keeps it from taking the machine down if no
 * limit holds it.  It maps its memory with mmap rather than malloc so that it behaves the
 * same in a sanitized worker, whose allocator keeps what is freed in quarantine and dies
 * rather than return NULL. */
int
gobble(const burst_input *in, burst_output *out)
{
    enum { CHUNK = 1024 * 1024 };
    char num[16];
    size_t n = in->len < sizeof(num) - 1 ? in->len : sizeof(num) - 1;
    memcpy(num, in->len > 0 ? in->data : "", n);
    num[n] = '\0';
    char *end;
    long want = strtol(num, &end, 10);
    bool careless = *end == '!';
    bool crash = *end == '?';
    if (want < 0 || want > 4096)
        return 22;
    /* Each chunk's first bytes link to the previous one. */
    void **head = NULL;
    long got = 0;
    for (; got < want; got++) {
        void *p =
            mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            break;
        /* Touch every page, through a volatile so that it really happens. */
        volatile char *v = p;
        for (size_t off = 0; off < CHUNK; off += 4096)
            v[off] = 1;
        void **chunk = p;
        chunk[0] = head;
        head = chunk;
    }
    if ((got < want && careless) || crash)
        abort();
    while (head != NULL) {
        void **prev = head[0];
        munmap(head, CHUNK);
        head = prev;
    }
    if (got < want) {
        fprintf(stderr, "gobble: out of memory after %ld MiB\n", got);
        return 12;
    }
    char msg[64];
    int len = snprintf(msg, sizeof(msg), "gobbled %ld MiB", got);
    return burst_write(out, msg, (size_t)len);
}

/* How many times count_calls and count_calls_too were called in this
 * process: state that a warm executor keeps between invocations. */
static unsigned long calls;

/* The result is "N PID": this is the Nth call in the process PID.  An input
 * starting with "CRASH" crashes instead (see crash_on_marker). */
int
count_calls(const burst_input *in, burst_output *out)
{
    if (in->len >= 5 && memcmp(in->data, "CRASH", 5) == 0) {
        volatile int *volatile p = NULL;
        *p = 42;
    }
    char msg[64];
    int len = snprintf(msg, sizeof(msg), "%lu %ld", ++calls, (long)getpid());
    return burst_write(out, msg, (size_t)len);
}

/* count_calls under another name, sharing its count. */
int
count_calls_too(const burst_input *in, burst_output *out)
{
    return count_calls(in, out);
}

/* Reducer: the parts concatenated in order. */
int
concat(const burst_input *in, burst_output *out)
{
    for (size_t i = 0; i < in->nparts; i++) {
        if (burst_write(out, in->parts[i].data, in->parts[i].len) != 0)
            return 1;
    }
    return 0;
}

/* Reducer: the sum of every decimal integer in every part, as "N\n". */
int
sum_numbers(const burst_input *in, burst_output *out)
{
    long long sum = 0;
    for (size_t i = 0; i < in->nparts; i++) {
        char *s = malloc(in->parts[i].len + 1);
        if (s == NULL)
            return 12;
        if (in->parts[i].len > 0)
            memcpy(s, in->parts[i].data, in->parts[i].len);
        s[in->parts[i].len] = '\0';
        char *p = s;
        for (;;) {
            char *end;
            long long v = strtoll(p, &end, 10);
            if (end == p) {
                if (*p == '\0')
                    break;
                p++; /* not a number: skip a character */
                continue;
            }
            sum += v;
            p = end;
        }
        free(s);
    }
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld\n", sum);
    return burst_write(out, buf, (size_t)n);
}
