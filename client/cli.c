/*
 * client/cli.c - `burst`, the command-line client of burstd: global options,
 * the table of commands and their help, and the conventions every command
 * shares (exit codes, "burst: <message>" errors, usage lines).  The commands
 * live in cli_submit.c, cli_inspect.c, cli_results.c and cli_watch.c; the
 * contract they implement is "The CLI contract" in DESIGN.md.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "burst_config.h"
#include "cli.h"

#define SUBMIT_OPTIONS                                                                   \
    "  --input-lines FILE|-  every line of FILE (or stdin), newline included, is\n"      \
    "                        the input of one task; without it: one task, empty input\n" \
    "  --chunksize N         tasks per invocation (default 1)\n"                         \
    "  --retries N           extra attempts after a failure (default 0)\n"               \
    "  --timeout SEC         per task, decimal seconds allowed (default none)\n"         \
    "  --memory MB           memory per task (default none)\n"                           \
    "  --name NAME           a label shown by `burst jobs`\n"                            \
    "  --wait                wait for the end and exit as `burst wait` does\n"           \
    "  --json                with --wait: print the final status as JSON\n"              \
    "Prints the job id alone on the first line.\n"

static const struct cli_cmd cli_cmds[] = {
    {"map",
     "burst map (--exec CMD | --so LIB.so:SYMBOL) [--input-lines FILE|-] [options]",
     "Runs a function once per input.\n"
     "  --exec CMD            run `/bin/sh -c CMD` with the input on stdin; its\n"
     "                        stdout is the result\n"
     "  --so LIB.so:SYMBOL    call a C function from a shared library\n" SUBMIT_OPTIONS,
     cli_cmd_map},
    {"map-reduce",
     "burst map-reduce (--exec CMD | --so LIB:SYM) (--reduce-exec CMD2 | --reduce-so "
     "LIB:SYM) [options]",
     "Runs a map, then one reducer over all the map outputs in task order.\n"
     "  --exec CMD, --so LIB.so:SYMBOL           the map function\n"
     "  --reduce-exec CMD2, --reduce-so LIB:SYM  the reducer (an exec reducer reads\n"
     "                                           the outputs concatenated on stdin)\n"
     "" SUBMIT_OPTIONS,
     cli_cmd_map_reduce},
    {"wait", "burst wait JOB",
     "Waits for the job to end.  Exit status 0 when it succeeded, 1 when it failed\n"
     "or was cancelled (the final state is printed on stderr).\n",
     cli_cmd_wait},
    {"results", "burst results JOB [--output DIR]",
     "Writes the results of an ended job in task order on stdout (for map_reduce:\n"
     "the reducer's output), byte for byte.\n"
     "  --output DIR   write one file per task instead: DIR/<index>, zero-padded to\n"
     "                 the width of the largest index (map_reduce: DIR/reduce)\n"
     "Exit status 1 when some task has no result.\n",
     cli_cmd_results},
    {"jobs", "burst jobs [--all] [--json]",
     "Lists your active jobs.\n"
     "  --all    every job you may see, ended ones included\n"
     "  --json   a JSON array of the objects `burst show --json` prints\n",
     cli_cmd_jobs},
    {"show", "burst show JOB [--json]",
     "Shows a job: state, counts per task state, times, backend.\n"
     "  --json   one JSON object with id, state, total, counts and more\n",
     cli_cmd_show},
    {"tasks", "burst tasks JOB [--state STATE] [--json]",
     "Lists the tasks of a job.\n"
     "  --state STATE   only tasks in STATE (queued, dispatched, running, succeeded,\n"
     "                  failed, timeout, retrying, cancelled)\n"
     "  --json          a JSON array\n",
     cli_cmd_tasks},
    {"watch", "burst watch JOB",
     "Shows the job's progress until it ends (a bar on a terminal, a line per\n"
     "change otherwise), then exits as `burst wait` does.\n",
     cli_cmd_watch},
    {"cancel", "burst cancel JOB", "Cancels a job: no new task starts.\n",
     cli_cmd_cancel},
    {"logs", "burst logs JOB TASK", "Prints the stderr of the task's last attempt.\n",
     cli_cmd_logs},
    {"quota", "burst quota [--set N]",
     "Prints the concurrency quota and how much of it is in use.\n"
     "  --set N   set the quota (admin only)\n",
     cli_cmd_quota},
};

#define NCMDS (sizeof(cli_cmds) / sizeof(cli_cmds[0]))

static void
cli_print_usage(FILE *f)
{
    fprintf(f, "usage: burst [--socket PATH] COMMAND [ARGS]\n"
               "       burst COMMAND --help\n"
               "       burst --version\n\n"
               "commands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        fprintf(f, "  %s\n", cli_cmds[i].usage);
    fprintf(f, "\nThe socket is --socket, else $BURST_SOCKET, else "
               "$XDG_RUNTIME_DIR/burst.sock.\n"
               "Exit status: 0 success, 1 job failed or cancelled, 2 usage error, "
               "3 other error.\n");
}

int
cli_help(const struct cli_cmd *cmd)
{
    printf("usage: %s\n\n%s", cmd->usage, cmd->help);
    return CLI_EXIT_OK;
}

int
cli_error(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("burst: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_EXIT_ERROR;
}

int
cli_usage(struct cli *cli, const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("burst: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cli->cmd != NULL)
        fprintf(stderr, "usage: %s\n", cli->cmd->usage);
    else
        fprintf(stderr,
                "usage: burst [--socket PATH] COMMAND [ARGS] (see burst --help)\n");
    return CLI_EXIT_USAGE;
}

int
cli_connect(struct cli *cli)
{
    char err[1200];

    if (cli->c != NULL)
        return 0;
    int rc = burst_connect_ex(cli->socket, &cli->c, err, sizeof(err));
    if (rc < 0) {
        if (rc == BURST_ECONNECT)
            return cli_error("%s (is burstd running?)", err);
        return cli_error("%s", err[0] != '\0' ? err : burst_strerror(rc));
    }
    return 0;
}

int
cli_fail(struct cli *cli, int code)
{
    const char *msg = cli->c != NULL ? burst_last_error(cli->c) : "";

    if (msg[0] == '\0')
        msg = burst_strerror(code);
    return cli_error("%s", msg);
}

int
cli_job_exit(const burst_job_info *info)
{
    char state[32];

    if (info->state == BURST_JOB_SUCCEEDED)
        return CLI_EXIT_OK;
    fflush(stdout);
    cli_job_state_upper(info->state, state, sizeof(state));
    if (info->error[0] != '\0')
        fprintf(stderr, "burst: job %llu %s: %s\n", (unsigned long long)info->id, state,
                info->error);
    else
        fprintf(stderr, "burst: job %llu %s\n", (unsigned long long)info->id, state);
    return CLI_EXIT_JOB;
}

int
main(int argc, char **argv)
{
    struct cli cli = {0};
    int i = 1;

    /* Global options come before the command. */
    while (i < argc && argv[i][0] == '-') {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0) {
            printf("burst %s\n", BURST_VERSION);
            return CLI_EXIT_OK;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_usage(stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(a, "--socket") == 0) {
            if (i + 1 >= argc)
                return cli_usage(&cli, "--socket needs a value");
            cli.socket = argv[i + 1];
            i += 2;
            continue;
        }
        if (strncmp(a, "--socket=", 9) == 0) {
            cli.socket = a + 9;
            i++;
            continue;
        }
        return cli_usage(&cli, "unknown option '%s'", a);
    }
    if (cli.socket != NULL && cli.socket[0] == '\0')
        return cli_usage(&cli, "--socket must not be empty");
    if (i >= argc) {
        cli_print_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 < argc) {
            for (size_t k = 0; k < NCMDS; k++)
                if (strcmp(argv[i + 1], cli_cmds[k].name) == 0)
                    return cli_help(&cli_cmds[k]);
        }
        cli_print_usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t k = 0; k < NCMDS; k++) {
        if (strcmp(argv[i], cli_cmds[k].name) != 0)
            continue;
        cli.cmd = &cli_cmds[k];
        int rc = cli_cmds[k].run(&cli, argc - i, argv + i);
        burst_close(cli.c);
        if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
            rc = cli_error("cannot write the output");
        return rc;
    }
    return cli_usage(&cli, "unknown command '%s'", argv[i]);
}
