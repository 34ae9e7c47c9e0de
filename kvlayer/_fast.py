"""The binding of kvlayer's C fast path (kvlayer/csrc, the module kvlayer._kvlayer_c): contexts,
per-thread read buffers and the KV format's constants.
store.py keeps the API and the rules; this module only moves bytes to and from C.

Rules:
1. Every negative code from fl_kv_* goes to fasterlog.errors.raise_for, the one funnel:
   kvlayer/errors.py registers the KV codes there (FL_E_KV_RECORD: RecordCorruptError).
2. A value is copied into the calling thread's buffer (Readers), never a shared one: another
   thread may run between the C call and the copy into a bytes object.
3. The upper-case names under "the KV format" are the twins of the C constants FL_KV_<name>
   (kvlayer/csrc/fl_kv_format.h, kvlayer/FORMAT.md); check_constants() runs at import and fails
   on a twin that drifted or has no C constant. A magic is written as its bytes; its C twin is
   the little-endian u64 they spell.
"""

from __future__ import annotations

import threading
from typing import Any

from fasterlog import errors as log_errors

from ._kvlayer_c import ffi, lib

READ_BUFFER_BYTES = 64 << 10
GET_MANY_BUFFER_BYTES = 1 << 20
GET_MANY_WINDOW = 4096  # keys per fl_kv_get_many call (store._GET_MANY_FORMAT_ENTRIES)
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)

# The KV format (rule 3).
RECORD_VERSION = 2
RECORD_HEADER_SIZE_BYTES = 12
RECORD_VERSION_OFFSET = 0
RECORD_INDEX_BITS_OFFSET = 1
RECORD_OPS_COUNT_OFFSET = 2
RECORD_PREVIOUS_OFFSET = 4
OP_HEADER_SIZE_BYTES = 16
OP_KIND_OFFSET = 0
OP_RESERVED_OFFSET = 1
OP_KEY_SIZE_OFFSET = 2
OP_VALUE_SIZE_OFFSET = 4
OP_HASH_OFFSET = 8
OP_PUT = 1
OP_DELETE = 2
HASH_KEY1_TWEAK = 0x6B766C6179657232
SNAPSHOT_MAGIC = b"FLKVSNAP"
SNAPSHOT_VERSION = 2
SNAPSHOT_HEADER_SIZE_BYTES = 48
SNAPSHOT_ENTRY_SIZE_BYTES = 16
ENTRY_ADDRESS_BITS = 48
ENTRY_DELETED = 1 << 63
COOKIE_MAGIC = b"kvlayer1"
VALUE_DELETE = 0xFFFFFFFF  # not on disk: fl_kv_write's value size for a delete
FORMAT_CONSTANTS = (
    "RECORD_VERSION", "RECORD_HEADER_SIZE_BYTES", "RECORD_VERSION_OFFSET",
    "RECORD_INDEX_BITS_OFFSET", "RECORD_OPS_COUNT_OFFSET", "RECORD_PREVIOUS_OFFSET",
    "OP_HEADER_SIZE_BYTES", "OP_KIND_OFFSET", "OP_RESERVED_OFFSET", "OP_KEY_SIZE_OFFSET",
    "OP_VALUE_SIZE_OFFSET", "OP_HASH_OFFSET", "OP_PUT", "OP_DELETE", "HASH_KEY1_TWEAK",
    "SNAPSHOT_MAGIC", "SNAPSHOT_VERSION", "SNAPSHOT_HEADER_SIZE_BYTES",
    "SNAPSHOT_ENTRY_SIZE_BYTES", "ENTRY_ADDRESS_BITS", "ENTRY_DELETED", "COOKIE_MAGIC",
    "VALUE_DELETE",
)


def constant_problems(constants: dict[str, Any], names: tuple[str, ...],
                      c_lib: Any) -> list[str]:
    """One line per name of `names` that is missing from `constants`, has no C twin FL_KV_<name>
    or differs from it (bytes stand for the little-endian integer they spell)."""
    problems = []
    for name in names:
        if name not in constants:
            problems.append(f"{name} is listed but not defined")
        elif not hasattr(c_lib, "FL_KV_" + name):
            problems.append(f"{name} has no C twin FL_KV_{name}")
        else:
            value = constants[name]
            expected = int.from_bytes(value, "little") if isinstance(value, bytes) else value
            if getattr(c_lib, "FL_KV_" + name) != expected:
                problems.append(f"{name}={value!r} differs from the C "
                                f"FL_KV_{name}={getattr(c_lib, 'FL_KV_' + name)}")
    return problems


def check_constants() -> None:
    """Rule 3: fails (ImportError) when a KV format constant drifted from the compiled C."""
    problems = constant_problems(globals(), FORMAT_CONSTANTS, lib)
    if problems:
        raise ImportError("kvlayer: " + "; ".join(problems) + " (rebuild the extension, or "
                          "change kvlayer/FORMAT.md, fl_kv_format.h and kvlayer/_fast.py together)")


check_constants()


def create(log_handle: Any, index_handle: Any) -> Any:
    """A KV context over an open log's handle (an `fl_log *`) and an index. The C code reaches
    the log through the core's table of calls (fl_core_api_get)."""
    out = ffi.new("fl_kv **")
    rc = lib.fl_kv_create(lib.fl_core_api_get(), log_handle, index_handle, out)
    if rc == lib.FL_E_NOMEM:
        raise MemoryError("open failed: cannot create the KV context")
    if rc < 0:
        log_errors.raise_for(rc, "open")
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
