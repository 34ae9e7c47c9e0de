"""Tests of kvlayer's C fast path (kvlayer/csrc/fl_kv_*.c) against the Python reference.

Goal: the C path returns exactly what the Python reference of kvlayer (records.py's
decode_record and SipHash-1-3, the chain walk through log.read) returns, writes the same
records, keeps len() exact, and never returns data from a malformed record or a damaged frame;
the format's constants are defined once in C with checked Python twins; the C code reaches the
log only through the core's table of calls, and a refused table is reported as its own error.

Method:
- The C hash (SipHash-1-3) is compared with the Python reference on keys of every size around
  the 8-byte block, and the reference with the SipHash paper's SipHash-2-4 vector; a store's
  hash is keyed by its log's salt (two stores differ; reopen and recovery keep it).
- Random batches (duplicates, deletes, tombstones of dead keys) with a tiny index, so chains
  collide and records hold several operations, and a page ring much smaller than the data, so
  most reads go to the segment files; after each phase every key is compared between get,
  get_many, the Python reference walk and a dict model; then again after a reopen (replay) and
  after a checkpoint restore. Both I/O backends.
- Records are decoded with the Python decoder and checked against the batch that wrote them.
- A malformed record linked into a chain raises RecordCorruptError; a damaged frame on disk
  raises CorruptionError.
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fasterlog import FasterLog
from fasterlog.cursors import log_salt
from fasterlog.errors import CorruptionError, LogIOError
from kvlayer import KVStore, _fast, key_hash
from kvlayer import checkpoint as kv_checkpoint
from kvlayer import records as kv_records
from kvlayer._kvlayer_c import ffi, lib
from kvlayer.checkpoint import decode_cookie
from kvlayer.errors import RecordCorruptError, StoreVersionError
from kvlayer.records import OP_PUT, Op, decode_record, encode_record, siphash13
from tests.support import faults
from tests.support.settings import SMALL_SETTINGS

COLD_SETTINGS: dict[str, Any] = {
    "page_size_bytes": 16 << 10,
    "memory_size_bytes": 64 << 10,  # the data below is many times this: reads hit the disk
    "segment_size_bytes": 1 << 20,
    "index_buckets_count_log2": 2,  # 4 buckets to begin with: chains collide, the index grows
}
BACKENDS = ["io_uring", "plain"]


def reference_value(store: KVStore, key: bytes) -> bytes | None:
    """The chain walk of store.py before the C path, through log.read and decode_record."""
    hash_ = store.key_hash(key)
    address = store._core.index.find(hash_)
    while address:
        _, previous, ops = decode_record(store.log.read(address), address)
        for op in reversed(ops):
            if op.hash == hash_ and op.key == key:
                return op.value if op.kind == OP_PUT else None
        address = previous
    return None


def check_state(store: KVStore, model: dict[bytes, bytes], universe: list[bytes]) -> None:
    values = store.get_many(universe)
    for key, many in zip(universe, values, strict=True):
        expected = model.get(key)
        assert store.get(key) == expected
        assert many == expected
        assert reference_value(store, key) == expected
    assert len(store) == len(model)


def test_siphash_reference_matches_the_papers_vector() -> None:
    # SipHash-2-4, key 00..0f, message 00..0e (Aumasson & Bernstein, appendix A).
    k0 = int.from_bytes(bytes(range(8)), "little")
    k1 = int.from_bytes(bytes(range(8, 16)), "little")
    assert siphash13(k0, k1, bytes(range(15)), 2, 4) == 0xA129CA6149BE45E5
    assert lib.fl_kv_siphash13(k0, k1, bytes(range(15)), 15) != 0xA129CA6149BE45E5  # 1-3


def test_c_hash_equals_the_python_siphash13() -> None:
    rng = random.Random(1)
    for size in [*range(70), 255, 256, 1000, 4096, 65535]:
        key = rng.randbytes(size)
        k0, k1 = rng.getrandbits(64), rng.getrandbits(64)
        assert lib.fl_kv_siphash13(k0, k1, key, size) == siphash13(k0, k1, key)
        salt = rng.getrandbits(64)
        assert key_hash(key, salt) == siphash13(salt, salt ^ 0x6B766C6179657232, key)


def test_the_hash_is_keyed_per_store_and_survives_reopen_and_recovery(tmp_path: Path) -> None:
    keys = [b"key-%d" % number for number in range(50)]
    hashes = {}
    for name in ("a", "b"):
        path = tmp_path / name
        with KVStore.open(path, **SMALL_SETTINGS) as store:
            salt = log_salt(path)
            hashes[name] = [store.key_hash(key) for key in keys]
            assert hashes[name] == [key_hash(key, salt) for key in keys]
            store.put_many([(key, key * 2) for key in keys])
            address = store.put(b"extra", b"1")
            assert decode_record(store.log.read(address), address)[2][0].hash == \
                key_hash(b"extra", salt)
            if name == "b":
                store.checkpoint()
        with KVStore.open(path, **SMALL_SETTINGS) as store:  # a: full replay; b: checkpoint
            assert (store.recovered_from is not None) == (name == "b")
            assert [store.key_hash(key) for key in keys] == hashes[name]
            assert store.get_many(keys) == [key * 2 for key in keys]
            assert all(store._core.index.find(hash_) for hash_ in hashes[name])
    assert all(a != b for a, b in zip(hashes["a"], hashes["b"], strict=True))


def test_a_version_1_record_is_refused_with_store_version_error(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with KVStore.open(path, **SMALL_SETTINGS) as store:
        record = bytearray(encode_record(10, 0, [Op(OP_PUT, b"k", b"v", 1)]))
        record[0] = 1  # what the BLAKE2b kvlayer wrote
        store.log.append(bytes(record))
        store.log.commit()
    with pytest.raises(StoreVersionError, match="version 1"):
        KVStore.open(path, **SMALL_SETTINGS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_c_path_matches_the_python_reference_on_random_batches(tmp_path: Path,
                                                               backend: str) -> None:
    rng = random.Random(7)
    universe = [rng.randbytes(rng.choice([1, 8, 16, 40])) for _ in range(600)]
    model: dict[bytes, bytes] = {}
    path = tmp_path / "kv"
    with KVStore.open(path, io_backend=backend, **COLD_SETTINGS) as store:
        for batch_number in range(60):
            batch: list[tuple[bytes, bytes | None]] = []
            for _ in range(rng.randrange(1, 30)):  # a batch stays below the ring's size
                key = rng.choice(universe)
                if rng.random() < 0.2:
                    batch.append((key, None))  # deletes, some of keys that are not live
                else:
                    batch.append((key, rng.randbytes(rng.choice([0, 5, 100, 700]))))
            if batch_number % 3 == 0:
                puts = [(key, value) for key, value in batch if value is not None]
                store.put_many(puts)
                batch = list(puts)
            else:
                store.write_batch(batch)
            for key, value in batch:
                if value is None:
                    model.pop(key, None)
                else:
                    model[key] = value
        assert store.index_stats()["grow_count"] > 0
        check_state(store, model, universe)
        store.checkpoint()
        for key in universe[:50]:  # a suffix after the checkpoint
            model[key] = b"after"
        store.put_many([(key, b"after") for key in universe[:50]])
    with KVStore.open(path, io_backend=backend, **COLD_SETTINGS) as store:
        assert store.recovered_from is not None  # restored (fl_index_load) + replayed suffix
        check_state(store, model, universe)
    for checkpoint_file in (path / "kv-checkpoints").iterdir():
        checkpoint_file.unlink()
    with KVStore.open(path, io_backend=backend, **COLD_SETTINGS) as store:
        assert store.recovered_from is None  # a full replay (fl_kv_replay)
        check_state(store, model, universe)


def same_chain_keys(count: int, key_hash: Callable[[bytes], int]) -> list[bytes]:
    """Keys whose hashes (the store's) share one tag, so with one bucket they share one
    chain."""
    by_tag: dict[int, list[bytes]] = {}
    number = 0
    while True:
        key = b"key-%d" % number
        number += 1
        group = by_tag.setdefault((key_hash(key) >> 48) & ((1 << 14) - 1), [])
        group.append(key)
        if len(group) == count:
            return group


def test_c_records_decode_to_the_batch_that_wrote_them(tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=0, **SMALL_SETTINGS) as store:
        key_hash = store.key_hash
        a, b, c = same_chain_keys(3, key_hash)
        first = store.put(a, b"0")
        addresses = store.put_many([(a, b"1"), (b, b"2"), (a, b"3"), (c, b"")])
        assert len(addresses) == 1  # one chain: one record, the last value of a key wins
        bits, previous, ops = decode_record(store.log.read(addresses[0]), addresses[0])
        assert (bits, previous) == (0, first)
        assert [(op.kind, op.key, op.value, op.hash) for op in ops] == [
            (OP_PUT, a, b"3", key_hash(a)), (OP_PUT, b, b"2", key_hash(b)),
            (OP_PUT, c, b"", key_hash(c))]
        assert len(store) == 3
        store.write_batch([(b, None), (a, b"4")])
        assert (store.get(a), store.get(b), store.get(c), len(store)) == (b"4", None, b"", 2)


def test_c_encoding_equals_encode_record(tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", **SMALL_SETTINGS) as store:
        for round_number in range(200):
            key = f"key-{round_number % 37}".encode()
            value = os.urandom(round_number % 50)
            address = store.put(key, value)
            payload = store.log.read(address)
            bits, previous, _ = decode_record(payload, address)
            assert payload == encode_record(bits, previous,
                                            [Op(OP_PUT, key, value, store.key_hash(key))])


def test_len_stays_exact_with_dead_tombstones_and_duplicates(tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=1, **SMALL_SETTINGS) as store:
        store.write_batch([(b"x", None), (b"y", b"1"), (b"y", None), (b"z", b"2")])
        assert len(store) == 1 and store.get(b"y") is None
        store.put_many([(b"z", b"3"), (b"w", b"4"), (b"z", b"5")])
        assert len(store) == 2 and store[b"z"] == b"5"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_malformed_record_in_a_chain_raises_record_corrupt(tmp_path: Path,
                                                             backend: str) -> None:
    with KVStore.open(tmp_path / "kv", io_backend=backend, **SMALL_SETTINGS) as store:
        store.put(b"k", b"v")
        hash_ = store.key_hash(b"k")
        head = store._core.index.find(hash_)
        bad = bytearray(encode_record(10, head, [Op(OP_PUT, b"k", b"w", hash_)]))
        bad[13] = 1  # the reserved byte of the operation
        address = store.log.append(bytes(bad))
        store._core.index.upsert(hash_, head, address)
        with pytest.raises(RecordCorruptError) as caught:
            store.get(b"k")
        assert caught.value.address == address
        with pytest.raises(RecordCorruptError):
            store.get_many([b"k"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_damaged_frame_on_disk_raises_corruption(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "kv"
    with KVStore.open(path, io_backend=backend, **COLD_SETTINGS) as store:
        store.put(b"victim", b"value-of-the-victim")
        for _ in range(100):  # push it out of the ring, in batches well below the ring's size
            store.put_many([(os.urandom(16), os.urandom(200)) for _ in range(20)])
        address = store._core.index.find(store.key_hash(b"victim"))
    segment = min(path.glob("segment-*"))
    offset = address % COLD_SETTINGS["segment_size_bytes"] + 12 + 20
    # Flip the byte rather than write a constant: the byte there is part of a key hash,
    # which was 0xff about once in 256 runs (the test then damaged nothing).
    faults.flip_bits(segment, offset, 0xFF)
    with pytest.raises(CorruptionError):
        KVStore.open(path, io_backend=backend, **COLD_SETTINGS)


def test_a_value_larger_than_the_read_buffer(tmp_path: Path) -> None:
    big = os.urandom(200 << 10)
    with KVStore.open(tmp_path / "kv", page_size_bytes=1 << 20,
                      memory_size_bytes=4 << 20, segment_size_bytes=4 << 20) as store:
        store.put(b"big", big)
        assert store.get(b"big") == big
        assert store.get_many([b"small", b"big"]) == [None, big]


def test_close_writes_the_index_size_so_the_reopen_does_not_grow(tmp_path: Path) -> None:
    # Writes with commit=False then close(): the log's closing commit would keep the old
    # cookie, and the replay would grow the index on the way (reading every chain head back).
    path = tmp_path / "kv"
    with KVStore.open(path, index_buckets_count_log2=1, **SMALL_SETTINGS) as store:
        store.put_many([(b"key-%d" % number, b"v") for number in range(3000)], commit=False)
        bits = store.index_stats()["buckets_count_log2"]
        assert bits > 1
    with KVStore.open(path, index_buckets_count_log2=1, **SMALL_SETTINGS) as store:
        assert decode_cookie(store.log.cookie).index_bits == bits  # sized before the replay
        assert store.index_stats()["buckets_count_log2"] == bits
        assert len(store) == 3000 and store.get(b"key-2999") == b"v"


# ---------------------------------------------------------------------------- the KV format's
# constants are defined once, in C (kvlayer/csrc/fl_kv_format.h), with Python twins in _fast


def test_every_kv_format_twin_equals_its_c_constant() -> None:
    assert _fast.constant_problems(vars(_fast), _fast.FORMAT_CONSTANTS, lib) == []
    assert lib.FL_KV_SNAPSHOT_MAGIC == int.from_bytes(b"FLKVSNAP", "little")


def test_the_import_check_fails_on_a_drifted_or_unmatched_twin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fast, "RECORD_VERSION", 3)
    with pytest.raises(ImportError, match="RECORD_VERSION=3 differs from the C FL_KV_"):
        _fast.check_constants()
    monkeypatch.undo()
    monkeypatch.setattr(_fast, "RECORD_TRAILER_SIZE_BYTES", 4, raising=False)
    monkeypatch.setattr(_fast, "FORMAT_CONSTANTS",
                        (*_fast.FORMAT_CONSTANTS, "RECORD_TRAILER_SIZE_BYTES"))
    with pytest.raises(ImportError, match="RECORD_TRAILER_SIZE_BYTES has no C twin"):
        _fast.check_constants()


def test_records_and_checkpoints_take_the_format_from_the_one_definition() -> None:
    # records.py and checkpoint.py spell no number of the format themselves: they import the
    # checked twins, so these are the same objects.
    assert (kv_records.RECORD_VERSION, kv_records.OP_PUT, kv_records.OP_DELETE) == (
        _fast.RECORD_VERSION, _fast.OP_PUT, _fast.OP_DELETE)
    assert kv_records.SINGLE.size == _fast.RECORD_HEADER_SIZE_BYTES + _fast.OP_HEADER_SIZE_BYTES
    assert kv_checkpoint.SNAPSHOT_MAGIC is _fast.SNAPSHOT_MAGIC
    assert kv_checkpoint.COOKIE_MAGIC is _fast.COOKIE_MAGIC
    assert kv_checkpoint.ENTRY_ADDRESS_MASK == (1 << _fast.ENTRY_ADDRESS_BITS) - 1
    assert _fast.ENTRY_ADDRESS_BITS == lib.FL_INDEX_ADDRESS_BITS


# ---------------------------------------------------------------------------- the narrow
# interface: the KV module reaches the log only through the core's table of calls


class _LibWithTable:
    """The KV module's lib, but handing out another core table."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(lib, name)

    def fl_core_api_get(self) -> Any:
        return self.table


def test_create_reports_a_refused_core_table_as_its_error_not_as_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A table of another build of the core (a different size) is refused with -EINVAL; it
    # reaches Python through fasterlog.errors.raise_for, as every code but FL_E_NOMEM does.
    table = ffi.new("fl_core_api *")
    table.size_bytes = 0
    monkeypatch.setattr(_fast, "lib", _LibWithTable(table))
    with FasterLog.open(tmp_path / "log", **SMALL_SETTINGS) as log:
        index = ffi.new("fl_index **")
        assert lib.fl_index_create(2, index) == 0
        try:
            with pytest.raises(LogIOError, match="open failed: Invalid argument") as failure:
                _fast.create(log.c_handle, index[0])
            assert failure.value.errno == errno.EINVAL
        finally:
            lib.fl_index_free(index[0])


def test_the_core_reads_an_entry_from_memory_only_while_its_page_is_there(
        tmp_path: Path) -> None:
    core: Any = lib.fl_core_api_get()
    kind = ffi.new("int32_t *")
    size_needed = ffi.new("uint64_t *")
    buffer = ffi.new("char[]", 64)
    with FasterLog.open(tmp_path / "log", **SMALL_SETTINGS) as log:
        data = log.append(b"in memory")
        marker = log.append_marker(b"mark")
        assert core.read_in_memory(log._log, data, buffer, 64, kind, size_needed) == 9
        assert (ffi.unpack(buffer, 9), kind[0]) == (b"in memory", lib.FL_KIND_DATA)
        assert core.read_in_memory(log._log, marker, buffer, 64, kind, size_needed) == 4
        assert kind[0] == lib.FL_KIND_MARKER
        assert core.read_in_memory(log._log, data, buffer, 4, kind, size_needed) == \
            lib.FL_E_BUFFER
        assert size_needed[0] == 9
        assert core.read_in_memory(log._log, data + 8, buffer, 64, kind, size_needed) == \
            lib.FL_E_NOT_IN_MEMORY  # not an entry start: fl_read says what it is
        # Fill the ring many times over: the first page leaves memory.
        for _ in range(4 * SMALL_SETTINGS["memory_size_bytes"] // 1000):
            log.append(bytes(1000))
        log.commit()
        assert core.read_in_memory(log._log, data, buffer, 64, kind, size_needed) == \
            lib.FL_E_NOT_IN_MEMORY
        assert log.read(data) == b"in memory"
