/*
 * bench/stats.c - see stats.h.
 */
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

static double
clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

double
bench_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

double
bench_unix_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void
bench_sort(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
}

double
bench_pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    return v[(size_t)(p * (double)(n - 1) + 0.5)];
}
