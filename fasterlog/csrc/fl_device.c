/* The device: where writes and syncs go.
 *
 * Two backends share one queue-then-reap interface so the core never knows which runs:
 * - io_uring: operations are queued as SQEs and run in the kernel while the caller goes on;
 *   a write linked to a sync (IOSQE_IO_LINK) costs one system call for both.
 * - plain: pwrite and fdatasync run at once in the caller; completions are queued for reap.
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
    if (injected < 0) return ready_push(device, tag, injected);
    /* A dsync write is also a sync: it takes the sync's fault too. */
    if (dsync) {
        int ignored;
        injected = fault_check(device, FL_FAULT_FSYNC, 0, &ignored);
        if (injected < 0) return ready_push(device, tag, injected);
    }
    if (shorten) size = FL_ALIGN_DOWN(size / 2, FL_SECTOR_SIZE_BYTES);
    if (device->backend == FL_IO_PLAIN) {
        struct iovec vector = {(void *)buffer, (size_t)size};
        ssize_t written = pwritev2(fd, &vector, 1, (off_t)offset, dsync ? RWF_DSYNC : 0);
        return ready_push(device, tag, written < 0 ? -errno : (int32_t)written);
    }
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
    if (injected < 0) return ready_push(device, tag, injected);
    if (device->backend == FL_IO_PLAIN) {
        int rc = fdatasync(fd);
        return ready_push(device, tag, rc < 0 ? -errno : 0);
    }
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
