"""KVStore.scan, the cursor over the hash index's buckets (issue 14, defect 7).

Goal: Redis's SCAN guarantee on kvlayer's own index: a full iteration returns every key live
for the whole of it, whatever is written, deleted or grown meanwhile (duplicates allowed), and
one step costs O(count), not O(keys). Method: real stores on disk with a tiny first index, so
the index doubles many times during the iteration; writes, deletes and a compaction between
steps; the work of one step is measured by counting the log reads it makes.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from kvlayer import KVStore
from kvlayer.errors import ValueTypeError
from tests.support.settings import SMALL_SETTINGS


def _open(path: Path) -> KVStore:
    return KVStore.open(path, index_buckets_count_log2=1, **SMALL_SETTINGS)


def test_full_scan_returns_every_key_live_throughout_while_writes_grow_the_index(
        tmp_path: Path) -> None:
    rng = random.Random(14)
    with _open(tmp_path / "kv") as store:
        for i in range(2000):
            store.put(b"stay:%d" % i, b"v%d" % i, commit=False)
        for i in range(0, 2000, 3):
            store.put(b"stay:%d" % i, b"again", commit=False)  # older versions on the chain
        for i in range(500):
            store.put(b"gone:%d" % i, b"x", commit=False)
        store.commit()
        grows_before = store.index_stats()["grow_count"]
        returned: list[bytes] = []
        cursor, steps, written = 0, 0, 0
        while True:
            cursor, keys = store.scan(cursor, count=rng.choice((1, 5, 20)))
            returned += keys
            steps += 1
            for _ in range(40):  # writes between steps: the index doubles several times
                store.put(b"new:%d" % written, b"n", commit=False)
                written += 1
            if steps % 5 == 0 and steps // 5 <= 500:
                store.delete(b"gone:%d" % (steps // 5 - 1), commit=False)
            if cursor == 0:
                break
        assert store.index_stats()["grow_count"] > grows_before
        assert {b"stay:%d" % i for i in range(2000)} <= set(returned)


def test_deleted_keys_are_not_returned_and_a_key_is_returned_once_without_grows(
        tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", index_buckets_count_log2=8, **SMALL_SETTINGS) as store:
        store.put_many({b"k%d" % i: b"v" for i in range(600)})
        for i in range(0, 600, 2):
            store.delete(b"k%d" % i)
        returned: list[bytes] = []
        cursor = 0
        while True:
            cursor, keys = store.scan(cursor, 7)
            returned += keys
            if cursor == 0:
                break
        assert sorted(returned) == sorted(b"k%d" % i for i in range(1, 600, 2))
        with pytest.raises(ValueTypeError):
            store.scan(0, 0)


def test_one_step_reads_records_in_proportion_to_count_not_to_keys(tmp_path: Path) -> None:
    with _open(tmp_path / "kv") as store:
        for round_number in range(3):  # three versions of each key, as in the issue
            store.put_many({b"key:%d" % i: b"%d" % round_number for i in range(20000)})
        # A step's time, at its least over a few steps (robust to a busy machine): a step
        # walks whole buckets of about six chains, three records per key, whereas a pass
        # over the keys reads 60,000 records.
        best_s, cursor = 1.0, 0
        for _ in range(20):
            started = time.perf_counter()
            cursor, keys = store.scan(cursor, 10)
            best_s = min(best_s, time.perf_counter() - started)
            assert cursor != 0 and keys
        started = time.perf_counter()
        assert len(list(store.keys())) == 20000
        pass_s = time.perf_counter() - started
        assert best_s < pass_s / 20, (best_s, pass_s)
