/* The write path: frames are reserved at the tail of the open page under `mutex`, filled in
 * place, and the page is sealed (padding frame, ready to be written) when the next frame does
 * not fit. A slot is claimed for a new page only once the page it held before is flushed
 * (invariant 3). The common append, room left in the open page, is one lock, one copy and one
 * CRC with the caller's GIL kept. */
#include "fl_internal.h"

#include <errno.h>
#include <string.h>

/* Ends the page the tail is in: the rest becomes a padding frame (or a zero gap shorter than
 * a header) and the page is sealed, ready to be written. */
static void seal_page_locked(fl_log *log) {
    uint64_t tail = log->tail_address;
    uint64_t page = fl_page_of(log, tail);
    uint64_t page_end = (page + 1) * log->page_size_bytes;
    if (tail % log->page_size_bytes != 0 || (tail == page * log->page_size_bytes &&
                                             log->open_page_claimed && log->open_page == page)) {
        uint64_t remaining = page_end - tail;
        /* Invariant 2: the padding goes where no sealed byte is. */
        assert(tail >= log->sealed_until);
        if (remaining >= FL_FRAME_HEADER_SIZE_BYTES) {
            uint8_t *frame = fl_slot_of(log, page) + (tail - page * log->page_size_bytes);
            memset(frame, 0, remaining);
            fl_store32(frame + FL_FRAME_LENGTH_AND_KIND_OFFSET,
                       (uint32_t)FL_KIND_PADDING << FL_FRAME_LENGTH_BITS |
                           (uint32_t)(remaining - FL_FRAME_HEADER_SIZE_BYTES));
            fl_store32(frame + FL_FRAME_EPOCH_OFFSET, log->epoch);
            fl_store32(frame + FL_FRAME_CRC_OFFSET,
                       fl_frame_crc(log->salt, tail, frame, remaining));
        }
        log->tail_address = page_end;
    }
    if (log->sealed_until < log->tail_address) log->sealed_until = log->tail_address;
    /* A sealed page ends at a page end, so its writes end on a sector (invariant 4). */
    assert(log->sealed_until % log->page_size_bytes == 0);
    atomic_store(&log->io_pending, 1);
}

/* Makes the slot for `page` available: its previous page must be flushed first. Returns 0,
 * 1 when it had to wait (the caller re-checks the tail), or a negative code. */
static int claim_page_locked(fl_log *log, uint64_t page, int blocking) {
    int waited = 0;
    while (page >= log->pages_count &&
           log->flushed_until < (page - log->pages_count + 1) * log->page_size_bytes) {
        if (!blocking) return FL_E_FULL;
        int rc = fl_drive_wait_for_flush_locked(log);
        if (rc < 0) return rc;
        if (log->closed) return FL_E_CLOSED;
        waited = 1;
        /* The mutex was let go: another appender may have claimed this page (and filled part
         * of it) or moved on. Claiming again would wipe its frames, so start over. */
        if (fl_page_of(log, log->tail_address) != page ||
            (log->open_page_claimed && log->open_page == page))
            return 1;
    }
    if (page + 1 > log->pages_count) {
        uint64_t head = (page + 1 - log->pages_count) * log->page_size_bytes;
        if (head > log->head_address) log->head_address = head;
    }
    /* Invariant 3: the page this slot held before is wholly flushed. */
    assert(page < log->pages_count ||
           log->flushed_until >= (page - log->pages_count + 1) * log->page_size_bytes);
    memset(fl_slot_of(log, page), 0, log->page_size_bytes);
    fl_open_page_set(log, page);
    if (log->zero_running) pthread_cond_signal(&log->zero_cond);
    return waited;
}

int fl_writable_locked(const fl_log *log) {
    if (log->closed) return FL_E_CLOSED;
    if (log->readonly) return FL_E_READONLY;
    if (log->fenced_error) return FL_E_FENCED;
    if (log->completed) return FL_E_COMPLETED;
    return 0;
}

/* Reserves `frame_size` bytes at the tail of one page. Called with `mutex` held. */
int64_t fl_reserve_locked(fl_log *log, uint64_t frame_size, int blocking, int for_commit) {
    for (;;) {
        int rc = fl_writable_locked(log);
        if (rc == FL_E_COMPLETED && for_commit) rc = 0; /* a commit record still goes in */
        if (rc < 0) return rc;
        uint64_t tail = log->tail_address;
        uint64_t page = fl_page_of(log, tail);
        uint64_t page_end = (page + 1) * log->page_size_bytes;
        if (tail + frame_size > page_end) {
            seal_page_locked(log);
            continue;
        }
        if (!log->open_page_claimed || log->open_page != page) {
            /* Frames that filled the page before exactly left the tail on this page's start
             * without sealing it; unsealed, it is never written, and the claim below would
             * wait for its flush forever (spinning: appends of 16-byte frames into a ring of
             * four pages never returned). */
            if (tail % log->page_size_bytes == 0 && log->sealed_until < tail)
                seal_page_locked(log);
            rc = claim_page_locked(log, page, blocking);
            if (rc < 0) return rc;
            if (rc == 1) continue;
        }
        log->tail_address = tail + frame_size;
        /* Entries never span pages (FORMAT.md): the frame ends in the tail's page. */
        assert(log->tail_address <= page_end);
        return (int64_t)tail;
    }
}

/* Fills one frame in memory: header, payload, zero pad, then the CRC over all of it. */
static inline void fill_frame(const fl_log *log, uint8_t *frame, uint64_t address, uint32_t kind,
                              const void *data, uint64_t size, uint64_t frame_size) {
    assert(kind >= FL_KIND_DATA && kind <= FL_KIND_PADDING && size <= FL_FRAME_LENGTH_MASK);
    assert(frame_size == fl_frame_size(size));
    fl_store32(frame + FL_FRAME_LENGTH_AND_KIND_OFFSET,
               kind << FL_FRAME_LENGTH_BITS | (uint32_t)size);
    fl_store32(frame + FL_FRAME_EPOCH_OFFSET, log->epoch);
    if (size) memcpy(frame + FL_FRAME_HEADER_SIZE_BYTES, data, size);
    memset(frame + FL_FRAME_HEADER_SIZE_BYTES + size, 0,
           frame_size - FL_FRAME_HEADER_SIZE_BYTES - size);
    fl_store32(frame + FL_FRAME_CRC_OFFSET, fl_frame_crc(log->salt, address, frame, frame_size));
}

void fl_write_frame(fl_log *log, uint64_t address, uint32_t kind, const void *data,
                    uint64_t size, uint64_t frame_size) {
    /* Invariant 2: bytes below sealed_until are final. */
    assert(address >= log->sealed_until);
    uint8_t *frame = fl_slot_of(log, fl_page_of(log, address)) + address % log->page_size_bytes;
    fill_frame(log, frame, address, kind, data, size, frame_size);
}

/* The common case of an append: room left in the open page and nothing in the way. Called
 * with `mutex` held; returns 1 with the frame's address in *address_out, or 0 when the caller
 * must take the slow path. */
static inline int append_fast_locked(fl_log *log, uint32_t kind, const void *data,
                                     uint64_t size, uint64_t frame_size, uint64_t *address_out) {
    uint64_t tail = log->tail_address;
    /* No call count here (locking rule 4): all of it runs under `mutex`, which close holds
     * when it frees the ring after setting `closed`; `closing` only sends the append to the
     * slow path, which refuses it once close has begun. */
    if (tail + frame_size > log->open_page_end || log->fenced_error || log->closed ||
        log->completed || fl_closing(log))
        return 0; /* open_page_end is 0 on read-only logs */
    /* Invariant 2: the open page lies at or beyond sealed_until. */
    assert(tail >= log->sealed_until);
    log->tail_address = tail + frame_size;
    fill_frame(log, log->open_slot + (tail - log->open_page_start), tail, kind, data, size,
               frame_size);
    *address_out = tail;
    return 1;
}

static void after_append_locked(fl_log *log) {
    if (log->settings.auto_commit_bytes &&
        log->tail_address - log->committed_until >= log->settings.auto_commit_bytes)
        pthread_cond_signal(&log->auto_commit_cond);
}

static int64_t append_slow(fl_log *log, const void *data, size_t size, int32_t kind,
                           int32_t blocking, uint64_t frame_size) {
    pthread_mutex_lock(&log->mutex);
    int64_t address = fl_reserve_locked(log, frame_size, blocking, 0);
    if (address >= 0) {
        fl_write_frame(log, (uint64_t)address, (uint32_t)kind, data, size, frame_size);
        after_append_locked(log);
    }
    pthread_mutex_unlock(&log->mutex);
    if (atomic_load(&log->io_pending)) fl_drive_io(log);
    return address;
}

int64_t fl_append(fl_log *log, const void *data, size_t size, int32_t kind, int32_t blocking) {
    if (kind != FL_KIND_DATA && kind != FL_KIND_MARKER) return FL_E_ADDRESS;
    if (size > log->entry_size_max) return FL_E_TOO_LARGE;
    uint64_t frame_size = fl_frame_size(size);
    pthread_mutex_lock(&log->mutex);
    uint64_t tail;
    if (append_fast_locked(log, (uint32_t)kind, data, size, frame_size, &tail)) {
        /* It never waits, so the caller keeps the GIL. */
        if (log->settings.auto_commit_bytes) after_append_locked(log);
        pthread_mutex_unlock(&log->mutex);
        return (int64_t)tail;
    }
    pthread_mutex_unlock(&log->mutex);
    /* A new page, possibly a wait for memory and a drive of the device: counted in, so close
     * waits for it before it destroys the device (issue 14 defect 1). */
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t address = append_slow(log, data, size, kind, blocking, frame_size);
    fl_blocking_end(token);
    fl_call_exit(log);
    return address;
}

int64_t fl_append_entry(fl_log *log, const char *data, size_t size) {
    return fl_append(log, data, size, FL_KIND_DATA, 1);
}

/* A link names an earlier entry of the same batch (links[i] - 1 < i, 0 for none) and an
 * offset in entry i that has room for its address (u64 little-endian). */
static int links_valid(const uint32_t *sizes, size_t count, const uint32_t *links,
                       const uint32_t *link_offsets) {
    for (size_t i = 0; links != NULL && i < count; i++) {
        if (links[i] == 0) continue;
        if (links[i] - 1 >= i || sizes[i] < sizeof(uint64_t) ||
            link_offsets[i] > sizes[i] - sizeof(uint64_t))
            return 0;
    }
    return 1;
}

/* All or nothing: while a batch is being placed (batches_active > 0), no commit record is
 * placed, even when the batch lets go of the mutex to wait for memory, so no commit can cover
 * part of it. Batches always block for memory. An entry with a link gets the address of the
 * earlier entry it names written into its bytes right before it is placed (and checksummed):
 * the one way to point at an entry of the same batch, whose address is known only here. */
static int64_t append_batch_impl(fl_log *log, const void *data, const uint32_t *sizes,
                                 size_t count, const uint32_t *links,
                                 const uint32_t *link_offsets, uint64_t *addresses_out,
                                 int32_t blocking) {
    for (size_t i = 0; i < count; i++)
        if (sizes[i] > log->entry_size_max) return FL_E_TOO_LARGE;
    if (!links_valid(sizes, count, links, link_offsets)) return -EINVAL;
    pthread_mutex_lock(&log->mutex);
    log->batches_active++;
    const uint8_t *source = data;
    int64_t rc = 0;
    uint64_t first_tail = log->tail_address;
    for (size_t i = 0; i < count; i++) {
        uint64_t frame_size = fl_frame_size(sizes[i]);
        if (links != NULL && links[i] != 0) /* the caller's buffer: fl_append_batch_linked */
            fl_store64((uint8_t *)source + link_offsets[i], addresses_out[links[i] - 1]);
        if (!append_fast_locked(log, FL_KIND_DATA, source, sizes[i], frame_size,
                                &addresses_out[i])) {
            int64_t address = fl_reserve_locked(log, frame_size, blocking, 0);
            if (address < 0) {
                rc = address;
                break;
            }
            fl_write_frame(log, (uint64_t)address, FL_KIND_DATA, source, sizes[i], frame_size);
            addresses_out[i] = (uint64_t)address;
        }
        source += sizes[i];
    }
    if (rc < 0 && log->tail_address != first_tail && !log->fenced_error) {
        /* Close waits for a batch in flight (locking rule 4) and complete waits until no batch
         * is placed, so a blocking batch cannot be cut part-way by either; should anything
         * else cut one, fence so the placed half can never be committed. The caller gets the
         * code that cut it. */
        assert(rc != FL_E_CLOSED && rc != FL_E_COMPLETED);
        fl_fence_locked(log, rc);
    }
    if (rc == 0) after_append_locked(log);
    if (--log->batches_active == 0) pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    if (atomic_load(&log->io_pending)) fl_drive_io(log);
    return rc < 0 ? rc : (int64_t)count;
}

int64_t fl_append_batch(fl_log *log, const void *data, const uint32_t *sizes, size_t count,
                        uint64_t *addresses_out, int32_t blocking) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = append_batch_impl(log, data, sizes, count, NULL, NULL, addresses_out,
                                   blocking);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

int64_t fl_append_batch_linked(fl_log *log, void *data, const uint32_t *sizes, size_t count,
                               const uint32_t *links, const uint32_t *link_offsets,
                               uint64_t *addresses_out, int32_t blocking) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = append_batch_impl(log, data, sizes, count, links, link_offsets,
                                   addresses_out, blocking);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}
