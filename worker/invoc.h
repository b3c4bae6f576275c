/*
 * worker/invoc.h - the objects a worker reads and writes in storage, and
 * where they live.  This is the whole contract between the daemon and
 * burst-worker: a worker has no connection to the daemon (inside a Code
 * Engine container there is none), only its environment and storage.
 *
 * Storage keys, relative to the storage root (a directory for local storage,
 * a bucket prefix for S3):
 *   fn/<sha256>.so               a function library, content-addressed
 *   jobs/<job>/in                all task inputs, in one object (one put
 *                                per job; a small job's is kept in the
 *                                daemon's ledger and written here, not
 *                                durably, only when it cannot go to a warm
 *                                worker with its request): the header
 *                                "BURSTIN1" and n (uint64), then n + 1
 *                                uint64 offsets idx[] into the data that
 *                                follows, then the inputs concatenated in
 *                                task order: input i is [idx[i], idx[i+1])
 *                                of the data (all integers little-endian)
 *   jobs/<job>/spec/<dispatch>   an invocation spec (below), written by the daemon
 *   jobs/<job>/out/<dispatch>.<n> the results of invocation n of that
 *                                dispatch, written by the worker atomically
 *   jobs/<job>/reduce.in         reducer manifest: map results' locations
 *
 * A worker is started with the environment
 *   BURST_STORAGE   where storage is: "file:/abs/dir" (later "s3://...")
 *   BURST_SPEC      the spec key, e.g. "jobs/7/spec/12"
 *   JOB_INDEX       which invocation of the spec to run (default 0); Code
 *                   Engine sets it for every instance of an array job run
 * and nothing else is needed.  (BURST_MEMORY_LIMIT=rlimit, optional, makes
 * the worker limit memory_mb with RLIMIT_AS even where it could use a
 * cgroup: worker/run_mem.c.)
 *
 * A warm local worker (`burst-worker --serve`, worker/main.c) may get a
 * small invocation's spec and input objects with its request and hand its
 * output object back with its reply instead: the same objects, byte for
 * byte, only not in storage.
 *
 * Every object here is msgpack, versioned with a "v" key so a newer daemon
 * can tell an older worker's output apart.
 */
#ifndef BURST_WORKER_INVOC_H
#define BURST_WORKER_INVOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INVOC_VERSION 1

/* The input object's header: magic, then the number of inputs. */
#define INVOC_INPUT_MAGIC "BURSTIN1"
#define INVOC_INPUT_HEADER 16
/* Writes the header of an input object of n inputs into hdr. */
void invoc_input_header(unsigned char hdr[INVOC_INPUT_HEADER], uint64_t n);

/* Key builders: write into buf (size bytes); return 0 or -ENAMETOOLONG. */
int invoc_key_fn(char *buf, size_t size, const char *sha256_hex);
int invoc_key_input(char *buf, size_t size, uint64_t job);
int invoc_key_spec(char *buf, size_t size, uint64_t job, uint64_t dispatch);
int invoc_key_output(char *buf, size_t size, uint64_t job, uint64_t dispatch, uint32_t n);
int invoc_key_reduce_manifest(char *buf, size_t size, uint64_t job);
int invoc_key_job_prefix(char *buf, size_t size, uint64_t job);

struct invoc_task {
    uint32_t index;   /* task index within the job */
    uint32_t attempt; /* 1-based */
};

/*
 * The spec of one dispatch: msgpack map
 *   {"v": 1, "job": uint, "dispatch": uint,
 *    "fn": {"kind": "exec", "cmd": str} | {"kind": "so", "key": str, "symbol": str},
 *    "timeout_ms": uint, "memory_mb": uint,
 *    "reduce": bool,               -- true: the single task reads reduce.in
 *    "invocations": [[[index, attempt], ...], ...]}
 */
struct invoc_spec {
    uint64_t job;
    uint64_t dispatch;
    int fn_kind;  /* BURST_FN_EXEC or BURST_FN_SO (burst.h values) */
    char *cmd;    /* owned; exec */
    char *fn_key; /* owned; so: storage key of the library */
    char *symbol; /* owned; so */
    uint64_t timeout_ms;
    uint32_t memory_mb;
    bool reduce;
    uint32_t ninvocations;
    uint32_t *ntasks;          /* owned: ntasks[i] tasks in invocation i */
    struct invoc_task **tasks; /* owned: tasks[i][0 .. ntasks[i]) */
};

/* Encode into a malloc'ed buffer (*out, *len).  Returns 0 or -ENOMEM. */
int invoc_spec_encode(const struct invoc_spec *spec, char **out, size_t *len);
/* Decode; on success the caller frees with invoc_spec_free().  Returns 0 or
 * -EINVAL (malformed: the worker reports it and exits). */
int invoc_spec_decode(const char *buf, size_t len, struct invoc_spec *spec);
void invoc_spec_free(struct invoc_spec *spec);

/* How a task attempt ended, as the worker saw it. */
enum invoc_status {
    INVOC_OK = 0,      /* exit 0 / function returned 0 */
    INVOC_FAILED = 1,  /* non-zero exit status or return value */
    INVOC_SIGNAL = 2,  /* killed by a signal (crash) */
    INVOC_TIMEOUT = 3, /* ran past timeout_ms and was killed */
    INVOC_OOM = 4,     /* exceeded memory_mb */
    INVOC_ERROR = 5,   /* could not be run: missing library/symbol, bad input */
};

/*
 * The output of one invocation: a msgpack map
 *   {"v": 1, "job": uint, "dispatch": uint, "n": uint,
 *    "tasks": [[index, attempt, status, exit_status, signal, reason, result, log], ...]}
 * where status is an enum invoc_status, exit_status an int (-1 when none),
 * signal an int (0 when none), reason a str ("" when none), result and log
 * bin.  Tasks appear in execution order; a task missing from "tasks" never
 * finished (the worker was lost).  The log is capped (INVOC_LOG_CAP bytes,
 * the tail kept) so a chatty task cannot fill storage.
 */
#define INVOC_LOG_CAP (64u * 1024u)

struct invoc_result {
    uint32_t index;
    uint32_t attempt;
    int status; /* enum invoc_status */
    int exit_status;
    int signal;
    const char
        *reason; /* NUL-terminated; decode: an owned copy freed by invoc_results_free */
    const char *result; /* borrowed: points into the object buffer */
    size_t result_len;
    size_t result_off; /* offset of the result bytes within the object */
    const char *log;   /* borrowed: points into the object buffer */
    size_t log_len;
    size_t log_off; /* offset of the log bytes within the object */
};

/* Incremental writer used by the worker: append tasks as they finish. */
struct invoc_out_writer;
int invoc_out_writer_new(uint64_t job, uint64_t dispatch, uint32_t n,
                         struct invoc_out_writer **out);
int invoc_out_writer_add(struct invoc_out_writer *w, const struct invoc_result *r);
/* Finishes the object: *buf and *len are malloc'ed and owned by the caller. */
int invoc_out_writer_finish(struct invoc_out_writer *w, char **buf, size_t *len);
void invoc_out_writer_free(struct invoc_out_writer *w);

/* Decodes an output object held in buf (which must outlive the results).
 * *results is a malloc'ed array of *n (free with invoc_results_free). */
int invoc_out_decode(const char *buf, size_t len, uint64_t *job, uint64_t *dispatch,
                     uint32_t *n_inv, struct invoc_result **results, size_t *n);
void invoc_results_free(struct invoc_result *results, size_t n);

/*
 * The reducer manifest: msgpack {"v": 1, "parts": [[key, offset, length], ...]}
 * with one part per map task in task order: the bytes of map task i's result
 * are [offset, offset + length) of object key.
 */
struct invoc_part {
    char *key; /* owned */
    uint64_t off;
    uint64_t len;
};
int invoc_manifest_encode(const struct invoc_part *parts, size_t n, char **out,
                          size_t *len);
int invoc_manifest_decode(const char *buf, size_t len, struct invoc_part **parts,
                          size_t *n);
void invoc_manifest_free(struct invoc_part *parts, size_t n);

#endif /* BURST_WORKER_INVOC_H */
