"""Transactions: MULTI, DISCARD, EXEC, WATCH, UNWATCH.

MULTI queues (dispatch.py refuses unknown commands and wrong arities at queue time, which makes
EXEC answer EXECABORT), within the bounds multi_queue_count_max and multi_queue_size_max_bytes
(settings.py): past either the queue is dropped, every later command is answered with the same
error, and EXEC answers EXECABORT. EXEC runs the queue with nothing in between. WATCH marks
the client dirty on any write to a watched key (notify.Watches); EXEC of a dirty client answers
nil. Blocking reads inside EXEC do not block.

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
from ..settings import MULTI_QUEUED_ARGUMENT_OVERHEAD_BYTES
from ..streamed import ReplyTooLarge, Streamed, size_estimate
from .base import OK, CloseAfter, call

_QUEUED = resp.SimpleString(b"QUEUED")


def multi(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    client.multi, client.multi_error = [], False
    client.multi_size_bytes, client.multi_overflowed = 0, False
    return OK


def queue(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    """Queues one command inside MULTI (dispatch.py), within the queue's bounds."""
    queued = client.multi
    assert queued is not None, "queue outside MULTI"
    settings = context.settings
    size = sum(map(len, arguments)) + MULTI_QUEUED_ARGUMENT_OVERHEAD_BYTES * len(arguments)
    if not client.multi_overflowed and len(queued) < settings.multi_queue_count_max and \
            client.multi_size_bytes + size <= settings.multi_queue_size_max_bytes:
        queued.append(arguments)
        client.multi_size_bytes += size
        return _QUEUED
    queued.clear()  # the transaction is discarded: what it held is given back now
    client.multi_error = client.multi_overflowed = True
    client.multi_size_bytes = 0
    return resp.ErrorReply(
        b"ERR MULTI queue over its bounds (multi_queue_count_max %d commands, "
        b"multi_queue_size_max_bytes %d): transaction discarded, EXEC answers EXECABORT"
        % (settings.multi_queue_count_max, settings.multi_queue_size_max_bytes))


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
    # The reply is built whole, so it is bounded as it is built: past the client's output
    # limit the rest of the queue still runs (the transaction is atomic) but no more of the
    # reply is kept, and the client gets an error and is disconnected, as Redis disconnects a
    # client past its client-output-buffer-limit (it builds the reply first; this never does).
    budget = [context.settings.output_buffer_size_max_bytes]
    replies: list[Any] | None = []
    for queued_arguments in queued:
        handler = context.commands[queued_arguments[0].upper()].handler
        reply, _ = call(context, client, handler, queued_arguments)
        if replies is None:
            continue  # over the limit: the commands run, their replies are dropped
        if isinstance(reply, Blocked):  # inside MULTI a blocking read does not block
            reply = reply.timeout_reply
        elif isinstance(reply, Streamed):  # inside EXEC's reply it is built whole
            try:
                reply = reply.whole(budget)
            except ReplyTooLarge:
                replies = None
                continue
        else:
            budget[0] -= size_estimate(reply)
        if budget[0] < 0:
            replies = None
            continue
        replies.append(reply)
    if replies is None:
        return CloseAfter(resp.ErrorReply(
            b"ERR EXEC reply over the client's output buffer limit (%d bytes): the "
            b"transaction ran, the connection is closed"
            % context.settings.output_buffer_size_max_bytes))
    return replies


def watch(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    context.watches.watch(client, arguments[1:])
    return OK


def unwatch(context: ServerContext, client: Client, arguments: list[bytes]) -> Any:
    context.watches.unwatch(client)
    return OK
