/* The device: where the log's writes and syncs go, as a stack of layers chosen when the log
 * opens, as FASTER's cc/src wraps a device in a fault-injecting one.
 *
 * The bottom is one of two backends sharing one queue-then-reap interface, so the core never
 * knows which runs:
 * - io_uring: operations are queued as SQEs and run in the kernel while the caller goes on;
 *   a write linked to a sync (IOSQE_IO_LINK) costs one system call for both.
 * - plain: pwrite and fdatasync run at once in the caller; completions are queued for reap.
 *   A write that carries its own sync (RWF_DSYNC) runs this way on both backends.
 *   Used when the kernel refuses io_uring (sysctl kernel.io_uring_disabled, seccomp filters
 *   such as Docker's default) or when asked for.
 * Two layers exist for tests, and an operation passes through one only while it is stacked:
 * - trace: records each write and sync in the I/O trace (fl_trace.c) once the kernel took it.
 *   Stacked on every open device while a trace runs: a device opened during a trace gets it
 *   at open, and fl_trace_start/stop restack the devices already open.
 * - fault: fails the chosen operation with the chosen errno (or shortens a write) without
 *   reaching the kernel, so tests can fail any write or sync by its index. Stacked by
 *   fl_fault_set (fl_device_fault_set) when a fault is armed, taken off once it fired for the
 *   last time or is cleared. It may be armed long after open, so the stack is switched then,
 *   under the same mutex every operation runs under (rule 1), rather than chosen at open by a
 *   setting: a log in production never pays for it, and no test needs to know in advance.
 * So the device of a log in production is its backend's table alone: no fault or trace check
 * on its path. Reads do not pass through the device; fl_fault_set arms pauses on their path
 * instead (the read pauses below), which cost an unarmed read one relaxed load.
 *
 * Rules:
 * 1. Every operation on a device, and every change of its stack, happens with the log's
 *    io_mutex (driver_mutex) held: a stack never changes under a running operation.
 * 2. Open devices are on one list (for fl_trace_start/stop). Its mutex is taken before a
 *    device's driver_mutex, never while holding one: fl_device_open and fl_device_unlink run
 *    without driver_mutex. */
#include "fl_internal.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int fl_device_complete(fl_device *device, uint64_t tag, int32_t result) {
    if (device->ready_count >= FL_INFLIGHT_MAX) return -EOVERFLOW;
    device->ready[device->ready_count].tag = tag;
    device->ready[device->ready_count].result = result;
    device->ready_count++;
    return 0;
}

/* Moves completions from `ready` to `out`; returns how many. */
static uint32_t take_ready(fl_device *device, fl_completion *out, uint32_t capacity) {
    uint32_t count = 0;
    while (device->ready_count > 0 && count < capacity) {
        out[count++] = device->ready[0];
        device->ready_count--;
        memmove(device->ready, device->ready + 1, device->ready_count * sizeof device->ready[0]);
    }
    return count;
}

/* ------------------------------------------------------------------ plain backend */

static int plain_write(fl_device *device, int fd, const void *buffer, uint64_t size,
                       uint64_t offset, uint64_t tag, int link, int dsync) {
    (void)link; /* operations run in order anyway */
    struct iovec vector = {(void *)buffer, (size_t)size};
    ssize_t written = pwritev2(fd, &vector, 1, (off_t)offset, dsync ? RWF_DSYNC : 0);
    return fl_device_complete(device, tag, written < 0 ? -errno : (int32_t)written);
}

static int plain_fsync(fl_device *device, int fd, uint64_t tag, int link) {
    (void)link;
    int rc = fdatasync(fd);
    return fl_device_complete(device, tag, rc < 0 ? -errno : 0);
}

static int plain_submit(fl_device *device) {
    (void)device;
    return 0;
}

static int plain_reap(fl_device *device, fl_completion *out, uint32_t capacity,
                      uint32_t wait_count) {
    (void)wait_count; /* every operation completed when it was queued */
    return (int)take_ready(device, out, capacity);
}

static const fl_device_ops plain_ops = {plain_write, plain_fsync, plain_submit, plain_reap};

/* ------------------------------------------------------------------ io_uring backend */

static int uring_submit(fl_device *device) {
    if (device->queued_count == 0) return 0;
    int rc;
    do {
        rc = io_uring_submit(&device->ring);
    } while (rc == -EINTR);
    if (rc < 0) return rc;
    device->inflight_count += (uint32_t)rc;
    device->queued_count -= (uint32_t)rc;
    return 0;
}

static struct io_uring_sqe *ring_sqe(fl_device *device) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&device->ring);
    if (sqe == NULL) {
        /* The submission queue is full: push what is queued to the kernel and try again. */
        int rc = uring_submit(device);
        if (rc < 0) return NULL;
        sqe = io_uring_get_sqe(&device->ring);
    }
    return sqe;
}

static int uring_write(fl_device *device, int fd, const void *buffer, uint64_t size,
                       uint64_t offset, uint64_t tag, int link, int dsync) {
    /* A dsync write (a commit's one write) runs in this thread: through io_uring an O_DIRECT
     * write with RWF_DSYNC completes in a kernel worker, which a busy machine schedules late
     * (see fl_drive_flush_and_sync_io_locked). */
    if (dsync) return plain_write(device, fd, buffer, size, offset, tag, link, dsync);
    struct io_uring_sqe *sqe = ring_sqe(device);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_write(sqe, fd, buffer, (unsigned)size, offset);
    io_uring_sqe_set_data64(sqe, tag);
    sqe->flags |= device->sqe_flags_forced;
    if (link) sqe->flags |= IOSQE_IO_LINK;
    device->queued_count++;
    return 0;
}

static int uring_fsync(fl_device *device, int fd, uint64_t tag, int link) {
    struct io_uring_sqe *sqe = ring_sqe(device);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, tag);
    sqe->flags |= device->sqe_flags_forced;
    if (link) sqe->flags |= IOSQE_IO_LINK;
    device->queued_count++;
    return 0;
}

static int uring_reap(fl_device *device, fl_completion *out, uint32_t capacity,
                      uint32_t wait_count) {
    uint32_t count = take_ready(device, out, capacity);
    int rc = uring_submit(device);
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

static const fl_device_ops uring_ops = {uring_write, uring_fsync, uring_submit, uring_reap};

/* ------------------------------------------------------------------ trace layer
 *
 * Records what the backend took: an operation that ran at once (its completion is in `ready`
 * when the backend returns) once it succeeded, with the bytes it wrote; an operation queued
 * on the ring when it was queued (the core waits for a write before relying on it). */

static int ran_at_once(const fl_device *device, uint32_t ready_before, int32_t *result_out) {
    if (device->ready_count == ready_before) return 0;
    *result_out = device->ready[device->ready_count - 1].result;
    return 1;
}

static int trace_write(fl_device *device, int fd, const void *buffer, uint64_t size,
                       uint64_t offset, uint64_t tag, int link, int dsync) {
    uint32_t ready_before = device->ready_count;
    int rc = device->backend_ops->write(device, fd, buffer, size, offset, tag, link, dsync);
    if (rc < 0) return rc;
    int32_t written = (int32_t)size;
    if (ran_at_once(device, ready_before, &written) && written <= 0) return 0;
    fl_trace_fd_op(FL_TRACE_WRITE, FL_TRACE_FLAG_DEVICE | (dsync ? FL_TRACE_FLAG_DSYNC : 0), fd,
                   offset, (uint64_t)written, buffer);
    return 0;
}

static int trace_fsync(fl_device *device, int fd, uint64_t tag, int link) {
    uint32_t ready_before = device->ready_count;
    int rc = device->backend_ops->fsync(device, fd, tag, link);
    if (rc < 0) return rc;
    int32_t result = 0;
    if (ran_at_once(device, ready_before, &result) && result < 0) return 0;
    fl_trace_fd_op(FL_TRACE_SYNC, FL_TRACE_FLAG_DEVICE, fd, 0, 0, NULL);
    return 0;
}

static int trace_submit(fl_device *device) { return device->backend_ops->submit(device); }

static int trace_reap(fl_device *device, fl_completion *out, uint32_t capacity,
                      uint32_t wait_count) {
    return device->backend_ops->reap(device, out, capacity, wait_count);
}

static const fl_device_ops trace_ops = {trace_write, trace_fsync, trace_submit, trace_reap};

/* ------------------------------------------------------------------ fault layer */

static void stack_layers(fl_device *device);

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

/* Completes the operation with the injected result instead of running it. */
static int inject(fl_device *device, int32_t op, uint64_t tag, int32_t injected) {
    if (device->traced)
        fl_trace_record(FL_TRACE_FAULT, (uint32_t)op, (uint64_t)(int64_t)injected, 0, NULL, 0, -1,
                        NULL, 0);
    return fl_device_complete(device, tag, injected);
}

static int fault_write(fl_device *device, int fd, const void *buffer, uint64_t size,
                       uint64_t offset, uint64_t tag, int link, int dsync) {
    int shorten;
    int32_t injected = fault_check(device, FL_FAULT_WRITE, size, &shorten);
    int32_t op = FL_FAULT_WRITE;
    if (injected == 0 && dsync) {
        /* A dsync write is also a sync: it takes the sync's fault too. */
        int ignored;
        injected = fault_check(device, FL_FAULT_FSYNC, 0, &ignored);
        op = FL_FAULT_FSYNC;
    }
    int rc;
    if (injected < 0) {
        rc = inject(device, op, tag, injected);
    } else {
        if (shorten) size = FL_ALIGN_DOWN(size / 2, FL_SECTOR_SIZE_BYTES);
        rc = device->below_fault->write(device, fd, buffer, size, offset, tag, link, dsync);
    }
    if (device->fault.ops == 0) stack_layers(device); /* fired for the last time */
    return rc;
}

static int fault_fsync(fl_device *device, int fd, uint64_t tag, int link) {
    int shorten;
    int32_t injected = fault_check(device, FL_FAULT_FSYNC, 0, &shorten);
    int rc = injected < 0 ? inject(device, FL_FAULT_FSYNC, tag, injected)
                          : device->below_fault->fsync(device, fd, tag, link);
    if (device->fault.ops == 0) stack_layers(device);
    return rc;
}

static int fault_submit(fl_device *device) { return device->below_fault->submit(device); }

static int fault_reap(fl_device *device, fl_completion *out, uint32_t capacity,
                      uint32_t wait_count) {
    return device->below_fault->reap(device, out, capacity, wait_count);
}

static const fl_device_ops fault_ops = {fault_write, fault_fsync, fault_submit, fault_reap};

/* ------------------------------------------------------------------ read pauses
 *
 * The fault layer's counterpart for reads (fl_internal.h): a read held at a named point of the
 * read path until the test lets it go, so a race with truncation happens exactly there rather
 * than once in thousands of rounds. One read is held per arming; it waits at most
 * FL_FAULT_PAUSE_MAX_MS, so a test that fails before its release cannot hang the log. */

void fl_read_pause_init(fl_read_pause *pause) {
    atomic_init(&pause->armed, 0);
    pause->after_count = 0;
    pause->held_count = 0;
    pause->release_number = 0;
    pause->gave_up = 0;
    pthread_mutex_init(&pause->mutex, NULL);
    pthread_cond_init(&pause->cond, NULL);
}

void fl_read_pause_destroy(fl_read_pause *pause) {
    pthread_mutex_destroy(&pause->mutex);
    pthread_cond_destroy(&pause->cond);
}

void fl_read_pause_arm(fl_read_pause *pause, int32_t points, uint64_t after_count) {
    pthread_mutex_lock(&pause->mutex);
    pause->release_number++; /* a read held by an earlier arming goes on */
    pause->after_count = after_count;
    pause->gave_up = 0;
    atomic_store(&pause->armed, points);
    pthread_cond_broadcast(&pause->cond);
    pthread_mutex_unlock(&pause->mutex);
}

void fl_read_pause_hold(fl_read_pause *pause, int32_t point) {
    pthread_mutex_lock(&pause->mutex);
    int take = (atomic_load(&pause->armed) & point) != 0; /* another read may have taken it */
    if (take && pause->after_count > 0) {
        pause->after_count--;
        take = 0;
    }
    if (take) {
        atomic_store(&pause->armed, 0); /* one read per arming */
        uint64_t release_number = pause->release_number;
        pause->held_count++;
        pthread_cond_broadcast(&pause->cond);
        struct timespec deadline = fl_deadline_after_us((int64_t)FL_FAULT_PAUSE_MAX_MS * 1000);
        int rc = 0;
        while (pause->release_number == release_number && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&pause->cond, &pause->mutex, &deadline);
        if (pause->release_number == release_number) pause->gave_up = 1;
        pause->held_count--;
    }
    pthread_mutex_unlock(&pause->mutex);
}

int fl_read_pause_wait_held(fl_read_pause *pause, int64_t timeout_us) {
    pthread_mutex_lock(&pause->mutex);
    struct timespec deadline = fl_deadline_after_us(timeout_us);
    int rc = 0;
    while (pause->held_count == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&pause->cond, &pause->mutex, &deadline);
    int held = pause->held_count > 0;
    pthread_mutex_unlock(&pause->mutex);
    return held ? 0 : FL_E_TIMEOUT;
}

int fl_read_pause_release(fl_read_pause *pause) {
    pthread_mutex_lock(&pause->mutex);
    int rc = pause->gave_up ? FL_E_TIMEOUT : pause->held_count > 0 ? 1 : 0;
    atomic_store(&pause->armed, 0);
    pause->gave_up = 0;
    pause->release_number++;
    pthread_cond_broadcast(&pause->cond);
    pthread_mutex_unlock(&pause->mutex);
    return rc;
}

/* ------------------------------------------------------------------ stacks */

/* Puts the stack together: fault over trace over the backend, each layer only when wanted.
 * Rule 1: driver_mutex held, or the device not yet visible to any other thread. */
static void stack_layers(fl_device *device) {
    if (device->backend_ops == NULL) return; /* not open: a read-only log has no device */
    device->below_fault = device->traced ? &trace_ops : device->backend_ops;
    device->ops = device->fault.ops ? &fault_ops : device->below_fault;
}

static pthread_mutex_t open_devices_mutex = PTHREAD_MUTEX_INITIALIZER;
static fl_device *open_devices_first;

int fl_device_open(fl_device *device, int32_t backend_wanted, int32_t *refused_out,
                   pthread_mutex_t *driver_mutex) {
    memset(device, 0, sizeof *device);
    *refused_out = 0;
    device->backend = FL_IO_PLAIN;
    device->backend_ops = &plain_ops;
    if (backend_wanted != FL_IO_PLAIN) {
        int rc = io_uring_queue_init(FL_RING_ENTRIES_COUNT, &device->ring, 0);
        if (rc == 0) {
            device->backend = FL_IO_URING;
            device->backend_ops = &uring_ops;
        } else {
            *refused_out = rc;
            if (backend_wanted == FL_IO_URING) {
                device->backend = 0;
                device->backend_ops = NULL;
                return rc;
            }
        }
    }
    device->driver_mutex = driver_mutex;
    pthread_mutex_lock(&open_devices_mutex);
    device->traced = fl_trace_running();
    stack_layers(device);
    device->next_open = open_devices_first;
    open_devices_first = device;
    device->linked = 1;
    pthread_mutex_unlock(&open_devices_mutex);
    return 0;
}

void fl_device_unlink(fl_device *device) {
    pthread_mutex_lock(&open_devices_mutex);
    for (fl_device **link = &open_devices_first; *link != NULL; link = &(*link)->next_open) {
        if (*link == device) {
            *link = device->next_open;
            break;
        }
    }
    device->linked = 0;
    pthread_mutex_unlock(&open_devices_mutex);
}

/* Waits for every operation submitted to the kernel, whatever its result; the ones only
 * queued are dropped (the kernel never saw them). Returns 0, or the code that stopped the
 * wait (then operations may still run). Rule 1: driver_mutex held. */
int fl_device_drain(fl_device *device) {
    device->ready_count = 0;
    if (device->backend != FL_IO_URING) return 0; /* plain: every operation ran at once */
    while (device->inflight_count > 0) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&device->ring, &cqe);
        if (rc == -EINTR) continue;
        if (rc < 0) return rc;
        io_uring_cqe_seen(&device->ring, cqe);
        device->inflight_count--;
    }
    return 0;
}

void fl_device_destroy(fl_device *device) {
    /* Rule 2: a device still on the list could be restacked by a trace while it goes. */
    assert(!device->linked);
    if (device->backend == FL_IO_URING) io_uring_queue_exit(&device->ring);
    device->backend = 0;
}

void fl_device_fault_set(fl_device *device, const fl_fault *fault) {
    device->fault = *fault;
    stack_layers(device);
}

/* Stacks or removes the trace layer on every open device (rule 2: list, then each device). */
static void set_traced(int traced) {
    for (fl_device *device = open_devices_first; device != NULL; device = device->next_open) {
        pthread_mutex_lock(device->driver_mutex);
        device->traced = traced;
        stack_layers(device);
        pthread_mutex_unlock(device->driver_mutex);
    }
}

static int trace_start_impl(uint64_t capacity_bytes) {
    pthread_mutex_lock(&open_devices_mutex);
    int rc = fl_trace_buffer_start(capacity_bytes);
    if (rc == 0) set_traced(1);
    pthread_mutex_unlock(&open_devices_mutex);
    return rc;
}

int fl_trace_start(uint64_t capacity_bytes) {
    /* It may wait for a commit to let go of a device: let other threads run meanwhile. */
    void *token = fl_blocking_begin();
    int rc = trace_start_impl(capacity_bytes);
    fl_blocking_end(token);
    return rc;
}

void fl_trace_stop(void) {
    void *token = fl_blocking_begin();
    pthread_mutex_lock(&open_devices_mutex);
    fl_trace_buffer_stop();
    set_traced(0);
    pthread_mutex_unlock(&open_devices_mutex);
    fl_blocking_end(token);
}
