"""Consumer groups of Redis Streams, kept as records in the same log as the streams.

The log is the truth: every change to a group is one msgpack record appended through
`StreamStore.write` and applied by the same replay that rebuilds the streams, so a restart
recovers groups, last-delivered ids, entries-read counters, pending entries lists (PELs),
owners, delivery times and delivery counts exactly. Times are milliseconds since the epoch from
time.time(), written into the records so replay reproduces idle times instead of resetting them.

Records (ids are [ms, seq]; entries_read -1 means "not known", Redis's invalid counter):
    [b"xgcreate", stream, group, ms, seq, entries_read]          XGROUP CREATE
    [b"xgsetid", stream, group, ms, seq, entries_read]           XGROUP SETID (and XCLAIM LASTID)
    [b"xgdestroy", stream, group]                                XGROUP DESTROY
    [b"xgconsumer", stream, group, consumer, time_ms]            a consumer created
    [b"xgdelconsumer", stream, group, consumer]                  a consumer and its PEL deleted
    [b"xgdeliver", stream, group, consumer, time_ms, ms, seq, entries_read, [id, ...], noack]
        XREADGROUP `>`: the group's last-delivered id becomes ms-seq; each id is delivered to
        the consumer (count 1, at time_ms) and enters the PEL unless noack
    [b"xgredeliver", stream, group, consumer, time_ms, [id, ...]]
        XREADGROUP with an explicit id: each id's delivery time set and its count raised by 1
    [b"xgack", stream, group, [id, ...]]                         XACK: ids leave the PEL
    [b"xgclaim", stream, group, consumer, time_ms, [[ms, seq, delivery_time_ms, count], ...],
     [id, ...]]
        XCLAIM, XAUTOCLAIM: each listed id becomes pending for the consumer with that delivery
        time and count; the ids of the last list had their entries deleted and leave the PEL
    [b"xgrestate", stream, group, ms, seq, entries_read]
    [b"xgrestateconsumer", stream, group, consumer, seen_time_ms, active_time_ms]
    [b"xgrestatepending", stream, group, consumer, [[ms, seq, delivery_time_ms, count], ...]]
        LOG.TRUNCATE's restatement of a group, a consumer, some pending entries (several
        records per consumer when its PEL is large, each adds): each asserts what is true at
        its place in the log. Unlike xgcreate they replace nothing, so a restatement cut by a
        crash, replayed over the full history, changes nothing; after a truncation the group
        absent below is made by its xgrestate (maintenance.py rule 7).
A record naming a stream or group that no longer exists is ignored (a DEL came first).

Invariants: each id in `Group.pending` is in exactly one consumer's `pending` set, that of
`PendingEntry.consumer`, and `Group.pending_ids` is `Group.pending`'s keys, sorted.
Seen times of reads that deliver nothing are kept in memory only (a record per empty poll
would grow the log without bound); everything else survives a restart.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .streams import SEQ_MAX, Stream, StreamError, StreamId, StreamStore

INVALID_ENTRIES_READ = -1
RECORD_KINDS = (b"xgcreate", b"xgsetid", b"xgdestroy", b"xgconsumer", b"xgdelconsumer",
                b"xgdeliver", b"xgredeliver", b"xgack", b"xgclaim", b"xgrestate",
                b"xgrestateconsumer", b"xgrestatepending")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PendingEntry:
    consumer: bytes
    delivery_time_ms: int
    delivery_count: int


@dataclass
class Consumer:
    name: bytes
    seen_time_ms: int
    active_time_ms: int = -1  # -1: never delivered anything
    pending: set[StreamId] = field(default_factory=set)


@dataclass
class Group:
    name: bytes
    last_id: StreamId
    entries_read: int
    consumers: dict[bytes, Consumer] = field(default_factory=dict)
    pending: dict[StreamId, PendingEntry] = field(default_factory=dict)
    pending_ids: list[StreamId] = field(default_factory=list)

    def set_pending(self, stream_id: StreamId, entry: PendingEntry) -> None:
        old = self.pending.get(stream_id)
        if old is None:
            bisect.insort(self.pending_ids, stream_id)
        else:
            self.consumers[old.consumer].pending.discard(stream_id)
        self.pending[stream_id] = entry
        self.consumers[entry.consumer].pending.add(stream_id)

    def remove_pending(self, stream_id: StreamId) -> bool:
        entry = self.pending.pop(stream_id, None)
        if entry is None:
            return False
        del self.pending_ids[bisect.bisect_left(self.pending_ids, stream_id)]
        self.consumers[entry.consumer].pending.discard(stream_id)
        return True

    def pending_between(self, start: StreamId, end: StreamId) -> list[StreamId]:
        low = bisect.bisect_left(self.pending_ids, start)
        high = bisect.bisect_right(self.pending_ids, end)
        return self.pending_ids[low:high]


class _Steps:
    """What the current step of a restatement has spent, against its bound."""

    def __init__(self, items_max: int) -> None:
        assert items_max > 0, "a step must restate something"
        self.items_max = items_max
        self.left = items_max

    def spend(self, items_count: int) -> bool:
        """True when the step is over (the next one starts full)."""
        self.left -= items_count
        if self.left > 0:
            return False
        self.left = self.items_max
        return True


def _ids(items: list[Any]) -> list[StreamId]:
    return [(item[0], item[1]) for item in items]


# ---------------------------------------------------------------------- Redis 7 lag arithmetic


def _has_tombstones_after(stream: Stream, start: StreamId) -> bool:
    """Whether an XDEL removed an id at or after `start` (streamRangeHasTombstones)."""
    if not stream.ids or stream.max_deleted_id == (0, 0):
        return False
    return start <= stream.max_deleted_id


def estimate_entries_read(stream: Stream, stream_id: StreamId) -> int:
    """How many entries were ever added up to `stream_id`, when that can be known
    (streamEstimateDistanceFromFirstEverEntry); INVALID_ENTRIES_READ otherwise."""
    if not stream.entries_added:
        return 0
    if not stream.ids and stream_id <= stream.last_id:
        return stream.entries_added
    if stream_id == stream.last_id:
        return stream.entries_added
    if stream_id > stream.last_id:
        return INVALID_ENTRIES_READ
    if stream.max_deleted_id == (0, 0) or stream.max_deleted_id < stream.first_id:
        if stream_id < stream.first_id:
            return stream.entries_added - len(stream.ids)
        if stream_id == stream.first_id:
            return stream.entries_added - len(stream.ids) + 1
    return INVALID_ENTRIES_READ


def lag(stream: Stream, group: Group) -> int | None:
    """XINFO GROUPS's lag: entries not yet delivered to the group, or None when unknown."""
    if not stream.entries_added:
        return 0
    if group.entries_read != INVALID_ENTRIES_READ and \
            not _has_tombstones_after(stream, group.last_id):
        return stream.entries_added - group.entries_read
    entries_read = estimate_entries_read(stream, group.last_id)
    if entries_read == INVALID_ENTRIES_READ:
        return None
    return stream.entries_added - entries_read


class GroupStore:
    """The consumer groups of every stream in a StreamStore; groups live in `Stream.groups`.

    Methods that change state write one record and apply it; methods that only look return
    in-memory state. Not thread-safe: the server calls it from its event loop."""

    def __init__(self, streams: StreamStore) -> None:
        self.streams = streams
        for kind in RECORD_KINDS:
            streams.appliers[kind] = self._apply

    # ------------------------------------------------------------------ lookups

    def group(self, key: bytes, name: bytes) -> tuple[Stream, Group] | None:
        stream = self.streams.streams.get(key)
        if stream is None or name not in stream.groups:
            return None
        return stream, stream.groups[name]

    def require(self, key: bytes, name: bytes, suffix: str = "") -> tuple[Stream, Group]:
        found = self.group(key, name)
        if found is None:
            raise StreamError(f"NOGROUP No such key '{key.decode(errors='replace')}' or "
                              f"consumer group '{name.decode(errors='replace')}'{suffix}")
        return found

    def consumer(self, key: bytes, group: Group, name: bytes, time_ms: int) -> Consumer:
        """The named consumer, created (durably) if new; its seen time becomes `time_ms`."""
        if name not in group.consumers:
            self.streams.write([b"xgconsumer", key, group.name, name, time_ms])
        consumer = group.consumers[name]
        consumer.seen_time_ms = time_ms
        return consumer

    # ------------------------------------------------------------------ changes

    def create(self, key: bytes, name: bytes, last_id: StreamId, entries_read: int) -> None:
        self.streams.write([b"xgcreate", key, name, last_id[0], last_id[1], entries_read])

    def set_id(self, key: bytes, name: bytes, last_id: StreamId, entries_read: int) -> None:
        self.streams.write([b"xgsetid", key, name, last_id[0], last_id[1], entries_read])

    def destroy(self, key: bytes, name: bytes) -> None:
        self.streams.write([b"xgdestroy", key, name])

    def delete_consumer(self, key: bytes, name: bytes, consumer: bytes) -> None:
        self.streams.write([b"xgdelconsumer", key, name, consumer])

    def deliver_new(self, key: bytes, group: Group, consumer: bytes, ids: list[StreamId],
                    noack: bool, time_ms: int) -> None:
        """Moves the group's last-delivered id to ids[-1], counting entries read as Redis does."""
        stream = self.streams.streams[key]
        entries_read = group.entries_read
        for stream_id in ids:
            if entries_read != INVALID_ENTRIES_READ and \
                    not _has_tombstones_after(stream, stream_id):
                entries_read += 1
            elif stream.entries_added:
                entries_read = estimate_entries_read(stream, stream_id)
        self.streams.write([b"xgdeliver", key, group.name, consumer, time_ms, ids[-1][0],
                            ids[-1][1], entries_read, [list(i) for i in ids], noack])

    def redeliver(self, key: bytes, group: Group, consumer: bytes, ids: list[StreamId],
                  time_ms: int) -> None:
        self.streams.write([b"xgredeliver", key, group.name, consumer, time_ms,
                            [list(i) for i in ids]])

    def ack(self, key: bytes, group: Group, ids: list[StreamId]) -> int:
        present = [i for i in dict.fromkeys(ids) if i in group.pending]
        if present:
            self.streams.write([b"xgack", key, group.name, [list(i) for i in present]])
        return len(present)

    def claim(self, key: bytes, group: Group, consumer: bytes, time_ms: int,
              claimed: list[tuple[StreamId, int, int]], deleted: list[StreamId]) -> None:
        """`claimed`: (id, delivery time, delivery count) now owned by `consumer`."""
        if claimed or deleted:
            self.streams.write([b"xgclaim", key, group.name, consumer, time_ms,
                                [[i[0], i[1], t, n] for i, t, n in claimed],
                                [list(i) for i in deleted]])

    def restate_steps(self, step_items_max: int) -> Iterator[None]:
        """Restates every stream and group at the tail (maintenance.py rule 7), yielding after
        `step_items_max` streams, groups, consumers or pending entries: per stream an xmeta
        record, per group an xgrestate, one xgrestateconsumer per consumer, then its pending
        entries in xgrestatepending records that each fit entry_size_max. Between two steps
        anything may change: after each step the stream and group are looked up again, and
        one deleted or replaced meanwhile is left (its successor's records all follow)."""
        steps = _Steps(step_items_max)
        position: int | None = 0
        while position is not None:
            # Streams by SCAN's order, a page at a time (O(log streams + page)).
            position, page = self.streams.names.page(position, step_items_max)
            for key in page:
                stream = self.streams.streams.get(key)
                if stream is None:
                    continue
                self.streams.restate(key, stream)
                if steps.spend(1):
                    yield
                for name in list(stream.groups):  # a copy: groups come and go meanwhile
                    group = stream.groups.get(name)
                    if group is None or self.streams.streams.get(key) is not stream:
                        continue
                    for _ in self._restate_group(key, group, steps):
                        yield
                        if self.streams.streams.get(key) is not stream or \
                                stream.groups.get(name) is not group:
                            break  # deleted or replaced meanwhile: see above

    def _restate_group(self, key: bytes, group: Group, steps: _Steps) -> Iterator[None]:
        """One group's restatement records; yields where a step ends."""
        write = self.streams.write_restated
        name = group.name
        write([b"xgrestate", key, name, *group.last_id, group.entries_read])
        if steps.spend(1):
            yield
        for consumer_name in list(group.consumers):  # a copy: consumers come and go meanwhile
            consumer = group.consumers.get(consumer_name)
            if consumer is not None:
                write([b"xgrestateconsumer", key, name, consumer_name,
                       consumer.seen_time_ms, consumer.active_time_ms])
                if steps.spend(1):
                    yield
        # Pending entries in id order from a cursor (ids come and go between steps).
        items_per_record_max = self._pending_items_per_record_max(key, group)
        cursor: StreamId = (0, 0)
        while True:
            low = bisect.bisect_left(group.pending_ids, cursor)
            chunk = group.pending_ids[low:low + min(steps.left, items_per_record_max)]
            if not chunk:
                return
            by_consumer: dict[bytes, list[list[int]]] = {}
            for stream_id in chunk:
                entry = group.pending[stream_id]
                by_consumer.setdefault(entry.consumer, []).append(
                    [stream_id[0], stream_id[1], entry.delivery_time_ms, entry.delivery_count])
            for consumer_name, items in by_consumer.items():
                write([b"xgrestatepending", key, name, consumer_name, items])
            last_ms, last_seq = chunk[-1]
            cursor = (last_ms, last_seq + 1) if last_seq < SEQ_MAX else (last_ms + 1, 0)
            if steps.spend(len(chunk)):
                yield

    def _pending_items_per_record_max(self, key: bytes, group: Group) -> int:
        """How many pending entries one xgrestatepending record holds within entry_size_max:
        an entry is at most 4 uint64s of 9 bytes plus a list header (37 bytes); the names
        (the longest consumer's) and headers are the rest."""
        names_size_bytes = len(key) + len(group.name) + max(
            (len(name) for name in group.consumers), default=0)
        overhead_bytes = 64 + names_size_bytes + 16
        return max(1, (self.streams.log.entry_size_max - overhead_bytes) // 40)

    # ------------------------------------------------------------------ replay

    def _apply(self, address: int, record: list[Any]) -> None:
        kind, key, name = record[0], record[1], record[2]
        stream = self.streams.streams.get(key)
        if stream is None:
            return
        if kind == b"xgcreate":
            stream.groups[name] = Group(name, (record[3], record[4]), record[5])
            return
        group = stream.groups.get(name)
        if kind == b"xgrestate":
            if group is None:  # restated after a truncation: made; else already as restated
                stream.groups[name] = Group(name, (record[3], record[4]), record[5])
            else:
                group.last_id, group.entries_read = (record[3], record[4]), record[5]
            return
        if group is None:
            return
        if kind in (b"xgrestateconsumer", b"xgrestatepending"):
            self._apply_restated(kind, group, record)
            return
        if kind == b"xgsetid":
            group.last_id, group.entries_read = (record[3], record[4]), record[5]
        elif kind == b"xgdestroy":
            del stream.groups[name]
        elif kind == b"xgconsumer":
            group.consumers.setdefault(record[3], Consumer(record[3], record[4]))
        elif kind == b"xgdelconsumer":
            consumer = group.consumers.pop(record[3], None)
            for stream_id in consumer.pending if consumer else ():
                group.pending.pop(stream_id)
                del group.pending_ids[bisect.bisect_left(group.pending_ids, stream_id)]
        elif kind == b"xgack":
            for stream_id in _ids(record[3]):
                group.remove_pending(stream_id)
        else:
            self._apply_delivery(kind, group, record)

    def _apply_restated(self, kind: bytes, group: Group, record: list[Any]) -> None:
        """A consumer's times, or some of its pending entries, as they were at the record's
        place: set, never replacing anything else (rule 7 of maintenance.py)."""
        name = record[3]
        consumer = group.consumers.setdefault(name, Consumer(name, 0))
        if kind == b"xgrestateconsumer":
            consumer.seen_time_ms, consumer.active_time_ms = record[4], record[5]
            return
        for ms, seq, delivery_time_ms, count in record[4]:
            group.set_pending((ms, seq), PendingEntry(name, delivery_time_ms, count))

    def _apply_delivery(self, kind: bytes, group: Group, record: list[Any]) -> None:
        name, time_ms = record[3], record[4]
        consumer = group.consumers.setdefault(name, Consumer(name, time_ms))
        consumer.seen_time_ms = time_ms
        if kind == b"xgdeliver":
            group.last_id, group.entries_read = (record[5], record[6]), record[7]
            consumer.active_time_ms = time_ms
            if not record[9]:
                for stream_id in _ids(record[8]):
                    group.set_pending(stream_id, PendingEntry(name, time_ms, 1))
        elif kind == b"xgredeliver":
            consumer.active_time_ms = time_ms
            for stream_id in _ids(record[5]):
                entry = group.pending.get(stream_id)
                if entry is not None:
                    entry.delivery_time_ms = time_ms
                    entry.delivery_count += 1
        elif kind == b"xgclaim":
            if record[5]:
                consumer.active_time_ms = time_ms
            for ms, seq, delivery_time_ms, count in record[5]:
                group.set_pending((ms, seq), PendingEntry(name, delivery_time_ms, count))
            for stream_id in _ids(record[6]):
                group.remove_pending(stream_id)
