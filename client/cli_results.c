/*
 * client/cli_results.c - `burst results`: the outputs of an ended job, byte
 * for byte, concatenated in task order on stdout or one file per task.  For
 * a map_reduce job only the reducer's output (task index total) counts.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

struct results_out {
    const char *dir; /* borrowed: --output, or NULL for stdout */
    int width;       /* digits of the largest task index */
    bool reduce;     /* map_reduce: only the reducer's output */
    uint32_t total;
    uint32_t written; /* results written */
    int err;          /* an exit code once something failed */
};

static int
results_write_file(struct results_out *o, const char *name, const void *data, size_t len)
{
    char path[PATH_MAX];

    if (snprintf(path, sizeof(path), "%s/%s", o->dir, name) >= (int)sizeof(path)) {
        o->err = cli_error("--output path too long: %s/%s", o->dir, name);
        return -ENAMETOOLONG;
    }
    FILE *f = fopen(path, "wbe");
    if (f == NULL) {
        o->err = cli_error("cannot write '%s': %s", path, strerror(errno));
        return -errno;
    }
    size_t w = len > 0 ? fwrite(data, 1, len, f) : 0;
    int close_rc = fclose(f);
    if (w != len || close_rc != 0) {
        o->err = cli_error("cannot write '%s': %s", path, strerror(errno));
        return -EIO;
    }
    return 0;
}

static int
results_on_item(void *arg, uint32_t index, const void *data, size_t len)
{
    struct results_out *o = arg;
    char name[32];

    if (data == NULL)
        return 0; /* counted as missing at the end */
    if (o->reduce ? index != o->total : index >= o->total)
        return 0;
    if (o->dir == NULL) {
        if (len > 0 && fwrite(data, 1, len, stdout) != len) {
            o->err = cli_error("cannot write the results: %s", strerror(errno));
            return -EIO;
        }
        o->written++;
        return 0;
    }
    if (o->reduce)
        snprintf(name, sizeof(name), "reduce");
    else
        snprintf(name, sizeof(name), "%0*u", o->width, index);
    int rc = results_write_file(o, name, data, len);
    if (rc < 0)
        return rc;
    o->written++;
    return 0;
}

int
cli_cmd_results(struct cli *cli, int argc, char **argv)
{
    const char *dir = NULL;
    const struct cli_opt opts[] = {{"--output", &dir, NULL}};
    char *pos[1];
    size_t npos;
    char err[512];
    uint64_t job;
    burst_job_info info;

    int rc = cli_parse(argc, argv, opts, 1, pos, 1, &npos, err, sizeof(err));
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc < 0)
        return cli_usage(cli, "%s", err);
    if (npos < 1)
        return cli_usage(cli, "JOB is required");
    if (cli_parse_job(pos[0], &job, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    if (dir != NULL && dir[0] == '\0')
        return cli_usage(cli, "--output must not be empty");

    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_status(cli->c, job, &info);
    if (rc < 0)
        return cli_fail(cli, rc);
    if (!burst_job_state_is_final(info.state)) {
        char st[32];
        return cli_error("job %llu has not ended yet (it is %s); try `burst wait %llu`",
                         (unsigned long long)job,
                         cli_job_state_upper(info.state, st, sizeof(st)),
                         (unsigned long long)job);
    }
    if (dir != NULL && mkdir(dir, 0777) < 0 && errno != EEXIST)
        return cli_error("cannot create '%s': %s", dir, strerror(errno));

    struct results_out o = {
        .dir = dir, .reduce = info.kind == BURST_KIND_MAP_REDUCE, .total = info.total};
    char digits[16];
    o.width = snprintf(digits, sizeof(digits), "%u", info.total > 0 ? info.total - 1 : 0);

    rc = burst_results(cli->c, job, results_on_item, &o);
    if (o.err != 0)
        return o.err;
    if (rc < 0)
        return cli_fail(cli, rc);
    uint32_t expected = o.reduce ? 1 : info.total;
    if (o.written < expected) {
        fflush(stdout);
        if (o.reduce)
            fprintf(stderr, "burst: job %llu has no reducer output\n",
                    (unsigned long long)job);
        else
            fprintf(stderr, "burst: %u of %u tasks of job %llu have no result\n",
                    expected - o.written, expected, (unsigned long long)job);
        return CLI_EXIT_JOB;
    }
    return CLI_EXIT_OK;
}
