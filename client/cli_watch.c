/*
 * client/cli_watch.c - following a job to its end: `burst wait`, and
 * `burst watch`, which draws a progress bar redrawn in place on a terminal
 * (or prints a plain line per change, at most once a second, into a pipe or
 * file).  watch is driven by the job's events through burst_fd() and
 * burst_dispatch(), and asks for the job's status at most four times a
 * second while events come, and once a second otherwise.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli.h"

/* Reads "COMMAND JOB" for wait and watch. */
static int
cli_one_job(struct cli *cli, int argc, char **argv, uint64_t *job)
{
    char *pos[1];
    size_t npos;
    char err[512];

    int rc = cli_parse(argc, argv, NULL, 0, pos, 1, &npos, err, sizeof(err));
    if (rc == CLI_PARSE_HELP)
        return CLI_PARSE_HELP;
    if (rc < 0)
        return cli_usage(cli, "%s", err);
    if (npos < 1)
        return cli_usage(cli, "JOB is required");
    if (cli_parse_job(pos[0], job, err, sizeof(err)) < 0)
        return cli_usage(cli, "%s", err);
    return 0;
}

int
cli_cmd_wait(struct cli *cli, int argc, char **argv)
{
    burst_job_info info;
    uint64_t job;

    int rc = cli_one_job(cli, argc, argv, &job);
    if (rc == CLI_PARSE_HELP)
        return cli_help(cli->cmd);
    if (rc != 0)
        return rc;
    rc = cli_connect(cli);
    if (rc != 0)
        return rc;
    rc = burst_wait(cli->c, job, &info);
    if (rc < 0 && rc != BURST_EJOBFAILED && rc != BURST_ECANCELLED)
        return cli_fail(cli, rc);
    return cli_job_exit(&info);
}

/* ---- watch ---------------------------------------------------------------- */

struct watch {
    bool tty;
    bool dirty;          /* an event came since the last status */
    int64_t started;     /* when watching began (our clock) */
    int64_t last_print;  /* plain mode: when the last line was printed */
    char last_line[512]; /* plain mode: the last line without elapsed time */
};

static void
watch_on_event(void *arg, const burst_event *ev)
{
    struct watch *w = arg;

    (void)ev;
    w->dirty = true;
}

/* "succeeded 45  running 4  queued 51" for the states that have tasks. */
static void
watch_counts(const burst_job_info *info, const char *sep, char *buf, size_t size)
{
    size_t n = 0;

    buf[0] = '\0';
    for (int st = 0; st < BURST_TASK_NSTATES && n < size; st++) {
        const char *name = burst_task_state_name(st);
        if (info->counts[st] == 0 || name == NULL)
            continue;
        int w = snprintf(buf + n, size - n, "%s%s %u", n > 0 ? sep : "", name,
                         info->counts[st]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

/* Percentage of tasks in a final state. */
static unsigned
watch_percent(const burst_job_info *info)
{
    uint64_t ended = 0, all = 0;

    for (int st = 0; st < BURST_TASK_NSTATES; st++) {
        all += info->counts[st];
        if (burst_task_state_is_final(st))
            ended += info->counts[st];
    }
    /* map_reduce counts its reducer besides the total map tasks. */
    if (all < info->total)
        all = info->total;
    if (burst_job_state_is_final(info->state) && info->state == BURST_JOB_SUCCEEDED)
        return 100;
    return all > 0 ? (unsigned)(ended * 100 / all) : 0;
}

static void
watch_draw(struct watch *w, const burst_job_info *info, int64_t now, bool final)
{
    char state[32], counts[320], elapsed[32], line[512];
    unsigned pct = watch_percent(info);

    cli_job_state_upper(info->state, state, sizeof(state));
    cli_format_elapsed(cli_job_elapsed_ms(info, now), elapsed, sizeof(elapsed));

    if (w->tty) {
        struct winsize ws;
        int cols =
            ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
        int bar = cols - 70;
        bar = bar < 10 ? 10 : bar > 40 ? 40 : bar;
        int filled = (int)(pct * (unsigned)bar / 100);
        char bars[48];
        for (int i = 0; i < bar; i++)
            bars[i] = i < filled ? '#' : '-';
        bars[bar] = '\0';
        watch_counts(info, "  ", counts, sizeof(counts));
        /* \r returns to the line's start, \033[K clears what a longer
         * previous line left behind. */
        printf("\r[%s] %3u%%  %s  %s  %s\033[K", bars, pct, state, counts, elapsed);
        if (final)
            putchar('\n');
        fflush(stdout);
        return;
    }

    watch_counts(info, " ", counts, sizeof(counts));
    snprintf(line, sizeof(line), "job %llu %s %u%% %s", (unsigned long long)info->id,
             state, pct, counts);
    bool changed = strcmp(line, w->last_line) != 0;
    if (!final && (!changed || (w->last_print > 0 && now - w->last_print < 1000)))
        return;
    if (final && !changed && w->last_print > 0)
        return;
    printf("%s elapsed %s\n", line, elapsed);
    fflush(stdout);
    snprintf(w->last_line, sizeof(w->last_line), "%s", line);
    w->last_print = now;
}

int
cli_cmd_watch(struct cli *cli, int argc, char **argv)
{
    struct watch w = {.tty = isatty(STDOUT_FILENO) == 1};
    burst_job_info info;
    uint64_t job;

    int rc = cli_one_job(cli, argc, argv, &job);
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
    int64_t now = cli_now_ms();
    if (burst_job_state_is_final(info.state)) {
        watch_draw(&w, &info, now, true);
        return cli_job_exit(&info);
    }
    rc = burst_subscribe(cli->c, job, info.last_seq, watch_on_event, &w);
    if (rc < 0)
        return cli_fail(cli, rc);
    watch_draw(&w, &info, now, false);
    int64_t last_status = now;

    for (;;) {
        int64_t since = cli_now_ms() - last_status;
        int64_t due = w.dirty ? 250 : 1000;
        int timeout = since >= due ? 0 : (int)(due - since);
        if (burst_pending(cli->c) > 0)
            timeout = 0;
        struct pollfd p = {.fd = burst_fd(cli->c), .events = POLLIN};
        int n = poll(&p, 1, timeout);
        if (n < 0 && errno != EINTR)
            return cli_error("poll: %s", strerror(errno));
        if ((n > 0 || burst_pending(cli->c) > 0) && (rc = burst_dispatch(cli->c)) < 0)
            return cli_fail(cli, rc);
        now = cli_now_ms();
        since = now - last_status;
        if (!(since >= 1000 || (w.dirty && since >= 250)))
            continue;
        w.dirty = false;
        last_status = now;
        rc = burst_status(cli->c, job, &info);
        if (rc < 0)
            return cli_fail(cli, rc);
        bool final = burst_job_state_is_final(info.state);
        watch_draw(&w, &info, now, final);
        if (final)
            break;
    }
    burst_unsubscribe(cli->c, job);
    return cli_job_exit(&info);
}
