/* kvlayer's hot paths in C: key hashes, gets (chain walks), batched writes, replay and grow.
 *
 * The Python layer (kvlayer/store.py) keeps the API, the checks of argument types and the
 * decisions (when to commit, checkpoint); this file does the per-key work that cost one or
 * more cffi calls, a log read and struct parsing per key in Python.
 *
 * Rules:
 * 1. Records are checked exactly as kvlayer.store.decode_record checks them (FORMAT.md "KV
 *    records", validity 1-4) before any byte of them is used; a failure is FL_E_KV_RECORD
 *    with the address and the same reason text the Python decoder gives.
 * 2. A record is read from the page ring under the log's mutex when its page is in memory
 *    (copied out, so the lock is held for one small copy), else through fl_read, which checks
 *    the frame and releases the GIL for the disk read. No index lock is held across a read.
 * 3. The write path computes every key's liveness before any record of its batch is
 *    appended (the keys of a batch are distinct), so len() stays exact. */
#include "fl_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_VERSION 2 /* 1: BLAKE2b key hashes, refused (FORMAT.md) */
#define RECORD_HEADER_SIZE 12
#define OP_HEADER_SIZE 16
#define OP_PUT 1
#define OP_DELETE 2
#define TAG_SHIFT 48
#define TAG_MASK ((UINT64_C(1) << FL_INDEX_TAG_BITS) - 1)
#define VALUE_DELETE UINT32_MAX
/* Records up to this size are read into the caller's stack buffer; larger ones are malloced. */
#define STACK_RECORD_BYTES 2048

struct fl_kv {
    fl_log *log;
    fl_index *index;
    /* kvlayer's chain floor (store.py rule 6): records below it were compacted away, so a
     * walk or a grow that reaches below it ends the chain there. The writer raises it after
     * the copies are in the index and before it truncates; a reader loads it BEFORE its index
     * lookup, so a head it finds below that floor is a chain with nothing live (never a stale
     * head from before the copies), and a floor loaded too early only makes a walk read a
     * truncated record and fail with FL_E_TRUNCATED, which the caller retries. */
    uint64_t chain_floor;
    /* The SipHash key (FORMAT.md "KV records"): k0 is the log's salt, fixed for the log's
     * life and read from fasterlog.meta at open, so it is known before any record is read. */
    uint64_t hash_key0;
    uint64_t hash_key1;
};

/* ------------------------------------------------------------------ SipHash-1-3
 * The key hash of record version 2 (FORMAT.md "KV records"): SipHash-1-3 (one compression
 * round, three finalization rounds, as Rust's HashMap) with a 64-bit output, keyed per store
 * from the log's salt. Keyed, an attacker who does not know the salt cannot make many keys
 * share a chain (hash flooding); at about 15 ns for a 16-byte key it fits get_many's budget,
 * where BLAKE2b took about 155 ns. kvlayer.store.siphash13 is the Python reference. */

#define SIP_KEY1_TWEAK UINT64_C(0x6b766c6179657232) /* "kvlayer2" read big-endian */

static inline uint64_t rotl64(uint64_t x, int n) { return x << n | x >> (64 - n); }

#define SIP_ROUND                                                              \
    do {                                                                       \
        v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);          \
        v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                               \
        v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                               \
        v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);          \
    } while (0)

uint64_t fl_kv_siphash13(uint64_t k0, uint64_t k1, const char *key, size_t size) {
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575);
    uint64_t v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261);
    uint64_t v3 = k1 ^ UINT64_C(0x7465646279746573);
    const uint8_t *data = (const uint8_t *)key;
    size_t blocks_end = size & ~(size_t)7;
    for (size_t i = 0; i < blocks_end; i += 8) {
        uint64_t m = fl_load64(data + i);
        v3 ^= m;
        SIP_ROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)size << 56;
    switch (size & 7) {
    case 7: last |= (uint64_t)data[blocks_end + 6] << 48; /* fall through */
    case 6: last |= (uint64_t)data[blocks_end + 5] << 40; /* fall through */
    case 5: last |= (uint64_t)data[blocks_end + 4] << 32; /* fall through */
    case 4: last |= (uint64_t)data[blocks_end + 3] << 24; /* fall through */
    case 3: last |= (uint64_t)data[blocks_end + 2] << 16; /* fall through */
    case 2: last |= (uint64_t)data[blocks_end + 1] << 8;  /* fall through */
    case 1: last |= (uint64_t)data[blocks_end]; break;
    default: break;
    }
    v3 ^= last;
    SIP_ROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIP_ROUND;
    SIP_ROUND;
    SIP_ROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t fl_kv_hash(const fl_kv *kv, const char *key, size_t size) {
    return fl_kv_siphash13(kv->hash_key0, kv->hash_key1, key, size);
}

void fl_kv_hash_many(const fl_kv *kv, const char *keys, const uint32_t *sizes, size_t count,
                     uint64_t *hashes_out) {
    uint64_t k0 = kv->hash_key0, k1 = kv->hash_key1;
    for (size_t i = 0; i < count; i++) {
        hashes_out[i] = fl_kv_siphash13(k0, k1, keys, sizes[i]);
        keys += sizes[i];
    }
}

/* ------------------------------------------------------------------ lifetime */

int fl_kv_create(fl_log *log, fl_index *index, fl_kv **kv_out) {
    *kv_out = NULL;
    fl_kv *kv = calloc(1, sizeof *kv);
    if (kv == NULL) return FL_E_NOMEM;
    kv->log = log;
    kv->index = index;
    kv->hash_key0 = log->salt;
    kv->hash_key1 = log->salt ^ SIP_KEY1_TWEAK;
    *kv_out = kv;
    return 0;
}

void fl_kv_free(fl_kv *kv) { free(kv); }

void fl_kv_set_chain_floor(fl_kv *kv, uint64_t address) {
    __atomic_store_n(&kv->chain_floor, address, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------ reading records */

typedef struct record_buffer {
    uint8_t *data;      /* the payload: `stack` or `heap` */
    uint32_t size;
    uint8_t *heap;      /* to free, or NULL */
} record_buffer;

static void record_buffer_release(record_buffer *record) {
    free(record->heap);
    record->heap = NULL;
}

static int record_error(fl_error_info *error, uint64_t address, const char *why) {
    if (error != NULL) {
        error->address = address;
        snprintf(error->message, sizeof error->message, "%s", why);
    }
    return FL_E_KV_RECORD;
}

/* Copies the payload of the data entry at `address` into `stack` (STACK_RECORD_BYTES) or a
 * malloced buffer (rule 2). */
static int read_record(fl_kv *kv, uint64_t address, uint8_t *stack, record_buffer *out,
                       fl_error_info *error) {
    fl_log *log = kv->log;
    out->heap = NULL;
    pthread_mutex_lock(&log->mutex);
    uint64_t limit = log->readonly ? log->committed_until : log->tail_address;
    uint64_t page = address / log->page_size_bytes;
    if (!log->closed && address >= log->begin_address && address >= FL_FIRST_ADDRESS &&
        address % FL_FRAME_ALIGNMENT_BYTES == 0 && address < limit &&
        address >= log->head_address && log->open_page_claimed && page <= log->open_page) {
        uint64_t offset = address % log->page_size_bytes;
        uint64_t available = log->page_size_bytes - offset;
        if (available > limit - address) available = limit - address;
        const uint8_t *bytes =
            log->memory + (page % log->pages_count) * log->page_size_bytes + offset;
        fl_frame_view view;
        if (fl_frame_check(log, address, bytes, available, &view) == 0 &&
            view.kind == FL_KIND_DATA) {
            uint8_t *target = stack;
            if (view.payload_size > STACK_RECORD_BYTES) {
                target = out->heap = malloc(view.payload_size);
                if (target == NULL) {
                    pthread_mutex_unlock(&log->mutex);
                    return FL_E_NOMEM;
                }
            }
            memcpy(target, bytes + FL_FRAME_HEADER_SIZE_BYTES, view.payload_size);
            pthread_mutex_unlock(&log->mutex);
            out->data = target;
            out->size = view.payload_size;
            return 0;
        }
        /* A bad frame or not a data entry: fl_read below says which, as for any read. */
    }
    pthread_mutex_unlock(&log->mutex);
    int32_t kind = 0;
    int64_t size = fl_read(log, address, stack, STACK_RECORD_BYTES, &kind, error);
    uint8_t *target = stack;
    if (size == FL_E_BUFFER) {
        target = out->heap = malloc(error->size_needed);
        if (target == NULL) return FL_E_NOMEM;
        size = fl_read(log, address, target, error->size_needed, &kind, error);
    }
    if (size < 0) {
        record_buffer_release(out);
        if (error != NULL && size != FL_E_CORRUPT && size != FL_E_TRUNCATED) error->address = address;
        return (int)size;
    }
    if (kind != FL_KIND_DATA) {
        record_buffer_release(out);
        return record_error(error, address, "not a data entry");
    }
    out->data = target;
    out->size = (uint32_t)size;
    return 0;
}

/* ------------------------------------------------------------------ parsing records */

typedef struct record_view {
    uint32_t index_bits;
    uint32_t ops_count;
    uint64_t previous;
    const uint8_t *cursor; /* next operation */
    const uint8_t *end;
    uint32_t ops_left;
} record_view;

typedef struct op_view {
    uint32_t kind;
    uint32_t key_size;
    uint32_t value_size;
    uint64_t hash;
    const uint8_t *key;
    const uint8_t *value;
} op_view;

/* Checks 1-3 of FORMAT.md's validity (the header). */
static int record_open(const uint8_t *payload, uint32_t size, uint64_t address,
                       record_view *record, fl_error_info *error) {
    char why[160];
    if (size < RECORD_HEADER_SIZE) {
        snprintf(why, sizeof why, "%u bytes is shorter than a record header", size);
        return record_error(error, address, why);
    }
    if (payload[0] == 1) /* the message is matched by kvlayer/_fast.py: keep them in step */
        return record_error(error, address,
                            "record version 1 (BLAKE2b key hashes, an older kvlayer)");
    if (payload[0] != RECORD_VERSION) {
        snprintf(why, sizeof why, "unknown record version %u", payload[0]);
        return record_error(error, address, why);
    }
    record->index_bits = payload[1];
    record->ops_count = (uint32_t)payload[2] | (uint32_t)payload[3] << 8;
    record->previous = fl_load64(payload + 4);
    if (record->ops_count == 0 || record->index_bits > FL_INDEX_BUCKETS_COUNT_LOG2_MAX) {
        snprintf(why, sizeof why, "bad header (ops_count %u, index_bits %u)", record->ops_count,
                 record->index_bits);
        return record_error(error, address, why);
    }
    if (record->previous >= address ||
        (record->previous > 0 && record->previous < FL_FIRST_ADDRESS)) {
        snprintf(why, sizeof why, "previous address %llu does not point backwards",
                 (unsigned long long)record->previous);
        return record_error(error, address, why);
    }
    record->cursor = payload + RECORD_HEADER_SIZE;
    record->end = payload + size;
    record->ops_left = record->ops_count;
    return 0;
}

/* The next operation (check 4); 1 when one was read, 0 at the end (after the stray-bytes
 * check), or FL_E_KV_RECORD. */
static int record_next(record_view *record, uint64_t address, op_view *op,
                       fl_error_info *error) {
    char why[160];
    if (record->ops_left == 0) {
        if (record->cursor != record->end) {
            snprintf(why, sizeof why, "%lld stray bytes after the last operation",
                     (long long)(record->end - record->cursor));
            return record_error(error, address, why);
        }
        return 0;
    }
    if (record->end - record->cursor < OP_HEADER_SIZE)
        return record_error(error, address, "an operation header runs past the record");
    const uint8_t *p = record->cursor;
    op->kind = p[0];
    op->key_size = (uint32_t)p[2] | (uint32_t)p[3] << 8;
    op->value_size = fl_load32(p + 4);
    op->hash = fl_load64(p + 8);
    uint64_t left = (uint64_t)(record->end - p) - OP_HEADER_SIZE;
    if ((op->kind != OP_PUT && op->kind != OP_DELETE) || p[1] != 0 ||
        (uint64_t)op->key_size + op->value_size > left) {
        snprintf(why, sizeof why, "bad operation (op %u, key %u B, value %u B)", op->kind,
                 op->key_size, op->value_size);
        return record_error(error, address, why);
    }
    if (op->kind == OP_DELETE && op->value_size)
        return record_error(error, address, "a delete carries a value");
    op->key = p + OP_HEADER_SIZE;
    op->value = op->key + op->key_size;
    record->cursor = op->value + op->value_size;
    record->ops_left--;
    return 1;
}

/* ------------------------------------------------------------------ lookups */

/* Where a lookup leaves the value it found. */
typedef struct found_value {
    const uint8_t *value;
    uint32_t size;
} found_value;

/* Walks the chain from `address` to the newest operation on the key (FORMAT.md: within a
 * record the last operation on the key wins). Returns 1 and `found` (valid until `record` is
 * released) for a put, 0 for a delete or no operation, or a failure code. */
static inline uint64_t load_floor(const fl_kv *kv) {
    return __atomic_load_n(&kv->chain_floor, __ATOMIC_ACQUIRE);
}

static int walk_chain(fl_kv *kv, uint64_t address, uint64_t floor, uint64_t hash,
                      const uint8_t *key, uint32_t key_size, uint8_t *stack,
                      record_buffer *record, found_value *found, fl_error_info *error) {
    record->heap = NULL;
    while (address != 0 && address >= floor) {
        int rc = read_record(kv, address, stack, record, error);
        if (rc < 0) return rc;
        record_view view;
        rc = record_open(record->data, record->size, address, &view, error);
        op_view op;
        int matched = -1;
        while (rc == 0 && (rc = record_next(&view, address, &op, error)) == 1) {
            rc = 0;
            if (op.hash == hash && op.key_size == key_size &&
                memcmp(op.key, key, key_size) == 0) {
                matched = op.kind == OP_PUT;
                found->value = op.value;
                found->size = op.value_size;
            }
        }
        if (rc < 0) {
            record_buffer_release(record);
            return rc;
        }
        if (matched >= 0) {
            if (!matched) record_buffer_release(record);
            return matched;
        }
        record_buffer_release(record);
        address = view.previous;
    }
    return 0;
}

/* 1 when the key is live, 0 when not, or a failure code. */
static int is_live(fl_kv *kv, uint64_t head, uint64_t hash, const uint8_t *key,
                   uint32_t key_size, fl_error_info *error) {
    if (head == 0) return 0;
    uint8_t stack[STACK_RECORD_BYTES];
    record_buffer record;
    found_value found;
    int rc = walk_chain(kv, head, load_floor(kv), hash, key, key_size, stack, &record, &found,
                        error);
    if (rc == 1) record_buffer_release(&record);
    return rc;
}

static int64_t value_from(fl_kv_reader *reader, uint64_t address, uint64_t floor, uint64_t hash,
                          const char *key, size_t key_size) {
    if (address == 0) return FL_KV_ABSENT;
    uint8_t stack[STACK_RECORD_BYTES];
    record_buffer record;
    found_value found;
    reader->error.message[0] = 0;
    int rc = walk_chain(reader->kv, address, floor, hash, (const uint8_t *)key,
                        (uint32_t)key_size,
                        stack, &record, &found, &reader->error);
    if (rc < 0) return rc;
    if (rc == 0) return FL_KV_ABSENT;
    int64_t result = found.size;
    if (found.size > reader->capacity) {
        reader->error.size_needed = found.size;
        result = FL_E_BUFFER;
    } else {
        memcpy(reader->buffer, found.value, found.size);
    }
    record_buffer_release(&record);
    return result;
}

int64_t fl_kv_value_from(fl_kv_reader *reader, uint64_t address, uint64_t hash, const char *key,
                         size_t key_size) {
    return value_from(reader, address, load_floor(reader->kv), hash, key, key_size);
}

int64_t fl_kv_get(fl_kv_reader *reader, const char *key, size_t key_size) {
    uint64_t hash = fl_kv_hash(reader->kv, key, key_size);
    uint64_t floor = load_floor(reader->kv); /* before the lookup: see struct fl_kv */
    uint64_t head = fl_index_find(reader->kv->index, hash);
    if (head == 0) return FL_KV_ABSENT;
    return value_from(reader, head, floor, hash, key, key_size);
}

/* Asks the memory system for the first lines of the record at `address` if its page may be
 * in the ring: the walks of a batch are independent cache misses, and issuing them early lets
 * several be in flight. Only a hint: the address is computed without the log's lock, and any
 * value lands inside the ring's memory, so a stale one costs nothing but a useless load. */
static inline void prefetch_record(const fl_kv *kv, uint64_t address) {
    const fl_log *log = kv->log;
    if (address == 0 || log->memory == NULL) return;
    uint64_t page = address / log->page_size_bytes;
    const uint8_t *at = log->memory + (page % log->pages_count) * log->page_size_bytes +
                        address % log->page_size_bytes;
    __builtin_prefetch(at);
    __builtin_prefetch(at + 64);
    __builtin_prefetch(at + 128);
}

int64_t fl_kv_get_many(fl_kv *kv, const char *keys, const uint32_t *key_sizes, size_t count,
                       char *buffer, size_t capacity, uint32_t *offsets_out, uint32_t *sizes_out,
                       uint32_t *missing_out, uint64_t *missing_count_out,
                       fl_error_info *error) {
    enum { chunk = 256, prefetch_distance = 8 }; /* chunk: hashes per find_many, on the stack */
    uint64_t hashes[chunk], heads[chunk];
    uint8_t stack[STACK_RECORD_BYTES];
    const char *key = keys;
    uint64_t used = 0, missing = 0;
    *missing_count_out = 0;
    if (error != NULL) error->message[0] = 0;
    for (size_t base = 0; base < count; base += chunk) {
        size_t n = count - base < chunk ? count - base : chunk;
        fl_kv_hash_many(kv, key, key_sizes + base, n, hashes);
        uint64_t floor = load_floor(kv); /* before the lookups: see struct fl_kv */
        fl_index_find_many(kv->index, hashes, n, heads);
        for (size_t j = 0; j < n && j < prefetch_distance; j++) prefetch_record(kv, heads[j]);
        for (size_t j = 0; j < n; j++) {
            if (j + prefetch_distance < n) prefetch_record(kv, heads[j + prefetch_distance]);
            size_t i = base + j;
            uint32_t key_size = key_sizes[i];
            int rc = 0;
            record_buffer record;
            found_value found;
            if (heads[j] != 0)
                rc = walk_chain(kv, heads[j], floor, hashes[j], (const uint8_t *)key, key_size,
                                stack, &record, &found, error);
            if (rc < 0) return rc;
            if (rc == 1 && found.size > capacity - used) {
                record_buffer_release(&record);
                *missing_count_out = missing;
                if (i > 0) return (int64_t)i;
                if (error != NULL) error->size_needed = found.size;
                return FL_E_BUFFER;
            }
            offsets_out[i] = (uint32_t)used;
            if (rc == 1) {
                memcpy(buffer + used, found.value, found.size);
                sizes_out[i] = found.size;
                used += found.size;
                record_buffer_release(&record);
            } else {
                sizes_out[i] = 0;
                missing_out[missing++] = (uint32_t)i;
            }
            key += key_size;
        }
    }
    *missing_count_out = missing;
    return (int64_t)count;
}

/* ------------------------------------------------------------------ grow */

typedef struct resolve_context {
    fl_kv *kv;
    fl_error_info *error;
} resolve_context;

/* fl_index_resolve_fn over the log: the hashes of a record and its previous address. */
static int resolve_record(void *context, uint64_t address, uint64_t *hashes_out,
                          uint32_t capacity, uint64_t *previous_address_out) {
    resolve_context *resolve = context;
    if (address < load_floor(resolve->kv)) {
        *previous_address_out = 0; /* compacted away: the chain ends (store.py rule 6) */
        return 0;
    }
    uint8_t stack[STACK_RECORD_BYTES];
    record_buffer record;
    int rc = read_record(resolve->kv, address, stack, &record, resolve->error);
    if (rc < 0) return rc;
    record_view view;
    rc = record_open(record.data, record.size, address, &view, resolve->error);
    op_view op;
    uint32_t count = 0;
    while (rc == 0 && (rc = record_next(&view, address, &op, resolve->error)) == 1) {
        rc = 0;
        if (count < capacity) hashes_out[count] = op.hash;
        count++;
    }
    record_buffer_release(&record);
    if (rc < 0) return rc;
    *previous_address_out = view.previous;
    return (int)count;
}

static uint32_t index_bits(fl_index *index) {
    fl_index_stats stats;
    fl_index_get_stats(index, &stats);
    return stats.buckets_count_log2;
}

int fl_kv_grow(fl_kv *kv, uint32_t buckets_count_log2_min, int32_t if_loaded,
               fl_error_info *error) {
    resolve_context context = {kv, error};
    if (buckets_count_log2_min > FL_INDEX_BUCKETS_COUNT_LOG2_MAX) return FL_E_SETTINGS;
    while (index_bits(kv->index) < buckets_count_log2_min) {
        int rc = fl_index_grow(kv->index, resolve_record, &context);
        if (rc < 0) return rc;
    }
    while (if_loaded && fl_index_should_grow(kv->index)) {
        int rc = fl_index_grow(kv->index, resolve_record, &context);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ writes */

static inline int keys_equal(const char *a, uint32_t a_size, const char *b, uint32_t b_size) {
    return a_size == b_size && memcmp(a, b, a_size) == 0;
}

static uint64_t table_size_for(size_t count) {
    uint64_t size = 16;
    while (size < 2 * (uint64_t)count) size <<= 1;
    return size;
}

int64_t fl_kv_write(fl_kv *kv, const char *keys, const uint32_t *key_sizes, const char *values,
                    const uint32_t *value_sizes, size_t count, uint64_t *addresses_out,
                    fl_kv_write_result *result_out, fl_error_info *error) {
    memset(result_out, 0, sizeof *result_out);
    if (error != NULL) error->message[0] = 0;
    if (count == 0) return 0;
    for (size_t i = 0; i < count; i++) {
        if (key_sizes[i] > FL_KV_KEY_SIZE_MAX) {
            if (error != NULL) error->address = i;
            return FL_E_KV_KEY_SIZE;
        }
    }
    uint64_t table_size = table_size_for(count);
    /* One allocation for the scratch arrays: per input op, then per distinct op, then tables. */
    size_t scratch_bytes = count * (sizeof(uint64_t) * 4 + sizeof(uint32_t) * 5) +
                           table_size * sizeof(uint32_t) * 2;
    uint8_t *scratch = malloc(scratch_bytes);
    if (scratch == NULL) return FL_E_NOMEM;
    uint64_t *hashes = (uint64_t *)scratch;
    uint64_t *key_offsets = hashes + count;
    uint64_t *value_offsets = key_offsets + count;
    uint64_t *heads = value_offsets + count;          /* per group */
    uint32_t *winner = (uint32_t *)(heads + count);   /* per distinct op: the input that wins */
    uint32_t *distinct = winner + count;              /* distinct op -> its first input */
    uint32_t *group_of = distinct + count;            /* distinct op -> group */
    uint32_t *group_first = group_of + count;         /* group -> first member (distinct op) */
    uint32_t *member_next = group_first + count;      /* distinct op -> next in its group */
    uint32_t *key_table = member_next + count;        /* distinct op + 1, by hash */
    uint32_t *chain_table = key_table + table_size;   /* group + 1, by chain */
    memset(key_table, 0, table_size * sizeof(uint32_t) * 2);
    uint64_t key_offset = 0, value_offset = 0;
    for (size_t i = 0; i < count; i++) {
        key_offsets[i] = key_offset;
        value_offsets[i] = value_offset;
        key_offset += key_sizes[i];
        if (value_sizes[i] != VALUE_DELETE) value_offset += value_sizes[i];
    }
    fl_kv_hash_many(kv, keys, key_sizes, count, hashes);

    /* Distinct keys in first-occurrence order, each with its last value. */
    uint32_t distinct_count = 0;
    uint64_t table_mask = table_size - 1;
    for (size_t i = 0; i < count; i++) {
        uint64_t slot = hashes[i] & table_mask;
        for (;; slot = (slot + 1) & table_mask) {
            uint32_t d = key_table[slot];
            if (d == 0) {
                key_table[slot] = distinct_count + 1;
                distinct[distinct_count] = winner[distinct_count] = (uint32_t)i;
                distinct_count++;
                break;
            }
            uint32_t first = distinct[d - 1];
            if (hashes[first] == hashes[i] &&
                keys_equal(keys + key_offsets[first], key_sizes[first], keys + key_offsets[i],
                           key_sizes[i])) {
                winner[d - 1] = (uint32_t)i;
                break;
            }
        }
    }
    int64_t rc = 0;
    if (distinct_count > FL_KV_BATCH_OPS_MAX) {
        if (error != NULL) error->size_needed = distinct_count;
        rc = FL_E_KV_BATCH;
        goto done;
    }

    /* Liveness before anything is appended (rule 3), and the chains (groups) of the batch. */
    uint32_t bits = index_bits(kv->index);
    uint64_t chain_mask = ((UINT64_C(1) << bits) - 1) | TAG_MASK << TAG_SHIFT;
    uint32_t groups_count = 0;
    int64_t live_change = 0;
    for (uint32_t d = 0; d < distinct_count; d++) {
        uint32_t i = distinct[d];
        uint64_t hash = hashes[i];
        if (d + 8 < distinct_count) /* independent misses: as in fl_kv_replay */
            fl_index_prefetch(kv->index, hashes[distinct[d + 8]]);
        uint64_t head = fl_index_find(kv->index, hash);
        int live = is_live(kv, head, hash, (const uint8_t *)keys + key_offsets[i], key_sizes[i],
                           error);
        if (live < 0) {
            rc = live;
            goto done;
        }
        live_change += (value_sizes[winner[d]] != VALUE_DELETE) - live;
        uint64_t chain = hash & chain_mask;
        uint64_t slot = (chain * UINT64_C(0x9E3779B97F4A7C15)) >> 32 & table_mask;
        for (;; slot = (slot + 1) & table_mask) {
            uint32_t g = chain_table[slot];
            if (g == 0) {
                chain_table[slot] = groups_count + 1;
                group_of[d] = groups_count;
                group_first[groups_count] = d;
                heads[groups_count] = head;
                groups_count++;
                break;
            }
            if ((hashes[distinct[group_first[g - 1]]] & chain_mask) == chain) {
                group_of[d] = g - 1;
                break;
            }
        }
    }
    /* Link each group's members in order: walk backwards so each points at the next. */
    {
        uint32_t *last_seen = key_table; /* reused: group -> next member seen so far + 1 */
        memset(last_seen, 0, sizeof(uint32_t) * groups_count);
        for (uint32_t d = distinct_count; d-- > 0;) {
            member_next[d] = last_seen[group_of[d]];
            last_seen[group_of[d]] = d + 1;
        }
    }

    /* Encode: one record per group, members in first-occurrence order. */
    uint64_t total = 0;
    uint32_t *sizes = malloc(sizeof(uint32_t) * groups_count);
    if (sizes == NULL) {
        rc = FL_E_NOMEM;
        goto done;
    }
    for (uint32_t g = 0; g < groups_count; g++) {
        uint64_t size = RECORD_HEADER_SIZE;
        for (uint32_t d = group_first[g] + 1; d != 0; d = member_next[d - 1]) {
            uint32_t w = winner[d - 1];
            size += OP_HEADER_SIZE + key_sizes[w] +
                    (value_sizes[w] == VALUE_DELETE ? 0 : value_sizes[w]);
        }
        if (size > kv->log->entry_size_max) {
            if (error != NULL) error->size_needed = size;
            free(sizes);
            rc = FL_E_TOO_LARGE;
            goto done;
        }
        sizes[g] = (uint32_t)size;
        total += size;
    }
    uint8_t *data = malloc(total ? total : 1);
    if (data == NULL) {
        free(sizes);
        rc = FL_E_NOMEM;
        goto done;
    }
    uint8_t *out = data;
    for (uint32_t g = 0; g < groups_count; g++) {
        uint32_t ops = 0;
        for (uint32_t d = group_first[g] + 1; d != 0; d = member_next[d - 1]) ops++;
        out[0] = RECORD_VERSION;
        out[1] = (uint8_t)bits;
        out[2] = (uint8_t)ops;
        out[3] = (uint8_t)(ops >> 8);
        fl_store64(out + 4, heads[g]);
        out += RECORD_HEADER_SIZE;
        for (uint32_t d = group_first[g] + 1; d != 0; d = member_next[d - 1]) {
            uint32_t w = winner[d - 1];
            uint32_t first = distinct[d - 1];
            int is_delete = value_sizes[w] == VALUE_DELETE;
            uint32_t value_size = is_delete ? 0 : value_sizes[w];
            out[0] = is_delete ? OP_DELETE : OP_PUT;
            out[1] = 0;
            out[2] = (uint8_t)key_sizes[first];
            out[3] = (uint8_t)(key_sizes[first] >> 8);
            fl_store32(out + 4, value_size);
            fl_store64(out + 8, hashes[first]);
            out += OP_HEADER_SIZE;
            memcpy(out, keys + key_offsets[first], key_sizes[first]);
            out += key_sizes[first];
            if (value_size) memcpy(out, values + value_offsets[w], value_size);
            out += value_size;
        }
    }
    rc = fl_append_batch(kv->log, data, sizes, groups_count, addresses_out, 1);
    free(data);
    free(sizes);
    if (rc < 0) goto done;
    for (uint32_t g = 0; g < groups_count; g++) {
        int upserted = fl_index_upsert(kv->index, hashes[distinct[group_first[g]]], heads[g],
                                       addresses_out[g]);
        if (upserted < 0) {
            rc = FL_E_KV_INDEX;
            goto done;
        }
    }
    result_out->live_change = live_change;
    result_out->records_count = groups_count;
    result_out->bytes_count = total;
    rc = fl_kv_grow(kv, 0, 1, error);
    if (rc == 0) rc = groups_count;
done:
    free(scratch);
    return rc;
}

/* ------------------------------------------------------------------ replay */

/* Applies one record at `address` (kvlayer rule 2): grow to its index size, every liveness
 * check, then the upserts (operations sharing a chain share one entry). */
static int replay_record(fl_kv *kv, uint64_t address, const uint8_t *payload, uint32_t size,
                         int64_t *live_change, fl_error_info *error) {
    record_view view;
    int rc = record_open(payload, size, address, &view, error);
    if (rc < 0) return rc;
    if (view.index_bits > index_bits(kv->index)) {
        rc = fl_kv_grow(kv, view.index_bits, 0, error);
        if (rc < 0) return rc;
    }
    op_view op;
    record_view again = view;
    while ((rc = record_next(&view, address, &op, error)) == 1) {
        uint64_t head = fl_index_find(kv->index, op.hash);
        int live = is_live(kv, head, op.hash, op.key, op.key_size, error);
        if (live < 0) return live;
        *live_change += (op.kind == OP_PUT) - live;
    }
    if (rc < 0) return rc;
    while (record_next(&again, address, &op, error) == 1) {
        uint64_t head = fl_index_find(kv->index, op.hash);
        if (head == address) continue;
        if (fl_index_upsert(kv->index, op.hash, head, address) < 0) return FL_E_KV_INDEX;
    }
    return 0;
}

/* The buffers of a full-log pass through fl_scan (replay, snapshot folding): a batch of up to
 * SCAN_ENTRIES_MAX entries, and room for at least the largest entry. */
enum { SCAN_ENTRIES_MAX = 4096 };

typedef struct scan_buffers {
    uint8_t *data;
    size_t capacity;
    uint64_t *addresses;
    uint32_t *offsets;
    uint32_t *sizes;
} scan_buffers;

static void scan_buffers_free(scan_buffers *scan) {
    free(scan->data);
    free(scan->addresses);
    free(scan->offsets);
    free(scan->sizes);
    memset(scan, 0, sizeof *scan);
}

/* 0, or FL_E_NOMEM with nothing left allocated; scan_buffers_free is safe after either. */
static int scan_buffers_alloc(const fl_kv *kv, scan_buffers *scan) {
    scan->capacity = (size_t)kv->log->entry_size_max + 64;
    if (scan->capacity < (4u << 20)) scan->capacity = 4u << 20;
    scan->data = malloc(scan->capacity);
    scan->addresses = malloc(SCAN_ENTRIES_MAX * sizeof(uint64_t));
    scan->offsets = malloc(SCAN_ENTRIES_MAX * sizeof(uint32_t));
    scan->sizes = malloc(SCAN_ENTRIES_MAX * sizeof(uint32_t));
    if (scan->data && scan->addresses && scan->offsets && scan->sizes) return 0;
    scan_buffers_free(scan);
    return FL_E_NOMEM;
}

int fl_kv_replay(fl_kv *kv, uint64_t from_address, uint64_t until_address,
                 fl_kv_replay_result *result_out, fl_error_info *error) {
    memset(result_out, 0, sizeof *result_out);
    result_out->next_address = from_address;
    if (error != NULL) error->message[0] = 0;
    scan_buffers scan;
    int rc = scan_buffers_alloc(kv, &scan);
    uint8_t *buffer = scan.data;
    uint64_t *addresses = scan.addresses;
    uint32_t *offsets = scan.offsets, *sizes = scan.sizes;
    uint64_t position = from_address;
    while (rc == 0 && position < until_address) {
        uint64_t next = position;
        int64_t count = fl_scan(kv->log, position, until_address, 0, buffer, scan.capacity,
                                addresses, offsets, sizes, NULL, SCAN_ENTRIES_MAX, &next, error);
        if (count < 0) {
            rc = (int)count;
            break;
        }
        /* The index lookups of a replay are independent cache misses: ask for the bucket of
         * each record's first operation a few records ahead (the hash sits at offset 20 of a
         * record; a malformed record only costs a useless prefetch, record_open rejects it). */
        enum { prefetch_distance = 8 };
        for (int64_t i = 0; i < count && rc == 0; i++) {
            if (i + prefetch_distance < count && sizes[i + prefetch_distance] >= 28)
                fl_index_prefetch(kv->index,
                                  fl_load64(buffer + offsets[i + prefetch_distance] + 20));
            rc = replay_record(kv, addresses[i], buffer + offsets[i], sizes[i],
                               &result_out->live_change, error);
            /* Growth for load is checked every 256 records (a check takes the table lock):
             * the table runs at most that many entries over its load meanwhile. */
            if (rc == 0 && (i % 256 == 255 || i == count - 1)) rc = fl_kv_grow(kv, 0, 1, error);
            result_out->bytes_count += sizes[i];
            result_out->records_count++;
        }
        if (count == 0 && next == position) break;
        position = next;
    }
    result_out->next_address = position;
    scan_buffers_free(&scan);
    return rc;
}

/* ------------------------------------------------------------------ checkpoint snapshots */

#define ENTRY_DELETED (UINT64_C(1) << 63)
#define ENTRY_ADDRESS_MASK ((UINT64_C(1) << 48) - 1)

typedef struct fold_entry {
    uint64_t hash;
    uint64_t word;
    uint64_t sequence; /* log order: of two operations on one hash the later wins */
} fold_entry;

static int fold_entry_compare(const void *a, const void *b) {
    const fold_entry *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->sequence < y->sequence ? 1 : x->sequence > y->sequence ? -1 : 0; /* newest first */
}

static int fold_push(fold_entry **entries, size_t *count, size_t *capacity, uint64_t hash,
                     uint64_t word) {
    if (*count == *capacity) {
        size_t grown = *capacity ? *capacity * 2 : 65536;
        fold_entry *bigger = realloc(*entries, grown * sizeof **entries);
        if (bigger == NULL) return FL_E_NOMEM;
        *entries = bigger;
        *capacity = grown;
    }
    (*entries)[*count] = (fold_entry){hash, word, *count};
    (*count)++;
    return 0;
}

int64_t fl_kv_snapshot_fold(fl_kv *kv, const uint64_t *base_hashes, const uint64_t *base_words,
                            size_t base_count, uint64_t from_address, uint64_t until_address,
                            uint64_t drop_below, uint64_t *hashes_out, uint64_t *words_out,
                            size_t capacity, uint64_t *live_count_out, fl_error_info *error) {
    *live_count_out = 0;
    if (error != NULL) error->message[0] = 0;
    scan_buffers scan;
    int64_t rc = scan_buffers_alloc(kv, &scan);
    uint8_t *buffer = scan.data;
    uint64_t *addresses = scan.addresses;
    uint32_t *offsets = scan.offsets, *sizes = scan.sizes;
    fold_entry *news = NULL;
    size_t news_count = 0, news_capacity = 0;
    /* The operations of the records since the base, in log order (checked as replay checks
     * them: rule 1). */
    uint64_t position = from_address;
    while (rc == 0 && position < until_address) {
        uint64_t next = position;
        int64_t count = fl_scan(kv->log, position, until_address, 0, buffer, scan.capacity,
                                addresses, offsets, sizes, NULL, SCAN_ENTRIES_MAX, &next, error);
        if (count < 0) {
            rc = count;
            break;
        }
        for (int64_t i = 0; i < count && rc == 0; i++) {
            record_view view;
            op_view op;
            int r = record_open(buffer + offsets[i], sizes[i], addresses[i], &view, error);
            while (r == 0 && (r = record_next(&view, addresses[i], &op, error)) == 1)
                r = fold_push(&news, &news_count, &news_capacity, op.hash,
                              addresses[i] | (op.kind == OP_DELETE ? ENTRY_DELETED : 0));
            if (r < 0) rc = r;
        }
        if (count == 0 && next == position) break;
        position = next;
    }
    scan_buffers_free(&scan);
    if (rc < 0) {
        free(news);
        return rc;
    }
    if (news_count) qsort(news, news_count, sizeof *news, fold_entry_compare);
    /* Merge the base (sorted, distinct) with the newest operation per hash; an entry below
     * drop_below is a tombstone compaction left behind (a live key's newest record is never
     * below the begin address: store.py rule 6), so it goes. */
    size_t out = 0, b = 0, n = 0;
    uint64_t live = 0;
    while (b < base_count || n < news_count) {
        uint64_t hash, word;
        if (n < news_count && (b == base_count || news[n].hash <= base_hashes[b])) {
            hash = news[n].hash;
            word = news[n].word;
            if (b < base_count && base_hashes[b] == hash) b++;
            n++;
            while (n < news_count && news[n].hash == hash) n++; /* older operations */
        } else {
            hash = base_hashes[b];
            word = base_words[b];
            b++;
        }
        if ((word & ENTRY_ADDRESS_MASK) < drop_below) continue;
        if (out == capacity) {
            free(news);
            return FL_E_BUFFER;
        }
        hashes_out[out] = hash;
        words_out[out] = word;
        live += !(word & ENTRY_DELETED);
        out++;
    }
    free(news);
    *live_count_out = live;
    return (int64_t)out;
}

int64_t fl_kv_snapshot_check(const uint64_t *pairs, size_t count, uint64_t position,
                             uint64_t *bad_index_out) {
    uint64_t live = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t hash = pairs[2 * i], word = pairs[2 * i + 1];
        if (i > 0 && pairs[2 * (i - 1)] >= hash) {
            *bad_index_out = i;
            return FL_E_KV_SNAPSHOT_ORDER;
        }
        uint64_t address = word & ENTRY_ADDRESS_MASK;
        if ((word & ~(ENTRY_ADDRESS_MASK | ENTRY_DELETED)) != 0 || address < FL_FIRST_ADDRESS ||
            address >= position) {
            *bad_index_out = i;
            return FL_E_KV_SNAPSHOT_WORD;
        }
        live += !(word & ENTRY_DELETED);
    }
    return (int64_t)live;
}
