/* The device: where writes and syncs go.
 *
 * Two backends share one queue-then-reap interface so the core never knows which runs:
 * - io_uring: operations are queued as SQEs and run in the kernel while the caller goes on;
 *   a write linked to a sync (IOSQE_IO_LINK) costs one system call for both.
 * - plain: pwrite and fdatasync run at once in the caller; completions are queued for reap.
 *   A write that carries its own sync (RWF_DSYNC) runs this way on both backends.
 *   Used when the kernel refuses io_uring (sysctl kernel.io_uring_disabled, seccomp filters
 *   such as Docker's default) or when asked for.
 * A fault layer sits in front of both: when armed, the chosen operation fails with the chosen
 * errno (or a write goes short) without reaching the kernel, so tests can fail any write or
 * sync by its index. Faults cost one predictable branch per operation, not per append. */
#include "fl_internal.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* The recording layer (end of this file): called after an operation is handed to the kernel. */
static void trace_device_write(int fd, const void *buffer, uint64_t size, uint64_t offset,
                               int dsync);
static void trace_device_sync(int fd);
static void trace_device_fault(int32_t op, int32_t result);

int fl_device_init(fl_device *device, int32_t backend_wanted, int32_t *refused_out) {
    memset(device, 0, sizeof *device);
    *refused_out = 0;
    if (backend_wanted != FL_IO_PLAIN) {
        int rc = io_uring_queue_init(FL_RING_ENTRIES_COUNT, &device->ring, 0);
        if (rc == 0) {
            device->backend = FL_IO_URING;
            return 0;
        }
        *refused_out = rc;
        if (backend_wanted == FL_IO_URING) return rc;
    }
    device->backend = FL_IO_PLAIN;
    return 0;
}

void fl_device_destroy(fl_device *device) {
    if (device->backend == FL_IO_URING) io_uring_queue_exit(&device->ring);
    device->backend = 0;
}

static int ready_push(fl_device *device, uint64_t tag, int32_t result) {
    if (device->ready_count >= FL_INFLIGHT_MAX) return -EOVERFLOW;
    device->ready[device->ready_count].tag = tag;
    device->ready[device->ready_count].result = result;
    device->ready_count++;
    return 0;
}

/* Returns 0 to let the operation through, or the result to complete it with instead. */
static int32_t fault_check(fl_device *device, int32_t op, uint64_t size, int *shorten) {
    fl_fault *fault = &device->fault;
    *shorten = 0;
    if (!(fault->ops & op)) return 0;
    if (fault->after_count > 0) {
        fault->after_count--;
        return 0;
    }
    if (!fault->persistent) fault->ops = 0;
    if (fault->short_write && op == FL_FAULT_WRITE && size >= 2 * FL_SECTOR_SIZE_BYTES) {
        *shorten = 1;
        return 0;
    }
    return -(fault->error ? fault->error : EIO);
}

static struct io_uring_sqe *ring_sqe(fl_device *device) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&device->ring);
    if (sqe == NULL) {
        /* The submission queue is full: push what is queued to the kernel and try again. */
        int rc = fl_device_submit(device);
        if (rc < 0) return NULL;
        sqe = io_uring_get_sqe(&device->ring);
    }
    return sqe;
}

int fl_device_write(fl_device *device, int fd, const void *buffer, uint64_t size,
                    uint64_t offset, uint64_t tag, int link, int dsync) {
    int shorten;
    int32_t injected = fault_check(device, FL_FAULT_WRITE, size, &shorten);
    if (injected < 0) {
        trace_device_fault(FL_FAULT_WRITE, injected);
        return ready_push(device, tag, injected);
    }
    /* A dsync write is also a sync: it takes the sync's fault too. */
    if (dsync) {
        int ignored;
        injected = fault_check(device, FL_FAULT_FSYNC, 0, &ignored);
        if (injected < 0) {
            trace_device_fault(FL_FAULT_FSYNC, injected);
            return ready_push(device, tag, injected);
        }
    }
    if (shorten) size = FL_ALIGN_DOWN(size / 2, FL_SECTOR_SIZE_BYTES);
    if (device->backend == FL_IO_PLAIN || dsync) {
        /* A dsync write (a commit's one write) runs here on both backends: through io_uring
         * an O_DIRECT write with RWF_DSYNC completes in a kernel worker, which a busy machine
         * schedules late (see flush_and_sync_io_locked). */
        struct iovec vector = {(void *)buffer, (size_t)size};
        ssize_t written = pwritev2(fd, &vector, 1, (off_t)offset, dsync ? RWF_DSYNC : 0);
        if (written > 0) trace_device_write(fd, buffer, (uint64_t)written, offset, dsync);
        return ready_push(device, tag, written < 0 ? -errno : (int32_t)written);
    }
    /* io_uring: recorded when queued; the core waits for a write before relying on it. */
    trace_device_write(fd, buffer, size, offset, dsync);
    struct io_uring_sqe *sqe = ring_sqe(device);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_write(sqe, fd, buffer, (unsigned)size, offset);
    if (dsync) sqe->rw_flags = RWF_DSYNC;
    io_uring_sqe_set_data64(sqe, tag);
    if (link) sqe->flags |= IOSQE_IO_LINK;
    device->queued_count++;
    return 0;
}

int fl_device_fsync(fl_device *device, int fd, uint64_t tag, int link) {
    int shorten;
    int32_t injected = fault_check(device, FL_FAULT_FSYNC, 0, &shorten);
    if (injected < 0) {
        trace_device_fault(FL_FAULT_FSYNC, injected);
        return ready_push(device, tag, injected);
    }
    if (device->backend == FL_IO_PLAIN) {
        int rc = fdatasync(fd);
        if (rc == 0) trace_device_sync(fd);
        return ready_push(device, tag, rc < 0 ? -errno : 0);
    }
    trace_device_sync(fd);
    struct io_uring_sqe *sqe = ring_sqe(device);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, tag);
    if (link) sqe->flags |= IOSQE_IO_LINK;
    device->queued_count++;
    return 0;
}

int fl_device_submit(fl_device *device) {
    if (device->backend != FL_IO_URING || device->queued_count == 0) return 0;
    int rc;
    do {
        rc = io_uring_submit(&device->ring);
    } while (rc == -EINTR);
    if (rc < 0) return rc;
    device->inflight_count += (uint32_t)rc;
    device->queued_count -= (uint32_t)rc;
    return 0;
}

int fl_device_reap(fl_device *device, fl_completion *out, uint32_t capacity, uint32_t wait_count) {
    uint32_t count = 0;
    while (device->ready_count > 0 && count < capacity) {
        out[count++] = device->ready[0];
        device->ready_count--;
        memmove(device->ready, device->ready + 1, device->ready_count * sizeof device->ready[0]);
    }
    if (device->backend != FL_IO_URING) return (int)count;
    int rc = fl_device_submit(device);
    if (rc < 0) return rc;
    while (count < capacity && device->inflight_count > 0) {
        struct io_uring_cqe *cqe;
        if (count < wait_count) {
            rc = io_uring_wait_cqe(&device->ring, &cqe);
            if (rc == -EINTR) continue;
        } else {
            rc = io_uring_peek_cqe(&device->ring, &cqe);
            if (rc == -EAGAIN) break;
        }
        if (rc < 0) return rc;
        out[count].tag = io_uring_cqe_get_data64(cqe);
        out[count].result = cqe->res;
        count++;
        io_uring_cqe_seen(&device->ring, cqe);
        device->inflight_count--;
    }
    return (int)count;
}

/* ------------------------------------------------------------------ I/O trace
 *
 * The power-loss tests need to know which bytes reached the page cache and which were made
 * durable, in order. Kill -9 cannot drop the page cache, so instead every operation that
 * matters for that is recorded here (after the kernel accepted it) and Python builds the states
 * a power cut could leave. One process-wide buffer behind one mutex: the tests trace one log at
 * a time, and the order between threads (the zero-ahead thread, the committer) is the order
 * the records land in. */

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static pthread_mutex_t trace_mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_int trace_on;
static uint8_t *trace_buffer;
static uint64_t trace_used_bytes;
static uint64_t trace_capacity_bytes;
static int trace_overflowed;

int fl_trace_start(uint64_t capacity_bytes) {
    uint8_t *buffer = malloc(capacity_bytes ? capacity_bytes : 1);
    if (buffer == NULL) return FL_E_NOMEM;
    pthread_mutex_lock(&trace_mutex);
    free(trace_buffer);
    trace_buffer = buffer;
    trace_used_bytes = 0;
    trace_capacity_bytes = capacity_bytes;
    trace_overflowed = 0;
    atomic_store(&trace_on, 1);
    pthread_mutex_unlock(&trace_mutex);
    return 0;
}

void fl_trace_stop(void) {
    atomic_store(&trace_on, 0);
}

int64_t fl_trace_size(void) {
    pthread_mutex_lock(&trace_mutex);
    int64_t size = trace_overflowed ? FL_E_BUFFER : (int64_t)trace_used_bytes;
    pthread_mutex_unlock(&trace_mutex);
    return size;
}

int64_t fl_trace_copy(void *buffer, size_t capacity) {
    pthread_mutex_lock(&trace_mutex);
    int64_t rc = FL_E_BUFFER;
    if (!trace_overflowed && capacity >= trace_used_bytes) {
        if (trace_used_bytes) memcpy(buffer, trace_buffer, trace_used_bytes);
        rc = (int64_t)trace_used_bytes;
    }
    pthread_mutex_unlock(&trace_mutex);
    return rc;
}

/* The path a descriptor names (or, with `name`, a path under a directory descriptor). */
static uint32_t trace_path(int fd, const char *name, char *out, size_t capacity) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t length = readlink(link, out, capacity - 1);
    if (length < 0) length = 0;
    out[length] = 0;
    if (name != NULL) {
        int added = snprintf(out + length, capacity - (size_t)length, "/%s", name);
        if (added > 0) length += added;
        if ((size_t)length >= capacity) length = (ssize_t)capacity - 1;
    }
    return (uint32_t)length;
}

static void trace_record(uint32_t op, uint32_t flags, uint64_t offset, uint64_t size,
                         const char *name, uint32_t name_size, int fd, const void *data,
                         uint64_t data_size) {
    uint8_t header[FL_TRACE_HEADER_SIZE_BYTES];
    fl_store32(header, op);
    fl_store32(header + 4, flags);
    fl_store64(header + 8, offset);
    fl_store64(header + 16, size);
    fl_store32(header + 24, name_size);
    fl_store32(header + 28, (uint32_t)fd);
    pthread_mutex_lock(&trace_mutex);
    uint64_t needed = sizeof header + name_size + data_size;
    if (!trace_overflowed && trace_capacity_bytes - trace_used_bytes >= needed) {
        uint8_t *out = trace_buffer + trace_used_bytes;
        memcpy(out, header, sizeof header);
        if (name_size) memcpy(out + sizeof header, name, name_size);
        if (data_size) memcpy(out + sizeof header + name_size, data, data_size);
        trace_used_bytes += needed;
    } else {
        trace_overflowed = 1;
    }
    pthread_mutex_unlock(&trace_mutex);
}

static void trace_fd_op(uint32_t op, uint32_t flags, int fd, uint64_t offset, uint64_t size,
                        const void *data) {
    char path[4096];
    uint32_t path_size = trace_path(fd, NULL, path, sizeof path);
    int zeros = (flags & FL_TRACE_FLAG_ZEROS) != 0;
    trace_record(op, flags, offset, size, path, path_size, fd, zeros ? NULL : data,
                 op == FL_TRACE_WRITE && !zeros ? size : 0);
}

void fl_trace_mark(uint64_t value) {
    if (atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_record(FL_TRACE_MARK, 0, value, 0, NULL, 0, -1, NULL, 0);
}

void fl_trace_add(int32_t op, int32_t flags, uint64_t offset, uint64_t size, const char *name,
                  size_t name_size, const void *data, size_t data_size) {
    if (atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_record((uint32_t)op, (uint32_t)flags, offset, size, name, (uint32_t)name_size, -1,
                     data, data_size);
}

static void trace_device_write(int fd, const void *buffer, uint64_t size, uint64_t offset,
                               int dsync) {
    if (atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_fd_op(FL_TRACE_WRITE, FL_TRACE_FLAG_DEVICE | (dsync ? FL_TRACE_FLAG_DSYNC : 0), fd,
                    offset, size, buffer);
}

static void trace_device_sync(int fd) {
    if (atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_fd_op(FL_TRACE_SYNC, FL_TRACE_FLAG_DEVICE, fd, 0, 0, NULL);
}

static void trace_device_fault(int32_t op, int32_t result) {
    if (atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_record(FL_TRACE_FAULT, (uint32_t)op, (uint64_t)(int64_t)result, 0, NULL, 0, -1,
                     NULL, 0);
}

int fl_io_openat(int directory_fd, const char *name, int flags, int mode) {
    int fd = openat(directory_fd, name, flags, mode);
    if (fd >= 0 && (flags & O_CREAT) && atomic_load_explicit(&trace_on, memory_order_relaxed)) {
        char path[4096];
        uint32_t path_size = trace_path(directory_fd, name, path, sizeof path);
        trace_record(FL_TRACE_CREATE, (flags & O_TRUNC) ? FL_TRACE_FLAG_TRUNCATE : 0, 0, 0, path,
                     path_size, fd, NULL, 0);
    }
    return fd;
}

ssize_t fl_io_pwrite(int fd, const void *buffer, size_t size, uint64_t offset, int zeros) {
    ssize_t written = pwrite(fd, buffer, size, (off_t)offset);
    if (written > 0 && atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_fd_op(FL_TRACE_WRITE, zeros ? FL_TRACE_FLAG_ZEROS : 0, fd, offset, (uint64_t)written,
                    buffer);
    return written;
}

static int io_sync(int fd, int data_only) {
    int rc = data_only ? fdatasync(fd) : fsync(fd);
    if (rc == 0 && atomic_load_explicit(&trace_on, memory_order_relaxed)) {
        struct stat st;
        uint32_t flags = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? FL_TRACE_FLAG_DIRECTORY : 0;
        trace_fd_op(FL_TRACE_SYNC, flags, fd, 0, 0, NULL);
    }
    return rc;
}

int fl_io_fsync(int fd) { return io_sync(fd, 0); }
int fl_io_fdatasync(int fd) { return io_sync(fd, 1); }

int fl_io_fallocate(int fd, uint64_t size) {
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc == 0 && atomic_load_explicit(&trace_on, memory_order_relaxed))
        trace_fd_op(FL_TRACE_EXTEND, 0, fd, 0, size, NULL);
    return rc;
}

int fl_io_renameat(int directory_fd, const char *old_name, const char *new_name) {
    int rc = renameat(directory_fd, old_name, directory_fd, new_name);
    if (rc == 0 && atomic_load_explicit(&trace_on, memory_order_relaxed)) {
        char path[8192];
        uint32_t old_size = trace_path(directory_fd, old_name, path, 4096);
        uint32_t new_size = trace_path(directory_fd, new_name, path + old_size + 1, 4096);
        trace_record(FL_TRACE_RENAME, 0, 0, 0, path, old_size + 1 + new_size, directory_fd,
                     NULL, 0);
    }
    return rc;
}

int fl_io_unlinkat(int directory_fd, const char *name) {
    char path[4096];
    uint32_t path_size = 0;
    int tracing = atomic_load_explicit(&trace_on, memory_order_relaxed);
    if (tracing) path_size = trace_path(directory_fd, name, path, sizeof path);
    int rc = unlinkat(directory_fd, name, 0);
    if (rc == 0 && tracing)
        trace_record(FL_TRACE_UNLINK, 0, 0, 0, path, path_size, directory_fd, NULL, 0);
    return rc;
}

/* ------------------------------------------------------------------ named crash points
 *
 * kill -9 at a random moment rarely lands between two particular system calls; these points
 * let a test kill the writer exactly there. FASTERLOG_CRASH_AT is read once per process. */

static const char *const crash_point_names[] = {
    "after-write-before-sync",    /* commit: page writes queued and reaped, syncs not yet */
    "after-sync-before-meta",     /* commit: synced, the meta file not yet rewritten */
    "segment-create-before-dirsync", /* segment switch: file created, directory not synced */
    "meta-after-rename",          /* meta file renamed into place, directory not synced */
};

static pthread_once_t crash_once = PTHREAD_ONCE_INIT;
static char crash_name[64];
static atomic_long crash_countdown;

static void crash_read_environment(void) {
    const char *value = getenv("FASTERLOG_CRASH_AT");
    if (value == NULL || !*value) return;
    snprintf(crash_name, sizeof crash_name, "%s", value);
    long count = 1;
    char *colon = strchr(crash_name, ':');
    if (colon != NULL) {
        *colon = 0;
        count = atol(colon + 1);
        if (count < 1) count = 1;
    }
    atomic_store(&crash_countdown, count);
}

void fl_crash_point(const char *name) {
    pthread_once(&crash_once, crash_read_environment);
    if (crash_name[0] == 0 || strcmp(crash_name, name) != 0) return;
    if (atomic_fetch_sub(&crash_countdown, 1) == 1) {
        raise(SIGKILL);
        _exit(137); /* not reached */
    }
}

int fl_crash_points(char *names_out, size_t capacity) {
    size_t used = 0;
    int count = (int)(sizeof crash_point_names / sizeof crash_point_names[0]);
    if (capacity) names_out[0] = 0;
    for (int i = 0; i < count; i++) {
        int added = snprintf(names_out + used, capacity > used ? capacity - used : 0, "%s%s",
                             i ? "," : "", crash_point_names[i]);
        if (added > 0) used += (size_t)added;
    }
    return count;
}
