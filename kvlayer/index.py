"""The store's hash index: the C index (fl_index.c) and the KV fast path's context over it.

The index maps a key hash to the head of its chain (the newest record holding an operation on a
key of that chain); it is derived state, rebuilt from checkpoints and the log (store.py, rules
2, 5 and 6). This module only binds it: creation, lookups, upserts, the three ways to grow it,
and the chain floor that a compaction raises.

Rules:
1. Grow keeps every chain reachable (fl_index.c, rule 4): it reads each chain's head record
   back, in C through fl_kv_grow, or in Python through `read_payload` (the reference path, for
   an index without a log).
2. The chain floor travels with the index: a follower that swaps in a rebuilt index brings the
   floor the rebuild set (store.py rule 6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fasterlog import FasterLog
from fasterlog.errors import raise_for

from . import _fast
from ._kvlayer_c import ffi, lib
from .errors import KVError
from .records import decode_record, single_op

__all__ = ["HashIndex"]

_RESOLVE_SIGNATURE = "int(void *, uint64_t, uint64_t *, uint32_t, uint64_t *)"


class HashIndex:
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
        self.kv: Any = None if log is None else _fast.create(log.c_handle, self.handle)
        self.readers: Any = None if log is None else _fast.Readers(self.kv)

    def _resolve_record(self, context: Any, address: int, hashes: Any, capacity: int,
                        previous_out: Any) -> int:
        if address < self.chain_floor:  # compacted away (store rule 6): the chain ends
            previous_out[0] = 0
            return 0
        try:
            payload = self._read_payload(address)
            single = single_op(payload, address)
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

    def scan_bucket(self, cursor: int) -> tuple[int, int, list[tuple[int, int]]]:
        """One step of the bucket cursor (fl_index_scan): (next cursor, 0 when done; the
        table's buckets_count_log2; the (bucket, entry word) pairs of the bucket visited)."""
        capacity = 64
        while True:
            pairs = ffi.new("uint64_t[]", 2 * capacity)
            next_cursor = ffi.new("uint64_t *")
            bits = ffi.new("uint32_t *")
            count = lib.fl_index_scan(self.handle, cursor, pairs, capacity, next_cursor, bits)
            if count == lib.FL_E_BUFFER:  # a long overflow chain: room for all of it
                capacity = int(next_cursor[0])
                continue
            assert count >= 0, f"index scan failed with code {count}"
            words: list[int] = ffi.unpack(pairs, 2 * count)
            return int(next_cursor[0]), int(bits[0]), list(zip(words[::2], words[1::2],
                                                              strict=True))

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
            raise_for(rc, "index grow", info)

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
