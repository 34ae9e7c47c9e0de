"""Batches whose keys share an index chain and whose values do not fit one record together.

Goal: a write_batch is one atomic append with one record per index chain, and that record
must fit the log's entry_size_max. Two keys of one batch that share a chain, each with a value
over half a page, used to fail the whole batch with ValueTooLarge ("a record of 65592 bytes
exceeds the log's entry_size_max (65524)") although each key and value fits alone: an MSET of
2,000 x 32 KiB through the server hit it at random (chains collide by hash) and fenced the
server. Now such a chain gets several records, each linked to the one before it in the same
batch (fl_append_batch_linked fills in the address as it places the batch).

Method: keys are picked by their hash so that several share a chain (index_buckets_count_log2
0: a chain is the 14-bit tag); the records the batch wrote are decoded from the log to check
the links, and every value is read back live, after a reopen (replay) and after a checkpoint.
The core call is tested on its own through cffi: the address lands where asked, and a link
that does not point back is refused before anything is placed.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from fasterlog import FasterLog
from fasterlog._fasterlog_c import ffi, lib
from kvlayer import KVStore
from kvlayer.errors import ValueTooLarge
from kvlayer.store import OP_HEADER_SIZE_BYTES, RECORD_HEADER_SIZE_BYTES, decode_record
from tests.support.settings import SMALL_SETTINGS

_TAG_SHIFT = 48
_TAG_MASK = (1 << 14) - 1


def _chain(hash_: int, index_bits: int) -> tuple[int, int]:
    return hash_ & ((1 << index_bits) - 1), hash_ >> _TAG_SHIFT & _TAG_MASK


def _keys_sharing_chains(store: KVStore, chains_count: int, per_chain: int) -> list[list[bytes]]:
    """`chains_count` groups of `per_chain` keys, each group one chain of the current index."""
    index_bits = store.index_stats()["buckets_count_log2"]
    by_chain: dict[tuple[int, int], list[bytes]] = defaultdict(list)
    groups: list[list[bytes]] = []
    for i in range(2_000_000):
        key = b"key-%d" % i
        members = by_chain[_chain(store.key_hash(key), index_bits)]
        members.append(key)
        if len(members) == per_chain:
            groups.append(members)
            if len(groups) == chains_count:
                return groups
    raise AssertionError("not enough colliding keys in 2M candidates")


def _records_after(store: KVStore, from_address: int) -> list[tuple[int, int, list[bytes]]]:
    """(address, previous_address, keys) of every data record at or after `from_address`."""
    records = []
    for address, payload in store.log.scan(from_address):
        _, previous, ops = decode_record(bytes(payload), address)
        records.append((address, previous, [op.key for op in ops]))
    return records


def test_a_chain_whose_values_pass_a_page_together_gets_linked_records(tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=0, **SMALL_SETTINGS) as store:
        entry_size_max = store.log.entry_size_max
        value_size = entry_size_max * 4 // 10  # two fit one record, three do not
        (keys,) = _keys_sharing_chains(store, 1, 5)
        values = {key: bytes([n]) * value_size for n, key in enumerate(keys)}
        store.put(b"before", b"x")  # the chain may already have a head; this one is elsewhere
        start = store.log.tail_address
        addresses = store.write_batch(list(values.items()))
        records = _records_after(store, start)
        assert [address for address, _, _ in records] == addresses
        # 5 operations of 40% each: records of 2, 2 and 1, linked in placement order.
        assert [len(record_keys) for _, _, record_keys in records] == [2, 2, 1]
        assert [key for _, _, record_keys in records for key in record_keys] == keys
        assert records[1][1] == records[0][0] and records[2][1] == records[1][0]
        for key, value in values.items():
            assert store.get(key) == value
        assert len(store) == 6
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=0, **SMALL_SETTINGS) as store:
        assert all(store.get(key) == value for key, value in values.items())  # by replay
        assert len(store) == 6
        store.checkpoint()
        store.delete(keys[2])  # a key in the middle record of the chain
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=0, **SMALL_SETTINGS) as store:
        assert store.recovered_from is not None
        assert store.get(keys[2]) is None
        assert all(store.get(key) == values[key] for key in keys if key != keys[2])
        assert len(store) == 5


def test_a_random_batch_of_big_values_always_fits(tmp_path: Path) -> None:
    """The server's failing case, smaller: 400 random keys of 32 KiB values on 64 KiB pages
    in batches of 100, with an index small enough that chains collide in every batch."""
    rng = random.Random(14)
    model: dict[bytes, bytes] = {}
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=0, **SMALL_SETTINGS) as store:
        for _ in range(4):
            batch = {b"k%d" % rng.randrange(1 << 30): rng.randbytes(32 << 10)
                     for _ in range(100)}
            store.write_batch(list(batch.items()))
            model.update(batch)
        assert all(store.get(key) == value for key, value in model.items())
    with KVStore.open(tmp_path / "kv", **SMALL_SETTINGS) as store:
        assert len(store) == len(model)
        assert all(store.get(key) == value for key, value in model.items())


def test_one_operation_over_a_page_is_still_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=0, **SMALL_SETTINGS) as store:
        entry_size_max = store.log.entry_size_max
        too_big = entry_size_max - RECORD_HEADER_SIZE_BYTES - OP_HEADER_SIZE_BYTES - 1 + 1
        tail = store.log.tail_address
        with pytest.raises(ValueTooLarge, match=f"exceeds the log's entry_size_max "
                                                f"\\({entry_size_max}\\)"):
            store.write_batch([(b"small", b"v"), (b"k", b"x" * too_big)])
        assert store.log.tail_address == tail
        assert store.get(b"small") is None and len(store) == 0
        fits = too_big - 1  # header + op header + 1-byte key + value == entry_size_max
        store.write_batch([(b"k", b"x" * fits)])
        assert store.get(b"k") == b"x" * fits


def test_the_core_writes_each_link_as_it_places_the_batch(tmp_path: Path) -> None:
    with FasterLog.open(tmp_path / "log", **SMALL_SETTINGS) as log:
        log.append(b"pad" * 10)  # the batch does not start at the first address
        data = ffi.new("char[]", b"A" * 16 + b"B" * 16 + b"C" * 16)
        sizes = ffi.new("uint32_t[]", [16, 16, 16])
        links = ffi.new("uint32_t[]", [0, 1, 1])  # entries 1 and 2 point at entry 0
        offsets = ffi.new("uint32_t[]", [0, 8, 0])
        addresses = ffi.new("uint64_t[]", 3)
        handle = log.c_handle
        assert lib.fl_append_batch_linked(handle, data, sizes, 3, links, offsets, addresses,
                                          1) == 3
        log.commit()
        first = addresses[0]
        assert log.read(first) == b"A" * 16
        assert log.read(addresses[1]) == b"B" * 8 + first.to_bytes(8, "little")
        assert log.read(addresses[2]) == first.to_bytes(8, "little") + b"C" * 8
        tail = log.tail_address
        for bad_links, bad_offsets in (([0, 2, 0], [0, 0, 0]),   # points at itself
                                       ([0, 3, 0], [0, 0, 0]),   # points forward
                                       ([1, 0, 0], [0, 0, 0]),   # the first entry
                                       ([0, 1, 0], [0, 9, 0])):  # 8 bytes do not fit at 9
            assert lib.fl_append_batch_linked(
                handle, data, sizes, 3, ffi.new("uint32_t[]", bad_links),
                ffi.new("uint32_t[]", bad_offsets), addresses, 1) < 0
            assert log.tail_address == tail
