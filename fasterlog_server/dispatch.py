"""The command table, the one place that names the commands (each one's arity, flags, handler
and hot lane), and how a batch of commands runs.

Rules:
1. Authentication, then the name, then the arity are checked before a command runs or is
   queued by MULTI, with Redis's error texts; any of them failing inside MULTI makes EXEC
   answer EXECABORT. Before AUTH only the NO_AUTH commands run.
2. Inside MULTI every command is queued, except the NOT_QUEUED ones (MULTI, EXEC, DISCARD,
   WATCH, QUIT, RESET), which run at once, and the NO_MULTI ones (KV.CHECKPOINT,
   LOG.TRUNCATE), refused with Redis's text for SAVE: they commit a log themselves, which
   would break EXEC's one atomic batch per log (EXEC then answers EXECABORT).
3. Hot lanes: GET, plain SET, and `XADD key * field value` on an existing stream each have a
   lane (context.Lane), taken outside MULTI by an authenticated client. Whether a command
   takes its lane is decided once, by the lane itself: `run_sync` tries it for each command
   of a batch; the connection tries it for a request that is one command alone (and then runs
   that batch with `lanes=False`); for such a request the XADD lane has a C form too, tried on
   the received bytes before they are split (connection.py), which takes every frame the
   Python form takes and more (up to 32 field-value pairs), so a frame it declines goes
   straight to the handler.
4. COMMITTED_READS commands (XREAD, XREADGROUP) see only committed entries: a batch stops
   before one when the client has written or records are pending (the caller commits, then
   runs on), so a pipelined XADD then XREAD reads its own write, as with Redis.
5. Replies keep the order of the commands; a command that blocks, or closes the connection
   (QUIT), ends the synchronous run of its batch (`run_sync`).
6. Replies are counted as they are built: a run stops (OUTPUT_FULL) once its replies reach
   REPLIES_BATCH_SIZE_MAX_BYTES, or after a streamed reply (streamed.py), and the caller
   runs the rest once the socket has taken them (connection.py rule 3).
"""

from __future__ import annotations

from . import resp
from .commands import admin, connection, groups, keys, streams, strings, transactions
from .commands.base import call
from .context import (
    BLOCKING,
    COMMITTED_READS,
    NO_AUTH,
    NO_MULTI,
    NOT_QUEUED,
    READONLY,
    WRITE,
    Blocked,
    CommandSpec,
    Handler,
    Lane,
    Reply,
    ServerContext,
)
from .session import Client
from .settings import REPLIES_BATCH_SIZE_MAX_BYTES
from .streamed import Streamed
from .streams import StreamError

__all__ = ["COMMANDS", "LANES", "OUTPUT_FULL", "OutputFull", "dispatch", "run_sync"]


def _spec(name: str, handler: Handler, arity: int | None, *flags: str,
          lane: Lane | None = None) -> CommandSpec:
    return CommandSpec(name.encode(), handler, arity, frozenset(flags), lane)


# Arities are Redis's (n: exactly n words, -n: at least n); None leaves the count to the
# handler, whose checks are then made when it runs (at EXEC inside MULTI), as ours always were.
COMMANDS: dict[bytes, CommandSpec] = {spec.name: spec for spec in (
    # connection
    _spec("PING", connection.ping, -1),
    _spec("ECHO", connection.echo, 2),
    _spec("QUIT", connection.quit, None, NO_AUTH, NOT_QUEUED),
    _spec("AUTH", connection.auth, None, NO_AUTH),
    _spec("HELLO", connection.hello, None, NO_AUTH),
    _spec("SELECT", connection.select, 2),
    _spec("CLIENT", connection.client_, None),
    _spec("RESET", connection.reset, 1, NO_AUTH, NOT_QUEUED),
    # keys of both kinds
    _spec("DBSIZE", keys.dbsize, 1, READONLY),
    _spec("TYPE", keys.type_, 2, READONLY),
    _spec("EXISTS", keys.exists, -2, READONLY),
    _spec("DEL", keys.del_, -2, WRITE),
    _spec("TTL", keys.ttl, 2, READONLY),
    _spec("PTTL", keys.pttl, 2, READONLY),
    _spec("SCAN", keys.scan, -2, READONLY),
    # strings
    _spec("GET", strings.get, 2, READONLY, lane=Lane(strings.get_lane, None)),
    _spec("MGET", strings.mget, -2, READONLY),
    _spec("SET", strings.set_, -3, WRITE, lane=Lane(strings.set_lane, "kv")),
    _spec("MSET", strings.mset, -3, WRITE),
    _spec("INCR", strings.incr, 2, WRITE),
    _spec("DECR", strings.decr, 2, WRITE),
    _spec("INCRBY", strings.incrby, 3, WRITE),
    _spec("DECRBY", strings.decrby, 3, WRITE),
    # transactions
    _spec("MULTI", transactions.multi, 1, NOT_QUEUED),
    _spec("EXEC", transactions.exec_, 1, NOT_QUEUED),
    _spec("DISCARD", transactions.discard, 1, NOT_QUEUED),
    _spec("WATCH", transactions.watch, -2, NOT_QUEUED),
    _spec("UNWATCH", transactions.unwatch, 1),
    # streams
    _spec("XADD", streams.xadd, -5, WRITE, lane=Lane(streams.xadd_lane, "streams")),
    _spec("XLEN", streams.xlen, 2, READONLY),
    _spec("XRANGE", streams.xrange, -4, READONLY),
    _spec("XREVRANGE", streams.xrevrange, -4, READONLY),
    _spec("XDEL", streams.xdel, -3, WRITE),
    _spec("XTRIM", streams.xtrim, -4, WRITE),
    _spec("XREAD", streams.xread, -4, READONLY, BLOCKING, COMMITTED_READS),
    # consumer groups
    _spec("XGROUP", groups.xgroup, -2, WRITE),
    _spec("XREADGROUP", groups.xreadgroup, -7, WRITE, BLOCKING, COMMITTED_READS),
    _spec("XACK", groups.xack, -4, WRITE),
    _spec("XPENDING", groups.xpending, -3, READONLY),
    _spec("XCLAIM", groups.xclaim, -6, WRITE),
    _spec("XAUTOCLAIM", groups.xautoclaim, -6, WRITE),
    _spec("XINFO", groups.xinfo, -2, READONLY),
    # administration and durability
    _spec("COMMAND", admin.command, None),
    _spec("INFO", admin.info, None),
    _spec("CONFIG", admin.config, -2),
    _spec("WAITAOF", admin.waitaof, 4, BLOCKING),
    _spec("WAIT", admin.wait, 3, BLOCKING),
    _spec("KV.CHECKPOINT", admin.kv_checkpoint, 1, NO_MULTI),
    _spec("LOG.TRUNCATE", admin.log_truncate, 2, WRITE, NO_MULTI),
    _spec("LOG.COMMIT", admin.log_commit, 1),
    _spec("LOG.INFO", admin.log_info, 1),
)}
# The entries with a hot lane (rule 3), by name.
LANES: dict[bytes, Lane] = {name: spec.lane for name, spec in COMMANDS.items()
                            if spec.lane is not None}
_COMMITTED_READS = frozenset(name for name, spec in COMMANDS.items()
                             if COMMITTED_READS in spec.flags)
_DATA_FLAGS = frozenset((READONLY, WRITE, BLOCKING))  # what a reload refuses (fence.py)
_NOAUTH = resp.ErrorReply(b"NOAUTH Authentication required.")
_NOT_IN_MULTI = resp.ErrorReply(b"ERR Command not allowed inside a transaction")


def dispatch(context: ServerContext, client: Client, arguments: list[bytes],
             name: bytes) -> tuple[Reply, bool]:
    """Runs (or, inside MULTI, queues) one command; `name` is its first word in upper case.
    Returns (reply, close the connection after it)."""
    spec = COMMANDS.get(name)
    if not client.authenticated and (spec is None or NO_AUTH not in spec.flags):
        if client.multi is not None:
            client.multi_error = True
        return _NOAUTH, False
    if spec is None:
        if client.multi is not None:
            client.multi_error = True
        text = b" ".join(b"'%s'" % a[:64] for a in arguments[1:4])
        return resp.ErrorReply(b"ERR unknown command '%s', with args beginning with: %s"
                               % (arguments[0][:64], text)), False
    arity = spec.arity
    if arity is not None and (len(arguments) != arity if arity > 0
                              else len(arguments) < -arity):
        if client.multi is not None:
            client.multi_error = True
        return resp.ErrorReply(b"ERR wrong number of arguments for '%s' command"
                               % name.lower()), False
    if context.fence.active:  # the logs cannot take writes (fence.py)
        flags = spec.flags
        refused = context.fence.refuse(
            client, name, WRITE in flags, not flags.isdisjoint(_DATA_FLAGS),
            name == b"EXEC" and client.multi is not None and any(
                WRITE in COMMANDS[queued[0].upper()].flags for queued in client.multi))
        if refused is not None:
            return refused, False
    if client.multi is not None and NOT_QUEUED not in spec.flags:
        if NO_MULTI in spec.flags:  # rule 2
            client.multi_error = True
            return _NOT_IN_MULTI, False
        return transactions.queue(context, client, arguments), False  # within its bounds
    return call(context, client, spec.handler, arguments)


class OutputFull:
    """The type of OUTPUT_FULL: run_sync stopped because its replies are due first (rule 6)."""

    def __repr__(self) -> str:
        return "OUTPUT_FULL"


OUTPUT_FULL = OutputFull()


def run_sync(context: ServerContext, client: Client, commands: list[list[bytes]], index: int,
             replies: list[bytes | Streamed], lanes: bool = True,
             ) -> tuple[int, bool, Blocked | OutputFull | None]:
    """Runs `commands[index:]` while none needs an await, appending encoded replies.

    Returns (next index, close, blocked): it stops before a read that must first see this
    batch's writes committed (rule 4: the caller commits, then calls again at the same
    index), after a command that blocks (the caller commits, waits, and appends its reply),
    after a command that closes the connection, once its replies are due first (rule 6:
    blocked is OUTPUT_FULL, and a Streamed reply is the last one), or at the end.
    `lanes=False`: the caller already decided that the commands take no lane (rule 3)."""
    stream_store = context.streams
    protocol = client.protocol
    count = len(commands)
    size = 0  # of the replies built by this run (rule 6)
    while index < count:
        arguments = commands[index]
        name = arguments[0].upper()
        if client.multi is None:
            if lanes and client.authenticated:
                lane = LANES.get(name)
                if lane is not None:
                    try:
                        reply = lane.run(context, client, arguments)
                    except StreamError as error:
                        reply = resp.encode(resp.ErrorReply(str(error)), protocol)
                    if reply is not None:
                        index += 1
                        replies.append(reply)
                        size += len(reply)
                        if size >= REPLIES_BATCH_SIZE_MAX_BYTES and index < count:
                            return index, False, OUTPUT_FULL
                        continue
            if name in _COMMITTED_READS and (client.wrote or stream_store.pending_count):
                return index, False, None
        reply, close = dispatch(context, client, arguments, name)
        index += 1
        if isinstance(reply, Blocked):
            return index, close, reply
        if reply.__class__ is Streamed:
            replies.append(reply)
            return index, close, OUTPUT_FULL
        encoded = resp.encode(reply, client.protocol)
        replies.append(encoded)
        protocol = client.protocol
        if close:
            return index, True, None
        size += len(encoded)
        if size >= REPLIES_BATCH_SIZE_MAX_BYTES and index < count:
            return index, False, OUTPUT_FULL
    return index, False, None
