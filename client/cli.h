/*
 * client/cli.h - private declarations of the `burst` command-line tool:
 * the command table and shared state (cli.c), argument parsing (cli_args.c),
 * JSON output (cli_json.c), aligned tables (cli_table.c), formatting of
 * states, times and jobs (cli_format.c), and the commands themselves
 * (cli_submit.c, cli_inspect.c, cli_results.c, cli_watch.c).
 *
 * The CLI is a client of the public API only (burst.h); everything it shows
 * comes from the daemon through libburst.
 */
#ifndef BURST_CLIENT_CLI_H
#define BURST_CLIENT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "burst.h"

/* Exit codes: the CLI contract (DESIGN.md). */
enum cli_exit {
    CLI_EXIT_OK = 0,    /* success, or the job succeeded */
    CLI_EXIT_JOB = 1,   /* the job failed or was cancelled */
    CLI_EXIT_USAGE = 2, /* bad arguments */
    CLI_EXIT_ERROR = 3, /* anything else: cannot connect, the daemon refused */
};

/* ---- cli.c: commands and their shared state ------------------------------ */

struct cli_cmd;

struct cli {
    const char *socket;        /* borrowed from argv/env; NULL = default */
    burst_client *c;           /* owned: connected on first use */
    const struct cli_cmd *cmd; /* the command being run */
};

struct cli_cmd {
    const char *name;
    const char *usage; /* one line: "burst wait JOB" */
    const char *help;  /* the rest of --help */
    int (*run)(struct cli *cli, int argc, char **argv);
};

/* Connects if not yet connected.  Returns 0, or prints why and returns
 * CLI_EXIT_ERROR. */
int cli_connect(struct cli *cli);
/* Prints "burst: <the daemon's message>" for code; returns CLI_EXIT_ERROR. */
int cli_fail(struct cli *cli, int code);
/* Prints "burst: <message>" and the command's usage line; returns
 * CLI_EXIT_USAGE. */
int cli_usage(struct cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints "burst: <message>"; returns CLI_EXIT_ERROR. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the command's --help text on stdout; returns CLI_EXIT_OK. */
int cli_help(const struct cli_cmd *cmd);

/* The commands (argv[0] is the command name). */
int cli_cmd_map(struct cli *cli, int argc, char **argv);
int cli_cmd_map_reduce(struct cli *cli, int argc, char **argv);
int cli_cmd_wait(struct cli *cli, int argc, char **argv);
int cli_cmd_watch(struct cli *cli, int argc, char **argv);
int cli_cmd_results(struct cli *cli, int argc, char **argv);
int cli_cmd_jobs(struct cli *cli, int argc, char **argv);
int cli_cmd_show(struct cli *cli, int argc, char **argv);
int cli_cmd_tasks(struct cli *cli, int argc, char **argv);
int cli_cmd_cancel(struct cli *cli, int argc, char **argv);
int cli_cmd_logs(struct cli *cli, int argc, char **argv);
int cli_cmd_quota(struct cli *cli, int argc, char **argv);

/* The exit code and stderr report for an ended job (as `burst wait`). */
int cli_job_exit(const burst_job_info *info);

/* ---- cli_args.c: argument parsing --------------------------------------- */

/* One option of a command.  A flag sets *flag; an option with a value
 * stores the argument in *value (the last occurrence wins). */
struct cli_opt {
    const char *name; /* "--chunksize" */
    const char **value;
    bool *flag;
};

#define CLI_PARSE_HELP 1

/*
 * Parses argv[1 .. argc) against opts ("--name VALUE" and "--name=VALUE";
 * "--" ends the options).  Positional arguments go to pos (at most maxpos;
 * *npos receives the count).  Returns 0, CLI_PARSE_HELP for --help/-h, or
 * -EINVAL with a message naming the argument in err.
 */
int cli_parse(int argc, char **argv, const struct cli_opt *opts, size_t nopts, char **pos,
              size_t maxpos, size_t *npos, char *err, size_t errsize);

/* "--chunksize must be an integer from 1 to 100000, got 'x'" on failure.
 * Each returns 0 or -EINVAL with the message in err. */
int cli_parse_u32(const char *what, const char *s, uint32_t min, uint32_t max,
                  uint32_t *out, char *err, size_t errsize);
/* Decimal seconds ("30", "0.5", "1.25") into milliseconds, rounding a
 * fraction of a millisecond up so that a small timeout never means none. */
int cli_parse_seconds(const char *what, const char *s, uint64_t *ms, char *err,
                      size_t errsize);
int cli_parse_job(const char *s, uint64_t *job, char *err, size_t errsize);
/* Splits "LIB.so:SYMBOL" at its last colon into path and symbol (copied). */
int cli_parse_so(const char *what, const char *s, char *path, size_t pathsize,
                 char *symbol, size_t symsize, char *err, size_t errsize);
/* A task state name in any case ("SUCCEEDED", "succeeded"). */
int cli_parse_task_state(const char *s, int *state, char *err, size_t errsize);

/* Reads a whole file ("-" = stdin) into *data (malloc'ed).  Returns 0, or
 * -errno with "cannot read 'f.txt': No such file or directory" in err. */
int cli_read_file(const char *path, char **data, size_t *len, char *err, size_t errsize);

/* ---- cli_json.c: one JSON document on stdout ----------------------------- */

#define JSON_MAX_DEPTH 16

struct json {
    FILE *f; /* borrowed */
    int depth;
    bool first[JSON_MAX_DEPTH]; /* no member written yet at this depth */
    bool after_key;             /* a key was written; its value comes next */
};

/* Writes s[0 .. len) as a JSON string, quotes included: quotes, backslashes
 * and control characters escaped, invalid UTF-8 replaced by \ufffd. */
void json_write_string(FILE *f, const char *s, size_t len);

void json_init(struct json *j, FILE *f);
void json_begin_object(struct json *j);
void json_end_object(struct json *j);
void json_begin_array(struct json *j);
void json_end_array(struct json *j);
void json_key(struct json *j, const char *key);
void json_str(struct json *j, const char *s);
void json_uint(struct json *j, uint64_t v);
void json_int(struct json *j, int64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);
/* Ends the document with a newline. */
void json_finish(struct json *j);

/* ---- cli_table.c: aligned columns ------------------------------------------ */

struct table {
    size_t ncols;
    const char *const *headers; /* borrowed: ncols names */
    uint32_t right;             /* bit i: column i is right-aligned (numbers) */
    char **cells;               /* owned: nrows * ncols strings */
    size_t nrows, cap;
};

void table_init(struct table *t, size_t ncols, const char *const *headers,
                uint32_t right);
/* Copies ncols cells (control characters become spaces so that no cell
 * can break the layout).  Returns 0 or -ENOMEM. */
int table_add(struct table *t, const char *const *cells);
/* Writes the header and rows, columns two spaces apart, without trailing
 * blanks. */
void table_print(const struct table *t, FILE *f);
void table_free(struct table *t);
/* Display width of a UTF-8 string (code points; invalid bytes count one). */
size_t table_text_width(const char *s);

/* ---- cli_format.c: how jobs, states and times look ------------------------ */

int64_t cli_now_ms(void);
/* "SUCCEEDED" for a job state; "?" when unknown. */
const char *cli_job_state_upper(int state, char *buf, size_t size);
const char *cli_task_state_upper(int state, char *buf, size_t size);
/* Slurm-like elapsed time: "M:SS", "H:MM:SS", "D-HH:MM:SS". */
void cli_format_elapsed(int64_t ms, char *buf, size_t size);
/* How long the job has run (0 when it has not started). */
int64_t cli_job_elapsed_ms(const burst_job_info *info, int64_t now_ms);
int64_t cli_task_elapsed_ms(const burst_task_info *t, int64_t now_ms);
/* Local time "2024-05-01 12:34:56", or "-" for 0. */
void cli_format_time(int64_t ms, char *buf, size_t size);
/* The user name of uid, or the number. */
void cli_owner_name(uint32_t uid, char *buf, size_t size);
/* Tasks that failed for good: failed + timeout. */
uint32_t cli_job_failed(const burst_job_info *info);
/* Writes one job as the object `show --json` prints. */
void cli_job_json(struct json *j, const burst_job_info *info);
/* Writes the `show` lines. */
void cli_job_show(FILE *f, const burst_job_info *info);

#endif /* BURST_CLIENT_CLI_H */
