/* The log core: addresses, the page ring, appends, group commit, reads, truncation.
 *
 * Addresses are byte offsets across segment files: address A lives in segment
 * A / segment_size_bytes at file offset A % segment_size_bytes. Memory holds a ring of
 * pages_count pages; page P lives in slot P % pages_count.
 *
 * Invariants (checked by assertions where cheap):
 * 1. FL_FIRST_ADDRESS <= begin <= committed_until <= tail, and
 *    flushed_until <= tail, sealed_until <= tail.
 * 2. Every byte below sealed_until is final in memory: no appender writes there again.
 * 3. A slot is reused for page P only once page P - pages_count is wholly flushed, so a
 *    write in flight never reads from a slot that is being refilled.
 * 4. Writes in flight never overlap: a commit waits for its own writes before it lets go of
 *    the device, and sealed-page writes end at page ends (sector aligned).
 * 5. One commit at a time (commit_active). A commit's record is placed only once the previous
 *    commit's sync finished, so a valid record with number N+2 on disk proves that commit N+1
 *    was synced: recovery uses this to tell damage in committed data from a torn tail.
 * 6. A failed write or sync fences the log; it is never retried (fsyncgate). */
#include "fl_internal.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FL_DEFAULT_PAGE_SIZE_BYTES (4u << 20)
#define FL_DEFAULT_MEMORY_SIZE_BYTES (16u << 20)
#define FL_DEFAULT_SEGMENT_SIZE_BYTES (1ull << 30)
#define FL_PAGES_COUNT_MAX 65536
#define FL_HUGE_PAGE_BYTES (2u << 20)
/* Scans with at least this much left ask the kernel to read ahead, up to FL_READAHEAD_BYTES. */
#define FL_READAHEAD_MIN_BYTES (1u << 20)
#define FL_READAHEAD_BYTES (64u << 20)

/* ------------------------------------------------------------------ device driving */

static void signal_commit_event(fl_log *log);

static void fence_locked(fl_log *log, int error) {
    if (log->fenced_error == 0) log->fenced_error = error;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_cond_broadcast(&log->flush_cond);
    /* Event-loop waiters (commit_eventfd) learn of the fence too: a commit that failed in the
     * auto-commit thread has no caller to tell. */
    signal_commit_event(log);
}

static int reap_io_locked(fl_log *log, uint32_t wait_count) {
    fl_completion done[FL_INFLIGHT_MAX];
    int count = fl_device_reap(&log->device, done, FL_INFLIGHT_MAX, wait_count);
    int error = count < 0 ? count : 0;
    for (int i = 0; i < count; i++) {
        fl_inflight *op = &log->inflight[done[i].tag % FL_INFLIGHT_MAX];
        op->done = 1;
        op->result = done[i].result;
        if (op->is_sync ? op->result < 0 : op->result != (int32_t)op->size_bytes)
            if (error == 0) error = op->result < 0 ? op->result : FL_E_SHORT_WRITE;
    }
    uint64_t flushed = 0;
    while (log->inflight_count > 0 && log->inflight[log->inflight_first].done) {
        fl_inflight *op = &log->inflight[log->inflight_first];
        if (!op->is_sync && op->result == (int32_t)op->size_bytes) flushed = op->end;
        log->inflight_first = (log->inflight_first + 1) % FL_INFLIGHT_MAX;
        log->inflight_count--;
    }
    if (flushed || error) {
        pthread_mutex_lock(&log->mutex);
        if (error) fence_locked(log, error);
        if (flushed > log->flushed_until && !log->fenced_error) log->flushed_until = flushed;
        pthread_cond_broadcast(&log->flush_cond);
        pthread_mutex_unlock(&log->mutex);
    }
    return error;
}

static int inflight_push(fl_log *log, uint64_t start, uint64_t end, uint64_t size, int is_sync,
                         uint64_t *tag) {
    while (log->inflight_count >= FL_INFLIGHT_MAX - 1) {
        int rc = reap_io_locked(log, 1);
        if (rc < 0) return rc;
    }
    uint32_t index = (log->inflight_first + log->inflight_count) % FL_INFLIGHT_MAX;
    fl_inflight *op = &log->inflight[index];
    op->start = start;
    op->end = end;
    op->size_bytes = size;
    op->result = 0;
    op->done = 0;
    op->is_sync = is_sync;
    log->inflight_count++;
    *tag = index;
    return 0;
}

/* ------------------------------------------------------------------ preallocation
 *
 * ext4 and XFS allocate fallocate()d space as "unwritten" extents: the first write into one
 * must also convert it, and the fdatasync after it then commits a journal transaction. On this
 * kind of machine that doubles the cost of a commit (about 390 µs instead of 200 µs for
 * 112 KiB). So a background thread writes zeros ahead of the tail, always beyond the page the
 * tail is in, and a log write into a range being zeroed waits for that zero write to finish
 * (the two must never be in flight together, or the zeros could land last). */

static void zero_wait(fl_log *log, uint64_t start, uint64_t end) {
    pthread_mutex_lock(&log->mutex);
    while (log->zeroing_start < end && start < log->zeroing_end)
        pthread_cond_wait(&log->zero_cond, &log->mutex);
    pthread_mutex_unlock(&log->mutex);
}

static void *zero_main(void *argument) {
    fl_log *log = argument;
    uint8_t *zeros = NULL;
    if (posix_memalign((void **)&zeros, FL_SECTOR_SIZE_BYTES, FL_ZERO_CHUNK_BYTES) != 0)
        return NULL;
    memset(zeros, 0, FL_ZERO_CHUNK_BYTES);
    pthread_mutex_lock(&log->mutex);
    while (log->zero_running) {
        uint64_t floor = (fl_page_of(log, log->tail_address) + 1) * log->page_size_bytes;
        if (log->zeroed_until < floor) log->zeroed_until = floor;
        uint64_t target = floor + log->zero_ahead_bytes;
        if (log->zeroed_until >= target || log->fenced_error) {
            pthread_cond_wait(&log->zero_cond, &log->mutex);
            continue;
        }
        uint64_t start = log->zeroed_until;
        uint64_t segment = start / log->segment_size_bytes;
        uint64_t end = start + FL_ZERO_CHUNK_BYTES;
        if (end > target) end = target;
        if (end > (segment + 1) * log->segment_size_bytes) end = (segment + 1) * log->segment_size_bytes;
        log->zeroing_start = start;
        log->zeroing_end = end;
        pthread_mutex_unlock(&log->mutex);
        int write_fd, read_fd;
        int rc = fl_segment_fds(log, segment, 1, &write_fd, &read_fd);
        if (rc == 0 && fl_io_pwrite(write_fd, zeros, (size_t)(end - start),
                                    start % log->segment_size_bytes, 1) != (ssize_t)(end - start))
            rc = -EIO;
        pthread_mutex_lock(&log->mutex);
        log->zeroing_start = log->zeroing_end = 0;
        /* A failure here costs only speed (later writes convert extents themselves); a full
         * disk was already ruled out by fallocate. Stop preallocating. */
        if (rc < 0) log->zero_running = 0;
        else log->zeroed_until = end;
        pthread_cond_broadcast(&log->zero_cond);
    }
    pthread_mutex_unlock(&log->mutex);
    free(zeros);
    return NULL;
}

static void zero_stop(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int was_started = log->zero_thread != 0;
    log->zero_running = 0;
    pthread_cond_broadcast(&log->zero_cond);
    pthread_mutex_unlock(&log->mutex);
    if (was_started) pthread_join(log->zero_thread, NULL);
    log->zero_thread = 0;
}

/* Queues writes for [submitted_until, until), one per page, in sector-aligned pieces. */
static int queue_writes_io_locked(fl_log *log, uint64_t until, int link, int dsync) {
    while (log->submitted_until < until) {
        uint64_t start = log->submitted_until;
        uint64_t page = fl_page_of(log, start);
        uint64_t page_start = page * log->page_size_bytes;
        uint64_t end = page_start + log->page_size_bytes;
        if (end > until) end = until;
        uint64_t write_start = FL_ALIGN_DOWN(start, FL_SECTOR_SIZE_BYTES);
        uint64_t write_end = FL_ALIGN_UP(end, FL_SECTOR_SIZE_BYTES);
        uint64_t segment = write_start / log->segment_size_bytes;
        int write_fd, read_fd;
        int rc = fl_segment_fds(log, segment, 1, &write_fd, &read_fd);
        if (rc < 0) return rc;
        zero_wait(log, write_start, write_end);
        uint64_t tag;
        rc = inflight_push(log, start, end, write_end - write_start, 0, &tag);
        if (rc < 0) return rc;
        rc = fl_device_write(&log->device, write_fd, fl_slot_of(log, page) + (write_start - page_start),
                             write_end - write_start, write_start % log->segment_size_bytes, tag,
                             link, dsync);
        if (rc < 0) return rc;
        log->segments[segment - log->segments_base].dirty = 1;
        log->submitted_until = end;
    }
    return 0;
}

/* Submits the writes of sealed pages without waiting for them. */
static int submit_sealed_io_locked(fl_log *log) {
    atomic_store(&log->io_pending, 0);
    pthread_mutex_lock(&log->mutex);
    uint64_t sealed = log->sealed_until;
    pthread_mutex_unlock(&log->mutex);
    int rc = queue_writes_io_locked(log, sealed, 0, 0);
    if (rc == 0) rc = fl_device_submit(&log->device);
    if (rc == 0 && log->inflight_count > 0) rc = reap_io_locked(log, 0);
    return rc;
}

/* Starts writes of sealed pages if no other thread is driving the device; the thread that is
 * driving it checks io_pending before it lets go, so no sealed page is left behind. */
static void drive_io(fl_log *log) {
    while (atomic_load(&log->io_pending)) {
        if (pthread_mutex_trylock(&log->io_mutex) != 0) return;
        int rc = submit_sealed_io_locked(log);
        pthread_mutex_unlock(&log->io_mutex);
        if (rc < 0) {
            pthread_mutex_lock(&log->mutex);
            fence_locked(log, rc);
            pthread_mutex_unlock(&log->mutex);
            return;
        }
    }
}

/* Waits for one write to finish so a memory slot can be reused. Called with `mutex` held;
 * lets go of it while waiting. */
static int wait_for_flush_locked(fl_log *log) {
    pthread_mutex_unlock(&log->mutex);
    pthread_mutex_lock(&log->io_mutex);
    int rc = submit_sealed_io_locked(log);
    if (rc == 0 && log->inflight_count > 0) rc = reap_io_locked(log, 1);
    pthread_mutex_unlock(&log->io_mutex);
    pthread_mutex_lock(&log->mutex);
    if (rc < 0) fence_locked(log, rc);
    return log->fenced_error ? FL_E_FENCED : 0;
}

/* ------------------------------------------------------------------ appends */

/* Ends the page the tail is in: the rest becomes a padding frame (or a zero gap shorter than
 * a header) and the page is sealed, ready to be written. */
static void seal_page_locked(fl_log *log) {
    uint64_t tail = log->tail_address;
    uint64_t page = fl_page_of(log, tail);
    uint64_t page_end = (page + 1) * log->page_size_bytes;
    if (tail % log->page_size_bytes != 0 || (tail == page * log->page_size_bytes &&
                                             log->open_page_claimed && log->open_page == page)) {
        uint64_t remaining = page_end - tail;
        if (remaining >= FL_FRAME_HEADER_SIZE_BYTES) {
            uint8_t *frame = fl_slot_of(log, page) + (tail - page * log->page_size_bytes);
            memset(frame, 0, remaining);
            fl_store32(frame + 4, (uint32_t)FL_KIND_PADDING << FL_FRAME_LENGTH_BITS |
                                      (uint32_t)(remaining - FL_FRAME_HEADER_SIZE_BYTES));
            fl_store32(frame + 8, log->epoch);
            fl_store32(frame, fl_frame_crc(log->salt, tail, frame, remaining));
        }
        log->tail_address = page_end;
    }
    if (log->sealed_until < log->tail_address) log->sealed_until = log->tail_address;
    atomic_store(&log->io_pending, 1);
}

/* Makes the slot for `page` available: its previous page must be flushed first. Returns 0,
 * 1 when it had to wait (the caller re-checks the tail), or a negative code. */
static int claim_page_locked(fl_log *log, uint64_t page, int blocking) {
    int waited = 0;
    while (page >= log->pages_count &&
           log->flushed_until < (page - log->pages_count + 1) * log->page_size_bytes) {
        if (!blocking) return FL_E_FULL;
        int rc = wait_for_flush_locked(log);
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
    memset(fl_slot_of(log, page), 0, log->page_size_bytes);
    fl_open_page_set(log, page);
    if (log->zero_running) pthread_cond_signal(&log->zero_cond);
    return waited;
}

static int writable_locked(const fl_log *log) {
    if (log->closed) return FL_E_CLOSED;
    if (log->readonly) return FL_E_READONLY;
    if (log->fenced_error) return FL_E_FENCED;
    if (log->completed) return FL_E_COMPLETED;
    return 0;
}

/* Reserves `frame_size` bytes at the tail of one page. Called with `mutex` held. */
static int64_t reserve_locked(fl_log *log, uint64_t frame_size, int blocking, int for_commit) {
    for (;;) {
        int rc = writable_locked(log);
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
            rc = claim_page_locked(log, page, blocking);
            if (rc < 0) return rc;
            if (rc == 1) continue;
        }
        log->tail_address = tail + frame_size;
        return (int64_t)tail;
    }
}

/* Fills one frame in memory: header, payload, zero pad, then the CRC over all of it. */
static inline void fill_frame(const fl_log *log, uint8_t *frame, uint64_t address, uint32_t kind,
                              const void *data, uint64_t size, uint64_t frame_size) {
    fl_store32(frame + 4, kind << FL_FRAME_LENGTH_BITS | (uint32_t)size);
    fl_store32(frame + 8, log->epoch);
    if (size) memcpy(frame + FL_FRAME_HEADER_SIZE_BYTES, data, size);
    memset(frame + FL_FRAME_HEADER_SIZE_BYTES + size, 0,
           frame_size - FL_FRAME_HEADER_SIZE_BYTES - size);
    fl_store32(frame, fl_frame_crc(log->salt, address, frame, frame_size));
}

static void write_frame(fl_log *log, uint64_t address, uint32_t kind, const void *data,
                        uint64_t size, uint64_t frame_size) {
    uint8_t *frame = fl_slot_of(log, fl_page_of(log, address)) + address % log->page_size_bytes;
    fill_frame(log, frame, address, kind, data, size, frame_size);
}

/* The common case of an append: room left in the open page and nothing in the way. Called
 * with `mutex` held; returns the address, or -1 when the caller must take the slow path. */
static inline int64_t append_fast_locked(fl_log *log, uint32_t kind, const void *data,
                                         uint64_t size, uint64_t frame_size) {
    uint64_t tail = log->tail_address;
    if (tail + frame_size > log->open_page_end || log->fenced_error || log->closed ||
        log->completed)
        return -1; /* open_page_end is 0 on read-only logs */
    log->tail_address = tail + frame_size;
    fill_frame(log, log->open_slot + (tail - log->open_page_start), tail, kind, data, size,
               frame_size);
    return (int64_t)tail;
}

static void after_append_locked(fl_log *log) {
    if (log->settings.auto_commit_bytes &&
        log->tail_address - log->committed_until >= log->settings.auto_commit_bytes)
        pthread_cond_signal(&log->auto_commit_cond);
}

static int64_t append_slow(fl_log *log, const void *data, size_t size, int32_t kind,
                           int32_t blocking, uint64_t frame_size) {
    pthread_mutex_lock(&log->mutex);
    int64_t address = reserve_locked(log, frame_size, blocking, 0);
    if (address >= 0) {
        write_frame(log, (uint64_t)address, (uint32_t)kind, data, size, frame_size);
        after_append_locked(log);
    }
    pthread_mutex_unlock(&log->mutex);
    if (atomic_load(&log->io_pending)) drive_io(log);
    return address;
}

int64_t fl_append(fl_log *log, const void *data, size_t size, int32_t kind, int32_t blocking) {
    if (kind != FL_KIND_DATA && kind != FL_KIND_MARKER) return FL_E_ADDRESS;
    if (size > log->entry_size_max) return FL_E_TOO_LARGE;
    uint64_t frame_size = fl_frame_size(size);
    pthread_mutex_lock(&log->mutex);
    int64_t address = append_fast_locked(log, (uint32_t)kind, data, size, frame_size);
    if (address >= 0) {
        /* It never waits, so the caller keeps the GIL. */
        if (log->settings.auto_commit_bytes) after_append_locked(log);
        pthread_mutex_unlock(&log->mutex);
        return address;
    }
    pthread_mutex_unlock(&log->mutex);
    /* A new page, possibly a wait for memory: let other threads run meanwhile. */
    void *token = fl_blocking_begin();
    address = append_slow(log, data, size, kind, blocking, frame_size);
    fl_blocking_end(token);
    return address;
}

int64_t fl_append_entry(fl_log *log, const char *data, size_t size) {
    return fl_append(log, data, size, FL_KIND_DATA, 1);
}

/* All or nothing: while a batch is being placed (batches_active > 0), no commit record is
 * placed, even when the batch lets go of the mutex to wait for memory, so no commit can cover
 * part of it. Batches always block for memory. */
static int64_t append_batch_impl(fl_log *log, const void *data, const uint32_t *sizes,
                                 size_t count, uint64_t *addresses_out, int32_t blocking) {
    for (size_t i = 0; i < count; i++)
        if (sizes[i] > log->entry_size_max) return FL_E_TOO_LARGE;
    pthread_mutex_lock(&log->mutex);
    log->batches_active++;
    const uint8_t *source = data;
    int64_t rc = 0;
    uint64_t first_tail = log->tail_address;
    for (size_t i = 0; i < count; i++) {
        uint64_t frame_size = fl_frame_size(sizes[i]);
        int64_t address = append_fast_locked(log, FL_KIND_DATA, source, sizes[i], frame_size);
        if (address < 0) {
            address = reserve_locked(log, frame_size, blocking, 0);
            if (address < 0) {
                rc = address;
                break;
            }
            write_frame(log, (uint64_t)address, FL_KIND_DATA, source, sizes[i], frame_size);
        }
        addresses_out[i] = (uint64_t)address;
        source += sizes[i];
    }
    if (rc < 0 && log->tail_address != first_tail && !log->fenced_error) {
        /* A blocking batch fails part-way only when the log is closed under it; fence so the
         * placed half can never be committed (by close or anyone else). */
        fence_locked(log, rc);
        rc = FL_E_FENCED;
    }
    if (rc == 0) after_append_locked(log);
    if (--log->batches_active == 0) pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    if (atomic_load(&log->io_pending)) drive_io(log);
    return rc < 0 ? rc : (int64_t)count;
}

/* ------------------------------------------------------------------ commit */

/* Writes everything below `until`, then syncs every segment written since its last sync.
 * A commit that is one write carries its own sync (below); otherwise the last writes are
 * linked to the syncs, so with io_uring the rest costs one system call. Older writes (sealed
 * pages) are waited for first so the sync covers them. */
static int flush_and_sync_io_locked(fl_log *log, uint64_t until) {
    int rc = submit_sealed_io_locked(log);
    while (rc == 0 && log->inflight_count > 0) rc = reap_io_locked(log, log->inflight_count);
    if (rc < 0) return rc;
    pthread_rwlock_rdlock(&log->segments_lock);
    uint64_t dirty_count = 0;
    for (uint64_t i = 0; i < log->segments_count; i++) dirty_count += log->segments[i].dirty;
    pthread_rwlock_unlock(&log->segments_lock);
    uint64_t page_end = (fl_page_of(log, log->submitted_until) + 1) * log->page_size_bytes;
    if (dirty_count == 0 && until > log->submitted_until && until <= page_end) {
        /* The usual commit: nothing unsynced but this one write, so the write itself carries
         * the sync (pwritev2 with RWF_DSYNC, one system call), in this thread on both backends
         * (fl_device_write). Through io_uring the same write completes in the kernel's dio
         * workqueue and the linked fdatasync below in an io-wq worker: when every CPU is busy
         * (a loaded server, the benchmark client beside it) the commit waits for those
         * threads to be scheduled. Measured here with two CPU-bound processes running: 25
         * entries 3,980 µs with RWF_DSYNC through io_uring, 121 µs for the write linked to an
         * fdatasync, 112 µs in this thread; and a server syncing on its event loop thread
         * served 50 clients 15% faster this way than through the ring. */
        rc = queue_writes_io_locked(log, until, 0, 1);
        if (rc == 0) rc = fl_device_submit(&log->device);
        while (rc == 0 && log->inflight_count > 0) rc = reap_io_locked(log, log->inflight_count);
        pthread_rwlock_rdlock(&log->segments_lock);
        for (uint64_t i = 0; i < log->segments_count; i++) log->segments[i].dirty = 0;
        pthread_rwlock_unlock(&log->segments_lock);
        return rc;
    }
    rc = queue_writes_io_locked(log, until, 1, 0);
    if (rc < 0) return rc;
    fl_crash_point("after-write-before-sync");
    pthread_rwlock_rdlock(&log->segments_lock);
    dirty_count = 0;
    for (uint64_t i = 0; i < log->segments_count; i++) dirty_count += log->segments[i].dirty;
    for (uint64_t i = 0; i < log->segments_count && rc == 0; i++) {
        fl_segment *entry = &log->segments[i];
        if (!entry->dirty) continue;
        uint64_t tag;
        rc = inflight_push(log, 0, 0, 0, 1, &tag);
        if (rc == 0) rc = fl_device_fsync(&log->device, entry->write_fd, tag, --dirty_count > 0);
        entry->dirty = 0;
    }
    pthread_rwlock_unlock(&log->segments_lock);
    if (rc == 0) rc = fl_device_submit(&log->device);
    while (rc == 0 && log->inflight_count > 0) rc = reap_io_locked(log, log->inflight_count);
    return rc;
}

static void commit_record_write_locked(fl_log *log, uint64_t address, uint64_t frame_size) {
    uint8_t fixed[FL_COMMIT_RECORD_FIXED_SIZE_BYTES + FL_COOKIE_SIZE_MAX_BYTES];
    fl_store64(fixed, log->commit_number + 1);
    fl_store64(fixed + 8, log->begin_address);
    fl_store64(fixed + 16, log->last_commit_address);
    fl_store32(fixed + 24, log->has_cookie ? log->cookie_size : 0xFFFFFFFFu);
    fl_store32(fixed + 28, log->completed ? FL_COMMIT_FLAG_COMPLETED : 0);
    uint32_t cookie_size = log->has_cookie ? log->cookie_size : 0;
    if (cookie_size) memcpy(fixed + FL_COMMIT_RECORD_FIXED_SIZE_BYTES, log->cookie, cookie_size);
    write_frame(log, address, FL_KIND_COMMIT, fixed, FL_COMMIT_RECORD_FIXED_SIZE_BYTES + cookie_size,
                frame_size);
}

static void signal_commit_event(fl_log *log) {
    if (log->event_fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored = write(log->event_fd, &one, sizeof one);
        (void)ignored; /* a full counter already wakes every reader */
    }
}

/* After a commit: record a new recovery start when the log moved to another segment (so
 * recovery scans at most about one segment) or when truncation passed the old one, then delete
 * the segments wholly below the durable begin. The meta file goes first, so it never points
 * into a deleted segment. */
static int after_commit(fl_log *log, uint64_t record_address, uint64_t committed_until,
                        uint64_t commit_number, uint64_t durable_begin) {
    uint64_t segment = record_address / log->segment_size_bytes;
    int moved = segment != log->meta_recovery_start / log->segment_size_bytes ||
                durable_begin > log->meta_recovery_start;
    if (moved) {
        fl_crash_point("after-sync-before-meta");
        fl_meta meta = {
            .salt = log->salt,
            .page_size_bytes = log->page_size_bytes,
            .segment_size_bytes = log->segment_size_bytes,
            .epoch = log->epoch,
            .flags = 0,
            .begin_address = durable_begin,
            .recovery_start_address = record_address,
            .committed_until_address = committed_until,
            .commit_number = commit_number,
        };
        int rc = fl_meta_write(log->directory_fd, &meta);
        if (rc < 0) return rc;
        log->meta_recovery_start = record_address;
        log->meta_committed_until = committed_until;
    }
    uint64_t first_kept = durable_begin / log->segment_size_bytes;
    pthread_rwlock_rdlock(&log->segments_lock);
    int deletable = log->segments_count > 0 && log->segments_base < first_kept;
    pthread_rwlock_unlock(&log->segments_lock);
    if (deletable) fl_segments_delete_below(log, durable_begin);
    return 0;
}

static int64_t commit_impl(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int rc = writable_locked(log);
    if (rc == FL_E_COMPLETED) rc = 0; /* committing what is there is still allowed */
    if (rc < 0) {
        pthread_mutex_unlock(&log->mutex);
        return rc;
    }
    uint64_t target = log->tail_address;
    for (;;) {
        if (log->fenced_error || log->closed) {
            rc = log->closed ? FL_E_CLOSED : FL_E_FENCED;
            pthread_mutex_unlock(&log->mutex);
            return rc;
        }
        if (log->committed_until >= target && !log->commit_record_due) {
            int64_t committed = (int64_t)log->committed_until;
            pthread_mutex_unlock(&log->mutex);
            return committed;
        }
        if (!log->commit_active && log->batches_active == 0) break;
        pthread_cond_wait(&log->commit_cond, &log->mutex);
    }
    log->commit_active = 1;
    uint32_t cookie_size = log->has_cookie ? log->cookie_size : 0;
    uint64_t frame_size = fl_frame_size(FL_COMMIT_RECORD_FIXED_SIZE_BYTES + cookie_size);
    int64_t record = reserve_locked(log, frame_size, 1, 1);
    uint64_t until = log->tail_address;
    uint64_t begin = log->begin_address;
    int record_completes = log->completed;
    if (record >= 0) {
        commit_record_write_locked(log, (uint64_t)record, frame_size);
        log->commit_record_due = 0;
    }
    pthread_mutex_unlock(&log->mutex);

    if (record >= 0) {
        pthread_mutex_lock(&log->io_mutex);
        rc = flush_and_sync_io_locked(log, until);
        pthread_mutex_unlock(&log->io_mutex);
    } else {
        rc = (int)record;
    }

    pthread_mutex_lock(&log->mutex);
    uint64_t number = 0;
    if (rc == 0) {
        assert(until >= log->committed_until);
        log->committed_until = until;
        log->commit_number++;
        number = log->commit_number;
        log->last_commit_address = (uint64_t)record;
        log->durable_begin_address = begin;
        if (record_completes) log->completion_durable = 1;
        signal_commit_event(log);
        fl_shared_publish_locked(log);
    } else if (record >= 0) {
        fence_locked(log, rc);
    }
    pthread_mutex_unlock(&log->mutex);
    if (rc == 0) {
        /* Still the only committer (commit_active), so meta writes never race each other. */
        int meta_rc = after_commit(log, (uint64_t)record, until, number, begin);
        if (meta_rc < 0) {
            pthread_mutex_lock(&log->mutex);
            fence_locked(log, meta_rc);
            pthread_mutex_unlock(&log->mutex);
        }
    }
    pthread_mutex_lock(&log->mutex);
    log->commit_active = 0;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    if (atomic_load(&log->io_pending)) drive_io(log);
    return rc < 0 ? rc : (int64_t)until;
}

int fl_set_cookie(fl_log *log, const void *cookie, size_t size) {
    if (size > FL_COOKIE_SIZE_MAX_BYTES) return FL_E_TOO_LARGE;
    pthread_mutex_lock(&log->mutex);
    int rc = writable_locked(log);
    if (rc == 0) {
        memcpy(log->cookie, cookie, size);
        log->cookie_size = (uint32_t)size;
        log->has_cookie = 1;
        log->commit_record_due = 1;
    }
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

/* Returns the cookie's size (copied when it fits), or -1... FL_E_ADDRESS when there is none. */
int64_t fl_get_cookie(fl_log *log, void *buffer, size_t capacity) {
    pthread_mutex_lock(&log->mutex);
    int64_t rc = log->has_cookie ? (int64_t)log->cookie_size : FL_E_ADDRESS;
    if (rc >= 0 && (size_t)rc <= capacity) memcpy(buffer, log->cookie, (size_t)rc);
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

/* The CLOCK_REALTIME time `timeout_us` from now, as pthread_cond_timedwait takes it. */
static struct timespec deadline_after_us(int64_t timeout_us) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_us / 1000000;
    deadline.tv_nsec += (long)(timeout_us % 1000000) * 1000;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    return deadline;
}

static int wait_for_commit_impl(fl_log *log, uint64_t address, int64_t timeout_us) {
    struct timespec deadline = {0, 0};
    if (timeout_us >= 0) deadline = deadline_after_us(timeout_us);
    pthread_mutex_lock(&log->mutex);
    uint64_t generation = log->wake_generation;
    int rc = log->closed ? FL_E_CLOSED : 0;
    log->waiters_count++;
    while (rc == 0) {
        uint32_t sequence = 0;
        /* Before the shared page is touched: close may be about to unmap it. */
        if (log->closed) { rc = FL_E_CLOSED; break; }
        if (log->readonly) {
            /* Read the sequence before looking, so a publish in between is never missed. */
            sequence = fl_shared_sequence(log);
            fl_shared_refresh_locked(log);
        }
        if (log->committed_until > address) break;
        if (log->closed) { rc = FL_E_CLOSED; break; }
        if (log->fenced_error) { rc = FL_E_FENCED; break; }
        if (log->wake_generation != generation) { rc = FL_E_WOKEN; break; }
        if (log->completion_durable) { rc = FL_E_COMPLETED; break; }
        if (log->readonly && !log->follow_running) {
            pthread_mutex_unlock(&log->mutex);
            int interrupted = fl_shared_wait(log, sequence, timeout_us >= 0 ? &deadline : NULL);
            pthread_mutex_lock(&log->mutex);
            if (interrupted) { rc = FL_E_WOKEN; break; }
        } else if (timeout_us < 0) {
            pthread_cond_wait(&log->commit_cond, &log->mutex);
        } else if (pthread_cond_timedwait(&log->commit_cond, &log->mutex, &deadline) == ETIMEDOUT) {
            rc = log->committed_until > address ? 0 : FL_E_TIMEOUT;
            break;
        }
        if (timeout_us >= 0 && rc == 0 && log->committed_until <= address) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (now.tv_sec > deadline.tv_sec ||
                (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
                if (log->readonly) fl_shared_refresh_locked(log);
                if (log->committed_until <= address) rc = FL_E_TIMEOUT;
            }
        }
    }
    /* The last waiter out lets a waiting close go on (log_shutdown). */
    if (--log->waiters_count == 0 && log->closed) pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

static int commit_eventfd_impl(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int rc = log->closed ? FL_E_CLOSED : 0;
    if (rc == 0 && log->readonly) rc = fl_follow_start_locked(log);
    pthread_mutex_unlock(&log->mutex);
    return rc < 0 ? rc : log->event_fd;
}

void fl_wake(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    log->wake_generation++;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    fl_shared_wake_local(log);
}

static int64_t complete_impl(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int rc = writable_locked(log);
    if (rc == 0) {
        log->completed = 1;
        log->commit_record_due = 1;
    }
    pthread_mutex_unlock(&log->mutex);
    if (rc == FL_E_COMPLETED) rc = 0; /* completing twice is harmless */
    return rc < 0 ? rc : commit_impl(log);
}



/* ------------------------------------------------------------------ reads */

/* Copies log bytes [address, address + size) into `buffer`, from memory when the page is
 * still there, else from the segment file. The range must lie in one page. Returns the bytes
 * copied (a file may end early) or a negative code. */
static int64_t copy_range(fl_log *log, uint64_t address, void *buffer, uint64_t size,
                          int *from_memory, uint64_t read_ahead_bytes) {
    pthread_mutex_lock(&log->mutex);
    if (log->closed) {
        pthread_mutex_unlock(&log->mutex);
        return FL_E_CLOSED;
    }
    uint64_t page = fl_page_of(log, address);
    if (address >= log->head_address && log->open_page_claimed && page <= log->open_page) {
        memcpy(buffer, fl_slot_of(log, page) + address % log->page_size_bytes, size);
        pthread_mutex_unlock(&log->mutex);
        *from_memory = 1;
        return (int64_t)size;
    }
    pthread_mutex_unlock(&log->mutex);
    *from_memory = 0;
    int read_fd;
    int rc = fl_segment_fds(log, address / log->segment_size_bytes, 0, NULL, &read_fd);
    if (rc < 0) return rc;
    uint64_t offset = address % log->segment_size_bytes;
    uint64_t ahead = atomic_load(&log->readahead_until);
    if (read_ahead_bytes > 0 && (address + size > ahead || address + read_ahead_bytes < ahead)) {
        /* A long scan from disk: ask the kernel to read well ahead. It issues those reads
         * asynchronously and many at a time, so the scan is not bound by the latency of one
         * read after another (a racing update of the mark only costs an extra hint). */
        uint64_t length = log->segment_size_bytes - offset;
        if (length > read_ahead_bytes) length = read_ahead_bytes;
        posix_fadvise(read_fd, (off_t)offset, (off_t)length, POSIX_FADV_WILLNEED);
        atomic_store(&log->readahead_until, address + length - length / 4);
    }
    pthread_rwlock_rdlock(&log->segments_lock);
    int64_t got = fl_pread_full(read_fd, buffer, size, offset);
    pthread_rwlock_unlock(&log->segments_lock);
    return got;
}

/* Limits a read or scan: returns 0, or a code with error->address/begin_address set. */
static int check_range_start(fl_log *log, uint64_t address, uint64_t *limit_out,
                             fl_error_info *error) {
    pthread_mutex_lock(&log->mutex);
    int rc = 0;
    if (log->readonly && !log->closed) fl_shared_refresh_locked(log);
    if (log->closed) rc = FL_E_CLOSED;
    else if (address < log->begin_address) rc = FL_E_TRUNCATED;
    else if (address % FL_FRAME_ALIGNMENT_BYTES != 0 || address < FL_FIRST_ADDRESS) rc = FL_E_ADDRESS;
    if (error) {
        error->address = address;
        error->begin_address = log->begin_address;
    }
    *limit_out = log->readonly ? log->committed_until : log->tail_address;
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

/* Decides, after a frame at `address` failed its checks, whether `address` was an entry start
 * (then the frame is corrupt) or not (then the caller passed a bad address), by walking the
 * page's frames from its start. */
static int classify_bad_frame(fl_log *log, uint64_t address, fl_error_info *error) {
    uint64_t page_start = fl_page_of(log, address) * log->page_size_bytes;
    uint64_t position = page_start < FL_FIRST_ADDRESS ? FL_FIRST_ADDRESS : page_start;
    uint8_t *page = malloc(log->page_size_bytes);
    if (page == NULL) return FL_E_NOMEM;
    int from_memory;
    int64_t got = copy_range(log, page_start, page, log->page_size_bytes, &from_memory, 0);
    int rc = FL_E_ADDRESS;
    if (got < 0) rc = (int)got;
    while (got >= 0 && position < address) {
        fl_frame_view view;
        uint64_t offset = position - page_start;
        if (fl_frame_check(log, position, page + offset, (uint64_t)got - offset, &view) < 0) {
            rc = FL_E_CORRUPT;
            address = position;
            break;
        }
        position += view.frame_size;
    }
    if (got >= 0 && position == address) rc = FL_E_CORRUPT;
    free(page);
    if (error) error->address = address;
    return rc;
}

static int64_t read_impl(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                         int32_t *kind_out, fl_error_info *error) {
    uint64_t limit;
    int rc = check_range_start(log, address, &limit, error);
    if (rc < 0) return rc;
    if (address >= limit) return FL_E_ADDRESS;
    uint64_t remaining = log->page_size_bytes - address % log->page_size_bytes;
    uint64_t want = remaining < FL_SECTOR_SIZE_BYTES ? remaining : FL_SECTOR_SIZE_BYTES;
    if (want > limit - address) want = limit - address;
    uint8_t header[FL_SECTOR_SIZE_BYTES];
    uint8_t *frame = header;
    uint8_t *allocated = NULL;
    int from_memory;
    int64_t got = copy_range(log, address, header, want, &from_memory, 0);
    if (got < 0) return got;
    fl_frame_view view;
    rc = fl_frame_check(log, address, header, (uint64_t)got, &view);
    if (rc == FL_E_BUFFER && view.frame_size > (uint64_t)got && view.frame_size <= limit - address) {
        /* A frame longer than the first sector: read it whole. */
        allocated = malloc(view.frame_size);
        if (allocated == NULL) return FL_E_NOMEM;
        frame = allocated;
        got = copy_range(log, address, frame, view.frame_size, &from_memory, 0);
        rc = got < 0 ? (int)got : fl_frame_check(log, address, frame, (uint64_t)got, &view);
    }
    if (rc == 0 && (view.kind == FL_KIND_PADDING || view.kind == 0)) {
        rc = FL_E_ADDRESS; /* a frame start, but not an entry */
    } else if (rc == 0 && view.payload_size > capacity) {
        /* A good frame with no room for it: the kind is known (FasterLog.entry_kind asks
         * this way), the payload is not copied. */
        if (kind_out) *kind_out = (int32_t)view.kind;
        if (error) error->size_needed = view.payload_size;
        free(allocated);
        return FL_E_BUFFER;
    } else if (rc == 0) {
        memcpy(buffer, frame + FL_FRAME_HEADER_SIZE_BYTES, view.payload_size);
    }
    free(allocated);
    if (rc == FL_E_CORRUPT || rc == FL_E_BUFFER) return classify_bad_frame(log, address, error);
    if (rc < 0) return rc;
    if (kind_out) *kind_out = (int32_t)view.kind;
    if (error) error->address = address + view.frame_size;
    return view.payload_size;
}

/* ------------------------------------------------------------------ scans */

#define FL_SCAN_CHUNK_BYTES (256u << 10)
#define FL_SCAN_MARKERS 1
#define FL_SCAN_COMMITS 2
#define FL_SCAN_PADDING 4
#define FL_SCAN_UNCOMMITTED 8

static int scan_wanted(uint32_t kind, int32_t include) {
    switch (kind) {
    case FL_KIND_DATA: return 1;
    case FL_KIND_MARKER: return include & FL_SCAN_MARKERS;
    case FL_KIND_COMMIT: return include & FL_SCAN_COMMITS;
    default: return include & FL_SCAN_PADDING;
    }
}

/* Copies whole frames starting at `from_address` into `buffer` and reports the entries among
 * them whose address is below `until_address` (clamped to committed_until). Every frame is
 * checked (checksum included) before it is reported. Returns the count of entries reported;
 * *next_address_out is where the next call should start. */
static int64_t scan_impl(fl_log *log, uint64_t from_address, uint64_t until_address, int32_t include,
                void *buffer, size_t capacity, uint64_t *addresses_out, uint32_t *offsets_out,
                uint32_t *sizes_out, int32_t *kinds_out, size_t count_max,
                uint64_t *next_address_out, fl_error_info *error) {
    uint64_t limit;
    int rc = check_range_start(log, from_address, &limit, error);
    *next_address_out = from_address;
    if (rc < 0) return rc;
    pthread_mutex_lock(&log->mutex);
    /* `committed` bounds what is copied: the committed prefix, or for the writer's own
     * uncommitted scan everything appended (frames below the tail are complete). */
    uint64_t committed = (include & FL_SCAN_UNCOMMITTED) && !log->readonly ? log->tail_address
                                                                          : log->committed_until;
    pthread_mutex_unlock(&log->mutex);
    if (until_address > committed) until_address = committed;
    uint8_t *out = buffer;
    uint64_t position = from_address, used = 0;
    size_t count = 0;
    int stop = 0;
    uint64_t want = FL_SCAN_CHUNK_BYTES;
    while (!stop && position < until_address && count < count_max) {
        uint64_t page_end = (fl_page_of(log, position) + 1) * log->page_size_bytes;
        uint64_t chunk_end = page_end < committed ? page_end : committed;
        uint64_t size = chunk_end - position;
        /* Copy in modest chunks: the call may stop at count_max long before the buffer is
         * full, and every byte copied past that point would be copied again next call. */
        if (size > want) size = want;
        if (size > capacity - used) size = capacity - used;
        if (size == 0) break;
        want = FL_SCAN_CHUNK_BYTES;
        int from_memory;
        /* Only a long scan reads ahead: a short one would pull in pages nobody reads. */
        uint64_t scan_left = until_address > position ? until_address - position : 0;
        uint64_t read_ahead = scan_left >= FL_READAHEAD_MIN_BYTES
                                  ? (scan_left < FL_READAHEAD_BYTES ? scan_left : FL_READAHEAD_BYTES)
                                  : 0;
        int64_t got = copy_range(log, position, out + used, size, &from_memory, read_ahead);
        if (got < 0) return got;
        if ((uint64_t)got < size) {
            /* Committed bytes missing from the file: damage, not the end of the log. */
            if (error) error->address = position + (uint64_t)got;
            if (count > 0) break;
            return FL_E_CORRUPT;
        }
        uint64_t offset = 0;
        while (offset < size && position + offset < until_address && count < count_max) {
            fl_frame_view view;
            rc = fl_frame_check(log, position + offset, out + used + offset, size - offset, &view);
            if (rc == FL_E_BUFFER) {
                if (count == 0 && used + offset == 0 && view.frame_size > capacity) {
                    if (error) error->size_needed = view.frame_size;
                    return FL_E_BUFFER;
                }
                if (offset == 0 && view.frame_size <= capacity - used && view.frame_size > size) {
                    want = view.frame_size; /* a frame larger than a chunk: copy it whole */
                    break;
                }
                /* Cut by the chunk, not by the buffer: go on with the next chunk. */
                if (offset > 0 && view.frame_size <= capacity - used - offset) break;
                stop = 1;
                break;
            }
            if (rc < 0) {
                if (error) error->address = position + offset;
                if (count > 0 || offset > 0 || used > 0) {
                    stop = 1;
                    break;
                }
                /* The very first frame: a bad start address, or damage? Tell them apart. */
                return position == from_address ? classify_bad_frame(log, position, error) : rc;
            }
            if (scan_wanted(view.kind, include)) {
                addresses_out[count] = position + offset;
                offsets_out[count] = (uint32_t)(used + offset + FL_FRAME_HEADER_SIZE_BYTES);
                sizes_out[count] = view.payload_size;
                if (kinds_out) kinds_out[count] = (int32_t)view.kind;
                count++;
            }
            offset += view.frame_size;
        }
        if (offset == 0 && want == FL_SCAN_CHUNK_BYTES) stop = 1; /* no progress possible */
        used += offset;
        position += offset;
    }
    *next_address_out = position;
    return (int64_t)count;
}

static size_t format_number(char *out, uint64_t value, char suffix) {
    char digits[24];
    size_t length = 0;
    do {
        digits[length++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < length; i++) out[i] = digits[length - 1 - i];
    out[length] = suffix;
    return length + 1;
}

int64_t fl_scan_format(const uint32_t *offsets, const uint32_t *sizes, size_t count,
                       char *format_out, size_t capacity) {
    size_t used = 0;
    uint64_t position = 0;
    for (size_t i = 0; i < count; i++) {
        /* Each item needs at most two numbers of 10 digits plus their letters. */
        if (capacity - used < 24) return FL_E_BUFFER;
        if (offsets[i] > position) used += format_number(format_out + used, offsets[i] - position, 'x');
        used += format_number(format_out + used, sizes[i], 's');
        position = (uint64_t)offsets[i] + sizes[i];
    }
    return (int64_t)used;
}

static int verify_impl(fl_log *log, uint64_t from_address, uint64_t until_address, uint64_t *good_until_out,
              fl_error_info *error) {
    enum { entries_max = 4096 };
    uint64_t capacity = log->page_size_bytes;
    uint8_t *buffer = malloc(capacity);
    uint64_t *addresses = malloc(entries_max * sizeof *addresses);
    uint32_t *offsets = malloc(entries_max * sizeof *offsets);
    uint32_t *sizes = malloc(entries_max * sizeof *sizes);
    int rc = (buffer && addresses && offsets && sizes) ? 0 : FL_E_NOMEM;
    uint64_t position = from_address;
    while (rc == 0 && position < until_address) {
        uint64_t next;
        int64_t count = scan_impl(log, position, until_address, FL_SCAN_MARKERS | FL_SCAN_COMMITS |
                                FL_SCAN_PADDING, buffer, capacity, addresses, offsets, sizes,
                                NULL, entries_max, &next, error);
        if (count < 0) rc = (int)count;
        else if (next == position) break;
        else position = next;
    }
    *good_until_out = position;
    free(buffer);
    free(addresses);
    free(offsets);
    free(sizes);
    return rc;
}

/* ------------------------------------------------------------------ truncation, state */

static int truncate_until_impl(fl_log *log, uint64_t address) {
    pthread_mutex_lock(&log->mutex);
    int rc = writable_locked(log);
    uint64_t committed = log->committed_until;
    uint64_t begin = log->begin_address;
    pthread_mutex_unlock(&log->mutex);
    if (rc < 0) return rc;
    if (address <= begin) return 0;
    if (address > committed || address % FL_FRAME_ALIGNMENT_BYTES) return FL_E_ADDRESS;
    if (address != committed && address % log->page_size_bytes != 0) {
        /* The begin address must be a frame start, so that scans from it make sense. The end
         * of a page (a padding frame, or the short zero gap) counts: it is where a reader that
         * finished the page stands, and scans step over it. Moving begin past it instead
         * would pass a cursor standing there. */
        uint64_t page_end = (fl_page_of(log, address) + 1) * log->page_size_bytes;
        uint8_t header[FL_FRAME_HEADER_SIZE_BYTES];
        int from_memory;
        int page_end_frame =
            page_end - address < FL_FRAME_HEADER_SIZE_BYTES ||
            (copy_range(log, address, header, sizeof header, &from_memory, 0) ==
                 (int64_t)sizeof header &&
             fl_load32(header + 4) >> FL_FRAME_LENGTH_BITS == FL_KIND_PADDING &&
             fl_frame_size(fl_load32(header + 4) & FL_FRAME_LENGTH_MASK) == page_end - address);
        if (!page_end_frame) {
            uint8_t probe[1];
            int32_t kind;
            fl_error_info info;
            memset(&info, 0, sizeof info);
            int64_t got = read_impl(log, address, probe, 0, &kind, &info);
            if (got < 0 && got != FL_E_BUFFER) return (int)got;
        }
    }
    pthread_mutex_lock(&log->mutex);
    if (address > log->begin_address) {
        log->begin_address = address;
        log->commit_record_due = 1;
    }
    pthread_mutex_unlock(&log->mutex);
    return 0;
}

void fl_get_state(fl_log *log, fl_state *state) {
    memset(state, 0, sizeof *state);
    if (pthread_mutex_trylock(&log->io_mutex) == 0) {
        /* Opportunistic: account for writes that finished since anyone last looked. */
        if (!log->closed && log->inflight_count > 0) reap_io_locked(log, 0);
        pthread_mutex_unlock(&log->io_mutex);
    }
    pthread_mutex_lock(&log->mutex);
    if (log->readonly && !log->closed) fl_shared_refresh_locked(log);
    state->begin_address = log->begin_address;
    state->tail_address = log->tail_address;
    state->flushed_until_address = log->flushed_until;
    state->committed_until_address = log->committed_until;
    state->head_address = log->head_address;
    state->commit_number = log->commit_number;
    state->last_commit_address = log->last_commit_address;
    state->salt = log->salt;
    state->epoch = log->epoch;
    state->io_backend = log->device.backend ? log->device.backend : FL_IO_PLAIN;
    state->fenced_error = log->fenced_error;
    state->closed = log->closed;
    state->readonly = log->readonly;
    state->direct_io = log->direct_io;
    state->io_uring_refused = log->io_uring_refused;
    state->completed = log->completion_durable;
    pthread_mutex_unlock(&log->mutex);
}

void fl_get_settings(fl_log *log, fl_settings *settings_out) { *settings_out = log->settings; }

static int fault_set_impl(fl_log *log, int32_t ops, uint64_t after_count, int32_t error, int32_t persistent,
                 int32_t short_write) {
    pthread_mutex_lock(&log->io_mutex);
    log->device.fault.ops = ops;
    log->device.fault.after_count = after_count;
    log->device.fault.error = error;
    log->device.fault.persistent = persistent;
    log->device.fault.short_write = short_write;
    pthread_mutex_unlock(&log->io_mutex);
    return 0;
}

/* ------------------------------------------------------------------ auto-commit */

static void *auto_commit_main(void *argument) {
    fl_log *log = argument;
    uint32_t interval_ms = log->settings.auto_commit_interval_ms;
    uint64_t threshold_bytes = log->settings.auto_commit_bytes;
    pthread_mutex_lock(&log->mutex);
    while (log->auto_commit_running && !log->fenced_error) {
        /* The predicate is checked before every wait: appends may signal before this thread
         * first waits, and a signal then is lost. */
        uint64_t pending = log->tail_address - log->committed_until;
        int timed_out = 0;
        if (!threshold_bytes || pending < threshold_bytes) {
            if (interval_ms) {
                struct timespec deadline = deadline_after_us((int64_t)interval_ms * 1000);
                timed_out = pthread_cond_timedwait(&log->auto_commit_cond, &log->mutex,
                                                   &deadline) == ETIMEDOUT;
            } else {
                pthread_cond_wait(&log->auto_commit_cond, &log->mutex);
            }
            if (!log->auto_commit_running || log->fenced_error) break;
            pending = log->tail_address - log->committed_until;
        }
        int due = (threshold_bytes && pending >= threshold_bytes) ||
                  (timed_out && (pending > 0 || log->commit_record_due));
        if (due) {
            pthread_mutex_unlock(&log->mutex);
            commit_impl(log); /* a failure fences the log; callers see it on their next call */
            pthread_mutex_lock(&log->mutex);
        }
    }
    pthread_mutex_unlock(&log->mutex);
    return NULL;
}

static void auto_commit_stop(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int running = log->auto_commit_running;
    log->auto_commit_running = 0;
    pthread_cond_broadcast(&log->auto_commit_cond);
    pthread_mutex_unlock(&log->mutex);
    if (running) pthread_join(log->auto_commit_thread, NULL);
}

/* ------------------------------------------------------------------ open, close */

static int settings_check(fl_settings *settings, const fl_meta *meta, fl_error_info *error) {
    uint64_t page = settings->page_size_bytes, segment = settings->segment_size_bytes;
    if (meta) {
        if (page && page != meta->page_size_bytes) {
            fl_set_message(error, "page_size_bytes %llu differs from the log's %llu",
                           (unsigned long long)page, (unsigned long long)meta->page_size_bytes);
            return FL_E_SETTINGS;
        }
        if (segment && segment != meta->segment_size_bytes) {
            fl_set_message(error, "segment_size_bytes %llu differs from the log's %llu",
                           (unsigned long long)segment,
                           (unsigned long long)meta->segment_size_bytes);
            return FL_E_SETTINGS;
        }
        page = meta->page_size_bytes;
        segment = meta->segment_size_bytes;
    }
    if (!page) page = FL_DEFAULT_PAGE_SIZE_BYTES;
    if (!segment) segment = FL_DEFAULT_SEGMENT_SIZE_BYTES < page ? page : FL_DEFAULT_SEGMENT_SIZE_BYTES;
    if (page < FL_PAGE_SIZE_MIN_BYTES || page > FL_PAGE_SIZE_MAX_BYTES || (page & (page - 1))) {
        fl_set_message(error, "page_size_bytes must be a power of two from %u to %u, not %llu",
                       FL_PAGE_SIZE_MIN_BYTES, FL_PAGE_SIZE_MAX_BYTES, (unsigned long long)page);
        return FL_E_SETTINGS;
    }
    if (segment < page || segment % page) {
        fl_set_message(error, "segment_size_bytes must be a multiple of page_size_bytes (%llu), "
                       "not %llu", (unsigned long long)page, (unsigned long long)segment);
        return FL_E_SETTINGS;
    }
    uint64_t memory = settings->memory_size_bytes;
    if (!memory) memory = FL_DEFAULT_MEMORY_SIZE_BYTES < 2 * page ? 2 * page : FL_DEFAULT_MEMORY_SIZE_BYTES;
    if (memory < 2 * page || memory % page || memory / page > FL_PAGES_COUNT_MAX) {
        fl_set_message(error, "memory_size_bytes must be a multiple of page_size_bytes, at least "
                       "two pages and at most %u, not %llu", FL_PAGES_COUNT_MAX,
                       (unsigned long long)memory);
        return FL_E_SETTINGS;
    }
    if (settings->io_backend < FL_IO_AUTO || settings->io_backend > FL_IO_PLAIN) {
        fl_set_message(error, "unknown io_backend %d", settings->io_backend);
        return FL_E_SETTINGS;
    }
    settings->page_size_bytes = page;
    settings->segment_size_bytes = segment;
    settings->memory_size_bytes = memory;
    return 0;
}

static int lock_directory(fl_log *log, fl_error_info *error) {
    log->lock_fd = openat(log->directory_fd, "fasterlog.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (log->lock_fd < 0) return -errno;
    if (flock(log->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int rc = errno == EWOULDBLOCK ? FL_E_LOCKED : -errno;
        char text[32] = {0};
        if (pread(log->lock_fd, text, sizeof text - 1, 0) > 0) error->holder_pid = atoll(text);
        fl_set_message(error, "the log is open for writing by process %lld",
                       (long long)error->holder_pid);
        close(log->lock_fd);
        log->lock_fd = -1;
        return rc;
    }
    char text[32];
    int length = snprintf(text, sizeof text, "%lld\n", (long long)getpid());
    if (ftruncate(log->lock_fd, 0) < 0 || pwrite(log->lock_fd, text, (size_t)length, 0) < 0)
        return -errno;
    return 0;
}

static int has_segment_files(int directory_fd) {
    int fd = dup(directory_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) return 0;
    int found = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL)
        if (strncmp(entry->d_name, "segment-", 8) == 0) found = 1;
    closedir(dir);
    return found;
}

static int load_or_create_meta(fl_log *log, fl_meta *meta, fl_error_info *error) {
    int rc = fl_meta_read(log->directory_fd, meta);
    if (rc == -ENOENT) {
        if (log->readonly) {
            fl_set_message(error, "no log in %s (fasterlog.meta is missing)", log->directory);
            return FL_E_FORMAT;
        }
        if (has_segment_files(log->directory_fd)) {
            fl_set_message(error, "segment files without fasterlog.meta in %s", log->directory);
            return FL_E_FORMAT;
        }
        rc = settings_check(&log->settings, NULL, error);
        if (rc < 0) return rc;
        memset(meta, 0, sizeof *meta);
        while (meta->salt == 0)
            if (getrandom(&meta->salt, sizeof meta->salt, 0) != sizeof meta->salt) return -errno;
        meta->page_size_bytes = log->settings.page_size_bytes;
        meta->segment_size_bytes = log->settings.segment_size_bytes;
        meta->begin_address = FL_FIRST_ADDRESS;
        meta->recovery_start_address = FL_FIRST_ADDRESS;
        meta->committed_until_address = FL_FIRST_ADDRESS;
        return fl_meta_write(log->directory_fd, meta);
    }
    if (rc == FL_E_CORRUPT) fl_set_message(error, "fasterlog.meta fails its checksum");
    if (rc == FL_E_FORMAT) fl_set_message(error, "fasterlog.meta is not a fasterlog %d meta file",
                                          FL_FORMAT_VERSION);
    if (rc < 0) return rc;
    return settings_check(&log->settings, meta, error);
}

static fl_log *log_alloc(const char *directory, const fl_settings *settings) {
    fl_log *log = calloc(1, sizeof *log);
    if (log == NULL) return NULL;
    log->directory = strdup(directory);
    log->cookie = malloc(FL_COOKIE_SIZE_MAX_BYTES);
    if (log->directory == NULL || log->cookie == NULL) {
        free(log->directory);
        free(log->cookie);
        free(log);
        return NULL;
    }
    pthread_mutex_init(&log->mutex, NULL);
    pthread_mutex_init(&log->io_mutex, NULL);
    pthread_cond_init(&log->commit_cond, NULL);
    pthread_cond_init(&log->flush_cond, NULL);
    pthread_cond_init(&log->auto_commit_cond, NULL);
    pthread_cond_init(&log->zero_cond, NULL);
    pthread_rwlock_init(&log->segments_lock, NULL);
    log->settings = *settings;
    log->readonly = settings->readonly != 0;
    log->direct_io = settings->direct_io != 0;
    log->directory_fd = -1;
    log->lock_fd = -1;
    log->event_fd = -1;
    return log;
}

/* Releases every resource; with `clean`, after a final commit and a clean meta file. */
static int log_shutdown(fl_log *log, int clean) {
    int rc = 0;
    pthread_mutex_lock(&log->mutex);
    int was_closed = log->closed;
    pthread_mutex_unlock(&log->mutex);
    if (was_closed) return 0;
    auto_commit_stop(log);
    zero_stop(log);
    fl_follow_stop(log);
    if (clean && !log->readonly) {
        int64_t committed = commit_impl(log);
        if (committed < 0 && committed != FL_E_FENCED) rc = (int)committed;
    }
    pthread_mutex_lock(&log->mutex);
    log->closed = 1;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_cond_broadcast(&log->flush_cond);
    while (log->commit_active) pthread_cond_wait(&log->commit_cond, &log->mutex);
    /* Another thread may still be inside fl_wait_for_commit: it sees `closed` as soon as it
     * runs, but nothing it reads may be released before it has left. A read-only waiter sleeps
     * on the shared page's futex, which nobody else bumps; wake it until it is gone (a wake
     * can land just before it goes to sleep, hence the loop and the short timed wait). */
    while (log->waiters_count > 0) {
        if (log->readonly) fl_shared_wake_local(log);
        struct timespec deadline = deadline_after_us(1000);
        pthread_cond_timedwait(&log->commit_cond, &log->mutex, &deadline);
    }
    int fenced = log->fenced_error;
    pthread_mutex_unlock(&log->mutex);

    pthread_mutex_lock(&log->io_mutex);
    if (!log->readonly && log->device.backend) {
        if (clean) {
            fl_device_submit(&log->device);
            while (log->inflight_count > 0 && reap_io_locked(log, log->inflight_count) == 0) {}
        }
        fl_device_destroy(&log->device);
    }
    pthread_mutex_unlock(&log->io_mutex);
    if (clean && !log->readonly && !fenced && rc == 0) {
        fl_meta meta = {
            .salt = log->salt,
            .page_size_bytes = log->page_size_bytes,
            .segment_size_bytes = log->segment_size_bytes,
            .epoch = log->epoch,
            .flags = FL_META_FLAG_CLEAN,
            .begin_address = log->durable_begin_address,
            .recovery_start_address =
                log->last_commit_address ? log->last_commit_address : log->meta_recovery_start,
            .committed_until_address = log->committed_until,
            .commit_number = log->commit_number,
        };
        rc = fl_meta_write(log->directory_fd, &meta);
    }
    pthread_rwlock_wrlock(&log->segments_lock);
    for (uint64_t i = 0; i < log->segments_count; i++) {
        if (log->segments[i].write_fd >= 0) close(log->segments[i].write_fd);
        if (log->segments[i].read_fd >= 0) close(log->segments[i].read_fd);
    }
    free(log->segments);
    log->segments = NULL;
    log->segments_count = 0;
    pthread_rwlock_unlock(&log->segments_lock);
    pthread_mutex_lock(&log->mutex);
    free(log->memory);
    log->memory = NULL;
    pthread_mutex_unlock(&log->mutex);
    fl_shared_close(log);
    if (log->event_fd >= 0) close(log->event_fd);
    if (log->lock_fd >= 0) close(log->lock_fd); /* releases the flock */
    if (log->directory_fd >= 0) close(log->directory_fd);
    log->event_fd = log->lock_fd = log->directory_fd = -1;
    return rc;
}

int fl_close(fl_log *log) {
    void *token = fl_blocking_begin();
    int rc = log_shutdown(log, 1);
    fl_blocking_end(token);
    return rc;
}

void fl_simulate_crash(fl_log *log) {
    void *token = fl_blocking_begin();
    log_shutdown(log, 0);
    fl_blocking_end(token);
}

static void free_impl(fl_log *log);

void fl_free(fl_log *log) {
    if (log == NULL) return;
    void *token = fl_blocking_begin();
    free_impl(log);
    fl_blocking_end(token);
}

static void free_impl(fl_log *log) {
    log_shutdown(log, 1);
    pthread_mutex_destroy(&log->mutex);
    pthread_mutex_destroy(&log->io_mutex);
    pthread_cond_destroy(&log->commit_cond);
    pthread_cond_destroy(&log->flush_cond);
    pthread_cond_destroy(&log->auto_commit_cond);
    pthread_cond_destroy(&log->zero_cond);
    pthread_rwlock_destroy(&log->segments_lock);
    free(log->cookie);
    free(log->directory);
    free(log);
}

static int zero_first_page(fl_log *log) {
    int write_fd, read_fd;
    int rc = fl_segment_fds(log, 0, 1, &write_fd, &read_fd);
    if (rc < 0) return rc;
    /* The page slot is all zeros before the first append; write it as the zero source. */
    uint8_t *zeros = log->memory;
    memset(zeros, 0, log->page_size_bytes);
    if (fl_io_pwrite(write_fd, zeros, log->page_size_bytes, 0, 1) != (ssize_t)log->page_size_bytes)
        return -EIO;
    if (fl_io_fdatasync(write_fd) < 0) return -errno;
    return 0;
}

/* What recovery accepted may still be unsynced in the page cache: a writer killed (or fenced
 * by a failed sync) between its writes and their sync leaves a complete commit that a reader
 * sees but the disk may not hold. Before the meta file records it and new commits build on it
 * (a commit whose write carries its own sync covers only its page), sync every segment from
 * the old recovery start to the recovered end; everything before that start was synced before
 * the meta file named it. Found by the power-loss states (tests/test_reliability_power_loss). */
static int sync_recovered(fl_log *log, uint64_t recovery_start_address) {
    if (log->committed_until <= FL_FIRST_ADDRESS) return 0;
    uint64_t first = recovery_start_address / log->segment_size_bytes;
    uint64_t last = (log->committed_until - 1) / log->segment_size_bytes;
    for (uint64_t segment = first; segment <= last; segment++) {
        int read_fd;
        int rc = fl_segment_fds(log, segment, 0, NULL, &read_fd);
        if (rc == FL_E_ADDRESS) continue; /* below begin and deleted */
        if (rc < 0) return rc;
        if (fl_io_fdatasync(read_fd) < 0) return -errno;
    }
    return 0;
}

static int open_steps(fl_log *log, fl_error_info *error) {
    fl_crc32c_hardware(); /* picks the CRC implementation before any frame is made */
    if (!log->readonly && mkdir(log->directory, 0755) < 0 && errno != EEXIST) return -errno;
    log->directory_fd = open(log->directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->directory_fd < 0) {
        int rc = -errno;
        fl_set_message(error, "cannot open directory %s", log->directory);
        return rc;
    }
    int rc = log->readonly ? 0 : lock_directory(log, error);
    if (rc < 0) return rc;
    fl_meta meta;
    rc = load_or_create_meta(log, &meta, error);
    if (rc < 0) return rc;
    log->salt = meta.salt;
    log->epoch = meta.epoch;
    log->page_size_bytes = log->settings.page_size_bytes;
    log->page_mask = log->page_size_bytes - 1;
    log->segment_size_bytes = log->settings.segment_size_bytes;
    log->pages_count = log->settings.memory_size_bytes / log->page_size_bytes;
    log->entry_size_max = log->page_size_bytes - FL_FRAME_HEADER_SIZE_BYTES;
    log->meta_recovery_start = meta.recovery_start_address;
    log->meta_committed_until = meta.committed_until_address;
    uint64_t ring_bytes = log->pages_count * log->page_size_bytes;
    /* A large ring on 2 MiB pages: KV reads land at random places in it, and with 4 KiB pages
     * most of them also missed the TLB (a hint only; the kernel may refuse). */
    uint64_t ring_alignment = ring_bytes >= FL_HUGE_PAGE_BYTES ? FL_HUGE_PAGE_BYTES
                                                               : FL_SECTOR_SIZE_BYTES;
    if (posix_memalign((void **)&log->memory, ring_alignment, ring_bytes) != 0)
        return FL_E_NOMEM;
    if (ring_alignment == FL_HUGE_PAGE_BYTES)
        madvise(log->memory, FL_ALIGN_DOWN(ring_bytes, FL_HUGE_PAGE_BYTES), MADV_HUGEPAGE);
    if (!log->readonly) {
        rc = fl_device_init(&log->device, log->settings.io_backend, &log->io_uring_refused);
        if (rc < 0) {
            fl_set_message(error, "io_uring was asked for but the kernel refused it");
            return rc;
        }
    }
    rc = fl_recover(log, &meta, error);
    if (rc < 0) return rc;
    log->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = fl_shared_open(log);
    if (rc < 0) return rc;
    if (log->readonly) {
        /* A reader must not hand out a commit that a power cut can still take back (a writer
         * killed between its writes and their sync left it in the page cache): sync it too.
         * Best effort: where a read-only descriptor cannot be synced (a read-only medium),
         * nothing unsynced can be there either. */
        (void)sync_recovered(log, meta.recovery_start_address);
        pthread_mutex_lock(&log->mutex);
        fl_shared_refresh_locked(log);
        pthread_mutex_unlock(&log->mutex);
        return 0;
    }
    rc = sync_recovered(log, meta.recovery_start_address);
    if (rc < 0) {
        fl_set_message(error, "cannot make the recovered log durable (fdatasync failed)");
        return rc;
    }
    /* A new epoch before any write: frames beyond the recovered tail from earlier sessions
     * carry an older epoch and can never be taken for this session's (FORMAT.md). */
    log->epoch = meta.epoch + 1;
    meta.epoch = log->epoch;
    meta.flags = 0;
    meta.begin_address = log->begin_address;
    meta.recovery_start_address =
        log->last_commit_address ? log->last_commit_address : FL_FIRST_ADDRESS;
    meta.committed_until_address = log->committed_until;
    meta.commit_number = log->commit_number;
    rc = fl_meta_write(log->directory_fd, &meta);
    if (rc < 0) return rc;
    log->meta_recovery_start = meta.recovery_start_address;
    log->meta_committed_until = meta.committed_until_address;
    pthread_mutex_lock(&log->mutex);
    fl_shared_publish_locked(log);
    pthread_mutex_unlock(&log->mutex);
    if (log->commit_number == 0 && log->tail_address == FL_FIRST_ADDRESS) {
        /* A new log (nothing committed, so nothing to lose): zero its first page now, since
         * the preallocation thread stays beyond the page the tail is in. */
        rc = zero_first_page(log);
        if (rc < 0) return rc;
    }
    log->zero_ahead_bytes = log->segment_size_bytes < FL_ZERO_AHEAD_MAX_BYTES
                                ? log->segment_size_bytes : FL_ZERO_AHEAD_MAX_BYTES;
    log->zero_running = 1;
    if (pthread_create(&log->zero_thread, NULL, zero_main, log) != 0) {
        log->zero_running = 0;
        log->zero_thread = 0;
    }
    if (log->settings.auto_commit_interval_ms || log->settings.auto_commit_bytes) {
        log->auto_commit_running = 1;
        if (pthread_create(&log->auto_commit_thread, NULL, auto_commit_main, log) != 0) {
            log->auto_commit_running = 0;
            return -EAGAIN;
        }
    }
    return 0;
}

static int open_impl(const char *directory, const fl_settings *settings, fl_log **log_out,
                     fl_error_info *error) {
    fl_error_info ignored;
    if (error == NULL) error = &ignored;
    memset(error, 0, sizeof *error);
    *log_out = NULL;
    fl_settings checked = *settings;
    fl_log *log = log_alloc(directory, &checked);
    if (log == NULL) return FL_E_NOMEM;
    int rc = open_steps(log, error);
    if (rc < 0) {
        log_shutdown(log, 0); /* no commit, no meta write: the open failed */
        free_impl(log);
        return rc;
    }
    *log_out = log;
    return 0;
}

/* ------------------------------------------------------------------ public entry points
 *
 * Calls that may wait let the caller's runtime run other threads: the Python binding defines
 * fl_blocking_begin/end to release and retake the GIL. They are called only here, at entry
 * and exit, never while the core holds a lock, and never from the core's own threads. */

__attribute__((weak)) void *fl_blocking_begin(void) { return NULL; }
__attribute__((weak)) void fl_blocking_end(void *token) { (void)token; }

int fl_open(const char *directory, const fl_settings *settings, fl_log **log_out,
            fl_error_info *error) {
    void *token = fl_blocking_begin();
    int rc = open_impl(directory, settings, log_out, error);
    fl_blocking_end(token);
    return rc;
}

int64_t fl_append_batch(fl_log *log, const void *data, const uint32_t *sizes, size_t count,
                        uint64_t *addresses_out, int32_t blocking) {
    void *token = fl_blocking_begin();
    int64_t rc = append_batch_impl(log, data, sizes, count, addresses_out, blocking);
    fl_blocking_end(token);
    return rc;
}

int64_t fl_commit(fl_log *log) {
    void *token = fl_blocking_begin();
    int64_t rc = commit_impl(log);
    fl_blocking_end(token);
    return rc;
}

int fl_wait_for_commit(fl_log *log, uint64_t address, int64_t timeout_us) {
    void *token = fl_blocking_begin();
    int rc = wait_for_commit_impl(log, address, timeout_us);
    fl_blocking_end(token);
    return rc;
}

int64_t fl_read(fl_log *log, uint64_t address, void *buffer, size_t capacity, int32_t *kind_out,
                fl_error_info *error) {
    void *token = fl_blocking_begin();
    int64_t rc = read_impl(log, address, buffer, capacity, kind_out, error);
    fl_blocking_end(token);
    return rc;
}

static int64_t read_many_impl(fl_log *log, const uint64_t *addresses, size_t count,
                              uint8_t *buffer, size_t capacity, uint32_t *offsets_out,
                              uint32_t *sizes_out, int32_t *kinds_out, fl_error_info *error) {
    uint64_t used = 0;
    for (size_t i = 0; i < count; i++) {
        int32_t kind = 0;
        int64_t size = read_impl(log, addresses[i], buffer + used, capacity - used, &kind, error);
        if (size == FL_E_BUFFER && i > 0) return (int64_t)i;
        if (size < 0) {
            if (error && size != FL_E_BUFFER) error->address = addresses[i];
            return size;
        }
        offsets_out[i] = (uint32_t)used;
        sizes_out[i] = (uint32_t)size;
        kinds_out[i] = kind;
        used += (uint64_t)size;
    }
    return (int64_t)count;
}

int64_t fl_read_many(fl_log *log, const uint64_t *addresses, size_t count, void *buffer,
                     size_t capacity, uint32_t *offsets_out, uint32_t *sizes_out,
                     int32_t *kinds_out, fl_error_info *error) {
    void *token = fl_blocking_begin();
    int64_t rc = read_many_impl(log, addresses, count, buffer, capacity, offsets_out, sizes_out,
                                kinds_out, error);
    fl_blocking_end(token);
    return rc;
}

int64_t fl_scan(fl_log *log, uint64_t from_address, uint64_t until_address, int32_t include,
                void *buffer, size_t capacity, uint64_t *addresses_out, uint32_t *offsets_out,
                uint32_t *sizes_out, int32_t *kinds_out, size_t count_max,
                uint64_t *next_address_out, fl_error_info *error) {
    void *token = fl_blocking_begin();
    int64_t rc = scan_impl(log, from_address, until_address, include, buffer, capacity,
                           addresses_out, offsets_out, sizes_out, kinds_out, count_max,
                           next_address_out, error);
    fl_blocking_end(token);
    return rc;
}

int fl_verify(fl_log *log, uint64_t from_address, uint64_t until_address, uint64_t *good_until_out,
              fl_error_info *error) {
    void *token = fl_blocking_begin();
    int rc = verify_impl(log, from_address, until_address, good_until_out, error);
    fl_blocking_end(token);
    return rc;
}

int fl_truncate_until(fl_log *log, uint64_t address) {
    void *token = fl_blocking_begin();
    int rc = truncate_until_impl(log, address);
    fl_blocking_end(token);
    return rc;
}

int fl_fault_set(fl_log *log, int32_t ops, uint64_t after_count, int32_t error, int32_t persistent,
                 int32_t short_write) {
    void *token = fl_blocking_begin();
    int rc = fault_set_impl(log, ops, after_count, error, persistent, short_write);
    fl_blocking_end(token);
    return rc;
}

int fl_commit_eventfd(fl_log *log) { return commit_eventfd_impl(log); }

int64_t fl_complete(fl_log *log) {
    void *token = fl_blocking_begin();
    int64_t rc = complete_impl(log);
    fl_blocking_end(token);
    return rc;
}
