"""Redis Streams kept in a fasterlog log: the log is the truth, the index is rebuilt by replay.

Every change is one log entry, msgpack-encoded:
    [b"xadd", stream, ms, seq, [field, value, ...]]   an entry
    [b"xdel", stream, [[ms, seq], ...]]               entries deleted
    [b"xtrim", stream, ms, seq]                       every entry below ms-seq deleted
    [b"xdestroy", stream]                             the stream deleted (DEL), groups too
    [b"xcreate", stream]                              an empty stream (XGROUP CREATE MKSTREAM)
    [b"xmeta", stream, ms, seq, entries_added, del_ms, del_seq]
        the stream's last id, entries-added and max-deleted id restated (LOG.TRUNCATE writes
        it before cutting the log, so the records below the cut are not needed); it asserts
        what is true at its place in the log, so replaying it over the full history (a crash
        during the restatement) changes nothing
Records of other kinds (consumer groups: see groups.py) go to the applier registered for their
kind in `StreamStore.appliers`, in log order, so one replay rebuilds everything.
The in-memory index keeps, per stream, the sorted ids and their log addresses, and the last id
ever added (Redis never reuses an id, even after deletion). Field values live only in the log.

Deferred appends: `write` does not append at once. It packs the record, applies it to the
index under a placeholder address (PENDING_ADDRESS_BASE + its place in the pending list) and
keeps the bytes; `flush()` appends every pending record with one `append_many` (atomic: after a
crash all of them or none survive) and puts the real addresses in place of the placeholders.
The server flushes once per pipelined read (and before anything that must see the log), so a
pipeline of 1,000 XADDs costs one core call and one commit, and a MULTI/EXEC transaction is
one atomic batch. Placeholders are above every real address, so pending entries are never
visible to XREAD (they are not committed), and they are always the newest entries of their
streams, so the fix-up walks each touched stream from its end.

Visibility: an entry exists in the index from its append, but readers that wait for news (XREAD,
XREADGROUP) see only entries below a `visible_until_address` the server gives them (the
committed-until address when every reply is synced), so nobody reads a write that could still
be lost.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from fasterlog import FasterLog
from kvlayer import key_hash

from ._resp_speedups import xadd_lone as _xadd_lone

StreamId = tuple[int, int]
SEQ_MAX = (1 << 64) - 1
ID_MAX: StreamId = (SEQ_MAX, SEQ_MAX)
# Redis 7.0's replies (t_stream.c) when no id is left: the whole space, or one ms's sequence.
ID_EXHAUSTED = "ERR The stream has exhausted the last possible ID, unable to add more items"
SEQ_EXHAUSTED = "ERR Elements are too large to be stored"
PENDING_ADDRESS_BASE = 1 << 62  # placeholders for records not yet appended (see above)
_packb = msgpack.Packer(use_bin_type=True).pack


class StreamError(ValueError):
    """A command's stream arguments are wrong; the message is the Redis error text."""


@dataclass
class Stream:
    ids: list[StreamId] = field(default_factory=list)
    addresses: list[int] = field(default_factory=list)
    last_id: StreamId = (0, 0)
    entries_added: int = 0
    max_deleted_id: StreamId = (0, 0)  # the greatest id ever removed by XDEL (Redis 7)
    groups: dict[bytes, Any] = field(default_factory=dict)  # name -> groups.Group

    @property
    def first_id(self) -> StreamId:
        return self.ids[0] if self.ids else (0, 0)

    def visible_count(self, visible_until_address: int) -> int:
        """How many of the leading entries are visible (addresses grow with ids)."""
        return bisect.bisect_left(self.addresses, visible_until_address)

    def remove(self, index: int) -> None:
        del self.ids[index]
        del self.addresses[index]


def format_id(stream_id: StreamId) -> bytes:
    return b"%d-%d" % stream_id


def parse_id(text: bytes, *, missing_seq: int = 0, exclusive_ok: bool = False) -> StreamId:
    """Parses ms-seq (or ms alone, taking `missing_seq`); "(" marks an exclusive bound."""
    if exclusive_ok and text.startswith(b"("):
        return _exclusive(parse_id(text[1:], missing_seq=missing_seq), missing_seq)
    ms_text, dash, seq_text = text.partition(b"-")
    try:
        ms = int(ms_text)
        seq = int(seq_text) if dash else missing_seq
    except ValueError:
        raise StreamError("ERR Invalid stream ID specified as stream command argument") from None
    if not (0 <= ms < 1 << 64 and 0 <= seq < 1 << 64) or not ms_text.isdigit() or (
            dash and not seq_text.isdigit()):
        raise StreamError("ERR Invalid stream ID specified as stream command argument")
    return ms, seq


def _next_auto_id(last: StreamId, now_ms: int) -> StreamId:
    """`*`'s id after `last` at `now_ms` (Redis's streamNextID): now, or the id after `last`
    when the clock has not passed it, which is (ms + 1)-0 once the sequence is at its max.
    The caller has refused last == ID_MAX."""
    last_ms, last_seq = last
    if now_ms > last_ms:
        return now_ms, 0
    if last_seq == SEQ_MAX:
        return last_ms + 1, 0
    return last_ms, last_seq + 1


def _exclusive(stream_id: StreamId, missing_seq: int) -> StreamId:
    # "(" on a start bound means the next id, on an end bound the previous one; the caller
    # tells which by missing_seq (0 for starts, max for ends).
    ms, seq = stream_id
    if missing_seq == 0:
        if seq == (1 << 64) - 1:
            if ms == (1 << 64) - 1:
                raise StreamError("ERR invalid start ID for the interval")
            return ms + 1, 0
        return ms, seq + 1
    if seq == 0:
        if ms == 0:
            raise StreamError("ERR invalid end ID for the interval")
        return ms - 1, (1 << 64) - 1
    return ms, seq - 1


# A stream's place in SCAN's order: the top 40 bits of its name's hash (kvlayer.key_hash), so
# the order does not depend on when streams were made or dropped.
NAME_POSITION_SHIFT = 24


class StreamNames:
    """The stream names sorted by position, kept as streams come and go, so that a SCAN step
    costs O(log streams + COUNT) (a sort of every name on each step took 380 ms at 100k)."""

    def __init__(self) -> None:
        self._sorted: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, name: bytes) -> None:
        bisect.insort(self._sorted, (key_hash(name) >> NAME_POSITION_SHIFT, name))

    def remove(self, name: bytes) -> None:
        item = (key_hash(name) >> NAME_POSITION_SHIFT, name)
        index = bisect.bisect_left(self._sorted, item)
        assert index < len(self._sorted) and self._sorted[index] == item, "not a stream name"
        del self._sorted[index]

    def page(self, position: int, count: int) -> tuple[int | None, list[bytes]]:
        """The names from `position` on: at least `count` of them (all those sharing the last
        one's position, so the next step skips none), and the position to go on from (None:
        that was the last)."""
        items = self._sorted
        start = bisect.bisect_left(items, (position, b""))
        end = min(start + count, len(items))
        while end < len(items) and items[end][0] == items[end - 1][0]:
            end += 1
        following = items[end][0] if end < len(items) else None
        return following, [name for _, name in items[start:end]]


class StreamStore:
    """All streams of one log. Not thread-safe: the server calls it from its event loop."""

    def __init__(self, log: FasterLog, *, replay: bool = True) -> None:
        self.log = log
        self.streams: dict[bytes, Stream] = {}
        self.names = StreamNames()  # the keys of `streams`, in SCAN's order
        self.appliers: dict[bytes, Callable[[int, list[Any]], None]] = {}
        self._pending: list[bytes] = []  # packed records not yet appended, in order
        self.writes_count = 0  # records ever made pending: the server tells a batch's writes
        self._entry_size_max = log.entry_size_max
        self._pending_streams: set[bytes] = set()  # streams holding placeholder addresses
        # Called with the key every record changes (the server's WATCH bookkeeping).
        self.on_write: Callable[[bytes], None] = lambda key: None
        # False while the server refuses writes (recovery.py): the C lane declines then, so
        # every write goes to its handler, which the dispatcher refuses.
        self.writable = True
        if replay:
            self.replay()

    def adopt(self, other: StreamStore) -> None:
        """Takes `other`'s log and streams (a reload of the committed state, recovery.py),
        keeping this store's appliers and hooks; pending records are dropped."""
        self.log = other.log
        self.streams = other.streams
        self.names = other.names
        self._entry_size_max = other.log.entry_size_max
        self.discard_pending()

    def discard_pending(self) -> None:
        """Forgets the records not yet appended (their commit failed, recovery.py). The index
        still names their placeholders until the reload replaces it."""
        self._pending.clear()
        self._pending_streams.clear()

    # ------------------------------------------------------------------ replay

    def replay(self) -> None:
        """Rebuilds the index from the log; register `appliers` first."""
        for addresses, entries in self.log.scan_columns():
            for address, entry in zip(addresses, entries, strict=True):
                self._apply(address, msgpack.unpackb(entry, raw=True, use_list=True))

    def _apply(self, address: int, record: list[Any]) -> None:
        kind, name = record[0], record[1]
        if kind in self.appliers:
            self.appliers[kind](address, record)
        elif kind == b"xcreate":
            self._stream_for(name)
        elif kind == b"xmeta":
            stream = self._stream_for(name)
            stream.last_id = max(stream.last_id, (record[2], record[3]))
            stream.entries_added = record[4]
            stream.max_deleted_id = (record[5], record[6])
        elif kind == b"xadd":
            stream = self.streams.get(name) or self._stream_for(name)
            stream_id = (record[2], record[3])
            stream.ids.append(stream_id)
            stream.addresses.append(address)
            stream.last_id = stream_id
            stream.entries_added += 1
        elif kind == b"xdel" and name in self.streams:
            stream = self.streams[name]
            for ms, seq in record[2]:
                stream.max_deleted_id = max(stream.max_deleted_id, (ms, seq))
                index = bisect.bisect_left(stream.ids, (ms, seq))
                if index < len(stream.ids) and stream.ids[index] == (ms, seq):
                    stream.remove(index)
        elif kind == b"xdestroy":
            if self.streams.pop(name, None) is not None:
                self.names.remove(name)
        elif kind == b"xtrim" and name in self.streams:
            stream = self.streams[name]
            cut = bisect.bisect_left(stream.ids, (record[2], record[3]))
            del stream.ids[:cut]
            del stream.addresses[:cut]

    def _stream_for(self, name: bytes) -> Stream:
        """The stream `name`, made (and named in `names`) if it is new."""
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream()
            self.names.add(name)
        return stream

    def write(self, record: list[Any]) -> int:
        """Appends one record and applies it (the only way state changes)."""
        return self._write(record)

    def _write(self, record: list[Any]) -> int:
        payload = _packb(record)
        if len(payload) > self.log.entry_size_max:
            raise StreamError(f"ERR entry of {len(payload)} bytes exceeds the log's "
                              f"entry_size_max ({self.log.entry_size_max})")
        address = PENDING_ADDRESS_BASE + len(self._pending)
        self._pending.append(payload)
        self.writes_count += 1
        self._pending_streams.add(record[1])
        self._apply(address, record)
        self.on_write(record[1])
        return address

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def flush(self) -> bool:
        """Appends the pending records in one atomic batch; True if there were any."""
        if not self._pending:
            return False
        addresses = self.log.append_many(self._pending)
        for name in self._pending_streams:
            stream = self.streams.get(name)
            if stream is None:
                continue
            # A stream's addresses ascend, its placeholders last (above any log address).
            stream_addresses = stream.addresses
            first = bisect.bisect_left(stream_addresses, PENDING_ADDRESS_BASE)
            stream_addresses[first:] = [addresses[placeholder - PENDING_ADDRESS_BASE]
                                        for placeholder in stream_addresses[first:]]
        self._pending.clear()
        self._pending_streams.clear()
        return True

    def read_record(self, address: int) -> bytes:
        if address >= PENDING_ADDRESS_BASE:
            return self._pending[address - PENDING_ADDRESS_BASE]
        return self.log.read(address)

    # ------------------------------------------------------------------ commands

    def next_id(self, name: bytes, requested: bytes) -> StreamId:
        """XADD's id for `requested` (`*`, `ms-*` or `ms-seq`), as Redis 7.0 picks it: an id
        is never reused, and past the last possible one the stream takes no more."""
        last = self.streams[name].last_id if name in self.streams else (0, 0)
        if last == ID_MAX:
            raise StreamError(ID_EXHAUSTED)
        if requested == b"*":
            return _next_auto_id(last, time.time_ns() // 1_000_000)
        if requested.endswith(b"-*"):
            ms = parse_id(requested[:-2])[0]
            if ms < last[0]:
                raise StreamError("ERR The ID specified in XADD is equal or smaller than the "
                                  "target stream top item")
            if ms == last[0] and last[1] == SEQ_MAX:
                raise StreamError(SEQ_EXHAUSTED)  # Redis 7.0's words for it (EDOM)
            return (ms, last[1] + 1) if ms == last[0] else (ms, 0 if ms > 0 else 1)
        stream_id = parse_id(requested)
        if stream_id == (0, 0):
            raise StreamError("ERR The ID specified in XADD must be greater than 0-0")
        if stream_id <= last:
            raise StreamError("ERR The ID specified in XADD is equal or smaller than the target "
                              "stream top item")
        return stream_id

    def add_now(self, name: bytes, stream: Stream, fields: list[bytes],
                stream_id: StreamId | None = None) -> bytes:
        """Adds an entry to `stream` (`name`'s): XADD's one Python implementation, and the one
        encoder of entry records, `[b"xadd", name, ms, seq, [field, value, ...]]` in msgpack
        with bytes as bin (add_lone's C form, csrc/xadd_lane.c, writes the same bytes: tests/
        test_service_xadd_lane.py compares them). The id is `stream_id`, or `*`'s when None:
        now in ms, or the last id's ms with the next seq when the clock has not passed it (as
        next_id(name, b"*")). Returns the id's text; refuses (StreamError) a record over
        entry_size_max, having changed nothing."""
        if stream_id is None:
            if stream.last_id == ID_MAX:
                raise StreamError(ID_EXHAUSTED)
            # Now in ms, as the C form reads CLOCK_REALTIME.
            ms, seq = _next_auto_id(stream.last_id, time.time_ns() // 1_000_000)
        else:
            ms, seq = stream_id
        payload = _packb([b"xadd", name, ms, seq, fields])
        if len(payload) > self._entry_size_max:
            raise StreamError(f"ERR entry of {len(payload)} bytes exceeds the log's "
                              f"entry_size_max ({self._entry_size_max})")
        pending = self._pending
        stream.addresses.append(PENDING_ADDRESS_BASE + len(pending))
        pending.append(payload)
        self.writes_count += 1
        self._pending_streams.add(name)
        stream_id = (ms, seq)
        stream.ids.append(stream_id)
        stream.last_id = stream_id
        stream.entries_added += 1
        self.on_write(name)
        return b"%d-%d" % stream_id

    def add_lone(self, data: bytes, bulk_size_max_bytes: int,
                 arguments_count_max: int) -> tuple[bytes, bytes] | None:
        """add_now for a request that is exactly one whole `XADD key * field value ...` frame
        (at most 32 pairs, the command in any case) on an existing stream, from the bytes in C
        (csrc/xadd_lane.c): the same record, to the byte, and the same effects. Returns the
        key and the encoded reply (the id as a bulk string), or None having done nothing: any
        other input, a new stream, a record too big (the caller's general path answers)."""
        if not self.writable:
            return None
        taken = _xadd_lone(data, bulk_size_max_bytes, arguments_count_max, self.streams,
                           self._pending, self._entry_size_max)
        if taken is not None:
            key = taken[0]
            self.writes_count += 1
            self._pending_streams.add(key)
            self.on_write(key)
        return taken

    def add(self, name: bytes, stream_id: StreamId, fields: list[bytes]) -> None:
        """XADD with an id from next_id; makes the stream if it is new (as replay does)."""
        stream = self.streams.get(name)
        if stream is not None:
            self.add_now(name, stream, fields, stream_id)
            return
        stream = Stream()
        self.add_now(name, stream, fields, stream_id)  # raises before the stream is kept
        self.streams[name] = stream
        self.names.add(name)

    def trim(self, name: bytes, *, maxlen: int | None = None,
             minid: StreamId | None = None) -> int:
        """Deletes the oldest entries so at most `maxlen` remain or none is below `minid`;
        returns how many were deleted."""
        stream = self.streams.get(name)
        if stream is None or not stream.ids:
            return 0
        if maxlen is not None:
            cut = max(0, len(stream.ids) - maxlen)
        else:
            assert minid is not None
            cut = bisect.bisect_left(stream.ids, minid)
        if cut == 0:
            return 0
        first_kept = stream.ids[cut] if cut < len(stream.ids) else (
            stream.ids[-1][0], stream.ids[-1][1] + 1)
        self._write([b"xtrim", name, first_kept[0], first_kept[1]])
        return cut

    def delete(self, name: bytes, ids: list[StreamId]) -> int:
        stream = self.streams.get(name)
        if stream is None:
            return 0
        present = [i for i in dict.fromkeys(ids)
                   if (index := bisect.bisect_left(stream.ids, i)) < len(stream.ids)
                   and stream.ids[index] == i]
        if present:
            self._write([b"xdel", name, [list(i) for i in present]])
        return len(present)

    def destroy(self, name: bytes) -> bool:
        if name not in self.streams:
            return False
        self._write([b"xdestroy", name])
        return True

    def create(self, name: bytes) -> Stream:
        if name not in self.streams:
            self._write([b"xcreate", name])
        return self.streams[name]

    def write_restated(self, record: list[Any]) -> None:
        """Makes pending a record that restates state already in the index (LOG.TRUNCATE's
        restatement, maintenance.py rule 7): not applied (it changes nothing in memory) and
        not a change WATCH sees. Its maker sized it to fit entry_size_max."""
        payload = _packb(record)
        assert len(payload) <= self.log.entry_size_max, "a restatement record too large"
        self._pending.append(payload)
        self.writes_count += 1

    def restate(self, name: bytes, stream: Stream) -> None:
        """Restates one stream's counters as an xmeta record (before a truncation)."""
        self.write_restated([b"xmeta", name, *stream.last_id, stream.entries_added,
                             *stream.max_deleted_id])

    def forget_below(self, begin_address: int) -> None:
        """Drops the entries the log no longer holds (after a truncation)."""
        for stream in self.streams.values():
            cut = bisect.bisect_left(stream.addresses, begin_address)
            del stream.ids[:cut]
            del stream.addresses[:cut]

    def last_visible_id(self, name: bytes, visible_until_address: int) -> StreamId:
        """The `$` of XREAD: the last id added, or the last visible one if later ones are not."""
        stream = self.streams.get(name)
        if stream is None:
            return (0, 0)
        count = stream.visible_count(visible_until_address)
        if count == len(stream.ids):
            return stream.last_id
        return stream.ids[count - 1] if count else (0, 0)

    def read_after(self, name: bytes, after: StreamId, count: int | None,
                   visible_until_address: int, size_max_bytes: int | None = None,
                   ) -> tuple[list[list[Any]], range, int, Iterator[list[Any]] | None]:
        """Visible entries with ids greater than `after`, oldest first (XREAD), read as
        `read_entries` reads them: (the entries read, the indexes of all of them in the
        stream, the bytes read, the rest or None)."""
        stream = self.streams.get(name)
        if stream is None or count == 0:
            return [], range(0), 0, None
        low = bisect.bisect_right(stream.ids, after)
        high = stream.visible_count(visible_until_address)
        if count is not None:
            high = min(high, low + count)
        indexes = range(low, max(low, high))
        entries, size, rest = self.read_entries(stream, indexes, size_max_bytes)
        return entries, indexes, size, rest

    def length(self, name: bytes) -> int:
        stream = self.streams.get(name)
        return len(stream.ids) if stream else 0

    def range(self, name: bytes, start: StreamId, end: StreamId, count: int | None,
              reverse: bool = False) -> list[list[Any]]:
        return self.range_read(name, start, end, count, reverse)[0]

    def range_read(self, name: bytes, start: StreamId, end: StreamId, count: int | None,
                   reverse: bool = False, size_max_bytes: int | None = None,
                   ) -> tuple[list[list[Any]], int, Iterator[list[Any]] | None]:
        """XRANGE's entries as `range`, read as `read_entries` reads them: (the entries read,
        the range's count, the rest or None)."""
        stream = self.streams.get(name)
        if stream is None or start > end or count == 0:
            return [], 0, None
        low = bisect.bisect_left(stream.ids, start)
        high = bisect.bisect_right(stream.ids, end)
        indexes = range(high - 1, low - 1, -1) if reverse else range(low, high)
        if count is not None:
            indexes = indexes[:count]
        entries, _, rest = self.read_entries(stream, indexes, size_max_bytes)
        return entries, len(indexes), rest

    def index(self, stream: Stream, stream_id: StreamId) -> int | None:
        """Where `stream_id` is in `stream`, or None when it is not there (deleted)."""
        index = bisect.bisect_left(stream.ids, stream_id)
        return index if index < len(stream.ids) and stream.ids[index] == stream_id else None

    def read_entries(self, stream: Stream, indexes: Sequence[int],
                     size_max_bytes: int | None = None,
                     ) -> tuple[list[list[Any]], int, Iterator[list[Any]] | None]:
        """The entries `[id, fields]` at `indexes` of `stream`, in that order, read until
        their records pass `size_max_bytes` (None: all; 0 or less: none): (the entries read,
        the bytes of their records, the rest or None). The rest are the entries of this
        moment (their ids and addresses, and the records of pending ones, are taken now),
        read from the log as the iterator is walked (a streamed reply: streamed.py), so a
        later XDEL or flush does not change what they are; a truncation under them makes
        the walk raise."""
        entries: list[list[Any]] = []
        size = 0
        for position, index in enumerate(indexes):
            if size_max_bytes is not None and size >= size_max_bytes:
                rest = indexes[position:]
                ids = [stream.ids[index] for index in rest]
                sources: list[int | bytes] = [
                    address if address < PENDING_ADDRESS_BASE else self.read_record(address)
                    for address in (stream.addresses[index] for index in rest)]
                return entries, size, self._read_later(ids, sources)
            record = self.read_record(stream.addresses[index])
            entries.append([format_id(stream.ids[index]),
                            list(msgpack.unpackb(record, raw=True)[4])])
            size += len(record)
        return entries, size, None

    def _read_later(self, ids: list[StreamId], sources: list[int | bytes],
                    ) -> Iterator[list[Any]]:
        """read_entries' rest: each entry read from its address (or its pending record)."""
        for stream_id, source in zip(ids, sources, strict=True):
            record = self.log.read(source) if isinstance(source, int) else source
            yield [format_id(stream_id), list(msgpack.unpackb(record, raw=True)[4])]
