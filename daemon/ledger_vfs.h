/*
 * daemon/ledger_vfs.h - the SQLite VFS the ledger opens its database with:
 * the default one, except that a transaction's WAL frames reach the file in
 * one write instead of two per page.
 *
 * SQLite appends each frame as two writes (its 24-byte header, then the
 * page), so a commit that changes 20 pages costs 40 system calls, on the
 * event loop.  Here the appends are gathered in a buffer and written when
 * the transaction's commit frame is complete -- inside the write call that
 * completes it, so that a failure is the commit's failure and SQLite never
 * counts a frame that is not in the file.  Everything else (overwrites in
 * place, reads, syncs, size queries, closing) writes what is gathered first
 * and then goes to the default VFS unchanged.
 */
#ifndef BURST_DAEMON_LEDGER_VFS_H
#define BURST_DAEMON_LEDGER_VFS_H

/* Registers the VFS (once per process; thread-safe) and returns its name
 * for sqlite3_open_v2, or NULL when that failed (the default VFS is then
 * used). */
const char *ledger_vfs_name(void);

#endif /* BURST_DAEMON_LEDGER_VFS_H */
