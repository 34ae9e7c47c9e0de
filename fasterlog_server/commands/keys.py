"""Commands on keys of both kinds, streams and strings: DBSIZE, TYPE, EXISTS, DEL, TTL, PTTL,
SCAN.

A key is a stream (streams.StreamStore) or a string (keyvalues.KeyValues), never both: writing
one kind replaces the other (SET on a stream key deletes the stream, as Redis does).
"""

from __future__ import annotations

from typing import Any

from .. import glob, resp
from ..context import ServerContext
from ..errors import CommandError
from ..groups import now_ms
from ..session import Client
from ..streams import NAME_POSITION_SHIFT
from .base import delete_stream, integer


def dbsize(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return len(context.streams.streams) + context.kv.count(now_ms())


def type_(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    key = arguments[1]
    if key in context.streams.streams:
        return resp.SimpleString(b"stream")
    return resp.SimpleString(b"string" if context.kv.exists(key) else b"none")


def exists(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return sum(1 for key in arguments[1:]
               if key in context.streams.streams or context.kv.exists(key))


def del_(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    deleted = 0
    for key in dict.fromkeys(arguments[1:]):
        if delete_stream(context, client, key):
            deleted += 1
        elif context.kv.exists(key):
            context.kv.delete(key)
            context.touch(key)
            deleted += 1
    return deleted


def _ttl(context: ServerContext, key: bytes, unit_ms: int) -> int:
    if key in context.streams.streams:
        return -1
    now = now_ms()
    found = context.kv.get(key, now)
    if found is None:
        return -2
    if found[1] is None:
        return -1
    return (found[1] - now + unit_ms - 1) // unit_ms if unit_ms > 1 else found[1] - now


def ttl(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _ttl(context, arguments[1], 1000)


def pttl(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _ttl(context, arguments[1], 1)


# SCAN's cursor: below STREAMS_PHASE it is the KV index's bucket cursor (KVStore.scan), then
# STREAMS_PHASE plus the next stream name's position (streams.StreamNames: 40 bits of its hash).
STREAMS_PHASE = 1 << 40
assert 64 - NAME_POSITION_SHIFT == 40


def _scan_options(arguments: list[bytes]) -> tuple[bytes | None, int, bytes | None]:
    pattern: bytes | None = None
    count, kind = 10, None
    position = 2
    while position < len(arguments):
        option = arguments[position].upper()
        if position + 1 >= len(arguments):
            raise CommandError("ERR syntax error")
        value = arguments[position + 1]
        if option == b"MATCH":
            pattern = None if value == b"*" else value  # `*` is no filter, as in Redis
        elif option == b"COUNT":
            count = integer(value)
            if count < 1:
                raise CommandError("ERR syntax error")
        elif option == b"TYPE":
            kind = value.lower()
        else:
            raise CommandError("ERR syntax error")
        position += 2
    return pattern, count, kind


def _scan_streams(context: ServerContext, cursor: int, count: int) -> tuple[int, list[bytes]]:
    """Stream names in position order from `cursor`'s (StreamNames: O(log streams + count))."""
    following, names = context.streams.names.page(cursor - STREAMS_PHASE, count)
    return (0 if following is None else STREAMS_PHASE + following), names


def scan(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """Strings first, through the KV index's bucket cursor (KVStore.scan: a call walks whole
    buckets until COUNT keys or 10 * COUNT buckets, so its work is O(COUNT) whatever the number
    of keys), then streams. A key present for the whole iteration is returned, maybe more than
    once (Redis's guarantee); MATCH and TYPE filter what a call found, as Redis's do."""
    cursor = scan_cursor(arguments[1])
    pattern, count, kind = _scan_options(arguments)
    now = now_ms()
    page: list[tuple[bytes, bytes]] = []
    if cursor < STREAMS_PHASE:
        # Writes pending in the overlay join the index first (they are in this batch's
        # commit either way), so the cursor sees them.
        context.kv.flush()
        next_cursor, keys = context.kv.store.scan(cursor, count)
        page = [(key, b"string") for key in keys if key not in context.streams.streams
                and context.kv.get(key, now) is not None]
        if next_cursor == 0:
            next_cursor = STREAMS_PHASE
    else:
        next_cursor, keys = _scan_streams(context, cursor, count)
        page = [(key, b"stream") for key in keys]
    if next_cursor == STREAMS_PHASE and not context.streams.streams:
        next_cursor = 0
    tokens = None if pattern is None else glob.compile_pattern(pattern)
    keys = [key for key, key_kind in page
            if (kind is None or key_kind == kind) and (
                tokens is None or glob.matches(tokens, key))]
    return [b"%d" % next_cursor, keys]


def scan_cursor(argument: bytes) -> int:
    """SCAN's cursor as Redis 7.0 reads it (strtoul, base 10): an optional sign, then digits;
    a minus wraps (-1 is 2^64 - 1) and an empty cursor is 0; a leading space, any other byte
    or more than 64 bits is "invalid cursor"."""
    digits = argument[1:] if argument[:1] in (b"+", b"-") else argument
    if (digits and not digits.isdigit()) or (not digits and argument) or \
            argument[:1].isspace():
        raise CommandError("ERR invalid cursor")
    value = int(digits) if digits else 0
    if value >= 1 << 64:
        raise CommandError("ERR invalid cursor")
    return (-value) % (1 << 64) if argument[:1] == b"-" else value
