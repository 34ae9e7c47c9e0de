/* Group commit and what hangs on it: the commit record (with the cookie), waiting for a
 * commit, the commit eventfd, wake-ups, completion, the auto-commit thread, and truncation
 * (which moves the begin address that the next commit makes durable).
 *
 * One commit at a time (invariant 5): a committer places its record, writes and syncs
 * everything below it through fl_drive_flush_and_sync_io_locked, then moves committed_until,
 * publishes it to followers and rewrites the meta file when the log moved on. */
#include "fl_internal.h"

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void commit_record_write_locked(fl_log *log, uint64_t address, uint64_t frame_size) {
    uint8_t fixed[FL_COMMIT_RECORD_FIXED_SIZE_BYTES + FL_COOKIE_SIZE_MAX_BYTES];
    fl_store64(fixed + FL_COMMIT_NUMBER_OFFSET, log->commit_number + 1);
    fl_store64(fixed + FL_COMMIT_BEGIN_ADDRESS_OFFSET, log->begin_address);
    fl_store64(fixed + FL_COMMIT_PREVIOUS_ADDRESS_OFFSET, log->last_commit_address);
    fl_store32(fixed + FL_COMMIT_COOKIE_SIZE_OFFSET,
               log->has_cookie ? log->cookie_size : FL_NO_COOKIE);
    fl_store32(fixed + FL_COMMIT_FLAGS_OFFSET, log->completed ? FL_COMMIT_FLAG_COMPLETED : 0);
    uint32_t cookie_size = log->has_cookie ? log->cookie_size : 0;
    if (cookie_size) memcpy(fixed + FL_COMMIT_RECORD_FIXED_SIZE_BYTES, log->cookie, cookie_size);
    fl_write_frame(log, address, FL_KIND_COMMIT, fixed,
                   FL_COMMIT_RECORD_FIXED_SIZE_BYTES + cookie_size, frame_size);
}

/* After a commit: record a new recovery start when the log moved to another segment (so
 * recovery scans at most about one segment) or when truncation passed the old one, then delete
 * the segments wholly below the durable begin. The meta file goes first, so it never points
 * into a deleted segment. */
static int after_commit(fl_log *log, uint64_t record_address, uint64_t committed_until,
                        uint64_t commit_number, uint64_t durable_begin) {
    uint64_t segment = record_address / log->segment_size_bytes;
    int moved = segment != log->meta_recovery_start / log->segment_size_bytes ||
                durable_begin > log->meta_recovery_start;
    if (moved) {
        fl_crash_point("after-sync-before-meta");
        fl_meta meta = {
            .salt = log->salt,
            .page_size_bytes = log->page_size_bytes,
            .segment_size_bytes = log->segment_size_bytes,
            .epoch = log->epoch,
            .flags = 0,
            .begin_address = durable_begin,
            .recovery_start_address = record_address,
            .committed_until_address = committed_until,
            .commit_number = commit_number,
        };
        int rc = fl_meta_write(log->directory_fd, &meta);
        if (rc < 0) return rc;
        log->meta_recovery_start = record_address;
        log->meta_committed_until = committed_until;
    }
    uint64_t first_kept = durable_begin / log->segment_size_bytes;
    pthread_rwlock_rdlock(&log->segments_lock);
    int deletable = log->segments_count > 0 && log->segments_base < first_kept;
    pthread_rwlock_unlock(&log->segments_lock);
    if (deletable) fl_segments_delete_below(log, durable_begin);
    return 0;
}

/* What one commit covers, fixed when its record is placed. */
typedef struct commit_plan {
    int64_t record;  /* the record's address, or the code its reservation failed with */
    uint64_t until;  /* the end of the record: the commit makes [.., until) durable */
    uint64_t begin;  /* the begin address the record carries */
    int completes;   /* the record carries FL_COMMIT_FLAG_COMPLETED */
    uint64_t number; /* the commit's number, once it landed */
} commit_plan;

/* Waits until this thread may commit and makes it the committer (commit_active). Returns 0
 * then, committed_until (never 0) when there is nothing to commit, or a code. */
static int64_t commit_take_turn_locked(fl_log *log) {
    int rc = fl_writable_locked(log);
    if (rc == FL_E_COMPLETED) rc = 0; /* committing what is there is still allowed */
    if (rc < 0) return rc;
    uint64_t target = log->tail_address;
    for (;;) {
        if (log->fenced_error || log->closed) return log->closed ? FL_E_CLOSED : FL_E_FENCED;
        if (log->committed_until >= target && !log->commit_record_due)
            return (int64_t)log->committed_until;
        if (!log->commit_active && log->batches_active == 0) break;
        pthread_cond_wait(&log->commit_cond, &log->mutex);
    }
    /* Invariant 5: one commit at a time. */
    assert(!log->commit_active);
    log->commit_active = 1;
    return 0;
}

static commit_plan commit_place_locked(fl_log *log) {
    uint32_t cookie_size = log->has_cookie ? log->cookie_size : 0;
    uint64_t frame_size = fl_frame_size(FL_COMMIT_RECORD_FIXED_SIZE_BYTES + cookie_size);
    /* Invariant 5: the previous commit's record is durable before the next one is placed. */
    assert(log->last_commit_address < log->committed_until);
    commit_plan plan = {.record = fl_reserve_locked(log, frame_size, 1, 1)};
    plan.until = log->tail_address;
    plan.begin = log->begin_address;
    plan.completes = log->completed;
    if (plan.record >= 0) {
        commit_record_write_locked(log, (uint64_t)plan.record, frame_size);
        log->commit_record_due = 0;
    }
    return plan;
}

/* After the writes and syncs: the commit moves committed_until and is published, or a failure
 * of its writes fences the log. */
static void commit_land_locked(fl_log *log, commit_plan *plan, int rc) {
    assert(log->commit_active);
    if (rc == 0) {
        assert(plan->until >= log->committed_until);
        log->committed_until = plan->until;
        log->commit_number++;
        plan->number = log->commit_number;
        log->last_commit_address = (uint64_t)plan->record;
        log->durable_begin_address = plan->begin;
        if (plan->completes) log->completion_durable = 1;
        fl_positions_check_locked(log);
        fl_commit_event_signal(log);
        fl_shared_publish_locked(log);
    } else if (plan->record >= 0) {
        fl_fence_locked(log, rc);
    }
}

int64_t fl_log_commit(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int64_t turn = commit_take_turn_locked(log);
    if (turn != 0) {
        pthread_mutex_unlock(&log->mutex);
        return turn;
    }
    commit_plan plan = commit_place_locked(log);
    pthread_mutex_unlock(&log->mutex);

    int rc = (int)plan.record;
    if (plan.record >= 0) {
        pthread_mutex_lock(&log->io_mutex);
        rc = fl_drive_flush_and_sync_io_locked(log, plan.until);
        pthread_mutex_unlock(&log->io_mutex);
    }
    pthread_mutex_lock(&log->mutex);
    commit_land_locked(log, &plan, rc);
    pthread_mutex_unlock(&log->mutex);
    if (rc == 0) {
        /* Still the only committer (commit_active), so meta writes never race each other. */
        int meta_rc = after_commit(log, (uint64_t)plan.record, plan.until, plan.number,
                                   plan.begin);
        if (meta_rc < 0) {
            pthread_mutex_lock(&log->mutex);
            fl_fence_locked(log, meta_rc);
            pthread_mutex_unlock(&log->mutex);
        }
    }
    pthread_mutex_lock(&log->mutex);
    log->commit_active = 0;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    if (atomic_load(&log->io_pending)) fl_drive_io(log);
    return rc < 0 ? rc : (int64_t)plan.until;
}

int64_t fl_commit(fl_log *log) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = fl_log_commit(log);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

int fl_set_cookie(fl_log *log, const void *cookie, size_t size) {
    if (size > FL_COOKIE_SIZE_MAX_BYTES) return FL_E_TOO_LARGE;
    pthread_mutex_lock(&log->mutex);
    int rc = fl_closing(log) ? FL_E_CLOSED : fl_writable_locked(log);
    if (rc == 0) {
        memcpy(log->cookie, cookie, size);
        log->cookie_size = (uint32_t)size;
        log->has_cookie = 1;
        log->commit_record_due = 1;
    }
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

/* Returns the cookie's size (copied when it fits), or FL_E_ADDRESS when there is none. */
int64_t fl_get_cookie(fl_log *log, void *buffer, size_t capacity) {
    pthread_mutex_lock(&log->mutex);
    int64_t rc = log->has_cookie ? (int64_t)log->cookie_size : FL_E_ADDRESS;
    if (rc >= 0 && (size_t)rc <= capacity) memcpy(buffer, log->cookie, (size_t)rc);
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

static int wait_for_commit_impl(fl_log *log, uint64_t address, int64_t timeout_us) {
    struct timespec deadline = {0, 0};
    if (timeout_us >= 0) deadline = fl_deadline_after_us(timeout_us);
    pthread_mutex_lock(&log->mutex);
    uint64_t generation = log->wake_generation;
    int rc = log->closed ? FL_E_CLOSED : 0;
    log->waiters_count++;
    while (rc == 0) {
        uint32_t sequence = 0;
        /* Before the shared page is touched: close may be about to unmap it. A close that
         * began ends the wait too: close waits for every call inside to leave. */
        if (log->closed || fl_closing(log)) { rc = FL_E_CLOSED; break; }
        if (log->readonly) {
            /* Read the sequence before looking, so a publish in between is never missed. */
            sequence = fl_shared_sequence(log);
            fl_shared_refresh_locked(log);
        }
        if (log->committed_until > address) break;
        if (log->closed || fl_closing(log)) { rc = FL_E_CLOSED; break; }
        if (log->fenced_error) { rc = FL_E_FENCED; break; }
        if (log->wake_generation != generation) { rc = FL_E_WOKEN; break; }
        if (log->completion_durable) { rc = FL_E_COMPLETED; break; }
        if (log->readonly && !log->follow_running) {
            pthread_mutex_unlock(&log->mutex);
            int interrupted = fl_shared_wait(log, sequence, timeout_us >= 0 ? &deadline : NULL);
            pthread_mutex_lock(&log->mutex);
            if (interrupted) { rc = FL_E_WOKEN; break; }
        } else if (timeout_us < 0) {
            pthread_cond_wait(&log->commit_cond, &log->mutex);
        } else if (pthread_cond_timedwait(&log->commit_cond, &log->mutex, &deadline) == ETIMEDOUT) {
            rc = log->committed_until > address ? 0 : FL_E_TIMEOUT;
            break;
        }
        if (timeout_us >= 0 && rc == 0 && log->committed_until <= address) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            if (now.tv_sec > deadline.tv_sec ||
                (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
                if (log->readonly) fl_shared_refresh_locked(log);
                if (log->committed_until <= address) rc = FL_E_TIMEOUT;
            }
        }
    }
    /* The last waiter out lets a waiting close go on (log_shutdown). */
    if (--log->waiters_count == 0 && log->closed) pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

int fl_wait_for_commit(fl_log *log, uint64_t address, int64_t timeout_us) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int rc = wait_for_commit_impl(log, address, timeout_us);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

static int commit_eventfd_impl(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int rc = log->closed ? FL_E_CLOSED : 0;
    if (rc == 0 && log->readonly) rc = fl_follow_start_locked(log);
    pthread_mutex_unlock(&log->mutex);
    return rc < 0 ? rc : log->event_fd;
}

int fl_commit_eventfd(fl_log *log) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    int rc = commit_eventfd_impl(log);
    fl_call_exit(log);
    return rc;
}

void fl_wake(fl_log *log) {
    /* A closing log's waits end by themselves; the shared page may be unmapped soon. */
    if (fl_call_enter(log) < 0) return;
    pthread_mutex_lock(&log->mutex);
    log->wake_generation++;
    pthread_cond_broadcast(&log->commit_cond);
    pthread_mutex_unlock(&log->mutex);
    fl_shared_wake_local(log);
    fl_call_exit(log);
}

static int64_t complete_impl(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    /* A batch being placed is let finish: completing under it would cut it part-way. */
    while (log->batches_active > 0 && !log->fenced_error)
        pthread_cond_wait(&log->commit_cond, &log->mutex);
    int rc = fl_writable_locked(log);
    if (rc == 0) {
        log->completed = 1;
        log->commit_record_due = 1;
    }
    pthread_mutex_unlock(&log->mutex);
    if (rc == FL_E_COMPLETED) rc = 0; /* completing twice is harmless */
    return rc < 0 ? rc : fl_log_commit(log);
}

int64_t fl_complete(fl_log *log) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = complete_impl(log);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

static void *auto_commit_main(void *argument) {
    fl_log *log = argument;
    uint32_t interval_ms = log->settings.auto_commit_interval_ms;
    uint64_t threshold_bytes = log->settings.auto_commit_bytes;
    pthread_mutex_lock(&log->mutex);
    while (log->auto_commit_running && !log->fenced_error) {
        /* The predicate is checked before every wait: appends may signal before this thread
         * first waits, and a signal then is lost. */
        uint64_t pending = log->tail_address - log->committed_until;
        int timed_out = 0;
        if (!threshold_bytes || pending < threshold_bytes) {
            if (interval_ms) {
                struct timespec deadline = fl_deadline_after_us((int64_t)interval_ms * 1000);
                timed_out = pthread_cond_timedwait(&log->auto_commit_cond, &log->mutex,
                                                   &deadline) == ETIMEDOUT;
            } else {
                pthread_cond_wait(&log->auto_commit_cond, &log->mutex);
            }
            if (!log->auto_commit_running || log->fenced_error) break;
            pending = log->tail_address - log->committed_until;
        }
        int due = (threshold_bytes && pending >= threshold_bytes) ||
                  (timed_out && (pending > 0 || log->commit_record_due));
        if (due) {
            pthread_mutex_unlock(&log->mutex);
            fl_log_commit(log); /* a failure fences the log; callers see it on their next call */
            pthread_mutex_lock(&log->mutex);
        }
    }
    pthread_mutex_unlock(&log->mutex);
    return NULL;
}

/* Starts the auto-commit thread when the settings ask for one. */
int fl_auto_commit_start(fl_log *log) {
    if (!log->settings.auto_commit_interval_ms && !log->settings.auto_commit_bytes) return 0;
    log->auto_commit_running = 1;
    if (pthread_create(&log->auto_commit_thread, NULL, auto_commit_main, log) != 0) {
        log->auto_commit_running = 0;
        return -EAGAIN;
    }
    return 0;
}

void fl_auto_commit_stop(fl_log *log) {
    pthread_mutex_lock(&log->mutex);
    int running = log->auto_commit_running;
    log->auto_commit_running = 0;
    pthread_cond_broadcast(&log->auto_commit_cond);
    pthread_mutex_unlock(&log->mutex);
    if (running) pthread_join(log->auto_commit_thread, NULL);
}

static int truncate_until_impl(fl_log *log, uint64_t address) {
    pthread_mutex_lock(&log->mutex);
    int rc = fl_writable_locked(log);
    uint64_t committed = log->committed_until;
    uint64_t begin = log->begin_address;
    pthread_mutex_unlock(&log->mutex);
    if (rc < 0) return rc;
    if (address <= begin) return 0;
    if (address > committed || address % FL_FRAME_ALIGNMENT_BYTES) return FL_E_ADDRESS;
    if (address != committed && address % log->page_size_bytes != 0) {
        /* The begin address must be a frame start, so that scans from it make sense. */
        rc = fl_entry_start_check(log, address);
        if (rc < 0) return rc;
    }
    pthread_mutex_lock(&log->mutex);
    if (address > log->begin_address) {
        /* Invariant 1: begin stays at or below committed_until (which only grows). */
        assert(address <= log->committed_until);
        log->begin_address = address;
        log->commit_record_due = 1;
    }
    pthread_mutex_unlock(&log->mutex);
    return 0;
}

int fl_truncate_until(fl_log *log, uint64_t address) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int rc = truncate_until_impl(log, address);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}
