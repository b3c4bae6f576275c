/*
 * daemon/ledger_vfs.c - see ledger_vfs.h.  The WAL format it relies on
 * (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte file
 * header at offset 0, then frames of a 24-byte header and one page; bytes
 * 4..7 of a frame header are nonzero only in the frame that commits a
 * transaction.  SQLite writes each frame's header and page as two writes,
 * header first.
 */
#include "ledger_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_VFS_NAME "burst-ledger"
#define WAL_HEADER 32
#define FRAME_HEADER 24
/* A commit of the daemon's usual size fits; a larger one goes out in
 * pieces of this size.  The unix VFS writes at most 128 KiB - 1 per call
 * (it masks the length), so a piece must stay below that. */
#define GATHER_CAP (120 * 1024)

/* A WAL file: the default VFS's file, and the appends not written yet. */
struct gfile {
    sqlite3_file base;     /* pMethods = &gfile_io */
    sqlite3_file *real;    /* the default VFS's file, in memory just after */
    char *buf;             /* GATHER_CAP bytes once needed */
    size_t len;            /* gathered */
    sqlite3_int64 at;      /* file offset of buf[0] */
    sqlite3_int64 next;    /* the end of the last write: an append goes there */
    bool commit_header;    /* the last write was a commit frame's header */
};

static sqlite3_vfs *orig_vfs;
static sqlite3_vfs ledger_vfs;
static bool registered;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int
gather_flush(struct gfile *g)
{
    if (g->len == 0)
        return SQLITE_OK;
    size_t len = g->len;
    g->len = 0;
    return g->real->pMethods->xWrite(g->real, g->buf, (int)len, g->at);
}

static int
g_close(sqlite3_file *f)
{
    struct gfile *g = (struct gfile *)f;
    int rc = gather_flush(g);
    int rc2 = g->real->pMethods->xClose(g->real);
    free(g->buf);
    g->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int
g_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 ofst)
{
    struct gfile *g = (struct gfile *)f;
    if (g->len > 0 && ofst < g->at + (sqlite3_int64)g->len && ofst + amt > g->at) {
        int rc = gather_flush(g);
        if (rc != SQLITE_OK)
            return rc;
    }
    return g->real->pMethods->xRead(g->real, out, amt, ofst);
}

static int
g_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 ofst)
{
    struct gfile *g = (struct gfile *)f;
    const unsigned char *p = data;
    bool header = amt == FRAME_HEADER && ofst >= WAL_HEADER;
    bool commit = header && (p[4] | p[5] | p[6] | p[7]) != 0;
    int rc = SQLITE_OK;

    bool append = ofst == g->next && (g->len == 0 || ofst == g->at + (sqlite3_int64)g->len);
    if (append && g->buf == NULL)
        g->buf = malloc(GATHER_CAP);
    if (append && g->buf != NULL && amt <= GATHER_CAP) {
        if (g->len + (size_t)amt > GATHER_CAP && (rc = gather_flush(g)) != SQLITE_OK)
            return rc;
        if (g->len == 0)
            g->at = ofst;
        memcpy(g->buf + g->len, data, (size_t)amt);
        g->len += (size_t)amt;
        g->next = ofst + amt;
        /* The page of a commit frame: the transaction is complete, and it
         * must be in the file before SQLite counts it. */
        bool completes = g->commit_header && !header;
        g->commit_header = commit;
        return completes ? gather_flush(g) : SQLITE_OK;
    }

    /* Anything else -- the WAL's header after a restart, a page or header
     * rewritten in place -- keeps its place in the order of writes. */
    g->commit_header = false;
    if (g->len > 0 && ofst >= g->at && ofst + amt <= g->at + (sqlite3_int64)g->len) {
        memcpy(g->buf + (ofst - g->at), data, (size_t)amt);
    } else {
        if ((rc = gather_flush(g)) != SQLITE_OK)
            return rc;
        rc = g->real->pMethods->xWrite(g->real, data, amt, ofst);
        g->next = ofst + amt;
    }
    /* A commit frame's header rewritten with new checksums is the last
     * write of its transaction. */
    if (rc == SQLITE_OK && commit)
        rc = gather_flush(g);
    return rc;
}

static int
g_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct gfile *g = (struct gfile *)f;
    int rc = gather_flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xTruncate(g->real, size);
}

static int
g_sync(sqlite3_file *f, int flags)
{
    struct gfile *g = (struct gfile *)f;
    int rc = gather_flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xSync(g->real, flags);
}

static int
g_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    struct gfile *g = (struct gfile *)f;
    int rc = gather_flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xFileSize(g->real, size);
}

static int
g_lock(sqlite3_file *f, int level)
{
    struct gfile *g = (struct gfile *)f;
    return g->real->pMethods->xLock(g->real, level);
}

static int
g_unlock(sqlite3_file *f, int level)
{
    struct gfile *g = (struct gfile *)f;
    return g->real->pMethods->xUnlock(g->real, level);
}

static int
g_check_reserved(sqlite3_file *f, int *out)
{
    struct gfile *g = (struct gfile *)f;
    return g->real->pMethods->xCheckReservedLock(g->real, out);
}

static int
g_file_control(sqlite3_file *f, int op, void *arg)
{
    struct gfile *g = (struct gfile *)f;
    /* A size hint or similar may extend the file behind what is gathered. */
    int rc = gather_flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xFileControl(g->real, op, arg);
}

static int
g_sector_size(sqlite3_file *f)
{
    struct gfile *g = (struct gfile *)f;
    return g->real->pMethods->xSectorSize(g->real);
}

static int
g_device_characteristics(sqlite3_file *f)
{
    struct gfile *g = (struct gfile *)f;
    return g->real->pMethods->xDeviceCharacteristics(g->real);
}

/* A WAL file maps no shared memory and is not memory-mapped by SQLite; the
 * methods exist because the method table's version says so. */
static int
g_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **out)
{
    struct gfile *g = (struct gfile *)f;
    if (g->real->pMethods->iVersion < 2)
        return SQLITE_IOERR;
    return g->real->pMethods->xShmMap(g->real, region, size, extend, out);
}

static int
g_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct gfile *g = (struct gfile *)f;
    if (g->real->pMethods->iVersion < 2)
        return SQLITE_IOERR;
    return g->real->pMethods->xShmLock(g->real, offset, n, flags);
}

static void
g_shm_barrier(sqlite3_file *f)
{
    struct gfile *g = (struct gfile *)f;
    if (g->real->pMethods->iVersion >= 2)
        g->real->pMethods->xShmBarrier(g->real);
}

static int
g_shm_unmap(sqlite3_file *f, int delete_flag)
{
    struct gfile *g = (struct gfile *)f;
    if (g->real->pMethods->iVersion < 2)
        return SQLITE_OK;
    return g->real->pMethods->xShmUnmap(g->real, delete_flag);
}

static int
g_fetch(sqlite3_file *f, sqlite3_int64 ofst, int amt, void **out)
{
    struct gfile *g = (struct gfile *)f;
    *out = NULL;
    if (g->real->pMethods->iVersion < 3)
        return SQLITE_OK; /* no mapping: SQLite reads instead */
    int rc = gather_flush(g);
    return rc != SQLITE_OK ? rc : g->real->pMethods->xFetch(g->real, ofst, amt, out);
}

static int
g_unfetch(sqlite3_file *f, sqlite3_int64 ofst, void *p)
{
    struct gfile *g = (struct gfile *)f;
    if (g->real->pMethods->iVersion < 3)
        return SQLITE_OK;
    return g->real->pMethods->xUnfetch(g->real, ofst, p);
}

static const sqlite3_io_methods gfile_io = {
    .iVersion = 3,
    .xClose = g_close,
    .xRead = g_read,
    .xWrite = g_write,
    .xTruncate = g_truncate,
    .xSync = g_sync,
    .xFileSize = g_file_size,
    .xLock = g_lock,
    .xUnlock = g_unlock,
    .xCheckReservedLock = g_check_reserved,
    .xFileControl = g_file_control,
    .xSectorSize = g_sector_size,
    .xDeviceCharacteristics = g_device_characteristics,
    .xShmMap = g_shm_map,
    .xShmLock = g_shm_lock,
    .xShmBarrier = g_shm_barrier,
    .xShmUnmap = g_shm_unmap,
    .xFetch = g_fetch,
    .xUnfetch = g_unfetch,
};

static int
g_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    (void)vfs;
    /* Every other file is the default VFS's own: it fits in our size. */
    if ((flags & SQLITE_OPEN_WAL) == 0)
        return orig_vfs->xOpen(orig_vfs, name, f, flags, out_flags);
    struct gfile *g = (struct gfile *)f;
    memset(g, 0, sizeof(*g));
    g->real = (sqlite3_file *)(g + 1);
    int rc = orig_vfs->xOpen(orig_vfs, name, g->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        /* SQLite would close a file whose methods are set: it does not see
         * the real one, so that is ours to do. */
        if (g->real->pMethods != NULL)
            g->real->pMethods->xClose(g->real);
        f->pMethods = NULL;
        return rc;
    }
    g->next = -1; /* the first write is never taken for an append */
    f->pMethods = &gfile_io;
    return SQLITE_OK;
}

static void
register_once(void)
{
    orig_vfs = sqlite3_vfs_find(NULL);
    if (orig_vfs == NULL)
        return;
    ledger_vfs = *orig_vfs;
    ledger_vfs.pNext = NULL;
    ledger_vfs.zName = LEDGER_VFS_NAME;
    /* struct gfile's size keeps the real file's alignment (pointers). */
    ledger_vfs.szOsFile = (int)sizeof(struct gfile) + orig_vfs->szOsFile;
    ledger_vfs.xOpen = g_open;
    registered = sqlite3_vfs_register(&ledger_vfs, 0) == SQLITE_OK;
}

const char *
ledger_vfs_name(void)
{
    pthread_once(&once, register_once);
    return registered ? LEDGER_VFS_NAME : NULL;
}
