/* fasterlog.shm: how readers in other processes learn of commits without polling.
 *
 * The writer maps the 4096-byte file fasterlog.shm and, after every commit's sync, publishes
 * committed-until, begin and the commit number there, then bumps a 32-bit sequence and wakes
 * every process sleeping on it (a shared futex: the kernel keys it by the file, so it works
 * across processes). Followers map the same file read-only, recover from the log as any
 * read-only open does, and then take committed-until from the shared page: the writer publishes
 * only synced commits, and every frame a follower reads is still checked by its CRC.
 *
 * The file is never the source of truth and is not synced. The writer never truncates or
 * replaces it, so followers keep a valid mapping across writer restarts. */
#include "fl_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The struct is the page (FORMAT.md "The shared page"): its layout is the documented one. */
_Static_assert(sizeof(fl_shared) <= FL_SHARED_SIZE_BYTES, "fl_shared fits its file");
_Static_assert(offsetof(fl_shared, version) == FL_SHARED_VERSION_OFFSET, "shared layout");
_Static_assert(offsetof(fl_shared, commit_sequence) == FL_SHARED_SEQUENCE_OFFSET, "layout");
_Static_assert(offsetof(fl_shared, committed_until) == FL_SHARED_COMMITTED_UNTIL_OFFSET, "");
_Static_assert(offsetof(fl_shared, begin_address) == FL_SHARED_BEGIN_ADDRESS_OFFSET, "layout");
_Static_assert(offsetof(fl_shared, commit_number) == FL_SHARED_COMMIT_NUMBER_OFFSET, "layout");
_Static_assert(offsetof(fl_shared, writer_pid) == FL_SHARED_WRITER_PID_OFFSET, "layout");
_Static_assert(offsetof(fl_shared, flags) == FL_SHARED_FLAGS_OFFSET, "shared page layout");

static long futex(_Atomic uint32_t *word, int op, uint32_t value, const struct timespec *timeout) {
    return syscall(SYS_futex, (uint32_t *)word, op, value, timeout, NULL, 0);
}

int fl_shared_open(fl_log *log) {
    int writable = !log->readonly;
    int fd = openat(log->directory_fd, "fasterlog.shm",
                    (writable ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0644);
    if (fd < 0) return errno == ENOENT ? 0 : -errno; /* no writer yet: followers poll for it */
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : 0;
    if (rc == 0 && writable && st.st_size < FL_SHARED_SIZE_BYTES &&
        ftruncate(fd, FL_SHARED_SIZE_BYTES) < 0)
        rc = -errno;
    if (rc == 0 && !writable && st.st_size < FL_SHARED_SIZE_BYTES) rc = 1; /* being created */
    void *mapped = MAP_FAILED;
    if (rc == 0)
        mapped = mmap(NULL, FL_SHARED_SIZE_BYTES, writable ? PROT_READ | PROT_WRITE : PROT_READ,
                      MAP_SHARED, fd, 0);
    close(fd);
    if (rc != 0) return rc < 0 ? rc : 0;
    if (mapped == MAP_FAILED) return -errno;
    fl_shared *shared = mapped;
    uint8_t magic[sizeof shared->magic];
    fl_store64(magic, FL_SHARED_MAGIC);
    if (writable) {
        memcpy(shared->magic, magic, sizeof magic);
        shared->version = FL_FORMAT_VERSION;
        atomic_store(&shared->writer_pid, (uint64_t)getpid());
    } else if (memcmp(shared->magic, magic, sizeof magic) != 0) {
        munmap(mapped, FL_SHARED_SIZE_BYTES);
        return 0; /* not yet initialised by a writer: try again later */
    }
    log->shared = shared;
    return 0;
}

void fl_shared_close(fl_log *log) {
    if (log->shared == NULL) return;
    if (!log->readonly) atomic_store(&log->shared->writer_pid, 0);
    munmap(log->shared, FL_SHARED_SIZE_BYTES);
    log->shared = NULL;
}

/* Writer: called with `mutex` held after a commit (or at open). */
void fl_shared_publish_locked(fl_log *log) {
    fl_shared *shared = log->shared;
    if (shared == NULL) return;
    atomic_store(&shared->begin_address, log->durable_begin_address);
    atomic_store(&shared->commit_number, log->commit_number);
    atomic_store(&shared->flags, log->completion_durable ? FL_SHARED_FLAG_COMPLETED : 0);
    atomic_store(&shared->committed_until, log->committed_until);
    atomic_fetch_add(&shared->commit_sequence, 1);
    futex(&shared->commit_sequence, FUTEX_WAKE, INT_MAX, NULL);
}

/* Follower: takes the newest published commit. Called with `mutex` held. */
void fl_shared_refresh_locked(fl_log *log) {
    if (log->shared == NULL && fl_shared_open(log) < 0) return;
    fl_shared *shared = log->shared;
    if (shared == NULL) return;
    uint64_t committed = atomic_load(&shared->committed_until);
    uint64_t begin = atomic_load(&shared->begin_address);
    if (committed > log->committed_until) {
        log->committed_until = committed;
        log->tail_address = committed;
        log->commit_number = atomic_load(&shared->commit_number);
    }
    if (begin > log->begin_address) log->begin_address = begin;
    if (atomic_load(&shared->flags) & FL_SHARED_FLAG_COMPLETED)
        log->completed = log->completion_durable = 1;
}

uint32_t fl_shared_sequence(fl_log *log) {
    return log->shared ? atomic_load(&log->shared->commit_sequence) : 0;
}

/* Follower: sleeps until the writer publishes after `sequence`, `deadline` passes, or a local
 * fl_wake. Without a shared page yet (no writer has opened the log), it sleeps a little and
 * returns so the caller looks again. */
int fl_shared_wait(fl_log *log, uint32_t sequence, const struct timespec *deadline) {
    struct timespec now, left = {0, 10 * 1000 * 1000};
    if (deadline != NULL) {
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t ns = (int64_t)(deadline->tv_sec - now.tv_sec) * 1000000000 +
                     (deadline->tv_nsec - now.tv_nsec);
        if (ns <= 0) return 0;
        if (log->shared != NULL || ns < 10 * 1000 * 1000) {
            left.tv_sec = ns / 1000000000;
            left.tv_nsec = ns % 1000000000;
        }
    }
    if (log->shared == NULL) {
        return nanosleep(&left, NULL) < 0 && errno == EINTR ? -EINTR : 0;
    }
    /* A signal ends the wait (-EINTR) so the caller's runtime can run its handler: a follower
     * waiting in Python's main thread must still stop on Ctrl-C. */
    long rc = futex(&log->shared->commit_sequence, FUTEX_WAIT, sequence, deadline ? &left : NULL);
    return rc < 0 && errno == EINTR ? -EINTR : 0;
}

void fl_shared_wake_local(fl_log *log) {
    if (log->shared != NULL) {
        /* A read-only mapping cannot bump the word, but a wake needs no write. */
        futex(&log->shared->commit_sequence, FUTEX_WAKE, INT_MAX, NULL);
    }
}

/* Follower's eventfd: one thread per log turns shared-futex wakes into eventfd reads. */
static void *follow_main(void *argument) {
    fl_log *log = argument;
    pthread_mutex_lock(&log->mutex);
    while (log->follow_running) {
        uint32_t sequence = fl_shared_sequence(log);
        uint64_t before = log->committed_until;
        fl_shared_refresh_locked(log);
        if (log->committed_until != before) {
            uint64_t one = 1;
            ssize_t ignored = write(log->event_fd, &one, sizeof one);
            (void)ignored;
            pthread_cond_broadcast(&log->commit_cond);
        }
        pthread_mutex_unlock(&log->mutex);
        fl_shared_wait(log, sequence, NULL);
        pthread_mutex_lock(&log->mutex);
    }
    pthread_mutex_unlock(&log->mutex);
    return NULL;
}

int fl_follow_start_locked(fl_log *log) {
    if (log->follow_running || !log->readonly) return 0;
    log->follow_running = 1;
    if (pthread_create(&log->follow_thread, NULL, follow_main, log) != 0) {
        log->follow_running = 0;
        return -EAGAIN;
    }
    return 0;
}

void fl_follow_stop(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int running = log->follow_running;
    log->follow_running = 0;
    pthread_mutex_unlock(&log->mutex);
    if (!running) return;
    if (log->shared == NULL) {
        pthread_join(log->follow_thread, NULL); /* it polls every 10 ms without a page */
        return;
    }
    /* Wake it repeatedly until it has seen the flag: a wake sent between its check and its
     * sleep would otherwise be lost. */
    struct timespec pause = {0, 1000 * 1000};
    while (pthread_tryjoin_np(log->follow_thread, NULL) != 0) {
        fl_shared_wake_local(log);
        nanosleep(&pause, NULL);
    }
}
