/*
 * client/cli_inspect.c - the commands that look at and steer jobs without
 * following them: `jobs`, `show`, `tasks`, `cancel`, `logs` and `quota`.
 * Human output is aligned tables and "key: value" lines in the manner of
 * squeue and scontrol; --json output is one document for scripts.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Parses "COMMAND JOB [options]" with opts; fills *job.  Returns 0,
 * CLI_PARSE_HELP or an exit code already reported. */
static int
cli_job_args(struct cli *cli, int argc, char **argv, const struct cli_opt *opts,
             size_t nopts, uint64_t *job, char **extra, size_t nextra)
{
    char *pos[3] = {NULL, NULL, NULL};
    size_t npos;
    char err[512];

    if (nextra > 2)
        nextra = 2;
    int rc = cli_parse(argc, argv, opts, nopts, pos, 1 + nextra, &npos, err, sizeof(err));
    if (rc == CLI_PARSE_HELP)
        return CLI_PARSE_HELP;
    if (rc < 0)
        return cli_usage(cli, "%s", err);
    if (npos < 1 + nextra)
        return cli_usage(cli, npos == 0 ? "JOB is required" : "TASK is required");
    if (cli_parse_job(pos[0], job, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    for (size_t i = 0; i < nextra; i++)
        extra[i] = pos[1 + i];
    return 0;
}

int
cli_cmd_jobs(struct cli *cli, int argc, char **argv)
{
    static const char *const headers[] = {"JOBID",  "NAME",    "OWNER",
                                          "STATE",  "TASKS",   "DONE",
                                          "FAILED", "ELAPSED", "FUNCTION"};
    bool all = false, json = false;
    const struct cli_opt opts[] = {{"--all", NULL, &all}, {"--json", NULL, &json}};
    burst_job_info *jobs = NULL;
    size_t n = 0, npos;
    char err[512];

    int rc = cli_parse(argc, argv, opts, 2, NULL, 0, &npos, err, sizeof(err));
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc < 0)
        return cli_usage(cli, "%s", err);
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_jobs(cli->c, all, &jobs, &n);
    if (rc < 0)
        return cli_fail(cli, rc);

    if (json) {
        struct json j;
        json_init(&j, stdout);
        json_begin_array(&j);
        for (size_t i = 0; i < n; i++)
            cli_job_json(&j, &jobs[i]);
        json_end_array(&j);
        json_finish(&j);
        free(jobs);
        return CLI_EXIT_OK;
    }

    struct table t;
    int64_t now = cli_now_ms();
    table_init(&t, 9, headers, 1u << 0 | 1u << 4 | 1u << 5 | 1u << 6 | 1u << 7);
    rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n && rc == CLI_EXIT_OK; i++) {
        const burst_job_info *ji = &jobs[i];
        char id[24], owner[256], state[32], total[16], done[16], failed[16], elapsed[32];
        snprintf(id, sizeof(id), "%llu", (unsigned long long)ji->id);
        cli_owner_name(ji->owner_uid, owner, sizeof(owner));
        cli_job_state_upper(ji->state, state, sizeof(state));
        snprintf(total, sizeof(total), "%u", ji->total);
        snprintf(done, sizeof(done), "%u", ji->counts[BURST_TASK_SUCCEEDED]);
        snprintf(failed, sizeof(failed), "%u", cli_job_failed(ji));
        cli_format_elapsed(cli_job_elapsed_ms(ji, now), elapsed, sizeof(elapsed));
        const char *cells[] = {id,          ji->name[0] ? ji->name : "-",
                               owner,       state,
                               total,       done,
                               failed,      elapsed,
                               ji->function};
        if (table_add(&t, cells) < 0)
            rc = cli_error("out of memory");
    }
    if (rc == CLI_EXIT_OK)
        table_print(&t, stdout);
    table_free(&t);
    free(jobs);
    return rc;
}

int
cli_cmd_show(struct cli *cli, int argc, char **argv)
{
    bool json = false;
    const struct cli_opt opts[] = {{"--json", NULL, &json}};
    burst_job_info info;
    uint64_t job;

    int rc = cli_job_args(cli, argc, argv, opts, 1, &job, NULL, 0);
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc != 0)
        return rc;
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_status(cli->c, job, &info);
    if (rc < 0)
        return cli_fail(cli, rc);
    if (json) {
        struct json j;
        json_init(&j, stdout);
        cli_job_json(&j, &info);
        json_finish(&j);
    } else {
        cli_job_show(stdout, &info);
    }
    return CLI_EXIT_OK;
}

static void
cli_task_json(struct json *j, const burst_task_info *t, int64_t now)
{
    json_begin_object(j);
    json_key(j, "index");
    json_uint(j, t->index);
    json_key(j, "state");
    json_str(j, burst_task_state_name(t->state));
    json_key(j, "attempts");
    json_uint(j, t->attempts);
    json_key(j, "exit_status");
    if (t->exit_status >= 0)
        json_int(j, t->exit_status);
    else
        json_null(j);
    json_key(j, "signal");
    if (t->signal != 0)
        json_int(j, t->signal);
    else
        json_null(j);
    json_key(j, "started");
    if (t->started_ms > 0)
        json_int(j, t->started_ms);
    else
        json_null(j);
    json_key(j, "finished");
    if (t->finished_ms > 0)
        json_int(j, t->finished_ms);
    else
        json_null(j);
    json_key(j, "elapsed_ms");
    json_int(j, cli_task_elapsed_ms(t, now));
    json_key(j, "reason");
    json_str(j, t->reason[0] != '\0' ? t->reason : NULL);
    json_end_object(j);
}

int
cli_cmd_tasks(struct cli *cli, int argc, char **argv)
{
    static const char *const headers[] = {"INDEX",  "STATE",   "ATTEMPTS", "EXIT",
                                          "SIGNAL", "ELAPSED", "REASON"};
    const char *state_arg = NULL;
    bool json = false;
    const struct cli_opt opts[] = {{"--state", &state_arg, NULL},
                                   {"--json", NULL, &json}};
    burst_task_info *tasks = NULL;
    size_t n = 0;
    char err[512];
    uint64_t job;
    int state = -1;

    int rc = cli_job_args(cli, argc, argv, opts, 2, &job, NULL, 0);
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc != 0)
        return rc;
    if (state_arg != NULL &&
        cli_parse_task_state(state_arg, &state, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_tasks(cli->c, job, state, &tasks, &n);
    if (rc < 0)
        return cli_fail(cli, rc);

    int64_t now = cli_now_ms();
    if (json) {
        struct json j;
        json_init(&j, stdout);
        json_begin_array(&j);
        for (size_t i = 0; i < n; i++)
            cli_task_json(&j, &tasks[i], now);
        json_end_array(&j);
        json_finish(&j);
        free(tasks);
        return CLI_EXIT_OK;
    }

    struct table t;
    table_init(&t, 7, headers, 1u << 0 | 1u << 2 | 1u << 3 | 1u << 4 | 1u << 5);
    rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n && rc == CLI_EXIT_OK; i++) {
        const burst_task_info *ti = &tasks[i];
        char index[16], st[32], attempts[16], exit_s[16], sig[16], elapsed[32];
        snprintf(index, sizeof(index), "%u", ti->index);
        cli_task_state_upper(ti->state, st, sizeof(st));
        snprintf(attempts, sizeof(attempts), "%u", ti->attempts);
        if (ti->exit_status >= 0)
            snprintf(exit_s, sizeof(exit_s), "%d", ti->exit_status);
        else
            snprintf(exit_s, sizeof(exit_s), "-");
        if (ti->signal != 0)
            snprintf(sig, sizeof(sig), "%d", ti->signal);
        else
            snprintf(sig, sizeof(sig), "-");
        cli_format_elapsed(cli_task_elapsed_ms(ti, now), elapsed, sizeof(elapsed));
        const char *cells[] = {
            index, st, attempts, exit_s, sig, elapsed, ti->reason[0] ? ti->reason : "-"};
        if (table_add(&t, cells) < 0)
            rc = cli_error("out of memory");
    }
    if (rc == CLI_EXIT_OK)
        table_print(&t, stdout);
    table_free(&t);
    free(tasks);
    return rc;
}

int
cli_cmd_cancel(struct cli *cli, int argc, char **argv)
{
    uint64_t job;

    int rc = cli_job_args(cli, argc, argv, NULL, 0, &job, NULL, 0);
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc != 0)
        return rc;
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_cancel(cli->c, job);
    if (rc < 0)
        return cli_fail(cli, rc);
    return CLI_EXIT_OK;
}

/*
 * The first line `burst logs` writes on stderr when the task did not
 * succeed: "task 3: failed (attempt 2): exit status 3".  The public API's
 * burst_logs returns the log alone, so the task's state, attempts and reason
 * come from burst_tasks, asked only for the states that carry a failure
 * (which keeps the answer small: the tasks of those states, not the whole
 * job).  Prints nothing for a task that succeeded, is still pending, or
 * when the daemon cannot say: the log itself is what was asked for.
 */
static void
cli_logs_failure(struct cli *cli, uint64_t job, uint32_t task)
{
    static const int states[] = {BURST_TASK_FAILED, BURST_TASK_TIMEOUT,
                                 BURST_TASK_RETRYING};
    for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
        burst_task_info *tasks = NULL;
        size_t n = 0;
        if (burst_tasks(cli->c, job, states[s], &tasks, &n) < 0)
            return;
        for (size_t i = 0; i < n; i++) {
            const burst_task_info *t = &tasks[i];
            if (t->index != task)
                continue;
            fprintf(stderr, "task %u: %s (attempt %u): %s\n", t->index,
                    burst_task_state_name(t->state), t->attempts,
                    t->reason[0] != '\0' ? t->reason : "no reason recorded");
            free(tasks);
            return;
        }
        free(tasks);
    }
}

int
cli_cmd_logs(struct cli *cli, int argc, char **argv)
{
    char *extra[1] = {NULL};
    char err[512];
    uint64_t job;
    uint32_t task;
    char *log;
    size_t len;

    int rc = cli_job_args(cli, argc, argv, NULL, 0, &job, extra, 1);
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc != 0)
        return rc;
    if (cli_parse_u32("TASK", extra[0], 0, UINT32_MAX - 1, &task, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_logs(cli->c, job, task, &log, &len);
    if (rc < 0)
        return cli_fail(cli, rc);
    /* Why it failed goes first, and to stderr, so that stdout stays the
     * task's log byte for byte. */
    cli_logs_failure(cli, job, task);
    /* The log is the task's own bytes: pass them through unchanged. */
    if (len > 0)
        fwrite(log, 1, len, stdout);
    free(log);
    return CLI_EXIT_OK;
}

int
cli_cmd_quota(struct cli *cli, int argc, char **argv)
{
    const char *set_arg = NULL;
    const struct cli_opt opts[] = {{"--set", &set_arg, NULL}};
    uint32_t set = 0, in_use = 0;
    size_t npos;
    char err[512];

    int rc = cli_parse(argc, argv, opts, 1, NULL, 0, &npos, err, sizeof(err));
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc < 0)
        return cli_usage(cli, "%s", err);
    if (set_arg != NULL &&
        cli_parse_u32("--set", set_arg, 1, 1000000, &set, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_quota(cli->c, set_arg != NULL ? (int)set : -1, &in_use);
    if (rc < 0)
        return cli_fail(cli, rc);
    printf("quota: %d\nin use: %u\n", rc, in_use);
    return CLI_EXIT_OK;
}
