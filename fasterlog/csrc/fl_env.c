/* The environment: the file calls the core makes outside the device (creating files, the
 * meta file's write, syncs of files and directories, preallocation, renames, unlinks), each
 * recorded in the I/O trace while one runs (fl_trace.c), and the named crash points. These
 * calls are few and none is on the append path, so they look at the trace flag themselves
 * (one relaxed load) rather than through a layer like the device's. */
#include "fl_internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fl_io_openat(int directory_fd, const char *name, int flags, int mode) {
    int fd = openat(directory_fd, name, flags, mode);
    if (fd < 0) return -errno;
    if ((flags & O_CREAT) && fl_trace_running()) {
        char path[4096];
        uint32_t path_size = fl_trace_path(directory_fd, name, path, sizeof path);
        fl_trace_record(FL_TRACE_CREATE, (flags & O_TRUNC) ? FL_TRACE_FLAG_TRUNCATE : 0, 0, 0,
                        path, path_size, fd, NULL, 0);
    }
    return fd;
}

ssize_t fl_io_pwrite(int fd, const void *buffer, size_t size, uint64_t offset, int zeros) {
    ssize_t written = pwrite(fd, buffer, size, (off_t)offset);
    if (written < 0) return -errno;
    if (written > 0 && fl_trace_running())
        fl_trace_fd_op(FL_TRACE_WRITE, zeros ? FL_TRACE_FLAG_ZEROS : 0, fd, offset,
                       (uint64_t)written, buffer);
    return written;
}

static int io_sync(int fd, int data_only) {
    if ((data_only ? fdatasync(fd) : fsync(fd)) < 0) return -errno;
    if (fl_trace_running()) {
        struct stat st;
        uint32_t flags = fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) ? FL_TRACE_FLAG_DIRECTORY : 0;
        fl_trace_fd_op(FL_TRACE_SYNC, flags, fd, 0, 0, NULL);
    }
    return 0;
}

int fl_io_fsync(int fd) { return io_sync(fd, 0); }
int fl_io_fdatasync(int fd) { return io_sync(fd, 1); }

int fl_io_fallocate(int fd, uint64_t size) {
    int rc = posix_fallocate(fd, 0, (off_t)size); /* an errno itself, not -1 */
    /* Where the file system cannot preallocate, still give the file its full size (sparse):
     * recovery takes a segment shorter than that for a cut file (fl_recovery.c). */
    struct stat st;
    if ((rc == EOPNOTSUPP || rc == EINVAL) && fstat(fd, &st) == 0 &&
        (st.st_size >= (off_t)size || ftruncate(fd, (off_t)size) == 0))
        rc = 0;
    if (rc != 0) return -rc;
    if (fl_trace_running()) fl_trace_fd_op(FL_TRACE_EXTEND, 0, fd, 0, size, NULL);
    return 0;
}

int fl_io_renameat(int directory_fd, const char *old_name, const char *new_name) {
    if (renameat(directory_fd, old_name, directory_fd, new_name) < 0) return -errno;
    if (fl_trace_running()) {
        char path[8192];
        uint32_t old_size = fl_trace_path(directory_fd, old_name, path, 4096);
        uint32_t new_size = fl_trace_path(directory_fd, new_name, path + old_size + 1, 4096);
        fl_trace_record(FL_TRACE_RENAME, 0, 0, 0, path, old_size + 1 + new_size, directory_fd,
                        NULL, 0);
    }
    return 0;
}

int fl_io_unlinkat(int directory_fd, const char *name) {
    char path[4096];
    uint32_t path_size = 0;
    int tracing = fl_trace_running();
    if (tracing) path_size = fl_trace_path(directory_fd, name, path, sizeof path);
    if (unlinkat(directory_fd, name, 0) < 0) return -errno;
    if (tracing) fl_trace_record(FL_TRACE_UNLINK, 0, 0, 0, path, path_size, directory_fd, NULL, 0);
    return 0;
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
