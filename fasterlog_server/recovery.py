"""The server's logs through a failed write: read-only while fenced, reopened once they can write.

Rules:
1. On a failed append or commit (commit.py rule 4) the keeper, on the event loop and at once:
   refuses writes (fence.py: MISCONF), answers every waiter still enlisted with the error,
   drops the pending records of both logs, and starts loading (LOADING): the in-memory state
   still holds the writes that failed, which nobody may read.
2. Reload, off the loop: once no commit is in flight, both logs are opened read-only (FasterLog
   readonly, KVStore read_only) in a worker thread, and the stream index, consumer groups and
   KV view are rebuilt from what they committed; the loop swaps them in whole
   (StreamStore.adopt, KeyValues.adopt, CommitCoordinator.adopt), stops loading and closes the
   fenced writers. Reads then show exactly what a restart would show; writes stay refused.
3. Reopen: every `reopen_interval_s`, once the file system has room for a new segment (the
   larger segment size of the two logs: what a preallocation takes), a worker thread opens
   both logs as writers (recovery as at open, a new writer epoch) and rebuilds the state from
   them; the loop swaps it in, closes the read-only logs and accepts writes again. An open
   that fails (the disk is still full) is closed again and retried later; the server stays
   read-only meanwhile, and says so once in the log.
4. Startup on a full disk: a log that cannot be opened as a writer (an OSError, DiskFullError
   included) is opened read-only with a warning (`open_stream_log`, `open_kv_store`); the
   keeper then refuses writes and reopens by rule 3 (with one log a writer and the other
   read-only, by rule 1: both are reopened together).
5. The keeper closes every log it opened (`close`); the stream log the server was given is the
   caller's to close (closing it twice does nothing).
Blocked readers look again and every WATCH is broken after each swap: any key may have changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

from fasterlog import FasterLog
from fasterlog.errors import FasterLogError
from kvlayer import KVStore

from .context import ServerContext
from .groups import GroupStore
from .keyvalues import KeyValues
from .settings import FENCE_REOPEN_INTERVAL_S
from .streams import StreamStore

__all__ = ["LogKeeper", "open_kv_store", "open_stream_log"]

_logger = logging.getLogger("fasterlog.service")
_IDLE_POLL_S = 0.01  # rule 2's wait for a commit in flight (one sync: about a millisecond)


# What a full or failing disk raises at a writer's open (DiskFullError and LogIOError are
# OSErrors); anything else (a bad setting, a lock another process holds) is the caller's.


def open_stream_log(directory: str, **log_settings: Any) -> FasterLog:
    """The stream log as a writer, or read-only with a warning when the disk refuses the
    writer's open of an existing log (rule 4)."""
    # Whether the log existed before this open: a failed first open may leave a meta file,
    # which is no log to serve read-only (rule 4 is for an existing log only).
    existed = os.path.exists(os.path.join(directory, "fasterlog.meta"))
    try:
        return FasterLog.open(directory, **log_settings)
    except OSError as error:
        if not existed:
            _logger.error("cannot create %s (%s): a new log needs room for its first segments "
                          "(segment_size_bytes each)", directory, error)
            raise
        _logger.warning("cannot open %s for writing (%s): serving it read-only until it can "
                        "be reopened", directory, error)
        return FasterLog.open(directory, readonly=True)


def open_kv_store(path: str, readonly: bool, **log_settings: Any) -> KVStore:
    """The KV store as a writer (unless `readonly`, the stream log's mode), or read-only with a
    warning when the disk refuses the writer's open of an existing store (rule 4)."""
    if not readonly:
        try:
            return KVStore.open(path, **log_settings)
        except OSError as error:
            if not os.path.exists(os.path.join(path, "fasterlog.meta")):
                raise
            _logger.warning("cannot open %s for writing (%s): serving it read-only until it "
                            "can be reopened", path, error)
    return KVStore.open(path, read_only=True, follow=False)


@dataclass
class _State:
    """Both logs opened together, and the state rebuilt from them (off the loop)."""

    log: FasterLog
    kv_store: KVStore
    streams: StreamStore
    kv: KeyValues

    def close(self) -> None:
        _close_quietly(self.kv_store, self.log)


def _close_quietly(*closables: object) -> None:
    for closable in closables:
        assert isinstance(closable, KVStore | FasterLog)
        try:
            closable.close()
        except FasterLogError as error:  # a fenced log's close: nothing more to save
            _logger.info("closing %s: %s", closable, error)


def _open_state(log_path: str, kv_path: str, readonly: bool) -> _State:
    """Rule 2 (readonly) or rule 3: both logs, and the stream index, groups and KV view
    replayed from what they committed. Runs in a worker thread."""
    log = FasterLog.open(log_path, readonly=readonly)
    try:
        kv_store = (KVStore.open(kv_path, read_only=True, follow=False) if readonly
                    else KVStore.open(kv_path))
    except BaseException:
        log.close()
        raise
    try:
        streams = StreamStore(log, replay=False)
        GroupStore(streams)  # registers its appliers before the replay
        streams.replay()
        return _State(log, kv_store, streams, KeyValues(kv_store))
    except BaseException:
        _close_quietly(kv_store, log)
        raise


class LogKeeper:
    """Rules 1-5 for one server's context."""

    def __init__(self, context: ServerContext, kv_path: str, *,
                 reopen_interval_s: float = FENCE_REOPEN_INTERVAL_S) -> None:
        self._context = context
        self._log_path = context.log.path
        self._kv_path = kv_path
        self.reopen_interval_s = reopen_interval_s
        # Rule 3's room: a new segment of the log with the larger ones.
        self.free_bytes_min = max(context.log.settings["segment_size_bytes"],
                                  context.kv.store.log.settings["segment_size_bytes"])
        self._opened: list[KVStore | FasterLog] = []
        self._task: asyncio.Task[None] | None = None
        self.reopened_count = 0  # writers reopened after a failure (tests and INFO read it)
        context.coordinator.on_failure = self.failed

    @property
    def writable(self) -> bool:
        return self._context.fence.refusal is None

    def start(self, kv_store_owned: bool) -> None:
        """On the running loop: a server opened read-only (rule 4) refuses writes and starts
        reopening (rule 3); with one log a writer and the other not, it goes by rule 1 (both
        are reopened together)."""
        if kv_store_owned:
            self._opened.append(self._context.kv.store)
        log_read_only = self._context.log.settings["readonly"]
        kv_read_only = self._context.kv.store.read_only
        if log_read_only != kv_read_only:
            self.failed("a log could not be opened for writing")
        elif log_read_only:
            self._refuse_writes("the log could not be opened for writing (is the disk full?)")
            self._task = asyncio.get_running_loop().create_task(self._reopen_writers())

    def _refuse_writes(self, error: BaseException | str) -> None:
        context = self._context
        context.fence.refuse_writes(error)
        context.streams.writable = False
        context.coordinator.writable = False

    def failed(self, error: BaseException | str) -> None:
        """Rule 1 (the coordinator's on_failure hook), on the event loop."""
        context = self._context
        if context.fence.refusal is None:
            _logger.error("write failed: %s; refusing writes, reloading the committed state",
                          error)
        self._refuse_writes(error)
        context.fence.set_loading(True)
        failure = error if isinstance(error, BaseException) else FasterLogError(error)
        context.coordinator.fail_enlisted(failure)
        context.streams.discard_pending()
        context.kv.discard_pending()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Rule 2, then rule 3."""
        loop = asyncio.get_running_loop()
        context = self._context
        while context.coordinator.committing:  # its waiters get its own result
            await asyncio.sleep(_IDLE_POLL_S)
        while True:  # until the read-only open works
            try:
                state = await loop.run_in_executor(None, _open_state, self._log_path,
                                                   self._kv_path, True)
                break
            except Exception as error:  # noqa: BLE001 - logged; reads stay LOADING meanwhile
                _logger.error("reload of the committed state failed: %s; retrying", error)
                await asyncio.sleep(self.reopen_interval_s)
        await self._swap(state)
        context.fence.set_loading(False)
        await self._reopen_writers()

    async def _reopen_writers(self) -> None:
        """Rule 3: from read-only logs, until both open as writers."""
        loop = asyncio.get_running_loop()
        context = self._context
        said = False
        while True:  # rule 3
            await asyncio.sleep(self.reopen_interval_s)
            if shutil.disk_usage(self._log_path).free < self.free_bytes_min:
                continue
            try:
                state = await loop.run_in_executor(None, _open_state, self._log_path,
                                                   self._kv_path, False)
            except Exception as error:  # noqa: BLE001 - still read-only; tried again later
                if not said:
                    _logger.warning("cannot reopen the logs for writing yet: %s", error)
                    said = True
                continue
            if state.log.fenced or state.kv_store.log.fenced:
                await loop.run_in_executor(None, state.close)
                continue
            break
        await self._swap(state)
        context.fence.accept_writes()
        context.streams.writable = True
        context.coordinator.writable = True
        self.reopened_count += 1
        _logger.warning("logs reopened for writing (epoch %d): accepting writes again",
                        state.log.settings["epoch"])

    async def _swap(self, state: _State) -> None:
        """Puts `state` in place of the context's logs and state, then closes the old logs."""
        context = self._context
        old = [context.kv.store, context.log]
        context.streams.adopt(state.streams)
        context.kv.adopt(state.kv)
        context.log = state.log
        context.coordinator.adopt(state.log, context.kv)
        self._opened.extend((state.kv_store, state.log))
        context.watches.touch_all()
        context.readers.wake_all()
        await asyncio.get_running_loop().run_in_executor(None, _close_quietly, *old)

    async def close(self) -> None:
        """Stops reopening and closes every log the keeper opened (rule 5)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        opened, self._opened = self._opened, []
        await asyncio.get_running_loop().run_in_executor(None, _close_quietly, *opened)
