/* The write side of kvlayer's hot paths: growing the index (records read back through the
 * core to split chains), batched writes (one record per index chain, or a linked run of them
 * when one would pass entry_size_max; rule 3 of fl_kv_internal.h) and replay at open. All of them are the index's one writer: the caller
 * serializes them. */
#include "fl_kv_internal.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ grow */

typedef struct resolve_context {
    fl_kv *kv;
    fl_error_info *error;
} resolve_context;

/* fl_index_resolve_fn over the log: the hashes of a record and its previous address. */
static int resolve_record(void *context, uint64_t address, uint64_t *hashes_out,
                          uint32_t capacity, uint64_t *previous_address_out) {
    resolve_context *resolve = context;
    if (address < fl_kv_load_floor(resolve->kv)) {
        *previous_address_out = 0; /* compacted away: the chain ends (store.py rule 6) */
        return 0;
    }
    uint8_t stack[FL_KV_STACK_RECORD_BYTES];
    fl_kv_record record;
    int rc = fl_kv_read_record(resolve->kv, address, stack, &record, resolve->error);
    if (rc < 0) return rc;
    fl_kv_record_view view;
    rc = fl_kv_record_open(record.data, record.size, address, &view, resolve->error);
    fl_kv_op_view op;
    uint32_t count = 0;
    while (rc == 0 && (rc = fl_kv_record_next(&view, address, &op, resolve->error)) == 1) {
        rc = 0;
        if (count < capacity) hashes_out[count] = op.hash;
        count++;
    }
    fl_kv_record_release(&record);
    if (rc < 0) return rc;
    *previous_address_out = view.previous;
    return (int)count;
}

uint32_t fl_kv_index_bits(fl_index *index) {
    fl_index_stats stats;
    fl_index_get_stats(index, &stats);
    return stats.buckets_count_log2;
}

int fl_kv_grow(fl_kv *kv, uint32_t buckets_count_log2_min, int32_t if_loaded,
               fl_error_info *error) {
    resolve_context context = {kv, error};
    if (buckets_count_log2_min > FL_INDEX_BUCKETS_COUNT_LOG2_MAX) return FL_E_SETTINGS;
    while (fl_kv_index_bits(kv->index) < buckets_count_log2_min) {
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

/* One fl_kv_write call: its input, and its working arrays in one scratch allocation. A key is
 * an input operation; the distinct keys (each with its last value) are `d`; the groups, one per
 * index chain the batch touches and one record each, are `g`. */
typedef struct write_batch {
    const char *keys;
    const uint32_t *key_sizes;
    const char *values;
    const uint32_t *value_sizes;
    size_t count;
    uint64_t table_size;          /* open-addressing tables: a power of two, at least 2 x count */
    uint8_t *scratch;
    uint64_t *hashes;             /* per input */
    uint64_t *key_offsets;        /* per input, into keys */
    uint64_t *value_offsets;      /* per input, into values */
    uint64_t *heads;              /* per group: the chain's head before this batch */
    uint32_t *winner;             /* per distinct key: the input whose value wins (the last) */
    uint32_t *distinct;           /* per distinct key: its first input */
    uint32_t *group_of;           /* per distinct key: its group */
    uint32_t *group_first;        /* per group: its first member (a distinct key) */
    uint32_t *member_next;        /* per distinct key: the next member of its group + 1, or 0 */
    uint32_t *key_table;          /* distinct key + 1, by hash */
    uint32_t *chain_table;        /* group + 1, by chain */
    uint32_t distinct_count;
    uint32_t groups_count;
    uint32_t index_bits;          /* the index size the records are written with */
    int64_t live_change;
    /* The records, in group order: one per group unless a group's operations pass
     * entry_size_max together, then several, each linked to the one before (batch_measure). */
    uint32_t records_count;
    uint8_t *record_scratch;      /* one allocation for the per-record arrays */
    uint32_t *record_sizes;
    uint32_t *record_group;
    uint32_t *record_first;       /* its first member (a distinct key) + 1 */
    uint32_t *record_ops;         /* its members: record_first and the next ones of its group */
    uint32_t *record_links;       /* the record before it in its chain + 1, or 0 (the head) */
    uint32_t *record_link_offsets;
    uint64_t total_bytes;
} write_batch;

static int batch_alloc(fl_kv *kv, write_batch *b) {
    uint64_t count = b->count;
    b->table_size = table_size_for(count);
    /* One allocation for the scratch arrays: per input op, then per distinct op, then tables. */
    size_t scratch_bytes = count * (sizeof(uint64_t) * 4 + sizeof(uint32_t) * 5) +
                           b->table_size * sizeof(uint32_t) * 2;
    b->scratch = malloc(scratch_bytes);
    if (b->scratch == NULL) return FL_E_NOMEM;
    b->hashes = (uint64_t *)b->scratch;
    b->key_offsets = b->hashes + count;
    b->value_offsets = b->key_offsets + count;
    b->heads = b->value_offsets + count;
    b->winner = (uint32_t *)(b->heads + count);
    b->distinct = b->winner + count;
    b->group_of = b->distinct + count;
    b->group_first = b->group_of + count;
    b->member_next = b->group_first + count;
    b->key_table = b->member_next + count;
    b->chain_table = b->key_table + b->table_size;
    memset(b->key_table, 0, b->table_size * sizeof(uint32_t) * 2);
    uint64_t key_offset = 0, value_offset = 0;
    for (size_t i = 0; i < count; i++) {
        b->key_offsets[i] = key_offset;
        b->value_offsets[i] = value_offset;
        key_offset += b->key_sizes[i];
        if (b->value_sizes[i] != FL_KV_VALUE_DELETE) value_offset += b->value_sizes[i];
    }
    fl_kv_hash_many(kv, b->keys, b->key_sizes, count, b->hashes);
    return 0;
}

/* Distinct keys in first-occurrence order, each with its last value. */
static void batch_find_distinct(write_batch *b) {
    uint64_t table_mask = b->table_size - 1;
    for (size_t i = 0; i < b->count; i++) {
        uint64_t slot = b->hashes[i] & table_mask;
        for (;; slot = (slot + 1) & table_mask) {
            uint32_t d = b->key_table[slot];
            if (d == 0) {
                b->key_table[slot] = b->distinct_count + 1;
                b->distinct[b->distinct_count] = b->winner[b->distinct_count] = (uint32_t)i;
                b->distinct_count++;
                break;
            }
            uint32_t first = b->distinct[d - 1];
            if (b->hashes[first] == b->hashes[i] &&
                keys_equal(b->keys + b->key_offsets[first], b->key_sizes[first],
                           b->keys + b->key_offsets[i], b->key_sizes[i])) {
                b->winner[d - 1] = (uint32_t)i;
                break;
            }
        }
    }
}

/* Liveness before anything is appended (rule 3), and the chains (groups) of the batch. */
static int batch_group(fl_kv *kv, write_batch *b, fl_error_info *error) {
    uint64_t table_mask = b->table_size - 1;
    b->index_bits = fl_kv_index_bits(kv->index);
    uint64_t chain_mask =
        ((UINT64_C(1) << b->index_bits) - 1) | FL_KV_TAG_MASK << FL_KV_TAG_SHIFT;
    for (uint32_t d = 0; d < b->distinct_count; d++) {
        uint32_t i = b->distinct[d];
        uint64_t hash = b->hashes[i];
        if (d + 8 < b->distinct_count) /* independent misses: as in fl_kv_replay */
            fl_index_prefetch(kv->index, b->hashes[b->distinct[d + 8]]);
        uint64_t head = fl_index_find(kv->index, hash);
        int live = fl_kv_is_live(kv, head, hash, (const uint8_t *)b->keys + b->key_offsets[i],
                                 b->key_sizes[i], error);
        if (live < 0) return live;
        b->live_change += (b->value_sizes[b->winner[d]] != FL_KV_VALUE_DELETE) - live;
        uint64_t chain = hash & chain_mask;
        uint64_t slot = (chain * UINT64_C(0x9E3779B97F4A7C15)) >> 32 & table_mask;
        for (;; slot = (slot + 1) & table_mask) {
            uint32_t g = b->chain_table[slot];
            if (g == 0) {
                b->chain_table[slot] = b->groups_count + 1;
                b->group_of[d] = b->groups_count;
                b->group_first[b->groups_count] = d;
                b->heads[b->groups_count] = head;
                b->groups_count++;
                break;
            }
            if ((b->hashes[b->distinct[b->group_first[g - 1]]] & chain_mask) == chain) {
                b->group_of[d] = g - 1;
                break;
            }
        }
    }
    /* Link each group's members in order: walk backwards so each points at the next. */
    uint32_t *last_seen = b->key_table; /* reused: group -> next member seen so far + 1 */
    memset(last_seen, 0, sizeof(uint32_t) * b->groups_count);
    for (uint32_t d = b->distinct_count; d-- > 0;) {
        b->member_next[d] = last_seen[b->group_of[d]];
        last_seen[b->group_of[d]] = d + 1;
    }
    return 0;
}

/* Starts record r of group g at member d (+ 1), linked to record r - 1 when it continues
 * the group's chain. */
static void record_start(write_batch *b, uint32_t r, uint32_t g, uint32_t d, int continues) {
    b->record_group[r] = g;
    b->record_first[r] = d;
    b->record_ops[r] = 0;
    b->record_sizes[r] = FL_KV_RECORD_HEADER_SIZE_BYTES;
    b->record_links[r] = continues ? r : 0; /* record r - 1, + 1 */
    b->record_link_offsets[r] = FL_KV_RECORD_PREVIOUS_OFFSET;
}

/* The records and their sizes: each group's members in order, a new record of the same chain
 * whenever the next member would take the record past entry_size_max (the keys of a batch are
 * distinct, so which record of the chain holds a key does not matter to reads). FL_E_TOO_LARGE
 * (size_needed) only for one operation that passes it alone. At most one record per distinct
 * key, so the arrays hold distinct_count records. */
static int batch_measure(fl_kv *kv, write_batch *b, fl_error_info *error) {
    size_t capacity = b->distinct_count;
    b->record_scratch = malloc(sizeof(uint32_t) * 6 * capacity);
    if (b->record_scratch == NULL) return FL_E_NOMEM;
    uint32_t *arrays = (uint32_t *)b->record_scratch;
    b->record_sizes = arrays;
    b->record_group = arrays + capacity;
    b->record_first = arrays + 2 * capacity;
    b->record_ops = arrays + 3 * capacity;
    b->record_links = arrays + 4 * capacity;
    b->record_link_offsets = arrays + 5 * capacity;
    uint32_t r = 0;
    for (uint32_t g = 0; g < b->groups_count; g++) {
        record_start(b, r, g, b->group_first[g] + 1, 0);
        for (uint32_t d = b->group_first[g] + 1; d != 0; d = b->member_next[d - 1]) {
            uint32_t w = b->winner[d - 1];
            uint64_t op_size = FL_KV_OP_HEADER_SIZE_BYTES + (uint64_t)b->key_sizes[w] +
                               (b->value_sizes[w] == FL_KV_VALUE_DELETE ? 0 : b->value_sizes[w]);
            if (FL_KV_RECORD_HEADER_SIZE_BYTES + op_size > kv->entry_size_max) {
                if (error != NULL) error->size_needed = FL_KV_RECORD_HEADER_SIZE_BYTES + op_size;
                return FL_E_TOO_LARGE;
            }
            if (b->record_ops[r] > 0 && b->record_sizes[r] + op_size > kv->entry_size_max) {
                b->total_bytes += b->record_sizes[r];
                r++;
                assert(r < capacity);
                record_start(b, r, g, d, 1);
            }
            b->record_sizes[r] += (uint32_t)op_size;
            b->record_ops[r]++;
        }
        b->total_bytes += b->record_sizes[r];
        r++;
    }
    b->records_count = r;
    return 0;
}

/* The records (kvlayer/FORMAT.md "KV records"), each a run of its group's members in
 * first-occurrence order. A record that continues a chain gets the address of the record
 * before it from the core at placement (its previous_address is 0 here). */
static void batch_encode(const write_batch *b, uint8_t *data) {
    uint8_t *out = data;
    for (uint32_t r = 0; r < b->records_count; r++) {
        uint32_t ops = b->record_ops[r];
        /* At most FL_KV_BATCH_OPS_MAX distinct keys (fl_kv_write): the u16 field holds them. */
        assert(ops >= 1 && ops <= FL_KV_BATCH_OPS_MAX);
        uint8_t *record = out;
        out[FL_KV_RECORD_VERSION_OFFSET] = FL_KV_RECORD_VERSION;
        out[FL_KV_RECORD_INDEX_BITS_OFFSET] = (uint8_t)b->index_bits;
        fl_kv_store16(out + FL_KV_RECORD_OPS_COUNT_OFFSET, ops);
        fl_kv_store64(out + FL_KV_RECORD_PREVIOUS_OFFSET,
                      b->record_links[r] ? 0 : b->heads[b->record_group[r]]);
        out += FL_KV_RECORD_HEADER_SIZE_BYTES;
        uint32_t d = b->record_first[r];
        for (uint32_t k = 0; k < ops; k++, d = b->member_next[d - 1]) {
            assert(d != 0);
            uint32_t w = b->winner[d - 1];
            uint32_t first = b->distinct[d - 1];
            int is_delete = b->value_sizes[w] == FL_KV_VALUE_DELETE;
            uint32_t value_size = is_delete ? 0 : b->value_sizes[w];
            out[FL_KV_OP_KIND_OFFSET] = is_delete ? FL_KV_OP_DELETE : FL_KV_OP_PUT;
            out[FL_KV_OP_RESERVED_OFFSET] = 0;
            fl_kv_store16(out + FL_KV_OP_KEY_SIZE_OFFSET, b->key_sizes[first]);
            fl_kv_store32(out + FL_KV_OP_VALUE_SIZE_OFFSET, value_size);
            fl_kv_store64(out + FL_KV_OP_HASH_OFFSET, b->hashes[first]);
            out += FL_KV_OP_HEADER_SIZE_BYTES;
            memcpy(out, b->keys + b->key_offsets[first], b->key_sizes[first]);
            out += b->key_sizes[first];
            if (value_size) memcpy(out, b->values + b->value_offsets[w], value_size);
            out += value_size;
        }
        /* The sizes measured are the bytes encoded. */
        assert((uint64_t)(out - record) == b->record_sizes[r]);
    }
    assert((uint64_t)(out - data) == b->total_bytes);
}

/* Encodes and appends the records as one batch (all or nothing), then points each chain's
 * index entry at its newest record, in record order as replay does. */
static int64_t batch_append(fl_kv *kv, write_batch *b, uint64_t *addresses_out) {
    uint8_t *data = malloc(b->total_bytes ? b->total_bytes : 1);
    if (data == NULL) return FL_E_NOMEM;
    batch_encode(b, data);
    int64_t rc = kv->core->append_batch_linked(kv->log, data, b->record_sizes,
                                               b->records_count, b->record_links,
                                               b->record_link_offsets, addresses_out, 1);
    free(data);
    if (rc < 0) return rc;
    for (uint32_t r = 0; r < b->records_count; r++) {
        uint32_t g = b->record_group[r];
        uint64_t head = b->record_links[r] ? addresses_out[r - 1] : b->heads[g];
        if (fl_index_upsert(kv->index, b->hashes[b->distinct[b->group_first[g]]], head,
                            addresses_out[r]) < 0)
            return FL_E_KV_INDEX;
    }
    return 0;
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
    write_batch b = {.keys = keys, .key_sizes = key_sizes, .values = values,
                     .value_sizes = value_sizes, .count = count};
    int64_t rc = batch_alloc(kv, &b);
    if (rc < 0) return rc;
    batch_find_distinct(&b);
    if (b.distinct_count > FL_KV_BATCH_OPS_MAX) {
        if (error != NULL) error->size_needed = b.distinct_count;
        rc = FL_E_KV_BATCH;
    }
    if (rc == 0) rc = batch_group(kv, &b, error);
    if (rc == 0) rc = batch_measure(kv, &b, error);
    if (rc == 0) rc = batch_append(kv, &b, addresses_out);
    if (rc == 0) {
        result_out->live_change = b.live_change;
        result_out->records_count = b.records_count;
        result_out->bytes_count = b.total_bytes;
        rc = fl_kv_grow(kv, 0, 1, error);
        if (rc == 0) rc = b.records_count;
    }
    free(b.record_scratch);
    free(b.scratch);
    return rc;
}

/* ------------------------------------------------------------------ replay */

/* Applies one record at `address` (kvlayer rule 2): grow to its index size, every liveness
 * check, then the upserts (operations sharing a chain share one entry). */
static int replay_record(fl_kv *kv, uint64_t address, const uint8_t *payload, uint32_t size,
                         int64_t *live_change, fl_error_info *error) {
    fl_kv_record_view view;
    int rc = fl_kv_record_open(payload, size, address, &view, error);
    if (rc < 0) return rc;
    if (view.index_bits > fl_kv_index_bits(kv->index)) {
        rc = fl_kv_grow(kv, view.index_bits, 0, error);
        if (rc < 0) return rc;
    }
    fl_kv_op_view op;
    fl_kv_record_view again = view;
    while ((rc = fl_kv_record_next(&view, address, &op, error)) == 1) {
        uint64_t head = fl_index_find(kv->index, op.hash);
        int live = fl_kv_is_live(kv, head, op.hash, op.key, op.key_size, error);
        if (live < 0) return live;
        *live_change += (op.kind == FL_KV_OP_PUT) - live;
    }
    if (rc < 0) return rc;
    while (fl_kv_record_next(&again, address, &op, error) == 1) {
        uint64_t head = fl_index_find(kv->index, op.hash);
        if (head == address) continue;
        if (fl_index_upsert(kv->index, op.hash, head, address) < 0) return FL_E_KV_INDEX;
    }
    return 0;
}

int fl_kv_replay(fl_kv *kv, uint64_t from_address, uint64_t until_address,
                 fl_kv_replay_result *result_out, fl_error_info *error) {
    memset(result_out, 0, sizeof *result_out);
    result_out->next_address = from_address;
    if (error != NULL) error->message[0] = 0;
    fl_kv_scan_buffers scan;
    int rc = fl_kv_scan_buffers_alloc(kv, &scan);
    uint8_t *buffer = scan.data;
    uint64_t *addresses = scan.addresses;
    uint32_t *offsets = scan.offsets, *sizes = scan.sizes;
    uint64_t position = from_address;
    while (rc == 0 && position < until_address) {
        uint64_t next = position;
        int64_t count = kv->core->scan(kv->log, position, until_address, 0, buffer,
                                       scan.capacity, addresses, offsets, sizes, NULL,
                                       FL_KV_SCAN_ENTRIES_MAX, &next, error);
        if (count < 0) {
            rc = (int)count;
            break;
        }
        /* The index lookups of a replay are independent cache misses: ask for the bucket of
         * each record's first operation a few records ahead (a malformed record only costs a
         * useless prefetch: fl_kv_record_open rejects it). */
        enum { prefetch_distance = 8, first_hash = FL_KV_RECORD_HEADER_SIZE_BYTES +
                                                  FL_KV_OP_HASH_OFFSET };
        for (int64_t i = 0; i < count && rc == 0; i++) {
            if (i + prefetch_distance < count && sizes[i + prefetch_distance] >= first_hash + 8)
                fl_index_prefetch(kv->index, fl_kv_load64(buffer + offsets[i + prefetch_distance] +
                                                          first_hash));
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
    fl_kv_scan_buffers_free(&scan);
    return rc;
}
