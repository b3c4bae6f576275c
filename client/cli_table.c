/*
 * client/cli_table.c - the aligned tables of `burst jobs` and `burst tasks`:
 * rows are collected first, then every column is as wide as its widest
 * cell, in the manner of squeue and condor_q.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void
table_init(struct table *t, size_t ncols, const char *const *headers, uint32_t right)
{
    memset(t, 0, sizeof(*t));
    /* The alignment mask has a bit per column; we never need more. */
    t->ncols = ncols < 32 ? ncols : 32;
    t->headers = headers;
    t->right = right;
}

size_t
table_text_width(const char *s)
{
    size_t w = 0;

    /* Count code points: continuation bytes (10xxxxxx) add no width.  East
     * Asian wide characters are rare in job names; they would only make a
     * column one space narrow. */
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if ((*p & 0xc0) != 0x80)
            w++;
    return w;
}

static char *
table_clean_copy(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);

    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        d[i] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    d[n] = '\0';
    return d;
}

int
table_add(struct table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
        if (c == NULL)
            return -ENOMEM;
        t->cells = c;
        t->cap = cap;
    }
    char **row = &t->cells[t->nrows * t->ncols];
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = table_clean_copy(cells[i] != NULL ? cells[i] : "");
        if (row[i] == NULL) {
            while (i-- > 0)
                free(row[i]);
            return -ENOMEM;
        }
    }
    t->nrows++;
    return 0;
}

static void
table_row(const struct table *t, const size_t *width, const char *const *cells, FILE *f)
{
    for (size_t i = 0; i < t->ncols; i++) {
        bool last = i + 1 == t->ncols;
        size_t pad = width[i] - table_text_width(cells[i]);
        if (i > 0)
            fputs("  ", f);
        if (t->right & (1u << i))
            fprintf(f, "%*s", (int)pad, "");
        fputs(cells[i], f);
        if (!(t->right & (1u << i)) && !last)
            fprintf(f, "%*s", (int)pad, "");
    }
    fputc('\n', f);
}

void
table_print(const struct table *t, FILE *f)
{
    size_t width[32] = {0};

    for (size_t i = 0; i < t->ncols; i++) {
        width[i] = table_text_width(t->headers[i]);
        for (size_t r = 0; r < t->nrows; r++) {
            size_t w = table_text_width(t->cells[r * t->ncols + i]);
            if (w > width[i])
                width[i] = w;
        }
    }
    table_row(t, width, t->headers, f);
    for (size_t r = 0; r < t->nrows; r++)
        table_row(t, width, (const char *const *)&t->cells[r * t->ncols], f);
}

void
table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}
