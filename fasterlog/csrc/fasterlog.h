/* fasterlog C API: everything the Python layer may call, and nothing else.
 *
 * cffi reads this file as written (it is its cdef), so it holds declarations only: no include
 * guards or includes (fl_internal.h includes it once, after <stdint.h>).
 *
 * Rules shared by every function:
 * - Functions that can fail return 0 (or a non-negative value) on success and a negative code
 *   on failure: -errno for operating-system errors, or one of enum fl_status below.
 * - Every fl_log function may be called from any thread; a log is internally locked.
 * - After fl_close the handle stays valid (calls return FL_E_CLOSED) until fl_free. */

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
    FL_E_COMPLETED = -100017       /* an append after fl_complete */
};

enum fl_io_backend {
    FL_IO_AUTO = 0,
    FL_IO_URING = 1,
    FL_IO_PLAIN = 2
};

/* Which device operations a fault applies to (fl_fault_set). */
enum fl_fault_op {
    FL_FAULT_WRITE = 1,
    FL_FAULT_FSYNC = 2,
    FL_FAULT_ANY = 3
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

int fl_fault_set(fl_log *log, int32_t ops, uint64_t after_count, int32_t error,
                 int32_t persistent, int32_t short_write);

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

/* ==================================================================== hash index (fl_index.c)
 *
 * A FASTER-style hash index from 64-bit key hashes to log addresses. The index never sees a
 * key: it maps (bucket, tag) of a hash to the address of the newest record of that chain, and
 * records chain to older ones through a previous address their owner (kvlayer) keeps in each
 * record. A lookup returns at most one candidate address; the caller reads records along the
 * chain and compares keys.
 *
 * - bucket = hash & (buckets_count - 1); tag = bits 48..61 of the hash (14 bits).
 * - Concurrency: one writer at a time (upsert, delete, grow), any number of readers (find,
 *   find_many, stats) running beside it. A second concurrent writer gets FL_E_INDEX_BUSY; it
 *   never corrupts the table. Readers stop only while grow swaps in the new table.
 * - Addresses are 48 bits (below 2^48), and 0 means "none" (FL_FIRST_ADDRESS is 64).
 * - The index is derived state: it is rebuilt from the log, never written to disk yet. */

typedef struct fl_index fl_index;

enum fl_index_status {
    FL_E_INDEX_CONFLICT = -100101, /* upsert/delete: the entry's address is not the expected one */
    FL_E_INDEX_BUSY = -100102      /* another writer is inside the index */
};

enum fl_index_limits {
    FL_INDEX_ENTRIES_PER_BUCKET = 7,        /* key entries in a bucket; the 8th is the link */
    FL_INDEX_TAG_BITS = 14,
    FL_INDEX_ADDRESS_BITS = 48,
    FL_INDEX_BUCKETS_COUNT_LOG2_MAX = 40,
    FL_INDEX_ENTRIES_PER_BUCKET_GROW = 6,   /* average entries per bucket that asks for grow */
    FL_INDEX_SPLIT_WALK_MAX = 64,           /* records grow reads per entry at most */
    FL_INDEX_RESOLVE_HASHES_MAX = 64        /* hashes grow asks of one record at most */
};

typedef struct fl_index_stats {
    uint64_t entries_count;          /* occupied (bucket, tag) entries */
    uint64_t buckets_count;          /* main table buckets (64 bytes each) */
    uint64_t overflow_buckets_count; /* overflow buckets handed out from the pool */
    uint64_t memory_bytes;           /* everything the index allocated */
    uint64_t grow_count;             /* completed doublings */
    uint32_t buckets_count_log2;
} fl_index_stats;

/* Tells grow which hashes the record at `address` holds and where its chain continues: writes
 * up to `capacity` key hashes to `hashes_out` and the previous address (0: end of the chain) to
 * `previous_address_out`. Returns the number of hashes in the record (more than `capacity`
 * means some were left out) or a negative code, which stops grow. */
typedef int (*fl_index_resolve_fn)(void *context, uint64_t address, uint64_t *hashes_out,
                                   uint32_t capacity, uint64_t *previous_address_out);

int fl_index_create(uint32_t buckets_count_log2, fl_index **index_out);
void fl_index_free(fl_index *index);
/* The newest address of the hash's chain, or 0 when there is none. */
uint64_t fl_index_find(fl_index *index, uint64_t hash);
/* find for `count` hashes at once (0 where there is none); returns how many were found. */
int64_t fl_index_find_many(fl_index *index, const uint64_t *hashes, size_t count,
                           uint64_t *addresses_out);
/* Compare-and-swap: points the hash's entry at `new_address` if it now holds
 * `expected_address` (0: "no entry yet", which inserts one). FL_E_INDEX_CONFLICT otherwise. */
int fl_index_upsert(fl_index *index, uint64_t hash, uint64_t expected_address,
                    uint64_t new_address);
/* Removes the hash's entry if it holds `expected_address`; FL_E_INDEX_CONFLICT otherwise. */
int fl_index_delete(fl_index *index, uint64_t hash, uint64_t expected_address);
uint64_t fl_index_count(fl_index *index);
uint64_t fl_index_memory_bytes(fl_index *index);
void fl_index_get_stats(fl_index *index, fl_index_stats *stats_out);
/* 1 when the table holds more than FL_INDEX_ENTRIES_PER_BUCKET_GROW entries per bucket. */
int fl_index_should_grow(fl_index *index);
/* Doubles the table, splitting each chain by walking its records through `resolve` (at most
 * FL_INDEX_SPLIT_WALK_MAX records per entry: past that, both halves keep a candidate). */
int fl_index_grow(fl_index *index, fl_index_resolve_fn resolve, void *context);

/* ==================================================================== KV fast path (fl_kv.c)
 *
 * kvlayer's hot paths in one C call each, over a log and an index the caller owns (the fl_kv
 * context only borrows them: free it before either). Records are FORMAT.md "KV records";
 * key hashes are SipHash-1-3 keyed from the log's salt (fl_kv_hash), as kvlayer.key_hash.
 *
 * - Reads take no lock of their own: the index is read lock-free and records are copied out
 *   of the page ring under the log's mutex (or read from the segment files, then without the
 *   GIL). Writes (fl_kv_write, fl_kv_replay, fl_kv_grow, fl_index_load) are the one index
 *   writer: the caller serializes them (kvlayer's write lock).
 * - A malformed record gives FL_E_KV_RECORD with error->address and a reason in
 *   error->message; a bad frame gives FL_E_CORRUPT as fl_read does. Never data. */

typedef struct fl_kv fl_kv;

enum fl_kv_status {
    FL_KV_ABSENT = -100201,       /* get: the key is not live (not a failure) */
    FL_E_KV_RECORD = -100202,     /* a log entry is not a well-formed KV record */
    FL_E_KV_KEY_SIZE = -100203,   /* a key above FL_KV_KEY_SIZE_MAX; error->address: its index */
    FL_E_KV_BATCH = -100204,      /* more distinct keys than FL_KV_BATCH_OPS_MAX (size_needed) */
    FL_E_KV_INDEX = -100205,      /* an index upsert conflicted: the one-writer rule broke */
    FL_E_KV_SNAPSHOT_ORDER = -100206, /* snapshot check: hashes not strictly increasing */
    FL_E_KV_SNAPSHOT_WORD = -100207   /* snapshot check: reserved bits, or an address outside */
};

enum fl_kv_limits {
    FL_KV_KEY_SIZE_MAX = 65535,
    FL_KV_BATCH_OPS_MAX = 65535
};

/* A reader's scratch: one per thread (values are copied into `buffer`). */
typedef struct fl_kv_reader {
    fl_kv *kv;
    char *buffer;
    uint64_t capacity;
    fl_error_info error;
} fl_kv_reader;

typedef struct fl_kv_write_result {
    int64_t live_change;      /* keys that became live minus keys that stopped being live */
    uint64_t records_count;   /* records appended (their addresses are in addresses_out) */
    uint64_t bytes_count;     /* payload bytes appended */
} fl_kv_write_result;

typedef struct fl_kv_replay_result {
    uint64_t next_address;    /* where the replay stopped (the committed-until address) */
    uint64_t records_count;
    uint64_t bytes_count;     /* payload bytes replayed */
    int64_t live_change;
} fl_kv_replay_result;

/* SipHash-1-3 with the key (k0, k1), 64-bit output (kvlayer.store.siphash13 in Python). */
uint64_t fl_kv_siphash13(uint64_t k0, uint64_t k1, const char *key, size_t size);
/* A key's hash in this store: SipHash-1-3 keyed from the log's salt (FORMAT.md "KV records"). */
uint64_t fl_kv_hash(const fl_kv *kv, const char *key, size_t size);
void fl_kv_hash_many(const fl_kv *kv, const char *keys, const uint32_t *sizes, size_t count,
                     uint64_t *hashes_out);
int fl_kv_create(fl_log *log, fl_index *index, fl_kv **kv_out);
void fl_kv_free(fl_kv *kv);
/* Walks and grows end below `address` (kvlayer's chain floor: compacted away). Raise it
 * after the copies are in the index and before truncating (fl_kv.c, struct fl_kv). */
void fl_kv_set_chain_floor(fl_kv *kv, uint64_t address);
/* The value of a key into reader->buffer: its size, FL_KV_ABSENT, FL_E_BUFFER (with
 * reader->error.size_needed) or a failure code. */
int64_t fl_kv_get(fl_kv_reader *reader, const char *key, size_t key_size);
/* As fl_kv_get, walking the chain from `address` for a key whose hash is known. For the
 * writer (its lookups cannot race a compaction); readers use fl_kv_get. */
int64_t fl_kv_value_from(fl_kv_reader *reader, uint64_t address, uint64_t hash, const char *key,
                         size_t key_size);
/* Values of `count` keys (joined in `keys`, sizes in key_sizes) into `buffer`: value i is
 * sizes_out[i] bytes at offsets_out[i]; the positions of absent keys go to missing_out (their
 * size is 0). Returns how many keys were done, fewer than `count` when the buffer filled up
 * (FL_E_BUFFER with error->size_needed when not even the first fits). */
int64_t fl_kv_get_many(fl_kv *kv, const char *keys, const uint32_t *key_sizes, size_t count,
                       char *buffer, size_t capacity, uint32_t *offsets_out, uint32_t *sizes_out,
                       uint32_t *missing_out, uint64_t *missing_count_out,
                       fl_error_info *error);
/* Appends one batch (a key given twice takes its last value; a value size of 0xFFFFFFFF
 * writes a tombstone) as one record per index chain, upserts the index and grows it when
 * loaded. addresses_out needs room for `count`. Returns the records count. */
int64_t fl_kv_write(fl_kv *kv, const char *keys, const uint32_t *key_sizes, const char *values,
                    const uint32_t *value_sizes, size_t count, uint64_t *addresses_out,
                    fl_kv_write_result *result_out, fl_error_info *error);
/* Applies the records in [from_address, until_address) (clamped to committed-until) to the
 * index, growing it as the records ask (kvlayer rule 2) and when loaded. */
int fl_kv_replay(fl_kv *kv, uint64_t from_address, uint64_t until_address,
                 fl_kv_replay_result *result_out, fl_error_info *error);
/* Grows the index to at least 2^buckets_count_log2_min buckets, then (if_loaded) while it is
 * loaded; records are read back through the log. */
int fl_kv_grow(fl_kv *kv, uint32_t buckets_count_log2_min, int32_t if_loaded,
               fl_error_info *error);
/* A checkpoint snapshot's entries (FORMAT.md "KV checkpoints"): the base (sorted by hash,
 * distinct) folded with the records in [from_address, until_address), the newest operation
 * per hash winning; entries whose address is below drop_below are left out. Writes sorted
 * hashes and words (address | bit 63 for a delete) and returns how many, FL_E_BUFFER when
 * more than `capacity`, or a failure code (FL_E_KV_RECORD for a malformed record). */
int64_t fl_kv_snapshot_fold(fl_kv *kv, const uint64_t *base_hashes, const uint64_t *base_words,
                            size_t base_count, uint64_t from_address, uint64_t until_address,
                            uint64_t drop_below, uint64_t *hashes_out, uint64_t *words_out,
                            size_t capacity, uint64_t *live_count_out, fl_error_info *error);
/* Checks a snapshot body of interleaved (hash, word) pairs: the live count, or
 * FL_E_KV_SNAPSHOT_ORDER (hashes not strictly increasing at *bad_index_out) or
 * FL_E_KV_SNAPSHOT_WORD (a bad word there). */
int64_t fl_kv_snapshot_check(const uint64_t *pairs, size_t count, uint64_t position,
                             uint64_t *bad_index_out);
/* Asks the memory system for the bucket of `hash` (a hint; the index writer only). */
void fl_index_prefetch(fl_index *index, uint64_t hash);
/* Bulk restore (fl_index.c): for each i, the chain of hashes[i] gets the address
 * words[i] & address_mask unless it already holds a newer one. */
int fl_index_load(fl_index *index, const uint64_t *hashes, const uint64_t *words, size_t count,
                  uint64_t address_mask);
