"""Tests of KV compaction, larger-than-memory data, and the crash acceptance tests around them.

Goal: `KVStore.compact()` never changes what the store holds (now, after a reopen, after a
kill -9 at any moment of it), gives disk space back (segment files deleted), respects named
cursors, and lets readers in other threads read correct values while it runs. A store ten times
larger than the log's memory works and reads cold keys from disk.

Method:
- Segment files are counted and sized on disk (os.stat) before and after compaction.
- Reader threads compare every get() with a frozen model while the main thread compacts again
  and again, each compaction moving the begin address under them.
- A hypothesis state test runs random puts, deletes, rmw, checkpoints, compactions (all, or up
  to a random address) and close/reopen against a dict model.
- The state digest (every key through the index, plus len) after checkpoint + suffix replay is
  compared with the digest of a full replay of a copy of the directory without its snapshots.
- Kill tests use tests/support/kv_kill.py: mode "compaction" (steps, checkpoints by bytes and by
  time, compaction every 5 steps, kill -9 at random instants) and the named points of
  compaction.py (after the copies, after the checkpoint, after the truncation, after its
  commit).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fasterlog import cursors
from fasterlog.errors import RetentionError
from kvlayer import KVStore, compaction, errors
from kvlayer import checkpoint as checkpoints
from tests.support.kv_kill import (
    CRASH_POINTS,
    MODES,
    check_recovered,
    child_command,
    last_acknowledged,
    run_kill_rounds,
)
from tests.support.mode import examples
from tests.support.processes import ROOT, child_env
from tests.support.settings import CRASH_SETTINGS


def open_store(path: Path, **extra: Any) -> KVStore:
    return KVStore.open(path, **CRASH_SETTINGS, **extra)


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("segment-*.fl"))


def segment_bytes(path: Path) -> int:
    """Disk space of the segment files: allocated blocks, not just sizes."""
    return sum(file.stat().st_blocks * 512 for file in segment_files(path))


def overwrite(store: KVStore, rng: random.Random, model: dict[bytes, bytes], count: int,
              keys_count: int = 100) -> None:
    for number in range(count):
        key = b"k%d" % rng.randrange(keys_count)
        if rng.random() < 0.15 and key in model:
            store.delete(key, commit=False)
            del model[key]
        else:
            value = b"%d:" % number + bytes(rng.randrange(120))
            store.put(key, value, commit=False)
            model[key] = value
    store.commit()


def assert_state(store: KVStore, model: dict[bytes, bytes], keys_count: int = 100) -> None:
    for i in range(keys_count):
        assert store.get(b"k%d" % i) == model.get(b"k%d" % i), i
    assert len(store) == len(model)
    assert dict(store.items()) == model


# --- compaction ---------------------------------------------------------------------------------


def test_compaction_keeps_the_state_and_gives_the_disk_space_back(tmp_path: Path) -> None:
    rng = random.Random(1)
    model: dict[bytes, bytes] = {}
    path = tmp_path / "kv"
    with open_store(path) as store:
        overwrite(store, rng, model, 6000)
        files_before, bytes_before = len(segment_files(path)), segment_bytes(path)
        assert files_before >= 8
        result = store.compact()
        assert result.until_address > result.begin_before_address
        assert store.log.begin_address == result.until_address
        assert 0 < result.keys_copied_count <= len(model)
        assert_state(store, model)
        files_after, bytes_after = len(segment_files(path)), segment_bytes(path)
        print(f"segments {files_before} -> {files_after}, {bytes_before} -> {bytes_after} bytes")
        # 100 keys of at most ~130 B fit one segment; the log keeps its current one too.
        assert files_after <= 3 and bytes_after <= bytes_before // 3
        overwrite(store, rng, model, 500)
    with open_store(path) as store:
        assert store.recovered_from is not None
        assert store.recovered_from.position >= result.until_address
        assert_state(store, model)


def test_compaction_up_to_an_address_copies_only_what_lies_below(tmp_path: Path) -> None:
    rng = random.Random(2)
    model: dict[bytes, bytes] = {}
    with open_store(tmp_path / "kv") as store:
        overwrite(store, rng, model, 3000)
        middle = store.log.committed_until_address // 2 + 100
        result = store.compact(middle)
        assert result.until_address == middle - middle % CRASH_SETTINGS["page_size_bytes"]
        assert store.log.begin_address == result.until_address
        assert_state(store, model)
        # Compacting to below the begin address does nothing.
        nothing = store.compact(64)
        assert nothing.checkpoint is None and nothing.records_scanned_count == 0
        assert store.log.begin_address == result.until_address
    with open_store(tmp_path / "kv") as store:
        assert_state(store, model)


def test_compaction_reports_progress(tmp_path: Path) -> None:
    rng = random.Random(3)
    seen: list[tuple[int, int]] = []
    with open_store(tmp_path / "kv") as store:
        overwrite(store, rng, {}, 3000)
        store.compact(progress=lambda done, total: seen.append((done, total)))
    assert len(seen) >= 2 and seen[-1][0] == seen[-1][1]
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_compaction_respects_named_cursors_unless_forced(tmp_path: Path) -> None:
    rng = random.Random(4)
    model: dict[bytes, bytes] = {}
    path = tmp_path / "kv"
    with open_store(path) as store:
        overwrite(store, rng, model, 2000)
        cursors.write(path, "audit", 4096)
        begin = store.log.begin_address
        with pytest.raises(RetentionError) as caught:
            store.compact()
        assert caught.value.cursor == "audit"
        assert store.log.begin_address == begin  # refused before any work
        store.compact(4096)  # up to the cursor is allowed
        assert store.log.begin_address == 4096
        store.compact(force=True)
        assert store.log.begin_address > 4096
        assert_state(store, model)


def test_compaction_settings_and_read_only_stores_get_typed_errors(tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path) as store:
        store.put(b"a", b"1")
        with pytest.raises(errors.StoreSettingsError):
            store.compact("end")  # type: ignore[arg-type]
        with pytest.raises(errors.StoreSettingsError):
            store.compact(-1)
        with KVStore.open(path, read_only=True) as follower:
            with pytest.raises(errors.StoreReadOnlyError):
                follower.compact()
            with pytest.raises(errors.StoreReadOnlyError):
                follower.put(b"b", b"2")
    with open_store(path) as store:
        store.close()
        with pytest.raises(errors.StoreClosedError):
            store.compact()


def test_readers_in_threads_read_correct_values_while_compaction_truncates(
        tmp_path: Path) -> None:
    rng = random.Random(5)
    model: dict[bytes, bytes] = {}
    with open_store(tmp_path / "kv", index_buckets_count_log2=2) as store:
        overwrite(store, rng, model, 3000, keys_count=300)
        frozen = dict(model)
        stop = threading.Event()
        failures: list[str] = []
        reads = [0]

        def reader(seed: int) -> None:
            local = random.Random(seed)
            while not stop.is_set():
                key = b"k%d" % local.randrange(300)
                try:
                    if local.random() < 0.02:  # a whole listing, scanning the log
                        listed = dict(store.items())
                        if listed != frozen:
                            failures.append(f"items(): {len(listed)} pairs, not {len(frozen)}")
                            return
                    got = store.get(key) if local.random() < 0.7 else store.get_many([key])[0]
                except Exception as error:  # noqa: BLE001 - reported below
                    failures.append(f"{key!r}: {error!r}")
                    return
                if got != frozen.get(key):
                    failures.append(f"{key!r}: {got!r} != {frozen.get(key)!r}")
                    return
                reads[0] += 1

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(3)]
        for thread in threads:
            thread.start()
        begins = []
        try:
            for _ in range(6):
                # Rewrite the same values, so the model stays frozen while the log grows and
                # every compaction has records to copy and a truncation to make.
                store.put_many(list(frozen.items())[:100])
                store.compact()
                begins.append(store.log.begin_address)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not failures, failures[:5]
        assert reads[0] > 100
        assert begins == sorted(begins) and len(set(begins)) == len(begins)
        assert_state(store, frozen, keys_count=300)


def test_a_tombstone_below_the_truncation_does_not_bring_an_old_value_back(
        tmp_path: Path) -> None:
    path = tmp_path / "kv"
    with open_store(path, index_buckets_count_log2=0) as store:  # one bucket: long chains
        for i in range(50):
            store.put(b"k%d" % i, b"old%d" % i, commit=False)
        for i in range(0, 50, 2):
            store.delete(b"k%d" % i, commit=False)
        store.commit()
        store.compact()
        store.put(b"fresh", b"1")
        expected = {b"k%d" % i: b"old%d" % i for i in range(1, 50, 2)} | {b"fresh": b"1"}
        assert dict(store.items()) == expected and len(store) == len(expected)
        assert all(store.get(b"k%d" % i) is None for i in range(0, 50, 2))
        for _ in range(200):  # enough writes to grow the index past chain heads below begin
            store.put(b"grow-%d" % _, b"x", commit=False)
        store.commit()
        assert all(store.get(b"k%d" % i) is None for i in range(0, 50, 2))
    for remove_snapshots in (False, True):
        if remove_snapshots:
            shutil.rmtree(path / checkpoints.CHECKPOINT_DIRECTORY_NAME)
        with open_store(path) as store:
            assert (store.recovered_from is None) == remove_snapshots
            assert all(store.get(b"k%d" % i) is None for i in range(0, 50, 2))
            assert all(store.get(b"k%d" % i) == b"old%d" % i for i in range(1, 50, 2))
            assert len(store) == 25 + 1 + 200


# --- model test ---------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 30), st.binary(max_size=150)),
        st.tuples(st.just("delete"), st.integers(0, 30)),
        st.tuples(st.just("rmw"), st.integers(0, 30), st.binary(max_size=8)),
        st.tuples(st.just("checkpoint")),
        st.tuples(st.just("compact"), st.one_of(st.none(), st.floats(0.0, 1.0))),
        st.tuples(st.just("reopen")),
    ),
    min_size=1, max_size=60)


@examples(30)
@given(operations)
def test_puts_deletes_checkpoints_compactions_and_reopens_match_a_dict_model(
        steps: list[tuple[Any, ...]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kv"
        model: dict[bytes, bytes] = {}
        store = open_store(path, index_buckets_count_log2=0)
        try:
            for step in steps:
                kind = step[0]
                if kind == "put":
                    key = b"k%d" % step[1]
                    store.put(key, step[2])
                    model[key] = step[2]
                elif kind == "delete":
                    key = b"k%d" % step[1]
                    if key in model:
                        store.delete(key)
                        del model[key]
                    else:
                        with pytest.raises(KeyError):
                            store.delete(key)
                elif kind == "rmw":
                    key = b"k%d" % step[1]
                    tail = step[2]

                    def append_tail(old: bytes | None, tail: bytes = tail) -> bytes:
                        return (old or b"") + tail

                    new = store.rmw(key, append_tail)
                    model[key] = (model.get(key, b"")) + tail
                    assert new == model[key]
                elif kind == "checkpoint":
                    store.checkpoint()
                elif kind == "compact":
                    committed = store.log.committed_until_address
                    until = None if step[1] is None else int(committed * step[1])
                    store.compact(until)
                else:
                    store.close()
                    store = open_store(path)
                assert len(store) == len(model)
                assert all(store.get(b"k%d" % i) == model.get(b"k%d" % i) for i in range(31))
            assert dict(store.items()) == model
        finally:
            store.close()
        with open_store(path) as reopened:
            assert dict(reopened.items()) == model and len(reopened) == len(model)


# --- checkpoint + replay == full replay ---------------------------------------------------------


def state_digest(store: KVStore, universe: set[bytes]) -> str:
    hasher = hashlib.sha256(b"%d;" % len(store))
    for key in sorted(universe):
        value = store.get(key)
        hasher.update(b"%d:%s=%s;" % (len(key), key, b"-" if value is None else b"+" + value))
    return hasher.hexdigest()


@pytest.mark.parametrize("seed", [1, 2])
def test_checkpoint_plus_replay_after_compactions_hashes_equal_to_a_full_replay(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "kv"
    model: dict[bytes, bytes] = {}
    universe = {b"k%d" % i for i in range(100)}
    with open_store(path, index_buckets_count_log2=0) as store:
        for round_number in range(4):
            overwrite(store, rng, model, 800)
            if round_number % 2:
                store.compact(rng.randrange(store.log.committed_until_address))
            else:
                store.checkpoint()
        overwrite(store, rng, model, 300)  # the suffix
    with open_store(path) as store:
        assert store.recovered_from is not None
        from_checkpoint = state_digest(store, universe)
    copy = tmp_path / "full-replay"
    shutil.copytree(path, copy)
    shutil.rmtree(copy / checkpoints.CHECKPOINT_DIRECTORY_NAME)
    with open_store(copy) as store:
        assert store.recovered_from is None
        full = state_digest(store, universe)
        assert dict(store.items()) == model
    expected = hashlib.sha256(b"%d;" % len(model))
    for key in sorted(universe):
        value = model.get(key)
        expected.update(b"%d:%s=%s;" % (len(key), key, b"-" if value is None else b"+" + value))
    assert from_checkpoint == full == expected.hexdigest()


# --- kill -9 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [20, pytest.param(300, marks=pytest.mark.slow)])
def test_kill_9_during_writes_checkpoints_and_compactions_recovers_the_last_acknowledged_commit(
        tmp_path: Path, rounds: int) -> None:
    report = run_kill_rounds(tmp_path, "compaction", rounds)
    # Compactions really happened and really truncated (the begin address moved on).
    assert report.begin_addresses[-1] > 64, report
    assert report.recovered_from_checkpoint_count >= rounds // 2, report


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_9_at_each_step_of_compaction_recovers_the_state(tmp_path: Path,
                                                              point: str) -> None:
    path, ack_path = tmp_path / "kv", tmp_path / "ack"
    seed = random.randrange(1 << 30)
    mode = MODES["compaction"]
    recovered = 0
    for round_number in range(2):  # the second round compacts what the first one left
        done = subprocess.run(child_command("point", point, str(path), str(seed), str(ack_path)),
                              check=False,
                              capture_output=True, env=child_env(), cwd=ROOT,
                              timeout=60)
        assert done.returncode == -9, done.stderr
        acknowledged = max(last_acknowledged(ack_path), recovered)
        recovered = check_recovered(path, seed, mode, acknowledged,
                                    f"seed {seed} point {point} round {round_number}")
        assert recovered == acknowledged  # every step was acknowledged before compacting
        with KVStore.open(path, **CRASH_SETTINGS) as store:
            # Only the commit makes the new begin durable; recovery then starts from the
            # checkpoint compaction took, at or above the new begin.
            assert (store.log.begin_address > 64) == (point == "after-commit"), round_number
            if point in ("after-checkpoint", "after-truncate", "after-commit"):
                assert store.recovered_from is not None
                assert store.recovered_from.position >= store.log.begin_address


# --- larger than memory -------------------------------------------------------------------------


def test_a_dataset_ten_times_the_log_memory_reads_cold_keys_correctly(tmp_path: Path) -> None:
    memory_size_bytes = 64 << 10
    settings_: dict[str, Any] = {"page_size_bytes": 16 << 10,
                                 "memory_size_bytes": memory_size_bytes,
                                 "segment_size_bytes": 256 << 10}
    keys_count = 8000
    value_size = 100

    def value_of(number: int) -> bytes:
        return hashlib.blake2b(b"%d" % number, digest_size=20).digest() * 5

    path = tmp_path / "kv"
    with KVStore.open(path, **settings_) as store:
        for start in range(0, keys_count, 500):
            store.put_many({b"key-%08d" % n: value_of(n) for n in range(start, start + 500)})
        written = store.log.tail_address
        assert written >= 10 * memory_size_bytes, written
        rng = random.Random(6)
        cold = [rng.randrange(keys_count // 2) for _ in range(500)]  # long out of memory
        assert all(store.get(b"key-%08d" % n) == value_of(n) for n in cold)
        assert store.get_many([b"key-%08d" % n for n in cold]) == [value_of(n) for n in cold]
        assert len(store) == keys_count
        size = sum(os.path.getsize(file) for file in segment_files(path))
        assert size >= 10 * memory_size_bytes
        assert len(value_of(0)) == value_size
    with KVStore.open(path, **settings_) as store:  # recovery reads it all back through disk
        assert all(store.get(b"key-%08d" % n) == value_of(n) for n in range(0, keys_count, 7))
        store.compact()  # copying forward ten times the memory works too
        assert all(store.get(b"key-%08d" % n) == value_of(n) for n in range(0, keys_count, 7))
        assert len(store) == keys_count


def test_the_hook_names_match_the_crash_points() -> None:
    import inspect

    source = inspect.getsource(compaction.compact)
    assert all(f'_reached("{point}")' in source for point in CRASH_POINTS)


class _PausingLog:
    """Delegates to the store's log; the first read made by `paused_thread` waits until
    `release` is set, so a reader can be held between its index lookup and its chain walk."""

    def __init__(self, log: Any) -> None:
        self._inner = log
        self.paused_thread: threading.Thread | None = None
        self.reached = threading.Event()
        self.release = threading.Event()

    def read(self, address: int) -> bytes:
        if threading.current_thread() is self.paused_thread and not self.reached.is_set():
            self.reached.set()
            self.release.wait(10)
        data: bytes = self._inner.read(address)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_readers_racing_compactions_never_mistake_a_moved_chain_for_an_empty_one(
        tmp_path: Path) -> None:
    # The race of rule 6: a reader looks a chain head up, a compaction copies the record
    # forward, raises the floor and truncates, then the reader walks. fl_kv_get loads the floor
    # before its lookup, so the old head is walked (or its truncated read retried), never
    # taken for an empty chain. Gets run in C, so the interleaving cannot be paused from
    # Python: readers hammer the two keys across many compactions instead.
    with open_store(tmp_path / "kv") as store:
        store.put(b"kept", b"old value")
        store.put(b"gone", b"x")
        store.delete(b"gone")
        stop = threading.Event()
        wrong: list[tuple[bytes, bytes | None]] = []
        reads = [0]

        def reader() -> None:
            while not stop.is_set():
                kept, gone = store.get(b"kept"), store.get(b"gone")
                many = store.get_many([b"kept", b"gone"])
                reads[0] += 1
                if kept != b"old value" or gone is not None or many != [b"old value", None]:
                    wrong.append((kept or b"", gone))

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            for round_ in range(12):
                for i in range(300):  # enough log for the truncation to pass the key's records
                    store.put(b"filler-%d" % (i % 10), bytes(100), commit=False)
                store.commit()
                begin = store.log.begin_address
                store.compact()
                assert store.log.begin_address > begin, round_
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert reads[0] > 0
        assert wrong == []


def test_a_listing_whose_scan_a_compaction_truncated_starts_again_and_is_right(
        tmp_path: Path) -> None:
    class PausingScan(_PausingLog):
        def scan(self, *arguments: Any, **keywords: Any) -> Any:
            entries = self._inner.scan(*arguments, **keywords)
            if threading.current_thread() is not self.paused_thread or self.reached.is_set():
                return entries
            first = next(entries)  # the first chunk (4096 entries) is read
            self.reached.set()
            self.release.wait(10)
            return itertools.chain([first], entries)

    with open_store(tmp_path / "kv") as store:
        model = {}
        for i in range(6000):  # more than one scan chunk
            model[b"k%d" % (i % 700)] = b"v%d" % i
            store.put(b"k%d" % (i % 700), b"v%d" % i, commit=False)
        store.commit()
        pausing = PausingScan(store.log)
        store._core.log = pausing  # type: ignore[assignment]
        listed: dict[bytes, bytes] = {}
        reader = threading.Thread(target=lambda: listed.update(store.items()))
        pausing.paused_thread = reader
        reader.start()
        assert pausing.reached.wait(10)
        store.compact()
        pausing.release.set()
        reader.join(10)
        assert listed == model


def test_compaction_drops_the_checkpoints_below_the_new_begin_and_their_files(
        tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "kv"
    model: dict[bytes, bytes] = {}
    with open_store(path) as store:
        for _ in range(3):
            overwrite(store, rng, model, 500)
            store.checkpoint()
        assert len(store.checkpoints) == 3
        result = store.compact()
        assert [kept.position for kept in store.checkpoints] == [result.checkpoint.position]
        files = sorted(p.name for p in (path / checkpoints.CHECKPOINT_DIRECTORY_NAME).iterdir())
        assert files == [result.checkpoint.file_name]
    with open_store(path) as store:
        assert store.checkpoints == [result.checkpoint]
        assert_state(store, model)
