"""Transactions: MULTI, DISCARD, EXEC, WATCH, UNWATCH.

MULTI queues (dispatch.py refuses unknown commands and wrong arities at queue time, which makes
EXEC answer EXECABORT); EXEC runs the queue with nothing in between. WATCH marks the client
dirty on any write to a watched key (notify.Watches); EXEC of a dirty client answers nil.
Blocking reads inside EXEC do not block.

EXEC is one atomic batch per log: nothing it runs commits a log by itself, so its records are
appended and committed once, after the last queued command. The commands that do commit a log
(KV.CHECKPOINT, LOG.TRUNCATE: flag NO_MULTI) are refused at queue time with Redis's answer for
SAVE ("ERR Command not allowed inside a transaction"), which makes EXEC answer EXECABORT.
"""

from __future__ import annotations

from typing import Any

from .. import resp
from ..context import Blocked, ServerContext
from ..errors import CommandError
from ..session import Client
from .base import OK, call


def multi(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    client.multi, client.multi_error = [], False
    return OK


def discard(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    client.multi, client.multi_error = None, False
    context.watches.unwatch(client)
    return OK


def exec_(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """Runs the queued commands with nothing in between; their records are appended as one
    batch per log at the end of the pipeline (streams.py, keyvalues.py), so after a crash the
    transaction's writes are all there or none (per log)."""
    if client.multi is None:
        raise CommandError("ERR EXEC without MULTI")
    queued, failed, dirty = client.multi, client.multi_error, client.dirty
    client.multi, client.multi_error = None, False
    context.watches.unwatch(client)
    if failed:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    if dirty:
        return resp.NULL_ARRAY
    replies = []
    for queued_arguments in queued:
        handler = context.commands[queued_arguments[0].upper()].handler
        reply, _ = call(context, client, handler, queued_arguments)
        if isinstance(reply, Blocked):  # inside MULTI a blocking read does not block
            reply = reply.timeout_reply
        replies.append(reply)
    return replies


def watch(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    context.watches.watch(client, arguments[1:])
    return OK


def unwatch(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    context.watches.unwatch(client)
    return OK
