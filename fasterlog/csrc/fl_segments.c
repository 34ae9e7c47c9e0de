/* The segment files: names, the table of open descriptors, creation (with preallocation) and
 * deletion below the begin address.
 *
 * Address A lives in segment A / segment_size_bytes at file offset A % segment_size_bytes. The
 * table (fl_log.segments, under segments_lock) holds segment segments_base + i at index i. */
#include "fl_internal.h"

#include <dirent.h>
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

/* Grows the table so it covers `segment`; segments_lock held exclusively. The table starts at
 * the begin address's segment (recovery) and only truncation moves its base up, so a segment
 * below it lies below the begin address. */
int fl_segments_cover_locked(fl_log *log, uint64_t segment) {
    if (segment < log->segments_deleted_below) return FL_E_TRUNCATED;
    if (log->segments_count == 0) log->segments_base = segment;
    if (segment < log->segments_base) return FL_E_TRUNCATED;
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
    int grown = fstat(fd, &st) < 0 || (uint64_t)st.st_size < log->segment_size_bytes;
    if (grown) {
        /* Preallocate: overwriting allocated blocks syncs faster than growing the file, and a
         * full disk shows up here rather than in the middle of a commit. */
        int rc = fl_io_fallocate(fd, log->segment_size_bytes);
        if (rc != 0 && rc != -EOPNOTSUPP && rc != -EINVAL) {
            close(fd);
            return rc;
        }
    }
    /* The full size must be durable before the first commit into the file: recovery takes a
     * segment short below the committed address for a cut file (fl_recovery.c), and a
     * commit's data sync (RWF_DSYNC, fdatasync) is not promised to carry the preallocated
     * size beyond its data. Without this the power-loss states found newest segments ending
     * at their synced data, refused at open with nothing lost. Every writer session syncs
     * each segment it opens for writing once, so a size that a session of an older version
     * left unsynced is made durable too. */
    int rc = fl_io_fsync(fd);
    if (rc == 0 && grown) {
        fl_crash_point("segment-create-before-dirsync");
        /* The new directory entry must be durable before a commit relies on the file. */
        rc = fl_io_fsync(log->directory_fd);
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    entry->write_fd = fd;
    return 0;
}

/* The table entry of `segment` when it has the descriptors asked for; segments_lock held. */
static fl_segment *entry_if_open_locked(fl_log *log, uint64_t segment, int create) {
    if (log->segments_count == 0 || segment < log->segments_base ||
        segment - log->segments_base >= log->segments_count)
        return NULL;
    fl_segment *entry = &log->segments[segment - log->segments_base];
    return entry->read_fd >= 0 && (!create || entry->write_fd >= 0) ? entry : NULL;
}

/* Opens (with `create`, creates) the segment's descriptors; segments_lock held exclusively. */
static int segment_open_locked(fl_log *log, uint64_t segment, int create, fl_segment **out) {
    int rc = fl_segments_cover_locked(log, segment);
    if (rc < 0) return rc;
    fl_segment *entry = &log->segments[segment - log->segments_base];
    if (create && entry->write_fd < 0) rc = segment_create(log, segment, entry);
    if (rc == 0 && entry->read_fd < 0) {
        char name[64];
        fl_segment_name(segment, name, sizeof name);
        entry->read_fd = openat(log->directory_fd, name, O_RDONLY | O_CLOEXEC);
        if (entry->read_fd < 0) rc = errno == ENOENT ? FL_E_ADDRESS : -errno;
    }
    *out = entry;
    return rc;
}

int fl_segment_fds(fl_log *log, uint64_t segment, int create, int *write_fd, int *read_fd) {
    pthread_rwlock_rdlock(&log->segments_lock);
    fl_segment *entry = entry_if_open_locked(log, segment, create);
    if (entry != NULL) {
        if (write_fd) *write_fd = entry->write_fd;
        *read_fd = entry->read_fd;
        pthread_rwlock_unlock(&log->segments_lock);
        return 0;
    }
    pthread_rwlock_unlock(&log->segments_lock);

    pthread_rwlock_wrlock(&log->segments_lock);
    int rc = segment_open_locked(log, segment, create, &entry);
    if (rc == 0) {
        if (write_fd) *write_fd = entry->write_fd;
        *read_fd = entry->read_fd;
    }
    pthread_rwlock_unlock(&log->segments_lock);
    return rc;
}

int fl_segment_write_fd_io_locked(fl_log *log, uint64_t segment, int *write_fd) {
    pthread_rwlock_rdlock(&log->segments_lock);
    fl_segment *entry = entry_if_open_locked(log, segment, 1);
    if (entry != NULL) {
        /* Shared lock: the table cannot move; only this thread (io_mutex) writes `dirty`. */
        entry->dirty = 1;
        *write_fd = entry->write_fd;
        pthread_rwlock_unlock(&log->segments_lock);
        return 0;
    }
    pthread_rwlock_unlock(&log->segments_lock);
    pthread_rwlock_wrlock(&log->segments_lock);
    int rc = segment_open_locked(log, segment, 1, &entry);
    if (rc == 0) {
        entry->dirty = 1;
        *write_fd = entry->write_fd;
    }
    pthread_rwlock_unlock(&log->segments_lock);
    return rc;
}

int64_t fl_segment_pread(fl_log *log, uint64_t segment, void *buffer, uint64_t size,
                         uint64_t offset, uint64_t advise_bytes) {
    for (;;) {
        pthread_rwlock_rdlock(&log->segments_lock);
        if (segment < log->segments_deleted_below) {
            pthread_rwlock_unlock(&log->segments_lock);
            return FL_E_TRUNCATED;
        }
        fl_segment *entry = entry_if_open_locked(log, segment, 0);
        if (entry != NULL) {
            /* Race tests hold a read here, between the lookup and the pread (locking rule 3
             * says truncation then waits for it). */
            fl_read_pause_point(&log->read_pause, FL_FAULT_PAUSE_BEFORE_PREAD);
            if (advise_bytes > 0)
                posix_fadvise(entry->read_fd, (off_t)offset, (off_t)advise_bytes,
                              POSIX_FADV_WILLNEED);
            int64_t got = fl_pread_full(entry->read_fd, buffer, size, offset);
            pthread_rwlock_unlock(&log->segments_lock);
            return got;
        }
        pthread_rwlock_unlock(&log->segments_lock);
        /* Not open yet: open it, then read under a fresh shared hold (it may be deleted in
         * between, which the next turn reports). */
        pthread_rwlock_wrlock(&log->segments_lock);
        int rc = segment_open_locked(log, segment, 0, &entry);
        pthread_rwlock_unlock(&log->segments_lock);
        if (rc < 0) return rc;
    }
}

/* The segment number of a file named exactly as fl_segment_name names it, or -1. */
static int64_t segment_of_name(const char *name) {
    if (strncmp(name, "segment-", 8) != 0 || name[8] < '0' || name[8] > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long segment = strtoull(name + 8, &end, 10);
    if (errno != 0 || strcmp(end, ".fl") != 0 || segment > INT64_MAX) return -1;
    char canonical[64];
    fl_segment_name(segment, canonical, sizeof canonical);
    return strcmp(canonical, name) == 0 ? (int64_t)segment : -1;
}

/* Unlinks every segment file numbered below `first_kept`. One pass over the directory, whose
 * entries are the log's own files: its cost grows with the files there, not with addresses. */
static void unlink_files_below(int directory_fd, uint64_t first_kept) {
    int fd = dup(directory_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) {
        if (fd >= 0) close(fd);
        return; /* the next truncation or open tries again */
    }
    /* A dup shares the directory's read position, which an earlier pass left at its end. */
    rewinddir(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        int64_t segment = segment_of_name(entry->d_name);
        if (segment >= 0 && (uint64_t)segment < first_kept)
            (void)fl_io_unlinkat(directory_fd, entry->d_name);
    }
    closedir(dir);
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
    /* Reads that looked the begin address up before it moved find out here (fl_segment_pread)
     * rather than through a descriptor this loop closed. */
    if (log->segments_deleted_below < first_kept) log->segments_deleted_below = first_kept;
    /* Older segment files may exist with no table entry: the table starts at the begin
     * segment at recovery, so files that an interrupted deletion (a crash between the meta
     * write and the unlinks) left below it are never in the table. Look in the directory
     * rather than walking down from first_kept: such files need not be contiguous with the
     * table, and a walk that stops at the first missing name never reaches them. */
    unlink_files_below(log->directory_fd, first_kept);
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
