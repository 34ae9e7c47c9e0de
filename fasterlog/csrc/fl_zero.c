/* Preallocation.
 *
 * ext4 and XFS allocate fallocate()d space as "unwritten" extents: the first write into one
 * must also convert it, and the fdatasync after it then commits a journal transaction. On this
 * kind of machine that doubles the cost of a commit (about 390 µs instead of 200 µs for
 * 112 KiB). So a background thread writes zeros ahead of the tail, always beyond the page the
 * tail is in, and a log write into a range being zeroed waits for that zero write to finish
 * (the two must never be in flight together, or the zeros could land last). */
#include "fl_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void fl_zero_wait(fl_log *log, uint64_t start, uint64_t end) {
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

/* Starts the zero-filling thread; without it (pthread_create failed) only speed suffers. */
void fl_zero_start(fl_log *log) {
    log->zero_ahead_bytes = log->segment_size_bytes < FL_ZERO_AHEAD_MAX_BYTES
                                ? log->segment_size_bytes : FL_ZERO_AHEAD_MAX_BYTES;
    log->zero_running = 1;
    if (pthread_create(&log->zero_thread, NULL, zero_main, log) != 0) {
        log->zero_running = 0;
        log->zero_thread = 0;
    }
}

void fl_zero_stop(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int was_started = log->zero_thread != 0;
    log->zero_running = 0;
    pthread_cond_broadcast(&log->zero_cond);
    pthread_mutex_unlock(&log->mutex);
    if (was_started) pthread_join(log->zero_thread, NULL);
    log->zero_thread = 0;
}

/* A new log's first page, written as zeros and synced: the zero-filling thread stays beyond
 * the page the tail is in. */
int fl_zero_first_page(fl_log *log) {
    int write_fd, read_fd;
    int rc = fl_segment_fds(log, 0, 1, &write_fd, &read_fd);
    if (rc < 0) return rc;
    /* The page slot is all zeros before the first append; write it as the zero source. */
    uint8_t *zeros = log->memory;
    memset(zeros, 0, log->page_size_bytes);
    if (fl_io_pwrite(write_fd, zeros, log->page_size_bytes, 0, 1) != (ssize_t)log->page_size_bytes)
        return -EIO;
    return fl_io_fdatasync(write_fd);
}
