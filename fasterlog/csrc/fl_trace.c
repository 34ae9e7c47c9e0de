/* The I/O trace: the recording behind fl_trace_* (fasterlog.h, "I/O trace").
 *
 * The power-loss tests need to know which bytes reached the page cache and which were made
 * durable, in order. Kill -9 cannot drop the page cache, so instead every operation that
 * matters for that is recorded here (after the kernel accepted it) and Python builds the states
 * a power cut could leave. One process-wide buffer behind one mutex: the tests trace one log at
 * a time, and the order between threads (the zero-ahead thread, the committer) is the order
 * the records land in.
 *
 * Who records: the device's trace layer (fl_device.c), stacked on every open device while a
 * trace runs, records the log's writes and syncs; the file calls of fl_env.c record themselves
 * while fl_trace_running(); Python adds marks and its own files' operations. */
#include "fl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t trace_mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_int trace_on;
static uint8_t *trace_buffer;
static uint64_t trace_used_bytes;
static uint64_t trace_capacity_bytes;
static int trace_overflowed;

int fl_trace_running(void) { return atomic_load_explicit(&trace_on, memory_order_relaxed); }

int fl_trace_buffer_start(uint64_t capacity_bytes) {
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

void fl_trace_buffer_stop(void) { atomic_store(&trace_on, 0); }

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

uint32_t fl_trace_path(int fd, const char *name, char *out, size_t capacity) {
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

void fl_trace_record(uint32_t op, uint32_t flags, uint64_t offset, uint64_t size,
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

void fl_trace_fd_op(uint32_t op, uint32_t flags, int fd, uint64_t offset, uint64_t size,
                    const void *data) {
    char path[4096];
    uint32_t path_size = fl_trace_path(fd, NULL, path, sizeof path);
    int zeros = (flags & FL_TRACE_FLAG_ZEROS) != 0;
    fl_trace_record(op, flags, offset, size, path, path_size, fd, zeros ? NULL : data,
                    op == FL_TRACE_WRITE && !zeros ? size : 0);
}

void fl_trace_mark(uint64_t value) {
    if (fl_trace_running()) fl_trace_record(FL_TRACE_MARK, 0, value, 0, NULL, 0, -1, NULL, 0);
}

void fl_trace_add(int32_t op, int32_t flags, uint64_t offset, uint64_t size, const char *name,
                  size_t name_size, const void *data, size_t data_size) {
    if (fl_trace_running())
        fl_trace_record((uint32_t)op, (uint32_t)flags, offset, size, name, (uint32_t)name_size,
                        -1, data, data_size);
}
