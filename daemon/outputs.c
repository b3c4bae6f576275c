/*
 * daemon/outputs.c - reading ranges of output objects from the ledger or
 * from storage; see outputs.h.
 */
#include "outputs.h"

#include <errno.h>
#include <stdlib.h>

#include "burstd.h"
#include "ledger.h"

/* The ranges the ledger did not have, read from storage as one batch. */
struct outputs_rest {
    struct storage_range *ranges; /* the caller's */
    size_t *map;                  /* rest[k] is ranges[map[k]] */
    struct storage_range *rest;
    size_t nrest;
    storage_cb cb;
    void *arg;
};

static void
rest_read(void *arg, int status)
{
    struct outputs_rest *x = arg;
    for (size_t k = 0; k < x->nrest; k++) {
        struct storage_range *to = &x->ranges[x->map[k]];
        to->data = x->rest[k].data; /* ownership moves with it */
        to->got = x->rest[k].got;
        to->status = x->rest[k].status;
    }
    storage_cb cb = x->cb;
    void *cbarg = x->arg;
    free(x->map);
    free(x->rest);
    free(x);
    cb(cbarg, status);
}

int
outputs_getv(struct burstd *d, uint64_t job, const struct output_ref *refs,
             struct storage_range *ranges, size_t n, storage_cb cb, void *arg)
{
    struct outputs_rest *x = calloc(1, sizeof(*x));
    if (x != NULL) {
        x->map = calloc(n ? n : 1, sizeof(*x->map));
        x->rest = calloc(n ? n : 1, sizeof(*x->rest));
    }
    if (x == NULL || x->map == NULL || x->rest == NULL) {
        if (x != NULL) {
            free(x->map);
            free(x->rest);
        }
        free(x);
        return -ENOMEM;
    }
    x->ranges = ranges;
    x->cb = cb;
    x->arg = arg;
    for (size_t i = 0; i < n; i++) {
        void *data;
        size_t got;
        int rc = ledger_output_read(d->ledger, job, refs[i].dispatch, refs[i].n,
                                    ranges[i].off, ranges[i].len, &data, &got);
        ranges[i].data = data;
        ranges[i].got = got;
        ranges[i].status = rc < 0 ? rc : 0;
        if (rc == 0) { /* not in the ledger: in storage */
            x->map[x->nrest] = i;
            x->rest[x->nrest].key = ranges[i].key;
            x->rest[x->nrest].off = ranges[i].off;
            x->rest[x->nrest].len = ranges[i].len;
            x->nrest++;
        }
    }
    if (x->nrest == 0) {
        rest_read(x, 0);
        return 0;
    }
    int rc = storage_getv(d->storage, x->rest, x->nrest, rest_read, x);
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            free(ranges[i].data);
            ranges[i].data = NULL;
            ranges[i].got = 0;
        }
        free(x->map);
        free(x->rest);
        free(x);
    }
    return rc;
}
