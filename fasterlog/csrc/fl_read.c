/* The read path: single reads, read_many, scans and verify. Bytes come from the page ring
 * while their page is in memory, else from the segment files; every frame is checked (its
 * CRC included) before any of its bytes are handed out, and a frame that fails is told apart
 * from a bad address by walking its page from the start. */
#include "fl_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

/* Scans with at least this much left ask the kernel to read ahead, up to FL_READAHEAD_BYTES. */
#define FL_READAHEAD_MIN_BYTES (1u << 20)
#define FL_READAHEAD_BYTES (64u << 20)
#define FL_SCAN_CHUNK_BYTES (256u << 10)

/* Copies log bytes [address, address + size) into `buffer`, from memory when the page is
 * still there, else from the segment file. The range must lie in one page. Returns the bytes
 * copied (a file may end early) or a negative code. */
static int64_t copy_range(fl_log *log, uint64_t address, void *buffer, uint64_t size,
                          int *from_memory, uint64_t read_ahead_bytes) {
    pthread_mutex_lock(&log->mutex);
    if (log->closed) {
        pthread_mutex_unlock(&log->mutex);
        return FL_E_CLOSED;
    }
    uint64_t page = fl_page_of(log, address);
    if (address >= log->head_address && log->open_page_claimed && page <= log->open_page) {
        memcpy(buffer, fl_slot_of(log, page) + address % log->page_size_bytes, size);
        pthread_mutex_unlock(&log->mutex);
        *from_memory = 1;
        return (int64_t)size;
    }
    pthread_mutex_unlock(&log->mutex);
    *from_memory = 0;
    /* Race tests hold a read here, past its begin check (check_range_start) and before its
     * segment lookup, while truncation deletes the segment (fl_read_pause_point). */
    fl_read_pause_point(&log->read_pause, FL_FAULT_PAUSE_BEFORE_LOOKUP);
    uint64_t offset = address % log->segment_size_bytes;
    uint64_t ahead = atomic_load(&log->readahead_until);
    uint64_t advise_bytes = 0;
    if (read_ahead_bytes > 0 && (address + size > ahead || address + read_ahead_bytes < ahead)) {
        /* A long scan from disk: ask the kernel to read well ahead. It issues those reads
         * asynchronously and many at a time, so the scan is not bound by the latency of one
         * read after another (a racing update of the mark only costs an extra hint). */
        advise_bytes = log->segment_size_bytes - offset;
        if (advise_bytes > read_ahead_bytes) advise_bytes = read_ahead_bytes;
        atomic_store(&log->readahead_until, address + advise_bytes - advise_bytes / 4);
    }
    /* The lookup and the pread share one hold of segments_lock: a truncation racing this read
     * either waits for it or has deleted the segment first (FL_E_TRUNCATED), never closes the
     * descriptor under it (issue 14 defect 3). */
    int64_t got = fl_segment_pread(log, address / log->segment_size_bytes, buffer, size, offset,
                                   advise_bytes);
    if (got == FL_E_ADDRESS) {
        /* No such file: a writer in another process may have deleted it under a read-only
         * log's reader after moving the begin address past it. */
        pthread_mutex_lock(&log->mutex);
        if (log->readonly && !log->closed) fl_shared_refresh_locked(log);
        if (address < log->begin_address) got = FL_E_TRUNCATED;
        pthread_mutex_unlock(&log->mutex);
    }
    return got;
}

/* FL_E_TRUNCATED's details once a read found its bytes gone: the begin address now. */
static void truncated_details(fl_log *log, uint64_t address, fl_error_info *error) {
    if (error == NULL) return;
    pthread_mutex_lock(&log->mutex);
    error->address = address;
    error->begin_address = log->begin_address;
    pthread_mutex_unlock(&log->mutex);
}

/* Limits a read or scan: returns 0, or a code with error->address/begin_address set. */
static int check_range_start(fl_log *log, uint64_t address, uint64_t *limit_out,
                             fl_error_info *error) {
    pthread_mutex_lock(&log->mutex);
    int rc = 0;
    if (log->readonly && !log->closed) fl_shared_refresh_locked(log);
    if (log->closed) rc = FL_E_CLOSED;
    else if (address < log->begin_address) rc = FL_E_TRUNCATED;
    else if (address % FL_FRAME_ALIGNMENT_BYTES != 0 || address < FL_FIRST_ADDRESS) rc = FL_E_ADDRESS;
    if (error) {
        error->address = address;
        error->begin_address = log->begin_address;
    }
    *limit_out = log->readonly ? log->committed_until : log->tail_address;
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

/* Decides, after a frame at `address` failed its checks, whether `address` was an entry start
 * (then the frame is corrupt) or not (then the caller passed a bad address), by walking the
 * page's frames from its start. */
static int classify_bad_frame(fl_log *log, uint64_t address, fl_error_info *error) {
    uint64_t page_start = fl_page_of(log, address) * log->page_size_bytes;
    uint64_t position = page_start < FL_FIRST_ADDRESS ? FL_FIRST_ADDRESS : page_start;
    uint8_t *page = malloc(log->page_size_bytes);
    if (page == NULL) return FL_E_NOMEM;
    int from_memory;
    int64_t got = copy_range(log, page_start, page, log->page_size_bytes, &from_memory, 0);
    int rc = FL_E_ADDRESS;
    if (got < 0) rc = (int)got;
    while (got >= 0 && position < address) {
        fl_frame_view view;
        uint64_t offset = position - page_start;
        if (fl_frame_check(log, position, page + offset, (uint64_t)got - offset, &view) < 0) {
            rc = FL_E_CORRUPT;
            address = position;
            break;
        }
        position += view.frame_size;
    }
    if (got >= 0 && position == address) rc = FL_E_CORRUPT;
    free(page);
    if (error) error->address = address;
    return rc;
}

static int64_t read_impl(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                         int32_t *kind_out, fl_error_info *error) {
    uint64_t limit;
    int rc = check_range_start(log, address, &limit, error);
    if (rc < 0) return rc;
    if (address >= limit) return FL_E_ADDRESS;
    uint64_t remaining = log->page_size_bytes - address % log->page_size_bytes;
    uint64_t want = remaining < FL_SECTOR_SIZE_BYTES ? remaining : FL_SECTOR_SIZE_BYTES;
    if (want > limit - address) want = limit - address;
    uint8_t header[FL_SECTOR_SIZE_BYTES];
    uint8_t *frame = header;
    uint8_t *allocated = NULL;
    int from_memory;
    int64_t got = copy_range(log, address, header, want, &from_memory, 0);
    if (got < 0) return got;
    fl_frame_view view;
    rc = fl_frame_check(log, address, header, (uint64_t)got, &view);
    if (rc == FL_E_BUFFER && view.frame_size > (uint64_t)got && view.frame_size <= limit - address) {
        /* A frame longer than the first sector: read it whole. */
        allocated = malloc(view.frame_size);
        if (allocated == NULL) return FL_E_NOMEM;
        frame = allocated;
        got = copy_range(log, address, frame, view.frame_size, &from_memory, 0);
        rc = got < 0 ? (int)got : fl_frame_check(log, address, frame, (uint64_t)got, &view);
    }
    if (rc == 0 && (view.kind == FL_KIND_PADDING || view.kind == 0)) {
        rc = FL_E_ADDRESS; /* a frame start, but not an entry */
    } else if (rc == 0 && view.payload_size > capacity) {
        /* A good frame with no room for it: the kind is known (FasterLog.entry_kind asks
         * this way), the payload is not copied. */
        if (kind_out) *kind_out = (int32_t)view.kind;
        if (error) error->size_needed = view.payload_size;
        free(allocated);
        return FL_E_BUFFER;
    } else if (rc == 0) {
        memcpy(buffer, frame + FL_FRAME_HEADER_SIZE_BYTES, view.payload_size);
    }
    free(allocated);
    if (rc == FL_E_CORRUPT || rc == FL_E_BUFFER) return classify_bad_frame(log, address, error);
    if (rc < 0) return rc;
    if (kind_out) *kind_out = (int32_t)view.kind;
    if (error) error->address = address + view.frame_size;
    return view.payload_size;
}

int64_t fl_read(fl_log *log, uint64_t address, void *buffer, size_t capacity, int32_t *kind_out,
                fl_error_info *error) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = read_impl(log, address, buffer, capacity, kind_out, error);
    if (rc == FL_E_TRUNCATED) truncated_details(log, address, error);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

int fl_entry_start_check(fl_log *log, uint64_t address) {
    /* The end of a page (a padding frame, or the short zero gap) counts: it is where a reader
     * that finished the page stands, and scans step over it. Moving begin past it instead
     * would pass a cursor standing there. */
    uint64_t page_end = (fl_page_of(log, address) + 1) * log->page_size_bytes;
    uint8_t header[FL_FRAME_HEADER_SIZE_BYTES];
    int from_memory;
    int page_end_frame =
        page_end - address < FL_FRAME_HEADER_SIZE_BYTES ||
        (copy_range(log, address, header, sizeof header, &from_memory, 0) ==
             (int64_t)sizeof header &&
         fl_frame_length_and_kind(header) >> FL_FRAME_LENGTH_BITS == FL_KIND_PADDING &&
         fl_frame_size(fl_frame_length_and_kind(header) & FL_FRAME_LENGTH_MASK) ==
             page_end - address);
    if (page_end_frame) return 0;
    uint8_t probe[1];
    int32_t kind;
    fl_error_info info;
    memset(&info, 0, sizeof info);
    int64_t got = read_impl(log, address, probe, 0, &kind, &info);
    return got < 0 && got != FL_E_BUFFER ? (int)got : 0;
}

int64_t fl_read_in_memory(fl_log *log, uint64_t address, void *buffer, size_t capacity,
                          int32_t *kind_out, uint64_t *size_needed_out) {
    int64_t rc = FL_E_NOT_IN_MEMORY;
    pthread_mutex_lock(&log->mutex);
    uint64_t limit = log->readonly ? log->committed_until : log->tail_address;
    uint64_t page = fl_page_of(log, address);
    if (!log->closed && address >= log->begin_address && address >= FL_FIRST_ADDRESS &&
        address % FL_FRAME_ALIGNMENT_BYTES == 0 && address < limit &&
        address >= log->head_address && log->open_page_claimed && page <= log->open_page) {
        uint64_t offset = address % log->page_size_bytes;
        uint64_t available = log->page_size_bytes - offset;
        if (available > limit - address) available = limit - address;
        const uint8_t *bytes = fl_slot_of(log, page) + offset;
        fl_frame_view view;
        if (fl_frame_check(log, address, bytes, available, &view) == 0 && view.kind != 0 &&
            view.kind != FL_KIND_PADDING) {
            *kind_out = (int32_t)view.kind;
            if (view.payload_size > capacity) {
                *size_needed_out = view.payload_size;
                rc = FL_E_BUFFER;
            } else {
                memcpy(buffer, bytes + FL_FRAME_HEADER_SIZE_BYTES, view.payload_size);
                rc = view.payload_size;
            }
        }
    }
    pthread_mutex_unlock(&log->mutex);
    return rc;
}

void fl_prefetch(fl_log *log, uint64_t address) {
    /* Read without the lock: memory, page_size_bytes and pages_count are fixed while the log
     * is open, so any value lands inside the ring (or the ring is already gone: no load). */
    const uint8_t *memory = __atomic_load_n(&log->memory, __ATOMIC_RELAXED);
    if (memory == NULL) return;
    const uint8_t *at = memory + (fl_page_of(log, address) % log->pages_count) *
                                     log->page_size_bytes + address % log->page_size_bytes;
    __builtin_prefetch(at);
    __builtin_prefetch(at + 64);
    __builtin_prefetch(at + 128);
}

static int64_t read_many_impl(fl_log *log, const uint64_t *addresses, size_t count,
                              uint8_t *buffer, size_t capacity, uint32_t *offsets_out,
                              uint32_t *sizes_out, int32_t *kinds_out, fl_error_info *error) {
    assert(capacity <= UINT32_MAX); /* offsets are u32 */
    uint64_t used = 0;
    for (size_t i = 0; i < count; i++) {
        int32_t kind = 0;
        int64_t size = read_impl(log, addresses[i], buffer + used, capacity - used, &kind, error);
        if (size == FL_E_BUFFER && i > 0) return (int64_t)i;
        if (size < 0) {
            if (error && size != FL_E_BUFFER) error->address = addresses[i];
            return size;
        }
        offsets_out[i] = (uint32_t)used;
        sizes_out[i] = (uint32_t)size;
        kinds_out[i] = kind;
        used += (uint64_t)size;
    }
    return (int64_t)count;
}

int64_t fl_read_many(fl_log *log, const uint64_t *addresses, size_t count, void *buffer,
                     size_t capacity, uint32_t *offsets_out, uint32_t *sizes_out,
                     int32_t *kinds_out, fl_error_info *error) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = read_many_impl(log, addresses, count, buffer, capacity, offsets_out, sizes_out,
                                kinds_out, error);
    if (rc == FL_E_TRUNCATED && error) truncated_details(log, error->address, error);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

static int scan_wanted(uint32_t kind, int32_t include) {
    switch (kind) {
    case FL_KIND_DATA: return 1;
    case FL_KIND_MARKER: return include & FL_SCAN_MARKERS;
    case FL_KIND_COMMIT: return include & FL_SCAN_COMMITS;
    default: return include & FL_SCAN_PADDING;
    }
}

/* One fl_log_scan call: its arguments and how far it got. */
typedef struct scan_call {
    int32_t include;
    uint8_t *buffer;
    size_t capacity;
    uint64_t *addresses_out;
    uint32_t *offsets_out;
    uint32_t *sizes_out;
    int32_t *kinds_out;
    size_t count_max;
    uint64_t from_address;
    uint64_t until_address;
    uint64_t committed; /* what may be copied (fl_log_scan) */
    uint64_t position;  /* the next frame to look at */
    uint64_t used;      /* bytes of `buffer` holding the frames looked at */
    size_t count;       /* entries reported */
    uint64_t want;      /* bytes to copy next */
    int stop;           /* the buffer is full, or a bad frame ends this call early */
} scan_call;

/* Looks at the frames of the `size` bytes just copied to buffer + used and reports the wanted
 * ones. Returns the bytes of the whole frames it passed, or the code the call fails with. */
static int64_t scan_frames(fl_log *log, scan_call *s, uint64_t size, fl_error_info *error) {
    const uint8_t *chunk = s->buffer + s->used;
    size_t count = s->count;
    uint64_t offset = 0;
    while (offset < size && s->position + offset < s->until_address && count < s->count_max) {
        fl_frame_view view;
        int rc = fl_frame_check(log, s->position + offset, chunk + offset, size - offset, &view);
        if (rc == FL_E_BUFFER) {
            if (count == 0 && s->used + offset == 0 && view.frame_size > s->capacity) {
                if (error) error->size_needed = view.frame_size;
                return FL_E_BUFFER;
            }
            if (offset == 0 && view.frame_size <= s->capacity - s->used && view.frame_size > size) {
                s->want = view.frame_size; /* a frame larger than a chunk: copy it whole */
                break;
            }
            /* Cut by the chunk, not by the buffer: go on with the next chunk. */
            if (offset > 0 && view.frame_size <= s->capacity - s->used - offset) break;
            s->stop = 1;
            break;
        }
        if (rc < 0) {
            if (error) error->address = s->position + offset;
            if (count > 0 || offset > 0 || s->used > 0) {
                s->stop = 1;
                break;
            }
            /* The very first frame: a bad start address, or damage? Tell them apart. */
            return s->position == s->from_address ? classify_bad_frame(log, s->position, error)
                                                  : rc;
        }
        if (scan_wanted(view.kind, s->include)) {
            s->addresses_out[count] = s->position + offset;
            s->offsets_out[count] = (uint32_t)(s->used + offset + FL_FRAME_HEADER_SIZE_BYTES);
            s->sizes_out[count] = view.payload_size;
            if (s->kinds_out) s->kinds_out[count] = (int32_t)view.kind;
            count++;
        }
        offset += view.frame_size;
    }
    s->count = count;
    return (int64_t)offset;
}

/* Copies the next chunk (at most to the page end, the committed end, `want` bytes and the
 * room left) to buffer + used. Returns its size (0: no room), or a code. */
static int64_t scan_copy_chunk(fl_log *log, scan_call *s, fl_error_info *error) {
    uint64_t page_end = (fl_page_of(log, s->position) + 1) * log->page_size_bytes;
    uint64_t chunk_end = page_end < s->committed ? page_end : s->committed;
    uint64_t size = chunk_end - s->position;
    /* Copy in modest chunks: the call may stop at count_max long before the buffer is full,
     * and every byte copied past that point would be copied again next call. */
    if (size > s->want) size = s->want;
    if (size > s->capacity - s->used) size = s->capacity - s->used;
    if (size == 0) return 0;
    s->want = FL_SCAN_CHUNK_BYTES;
    int from_memory;
    /* Only a long scan reads ahead: a short one would pull in pages nobody reads. */
    uint64_t scan_left = s->until_address > s->position ? s->until_address - s->position : 0;
    uint64_t read_ahead = scan_left >= FL_READAHEAD_MIN_BYTES
                              ? (scan_left < FL_READAHEAD_BYTES ? scan_left : FL_READAHEAD_BYTES)
                              : 0;
    int64_t got = copy_range(log, s->position, s->buffer + s->used, size, &from_memory,
                                read_ahead);
    if (got == FL_E_TRUNCATED) truncated_details(log, s->position, error);
    if (got < 0) return got;
    if ((uint64_t)got < size) {
        /* Committed bytes missing from the file: damage, not the end of the log. */
        if (error) error->address = s->position + (uint64_t)got;
        if (s->count > 0) return 0;
        return FL_E_CORRUPT;
    }
    return (int64_t)size;
}

/* Copies whole frames starting at `from_address` into `buffer` and reports the entries among
 * them whose address is below `until_address` (clamped to committed_until). Every frame is
 * checked (checksum included) before it is reported. Returns the count of entries reported;
 * *next_address_out is where the next call should start. */
static int64_t scan_impl(fl_log *log, uint64_t from_address, uint64_t until_address,
                         int32_t include, void *buffer, size_t capacity, uint64_t *addresses_out,
                         uint32_t *offsets_out, uint32_t *sizes_out, int32_t *kinds_out,
                         size_t count_max, uint64_t *next_address_out, fl_error_info *error) {
    uint64_t limit;
    int rc = check_range_start(log, from_address, &limit, error);
    *next_address_out = from_address;
    if (rc < 0) return rc;
    pthread_mutex_lock(&log->mutex);
    /* `committed` bounds what is copied: the committed prefix, or for the writer's own
     * uncommitted scan everything appended (frames below the tail are complete). */
    uint64_t committed = (include & FL_SCAN_UNCOMMITTED) && !log->readonly ? log->tail_address
                                                                          : log->committed_until;
    pthread_mutex_unlock(&log->mutex);
    /* Offsets are reported as u32: the binding never passes a larger buffer. */
    assert(capacity <= UINT32_MAX);
    scan_call s = {
        .include = include, .buffer = buffer, .capacity = capacity,
        .addresses_out = addresses_out, .offsets_out = offsets_out, .sizes_out = sizes_out,
        .kinds_out = kinds_out, .count_max = count_max, .from_address = from_address,
        .until_address = until_address > committed ? committed : until_address,
        .committed = committed, .position = from_address, .want = FL_SCAN_CHUNK_BYTES,
    };
    while (!s.stop && s.position < s.until_address && s.count < s.count_max) {
        int64_t size = scan_copy_chunk(log, &s, error);
        if (size <= 0) {
            if (size < 0) return size;
            break;
        }
        int64_t offset = scan_frames(log, &s, (uint64_t)size, error);
        if (offset < 0) return offset;
        if (offset == 0 && s.want == FL_SCAN_CHUNK_BYTES) s.stop = 1; /* no progress possible */
        s.used += (uint64_t)offset;
        s.position += (uint64_t)offset;
    }
    *next_address_out = s.position;
    return (int64_t)s.count;
}

int64_t fl_scan(fl_log *log, uint64_t from_address, uint64_t until_address, int32_t include,
                void *buffer, size_t capacity, uint64_t *addresses_out, uint32_t *offsets_out,
                uint32_t *sizes_out, int32_t *kinds_out, size_t count_max,
                uint64_t *next_address_out, fl_error_info *error) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int64_t rc = scan_impl(log, from_address, until_address, include, buffer, capacity,
                           addresses_out, offsets_out, sizes_out, kinds_out, count_max,
                           next_address_out, error);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}

static size_t format_number(char *out, uint64_t value, char suffix) {
    char digits[24];
    size_t length = 0;
    do {
        digits[length++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < length; i++) out[i] = digits[length - 1 - i];
    out[length] = suffix;
    return length + 1;
}

int64_t fl_scan_format(const uint32_t *offsets, const uint32_t *sizes, size_t count,
                       char *format_out, size_t capacity) {
    size_t used = 0;
    uint64_t position = 0;
    for (size_t i = 0; i < count; i++) {
        /* Each item needs at most two numbers of 10 digits plus their letters. */
        if (capacity - used < 24) return FL_E_BUFFER;
        if (offsets[i] > position) used += format_number(format_out + used, offsets[i] - position, 'x');
        used += format_number(format_out + used, sizes[i], 's');
        position = (uint64_t)offsets[i] + sizes[i];
    }
    return (int64_t)used;
}

static int verify_impl(fl_log *log, uint64_t from_address, uint64_t until_address,
                       uint64_t *good_until_out, fl_error_info *error) {
    enum { entries_max = 4096 };
    uint64_t capacity = log->page_size_bytes;
    uint8_t *buffer = malloc(capacity);
    uint64_t *addresses = malloc(entries_max * sizeof *addresses);
    uint32_t *offsets = malloc(entries_max * sizeof *offsets);
    uint32_t *sizes = malloc(entries_max * sizeof *sizes);
    int rc = (buffer && addresses && offsets && sizes) ? 0 : FL_E_NOMEM;
    uint64_t position = from_address;
    while (rc == 0 && position < until_address) {
        uint64_t next;
        int64_t count = scan_impl(log, position, until_address,
                                    FL_SCAN_MARKERS | FL_SCAN_COMMITS | FL_SCAN_PADDING, buffer,
                                    capacity, addresses, offsets, sizes, NULL, entries_max, &next,
                                    error);
        if (count < 0) rc = (int)count;
        else if (next == position) break;
        else position = next;
    }
    *good_until_out = position;
    free(buffer);
    free(addresses);
    free(offsets);
    free(sizes);
    return rc;
}

int fl_verify(fl_log *log, uint64_t from_address, uint64_t until_address, uint64_t *good_until_out,
              fl_error_info *error) {
    if (fl_call_enter(log) < 0) return FL_E_CLOSED;
    void *token = fl_blocking_begin();
    int rc = verify_impl(log, from_address, until_address, good_until_out, error);
    fl_blocking_end(token);
    fl_call_exit(log);
    return rc;
}
