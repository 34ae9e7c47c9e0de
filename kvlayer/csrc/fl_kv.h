/* kvlayer's C API: the hash index (fl_index.c) and the KV fast path (fl_kv_*.c), everything
 * kvlayer/_fast.py and kvlayer/store.py may call through kvlayer._kvlayer_c.
 *
 * cffi reads this file as written (kvlayer/_build.py), after the core's fasterlog.h, whose
 * types (fl_log, fl_error_info, fl_core_api) and codes it uses; so, like fasterlog.h, it holds
 * declarations only: no include guards or includes (fl_kv_internal.h includes the headers in
 * order). The rules of fasterlog.h hold: 0 (or a count) or a negative code. The KV code
 * reaches the log only through the fl_core_api table the core hands out (fasterlog.h). */

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
/* A cursor over the table's buckets, as Redis's dictScan: visits the bucket `cursor` selects
 * (cursor & mask) and writes each entry of its chain as the pair (bucket, entry word) to
 * `pairs_out` (2 words per entry). The next cursor, in reverse-binary order, goes to
 * `*cursor_out` (0: the iteration is over) and the table's size to `*buckets_count_log2_out`.
 * The reverse-binary order makes a doubling between two calls harmless: a bucket's two halves
 * both come after any cursor that came before the bucket, so every entry present for the whole
 * iteration is visited (some twice). Returns the entries written, or FL_E_BUFFER when the
 * chain holds more than `capacity` entries (then `*cursor_out` is the count needed). */
int64_t fl_index_scan(fl_index *index, uint64_t cursor, uint64_t *pairs_out, size_t capacity,
                      uint64_t *cursor_out, uint32_t *buckets_count_log2_out);

/* ==================================================================== KV fast path (fl_kv_*.c)
 *
 * kvlayer's hot paths in one C call each, over a log and an index the caller owns (the fl_kv
 * context only borrows them: free it before either). Records are kvlayer/FORMAT.md "KV
 * records"; key hashes are SipHash-1-3 keyed from the log's salt (fl_kv_hash), as
 * kvlayer.key_hash.
 *
 * - Reads take no lock of their own: the index is read lock-free and records are copied out
 *   of the page ring by the core while their page is in memory (fl_read_in_memory), else read
 *   from the segment files (fl_read, which lets other threads run meanwhile). Writes (fl_kv_write, fl_kv_replay, fl_kv_grow, fl_index_load) are the one index
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
/* A context over `log` reached through `core` (fl_core_api_get() of the core module that opened
 * the log) and `index`. -EINVAL when `core` is a table of another build of the core. */
int fl_kv_create(const fl_core_api *core, fl_log *log, fl_index *index, fl_kv **kv_out);
void fl_kv_free(fl_kv *kv);
/* Walks and grows end below `address` (kvlayer's chain floor: compacted away). Raise it
 * after the copies are in the index and before truncating (fl_kv_internal.h, struct fl_kv). */
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
 * writes a tombstone) atomically as one record per index chain (several, linked, when the
 * chain's operations pass entry_size_max together), upserts the index and grows it when
 * loaded. FL_E_TOO_LARGE only for one operation over entry_size_max. addresses_out needs room
 * for `count`. Returns the records count. */
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
/* A checkpoint snapshot's entries (kvlayer/FORMAT.md "KV checkpoints"): the base (sorted by hash,
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
/* Bulk restore: for each i, the chain of hashes[i] gets the address
 * words[i] & address_mask unless it already holds a newer one. */
int fl_index_load(fl_index *index, const uint64_t *hashes, const uint64_t *words, size_t count,
                  uint64_t address_mask);
