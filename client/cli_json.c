/*
 * client/cli_json.c - the `--json` output: a small streaming writer that
 * produces one indented JSON document.  Strings from the daemon (commands,
 * names, error texts) are arbitrary bytes, so the escaper guarantees valid
 * JSON whatever they hold: control characters, quotes and backslashes are
 * escaped and bytes that are not valid UTF-8 become U+FFFD.
 */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the
 * bytes there are not one (overlong forms and surrogates included). */
static size_t
utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    size_t len;
    uint32_t cp;

    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf) {
        len = 2;
        cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        cp = b & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void
json_write_string(FILE *f, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    fputc('"', f);
    while (i < len) {
        unsigned char ch = p[i];
        switch (ch) {
        case '"':
            fputs("\\\"", f);
            i++;
            continue;
        case '\\':
            fputs("\\\\", f);
            i++;
            continue;
        case '\n':
            fputs("\\n", f);
            i++;
            continue;
        case '\r':
            fputs("\\r", f);
            i++;
            continue;
        case '\t':
            fputs("\\t", f);
            i++;
            continue;
        case '\b':
            fputs("\\b", f);
            i++;
            continue;
        case '\f':
            fputs("\\f", f);
            i++;
            continue;
        default:
            break;
        }
        if (ch < 0x20 || ch == 0x7f) {
            fprintf(f, "\\u%04x", ch);
            i++;
            continue;
        }
        size_t n = utf8_valid_len(p + i, len - i);
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        fwrite(p + i, 1, n, f);
        i += n;
    }
    fputc('"', f);
}

void
json_init(struct json *j, FILE *f)
{
    memset(j, 0, sizeof(*j));
    j->f = f;
}

static void
json_indent(struct json *j)
{
    fputc('\n', j->f);
    for (int i = 0; i < j->depth; i++)
        fputs("  ", j->f);
}

/* Separates a new member or element from the previous one. */
static void
json_pre_value(struct json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth == 0)
        return;
    if (!j->first[j->depth])
        fputc(',', j->f);
    j->first[j->depth] = false;
    json_indent(j);
}

static void
json_open(struct json *j, char ch)
{
    json_pre_value(j);
    fputc(ch, j->f);
    /* Deeper nesting than we ever produce would only lose indentation. */
    if (j->depth + 1 < JSON_MAX_DEPTH)
        j->depth++;
    j->first[j->depth] = true;
}

static void
json_close(struct json *j, char ch)
{
    bool empty = j->first[j->depth];
    if (j->depth > 0)
        j->depth--;
    if (!empty)
        json_indent(j);
    fputc(ch, j->f);
}

void
json_begin_object(struct json *j)
{
    json_open(j, '{');
}

void
json_end_object(struct json *j)
{
    json_close(j, '}');
}

void
json_begin_array(struct json *j)
{
    json_open(j, '[');
}

void
json_end_array(struct json *j)
{
    json_close(j, ']');
}

void
json_key(struct json *j, const char *key)
{
    json_pre_value(j);
    json_write_string(j->f, key, strlen(key));
    fputs(": ", j->f);
    j->after_key = true;
}

void
json_str(struct json *j, const char *s)
{
    json_pre_value(j);
    if (s == NULL)
        fputs("null", j->f);
    else
        json_write_string(j->f, s, strlen(s));
}

void
json_uint(struct json *j, uint64_t v)
{
    json_pre_value(j);
    fprintf(j->f, "%" PRIu64, v);
}

void
json_int(struct json *j, int64_t v)
{
    json_pre_value(j);
    fprintf(j->f, "%" PRId64, v);
}

void
json_bool(struct json *j, bool v)
{
    json_pre_value(j);
    fputs(v ? "true" : "false", j->f);
}

void
json_null(struct json *j)
{
    json_pre_value(j);
    fputs("null", j->f);
}

void
json_finish(struct json *j)
{
    fputc('\n', j->f);
}
