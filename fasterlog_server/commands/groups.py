"""Consumer group commands: XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, XINFO.

Groups are records in the stream log (groups.py); every change here is one record, so a
restart recovers groups, PELs, owners and delivery counts exactly. XREADGROUP `>` sees only
visible entries (commit.py rule 5) and may block, as XREAD does.

Replies that grow with the data are bounded as XREAD's are (streamed.py): the entries of
XREADGROUP, XCLAIM and XAUTOCLAIM, and of XINFO STREAM FULL, are read at once up to
STREAMED_REPLY_SIZE_MIN_BYTES and the rest as the socket takes the reply; XPENDING's rows past
PENDING_ROWS_WHOLE_MAX are built alike. What a command changes (deliveries, claims) is decided
and recorded before its reply is sent, naming exactly the entries the reply holds: a client
that leaves mid-reply leaves them pending, delivered but not received, as in Redis (they can
be claimed). Consumer PELs and group PELs inside XINFO STREAM FULL are built whole: they are
bounded by COUNT (10 by default) and by the PEL the server holds anyway.
"""

from __future__ import annotations

import itertools
from typing import Any

from .. import resp
from ..context import Blocked, Handler, ServerContext
from ..errors import CommandError
from ..groups import lag, now_ms
from ..session import Client
from ..settings import PENDING_ROWS_WHOLE_MAX, STREAMED_REPLY_SIZE_MIN_BYTES
from ..streamed import Streamed
from ..streams import ID_MAX, StreamError, parse_id
from .base import OK, arity, integer, not_a_string
from .streams import read_options, streams_reply


def _key_must_exist() -> CommandError:
    return CommandError("ERR The XGROUP subcommand requires the key to exist. Note that for "
                        "CREATE you may want to use the MKSTREAM option to create an empty "
                        "stream automatically.")


def _no_such_group(key: bytes, group: bytes) -> CommandError:
    return CommandError(f"NOGROUP No such consumer group '{group.decode(errors='replace')}' "
                        f"for key name '{key.decode(errors='replace')}'")


def _group_id(context: ServerContext, key: bytes, text: bytes) -> tuple[int, int]:
    if text == b"$":
        stream = context.streams.streams.get(key)
        return stream.last_id if stream else (0, 0)
    return parse_id(text)


def _entries_read_option(arguments: list[bytes], position: int) -> int:
    if position == len(arguments):
        return -1
    if position + 2 == len(arguments) and arguments[position].upper() == b"ENTRIESREAD":
        value = integer(arguments[position + 1])
        if value < 0 and value != -1:
            raise CommandError("ERR value for ENTRIESREAD must be positive or -1")
        return value
    raise CommandError("ERR syntax error")


def xgroup(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 2)
    sub = arguments[1].upper()
    handler = _XGROUP.get(sub)
    if handler is None or len(arguments) < 4:
        raise CommandError("ERR unknown subcommand or wrong number of arguments for "
                           f"'XGROUP|{sub.decode(errors='replace').lower()}'")
    key, name = arguments[2], arguments[3]
    if sub == b"CREATE":
        return _xgroup_create(context, client, arguments)
    if key not in context.streams.streams:
        raise _key_must_exist()
    if context.groups.group(key, name) is None:
        if sub == b"DESTROY":
            return 0
        raise _no_such_group(key, name)
    return handler(context, client, arguments)


def _xgroup_create(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 5)
    key, name = arguments[2], arguments[3]
    position, make_stream = 5, False
    if position < len(arguments) and arguments[position].upper() == b"MKSTREAM":
        make_stream, position = True, position + 1
    entries_read = _entries_read_option(arguments, position)
    last_id = _group_id(context, key, arguments[4])
    not_a_string(context, key)
    if key not in context.streams.streams:
        if not make_stream:
            raise _key_must_exist()
        context.streams.create(key)
    if context.groups.group(key, name) is not None:
        raise CommandError("BUSYGROUP Consumer Group name already exists")
    context.groups.create(key, name, last_id, entries_read)
    client.wrote = True
    return OK


def _xgroup_setid(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 5)
    key, name = arguments[2], arguments[3]
    entries_read = _entries_read_option(arguments, 5)
    context.groups.set_id(key, name, _group_id(context, key, arguments[4]), entries_read)
    client.wrote = True
    return OK


def _xgroup_destroy(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    context.groups.destroy(arguments[2], arguments[3])
    client.wrote = True
    client.written_keys.add(arguments[2])  # blocked XREADGROUPs get their NOGROUP error
    return 1


def _xgroup_createconsumer(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if len(arguments) != 5:
        raise CommandError("ERR wrong number of arguments for 'xgroup|createconsumer' command")
    _, group = context.groups.require(arguments[2], arguments[3])
    if arguments[4] in group.consumers:
        return 0
    context.groups.consumer(arguments[2], group, arguments[4], now_ms())
    client.wrote = True
    return 1


def _xgroup_delconsumer(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if len(arguments) != 5:
        raise CommandError("ERR wrong number of arguments for 'xgroup|delconsumer' command")
    _, group = context.groups.require(arguments[2], arguments[3])
    consumer = group.consumers.get(arguments[4])
    if consumer is None:
        return 0
    pending_count = len(consumer.pending)
    context.groups.delete_consumer(arguments[2], arguments[3], arguments[4])
    client.wrote = True
    return pending_count


_XGROUP: dict[bytes, Handler] = {
    b"CREATE": _xgroup_create, b"SETID": _xgroup_setid, b"DESTROY": _xgroup_destroy,
    b"CREATECONSUMER": _xgroup_createconsumer, b"DELCONSUMER": _xgroup_delconsumer}


def xreadgroup(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 7)
    if arguments[1].upper() != b"GROUP":
        raise CommandError("ERR syntax error")
    name, consumer = arguments[2], arguments[3]
    count, block_ms, noack, keys, texts = read_options(arguments, 4, group=True)
    history: list[tuple[int, int] | None] = []
    for key, text in zip(keys, texts, strict=True):
        if text == b"$":
            raise CommandError("ERR The $ ID is meaningless in the context of XREADGROUP: you "
                               "want to read the history of this consumer by specifying a "
                               "proper ID, or use the > ID to get new messages. The $ ID would "
                               "just return an empty result set.")
        history.append(None if text == b">" else parse_id(text))
        context.groups.require(key, name, " in XREADGROUP with GROUP option")

    def attempt() -> Any:
        results: list[tuple[bytes, list[Any] | Streamed]] = []
        budget_bytes = STREAMED_REPLY_SIZE_MIN_BYTES  # all keys together, as XREAD's
        for key, since in zip(keys, history, strict=True):
            _, group = context.groups.require(key, name, " in XREADGROUP with GROUP option")
            context.groups.consumer(key, group, consumer, now_ms())
            if since is None:
                entries, size = _deliver_new(context, key, group, consumer, count, noack,
                                             budget_bytes)
                if entries:
                    results.append((key, entries))
            else:
                entries, size = _deliver_history(context, key, group, consumer, since, count,
                                                 budget_bytes)
                results.append((key, entries))
            budget_bytes -= size
        return streams_reply(client, results) if results else None

    reply = attempt()
    if reply is not None or block_ms is None:
        return reply if reply is not None else resp.NULL_ARRAY
    return Blocked(keys, block_ms, attempt)


def _deliver_new(context: ServerContext, key: bytes, group: Any, consumer: bytes,
                 count: int | None, noack: bool, budget_bytes: int,
                 ) -> tuple[list[Any] | Streamed, int]:
    """XREADGROUP `>`: the entries after the group's last id, delivered (the PEL records
    exactly the ids the reply holds, before any of it is sent: an entry delivered but not
    received stays pending, as in Redis); and the bytes read now. Past `budget_bytes` the
    rest is read as the socket takes the reply."""
    entries, indexes, size, rest = context.streams.read_after(
        key, group.last_id, count, context.visible_until_address(), budget_bytes)
    if not indexes:
        return [], size
    stream_ids = context.streams.streams[key].ids
    ids = [stream_ids[index] for index in indexes]
    context.groups.deliver_new(key, group, consumer, ids, noack, now_ms())
    return (entries if rest is None else Streamed(len(indexes), entries, rest)), size


def _deliver_history(context: ServerContext, key: bytes, group: Any, consumer: bytes,
                     since: tuple[int, int], count: int | None, budget_bytes: int,
                     ) -> tuple[list[Any] | Streamed, int]:
    """XREADGROUP with an id: the consumer's pending entries after it, redelivered (a
    deleted one is answered [id, nil] and not counted); and the bytes read now."""
    stream = context.streams.streams[key]
    mine = sorted(i for i in group.consumers[consumer].pending if i > since)[:count]
    indexes = [context.streams.index(stream, stream_id) for stream_id in mine]
    present = [index for index in indexes if index is not None]
    if present:
        context.groups.redeliver(key, group, consumer, [stream.ids[i] for i in present],
                                 now_ms())
    entries, size, rest = context.streams.read_entries(stream, present, budget_bytes)
    read = itertools.chain(entries, rest or ())
    merged = ([b"%d-%d" % stream_id, resp.NULL_ARRAY] if index is None else next(read)
              for stream_id, index in zip(mine, indexes, strict=True))
    return (list(merged) if rest is None else Streamed(len(mine), [], merged)), size


def xack(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 4)
    ids = [parse_id(text) for text in arguments[3:]]
    found = context.groups.group(arguments[1], arguments[2])
    if found is None:
        return 0
    acked = context.groups.ack(arguments[1], found[1], ids)
    client.wrote = client.wrote or acked > 0
    return acked


def xpending(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 3)
    key, name = arguments[1], arguments[2]
    _, group = context.groups.require(key, name)
    if len(arguments) == 3:
        if not group.pending_ids:
            return [0, None, None, resp.NULL_ARRAY]
        owners: dict[bytes, int] = {}
        for entry in group.pending.values():
            owners[entry.consumer] = owners.get(entry.consumer, 0) + 1
        return [len(group.pending_ids), b"%d-%d" % group.pending_ids[0],
                b"%d-%d" % group.pending_ids[-1],
                [[owner, b"%d" % owners[owner]] for owner in sorted(owners)]]
    position, min_idle_ms = 3, 0
    if arguments[3].upper() == b"IDLE":
        arity(arguments, 5)
        min_idle_ms, position = integer(arguments[4]), 5
    if len(arguments) - position not in (3, 4):
        raise CommandError("ERR syntax error")
    start = (0, 0) if arguments[position] == b"-" else parse_id(
        arguments[position], missing_seq=0, exclusive_ok=True)
    end = ID_MAX if arguments[position + 1] == b"+" else parse_id(
        arguments[position + 1], missing_seq=(1 << 64) - 1, exclusive_ok=True)
    count = integer(arguments[position + 2])
    owner = arguments[position + 3] if len(arguments) - position == 4 else None
    return _pending_rows(group, start, end, count, owner, min_idle_ms)


def _pending_rows(group: Any, start: tuple[int, int], end: tuple[int, int], count: int,
                  owner: bytes | None, min_idle_ms: int) -> Any:
    """XPENDING's extended form: [id, consumer, idle, deliveries] per pending entry in the
    range, at most `count`. The entries are chosen now; past PENDING_ROWS_WHOLE_MAX rows the
    rows are built as the socket takes them (streamed.py), from the entries chosen (a
    redelivery meanwhile may show in its count, as a write meanwhile may in MGET's rest)."""
    now = now_ms()
    if count <= 0:
        return []
    candidates = group.pending_between(start, end)
    if owner is None and min_idle_ms <= 0:  # every one matches: no scan
        ids = candidates[:count]
        chosen = [group.pending[stream_id] for stream_id in ids]
    else:
        ids, chosen = [], []
        for stream_id in candidates:
            entry = group.pending[stream_id]
            if (owner is None or entry.consumer == owner) and \
                    max(0, now - entry.delivery_time_ms) >= min_idle_ms:
                ids.append(stream_id)
                chosen.append(entry)
                if len(ids) == count:
                    break
    rows = ([b"%d-%d" % stream_id, entry.consumer, max(0, now - entry.delivery_time_ms),
             entry.delivery_count] for stream_id, entry in zip(ids, chosen, strict=True))
    return list(rows) if len(ids) <= PENDING_ROWS_WHOLE_MAX else Streamed(len(ids), [], rows)


def xclaim(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 6)
    key, name, owner = arguments[1], arguments[2], arguments[3]
    min_idle_ms = integer(arguments[4])
    stream, group = context.groups.require(key, name)
    position, ids = 5, []
    while position < len(arguments):
        try:
            ids.append(parse_id(arguments[position]))
        except StreamError:
            break
        position += 1
    now = now_ms()
    delivery_time_ms, retry_count, force, justid, last_id = now, None, False, False, None
    while position < len(arguments):
        option = arguments[position].upper()
        value = arguments[position + 1] if position + 1 < len(arguments) else None
        if option in (b"FORCE", b"JUSTID"):
            force, justid = force or option == b"FORCE", justid or option == b"JUSTID"
            position += 1
            continue
        if value is None:
            raise CommandError("ERR Unrecognized XCLAIM option "
                               f"'{option.decode(errors='replace')}'")
        if option == b"IDLE":
            delivery_time_ms = now - integer(value)
        elif option == b"TIME":
            delivery_time_ms = integer(value)
        elif option == b"RETRYCOUNT":
            retry_count = integer(value)
        elif option == b"LASTID":
            last_id = parse_id(value)
        else:
            raise CommandError("ERR Unrecognized XCLAIM option "
                               f"'{option.decode(errors='replace')}'")
        position += 2
    if last_id is not None and last_id > group.last_id:
        context.groups.set_id(key, name, last_id, group.entries_read)
    claimed: list[tuple[tuple[int, int], int, int]] = []
    deleted: list[tuple[int, int]] = []
    indexes: list[int] = []
    for stream_id in dict.fromkeys(ids):
        entry = group.pending.get(stream_id)
        index = context.streams.index(stream, stream_id)
        if index is None:
            if entry is not None:
                deleted.append(stream_id)
            continue
        if entry is None:
            if not force:
                continue
            count = 0
        elif now - entry.delivery_time_ms < min_idle_ms:
            continue
        else:
            count = entry.delivery_count
        count = retry_count if retry_count is not None else count + (0 if justid else 1)
        claimed.append((stream_id, delivery_time_ms, count))
        indexes.append(index)
    if claimed:
        context.groups.consumer(key, group, owner, now)
    context.groups.claim(key, group, owner, now, claimed, deleted)
    return _claimed_reply(context, stream, claimed, indexes, justid)


def _claimed_reply(context: ServerContext, stream: Any,
                   claimed: list[tuple[tuple[int, int], int, int]], indexes: list[int],
                   justid: bool) -> list[Any] | Streamed:
    """The claimed entries (at `indexes` of `stream`), or their ids with JUSTID; entries past
    STREAMED_REPLY_SIZE_MIN_BYTES are read as the socket takes the reply. Their claim is
    recorded first, so the PEL names exactly what the reply holds."""
    if justid:  # ids only: as many as the claim record, which entry_size_max bounds
        return [b"%d-%d" % claim[0] for claim in claimed]
    entries, _, rest = context.streams.read_entries(stream, indexes,
                                                    STREAMED_REPLY_SIZE_MIN_BYTES)
    return entries if rest is None else Streamed(len(indexes), entries, rest)


def xautoclaim(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 6)
    key, name, owner = arguments[1], arguments[2], arguments[3]
    min_idle_ms = integer(arguments[4])
    start = (0, 0) if arguments[5] == b"-" else parse_id(arguments[5], exclusive_ok=True)
    count, justid, position = 100, False, 6
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"COUNT" and position + 1 < len(arguments):
            count = integer(arguments[position + 1])
            if not 1 <= count <= (1 << 62):
                raise CommandError("ERR COUNT must be > 0")
            position += 2
        elif option == b"JUSTID":
            justid, position = True, position + 1
        else:
            raise CommandError("ERR syntax error")
    stream, group = context.groups.require(key, name)
    now = now_ms()
    context.groups.consumer(key, group, owner, now)
    claimed: list[tuple[tuple[int, int], int, int]] = []
    deleted: list[tuple[int, int]] = []
    indexes: list[int] = []
    candidates = group.pending_between(start, ID_MAX)
    attempts_max = count * 10  # as Redis: bound the PEL scan, not only the claims
    scanned = 0
    for stream_id in candidates:
        if len(claimed) == count or scanned == attempts_max:
            break
        scanned += 1
        entry = group.pending[stream_id]
        index = context.streams.index(stream, stream_id)
        if index is None:
            deleted.append(stream_id)
        elif now - entry.delivery_time_ms >= min_idle_ms:
            claimed.append((stream_id, now, entry.delivery_count + (0 if justid else 1)))
            indexes.append(index)
    next_id = candidates[scanned] if scanned < len(candidates) else (0, 0)
    context.groups.claim(key, group, owner, now, claimed, deleted)
    entries = _claimed_reply(context, stream, claimed, indexes, justid)
    reply = [b"%d-%d" % next_id, entries, [b"%d-%d" % i for i in deleted]]
    return reply if entries.__class__ is not Streamed else Streamed(3, reply, iter(()))


def xinfo(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 3)
    sub, key = arguments[1].upper(), arguments[2]
    not_a_string(context, key)
    stream = context.streams.streams.get(key)
    if sub == b"CONSUMERS" and len(arguments) == 4:
        if stream is None:
            raise CommandError("ERR no such key")
        found = context.groups.group(key, arguments[3])
        if found is None:
            raise _no_such_group(key, arguments[3])
        now = now_ms()
        return [resp.Map({b"name": c.name, b"pending": len(c.pending),
                          b"idle": max(0, now - c.seen_time_ms),
                          b"inactive": -1 if c.active_time_ms < 0 else
                          max(0, now - c.active_time_ms)})
                for _, c in sorted(found[1].consumers.items())]
    if sub == b"STREAM" and len(arguments) > 3:
        if stream is None:
            raise CommandError("ERR no such key")
        return _xinfo_stream_full(context, key, stream, arguments, client.protocol)
    if sub not in (b"GROUPS", b"STREAM") or len(arguments) != 3:
        raise CommandError("ERR unknown subcommand or wrong number of arguments for "
                           f"'XINFO|{sub.decode(errors='replace').lower()}'")
    if stream is None:
        raise CommandError("ERR no such key")
    if sub == b"GROUPS":
        return [resp.Map({b"name": g.name, b"consumers": len(g.consumers),
                          b"pending": len(g.pending_ids),
                          b"last-delivered-id": b"%d-%d" % g.last_id,
                          b"entries-read": None if g.entries_read < 0 else g.entries_read,
                          b"lag": lag(stream, g)})
                for _, g in sorted(stream.groups.items())]
    first = context.streams.range(key, (0, 0), ID_MAX, 1)
    last = context.streams.range(key, (0, 0), ID_MAX, 1, reverse=True)
    return resp.Map({b"length": len(stream.ids), b"radix-tree-keys": 1,
                     b"radix-tree-nodes": 2, b"last-generated-id": b"%d-%d" % stream.last_id,
                     b"max-deleted-entry-id": b"%d-%d" % stream.max_deleted_id,
                     b"entries-added": stream.entries_added,
                     b"recorded-first-entry-id": b"%d-%d" % stream.first_id,
                     b"groups": len(stream.groups),
                     b"first-entry": first[0] if first else None,
                     b"last-entry": last[0] if last else None})


def _xinfo_stream_full(context: ServerContext, key: bytes, stream: Any,
                       arguments: list[bytes], protocol: int) -> Any:
    """XINFO STREAM key FULL [COUNT n]: the stream, its first COUNT entries (default 10, 0 for
    all), and every group with its PEL and consumers (each PEL limited to COUNT too)."""
    count = 10
    if arguments[3].upper() != b"FULL":
        raise CommandError("ERR syntax error")
    if len(arguments) == 6 and arguments[4].upper() == b"COUNT":
        count = integer(arguments[5])
        if count < 0:
            count = 10
    elif len(arguments) != 4:
        raise CommandError("ERR syntax error")
    limit = None if count == 0 else count
    groups = []
    for _, group in sorted(stream.groups.items()):
        pending = group.pending_ids[:limit]
        consumers = []
        for _, consumer in sorted(group.consumers.items()):
            own = sorted(consumer.pending)[:limit]
            consumers.append(resp.Map({
                b"name": consumer.name, b"seen-time": consumer.seen_time_ms,
                b"active-time": consumer.active_time_ms, b"pel-count": len(consumer.pending),
                b"pending": [[b"%d-%d" % i, group.pending[i].delivery_time_ms,
                              group.pending[i].delivery_count] for i in own]}))
        groups.append(resp.Map({
            b"name": group.name, b"last-delivered-id": b"%d-%d" % group.last_id,
            b"entries-read": None if group.entries_read < 0 else group.entries_read,
            b"lag": lag(stream, group), b"pel-count": len(group.pending_ids),
            b"pending": [[b"%d-%d" % i, group.pending[i].consumer,
                          group.pending[i].delivery_time_ms, group.pending[i].delivery_count]
                         for i in pending],
            b"consumers": consumers}))
    entries, entries_count, rest = context.streams.range_read(
        key, (0, 0), ID_MAX, limit, size_max_bytes=STREAMED_REPLY_SIZE_MIN_BYTES)
    reply = {b"length": len(stream.ids), b"radix-tree-keys": 1, b"radix-tree-nodes": 2,
             b"last-generated-id": b"%d-%d" % stream.last_id,
             b"max-deleted-entry-id": b"%d-%d" % stream.max_deleted_id,
             b"entries-added": stream.entries_added,
             b"recorded-first-entry-id": b"%d-%d" % stream.first_id,
             b"entries": entries if rest is None else Streamed(entries_count, entries, rest),
             b"groups": groups}
    if rest is None:
        return resp.Map(reply)
    # The entries past STREAMED_REPLY_SIZE_MIN_BYTES are read as the socket takes the reply.
    return Streamed.map(len(reply), [part for pair in reply.items() for part in pair],
                        iter(()), protocol)
