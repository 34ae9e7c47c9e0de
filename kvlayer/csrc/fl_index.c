/* The hash index: FASTER's design, from 64-bit key hashes to the newest log address of a chain.
 *
 * Layout. The table is an array of 64-byte buckets (one cache line each), every bucket 7 key
 * entries and 1 overflow link. A key entry is one 64-bit word:
 *
 *     bits 0..47   address of the newest record of the chain (0: the slot is empty)
 *     bits 48..61  tag: bits 48..61 of the key hash
 *     bit  62      tentative (reserved for a lock-free multi-writer insert; always 0 now)
 *     bit  63      zero
 *
 * The link word holds the id of the next overflow bucket (0: none). Overflow buckets come from
 * a pool of chunks that only grows: chunk c holds 256 << c buckets, so chunks never move and a
 * reader may follow a link while the writer adds chunks. Emptied overflow buckets stay linked
 * (deletes are rare in the KV layer, which writes tombstones instead).
 *
 * Rules and invariants:
 * 1. A bucket chain holds at most one entry per tag: every key whose hash falls in (bucket,
 *    tag) shares that entry, and the records of those keys form one chain through their
 *    previous addresses. So a lookup yields at most one candidate address.
 * 2. One writer at a time. Writers take `writer_mutex` with trylock, so a second writer gets
 *    FL_E_INDEX_BUSY instead of waiting (a waiting writer could deadlock against the GIL, which
 *    the binding keeps during index calls). The writer changes entries with atomic stores and
 *    readers load them atomically: readers and the writer run side by side without a lock.
 * 3. `table` may only change under `table_lock` taken for writing; readers hold it for reading
 *    for the whole lookup, so a table is freed only after its last reader left.
 * 4. Grow builds the doubled table beside the live one while readers keep using the live one,
 *    then swaps the pointer under the write lock: readers wait only for that swap. Entries are
 *    split by walking each chain through the caller's resolver (the index cannot read records):
 *    the new entry for each half points at the newest record of that half. A walk is bounded
 *    (FL_INDEX_SPLIT_WALK_MAX records); past the bound the halves not yet found keep the
 *    address where the walk stopped, a superset that lookups filter by comparing keys. */
#include "fl_kv_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ADDRESS_MASK ((UINT64_C(1) << FL_INDEX_ADDRESS_BITS) - 1)
#define TAG_SHIFT 48
#define TAG_MASK ((UINT64_C(1) << FL_INDEX_TAG_BITS) - 1)
#define OVERFLOW_CHUNK0_LOG2 8
#define OVERFLOW_CHUNKS_MAX 40

_Static_assert(TAG_SHIFT == FL_INDEX_ADDRESS_BITS, "the tag sits right above the address");
_Static_assert(TAG_SHIFT + FL_INDEX_TAG_BITS <= 62, "two flag bits stay free");
_Static_assert(FL_INDEX_BUCKETS_COUNT_LOG2_MAX <= TAG_SHIFT, "bucket bits stay below the tag");

typedef struct fl_index_bucket {
    _Alignas(64) _Atomic uint64_t entries[FL_INDEX_ENTRIES_PER_BUCKET];
    _Atomic uint64_t overflow; /* id of the next overflow bucket, 0 for none */
} fl_index_bucket;

_Static_assert(sizeof(fl_index_bucket) == 64, "a bucket is one cache line");

typedef struct fl_index_table {
    fl_index_bucket *buckets;
    uint64_t buckets_count;
    uint32_t buckets_count_log2;
    fl_index_bucket *overflow_chunks[OVERFLOW_CHUNKS_MAX];
    _Atomic uint64_t overflow_used; /* ids 1..overflow_used were handed out */
    _Atomic uint64_t overflow_memory_bytes;
    _Atomic uint64_t entries_count;
} fl_index_table;

struct fl_index {
    pthread_rwlock_t table_lock;   /* rule 3 */
    pthread_mutex_t writer_mutex;  /* rule 2 */
    fl_index_table *table;
    _Atomic uint64_t grow_count;
    /* Entries that grows added by keeping a long chain in both halves without finding both
     * (rule 4: the bound guessed). They do not count towards the load: otherwise a table of
     * long chains, whose entries double with its buckets, would grow again and again with no
     * insertion in between (until memory ran out: a hypothesis test found it). Entries of
     * chains found to span both halves do count: they are real. */
    _Atomic uint64_t split_extra_count;
};

static uint64_t tag_of(uint64_t hash) { return (hash >> TAG_SHIFT) & TAG_MASK; }
static uint64_t entry_tag(uint64_t entry) { return (entry >> TAG_SHIFT) & TAG_MASK; }
static uint64_t make_entry(uint64_t tag, uint64_t address) { return tag << TAG_SHIFT | address; }

/* ------------------------------------------------------------------ tables */

static void *zeroed_lines(uint64_t size_bytes) {
    void *memory = aligned_alloc(64, size_bytes);
    if (memory != NULL) memset(memory, 0, size_bytes);
    return memory;
}

static fl_index_table *table_create(uint32_t buckets_count_log2) {
    fl_index_table *table = calloc(1, sizeof *table);
    if (table == NULL) return NULL;
    table->buckets_count_log2 = buckets_count_log2;
    table->buckets_count = UINT64_C(1) << buckets_count_log2;
    table->buckets = zeroed_lines(table->buckets_count * sizeof(fl_index_bucket));
    if (table->buckets == NULL) {
        free(table);
        return NULL;
    }
    return table;
}

static void table_free(fl_index_table *table) {
    if (table == NULL) return;
    for (int i = 0; i < OVERFLOW_CHUNKS_MAX; i++) free(table->overflow_chunks[i]);
    free(table->buckets);
    free(table);
}

/* Overflow id n >= 1 lives in chunk c at offset o, where n - 1 + 256 = (256 << c) + o. */
static fl_index_bucket *overflow_bucket(const fl_index_table *table, uint64_t id) {
    uint64_t position = id - 1 + (UINT64_C(1) << OVERFLOW_CHUNK0_LOG2);
    int chunk = 63 - __builtin_clzll(position) - OVERFLOW_CHUNK0_LOG2;
    uint64_t offset = position - (UINT64_C(1) << (chunk + OVERFLOW_CHUNK0_LOG2));
    return &table->overflow_chunks[chunk][offset];
}

/* Writer only. Returns a zeroed overflow bucket's id, or 0 when memory ran out. */
static uint64_t overflow_allocate(fl_index_table *table) {
    uint64_t id = atomic_load_explicit(&table->overflow_used, memory_order_relaxed) + 1;
    uint64_t position = id - 1 + (UINT64_C(1) << OVERFLOW_CHUNK0_LOG2);
    int chunk = 63 - __builtin_clzll(position) - OVERFLOW_CHUNK0_LOG2;
    if (chunk >= OVERFLOW_CHUNKS_MAX) return 0;
    if (table->overflow_chunks[chunk] == NULL) {
        uint64_t size_bytes = (UINT64_C(1) << (chunk + OVERFLOW_CHUNK0_LOG2)) *
                              sizeof(fl_index_bucket);
        fl_index_bucket *memory = zeroed_lines(size_bytes);
        if (memory == NULL) return 0;
        table->overflow_chunks[chunk] = memory;
        atomic_fetch_add(&table->overflow_memory_bytes, size_bytes);
    }
    atomic_store_explicit(&table->overflow_used, id, memory_order_release);
    return id;
}

/* Where a tag's entry is, or (when absent) the first free slot on the chain (NULL if none). */
typedef struct slot_search {
    _Atomic uint64_t *found;
    _Atomic uint64_t *free_slot;
    fl_index_bucket *last; /* the chain's last bucket, to link a new overflow bucket to */
} slot_search;

static slot_search search_chain(const fl_index_table *table, uint64_t hash) {
    slot_search search = {NULL, NULL, NULL};
    uint64_t tag = tag_of(hash);
    fl_index_bucket *bucket = &table->buckets[hash & (table->buckets_count - 1)];
    for (;;) {
        for (int i = 0; i < FL_INDEX_ENTRIES_PER_BUCKET; i++) {
            uint64_t entry = atomic_load_explicit(&bucket->entries[i], memory_order_acquire);
            if (entry == 0) {
                if (search.free_slot == NULL) search.free_slot = &bucket->entries[i];
            } else if (entry_tag(entry) == tag) {
                search.found = &bucket->entries[i];
                return search;
            }
        }
        uint64_t link = atomic_load_explicit(&bucket->overflow, memory_order_acquire);
        if (link == 0) break;
        bucket = overflow_bucket(table, link);
    }
    search.last = bucket;
    return search;
}

static uint64_t find_in(const fl_index_table *table, uint64_t hash) {
    uint64_t tag = tag_of(hash);
    const fl_index_bucket *bucket = &table->buckets[hash & (table->buckets_count - 1)];
    for (;;) {
        for (int i = 0; i < FL_INDEX_ENTRIES_PER_BUCKET; i++) {
            uint64_t entry = atomic_load_explicit(&bucket->entries[i], memory_order_acquire);
            if (entry != 0 && entry_tag(entry) == tag) return entry & ADDRESS_MASK;
        }
        uint64_t link = atomic_load_explicit(&bucket->overflow, memory_order_acquire);
        if (link == 0) return 0;
        bucket = overflow_bucket(table, link);
    }
}

/* Writer only: puts a new entry into the free slot found, or a new overflow bucket. */
static int insert_entry(fl_index_table *table, slot_search *search, uint64_t entry) {
    /* Rule 1: one entry per tag on a chain, so a new one goes only where its tag is absent;
     * and an entry always holds an address (0 is a free slot). */
    assert(search->found == NULL && (entry & ADDRESS_MASK) != 0);
    if (search->free_slot == NULL) {
        assert(search->last != NULL); /* search_chain walked to the chain's end */
        uint64_t id = overflow_allocate(table);
        if (id == 0) return FL_E_NOMEM;
        fl_index_bucket *fresh = overflow_bucket(table, id);
        atomic_store_explicit(&fresh->entries[0], entry, memory_order_relaxed);
        /* Release: a reader that sees the link sees the bucket's contents. */
        atomic_store_explicit(&search->last->overflow, id, memory_order_release);
    } else {
        atomic_store_explicit(search->free_slot, entry, memory_order_release);
    }
    atomic_fetch_add_explicit(&table->entries_count, 1, memory_order_relaxed);
    return 0;
}

/* ------------------------------------------------------------------ public: lifetime, reads */

int fl_index_create(uint32_t buckets_count_log2, fl_index **index_out) {
    *index_out = NULL;
    if (buckets_count_log2 > FL_INDEX_BUCKETS_COUNT_LOG2_MAX) return FL_E_SETTINGS;
    fl_index *index = calloc(1, sizeof *index);
    if (index == NULL) return FL_E_NOMEM;
    index->table = table_create(buckets_count_log2);
    if (index->table == NULL) {
        free(index);
        return FL_E_NOMEM;
    }
    pthread_rwlock_init(&index->table_lock, NULL);
    pthread_mutex_init(&index->writer_mutex, NULL);
    *index_out = index;
    return 0;
}

void fl_index_free(fl_index *index) {
    if (index == NULL) return;
    table_free(index->table);
    pthread_rwlock_destroy(&index->table_lock);
    pthread_mutex_destroy(&index->writer_mutex);
    free(index);
}

uint64_t fl_index_find(fl_index *index, uint64_t hash) {
    pthread_rwlock_rdlock(&index->table_lock);
    uint64_t address = find_in(index->table, hash);
    pthread_rwlock_unlock(&index->table_lock);
    return address;
}

int64_t fl_index_find_many(fl_index *index, const uint64_t *hashes, size_t count,
                           uint64_t *addresses_out) {
    int64_t found_count = 0;
    pthread_rwlock_rdlock(&index->table_lock);
    const fl_index_table *table = index->table;
    uint64_t mask = table->buckets_count - 1;
    /* Prefetch a few buckets ahead: the lookups are independent cache misses, and issuing
     * them early lets the memory system work on several at once. */
    enum { prefetch_distance = 8 };
    for (size_t i = 0; i < count && i < prefetch_distance; i++)
        __builtin_prefetch(&table->buckets[hashes[i] & mask]);
    for (size_t i = 0; i < count; i++) {
        if (i + prefetch_distance < count)
            __builtin_prefetch(&table->buckets[hashes[i + prefetch_distance] & mask]);
        addresses_out[i] = find_in(table, hashes[i]);
        found_count += addresses_out[i] != 0;
    }
    pthread_rwlock_unlock(&index->table_lock);
    return found_count;
}

void fl_index_prefetch(fl_index *index, uint64_t hash) {
    /* Without the table lock: only the index writer calls this (it is the one that swaps
     * tables), and a prefetch is a hint that never faults. */
    const fl_index_table *table = index->table;
    __builtin_prefetch(&table->buckets[hash & (table->buckets_count - 1)]);
}

uint64_t fl_index_count(fl_index *index) {
    pthread_rwlock_rdlock(&index->table_lock);
    uint64_t count = atomic_load(&index->table->entries_count);
    pthread_rwlock_unlock(&index->table_lock);
    return count;
}

void fl_index_get_stats(fl_index *index, fl_index_stats *stats_out) {
    pthread_rwlock_rdlock(&index->table_lock);
    const fl_index_table *table = index->table;
    stats_out->entries_count = atomic_load(&table->entries_count);
    stats_out->buckets_count = table->buckets_count;
    stats_out->buckets_count_log2 = table->buckets_count_log2;
    stats_out->overflow_buckets_count = atomic_load(&table->overflow_used);
    stats_out->memory_bytes = sizeof(fl_index) + sizeof(fl_index_table) +
                              table->buckets_count * sizeof(fl_index_bucket) +
                              atomic_load(&table->overflow_memory_bytes);
    stats_out->grow_count = atomic_load(&index->grow_count);
    pthread_rwlock_unlock(&index->table_lock);
}

uint64_t fl_index_memory_bytes(fl_index *index) {
    fl_index_stats stats;
    fl_index_get_stats(index, &stats);
    return stats.memory_bytes;
}

int fl_index_should_grow(fl_index *index) {
    fl_index_stats stats;
    fl_index_get_stats(index, &stats);
    uint64_t extra = atomic_load(&index->split_extra_count);
    uint64_t load = stats.entries_count > extra ? stats.entries_count - extra : 0;
    return stats.buckets_count_log2 < FL_INDEX_BUCKETS_COUNT_LOG2_MAX &&
           load > stats.buckets_count * FL_INDEX_ENTRIES_PER_BUCKET_GROW;
}

/* ------------------------------------------------------------------ public: writes */

int fl_index_upsert(fl_index *index, uint64_t hash, uint64_t expected_address,
                    uint64_t new_address) {
    if (new_address == 0 || new_address > ADDRESS_MASK || expected_address > ADDRESS_MASK)
        return FL_E_ADDRESS;
    if (pthread_mutex_trylock(&index->writer_mutex) != 0) return FL_E_INDEX_BUSY;
    /* Rule 2: the writer alone swaps `table`, so it reads the pointer without table_lock. */
    fl_index_table *table = index->table;
    slot_search search = search_chain(table, hash);
    int rc = 0;
    if (search.found != NULL) {
        uint64_t current = atomic_load_explicit(search.found, memory_order_relaxed);
        if ((current & ADDRESS_MASK) != expected_address) rc = FL_E_INDEX_CONFLICT;
        else atomic_store_explicit(search.found, make_entry(tag_of(hash), new_address),
                                   memory_order_release);
    } else if (expected_address != 0) {
        rc = FL_E_INDEX_CONFLICT;
    } else {
        rc = insert_entry(table, &search, make_entry(tag_of(hash), new_address));
    }
    pthread_mutex_unlock(&index->writer_mutex);
    return rc;
}

int fl_index_delete(fl_index *index, uint64_t hash, uint64_t expected_address) {
    if (expected_address == 0 || expected_address > ADDRESS_MASK) return FL_E_ADDRESS;
    if (pthread_mutex_trylock(&index->writer_mutex) != 0) return FL_E_INDEX_BUSY;
    fl_index_table *table = index->table;
    slot_search search = search_chain(table, hash);
    int rc = FL_E_INDEX_CONFLICT;
    if (search.found != NULL &&
        (atomic_load_explicit(search.found, memory_order_relaxed) & ADDRESS_MASK) ==
            expected_address) {
        atomic_store_explicit(search.found, 0, memory_order_release);
        atomic_fetch_sub_explicit(&table->entries_count, 1, memory_order_relaxed);
        rc = 0;
    }
    pthread_mutex_unlock(&index->writer_mutex);
    return rc;
}

/* ------------------------------------------------------------------ grow */

/* Finds, for the entry (bucket, tag) -> head of the old table, the newest record of each half
 * of the doubled table (half 0 keeps bucket `bucket`, half 1 moves to bucket + old count).
 * heads_out[h] is 0 when the chain holds no record of half h. *guessed_out counts the halves
 * given an address by the bound rather than found (rule 4): possibly entries of no key. */
static int split_chain(const fl_index_table *old, uint64_t bucket, uint64_t tag, uint64_t head,
                       fl_index_resolve_fn resolve, void *context, uint64_t heads_out[2],
                       int *guessed_out) {
    uint64_t hashes[FL_INDEX_RESOLVE_HASHES_MAX];
    uint64_t new_mask = (old->buckets_count << 1) - 1;
    heads_out[0] = heads_out[1] = 0;
    *guessed_out = 0;
    uint64_t address = head;
    for (int walked = 0; address != 0 && (heads_out[0] == 0 || heads_out[1] == 0); walked++) {
        if (walked == FL_INDEX_SPLIT_WALK_MAX) {
            /* Bound reached: the halves not found yet keep the rest of the chain (rule 4). */
            for (int half = 0; half < 2; half++)
                if (heads_out[half] == 0) {
                    heads_out[half] = address;
                    (*guessed_out)++;
                }
            return 0;
        }
        uint64_t previous = 0;
        int count = resolve(context, address, hashes, FL_INDEX_RESOLVE_HASHES_MAX, &previous);
        if (count < 0) return count;
        if (count > FL_INDEX_RESOLVE_HASHES_MAX) {
            /* Some hashes were left out: the record may belong to either half. */
            for (int half = 0; half < 2; half++)
                if (heads_out[half] == 0) {
                    heads_out[half] = address;
                    (*guessed_out)++;
                }
        }
        for (int i = 0; i < count && i < FL_INDEX_RESOLVE_HASHES_MAX; i++) {
            uint64_t new_bucket = hashes[i] & new_mask;
            if (tag_of(hashes[i]) != tag || (new_bucket & (old->buckets_count - 1)) != bucket)
                continue; /* another chain's record, left there by an earlier bounded split */
            int half = new_bucket != bucket;
            if (heads_out[half] == 0) heads_out[half] = address;
        }
        if (previous > ADDRESS_MASK || (previous != 0 && previous >= address))
            return FL_E_CORRUPT; /* chains go strictly backwards */
        address = previous;
    }
    return 0;
}

/* Writer only: appends an entry whose tag is new to `bucket`'s chain in a private table. */
static int place_entry(fl_index_table *table, uint64_t bucket, uint64_t entry) {
    slot_search search = {NULL, NULL, NULL};
    fl_index_bucket *at = &table->buckets[bucket];
    for (;;) {
        for (int i = 0; i < FL_INDEX_ENTRIES_PER_BUCKET && search.free_slot == NULL; i++)
            if (atomic_load_explicit(&at->entries[i], memory_order_relaxed) == 0)
                search.free_slot = &at->entries[i];
        uint64_t link = atomic_load_explicit(&at->overflow, memory_order_relaxed);
        if (search.free_slot != NULL || link == 0) break;
        at = overflow_bucket(table, link);
    }
    search.last = at;
    return insert_entry(table, &search, entry);
}

/* Splits every entry of `bucket`; *guessed_out and *dropped_out add up the halves the bound
 * guessed and the entries that left no half (split_chain). */
static int split_bucket(const fl_index_table *old, fl_index_table *grown, uint64_t bucket,
                        fl_index_resolve_fn resolve, void *context, uint64_t *guessed_out,
                        uint64_t *dropped_out) {
    const fl_index_bucket *at = &old->buckets[bucket];
    for (;;) {
        for (int i = 0; i < FL_INDEX_ENTRIES_PER_BUCKET; i++) {
            uint64_t entry = atomic_load_explicit(&at->entries[i], memory_order_relaxed);
            if (entry == 0) continue;
            uint64_t heads[2];
            uint64_t tag = entry_tag(entry);
            int guessed = 0;
            int rc = split_chain(old, bucket, tag, entry & ADDRESS_MASK, resolve, context, heads,
                                 &guessed);
            /* A guessed half is no load only when the other half holds the chain's keys; with
             * both guessed, one of the two stands for them. */
            *guessed_out += guessed == 2 ? 1 : (uint64_t)guessed;
            *dropped_out += heads[0] == 0 && heads[1] == 0;
            for (int half = 0; rc == 0 && half < 2; half++)
                if (heads[half] != 0)
                    rc = place_entry(grown, bucket + (uint64_t)half * old->buckets_count,
                                     make_entry(tag, heads[half]));
            if (rc < 0) return rc;
        }
        uint64_t link = atomic_load_explicit(&at->overflow, memory_order_relaxed);
        if (link == 0) return 0;
        at = overflow_bucket(old, link);
    }
}

int fl_index_grow(fl_index *index, fl_index_resolve_fn resolve, void *context) {
    if (pthread_mutex_trylock(&index->writer_mutex) != 0) return FL_E_INDEX_BUSY;
    fl_index_table *old = index->table;
    int rc = 0;
    fl_index_table *grown = NULL;
    if (old->buckets_count_log2 >= FL_INDEX_BUCKETS_COUNT_LOG2_MAX) rc = FL_E_SETTINGS;
    if (rc == 0 && (grown = table_create(old->buckets_count_log2 + 1)) == NULL) rc = FL_E_NOMEM;
    uint64_t guessed = 0, dropped = 0;
    for (uint64_t bucket = 0; rc == 0 && bucket < old->buckets_count; bucket++)
        rc = split_bucket(old, grown, bucket, resolve, context, &guessed, &dropped);
    if (rc == 0) {
        pthread_rwlock_wrlock(&index->table_lock);
        index->table = grown;
        pthread_rwlock_unlock(&index->table_lock);
        atomic_fetch_add(&index->grow_count, 1);
        /* Only the halves the bound guessed are not load: a chain found to hold keys of both
         * halves is two real entries. An entry that left no half was such a guess before. */
        uint64_t extra = atomic_load(&index->split_extra_count) + guessed;
        atomic_store(&index->split_extra_count, extra > dropped ? extra - dropped : 0);
        table_free(old);
    } else {
        table_free(grown);
    }
    pthread_mutex_unlock(&index->writer_mutex);
    return rc;
}

/* ------------------------------------------------------------------ cursor scan */

static uint64_t reverse_bits(uint64_t value) {
    uint64_t reversed = 0;
    for (int i = 0; i < 64; i++, value >>= 1) reversed = reversed << 1 | (value & 1);
    return reversed;
}

int64_t fl_index_scan(fl_index *index, uint64_t cursor, uint64_t *pairs_out, size_t capacity,
                      uint64_t *cursor_out, uint32_t *buckets_count_log2_out) {
    pthread_rwlock_rdlock(&index->table_lock);
    const fl_index_table *table = index->table;
    uint64_t mask = table->buckets_count - 1;
    uint64_t bucket_index = cursor & mask;
    const fl_index_bucket *bucket = &table->buckets[bucket_index];
    size_t count = 0;
    for (;;) {
        for (int i = 0; i < FL_INDEX_ENTRIES_PER_BUCKET; i++) {
            uint64_t entry = atomic_load_explicit(&bucket->entries[i], memory_order_acquire);
            if (entry == 0) continue;
            if (count < capacity) {
                pairs_out[2 * count] = bucket_index;
                pairs_out[2 * count + 1] = entry;
            }
            count++;
        }
        uint64_t link = atomic_load_explicit(&bucket->overflow, memory_order_acquire);
        if (link == 0) break;
        bucket = overflow_bucket(table, link);
    }
    *buckets_count_log2_out = table->buckets_count_log2;
    pthread_rwlock_unlock(&index->table_lock);
    if (count > capacity) {
        *cursor_out = count;
        return FL_E_BUFFER;
    }
    /* Redis's reverse-binary increment of the bucket bits: set the bits above the mask, so
     * the increment of the reversed value carries through them into the mask's bits. */
    uint64_t next = reverse_bits(reverse_bits(cursor | ~mask) + 1);
    *cursor_out = next;
    return (int64_t)count;
}

/* ------------------------------------------------------------------ bulk load */

/* Restoring a checkpoint: one call instead of one upsert (and one cffi crossing) per key.
 * Each chain's head becomes the newest address among its entries (kvlayer rule 5). */
int fl_index_load(fl_index *index, const uint64_t *hashes, const uint64_t *words, size_t count,
                  uint64_t address_mask) {
    if (pthread_mutex_trylock(&index->writer_mutex) != 0) return FL_E_INDEX_BUSY;
    fl_index_table *table = index->table;
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        uint64_t address = words[i] & address_mask;
        if (address == 0 || address > ADDRESS_MASK) {
            rc = FL_E_ADDRESS;
            break;
        }
        if (i + 8 < count)
            __builtin_prefetch(&table->buckets[hashes[i + 8] & (table->buckets_count - 1)]);
        slot_search search = search_chain(table, hashes[i]);
        uint64_t entry = make_entry(tag_of(hashes[i]), address);
        if (search.found == NULL) {
            rc = insert_entry(table, &search, entry);
        } else if ((atomic_load_explicit(search.found, memory_order_relaxed) & ADDRESS_MASK) <
                   address) {
            atomic_store_explicit(search.found, entry, memory_order_release);
        }
    }
    pthread_mutex_unlock(&index->writer_mutex);
    return rc;
}
