/* Driving the device: the one thread holding `io_mutex` queues the writes of sealed pages (and
 * of a commit's last page), submits them, reaps completions and moves flushed_until; a failed
 * or short write or sync fences the log (invariant 6: never retried; one the kernel cancelled
 * unrun is sent again, see resubmit_cancelled_io_locked). A commit's writes and
 * syncs go through fl_drive_flush_and_sync_io_locked, which returns only once all of them
 * completed (invariant 4). */
#include "fl_internal.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

void fl_fence_locked(fl_log *log, int error) {
    assert(error < 0); /* a code: 0 would leave the log writable */
    if (log->fenced_error == 0) log->fenced_error = error;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_cond_broadcast(&log->flush_cond);
    /* Event-loop waiters (commit_eventfd) learn of the fence too: a commit that failed in the
     * auto-commit thread has no caller to tell. */
    fl_commit_event_signal(log);
}

void fl_commit_event_signal(fl_log *log) {
    if (log->event_fd >= 0) {
        uint64_t one = 1;
        ssize_t ignored = write(log->event_fd, &one, sizeof one);
        (void)ignored; /* a full counter already wakes every reader */
    }
}

/* Reaps up to FL_INFLIGHT_MAX completions, waiting for `wait_count` of them; returns the first
 * error among them. An operation that came back ECANCELED is left in flight, marked
 * `cancelled`, for resubmit_cancelled_io_locked. */
static int reap_completions_io_locked(fl_log *log, uint32_t wait_count) {
    fl_completion done[FL_INFLIGHT_MAX];
    int count = fl_device_reap(&log->device, done, FL_INFLIGHT_MAX, wait_count);
    int error = count < 0 ? count : 0;
    for (int i = 0; i < count; i++) {
        fl_inflight *op = &log->inflight[done[i].tag % FL_INFLIGHT_MAX];
        assert(!op->done && !op->cancelled); /* one completion per sending */
        if (done[i].result == -ECANCELED && op->resubmits_count < FL_CANCELLED_RESUBMITS_MAX) {
            op->cancelled = 1;
            continue;
        }
        op->done = 1;
        op->result = done[i].result;
        if (op->is_sync ? op->result < 0 : op->result != (int32_t)op->size_bytes)
            if (error == 0) error = op->result < 0 ? op->result : FL_E_SHORT_WRITE;
    }
    return error;
}

static int cancelled_count(const fl_log *log, uint32_t *pending_out) {
    int cancelled = 0;
    uint32_t pending = 0;
    for (uint32_t i = 0; i < log->inflight_count; i++) {
        const fl_inflight *op = &log->inflight[(log->inflight_first + i) % FL_INFLIGHT_MAX];
        if (op->cancelled) cancelled++;
        else if (!op->done) pending++;
    }
    if (pending_out) *pending_out = pending;
    return cancelled;
}

static int op_send_io_locked(fl_log *log, const fl_inflight *op, uint64_t tag, int link) {
    if (op->is_sync) return fl_device_fsync(&log->device, op->fd, tag, link);
    return fl_device_write(&log->device, op->fd, op->buffer, op->size_bytes, op->offset, tag,
                           link, op->dsync);
}

/* ECANCELED means the kernel did not run the operation, so sending it again is not the retry
 * of a failed write that invariant 6 forbids: nothing reached the file. io_uring cancels an
 * operation it still has to queue to the kernel workers of the thread that submitted it once
 * that thread is exiting (a write the block layer sent back with EAGAIN is requeued there),
 * and cancels the operations linked behind a cancelled one. Appends submit the writes of
 * sealed pages and return without waiting for them, so any thread that ends may leave such
 * writes behind; before this they fenced the log (the close race's one LogFencedError after
 * ECANCELED in 40,000 calls, when a worker that had seen LogClosedError ended). They are
 * sent again from this thread, which is alive and holds io_mutex. First everything else in
 * flight completes, then the cancelled ones go as one chain in submission order, with every
 * sync queued after a cancelled write sent again too (the kernel cancels a chain from the
 * cancelled operation on, but a sync that ran before the write it was meant to cover must
 * not count): each sync then runs after every write it covers (invariant 4). The slots
 * they read stay put, since flushed_until does not pass an operation that is not done
 * (invariant 3). */
static int resubmit_cancelled_io_locked(fl_log *log) {
    uint32_t pending;
    int cancelled = cancelled_count(log, &pending);
    while (pending > 0) {
        const fl_device *device = &log->device;
        /* An operation whose sending failed is in the table but not in the device (the
         * error was returned then); waiting for it would never end. */
        if (device->inflight_count + device->queued_count + device->ready_count == 0)
            return -ECANCELED;
        int rc = reap_completions_io_locked(log, 1);
        if (rc < 0) return rc;
        cancelled = cancelled_count(log, &pending);
    }
    int write_cancelled = 0;
    for (uint32_t i = 0; i < log->inflight_count; i++) {
        fl_inflight *op = &log->inflight[(log->inflight_first + i) % FL_INFLIGHT_MAX];
        if (op->cancelled) {
            write_cancelled |= !op->is_sync;
        } else if (op->is_sync && write_cancelled) {
            assert(op->done && op->result == 0); /* a failed one fenced: nothing is resent */
            op->done = 0;
            op->cancelled = 1;
            cancelled++;
        }
    }
    for (uint32_t i = 0; i < log->inflight_count && cancelled > 0; i++) {
        uint32_t index = (log->inflight_first + i) % FL_INFLIGHT_MAX;
        fl_inflight *op = &log->inflight[index];
        if (!op->cancelled) continue;
        op->cancelled = 0;
        op->result = 0;
        op->resubmits_count++;
        __atomic_fetch_add(&log->cancelled_resent_count, 1, __ATOMIC_RELAXED);
        int rc = op_send_io_locked(log, op, index, --cancelled > 0);
        if (rc < 0) return rc;
    }
    return fl_device_submit(&log->device);
}

/* After an error the log is fenced and nothing in flight is sent again: what came back
 * cancelled is done, with its ECANCELED. */
static void cancelled_finish(fl_log *log) {
    for (uint32_t i = 0; i < log->inflight_count; i++) {
        fl_inflight *op = &log->inflight[(log->inflight_first + i) % FL_INFLIGHT_MAX];
        if (!op->cancelled) continue;
        op->cancelled = 0;
        op->done = 1;
        op->result = -ECANCELED;
    }
}

int fl_drive_reap_io_locked(fl_log *log, uint32_t wait_count) {
    int error = reap_completions_io_locked(log, wait_count);
    if (error == 0 && cancelled_count(log, NULL) > 0) error = resubmit_cancelled_io_locked(log);
    if (error) cancelled_finish(log);
    uint64_t flushed = 0;
    while (log->inflight_count > 0 && log->inflight[log->inflight_first].done) {
        fl_inflight *op = &log->inflight[log->inflight_first];
        if (!op->is_sync && op->result == (int32_t)op->size_bytes) flushed = op->end;
        log->inflight_first = (log->inflight_first + 1) % FL_INFLIGHT_MAX;
        log->inflight_count--;
    }
    if (flushed || error) {
        pthread_mutex_lock(&log->mutex);
        if (error) fl_fence_locked(log, error);
        if (flushed > log->flushed_until && !log->fenced_error) log->flushed_until = flushed;
        fl_positions_check_locked(log);
        pthread_cond_broadcast(&log->flush_cond);
        pthread_mutex_unlock(&log->mutex);
    }
    return error;
}

/* Whether a write in flight reaches past `address` once rounded out to sectors. */
static int write_in_flight_beyond(const fl_log *log, uint64_t address) {
    for (uint32_t i = 0; i < log->inflight_count; i++) {
        const fl_inflight *op = &log->inflight[(log->inflight_first + i) % FL_INFLIGHT_MAX];
        if (!op->is_sync && !op->done && FL_ALIGN_UP(op->end, FL_SECTOR_SIZE_BYTES) > address)
            return 1;
    }
    return 0;
}

/* Reaps until nothing is in flight (a commit waits for its own writes: invariant 4). */
static int reap_all_io_locked(fl_log *log) {
    int rc = 0;
    while (rc == 0 && log->inflight_count > 0)
        rc = fl_drive_reap_io_locked(log, log->inflight_count);
    return rc;
}

/* Takes a slot for an operation, filled from `op` (result, done and cancelled cleared), and
 * sends it; the slot's index is its tag. */
static int inflight_send_io_locked(fl_log *log, fl_inflight op, int link) {
    while (log->inflight_count >= FL_INFLIGHT_MAX - 1) {
        int rc = fl_drive_reap_io_locked(log, 1);
        if (rc < 0) return rc;
    }
    uint32_t index = (log->inflight_first + log->inflight_count) % FL_INFLIGHT_MAX;
    op.result = op.done = op.cancelled = 0;
    op.resubmits_count = 0;
    log->inflight[index] = op;
    log->inflight_count++;
    return op_send_io_locked(log, &log->inflight[index], index, link);
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
        /* Invariant 4: a write that rewrites the head of its first sector has no write of
         * that sector in flight (the commit that wrote its start waited for it). */
        assert(write_start == start || !write_in_flight_beyond(log, write_start));
        uint64_t segment = write_start / log->segment_size_bytes;
        /* Marked dirty under segments_lock as the descriptor is looked up: the table may be
         * grown or shifted by other threads at any other moment (locking rule 3), and a flag
         * written into a moved table would let the commit's sync loop skip this segment. */
        int write_fd;
        int rc = fl_segment_write_fd_io_locked(log, segment, &write_fd);
        if (rc < 0) return rc;
        fl_zero_wait(log, write_start, write_end);
        fl_inflight write = {
            .start = start,
            .end = end,
            .size_bytes = write_end - write_start,
            .fd = write_fd,
            .dsync = dsync,
            .buffer = fl_slot_of(log, page) + (write_start - page_start),
            .offset = write_start % log->segment_size_bytes,
        };
        rc = inflight_send_io_locked(log, write, link);
        if (rc < 0) return rc;
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
    if (rc == 0 && log->inflight_count > 0) rc = fl_drive_reap_io_locked(log, 0);
    return rc;
}

/* Starts writes of sealed pages if no other thread is driving the device; the thread that is
 * driving it checks io_pending before it lets go, so no sealed page is left behind. */
void fl_drive_io(fl_log *log) {
    while (atomic_load(&log->io_pending)) {
        if (pthread_mutex_trylock(&log->io_mutex) != 0) return;
        int rc = submit_sealed_io_locked(log);
        pthread_mutex_unlock(&log->io_mutex);
        if (rc < 0) {
            pthread_mutex_lock(&log->mutex);
            fl_fence_locked(log, rc);
            pthread_mutex_unlock(&log->mutex);
            return;
        }
    }
}

/* Waits for one write to finish so a memory slot can be reused. Called with `mutex` held;
 * lets go of it while waiting. */
int fl_drive_wait_for_flush_locked(fl_log *log) {
    pthread_mutex_unlock(&log->mutex);
    pthread_mutex_lock(&log->io_mutex);
    int rc = submit_sealed_io_locked(log);
    if (rc == 0 && log->inflight_count > 0) rc = fl_drive_reap_io_locked(log, 1);
    pthread_mutex_unlock(&log->io_mutex);
    pthread_mutex_lock(&log->mutex);
    if (rc < 0) fl_fence_locked(log, rc);
    return log->fenced_error ? FL_E_FENCED : 0;
}

/* Writes everything below `until`, then syncs every segment written since its last sync.
 * A commit that is one write carries its own sync (below); otherwise the last writes are
 * linked to the syncs, so with io_uring the rest costs one system call. Older writes (sealed
 * pages) are waited for first so the sync covers them. */
int fl_drive_flush_and_sync_io_locked(fl_log *log, uint64_t until) {
    int rc = submit_sealed_io_locked(log);
    if (rc == 0) rc = reap_all_io_locked(log);
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
        if (rc == 0) rc = reap_all_io_locked(log);
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
        fl_inflight sync = {.is_sync = 1, .fd = entry->write_fd};
        rc = inflight_send_io_locked(log, sync, --dirty_count > 0);
        entry->dirty = 0;
    }
    pthread_rwlock_unlock(&log->segments_lock);
    if (rc == 0) rc = fl_device_submit(&log->device);
    if (rc == 0) rc = reap_all_io_locked(log);
    /* Invariant 4: the commit lets go of the device only once its writes completed. */
    assert(rc < 0 || log->inflight_count == 0);
    return rc;
}
