/*
 * bench/bench_fns.c - the functions the benchmarks run (libbench_fns.so):
 * echo (the output is the input) and noop (no output).  They cost nothing,
 * so what a benchmark measures is burst's own overhead per task.
 */
#include <burst_function.h>

int echo(const burst_input *in, burst_output *out);
int noop(const burst_input *in, burst_output *out);

int
echo(const burst_input *in, burst_output *out)
{
    return burst_write(out, in->data, in->len);
}

int
noop(const burst_input *in, burst_output *out)
{
    (void)in;
    (void)out;
    return 0;
}
