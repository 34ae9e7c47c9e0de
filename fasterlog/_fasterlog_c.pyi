"""Type stub for the compiled cffi module (made by scripts/gen_stub.py)."""

from typing import Any

ffi: Any


class _Lib:
    FL_COMMIT_BEGIN_ADDRESS_OFFSET: int
    FL_COMMIT_COOKIE_SIZE_OFFSET: int
    FL_COMMIT_FLAGS_OFFSET: int
    FL_COMMIT_FLAG_COMPLETED: int
    FL_COMMIT_NUMBER_OFFSET: int
    FL_COMMIT_PREVIOUS_ADDRESS_OFFSET: int
    FL_COMMIT_RECORD_FIXED_SIZE_BYTES: int
    FL_COOKIE_SIZE_MAX_BYTES: int
    FL_E_ADDRESS: int
    FL_E_BUFFER: int
    FL_E_CLOSED: int
    FL_E_COMPLETED: int
    FL_E_CORRUPT: int
    FL_E_FENCED: int
    FL_E_FORMAT: int
    FL_E_FULL: int
    FL_E_LOCKED: int
    FL_E_NOMEM: int
    FL_E_NOT_IN_MEMORY: int
    FL_E_READONLY: int
    FL_E_SETTINGS: int
    FL_E_SHORT_WRITE: int
    FL_E_TIMEOUT: int
    FL_E_TOO_LARGE: int
    FL_E_TRUNCATED: int
    FL_E_WOKEN: int
    FL_FAULT_ANY: int
    FL_FAULT_FSYNC: int
    FL_FAULT_KERNEL_WORKERS: int
    FL_FAULT_PAUSE_BEFORE_LOOKUP: int
    FL_FAULT_PAUSE_BEFORE_PREAD: int
    FL_FAULT_PAUSE_MAX_MS: int
    FL_FAULT_PAUSE_RECOVERY_AFTER_SCAN: int
    FL_FAULT_PAUSE_RECOVERY_BEFORE_SCAN: int
    FL_FAULT_WRITE: int
    FL_FIRST_ADDRESS: int
    FL_FORMAT_VERSION: int
    FL_FRAME_ALIGNMENT_BYTES: int
    FL_FRAME_CHECKSUMMED_FROM: int
    FL_FRAME_CRC_OFFSET: int
    FL_FRAME_EPOCH_OFFSET: int
    FL_FRAME_HEADER_SIZE_BYTES: int
    FL_FRAME_LENGTH_AND_KIND_OFFSET: int
    FL_FRAME_LENGTH_BITS: int
    FL_FRAME_LENGTH_MASK: int
    FL_IO_AUTO: int
    FL_IO_PLAIN: int
    FL_IO_URING: int
    FL_KIND_COMMIT: int
    FL_KIND_DATA: int
    FL_KIND_MARKER: int
    FL_KIND_PADDING: int
    FL_META_BEGIN_ADDRESS_OFFSET: int
    FL_META_CHECKSUMMED_FROM: int
    FL_META_COMMITTED_UNTIL_OFFSET: int
    FL_META_COMMIT_NUMBER_OFFSET: int
    FL_META_CRC_OFFSET: int
    FL_META_EPOCH_OFFSET: int
    FL_META_FIELDS_END: int
    FL_META_FLAGS_OFFSET: int
    FL_META_FLAG_CLEAN: int
    FL_META_MAGIC: int
    FL_META_MAGIC_OFFSET: int
    FL_META_PAGE_SIZE_OFFSET: int
    FL_META_RECOVERY_START_OFFSET: int
    FL_META_SALT_OFFSET: int
    FL_META_SEGMENT_SIZE_OFFSET: int
    FL_META_SIZE_BYTES: int
    FL_META_VERSION_OFFSET: int
    FL_NO_COOKIE: int
    FL_OK: int
    FL_PAGE_SIZE_MAX_BYTES: int
    FL_PAGE_SIZE_MIN_BYTES: int
    FL_SCAN_COMMITS: int
    FL_SCAN_MARKERS: int
    FL_SCAN_PADDING: int
    FL_SCAN_UNCOMMITTED: int
    FL_SECTOR_SIZE_BYTES: int
    FL_SHARED_BEGIN_ADDRESS_OFFSET: int
    FL_SHARED_COMMITTED_UNTIL_OFFSET: int
    FL_SHARED_COMMIT_NUMBER_OFFSET: int
    FL_SHARED_FLAGS_OFFSET: int
    FL_SHARED_FLAG_COMPLETED: int
    FL_SHARED_MAGIC: int
    FL_SHARED_SEQUENCE_OFFSET: int
    FL_SHARED_SIZE_BYTES: int
    FL_SHARED_VERSION_OFFSET: int
    FL_SHARED_WRITER_PID_OFFSET: int
    FL_TRACE_CREATE: int
    FL_TRACE_EXTEND: int
    FL_TRACE_FAULT: int
    FL_TRACE_FLAG_DEVICE: int
    FL_TRACE_FLAG_DIRECTORY: int
    FL_TRACE_FLAG_DSYNC: int
    FL_TRACE_FLAG_TRUNCATE: int
    FL_TRACE_FLAG_ZEROS: int
    FL_TRACE_HEADER_SIZE_BYTES: int
    FL_TRACE_MARK: int
    FL_TRACE_RENAME: int
    FL_TRACE_SYNC: int
    FL_TRACE_UNLINK: int
    FL_TRACE_WRITE: int
    def fl_open(self, *args: Any) -> int: ...
    def fl_close(self, *args: Any) -> int: ...
    def fl_free(self, *args: Any) -> None: ...
    def fl_simulate_crash(self, *args: Any) -> None: ...
    def fl_append(self, *args: Any) -> int: ...
    def fl_append_entry(self, *args: Any) -> int: ...
    def fl_append_batch(self, *args: Any) -> int: ...
    def fl_append_batch_linked(self, *args: Any) -> int: ...
    def fl_commit(self, *args: Any) -> int: ...
    def fl_set_cookie(self, *args: Any) -> int: ...
    def fl_get_cookie(self, *args: Any) -> int: ...
    def fl_wait_for_commit(self, *args: Any) -> int: ...
    def fl_commit_eventfd(self, *args: Any) -> int: ...
    def fl_wake(self, *args: Any) -> None: ...
    def fl_complete(self, *args: Any) -> int: ...
    def fl_read(self, *args: Any) -> int: ...
    def fl_read_many(self, *args: Any) -> int: ...
    def fl_scan(self, *args: Any) -> int: ...
    def fl_scan_format(self, *args: Any) -> int: ...
    def fl_verify(self, *args: Any) -> int: ...
    def fl_truncate_until(self, *args: Any) -> int: ...
    def fl_get_state(self, *args: Any) -> None: ...
    def fl_get_settings(self, *args: Any) -> None: ...
    def fl_fault_set(self, *args: Any) -> int: ...
    def fl_fault_pause_wait(self, *args: Any) -> int: ...
    def fl_fault_pause_release(self, *args: Any) -> int: ...
    def fl_open_pause_arm(self, *args: Any) -> None: ...
    def fl_open_pause_wait(self, *args: Any) -> int: ...
    def fl_open_pause_release(self, *args: Any) -> int: ...
    def fl_crc32c(self, *args: Any) -> int: ...
    def fl_crc32c_portable(self, *args: Any) -> int: ...
    def fl_crc32c_hardware(self, *args: Any) -> int: ...
    def fl_trace_start(self, *args: Any) -> int: ...
    def fl_trace_stop(self, *args: Any) -> None: ...
    def fl_trace_size(self, *args: Any) -> int: ...
    def fl_trace_copy(self, *args: Any) -> int: ...
    def fl_trace_mark(self, *args: Any) -> None: ...
    def fl_trace_add(self, *args: Any) -> None: ...
    def fl_crash_points(self, *args: Any) -> int: ...
    def fl_read_in_memory(self, *args: Any) -> int: ...
    def fl_prefetch(self, *args: Any) -> None: ...
    def fl_core_api_get(self, *args: Any) -> Any: ...


lib: _Lib
