"""StoreCore: an open store's state and the operations that KVStore, compaction and followers share.

KVStore (store.py) owns one StoreCore and hands it to compaction.py and follower.py; they read
and change the store's state only through the members declared here, never through KVStore. So
the modules depend one way: store -> compaction, follower -> core -> index, records, checkpoint.

The rules the state keeps are store.py's (its module docstring): rule 2 (chains) through the
index, rule 3 (one writer) through `write_lock`, rule 4 (writes applied before their commit,
and discarded when the commit fails) in `write_columns` and `discard_uncommitted`, rule 5
(recovery) in `recover`, rule 6 (the chain floor) in `chain_floor`.

Members, by who changes them (all under `write_lock` unless said otherwise):
- the log, the index (a follower's rebuild swaps in a fresh one) and `live_count`;
- `closed`, `read_only`;
- checkpoints: `checkpoints` (the kept ones, newest first, the cookie's order), `base` (the
  newest known to be usable), `bytes_since_checkpoint`, `last_checkpoint_s`, `cookie_written`
  (what the last cookie said), `recovered_from` (set once, by recover());
- a follower's progress: `applied_until` and the `applied` condition its waiters sleep on
  (notified outside the write lock), `recover_end` (the committed-until address it recovered to);
- the feature threads (follower, checkpoint timer) and the event that stops them.
"""

from __future__ import annotations

import array
import os
import threading
import time

from fasterlog import FasterLog
from fasterlog.errors import FasterLogError, raise_for

from . import _fast
from . import checkpoint as checkpoint_files
from ._kvlayer_c import ffi, lib
from .checkpoint import Checkpoint
from .errors import CheckpointError, StoreClosedError, StoreReadOnlyError, ValueTooLarge
from .index import HashIndex
from .records import (
    OP_HEADER_SIZE_BYTES,
    OP_PUT,
    SINGLE,
    batch_ops_count_max,
    decode_record,
    single_op,
)

__all__ = ["StoreCore"]

_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


class StoreCore:
    """The state of one open store (see the module docstring). Made by KVStore, and by a
    follower's rebuild (follower.py, rule 4); recover() loads it from the log."""

    __slots__ = (
        "applied", "applied_until", "base", "bytes_since_checkpoint", "checkpoint_directory",
        "checkpoint_every_bytes", "checkpoint_every_ms", "checkpoints", "checkpoints_kept_count",
        "closed", "cookie_written", "feature_threads", "features_stop", "index",
        "last_checkpoint_s", "live_count", "log", "read_only", "recover_end", "recovered_from",
        "scan_for_markers", "uncommitted_writes", "write_lock",
    )

    def __init__(self, log: FasterLog, index_buckets_count_log2: int, *,
                 checkpoint_every_bytes: int = 0, checkpoints_kept_count: int = 3,
                 checkpoint_every_ms: int = 0, read_only: bool = False,
                 scan_for_markers: bool = False) -> None:
        self.log = log
        self.index = HashIndex(index_buckets_count_log2, log.read, log)
        self.write_lock = threading.RLock()
        self.live_count = 0
        self.closed = False
        self.checkpoint_directory = os.path.join(log.path,
                                                 checkpoint_files.CHECKPOINT_DIRECTORY_NAME)
        self.checkpoint_every_bytes = checkpoint_every_bytes
        self.checkpoints_kept_count = checkpoints_kept_count
        self.bytes_since_checkpoint = 0
        self.checkpoints: list[Checkpoint] = []
        self.base: Checkpoint | None = None
        self.cookie_written: tuple[int, tuple[int, ...]] | None = None
        self.recovered_from: Checkpoint | None = None
        self.chain_floor = log.begin_address  # rule 6
        self.read_only = read_only
        # A follower replays up to a committed-until address it read before (so it knows where
        # it stands); the writer replays everything committed.
        self.recover_end: int | None = log.committed_until_address if read_only else None
        self.applied_until = 0
        self.applied = threading.Condition(threading.Lock())
        self.checkpoint_every_ms = checkpoint_every_ms
        self.last_checkpoint_s = time.monotonic()
        self.features_stop = threading.Event()
        self.feature_threads: list[threading.Thread] = []
        # A follower's cookie is the one of its open: a rebuild after a truncation finds the
        # newer checkpoints by their markers instead (follower.py, rule 4).
        self.scan_for_markers = scan_for_markers
        # Writes in the index since the last successful commit (discard_uncommitted).
        self.uncommitted_writes = False

    @property
    def chain_floor(self) -> int:
        """Rule 6. Held by the index, so a follower's rebuilt index brings its own."""
        return self.index.chain_floor

    @chain_floor.setter
    def chain_floor(self, address: int) -> None:
        self.index.set_chain_floor(address)

    def check_open(self, operation: str) -> None:
        if self.closed:
            raise StoreClosedError(f"{operation} failed: the store is closed")

    def check_writable(self, operation: str) -> None:
        if self.read_only:
            raise StoreReadOnlyError(f"{operation} failed: the store was opened read_only=True "
                                     f"(writes go through the writer process)")

    def close(self) -> None:
        """Stops the feature threads, writes the cookie if it is stale, and closes the log."""
        self.stop_features()  # outside the write lock: the threads may be waiting for it
        with self.write_lock:
            if self.closed:
                return
            self.closed = True
            try:
                # The log's own closing commit keeps the old cookie: write the index size now,
                # or the next open replays with a small index and grows it on the way (each
                # grow reads every chain head back: 200k records/s instead of millions).
                if (not self.read_only and self._cookie_state() != self.cookie_written
                        and not self.log.fenced):
                    self.commit_locked()
            finally:
                self.log.close()

    def stop_features(self) -> None:
        self.features_stop.set()
        for thread in self.feature_threads:
            while thread is not threading.current_thread() and thread.is_alive():
                # A follower thread waiting for a commit returns at once; woken again in case
                # it had not started its wait yet (a wake finds no waiter then).
                self.log.wake()
                thread.join(0.01)
        self.feature_threads = []

    # ------------------------------------------------------------------ writes and commits

    def write_checked(self, latest: dict[bytes, bytes | None], operation: str, *,
                      commit: bool) -> list[int]:
        """Writes checked keys and values (None: delete) as one batch (`write_lists`)."""
        return self.write_lists(list(latest), list(latest.values()), operation, commit=commit)

    def write_lists(self, keys: list[bytes], values: list[bytes | None], operation: str, *,
                    commit: bool) -> list[int]:
        """Writes checked keys and values (None: delete; a key given twice takes its last
        value) as one batch, commits if asked, and checkpoints when either bound (bytes or
        time) is due: every write of the store comes here."""
        with self.write_lock:
            self.check_open(operation)
            self.check_writable(operation)
            try:
                addresses = self.write_columns(keys, values, operation) if keys else []
            except FasterLogError:
                self.discard_uncommitted()  # earlier commit=False writes of a fenced log
                raise
            if commit:
                self.commit_locked()
            if 0 < self.checkpoint_every_bytes <= self.bytes_since_checkpoint or (
                    self.checkpoint_due()):
                self.checkpoint()  # commits any writes made with commit=False too
            return addresses

    def write_columns(self, keys: list[bytes], values: list[bytes | None],
                      operation: str) -> list[int]:
        """Appends a batch of checked keys and values (None: delete) as one record per chain
        (several, linked, for a chain whose operations pass entry_size_max together), in one
        atomic append, and applies it to the index, in one C call (fl_kv_write: it hashes,
        checks liveness, groups, encodes, appends, upserts and grows). A key given twice takes
        its last value; the write lock is held."""
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
        records = lib.fl_kv_write(self.index.kv, b"".join(keys),
                                  ffi.from_buffer("uint32_t[]", key_sizes), joined_values,
                                  ffi.from_buffer("uint32_t[]", value_sizes), count, addresses,
                                  result, info)
        if records < 0:
            # The two limits of a KV write are the caller's sizes, said in its words.
            if records == lib.FL_E_TOO_LARGE:
                raise ValueTooLarge(f"{operation} failed: a record of {int(info.size_needed)} "
                                    f"bytes exceeds the log's entry_size_max "
                                    f"({self.log.entry_size_max})")
            if records == lib.FL_E_KV_BATCH:
                raise ValueTooLarge(f"{operation} failed: {int(info.size_needed)} keys exceed "
                                    f"batch_ops_count_max ({batch_ops_count_max})")
            raise_for(records, operation, info)
        self.bytes_since_checkpoint += int(result.bytes_count)
        self.live_count += int(result.live_change)
        self.uncommitted_writes = True  # in the index, not durable until commit_locked
        written: list[int] = ffi.unpack(addresses, records)
        return written

    def discard_uncommitted(self) -> None:
        """Rule 4 of store.py: after a failed write or commit on a fenced log, the index is
        rebuilt from what the log committed (the newest checkpoint, then the committed
        records), so no read returns a write that was not made durable and never can be: the
        fenced log refuses every later commit. Costs a recovery, once per fence; a log that
        is not fenced keeps its uncommitted writes (a later commit may still make them
        durable). The write lock is held."""
        if not self.uncommitted_writes or not self.log.fenced:
            return
        fresh = StoreCore(self.log, self.index.buckets_count_log2(),
                          checkpoints_kept_count=self.checkpoints_kept_count)
        fresh.recover()
        self.index = fresh.index  # with its own chain floor (rule 6)
        self.live_count = fresh.live_count
        self.checkpoints = fresh.checkpoints
        self.base = fresh.base
        self.bytes_since_checkpoint = fresh.bytes_since_checkpoint
        self.uncommitted_writes = False

    def _cookie_state(self) -> tuple[int, tuple[int, ...]]:
        return (self.index.buckets_count_log2(),
                tuple(checkpoint.marker_address for checkpoint in self.checkpoints))

    def commit_locked(self) -> int:
        """Commits, with the write lock held. The cookie carries the index size, so the next
        open sizes its index before the replay instead of growing it on the way (each grow
        reads every chain head back), and the kept checkpoint markers' addresses, so the next
        open finds them without a scan. The cookie is sticky, so it is written only when it
        changes; other users' entries in it are kept."""
        state = self._cookie_state()
        try:
            if state != self.cookie_written:
                shared = checkpoint_files.decode_cookie(self.log.cookie).shared
                cookie = checkpoint_files.encode_cookie(state[0], list(state[1]), shared)
                committed = self.log.commit(cookie=cookie)
                self.cookie_written = state
            else:
                committed = self.log.commit()
        except FasterLogError:
            self.discard_uncommitted()  # a failed commit fences the log: rule 4
            raise
        self.uncommitted_writes = False
        return committed

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_due(self) -> bool:
        """The time bound (checkpoint_every_ms) has passed since the last checkpoint."""
        return bool(self.checkpoint_every_ms) and (
            time.monotonic() - self.last_checkpoint_s) * 1000 >= self.checkpoint_every_ms

    def checkpoint(self) -> Checkpoint:
        """KVStore.checkpoint: commits, writes a snapshot of the index durably and commits a
        checkpoint marker naming it (checkpoint.py, rule 3); without writes since the last
        checkpoint it returns that one."""
        with self.write_lock:
            self.check_open("checkpoint")
            self.check_writable("checkpoint")
            self.last_checkpoint_s = time.monotonic()
            self.commit_locked()
            if self.checkpoints and self.bytes_since_checkpoint == 0 and (
                    self.checkpoints[0] is self.base):
                return self.checkpoints[0]
            position = self.log.committed_until_address
            hashes, words, live_count = self._snapshot_entries(position)
            bits = self.index.buckets_count_log2()
            data = checkpoint_files.encode_snapshot_arrays(position, bits, hashes, words,
                                                           live_count)
            crc = checkpoint_files.crc32c(data)
            try:
                file_name = checkpoint_files.write_snapshot(self.checkpoint_directory,
                                                            position, data)
            except OSError as error:
                raise CheckpointError(f"checkpoint failed: cannot write the snapshot in "
                                      f"{self.checkpoint_directory}: {error}") from error
            marker = checkpoint_files.encode_marker(position, file_name, len(data), crc)
            made = Checkpoint(position, file_name, len(data), crc,
                              self.log.append_marker(marker))
            self.checkpoints = [made, *self.checkpoints][:self.checkpoints_kept_count]
            self.commit_locked()  # the marker and the cookie naming it, in one commit
            self.base = made
            self.bytes_since_checkpoint = 0
            self.remove_unkept_snapshots()
            return made

    def remove_unkept_snapshots(self) -> None:
        """Deletes the snapshot files that no kept checkpoint names."""
        checkpoint_files.remove_unkept_files(
            self.checkpoint_directory, (kept.file_name for kept in self.checkpoints))

    def _snapshot_entries(self, position: int) -> tuple[array.array[int], array.array[int], int]:
        """The snapshot entries at `position` (checkpoint.py, rule 1) as sorted hashes, their
        words and the live count: the last usable snapshot folded forward with the records
        since, or the whole log folded, in one C call (fl_kv_snapshot_fold). Entries below the
        begin address are tombstones of keys deleted before a compaction (a live key's newest
        record is never below it: rule 6): they are left out."""
        base_hashes, base_words = array.array("Q"), array.array("Q")
        begin = self.log.begin_address
        if self.base is not None:
            try:
                base = checkpoint_files.read_snapshot(self.checkpoint_directory, self.base)
                base_hashes, base_words = base.hashes, base.words
                begin = max(begin, self.base.position)
            except CheckpointError as error:
                checkpoint_files.logger.warning(
                    "checkpoint of %s: %s; folding the whole log instead", self.log.path, error)
        # Every operation is at least 16 bytes of log: a bound on the entries the fold adds.
        capacity = len(base_hashes) + max(0, position - begin) // OP_HEADER_SIZE_BYTES + 1
        # Not cleared, and copied out only as far as the fold filled them: zeroing arrays of
        # the bound (tens of MB at 10^6 keys) held the GIL for tens of milliseconds.
        hashes_out = _new_uncleared("uint64_t[]", capacity)
        words_out = _new_uncleared("uint64_t[]", capacity)
        live = ffi.new("uint64_t *")
        info = ffi.new("fl_error_info *")
        count = lib.fl_kv_snapshot_fold(
            self.index.kv, ffi.from_buffer("uint64_t[]", base_hashes),
            ffi.from_buffer("uint64_t[]", base_words), len(base_hashes), begin, position,
            self.log.begin_address, hashes_out, words_out, capacity, live, info)
        if count < 0:
            raise_for(count, "checkpoint", info)
        hashes, words = array.array("Q"), array.array("Q")
        hashes.frombytes(ffi.buffer(hashes_out, 8 * count))
        words.frombytes(ffi.buffer(words_out, 8 * count))
        return hashes, words, int(live[0])

    # ------------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Rule 5 of store.py: the newest usable checkpoint, then the log after it. A follower
        then stands at the committed-until address it recovered to."""
        cookie = checkpoint_files.decode_cookie(self.log.cookie)
        if cookie.index_bits is not None:
            # Growing an empty index reads no records; any size is safe (rule 2 only asks for
            # at least the writer's size), so a stale cookie costs memory, not correctness.
            self.index.grow_to(cookie.index_bits)
        if cookie.checkpoint_addresses is None or self.scan_for_markers:  # the markers say
            found = checkpoint_files.find_markers(self.log)
            self.checkpoints = found[::-1][:self.checkpoints_kept_count]
        else:
            hinted = (checkpoint_files.marker_at(self.log, address)
                      for address in cookie.checkpoint_addresses)
            self.checkpoints = [checkpoint for checkpoint in hinted if checkpoint is not None]
        begin = None
        for position, checkpoint in enumerate(self.checkpoints):
            try:
                snapshot = self._usable_snapshot(checkpoint)
            except CheckpointError as error:
                older = self.checkpoints[position + 1:]
                fallback = (f"the checkpoint at position {older[0].position}" if older
                            else "a full replay")
                checkpoint_files.logger.warning("open of %s: %s; falling back to %s",
                                                self.log.path, error, fallback)
                continue
            self._restore(snapshot)
            self.base = self.recovered_from = checkpoint
            begin = checkpoint.position
            break
        self.replay(begin, self.recover_end)
        if self.read_only:
            self.applied_until = self.recover_end or self.log.committed_until_address

    def _usable_snapshot(self, checkpoint: Checkpoint) -> checkpoint_files.Snapshot:
        if checkpoint.position < self.log.begin_address:
            raise CheckpointError(f"load checkpoint at position {checkpoint.position} "
                                  f"failed: the log now begins at {self.log.begin_address}")
        return checkpoint_files.read_snapshot(self.checkpoint_directory, checkpoint)

    def _restore(self, snapshot: checkpoint_files.Snapshot) -> None:
        """Loads an empty index from a snapshot, sized so that it does not grow on the way:
        each chain's head becomes the newest address among its keys (rule 5)."""
        bits = max(snapshot.index_bits, self.index.buckets_count_log2())
        while (len(snapshot.hashes) >> bits) > lib.FL_INDEX_ENTRIES_PER_BUCKET_GROW:
            bits += 1
        self.index.grow_to(min(bits, lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX))
        assert self.index.stats().entries_count == 0, "restore needs an empty index"
        count = len(snapshot.hashes)
        if count:  # one C call: a chain mate that came first keeps the newer address
            rc = lib.fl_index_load(self.index.handle,
                                   ffi.from_buffer("uint64_t[]", snapshot.hashes),
                                   ffi.from_buffer("uint64_t[]", snapshot.words), count,
                                   checkpoint_files.ENTRY_ADDRESS_MASK)
            if rc == lib.FL_E_NOMEM:
                raise MemoryError("restore failed: out of memory")
            assert rc == 0, f"index load failed with code {rc}"
        self.live_count = snapshot.live_count
        self.index.grow_if_loaded()

    def replay(self, begin: int | None = None, end: int | None = None) -> None:
        """Rebuilds the index and the live count from the log from `begin` (default: all of
        it) up to `end` (default: committed-until) (store.py rule 2), in one C call
        (fl_kv_replay)."""
        position = self.log.begin_address if begin is None else begin
        result = ffi.new("fl_kv_replay_result *")
        info = ffi.new("fl_error_info *")
        until = self.log.committed_until_address if end is None else end
        rc = lib.fl_kv_replay(self.index.kv, position, until, result, info)
        # The suffix counts toward the next automatic checkpoint, and makes one worth taking.
        self.bytes_since_checkpoint += int(result.bytes_count)
        self.live_count += int(result.live_change)
        if rc < 0:
            raise_for(rc, f"replay at {int(result.next_address)}", info)

    # ------------------------------------------------------------------ Python references

    def value_from(self, address: int, key: bytes, hash_: int) -> bytes | None:
        """Walks the chain from `address` to the newest operation on `key`: its value, or None
        when that is a delete or there is none (rule 2 says the walk cannot miss it). The walk
        ends at the chain floor (rule 6): records below it were compacted away."""
        if not address:
            return None
        readers = self.index.readers
        if readers is not None:  # in C (fl_kv.c); below is the reference it is tested against
            size = lib.fl_kv_value_from(readers.reader, address, hash_, key, len(key))
            if size == lib.FL_E_BUFFER:
                readers.resize(int(readers.reader.error.size_needed))
                size = lib.fl_kv_value_from(readers.reader, address, hash_, key, len(key))
            if size == lib.FL_KV_ABSENT:
                return None
            if size < 0:
                raise_for(size, "read", readers.reader.error)
            value: bytes = ffi.unpack(readers.buffer, size)
            return value
        while address and address >= self.chain_floor:
            payload = self.log.read(address)
            single = single_op(payload, address)
            if single is not None:  # the common record: no Op objects
                previous, kind, key_size, op_hash = single
                if op_hash == hash_ and payload[SINGLE.size:SINGLE.size + key_size] == key:
                    return payload[SINGLE.size + key_size:] if kind == OP_PUT else None
                address = previous
                continue
            _, previous, ops = decode_record(payload, address)  # several ops, or corrupt
            for op in reversed(ops):
                if op.hash == hash_ and op.key == key:
                    return op.value if op.kind == OP_PUT else None
            address = previous
        return None

    def replay_record(self, address: int, payload: bytes) -> None:
        """The Python reference of one record's replay (fl_kv.c's replay_record does this)."""
        index_bits, _, ops = decode_record(payload, address)
        self.index.grow_to(index_bits)
        live_change = 0
        for op in ops:  # every liveness check before the record joins the index
            was_live = self.value_from(self.index.find(op.hash), op.key, op.hash) is not None
            live_change += (op.kind == OP_PUT) - was_live
        for op in ops:
            head = self.index.find(op.hash)
            if head != address:  # ops sharing a chain now share one entry
                self.index.upsert(op.hash, head, address)
        self.live_count += live_change
