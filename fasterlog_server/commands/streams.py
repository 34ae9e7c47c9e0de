"""Stream commands: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XREAD, and the hot lane of
`XADD key * field value` on an existing stream (context.Lane; its C form is
csrc/xadd_lane.c).

XREAD sees only entries below ServerContext.visible_until_address() (commit.py rule 5); with
BLOCK it returns Blocked and the connection waits for a commit of a write to its keys.
XRANGE, XREVRANGE and XREAD read their entries at once up to STREAMED_REPLY_SIZE_MIN_BYTES and
answer the rest as a streamed reply (streamed.py), read as the socket takes it; a blocked
XREAD's reply, found later, is streamed alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .. import resp
from ..context import Blocked, ServerContext
from ..errors import CommandError
from ..session import Client
from ..settings import STREAMED_REPLY_SIZE_MIN_BYTES
from ..streamed import Streamed
from ..streams import ID_MAX, parse_id
from .base import arity, integer, not_a_string


def _trim_options(arguments: list[bytes], position: int) -> tuple[dict[str, Any], int]:
    """Parses [MAXLEN|MINID [=|~] threshold [LIMIT count]] at `position`."""
    option = arguments[position].upper()
    position += 1
    if position < len(arguments) and arguments[position] in (b"=", b"~"):
        position += 1
    if position >= len(arguments):
        raise CommandError("ERR syntax error")
    if option == b"MAXLEN":
        maxlen = integer(arguments[position])
        if maxlen < 0:
            raise CommandError("ERR The MAXLEN argument must be >= 0.")
        trim: dict[str, Any] = {"maxlen": maxlen}
    else:
        trim = {"minid": parse_id(arguments[position])}
    position += 1
    if position + 1 < len(arguments) and arguments[position].upper() == b"LIMIT":
        integer(arguments[position + 1])  # exact trimming: LIMIT only bounds approximate work
        position += 2
    return trim, position


def xadd(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 5)
    key, position = arguments[1], 2
    make_stream, trim = True, None
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"NOMKSTREAM":
            make_stream = False
            position += 1
        elif option in (b"MAXLEN", b"MINID"):
            trim, position = _trim_options(arguments, position)
        else:
            break
    fields = arguments[position + 1:]
    if position >= len(arguments) or not fields or len(fields) % 2:
        raise CommandError("ERR wrong number of arguments for 'xadd' command")
    if key not in context.streams.streams:
        not_a_string(context, key)
        if not make_stream:
            return None
    stream_id = context.streams.next_id(key, arguments[position])
    context.streams.add(key, stream_id, fields)
    if trim is not None:
        context.streams.trim(key, **trim)
    client.wrote = True
    client.written_keys.add(key)
    return b"%d-%d" % stream_id


def xadd_lane(context: ServerContext, client: Client, arguments: list[bytes]) -> bytes | None:
    """XADD's lane: `XADD key * field value` on an existing stream, with no dispatch and no
    reply objects (the record joins the batch's one append, streams.StreamStore.add_now). A
    record too big for an entry raises, having written nothing."""
    if len(arguments) != 5 or arguments[2] != b"*" or context.fence.active:
        return None  # (a fenced server: the dispatcher refuses it, fence.py)
    store = context.streams
    stream = store.streams.get(arguments[1])
    if stream is None:
        return None  # a new stream: the handler creates it
    stream_id = store.add_now(arguments[1], stream, arguments[3:])
    client.written_keys.add(arguments[1])  # wakes its blocked readers once committed
    return b"$%d\r\n%s\r\n" % (len(stream_id), stream_id)


def xlen(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 2)
    not_a_string(context, arguments[1])
    return context.streams.length(arguments[1])


def _range(context: ServerContext, arguments: list[bytes], reverse: bool) -> Any:
    arity(arguments, 4)
    key = arguments[1]
    not_a_string(context, key)
    first, second = (arguments[3], arguments[2]) if reverse else (arguments[2], arguments[3])
    start = (0, 0) if first == b"-" else parse_id(first, missing_seq=0, exclusive_ok=True)
    end = ID_MAX if second == b"+" else parse_id(second, missing_seq=(1 << 64) - 1,
                                                 exclusive_ok=True)
    count = None
    if len(arguments) == 6 and arguments[4].upper() == b"COUNT":
        count = max(0, integer(arguments[5]))
    elif len(arguments) != 4:
        raise CommandError("ERR syntax error")
    entries, count, rest = context.streams.range_read(key, start, end, count, reverse,
                                                      STREAMED_REPLY_SIZE_MIN_BYTES)
    # Past STREAMED_REPLY_SIZE_MIN_BYTES the rest is read as the socket takes the reply.
    return entries if rest is None else Streamed(count, entries, rest)


def xrange(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _range(context, arguments, reverse=False)


def xrevrange(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _range(context, arguments, reverse=True)


def xdel(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 3)
    not_a_string(context, arguments[1])
    return context.streams.delete(arguments[1], [parse_id(a) for a in arguments[2:]])


def xtrim(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 4)
    trim, position = _trim_options(arguments, 2)
    if position != len(arguments):
        raise CommandError("ERR syntax error")
    not_a_string(context, arguments[1])
    return context.streams.trim(arguments[1], **trim)


def streams_reply(client: Client, results: list[tuple[bytes, list[Any] | Streamed]]) -> Any:
    """XREAD/XREADGROUP's reply: RESP3 a map of key to entries (as Redis 7), RESP2 pairs.
    When the entries of a stream are streamed (read_streams), so is the reply, each stream's
    entries a nested Streamed (streamed.py)."""
    if not results:
        return resp.NULL_ARRAY
    if all(entries.__class__ is not Streamed for _, entries in results):
        if client.protocol == 3:
            return resp.Map(results)
        return [[key, entries] for key, entries in results]
    nothing: Iterator[Any] = iter(())
    if client.protocol == 3:
        return Streamed.map(len(results), [part for pair in results for part in pair], nothing,
                            3)
    return Streamed(len(results), [
        Streamed(2, [key, entries], nothing) if entries.__class__ is Streamed
        else [key, entries] for key, entries in results], nothing)


def read_streams(context: ServerContext, keys: list[bytes], afters: list[tuple[int, int]],
                 count: int | None) -> list[tuple[bytes, list[Any] | Streamed]]:
    """XREAD's entries: per key with visible entries after its id, the key and its entries.
    The records are read at once until they pass STREAMED_REPLY_SIZE_MIN_BYTES, all keys
    together; the rest, later keys included, are read as the socket takes the reply."""
    limit = context.visible_until_address()
    budget_bytes = STREAMED_REPLY_SIZE_MIN_BYTES
    results: list[tuple[bytes, list[Any] | Streamed]] = []
    for key, since in zip(keys, afters, strict=True):
        entries, indexes, size, rest = context.streams.read_after(key, since, count, limit,
                                                                  budget_bytes)
        budget_bytes -= size
        if indexes:
            results.append((key, entries if rest is None else
                            Streamed(len(indexes), entries, rest)))
    return results


def read_options(arguments: list[bytes], position: int, group: bool) -> tuple[
        int | None, int | None, bool, list[bytes], list[bytes]]:
    """Parses [COUNT n] [BLOCK ms] [NOACK] STREAMS key... id...; returns count, block_ms,
    noack, keys, ids."""
    count: int | None = None
    block_ms: int | None = None
    noack = False
    name = "xreadgroup" if group else "xread"
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"COUNT" and position + 1 < len(arguments):
            count = max(0, integer(arguments[position + 1])) or None
            position += 2
        elif option == b"BLOCK" and position + 1 < len(arguments):
            block_ms = integer(arguments[position + 1])
            if block_ms < 0:
                raise CommandError("ERR timeout is negative")
            position += 2
        elif option == b"NOACK" and group:
            noack = True
            position += 1
        elif option == b"STREAMS":
            position += 1
            break
        else:
            raise CommandError("ERR syntax error")
    else:
        raise CommandError("ERR syntax error")
    rest = arguments[position:]
    if not rest or len(rest) % 2:
        marker = ">" if group else "$"
        raise CommandError(f"ERR Unbalanced '{name}' list of streams: for each stream key an "
                           f"ID or '{marker}' must be specified.")
    half = len(rest) // 2
    return count, block_ms, noack, rest[:half], rest[half:]


def xread(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    arity(arguments, 4)
    count, block_ms, _, keys, texts = read_options(arguments, 1, group=False)
    for key in keys:
        not_a_string(context, key)
    visible = context.visible_until_address()
    after: list[tuple[int, int]] = []
    for key, text in zip(keys, texts, strict=True):
        if text == b"$":
            after.append(context.streams.last_visible_id(key, visible))
        elif text == b"+":
            last = context.streams.last_visible_id(key, visible)
            stream = context.streams.streams.get(key)
            count_visible = stream.visible_count(visible) if stream else 0
            # The last entry, read as "after the id before it"; none yet: wait like `$`.
            after.append(_previous(stream.ids[count_visible - 1]) if stream and count_visible
                         else last)
        else:
            after.append(parse_id(text, missing_seq=0))

    def attempt() -> Any:
        results = read_streams(context, keys, after, count)
        return streams_reply(client, results) if results else None

    reply = attempt()
    if reply is not None or block_ms is None:
        return reply if reply is not None else resp.NULL_ARRAY
    return Blocked(keys, block_ms, attempt)


def _previous(stream_id: tuple[int, int]) -> tuple[int, int]:
    ms, seq = stream_id
    return (ms, seq - 1) if seq else (ms - 1, (1 << 64) - 1)
