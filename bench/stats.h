/*
 * bench/stats.h - clocks and percentiles shared by the benchmark programs.
 */
#ifndef BURST_BENCH_STATS_H
#define BURST_BENCH_STATS_H

#include <stddef.h>

/* Milliseconds on the monotonic clock (for durations). */
double bench_mono_ms(void);
/* Milliseconds since the epoch (to compare with the daemon's own times). */
double bench_unix_ms(void);
/* Sorts v[0..n) ascending. */
void bench_sort(double *v, size_t n);
/* The p-th percentile (0..1) of the sorted v[0..n), nearest rank; NAN when
 * there is nothing to rank. */
double bench_pct(const double *v, size_t n, double p);

#endif /* BURST_BENCH_STATS_H */
