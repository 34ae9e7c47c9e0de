"""The RESP server: Redis Streams on a fasterlog log, with durable acknowledgements.

Rules:
1. A write is answered only after the group commit that covers it, so an acknowledged XADD
   survives kill -9 and power loss. `fsync="everysec"` answers at once and commits every second:
   for comparison with redis-server's default, documented as not durable per reply.
2. A connection's commands are answered in order; the writes of one pipelined read share one
   commit, and the writes of every connection that arrive while a commit runs share the next
   one: one append and one sync for all of them. With fsync always the event loop's thread
   commits, after the loop iteration that brought the writes (`_LoopCommitter`, as
   redis-server's appendfsync always); otherwise a worker thread here commits (`_Committer`).
   Connections are asyncio Protocols (`_Connection`): commands run inside `data_received`
   (whole commands split from the received bytes in C, fasterlog_server/csrc/resp_split.c; a lone
   `XADD key * field value ...` goes straight to its pending record, fasterlog_server/csrc/xadd_lane.c),
   so a read is answered without a task switch; a batch that must wait (its commit, a blocking read)
   holds the connection's later input until it is answered.
3. Every buffer is bounded: the codec's limits (bulk length, arguments, inline size, query
   buffer), the commands taken from one read (`pipeline_depth_max`), and a slow reader's
   output buffer (`output_buffer_size_max_bytes`): past it the client is disconnected.
4. A malformed frame gets -ERR and a closed connection; no input crashes the server.
5. The server binds 127.0.0.1 unless told otherwise, and refuses any other address without a
   password. Passwords are compared in constant time.
6. Readers that wait for news (XREAD, XREADGROUP) see an entry only once it is committed. A
   blocked reader waits on a future per key; a batch that wrote to a key resolves that key's
   futures after its commit, and the woken reader looks again (it may find that another
   reader took the entries first, and then waits on). Blocking never holds the event loop:
   the connection's batch awaits, other connections go on. A blocked client that disconnects is
   noticed when its wait ends (BLOCK 0: at the next write to one of its keys).
7. Two logs: streams and consumer groups in the log the server is given, Redis strings in a
   kvlayer KVStore in its `kv` subdirectory (keyvalues.py). Commands change in-memory state at
   once and leave their records pending; at the end of a pipelined read (or before anything
   that must see the log) the connection asks the logs it wrote for a commit, and each log's
   committer appends all pending records (of every connection waiting) as one atomic batch
   (once per loop iteration, or just before its sync), then answers them all. So a pipeline, and a MULTI/EXEC inside it, is
   all-or-nothing per log after a crash. (With fsync everysec the batch appends at once.)
8. Transactions: MULTI queues (arity and unknown commands are refused at queue time and make
   EXEC answer EXECABORT); EXEC runs the queue with nothing in between. WATCH marks the client
   dirty on any write to a watched key, of either kind, by anyone (itself included, as Redis);
   EXEC of a dirty client answers nil. Blocking reads inside EXEC do not block.
9. WAITAOF answers [1, 0] after the batch's commit of both logs (forced with fsync everysec);
   WAIT answers 0 (no replicas); both wait out their timeout when asked for replicas.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import ipaddress
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fasterlog import FasterLog
from fasterlog.errors import FasterLogError
from kvlayer import KVStore, key_hash

from . import resp
from .errors import RemoteProtocolError
from .groups import GroupStore, lag, now_ms
from .keyvalues import KeyValues
from .streams import ID_MAX, StreamError, StreamStore, parse_id

__all__ = ["Server", "ServerSettings"]

_logger = logging.getLogger("fasterlog.service")
REDIS_VERSION = b"7.4.0"
READ_SIZE_BYTES = 64 << 10  # buffered input past which a busy connection stops reading
# The output buffer past which commands stop running until the client reads (back-pressure);
# the hard limit, past which it is disconnected, is output_buffer_size_max_bytes.
OUTPUT_HIGH_WATER_BYTES = 64 << 10


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 6380
    requirepass: str | None = None
    fsync: str = "always"  # or "everysec"
    limits: resp.RespLimits = field(default_factory=lambda: resp.RespLimits(
        bulk_size_max_bytes=64 << 20, query_buffer_size_max_bytes=256 << 20))
    pipeline_depth_max: int = 10_000
    output_buffer_size_max_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "everysec"):
            raise ValueError(f"fsync must be 'always' or 'everysec', not {self.fsync!r}")
        if not _is_loopback(self.host) and not self.requirepass:
            raise ValueError(f"refusing to listen on {self.host}: a non-loopback address "
                             "needs --requirepass")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CommandError(Exception):
    """An error reply; the message is the full Redis error text (e.g. "ERR syntax error")."""


@dataclass
class Client:
    id: int
    authenticated: bool
    protocol: int = 2
    name: bytes | None = None
    wrote: bool = False  # commit the logs before answering, even with nothing flushed
    sync_required: bool = False  # commit even with fsync everysec (WAITAOF)
    written_keys: set[bytes] = field(default_factory=set)  # streams to wake readers of
    multi: list[list[bytes]] | None = None  # MULTI's queued commands
    multi_error: bool = False  # a command failed to queue: EXEC answers EXECABORT
    watched: set[bytes] = field(default_factory=set)
    dirty: bool = False  # a watched key changed: EXEC answers nil

    def __hash__(self) -> int:
        return self.id


@dataclass
class Blocked:
    """A command that found nothing and may wait: `attempt()` returns the reply, or None for
    "still nothing"; `timeout_ms` 0 waits forever. The server awaits it between commands."""
    keys: list[bytes]
    timeout_ms: int
    attempt: Callable[[], Any]
    timeout_reply: Any = resp.NULL_ARRAY


class _Committer:
    """Group commit of one log at the server: every caller of `commit()` is answered by a
    commit that started after it called, and callers that arrive while a commit runs share the
    next one. One commit at a time per log, in a worker thread (the sync releases the GIL)."""

    def __init__(self, commit: Callable[[], object],
                 prepare: Callable[[], object] = lambda: None) -> None:
        self._commit = commit
        self._prepare = prepare  # on the event loop, just before each commit: the append
        # Futures (request) and connections (enlist), answered in arrival order.
        self._waiters: list[Any] = []
        self._running = False
        # Callers served and syncs run: requests_count / commits_count is the group size.
        self.requests_count = 0
        self.commits_count = 0
        self.commit_seconds_total = 0.0  # inside the worker: the append's write and sync

    def _timed_commit(self) -> None:
        started = time.perf_counter()
        try:
            self._commit()
        finally:
            self.commit_seconds_total += time.perf_counter() - started

    def request(self) -> asyncio.Future[None]:
        """A future resolved by the next commit that starts after this call."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self.requests_count += 1
        if not self._running:
            self._running = True
            loop.create_task(self._run())
        return waiter

    def enlist(self, connection: _Connection) -> None:
        """As `request`, for the connection path's common write: the next commit calls
        `connection._commit_done(error)` directly, with no future, done callback or extra
        loop iteration per request (a group commit answers dozens of connections)."""
        self._waiters.append(connection)
        self.requests_count += 1
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._run())

    async def commit(self) -> None:
        await self.request()

    @staticmethod
    def _answer(waiters: list[Any], error: BaseException | None) -> None:
        for waiter in waiters:
            if isinstance(waiter, asyncio.Future):
                if not waiter.done():
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(error)
            else:
                waiter._commit_done(error)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiters:
                waiters, self._waiters = self._waiters, []
                self.commits_count += 1
                try:
                    # Every connection's pending records in one append, then one sync.
                    self._prepare()
                    await loop.run_in_executor(None, self._timed_commit)
                except Exception as error:  # a failed commit fences the log: tell everyone
                    self._answer(waiters, error)
                    continue
                self._answer(waiters, None)
        finally:
            self._running = False


# How long a commit may wait for more waiters (_LoopCommitter): loop iterations, and time since
# its first waiter.
COMMIT_GATHER_ITERATIONS_MAX = 8
COMMIT_GATHER_MAX_S = 0.001


class _LoopCommitter:
    """Group commit for `fsync always`, on the event loop's own thread, as redis-server's
    `appendfsync always` does it: the waiters' records are appended with one call and synced
    with one write (pwritev2 with RWF_DSYNC, see the core's flush_and_sync_io_locked), then
    every waiter is answered, all in one callback after the loop iteration that enlisted them.

    Why not a thread: handing each commit to another thread (the log's own commit thread, or
    an executor) and back costs wake-ups across CPUs, which on this kind of machine cost more
    CPU than the sync itself: serving 50 clients on 2 CPUs, syncing here answered 15-35% more
    writes per second (bench/bench_service.py). The price is that the loop does nothing else
    during a sync (about 130 us): a read waits that long at most, once per commit.

    Gathering: while the last loop iteration brought new waiters, the commit waits one more
    iteration (at most COMMIT_GATHER_ITERATIONS_MAX, and not once COMMIT_GATHER_MAX_S have
    passed since its first waiter), so clients whose requests arrive one by one share a sync
    instead of splitting into cohorts of a few each. A lone client never waits: an iteration
    that brings nobody new ends the gathering. Same interface as _Committer."""

    def __init__(self, log: FasterLog, prepare: Callable[[], object]) -> None:
        self._log = log
        self._prepare = prepare  # the append of every waiter's pending records
        self._enlisted: list[Any] = []  # futures (request) and connections (enlist)
        self._scheduled = False
        self._seen_count = 0  # waiters seen by the last gathering check
        self._iterations_count = 0
        self._first_enlisted_s = 0.0
        self.requests_count = 0
        self.commits_count = 0
        self.commit_seconds_total = 0.0  # the appends and syncs

    def request(self) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.enlist(waiter)
        return waiter

    async def commit(self) -> None:
        await self.request()

    def enlist(self, waiter: Any) -> None:
        """As _Committer.enlist: the commit calls `waiter._commit_done(error)` directly (or
        resolves the future)."""
        self._enlisted.append(waiter)
        self.requests_count += 1
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            self._seen_count = 1
            self._iterations_count = 0
            self._first_enlisted_s = loop.time()
            loop.call_soon(self._gather)

    def _gather(self) -> None:
        count = len(self._enlisted)
        if count > self._seen_count and \
                self._iterations_count < COMMIT_GATHER_ITERATIONS_MAX:
            loop = asyncio.get_running_loop()
            if loop.time() - self._first_enlisted_s < COMMIT_GATHER_MAX_S:
                self._seen_count = count
                self._iterations_count += 1
                loop.call_soon(self._gather)
                return
        self._scheduled = False
        self._run()

    def close(self) -> None:
        """After the server's last commit: answers those still enlisted (their records were
        flushed and committed by it)."""
        self._run()

    def _run(self) -> None:
        waiters, self._enlisted = self._enlisted, []
        if not waiters:
            return
        self.commits_count += 1
        started = time.perf_counter()
        try:
            self._prepare()
            self._log.commit()
        except Exception as error:  # noqa: BLE001 - a failed append or sync fences the log:
            # every waiter gets the error, later writes are refused
            self.commit_seconds_total += time.perf_counter() - started
            _Committer._answer(waiters, error)
            return
        self.commit_seconds_total += time.perf_counter() - started
        _Committer._answer(waiters, None)


def open_log(directory: str, settings: ServerSettings, **log_settings: Any) -> FasterLog:
    """The stream log as the server opens it (the CLI and tests share this)."""
    return FasterLog.open(directory, **log_settings)


_NOTHING_HELD: tuple[Any, bool] = ((), False)


class _Connection(asyncio.Protocol):
    """One client: bytes in through `data_received`, replies out through `transport.write`.

    Commands run synchronously inside `data_received` for as long as none needs an await:
    reads are answered there, without a task switch. A batch that must wait (for its commit,
    or in a blocking read) hands over to a future callback or a task; until it is done,
    further input is only buffered (past READ_SIZE_BYTES reading pauses), so replies keep
    their order and a connection never has two batches in flight. Back-pressure: while the
    transport's output buffer is over its high-water mark no command runs; past
    `output_buffer_size_max_bytes` the slow reader is disconnected."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.client = Client(next(server._client_ids),
                             authenticated=not server.settings.requirepass)
        self.codec = resp.RespReader(server.settings.limits,
                                     authentication_required=not self.client.authenticated)
        self.transport: asyncio.Transport | None = None
        self._busy = False  # a batch waits for its commit or in a blocking read
        # While a batch waits for its commits: how many are due, the first error, the replies.
        self._commit_waits_count = 0
        self._commit_error: BaseException | None = None
        self._held: tuple[Any, bool] = _NOTHING_HELD
        self._blocked_task: asyncio.Task[None] | None = None  # ... in a blocking read
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False

    # ------------------------------------------------------------ transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER_BYTES)  # type: ignore[union-attr]
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.unwatch(self.client)
        self.server._connections.discard(self)
        if self._blocked_task is not None:  # a blocked reader that left stops waiting now
            self._blocked_task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._busy or self._writing_paused:
            try:
                self.codec.feed(data)
            except RemoteProtocolError as error:
                self._protocol_error(error)
                return
            if not self._reading_paused and \
                    self.codec.buffered_size_bytes >= READ_SIZE_BYTES:
                self._reading_paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]
            return
        server = self.server
        client = self.client
        # The commonest requests of all, one GET, SET or `XADD key * field value ...` from a
        # client that waits for its reply (redis-benchmark -c 50, a cache, a producer), run
        # here as _pump would run them, without its bookkeeping for batches of any shape. A
        # write waits for its commit like any batch (fsync always only: with everysec _pump
        # replies at once).
        lone = client.multi is None and client.authenticated and not server.closing and \
            not self._eof and not client.sync_required and not self.codec.buffered_size_bytes
        if lone and server.fsync_always and server.xadd_lane_enabled and (
                data.startswith(b"$4\r\n", 4) or data.startswith(b"$4\r\n", 5)):
            # An XADD with `*` (and up to 32 field-value pairs) from the received bytes to its
            # pending record in one C call (StreamStore.add_lone); None when it is not exactly
            # that frame alone. (Above: a command of four letters, checked in C.)
            limits = server.settings.limits
            taken = server.streams.add_lone(data, limits.bulk_size_max_bytes,
                                            limits.arguments_count_max)
            if taken is not None:
                client.written_keys.add(taken[0])  # wakes its blocked readers once committed
                self._answer_after_commit(taken[1], server._log_committer)
                return
        try:
            # The common read: whole commands, split straight from `data` (resp.py).
            commands = self.codec.feed_and_take(data, server.settings.pipeline_depth_max)
        except RemoteProtocolError as error:
            self._protocol_error(error)
            return
        if lone and len(commands) == 1 and self._fast_lane(commands[0]):
            return
        self._pump(commands)

    def _fast_lane(self, command: list[bytes]) -> bool:
        """data_received's lane for one lone GET, SET or XADD; False to leave it to _pump."""
        server = self.server
        size = len(command)
        if size == 2:
            if command[0].upper() != b"GET" or command[1] in server.streams.streams:
                return False
            self._send([server.get_reply(self.client, command[1])], False)
            return True
        if not server.fsync_always:
            return False
        if size == 5:
            streams = server.streams
            stream = streams.streams.get(command[1])
            if stream is None or command[2] != b"*" or command[0].upper() != b"XADD":
                return False
            try:
                stream_id = streams.add_now(command[1], stream, command[3:])
            except StreamError:
                return False  # nothing written: _pump answers the error
            self.client.written_keys.add(command[1])  # wakes its blocked readers once committed
            reply = b"$%d\r\n%s\r\n" % (len(stream_id), stream_id)
            committer = server._log_committer
        elif size == 3:
            if command[0].upper() != b"SET" or command[1] in server.streams.streams:
                return False
            try:
                server.kv.put(command[1], command[2], None)
            except StreamError:
                return False  # nothing written (a value too big): _pump answers the error
            server.touch(command[1])
            reply = b"+OK\r\n"
            committer = server._kv_committer
        else:
            return False
        self._answer_after_commit(reply, committer)
        return True

    def _answer_after_commit(self, reply: bytes, committer: Any) -> None:
        """A lone write's wait: `reply` goes out when `committer`'s commit calls
        _commit_done, as for any batch (which meanwhile holds further input)."""
        self._busy = True
        self._commit_waits_count = 1
        self._held = ([reply], False)
        committer.enlist(self)

    def eof_received(self) -> bool | None:
        # The client will send no more: answer what it sent (a batch may still be waiting
        # for its commit), then close.
        # A blocked reader that hangs up is gone (as in Redis): stop waiting at once.
        self._eof = True
        if not self._busy or self._blocked_task is not None:
            self.close()
        return True

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if not self._busy and not self._closed:
            self._pump()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------ running commands

    def _pump(self, commands: list[list[bytes]] | None = None) -> None:
        """Runs `commands` (a batch already taken from the reader), then the whole commands
        buffered, batch by batch (`pipeline_depth_max` commands per batch), until the buffer
        holds none or a batch must wait."""
        server, client, codec = self.server, self.client, self.codec
        depth_max = server.settings.pipeline_depth_max
        while not self._closed and not self._writing_paused and not server.closing:
            if commands is None:
                try:
                    commands = codec.next_commands(depth_max)
                except RemoteProtocolError as error:
                    self._protocol_error(error)
                    return
                if not commands:
                    break
            elif not commands:
                commands = None
                continue
            replies: list[bytes] = []
            client.wrote = False
            marks = (server.streams.writes_count, server.kv.writes_count)
            index, close, blocked = server._run_sync(client, commands, 0, replies)
            codec.authentication_required = not client.authenticated
            if blocked is not None or (index < len(commands) and not close):
                self._busy = True
                asyncio.get_running_loop().create_task(
                    self._go_on(commands, index, replies, blocked))
                return
            try:
                waits_count = server._enlist_batch(self, marks)
            except Exception as error:  # noqa: BLE001 - the append failed: answered as such
                self._send([server._batch_committed(client, error)], True)  # type: ignore[list-item]
                return
            if waits_count:
                # The common write: the group commits call _commit_done, no task or future.
                self._busy = True
                self._commit_waits_count = waits_count
                self._held = (replies, close)
                return
            server._batch_committed(client, None)
            if not self._send(replies, close):
                return
            commands = None
        if self._busy or self._writing_paused or self._closed:
            return
        if self._eof:
            self.close()
        elif self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def _commit_done(self, error: BaseException | None) -> None:
        """Called by a committer this connection's batch enlisted with (one or two: the stream
        log's and the KV log's); the batch is answered when the last of them is done."""
        if error is not None and self._commit_error is None:
            self._commit_error = error
        self._commit_waits_count -= 1
        if self._commit_waits_count:
            return
        error, self._commit_error = self._commit_error, None
        (replies, close), self._held = self._held, _NOTHING_HELD
        self._busy = False
        failure = self.server._batch_committed(self.client, error)
        if failure is not None:
            self._send([failure], True)
        elif self._send(replies, close) and (  # type: ignore[arg-type]
                self._eof or self._reading_paused or self.codec.buffered_size_bytes):
            self._pump()  # input came while the batch waited (else _pump would find none)

    async def _go_on(self, commands: list[list[bytes]], index: int, replies: list[bytes],
                     blocked: Blocked | None) -> None:
        """The rest of a batch that must wait: before a read that must see the batch's
        writes (commit first), or in a blocking read (commit what came before, then wait)."""
        server, client = self.server, self.client
        close = False
        try:
            while True:
                failure = await server._commit_batch(client)
                if failure is not None:
                    replies, close = [failure], True
                    break
                if blocked is not None:
                    self._blocked_task = asyncio.current_task()  # type: ignore[assignment]
                    reply = await server._wait(client, blocked)
                    self._blocked_task = None
                    replies.append(resp.encode(reply, client.protocol))
                index, close, blocked = server._run_sync(client, commands, index, replies)
                self.codec.authentication_required = not client.authenticated
                if close or (blocked is None and index == len(commands)):
                    break
            failure = await server._commit_batch(client)
            if failure is not None:
                replies, close = [failure], True
        except asyncio.CancelledError:
            return  # the client left while blocked
        finally:
            self._busy = False
            self._blocked_task = None
        if self._send(replies, close):
            self._pump()

    def _send(self, replies: list[bytes], close: bool) -> bool:
        """Writes the replies; False when the connection is done (closed, or a slow reader
        over its output buffer limit, disconnected)."""
        transport = self.transport
        if self._closed or transport is None or transport.is_closing():
            return False
        if replies:
            transport.write(b"".join(replies) if len(replies) > 1 else replies[0])
        if transport.get_write_buffer_size() > self.server.settings.output_buffer_size_max_bytes:
            _logger.warning("client %d: output buffer over its limit, closing", self.client.id)
            transport.abort()
            return False
        if close:
            transport.close()
            return False
        return True

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(resp.encode(resp.ErrorReply(b"ERR " + str(error).encode()), 2))
            self.transport.close()


Handler = Callable[["Server", Client, list[bytes]], Any]
_COMMANDS: dict[bytes, Handler] = {}


def command(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _COMMANDS[name.encode()] = handler
        return handler
    return register


class Server:
    """Serves one log directory. `await server.start()`, then `await server.wait_closed()`."""

    def __init__(self, log: FasterLog, settings: ServerSettings = ServerSettings(),
                 kv_store: KVStore | None = None) -> None:
        self.log = log
        self.settings = settings
        self.fsync_always = settings.fsync == "always"  # read per request by the fast lane
        # The lone XADD's C path (StreamStore.add_lone); tests turn it off to compare.
        self.xadd_lane_enabled = True
        self.streams = StreamStore(log, replay=False)
        self.groups = GroupStore(self.streams)
        self.streams.replay()
        self.streams.on_write = self.touch
        # The KV view: its own log in <log>/kv, sized like the stream log (keyvalues.py).
        self._owns_kv_store = kv_store is None
        if kv_store is None:
            sizes = log.settings
            kv_store = KVStore.open(os.path.join(log.path, KV_DIRECTORY_NAME), **{
                name: sizes[name] for name in ("page_size_bytes", "memory_size_bytes",
                                               "segment_size_bytes")})
        self.kv = KeyValues(kv_store)
        # Group commit: on the loop's thread with fsync always, else by a worker thread.
        self._log_committer: _Committer | _LoopCommitter
        self._kv_committer: _Committer | _LoopCommitter
        if self.fsync_always:
            self._log_committer = _LoopCommitter(log, self.streams.flush)
            self._kv_committer = _LoopCommitter(kv_store.log, self.kv.flush)
        else:
            self._log_committer = _Committer(log.commit, self.streams.flush)
            self._kv_committer = _Committer(kv_store.log.commit, self.kv.flush)
        # WATCH: per key, the clients watching it (a write marks them dirty).
        self._watchers: dict[bytes, set[Client]] = {}
        # Blocked readers: per stream key, the futures a commit of a write to it resolves.
        self._waiters: dict[bytes, set[asyncio.Future[None]]] = {}
        self._client_ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._commit_task: asyncio.Task[None] | None = None
        self._expire_task: asyncio.Task[None] | None = None
        self._connections: set[_Connection] = set()
        self.closing = False
        self.port = settings.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.settings.host,
                                                self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._expire_task = asyncio.create_task(self._expire_periodically())
        if self.settings.fsync == "everysec":
            self._commit_task = asyncio.create_task(self._commit_every_second())

    async def close(self) -> None:
        """Stops accepting, commits what was appended, and closes the listening socket and
        the KV store it opened (the caller closes the stream log it passed in)."""
        if self._server is not None:
            self._server.close()
        self.closing = True  # no command runs from here on; replies already due still go out
        for task in (self._commit_task, self._expire_task):
            if task is not None:
                task.cancel()
        loop = asyncio.get_running_loop()
        for flush, commit in ((self.streams.flush, self.log.commit),
                              (self.kv.flush, self.kv.store.commit)):
            try:
                flush()
                await loop.run_in_executor(None, commit)
            except FasterLogError as error:
                # A fenced log: what it refused was answered with an error, never acknowledged;
                # a restart recovers the rest. Closing goes on.
                _logger.error("closing: %s", error)
        for committer in (self._log_committer, self._kv_committer):
            if isinstance(committer, _LoopCommitter):
                committer.close()
        if self._owns_kv_store:
            self.kv.store.close()
        if self._server is not None:
            # After the commits: wait_closed waits for open connections on Python 3.12+.
            for connection in list(self._connections):
                connection.close()
            await self._server.wait_closed()

    async def _commit_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.streams.flush()
            self.kv.flush()
            await asyncio.gather(self._log_committer.commit(), self._kv_committer.commit())

    async def _expire_periodically(self) -> None:
        """Deletes expired keys durably, a bounded number per round (reads already treat them
        as missing; this gives the space back and keeps DBSIZE's count cheap)."""
        while True:
            await asyncio.sleep(EXPIRE_SWEEP_INTERVAL_S)
            expired = self.kv.expired(now_ms(), EXPIRE_SWEEP_KEYS_MAX)
            if not expired:
                continue
            for key in expired:
                self.kv.delete(key)
                self.touch(key)
            self.kv.flush()
            try:
                await self._kv_committer.commit()
            except Exception as error:  # noqa: BLE001 - the next write reports a fenced log
                _logger.error("expiry commit failed: %s", error)

    def touch(self, key: bytes) -> None:
        """A write changed `key`: transactions watching it will fail (WATCH)."""
        watchers = self._watchers.get(key)
        if watchers:
            for watcher in watchers:
                watcher.dirty = True

    def watch(self, client: Client, keys: list[bytes]) -> None:
        for key in keys:
            self._watchers.setdefault(key, set()).add(client)
            client.watched.add(key)

    def unwatch(self, client: Client) -> None:
        for key in client.watched:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self._watchers[key]
        client.watched.clear()
        client.dirty = False

    def _run_sync(self, client: Client, commands: list[list[bytes]], index: int,
                  replies: list[bytes]) -> tuple[int, bool, Blocked | None]:
        """Runs `commands[index:]` while none needs an await, appending encoded replies.

        Returns (next index, close, blocked): it stops before a read that must first see this
        batch's writes committed (XREAD after XADD: the caller commits, then calls again at
        the same index), after a command that blocks (the caller commits, waits, and appends
        its reply), after a command that closes the connection, or at the end."""
        streams = self.streams
        codec_protocol = client.protocol
        count = len(commands)
        while index < count:
            arguments = commands[index]
            if len(arguments) == 5 and arguments[2] == b"*" and client.multi is None and \
                    client.authenticated and arguments[0].upper() == b"XADD":
                # The hot path, `XADD key * field value` on an existing stream: no dispatch,
                # no reply objects (rule 2: the record joins the batch's one append).
                stream = streams.streams.get(arguments[1])
                if stream is not None:
                    index += 1
                    try:
                        stream_id = streams.add_now(arguments[1], stream, arguments[3:])
                    except StreamError as error:
                        replies.append(resp.encode(resp.ErrorReply(str(error)),
                                                   codec_protocol))
                        continue
                    client.written_keys.add(arguments[1])
                    replies.append(b"$%d\r\n%s\r\n" % (len(stream_id), stream_id))
                    continue
            if len(arguments) == 2 and client.multi is None and client.authenticated and \
                    arguments[0].upper() == b"GET" and arguments[1] not in streams.streams:
                # The hot read, GET: no dispatch, no reply objects.
                index += 1
                replies.append(self.get_reply(client, arguments[1]))
                continue
            if len(arguments) == 3 and client.multi is None and client.authenticated and \
                    arguments[0].upper() == b"SET" and arguments[1] not in streams.streams:
                # The hot write, plain SET on a string or missing key: _set without options.
                index += 1
                try:
                    _put(self, client, arguments[1], arguments[2], None)
                except StreamError as error:
                    replies.append(resp.encode(resp.ErrorReply(str(error)), codec_protocol))
                    continue
                replies.append(b"+OK\r\n")
                continue
            if (client.wrote or streams.pending_count) and client.multi is None and \
                    arguments[0].upper() in _READS_AFTER_COMMIT:
                # Readers see only committed entries: commit this batch's writes first so a
                # pipelined XADD then XREAD reads its own write, as with Redis.
                return index, False, None
            reply, close = self._dispatch(client, arguments)
            index += 1
            if isinstance(reply, Blocked):
                return index, close, reply
            replies.append(resp.encode(reply, client.protocol))
            codec_protocol = client.protocol
            if close:
                return index, True, None
        return index, False, None

    def get_reply(self, client: Client, key: bytes) -> bytes:
        """GET's encoded reply for a key that is not a stream (the hot paths' GET)."""
        found = self.kv.get(key)
        if found is None:
            return b"_\r\n" if client.protocol == 3 else b"$-1\r\n"
        value = found[0]
        return b"$%d\r\n%s\r\n" % (len(value), value)

    def _flush_batch(self, client: Client,
                     marks: tuple[int, int] | None = None) -> list[asyncio.Future[None]]:
        """The end of a batch: starts the commits its replies must wait for (none with fsync
        everysec, unless WAITAOF asked). With `marks` (the logs' writes counts when the batch
        started) and a commit to wait for, the records stay pending: the committer appends
        those of every connection that waits with one call just before its next commit
        (group commit of the appends too). Otherwise they are appended now (one atomic batch
        per log). Raises if an append fails."""
        if marks is None or (self.settings.fsync != "always" and not client.sync_required):
            wrote_streams = self.streams.flush()
            wrote_kv = self.kv.flush()
        else:
            wrote_streams = self.streams.writes_count != marks[0]
            wrote_kv = self.kv.writes_count != marks[1]
        waits: list[asyncio.Future[None]] = []
        if self.settings.fsync == "always" or client.sync_required:
            # Both committers run in threads, so other connections keep being served.
            if wrote_streams or client.wrote or client.sync_required:
                waits.append(self._log_committer.request())
            if wrote_kv or client.sync_required:
                waits.append(self._kv_committer.request())
        return waits

    def _enlist_batch(self, connection: _Connection, marks: tuple[int, int]) -> int:
        """_flush_batch for the connection path: enlists the connection with the commits its
        batch waits for (its records stay pending, for the committer's one append) and
        returns how many; 0 when none is due (fsync everysec, or a batch that wrote nothing).
        Raises if an append fails."""
        client = connection.client
        if self.settings.fsync != "always" and not client.sync_required:
            self.streams.flush()
            self.kv.flush()
            return 0
        count = 0
        if self.streams.writes_count != marks[0] or client.wrote or client.sync_required:
            self._log_committer.enlist(connection)
            count += 1
        if self.kv.writes_count != marks[1] or client.sync_required:
            self._kv_committer.enlist(connection)
            count += 1
        return count

    def _batch_committed(self, client: Client, error: BaseException | None) -> bytes | None:
        """After the batch's commits: wakes the readers of the streams it wrote, or returns
        the error reply of a failed append or commit (which fences the log)."""
        client.wrote = client.sync_required = False
        if error is not None:
            _logger.error("commit failed: %s", error)
            return resp.encode(resp.ErrorReply(b"ERR commit failed: " +
                                               " ".join(str(error).split()).encode()),
                               client.protocol)
        written_keys = client.written_keys
        if written_keys:
            if self._waiters:  # a blocked reader
                for key in written_keys:
                    for waiter in self._waiters.pop(key, ()):
                        if not waiter.done():
                            waiter.set_result(None)
            written_keys.clear()
        return None

    async def _commit_batch(self, client: Client) -> bytes | None:
        """`_flush_batch`, awaits the commits, then `_batch_committed`."""
        try:
            waits = self._flush_batch(client)
            if len(waits) == 1:
                await waits[0]
            elif waits:
                await asyncio.gather(*waits)
        except Exception as error:  # a failed commit fences the log: answer every write
            return self._batch_committed(client, error)
        return self._batch_committed(client, None)

    def visible_until_address(self) -> int:
        """Entries below this address are shown to XREAD and XREADGROUP: committed ones, or
        all appended ones when replies do not wait for syncs (fsync everysec)."""
        if self.settings.fsync == "always":
            return self.log.committed_until_address
        return self.log.tail_address

    async def _wait(self, client: Client, blocked: Blocked) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if blocked.timeout_ms == 0 else loop.time() + blocked.timeout_ms / 1000
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return blocked.timeout_reply
            waiter: asyncio.Future[None] = loop.create_future()
            for key in blocked.keys:
                self._waiters.setdefault(key, set()).add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return blocked.timeout_reply
            finally:
                for key in blocked.keys:
                    waiters = self._waiters.get(key)
                    if waiters is not None:
                        waiters.discard(waiter)
                        if not waiters:
                            del self._waiters[key]
            try:
                reply = blocked.attempt()
            except (CommandError, StreamError) as error:
                return resp.ErrorReply(str(error).encode())
            if reply is not None:
                return reply
            # What the attempt wrote (a new consumer) is committed before waiting again.
            failure = await self._commit_batch(client)
            if failure is not None:
                return resp.ErrorReply(failure[1:-2])

    def _dispatch(self, client: Client, arguments: list[bytes]) -> tuple[Any, bool]:
        name = arguments[0].upper()
        if not client.authenticated and name not in (b"AUTH", b"HELLO", b"QUIT", b"RESET"):
            if client.multi is not None:
                client.multi_error = True
            return resp.ErrorReply(b"NOAUTH Authentication required."), False
        handler = _COMMANDS.get(name)
        if handler is None:
            if client.multi is not None:
                client.multi_error = True
            text = b" ".join(b"'%s'" % a[:64] for a in arguments[1:4])
            return resp.ErrorReply(b"ERR unknown command '%s', with args beginning with: %s"
                                   % (arguments[0][:64], text)), False
        arity = _ARITY.get(name)
        if arity is not None and (len(arguments) != arity if arity > 0
                                  else len(arguments) < -arity):
            if client.multi is not None:
                client.multi_error = True
            return resp.ErrorReply(b"ERR wrong number of arguments for '%s' command"
                                   % name.lower()), False
        if client.multi is not None and name not in _TRANSACTION_CONTROL:
            client.multi.append(arguments)
            return _QUEUED, False
        return self.call(client, handler, arguments)

    def call(self, client: Client, handler: Handler, arguments: list[bytes]) -> tuple[Any, bool]:
        try:
            reply = handler(self, client, arguments)
        except (CommandError, StreamError) as error:
            return resp.ErrorReply(" ".join(str(error).split()).encode()), False
        if reply is _QUIT:
            return resp.SimpleString(b"OK"), True
        return reply, False

    def check_password(self, password: bytes) -> bool:
        expected = (self.settings.requirepass or "").encode()
        return bool(expected) and hmac.compare_digest(password, expected)


_QUIT = object()
_READS_AFTER_COMMIT = frozenset({b"XREAD", b"XREADGROUP"})
_TRANSACTION_CONTROL = frozenset({b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"})
OK = resp.SimpleString(b"OK")
_QUEUED = resp.SimpleString(b"QUEUED")
KV_DIRECTORY_NAME = "kv"
EXPIRE_SWEEP_INTERVAL_S = 0.1
EXPIRE_SWEEP_KEYS_MAX = 1000
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
# Redis's arities, checked before a command runs or is queued by MULTI: n exactly n words,
# -n at least n.
_ARITY: dict[bytes, int] = {
    b"GET": 2, b"SET": -3, b"MGET": -2, b"MSET": -3, b"DEL": -2, b"EXISTS": -2, b"TYPE": 2,
    b"INCR": 2, b"INCRBY": 3, b"DECR": 2, b"DECRBY": 3, b"SCAN": -2, b"TTL": 2, b"PTTL": 2,
    b"DBSIZE": 1, b"XADD": -5, b"XLEN": 2, b"XRANGE": -4, b"XREVRANGE": -4, b"XDEL": -3,
    b"XTRIM": -4, b"XREAD": -4, b"XREADGROUP": -7, b"XACK": -4, b"XPENDING": -3,
    b"XCLAIM": -6, b"XAUTOCLAIM": -6, b"XINFO": -2, b"XGROUP": -2, b"ECHO": 2, b"PING": -1,
    b"WAITAOF": 4, b"WAIT": 3, b"MULTI": 1, b"EXEC": 1, b"DISCARD": 1, b"WATCH": -2,
    b"UNWATCH": 1, b"RESET": 1, b"SELECT": 2, b"CONFIG": -2, b"LOG.TRUNCATE": 2,
    b"KV.CHECKPOINT": 1, b"LOG.COMMIT": 1, b"LOG.INFO": 1}


def _arity(arguments: list[bytes], minimum: int) -> None:
    if len(arguments) < minimum:
        raise CommandError("ERR wrong number of arguments for '%s' command"
                           % arguments[0].decode(errors="replace").lower())


def _integer(text: bytes) -> int:
    """A 64-bit signed integer written as Redis's string2ll accepts it (no spaces, no '+')."""
    value = resp.parse_integer(text)
    if value is None or not _INT64_MIN <= value <= _INT64_MAX:
        raise CommandError("ERR value is not an integer or out of range")
    return value


# ---------------------------------------------------------------------- connection commands


@command("PING")
def _ping(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return arguments[1] if len(arguments) > 1 else resp.SimpleString(b"PONG")


@command("ECHO")
def _echo(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    return arguments[1]


@command("QUIT")
def _quit(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _QUIT


@command("AUTH")
def _auth(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    if not server.settings.requirepass:
        raise CommandError("ERR AUTH <password> called without any password configured for "
                           "the default user. Are you sure your configuration is correct?")
    if len(arguments) > 3 or (len(arguments) == 3 and arguments[1] != b"default") or \
            not server.check_password(arguments[-1]):
        raise CommandError("WRONGPASS invalid username-password pair or user is disabled.")
    client.authenticated = True
    return OK


@command("HELLO")
def _hello(server: Server, client: Client, arguments: list[bytes]) -> Any:
    protocol = client.protocol
    position = 1
    if len(arguments) > 1:
        protocol = _integer(arguments[1])
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        position = 2
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"AUTH" and position + 2 < len(arguments):
            _auth(server, client, [b"AUTH", arguments[position + 1], arguments[position + 2]])
            position += 3
        elif option == b"SETNAME" and position + 1 < len(arguments):
            client.name = arguments[position + 1]
            position += 2
        else:
            raise CommandError("ERR Syntax error in HELLO option '%s'"
                               % option.decode(errors="replace"))
    if not client.authenticated:
        raise CommandError("NOAUTH HELLO must be called with the client already authenticated, "
                           "otherwise the HELLO <proto> AUTH <user> <pass> option can be used")
    client.protocol = protocol
    return resp.Map({b"server": b"redis", b"version": REDIS_VERSION, b"proto": protocol,
                     b"id": client.id, b"mode": b"standalone", b"role": b"master",
                     b"modules": []})


@command("SELECT")
def _select(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    if _integer(arguments[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


@command("CLIENT")
def _client(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    sub = arguments[1].upper()
    if sub == b"SETNAME" and len(arguments) == 3:
        client.name = arguments[2] or None
        return OK
    if sub == b"GETNAME":
        return client.name
    if sub == b"ID":
        return client.id
    if sub == b"SETINFO" and len(arguments) == 4:
        return OK
    raise CommandError("ERR unknown subcommand or wrong number of arguments for 'CLIENT|%s'"
                       % sub.decode(errors="replace").lower())


@command("COMMAND")
def _command(server: Server, client: Client, arguments: list[bytes]) -> Any:
    sub = arguments[1].upper() if len(arguments) > 1 else b""
    if sub == b"COUNT":
        return len(_COMMANDS)
    if sub == b"DOCS":
        return resp.Map()
    if sub == b"INFO":
        return [None for _ in arguments[2:]]
    return []


@command("INFO")
def _info(server: Server, client: Client, arguments: list[bytes]) -> Any:
    state = server.log
    lines = [b"# Server", b"redis_version:" + REDIS_VERSION, b"fasterlog_version:0.1.0",
             b"", b"# Persistence", b"aof_enabled:1",
             b"fasterlog_committed_until:%d" % state.committed_until_address,
             b"", b"# Keyspace", b"db0:keys=%d,expires=0,avg_ttl=0" % len(server.streams.streams)]
    return b"\r\n".join(lines) + b"\r\n"


@command("CONFIG")
def _config(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 3)
    if arguments[1].upper() != b"GET":
        raise CommandError("ERR CONFIG %s is not supported" % arguments[1].decode(errors="replace"))
    import fnmatch

    values = {b"save": b"", b"appendonly": b"yes",
              b"appendfsync": b"always" if server.settings.fsync == "always" else b"everysec"}
    found = resp.Map()
    for pattern in arguments[2:]:
        for key, value in values.items():
            if fnmatch.fnmatchcase(key.decode(), pattern.decode(errors="replace")):
                found[key] = value
    return found


# ---------------------------------------------------------------------- keys of both kinds


def _not_a_string(server: Server, key: bytes) -> None:
    """Stream commands on a string key answer WRONGTYPE, as Redis does."""
    if key not in server.streams.streams and server.kv.exists(key):
        raise CommandError(WRONGTYPE)


def _string(server: Server, key: bytes, now: int | None = None) -> tuple[bytes, int | None] | None:
    """The live string at `key` and its expiry, None if missing; WRONGTYPE for a stream."""
    if key in server.streams.streams:
        raise CommandError(WRONGTYPE)
    return server.kv.get(key, now)


def _delete_stream(server: Server, client: Client, key: bytes) -> bool:
    if server.streams.destroy(key):
        client.written_keys.add(key)  # blocked readers wake: XREADGROUP answers NOGROUP
        return True
    return False


@command("DBSIZE")
def _dbsize(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return len(server.streams.streams) + server.kv.count(now_ms())


@command("TYPE")
def _type(server: Server, client: Client, arguments: list[bytes]) -> Any:
    key = arguments[1]
    if key in server.streams.streams:
        return resp.SimpleString(b"stream")
    return resp.SimpleString(b"string" if server.kv.exists(key) else b"none")


@command("EXISTS")
def _exists(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return sum(1 for key in arguments[1:]
               if key in server.streams.streams or server.kv.exists(key))


@command("DEL")
def _del(server: Server, client: Client, arguments: list[bytes]) -> Any:
    deleted = 0
    for key in dict.fromkeys(arguments[1:]):
        if _delete_stream(server, client, key):
            deleted += 1
        elif server.kv.exists(key):
            server.kv.delete(key)
            server.touch(key)
            deleted += 1
    return deleted


@command("GET")
def _get(server: Server, client: Client, arguments: list[bytes]) -> Any:
    found = _string(server, arguments[1])
    return None if found is None else found[0]


@command("MGET")
def _mget(server: Server, client: Client, arguments: list[bytes]) -> Any:
    now = now_ms()
    values = []
    for key in arguments[1:]:
        found = None if key in server.streams.streams else server.kv.get(key, now)
        values.append(None if found is None else found[0])
    return values


def _put(server: Server, client: Client, key: bytes, value: bytes,
         expire_at_ms: int | None) -> None:
    """SET's write: any other kind of value at `key` is replaced, as Redis does."""
    server.kv.put(key, value, expire_at_ms)  # first: it refuses a value too big for a record
    _delete_stream(server, client, key)
    server.touch(key)


_SET_EXPIRY_OPTIONS = (b"EX", b"PX", b"EXAT", b"PXAT")


@command("SET")
def _set(server: Server, client: Client, arguments: list[bytes]) -> Any:
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
            amount = _integer(arguments[position])
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
        if expire_at_ms > _INT64_MAX:
            raise CommandError("ERR invalid expire time in 'set' command")
    is_stream = key in server.streams.streams
    if is_stream and get:
        raise CommandError(WRONGTYPE)
    # The old value is read only when an option needs it (a plain SET skips the lookup).
    needs_old = get or keep_ttl or condition is not None
    old = None if is_stream or not needs_old else server.kv.get(key, now)
    exists = is_stream or old is not None
    if (condition == b"NX" and exists) or (condition == b"XX" and not exists):
        return None if not get or old is None else old[0]
    if keep_ttl and old is not None:
        expire_at_ms = old[1]
    _put(server, client, key, value, expire_at_ms)
    if get:
        return None if old is None else old[0]
    return OK


@command("MSET")
def _mset(server: Server, client: Client, arguments: list[bytes]) -> Any:
    if len(arguments) % 2 == 0:
        raise CommandError("ERR wrong number of arguments for 'mset' command")
    for position in range(1, len(arguments), 2):
        _put(server, client, arguments[position], arguments[position + 1], None)
    return OK


def _add(server: Server, client: Client, key: bytes, delta: int) -> int:
    found = _string(server, key)
    current, expire_at_ms = 0, None
    if found is not None:
        value = resp.parse_integer(found[0])
        if value is None or not _INT64_MIN <= value <= _INT64_MAX:
            raise CommandError("ERR value is not an integer or out of range")
        current, expire_at_ms = value, found[1]
    result = current + delta
    if not _INT64_MIN <= result <= _INT64_MAX:
        raise CommandError("ERR increment or decrement would overflow")
    server.kv.put(key, b"%d" % result, expire_at_ms)  # INCR keeps the TTL, as Redis
    server.touch(key)
    return result


@command("INCR")
def _incr(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _add(server, client, arguments[1], 1)


@command("DECR")
def _decr(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _add(server, client, arguments[1], -1)


@command("INCRBY")
def _incrby(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _add(server, client, arguments[1], _integer(arguments[2]))


@command("DECRBY")
def _decrby(server: Server, client: Client, arguments: list[bytes]) -> Any:
    delta = _integer(arguments[2])
    if delta == _INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _add(server, client, arguments[1], -delta)


def _ttl(server: Server, key: bytes, unit_ms: int) -> int:
    if key in server.streams.streams:
        return -1
    now = now_ms()
    found = server.kv.get(key, now)
    if found is None:
        return -2
    if found[1] is None:
        return -1
    return (found[1] - now + unit_ms - 1) // unit_ms if unit_ms > 1 else found[1] - now


@command("TTL")
def _ttl_seconds(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _ttl(server, arguments[1], 1000)


@command("PTTL")
def _ttl_ms(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _ttl(server, arguments[1], 1)


@command("SCAN")
def _scan(server: Server, client: Client, arguments: list[bytes]) -> Any:
    """Keys in the order of their 64-bit hash; the cursor is the hash to go on from, so a key
    present for the whole iteration is returned exactly once whatever is written meanwhile.
    Costs a pass over every key per call until kvlayer can walk its index."""
    cursor = resp.parse_integer(arguments[1])
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
            count = _integer(value)
            if count < 1:
                raise CommandError("ERR syntax error")
        elif option == b"TYPE":
            kind = value.lower()
        else:
            raise CommandError("ERR syntax error")
        position += 2
    now = now_ms()
    found: list[tuple[int, bytes, bytes]] = []
    for key in server.streams.streams:
        hashed = key_hash(key)
        if hashed >= cursor:
            found.append((hashed, key, b"stream"))
    for key in server.kv.keys():
        hashed = key_hash(key)
        if hashed >= cursor and key not in server.streams.streams and \
                server.kv.get(key, now) is not None:
            found.append((hashed, key, b"string"))
    found.sort()
    page, rest = found[:count], found[count:]
    next_cursor = rest[0][0] if rest else 0
    keys = [key for _, key, key_kind in page
            if (kind is None or key_kind == kind) and (
                pattern is None or fnmatch.fnmatchcase(key.decode("latin-1"), pattern))]
    return [b"%d" % next_cursor, keys]


# ---------------------------------------------------------------------- transactions


@command("MULTI")
def _multi(server: Server, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    client.multi, client.multi_error = [], False
    return OK


@command("DISCARD")
def _discard(server: Server, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    client.multi, client.multi_error = None, False
    server.unwatch(client)
    return OK


@command("EXEC")
def _exec(server: Server, client: Client, arguments: list[bytes]) -> Any:
    """Runs the queued commands with nothing in between; their records are appended as one
    batch per log at the end of the pipeline (streams.py, keyvalues.py), so after a crash the
    transaction's writes are all there or none (per log)."""
    if client.multi is None:
        raise CommandError("ERR EXEC without MULTI")
    queued, failed, dirty = client.multi, client.multi_error, client.dirty
    client.multi, client.multi_error = None, False
    server.unwatch(client)
    if failed:
        raise CommandError("EXECABORT Transaction discarded because of previous errors.")
    if dirty:
        return resp.NULL_ARRAY
    replies = []
    for queued_arguments in queued:
        handler = _COMMANDS[queued_arguments[0].upper()]
        reply, _ = server.call(client, handler, queued_arguments)
        if isinstance(reply, Blocked):  # inside MULTI a blocking read does not block
            reply = reply.timeout_reply
        replies.append(reply)
    return replies


@command("WATCH")
def _watch(server: Server, client: Client, arguments: list[bytes]) -> Any:
    if client.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    server.watch(client, arguments[1:])
    return OK


@command("UNWATCH")
def _unwatch(server: Server, client: Client, arguments: list[bytes]) -> Any:
    server.unwatch(client)
    return OK


@command("RESET")
def _reset(server: Server, client: Client, arguments: list[bytes]) -> Any:
    client.multi, client.multi_error = None, False
    server.unwatch(client)
    client.protocol, client.name = 2, None
    client.authenticated = not server.settings.requirepass
    return resp.SimpleString(b"RESET")


# ---------------------------------------------------------------------- durability


@command("WAITAOF")
def _waitaof(server: Server, client: Client, arguments: list[bytes]) -> Any:
    """[local syncs, replica syncs] once this connection's writes are in a synced commit: the
    reply goes out after the batch's commit of both logs (forced even with fsync everysec)."""
    numlocal, numreplicas, timeout_ms = (_integer(a) for a in arguments[1:4])
    if numlocal < 0 or numreplicas < 0:
        raise CommandError("ERR value is out of range, must be positive")
    if timeout_ms < 0:
        raise CommandError("ERR timeout is negative")
    client.sync_required = True
    if numreplicas > 0 or numlocal > 1:  # never reached: wait out the timeout, as Redis does
        return Blocked([], timeout_ms, lambda: None, timeout_reply=[1, 0])
    return [1, 0]


@command("WAIT")
def _wait_replicas(server: Server, client: Client, arguments: list[bytes]) -> Any:
    numreplicas, timeout_ms = _integer(arguments[1]), _integer(arguments[2])
    if timeout_ms < 0:
        raise CommandError("ERR timeout is negative")
    if numreplicas > 0:
        return Blocked([], timeout_ms, lambda: None, timeout_reply=0)
    return 0


@command("KV.CHECKPOINT")
def _kv_checkpoint(server: Server, client: Client, arguments: list[bytes]) -> Any:
    """Checkpoints the KV index (kvlayer); answers the log position it covers. Runs on the
    event loop: an administrative command, other clients wait for it."""
    server.kv.flush()
    return server.kv.store.checkpoint().position


@command("LOG.TRUNCATE")
def _log_truncate(server: Server, client: Client, arguments: list[bytes]) -> Any:
    """Moves the stream log's begin to ADDRESS. The state that lives in records below it
    (each stream's last id and counters, every group) is first restated at the tail and
    committed, so a restart recovers it; entries below the address leave their streams."""
    address = _integer(arguments[1])
    if not 0 <= address <= server.log.committed_until_address:
        raise CommandError("ERR LOG.TRUNCATE address must be a committed address")
    server.groups.restate()
    server.streams.flush()
    server.log.commit()
    try:
        server.log.truncate_until(address)
    except Exception as error:  # noqa: BLE001 - a typed fasterlog error: answered as text
        raise CommandError("ERR " + " ".join(str(error).split())) from None
    server.streams.forget_below(server.log.begin_address)
    client.wrote = True  # the batch's commit makes the new begin durable
    return OK


# ---------------------------------------------------------------------- streams


def _trim_options(arguments: list[bytes], position: int) -> tuple[dict[str, Any], int]:
    """Parses [MAXLEN|MINID [=|~] threshold [LIMIT count]] at `position`."""
    option = arguments[position].upper()
    position += 1
    if position < len(arguments) and arguments[position] in (b"=", b"~"):
        position += 1
    if position >= len(arguments):
        raise CommandError("ERR syntax error")
    if option == b"MAXLEN":
        maxlen = _integer(arguments[position])
        if maxlen < 0:
            raise CommandError("ERR The MAXLEN argument must be >= 0.")
        trim: dict[str, Any] = {"maxlen": maxlen}
    else:
        trim = {"minid": parse_id(arguments[position])}
    position += 1
    if position + 1 < len(arguments) and arguments[position].upper() == b"LIMIT":
        _integer(arguments[position + 1])  # exact trimming: LIMIT only bounds approximate work
        position += 2
    return trim, position


@command("XADD")
def _xadd(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 5)
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
    if key not in server.streams.streams:
        _not_a_string(server, key)
        if not make_stream:
            return None
    stream_id = server.streams.next_id(key, arguments[position])
    server.streams.add(key, stream_id, fields)
    if trim is not None:
        server.streams.trim(key, **trim)
    client.wrote = True
    client.written_keys.add(key)
    return b"%d-%d" % stream_id


@command("XLEN")
def _xlen(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    _not_a_string(server, arguments[1])
    return server.streams.length(arguments[1])


def _range(server: Server, arguments: list[bytes], reverse: bool) -> Any:
    _arity(arguments, 4)
    key = arguments[1]
    _not_a_string(server, key)
    first, second = (arguments[3], arguments[2]) if reverse else (arguments[2], arguments[3])
    start = (0, 0) if first == b"-" else parse_id(first, missing_seq=0, exclusive_ok=True)
    end = ID_MAX if second == b"+" else parse_id(second, missing_seq=(1 << 64) - 1,
                                                 exclusive_ok=True)
    count = None
    if len(arguments) == 6 and arguments[4].upper() == b"COUNT":
        count = max(0, _integer(arguments[5]))
    elif len(arguments) != 4:
        raise CommandError("ERR syntax error")
    return server.streams.range(key, start, end, count, reverse)


@command("XRANGE")
def _xrange(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _range(server, arguments, reverse=False)


@command("XREVRANGE")
def _xrevrange(server: Server, client: Client, arguments: list[bytes]) -> Any:
    return _range(server, arguments, reverse=True)


@command("XDEL")
def _xdel(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 3)
    _not_a_string(server, arguments[1])
    return server.streams.delete(arguments[1], [parse_id(a) for a in arguments[2:]])


@command("XTRIM")
def _xtrim(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 4)
    trim, position = _trim_options(arguments, 2)
    if position != len(arguments):
        raise CommandError("ERR syntax error")
    _not_a_string(server, arguments[1])
    return server.streams.trim(arguments[1], **trim)


@command("LOG.COMMIT")
def _log_commit(server: Server, client: Client, arguments: list[bytes]) -> Any:
    client.sync_required = True  # the batch's commit of both logs below is the answer
    server.streams.flush()
    return server.log.tail_address


@command("LOG.INFO")
def _log_info(server: Server, client: Client, arguments: list[bytes]) -> Any:
    log = server.log
    return resp.Map({b"begin_address": log.begin_address, b"tail_address": log.tail_address,
                     b"committed_until_address": log.committed_until_address,
                     b"io_backend": log.io_backend.encode(),
                     # Group commit at work: syncs run vs replies they answered, per log.
                     **{b"%s_%s" % (name, field): value
                        for name, committer in ((b"log", server._log_committer),
                                                (b"kv", server._kv_committer))
                        for field, value in ((b"commits", committer.commits_count),
                                             (b"commit_requests", committer.requests_count),
                                             (b"commit_time_us",
                                              int(committer.commit_seconds_total * 1e6)))}})


# ---------------------------------------------------------------------- blocking reads


def _streams_reply(client: Client, results: list[tuple[bytes, list[Any]]]) -> Any:
    """XREAD/XREADGROUP's reply: RESP3 a map of key to entries (as Redis 7), RESP2 pairs."""
    if not results:
        return resp.NULL_ARRAY
    if client.protocol == 3:
        return resp.Map(results)
    return [[key, entries] for key, entries in results]


def _read_options(arguments: list[bytes], position: int, group: bool) -> tuple[
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
            count = max(0, _integer(arguments[position + 1])) or None
            position += 2
        elif option == b"BLOCK" and position + 1 < len(arguments):
            block_ms = _integer(arguments[position + 1])
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


@command("XREAD")
def _xread(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 4)
    count, block_ms, _, keys, texts = _read_options(arguments, 1, group=False)
    for key in keys:
        _not_a_string(server, key)
    visible = server.visible_until_address()
    after: list[tuple[int, int]] = []
    for key, text in zip(keys, texts):
        if text == b"$":
            after.append(server.streams.last_visible_id(key, visible))
        elif text == b"+":
            last = server.streams.last_visible_id(key, visible)
            stream = server.streams.streams.get(key)
            count_visible = stream.visible_count(visible) if stream else 0
            # The last entry, read as "after the id before it"; none yet: wait like `$`.
            after.append(_previous(stream.ids[count_visible - 1]) if stream and count_visible
                         else last)
        else:
            after.append(parse_id(text, missing_seq=0))

    def attempt() -> Any:
        limit = server.visible_until_address()
        results = [(key, entries) for key, since in zip(keys, after)
                   if (entries := server.streams.read_after(key, since, count, limit))]
        return _streams_reply(client, results) if results else None

    reply = attempt()
    if reply is not None or block_ms is None:
        return reply if reply is not None else resp.NULL_ARRAY
    return Blocked(keys, block_ms, attempt)


def _previous(stream_id: tuple[int, int]) -> tuple[int, int]:
    ms, seq = stream_id
    return (ms, seq - 1) if seq else (ms - 1, (1 << 64) - 1)


# ---------------------------------------------------------------------- consumer groups


def _key_must_exist() -> CommandError:
    return CommandError("ERR The XGROUP subcommand requires the key to exist. Note that for "
                        "CREATE you may want to use the MKSTREAM option to create an empty "
                        "stream automatically.")


def _no_such_group(key: bytes, group: bytes) -> CommandError:
    return CommandError(f"NOGROUP No such consumer group '{group.decode(errors='replace')}' "
                        f"for key name '{key.decode(errors='replace')}'")


def _group_id(server: Server, key: bytes, text: bytes) -> tuple[int, int]:
    if text == b"$":
        stream = server.streams.streams.get(key)
        return stream.last_id if stream else (0, 0)
    return parse_id(text)


def _entries_read_option(arguments: list[bytes], position: int) -> int:
    if position == len(arguments):
        return -1
    if position + 2 == len(arguments) and arguments[position].upper() == b"ENTRIESREAD":
        value = _integer(arguments[position + 1])
        if value < 0 and value != -1:
            raise CommandError("ERR value for ENTRIESREAD must be positive or -1")
        return value
    raise CommandError("ERR syntax error")


@command("XGROUP")
def _xgroup(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 2)
    sub = arguments[1].upper()
    handler = _XGROUP.get(sub)
    if handler is None or len(arguments) < 4:
        raise CommandError("ERR unknown subcommand or wrong number of arguments for "
                           f"'XGROUP|{sub.decode(errors='replace').lower()}'")
    key, name = arguments[2], arguments[3]
    if sub == b"CREATE":
        return _xgroup_create(server, client, arguments)
    if key not in server.streams.streams:
        raise _key_must_exist()
    if server.groups.group(key, name) is None:
        if sub == b"DESTROY":
            return 0
        raise _no_such_group(key, name)
    return handler(server, client, arguments)


def _xgroup_create(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 5)
    key, name = arguments[2], arguments[3]
    position, make_stream = 5, False
    if position < len(arguments) and arguments[position].upper() == b"MKSTREAM":
        make_stream, position = True, position + 1
    entries_read = _entries_read_option(arguments, position)
    last_id = _group_id(server, key, arguments[4])
    _not_a_string(server, key)
    if key not in server.streams.streams:
        if not make_stream:
            raise _key_must_exist()
        server.streams.create(key)
    if server.groups.group(key, name) is not None:
        raise CommandError("BUSYGROUP Consumer Group name already exists")
    server.groups.create(key, name, last_id, entries_read)
    client.wrote = True
    return OK


def _xgroup_setid(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 5)
    key, name = arguments[2], arguments[3]
    entries_read = _entries_read_option(arguments, 5)
    server.groups.set_id(key, name, _group_id(server, key, arguments[4]), entries_read)
    client.wrote = True
    return OK


def _xgroup_destroy(server: Server, client: Client, arguments: list[bytes]) -> Any:
    server.groups.destroy(arguments[2], arguments[3])
    client.wrote = True
    client.written_keys.add(arguments[2])  # blocked XREADGROUPs get their NOGROUP error
    return 1


def _xgroup_createconsumer(server: Server, client: Client, arguments: list[bytes]) -> Any:
    if len(arguments) != 5:
        raise CommandError("ERR wrong number of arguments for 'xgroup|createconsumer' command")
    _, group = server.groups.require(arguments[2], arguments[3])
    if arguments[4] in group.consumers:
        return 0
    server.groups.consumer(arguments[2], group, arguments[4], now_ms())
    client.wrote = True
    return 1


def _xgroup_delconsumer(server: Server, client: Client, arguments: list[bytes]) -> Any:
    if len(arguments) != 5:
        raise CommandError("ERR wrong number of arguments for 'xgroup|delconsumer' command")
    _, group = server.groups.require(arguments[2], arguments[3])
    consumer = group.consumers.get(arguments[4])
    if consumer is None:
        return 0
    pending_count = len(consumer.pending)
    server.groups.delete_consumer(arguments[2], arguments[3], arguments[4])
    client.wrote = True
    return pending_count


_XGROUP: dict[bytes, Handler] = {
    b"CREATE": _xgroup_create, b"SETID": _xgroup_setid, b"DESTROY": _xgroup_destroy,
    b"CREATECONSUMER": _xgroup_createconsumer, b"DELCONSUMER": _xgroup_delconsumer}


@command("XREADGROUP")
def _xreadgroup(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 7)
    if arguments[1].upper() != b"GROUP":
        raise CommandError("ERR syntax error")
    name, consumer = arguments[2], arguments[3]
    count, block_ms, noack, keys, texts = _read_options(arguments, 4, group=True)
    history: list[tuple[int, int] | None] = []
    for key, text in zip(keys, texts):
        if text == b"$":
            raise CommandError("ERR The $ ID is meaningless in the context of XREADGROUP: you "
                               "want to read the history of this consumer by specifying a "
                               "proper ID, or use the > ID to get new messages. The $ ID would "
                               "just return an empty result set.")
        history.append(None if text == b">" else parse_id(text))
        server.groups.require(key, name, " in XREADGROUP with GROUP option")

    def attempt() -> Any:
        results: list[tuple[bytes, list[Any]]] = []
        for key, since in zip(keys, history):
            _, group = server.groups.require(key, name, " in XREADGROUP with GROUP option")
            server.groups.consumer(key, group, consumer, now_ms())
            if since is None:
                entries = _deliver_new(server, key, group, consumer, count, noack)
                if entries:
                    results.append((key, entries))
            else:
                results.append((key, _deliver_history(server, key, group, consumer, since,
                                                      count)))
        return _streams_reply(client, results) if results else None

    reply = attempt()
    if reply is not None or block_ms is None:
        return reply if reply is not None else resp.NULL_ARRAY
    return Blocked(keys, block_ms, attempt)


def _deliver_new(server: Server, key: bytes, group: Any, consumer: bytes, count: int | None,
                 noack: bool) -> list[Any]:
    entries = server.streams.read_after(key, group.last_id, count,
                                        server.visible_until_address())
    if entries:
        ids = [parse_id(entry[0]) for entry in entries]
        server.groups.deliver_new(key, group, consumer, ids, noack, now_ms())
    return entries


def _deliver_history(server: Server, key: bytes, group: Any, consumer: bytes,
                     since: tuple[int, int], count: int | None) -> list[Any]:
    stream = server.streams.streams[key]
    mine = sorted(i for i in group.consumers[consumer].pending if i > since)[:count]
    entries: list[Any] = []
    redelivered = []
    for stream_id in mine:
        fields = server.streams.fields(stream, stream_id)
        entries.append([b"%d-%d" % stream_id, fields])
        if fields is not None:
            redelivered.append(stream_id)
    if redelivered:
        server.groups.redeliver(key, group, consumer, redelivered, now_ms())
    return entries


@command("XACK")
def _xack(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 4)
    ids = [parse_id(text) for text in arguments[3:]]
    found = server.groups.group(arguments[1], arguments[2])
    if found is None:
        return 0
    acked = server.groups.ack(arguments[1], found[1], ids)
    client.wrote = client.wrote or acked > 0
    return acked


@command("XPENDING")
def _xpending(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 3)
    key, name = arguments[1], arguments[2]
    _, group = server.groups.require(key, name)
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
        _arity(arguments, 5)
        min_idle_ms, position = _integer(arguments[4]), 5
    if len(arguments) - position not in (3, 4):
        raise CommandError("ERR syntax error")
    start = (0, 0) if arguments[position] == b"-" else parse_id(
        arguments[position], missing_seq=0, exclusive_ok=True)
    end = ID_MAX if arguments[position + 1] == b"+" else parse_id(
        arguments[position + 1], missing_seq=(1 << 64) - 1, exclusive_ok=True)
    count = _integer(arguments[position + 2])
    owner = arguments[position + 3] if len(arguments) - position == 4 else None
    now = now_ms()
    rows: list[Any] = []
    for stream_id in group.pending_between(start, end) if count > 0 else ():
        entry = group.pending[stream_id]
        idle_ms = max(0, now - entry.delivery_time_ms)
        if (owner is None or entry.consumer == owner) and idle_ms >= min_idle_ms:
            rows.append([b"%d-%d" % stream_id, entry.consumer, idle_ms, entry.delivery_count])
            if len(rows) == count:
                break
    return rows


@command("XCLAIM")
def _xclaim(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 6)
    key, name, owner = arguments[1], arguments[2], arguments[3]
    min_idle_ms = _integer(arguments[4])
    stream, group = server.groups.require(key, name)
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
            delivery_time_ms = now - _integer(value)
        elif option == b"TIME":
            delivery_time_ms = _integer(value)
        elif option == b"RETRYCOUNT":
            retry_count = _integer(value)
        elif option == b"LASTID":
            last_id = parse_id(value)
        else:
            raise CommandError("ERR Unrecognized XCLAIM option "
                               f"'{option.decode(errors='replace')}'")
        position += 2
    if last_id is not None and last_id > group.last_id:
        server.groups.set_id(key, name, last_id, group.entries_read)
    claimed: list[tuple[tuple[int, int], int, int]] = []
    deleted: list[tuple[int, int]] = []
    replies: list[Any] = []
    for stream_id in dict.fromkeys(ids):
        entry = group.pending.get(stream_id)
        fields = server.streams.fields(stream, stream_id)
        if fields is None:
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
        replies.append(b"%d-%d" % stream_id if justid else [b"%d-%d" % stream_id, fields])
    if claimed:
        server.groups.consumer(key, group, owner, now)
    server.groups.claim(key, group, owner, now, claimed, deleted)
    return replies


@command("XAUTOCLAIM")
def _xautoclaim(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 6)
    key, name, owner = arguments[1], arguments[2], arguments[3]
    min_idle_ms = _integer(arguments[4])
    start = (0, 0) if arguments[5] == b"-" else parse_id(arguments[5], exclusive_ok=True)
    count, justid, position = 100, False, 6
    while position < len(arguments):
        option = arguments[position].upper()
        if option == b"COUNT" and position + 1 < len(arguments):
            count = _integer(arguments[position + 1])
            if not 1 <= count <= (1 << 62):
                raise CommandError("ERR COUNT must be > 0")
            position += 2
        elif option == b"JUSTID":
            justid, position = True, position + 1
        else:
            raise CommandError("ERR syntax error")
    stream, group = server.groups.require(key, name)
    now = now_ms()
    server.groups.consumer(key, group, owner, now)
    claimed: list[tuple[tuple[int, int], int, int]] = []
    deleted: list[tuple[int, int]] = []
    replies: list[Any] = []
    candidates = group.pending_between(start, ID_MAX)
    attempts_max = count * 10  # as Redis: bound the PEL scan, not only the claims
    scanned = 0
    for stream_id in candidates:
        if len(claimed) == count or scanned == attempts_max:
            break
        scanned += 1
        entry = group.pending[stream_id]
        fields = server.streams.fields(stream, stream_id)
        if fields is None:
            deleted.append(stream_id)
        elif now - entry.delivery_time_ms >= min_idle_ms:
            claimed.append((stream_id, now, entry.delivery_count + (0 if justid else 1)))
            replies.append(b"%d-%d" % stream_id if justid else [b"%d-%d" % stream_id, fields])
    next_id = candidates[scanned] if scanned < len(candidates) else (0, 0)
    server.groups.claim(key, group, owner, now, claimed, deleted)
    return [b"%d-%d" % next_id, replies, [b"%d-%d" % i for i in deleted]]


@command("XINFO")
def _xinfo(server: Server, client: Client, arguments: list[bytes]) -> Any:
    _arity(arguments, 3)
    sub, key = arguments[1].upper(), arguments[2]
    _not_a_string(server, key)
    stream = server.streams.streams.get(key)
    if sub == b"CONSUMERS" and len(arguments) == 4:
        if stream is None:
            raise CommandError("ERR no such key")
        found = server.groups.group(key, arguments[3])
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
        return _xinfo_stream_full(server, key, stream, arguments)
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
    first = server.streams.range(key, (0, 0), ID_MAX, 1)
    last = server.streams.range(key, (0, 0), ID_MAX, 1, reverse=True)
    return resp.Map({b"length": len(stream.ids), b"radix-tree-keys": 1,
                     b"radix-tree-nodes": 2, b"last-generated-id": b"%d-%d" % stream.last_id,
                     b"max-deleted-entry-id": b"%d-%d" % stream.max_deleted_id,
                     b"entries-added": stream.entries_added,
                     b"recorded-first-entry-id": b"%d-%d" % stream.first_id,
                     b"groups": len(stream.groups),
                     b"first-entry": first[0] if first else None,
                     b"last-entry": last[0] if last else None})


async def serve(directory: str, settings: ServerSettings,
                ready: Callable[[Server], Awaitable[None] | None] | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT, then commits and closes (the CLI's job)."""
    import signal

    # The default directory is ./data/server: on a fresh checkout ./data does not exist yet.
    # FasterLog.open creates (and syncs into its parent) the last component only.
    os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
    log = open_log(directory, settings)
    server = Server(log, settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    _logger.warning("fasterlog serving %s on %s:%d (fsync %s)", directory, settings.host,
                    server.port, settings.fsync)
    if ready is not None:
        result = ready(server)
        if asyncio.iscoroutine(result):
            await result
    await stop.wait()
    await server.close()
    log.close()


def _xinfo_stream_full(server: Server, key: bytes, stream: Any, arguments: list[bytes]) -> Any:
    """XINFO STREAM key FULL [COUNT n]: the stream, its first COUNT entries (default 10, 0 for
    all), and every group with its PEL and consumers (each PEL limited to COUNT too)."""
    count = 10
    if arguments[3].upper() != b"FULL":
        raise CommandError("ERR syntax error")
    if len(arguments) == 6 and arguments[4].upper() == b"COUNT":
        count = _integer(arguments[5])
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
    return resp.Map({b"length": len(stream.ids), b"radix-tree-keys": 1,
                     b"radix-tree-nodes": 2, b"last-generated-id": b"%d-%d" % stream.last_id,
                     b"max-deleted-entry-id": b"%d-%d" % stream.max_deleted_id,
                     b"entries-added": stream.entries_added,
                     b"recorded-first-entry-id": b"%d-%d" % stream.first_id,
                     b"entries": server.streams.range(key, (0, 0), ID_MAX, limit),
                     b"groups": groups})


def run(directory: str, settings: ServerSettings) -> None:
    """Runs `serve` on uvloop when it is installed (optional), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(directory, settings))
    else:
        uvloop.run(serve(directory, settings))
