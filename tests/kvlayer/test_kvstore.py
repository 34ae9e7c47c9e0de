"""Tests of kvlayer.KVStore: the API, typed errors, recovery by replay, and kill -9 durability.

Goal: the store behaves like a dict of bytes that survives close/reopen and process death: after
a SIGKILL, reopening gives exactly the state as of the last acknowledged commit (or of the one
batch that committed but was not yet acknowledged when the kill landed).

Method:
- API and error tests on small logs.
- A hypothesis state test runs random puts, deletes, batches, incr, rmw and reopens against a
  dict model, with index buckets small enough that chains collide and the index grows.
- The crash test runs the kill harness of tests/support/kv_kill.py (mode "writes": steps of atomic
  batches, acknowledged after their commit; kill -9 at a random instant; the recovered state
  must equal the model at the last acknowledged step or the one after).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvlayer import KeyNotFound, KVError, KVStore, errors
from kvlayer.store import RECORD_HEADER_SIZE_BYTES, decode_record
from tests.support.kv_kill import run_kill_rounds
from tests.support.mode import examples
from tests.support.settings import SMALL_SETTINGS


def open_store(path: Path, **extra: Any) -> KVStore:
    return KVStore.open(path, **SMALL_SETTINGS, **extra)


# --- API ----------------------------------------------------------------------------------------


def test_put_then_get_returns_the_value(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(b"k", b"v1")
        store.put(b"k", b"v2")
        assert store.get(b"k") == b"v2"
        assert store[b"k"] == b"v2"
        assert b"k" in store and b"other" not in store
        assert store.get(b"other") is None
        assert store.get(b"other", b"dflt") == b"dflt"
        assert len(store) == 1


def test_missing_key_raises_key_not_found_which_is_a_key_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        with pytest.raises(KeyNotFound) as caught:
            store[b"nope"]
        assert isinstance(caught.value, KeyError) and isinstance(caught.value, KVError)
        assert str(caught.value).startswith("get failed")
        with pytest.raises(KeyError):
            store.delete(b"nope")


def test_delete_removes_the_key_and_survives_reopen(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(b"a", b"1")
        store.put(b"b", b"2")
        del store[b"a"]
        assert b"a" not in store and len(store) == 1
    with open_store(tmp_path / "kv") as store:
        assert store.get(b"a") is None and store[b"b"] == b"2" and len(store) == 1


def test_empty_keys_and_values_are_allowed(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(b"", b"")
        assert store.get(b"") == b"" and b"" in store and len(store) == 1


def test_bytearray_and_memoryview_are_accepted(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(bytearray(b"k"), memoryview(b"v"))
        assert store.get(memoryview(b"k")) == b"v"


@pytest.mark.parametrize("bad", ["text", 3, None, 1.5])
def test_keys_and_values_must_be_bytes(tmp_path: Path, bad: Any) -> None:
    with open_store(tmp_path / "kv") as store:
        with pytest.raises(errors.KeyTypeError, match="^put failed"):
            store.put(bad, b"v")
        with pytest.raises(errors.ValueTypeError, match="^put failed"):
            store.put(b"k", bad)
        with pytest.raises(TypeError):
            store.get(bad)


def test_oversized_key_and_record_get_typed_errors(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        with pytest.raises(errors.KeyTooLarge):
            store.put(b"k" * 70000, b"v")
        with pytest.raises(errors.ValueTooLarge, match="entry_size_max"):
            store.put(b"k", b"v" * (64 << 10))
        assert len(store) == 0


def test_bad_index_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(errors.StoreSettingsError, match="index_buckets_count_log2") as caught:
        KVStore.open(tmp_path / "kv", index_buckets_count_log2=99)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, KVError)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = open_store(tmp_path / "kv")
    store.close()
    with pytest.raises(errors.StoreClosedError):
        store.put(b"k", b"v")
    with pytest.raises(errors.StoreClosedError):
        store.get(b"k")


def test_put_many_is_one_commit_and_last_value_wins(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        before = store.log.commit_number
        store.put_many([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
        assert store.log.commit_number == before + 1
        assert store[b"a"] == b"3" and store[b"b"] == b"2" and len(store) == 2
        store.put_many({b"c": b"4"})
        assert sorted(store.items()) == [(b"a", b"3"), (b"b", b"2"), (b"c", b"4")]
        assert sorted(store) == [b"a", b"b", b"c"]


def test_incr_counts_in_decimal_and_refuses_non_integers(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        assert store.incr(b"n") == 1
        assert store.incr(b"n", 41) == 42
        assert store.incr(b"n", -50) == -8
        assert store[b"n"] == b"-8"
        store.put(b"s", b"abc")
        with pytest.raises(errors.NotAnIntegerError, match="^incr failed"):
            store.incr(b"s")
        with pytest.raises(errors.ValueTypeError):
            store.incr(b"n", "1")  # type: ignore[arg-type]


def test_rmw_stores_the_function_result_and_none_deletes(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        assert store.rmw(b"k", lambda old: b"x" if old is None else old + b"x") == b"x"
        assert store.rmw(b"k", lambda old: old + b"y" if old else b"") == b"xy"
        assert store.rmw(b"k", lambda old: None) is None
        assert b"k" not in store and len(store) == 0
        with pytest.raises(errors.ValueTypeError):
            store.rmw(b"k", lambda old: "text")  # type: ignore[arg-type,return-value]


def test_uncommitted_writes_are_read_back_and_committed_by_commit(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(b"k", b"v", commit=False)
        assert store[b"k"] == b"v"
        assert store.commit() == store.log.committed_until_address


def test_get_many_matches_get(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv", index_buckets_count_log2=2) as store:
        store.put_many({b"k%d" % i: b"v%d" % i for i in range(500)})
        store.delete(b"k7")
        keys = [b"k%d" % i for i in range(0, 600, 7)]
        assert store.get_many(keys) == [store.get(key) for key in keys]


def test_many_keys_grow_the_index_and_replay_rebuilds_it(tmp_path: Path) -> None:
    expected = {b"key-%d" % i: b"value-%d" % i for i in range(20_000)}
    with open_store(tmp_path / "kv", index_buckets_count_log2=2) as store:
        pairs = list(expected.items())
        for start in range(0, len(pairs), 1000):
            store.put_many(pairs[start:start + 1000])
        stats = store.index_stats()
        assert stats["grow_count"] > 5
        assert all(store.get(key) == value for key, value in expected.items())
    with open_store(tmp_path / "kv", index_buckets_count_log2=2) as store:
        assert len(store) == len(expected)
        assert store.index_stats()["buckets_count"] >= stats["buckets_count"]
        assert all(store.get(key) == value for key, value in expected.items())


def test_readers_in_threads_see_every_committed_key_while_the_writer_grows_the_index(
        tmp_path: Path) -> None:
    import threading

    with open_store(tmp_path / "kv", index_buckets_count_log2=0) as store:
        store.put_many({b"stable-%d" % i: b"%d" % i for i in range(300)})
        stop = threading.Event()
        failures: list[bytes] = []

        def reader() -> None:
            while not stop.is_set():
                for i in range(0, 300, 7):
                    if store.get(b"stable-%d" % i) != b"%d" % i:
                        failures.append(b"stable-%d" % i)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            for start in range(0, 6000, 200):
                store.put_many({b"new-%d" % i: b"x" for i in range(start, start + 200)},
                               commit=False)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert failures == []
        assert store.index_stats()["grow_count"] >= 5
        assert len(store) == 6300


def test_the_commit_cookie_sizes_the_index_before_replay_and_a_foreign_one_is_ignored(
        tmp_path: Path) -> None:
    with open_store(tmp_path / "kv", index_buckets_count_log2=0) as store:
        store.put_many({b"k%d" % i: b"v" for i in range(2000)})
        buckets_count = store.index_stats()["buckets_count"]
        assert store.log.cookie is not None and store.log.cookie.startswith(b"kvlayer1")
    with open_store(tmp_path / "kv", index_buckets_count_log2=0) as store:
        assert store.index_stats()["buckets_count"] == buckets_count
        store.log.commit(cookie=b"someone else's cookie")
    with open_store(tmp_path / "kv", index_buckets_count_log2=0) as store:
        assert len(store) == 2000 and store.get(b"k1999") == b"v"


def test_foreign_entries_in_the_log_are_reported_as_corrupt_records(tmp_path: Path) -> None:
    from fasterlog import FasterLog

    with FasterLog.open(tmp_path / "kv", **SMALL_SETTINGS) as log:
        log.append(b"not a kv record")
        log.commit()
    with pytest.raises(errors.RecordCorruptError, match="read record at 64 failed"):
        open_store(tmp_path / "kv")


def test_record_decoder_rejects_every_truncation() -> None:
    from kvlayer.records import OP_PUT, Op, encode_record

    payload = encode_record(3, 64, [Op(OP_PUT, b"key", b"value", 12345)])
    assert decode_record(payload, 4096)[2][0].value == b"value"
    for size in range(len(payload)):
        with pytest.raises(errors.RecordCorruptError):
            decode_record(payload[:size], 4096)
    assert RECORD_HEADER_SIZE_BYTES == 12


@given(st.binary(min_size=1, max_size=4), st.binary(max_size=4), st.booleans(),
       st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)), max_size=3))
@examples(300)
def test_fast_single_operation_parser_agrees_with_the_full_decoder(
        key: bytes, value: bytes, delete: bool, flips: list[tuple[int, int]]) -> None:
    from kvlayer.records import OP_DELETE, OP_PUT, Op, encode_record, single_op

    op = Op(OP_DELETE, key, b"", 7) if delete else Op(OP_PUT, key, value, 7)
    payload = bytearray(encode_record(3, 64, [op]))
    for position, byte in flips:  # damage a few header bytes
        if position < len(payload):
            payload[position] = byte
    fast = single_op(bytes(payload), 4096)
    try:
        _, previous, ops = decode_record(bytes(payload), 4096)
    except errors.RecordCorruptError:
        assert fast is None
        return
    if fast is not None:
        assert len(ops) == 1
        assert fast == (previous, ops[0].kind, len(ops[0].key), ops[0].hash)


GOLDEN_HASH = 0x3D945AD5AA15568C  # FORMAT.md "KV records", the hash example


def test_records_are_golden_bytes() -> None:
    from kvlayer.records import OP_DELETE, OP_PUT, Op, encode_record, key_hash

    # SipHash-1-3 of b"k" under salt 0x0123456789ABCDEF: pins the hash, so stored records
    # stay findable.
    assert key_hash(b"k", 0x0123456789ABCDEF) == GOLDEN_HASH
    record = encode_record(10, 64, [Op(OP_PUT, b"k", b"v", 0x1122334455667788),
                                    Op(OP_DELETE, b"j", b"", 0x99)])
    assert record.hex() == (
        "020a0200" "4000000000000000"
        "01000100" "01000000" "8877665544332211" "6b" "76"
        "02000100" "00000000" "9900000000000000" "6a")


# --- model test ---------------------------------------------------------------------------------

small_keys = st.binary(max_size=3).map(lambda b: b"k" + b)
values = st.binary(max_size=20)
steps = st.lists(st.one_of(
    st.tuples(st.just("put"), small_keys, values, st.booleans()),
    st.tuples(st.just("delete"), small_keys, st.none(), st.booleans()),
    st.tuples(st.just("put_many"), st.lists(st.tuples(small_keys, values), max_size=8),
              st.none(), st.booleans()),
    st.tuples(st.just("incr"), small_keys, st.integers(-5, 5), st.booleans()),
    st.tuples(st.just("rmw"), small_keys, values, st.booleans()),
    st.tuples(st.just("reopen"), st.none(), st.none(), st.none()),
), max_size=60)


@given(steps)
@examples(60)
def test_store_matches_a_dict_model_across_reopens(
        script: list[tuple[str, Any, Any, Any]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kv"
        store = open_store(path, index_buckets_count_log2=0)
        model: dict[bytes, bytes] = {}
        try:
            for action, first, second, commit in script:
                if action == "put":
                    store.put(first, second, commit=commit)
                    model[first] = second
                elif action == "delete":
                    if first in model:
                        store.delete(first, commit=commit)
                        del model[first]
                    else:
                        with pytest.raises(KeyNotFound):
                            store.delete(first, commit=commit)
                elif action == "put_many":
                    store.put_many(first, commit=commit)
                    model.update(first)
                elif action == "incr":
                    try:
                        expected: int | None = int(model.get(first, b"0"), 10) + second
                    except ValueError:
                        expected = None
                    if expected is None:
                        with pytest.raises(errors.NotAnIntegerError):
                            store.incr(first, second, commit=commit)
                    else:
                        assert store.incr(first, second, commit=commit) == expected
                        model[first] = str(expected).encode()
                elif action == "rmw":
                    new = (model.get(first, b"") + second)[-30:]

                    def append_tail(old: bytes | None, tail: bytes = second) -> bytes:
                        return ((old or b"") + tail)[-30:]

                    assert store.rmw(first, append_tail, commit=commit) == new
                    model[first] = new
                else:
                    store.close()
                    store = open_store(path, index_buckets_count_log2=0)
                assert len(store) == len(model)
            assert dict(store.items()) == model
            for key in [b"k", b"k\x00", b"kk", *model]:
                assert store.get(key) == model.get(key)
        finally:
            store.close()
        with open_store(path) as reopened:
            assert dict(reopened.items()) == model and len(reopened) == len(model)


# --- kill -9 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", [12])
def test_kill_9_recovers_the_state_of_the_last_acknowledged_commit(
        tmp_path: Path, rounds: int) -> None:
    run_kill_rounds(tmp_path, "writes", rounds)


def test_kvlayer_codes_go_through_the_logs_one_funnel() -> None:
    # kvlayer/errors.py registers its C codes with fasterlog's table at import.
    from fasterlog import errors as log_errors
    from kvlayer._kvlayer_c import lib

    conflict = log_errors.exception_for(lib.FL_E_KV_INDEX, "put")
    assert type(conflict) is KVError
    assert str(conflict) == "put failed: an index update conflicted (two writers?)"
    busy = log_errors.exception_for(lib.FL_E_INDEX_BUSY, "index grow")
    assert str(busy) == "index grow failed: another writer is inside the index"
    record = log_errors.exception_for(lib.FL_E_KV_RECORD, "get", address=128,
                                      detail="bad operation")
    assert type(record) is errors.RecordCorruptError and record.address == 128
    assert str(record) == "read record at 128 failed: bad operation"
    old = log_errors.exception_for(lib.FL_E_KV_RECORD, "get", address=64,
                                   detail="record version 1 (whatever the core said)")
    assert type(old) is errors.StoreVersionError
    assert str(old) == f"read record at 64 failed: {errors.VERSION_1_WHY}"
