"""The lone XADD's C path (fasterlog_server/csrc/xadd_lane.c via StreamStore.add_lone) against its
reference, StreamStore.add_now, the one Python encoder of entry records (every XADD goes
through it).

Method: two stores on two real logs receive the same requests, one through add_lone (the
received bytes) and one through add_now (the parsed arguments); their pending records must be
equal to the byte, and so must every stream's ids, placeholder addresses, last id and count.
Sizes sit on msgpack's encoding boundaries (bin 8/16/32, uint 7/8/16/32/64 bits). Frames the
C path must decline leave both stores untouched. Then the server end to end with the lane on
and off: the same replies and the same log.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type hints
import pytest

from fasterlog import FasterLog
from fasterlog_server.resp import RespReader
from fasterlog_server.streams import StreamError, StreamStore
from tests.support.figures import record
from tests.support.mode import LONG, scaled
from tests.support.servers import RunningServer

redis = pytest.importorskip("redis")

BULK_SIZE_MAX_BYTES = 512 << 20
ARGUMENTS_COUNT_MAX = 1 << 20


def frame(*arguments: bytes) -> bytes:
    return b"*%d\r\n" % len(arguments) + b"".join(
        b"$%d\r\n%s\r\n" % (len(argument), argument) for argument in arguments)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[StreamStore, StreamStore]]:
    settings: dict[str, Any] = {"segment_size_bytes": 16 << 20, "page_size_bytes": 1 << 20}
    with FasterLog.open(tmp_path / "c", **settings) as c_log, \
            FasterLog.open(tmp_path / "py", **settings) as py_log:
        yield StreamStore(c_log), StreamStore(py_log)


def state(store: StreamStore) -> object:
    return (list(store._pending), store.writes_count, sorted(store._pending_streams),
            {name: (list(stream.ids), list(stream.addresses), stream.last_id,
                    stream.entries_added) for name, stream in store.streams.items()})


def both_add(stores: tuple[StreamStore, StreamStore], key: bytes, *fields: bytes,
             command: bytes = b"XADD") -> bytes:
    c_store, py_store = stores
    # An id in the future: both take its ms and the next seq, never the clock, which could
    # pass a millisecond between the two calls (test_an_id_from_the_clock... covers it).
    ms, seq = c_store.streams[key].last_id
    for store in stores:
        store.streams[key].last_id = (max(ms, 1 << 42), seq)
    taken = c_store.add_lone(frame(command, key, b"*", *fields), BULK_SIZE_MAX_BYTES,
                             ARGUMENTS_COUNT_MAX)
    assert taken is not None
    stream_id = py_store.add_now(key, py_store.streams[key], list(fields))
    assert taken == (key, b"$%d\r\n%s\r\n" % (len(stream_id), stream_id))
    assert state(c_store) == state(py_store)
    return stream_id


SIZES = [0, 1, 127, 128, 255, 256, 65535, 65536, 70000]
NUMBERS = [0, 1, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32, (1 << 64) - 2]


def test_records_and_index_equal_the_reference_on_every_encoding_boundary(
        stores: tuple[StreamStore, StreamStore]) -> None:
    for store in stores:
        for size in SIZES:
            store.create(b"k" * size)
        store.flush()
    for size in SIZES:
        both_add(stores, b"k" * size, b"f" * size, b"v" * size)
        both_add(stores, b"k" * size, b"field", bytes(range(256)) * (size // 256 + 1))
    for ms in NUMBERS:
        for seq in NUMBERS:
            for store in stores:
                store.streams[b"k"].last_id = (ms if ms > 1 << 42 else ms + (1 << 42), seq)
            both_add(stores, b"k", b"f", b"%d" % seq)
    # The last id left there has no next in its millisecond: the C path declines it.
    assert stores[0].streams[b"k"].last_id == ((1 << 64) - 2, (1 << 64) - 1)
    assert stores[0].add_lone(frame(b"XADD", b"k", b"*", b"f", b"v"), BULK_SIZE_MAX_BYTES,
                              ARGUMENTS_COUNT_MAX) is None
    for store in stores:
        store.streams[b"k"].last_id = (1 << 42, 0)
    for command in (b"xadd", b"Xadd", b"xAdD"):
        both_add(stores, b"k", b"f", b"v", command=command)
    # Field-value pairs: the fields' array is a fixarray up to 15 items, then array 16.
    for pairs in (2, 3, 7, 8, 15, 16, 31, 32):
        words = [b"%s%d" % (kind, i) for i in range(pairs) for kind in (b"f", b"v")]
        both_add(stores, b"k", *words)
    for store in stores:
        store.flush()
    assert state(stores[0]) == state(stores[1])
    assert [entry for _, entry in stores[0].log.scan()] == \
        [entry for _, entry in stores[1].log.scan()]


def test_an_id_from_the_clock_is_now_in_milliseconds_and_packed_as_msgpack_packs_it(
        stores: tuple[StreamStore, StreamStore]) -> None:
    store = stores[0]
    store.create(b"s")
    before_ms = int(time.time() * 1000)
    taken = store.add_lone(frame(b"XADD", b"s", b"*", b"f", b"v"), BULK_SIZE_MAX_BYTES,
                           ARGUMENTS_COUNT_MAX)
    after_ms = int(time.time() * 1000)
    assert taken is not None
    ms, seq = store.streams[b"s"].last_id
    assert before_ms <= ms <= after_ms and seq == 0
    assert taken[1] == b"$%d\r\n%d-0\r\n" % (len(b"%d-0" % ms), ms)
    assert store._pending[-1] == msgpack.packb([b"xadd", b"s", ms, 0, [b"f", b"v"]],
                                               use_bin_type=True)
    # Within the same millisecond (or a clock that went back) the seq goes on.
    store.streams[b"s"].last_id = (ms + 5000, 7)
    store.add_lone(frame(b"XADD", b"s", b"*", b"f", b"v"), BULK_SIZE_MAX_BYTES,
                   ARGUMENTS_COUNT_MAX)
    assert store.streams[b"s"].last_id == (ms + 5000, 8)


def test_an_xadd_with_an_explicit_id_writes_the_record_add_now_encodes(
        stores: tuple[StreamStore, StreamStore]) -> None:
    """Every XADD goes through add_now, the one encoder: with an explicit id (add, for the
    general XADD) and with `*` the same id gives the same record and index, and a new stream
    gets msgpack's packing of the record."""
    explicit, star = stores
    for store in stores:
        store.create(b"s")
        store.flush()
    explicit.add(b"s", (1 << 42, 7), [b"f", b"v"])
    star.streams[b"s"].last_id = (1 << 42, 6)
    star.add_now(b"s", star.streams[b"s"], [b"f", b"v"])
    assert state(explicit) == state(star)
    explicit.add(b"new", (3, 0), [b"a", b"b"])
    assert explicit._pending[-1] == msgpack.packb([b"xadd", b"new", 3, 0, [b"a", b"b"]],
                                                  use_bin_type=True)
    assert explicit.streams[b"new"].ids == [(3, 0)]
    with pytest.raises(StreamError, match="entry_size_max"):
        explicit.add(b"huge", (1, 0), [b"f", b"x" * (2 << 20)])
    assert b"huge" not in explicit.streams  # refused before the stream is kept


@pytest.mark.parametrize("data", [
    frame(b"XADD", b"missing", b"*", b"f", b"v"),  # a new stream: created by the general path
    frame(b"XADD", b"s", b"1-1", b"f", b"v"),  # an explicit id
    frame(b"XADD", b"s", b"*", b"f", b"v", b"g"),  # a field without its value
    frame(b"XADD", b"s", b"*", b"f"),
    frame(b"XADD", b"s", b"*"),
    frame(b"XADD", b"s", b"*", *[b"x"] * 66),  # more pairs than the C path takes
    frame(b"XADD", b"s", b"MAXLEN", b"10", b"*", b"f", b"v"),
    frame(b"XADX", b"s", b"*", b"f", b"v"),
    frame(b"XADDS", b"s", b"*", b"f", b"v"),
    frame(b"XADD", b"s", b"**", b"f", b"v"),
    frame(b"XADD", b"s", b"*", b"f", b"v") + b"*1\r\n$4\r\nPING\r\n",  # not alone
    frame(b"XADD", b"s", b"*", b"f", b"v")[:-1],  # not whole
    frame(b"XADD", b"s", b"*", b"f", b"v").replace(b"$1\r\nf", b"$01\r\nf"),  # not canonical
    frame(b"XADD", b"s", b"*", b"f", b"v" * 2000),  # over entry_size_max
    b"*5\r\n",
    b"",
])
def test_anything_else_is_declined_and_changes_nothing(
        stores: tuple[StreamStore, StreamStore], data: bytes) -> None:
    store = stores[0]
    store.create(b"s")
    store._entry_size_max = 1000
    before = state(store)
    assert store.add_lone(data, BULK_SIZE_MAX_BYTES, ARGUMENTS_COUNT_MAX) is None
    assert state(store) == before


def test_limits_lower_than_the_frame_decline_it(
        stores: tuple[StreamStore, StreamStore]) -> None:
    store = stores[0]
    store.create(b"s")
    data = frame(b"XADD", b"s", b"*", b"f", b"v" * 100)
    assert store.add_lone(data, 99, ARGUMENTS_COUNT_MAX) is None
    assert store.add_lone(data, BULK_SIZE_MAX_BYTES, 4) is None
    assert store.add_lone(data, 100, 5) is not None


def test_the_server_answers_and_logs_the_same_with_the_lane_on_and_off(tmp_path: Path) -> None:
    logs = []
    for enabled in (True, False):
        server = RunningServer(tmp_path / str(enabled))
        try:
            server.server.xadd_lane_enabled = enabled
            streams = server.server.streams
            taken_count = [0]

            def counted(data: bytes, bulk_size_max_bytes: int, arguments_count_max: int,
                        add_lone: Any = streams.add_lone,
                        taken_count: list[int] = taken_count) -> tuple[bytes, bytes] | None:
                taken: tuple[bytes, bytes] | None = add_lone(data, bulk_size_max_bytes,
                                                             arguments_count_max)
                taken_count[0] += taken is not None
                return taken

            streams.add_lone = counted  # type: ignore[method-assign]
            client = redis.Redis(port=server.port)
            client.xadd("s", {"f": "first"}, id="1-1")  # the stream exists: the lane applies
            ids = [client.xadd("s", {"f": b"v%d" % i}) for i in range(50)]
            ids.append(client.execute_command("xadd", "s", "*", "f", "lower-case"))
            ids.append(client.xadd("s", {"a": "1", "b": "2", "c": "3"}))
            ids.append(client.xadd("s", {f"n{i}": i for i in range(40)}))  # over 32 pairs
            with pytest.raises(redis.ResponseError, match="exceeds the log's entry_size_max"):
                client.xadd("s", {"f": b"x" * (2 << 20)})
            entries = client.xrange("s")
            assert [entry_id for entry_id, _ in entries] == [b"1-1"] + ids
            assert entries[-3][1] == {b"f": b"lower-case"}
            assert entries[-2][1] == {b"a": b"1", b"b": b"2", b"c": b"3"}
            assert entries[-1][1] == {b"n%d" % i: b"%d" % i for i in range(40)}
            assert client.xinfo_stream("s")["entries-added"] == 54
            # All but the first, the one too big and the one with 40 pairs.
            assert taken_count[0] == (52 if enabled else 0)
            logs.append([fields for _, fields in entries])
            client.close()
        finally:
            server.stop()
    assert logs[0] == logs[1]


def test_a_lane_xadd_fails_a_watching_transaction_and_wakes_a_blocked_reader(
        tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    try:
        client = redis.Redis(port=server.port)
        other = redis.Redis(port=server.port)
        client.xadd("s", {"f": "first"})  # exists: the next XADDs take the lane
        with client.pipeline(transaction=True) as pipe:
            pipe.watch("s")
            pipe.multi()
            pipe.set("result", "ran")
            other.xadd("s", {"f": "v"})
            with pytest.raises(redis.WatchError):
                pipe.execute()
        assert client.get("result") is None
        writes_before = server.server.streams.writes_count
        reader = redis.Redis(port=server.port)
        last = reader.xinfo_stream("s")["last-generated-id"]
        got: list[object] = []
        thread = threading.Thread(target=lambda: got.append(
            reader.xread({"s": last}, block=10_000)))
        thread.start()
        time.sleep(0.2)
        added = other.xadd("s", {"f": "wake"})
        thread.join(5)
        assert not thread.is_alive()
        assert got == [[[b"s", [(added, {b"f": b"wake"})]]]]
        assert server.server.streams.writes_count == writes_before + 1
        for connection in (client, other, reader):
            connection.close()
    finally:
        server.stop()


@pytest.mark.timeout(300 if not LONG else 24 * 3600)
def test_mutated_frames_are_taken_only_when_the_reference_reader_reads_that_xadd(
        stores: tuple[StreamStore, StreamStore]) -> None:
    """Seeded mutations of XADD frames (bytes set, inserted, dropped, cut; 20,000 in CI): the
    C path takes a frame only if the reference reader (pure Python) reads exactly one command
    from it, an XADD with `*` and field-value pairs on an existing stream, and then records
    what add_now records; it never crashes or reads out of bounds."""
    inputs = scaled(20_000, 100_000_000, "FASTERLOG_LANE_INPUTS")
    c_store, py_store = stores
    for store in stores:
        store.create(b"s")
        store.create(b"t")
        store.flush()
        for stream in store.streams.values():
            stream.last_id = (1 << 42, 0)  # ids from it, not from the clock: comparable
    generator = random.Random(20261122)
    seeds = [frame(b"XADD", b"s", b"*", b"f", b"v"),
             frame(b"xadd", b"t", b"*", b"a", b"1", b"b", b"22"),
             frame(b"XADD", b"s", b"*", *[b"x%d" % i for i in range(64)]),
             frame(b"XADD", b"s", b"*", b"f", b"v" * 300)]
    taken_count = 0
    started = time.perf_counter()
    for _ in range(inputs):
        mutated = bytearray(generator.choice(seeds))
        for _ in range(generator.randint(1, 3)):
            position = generator.randrange(len(mutated) + 1)
            action = generator.randrange(4)
            if action == 0 and position < len(mutated):
                mutated[position] = generator.choice(b"*$\r\n0123456789xXaAdD-+ ")
            elif action == 1:
                mutated.insert(position, generator.randrange(256))
            elif action == 2 and position < len(mutated):
                del mutated[position]
            else:
                del mutated[position:]
        data = bytes(mutated)
        taken = c_store.add_lone(data, BULK_SIZE_MAX_BYTES, ARGUMENTS_COUNT_MAX)
        if taken is None:
            continue
        taken_count += 1
        reader = RespReader(accelerated=False)
        reader.feed(data)
        commands = reader.next_commands(2)
        assert len(commands) == 1 and not reader.buffered_size_bytes, data
        command = commands[0]
        assert command[0].upper() == b"XADD" and command[2] == b"*" and \
            len(command) % 2 == 1 and len(command) >= 5, data
        py_store.add_now(command[1], py_store.streams[command[1]], command[3:])
        assert state(c_store) == state(py_store), data
        for store in stores:  # back to the same small state: each input compared alone
            store._pending.clear()
            store._pending_streams.clear()
            for stream in store.streams.values():
                stream.ids.clear()
                stream.addresses.clear()
                stream.last_id = (1 << 42, 0)
    seconds = time.perf_counter() - started
    assert taken_count > inputs // 100  # some mutations keep a frame valid (a value's byte...)
    record("fuzz_xadd_lane",
           f"{inputs} mutated XADD frames in {seconds:.0f} s: {taken_count} taken by the C "
           "path, each one exactly the reference reader's XADD and add_now's record; "
           "crashes 0, mismatches 0",
           {"inputs": inputs, "taken": taken_count, "seconds": round(seconds, 1),
            "crashes": 0, "mismatches": 0},
           "python3 -m pytest -s tests/fasterlog_server/test_service_xadd_lane.py -k mutated")
