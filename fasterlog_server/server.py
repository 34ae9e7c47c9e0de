"""The RESP server: Redis Streams and strings on fasterlog logs, with durable acknowledgements.

Rules (each kept by the module named):
1. A write is answered only after the group commit that covers it, so an acknowledged write
   survives kill -9 and power loss; `fsync="everysec"` answers at once and commits every
   second, for comparison with redis-server's default, documented as not durable per reply
   (commit.py).
2. A connection's commands are answered in order; the writes of one batch of a pipelined
   read (at most commands_per_step_max commands) share one commit, and the writes of every
   connection that arrive while a commit runs share the next one: one append and one sync for
   all of them (commit.py). Commands run inside the connection's `receive`, as their bytes
   arrive (whole commands split in C, csrc/resp_split.c), so a read is answered without a
   task switch; a batch that must wait (its commit, a blocking read) holds the connection's
   later input until it is answered, and one step of the event loop runs at most
   commands_per_step_max of one connection's commands before the others are served
   (connection.py).
3. Every buffer is bounded, each bound named with its reason (settings.py): the codec's limits,
   the commands taken from one read, a slow reader's output buffer (past it the client is
   disconnected), and the number of clients (past it a new one is refused, as Redis does).
4. A malformed frame gets -ERR and a closed connection; no input crashes the server
   (connection.py, resp.py).
5. The server binds 127.0.0.1 unless told otherwise, and refuses any other address without a
   password (settings.py). Passwords are compared in constant time (context.py).
6. Readers that wait for news (XREAD, XREADGROUP) see an entry only once it is committed; a
   blocked reader is woken by the commit of a write to one of its keys and looks again
   (notify.py). Blocking never holds the event loop: the connection's batch awaits, other
   connections go on. A blocked client that disconnects is noticed at once.
7. Two logs: streams and consumer groups in the log the server is given, Redis strings in a
   kvlayer KVStore in its `kv` subdirectory (keyvalues.py). A pipeline, and a MULTI/EXEC
   inside it, is all-or-nothing per log after a crash (context.py).
8. Transactions and WATCH: commands/transactions.py, notify.py. The commands, their arities
   and flags: dispatch.py, the only place that names them.
9. A failed commit is answered with the error and the connection stays open; the server then
   refuses writes (MISCONF), serves what the logs committed, and reopens them by itself once
   they can write; on a full disk it starts read-only (fence.py, recovery.py).

This module assembles the server: `Server` (the shared context, the listening socket, the
connections and the expiry sweep), `open_log`, and `serve` and `run` for the command line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from fasterlog import FasterLog
from fasterlog.errors import FasterLogError
from kvlayer import KVStore

from . import heap
from .commit import CommitCoordinator
from .connection import ConnectionProtocol, Connections
from .context import ServerContext
from .dispatch import COMMANDS
from .groups import GroupStore, now_ms
from .keyvalues import KeyValues
from .notify import BlockedReaders
from .recovery import LogKeeper, open_kv_store, open_stream_log
from .settings import (
    EXPIRE_DISCOVERY_KEYS_MAX,
    EXPIRE_SWEEP_BACKOFF_MAX_S,
    EXPIRE_SWEEP_INTERVAL_S,
    EXPIRE_SWEEP_KEYS_MAX,
    KV_DIRECTORY_NAME,
    NEW_LOG_SEGMENT_SIZE_BYTES,
    ServerSettings,
)
from .streams import StreamStore

__all__ = ["Server", "ServerSettings", "open_log", "run", "serve"]

_logger = logging.getLogger("fasterlog.service")


def open_log(directory: str, settings: ServerSettings, **log_settings: Any) -> FasterLog:
    """The stream log as the server opens it (the CLI and tests share this): read-only, with a
    warning, when a full disk refuses the writer's open (recovery.py rule 4). A new log gets
    NEW_LOG_SEGMENT_SIZE_BYTES segments unless `log_settings` say otherwise; an existing one
    keeps the size it was made with."""
    if log_settings.get("segment_size_bytes") is None and not os.path.exists(
            os.path.join(directory, "fasterlog.meta")):
        log_settings["segment_size_bytes"] = NEW_LOG_SEGMENT_SIZE_BYTES
    return open_stream_log(directory, **log_settings)


_DEFAULT_SETTINGS = ServerSettings()


class Server:
    """Serves one log directory. `await server.start()`, then `await server.close()`."""

    def __init__(self, log: FasterLog, settings: ServerSettings = _DEFAULT_SETTINGS,
                 kv_store: KVStore | None = None) -> None:
        self.settings = settings
        # The KV view: its own log in <log>/kv, sized like the stream log (keyvalues.py).
        self._owns_kv_store = kv_store is None
        kv_path = os.path.join(log.path, KV_DIRECTORY_NAME)
        if kv_store is None:
            sizes = log.settings
            kv_store = open_kv_store(kv_path, sizes["readonly"], **{
                name: sizes[name] for name in ("page_size_bytes", "memory_size_bytes",
                                               "segment_size_bytes")})
        self.context = ServerContext(log, settings, kv_store, COMMANDS)
        # A failed write: read-only until the logs reopen by themselves (recovery.py).
        self.keeper = LogKeeper(self.context, kv_path)
        self.connections = Connections(settings.maxclients,
                                       settings.client_buffers_size_max_bytes)
        self._server: asyncio.AbstractServer | None = None
        self._expire_task: asyncio.Task[None] | None = None
        self.expire_rounds_count = 0  # sweep rounds that succeeded (tests watch it go on)
        self.port = settings.port

    # What tests and tools look at (the context holds the rest).
    @property
    def log(self) -> FasterLog:
        return self.context.log

    @property
    def streams(self) -> StreamStore:
        return self.context.streams

    @property
    def groups(self) -> GroupStore:
        return self.context.groups

    @property
    def kv(self) -> KeyValues:
        return self.context.kv

    @property
    def coordinator(self) -> CommitCoordinator:
        return self.context.coordinator

    @property
    def readers(self) -> BlockedReaders:
        return self.context.readers

    @property
    def closing(self) -> bool:
        return self.context.closing

    @property
    def xadd_lane_enabled(self) -> bool:
        """The lone XADD's C lane (StreamStore.add_lone); tests turn it off to compare."""
        return self.context.xadd_lane_enabled

    @xadd_lane_enabled.setter
    def xadd_lane_enabled(self, enabled: bool) -> None:
        self.context.xadd_lane_enabled = enabled

    @property
    def expire_sweep_running(self) -> bool:
        """The expiry sweep's task is alive (it must outlive a failed round)."""
        return self._expire_task is not None and not self._expire_task.done()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context, connections = self.context, self.connections
        self._server = await loop.create_server(
            lambda: ConnectionProtocol(context, connections), self.settings.host,
            self.settings.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._expire_task = asyncio.create_task(self._expire_periodically())
        self.context.coordinator.start()
        self.keeper.start(self._owns_kv_store)

    async def close(self) -> None:
        """Stops accepting, commits what was appended, and closes the listening socket and
        the KV store it opened (the caller closes the stream log it passed in)."""
        if self._server is not None:
            self._server.close()
        self.context.closing = True  # no command runs from here on; replies due still go out
        if self._expire_task is not None:
            self._expire_task.cancel()
        await self.context.maintenance.close()  # a checkpoint or truncation in flight ends
        await self.context.coordinator.close()
        store = self.context.kv.store
        if self._owns_kv_store and not self.context.fence.active:
            # A checkpoint at a clean stop: the next start restores the KV index from it and
            # replays only what follows, instead of the whole KV log (in a worker thread:
            # connections still finish sending their replies meanwhile).
            try:
                await asyncio.get_running_loop().run_in_executor(None, store.checkpoint)
            except FasterLogError as error:  # a fenced KV log: the next start replays it
                _logger.error("closing: KV checkpoint failed: %s", error)
        await self.keeper.close()  # the logs it opened, the KV store the server opened among them
        if self._owns_kv_store:
            store.close()
        if self._server is not None:
            # After the commits: wait_closed waits for open connections on Python 3.12+.
            self.connections.close_all()
            await self._server.wait_closed()

    async def _expire_periodically(self) -> None:
        """Deletes expired keys durably, a bounded number per round (reads already treat them
        as missing; this gives the space back and keeps DBSIZE's count cheap). A round that
        fails (a fenced log, a full disk) is logged and the sweep backs off and goes on: it
        must outlive the failure, so that it works again once the log does."""
        backoff_s = EXPIRE_SWEEP_INTERVAL_S
        while True:
            await asyncio.sleep(backoff_s)
            try:
                await self._expire_round()
            except Exception as error:  # noqa: BLE001 - logged; the next round tries again
                backoff_s = min(backoff_s * 2, EXPIRE_SWEEP_BACKOFF_MAX_S)
                _logger.error("expiry sweep failed (next try in %.1f s): %s", backoff_s, error)
                continue
            backoff_s = EXPIRE_SWEEP_INTERVAL_S
            self.expire_rounds_count += 1

    async def _expire_round(self) -> None:
        context = self.context
        if context.fence.active:  # no writes while the logs are read-only (recovery.py)
            return
        context.kv.discover_expiring(EXPIRE_DISCOVERY_KEYS_MAX)
        expired = context.kv.expired(now_ms(), EXPIRE_SWEEP_KEYS_MAX)
        if not expired:
            return
        for key in expired:
            context.kv.delete(key)
            context.touch(key)
        context.kv.flush()
        await context.coordinator.commit_kv()


async def serve(directory: str, settings: ServerSettings,
                ready: Callable[[Server], Awaitable[None] | None] | None = None) -> None:
    """Runs the server until SIGTERM or SIGINT, then commits and closes (the CLI's job)."""
    # The default directory is ./data/server: on a fresh checkout ./data does not exist yet.
    # FasterLog.open creates (and syncs into its parent) the last component only.
    os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
    heap.install()  # this process is the server's: GC pauses follow growth, not the heap
    log = open_log(directory, settings)
    server = Server(log, settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    store = server.kv.store
    # Where the KV view started: a restart after kill -9 replays only what follows it.
    restored = "a full replay" if store.recovered_from is None else \
        f"the checkpoint at {store.recovered_from.position}"
    _logger.warning("fasterlog serving %s on %s:%d (fsync %s; KV view from %s)", directory,
                    settings.host, server.port, settings.fsync, restored)
    if ready is not None:
        result = ready(server)
        if asyncio.iscoroutine(result):
            await result
    await stop.wait()
    await server.close()
    log.close()


def run(directory: str, settings: ServerSettings) -> None:
    """Runs `serve` on uvloop when it is installed (optional), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(directory, settings))
    else:
        uvloop.run(serve(directory, settings))
