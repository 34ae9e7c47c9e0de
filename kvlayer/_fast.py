"""The binding of kvlayer's C fast path (fasterlog/csrc/fl_kv.c): contexts and per-thread read
buffers. store.py keeps the API and the rules; this module only moves bytes to and from C.

Rules:
1. Every negative code from fl_kv_* goes to fasterlog.errors.raise_for, the one funnel:
   kvlayer/errors.py registers the KV codes there (FL_E_KV_RECORD: RecordCorruptError).
2. A value is copied into the calling thread's buffer (Readers), never a shared one: another
   thread may run between the C call and the copy into a bytes object.
"""

from __future__ import annotations

import threading
from typing import Any

from fasterlog._fasterlog_c import ffi, lib

READ_BUFFER_BYTES = 64 << 10
GET_MANY_BUFFER_BYTES = 1 << 20
GET_MANY_WINDOW = 4096  # keys per fl_kv_get_many call (store._GET_MANY_FORMAT_ENTRIES)
VALUE_DELETE = 0xFFFFFFFF
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def create(log_handle: Any, index_handle: Any) -> Any:
    out = ffi.new("fl_kv **")
    rc = lib.fl_kv_create(log_handle, index_handle, out)
    if rc < 0:
        raise MemoryError("open failed: cannot create the KV context")
    return ffi.gc(out[0], lib.fl_kv_free)


class Readers(threading.local):
    """One fl_kv_reader and value buffer per thread (rule 2)."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.reader = ffi.new("fl_kv_reader *")
        self.resize(READ_BUFFER_BYTES)

    def get_many_scratch(self, entry_size_max: int) -> tuple[Any, ...]:
        """This thread's get_many arrays, made once: a fresh 1 MiB buffer per call cost a
        page fault per 4 KiB touched. (buffer, capacity, its ffi.buffer, offsets, sizes,
        missing, missing_count, layout, error info), for up to GET_MANY_WINDOW keys."""
        scratch: tuple[Any, ...] | None = self.__dict__.get("many")
        if scratch is None or scratch[1] < 2 * entry_size_max:
            capacity = max(GET_MANY_BUFFER_BYTES, 2 * entry_size_max)
            buffer = _new_uncleared("char[]", capacity)
            scratch = self.many = (
                buffer, capacity, ffi.buffer(buffer), _new_uncleared("uint32_t[]", GET_MANY_WINDOW),
                _new_uncleared("uint32_t[]", GET_MANY_WINDOW),
                _new_uncleared("uint32_t[]", GET_MANY_WINDOW), ffi.new("uint64_t *"),
                _new_uncleared("char[]", 24 * GET_MANY_WINDOW + 24), ffi.new("fl_error_info *"))
        return scratch

    def resize(self, capacity: int) -> None:
        self.buffer = _new_uncleared("char[]", capacity)
        self.reader.kv = self.kv
        self.reader.buffer = self.buffer
        self.reader.capacity = capacity
