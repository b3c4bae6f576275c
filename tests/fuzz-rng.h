/*
 * tests/fuzz-rng.h - the deterministic random numbers of the fuzz smoke
 * drivers (fuzz-main.c, fuzz-config-main.c): the same sequence on every
 * run, so a failure is reproduced by running the test again.
 */
#ifndef BURST_TESTS_FUZZ_RNG_H
#define BURST_TESTS_FUZZ_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Each driver seeds its own. */
static uint64_t rng_state;

static inline uint64_t
rng(void)
{
    /* xorshift64*: deterministic and good enough to pick mutations. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static inline size_t
rng_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rng() % n);
}

#endif /* BURST_TESTS_FUZZ_RNG_H */
