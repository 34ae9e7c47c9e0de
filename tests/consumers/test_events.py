"""Event sourcing on the log (consumers.events).

Goal: append_event checks a stream's expected version atomically with the append (a conflict
appends nothing, and of racing writers with one expected version exactly one wins), streams
read back in order, an event id is appended once even across restarts and crashes, and the
stream index comes back from a checkpoint plus a replay of the suffix.

Method: real logs, reopened (cleanly, or after fasterlog.testing.simulate_crash, which drops
the log as kill -9 would) to model restarts; threads for the race.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest

from consumers.errors import ConsumerError
from consumers.events import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConflictError,
    Event,
    EventStore,
    EventStoreError,
    NewEvent,
    decode_event,
)
from fasterlog import FasterLog, errors
from fasterlog.testing import simulate_crash
from tests.support.settings import SMALL_SETTINGS

pytestmark = pytest.mark.timeout(60)


def deposits(*amounts: int) -> list[NewEvent]:
    return [NewEvent("Deposited", {"amount": a}) for a in amounts]


@pytest.fixture
def store(small_log: FasterLog) -> Any:
    with EventStore(small_log, checkpoint_every_entries=20) as event_store:
        yield event_store


# --- expected versions ----------------------------------------------------------------------


def test_versions_count_from_zero_and_the_result_gives_the_next_expected_version(
        store: EventStore) -> None:
    first = store.append_event("account-1", deposits(10), expected_version=NO_STREAM)
    assert (first.first_version, first.last_version, first.deduplicated) == (0, 0, False)
    second = store.append_event("account-1", deposits(5, 7), expected_version=0)
    assert (second.first_version, second.last_version) == (1, 2)
    assert store.stream_version("account-1") == 2
    assert store.stream_version("account-2") is None


@pytest.mark.parametrize("expected, current_events", [
    (NO_STREAM, 1),
    (STREAM_EXISTS, 0),
    (0, 0),
    (0, 2),
    (5, 2),
])
def test_a_wrong_expected_version_raises_conflict_and_appends_nothing(
        store: EventStore, expected: Any, current_events: int) -> None:
    if current_events:
        store.append_event("s", deposits(*range(current_events)))
    tail = store.log.tail_address
    with pytest.raises(ConflictError) as caught:
        store.append_event("s", deposits(1), expected_version=expected)
    error = caught.value
    assert isinstance(error, ConsumerError) and isinstance(error, errors.FasterLogError)
    assert error.stream_id == "s" and error.expected_version == expected
    assert error.actual_version == (current_events - 1 if current_events else None)
    assert str(error).startswith("append_event failed: stream 's'")
    assert store.log.tail_address == tail
    assert len(store.read_stream("s")) == current_events


@pytest.mark.parametrize("expected, current_events", [
    (ANY, 0), (ANY, 3), (NO_STREAM, 0), (STREAM_EXISTS, 1), (0, 1), (2, 3),
])
def test_a_matching_expected_version_appends(store: EventStore, expected: Any,
                                             current_events: int) -> None:
    if current_events:
        store.append_event("s", deposits(*range(current_events)))
    result = store.append_event("s", deposits(99), expected_version=expected)
    assert result.last_version == current_events
    assert store.read_stream("s")[-1].data == {"amount": 99}


@pytest.mark.parametrize("bad", [-1, -2, True, "0", 1.0, None])
def test_an_expected_version_that_is_not_a_version_is_refused(store: EventStore,
                                                              bad: Any) -> None:
    with pytest.raises(ValueError, match="expected_version"):
        store.append_event("s", deposits(1), expected_version=bad)


def test_racing_writers_with_one_expected_version_have_exactly_one_winner(
        store: EventStore) -> None:
    store.append_event("race", deposits(0), expected_version=NO_STREAM)
    rounds_count, writers_count = 20, 6
    outcomes: list[tuple[int, bool]] = []  # (expected version, won)
    barrier = threading.Barrier(writers_count)

    def writer(writer_index: int) -> None:
        for _ in range(rounds_count):
            barrier.wait()
            version = store.stream_version("race")
            assert version is not None
            try:
                store.append_event("race", [NewEvent("Raced", {"writer": writer_index})],
                                   expected_version=version)
                outcomes.append((version, True))
            except ConflictError as error:
                assert error.actual_version is not None and error.actual_version > version
                outcomes.append((version, False))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = store.read_stream("race")
    assert [e.version for e in events] == list(range(len(events)))
    winners = [version for version, won in outcomes if won]
    assert len(winners) == len(set(winners)), "two writers won with one expected version"
    assert len(events) == 1 + len(winners)
    assert any(not won for _, won in outcomes), "the writers never raced"


# --- reads ----------------------------------------------------------------------------------


def test_read_stream_returns_one_streams_events_in_order_among_others(store: EventStore) -> None:
    for i in range(30):
        store.append_event(f"s{i % 3}", deposits(*range(i % 4 + 1)))
    store.log.append(b"not an event")
    store.log.append(msgpack.packb({"kind": "event", "but": "missing fields"}))
    store.log.commit()
    for stream in ("s0", "s1", "s2"):
        events = store.read_stream(stream)
        assert [e.version for e in events] == list(range(len(events)))
        assert all(isinstance(e, Event) and e.stream_id == stream for e in events)
        assert [e.address for e in events] == sorted(e.address for e in events)
    s1 = store.read_stream("s1")
    assert store.read_stream("s1", from_version=7) == s1[7:]
    assert store.read_stream("s1", from_version=3, max_count=4) == s1[3:7]
    assert store.read_stream("s1", from_version=len(s1)) == []
    assert store.read_stream("nobody") == []
    assert sum(1 for _ in store.read_all()) == sum(len(store.read_stream(f"s{i}"))
                                                   for i in range(3))


def test_a_recorded_event_carries_every_field(small_log: FasterLog) -> None:
    with EventStore(small_log, clock=lambda: 1700000000.5) as store:
        new = NewEvent("Opened", {"owner": "ada"}, {"correlation": "c-1"})
        result = store.append_event("account-9", new, expected_version=NO_STREAM)
        [event] = store.read_stream("account-9")
    assert event == Event("Opened", "account-9", 0, 1700000000.5, {"owner": "ada"},
                          {"correlation": "c-1"}, new.event_id, result.addresses[0])
    assert decode_event(event.address, small_log.read(event.address)) == event
    assert decode_event(64, b"\x93\x01\x02\x03") is None


def test_bad_appends_are_refused(store: EventStore) -> None:
    with pytest.raises(ValueError, match="stream id"):
        store.append_event("", deposits(1))
    with pytest.raises(ValueError, match="1 to"):
        store.append_event("s", [])
    with pytest.raises(TypeError, match="NewEvent"):
        store.append_event("s", [{"type": "x"}])  # type: ignore[list-item]
    same = NewEvent("Twice")
    with pytest.raises(ValueError, match="same id"):
        store.append_event("s", [same, same])
    with pytest.raises(ValueError, match="event type"):
        store.append_event("s", NewEvent(""))
    with pytest.raises(TypeError, match="cannot be encoded with msgpack"):
        store.append_event("s", NewEvent("Odd", {"a set": {1, 2}}))
    assert store.stream_version("s") is None


def test_a_second_store_on_one_log_is_refused(store: EventStore) -> None:
    with pytest.raises(EventStoreError, match="already has an open EventStore"):
        EventStore(store.log)


# --- idempotency ----------------------------------------------------------------------------


def test_appending_the_same_event_ids_again_is_a_no_op_that_returns_the_first_result(
        store: EventStore) -> None:
    batch = deposits(1, 2)
    first = store.append_event("s", batch, expected_version=NO_STREAM)
    tail = store.log.tail_address
    again = store.append_event("s", batch, expected_version=NO_STREAM)
    assert again == first._replace(deduplicated=True)
    assert store.log.tail_address == tail
    assert len(store.read_stream("s")) == 2


def test_a_batch_mixing_old_and_new_event_ids_is_a_conflict(store: EventStore) -> None:
    old = NewEvent("Old")
    store.append_event("s", old)
    with pytest.raises(ConflictError, match="already appended"):
        store.append_event("s", [old, NewEvent("New")])
    with pytest.raises(ConflictError, match="already appended"):
        store.append_event("other", old)
    assert len(store.read_stream("s")) == 1


@pytest.mark.parametrize("crash", [False, True])
def test_idempotency_survives_a_restart(log_dir: Path, crash: bool) -> None:
    remembered = [NewEvent("E", i) for i in range(25)]
    log = FasterLog.open(log_dir, **SMALL_SETTINGS)
    store = EventStore(log, checkpoint_every_entries=10)
    for event in remembered:
        store.append_event("s", event)
    if crash:
        simulate_crash(log)  # no final checkpoint: the index is the last one plus a replay
    else:
        store.close()
        log.close()
    del store
    with FasterLog.open(log_dir) as log, EventStore(log, checkpoint_every_entries=10) as store:
        assert store.runner.recovered_from is not None
        tail = log.tail_address
        for event in remembered:
            assert store.append_event("s", event).deduplicated
        assert log.tail_address == tail
        assert [e.data for e in store.read_stream("s")] == list(range(25))


def test_the_recent_id_window_is_bounded(small_log: FasterLog) -> None:
    with EventStore(small_log, recent_event_ids_count_max=3) as store:
        events = [NewEvent("E", i) for i in range(5)]
        for event in events:
            store.append_event("s", event)
        assert len(store.runner.state.recent_ids) == 3
        assert store.append_event("s", events[4]).deduplicated
        assert not store.append_event("s", events[0]).deduplicated  # fell out of the window
        assert len(store.read_stream("s")) == 6


# --- the index across restarts --------------------------------------------------------------


def test_the_index_is_rebuilt_from_a_checkpoint_and_the_suffix(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        store = EventStore(log, checkpoint_every_entries=15)
        for i in range(40):
            store.append_event(f"s{i % 4}", deposits(i))
        expected = {f"s{i}": store.read_stream(f"s{i}") for i in range(4)}
        simulate_crash(log)
        del store
    with FasterLog.open(log_dir) as log, EventStore(log, checkpoint_every_entries=15) as store:
        checkpoint = store.runner.recovered_from
        assert checkpoint is not None and checkpoint.position > 64
        assert {f"s{i}": store.read_stream(f"s{i}") for i in range(4)} == expected
        assert store.streams_count == 4
        assert store.append_event("s1", deposits(1), expected_version=9).last_version == 10


def test_the_index_equals_a_full_rebuild_when_every_checkpoint_is_lost(log_dir: Path) -> None:
    with (FasterLog.open(log_dir, **SMALL_SETTINGS) as log,
          EventStore(log, checkpoint_every_entries=5) as store):
        for i in range(20):
            store.append_event(f"s{i % 3}", deposits(i))
    for snapshot in (log_dir / "checkpoints").glob("*.snap"):
        snapshot.unlink()
    with FasterLog.open(log_dir) as log, EventStore(log) as store:
        assert store.runner.recovered_from is None
        assert [store.stream_version(f"s{i}") for i in range(3)] == [6, 6, 5]


def test_a_follower_reads_streams_and_cannot_append(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log, EventStore(log) as store:
        store.append_event("s", deposits(1, 2, 3))
        with FasterLog.open(log_dir, readonly=True) as follower:
            reader = EventStore(follower)
            assert [e.data["amount"] for e in reader.read_stream("s")] == [1, 2, 3]
            store.append_event("s", deposits(4))
            assert reader.stream_version("s") == 3
            with pytest.raises(errors.ReadOnlyError):
                reader.append_event("s", deposits(5))
            reader.close()
