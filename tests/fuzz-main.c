/*
 * tests/fuzz-main.c - runs the fuzz target of tests/fuzz-proto.c without
 * libFuzzer: a fixed pseudo-random sequence of mutations of valid frames of
 * every message type, so every run of the 'proto-fuzz-smoke' test sees the
 * same inputs.  Usage: fuzz-proto-smoke [iterations] (default 200000).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-rng.h"

#include "burst.h"
#include "frame.h"
#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SEEDS 64
#define MAX_INPUT 8192

struct seed {
    char *data; /* owned: one frame, header included */
    size_t len;
};

static struct seed seeds[MAX_SEEDS];
static int nseeds;


static void
add_seed(struct proto_buf *b)
{
    if (nseeds == MAX_SEEDS || b->len > MAX_INPUT / 2) {
        proto_buf_reset(b);
        return;
    }
    seeds[nseeds].data = malloc(b->len);
    if (seeds[nseeds].data == NULL)
        abort();
    memcpy(seeds[nseeds].data, b->data, b->len);
    seeds[nseeds].len = b->len;
    nseeds++;
    proto_buf_reset(b);
}

static const char hash[] =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static void
make_seeds(void)
{
    struct proto_buf b;
    proto_buf_init(&b);
    struct proto_request q;
    struct proto_str inputs[3] = {proto_str_c("a\n"), proto_str_c(""),
                                  proto_str_c("xyz")};

    for (int op = PROTO_OP_HELLO; op < PROTO_OP_COUNT_; op++) {
        memset(&q, 0, sizeof(q));
        q.op = (enum proto_op)op;
        q.id = (uint64_t)op * 1000;
        switch (q.op) {
        case PROTO_OP_HELLO:
            q.u.hello.version = PROTO_VERSION;
            q.u.hello.client = proto_str_c("fuzz");
            break;
        case PROTO_OP_SUBMIT:
            q.u.submit.kind = BURST_KIND_MAP;
            q.u.submit.fn.kind = BURST_FN_EXEC;
            q.u.submit.fn.cmd = proto_str_c("cat");
            q.u.submit.ninputs = 3;
            q.u.submit.inputs = inputs;
            q.u.submit.opts.chunksize = 2;
            q.u.submit.opts.name = proto_str_c("n");
            q.u.submit.opts.backend = proto_str_c("local");
            break;
        case PROTO_OP_PUT_FN:
            q.u.put_fn.hash = proto_str_c(hash);
            q.u.put_fn.data = proto_str_c("\177ELF");
            break;
        case PROTO_OP_TASKS:
            q.u.tasks.state = BURST_TASK_FAILED;
            q.u.tasks.limit = 3;
            break;
        case PROTO_OP_QUOTA:
            q.u.quota.has_set = true;
            q.u.quota.set = 4;
            break;
        case PROTO_OP_SUBSCRIBE:
            q.u.subscribe.from_seq = 300;
            break;
        case PROTO_OP_JOBS:
            q.u.jobs.all = true;
            break;
        case PROTO_OP_RESULTS:
            q.u.results.job = 12;
            q.u.results.from = 1;
            q.u.results.final = true;
            break;
        default:
            q.u.job.job = 12;
            break;
        }
        if (proto_encode_request(&b, &q) == 0)
            add_seed(&b);
    }
    memset(&q, 0, sizeof(q));
    q.op = PROTO_OP_SUBMIT;
    q.id = 5;
    q.u.submit.kind = BURST_KIND_MAP_REDUCE;
    q.u.submit.fn.kind = BURST_FN_SO;
    q.u.submit.fn.hash = proto_str_c(hash);
    q.u.submit.fn.symbol = proto_str_c("fn");
    q.u.submit.reduce.kind = BURST_FN_EXEC;
    q.u.submit.reduce.cmd = proto_str_c("wc -l");
    q.u.submit.input_mode = PROTO_INPUT_LINES;
    q.u.submit.blob = proto_str_c("1\n2\n3");
    q.u.submit.opts.chunksize = 1;
    if (proto_encode_request(&b, &q) == 0)
        add_seed(&b);

    struct proto_job_info jobs[2];
    memset(jobs, 0, sizeof(jobs));
    for (int i = 0; i < 2; i++) {
        jobs[i].id = (uint64_t)i + 1;
        jobs[i].kind = i;
        jobs[i].state = BURST_JOB_RUNNING;
        jobs[i].counts[BURST_TASK_RUNNING] = 3;
        jobs[i].name = proto_str_c("job");
        jobs[i].function = proto_str_c("exec: cat");
    }
    struct proto_task_info tasks[2] = {
        {.index = 0, .state = BURST_TASK_SUCCEEDED, .reason = {NULL, 0}},
        {.index = 1,
         .state = BURST_TASK_FAILED,
         .exit_status = 1,
         .reason = proto_str_c("exit 1")},
    };
    struct proto_result_item items[2] = {
        {.index = 0, .has_data = true, .data = proto_str_c("out")},
        {.index = 1, .has_data = false, .data = {NULL, 0}},
    };
    for (int op = PROTO_OP_HELLO; op < PROTO_OP_COUNT_; op++) {
        struct proto_reply r;
        memset(&r, 0, sizeof(r));
        r.op = (enum proto_op)op;
        r.re = (uint64_t)op;
        r.ok = true;
        switch (r.op) {
        case PROTO_OP_HELLO:
            r.u.hello.version = PROTO_VERSION;
            r.u.hello.server = proto_str_c("burstd");
            proto_limits_default(&r.u.hello.limits);
            break;
        case PROTO_OP_SUBMIT:
            r.u.submit.job = 3;
            r.u.submit.total = 3;
            break;
        case PROTO_OP_STATUS:
            r.u.status = jobs[0];
            break;
        case PROTO_OP_JOBS:
            r.u.jobs.n = 2;
            r.u.jobs.jobs = jobs;
            break;
        case PROTO_OP_TASKS:
            r.u.tasks.n = 2;
            r.u.tasks.tasks = tasks;
            break;
        case PROTO_OP_RESULTS:
            r.u.results.n = 2;
            r.u.results.items = items;
            r.u.results.more = true;
            break;
        case PROTO_OP_LOGS:
            r.u.logs.log = proto_str_c("stderr");
            break;
        case PROTO_OP_CANCEL:
            r.u.cancel.state = BURST_JOB_CANCELLED;
            break;
        default:
            break;
        }
        if (proto_encode_reply(&b, &r) == 0)
            add_seed(&b);
    }
    if (proto_encode_error(&b, 9, BURST_ENOJOB, "no job %d", 9) == 0)
        add_seed(&b);

    struct proto_task_change ch[2] = {{0, BURST_TASK_RUNNING, 1},
                                      {1, BURST_TASK_QUEUED, 0}};
    struct proto_event_item ev_items[2] = {
        {.seq = 1, .type = BURST_EV_JOB, .job_state = BURST_JOB_RUNNING},
        {.seq = 2, .type = BURST_EV_TASK, .ntasks = 2, .tasks = ch},
    };
    struct proto_events ev = {.job = 4, .nitems = 2, .items = ev_items};
    if (proto_encode_events(&b, &ev) == 0)
        add_seed(&b);
    proto_buf_free(&b);
}

/* Bytes that change the meaning of msgpack the most. */
static const uint8_t interesting[] = {
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4,
    0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};

static size_t
mutate(uint8_t *buf, size_t len, size_t cap)
{
    int n = 1 + (int)rng_below(4);
    for (int m = 0; m < n; m++) {
        size_t pos = rng_below(len);
        switch (rng_below(8)) {
        case 0: /* flip a bit */
            if (len > 0)
                buf[pos] ^= (uint8_t)(1u << rng_below(8));
            break;
        case 1: /* a random byte */
            if (len > 0)
                buf[pos] = (uint8_t)rng();
            break;
        case 2: /* an interesting byte */
            if (len > 0)
                buf[pos] = interesting[rng_below(sizeof(interesting))];
            break;
        case 3: /* insert a byte */
            if (len < cap) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = interesting[rng_below(sizeof(interesting))];
                len++;
            }
            break;
        case 4: { /* delete a range */
            size_t k = rng_below(len - pos + 1);
            memmove(buf + pos, buf + pos + k, len - pos - k);
            len -= k;
            break;
        }
        case 5: /* truncate */
            len = rng_below(len + 1);
            break;
        case 6: { /* duplicate a range */
            size_t k = rng_below(len - pos + 1);
            if (len + k <= cap) {
                memmove(buf + pos + k, buf + pos, len - pos);
                len += k;
            }
            break;
        }
        default: { /* splice in part of another seed */
            const struct seed *s = &seeds[rng_below((size_t)nseeds)];
            size_t from = rng_below(s->len);
            size_t k = rng_below(s->len - from + 1);
            if (pos + k > cap)
                k = cap - pos;
            memcpy(buf + pos, s->data + from, k);
            if (pos + k > len)
                len = pos + k;
            break;
        }
        }
    }
    return len;
}

int
main(int argc, char **argv)
{
    rng_state = 0x9e3779b97f4a7c15ull;
    long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    make_seeds();
    if (nseeds < 20) {
        fprintf(stderr, "fuzz-main: only %d seeds encoded\n", nseeds);
        return 1;
    }
    static uint8_t buf[MAX_INPUT + 1];
    for (long i = 0; i < iterations; i++) {
        const struct seed *s = &seeds[i % nseeds];
        /* Mode byte: even = the payload alone, odd = a stream of frames. */
        uint8_t mode = (uint8_t)rng();
        size_t len;
        if ((mode & 1) == 0) {
            len = s->len - FRAME_HEADER_SIZE;
            memcpy(buf + 1, s->data + FRAME_HEADER_SIZE, len);
        } else {
            /* Two frames back to back, so the reader sees a boundary. */
            const struct seed *t = &seeds[rng_below((size_t)nseeds)];
            memcpy(buf + 1, s->data, s->len);
            memcpy(buf + 1 + s->len, t->data, t->len);
            len = s->len + t->len;
        }
        buf[0] = mode;
        /* Every 16th input goes in unmutated, to check the round trips. */
        if (i % 16 != 0)
            len = mutate(buf + 1, len, MAX_INPUT);
        LLVMFuzzerTestOneInput(buf, len + 1);
    }
    for (int i = 0; i < nseeds; i++)
        free(seeds[i].data);
    printf("fuzz-main: %ld inputs from %d seeds, no failure\n", iterations, nseeds);
    return 0;
}
