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
3. One writer at a time per store: the store core's `write_lock` (core.py) serializes writes in
   this process, and the log's writer lock keeps other processes out. Reads take no lock.
4. A write is applied to the index after it is appended and before it is committed, so a
   process reads its own writes; put/delete/put_many commit before returning unless
   commit=False. A failed commit fences the log, and the store then discards what it had not
   committed (StoreCore.discard_uncommitted rebuilds the index from the committed log): a
   write that raised is never read back, and neither are commit=False writes the fence made
   impossible to commit. Reads go on; writes raise the log's LogFencedError until a reopen.
5. Recovery restores the index from the newest checkpoint whose snapshot checks out (the cookie
   says where the markers are; without a kvlayer cookie the log is scanned for them), then
   replays the records from its position. An unusable snapshot is skipped with a warning on the
   "kvlayer.checkpoint" logger, falling back to an older checkpoint, then to a full replay.
   Restoring sets each chain's head to the newest address among the snapshot's keys of that
   chain: every older record of the chain is reachable from it (the writer linked each record
   to the head of the time), so rule 2 holds after the restore.
6. Chain floor: a chain walk stops at `StoreCore.chain_floor`, the begin address of the log as
   far as this store's index is concerned. Compaction (compaction.py) copies every live record
   below an address U forward before truncating the log at U, so once the copies are in the
   index no key's newest operation lies below U, and a walk that reaches below it can end (the
   key's older records, and tombstones of deleted keys, are gone with the truncated part). The
   writer raises its floor to U when it truncates; a follower raises it to a begin address B
   only after applying every commit that was visible after it saw B (follower.py). A reader
   whose walk reads a record that a compaction truncated meanwhile (TruncatedError) restarts
   from the index, whose heads already point at the copies.

KVStore is the API; its state lives in a StoreCore (core.py) that it hands to compaction.py and
follower.py, so they depend on the core and never on this module. The record format is
records.py (its names are importable from here too), the index binding index.py.
"""

from __future__ import annotations

import array
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fasterlog import FasterLog
from fasterlog.errors import TruncatedError, raise_for

from . import checkpoint as checkpoint_files
from . import compaction, follower
from ._fast import GET_MANY_WINDOW
from ._kvlayer_c import ffi, lib
from .checkpoint import Checkpoint
from .core import StoreCore
from .errors import (
    KeyNotFound,
    KVError,
    NotAnIntegerError,
    StoreClosedError,
    StoreSettingsError,
    ValueTooLarge,
    ValueTypeError,
    WaitTimeoutError,
)
from .records import (
    OP_DELETE,
    OP_HEADER_SIZE_BYTES,
    OP_PUT,
    RECORD_HEADER_SIZE_BYTES,
    RECORD_VERSION,
    BytesLike,
    as_key,
    as_value,
    batch_ops_count_max,
    decode_record,
    encode_record,
    key_hash,
    key_size_max_bytes,
    ops_per_record_max,
    siphash13,
)

# The record format lives in records.py; its names stay importable from here, where the
# store's users (the server, tools) have always found them.
__all__ = [
    "OP_DELETE",
    "OP_HEADER_SIZE_BYTES",
    "OP_PUT",
    "RECORD_HEADER_SIZE_BYTES",
    "RECORD_VERSION",
    "BytesLike",
    "KVStore",
    "batch_ops_count_max",
    "decode_record",
    "encode_record",
    "key_hash",
    "key_size_max_bytes",
    "ops_per_record_max",
    "siphash13",
]

index_buckets_count_log2_default = 10
# Empty buckets a scan step may walk beyond its 10 x count (each costs a call, no read): the
# default index's size, so a store whose index has not grown is one step.
scan_empty_buckets_max = 1 << index_buckets_count_log2_default
checkpoint_every_bytes_default = 0  # 0: no automatic checkpoints
checkpoint_every_ms_default = 0  # 0: no checkpoints by time
truncated_read_retries_max = 64  # a get racing this many compactions in a row gives up
checkpoints_kept_count_default = 3
_GET_MANY_FORMAT_ENTRIES = GET_MANY_WINDOW
# Hot functions bound once: an attribute lookup on `lib` costs about 25 ns per call.
_kv_get = lib.fl_kv_get
_unpack = ffi.unpack
_ABSENT = lib.FL_KV_ABSENT


class KVStore:
    """A durable key-value store over a FasterLog. Open one with KVStore.open().
    `recovered_from` is the checkpoint the open restored the index from (None: a full
    replay)."""

    # The store's state is its StoreCore (core.py), which compaction and the follower share;
    # this class is the API over it.

    def __init__(self, log: FasterLog, index_buckets_count_log2: int, *,
                 checkpoint_every_bytes: int = checkpoint_every_bytes_default,
                 checkpoints_kept_count: int = checkpoints_kept_count_default,
                 checkpoint_every_ms: int = checkpoint_every_ms_default,
                 read_only: bool = False, follow: bool = True) -> None:
        self._core = core = StoreCore(log, index_buckets_count_log2,
                                      checkpoint_every_bytes=checkpoint_every_bytes,
                                      checkpoints_kept_count=checkpoints_kept_count,
                                      checkpoint_every_ms=checkpoint_every_ms,
                                      read_only=read_only)
        core.recover()
        if read_only:
            if follow:
                core.feature_threads.append(follower.start_following(core))
        elif checkpoint_every_ms:
            core.feature_threads.append(follower.start_checkpoint_timer(core))

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
        `catch_up()` applies them). `readonly=` (FasterLog.open's spelling) is the same as
        `read_only=`. `log_settings` go to FasterLog.open."""
        if "readonly" in log_settings:
            # FasterLog's spelling: it used to reach the log alone, so the store opened as a
            # writer on a read-only log and failed at its first put and at close (issue 15).
            readonly = log_settings.pop("readonly")
            if not isinstance(readonly, bool):
                raise StoreSettingsError(f"open failed: readonly must be a bool, not "
                                         f"{readonly!r}")
            read_only = read_only or readonly
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
        self._core.close()

    def __enter__(self) -> KVStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.closed else f"{core.live_count} keys"
        return f"<KVStore {core.log.path!r} {state}>"

    @property
    def log(self) -> FasterLog:
        return self._core.log

    @property
    def recovered_from(self) -> Checkpoint | None:
        """The checkpoint the open restored the index from (None: a full replay)."""
        return self._core.recovered_from

    def key_hash(self, key: BytesLike) -> int:
        """The 64-bit hash this store's records and checkpoints carry for `key`: SipHash-1-3
        keyed from the log's salt (FORMAT.md "KV records"), so it differs between stores."""
        key = as_key(key, "key_hash")
        hash_: int = lib.fl_kv_hash(self._core.index.kv, key, len(key))
        return hash_

    def index_stats(self) -> dict[str, int]:
        stats = self._core.index.stats()
        return {name: int(getattr(stats, name)) for name in (
            "entries_count", "buckets_count", "overflow_buckets_count", "memory_bytes",
            "grow_count", "buckets_count_log2")}

    # ------------------------------------------------------------------ reads

    def get(self, key: BytesLike, default: bytes | None = None, *, at: int | None = None,
            timeout: float | None = None) -> bytes | None:
        """The value of `key`, or `default` when it is not live. With `at` (a log address, such
        as one a writer's put returned), first waits until this store has applied the log up
        to and including `at` (WaitTimeoutError after `timeout` seconds)."""
        # The hot read: one C call (hash, index lookup, chain walk) and one copy out of this
        # thread's buffer; the checks of as_key and check_open inlined for bytes keys.
        if type(key) is not bytes or len(key) > key_size_max_bytes:
            key = as_key(key, "get")
        core = self._core
        if core.closed:
            raise StoreClosedError("get failed: the store is closed")
        if at is not None:
            self._wait_for_or_raise(at, timeout, "get")
        readers = core.index.readers
        size = _kv_get(readers.reader, key, len(key))
        if size >= 0:
            return _unpack(readers.buffer, size)  # type: ignore[no-any-return]
        if size == _ABSENT:
            return default
        return self._get_slow(key, size, default)

    def _get_slow(self, key: bytes, size: int, default: bytes | None) -> bytes | None:
        readers = self._core.index.readers
        if size == lib.FL_E_BUFFER:  # a value larger than the thread's buffer: grow it, retry
            readers.resize(int(readers.reader.error.size_needed))
            size = _kv_get(readers.reader, key, len(key))
        if size == _ABSENT:
            return default
        if size == lib.FL_E_TRUNCATED:  # a compaction moved the begin address under this walk
            value = self._value_after_truncation(key)
            return default if value is None else value
        if size < 0:
            raise_for(size, "get", readers.reader.error)
        return _unpack(readers.buffer, size)  # type: ignore[no-any-return]

    def _value_after_truncation(self, key: bytes) -> bytes | None:
        """Rule 6: a walk read a record a compaction truncated meanwhile. The index already
        points at the copies (the writer applies them before raising the floor and truncating;
        a follower catches up first), so the read starts again from the index: fl_kv_get loads
        the floor before its lookup, so it never mistakes a stale head for an empty chain."""
        core = self._core
        for _ in range(truncated_read_retries_max):
            core.check_open("get")
            if core.read_only:
                follower.catch_up(core)
            readers = core.index.readers
            size = _kv_get(readers.reader, key, len(key))
            if size == lib.FL_E_BUFFER:
                readers.resize(int(readers.reader.error.size_needed))
                size = _kv_get(readers.reader, key, len(key))
            if size == _ABSENT:
                return None
            if size == lib.FL_E_TRUNCATED:
                continue
            if size < 0:
                raise_for(size, "get", readers.reader.error)
            return _unpack(readers.buffer, size)  # type: ignore[no-any-return]
        raise KVError(f"get failed: {truncated_read_retries_max} compactions in a row "
                      f"truncated the records this read was walking")

    def __getitem__(self, key: BytesLike) -> bytes:
        value = self.get(key)
        if value is None:
            missing = as_key(key, "get")
            raise KeyNotFound(f"get failed: key {missing!r} not found", missing)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._core.live_count

    def get_many(self, keys: Iterable[BytesLike]) -> list[bytes | None]:
        """Values of many keys (None where not live), with one C call per buffer-full (hashes,
        batched index lookups and chain walks in C)."""
        core = self._core
        core.check_open("get_many")
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
            items = [as_key(key, "get_many") for key in items]
            joined = b"".join(items)
            key_sizes = array.array("I", map(len, items))
        index = core.index
        scratch = index.readers.get_many_scratch(core.log.entry_size_max)
        buffer, capacity, view, offsets, sizes, missing, missing_count, layout, info = scratch
        window = _GET_MANY_FORMAT_ENTRIES  # keys per C call: bounds the scratch arrays
        joined_pointer = ffi.from_buffer(joined)
        sizes_view = ffi.from_buffer("uint32_t[]", key_sizes)
        values: list[bytes | None] = []
        done = key_offset = 0
        while done < count:
            asked = min(window, count - done)
            got = lib.fl_kv_get_many(index.kv, joined_pointer + key_offset,
                                     sizes_view + done, asked, buffer, capacity,
                                     offsets, sizes, missing, missing_count, info)
            if got == lib.FL_E_TRUNCATED:  # a compaction moved the begin address: rule 6, per key
                values.extend(self.get(key) for key in items[done:])
                return values
            if got < 0:
                raise_for(got, "get_many", info)
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

    def _latest(self) -> dict[bytes, bytes | None]:
        # Replays the log into a dict: iteration is O(log) in time and O(keys) in memory until
        # the index can be walked (a later step). Scans see committed entries only, so writes
        # made with commit=False are committed first.
        core = self._core
        with core.write_lock:
            if core.read_only:  # a follower lists what it applied
                end = core.applied_until
            else:
                # (A fenced log cannot commit: its uncommitted writes were discarded, rule 4.)
                if core.log.tail_address > core.log.committed_until_address and (
                        not core.log.fenced):
                    core.commit_locked()
                end = core.log.committed_until_address
        latest: dict[bytes, bytes | None] = {}
        for address, payload in core.log.scan(end=end):
            for op in decode_record(payload, address)[2]:
                latest[op.key] = op.value if op.kind == OP_PUT else None
        return latest

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs, in the order their keys were first written. Writes made
        with commit=False are committed first."""
        self._core.check_open("items")
        for _ in range(truncated_read_retries_max):
            try:
                latest = self._latest()
                break
            except TruncatedError:  # a compaction truncated the log under the scan: again,
                if self._core.read_only:  # up to the end that now holds the copies
                    self.catch_up()
        else:
            raise KVError(f"items failed: {truncated_read_retries_max} compactions in a row "
                          f"truncated the log under the scan")
        return ((key, value) for key, value in latest.items() if value is not None)

    def keys(self) -> Iterator[bytes]:
        return (key for key, _ in self.items())

    def scan(self, cursor: int = 0, count: int = 10) -> tuple[int, list[bytes]]:
        """A step of a cursor iteration over the live keys, as Redis's SCAN: returns (next
        cursor, keys); start at 0, stop when the cursor returned is 0. Each step walks whole
        index buckets, in the reverse-binary order of fl_index_scan, until it found `count`
        keys or walked 10 * `count` buckets that hold any (and scan_empty_buckets_max empty
        ones more), so it costs O(count) records (times the versions each key has), not
        O(keys); an index that has not grown (a small store) is walked whole in one step, so
        its first step returns every key and cursor 0, as Redis's SCAN does on a small
        keyspace. Every key live for the whole iteration is returned, some
        more than once (a grow of the index between steps can show a bucket's keys again); a
        key written or deleted meanwhile may or may not be. Sees writes not committed yet, as
        get does (rule 4)."""
        core = self._core
        core.check_open("scan")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueTypeError(f"scan failed: count must be a positive int, not {count!r}")
        if not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0:
            raise ValueTypeError(f"scan failed: cursor must be an int >= 0, not {cursor!r}")
        found: list[bytes] = []
        buckets_left, empty_left = 10 * count, scan_empty_buckets_max
        while buckets_left > 0:
            for _ in range(truncated_read_retries_max):
                index = core.index  # a follower's rebuild may swap it: one per bucket
                next_cursor, bits, pairs = index.scan_bucket(cursor)
                try:
                    keys = self._live_keys_of(pairs, (1 << bits) - 1)
                    break
                except TruncatedError:  # a compaction moved the begin: the heads moved too
                    if core.read_only:
                        follower.catch_up(core)
            else:
                raise KVError(f"scan failed: {truncated_read_retries_max} compactions in a row "
                              f"truncated the records this scan was walking")
            found += keys
            cursor = next_cursor
            if cursor == 0 or len(found) >= count:
                break
            if pairs or empty_left == 0:
                buckets_left -= 1
            else:
                empty_left -= 1
        return cursor, found

    def _live_keys_of(self, pairs: list[tuple[int, int]], mask: int) -> list[bytes]:
        """The live keys of the chains whose heads are `pairs` (bucket, entry word): each
        chain is walked from its head (newest first) to its end or the chain floor (rule 6);
        a key's first operation met is its newest (rule 2). A chain may hold records of other
        buckets' keys (fl_index.c rule 4: a bounded split keeps a superset): only the keys of
        the entry's own bucket and tag are taken."""
        address_mask = (1 << lib.FL_INDEX_ADDRESS_BITS) - 1
        tag_mask = (1 << lib.FL_INDEX_TAG_BITS) - 1
        core = self._core
        read = core.log.read
        live: list[bytes] = []
        for bucket, word in pairs:
            tag = (word >> lib.FL_INDEX_ADDRESS_BITS) & tag_mask
            address, seen = word & address_mask, set()
            while address and address >= core.chain_floor:
                _, previous, ops = decode_record(read(address), address)
                for op in reversed(ops):
                    if (op.hash & mask != bucket or (op.hash >> lib.FL_INDEX_ADDRESS_BITS)
                            & tag_mask != tag or op.key in seen):
                        continue
                    seen.add(op.key)
                    if op.kind == OP_PUT:
                        live.append(op.key)
                address = previous
        return live

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    # ------------------------------------------------------------------ writes

    def put(self, key: BytesLike, value: BytesLike, *, commit: bool = True) -> int:
        """Sets `key` to `value`; returns the record's address. Durable on return unless
        commit=False."""
        return self.write_batch([(as_key(key, "put"), as_value(value, "put"))],
                                commit=commit, _operation="put")[0]

    def __setitem__(self, key: BytesLike, value: BytesLike) -> None:
        self.put(key, value)

    def delete(self, key: BytesLike, *, commit: bool = True) -> None:
        """Removes `key`; KeyNotFound when it is not live."""
        checked = as_key(key, "delete")
        core = self._core
        with core.write_lock:
            core.check_open("delete")
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
            # The same checks, commit and checkpoints as every write (StoreCore.write_lists).
            return self._core.write_lists(keys, values, "put_many",
                                          commit=commit)
        checked = [(as_key(key, "put_many"), as_value(value, "put_many"))
                   for key, value in zip(keys, values, strict=True)]
        return self.write_batch(checked, commit=commit, _operation="put_many")

    def write_batch(self, operations: Iterable[tuple[BytesLike, BytesLike | None]], *,
                    commit: bool = True, _operation: str = "write_batch") -> list[int]:
        """Applies (key, value) puts and (key, None) deletes atomically, with one commit.
        Deleting a key that is not live is allowed here (it writes a harmless tombstone)."""
        latest: dict[bytes, bytes | None] = {}
        for key, value in operations:
            checked = as_key(key, _operation)
            latest[checked] = None if value is None else as_value(value, _operation)
        if len(latest) > batch_ops_count_max:
            raise ValueTooLarge(f"{_operation} failed: {len(latest)} keys exceed "
                                f"batch_ops_count_max ({batch_ops_count_max})")
        return self._core.write_checked(latest, _operation, commit=commit)

    def commit(self) -> int:
        """Makes every write so far durable (for writes made with commit=False)."""
        core = self._core
        with core.write_lock:
            core.check_open("commit")
            core.check_writable("commit")
            return core.commit_locked()

    def rmw(self, key: BytesLike, function: Callable[[bytes | None], bytes | None], *,
            commit: bool = True) -> bytes | None:
        """Read-modify-write: stores function(old value or None); a None result deletes the
        key. Returns the new value. Atomic against other writers of this store."""
        checked = as_key(key, "rmw")
        core = self._core
        with core.write_lock:
            core.check_open("rmw")
            result = function(self.get(checked))
            new = None if result is None else as_value(result, "rmw")
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
        return list(self._core.checkpoints)

    def checkpoint(self) -> Checkpoint:
        """Commits, writes a snapshot of the index durably and commits a checkpoint marker
        naming it (checkpoint.py, rule 3); returns it. Without writes since the last checkpoint
        it returns that one. Writers wait meanwhile: the snapshot is built from the previous
        one plus the records since, which costs O(keys + bytes since)."""
        return self._core.checkpoint()

    # ------------------------------------------------------------------ compaction, followers

    def compact(self, until_address: int | None = None, *, force: bool = False,
                progress: Callable[[int, int], None] | None = None) -> compaction.CompactionResult:
        """Copies the live records below `until_address` (default: all of the committed log)
        forward, checkpoints, and truncates the log there, so its segment files below are
        deleted. Respects named cursors (RetentionError unless force=True), as truncate_until
        does. Reads and writes go on meanwhile. `progress(done_bytes, total_bytes)` is called
        as it goes. Returns a compaction.CompactionResult. See compaction.py for the order of
        the steps and why a crash at any point recovers the same state."""
        return compaction.compact(self._core, until_address, force=force, progress=progress)

    @property
    def read_only(self) -> bool:
        """True for a follower opened with read_only=True."""
        return self._core.read_only

    @property
    def applied_until_address(self) -> int:
        """The log address up to which this store's index holds the log: for the writer, the
        tail (it reads its own writes); for a follower, what it applied so far."""
        core = self._core
        return core.applied_until if core.read_only else core.log.tail_address

    def wait_for(self, address: int, timeout: float | None = None) -> bool:
        """Waits until this store has applied the log up to and including `address` (a
        follower: as the writer's commits land; the writer: once it is written). False when
        `timeout` seconds pass first."""
        self._core.check_open("wait_for")
        return follower.wait_for(self._core, address, timeout)

    def catch_up(self) -> int:
        """A follower applies every commit visible now (what its thread does as commits land);
        returns the address it applied up to. The writer returns its tail."""
        core = self._core
        core.check_open("catch_up")
        if not core.read_only:
            return core.log.tail_address
        return follower.catch_up(core)

    def _wait_for_or_raise(self, address: int, timeout: float | None, operation: str) -> None:
        if not follower.wait_for(self._core, address, timeout):
            raise WaitTimeoutError(f"{operation} failed: the store did not apply address "
                                   f"{address} within {timeout} s (it applied up to "
                                   f"{self.applied_until_address})")
