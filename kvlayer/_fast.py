"""The binding of kvlayer's C fast path (fasterlog/csrc/fl_kv.c): contexts, per-thread read
buffers and the error funnel for its codes. store.py keeps the API and the rules; this module
only moves bytes to and from C.

Rules:
1. Every negative code from fl_kv_* goes through `fail`: FL_E_KV_RECORD becomes
   RecordCorruptError, the log's own codes go to fasterlog.errors.raise_for.
2. A value is copied into the calling thread's buffer (Readers), never a shared one: another
   thread may run between the C call and the copy into a bytes object.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from fasterlog import errors as log_errors
from fasterlog._fasterlog_c import ffi, lib

from .errors import KVError, RecordCorruptError, StoreVersionError

READ_BUFFER_BYTES = 64 << 10
VALUE_DELETE = 0xFFFFFFFF
# fl_kv.c's reason for a version-1 record (BLAKE2b hashes): a StoreVersionError, not corruption.
VERSION_1_WHY = ("record version 1 (BLAKE2b key hashes, an older kvlayer): this kvlayer reads "
                 "version 2 stores only")
_VERSION_1_PREFIX = "record version 1 "
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def fail(code: int, operation: str, info: Any) -> NoReturn:
    """Rule 1: the one place fl_kv codes become exceptions."""
    if code == lib.FL_E_KV_RECORD:
        address = int(info.address)
        why = ffi.string(info.message).decode(errors="replace")
        if why.startswith(_VERSION_1_PREFIX):
            raise StoreVersionError(f"read record at {address} failed: {VERSION_1_WHY}", address)
        raise RecordCorruptError(f"read record at {address} failed: {why}", address)
    if code == lib.FL_E_KV_INDEX:
        raise KVError(f"{operation} failed: an index update conflicted (two writers?)")
    if code == lib.FL_E_INDEX_BUSY:
        raise KVError(f"{operation} failed: another writer is inside the index")
    log_errors.raise_for(code, operation, lib, info)


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

    def resize(self, capacity: int) -> None:
        self.buffer = _new_uncleared("char[]", capacity)
        self.reader.kv = self.kv
        self.reader.buffer = self.buffer
        self.reader.capacity = capacity
