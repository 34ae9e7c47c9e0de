/* The read side of kvlayer's hot paths: key hashes, the context, reading records through the
 * core (rule 2 of fl_kv_internal.h), parsing them (rule 1), and gets (chain walks). One file,
 * so the get path (hash, lookup, read, parse, compare) is compiled as one unit. */
#include "fl_kv_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ SipHash-1-3
 * The key hash of record version 2 (kvlayer/FORMAT.md "KV records"): SipHash-1-3 (one
 * compression round, three finalization rounds, as Rust's HashMap) with a 64-bit output, keyed
 * per store from the log's salt. Keyed, an attacker who does not know the salt cannot make many
 * keys share a chain (hash flooding); at about 15 ns for a 16-byte key it fits get_many's
 * budget, where BLAKE2b took about 155 ns. kvlayer.store.siphash13 is the Python reference. */

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
        uint64_t m = fl_kv_load64(data + i);
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

int fl_kv_create(const fl_core_api *core, fl_log *log, fl_index *index, fl_kv **kv_out) {
    *kv_out = NULL;
    /* A table of a core built from another fasterlog.h could lack calls this code makes. */
    if (core->size_bytes != sizeof *core) return -EINVAL;
    fl_kv *kv = calloc(1, sizeof *kv);
    if (kv == NULL) return FL_E_NOMEM;
    fl_state state;
    fl_settings settings;
    core->get_state(log, &state);
    core->get_settings(log, &settings);
    kv->core = core;
    kv->log = log;
    kv->index = index;
    kv->entry_size_max = settings.page_size_bytes - FL_FRAME_HEADER_SIZE_BYTES; /* FORMAT.md */
    kv->hash_key0 = state.salt;
    kv->hash_key1 = state.salt ^ FL_KV_HASH_KEY1_TWEAK;
    *kv_out = kv;
    return 0;
}

void fl_kv_free(fl_kv *kv) { free(kv); }

void fl_kv_set_chain_floor(fl_kv *kv, uint64_t address) {
    __atomic_store_n(&kv->chain_floor, address, __ATOMIC_RELEASE);
}

void fl_kv_record_release(fl_kv_record *record) {
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

/* ------------------------------------------------------------------ reading records */

/* The page-ring path of rule 2: 0 with the payload in `out` when the core could copy the data
 * entry at `address` from memory; FL_E_NOT_IN_MEMORY (or FL_E_NOMEM) when it could not. */
static int read_record_in_memory(fl_kv *kv, uint64_t address, uint8_t *stack,
                                 fl_kv_record *out) {
    int32_t kind = 0;
    uint64_t size_needed = 0;
    int64_t size = kv->core->read_in_memory(kv->log, address, stack, FL_KV_STACK_RECORD_BYTES,
                                            &kind, &size_needed);
    uint8_t *target = stack;
    if (size == FL_E_BUFFER) {
        target = out->heap = malloc(size_needed);
        if (target == NULL) return FL_E_NOMEM;
        size = kv->core->read_in_memory(kv->log, address, target, size_needed, &kind,
                                        &size_needed);
    }
    /* Gone from memory meanwhile, or not a data entry: fl_read says what it is. */
    if (size < 0 || kind != FL_KIND_DATA) {
        fl_kv_record_release(out);
        return FL_E_NOT_IN_MEMORY;
    }
    out->data = target;
    out->size = (uint32_t)size;
    return 0;
}

int fl_kv_read_record(fl_kv *kv, uint64_t address, uint8_t *stack, fl_kv_record *out,
                      fl_error_info *error) {
    out->heap = NULL;
    int rc = read_record_in_memory(kv, address, stack, out);
    if (rc != FL_E_NOT_IN_MEMORY) return rc;
    fl_log *log = kv->log;
    int32_t kind = 0;
    int64_t size = kv->core->read(log, address, stack, FL_KV_STACK_RECORD_BYTES, &kind, error);
    uint8_t *target = stack;
    if (size == FL_E_BUFFER) {
        target = out->heap = malloc(error->size_needed);
        if (target == NULL) return FL_E_NOMEM;
        size = kv->core->read(log, address, target, error->size_needed, &kind, error);
    }
    if (size < 0) {
        fl_kv_record_release(out);
        if (error != NULL && size != FL_E_CORRUPT && size != FL_E_TRUNCATED)
            error->address = address;
        return (int)size;
    }
    if (kind != FL_KIND_DATA) {
        fl_kv_record_release(out);
        return record_error(error, address, "not a data entry");
    }
    out->data = target;
    out->size = (uint32_t)size;
    return 0;
}

/* Checks 1-3 of FORMAT.md's validity (the header). */
/* ------------------------------------------------------------------ parsing records */

int fl_kv_record_open(const uint8_t *payload, uint32_t size, uint64_t address,
                      fl_kv_record_view *record, fl_error_info *error) {
    char why[160];
    if (size < FL_KV_RECORD_HEADER_SIZE_BYTES) {
        snprintf(why, sizeof why, "%u bytes is shorter than a record header", size);
        return record_error(error, address, why);
    }
    uint32_t version = payload[FL_KV_RECORD_VERSION_OFFSET];
    if (version == 1) /* the message is matched by kvlayer/_fast.py: keep them in step */
        return record_error(error, address,
                            "record version 1 (BLAKE2b key hashes, an older kvlayer)");
    if (version != FL_KV_RECORD_VERSION) {
        snprintf(why, sizeof why, "unknown record version %u", version);
        return record_error(error, address, why);
    }
    record->index_bits = payload[FL_KV_RECORD_INDEX_BITS_OFFSET];
    record->ops_count = fl_kv_load16(payload + FL_KV_RECORD_OPS_COUNT_OFFSET);
    record->previous = fl_kv_load64(payload + FL_KV_RECORD_PREVIOUS_OFFSET);
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
    record->cursor = payload + FL_KV_RECORD_HEADER_SIZE_BYTES;
    record->end = payload + size;
    record->ops_left = record->ops_count;
    return 0;
}

int fl_kv_record_next(fl_kv_record_view *record, uint64_t address, fl_kv_op_view *op,
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
    if (record->end - record->cursor < FL_KV_OP_HEADER_SIZE_BYTES)
        return record_error(error, address, "an operation header runs past the record");
    const uint8_t *p = record->cursor;
    op->kind = p[FL_KV_OP_KIND_OFFSET];
    op->key_size = fl_kv_load16(p + FL_KV_OP_KEY_SIZE_OFFSET);
    op->value_size = fl_kv_load32(p + FL_KV_OP_VALUE_SIZE_OFFSET);
    op->hash = fl_kv_load64(p + FL_KV_OP_HASH_OFFSET);
    uint64_t left = (uint64_t)(record->end - p) - FL_KV_OP_HEADER_SIZE_BYTES;
    if ((op->kind != FL_KV_OP_PUT && op->kind != FL_KV_OP_DELETE) ||
        p[FL_KV_OP_RESERVED_OFFSET] != 0 ||
        (uint64_t)op->key_size + op->value_size > left) {
        snprintf(why, sizeof why, "bad operation (op %u, key %u B, value %u B)", op->kind,
                 op->key_size, op->value_size);
        return record_error(error, address, why);
    }
    if (op->kind == FL_KV_OP_DELETE && op->value_size)
        return record_error(error, address, "a delete carries a value");
    op->key = p + FL_KV_OP_HEADER_SIZE_BYTES;
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

/* Walks the chain from `address` to the newest operation on the key (kvlayer/FORMAT.md: within
 * a record the last operation on the key wins). Returns 1 and `found` (valid until `record` is
 * released) for a put, 0 for a delete or no operation, or a failure code. */
static int walk_chain(fl_kv *kv, uint64_t address, uint64_t floor, uint64_t hash,
                      const uint8_t *key, uint32_t key_size, uint8_t *stack,
                      fl_kv_record *record, found_value *found, fl_error_info *error) {
    record->heap = NULL;
    while (address != 0 && address >= floor) {
        int rc = fl_kv_read_record(kv, address, stack, record, error);
        if (rc < 0) return rc;
        fl_kv_record_view view;
        rc = fl_kv_record_open(record->data, record->size, address, &view, error);
        fl_kv_op_view op;
        int matched = -1;
        while (rc == 0 && (rc = fl_kv_record_next(&view, address, &op, error)) == 1) {
            rc = 0;
            if (op.hash == hash && op.key_size == key_size &&
                memcmp(op.key, key, key_size) == 0) {
                matched = op.kind == FL_KV_OP_PUT;
                found->value = op.value;
                found->size = op.value_size;
            }
        }
        if (rc < 0) {
            fl_kv_record_release(record);
            return rc;
        }
        if (matched >= 0) {
            if (!matched) fl_kv_record_release(record);
            return matched;
        }
        fl_kv_record_release(record);
        address = view.previous;
    }
    return 0;
}

int fl_kv_is_live(fl_kv *kv, uint64_t head, uint64_t hash, const uint8_t *key,
                  uint32_t key_size, fl_error_info *error) {
    if (head == 0) return 0;
    uint8_t stack[FL_KV_STACK_RECORD_BYTES];
    fl_kv_record record;
    found_value found;
    int rc = walk_chain(kv, head, fl_kv_load_floor(kv), hash, key, key_size, stack, &record,
                        &found, error);
    if (rc == 1) fl_kv_record_release(&record);
    return rc;
}

static int64_t value_from(fl_kv_reader *reader, uint64_t address, uint64_t floor, uint64_t hash,
                          const char *key, size_t key_size) {
    if (address == 0) return FL_KV_ABSENT;
    uint8_t stack[FL_KV_STACK_RECORD_BYTES];
    fl_kv_record record;
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
    fl_kv_record_release(&record);
    return result;
}

int64_t fl_kv_value_from(fl_kv_reader *reader, uint64_t address, uint64_t hash, const char *key,
                         size_t key_size) {
    return value_from(reader, address, fl_kv_load_floor(reader->kv), hash, key, key_size);
}

int64_t fl_kv_get(fl_kv_reader *reader, const char *key, size_t key_size) {
    uint64_t hash = fl_kv_hash(reader->kv, key, key_size);
    uint64_t floor = fl_kv_load_floor(reader->kv); /* before the lookup: see struct fl_kv */
    uint64_t head = fl_index_find(reader->kv->index, hash);
    if (head == 0) return FL_KV_ABSENT;
    return value_from(reader, head, floor, hash, key, key_size);
}

/* The walks of a batch are independent cache misses: asking for each record's first lines a
 * few keys ahead (fl_prefetch, a hint) lets several be in flight. */
static inline void prefetch_record(const fl_kv *kv, uint64_t address) {
    if (address != 0) kv->core->prefetch(kv->log, address);
}

int64_t fl_kv_get_many(fl_kv *kv, const char *keys, const uint32_t *key_sizes, size_t count,
                       char *buffer, size_t capacity, uint32_t *offsets_out, uint32_t *sizes_out,
                       uint32_t *missing_out, uint64_t *missing_count_out,
                       fl_error_info *error) {
    enum { chunk = 256, prefetch_distance = 8 }; /* chunk: hashes per find_many, on the stack */
    uint64_t hashes[chunk], heads[chunk];
    uint8_t stack[FL_KV_STACK_RECORD_BYTES];
    const char *key = keys;
    uint64_t used = 0, missing = 0;
    *missing_count_out = 0;
    if (error != NULL) error->message[0] = 0;
    for (size_t base = 0; base < count; base += chunk) {
        size_t n = count - base < chunk ? count - base : chunk;
        fl_kv_hash_many(kv, key, key_sizes + base, n, hashes);
        uint64_t floor = fl_kv_load_floor(kv); /* before the lookups: see struct fl_kv */
        fl_index_find_many(kv->index, hashes, n, heads);
        for (size_t j = 0; j < n && j < prefetch_distance; j++) prefetch_record(kv, heads[j]);
        for (size_t j = 0; j < n; j++) {
            if (j + prefetch_distance < n) prefetch_record(kv, heads[j + prefetch_distance]);
            size_t i = base + j;
            uint32_t key_size = key_sizes[i];
            int rc = 0;
            fl_kv_record record;
            found_value found;
            if (heads[j] != 0)
                rc = walk_chain(kv, heads[j], floor, hashes[j], (const uint8_t *)key, key_size,
                                stack, &record, &found, error);
            if (rc < 0) return rc;
            if (rc == 1 && found.size > capacity - used) {
                fl_kv_record_release(&record);
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
                fl_kv_record_release(&record);
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

/* ------------------------------------------------------------------ full-log passes */

void fl_kv_scan_buffers_free(fl_kv_scan_buffers *scan) {
    free(scan->data);
    free(scan->addresses);
    free(scan->offsets);
    free(scan->sizes);
    memset(scan, 0, sizeof *scan);
}

int fl_kv_scan_buffers_alloc(const fl_kv *kv, fl_kv_scan_buffers *scan) {
    scan->capacity = (size_t)kv->entry_size_max + 64;
    if (scan->capacity < (4u << 20)) scan->capacity = 4u << 20;
    scan->data = malloc(scan->capacity);
    scan->addresses = malloc(FL_KV_SCAN_ENTRIES_MAX * sizeof(uint64_t));
    scan->offsets = malloc(FL_KV_SCAN_ENTRIES_MAX * sizeof(uint32_t));
    scan->sizes = malloc(FL_KV_SCAN_ENTRIES_MAX * sizeof(uint32_t));
    if (scan->data && scan->addresses && scan->offsets && scan->sizes) return 0;
    fl_kv_scan_buffers_free(scan);
    return FL_E_NOMEM;
}
