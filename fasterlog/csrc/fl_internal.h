/* Internal declarations shared by the C core's files. The public surface is fasterlog.h; this
 * header adds the structures the core, device and recovery code share.
 *
 * The files, each calling only files listed before it (tests/fasterlog/test_c_layout.py checks that the
 * calls form no cycle):
 *   fl_util.c      messages, full reads, deadlines, the default blocking hooks
 *   fl_crc32c.c    CRC32C
 *   fl_trace.c     the I/O trace's recording
 *   fl_env.c       file calls outside the device (traced), named crash points
 *   fl_device.c    the device: io_uring and plain backends, the trace and fault layers,
 *                  and the read path's pauses for race tests
 *   fl_frame.c     frame validation
 *   fl_meta.c      the meta file
 *   fl_segments.c  segment files: names, descriptors, creation, deletion
 *   fl_follow.c    the shared page (fasterlog.shm) for followers
 *   fl_recovery.c  recovery at open
 *   fl_zero.c      zero-filling ahead of the tail (preallocation)
 *   fl_drive.c     driving the device: page writes, reaping, flushed_until, fencing, syncs
 *   fl_append.c    the write path: reserving frames, sealing and claiming pages, appends
 *   fl_read.c      the read path: read, read_many, scan, verify
 *   fl_commit.c    group commit, cookies, waiting for commits, auto-commit, truncation
 *   fl_open.c      open and close: settings, the writer lock, meta, recovery, shutdown, state
 *   fl_api.c       the table of public calls for layers in other C extensions
 * fl_NAME functions without a public declaration in fasterlog.h are the core's own; those
 * named fl_log_* are the hook-free bodies of public calls (the public call wraps them in
 * fl_blocking_begin/end, and the core calls the body when it already runs without the GIL).
 *
 * Locking rules:
 * 1. `mutex` guards positions, the page ring and commit state. Held only for short copies.
 * 2. `io_mutex` is held by the one thread that drives the device (submits and reaps). It is
 *    taken before `mutex`, never while holding it (trylock excepted).
 * 3. `segments_lock` (rwlock) guards the segment file table: every read or write of the table
 *    (its pointer, base, count and entries, `dirty` flags included) holds it. Readers share it
 *    for a lookup and the pread that uses its descriptor (so deletion can never close a
 *    descriptor under a pread); growing the table, opening or deleting a segment takes it
 *    exclusively. `dirty` is written under the shared lock only by the thread holding
 *    io_mutex (rule 2), so two writers never meet. Never taken recursively (it prefers
 *    writers, so a second shared lock could wait behind a queued writer).
 * 4. Public calls run inside fl_call_enter/fl_call_exit (`calls_active`, an atomic count, not a
 *    lock: the common append skips even that, see fl_append). Close sets `closing`, wakes the
 *    waits, and only once no call is left inside does it stop the device, unmap and free what
 *    they use; a call that enters after `closing` returns FL_E_CLOSED at once. `close_mutex`
 *    makes a second close wait for the first.
 *
 * Addresses are byte offsets across segment files: address A lives in segment
 * A / segment_size_bytes at file offset A % segment_size_bytes. Memory holds a ring of
 * pages_count pages; page P lives in slot P % pages_count.
 *
 * Invariants of the log (each is asserted where it can break):
 * 1. FL_FIRST_ADDRESS <= begin <= committed_until <= tail, and
 *    flushed_until <= tail, sealed_until <= tail.
 * 2. Every byte below sealed_until is final in memory: no appender writes there again.
 * 3. A slot is reused for page P only once page P - pages_count is wholly flushed, so a
 *    write in flight never reads from a slot that is being refilled.
 * 4. Writes in flight never overlap: a commit waits for its own writes before it lets go of
 *    the device, and sealed-page writes end at page ends (sector aligned).
 * 5. One commit at a time (commit_active). A commit's record is placed only once the previous
 *    commit's sync finished, so a valid record with number N+2 on disk proves that commit N+1
 *    was synced: recovery uses this to tell damage in committed data from a torn tail.
 * 6. A failed write or sync fences the log; it is never retried (fsyncgate). One the kernel
 *    cancelled without running it (ECANCELED) has not failed: it is sent again (fl_drive.c). */
#ifndef FL_INTERNAL_H
#define FL_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <assert.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <time.h>
#include <liburing.h>

#include "fasterlog.h"
#include "fl_format.h"

_Static_assert(FL_FRAME_HEADER_SIZE_BYTES == 12, "FORMAT.md: the frame header is 12 bytes");
_Static_assert(FL_FRAME_LENGTH_MASK == (1u << FL_FRAME_LENGTH_BITS) - 1, "length mask");
_Static_assert(FL_FIRST_ADDRESS % FL_FRAME_ALIGNMENT_BYTES == 0, "first address aligned");
_Static_assert(FL_PAGE_SIZE_MAX_BYTES == (1u << FL_FRAME_LENGTH_BITS), "a frame fits a page");
_Static_assert(FL_COMMIT_RECORD_FIXED_SIZE_BYTES == 8 + 8 + 8 + 4 + 4, "commit record layout");
/* Each field at the offset of the one before plus that one's size (FORMAT.md's tables). */
_Static_assert(FL_FRAME_CRC_OFFSET == 0 && FL_FRAME_LENGTH_AND_KIND_OFFSET == 0 + 4 &&
               FL_FRAME_EPOCH_OFFSET == 4 + 4 && FL_FRAME_HEADER_SIZE_BYTES == 8 + 4,
               "frame header: crc32c u32, length_and_kind u32, epoch u32");
_Static_assert(FL_FRAME_CHECKSUMMED_FROM == FL_FRAME_CRC_OFFSET + 4, "the CRC covers the rest");
_Static_assert(FL_COMMIT_NUMBER_OFFSET == 0 && FL_COMMIT_BEGIN_ADDRESS_OFFSET == 0 + 8 &&
               FL_COMMIT_PREVIOUS_ADDRESS_OFFSET == 8 + 8 &&
               FL_COMMIT_COOKIE_SIZE_OFFSET == 16 + 8 && FL_COMMIT_FLAGS_OFFSET == 24 + 4 &&
               FL_COMMIT_RECORD_FIXED_SIZE_BYTES == 28 + 4, "commit record fields");
_Static_assert(FL_NO_COOKIE > FL_COOKIE_SIZE_MAX_BYTES, "no cookie is no size a cookie has");
_Static_assert(FL_META_MAGIC_OFFSET == 0 && FL_META_VERSION_OFFSET == 0 + 8 &&
               FL_META_CRC_OFFSET == 8 + 4 && FL_META_SALT_OFFSET == 12 + 4 &&
               FL_META_PAGE_SIZE_OFFSET == 16 + 8 && FL_META_SEGMENT_SIZE_OFFSET == 24 + 8 &&
               FL_META_EPOCH_OFFSET == 32 + 8 && FL_META_FLAGS_OFFSET == 40 + 4 &&
               FL_META_BEGIN_ADDRESS_OFFSET == 44 + 4 && FL_META_RECOVERY_START_OFFSET == 48 + 8 &&
               FL_META_COMMITTED_UNTIL_OFFSET == 56 + 8 &&
               FL_META_COMMIT_NUMBER_OFFSET == 64 + 8 && FL_META_FIELDS_END == 72 + 8,
               "meta file fields");
_Static_assert(FL_META_CHECKSUMMED_FROM == FL_META_CRC_OFFSET + 4, "the CRC covers what follows");
_Static_assert(FL_META_FIELDS_END <= FL_META_SIZE_BYTES, "the fields fit the block");

/* Writes and syncs the device may have in flight at once. A sealed page is one write, a commit
 * adds at most two writes and one sync per segment it touches. */
#define FL_INFLIGHT_MAX 128
/* How many times one operation the kernel cancelled unrun is sent again before its ECANCELED
 * fences the log like any other error: a cancellation that keeps coming back is not a thread
 * that ended (fl_drive.c). */
#define FL_CANCELLED_RESUBMITS_MAX 8
/* How many times a read-only open beside a live writer recovers before damage it keeps
 * finding is reported (fl_recovery.c, fl_recover). */
#define FL_LIVE_RECOVERY_ATTEMPTS_MAX 8
#define FL_RING_ENTRIES_COUNT 256
/* Preallocation writes zeros this far ahead of the open page, in chunks of this size. */
#define FL_ZERO_AHEAD_MAX_BYTES (64u << 20)
#define FL_ZERO_CHUNK_BYTES (1u << 20)

#define FL_ALIGN_UP(x, a) (((x) + (uint64_t)(a) - 1) & ~((uint64_t)(a) - 1))
#define FL_ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a) - 1))

/* ---- CRC32C ---- */
uint32_t fl_frame_crc(uint64_t salt, uint64_t address, const uint8_t *frame, uint64_t frame_size);

/* ---- the device (fl_device.c): a backend, and the test layers stacked over it ---- */
typedef struct fl_completion {
    uint64_t tag;
    int32_t result;
} fl_completion;

typedef struct fl_fault {
    int32_t ops;          /* enum fl_fault_op mask; 0 = no fault armed */
    uint64_t after_count; /* matching operations to let through before failing */
    int32_t error;        /* positive errno */
    int32_t persistent;   /* keep failing after the first */
    int32_t short_write;  /* writes complete with half the bytes instead of failing */
} fl_fault;

typedef struct fl_device fl_device;

/* One layer of a device. `write` and `fsync` queue one operation: `link` chains the next
 * queued operation after this one (io_uring IOSQE_IO_LINK; the plain backend runs in order
 * anyway), and a write with `dsync` completes only once its data is durable (RWF_DSYNC): one
 * operation instead of a write and a sync. An operation that runs at once leaves its
 * completion in the device's `ready` queue before the call returns. `reap` returns up to
 * `capacity` completions, waiting for at least `wait_count`; its result is the count. */
typedef struct fl_device_ops {
    int (*write)(fl_device *device, int fd, const void *buffer, uint64_t size, uint64_t offset,
                 uint64_t tag, int link, int dsync);
    int (*fsync)(fl_device *device, int fd, uint64_t tag, int link);
    int (*submit)(fl_device *device);
    int (*reap)(fl_device *device, fl_completion *out, uint32_t capacity, uint32_t wait_count);
} fl_device_ops;

struct fl_device {
    const fl_device_ops *ops;         /* the top of the stack: what the core calls */
    const fl_device_ops *backend_ops; /* the bottom: io_uring or plain */
    const fl_device_ops *below_fault; /* what the fault layer hands operations to */
    int32_t backend;                  /* FL_IO_URING or FL_IO_PLAIN; 0 when not open */
    struct io_uring ring;
    uint32_t queued_count;   /* io_uring: SQEs prepared but not yet submitted */
    uint32_t inflight_count; /* submitted, completion not yet reaped */
    fl_completion ready[FL_INFLIGHT_MAX]; /* operations that ran at once, injected faults */
    uint32_t ready_count;
    fl_fault fault;                   /* the fault layer is stacked while fault.ops != 0 */
    int32_t traced;                   /* the trace layer is stacked */
    uint8_t sqe_flags_forced;         /* IOSQE_ASYNC under FL_FAULT_KERNEL_WORKERS, else 0 */
    pthread_mutex_t *driver_mutex;    /* the log's io_mutex (fl_device.c rule 1) */
    fl_device *next_open;             /* the list of open devices (fl_device.c rule 2) */
    int32_t linked;                   /* on that list */
};

/* Opens the backend (FL_IO_AUTO: io_uring when the kernel allows it, with its refusal in
 * *refused_out) and puts the device on the list of open devices, traced if a trace runs. */
int fl_device_open(fl_device *device, int32_t backend_wanted, int32_t *refused_out,
                   pthread_mutex_t *driver_mutex);
/* Takes the device off the list; call it without holding driver_mutex, before destroy. */
void fl_device_unlink(fl_device *device);
int fl_device_drain(fl_device *device);
void fl_device_destroy(fl_device *device);
/* Arms (fault->ops != 0) or clears the fault layer; driver_mutex held. */
void fl_device_fault_set(fl_device *device, const fl_fault *fault);
/* Hands a completion to the next reap (operations that ran at once, injected faults). */
int fl_device_complete(fl_device *device, uint64_t tag, int32_t result);

static inline int fl_device_write(fl_device *device, int fd, const void *buffer, uint64_t size,
                                  uint64_t offset, uint64_t tag, int link, int dsync) {
    return device->ops->write(device, fd, buffer, size, offset, tag, link, dsync);
}
static inline int fl_device_fsync(fl_device *device, int fd, uint64_t tag, int link) {
    return device->ops->fsync(device, fd, tag, link);
}
static inline int fl_device_submit(fl_device *device) { return device->ops->submit(device); }
static inline int fl_device_reap(fl_device *device, fl_completion *out, uint32_t capacity,
                                 uint32_t wait_count) {
    return device->ops->reap(device, out, capacity, wait_count);
}

/* ---- read pauses (fl_device.c, the fault layer's for reads) ----
 * Reads do not go through the device: they pread segment files, many threads at once, without
 * io_mutex. So instead of a layer, the read path passes named points (enum fl_fault_op's
 * FL_FAULT_PAUSE_*), where a read waits while a test holds it (fl_fault_set arms one). Unarmed,
 * a point costs one relaxed load of `armed`. */
typedef struct fl_read_pause {
    atomic_int armed;        /* FL_FAULT_PAUSE_* bits armed; 0: none */
    /* The rest under `mutex`, which nothing else takes and which is never held across a
     * call into the core: the test's release cannot wait for a lock the held read holds. */
    uint64_t after_count;    /* reads to let pass the point before one is held */
    uint32_t held_count;     /* reads waiting at a point now (0 or 1) */
    uint64_t release_number; /* raised by every release: a held read waits for it to move */
    int32_t gave_up;         /* the held read went on by itself (FL_FAULT_PAUSE_MAX_MS) */
    pthread_mutex_t mutex;
    pthread_cond_t cond;     /* a read was held, or released */
} fl_read_pause;

void fl_read_pause_init(fl_read_pause *pause);
void fl_read_pause_destroy(fl_read_pause *pause);
/* Arms `points` (0: disarms) for the read after `after_count` more; a held read is let go. */
void fl_read_pause_arm(fl_read_pause *pause, int32_t points, uint64_t after_count);
/* The slow path of fl_read_pause_point: holds this read if the pause is still armed. */
void fl_read_pause_hold(fl_read_pause *pause, int32_t point);
int fl_read_pause_wait_held(fl_read_pause *pause, int64_t timeout_us);
int fl_read_pause_release(fl_read_pause *pause);

static inline void fl_read_pause_point(fl_read_pause *pause, int32_t point) {
    if (atomic_load_explicit(&pause->armed, memory_order_relaxed) & point)
        fl_read_pause_hold(pause, point);
}

/* ---- the I/O trace (fl_trace.c): the recording behind fl_trace_* ---- */
int fl_trace_running(void);
/* Starts a new trace buffer and marks the trace running (fl_trace_start switches the device
 * layers around these two). */
int fl_trace_buffer_start(uint64_t capacity_bytes);
void fl_trace_buffer_stop(void);
/* The path `fd` names (or, with `name`, a path under a directory descriptor). */
uint32_t fl_trace_path(int fd, const char *name, char *out, size_t capacity);
void fl_trace_record(uint32_t op, uint32_t flags, uint64_t offset, uint64_t size,
                     const char *name, uint32_t name_size, int fd, const void *data,
                     uint64_t data_size);
/* A record of an operation on a descriptor, named by its path. */
void fl_trace_fd_op(uint32_t op, uint32_t flags, int fd, uint64_t offset, uint64_t size,
                    const void *data);

/* ---- segment files ---- */
typedef struct fl_segment {
    int write_fd; /* O_DIRECT where allowed; -1 until opened */
    int read_fd;  /* buffered, for reads */
    int dirty;    /* written since its last sync */
} fl_segment;

/* One write or sync in flight, in submission order. Writes cover the logical range
 * [start, end); the sector-aligned bytes sent to the device may extend a little around it. */
typedef struct fl_inflight {
    uint64_t start;
    uint64_t end;
    uint64_t size_bytes; /* bytes sent, to detect short writes */
    int32_t result;
    int32_t done;
    int32_t is_sync;
    /* What it was sent with, so that an operation the kernel cancelled without running it
     * can be sent again (fl_drive.c, resubmit_cancelled_io_locked). */
    int32_t fd;
    int32_t dsync;
    int32_t cancelled;        /* came back ECANCELED, not yet sent again */
    uint32_t resubmits_count; /* at most FL_CANCELLED_RESUBMITS_MAX */
    const uint8_t *buffer;
    uint64_t offset;
} fl_inflight;

struct fl_log {
    pthread_mutex_t mutex;
    pthread_cond_t commit_cond; /* committed_until moved, commit leadership freed, fence */
    pthread_cond_t flush_cond;  /* flushed_until moved (memory slots free), fence */
    pthread_mutex_t io_mutex;
    pthread_rwlock_t segments_lock;
    atomic_int io_pending; /* sealed pages wait to be submitted */
    atomic_uint calls_active; /* public calls inside the core now (locking rule 4) */
    atomic_int closing;       /* close began: new calls are refused, waits end */
    pthread_cond_t calls_cond; /* calls_active fell to 0 while closing (under `mutex`) */
    pthread_mutex_t close_mutex; /* held for the whole of a close */
    _Atomic uint64_t readahead_until; /* scans from disk asked the kernel to read up to here */

    fl_device device;
    fl_read_pause read_pause; /* tests only: holds a read at a point of the read path */
    char *directory;
    int directory_fd;
    int lock_fd;
    fl_settings settings;
    uint64_t page_size_bytes;
    uint64_t page_mask;
    uint64_t pages_count;
    uint64_t segment_size_bytes;
    uint64_t entry_size_max;
    uint8_t *memory; /* pages_count slots of page_size_bytes, sector aligned */

    /* Positions, under `mutex` (invariants at the top of this file). */
    uint64_t begin_address;
    uint64_t tail_address;
    uint64_t sealed_until;    /* bytes below are final in memory */
    uint64_t flushed_until;   /* contiguous prefix whose writes completed */
    uint64_t committed_until; /* prefix made durable by a commit */
    uint64_t head_address;    /* lowest address whose page is in memory */
    uint64_t open_page;       /* page number the tail is in, once its slot is claimed */
    int32_t open_page_claimed;
    uint8_t *open_slot;        /* memory of the open page (cached: appends avoid divisions) */
    uint64_t open_page_start;
    uint64_t open_page_end;    /* 0 while appends must take the slow path */

    /* Under `io_mutex`. */
    uint64_t submitted_until;
    fl_inflight inflight[FL_INFLIGHT_MAX]; /* ring in submission order */
    uint32_t inflight_first;
    uint32_t inflight_count;

    /* Commit state, under `mutex`. */
    int32_t commit_active;
    int32_t batches_active;    /* append_batch calls placing entries: commits wait */
    int32_t commit_record_due; /* cookie or begin changed since the last commit */
    uint64_t commit_number;
    uint64_t last_commit_address;
    uint64_t durable_begin_address;
    uint8_t *cookie;
    uint32_t cookie_size;
    int32_t has_cookie;
    uint64_t auto_commit_bytes_since;

    /* Identity and recovery hints (fasterlog.meta). */
    uint64_t salt;
    uint32_t epoch;
    uint64_t meta_recovery_start;
    uint64_t meta_committed_until;

    /* Segment table, under `segments_lock`. Index i holds segment segments_base + i. */
    fl_segment *segments;
    uint64_t segments_base;
    uint64_t segments_count;
    uint64_t segments_capacity;
    uint64_t segments_deleted_below; /* every segment below this one was deleted (truncation) */

    int32_t fenced_error;
    int32_t closed;
    int32_t readonly;
    int32_t direct_io;
    int32_t io_uring_refused;
    /* The backend the device opened with, kept for fl_get_state: device.backend belongs to
     * io_mutex and is cleared by close, so reading it under `mutex` raced the close. */
    int32_t io_backend;
    /* Operations sent again after an ECANCELED (fl_drive.c): written under io_mutex, read by
     * fl_get_state under `mutex`, so relaxed atomics. */
    uint64_t cancelled_resent_count;
    int event_fd;

    /* Zero-filling ahead of the tail (fl_zero.c), under `mutex`. */
    pthread_t zero_thread;
    int32_t zero_running;
    pthread_cond_t zero_cond;
    uint64_t zeroed_until;  /* beyond the open page, bytes below here were written as zeros */
    uint64_t zeroing_start; /* the chunk being zeroed now; start == end when none */
    uint64_t zeroing_end;
    uint64_t zero_ahead_bytes;

    /* Followers and wake-ups. */
    struct fl_shared *shared;     /* the mapped fasterlog.shm, NULL until there is one */
    pthread_t follow_thread;      /* read-only logs with an eventfd: futex to eventfd */
    int32_t follow_running;
    uint64_t wake_generation;     /* fl_wake bumps it: waiters return FL_E_WOKEN */
    /* Threads inside fl_wait_for_commit: close wakes them and waits until none is left before
     * it releases what they read (the shared page of a read-only log, the segments). */
    uint32_t waiters_count;
    int32_t completed;            /* fl_complete was called: no more appends */
    int32_t completion_durable;   /* ... and its commit landed: tails end at the end */

    pthread_t auto_commit_thread;
    int32_t auto_commit_running;
    pthread_cond_t auto_commit_cond;
};

/* ---- fasterlog.shm (fl_follow.c) ---- */
typedef struct fl_shared {
    char magic[8];
    uint32_t version;
    _Atomic uint32_t commit_sequence; /* futex word: +1 per publish */
    _Atomic uint64_t committed_until;
    _Atomic uint64_t begin_address;
    _Atomic uint64_t commit_number;
    _Atomic uint64_t writer_pid;      /* 0 when no writer has it open */
    _Atomic uint32_t flags;
} fl_shared;

int fl_shared_open(fl_log *log);
void fl_shared_close(fl_log *log);
void fl_shared_publish_locked(fl_log *log);
void fl_shared_refresh_locked(fl_log *log);
uint32_t fl_shared_sequence(fl_log *log);
int fl_shared_wait(fl_log *log, uint32_t sequence, const struct timespec *deadline);
void fl_shared_wake_local(fl_log *log);
int fl_follow_start_locked(fl_log *log);
void fl_follow_stop(fl_log *log);

/* ---- meta file (fl_meta.c) ---- */
typedef struct fl_meta {
    uint64_t salt;
    uint64_t page_size_bytes;
    uint64_t segment_size_bytes;
    uint32_t epoch;
    uint32_t flags;
    uint64_t begin_address;
    uint64_t recovery_start_address;
    uint64_t committed_until_address;
    uint64_t commit_number;
} fl_meta;

void fl_meta_encode(const fl_meta *meta, uint8_t *block);
int fl_meta_decode(const uint8_t *block, fl_meta *meta);
int fl_meta_read(int directory_fd, fl_meta *meta);
int fl_meta_write(int directory_fd, const fl_meta *meta);

/* ---- blocking hooks: the binding may define these (fl_util.c has the defaults) ---- */
void *fl_blocking_begin(void);
void fl_blocking_end(void *token);

/* ---- helpers (fl_util.c) ---- */
/* pread until `size` bytes or the end of the file: the bytes read, or -errno. */
int64_t fl_pread_full(int fd, void *buffer, uint64_t size, uint64_t offset);
void fl_set_message(fl_error_info *error, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* The CLOCK_REALTIME time `timeout_us` from now, as pthread_cond_timedwait takes it. */
struct timespec fl_deadline_after_us(int64_t timeout_us);

/* ---- segment files (fl_segments.c) ---- */
void fl_segment_name(uint64_t segment, char *name, size_t size);
/* Grows the table so it covers `segment`; segments_lock held exclusively. */
int fl_segments_cover_locked(fl_log *log, uint64_t segment);
/* The descriptors of a segment, opened (with `create`, created) when needed. FL_E_TRUNCATED
 * for a segment that truncation deleted. Only for descriptors nothing can delete while they
 * are used: the writer's (at the tail) and recovery's; reads go through fl_segment_pread. */
int fl_segment_fds(fl_log *log, uint64_t segment, int create, int *write_fd, int *read_fd);
/* The writer's descriptor of `segment` (created when needed), marked dirty in the same hold of
 * segments_lock, so the next commit's sync loop finds it (locking rule 3); io_mutex held. */
int fl_segment_write_fd_io_locked(fl_log *log, uint64_t segment, int *write_fd);
/* pread of `size` bytes at `offset` in `segment`, holding segments_lock (shared) from the
 * lookup to the end of the read so truncation cannot close the descriptor in between; with
 * `advise_bytes`, a readahead hint first. The bytes read, FL_E_TRUNCATED for a deleted
 * segment, FL_E_ADDRESS for a missing file, or -errno. */
int64_t fl_segment_pread(fl_log *log, uint64_t segment, void *buffer, uint64_t size,
                         uint64_t offset, uint64_t advise_bytes);
void fl_segments_delete_below(fl_log *log, uint64_t begin_address);
void fl_segments_close_all(fl_log *log);

/* ---- recovery (fl_recovery.c) ---- */
int fl_recover(fl_log *log, fl_meta *meta, fl_error_info *error);

/* ---- preallocation (fl_zero.c) ---- */
/* Waits until no zero write overlaps [start, end) (a log write there must not race it). */
void fl_zero_wait(fl_log *log, uint64_t start, uint64_t end);
void fl_zero_start(fl_log *log);
void fl_zero_stop(fl_log *log);
int fl_zero_first_page(fl_log *log);

/* ---- driving the device (fl_drive.c); *_locked: `mutex` held, *_io_locked: `io_mutex` ---- */
void fl_fence_locked(fl_log *log, int error);
void fl_commit_event_signal(fl_log *log);
int fl_drive_reap_io_locked(fl_log *log, uint32_t wait_count);
/* Starts writes of sealed pages unless another thread drives the device. */
void fl_drive_io(fl_log *log);
int fl_drive_wait_for_flush_locked(fl_log *log);
int fl_drive_flush_and_sync_io_locked(fl_log *log, uint64_t until);

/* ---- the write path (fl_append.c), `mutex` held ---- */
int fl_writable_locked(const fl_log *log);
int64_t fl_reserve_locked(fl_log *log, uint64_t frame_size, int blocking, int for_commit);
void fl_write_frame(fl_log *log, uint64_t address, uint32_t kind, const void *data,
                    uint64_t size, uint64_t frame_size);

/* ---- the read path (fl_read.c) ---- */
/* 0 when `address` is where an entry or the end-of-page frame starts, else the code a read
 * there fails with. */
int fl_entry_start_check(fl_log *log, uint64_t address);

/* ---- commit (fl_commit.c) ---- */
int64_t fl_log_commit(fl_log *log);
int fl_auto_commit_start(fl_log *log);
void fl_auto_commit_stop(fl_log *log);

/* ---- calls in flight (locking rule 4) ---- */
/* Counts a public call in; FL_E_CLOSED (not counted) once close has begun. The count is
 * raised before `closing` is read and close sets `closing` before it reads the count (both
 * sequentially consistent), so either the call sees `closing` or close sees the call. */
static inline int fl_call_enter(fl_log *log) {
    atomic_fetch_add(&log->calls_active, 1);
    if (atomic_load(&log->closing)) {
        if (atomic_fetch_sub(&log->calls_active, 1) == 1) {
            pthread_mutex_lock(&log->mutex);
            pthread_cond_broadcast(&log->calls_cond);
            pthread_mutex_unlock(&log->mutex);
        }
        return FL_E_CLOSED;
    }
    return 0;
}
/* Counts a call out; the last one out of a closing log lets close go on. `mutex` not held. */
static inline void fl_call_exit(fl_log *log) {
    unsigned before = atomic_fetch_sub(&log->calls_active, 1);
    /* Invariant: every exit follows its enter. */
    assert(before > 0);
    if (before == 1 && atomic_load(&log->closing)) {
        pthread_mutex_lock(&log->mutex);
        pthread_cond_broadcast(&log->calls_cond);
        pthread_mutex_unlock(&log->mutex);
    }
}
static inline int fl_closing(fl_log *log) {
    return atomic_load_explicit(&log->closing, memory_order_relaxed);
}

/* ---- invariants ---- */
/* Invariant 1 for the positions the writer moves, checked where it moves them (`mutex` held).
 * The begin address is asserted where truncation moves it: after recovery it comes from a
 * commit record on disk, and bytes read from disk are checked, never asserted. */
static inline void fl_positions_check_locked(const fl_log *log) {
    assert(log->committed_until <= log->tail_address);
    assert(log->flushed_until <= log->tail_address);
    assert(log->sealed_until <= log->tail_address);
}

/* ---- the page ring ---- */
static inline uint8_t *fl_slot_of(const fl_log *log, uint64_t page) {
    return log->memory + (page % log->pages_count) * log->page_size_bytes;
}
static inline uint64_t fl_page_of(const fl_log *log, uint64_t address) {
    return address / log->page_size_bytes;
}
/* Makes `page` the open page (the one the tail is in) and caches its slot for appends. */
static inline void fl_open_page_set(fl_log *log, uint64_t page) {
    log->open_page = page;
    log->open_page_claimed = 1;
    log->open_slot = fl_slot_of(log, page);
    log->open_page_start = page * log->page_size_bytes;
    log->open_page_end = log->open_page_start + log->page_size_bytes;
}

/* ---- frames (fl_frame.c): validation shared by recovery, reads and verify ---- */
typedef struct fl_frame_view {
    uint32_t kind;        /* FL_KIND_*, or 0 for the zero gap at a page end */
    uint32_t payload_size;
    uint32_t epoch;
    uint64_t frame_size;
} fl_frame_view;
/* Checks the frame at `address` whose bytes start at `bytes` and run to the page end
 * (`available` bytes). Returns 0 and fills `view`, or FL_E_CORRUPT. */
int fl_frame_check(const fl_log *log, uint64_t address, const uint8_t *bytes,
                   uint64_t available, fl_frame_view *view);

static inline uint32_t fl_load32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t fl_load64(const uint8_t *p) {
    return (uint64_t)fl_load32(p) | (uint64_t)fl_load32(p + 4) << 32;
}
static inline void fl_store32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void fl_store64(uint8_t *p, uint64_t v) {
    fl_store32(p, (uint32_t)v);
    fl_store32(p + 4, (uint32_t)(v >> 32));
}
/* Header fields of the frame whose bytes start at `frame` (FORMAT.md "Pages and frames"). */
static inline uint32_t fl_frame_length_and_kind(const uint8_t *frame) {
    return fl_load32(frame + FL_FRAME_LENGTH_AND_KIND_OFFSET);
}
static inline uint32_t fl_frame_epoch(const uint8_t *frame) {
    return fl_load32(frame + FL_FRAME_EPOCH_OFFSET);
}
static inline uint64_t fl_frame_size(uint64_t payload_size) {
    return FL_ALIGN_UP(FL_FRAME_HEADER_SIZE_BYTES + payload_size, FL_FRAME_ALIGNMENT_BYTES);
}

/* ---- file calls outside the device, traced, and crash points (fl_env.c) ----
 * Each returns what its system call does on success (a descriptor, the bytes written, 0) and
 * -errno on failure. */
#include <sys/types.h>
int fl_io_openat(int directory_fd, const char *name, int flags, int mode);
ssize_t fl_io_pwrite(int fd, const void *buffer, size_t size, uint64_t offset, int zeros);
int fl_io_fsync(int fd);
int fl_io_fdatasync(int fd);
int fl_io_fallocate(int fd, uint64_t size); /* posix_fallocate(fd, 0, size) */
int fl_io_renameat(int directory_fd, const char *old_name, const char *new_name);
int fl_io_unlinkat(int directory_fd, const char *name);
/* A named crash point (see fl_crash_points): kills the process there when armed. */
void fl_crash_point(const char *name);

#endif
