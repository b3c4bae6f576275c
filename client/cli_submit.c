/*
 * client/cli_submit.c - `burst map` and `burst map-reduce`: turn the options
 * into a function, inputs and burst_opts, submit, print the job id, and with
 * --wait wait as `burst wait` does.  Everything is checked before anything
 * is submitted, so a bad argument or unreadable file never leaves a job
 * behind.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* A function as given on the command line, with room for its parts. */
struct cli_fn {
    burst_fn fn;
    char path[PATH_MAX];
    char symbol[256];
};

/* Builds fn from --exec/--so (named by exec_opt/so_opt in messages). */
static int
cli_fn_from(struct cli *cli, struct cli_fn *f, const char *exec, const char *so,
            const char *exec_opt, const char *so_opt)
{
    char err[512];

    memset(f, 0, sizeof(*f));
    if (exec != NULL && so != NULL)
        return cli_usage(cli, "give either %s or %s, not both", exec_opt, so_opt);
    if (exec == NULL && so == NULL)
        return cli_usage(cli, "%s CMD or %s LIB.so:SYMBOL is required", exec_opt, so_opt);
    if (exec != NULL) {
        if (exec[0] == '\0')
            return cli_usage(cli, "%s must not be empty", exec_opt);
        f->fn.kind = BURST_FN_EXEC;
        f->fn.cmd = exec;
        return 0;
    }
    if (cli_parse_so(so_opt, so, f->path, sizeof(f->path), f->symbol, sizeof(f->symbol),
                     err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    f->fn.kind = BURST_FN_SO;
    f->fn.path = f->path;
    f->fn.symbol = f->symbol;
    return 0;
}

static int
cli_submit(struct cli *cli, int argc, char **argv, bool reduce)
{
    const char *exec = NULL, *so = NULL, *rexec = NULL, *rso = NULL, *input = NULL;
    const char *chunksize = NULL, *retries = NULL, *timeout = NULL, *memory = NULL;
    const char *name = NULL;
    bool wait = false, json = false;
    /* The reducer's options come last so that map can leave them out. */
    const struct cli_opt opts[] = {
        {"--exec", &exec, NULL},         {"--so", &so, NULL},
        {"--input-lines", &input, NULL}, {"--chunksize", &chunksize, NULL},
        {"--retries", &retries, NULL},   {"--timeout", &timeout, NULL},
        {"--memory", &memory, NULL},     {"--name", &name, NULL},
        {"--wait", NULL, &wait},         {"--json", NULL, &json},
        {"--reduce-exec", &rexec, NULL}, {"--reduce-so", &rso, NULL},
    };
    size_t nopts = sizeof(opts) / sizeof(opts[0]) - (reduce ? 0 : 2);
    burst_opts bo = BURST_OPTS_INIT;
    struct cli_fn *fn = NULL, *rfn = NULL;
    char *blob = NULL;
    size_t len = 0, npos;
    char err[1024];
    char *pos[1];
    uint64_t job;
    int rc;

    rc = cli_parse(argc, argv, opts, nopts, pos, 0, &npos, err, sizeof(err));
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc < 0)
        return cli_usage(cli, "%s", err);

    if (chunksize != NULL && cli_parse_u32("--chunksize", chunksize, 1, 100000,
                                           &bo.chunksize, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    if (retries != NULL &&
        cli_parse_u32("--retries", retries, 0, 100, &bo.retries, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    if (timeout != NULL &&
        cli_parse_seconds("--timeout", timeout, &bo.timeout_ms, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    if (memory != NULL && cli_parse_u32("--memory", memory, 1, 1024u * 1024u,
                                        &bo.memory_mb, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    if (name != NULL && strlen(name) > 127)
        return cli_usage(cli, "--name must be at most 127 bytes");
    bo.name = name;

    /* The paths are large: keep them off the stack. */
    fn = calloc(reduce ? 2 : 1, sizeof(*fn));
    if (fn == NULL)
        return cli_error("out of memory");
    rc = cli_fn_from(cli, fn, exec, so, "--exec", "--so");
    if (rc != 0)
        goto out;
    if (reduce) {
        rfn = &fn[1];
        rc = cli_fn_from(cli, rfn, rexec, rso, "--reduce-exec", "--reduce-so");
        if (rc != 0)
            goto out;
    }

    if (input != NULL) {
        rc = cli_read_file(input, &blob, &len, err, sizeof(err));
        if (rc < 0) {
            rc = cli_error("%s", err);
            goto out;
        }
    }

    rc = cli_connect(cli);
    if (rc != 0)
        goto out;
    if (input != NULL) {
        rc = reduce ? burst_submit_map_reduce_lines(cli->c, &fn->fn, &rfn->fn, blob, len,
                                                    &bo, &job)
                    : burst_submit_map_lines(cli->c, &fn->fn, blob, len, &bo, &job);
    } else {
        /* No input file: a single task with empty input. */
        burst_bytes one = {"", 0};
        rc = reduce
                 ? burst_submit_map_reduce(cli->c, &fn->fn, &rfn->fn, &one, 1, &bo, &job)
                 : burst_submit_map(cli->c, &fn->fn, &one, 1, &bo, &job);
    }
    if (rc < 0) {
        rc = cli_fail(cli, rc);
        goto out;
    }
    printf("%llu\n", (unsigned long long)job);
    fflush(stdout);
    if (!wait) {
        rc = CLI_EXIT_OK;
        goto out;
    }

    burst_job_info info;
    rc = burst_wait(cli->c, job, &info);
    if (rc < 0 && rc != BURST_EJOBFAILED && rc != BURST_ECANCELLED) {
        rc = cli_fail(cli, rc);
        goto out;
    }
    if (json) {
        struct json j;
        json_init(&j, stdout);
        cli_job_json(&j, &info);
        json_finish(&j);
    }
    rc = cli_job_exit(&info);
out:
    free(blob);
    free(fn);
    return rc;
}

int
cli_cmd_map(struct cli *cli, int argc, char **argv)
{
    return cli_submit(cli, argc, argv, false);
}

int
cli_cmd_map_reduce(struct cli *cli, int argc, char **argv)
{
    return cli_submit(cli, argc, argv, true);
}
