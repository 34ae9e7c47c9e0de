/* Opening and closing a log: the settings check, the writer lock, the meta file (created for a
 * new log, checked against the settings otherwise), the page ring, the device, recovery, the
 * new epoch and the background threads; and the shutdown that undoes them (with a final
 * commit and a clean meta file on close). Also the state snapshot and the fault switch. */
#include "fl_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define FL_DEFAULT_PAGE_SIZE_BYTES (4u << 20)
#define FL_DEFAULT_MEMORY_SIZE_BYTES (16u << 20)
#define FL_DEFAULT_SEGMENT_SIZE_BYTES (1ull << 30)
#define FL_PAGES_COUNT_MAX 65536
#define FL_HUGE_PAGE_BYTES (2u << 20)

static int settings_check(fl_settings *settings, const fl_meta *meta, fl_error_info *error) {
    uint64_t page = settings->page_size_bytes, segment = settings->segment_size_bytes;
    if (meta) {
        if (page && page != meta->page_size_bytes) {
            fl_set_message(error, "page_size_bytes %llu differs from the log's %llu",
                           (unsigned long long)page, (unsigned long long)meta->page_size_bytes);
            return FL_E_SETTINGS;
        }
        if (segment && segment != meta->segment_size_bytes) {
            fl_set_message(error, "segment_size_bytes %llu differs from the log's %llu",
                           (unsigned long long)segment,
                           (unsigned long long)meta->segment_size_bytes);
            return FL_E_SETTINGS;
        }
        page = meta->page_size_bytes;
        segment = meta->segment_size_bytes;
    }
    if (!page) page = FL_DEFAULT_PAGE_SIZE_BYTES;
    if (!segment) segment = FL_DEFAULT_SEGMENT_SIZE_BYTES < page ? page : FL_DEFAULT_SEGMENT_SIZE_BYTES;
    if (page < FL_PAGE_SIZE_MIN_BYTES || page > FL_PAGE_SIZE_MAX_BYTES || (page & (page - 1))) {
        fl_set_message(error, "page_size_bytes must be a power of two from %u to %u, not %llu",
                       FL_PAGE_SIZE_MIN_BYTES, FL_PAGE_SIZE_MAX_BYTES, (unsigned long long)page);
        return FL_E_SETTINGS;
    }
    if (segment < page || segment % page) {
        fl_set_message(error, "segment_size_bytes must be a multiple of page_size_bytes (%llu), "
                       "not %llu", (unsigned long long)page, (unsigned long long)segment);
        return FL_E_SETTINGS;
    }
    uint64_t memory = settings->memory_size_bytes;
    if (!memory) memory = FL_DEFAULT_MEMORY_SIZE_BYTES < 2 * page ? 2 * page : FL_DEFAULT_MEMORY_SIZE_BYTES;
    if (memory < 2 * page || memory % page || memory / page > FL_PAGES_COUNT_MAX) {
        /* In bytes and in pages: the bound is a page count, and a message that said "at most
         * 65536, not 65536" (pages beside bytes) read as a contradiction (issue 15). */
        fl_set_message(error, "memory_size_bytes must be a multiple of page_size_bytes (%llu) "
                       "from two pages (%llu bytes) to %u pages (%llu bytes), not %llu",
                       (unsigned long long)page, (unsigned long long)(2 * page),
                       FL_PAGES_COUNT_MAX, (unsigned long long)page * FL_PAGES_COUNT_MAX,
                       (unsigned long long)memory);
        return FL_E_SETTINGS;
    }
    if (settings->io_backend < FL_IO_AUTO || settings->io_backend > FL_IO_PLAIN) {
        fl_set_message(error, "unknown io_backend %d", settings->io_backend);
        return FL_E_SETTINGS;
    }
    settings->page_size_bytes = page;
    settings->segment_size_bytes = segment;
    settings->memory_size_bytes = memory;
    return 0;
}

static int lock_directory(fl_log *log, fl_error_info *error) {
    log->lock_fd = openat(log->directory_fd, "fasterlog.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (log->lock_fd < 0) return -errno;
    if (flock(log->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        int rc = errno == EWOULDBLOCK ? FL_E_LOCKED : -errno;
        char text[32] = {0};
        if (pread(log->lock_fd, text, sizeof text - 1, 0) > 0) error->holder_pid = atoll(text);
        fl_set_message(error, "the log is open for writing by process %lld",
                       (long long)error->holder_pid);
        close(log->lock_fd);
        log->lock_fd = -1;
        return rc;
    }
    char text[32];
    int length = snprintf(text, sizeof text, "%lld\n", (long long)getpid());
    if (ftruncate(log->lock_fd, 0) < 0 || pwrite(log->lock_fd, text, (size_t)length, 0) < 0)
        return -errno;
    return 0;
}

static int has_segment_files(int directory_fd) {
    int fd = dup(directory_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) return 0;
    int found = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL)
        if (strncmp(entry->d_name, "segment-", 8) == 0) found = 1;
    closedir(dir);
    return found;
}

static int load_or_create_meta(fl_log *log, fl_meta *meta, int *created,
                               fl_error_info *error) {
    int rc = fl_meta_read(log->directory_fd, meta);
    if (rc == -ENOENT) {
        if (log->readonly) {
            fl_set_message(error, "no log in %s (fasterlog.meta is missing)", log->directory);
            return FL_E_FORMAT;
        }
        if (has_segment_files(log->directory_fd)) {
            fl_set_message(error, "segment files without fasterlog.meta in %s", log->directory);
            return FL_E_FORMAT;
        }
        rc = settings_check(&log->settings, NULL, error);
        if (rc < 0) return rc;
        memset(meta, 0, sizeof *meta);
        while (meta->salt == 0)
            if (getrandom(&meta->salt, sizeof meta->salt, 0) != sizeof meta->salt) return -errno;
        meta->page_size_bytes = log->settings.page_size_bytes;
        meta->segment_size_bytes = log->settings.segment_size_bytes;
        meta->begin_address = FL_FIRST_ADDRESS;
        meta->recovery_start_address = FL_FIRST_ADDRESS;
        meta->committed_until_address = FL_FIRST_ADDRESS;
        *created = 1; /* from here on, a failed open removes what it made (open_impl) */
        return fl_meta_write(log->directory_fd, meta);
    }
    if (rc == FL_E_CORRUPT) fl_set_message(error, "fasterlog.meta fails its checksum");
    if (rc == FL_E_FORMAT) fl_set_message(error, "fasterlog.meta is not a fasterlog %d meta file",
                                          FL_FORMAT_VERSION);
    if (rc < 0) return rc;
    return settings_check(&log->settings, meta, error);
}

static fl_log *log_alloc(const char *directory, const fl_settings *settings) {
    fl_log *log = calloc(1, sizeof *log);
    if (log == NULL) return NULL;
    log->directory = strdup(directory);
    log->cookie = malloc(FL_COOKIE_SIZE_MAX_BYTES);
    if (log->directory == NULL || log->cookie == NULL) {
        free(log->directory);
        free(log->cookie);
        free(log);
        return NULL;
    }
    pthread_mutex_init(&log->mutex, NULL);
    pthread_mutex_init(&log->io_mutex, NULL);
    pthread_cond_init(&log->commit_cond, NULL);
    pthread_cond_init(&log->flush_cond, NULL);
    pthread_cond_init(&log->auto_commit_cond, NULL);
    pthread_cond_init(&log->zero_cond, NULL);
    pthread_cond_init(&log->calls_cond, NULL);
    pthread_mutex_init(&log->close_mutex, NULL);
    fl_read_pause_init(&log->read_pause);
    /* Writers first: readers hold the lock for each pread (locking rule 3), and many scans
     * must not starve the truncation that waits to delete a segment. */
    pthread_rwlockattr_t attributes;
    pthread_rwlockattr_init(&attributes);
    pthread_rwlockattr_setkind_np(&attributes, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&log->segments_lock, &attributes);
    pthread_rwlockattr_destroy(&attributes);
    log->settings = *settings;
    log->readonly = settings->readonly != 0;
    log->direct_io = settings->direct_io != 0;
    log->directory_fd = -1;
    log->lock_fd = -1;
    log->event_fd = -1;
    return log;
}

/* Marks the log closed once no commit runs, and waits until every thread inside
 * fl_wait_for_commit has left. Returns the code that fenced the log, or 0. */
static int close_and_wait_locked(fl_log *log) {
    log->closed = 1;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_cond_broadcast(&log->flush_cond);
    while (log->commit_active) pthread_cond_wait(&log->commit_cond, &log->mutex);
    /* Another thread may still be inside fl_wait_for_commit: it sees `closed` as soon as it
     * runs, but nothing it reads may be released before it has left. A read-only waiter sleeps
     * on the shared page's futex, which nobody else bumps; wake it until it is gone (a wake
     * can land just before it goes to sleep, hence the loop and the short timed wait). */
    while (log->waiters_count > 0) {
        if (log->readonly) fl_shared_wake_local(log);
        struct timespec deadline = fl_deadline_after_us(1000);
        pthread_cond_timedwait(&log->commit_cond, &log->mutex, &deadline);
    }
    return log->fenced_error;
}

/* The meta file of a clean close: recovery then knows exactly where the log ends. */
static int write_clean_meta(fl_log *log) {
    fl_meta meta = {
        .salt = log->salt,
        .page_size_bytes = log->page_size_bytes,
        .segment_size_bytes = log->segment_size_bytes,
        .epoch = log->epoch,
        .flags = FL_META_FLAG_CLEAN,
        .begin_address = log->durable_begin_address,
        .recovery_start_address =
            log->last_commit_address ? log->last_commit_address : log->meta_recovery_start,
        .committed_until_address = log->committed_until,
        .commit_number = log->commit_number,
    };
    return fl_meta_write(log->directory_fd, &meta);
}

/* Locking rule 4: refuses new calls and waits until every public call inside the core has
 * left. The waits among them end (they see `closing`); a read-only waiter sleeps on the shared
 * page's futex, so it is woken until it is gone (a wake can land just before it sleeps, hence
 * the short timed wait). Appends, batches, commits and reads in flight finish: the device and
 * the ring are still there. */
static void calls_drain(fl_log *log) {
    atomic_store(&log->closing, 1);
    pthread_mutex_lock(&log->mutex);
    while (atomic_load(&log->calls_active) > 0) {
        pthread_cond_broadcast(&log->commit_cond);
        pthread_cond_broadcast(&log->flush_cond);
        if (log->readonly) fl_shared_wake_local(log);
        struct timespec deadline = fl_deadline_after_us(1000);
        pthread_cond_timedwait(&log->calls_cond, &log->mutex, &deadline);
    }
    pthread_mutex_unlock(&log->mutex);
}

/* Releases every resource; with `clean`, after a final commit and a clean meta file. */
static int log_shutdown_locked(fl_log *log, int clean) {
    int rc = 0;
    int ring_busy = 0;
    pthread_mutex_lock(&log->mutex);
    int was_closed = log->closed;
    pthread_mutex_unlock(&log->mutex);
    if (was_closed) return 0;
    calls_drain(log);
    fl_auto_commit_stop(log);
    fl_zero_stop(log);
    fl_follow_stop(log);
    if (clean && !log->readonly) {
        int64_t committed = fl_log_commit(log);
        if (committed < 0 && committed != FL_E_FENCED) rc = (int)committed;
    }
    pthread_mutex_lock(&log->mutex);
    int fenced = close_and_wait_locked(log);
    pthread_mutex_unlock(&log->mutex);

    fl_device_unlink(&log->device); /* before io_mutex (fl_device.c rule 2) */
    pthread_mutex_lock(&log->io_mutex);
    if (!log->readonly && log->device.backend) {
        if (clean) {
            fl_device_submit(&log->device);
            while (log->inflight_count > 0 &&
                   fl_drive_reap_io_locked(log, log->inflight_count) == 0) {}
        }
        /* Whatever the kernel still runs reads the page ring: it must finish before the ring
         * is freed, or it writes freed (and reused) heap into a segment. A crash keeps what
         * the device took; a close that stopped reaping at an error has the rest in flight. */
        ring_busy = fl_device_drain(&log->device) < 0;
        fl_device_destroy(&log->device);
    }
    pthread_mutex_unlock(&log->io_mutex);
    if (clean && !log->readonly && !fenced && rc == 0) rc = write_clean_meta(log);
    fl_segments_close_all(log);
    pthread_mutex_lock(&log->mutex);
    uint8_t *memory = log->memory;
    __atomic_store_n(&log->memory, NULL, __ATOMIC_RELAXED); /* fl_prefetch reads it unlocked */
    if (!ring_busy) free(memory); /* else leaked: a write may still read it */
    pthread_mutex_unlock(&log->mutex);
    fl_shared_close(log);
    if (log->event_fd >= 0) close(log->event_fd);
    if (log->lock_fd >= 0) close(log->lock_fd); /* releases the flock */
    if (log->directory_fd >= 0) close(log->directory_fd);
    log->event_fd = log->lock_fd = log->directory_fd = -1;
    return rc;
}

/* A second close (another thread's, or fl_free's) waits for the first to finish. */
static int log_shutdown(fl_log *log, int clean) {
    pthread_mutex_lock(&log->close_mutex);
    int rc = log_shutdown_locked(log, clean);
    pthread_mutex_unlock(&log->close_mutex);
    return rc;
}

static void free_impl(fl_log *log) {
    log_shutdown(log, 1);
    pthread_mutex_destroy(&log->mutex);
    pthread_mutex_destroy(&log->io_mutex);
    pthread_cond_destroy(&log->commit_cond);
    pthread_cond_destroy(&log->flush_cond);
    pthread_cond_destroy(&log->auto_commit_cond);
    pthread_cond_destroy(&log->zero_cond);
    pthread_rwlock_destroy(&log->segments_lock);
    pthread_cond_destroy(&log->calls_cond);
    pthread_mutex_destroy(&log->close_mutex);
    fl_read_pause_destroy(&log->read_pause);
    free(log->cookie);
    free(log->directory);
    free(log);
}

/* What recovery accepted may still be unsynced in the page cache: a writer killed (or fenced
 * by a failed sync) between its writes and their sync leaves a complete commit that a reader
 * sees but the disk may not hold. Before the meta file records it and new commits build on it
 * (a commit whose write carries its own sync covers only its page), sync every segment from
 * the old recovery start to the recovered end; everything before that start was synced before
 * the meta file named it. Found by the power-loss states (tests/test_reliability_power_loss). */
static int sync_recovered(fl_log *log, uint64_t recovery_start_address) {
    if (log->committed_until <= FL_FIRST_ADDRESS) return 0;
    uint64_t first = recovery_start_address / log->segment_size_bytes;
    uint64_t last = (log->committed_until - 1) / log->segment_size_bytes;
    for (uint64_t segment = first; segment <= last; segment++) {
        int read_fd;
        int rc = fl_segment_fds(log, segment, 0, NULL, &read_fd);
        if (rc == FL_E_ADDRESS || rc == FL_E_TRUNCATED) continue; /* below begin, deleted */
        if (rc < 0) return rc;
        rc = fl_io_fdatasync(read_fd);
        if (rc < 0) return rc;
    }
    return 0;
}

/* The directory, created for a writer, and the writer lock. */
static int open_directory(fl_log *log, fl_error_info *error) {
    if (!log->readonly && mkdir(log->directory, 0755) < 0 && errno != EEXIST) return -errno;
    log->directory_fd = open(log->directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (log->directory_fd < 0) {
        int rc = -errno;
        fl_set_message(error, "cannot open directory %s", log->directory);
        return rc;
    }
    return log->readonly ? 0 : lock_directory(log, error);
}

/* Sizes from the checked settings, and the page ring's memory. */
static int ring_alloc(fl_log *log, const fl_meta *meta) {
    log->salt = meta->salt;
    log->epoch = meta->epoch;
    log->page_size_bytes = log->settings.page_size_bytes;
    log->page_mask = log->page_size_bytes - 1;
    log->segment_size_bytes = log->settings.segment_size_bytes;
    log->pages_count = log->settings.memory_size_bytes / log->page_size_bytes;
    log->entry_size_max = log->page_size_bytes - FL_FRAME_HEADER_SIZE_BYTES;
    log->meta_recovery_start = meta->recovery_start_address;
    log->meta_committed_until = meta->committed_until_address;
    uint64_t ring_bytes = log->pages_count * log->page_size_bytes;
    /* A large ring on 2 MiB pages: KV reads land at random places in it, and with 4 KiB pages
     * most of them also missed the TLB (a hint only; the kernel may refuse). */
    uint64_t ring_alignment = ring_bytes >= FL_HUGE_PAGE_BYTES ? FL_HUGE_PAGE_BYTES
                                                               : FL_SECTOR_SIZE_BYTES;
    if (posix_memalign((void **)&log->memory, ring_alignment, ring_bytes) != 0)
        return FL_E_NOMEM;
    if (ring_alignment == FL_HUGE_PAGE_BYTES)
        madvise(log->memory, FL_ALIGN_DOWN(ring_bytes, FL_HUGE_PAGE_BYTES), MADV_HUGEPAGE);
    return 0;
}

/* A writer's open after recovery: what it recovered made durable, a new epoch in the meta
 * file, the recovered commit published, a new log's first page zeroed. */
static int open_as_writer(fl_log *log, fl_meta *meta, fl_error_info *error) {
    int rc = sync_recovered(log, meta->recovery_start_address);
    if (rc < 0) {
        fl_set_message(error, "cannot make the recovered log durable (fdatasync failed)");
        return rc;
    }
    /* A new epoch before any write: frames beyond the recovered tail from earlier sessions
     * carry an older epoch and can never be taken for this session's (FORMAT.md). */
    log->epoch = meta->epoch + 1;
    meta->epoch = log->epoch;
    meta->flags = 0;
    meta->begin_address = log->begin_address;
    meta->recovery_start_address =
        log->last_commit_address ? log->last_commit_address : FL_FIRST_ADDRESS;
    meta->committed_until_address = log->committed_until;
    meta->commit_number = log->commit_number;
    rc = fl_meta_write(log->directory_fd, meta);
    if (rc < 0) return rc;
    /* A crash between a truncation's meta write and its unlinks left segment files below the
     * begin address; the meta file names that begin, so they go now rather than never. */
    fl_segments_delete_below(log, log->begin_address);
    log->meta_recovery_start = meta->recovery_start_address;
    log->meta_committed_until = meta->committed_until_address;
    pthread_mutex_lock(&log->mutex);
    fl_shared_publish_locked(log);
    pthread_mutex_unlock(&log->mutex);
    if (log->commit_number == 0 && log->tail_address == FL_FIRST_ADDRESS) {
        /* A new log (nothing committed, so nothing to lose): zero its first page now, since
         * the preallocation thread stays beyond the page the tail is in. */
        rc = fl_zero_first_page(log);
        if (rc < 0) return rc;
    }
    fl_zero_start(log);
    return fl_auto_commit_start(log);
}

static int open_steps(fl_log *log, int *created, fl_error_info *error) {
    fl_crc32c_hardware(); /* picks the CRC implementation before any frame is made */
    int rc = open_directory(log, error);
    if (rc < 0) return rc;
    fl_meta meta;
    rc = load_or_create_meta(log, &meta, created, error);
    if (rc < 0) return rc;
    rc = ring_alloc(log, &meta);
    if (rc < 0) return rc;
    if (!log->readonly) {
        rc = fl_device_open(&log->device, log->settings.io_backend, &log->io_uring_refused,
                            &log->io_mutex);
        if (rc < 0) {
            fl_set_message(error, "io_uring was asked for but the kernel refused it");
            return rc;
        }
    }
    log->io_backend = log->device.backend ? log->device.backend : FL_IO_PLAIN;
    rc = fl_recover(log, &meta, error);
    if (rc < 0) return rc;
    log->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = fl_shared_open(log);
    if (rc < 0) return rc;
    if (!log->readonly) return open_as_writer(log, &meta, error);
    /* A reader must not hand out a commit that a power cut can still take back (a writer
     * killed between its writes and their sync left it in the page cache): sync it too.
     * Best effort: where a read-only descriptor cannot be synced (a read-only medium),
     * nothing unsynced can be there either. */
    (void)sync_recovered(log, meta.recovery_start_address);
    pthread_mutex_lock(&log->mutex);
    fl_shared_refresh_locked(log);
    pthread_mutex_unlock(&log->mutex);
    return 0;
}

/* Undoes a failed first open: its segment files first, then the meta file (so a crash in
 * between leaves a meta file the retry can still open with the same settings, never segments
 * without one), then the shared page; the directory and the lock file stay. */
static void remove_new_log(const char *directory) {
    int directory_fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory_fd < 0) return;
    int fd = dup(directory_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir != NULL) {
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL)
            if (strncmp(entry->d_name, "segment-", 8) == 0)
                (void)fl_io_unlinkat(directory_fd, entry->d_name);
        closedir(dir);
    }
    (void)fl_io_fsync(directory_fd);
    (void)fl_io_unlinkat(directory_fd, "fasterlog.meta");
    (void)fl_io_unlinkat(directory_fd, "fasterlog.meta.tmp");
    (void)fl_io_unlinkat(directory_fd, "fasterlog.shm");
    (void)fl_io_fsync(directory_fd);
    close(directory_fd);
}

static int open_impl(const char *directory, const fl_settings *settings, fl_log **log_out,
                     fl_error_info *error) {
    fl_error_info ignored;
    if (error == NULL) error = &ignored;
    memset(error, 0, sizeof *error);
    *log_out = NULL;
    fl_settings checked = *settings;
    fl_log *log = log_alloc(directory, &checked);
    if (log == NULL) return FL_E_NOMEM;
    int created = 0;
    int rc = open_steps(log, &created, error);
    if (rc < 0) {
        /* A failed first open (a full disk while preallocating the first segment, say) must
         * leave nothing that binds a retry to its settings: keep the writer lock (a dup of
         * its descriptor holds the flock) while the files it made are removed. */
        int held_lock_fd = created && log->lock_fd >= 0 ? dup(log->lock_fd) : -1;
        log_shutdown(log, 0); /* no commit, no meta write: the open failed */
        if (held_lock_fd >= 0) {
            remove_new_log(log->directory);
            close(held_lock_fd);
        }
        free_impl(log);
        return rc;
    }
    *log_out = log;
    return 0;
}

int fl_open(const char *directory, const fl_settings *settings, fl_log **log_out,
            fl_error_info *error) {
    void *token = fl_blocking_begin();
    int rc = open_impl(directory, settings, log_out, error);
    fl_blocking_end(token);
    return rc;
}

int fl_close(fl_log *log) {
    void *token = fl_blocking_begin();
    int rc = log_shutdown(log, 1);
    fl_blocking_end(token);
    return rc;
}

void fl_simulate_crash(fl_log *log) {
    void *token = fl_blocking_begin();
    log_shutdown(log, 0);
    fl_blocking_end(token);
}

void fl_free(fl_log *log) {
    if (log == NULL) return;
    void *token = fl_blocking_begin();
    free_impl(log);
    fl_blocking_end(token);
}

void fl_get_state(fl_log *log, fl_state *state) {
    memset(state, 0, sizeof *state);
    /* Counted in only for the reap, which needs the device; the snapshot below is answered
     * after close too. */
    if (fl_call_enter(log) == 0) {
        if (!log->readonly && pthread_mutex_trylock(&log->io_mutex) == 0) {
            /* Opportunistic: account for writes that finished since anyone last looked. */
            if (log->inflight_count > 0) fl_drive_reap_io_locked(log, 0);
            pthread_mutex_unlock(&log->io_mutex);
        }
        fl_call_exit(log);
    }
    pthread_mutex_lock(&log->mutex);
    if (log->readonly && !log->closed) fl_shared_refresh_locked(log);
    state->begin_address = log->begin_address;
    state->tail_address = log->tail_address;
    state->flushed_until_address = log->flushed_until;
    state->committed_until_address = log->committed_until;
    state->head_address = log->head_address;
    state->commit_number = log->commit_number;
    state->last_commit_address = log->last_commit_address;
    state->salt = log->salt;
    state->epoch = log->epoch;
    state->io_backend = log->io_backend;
    state->cancelled_resent_count =
        __atomic_load_n(&log->cancelled_resent_count, __ATOMIC_RELAXED);
    state->fenced_error = log->fenced_error;
    state->closed = log->closed || fl_closing(log);
    state->readonly = log->readonly;
    state->direct_io = log->direct_io;
    state->io_uring_refused = log->io_uring_refused;
    state->completed = log->completion_durable;
    pthread_mutex_unlock(&log->mutex);
}

void fl_get_settings(fl_log *log, fl_settings *settings_out) { *settings_out = log->settings; }

static int fault_set_impl(fl_log *log, int32_t ops, uint64_t after_count, int32_t error,
                          int32_t persistent, int32_t short_write) {
    /* The device's operations and the read path's pauses are armed apart: reads never pass
     * through the device (fl_internal.h, read pauses). */
    int32_t pauses = ops & (FL_FAULT_PAUSE_BEFORE_LOOKUP | FL_FAULT_PAUSE_BEFORE_PREAD);
    fl_fault fault = {.ops = ops & FL_FAULT_ANY, .after_count = after_count, .error = error,
                      .persistent = persistent, .short_write = short_write};
    pthread_mutex_lock(&log->io_mutex);
    fl_device_fault_set(&log->device, &fault);
    log->device.sqe_flags_forced = (ops & FL_FAULT_KERNEL_WORKERS) ? IOSQE_ASYNC : 0;
    pthread_mutex_unlock(&log->io_mutex);
    fl_read_pause_arm(&log->read_pause, pauses, after_count);
    return 0;
}

int fl_fault_set(fl_log *log, int32_t ops, uint64_t after_count, int32_t error, int32_t persistent,
                 int32_t short_write) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int rc = fault_set_impl(log, ops, after_count, error, persistent, short_write);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

/* Neither enters as a call (locking rule 4): a close waiting for the held read must not shut
 * out the release it waits for. The pause lives until fl_free. */
int fl_fault_pause_wait(fl_log *log, int64_t timeout_us) {
    void *token = fl_blocking_begin();
    int rc = fl_read_pause_wait_held(&log->read_pause, timeout_us);
    fl_blocking_end(token);
    return rc;
}

int fl_fault_pause_release(fl_log *log) { return fl_read_pause_release(&log->read_pause); }
