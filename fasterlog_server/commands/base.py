"""What the command families share: reply constants, argument parsing as Redis parses it,
the checks of a key's kind, and `call`, which turns a handler's outcome into a reply (dispatch
uses it too)."""

from __future__ import annotations

from typing import Any

from .. import resp
from ..context import Handler, Reply, ServerContext
from ..errors import CommandError
from ..session import Client
from ..streams import StreamError

__all__ = ["INT64_MAX", "INT64_MIN", "OK", "QUIT", "REDIS_VERSION", "WRONGTYPE", "CloseAfter",
           "arity", "call", "delete_stream", "integer", "not_a_string", "parse_integer"]

REDIS_VERSION = b"7.4.0"  # what HELLO and INFO report: the Redis whose commands we follow
OK = resp.SimpleString(b"OK")
QUIT = object()  # a handler's reply that closes the connection after +OK


class CloseAfter:
    """A handler's reply that closes the connection after `reply` is sent."""

    __slots__ = ("reply",)

    def __init__(self, reply: Any) -> None:
        self.reply = reply


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
parse_integer = resp.parse_integer


def arity(arguments: list[bytes], minimum: int) -> None:
    if len(arguments) < minimum:
        name = arguments[0].decode(errors="replace").lower()
        raise CommandError(f"ERR wrong number of arguments for '{name}' command")


def integer(text: bytes) -> int:
    """A 64-bit signed integer written as Redis's string2ll accepts it (no spaces, no '+')."""
    value = resp.parse_integer(text)
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        raise CommandError("ERR value is not an integer or out of range")
    return value


def not_a_string(context: ServerContext, key: bytes) -> None:
    """Stream commands on a string key answer WRONGTYPE, as Redis does."""
    if key not in context.streams.streams and context.kv.exists(key):
        raise CommandError(WRONGTYPE)


def delete_stream(context: ServerContext, client: Client, key: bytes) -> bool:
    if context.streams.destroy(key):
        client.written_keys.add(key)  # blocked readers wake: XREADGROUP answers NOGROUP
        return True
    return False


def call(context: ServerContext, client: Client, handler: Handler,
         arguments: list[bytes]) -> tuple[Reply, bool]:
    """Runs a handler: (reply, close the connection after it). An error raised as CommandError
    or StreamError becomes its error reply."""
    try:
        reply = handler(context, client, arguments)
    except (CommandError, StreamError) as error:
        return resp.ErrorReply(" ".join(str(error).split()).encode()), False
    if reply is QUIT:
        return OK, True
    if reply.__class__ is CloseAfter:
        return reply.reply, True
    return reply, False
