"""Commands on keys of both kinds, streams and strings: DBSIZE, TYPE, EXISTS, DEL, TTL, PTTL,
SCAN.

A key is a stream (streams.StreamStore) or a string (keyvalues.KeyValues), never both: writing
one kind replaces the other (SET on a stream key deletes the stream, as Redis does).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from kvlayer import key_hash

from .. import resp
from ..context import ServerContext
from ..errors import CommandError
from ..groups import now_ms
from ..session import Client
from .base import delete_stream, integer, parse_integer


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


def scan(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """Keys in the order of their 64-bit hash; the cursor is the hash to go on from, so a key
    present for the whole iteration is returned exactly once whatever is written meanwhile.
    Costs a pass over every key per call until kvlayer can walk its index."""
    cursor = parse_integer(arguments[1])
    if cursor is None or not 0 <= cursor < 1 << 64:
        raise CommandError("ERR invalid cursor")
    pattern: str | None = None
    count, kind = 10, None
    position = 2
    while position < len(arguments):
        option = arguments[position].upper()
        if position + 1 >= len(arguments):
            raise CommandError("ERR syntax error")
        value = arguments[position + 1]
        if option == b"MATCH":
            pattern = value.decode("latin-1")
        elif option == b"COUNT":
            count = integer(value)
            if count < 1:
                raise CommandError("ERR syntax error")
        elif option == b"TYPE":
            kind = value.lower()
        else:
            raise CommandError("ERR syntax error")
        position += 2
    now = now_ms()
    found: list[tuple[int, bytes, bytes]] = []
    for key in context.streams.streams:
        hashed = key_hash(key)
        if hashed >= cursor:
            found.append((hashed, key, b"stream"))
    for key in context.kv.keys():
        hashed = key_hash(key)
        if hashed >= cursor and key not in context.streams.streams and \
                context.kv.get(key, now) is not None:
            found.append((hashed, key, b"string"))
    found.sort()
    page, rest = found[:count], found[count:]
    next_cursor = rest[0][0] if rest else 0
    keys = [key for _, key, key_kind in page
            if (kind is None or key_kind == kind) and (
                pattern is None or fnmatch.fnmatchcase(key.decode("latin-1"), pattern))]
    return [b"%d" % next_cursor, keys]
