/*
 * tests/fuzz-config-main.c - runs the fuzz target of tests/fuzz-config.c
 * without libFuzzer: a fixed pseudo-random sequence of mutations of valid
 * config files and key/value pairs, so every run of the
 * 'config-fuzz-smoke' test sees the same inputs.
 * Usage: fuzz-config-smoke [iterations] (default 30000).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-rng.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Longer than config_load's line buffer, so the "line too long" path and
 * the lines after it are reached too. */
#define MAX_INPUT 12288


/* Every key burstd knows of, some it does not, and near misses. */
static const char *const keys[] = {
    "socket",
    "state_dir",
    "worker",
    "quota",
    "admin_group",
    "max_connections",
    "idle_timeout_ms",
    "max_connections_per_uid",
    "verbose",
    "compute",
    "storage",
    "ledger_max_mb",
    "socket_group",
    "credentials_dir",
    "limits.max_subscriptions",
    "limits.max_frame",
    "limits.max_depth",
    "limits.max_string",
    "limits.max_input",
    "limits.max_tasks",
    "limits.max_retries",
    "limits.max_chunksize",
    "limits.max_fn_size",
    "limits.page_tasks",
    "limits.",
    "limits",
    "Quota",
    "quota ",
    "",
    "#quota",
    "=",
};

static const char *const values[] = {
    "0",
    "1",
    "4",
    "16",
    "100",
    "1024",
    "30000",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "-1",
    "+5",
    " 7",
    "7 ",
    "0x10",
    "1e3",
    "08",
    "3.5",
    "",
    "true",
    "false",
    "yes",
    "local",
    "s3",
    "/tmp/burst.sock",
    "relative/path",
    "nogroup",
    "a=b",
    "#",
    "\"quoted\"",
    "\xff\xfe",
    "\t",
    "1073741824",
    "1073741825",
};

static size_t
append(char *buf, size_t len, const char *s, size_t n)
{
    if (len + n > MAX_INPUT)
        n = MAX_INPUT - len;
    memcpy(buf + len, s, n);
    return len + n;
}

/* A config file of a few plausible lines, with the spacing varied. */
static size_t
make_file(char *buf)
{
    size_t len = 0;
    int lines = 1 + (int)rng_below(8);
    static const char *const seps[] = {" = ", "=", "  =\t", " =", "= "};
    for (int i = 0; i < lines; i++) {
        const char *k = keys[rng_below(sizeof(keys) / sizeof(keys[0]))];
        const char *v = values[rng_below(sizeof(values) / sizeof(values[0]))];
        const char *sep = seps[rng_below(sizeof(seps) / sizeof(seps[0]))];
        if (rng_below(8) == 0)
            len = append(buf, len, "# a comment\n", 12);
        len = append(buf, len, k, strlen(k));
        len = append(buf, len, sep, strlen(sep));
        len = append(buf, len, v, strlen(v));
        if (rng_below(6) == 0)
            len = append(buf, len, "  # trailing", 12);
        const char *eol = rng_below(10) == 0 ? "\r\n" : "\n";
        len = append(buf, len, eol, strlen(eol));
    }
    return len;
}

static size_t
make_pair(char *buf)
{
    const char *k = keys[rng_below(sizeof(keys) / sizeof(keys[0]))];
    const char *v = values[rng_below(sizeof(values) / sizeof(values[0]))];
    size_t len = append(buf, 0, k, strlen(k));
    len = append(buf, len, "", 1); /* the NUL between key and value */
    return append(buf, len, v, strlen(v));
}

static const uint8_t interesting[] = {'\0', '\n', '\r', '\t', ' ',  '#',  '=',
                                      '.',  '-',  '0',  '9',  0x7f, 0x80, 0xff};

static size_t
mutate(uint8_t *buf, size_t len)
{
    int n = 1 + (int)rng_below(3);
    for (int m = 0; m < n; m++) {
        size_t pos = rng_below(len);
        switch (rng_below(7)) {
        case 0: /* flip a bit */
            if (len > 0)
                buf[pos] ^= (uint8_t)(1u << rng_below(8));
            break;
        case 1: /* an interesting byte */
            if (len > 0)
                buf[pos] = interesting[rng_below(sizeof(interesting))];
            break;
        case 2: /* insert one */
            if (len < MAX_INPUT) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = interesting[rng_below(sizeof(interesting))];
                len++;
            }
            break;
        case 3: { /* delete a range */
            size_t k = rng_below(len - pos + 1);
            memmove(buf + pos, buf + pos + k, len - pos - k);
            len -= k;
            break;
        }
        case 4: /* truncate */
            len = rng_below(len + 1);
            break;
        case 5: { /* a run of one byte, sometimes longer than a line */
            size_t k = rng_below(8) == 0 ? 4000 + rng_below(4400) : rng_below(40);
            if (len + k > MAX_INPUT)
                k = MAX_INPUT - len;
            memmove(buf + pos + k, buf + pos, len - pos);
            memset(buf + pos, rng_below(2) ? 'a' : '9', k);
            len += k;
            break;
        }
        default: { /* duplicate a range */
            size_t k = rng_below(len - pos + 1);
            if (len + k <= MAX_INPUT) {
                memmove(buf + pos + k, buf + pos, len - pos);
                len += k;
            }
            break;
        }
        }
    }
    return len;
}

int
main(int argc, char **argv)
{
    rng_state = 0x2545f4914f6cdd1dull;
    long iterations = argc > 1 ? strtol(argv[1], NULL, 10) : 30000;
    static uint8_t buf[MAX_INPUT + 1];
    for (long i = 0; i < iterations; i++) {
        /* Mode byte: even = a file, odd = a key/value pair; the rest of it
         * picks the error buffer's size. */
        uint8_t mode = (uint8_t)rng();
        size_t len =
            (mode & 1) == 0 ? make_file((char *)buf + 1) : make_pair((char *)buf + 1);
        /* Every 8th input goes in unmutated: the valid paths matter too. */
        if (i % 8 != 0)
            len = mutate(buf + 1, len);
        buf[0] = mode;
        LLVMFuzzerTestOneInput(buf, len + 1);
    }
    printf("fuzz-config-main: %ld inputs, no failure\n", iterations);
    return 0;
}
