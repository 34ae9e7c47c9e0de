"""KVStore: a durable key-value store whose every write is a record in a FasterLog.

The log is the source of truth; the hash index (fl_index.c) is derived state, rebuilt at open
from the newest usable checkpoint plus a replay of the log after it, or by replaying the whole
log (checkpoint.py; FORMAT.md, "KV records" and "KV checkpoints", describe the bytes).

Rules and invariants:
1. Keys and values are bytes. A record holds one or more operations (put or delete) of keys
   whose hashes share one index chain (same bucket and tag) at write time, plus the address of
   the chain's previous head. A batch puts each chain's operations in one record, so no record
   of a batch needs the address of another record of the same batch.
2. Chain invariant: for every key, its newest record is reachable from the index entry of the
   key's hash by following previous addresses. Writes keep it (a new record points at the old
   head); grow keeps it (fl_index.c, rule 4); replay keeps it because it grows the index to at
   least the size each record was written with (the record says it) before applying the record,
   so replay's chains are never coarser than the writer's were.
3. One writer at a time per store: `_write_lock` serializes writes in this process, and the log's
   writer lock keeps other processes out. Reads take no lock.
4. A write is applied to the index after it is appended and before it is committed, so a
   process reads its own writes; put/delete/put_many commit before returning unless
   commit=False. A failed commit fences the log, so nothing un-durable is served afterwards by a
   store that could be reopened.
5. Recovery restores the index from the newest checkpoint whose snapshot checks out (the cookie
   says where the markers are; without a kvlayer cookie the log is scanned for them), then
   replays the records from its position. An unusable snapshot is skipped with a warning on the
   "kvlayer.checkpoint" logger, falling back to an older checkpoint, then to a full replay.
   Restoring sets each chain's head to the newest address among the snapshot's keys of that
   chain: every older record of the chain is reachable from it (the writer linked each record
   to the head of the time), so rule 2 holds after the restore.
6. Chain floor: a chain walk stops at `_chain_floor`, the begin address of the log as far as
   this store's index is concerned. Compaction (compaction.py) copies every live record below an
   address U forward before truncating the log at U, so once the copies are in the index no
   key's newest operation lies below U, and a walk that reaches below it can end (the key's
   older records, and tombstones of deleted keys, are gone with the truncated part). The writer
   raises its floor to U when it truncates; a follower raises it to a begin address B only after
   applying every commit that was visible after it saw B (follower.py). A reader whose walk
   reads a record that a compaction truncated meanwhile (TruncatedError) restarts from the index,
   whose heads already point at the copies.
"""

from __future__ import annotations

import array
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fasterlog import FasterLog
from fasterlog.errors import TruncatedError

from . import _fast
from . import checkpoint as checkpoint_files
from ._kvlayer_c import ffi, lib
from .checkpoint import Checkpoint
from .errors import (
    CheckpointError,
    KeyNotFound,
    KeyTooLarge,
    KeyTypeError,
    KVError,
    NotAnIntegerError,
    RecordCorruptError,
    StoreClosedError,
    StoreReadOnlyError,
    StoreSettingsError,
    StoreVersionError,
    ValueTooLarge,
    ValueTypeError,
    WaitTimeoutError,
)

__all__ = ["BytesLike", "KVStore", "key_hash", "siphash13"]

BytesLike = bytes | bytearray | memoryview

RECORD_VERSION = 2  # 1 had BLAKE2b key hashes: refused with StoreVersionError (FORMAT.md)
OP_PUT = 1
OP_DELETE = 2
_HEADER = struct.Struct("<BBHQ")  # version, index bits, ops count, previous address
_OP = struct.Struct("<BBHIQ")  # op, reserved, key size, value size, key hash
_SINGLE = struct.Struct("<BBHQBBHIQ")  # a header and its one operation: the common record
RECORD_HEADER_SIZE_BYTES = _HEADER.size
OP_HEADER_SIZE_BYTES = _OP.size
key_size_max_bytes = 65535  # the key size field is 16 bits
ops_per_record_max = 65535  # the ops count field is 16 bits
batch_ops_count_max = 65535  # one put_many is at most this many distinct keys
index_buckets_count_log2_default = 10
checkpoint_every_bytes_default = 0  # 0: no automatic checkpoints
checkpoint_every_ms_default = 0  # 0: no checkpoints by time
truncated_read_retries_max = 64  # a get racing this many compactions in a row gives up
checkpoints_kept_count_default = 3
_TAG_SHIFT = 48
_TAG_MASK = (1 << 14) - 1
_RESOLVE_SIGNATURE = "int(void *, uint64_t, uint64_t *, uint32_t, uint64_t *)"
_GET_MANY_FORMAT_ENTRIES = _fast.GET_MANY_WINDOW
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
# Hot functions bound once: an attribute lookup on `lib` costs about 25 ns per call.
_kv_get = lib.fl_kv_get
_unpack = ffi.unpack
_ABSENT = lib.FL_KV_ABSENT


_HASH_KEY1_TWEAK = 0x6B766C6179657232  # "kvlayer2"; fl_kv.c SIP_KEY1_TWEAK
_MASK64 = (1 << 64) - 1
_siphash13_c = lib.fl_kv_siphash13


def key_hash(key: bytes, salt: int = 0) -> int:
    """The 64-bit hash of a key in a store whose log has this salt (FORMAT.md "KV records"):
    SipHash-1-3 with the key (salt, salt ^ "kvlayer2"). KVStore.key_hash(key) is a store's
    own; with the default salt 0 it is a fixed hash, stable across processes and stores (for
    orderings such as a SCAN cursor), but not the one any store's records carry."""
    return _siphash13_c(salt, salt ^ _HASH_KEY1_TWEAK, key, len(key))


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (64 - n))) & _MASK64


def siphash13(k0: int, k1: int, data: bytes, c_rounds: int = 1, d_rounds: int = 3) -> int:
    """The Python reference of fl_kv_siphash13 (tests compare them; with rounds 2 and 4 it is
    the SipHash-2-4 of the paper, checked against its test vector)."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(count: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(count):
            v0 = (v0 + v1) & _MASK64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _MASK64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _MASK64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _MASK64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    full = len(data) - len(data) % 8
    for position in range(0, full, 8):
        m = int.from_bytes(data[position:position + 8], "little")
        v3 ^= m
        rounds(c_rounds)
        v0 ^= m
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[full:], "little")
    v3 ^= last
    rounds(c_rounds)
    v0 ^= last
    v2 ^= 0xFF
    rounds(d_rounds)
    return v0 ^ v1 ^ v2 ^ v3


class _Op:
    __slots__ = ("hash", "key", "kind", "value")

    def __init__(self, kind: int, key: bytes, value: bytes, hash_: int) -> None:
        self.kind = kind
        self.key = key
        self.value = value
        self.hash = hash_


def encode_record(index_bits: int, previous_address: int, ops: list[_Op]) -> bytes:
    parts = [_HEADER.pack(RECORD_VERSION, index_bits, len(ops), previous_address)]
    for op in ops:
        parts.append(_OP.pack(op.kind, 0, len(op.key), len(op.value), op.hash))
        parts.append(op.key)
        parts.append(op.value)
    return b"".join(parts)


def decode_record(payload: bytes, address: int) -> tuple[int, int, list[_Op]]:
    """Returns (index_bits, previous_address, ops); RecordCorruptError if malformed."""
    def corrupt(why: str) -> RecordCorruptError:
        return RecordCorruptError(f"read record at {address} failed: {why}", address)

    if len(payload) < RECORD_HEADER_SIZE_BYTES:
        raise corrupt(f"{len(payload)} bytes is shorter than a record header")
    version, index_bits, ops_count, previous = _HEADER.unpack_from(payload)
    if version == 1:
        raise StoreVersionError(f"read record at {address} failed: {_fast.VERSION_1_WHY}",
                                address)
    if version != RECORD_VERSION:
        raise corrupt(f"unknown record version {version}")
    if ops_count == 0 or index_bits > lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX:
        raise corrupt(f"bad header (ops_count {ops_count}, index_bits {index_bits})")
    if previous >= address or 0 < previous < lib.FL_FIRST_ADDRESS:
        raise corrupt(f"previous address {previous} does not point backwards")
    ops = []
    position = RECORD_HEADER_SIZE_BYTES
    for _ in range(ops_count):
        if position + OP_HEADER_SIZE_BYTES > len(payload):
            raise corrupt("an operation header runs past the record")
        kind, reserved, key_size, value_size, hash_ = _OP.unpack_from(payload, position)
        position += OP_HEADER_SIZE_BYTES
        end = position + key_size + value_size
        if kind not in (OP_PUT, OP_DELETE) or reserved or end > len(payload):
            raise corrupt(f"bad operation (op {kind}, key {key_size} B, value {value_size} B)")
        if kind == OP_DELETE and value_size:
            raise corrupt("a delete carries a value")
        key = payload[position:position + key_size]
        ops.append(_Op(kind, key, payload[position + key_size:end], hash_))
        position = end
    if position != len(payload):
        raise corrupt(f"{len(payload) - position} stray bytes after the last operation")
    return index_bits, previous, ops


def _single_op(payload: bytes, address: int) -> tuple[int, int, int, int] | None:
    """(previous_address, op, key_size, key_hash) of a valid one-operation record, else None
    (then decode_record decides: several operations, or corrupt). Checks exactly what
    decode_record checks."""
    if len(payload) < _SINGLE.size:
        return None
    (version, index_bits, ops_count, previous, kind, reserved, key_size, value_size,
     op_hash) = _SINGLE.unpack_from(payload)
    if (version == RECORD_VERSION and ops_count == 1 and reserved == 0
            and (kind == OP_PUT or kind == OP_DELETE and not value_size)
            and _SINGLE.size + key_size + value_size == len(payload)
            and index_bits <= lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX
            and (previous == 0 or lib.FL_FIRST_ADDRESS <= previous < address)):
        return previous, kind, key_size, op_hash
    return None


def _as_key(key: object, operation: str) -> bytes:
    if type(key) is bytes:
        data = key
    elif isinstance(key, (bytearray, memoryview)):
        data = bytes(key)
    else:
        raise KeyTypeError(f"{operation} failed: a key must be bytes, not {type(key).__name__}")
    if len(data) > key_size_max_bytes:
        raise KeyTooLarge(f"{operation} failed: key of {len(data)} bytes exceeds "
                          f"key_size_max_bytes ({key_size_max_bytes})")
    return data


def _as_value(value: object, operation: str) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise ValueTypeError(f"{operation} failed: a value must be bytes, not "
                         f"{type(value).__name__}")


class _HashIndex:
    """The C index plus the resolver grow needs (it reads records back from the log). With
    `log`, grow and the store's hot paths run in C (fl_kv.c) through `kv`; without, grow
    resolves records through `read_payload` in Python."""

    def __init__(self, buckets_count_log2: int, read_payload: Callable[[int], bytes],
                 log: FasterLog | None = None) -> None:
        out = ffi.new("fl_index **")
        rc = lib.fl_index_create(buckets_count_log2, out)
        if rc < 0:
            raise KVError(f"open failed: cannot create an index of 2^{buckets_count_log2} "
                          f"buckets (code {rc})")
        self.handle = ffi.gc(out[0], lib.fl_index_free)
        self._read_payload = read_payload
        self.chain_floor = 0  # store rule 6; kept here so it travels with a swapped index
        self._resolve_error: BaseException | None = None
        self._resolve = ffi.callback(_RESOLVE_SIGNATURE, self._resolve_record)
        self._log = log  # kept: `kv` borrows the log's and the index's handles
        self.kv: Any = None if log is None else _fast.create(log._log, self.handle)
        self.readers: Any = None if log is None else _fast.Readers(self.kv)

    def _resolve_record(self, context: Any, address: int, hashes: Any, capacity: int,
                        previous_out: Any) -> int:
        if address < self.chain_floor:  # compacted away (store rule 6): the chain ends
            previous_out[0] = 0
            return 0
        try:
            payload = self._read_payload(address)
            single = _single_op(payload, address)
            if single is not None:  # the common record: no _Op objects
                hashes[0] = single[3]
                previous_out[0] = single[0]
                return 1
            _, previous, ops = decode_record(payload, address)
        except BaseException as error:  # noqa: BLE001 - handed back to the caller of grow
            self._resolve_error = error
            return int(lib.FL_E_CORRUPT)
        for position, op in enumerate(ops[:capacity]):
            hashes[position] = op.hash
        previous_out[0] = previous
        return len(ops)

    def set_chain_floor(self, address: int) -> None:
        """Store rule 6: walks (here and in fl_kv.c) end below `address`."""
        self.chain_floor = address
        if self.kv is not None:
            lib.fl_kv_set_chain_floor(self.kv, address)

    def find(self, hash_: int) -> int:
        """The head of the hash's chain, or 0."""
        return int(lib.fl_index_find(self.handle, hash_))

    def stats(self) -> Any:
        stats = ffi.new("fl_index_stats *")
        lib.fl_index_get_stats(self.handle, stats)
        return stats

    def buckets_count_log2(self) -> int:
        return int(self.stats().buckets_count_log2)

    def upsert(self, hash_: int, expected_address: int, new_address: int) -> None:
        rc = lib.fl_index_upsert(self.handle, hash_, expected_address, new_address)
        # Rule 3 of the store: only our own writer changes the index, so a conflict is a bug.
        assert rc == 0, f"index upsert failed with code {rc}"

    def grow(self) -> None:
        if self.kv is not None:
            self._grow_c(self.buckets_count_log2() + 1, False)
            return
        self._resolve_error = None
        rc = lib.fl_index_grow(self.handle, self._resolve, ffi.NULL)
        if self._resolve_error is not None:
            raise self._resolve_error
        if rc == lib.FL_E_NOMEM:
            raise MemoryError("index grow failed: out of memory")
        assert rc == 0, f"index grow failed with code {rc}"

    def _grow_c(self, buckets_count_log2: int, if_loaded: bool) -> None:
        info = ffi.new("fl_error_info *")
        rc = lib.fl_kv_grow(self.kv, buckets_count_log2, if_loaded, info)
        if rc == lib.FL_E_NOMEM:
            raise MemoryError("index grow failed: out of memory")
        if rc < 0:
            _fast.fail(rc, "index grow", info)

    def grow_to(self, buckets_count_log2: int) -> None:
        if self.kv is not None:
            if self.buckets_count_log2() < buckets_count_log2:
                self._grow_c(buckets_count_log2, False)
            return
        while self.buckets_count_log2() < buckets_count_log2:
            self.grow()

    def grow_if_loaded(self) -> None:
        if self.kv is not None:
            if lib.fl_index_should_grow(self.handle):
                self._grow_c(0, True)
            return
        while lib.fl_index_should_grow(self.handle):
            self.grow()


class KVStore:
    """A durable key-value store over a FasterLog. Open one with KVStore.open().
    `recovered_from` is the checkpoint the open restored the index from (None: a full
    replay)."""

    def __init__(self, log: FasterLog, index_buckets_count_log2: int, *,
                 checkpoint_every_bytes: int = checkpoint_every_bytes_default,
                 checkpoints_kept_count: int = checkpoints_kept_count_default,
                 checkpoint_every_ms: int = checkpoint_every_ms_default,
                 read_only: bool = False, follow: bool = True,
                 _scan_for_markers: bool = False) -> None:
        self._log = log
        self._index = _HashIndex(index_buckets_count_log2, log.read, log)
        self._write_lock = threading.RLock()
        self._live_count = 0
        self._closed = False
        self._checkpoint_directory = os.path.join(log.path,
                                                  checkpoint_files.CHECKPOINT_DIRECTORY_NAME)
        self._checkpoint_every_bytes = checkpoint_every_bytes
        self._checkpoints_kept_count = checkpoints_kept_count
        self._bytes_since_checkpoint = 0
        self._checkpoints: list[Checkpoint] = []  # the kept ones, newest first (cookie order)
        self._base: Checkpoint | None = None  # the newest checkpoint known to be usable
        self._cookie_written: tuple[int, tuple[int, ...]] | None = None
        self.recovered_from: Checkpoint | None = None
        self._init_features(checkpoint_every_ms, read_only)
        # A follower's cookie is the one of its open: a rebuild after a truncation finds the
        # newer checkpoints by their markers instead (follower.py, rule 4).
        self._scan_for_markers = _scan_for_markers
        self._recover()
        self._start_features(follow)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *,
             index_buckets_count_log2: int = index_buckets_count_log2_default,
             checkpoint_every_bytes: int = checkpoint_every_bytes_default,
             checkpoints_kept_count: int = checkpoints_kept_count_default,
             checkpoint_every_ms: int = checkpoint_every_ms_default,
             read_only: bool = False, follow: bool = True,
             **log_settings: Any) -> KVStore:
        """Opens (creating or recovering) the log in `path` and rebuilds the index from the
        newest checkpoint and the log after it. `checkpoint_every_bytes` (0: off) makes a
        checkpoint once that many record bytes were written since the last one.
        `checkpoint_every_ms` (0: off) makes one once that long passed since the last one and
        something was written (checked on writes and by a sleeping timer thread).
        `read_only=True` opens a follower (follower.py): it may run beside the writer process
        and applies the writer's commits as they land (in a thread, unless follow=False; then
        `catch_up()` applies them). `log_settings` go to FasterLog.open."""
        for name, value, low, high in (
                ("index_buckets_count_log2", index_buckets_count_log2, 0,
                 lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX),
                ("checkpoint_every_bytes", checkpoint_every_bytes, 0, 1 << 62),
                ("checkpoints_kept_count", checkpoints_kept_count, 1,
                 checkpoint_files.checkpoints_kept_count_max),
                ("checkpoint_every_ms", checkpoint_every_ms, 0, 1 << 40)):
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise StoreSettingsError(f"open failed: {name} must be an integer from {low} "
                                         f"to {high}, not {value!r}")
        for name, flag in (("read_only", read_only), ("follow", follow)):
            if not isinstance(flag, bool):
                raise StoreSettingsError(f"open failed: {name} must be a bool, not {flag!r}")
        if read_only:
            log_settings["readonly"] = True
        log = FasterLog.open(path, **log_settings)
        try:
            return cls(log, index_buckets_count_log2,
                       checkpoint_every_bytes=checkpoint_every_bytes,
                       checkpoints_kept_count=checkpoints_kept_count,
                       checkpoint_every_ms=checkpoint_every_ms,
                       read_only=read_only, follow=follow)
        except BaseException:
            log.close()
            raise

    def close(self) -> None:
        self._stop_features()  # outside the write lock: the threads may be waiting for it
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                # The log's own closing commit keeps the old cookie: write the index size now,
                # or the next open replays with a small index and grows it on the way (each
                # grow reads every chain head back: 200k records/s instead of millions).
                state = (self._index.buckets_count_log2(),
                         tuple(checkpoint.marker_address for checkpoint in self._checkpoints))
                if (not self._read_only and state != self._cookie_written
                        and not self._log._snapshot().fenced_error):
                    self._commit_locked()
            finally:
                self._log.close()

    def __enter__(self) -> KVStore:  # noqa: PYI034 - KVStore is not meant to be subclassed
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._live_count} keys"
        return f"<KVStore {self._log.path!r} {state}>"

    @property
    def log(self) -> FasterLog:
        return self._log

    @property
    def _chain_floor(self) -> int:
        """Rule 6. Held by the index, so a follower's rebuilt index brings its own."""
        return self._index.chain_floor

    @_chain_floor.setter
    def _chain_floor(self, address: int) -> None:
        self._index.set_chain_floor(address)

    def key_hash(self, key: BytesLike) -> int:
        """The 64-bit hash this store's records and checkpoints carry for `key`: SipHash-1-3
        keyed from the log's salt (FORMAT.md "KV records"), so it differs between stores."""
        key = _as_key(key, "key_hash")
        return lib.fl_kv_hash(self._index.kv, key, len(key))  # type: ignore[no-any-return]

    def index_stats(self) -> dict[str, int]:
        stats = self._index.stats()
        return {name: int(getattr(stats, name)) for name in (
            "entries_count", "buckets_count", "overflow_buckets_count", "memory_bytes",
            "grow_count", "buckets_count_log2")}

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise StoreClosedError(f"{operation} failed: the store is closed")

    # ------------------------------------------------------------------ reading records

    # ------------------------------------------------------------------ reads

    def get(self, key: BytesLike, default: bytes | None = None, *, at: int | None = None,
            timeout: float | None = None) -> bytes | None:
        """The value of `key`, or `default` when it is not live. With `at` (a log address, such
        as one a writer's put returned), first waits until this store has applied the log up
        to and including `at` (WaitTimeoutError after `timeout` seconds)."""
        # The hot read: one C call (hash, index lookup, chain walk) and one copy out of this
        # thread's buffer; the checks of _as_key and _check_open inlined for bytes keys.
        if type(key) is not bytes or len(key) > key_size_max_bytes:
            key = _as_key(key, "get")
        if self._closed:
            raise StoreClosedError("get failed: the store is closed")
        if at is not None:
            self._wait_for_or_raise(at, timeout, "get")
        readers = self._index.readers
        size = _kv_get(readers.reader, key, len(key))
        if size >= 0:
            return _unpack(readers.buffer, size)  # type: ignore[no-any-return]
        if size == _ABSENT:
            return default
        return self._get_slow(key, size, default)

    def _get_slow(self, key: bytes, size: int, default: bytes | None) -> bytes | None:
        readers = self._index.readers
        if size == lib.FL_E_BUFFER:  # a value larger than the thread's buffer: grow it, retry
            readers.resize(int(readers.reader.error.size_needed))
            size = _kv_get(readers.reader, key, len(key))
        if size == _ABSENT:
            return default
        if size == lib.FL_E_TRUNCATED:  # a compaction moved the begin address under this walk
            value = self._value_after_truncation(key, 0)
            return default if value is None else value
        if size < 0:
            _fast.fail(size, "get", readers.reader.error)
        return _unpack(readers.buffer, size)  # type: ignore[no-any-return]

    def __getitem__(self, key: BytesLike) -> bytes:
        value = self.get(key)
        if value is None:
            missing = _as_key(key, "get")
            raise KeyNotFound(f"get failed: key {missing!r} not found", missing)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._live_count

    def get_many(self, keys: Iterable[BytesLike]) -> list[bytes | None]:
        """Values of many keys (None where not live), with one C call per buffer-full (hashes,
        batched index lookups and chain walks in C)."""
        self._check_open("get_many")
        items = keys if type(keys) is list else list(keys)
        count = len(items)
        if count == 0:
            return []
        # The common case checked in bulk: bytes-like keys join, and each key's len() is its
        # byte count unless a memoryview has wider items (then the joined size differs).
        try:
            joined = b"".join(items)
            key_sizes = array.array("I", map(len, items))
        except (TypeError, OverflowError):
            joined = b""
            key_sizes = array.array("I")
        if (len(key_sizes) != count or len(joined) != sum(key_sizes)
                or max(key_sizes) > key_size_max_bytes):
            items = [_as_key(key, "get_many") for key in items]
            joined = b"".join(items)
            key_sizes = array.array("I", map(len, items))
        scratch = self._index.readers.get_many_scratch(self._log.entry_size_max)
        buffer, capacity, view, offsets, sizes, missing, missing_count, layout, info = scratch
        window = _GET_MANY_FORMAT_ENTRIES  # keys per C call: bounds the scratch arrays
        joined_pointer = ffi.from_buffer(joined)
        sizes_view = ffi.from_buffer("uint32_t[]", key_sizes)
        values: list[bytes | None] = []
        done = key_offset = 0
        while done < count:
            asked = min(window, count - done)
            got = lib.fl_kv_get_many(self._index.kv, joined_pointer + key_offset,
                                     sizes_view + done, asked, buffer, capacity,
                                     offsets, sizes, missing, missing_count, info)
            if got == lib.FL_E_TRUNCATED:  # a compaction moved the begin address: rule 6, per key
                values.extend(self.get(key) for key in items[done:])
                return values
            if got < 0:
                _fast.fail(got, "get_many", info)
            layout_size = lib.fl_scan_format(offsets, sizes, got, layout, len(layout))
            values.extend(struct.unpack_from(ffi.buffer(layout, layout_size)[:], view))
            absent = int(missing_count[0])
            if absent:
                for position in ffi.unpack(missing, absent):
                    values[done + position] = None
            if done + got < count:
                key_offset += sum(key_sizes[done:done + got])
            done += got
        return values

    def _value_from(self, address: int, key: bytes, hash_: int) -> bytes | None:
        """Walks the chain from `address` to the newest operation on `key`: its value, or None
        when that is a delete or there is none (rule 2 says the walk cannot miss it). The walk
        ends at the chain floor (rule 6): records below it were compacted away."""
        if not address:
            return None
        readers = self._index.readers
        if readers is not None:  # in C (fl_kv.c); below is the reference it is tested against
            size = lib.fl_kv_value_from(readers.reader, address, hash_, key, len(key))
            if size == lib.FL_E_BUFFER:
                readers.resize(int(readers.reader.error.size_needed))
                size = lib.fl_kv_value_from(readers.reader, address, hash_, key, len(key))
            if size == _ABSENT:
                return None
            if size < 0:
                _fast.fail(size, "read", readers.reader.error)
            return ffi.unpack(readers.buffer, size)  # type: ignore[no-any-return]
        while address and address >= self._chain_floor:
            payload = self._log.read(address)
            single = _single_op(payload, address)
            if single is not None:  # the common record: no _Op objects
                previous, kind, key_size, op_hash = single
                if op_hash == hash_ and payload[_SINGLE.size:_SINGLE.size + key_size] == key:
                    return payload[_SINGLE.size + key_size:] if kind == OP_PUT else None
                address = previous
                continue
            _, previous, ops = decode_record(payload, address)  # several ops, or corrupt
            for op in reversed(ops):
                if op.hash == hash_ and op.key == key:
                    return op.value if op.kind == OP_PUT else None
            address = previous
        return None

    def _latest(self) -> dict[bytes, bytes | None]:
        # Replays the log into a dict: iteration is O(log) in time and O(keys) in memory until
        # the index can be walked (a later step). Scans see committed entries only, so writes
        # made with commit=False are committed first.
        with self._write_lock:
            if self._read_only:  # a follower lists what it applied
                end = self._applied_until
            else:
                if self._log.tail_address > self._log.committed_until_address:
                    self._commit_locked()
                end = self._log.committed_until_address
        latest: dict[bytes, bytes | None] = {}
        for address, payload in self._log.scan(end=end):
            for op in decode_record(payload, address)[2]:
                latest[op.key] = op.value if op.kind == OP_PUT else None
        return latest

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs, in the order their keys were first written. Writes made
        with commit=False are committed first."""
        self._check_open("items")
        for _ in range(truncated_read_retries_max):
            try:
                latest = self._latest()
                break
            except TruncatedError:  # a compaction truncated the log under the scan: again,
                if self._read_only:  # up to the end that now holds the copies
                    self.catch_up()
        else:
            raise KVError(f"items failed: {truncated_read_retries_max} compactions in a row "
                          f"truncated the log under the scan")
        return ((key, value) for key, value in latest.items() if value is not None)

    def keys(self) -> Iterator[bytes]:
        return (key for key, _ in self.items())

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    # ------------------------------------------------------------------ writes

    def put(self, key: BytesLike, value: BytesLike, *, commit: bool = True) -> int:
        """Sets `key` to `value`; returns the record's address. Durable on return unless
        commit=False."""
        return self.write_batch([(_as_key(key, "put"), _as_value(value, "put"))],
                                commit=commit, _operation="put")[0]

    def __setitem__(self, key: BytesLike, value: BytesLike) -> None:
        self.put(key, value)

    def delete(self, key: BytesLike, *, commit: bool = True) -> None:
        """Removes `key`; KeyNotFound when it is not live."""
        checked = _as_key(key, "delete")
        with self._write_lock:
            self._check_open("delete")
            if self.get(checked) is None:
                raise KeyNotFound(f"delete failed: key {checked!r} not found", checked)
            self.write_batch([(checked, None)], commit=commit, _operation="delete")

    def __delitem__(self, key: BytesLike) -> None:
        self.delete(key)

    def put_many(self, items: Mapping[bytes, BytesLike] | Iterable[tuple[BytesLike, BytesLike]],
                 *,
                 commit: bool = True) -> list[int]:
        """Sets many keys atomically (after a crash all or none) with one commit. A key given
        twice takes its last value. Returns the addresses of the records written."""
        if isinstance(items, Mapping):
            keys, values = list(items.keys()), list(items.values())
        else:
            pairs = list(items)
            keys, values = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
        # Bytes keys and values (the common case) go to C as they are; it keeps the last value
        # of a key given twice. Anything else takes the checked path.
        if ({type(key) for key in keys} | {type(value) for value in values}) <= {bytes} and (
                not keys or max(map(len, keys)) <= key_size_max_bytes):
            with self._write_lock:
                self._check_open("put_many")
                addresses = self._write_columns(keys, values, "put_many") if keys else []
                if commit:
                    self._commit_locked()
                if 0 < self._checkpoint_every_bytes <= self._bytes_since_checkpoint:
                    self.checkpoint()
                return addresses
        checked = [(_as_key(key, "put_many"), _as_value(value, "put_many"))
                   for key, value in zip(keys, values)]
        return self.write_batch(checked, commit=commit, _operation="put_many")

    def write_batch(self, operations: Iterable[tuple[BytesLike, BytesLike | None]], *,
                    commit: bool = True, _operation: str = "write_batch") -> list[int]:
        """Applies (key, value) puts and (key, None) deletes atomically, with one commit.
        Deleting a key that is not live is allowed here (it writes a harmless tombstone)."""
        latest: dict[bytes, bytes | None] = {}
        for key, value in operations:
            checked = _as_key(key, _operation)
            latest[checked] = None if value is None else _as_value(value, _operation)
        if len(latest) > batch_ops_count_max:
            raise ValueTooLarge(f"{_operation} failed: {len(latest)} keys exceed "
                                f"batch_ops_count_max ({batch_ops_count_max})")
        with self._write_lock:
            self._check_open(_operation)
            self._check_writable(_operation)
            addresses = self._write_locked(latest, _operation) if latest else []
            if commit:
                self._commit_locked()
            if 0 < self._checkpoint_every_bytes <= self._bytes_since_checkpoint or (
                    self._checkpoint_due()):
                self.checkpoint()  # commits any writes made with commit=False too
            return addresses

    def _write_locked(self, latest: dict[bytes, bytes | None], operation: str) -> list[int]:
        keys = list(latest)
        return self._write_columns(keys, list(latest.values()), operation)

    def _write_columns(self, keys: list[bytes], values: list[bytes | None],
                       operation: str) -> list[int]:
        """Appends a batch of checked keys and values (None: delete) as one record per chain
        and applies it to the index, in one C call (fl_kv_write: it hashes, checks liveness,
        groups, encodes, appends, upserts and grows). A key given twice takes its last value;
        the write lock is held."""
        count = len(keys)
        key_sizes = array.array("I", map(len, keys))
        if None in values:
            value_sizes = array.array("I", [_fast.VALUE_DELETE if value is None else len(value)
                                            for value in values])
            joined_values = b"".join([value for value in values if value is not None])
        else:
            puts: list[bytes] = values  # type: ignore[assignment]
            value_sizes = array.array("I", map(len, puts))
            joined_values = b"".join(puts)
        addresses = _new_uncleared("uint64_t[]", count)
        result = ffi.new("fl_kv_write_result *")
        info = ffi.new("fl_error_info *")
        records = lib.fl_kv_write(self._index.kv, b"".join(keys),
                                  ffi.from_buffer("uint32_t[]", key_sizes), joined_values,
                                  ffi.from_buffer("uint32_t[]", value_sizes), count, addresses,
                                  result, info)
        if records < 0:
            if records == lib.FL_E_TOO_LARGE:
                raise ValueTooLarge(f"{operation} failed: a record of {int(info.size_needed)} "
                                    f"bytes exceeds the log's entry_size_max "
                                    f"({self._log.entry_size_max})")
            if records == lib.FL_E_KV_BATCH:
                raise ValueTooLarge(f"{operation} failed: {int(info.size_needed)} keys exceed "
                                    f"batch_ops_count_max ({batch_ops_count_max})")
            _fast.fail(records, operation, info)
        self._bytes_since_checkpoint += int(result.bytes_count)
        self._live_count += int(result.live_change)
        return ffi.unpack(addresses, records)  # type: ignore[no-any-return]

    def commit(self) -> int:
        """Makes every write so far durable (for writes made with commit=False)."""
        with self._write_lock:
            self._check_open("commit")
            self._check_writable("commit")
            return self._commit_locked()

    def _commit_locked(self) -> int:
        # The cookie carries the index size, so the next open sizes its index before the
        # replay instead of growing it on the way (each grow reads every chain head back), and
        # the kept checkpoint markers' addresses, so the next open finds them without a scan.
        # The cookie is sticky, so it is written only when it changes; other users' entries in
        # it are kept.
        state = (self._index.buckets_count_log2(),
                 tuple(checkpoint.marker_address for checkpoint in self._checkpoints))
        if state != self._cookie_written:
            shared = checkpoint_files.decode_cookie(self._log.cookie).shared
            cookie = checkpoint_files.encode_cookie(state[0], list(state[1]), shared)
            committed = self._log.commit(cookie=cookie)
            self._cookie_written = state
            return committed
        return self._log.commit()

    def rmw(self, key: BytesLike, function: Callable[[bytes | None], bytes | None], *,
            commit: bool = True) -> bytes | None:
        """Read-modify-write: stores function(old value or None); a None result deletes the
        key. Returns the new value. Atomic against other writers of this store."""
        checked = _as_key(key, "rmw")
        with self._write_lock:
            self._check_open("rmw")
            result = function(self.get(checked))
            new = None if result is None else _as_value(result, "rmw")
            self.write_batch([(checked, new)], commit=commit, _operation="rmw")
            return new

    def incr(self, key: BytesLike, n: int = 1, *, commit: bool = True) -> int:
        """Adds `n` to the decimal integer stored at `key` (missing counts as 0); returns it."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise ValueTypeError(f"incr failed: n must be an int, not {type(n).__name__}")
        result = 0

        def add(old: bytes | None) -> bytes:
            nonlocal result
            try:
                result = (0 if old is None else int(old.decode("ascii"), 10)) + n
            except (UnicodeDecodeError, ValueError):
                raise NotAnIntegerError(f"incr failed: the value of {bytes(key)!r} is not a "
                                        f"decimal integer: {(old or b'')[:40]!r}") from None
            return str(result).encode("ascii")

        self.rmw(key, add, commit=commit)
        return result

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """The kept checkpoints, newest first."""
        return list(self._checkpoints)

    def checkpoint(self) -> Checkpoint:
        """Commits, writes a snapshot of the index durably and commits a checkpoint marker
        naming it (checkpoint.py, rule 3); returns it. Without writes since the last checkpoint
        it returns that one. Writers wait meanwhile: the snapshot is built from the previous
        one plus the records since, which costs O(keys + bytes since)."""
        with self._write_lock:
            self._check_open("checkpoint")
            self._check_writable("checkpoint")
            self._last_checkpoint_s = time.monotonic()
            self._commit_locked()
            if self._checkpoints and self._bytes_since_checkpoint == 0 and (
                    self._checkpoints[0] is self._base):
                return self._checkpoints[0]
            position = self._log.committed_until_address
            hashes, words, live_count = self._snapshot_entries(position)
            bits = self._index.buckets_count_log2()
            data = checkpoint_files.encode_snapshot_arrays(position, bits, hashes, words,
                                                           live_count)
            crc = checkpoint_files.crc32c(data)
            try:
                file_name = checkpoint_files.write_snapshot(self._checkpoint_directory,
                                                            position, data)
            except OSError as error:
                raise CheckpointError(f"checkpoint failed: cannot write the snapshot in "
                                      f"{self._checkpoint_directory}: {error}") from error
            marker = checkpoint_files.encode_marker(position, file_name, len(data), crc)
            made = Checkpoint(position, file_name, len(data), crc,
                              self._log.append_marker(marker))
            self._checkpoints = [made, *self._checkpoints][:self._checkpoints_kept_count]
            self._commit_locked()  # the marker and the cookie naming it, in one commit
            self._base = made
            self._bytes_since_checkpoint = 0
            checkpoint_files.remove_unkept_files(
                self._checkpoint_directory, (kept.file_name for kept in self._checkpoints))
            return made

    def _snapshot_entries(self, position: int) -> tuple[array.array[int], array.array[int], int]:
        """The snapshot entries at `position` (checkpoint.py, rule 1) as sorted hashes, their
        words and the live count: the last usable snapshot folded forward with the records
        since, or the whole log folded, in one C call (fl_kv_snapshot_fold). Entries below the
        begin address are tombstones of keys deleted before a compaction (a live key's newest
        record is never below it: rule 6): they are left out."""
        base_hashes, base_words = array.array("Q"), array.array("Q")
        begin = self._log.begin_address
        if self._base is not None:
            try:
                base = checkpoint_files.read_snapshot(self._checkpoint_directory, self._base)
                base_hashes, base_words = base.hashes, base.words
                begin = max(begin, self._base.position)
            except CheckpointError as error:
                checkpoint_files.logger.warning(
                    "checkpoint of %s: %s; folding the whole log instead", self._log.path, error)
        # Every operation is at least 16 bytes of log: a bound on the entries the fold adds.
        capacity = len(base_hashes) + max(0, position - begin) // OP_HEADER_SIZE_BYTES + 1
        hashes = array.array("Q", bytes(8 * capacity))
        words = array.array("Q", bytes(8 * capacity))
        live = ffi.new("uint64_t *")
        info = ffi.new("fl_error_info *")
        count = lib.fl_kv_snapshot_fold(
            self._index.kv, ffi.from_buffer("uint64_t[]", base_hashes),
            ffi.from_buffer("uint64_t[]", base_words), len(base_hashes), begin, position,
            self._log.begin_address, ffi.from_buffer("uint64_t[]", hashes),
            ffi.from_buffer("uint64_t[]", words), capacity, live, info)
        if count < 0:
            _fast.fail(count, "checkpoint", info)
        del hashes[count:], words[count:]
        return hashes, words, int(live[0])

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Rule 5 of the module: the newest usable checkpoint, then the log after it."""
        cookie = checkpoint_files.decode_cookie(self._log.cookie)
        if cookie.index_bits is not None:
            # Growing an empty index reads no records; any size is safe (rule 2 only asks for
            # at least the writer's size), so a stale cookie costs memory, not correctness.
            self._index.grow_to(cookie.index_bits)
        if cookie.checkpoint_addresses is None or self._scan_for_markers:  # the markers say
            found = checkpoint_files.find_markers(self._log)
            self._checkpoints = found[::-1][:self._checkpoints_kept_count]
        else:
            hinted = (checkpoint_files.marker_at(self._log, address)
                      for address in cookie.checkpoint_addresses)
            self._checkpoints = [checkpoint for checkpoint in hinted if checkpoint is not None]
        begin = None
        for position, checkpoint in enumerate(self._checkpoints):
            try:
                if checkpoint.position < self._log.begin_address:
                    raise CheckpointError(f"load checkpoint at position {checkpoint.position} "
                                          f"failed: the log now begins at "
                                          f"{self._log.begin_address}")
                snapshot = checkpoint_files.read_snapshot(self._checkpoint_directory, checkpoint)
            except CheckpointError as error:
                older = self._checkpoints[position + 1:]
                fallback = (f"the checkpoint at position {older[0].position}" if older
                            else "a full replay")
                checkpoint_files.logger.warning("open of %s: %s; falling back to %s",
                                                self._log.path, error, fallback)
                continue
            self._restore(snapshot)
            self._base = self.recovered_from = checkpoint
            begin = checkpoint.position
            break
        self._replay(begin, self._recover_end)

    def _restore(self, snapshot: checkpoint_files.Snapshot) -> None:
        """Loads an empty index from a snapshot, sized so that it does not grow on the way:
        each chain's head becomes the newest address among its keys (rule 5)."""
        bits = max(snapshot.index_bits, self._index.buckets_count_log2())
        while (len(snapshot.hashes) >> bits) > lib.FL_INDEX_ENTRIES_PER_BUCKET_GROW:
            bits += 1
        self._index.grow_to(min(bits, lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX))
        assert self._index.stats().entries_count == 0, "restore needs an empty index"
        count = len(snapshot.hashes)
        if count:  # one C call: a chain mate that came first keeps the newer address
            rc = lib.fl_index_load(self._index.handle,
                                   ffi.from_buffer("uint64_t[]", snapshot.hashes),
                                   ffi.from_buffer("uint64_t[]", snapshot.words), count,
                                   checkpoint_files.ENTRY_ADDRESS_MASK)
            if rc == lib.FL_E_NOMEM:
                raise MemoryError("restore failed: out of memory")
            assert rc == 0, f"index load failed with code {rc}"
        self._live_count = snapshot.live_count
        self._index.grow_if_loaded()

    def _replay(self, begin: int | None = None, end: int | None = None) -> None:
        """Rebuilds the index and the live count from the log from `begin` (default: all of
        it) up to `end` (default: committed-until) (rule 2 of the module), in one C call
        (fl_kv_replay)."""
        position = self._log.begin_address if begin is None else begin
        result = ffi.new("fl_kv_replay_result *")
        info = ffi.new("fl_error_info *")
        until = self._log.committed_until_address if end is None else end
        rc = lib.fl_kv_replay(self._index.kv, position, until, result, info)
        # The suffix counts toward the next automatic checkpoint, and makes one worth taking.
        self._bytes_since_checkpoint += int(result.bytes_count)
        self._live_count += int(result.live_change)
        if rc < 0:
            _fast.fail(rc, f"replay at {int(result.next_address)}", info)

    def _replay_record(self, address: int, payload: bytes) -> None:
        """The Python reference of one record's replay (fl_kv.c's replay_record does this)."""
        index_bits, _, ops = decode_record(payload, address)
        self._index.grow_to(index_bits)
        live_change = 0
        for op in ops:  # every liveness check before the record joins the index
            was_live = self._value_from(self._index.find(op.hash), op.key, op.hash) is not None
            live_change += (op.kind == OP_PUT) - was_live
        for op in ops:
            head = self._index.find(op.hash)
            if head != address:  # ops sharing a chain now share one entry
                self._index.upsert(op.hash, head, address)
        self._live_count += live_change

    # ------------------------------------------------------------------ compaction, followers,
    # timed checkpoints (the store's later features; their logic lives in compaction.py and
    # follower.py, and these methods are the KVStore face of it)

    def _init_features(self, checkpoint_every_ms: int, read_only: bool) -> None:
        self._chain_floor = self._log.begin_address  # rule 6
        self._read_only = read_only
        # A follower replays up to a committed-until address it read before (so it knows where
        # it stands); the writer replays everything committed.
        self._recover_end: int | None = (self._log.committed_until_address if read_only
                                         else None)
        self._applied_until = 0
        self._applied = threading.Condition(threading.Lock())
        self._checkpoint_every_ms = checkpoint_every_ms
        self._last_checkpoint_s = time.monotonic()
        self._features_stop = threading.Event()
        self._feature_threads: list[threading.Thread] = []

    def _start_features(self, follow: bool) -> None:
        from . import follower

        if self._read_only:
            self._applied_until = self._recover_end or self._log.committed_until_address
            if follow:
                self._feature_threads.append(follower.start_following(self))
        elif self._checkpoint_every_ms:
            self._feature_threads.append(follower.start_checkpoint_timer(self))

    def _stop_features(self) -> None:
        self._features_stop.set()
        for thread in self._feature_threads:
            while thread is not threading.current_thread() and thread.is_alive():
                # A follower thread waiting for a commit returns at once; woken again in case
                # it had not started its wait yet (a wake finds no waiter then).
                self._log.wake()
                thread.join(0.01)
        self._feature_threads = []

    @property
    def read_only(self) -> bool:
        """True for a follower opened with read_only=True."""
        return self._read_only

    @property
    def applied_until_address(self) -> int:
        """The log address up to which this store's index holds the log: for the writer, the
        tail (it reads its own writes); for a follower, what it applied so far."""
        return self._applied_until if self._read_only else self._log.tail_address

    def _check_writable(self, operation: str) -> None:
        if self._read_only:
            raise StoreReadOnlyError(f"{operation} failed: the store was opened read_only=True "
                                     f"(writes go through the writer process)")

    def _checkpoint_due(self) -> bool:
        return bool(self._checkpoint_every_ms) and (
            time.monotonic() - self._last_checkpoint_s) * 1000 >= self._checkpoint_every_ms

    def _value_after_truncation(self, key: bytes, hash_: int) -> bytes | None:
        """Rule 6: a walk read a record a compaction truncated meanwhile. The index already
        points at the copies (the writer applies them before raising the floor and truncating;
        a follower catches up first), so the read starts again from the index: fl_kv_get loads
        the floor before its lookup, so it never mistakes a stale head for an empty chain."""
        from . import follower

        del hash_  # fl_kv_get hashes again: the retry is rare
        for _ in range(truncated_read_retries_max):
            self._check_open("get")
            if self._read_only:
                follower.catch_up(self)
            readers = self._index.readers
            size = _kv_get(readers.reader, key, len(key))
            if size == lib.FL_E_BUFFER:
                readers.resize(int(readers.reader.error.size_needed))
                size = _kv_get(readers.reader, key, len(key))
            if size == _ABSENT:
                return None
            if size == lib.FL_E_TRUNCATED:
                continue
            if size < 0:
                _fast.fail(size, "get", readers.reader.error)
            return _unpack(readers.buffer, size)  # type: ignore[no-any-return]
        raise KVError(f"get failed: {truncated_read_retries_max} compactions in a row "
                      f"truncated the records this read was walking")

    def compact(self, until_address: int | None = None, *, force: bool = False,
                progress: Callable[[int, int], None] | None = None) -> Any:
        """Copies the live records below `until_address` (default: all of the committed log)
        forward, checkpoints, and truncates the log there, so its segment files below are
        deleted. Respects named cursors (RetentionError unless force=True), as truncate_until
        does. Reads and writes go on meanwhile. `progress(done_bytes, total_bytes)` is called
        as it goes. Returns a compaction.CompactionResult. See compaction.py for the order of
        the steps and why a crash at any point recovers the same state."""
        from . import compaction

        return compaction.compact(self, until_address, force=force, progress=progress)

    def wait_for(self, address: int, timeout: float | None = None) -> bool:
        """Waits until this store has applied the log up to and including `address` (a
        follower: as the writer's commits land; the writer: once it is written). False when
        `timeout` seconds pass first."""
        from . import follower

        self._check_open("wait_for")
        return follower.wait_for(self, address, timeout)

    def catch_up(self) -> int:
        """A follower applies every commit visible now (what its thread does as commits land);
        returns the address it applied up to. The writer returns its tail."""
        from . import follower

        self._check_open("catch_up")
        if not self._read_only:
            return self._log.tail_address
        return follower.catch_up(self)

    def _wait_for_or_raise(self, address: int, timeout: float | None, operation: str) -> None:
        from . import follower

        if not follower.wait_for(self, address, timeout):
            raise WaitTimeoutError(f"{operation} failed: the store did not apply address "
                                   f"{address} within {timeout} s (it applied up to "
                                   f"{self.applied_until_address})")
