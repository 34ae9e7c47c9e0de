/* Small helpers every other file of the core may use, and which use nothing of the core: error
 * messages, reads that retry until done, deadlines, and the default blocking hooks. */
#include "fl_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

void fl_set_message(fl_error_info *error, const char *format, ...) {
    if (error == NULL) return;
    va_list args;
    va_start(args, format);
    vsnprintf(error->message, sizeof error->message, format, args);
    va_end(args);
}

int64_t fl_pread_full(int fd, void *buffer, uint64_t size, uint64_t offset) {
    uint64_t done = 0;
    while (done < size) {
        ssize_t got = pread(fd, (uint8_t *)buffer + done, (size_t)(size - done),
                            (off_t)(offset + done));
        if (got < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (got == 0) break;
        done += (uint64_t)got;
    }
    return (int64_t)done;
}

/* The CLOCK_REALTIME time `timeout_us` from now, as pthread_cond_timedwait takes it. */
struct timespec fl_deadline_after_us(int64_t timeout_us) {
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

/* Calls that may wait let the caller's runtime run other threads: the Python binding defines
 * fl_blocking_begin/end to release and retake the GIL (these weak definitions do nothing).
 * The core calls them only at its public entry points, at entry and exit, never while it
 * holds a lock, and never from its own threads. */
__attribute__((weak)) void *fl_blocking_begin(void) { return NULL; }
__attribute__((weak)) void fl_blocking_end(void *token) { (void)token; }
