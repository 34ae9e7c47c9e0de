"""String commands: GET, MGET, SET, MSET, INCR, DECR, INCRBY, DECRBY, and the hot lanes of
GET and plain SET (context.Lane).

Strings live in the KV store (keyvalues.py), with their expiries. A string command on a stream
key answers WRONGTYPE, except SET, which replaces the stream (as Redis does).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..context import ServerContext
from ..errors import CommandError
from ..groups import now_ms
from ..session import Client
from ..settings import STREAMED_REPLY_SIZE_MIN_BYTES
from ..streamed import Streamed
from .base import (
    INT64_MAX,
    INT64_MIN,
    OK,
    WRONGTYPE,
    delete_stream,
    integer,
    parse_integer,
)


def _string(context: ServerContext, key: bytes,
            now: int | None = None) -> tuple[bytes, int | None] | None:
    """The live string at `key` and its expiry, None if missing; WRONGTYPE for a stream."""
    if key in context.streams.streams:
        raise CommandError(WRONGTYPE)
    return context.kv.get(key, now)


def get(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    found = _string(context, arguments[1])
    return None if found is None else found[0]


def get_lane(context: ServerContext, client: Client, arguments: list[bytes]) -> bytes | None:
    """GET's lane: the encoded reply for a key that is not a stream."""
    if len(arguments) != 2 or arguments[1] in context.streams.streams or context.fence.active:
        return None
    found = context.kv.get(arguments[1])
    if found is None:
        return b"_\r\n" if client.protocol == 3 else b"$-1\r\n"
    value = found[0]
    return b"$%d\r\n%s\r\n" % (len(value), value)


def mget(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """The values, read at once while they stay under STREAMED_REPLY_SIZE_MIN_BYTES (an
    atomic read); past it the rest are read as the socket takes the reply (streamed.py),
    so a write by another client meanwhile may be seen (settings.py)."""
    now = now_ms()
    values: list[bytes | None] = []
    size = 0
    keys = arguments[1:]
    for position, key in enumerate(keys):
        found = None if key in context.streams.streams else context.kv.get(key, now)
        if found is None:
            values.append(None)
            continue
        values.append(found[0])
        size += len(found[0])
        if size >= STREAMED_REPLY_SIZE_MIN_BYTES and position + 1 < len(keys):
            return Streamed(len(keys), values, _values_later(context, keys[position + 1:]))
    return values


def _values_later(context: ServerContext, keys: list[bytes]) -> Iterator[bytes | None]:
    """The values of a streamed MGET's rest, each read when its turn to be sent comes."""
    for key in keys:
        found = None if key in context.streams.streams else context.kv.get(key)
        yield None if found is None else found[0]


def _put(context: ServerContext, client: Client, key: bytes, value: bytes,
         expire_at_ms: int | None) -> None:
    """SET's write: any other kind of value at `key` is replaced, as Redis does."""
    context.kv.put(key, value, expire_at_ms)  # first: it refuses a value too big for a record
    delete_stream(context, client, key)
    context.touch(key)


_SET_EXPIRY_OPTIONS = (b"EX", b"PX", b"EXAT", b"PXAT")


def set_(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    key, value = arguments[1], arguments[2]
    condition: bytes | None = None
    get = keep_ttl = False
    expiry: tuple[bytes, int] | None = None
    position = 3
    while position < len(arguments):
        option = arguments[position].upper()
        if option in (b"NX", b"XX") and condition in (None, option):
            condition = option
        elif option == b"GET":
            get = True
        elif option == b"KEEPTTL" and expiry is None:
            keep_ttl = True
        elif option in _SET_EXPIRY_OPTIONS and not keep_ttl and (
                expiry is None or expiry[0] == option) and position + 1 < len(arguments):
            position += 1
            amount = integer(arguments[position])
            if amount <= 0:
                raise CommandError("ERR invalid expire time in 'set' command")
            expiry = (option, amount)
        else:
            raise CommandError("ERR syntax error")
        position += 1
    now = now_ms()
    expire_at_ms = None
    if expiry is not None:
        option, amount = expiry
        expire_at_ms = {b"EX": now + amount * 1000, b"PX": now + amount,
                        b"EXAT": amount * 1000, b"PXAT": amount}[option]
        if expire_at_ms > INT64_MAX:
            raise CommandError("ERR invalid expire time in 'set' command")
    is_stream = key in context.streams.streams
    if is_stream and get:
        raise CommandError(WRONGTYPE)
    # The old value is read only when an option needs it (a plain SET skips the lookup).
    needs_old = get or keep_ttl or condition is not None
    old = None if is_stream or not needs_old else context.kv.get(key, now)
    exists = is_stream or old is not None
    if (condition == b"NX" and exists) or (condition == b"XX" and not exists):
        return None if not get or old is None else old[0]
    if keep_ttl and old is not None:
        expire_at_ms = old[1]
    _put(context, client, key, value, expire_at_ms)
    if get:
        return None if old is None else old[0]
    return OK


def set_lane(context: ServerContext, client: Client, arguments: list[bytes]) -> bytes | None:
    """SET's lane: `SET key value` (no option) on a key that is not a stream, as set_ does it
    (there is no stream to delete). A value too big for a record raises, having written
    nothing."""
    if len(arguments) != 3 or arguments[1] in context.streams.streams or context.fence.active:
        return None  # (a fenced server: the dispatcher refuses it, fence.py)
    context.kv.put(arguments[1], arguments[2], None)
    context.touch(arguments[1])
    return b"+OK\r\n"


def mset(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if len(arguments) % 2 == 0:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    for position in range(1, len(arguments), 2):
        _put(context, client, arguments[position], arguments[position + 1], None)
    return OK


def _add(context: ServerContext, client: Client, key: bytes, delta: int) -> int:
    found = _string(context, key)
    current, expire_at_ms = 0, None
    if found is not None:
        value = parse_integer(found[0])
        if value is None or not INT64_MIN <= value <= INT64_MAX:
            raise CommandError("ERR value is not an integer or out of range")
        current, expire_at_ms = value, found[1]
    result = current + delta
    if not INT64_MIN <= result <= INT64_MAX:
        raise CommandError("ERR increment or decrement would overflow")
    context.kv.put(key, b"%d" % result, expire_at_ms)  # INCR keeps the TTL, as Redis
    context.touch(key)
    return result


def incr(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _add(context, client, arguments[1], 1)


def decr(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _add(context, client, arguments[1], -1)


def incrby(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    return _add(context, client, arguments[1], integer(arguments[2]))


def decrby(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    delta = integer(arguments[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _add(context, client, arguments[1], -delta)
