/*
 * client/examples/wc_fns.c - the C half of the wordcount example: a map
 * function that counts the words of its input and a reducer that adds the
 * counts up.  Built as wc_fns.so and submitted with burst_fn {BURST_FN_SO,
 * .path = "wc_fns.so", .symbol = "count_words"}; the workers load it, this
 * program never does.
 */
#include <stdio.h>

#include <burst_function.h>

/* The same notion of a word as `wc -w` in the C locale: a run of bytes
 * that are not white space. */
static int
is_space(unsigned char ch)
{
    return ch == ' ' || (ch >= '\t' && ch <= '\r');
}

static int
write_number(burst_output *out, unsigned long long n)
{
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "%llu\n", n);

    if (len < 0 || burst_write(out, buf, (size_t)len) != 0)
        return 1; /* out of memory: fail the task, the daemon may retry it */
    return 0;
}

int count_words(const burst_input *in, burst_output *out);
int sum_counts(const burst_input *in, burst_output *out);

int
count_words(const burst_input *in, burst_output *out)
{
    const unsigned char *p = in->data;
    unsigned long long words = 0;
    int in_word = 0;

    for (size_t i = 0; i < in->len; i++) {
        if (is_space(p[i])) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    return write_number(out, words);
}

/* Adds every decimal number found in s[0 .. len); returns -1 on a byte
 * that belongs to no number nor white space. */
static int
add_numbers(const unsigned char *s, size_t len, unsigned long long *sum)
{
    unsigned long long cur = 0;
    int in_num = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9') {
            cur = cur * 10 + (unsigned)(s[i] - '0');
            in_num = 1;
        } else if (is_space(s[i])) {
            *sum += in_num ? cur : 0;
            cur = 0;
            in_num = 0;
        } else {
            return -1;
        }
    }
    *sum += in_num ? cur : 0;
    return 0;
}

int
sum_counts(const burst_input *in, burst_output *out)
{
    unsigned long long sum = 0;

    /* A reducer gets the map outputs as parts; accept plain input too so
     * that the function can also run as an ordinary map task. */
    for (size_t i = 0; i < in->nparts; i++) {
        if (add_numbers(in->parts[i].data, in->parts[i].len, &sum) < 0) {
            fprintf(stderr, "sum_counts: part %zu is not a list of numbers\n", i);
            return 2;
        }
    }
    if (in->nparts == 0 && in->len > 0 && add_numbers(in->data, in->len, &sum) < 0) {
        fprintf(stderr, "sum_counts: the input is not a list of numbers\n");
        return 2;
    }
    return write_number(out, sum);
}
