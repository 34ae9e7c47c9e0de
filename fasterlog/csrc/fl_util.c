/* Small helpers every other file of the core may use, and which use nothing of the core: error
 * messages and reads that retry until done. */
#include "fl_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
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
