/* The segment files: names, the table of open descriptors, creation (with preallocation) and
 * deletion below the begin address.
 *
 * Address A lives in segment A / segment_size_bytes at file offset A % segment_size_bytes. The
 * table (fl_log.segments, under segments_lock) holds segment segments_base + i at index i. */
#include "fl_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void fl_segment_name(uint64_t segment, char *name, size_t size) {
    snprintf(name, size, "segment-%08llu.fl", (unsigned long long)segment);
}

/* Grows the table so it covers `segment`; segments_lock held exclusively. */
int fl_segments_cover_locked(fl_log *log, uint64_t segment) {
    if (log->segments_count == 0) log->segments_base = segment;
    if (segment < log->segments_base) return FL_E_ADDRESS;
    uint64_t needed = segment - log->segments_base + 1;
    if (needed <= log->segments_count) return 0;
    if (needed > log->segments_capacity) {
        uint64_t capacity = log->segments_capacity ? log->segments_capacity * 2 : 16;
        while (capacity < needed) capacity *= 2;
        fl_segment *grown = realloc(log->segments, capacity * sizeof *grown);
        if (grown == NULL) return FL_E_NOMEM;
        log->segments = grown;
        log->segments_capacity = capacity;
    }
    for (uint64_t i = log->segments_count; i < needed; i++) {
        log->segments[i].write_fd = -1;
        log->segments[i].read_fd = -1;
        log->segments[i].dirty = 0;
    }
    log->segments_count = needed;
    return 0;
}

static int segment_create(fl_log *log, uint64_t segment, fl_segment *entry) {
    char name[64];
    fl_segment_name(segment, name, sizeof name);
    int flags = O_RDWR | O_CREAT | O_CLOEXEC;
    int fd = -1;
    if (log->direct_io) {
        fd = fl_io_openat(log->directory_fd, name, flags | O_DIRECT, 0644);
        if (fd == -EINVAL) log->direct_io = 0; /* tmpfs and friends */
    }
    if (fd < 0) fd = fl_io_openat(log->directory_fd, name, flags, 0644);
    if (fd < 0) return fd;
    struct stat st;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < log->segment_size_bytes) {
        /* Preallocate: overwriting allocated blocks syncs faster than growing the file, and a
         * full disk shows up here rather than in the middle of a commit. */
        int rc = fl_io_fallocate(fd, log->segment_size_bytes);
        if (rc != 0 && rc != -EOPNOTSUPP && rc != -EINVAL) {
            close(fd);
            return rc;
        }
        fl_crash_point("segment-create-before-dirsync");
        /* The new directory entry must be durable before a commit relies on the file. */
        rc = fl_io_fsync(log->directory_fd);
        if (rc < 0) {
            close(fd);
            return rc;
        }
    }
    entry->write_fd = fd;
    return 0;
}

/* Returns the descriptors of a segment, opening (and with `create`, creating) it. Takes
 * segments_lock itself. The returned descriptors stay valid until the segment is deleted,
 * which only happens below the begin address. */
int fl_segment_fds(fl_log *log, uint64_t segment, int create, int *write_fd, int *read_fd) {
    pthread_rwlock_rdlock(&log->segments_lock);
    if (log->segments_count > 0 && segment >= log->segments_base &&
        segment - log->segments_base < log->segments_count) {
        fl_segment *entry = &log->segments[segment - log->segments_base];
        if (entry->read_fd >= 0 && (!create || entry->write_fd >= 0)) {
            if (write_fd) *write_fd = entry->write_fd;
            *read_fd = entry->read_fd;
            pthread_rwlock_unlock(&log->segments_lock);
            return 0;
        }
    }
    pthread_rwlock_unlock(&log->segments_lock);

    pthread_rwlock_wrlock(&log->segments_lock);
    int rc = fl_segments_cover_locked(log, segment);
    if (rc == 0) {
        fl_segment *entry = &log->segments[segment - log->segments_base];
        if (create && entry->write_fd < 0) rc = segment_create(log, segment, entry);
        if (rc == 0 && entry->read_fd < 0) {
            char name[64];
            fl_segment_name(segment, name, sizeof name);
            entry->read_fd = openat(log->directory_fd, name, O_RDONLY | O_CLOEXEC);
            if (entry->read_fd < 0) rc = errno == ENOENT ? FL_E_ADDRESS : -errno;
        }
        if (rc == 0) {
            if (write_fd) *write_fd = entry->write_fd;
            *read_fd = entry->read_fd;
        }
    }
    pthread_rwlock_unlock(&log->segments_lock);
    return rc;
}

/* Deletes whole segments below `begin_address`. The caller made the new begin durable. */
void fl_segments_delete_below(fl_log *log, uint64_t begin_address) {
    uint64_t first_kept = begin_address / log->segment_size_bytes;
    pthread_rwlock_wrlock(&log->segments_lock);
    while (log->segments_count > 0 && log->segments_base < first_kept) {
        fl_segment *entry = &log->segments[0];
        if (entry->write_fd >= 0) close(entry->write_fd);
        if (entry->read_fd >= 0) close(entry->read_fd);
        char name[64];
        fl_segment_name(log->segments_base, name, sizeof name);
        fl_io_unlinkat(log->directory_fd, name);
        memmove(log->segments, log->segments + 1, (log->segments_count - 1) * sizeof *entry);
        log->segments_count--;
        log->segments_base++;
    }
    /* Older segments may exist on disk without a table entry (never opened since recovery). */
    for (uint64_t s = first_kept; s-- > 0;) {
        char name[64];
        fl_segment_name(s, name, sizeof name);
        if (fl_io_unlinkat(log->directory_fd, name) == -ENOENT) break;
    }
    pthread_rwlock_unlock(&log->segments_lock);
    fl_io_fsync(log->directory_fd);
}

/* Closes every descriptor and empties the table (at shutdown). */
void fl_segments_close_all(fl_log *log) {
    pthread_rwlock_wrlock(&log->segments_lock);
    for (uint64_t i = 0; i < log->segments_count; i++) {
        if (log->segments[i].write_fd >= 0) close(log->segments[i].write_fd);
        if (log->segments[i].read_fd >= 0) close(log->segments[i].read_fd);
    }
    free(log->segments);
    log->segments = NULL;
    log->segments_count = 0;
    pthread_rwlock_unlock(&log->segments_lock);
}
