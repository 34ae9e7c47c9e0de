/* Internal declarations shared by kvlayer's C files. The public surface is fl_kv.h; the log is
 * reached only through the core's public header (fasterlog.h) and its fl_core_api table: this
 * code never sees struct fl_log, its page ring or its locks.
 *
 * The files, each calling only files listed before it (tests/fasterlog/test_c_layout.py):
 *   fl_index.c     the hash index
 *   fl_kv_read.c   key hashes, the context, reading and parsing records, gets
 *   fl_kv_write.c  index growth, batched writes, replay
 *   fl_kv_fold.c   checkpoint snapshots: folding and checking
 *
 * Rules of the KV code:
 * 1. Records are checked exactly as kvlayer.store.decode_record checks them (kvlayer/FORMAT.md
 *    "KV records", validity 1-4) before any byte of them is used; a failure is FL_E_KV_RECORD
 *    with the address and the same reason text the Python decoder gives.
 * 2. A record is copied out of the page ring by the core while its page is in memory
 *    (fl_read_in_memory: one small copy under the log's lock), else read through fl_read,
 *    which checks the frame and lets other threads run during the disk read. No index lock is
 *    held across a read.
 * 3. The write path computes every key's liveness before any record of its batch is
 *    appended (the keys of a batch are distinct), so len() stays exact. */
#ifndef FL_KV_INTERNAL_H
#define FL_KV_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread rwlocks, as the core */
#endif
#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fasterlog.h"
#include "fl_format.h"
#include "fl_kv_format.h"
#include "fl_kv.h"

/* Each field at the offset of the one before plus that one's size (kvlayer/FORMAT.md). */
_Static_assert(FL_KV_RECORD_VERSION_OFFSET == 0 && FL_KV_RECORD_INDEX_BITS_OFFSET == 0 + 1 &&
               FL_KV_RECORD_OPS_COUNT_OFFSET == 1 + 1 && FL_KV_RECORD_PREVIOUS_OFFSET == 2 + 2 &&
               FL_KV_RECORD_HEADER_SIZE_BYTES == 4 + 8, "record header fields");
_Static_assert(FL_KV_OP_KIND_OFFSET == 0 && FL_KV_OP_RESERVED_OFFSET == 0 + 1 &&
               FL_KV_OP_KEY_SIZE_OFFSET == 1 + 1 && FL_KV_OP_VALUE_SIZE_OFFSET == 2 + 2 &&
               FL_KV_OP_HASH_OFFSET == 4 + 4 && FL_KV_OP_HEADER_SIZE_BYTES == 8 + 8,
               "operation header fields");
_Static_assert(FL_KV_SNAPSHOT_ENTRY_SIZE_BYTES == 8 + 8, "snapshot entry: hash, word");
_Static_assert(FL_KV_ENTRY_ADDRESS_BITS == FL_INDEX_ADDRESS_BITS, "a word holds an address");
_Static_assert(FL_KV_ENTRY_DELETED == UINT64_C(1) << 63, "the deleted bit is bit 63");
_Static_assert(FL_KV_KEY_SIZE_MAX == UINT16_MAX && FL_KV_BATCH_OPS_MAX == UINT16_MAX,
               "key_size and ops_count are u16 fields");

#define FL_KV_TAG_SHIFT FL_INDEX_ADDRESS_BITS
#define FL_KV_TAG_MASK ((UINT64_C(1) << FL_INDEX_TAG_BITS) - 1)
#define FL_KV_ENTRY_ADDRESS_MASK ((UINT64_C(1) << FL_KV_ENTRY_ADDRESS_BITS) - 1)
/* Records up to this size are read into the caller's stack buffer; larger ones are malloced. */
#define FL_KV_STACK_RECORD_BYTES 2048
/* Entries per fl_scan call of a full-log pass (replay, snapshot folding). */
#define FL_KV_SCAN_ENTRIES_MAX 4096

static inline uint32_t fl_kv_load16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static inline uint32_t fl_kv_load32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fl_kv_load64(const uint8_t *p) {
    return (uint64_t)fl_kv_load32(p) | (uint64_t)fl_kv_load32(p + 4) << 32;
}
static inline void fl_kv_store16(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void fl_kv_store32(uint8_t *p, uint32_t v) {
    fl_kv_store16(p, v);
    fl_kv_store16(p + 2, v >> 16);
}
static inline void fl_kv_store64(uint8_t *p, uint64_t v) {
    fl_kv_store32(p, (uint32_t)v);
    fl_kv_store32(p + 4, (uint32_t)(v >> 32));
}

struct fl_kv {
    const fl_core_api *core; /* the log's calls (fasterlog.h) */
    fl_log *log;
    fl_index *index;
    uint64_t entry_size_max; /* the largest payload the log takes: a page minus a header */
    /* kvlayer's chain floor (store.py rule 6): records below it were compacted away, so a
     * walk or a grow that reaches below it ends the chain there. The writer raises it after
     * the copies are in the index and before it truncates; a reader loads it BEFORE its index
     * lookup, so a head it finds below that floor is a chain with nothing live (never a stale
     * head from before the copies), and a floor loaded too early only makes a walk read a
     * truncated record and fail with FL_E_TRUNCATED, which the caller retries. */
    uint64_t chain_floor;
    /* The SipHash key (kvlayer/FORMAT.md "KV records"): k0 is the log's salt, fixed for the
     * log's life and read from fasterlog.meta at open, so it is known before any record is. */
    uint64_t hash_key0;
    uint64_t hash_key1;
};

static inline uint64_t fl_kv_load_floor(const fl_kv *kv) {
    return __atomic_load_n(&kv->chain_floor, __ATOMIC_ACQUIRE);
}

/* ---- reading and parsing records (fl_kv_read.c) ---- */
typedef struct fl_kv_record {
    uint8_t *data; /* the payload: the caller's stack buffer or `heap` */
    uint32_t size;
    uint8_t *heap; /* to free, or NULL */
} fl_kv_record;

typedef struct fl_kv_record_view {
    uint32_t index_bits;
    uint32_t ops_count;
    uint64_t previous;
    const uint8_t *cursor; /* next operation */
    const uint8_t *end;
    uint32_t ops_left;
} fl_kv_record_view;

typedef struct fl_kv_op_view {
    uint32_t kind;
    uint32_t key_size;
    uint32_t value_size;
    uint64_t hash;
    const uint8_t *key;
    const uint8_t *value;
} fl_kv_op_view;

void fl_kv_record_release(fl_kv_record *record);
/* Copies the payload of the data entry at `address` into `stack` (FL_KV_STACK_RECORD_BYTES)
 * or a malloced buffer (rule 2). */
int fl_kv_read_record(fl_kv *kv, uint64_t address, uint8_t *stack, fl_kv_record *out,
                      fl_error_info *error);
/* Checks 1-3 of the record validity (the header). */
int fl_kv_record_open(const uint8_t *payload, uint32_t size, uint64_t address,
                      fl_kv_record_view *record, fl_error_info *error);
/* The next operation (check 4); 1 when one was read, 0 at the end (after the stray-bytes
 * check), or FL_E_KV_RECORD. */
int fl_kv_record_next(fl_kv_record_view *record, uint64_t address, fl_kv_op_view *op,
                      fl_error_info *error);
/* 1 when the key is live, 0 when not, or a failure code. */
int fl_kv_is_live(fl_kv *kv, uint64_t head, uint64_t hash, const uint8_t *key,
                  uint32_t key_size, fl_error_info *error);

/* The buffers of a full-log pass through fl_scan (replay, snapshot folding): a batch of up to
 * FL_KV_SCAN_ENTRIES_MAX entries, and room for at least the largest entry. */
typedef struct fl_kv_scan_buffers {
    uint8_t *data;
    size_t capacity;
    uint64_t *addresses;
    uint32_t *offsets;
    uint32_t *sizes;
} fl_kv_scan_buffers;

/* 0, or FL_E_NOMEM with nothing left allocated; fl_kv_scan_buffers_free is safe after either. */
int fl_kv_scan_buffers_alloc(const fl_kv *kv, fl_kv_scan_buffers *scan);
void fl_kv_scan_buffers_free(fl_kv_scan_buffers *scan);

/* Around long work on a call's own memory only (no core call, no lock inside): the Python
 * binding defines these to release and retake the GIL (kvlayer/_build.py); the weak
 * definitions in fl_kv_fold.c do nothing. */
void *fl_kv_blocking_begin(void);
void fl_kv_blocking_end(void *token);

/* ---- growth (fl_kv_write.c) ---- */
uint32_t fl_kv_index_bits(fl_index *index);

#endif
