"""Tests of KV checkpoints: snapshot files, checkpoint markers, recovery from them and fallback.

Goal: a store recovered from a checkpoint plus the log after it is the same store as one rebuilt
by a full replay; a missing, truncated or corrupt snapshot costs time (a fallback, with a
warning), never correctness; a kill -9 during writes and checkpoints recovers the state of the
last acknowledged commit.

Method:
- The state of a store is digested as the hash of its sorted (key, get(key)) pairs over every
  key ever written, plus len(); get() goes through the restored index, unlike items(), which
  scans the log. A "full replay" is the same directory opened with its snapshots removed.
- Damage is done to the snapshot files on disk between close and reopen; warnings are read
  from the "kvlayer.checkpoint" logger.
- The crash test runs the harness of tests/support/kv_kill.py (mode "checkpoints"): a child that
  writes steps that are pure functions of (seed, step), each one atomic batch also setting
  b"__step", acknowledges each after its commit returns, and checkpoints often (explicitly and
  by bytes written). The parent kills it at a random instant and checks that the recovered
  step is the last acknowledged one or the one after (a step the previous round recovered
  counts as acknowledged), and that the state equals the model replayed to that step.
- The 200k-key recovery timing prints both times and asserts none.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlayer import KVStore, errors
from kvlayer import checkpoint as checkpoints
from tests.support import faults
from tests.support.kv_kill import run_kill_rounds
from tests.support.mode import examples
from tests.support.settings import SMALL_SETTINGS

LOGGER = "kvlayer.checkpoint"


def open_store(path: Path, **extra: Any) -> KVStore:
    return KVStore.open(path, **SMALL_SETTINGS, **extra)


def digest(store: KVStore, universe: set[bytes]) -> str:
    """The state as seen through the index: every known key's value, and the live count."""
    hasher = hashlib.sha256(b"%d;" % len(store))
    for key in sorted(universe):
        value = store.get(key)
        hasher.update(b"%d:%s=%s;" % (len(key), key, b"-" if value is None else b"+" + value))
    return hasher.hexdigest()


def model_digest(model: dict[bytes, bytes], universe: set[bytes]) -> str:
    hasher = hashlib.sha256(b"%d;" % len(model))
    for key in sorted(universe):
        value = model.get(key)
        hasher.update(b"%d:%s=%s;" % (len(key), key, b"-" if value is None else b"+" + value))
    return hasher.hexdigest()


def full_replay_digest(path: Path, tmp_path: Path, universe: set[bytes]) -> str:
    """Opens a copy of the store without its snapshots, so it rebuilds by a full replay."""
    copy = tmp_path / "full-replay"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy)
    shutil.rmtree(copy / checkpoints.CHECKPOINT_DIRECTORY_NAME, ignore_errors=True)
    with open_store(copy) as store:
        assert store.recovered_from is None
        return digest(store, universe)


def random_writes(store: KVStore, rng: random.Random, model: dict[bytes, bytes],
                  universe: set[bytes], count: int) -> None:
    for _ in range(count):
        key = b"k%d" % rng.randrange(300)
        universe.add(key)
        action = rng.random()
        if action < 0.2 and key in model:
            store.delete(key)
            del model[key]
        elif action < 0.3:
            batch = {b"k%d" % rng.randrange(300): b"b%d" % rng.randrange(1000)
                     for _ in range(rng.randint(1, 20))}
            universe.update(batch)
            store.put_many(batch)
            model.update(batch)
        else:
            value = bytes(rng.randrange(40)) + b"%d" % rng.randrange(1000)
            store.put(key, value, commit=rng.random() < 0.5)
            model[key] = value


# --- checkpoint + suffix == full replay -----------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_checkpoint_plus_suffix_replay_equals_a_full_replay(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "kv"
    model: dict[bytes, bytes] = {}
    universe: set[bytes] = set()
    with open_store(path, index_buckets_count_log2=0) as store:
        for _ in range(4):
            random_writes(store, rng, model, universe, 300)
            store.checkpoint()
        random_writes(store, rng, model, universe, 200)  # the suffix
        assert store.index_stats()["grow_count"] >= 3
    with open_store(path, index_buckets_count_log2=0) as store:
        assert store.recovered_from is not None
        assert store.recovered_from == store.checkpoints[0]
        from_checkpoint = digest(store, universe)
        assert dict(store.items()) == model
    assert from_checkpoint == full_replay_digest(path, tmp_path, universe)
    assert from_checkpoint == model_digest(model, universe)


def test_recovery_replays_only_the_records_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path) as store:
        store.put_many({b"a%d" % i: b"x" for i in range(100)})
        made = store.checkpoint()
        store.put(b"after", b"y")
    with open_store(path) as store:
        assert store.recovered_from == made
        # Only the one record after the checkpoint was replayed.
        assert store._core.bytes_since_checkpoint < 100
        assert len(store) == 101 and store.get(b"a7") == b"x" and store.get(b"after") == b"y"


@examples(40)
@given(st.lists(st.tuples(st.sampled_from(["put", "delete", "checkpoint", "reopen"]),
                          st.integers(0, 40), st.binary(max_size=8)), max_size=60))
def test_random_writes_checkpoints_and_reopens_match_a_dict_model(
        tmp_path_factory: pytest.TempPathFactory,
        steps: list[tuple[str, int, bytes]]) -> None:
    path = tmp_path_factory.mktemp("kv") / "kv"
    model: dict[bytes, bytes] = {}
    universe = {b"k%d" % number for number in range(41)}
    store = open_store(path, index_buckets_count_log2=0, checkpoints_kept_count=2)
    try:
        for action, number, value in steps:
            key = b"k%d" % number
            if action == "put":
                store.put(key, value, commit=number % 3 != 0)
                model[key] = value
            elif action == "delete":
                store.write_batch([(key, None)])
                model.pop(key, None)
            elif action == "checkpoint":
                store.checkpoint()
            else:
                store.close()
                store = open_store(path, index_buckets_count_log2=0, checkpoints_kept_count=2)
            assert len(store) == len(model)
        assert digest(store, universe) == model_digest(model, universe)
    finally:
        store.close()
    with open_store(path, index_buckets_count_log2=0) as reopened:
        assert digest(reopened, universe) == model_digest(model, universe)


def keys_sharing_a_tag(key_hash: Callable[[bytes], int]) -> tuple[bytes, bytes]:
    """Two keys whose hashes (the store's: keyed by its salt) share the 14-bit tag: one chain
    in an index of one bucket."""
    seen: dict[int, bytes] = {}
    for number in range(1 << 20):
        key = b"c%d" % number
        tag = (key_hash(key) >> 48) & ((1 << 14) - 1)
        if tag in seen:
            return seen[tag], key
        seen[tag] = key
    raise AssertionError("no two keys share a tag")


def test_a_delete_newer_than_its_chain_mates_put_stays_deleted_after_a_restore(
        tmp_path: Path) -> None:
    # The chain head restored from the snapshot must be the delete, not the chain mate's put
    # below it: walking back from that put would find the deleted key's older put.
    path = tmp_path / "kv"
    with open_store(path, index_buckets_count_log2=0) as store:
        deleted, kept = keys_sharing_a_tag(store.key_hash)
        store.put(deleted, b"old")
        store.put(kept, b"k")
        store.delete(deleted)
        store.checkpoint()
    with open_store(path, index_buckets_count_log2=0) as store:
        assert store.recovered_from is not None
        assert store.index_stats()["buckets_count_log2"] == 0
        assert store.get(deleted) is None and store.get(kept) == b"k" and len(store) == 1


# --- fallback -------------------------------------------------------------------------------


def flip_a_bit(file: Path) -> None:
    faults.flip_bit(file, file.stat().st_size // 2)


def truncate(file: Path) -> None:
    faults.truncate_tail(file, 16)


def remove(file: Path) -> None:
    file.unlink()


def two_checkpoints(path: Path) -> tuple[Any, Any, dict[bytes, bytes]]:
    model = {b"k%d" % i: b"v%d" % i for i in range(500)}
    with open_store(path, index_buckets_count_log2=2) as store:
        store.put_many(model)
        older = store.checkpoint()
        store.delete(b"k1")
        store.put(b"k2", b"new")
        newer = store.checkpoint()
        store.put(b"suffix", b"s")
    del model[b"k1"]
    model[b"k2"] = b"new"
    model[b"suffix"] = b"s"
    return older, newer, model


@pytest.mark.parametrize("damage", [flip_a_bit, truncate, remove])
def test_a_damaged_newest_snapshot_falls_back_to_the_older_checkpoint_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any) -> None:
    path = tmp_path / "kv"
    older, newer, model = two_checkpoints(path)
    damage(path / checkpoints.CHECKPOINT_DIRECTORY_NAME / newer.file_name)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store = open_store(path)
    with store:
        assert store.recovered_from == older
        assert digest(store, set(model) | {b"k1"}) == model_digest(model, set(model) | {b"k1"})
        # The next checkpoint is folded from the older, usable snapshot.
        store.put(b"later", b"l")
        store.checkpoint()
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"position {newer.position}" in warnings[0]
    assert f"falling back to the checkpoint at position {older.position}" in warnings[0]
    with open_store(path) as store:
        assert store.get(b"later") == b"l" and store.get(b"k1") is None and len(store) == 501


def test_every_snapshot_unusable_falls_back_to_a_full_replay_with_warnings(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "kv"
    older, newer, model = two_checkpoints(path)
    flip_a_bit(path / checkpoints.CHECKPOINT_DIRECTORY_NAME / newer.file_name)
    remove(path / checkpoints.CHECKPOINT_DIRECTORY_NAME / older.file_name)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store = open_store(path)
    with store:
        assert store.recovered_from is None
        assert dict(store.items()) == model and len(store) == len(model)
        assert store.get(b"k1") is None and store.get(b"k2") == b"new"
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and "falling back to a full replay" in warnings[1], warnings


def test_a_snapshot_with_a_good_file_checksum_but_a_bad_header_is_refused() -> None:
    data = checkpoints.encode_snapshot(128, 3, {5: 64, 9: 80 | checkpoints.ENTRY_DELETED})
    snapshot = checkpoints.decode_snapshot(data, "test")
    assert (snapshot.index_bits, snapshot.position, snapshot.live_count) == (3, 128, 1)
    assert snapshot.entries() == {5: 64, 9: 80 | checkpoints.ENTRY_DELETED}
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 1
        with pytest.raises(errors.CheckpointError):
            checkpoints.decode_snapshot(bytes(damaged), "test")
    for size in range(len(data)):
        with pytest.raises(errors.CheckpointError):
            checkpoints.decode_snapshot(data[:size], "test")


def test_snapshot_bytes_are_pinned() -> None:
    data = checkpoints.encode_snapshot(4096, 10, {0x1122334455667788: 64,
                                                  0x99: 200 | checkpoints.ENTRY_DELETED})
    header = data[:checkpoints.SNAPSHOT_HEADER_SIZE_BYTES]
    assert header[:44] == (b"FLKVSNAP" + struct.pack("<IBBH", 2, 10, 0, 0)
                           + struct.pack("<QQQ", 4096, 2, 1)
                           + struct.pack("<I", checkpoints.crc32c(data[48:])))
    assert data[48:] == bytes.fromhex(
        "9900000000000000" "c800000000000080"     # hash 0x99: a delete at 200
        "8877665544332211" "4000000000000000")    # then a put at 64, sorted by hash
    assert header[44:] == struct.pack("<I", checkpoints.crc32c(header[:44]))


# --- markers and the cookie -------------------------------------------------------------------


def test_the_marker_and_the_cookie_name_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path) as store:
        store.put(b"k", b"v")
        made = store.checkpoint()
        marker = msgpack.unpackb(store.log.read(made.marker_address))
        assert marker == {"kind": "kv-checkpoint", "version": 1, "position": made.position,
                          "file": f"{made.position}.snap", "size_bytes": made.size_bytes,
                          "crc32c": made.crc32c}
        assert made.position <= made.marker_address
        cookie = checkpoints.decode_cookie(store.log.cookie)
        assert cookie.checkpoint_addresses == [made.marker_address]
        assert (path / "kv-checkpoints" / made.file_name).stat().st_size == made.size_bytes
        # Markers are not KV records: scans and items() skip them.
        assert dict(store.items()) == {b"k": b"v"}


def test_other_users_cookie_entries_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path) as store:
        store.put(b"k", b"v")
        store.log.commit(cookie=msgpack.packb({"other.offset": 7}))
        made = store.checkpoint()
        cookie = checkpoints.decode_cookie(store.log.cookie)
        assert cookie.shared == {"other.offset": 7}
        assert cookie.checkpoint_addresses == [made.marker_address]
    with open_store(path) as store:
        assert store.recovered_from == made
        store.put(b"k2", b"v")
        assert checkpoints.decode_cookie(store.log.cookie).shared == {"other.offset": 7}


def test_without_a_kvlayer_cookie_recovery_scans_for_markers(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path) as store:
        store.put(b"k", b"v")
        made = store.checkpoint()
        store.log.commit(cookie=b"someone else's opaque cookie")
    with open_store(path) as store:
        assert store.recovered_from == made and store.get(b"k") == b"v"


def test_a_checkpoint_without_new_writes_is_the_last_one(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(b"k", b"v")
        made = store.checkpoint()
        assert store.checkpoint() is made


def test_automatic_checkpoints_by_bytes_keep_only_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path, checkpoint_every_bytes=8 << 10, checkpoints_kept_count=2) as store:
        for number in range(200):
            store.put(b"k%d" % (number % 50), bytes(200))
        made = store.checkpoints
        assert len(made) == 2 and made[0].position > made[1].position
    names = sorted(os.listdir(path / "kv-checkpoints"))
    assert names == sorted(checkpoint.file_name for checkpoint in made)
    with open_store(path) as store:
        assert store.recovered_from == made[0] and len(store) == 50


@pytest.mark.parametrize("setting", [{"checkpoint_every_bytes": -1},
                                     {"checkpoint_every_bytes": "1"},
                                     {"checkpoints_kept_count": 0},
                                     {"checkpoints_kept_count": True}])
def test_bad_checkpoint_settings_raise_store_settings_error(tmp_path: Path,
                                                            setting: dict[str, Any]) -> None:
    with pytest.raises(errors.StoreSettingsError, match="open failed"):
        open_store(tmp_path / "kv", **setting)


# --- kill -9 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [20])
def test_kill_9_during_writes_and_checkpoints_recovers_the_last_acknowledged_commit(
        tmp_path: Path, rounds: int) -> None:
    report = run_kill_rounds(tmp_path, "checkpoints", rounds)
    assert report.recovered_from_checkpoint_count >= rounds // 2, report


# --- recovery time ----------------------------------------------------------------------------


def test_recovery_of_200k_keys_from_a_checkpoint_beside_a_full_replay(tmp_path: Path) -> None:
    keys_count = 200_000
    path = tmp_path / "kv"
    settings_large: dict[str, Any] = {"page_size_bytes": 1 << 20, "memory_size_bytes": 64 << 20,
                                      "segment_size_bytes": 256 << 20}
    with KVStore.open(path, **settings_large) as store:
        for start in range(0, keys_count, 1000):
            store.put_many({b"key-%08d" % i: b"v" * 100 for i in range(start, start + 1000)})
        started = time.perf_counter()
        store.checkpoint()
        checkpoint_seconds = time.perf_counter() - started
        store.put(b"suffix", b"s")
    started = time.perf_counter()
    with KVStore.open(path, **settings_large) as store:
        from_checkpoint_seconds = time.perf_counter() - started
        assert store.recovered_from is not None and len(store) == keys_count + 1
        sample = [b"key-%08d" % i for i in range(0, keys_count, 997)]
        assert store.get_many(sample) == [b"v" * 100] * len(sample)
    shutil.rmtree(path / "kv-checkpoints")
    started = time.perf_counter()
    with KVStore.open(path, **settings_large) as store:
        full_replay_seconds = time.perf_counter() - started
        assert store.recovered_from is None and len(store) == keys_count + 1
    print(f"\n{keys_count} keys: checkpoint written in {checkpoint_seconds:.3f} s; recovery "
          f"from the checkpoint {from_checkpoint_seconds:.3f} s, full replay "
          f"{full_replay_seconds:.3f} s")



def test_kv_markers_keep_their_bytes_and_errors_are_both_kv_and_checkpoint_errors() -> None:
    # The mechanism is consumers/checkpoints.py; the marker's fields are kvlayer's format.
    from consumers import CheckpointError as SharedCheckpointError

    marker = checkpoints.encode_marker(8192, "8192.snap", 48, 0x1234)
    assert marker == msgpack.packb({"kind": "kv-checkpoint", "version": 1, "position": 8192,
                                    "file": "8192.snap", "size_bytes": 48, "crc32c": 0x1234})
    assert checkpoints.parse_marker(9000, marker) == checkpoints.Checkpoint(
        8192, "8192.snap", 48, 0x1234, 9000)
    assert checkpoints.parse_marker(8000, marker) is None  # a position after its marker
    assert issubclass(errors.CheckpointError, errors.KVError)
    assert issubclass(errors.CheckpointError, SharedCheckpointError)
