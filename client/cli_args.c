/*
 * client/cli_args.c - parsing the `burst` command line: options of each
 * command and the values they take.  Every refusal names the argument and
 * quotes what was given, because a script's author reads these messages
 * far from the code that produced the bad value.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const struct cli_opt *
cli_find_opt(const struct cli_opt *opts, size_t nopts, const char *arg, size_t len)
{
    for (size_t i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, arg, len) == 0)
            return &opts[i];
    return NULL;
}

int
cli_parse(int argc, char **argv, const struct cli_opt *opts, size_t nopts, char **pos,
          size_t maxpos, size_t *npos, char *err, size_t errsize)
{
    bool only_pos = false;

    *npos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        bool is_opt = !only_pos && a[0] == '-' && a[1] != '\0';
        if (is_opt && strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (is_opt && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0))
            return CLI_PARSE_HELP;
        if (!is_opt) {
            if (*npos == maxpos) {
                snprintf(err, errsize, "unexpected argument '%s'", a);
                return -EINVAL;
            }
            pos[(*npos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t namelen = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const struct cli_opt *o = cli_find_opt(opts, nopts, a, namelen);
        if (o == NULL) {
            snprintf(err, errsize, "unknown option '%.*s'", (int)namelen, a);
            return -EINVAL;
        }
        if (o->flag != NULL) {
            if (eq != NULL) {
                snprintf(err, errsize, "%s takes no value", o->name);
                return -EINVAL;
            }
            *o->flag = true;
            continue;
        }
        if (eq != NULL) {
            *o->value = eq + 1;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            snprintf(err, errsize, "%s needs a value", o->name);
            return -EINVAL;
        }
    }
    return 0;
}

int
cli_parse_u32(const char *what, const char *s, uint32_t min, uint32_t max, uint32_t *out,
              char *err, size_t errsize)
{
    unsigned long long v = 0;
    size_t i = 0;

    /* strtoul would accept "-1", " 5" and "0x10"; a count is plain digits. */
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        v = v * 10 + (unsigned)(s[i] - '0');
        if (v > max)
            break;
    }
    if (i == 0 || s[i] != '\0' || v < min || v > max) {
        snprintf(err, errsize, "%s must be an integer from %u to %u, got '%s'", what, min,
                 max, s);
        return -EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

int
cli_parse_seconds(const char *what, const char *s, uint64_t *ms, char *err,
                  size_t errsize)
{
    /* Ten years: anything longer is a typo, and it keeps the sums small. */
    const uint64_t max_s = 10ull * 366 * 24 * 3600;
    uint64_t whole = 0, frac_ms = 0;
    bool more_frac = false;
    size_t i = 0, nd = 0;

    for (; s[i] >= '0' && s[i] <= '9'; i++, nd++) {
        whole = whole * 10 + (unsigned)(s[i] - '0');
        if (whole > max_s)
            goto bad;
    }
    if (s[i] == '.') {
        i++;
        size_t f = 0;
        for (; s[i] >= '0' && s[i] <= '9'; i++, f++, nd++) {
            if (f < 3)
                frac_ms = frac_ms * 10 + (unsigned)(s[i] - '0');
            else if (s[i] != '0')
                more_frac = true;
        }
        for (; f < 3; f++)
            frac_ms *= 10;
    }
    if (nd == 0 || s[i] != '\0')
        goto bad;
    *ms = whole * 1000 + frac_ms + (more_frac ? 1 : 0);
    return 0;
bad:
    snprintf(err, errsize,
             "%s must be a number of seconds from 0 to %llu (e.g. 30 or 0.5), got '%s'",
             what, (unsigned long long)max_s, s);
    return -EINVAL;
}

int
cli_parse_job(const char *s, uint64_t *job, char *err, size_t errsize)
{
    uint64_t v = 0;
    size_t i = 0;

    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        if (v > (UINT64_MAX - 9) / 10)
            goto bad;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (i == 0 || s[i] != '\0' || v == 0)
        goto bad;
    *job = v;
    return 0;
bad:
    snprintf(err, errsize, "JOB must be a job id (a positive integer), got '%s'", s);
    return -EINVAL;
}

int
cli_parse_so(const char *what, const char *s, char *path, size_t pathsize, char *symbol,
             size_t symsize, char *err, size_t errsize)
{
    /* The last colon: a path may contain colons, a C symbol may not. */
    const char *colon = strrchr(s, ':');

    if (colon == NULL || colon == s || colon[1] == '\0') {
        snprintf(err, errsize, "%s must be LIB.so:SYMBOL, got '%s'", what, s);
        return -EINVAL;
    }
    size_t plen = (size_t)(colon - s), slen = strlen(colon + 1);
    if (plen >= pathsize || slen >= symsize) {
        snprintf(err, errsize, "%s is too long: '%s'", what, s);
        return -EINVAL;
    }
    memcpy(path, s, plen);
    path[plen] = '\0';
    memcpy(symbol, colon + 1, slen + 1);
    return 0;
}

int
cli_parse_task_state(const char *s, int *state, char *err, size_t errsize)
{
    for (int st = 0; st < BURST_TASK_NSTATES; st++) {
        const char *name = burst_task_state_name(st);
        if (name != NULL && strcasecmp(name, s) == 0) {
            *state = st;
            return 0;
        }
    }
    int n = snprintf(err, errsize, "--state must be one of");
    for (int st = 0; st < BURST_TASK_NSTATES && n >= 0 && (size_t)n < errsize; st++) {
        const char *name = burst_task_state_name(st);
        n += snprintf(err + n, errsize - (size_t)n, "%s %s", st ? "," : "",
                      name != NULL ? name : "?");
    }
    if (n >= 0 && (size_t)n < errsize)
        snprintf(err + n, errsize - (size_t)n, "; got '%s'", s);
    return -EINVAL;
}

int
cli_read_file(const char *path, char **data, size_t *len, char *err, size_t errsize)
{
    bool is_stdin = strcmp(path, "-") == 0;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int fd, rc;

    *data = NULL;
    *len = 0;
    fd = is_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = -EISDIR;
        goto fail_close;
    }
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64 * 1024;
            if (ncap < cap) {
                rc = -EFBIG;
                goto fail_close;
            }
            char *b = realloc(buf, ncap);
            if (b == NULL) {
                rc = -ENOMEM;
                goto fail_close;
            }
            buf = b;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto fail_close;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (!is_stdin)
        close(fd);
    *data = buf; /* ownership passes to the caller */
    *len = n;
    return 0;

fail_close:
    if (!is_stdin)
        close(fd);
fail:
    free(buf);
    snprintf(err, errsize, "cannot read '%s': %s", is_stdin ? "<stdin>" : path,
             strerror(-rc));
    return rc;
}
