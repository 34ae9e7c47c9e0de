/* Recovery: finds the newest valid commit and restores the log's positions from it.
 *
 * 1. Scan frames forward from the meta file's recovery start (a commit record, or the first
 *    address) while they are valid: checksum, structure, epoch rules (FORMAT.md) and commit
 *    numbers that rise by one. The newest valid commit record seen is the recovered commit.
 * 2. The first invalid position X ends the scan. If X lies below the committed-until address
 *    the meta file recorded, committed data is damaged: FL_E_CORRUPT naming X.
 * 3. Otherwise X may be a torn tail (a crash) or damage in the newest commits. Look past X for
 *    a valid commit record numbered two or more above the recovered one: commits are placed
 *    only after the previous sync finished (invariant 5 in fl_internal.h), so its existence
 *    proves the commit after the recovered one was synced, and X lies inside it: FL_E_CORRUPT.
 * 4. Else X is the torn tail: cut there. Later writes overwrite what lies beyond.
 *
 * Before steps 2 and 3, the segment files that committed data needs are checked: every
 * segment from the recovered begin up to the highest address known to be durable (the meta
 * file's committed-until, or the end of the commit before the recovered one: the recovered
 * commit was placed only after that one's sync) must exist at its full, preallocated size. A
 * segment is preallocated and the file fsynced before its first write (fl_segments.c: a
 * commit's data sync does not carry the size), so the size is durable before any commit
 * relies on it (FORMAT.md, Recovery step 2), and a missing or short one is
 * damage from outside the crash model (a deleted file, a cut copy), never a torn write:
 * FL_E_CORRUPT naming the segment and the addresses it lost, not a silent cut. */
#include "fl_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct recovered_commit {
    int found;
    uint64_t number;
    uint64_t begin_address;
    uint64_t address;
    uint64_t end;
    uint32_t cookie_size; /* FL_NO_COOKIE: no cookie */
    int completed;
    uint64_t cookie_offset; /* in the page buffer when found, copied out at once */
    uint64_t previous_end;  /* end of the commit before this one in the scan, 0: none seen */
} recovered_commit;

typedef struct recovery {
    fl_log *log;
    const fl_meta *meta;
    uint64_t last_segment; /* highest segment file present */
    int has_segments;
    uint8_t *page;         /* one page of the log */
    uint64_t page_loaded;  /* page number in `page`, UINT64_MAX when none */
    int fd;                /* the segment file read last, kept open between reads */
    uint64_t fd_segment;
} recovery;

static int find_last_segment(recovery *r) {
    int fd = dup(r->log->directory_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (dir == NULL) return -errno;
    /* The duplicate shares the directory descriptor's position, which the last listing left
     * at the end: without the rewind a second recovery (fl_recover's next attempt) saw no
     * segment at all and recovered an empty log. */
    rewinddir(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        unsigned long long index;
        char tail[8];
        if (sscanf(entry->d_name, "segment-%8llu.%2s", &index, tail) == 2 &&
            strcmp(tail, "fl") == 0) {
            if (!r->has_segments || index > r->last_segment) r->last_segment = index;
            r->has_segments = 1;
        }
    }
    closedir(dir);
    return 0;
}

/* The descriptor of `segment`, -ENOENT when no such file exists, or -errno when it cannot be
 * opened. */
static int segment_fd(recovery *r, uint64_t segment) {
    if (r->fd >= 0 && r->fd_segment == segment) return r->fd;
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    if (!r->has_segments || segment > r->last_segment) return -ENOENT;
    char name[64];
    fl_segment_name(segment, name, sizeof name);
    r->fd = openat(r->log->directory_fd, name, O_RDONLY | O_CLOEXEC);
    r->fd_segment = segment;
    return r->fd >= 0 ? r->fd : -errno;
}

/* Reads log bytes [address, address + size) of one page; missing bytes read as zeros. */
static int read_log(recovery *r, uint64_t address, uint8_t *buffer, uint64_t size) {
    fl_log *log = r->log;
    memset(buffer, 0, size);
    int fd = segment_fd(r, address / log->segment_size_bytes);
    /* A file that cannot be opened reads as zeros, exactly as a missing one: the scan ends. */
    if (fd < 0) return 0;
    int64_t got = fl_pread_full(fd, buffer, size, address % log->segment_size_bytes);
    return got < 0 ? (int)got : 0;
}

static int load_page(recovery *r, uint64_t page) {
    if (r->page_loaded == page) return 0;
    r->page_loaded = UINT64_MAX;
    int rc = read_log(r, page * r->log->page_size_bytes, r->page, r->log->page_size_bytes);
    if (rc == 0) r->page_loaded = page;
    return rc;
}

/* Checks one frame of the loaded page against the frame rules and the epoch rules. */
static int frame_valid(recovery *r, uint64_t address, uint32_t previous_epoch,
                       fl_frame_view *view) {
    fl_log *log = r->log;
    uint64_t offset = address % log->page_size_bytes;
    if (fl_frame_check(log, address, r->page + offset, log->page_size_bytes - offset, view) < 0)
        return 0;
    if (view->kind == 0) return 1; /* the zero gap at a page end carries no epoch */
    if (view->epoch > r->meta->epoch || view->epoch < previous_epoch) return 0;
    if (address >= r->meta->committed_until_address && view->epoch != r->meta->epoch) return 0;
    return 1;
}

/* Looks past `damage` for a valid commit record numbered at least `number_min`.
 *
 * Such a record would follow contiguous written pages (its predecessor's sync covered every
 * page before it), so the search walks page starts and gives up after a run of pages that do
 * not start with a frame of this session longer than any window of writes that can be in
 * flight at a crash (the memory ring). Without that bound it would read the header of every
 * page of a preallocated segment: seconds for 1 GiB. */
static int later_commit_exists(recovery *r, uint64_t damage, uint64_t number_min, int *found) {
    fl_log *log = r->log;
    *found = 0;
    if (!r->has_segments) return 0;
    uint64_t end = (r->last_segment + 1) * log->segment_size_bytes;
    uint64_t position = damage + FL_FRAME_ALIGNMENT_BYTES;
    uint64_t quiet_pages_max = (log->pages_count > 64 ? log->pages_count : 64) + 1;
    uint64_t quiet_pages = 0;
    while (position < end && !*found) {
        uint64_t page = position / log->page_size_bytes;
        uint64_t page_start = page * log->page_size_bytes;
        if (r->page_loaded != page) {
            /* A page of this session starts with a frame of this epoch (pages fill from
             * their start); look at its first header before reading the whole page. */
            int rc = read_log(r, page_start, r->page, FL_SECTOR_SIZE_BYTES);
            if (rc < 0) return rc;
            r->page_loaded = UINT64_MAX;
            uint64_t first = page_start < FL_FIRST_ADDRESS ? FL_FIRST_ADDRESS : page_start;
            const uint8_t *header = r->page + (first - page_start);
            uint32_t kind = fl_frame_length_and_kind(header) >> FL_FRAME_LENGTH_BITS;
            if (kind < FL_KIND_DATA || kind > FL_KIND_PADDING ||
                fl_frame_epoch(header) != r->meta->epoch) {
                if (++quiet_pages > quiet_pages_max) break;
                position = page_start + log->page_size_bytes;
                continue;
            }
            quiet_pages = 0;
            rc = load_page(r, page);
            if (rc < 0) return rc;
        }
        fl_frame_view view;
        uint64_t offset = position - page_start;
        uint32_t length_and_kind = offset + FL_FRAME_HEADER_SIZE_BYTES <= log->page_size_bytes
                                       ? fl_frame_length_and_kind(r->page + offset) : 0;
        uint32_t kind = length_and_kind >> FL_FRAME_LENGTH_BITS;
        /* Cheap filters first: a real frame has a known kind and this session's epoch. */
        if (kind >= FL_KIND_DATA && kind <= FL_KIND_PADDING &&
            fl_frame_epoch(r->page + offset) == r->meta->epoch &&
            frame_valid(r, position, r->meta->epoch, &view) && view.kind != 0) {
            if (view.kind == FL_KIND_COMMIT &&
                fl_load64(r->page + offset + FL_FRAME_HEADER_SIZE_BYTES) >= number_min)
                *found = 1;
            position += view.frame_size;
        } else {
            position += FL_FRAME_ALIGNMENT_BYTES;
        }
    }
    return 0;
}

static int commit_record_read(recovery *r, uint64_t address, const fl_frame_view *view,
                              recovered_commit *commit) {
    const uint8_t *payload = r->page + address % r->log->page_size_bytes + FL_FRAME_HEADER_SIZE_BYTES;
    uint32_t cookie_size = fl_load32(payload + FL_COMMIT_COOKIE_SIZE_OFFSET);
    uint64_t cookie_room = view->payload_size - FL_COMMIT_RECORD_FIXED_SIZE_BYTES;
    if (cookie_size != FL_NO_COOKIE && (cookie_size != cookie_room ||
                                       cookie_size > FL_COOKIE_SIZE_MAX_BYTES))
        return 0;
    if (cookie_size == FL_NO_COOKIE && cookie_room != 0) return 0;
    uint32_t flags = fl_load32(payload + FL_COMMIT_FLAGS_OFFSET);
    if (flags & ~(uint32_t)FL_COMMIT_FLAG_COMPLETED) return 0;
    commit->found = 1;
    commit->number = fl_load64(payload);
    commit->begin_address = fl_load64(payload + FL_COMMIT_BEGIN_ADDRESS_OFFSET);
    commit->address = address;
    commit->end = address + view->frame_size;
    commit->cookie_size = cookie_size;
    commit->completed = (flags & FL_COMMIT_FLAG_COMPLETED) != 0;
    if (cookie_size != FL_NO_COOKIE) {
        memcpy(r->log->cookie, payload + FL_COMMIT_RECORD_FIXED_SIZE_BYTES, cookie_size);
    }
    return 1;
}

/* Step 1: the forward scan. Returns the first invalid position in *end_out. */
static int scan_forward(recovery *r, recovered_commit *last, uint64_t *end_out) {
    fl_log *log = r->log;
    uint64_t position = r->meta->recovery_start_address;
    uint64_t stop = r->has_segments ? (r->last_segment + 1) * log->segment_size_bytes : 0;
    uint32_t previous_epoch = 0;
    while (position < stop) {
        int rc = load_page(r, position / log->page_size_bytes);
        if (rc < 0) return rc;
        fl_frame_view view;
        if (!frame_valid(r, position, previous_epoch, &view)) break;
        if (view.kind == FL_KIND_COMMIT) {
            uint64_t number = fl_load64(r->page + position % log->page_size_bytes +
                                        FL_FRAME_HEADER_SIZE_BYTES);
            uint64_t expected = last->found ? last->number + 1 : r->meta->commit_number;
            if (!last->found && position != r->meta->recovery_start_address) expected++;
            if (number != expected) break;
            uint64_t previous_end = last->found ? last->end : 0;
            if (!commit_record_read(r, position, &view, last)) break;
            last->previous_end = previous_end;
        }
        if (view.kind != 0) previous_epoch = view.epoch;
        position += view.frame_size;
    }
    *end_out = position;
    return 0;
}

/* Puts the page holding the tail into memory so later partial-sector writes carry the
 * committed bytes before the tail. */
static int load_tail_page(recovery *r, uint64_t tail) {
    fl_log *log = r->log;
    uint64_t page = tail / log->page_size_bytes;
    uint64_t page_start = page * log->page_size_bytes;
    int rc = load_page(r, page);
    if (rc < 0) return rc;
    uint8_t *slot = fl_slot_of(log, page);
    memset(slot, 0, log->page_size_bytes);
    memcpy(slot, r->page, tail - page_start);
    fl_open_page_set(log, page);
    log->head_address = page_start;
    return 0;
}

/* 1 when no writer holds the lock (a read-only open cannot race a truncation then). */
static int no_writer_now(fl_log *log) {
    int fd = openat(log->directory_fd, "fasterlog.lock", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    int free_now = flock(fd, LOCK_SH | LOCK_NB) == 0;
    close(fd); /* releases the probe's lock at once */
    return free_now;
}

/* The segment check (see the top of this file): segments of [begin, durable_until) must be
 * present and full. A read-only open beside a live writer tolerates missing segments at the
 * bottom of the range (a truncation may be deleting them as it runs): reads there report it. */
static int check_segments(recovery *r, uint64_t begin, uint64_t durable_until,
                          fl_error_info *error) {
    fl_log *log = r->log;
    if (durable_until <= begin) return 0;
    uint64_t first = begin / log->segment_size_bytes;
    uint64_t last = (durable_until - 1) / log->segment_size_bytes;
    int strict = !log->readonly || no_writer_now(log);
    int seen_present = 0;
    for (uint64_t segment = first; segment <= last; segment++) {
        char name[64];
        fl_segment_name(segment, name, sizeof name);
        struct stat st;
        uint64_t segment_start = segment * log->segment_size_bytes;
        uint64_t segment_end = segment_start + log->segment_size_bytes;
        uint64_t size = 0;
        int missing = 0;
        if (fstatat(log->directory_fd, name, &st, 0) == 0) {
            size = (uint64_t)st.st_size;
            if (size >= log->segment_size_bytes) {
                seen_present = 1;
                continue;
            }
        } else if (errno != ENOENT) {
            int rc = -errno;
            fl_set_message(error, "cannot stat %s", name);
            return rc;
        } else if (!strict && !seen_present) {
            continue;
        } else {
            missing = 1;
        }
        uint64_t lost_from = segment_start + size < begin ? begin : segment_start + size;
        error->address = lost_from;
        if (missing)
            fl_set_message(error, "committed data is damaged: %s is missing, log addresses "
                           "[%llu, %llu) are lost (committed until at least %llu)", name,
                           (unsigned long long)lost_from, (unsigned long long)segment_end,
                           (unsigned long long)durable_until);
        else
            fl_set_message(error, "committed data is damaged: %s is %llu bytes, not %llu, log "
                           "addresses [%llu, %llu) are lost (committed until at least %llu)",
                           name, (unsigned long long)size,
                           (unsigned long long)log->segment_size_bytes,
                           (unsigned long long)lost_from, (unsigned long long)segment_end,
                           (unsigned long long)durable_until);
        return FL_E_CORRUPT;
    }
    return 0;
}

/* The read-only open pause (fasterlog.h, fl_open_pause_arm): one per process. */
static fl_read_pause open_pause;
static pthread_once_t open_pause_once = PTHREAD_ONCE_INIT;
static void open_pause_init(void) { fl_read_pause_init(&open_pause); }

static fl_read_pause *open_pause_get(void) {
    pthread_once(&open_pause_once, open_pause_init);
    return &open_pause;
}

void fl_open_pause_arm(int32_t points) {
    fl_read_pause_arm(open_pause_get(),
                      points & (FL_FAULT_PAUSE_RECOVERY_BEFORE_SCAN |
                                FL_FAULT_PAUSE_RECOVERY_AFTER_SCAN), 0);
}

int fl_open_pause_wait(int64_t timeout_us) {
    return fl_read_pause_wait_held(open_pause_get(), timeout_us);
}

int fl_open_pause_release(void) { return fl_read_pause_release(open_pause_get()); }

static int recover_once(fl_log *log, const fl_meta *meta, fl_error_info *error) {
    recovery r = {.log = log, .meta = meta, .page_loaded = UINT64_MAX, .fd = -1};
    int rc = find_last_segment(&r);
    if (rc < 0) return rc;
    if (posix_memalign((void **)&r.page, FL_SECTOR_SIZE_BYTES, log->page_size_bytes) != 0)
        return FL_E_NOMEM;
    recovered_commit last = {0};
    uint64_t end = FL_FIRST_ADDRESS;
    if (log->readonly) fl_read_pause_point(open_pause_get(), FL_FAULT_PAUSE_RECOVERY_BEFORE_SCAN);
    rc = scan_forward(&r, &last, &end);
    if (log->readonly) fl_read_pause_point(open_pause_get(), FL_FAULT_PAUSE_RECOVERY_AFTER_SCAN);
    if (rc == 0) {
        uint64_t durable_until = meta->committed_until_address;
        if (last.previous_end > durable_until) durable_until = last.previous_end;
        rc = check_segments(&r, last.found ? last.begin_address : meta->begin_address,
                            durable_until, error);
    }
    if (rc == 0 && end < meta->committed_until_address) {
        error->address = end;
        fl_set_message(error, "committed data is damaged at address %llu (recorded committed "
                       "until %llu)", (unsigned long long)end,
                       (unsigned long long)meta->committed_until_address);
        rc = FL_E_CORRUPT;
    }
    int clean_end = (meta->flags & FL_META_FLAG_CLEAN) && end == meta->committed_until_address;
    if (rc == 0 && !clean_end) {
        /* After a clean close the meta file says exactly where the log ends; otherwise look
         * for evidence that the log went on (step 3). */
        int found;
        uint64_t number = last.found ? last.number : meta->commit_number;
        rc = later_commit_exists(&r, end, number + 2, &found);
        if (rc == 0 && found) {
            error->address = end;
            fl_set_message(error, "committed data is damaged at address %llu (a later commit "
                           "record is intact)", (unsigned long long)end);
            rc = FL_E_CORRUPT;
        }
    }
    if (rc == 0) {
        uint64_t committed = last.found ? last.end : FL_FIRST_ADDRESS;
        log->committed_until = committed;
        log->tail_address = committed;
        log->flushed_until = committed;
        log->submitted_until = committed;
        log->sealed_until = committed;
        log->begin_address = last.found ? last.begin_address : FL_FIRST_ADDRESS;
        log->durable_begin_address = log->begin_address;
        log->commit_number = last.found ? last.number : 0;
        log->last_commit_address = last.found ? last.address : 0;
        log->has_cookie = last.found && last.cookie_size != FL_NO_COOKIE;
        log->cookie_size = log->has_cookie ? last.cookie_size : 0;
        log->head_address = UINT64_MAX;
        log->completed = log->completion_durable = last.found && last.completed;
        if (!log->readonly) rc = load_tail_page(&r, committed);
    }
    free(r.page);
    if (r.fd >= 0) close(r.fd);
    if (rc < 0) return rc;
    pthread_rwlock_wrlock(&log->segments_lock);
    log->segments_count = 0;
    /* The table starts at the begin segment, so reads anywhere from begin find their file. */
    rc = fl_segments_cover_locked(log, log->begin_address / log->segment_size_bytes);
    pthread_rwlock_unlock(&log->segments_lock);
    return rc;
}

/* A read-only open reads files that a live writer goes on changing, so what its scan finds
 * is not one moment's state: the tail moves on while the scan runs, and commit records placed
 * after the scan stopped at the old tail then look like a later commit past damage (step 3);
 * a truncation can delete the segment holding the recovery start that the meta file just
 * read names (step 2). Neither is damage, and both are gone when looked at again. So while a
 * writer holds the lock, damage found is looked for again, from the meta file as it is then,
 * up to FL_LIVE_RECOVERY_ATTEMPTS_MAX times: a moving log gives way, damage stays and is
 * reported (the online backup and the followers open live logs this way; one backup in 200
 * under load raised "a later commit record is intact" before this). `meta` is updated to the
 * meta file recovered from. */
int fl_recover(fl_log *log, fl_meta *meta, fl_error_info *error) {
    for (uint32_t attempt = 1;; attempt++) {
        int rc = recover_once(log, meta, error);
        if (rc != FL_E_CORRUPT || !log->readonly || attempt >= FL_LIVE_RECOVERY_ATTEMPTS_MAX ||
            no_writer_now(log))
            return rc;
        fl_meta again;
        if (fl_meta_read(log->directory_fd, &again) < 0 || again.salt != meta->salt ||
            again.page_size_bytes != meta->page_size_bytes ||
            again.segment_size_bytes != meta->segment_size_bytes)
            return rc; /* another log now, or no meta file: report what was found */
        *meta = again;
        usleep(1000u * attempt); /* let writes in flight land */
    }
}
