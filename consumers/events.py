"""Event sourcing on the log: streams of msgpack events with optimistic concurrency.

An event is one log entry, a msgpack map:

    {"kind": "event", "type": str, "stream": str, "version": int, "timestamp": float,
     "data": any msgpack value, "metadata": map, "id": str, "batch": [index, count],
     "previous_batch": int | None}

`version` counts a stream's events from 0. The events one append_event() call adds to a stream
form a batch, written with one append_many (all or none survive a crash); "batch" says where
each event sits in it, and "previous_batch" is the address of the first event of the stream's
batch before it, so one stream is read by walking those links back from its newest batch
rather than by scanning the log. Entries that are not such maps (other users of the log) are
ignored.

Rules:
1. append_event holds the store's lock (one per log and process) across: catching up the
   index, checking `expected_version`, append_many, commit, catching up again. So the check
   and the append are atomic; a ConflictError appends nothing.
2. expected_version is an int (the version of the stream's last event), or ANY (no check),
   NO_STREAM (the stream has no event yet) or STREAM_EXISTS (it has at least one), as in
   KurrentDB.
3. Idempotency: an event id already in the log is not appended again. A batch whose ids were
   all appended before returns the original result (deduplicated=True) whatever
   expected_version says, so retrying after a lost reply is safe; a batch mixing old and new
   ids is a ConflictError. The store remembers the last `recent_event_ids_count_max` ids
   (default 50,000; about 370 bytes each, so about 18 MB): an id older than that window is
   appended again.
4. The index (per stream: last version and newest batch's address; and the recent ids) is a
   Projection run by a ProjectionRunner named `name` (default "event-store") and checkpointed
   every `checkpoint_every_entries` entries, so opening a store loads the newest checkpoint and
   replays only the suffix (rule 3 of consumers.projection). Memory: the recent-id window
   plus about 220 bytes per stream (measured with 16-character ids), so 1 million streams take
   about 220 MB; a stream's events themselves are never held, only read on demand.
5. Only committed events are read. The store appends and checkpoints, so it needs the writer's
   log; on a read-only log (a follower) read_stream and read_all work and appends raise
   ReadOnlyError.
"""

from __future__ import annotations

import enum
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import msgpack

from consumers.errors import ConsumerError
from consumers.projection import Projection, ProjectionRunner
from fasterlog import FasterLog

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = [
    "ANY", "NO_STREAM", "STREAM_EXISTS", "AppendResult", "ConflictError", "Event",
    "EventStore", "EventStoreError", "NewEvent", "StreamState", "decode_event",
]

recent_event_ids_count_max_default = 50_000
checkpoint_every_entries_default = 10_000
stream_id_size_max_bytes = 1024
event_type_size_max_bytes = 1024
batch_events_count_max = 4096
_EVENT_KEYS = frozenset({"type", "stream", "version", "timestamp", "data", "metadata", "id",
                         "batch", "previous_batch"})
# Reading one batch scans forward from its first event; this many non-matching entries between
# its events means the links are wrong (the store never interleaves its batches).
batch_gap_entries_max = 65_536


class StreamState(enum.Enum):
    """Expected-version constants for append_event (KurrentDB's names)."""

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"


ANY = StreamState.ANY
NO_STREAM = StreamState.NO_STREAM
STREAM_EXISTS = StreamState.STREAM_EXISTS


class EventStoreError(ConsumerError):
    """An event store operation failed (the links between a stream's batches are broken, or
    a second store was opened on one log)."""


class ConflictError(EventStoreError):
    """The stream's current version is not the expected one (or a batch reuses some event ids
    already appended); nothing was appended. `actual_version` is None for a stream with no
    events."""

    def __init__(self, message: str, stream_id: str, expected_version: int | StreamState,
                 actual_version: int | None) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


@dataclass(frozen=True)
class NewEvent:
    """An event to append. The id is made when the NewEvent is, so appending the same NewEvent
    again (a retry) is deduplicated."""

    type: str
    data: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class Event:
    """A recorded event, as read back from the log."""

    type: str
    stream_id: str
    version: int
    timestamp: float  # seconds since the Unix epoch, when it was appended
    data: Any
    metadata: dict[str, Any]
    event_id: str
    address: int      # of its log entry


class AppendResult(NamedTuple):
    stream_id: str
    first_version: int
    last_version: int        # the expected_version for the stream's next append
    addresses: list[int]
    deduplicated: bool       # True: every event id was appended before; nothing was added


def decode_event(address: int, entry: bytes) -> Event | None:
    """The event in a log entry, or None when the entry is not one."""
    fields = _decode_fields(entry)
    if fields is None:
        return None
    return Event(fields["type"], fields["stream"], fields["version"], fields["timestamp"],
                 fields["data"], fields["metadata"], fields["id"], address)


def _decode_fields(entry: bytes) -> dict[str, Any] | None:
    # A msgpack map starts with 0x80-0x8f, 0xde or 0xdf; anything else is not an event.
    if not entry or not (0x80 <= entry[0] <= 0x8F or entry[0] in (0xDE, 0xDF)):
        return None
    try:
        fields = msgpack.unpackb(entry, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 (undecodable: some other user's entry)
        return None
    if not isinstance(fields, dict) or fields.get("kind") != "event":
        return None
    if not _EVENT_KEYS <= fields.keys():
        return None
    return fields


# ---------------------------------------------------------------------- the index


class _Index:
    """Per stream: (last version, address of the newest batch's first event); recent ids."""

    def __init__(self, recent_ids_count_max: int) -> None:
        self.streams: dict[str, tuple[int, int]] = {}
        # event id -> (stream, version, address), oldest first, at most recent_ids_count_max.
        self.recent_ids: OrderedDict[str, tuple[str, int, int]] = OrderedDict()
        self.recent_ids_count_max = recent_ids_count_max


class _IndexProjection(Projection[_Index]):
    def __init__(self, recent_ids_count_max: int) -> None:
        self._recent_ids_count_max = recent_ids_count_max

    def initial_state(self) -> _Index:
        return _Index(self._recent_ids_count_max)

    def apply(self, state: _Index, address: int, entry: bytes) -> _Index:
        fields = _decode_fields(entry)
        if fields is None:
            return state
        stream, version = fields["stream"], fields["version"]
        batch_index = fields["batch"][0]
        if batch_index == 0 or stream not in state.streams:
            state.streams[stream] = (version, address)
        else:
            state.streams[stream] = (version, state.streams[stream][1])
        recent = state.recent_ids
        recent[fields["id"]] = (stream, version, address)
        while len(recent) > state.recent_ids_count_max:
            recent.popitem(last=False)
        return state

    def snapshot(self, state: _Index) -> bytes:
        return msgpack.packb({
            "streams": {s: list(v) for s, v in state.streams.items()},
            "recent_ids": [[i, *v] for i, v in state.recent_ids.items()]})

    def restore(self, data: bytes) -> _Index:
        fields = msgpack.unpackb(data, raw=False)
        state = _Index(self._recent_ids_count_max)
        state.streams = {s: (int(v), int(a)) for s, (v, a) in fields["streams"].items()}
        recent = fields["recent_ids"][-self._recent_ids_count_max:]
        for event_id, stream, version, address in recent:
            state.recent_ids[event_id] = (stream, int(version), int(address))
        return state


# ---------------------------------------------------------------------- the store

# One store per log object: two would each check versions under their own lock.
_open_stores: weakref.WeakValueDictionary[int, EventStore] = weakref.WeakValueDictionary()
_open_stores_lock = threading.Lock()


class EventStore:
    """Streams of events on a log; see the module's rules."""

    def __init__(self, log: FasterLog, *, name: str = "event-store",
                 checkpoint_every_entries: int = checkpoint_every_entries_default,
                 recent_event_ids_count_max: int = recent_event_ids_count_max_default,
                 checkpoint_directory: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if (not isinstance(recent_event_ids_count_max, int)
                or isinstance(recent_event_ids_count_max, bool) or recent_event_ids_count_max < 1):
            raise ValueError(f"EventStore failed: recent_event_ids_count_max must be a positive "
                             f"integer, not {recent_event_ids_count_max!r}")
        self._log = log
        self._clock = clock
        self._lock = threading.RLock()
        self._runner = ProjectionRunner(log, _IndexProjection(recent_event_ids_count_max), name,
                                        checkpoint_every_entries=checkpoint_every_entries,
                                        checkpoint_directory=checkpoint_directory)
        with _open_stores_lock:
            if id(log) in _open_stores:
                raise EventStoreError("EventStore failed: this log already has an open "
                                      "EventStore; share that one (or close it first)")
            _open_stores[id(log)] = self
        self._closed = False
        try:
            with self._lock:
                self._runner.catch_up()
        except BaseException:
            self._unregister()
            raise

    @property
    def log(self) -> FasterLog:
        return self._log

    @property
    def runner(self) -> ProjectionRunner[_Index]:
        """The index's projection runner (its recovered_from says where the index came from)."""
        return self._runner

    @property
    def streams_count(self) -> int:
        return len(self._runner.state.streams)

    def close(self) -> None:
        """Checkpoints the index (so the next open replays little) and releases the log."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                if not self._log.closed and self._runner.writable:
                    self._runner.catch_up()
                    self._runner.checkpoint()
        finally:
            self._unregister()

    def _unregister(self) -> None:
        with _open_stores_lock:
            if _open_stores.get(id(self._log)) is self:
                del _open_stores[id(self._log)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ appends

    def append_event(self, stream_id: str, events: NewEvent | Iterable[NewEvent],
                     expected_version: int | StreamState = ANY) -> AppendResult:
        """Appends events to a stream, durably (it commits), if the stream is at
        `expected_version`; raises ConflictError otherwise (rules 1 to 3)."""
        batch = self._check_append(stream_id, events, expected_version)
        with self._lock:
            self._runner.catch_up()
            index = self._runner.state
            repeated = self._repeated(stream_id, batch, expected_version, index)
            if repeated is not None:
                return repeated
            last = index.streams.get(stream_id)
            current = None if last is None else last[0]
            self._check_expected(stream_id, expected_version, current)
            first_version = 0 if current is None else current + 1
            entries = self._encode(stream_id, batch, first_version,
                                   None if last is None else last[1])
            addresses = self._log.append_many(entries)
            self._log.commit()
            self._runner.catch_up()
            assert self._runner.state.streams[stream_id][0] == first_version + len(batch) - 1
        return AppendResult(stream_id, first_version, first_version + len(batch) - 1,
                            addresses, False)

    def _encode(self, stream_id: str, batch: Sequence[NewEvent], first_version: int,
                previous_batch: int | None) -> list[bytes]:
        timestamp = float(self._clock())
        try:
            return [msgpack.packb({
                "kind": "event", "type": event.type, "stream": stream_id,
                "version": first_version + i, "timestamp": timestamp, "data": event.data,
                "metadata": event.metadata, "id": event.event_id, "batch": [i, len(batch)],
                "previous_batch": previous_batch}, use_bin_type=True)
                for i, event in enumerate(batch)]
        except (TypeError, ValueError, OverflowError) as error:
            raise TypeError(f"append_event failed: an event's data or metadata cannot be "
                            f"encoded with msgpack ({error})") from error

    def _check_append(self, stream_id: object, events: NewEvent | Iterable[NewEvent],
                      expected_version: object) -> list[NewEvent]:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"append_event failed: a stream id must be a non-empty str, not "
                             f"{stream_id!r}")
        if len(stream_id.encode()) > stream_id_size_max_bytes:
            raise ValueError(f"append_event failed: stream id longer than "
                             f"{stream_id_size_max_bytes} bytes")
        if not isinstance(expected_version, StreamState) and (
                not isinstance(expected_version, int) or isinstance(expected_version, bool)
                or expected_version < 0):
            raise ValueError(f"append_event failed: expected_version must be a version (an int "
                             f">= 0), ANY, NO_STREAM or STREAM_EXISTS, not {expected_version!r}")
        batch = [events] if isinstance(events, NewEvent) else list(events)
        if not 1 <= len(batch) <= batch_events_count_max:
            raise ValueError(f"append_event failed: append 1 to {batch_events_count_max} "
                             f"events at a time, not {len(batch)}")
        for event in batch:
            if not isinstance(event, NewEvent):
                raise TypeError(f"append_event failed: events must be NewEvent, not "
                                f"{type(event).__name__}")
            if not isinstance(event.type, str) or not event.type or len(
                    event.type.encode()) > event_type_size_max_bytes:
                raise ValueError(f"append_event failed: bad event type {event.type!r}")
            if not isinstance(event.event_id, str) or not event.event_id:
                raise ValueError(f"append_event failed: bad event id {event.event_id!r}")
            if not isinstance(event.metadata, dict):
                raise TypeError("append_event failed: metadata must be a dict")
        if len({event.event_id for event in batch}) != len(batch):
            raise ValueError("append_event failed: two events of the batch have the same id")
        return batch

    def _repeated(self, stream_id: str, batch: Sequence[NewEvent],
                  expected_version: int | StreamState, index: _Index) -> AppendResult | None:
        """The original result when every id was appended before (rule 3), else None."""
        seen = [index.recent_ids.get(event.event_id) for event in batch]
        if not any(seen):
            return None
        last = index.streams.get(stream_id)
        actual = None if last is None else last[0]
        if not all(seen) or any(s is not None and s[0] != stream_id for s in seen):
            raise ConflictError(f"append_event failed: some event ids of the batch were already "
                                f"appended (to stream {stream_id!r} or another), others not",
                                stream_id, expected_version, actual)
        versions = [s[1] for s in seen if s is not None]
        addresses = [s[2] for s in seen if s is not None]
        return AppendResult(stream_id, versions[0], versions[-1], addresses, True)

    @staticmethod
    def _check_expected(stream_id: str, expected: int | StreamState,
                        current: int | None) -> None:
        if expected is ANY:
            return
        if expected is NO_STREAM:
            ok, wanted = current is None, "to have no events"
        elif expected is STREAM_EXISTS:
            ok, wanted = current is not None, "to exist"
        else:
            ok, wanted = current == expected, f"at version {expected}"
        if not ok:
            now = "has no events" if current is None else f"is at version {current}"
            raise ConflictError(f"append_event failed: stream {stream_id!r} {now}, expected "
                                f"{wanted}", stream_id, expected, current)

    # ------------------------------------------------------------------ reads

    def stream_version(self, stream_id: str) -> int | None:
        """The version of the stream's last committed event, None if it has none."""
        with self._lock:
            self._runner.catch_up()
            last = self._runner.state.streams.get(stream_id)
        return None if last is None else last[0]

    def read_stream(self, stream_id: str, from_version: int = 0,
                    max_count: int | None = None) -> list[Event]:
        """The stream's committed events with version >= from_version, in order (an empty
        list for a stream with no events)."""
        if not isinstance(from_version, int) or from_version < 0:
            raise ValueError(f"read_stream failed: from_version must be an int >= 0, not "
                             f"{from_version!r}")
        with self._lock:
            self._runner.catch_up()
            last = self._runner.state.streams.get(stream_id)
        if last is None or last[0] < from_version:
            return []
        batches: list[list[Event]] = []
        address: int | None = last[1]
        while address is not None:
            events, address = self._read_batch(stream_id, address)
            batches.append(events)
            if events[0].version <= from_version:
                break
        found = [e for batch in reversed(batches) for e in batch if e.version >= from_version]
        return found if max_count is None else found[:max_count]

    def _read_batch(self, stream_id: str, address: int) -> tuple[list[Event], int | None]:
        """The batch whose first event is at `address`, and the address of the one before."""
        events: list[Event] = []
        count = previous = None
        skipped = 0
        for entry_address, entry in self._log.scan(address):
            fields = _decode_fields(entry)
            if fields is None or fields["stream"] != stream_id or fields["batch"][0] != len(
                    events):
                skipped += 1
                if not events or skipped > batch_gap_entries_max:
                    break
                continue
            if not events:
                count, previous = fields["batch"][1], fields["previous_batch"]
            events.append(decode_event(entry_address, entry))  # type: ignore[arg-type]
            if len(events) == count:
                return events, previous
        raise EventStoreError(f"read_stream failed: the batch of stream {stream_id!r} at "
                              f"address {address} is not where the index says (found "
                              f"{len(events)} of its events)")

    def read_all(self, from_address: int | None = None) -> Iterator[Event]:
        """Every committed event of every stream, in log order."""
        for address, entry in self._log.scan(from_address):
            event = decode_event(address, entry)
            if event is not None:
                yield event
