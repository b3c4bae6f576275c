/*
 * client/cli_format.c - how the CLI shows jobs, states and times to people
 * (upper-case Slurm-like state names, elapsed times as squeue prints them,
 * user names) and to scripts (the job object of `--json`).
 */
#include <ctype.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"

int64_t
cli_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *
cli_upper(const char *name, char *buf, size_t size)
{
    size_t i = 0;

    if (name == NULL)
        name = "?";
    for (; name[i] != '\0' && i + 1 < size; i++)
        buf[i] = (char)toupper((unsigned char)name[i]);
    buf[i] = '\0';
    return buf;
}

const char *
cli_job_state_upper(int state, char *buf, size_t size)
{
    return cli_upper(burst_job_state_name(state), buf, size);
}

const char *
cli_task_state_upper(int state, char *buf, size_t size)
{
    return cli_upper(burst_task_state_name(state), buf, size);
}

void
cli_format_elapsed(int64_t ms, char *buf, size_t size)
{
    int64_t s = ms > 0 ? ms / 1000 : 0;
    int64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;

    if (d > 0)
        snprintf(buf, size, "%lld-%02lld:%02lld:%02lld", (long long)d, (long long)h,
                 (long long)m, (long long)sec);
    else if (h > 0)
        snprintf(buf, size, "%lld:%02lld:%02lld", (long long)h, (long long)m,
                 (long long)sec);
    else
        snprintf(buf, size, "%lld:%02lld", (long long)m, (long long)sec);
}

int64_t
cli_job_elapsed_ms(const burst_job_info *info, int64_t now_ms)
{
    if (info->started_ms <= 0)
        return 0;
    int64_t end = info->finished_ms > 0 ? info->finished_ms : now_ms;
    return end > info->started_ms ? end - info->started_ms : 0;
}

int64_t
cli_task_elapsed_ms(const burst_task_info *t, int64_t now_ms)
{
    if (t->started_ms <= 0)
        return 0;
    int64_t end = t->finished_ms > 0 ? t->finished_ms : now_ms;
    return end > t->started_ms ? end - t->started_ms : 0;
}

void
cli_format_time(int64_t ms, char *buf, size_t size)
{
    struct tm tm;
    time_t t = (time_t)(ms / 1000);

    if (ms <= 0 || localtime_r(&t, &tm) == NULL ||
        strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, size, "-");
}

void
cli_owner_name(uint32_t uid, char *buf, size_t size)
{
    struct passwd pw, *res = NULL;
    char tmp[4096];

    if (getpwuid_r((uid_t)uid, &pw, tmp, sizeof(tmp), &res) == 0 && res != NULL)
        snprintf(buf, size, "%s", res->pw_name);
    else
        snprintf(buf, size, "%u", uid);
}

uint32_t
cli_job_failed(const burst_job_info *info)
{
    return info->counts[BURST_TASK_FAILED] + info->counts[BURST_TASK_TIMEOUT];
}

static void
json_time(struct json *j, const char *key, int64_t ms)
{
    json_key(j, key);
    if (ms > 0)
        json_int(j, ms);
    else
        json_null(j);
}

void
cli_job_json(struct json *j, const burst_job_info *info)
{
    char owner[256];

    cli_owner_name(info->owner_uid, owner, sizeof(owner));
    json_begin_object(j);
    json_key(j, "id");
    json_uint(j, info->id);
    json_key(j, "name");
    json_str(j, info->name[0] != '\0' ? info->name : NULL);
    json_key(j, "kind");
    json_str(j, burst_job_kind_name(info->kind));
    json_key(j, "owner");
    json_uint(j, info->owner_uid);
    json_key(j, "owner_name");
    json_str(j, owner);
    json_key(j, "state");
    json_str(j, burst_job_state_name(info->state));
    json_key(j, "total");
    json_uint(j, info->total);
    json_key(j, "counts");
    json_begin_object(j);
    for (int st = 0; st < BURST_TASK_NSTATES; st++) {
        const char *name = burst_task_state_name(st);
        if (name == NULL)
            continue;
        json_key(j, name);
        json_uint(j, info->counts[st]);
    }
    json_end_object(j);
    json_time(j, "created", info->created_ms);
    json_time(j, "started", info->started_ms);
    json_time(j, "finished", info->finished_ms);
    json_key(j, "elapsed_ms");
    json_int(j, cli_job_elapsed_ms(info, cli_now_ms()));
    json_key(j, "backend");
    json_str(j, info->backend);
    json_key(j, "function");
    json_str(j, info->function);
    json_key(j, "error");
    json_str(j, info->error[0] != '\0' ? info->error : NULL);
    json_end_object(j);
}

/* Writes "key: value\n" with control characters of value shown as '?':
 * a job name must not be able to move the cursor of whoever reads it. */
static void
show_line(FILE *f, const char *key, const char *value)
{
    fprintf(f, "%s: ", key);
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
    fputc('\n', f);
}

void
cli_job_show(FILE *f, const burst_job_info *info)
{
    char owner[256], buf[64], created[64], started[64], finished[64], elapsed[64];

    cli_owner_name(info->owner_uid, owner, sizeof(owner));
    cli_format_time(info->created_ms, created, sizeof(created));
    cli_format_time(info->started_ms, started, sizeof(started));
    cli_format_time(info->finished_ms, finished, sizeof(finished));
    cli_format_elapsed(cli_job_elapsed_ms(info, cli_now_ms()), elapsed, sizeof(elapsed));

    fprintf(f, "id: %llu\n", (unsigned long long)info->id);
    show_line(f, "name", info->name[0] != '\0' ? info->name : "-");
    const char *kind = burst_job_kind_name(info->kind);
    fprintf(f, "kind: %s\n", kind != NULL ? kind : "?");
    fprintf(f, "owner: %s (%u)\n", owner, info->owner_uid);
    fprintf(f, "state: %s\n", cli_job_state_upper(info->state, buf, sizeof(buf)));
    show_line(f, "function", info->function);
    show_line(f, "backend", info->backend[0] != '\0' ? info->backend : "-");
    fprintf(f, "total: %u\n", info->total);
    for (int st = 0; st < BURST_TASK_NSTATES; st++) {
        const char *name = burst_task_state_name(st);
        if (name != NULL)
            fprintf(f, "%s: %u\n", name, info->counts[st]);
    }
    fprintf(f, "created: %s\n", created);
    fprintf(f, "started: %s\n", started);
    fprintf(f, "finished: %s\n", finished);
    fprintf(f, "elapsed: %s\n", elapsed);
    show_line(f, "error", info->error[0] != '\0' ? info->error : "-");
}
