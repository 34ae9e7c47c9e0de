/* fasterlog C API: everything the Python layer may call, and nothing else.
 *
 * cffi reads this file as written (it is its cdef), so it holds declarations only: no include
 * guards or includes (fl_internal.h includes it once, after <stdint.h>).
 *
 * Rules shared by every function:
 * - Functions that can fail return 0 (or a non-negative value) on success and a negative code
 *   on failure: -errno for operating-system errors, or one of enum fl_status below.
 * - Every fl_log function may be called from any thread; a log is internally locked.
 * - After fl_close the handle stays valid (calls return FL_E_CLOSED) until fl_free. fl_close
 *   may run while other threads are inside calls on the log: it refuses new calls, ends the
 *   waits, and releases nothing before every call in flight has returned. */

typedef struct fl_log fl_log;

enum fl_status {
    FL_OK = 0,
    FL_E_CLOSED = -100001,         /* the log was closed */
    FL_E_FENCED = -100002,         /* an earlier write or sync failed; the log refuses writes */
    FL_E_TOO_LARGE = -100003,      /* entry larger than entry_size_max */
    FL_E_FULL = -100004,           /* try_append: the memory ring holds only unflushed pages */
    FL_E_ADDRESS = -100005,        /* address out of range, unaligned or not an entry start */
    FL_E_TRUNCATED = -100006,      /* address below the begin address */
    FL_E_CORRUPT = -100007,        /* a checksum or structure check failed */
    FL_E_SETTINGS = -100008,       /* invalid settings, or settings that differ from the log's */
    FL_E_LOCKED = -100009,         /* another process holds the writer lock */
    FL_E_READONLY = -100010,       /* write call on a read-only log */
    FL_E_TIMEOUT = -100011,        /* wait ended before the address was committed */
    FL_E_BUFFER = -100012,         /* caller's buffer too small; the needed size is reported */
    FL_E_SHORT_WRITE = -100013,    /* the device wrote fewer bytes than asked */
    FL_E_FORMAT = -100014,         /* not a fasterlog directory, or an unknown format version */
    FL_E_NOMEM = -100015,          /* memory allocation failed */
    FL_E_WOKEN = -100016,          /* a wait ended early because fl_wake was called */
    FL_E_COMPLETED = -100017,      /* an append after fl_complete */
    FL_E_NOT_IN_MEMORY = -100018   /* fl_read_in_memory cannot answer: ask fl_read */
};

enum fl_io_backend {
    FL_IO_AUTO = 0,
    FL_IO_URING = 1,
    FL_IO_PLAIN = 2
};

/* Which device operations a fault applies to (fl_fault_set), and the read pauses it arms.
 * A pause is not a failure: the (after_count+1)-th read from a segment file to reach the
 * point waits there until fl_fault_pause_release (or FL_FAULT_PAUSE_MAX_MS passed), so a race
 * test can hold a read exactly there while another thread truncates. One read is held, then
 * the pause is disarmed. Reads from memory never reach these points. */
enum fl_fault_op {
    FL_FAULT_WRITE = 1,
    FL_FAULT_FSYNC = 2,
    FL_FAULT_ANY = 3,
    FL_FAULT_PAUSE_BEFORE_LOOKUP = 4, /* a read past its begin check, before its segment lookup */
    FL_FAULT_PAUSE_BEFORE_PREAD = 8,  /* a read holding its segment's descriptor, before pread */
    /* Not a failure either: writes and syncs queued on the ring from now on go to the kernel's
     * workers (IOSQE_ASYNC), where io_uring sends a write that cannot go at once. The thread
     * that submitted them can then end while they wait there, which makes the kernel cancel
     * them (ECANCELED): a test can make that happen every time rather than once in 40,000
     * calls. io_uring backend only; lasts until the next fl_fault_set. */
    FL_FAULT_KERNEL_WORKERS = 16,
    /* The read-only open pause's points (fl_open_pause_arm): its meta file read, before its
     * recovery scan; and after the scan, before its damage checks. */
    FL_FAULT_PAUSE_RECOVERY_BEFORE_SCAN = 32,
    FL_FAULT_PAUSE_RECOVERY_AFTER_SCAN = 64
};

enum fl_fault_limits {
    FL_FAULT_PAUSE_MAX_MS = 30000     /* a held read goes on by itself after this long */
};

typedef struct fl_settings {
    uint64_t page_size_bytes;
    uint64_t memory_size_bytes;
    uint64_t segment_size_bytes;
    uint64_t auto_commit_bytes;       /* 0: off */
    uint32_t auto_commit_interval_ms; /* 0: off */
    int32_t io_backend;               /* enum fl_io_backend */
    int32_t readonly;
    int32_t direct_io;                /* 1: O_DIRECT writes where the file system allows them */
} fl_settings;

/* One consistent snapshot of the log's positions and state. */
typedef struct fl_state {
    uint64_t begin_address;
    uint64_t tail_address;
    uint64_t flushed_until_address;
    uint64_t committed_until_address;
    uint64_t head_address;            /* lowest address still held in memory */
    uint64_t commit_number;
    uint64_t last_commit_address;     /* address of the newest commit record, 0 if none */
    uint64_t salt;
    uint32_t epoch;
    int32_t io_backend;               /* the backend in use: FL_IO_URING or FL_IO_PLAIN */
    int32_t fenced_error;             /* 0, or the code that fenced the log */
    int32_t closed;
    int32_t readonly;
    int32_t direct_io;                /* whether writes use O_DIRECT */
    int32_t io_uring_refused;         /* io_uring was wanted but the kernel refused it (-errno) */
    int32_t completed;                /* fl_complete was committed: the log takes no more */
    uint64_t cancelled_resent_count;  /* writes and syncs the kernel cancelled unrun (their
                                         thread ended) that the log sent again */
} fl_state;

/* Details of a failure that the return code alone does not carry. */
typedef struct fl_error_info {
    uint64_t address;                 /* FL_E_CORRUPT, FL_E_ADDRESS, FL_E_TRUNCATED: where */
    uint64_t begin_address;           /* FL_E_TRUNCATED: the begin address now */
    uint64_t size_needed;             /* FL_E_BUFFER: the buffer size that would do */
    int64_t holder_pid;               /* FL_E_LOCKED: the writer's pid, 0 if unknown */
    char message[256];                /* one line for the exception text, may be empty */
} fl_error_info;

int fl_open(const char *directory, const fl_settings *settings, fl_log **log_out,
            fl_error_info *error_out);
int fl_close(fl_log *log);
void fl_free(fl_log *log);
void fl_simulate_crash(fl_log *log);

int64_t fl_append(fl_log *log, const void *data, size_t size, int32_t kind, int32_t blocking);
/* The hot path: one data entry, waiting for memory when needed. Fewer and simpler arguments
 * than fl_append because cffi's per-argument conversion dominates a 100-byte append. */
int64_t fl_append_entry(fl_log *log, const char *data, size_t size);
int64_t fl_append_batch(fl_log *log, const void *data, const uint32_t *sizes, size_t count,
                        uint64_t *addresses_out, int32_t blocking);
/* fl_append_batch where entry i may hold the address of an earlier entry of the batch: when
 * links[i] != 0, the address of entry links[i] - 1 (< i) is written as a u64 little-endian
 * into `data` at link_offsets[i] of entry i before it is placed (-EINVAL for a link that does
 * not point back or does not fit). For layers whose records chain to each other (kvlayer). */
int64_t fl_append_batch_linked(fl_log *log, void *data, const uint32_t *sizes, size_t count,
                               const uint32_t *links, const uint32_t *link_offsets,
                               uint64_t *addresses_out, int32_t blocking);

int64_t fl_commit(fl_log *log);
int fl_set_cookie(fl_log *log, const void *cookie, size_t size);
int64_t fl_get_cookie(fl_log *log, void *buffer, size_t capacity);
int fl_wait_for_commit(fl_log *log, uint64_t address, int64_t timeout_us);
/* An eventfd that becomes readable after commits and when the log is fenced (on read-only
 * logs: the writer's commits, seen through fasterlog.shm by a helper thread started on first
 * call). */
int fl_commit_eventfd(fl_log *log);
/* Ends every wait in progress on this log (they return FL_E_WOKEN): how a tail is stopped. */
void fl_wake(fl_log *log);
/* Marks the log finished with a commit: later appends fail, tails end at the end. */
int64_t fl_complete(fl_log *log);

int64_t fl_read(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                int32_t *kind_out, fl_error_info *error_out);
/* Reads the entries at `count` addresses into `buffer`, one after the other: entry i is
 * sizes_out[i] bytes at offsets_out[i]. Returns how many were read, fewer than `count` when the
 * buffer filled up (call again for the rest); FL_E_BUFFER with error->size_needed when not even
 * the first fits; or the first failure's code, with error->address naming its address. */
int64_t fl_read_many(fl_log *log, const uint64_t *addresses, size_t count, void *buffer,
                     size_t capacity, uint32_t *offsets_out, uint32_t *sizes_out,
                     int32_t *kinds_out, fl_error_info *error_out);
/* What fl_scan reports besides data entries: its `include` mask. */
enum fl_scan_flag {
    FL_SCAN_MARKERS = 1,
    FL_SCAN_COMMITS = 2,
    FL_SCAN_PADDING = 4,     /* padding frames (verify walks every frame) */
    FL_SCAN_UNCOMMITTED = 8  /* a writer's frames past committed-until, up to the tail */
};
int64_t fl_scan(fl_log *log, uint64_t from_address, uint64_t until_address,
                int32_t include, void *buffer, size_t capacity,
                uint64_t *addresses_out, uint32_t *offsets_out, uint32_t *sizes_out,
                int32_t *kinds_out, size_t count_max, uint64_t *next_address_out,
                fl_error_info *error_out);
/* Writes a Python struct format ("12x100s4x12x7s...") that unpacks the payloads fl_scan put in
 * its buffer in one call: creating every bytes object in C is what makes Python scans fast.
 * Returns the format's length, or FL_E_BUFFER when `capacity` is too small. */
int64_t fl_scan_format(const uint32_t *offsets, const uint32_t *sizes, size_t count,
                       char *format_out, size_t capacity);
int fl_verify(fl_log *log, uint64_t from_address, uint64_t until_address,
              uint64_t *good_until_out, fl_error_info *error_out);

int fl_truncate_until(fl_log *log, uint64_t address);
void fl_get_state(fl_log *log, fl_state *state_out);
void fl_get_settings(fl_log *log, fl_settings *settings_out);

/* Arms a fault (FL_FAULT_WRITE/FSYNC bits: error, persistent and short_write apply) and/or a
 * read pause (FL_FAULT_PAUSE_* bits), replacing what was armed; ops 0 clears both and lets a
 * held read go. after_count: matching operations (reads reaching the point) let through first. */
int fl_fault_set(fl_log *log, int32_t ops, uint64_t after_count, int32_t error,
                 int32_t persistent, int32_t short_write);
/* Waits up to timeout_us until a read is held at the armed pause point: 0, or FL_E_TIMEOUT.
 * This and fl_fault_pause_release work while the log closes (close waits for the held read). */
int fl_fault_pause_wait(fl_log *log, int64_t timeout_us);
/* Lets the held read go on and disarms the pause: 1 when a read was held, 0 when none was,
 * FL_E_TIMEOUT when it had already gone on by itself after FL_FAULT_PAUSE_MAX_MS. */
int fl_fault_pause_release(fl_log *log);
/* The same kind of pause for a read-only open, process-wide (there is no log to arm it on
 * yet): the next read-only open to reach one of `points` (FL_FAULT_PAUSE_RECOVERY_*) waits
 * there until fl_open_pause_release or FL_FAULT_PAUSE_MAX_MS; so a test can let a live writer
 * move on exactly while a reader recovers. Wait and release answer as fl_fault_pause_wait
 * and fl_fault_pause_release do. */
void fl_open_pause_arm(int32_t points);
int fl_open_pause_wait(int64_t timeout_us);
int fl_open_pause_release(void);

uint32_t fl_crc32c(uint32_t crc, const void *data, size_t size);
/* The table-driven CRC32C, whatever the CPU has: tests check it agrees with fl_crc32c. */
uint32_t fl_crc32c_portable(uint32_t crc, const void *data, size_t size);
int fl_crc32c_hardware(void);

/* ==================================================================== I/O trace (fl_trace.c)
 *
 * A recording layer for the power-loss tests (fasterlog/testing.py): while a trace runs, every
 * file operation of the C core that decides what survives a power cut is appended to one
 * process-wide buffer after the kernel accepted it: writes (with their bytes), syncs of files
 * and directories, creates, renames, unlinks, preallocation, and marks the caller adds (for
 * example "commit N returned"). Python rebuilds crash states from it. The log's writes and
 * syncs are recorded by a layer stacked on each open device while a trace runs (fl_device.c):
 * off, the device has no such layer, and each file call outside it (meta file, segment
 * creation) costs one relaxed load.
 *
 * A record is a 32-byte header (u32 op, u32 flags, u64 offset, u64 size, u32 name size,
 * u32 fd), the name (a path from /proc/self/fd; a rename holds "old\0new"), then for writes
 * without FL_TRACE_FLAG_ZEROS `size` data bytes. Little-endian, no padding. */

enum fl_trace_op {
    FL_TRACE_WRITE = 1,    /* offset, size, data */
    FL_TRACE_SYNC = 2,     /* fsync/fdatasync of a file or (FL_TRACE_FLAG_DIRECTORY) directory */
    FL_TRACE_CREATE = 3,   /* openat with O_CREAT; FL_TRACE_FLAG_TRUNCATE for O_TRUNC */
    FL_TRACE_RENAME = 4,
    FL_TRACE_UNLINK = 5,
    FL_TRACE_EXTEND = 6,   /* posix_fallocate(0, size): the file is at least size bytes */
    FL_TRACE_MARK = 7,     /* fl_trace_mark: offset holds the value */
    FL_TRACE_FAULT = 8     /* an operation the fault layer failed (flags: FL_FAULT_*) */
};

enum fl_trace_flag {
    FL_TRACE_FLAG_DSYNC = 1,     /* the write carried its own sync (RWF_DSYNC) */
    FL_TRACE_FLAG_ZEROS = 2,     /* the write wrote zeros; no data bytes follow */
    FL_TRACE_FLAG_DIRECTORY = 4, /* the synced descriptor is a directory */
    FL_TRACE_FLAG_TRUNCATE = 8,  /* the create truncated an existing file */
    FL_TRACE_FLAG_DEVICE = 16    /* went through the device (fault injection can reach it) */
};

enum fl_trace_limits {
    FL_TRACE_HEADER_SIZE_BYTES = 32
};

/* Starts a trace (dropping any earlier one) that holds at most `capacity_bytes`; past that the
 * trace is marked overflowed and fl_trace_size returns FL_E_BUFFER. */
int fl_trace_start(uint64_t capacity_bytes);
void fl_trace_stop(void);
int64_t fl_trace_size(void);
/* Copies the trace into `buffer`; returns the bytes copied or FL_E_BUFFER. */
int64_t fl_trace_copy(void *buffer, size_t capacity);
void fl_trace_mark(uint64_t value);
/* Adds a record made elsewhere (the Python side files: cursors, snapshots) in trace order. */
void fl_trace_add(int32_t op, int32_t flags, uint64_t offset, uint64_t size, const char *name,
                  size_t name_size, const void *data, size_t data_size);
/* Named crash points: FASTERLOG_CRASH_AT=name[:count] (read once) makes the count-th time
 * (default 1st) the core passes point `name` kill the process with SIGKILL. Returns how many
 * named points the core has (for tests), and writes their names, comma-separated. */
int fl_crash_points(char *names_out, size_t capacity);

/* ==================================================================== for layers in other modules
 *
 * A layer built on the log in a C extension of its own cannot link against this module's
 * symbols: Python loads extension modules with RTLD_LOCAL. It reaches the
 * core through this table of public calls instead, the one narrow interface it has: nothing of
 * the core's page ring, positions or locks is visible to it. Two calls exist for such layers:
 * a read that answers only from memory and never waits, and a prefetch hint. */

/* Copies the payload of the entry at `address` into `buffer` when its page is still in the
 * page ring and the frame passes its checks, under the log's lock and without letting other
 * threads run (no blocking hooks: it never waits). Returns the payload size with the frame's
 * kind in *kind_out; FL_E_BUFFER with the size in *size_needed_out when `capacity` is too
 * small; or FL_E_NOT_IN_MEMORY when it cannot answer (the page left memory, a read-only or
 * closed log, an address outside the readable range, not an entry, a bad frame): fl_read then
 * gives the answer. */
int64_t fl_read_in_memory(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                          int32_t *kind_out, uint64_t *size_needed_out);
/* Asks the memory system for the first bytes of the frame at `address` if its page may be in
 * the page ring: a hint for batches of independent reads. It takes no lock; an address whose
 * page left memory costs one useless load, never a fault. */
void fl_prefetch(fl_log *log, uint64_t address);

typedef struct fl_core_api {
    uint32_t size_bytes; /* sizeof(fl_core_api) where the table was made: a layer built
                            against another fasterlog.h refuses it */
    void (*get_state)(fl_log *log, fl_state *state_out);
    void (*get_settings)(fl_log *log, fl_settings *settings_out);
    int64_t (*append_batch)(fl_log *log, const void *data, const uint32_t *sizes, size_t count,
                            uint64_t *addresses_out, int32_t blocking);
    int64_t (*append_batch_linked)(fl_log *log, void *data, const uint32_t *sizes,
                                   size_t count, const uint32_t *links,
                                   const uint32_t *link_offsets, uint64_t *addresses_out,
                                   int32_t blocking);
    int64_t (*read)(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                    int32_t *kind_out, fl_error_info *error_out);
    int64_t (*read_in_memory)(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                              int32_t *kind_out, uint64_t *size_needed_out);
    void (*prefetch)(fl_log *log, uint64_t address);
    int64_t (*scan)(fl_log *log, uint64_t from_address, uint64_t until_address, int32_t include,
                    void *buffer, size_t capacity, uint64_t *addresses_out,
                    uint32_t *offsets_out, uint32_t *sizes_out, int32_t *kinds_out,
                    size_t count_max, uint64_t *next_address_out, fl_error_info *error_out);
} fl_core_api;

/* The table, valid for the life of the process. */
const fl_core_api *fl_core_api_get(void);
