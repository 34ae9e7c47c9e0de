/* Checkpoint snapshots (kvlayer/FORMAT.md "KV checkpoints"): folding the previous snapshot
 * forward with the records written since, and checking a snapshot body read back from disk.
 * The files themselves (header, CRCs, the marker) are written and read by kvlayer/checkpoint.py. */
#include "fl_kv_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct fold_entry {
    uint64_t hash;
    uint64_t word;
    uint64_t sequence; /* log order: of two operations on one hash the later wins */
} fold_entry;

/* The operations since the base, in log order. */
typedef struct fold_operations {
    fold_entry *entries;
    size_t count;
    size_t capacity;
} fold_operations;

__attribute__((weak)) void *fl_kv_blocking_begin(void) { return NULL; }
__attribute__((weak)) void fl_kv_blocking_end(void *token) { (void)token; }

static int fold_entry_compare(const void *a, const void *b) {
    const fold_entry *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->sequence < y->sequence ? 1 : x->sequence > y->sequence ? -1 : 0; /* newest first */
}

static int fold_push(fold_operations *operations, uint64_t hash, uint64_t word) {
    if (operations->count == operations->capacity) {
        size_t grown = operations->capacity ? operations->capacity * 2 : 65536;
        fold_entry *bigger = realloc(operations->entries, grown * sizeof *bigger);
        if (bigger == NULL) return FL_E_NOMEM;
        operations->entries = bigger;
        operations->capacity = grown;
    }
    operations->entries[operations->count] = (fold_entry){hash, word, operations->count};
    operations->count++;
    return 0;
}

/* The operations of the records in [from_address, until_address), checked as replay checks
 * them (rule 1), sorted by hash with the newest first. */
static int64_t fold_collect(fl_kv *kv, uint64_t from_address, uint64_t until_address,
                            fold_operations *operations, fl_error_info *error) {
    fl_kv_scan_buffers scan;
    int64_t rc = fl_kv_scan_buffers_alloc(kv, &scan);
    uint64_t position = from_address;
    while (rc == 0 && position < until_address) {
        uint64_t next = position;
        int64_t count = kv->core->scan(kv->log, position, until_address, 0, scan.data,
                                       scan.capacity, scan.addresses, scan.offsets, scan.sizes,
                                       NULL, FL_KV_SCAN_ENTRIES_MAX, &next, error);
        if (count < 0) {
            rc = count;
            break;
        }
        for (int64_t i = 0; i < count && rc == 0; i++) {
            uint64_t address = scan.addresses[i];
            fl_kv_record_view view;
            fl_kv_op_view op;
            int r = fl_kv_record_open(scan.data + scan.offsets[i], scan.sizes[i], address, &view,
                                      error);
            while (r == 0 && (r = fl_kv_record_next(&view, address, &op, error)) == 1)
                r = fold_push(operations, op.hash,
                              address | (op.kind == FL_KV_OP_DELETE ? FL_KV_ENTRY_DELETED : 0));
            if (r < 0) rc = r;
        }
        if (count == 0 && next == position) break;
        position = next;
    }
    fl_kv_scan_buffers_free(&scan);
    if (rc == 0 && operations->count) {
        void *token = fl_kv_blocking_begin(); /* this call's memory only */
        qsort(operations->entries, operations->count, sizeof *operations->entries,
              fold_entry_compare);
        fl_kv_blocking_end(token);
    }
    return rc;
}

int64_t fl_kv_snapshot_fold(fl_kv *kv, const uint64_t *base_hashes, const uint64_t *base_words,
                            size_t base_count, uint64_t from_address, uint64_t until_address,
                            uint64_t drop_below, uint64_t *hashes_out, uint64_t *words_out,
                            size_t capacity, uint64_t *live_count_out, fl_error_info *error) {
    *live_count_out = 0;
    if (error != NULL) error->message[0] = 0;
    fold_operations news = {0};
    int64_t rc = fold_collect(kv, from_address, until_address, &news, error);
    if (rc < 0) {
        free(news.entries);
        return rc;
    }
    /* Merge the base (sorted, distinct) with the newest operation per hash; an entry below
     * drop_below is a tombstone compaction left behind (a live key's newest record is never
     * below the begin address: store.py rule 6), so it goes. */
    size_t out = 0, b = 0, n = 0;
    uint64_t live = 0;
    void *token = fl_kv_blocking_begin(); /* the merge reads and writes the caller's arrays */
    while (b < base_count || n < news.count) {
        uint64_t hash, word;
        if (n < news.count && (b == base_count || news.entries[n].hash <= base_hashes[b])) {
            hash = news.entries[n].hash;
            word = news.entries[n].word;
            if (b < base_count && base_hashes[b] == hash) b++;
            n++;
            while (n < news.count && news.entries[n].hash == hash) n++; /* older operations */
        } else {
            hash = base_hashes[b];
            word = base_words[b];
            b++;
        }
        if ((word & FL_KV_ENTRY_ADDRESS_MASK) < drop_below) continue;
        if (out == capacity) {
            fl_kv_blocking_end(token);
            free(news.entries);
            return FL_E_BUFFER;
        }
        hashes_out[out] = hash;
        words_out[out] = word;
        live += !(word & FL_KV_ENTRY_DELETED);
        out++;
    }
    fl_kv_blocking_end(token);
    free(news.entries);
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
        uint64_t address = word & FL_KV_ENTRY_ADDRESS_MASK;
        if ((word & ~(FL_KV_ENTRY_ADDRESS_MASK | FL_KV_ENTRY_DELETED)) != 0 ||
            address < FL_FIRST_ADDRESS || address >= position) {
            *bad_index_out = i;
            return FL_E_KV_SNAPSHOT_WORD;
        }
        live += !(word & FL_KV_ENTRY_DELETED);
    }
    return (int64_t)live;
}
