"""Tailing: follow a log as commits land, in threads or in asyncio.

Rules:
1. A tail yields committed entries only, in address order, each once.
2. Waiting costs no CPU: a thread sleeps in the core (a condition variable in the writer's
   process, a shared futex in a follower's); an event loop watches the log's commit eventfd.
   There is no sleep-polling and no thread per waiter.
3. stop() from any thread ends a tail within milliseconds (the core wakes its waiters);
   `timeout` (seconds without a new commit) ends it quietly; a completed log ends every tail
   once its last entry was yielded.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncGenerator, Iterator
from typing import TYPE_CHECKING, Any

from . import errors
from ._fasterlog_c import lib
from ._format import frame_size

if TYPE_CHECKING:
    from .log import FasterLog

_EVENTFD_READ_BYTES = 8
# A thread's wait in the core is cut into slices this long so that Python runs signal handlers
# (Ctrl-C) in time: a condition-variable wait is not interrupted by signals. One wake-up a
# second costs nothing measurable.
_WAIT_SLICE_S = 1.0


def _timeout_us(timeout: float | None) -> int:
    return -1 if timeout is None else max(0, int(timeout * 1e6))


class _TailBase:
    """What the sync and async tails share: the position and reading what is committed."""

    def __init__(self, log: FasterLog, from_address: int | None, timeout: float | None,
                 include_markers: bool) -> None:
        self._log = log
        self._position = log.begin_address if from_address is None else from_address
        self._timeout = timeout
        self._include_markers = include_markers
        self._stopped = False
        self._iterator: Any = self._run()

    def _run(self) -> Any:  # a generator (Tail) or an async generator (AsyncTail)
        raise NotImplementedError

    @property
    def position(self) -> int:
        """Where the tail goes on from: just past the last entry it yielded."""
        return self._position

    def _available(self) -> Iterator[tuple[int, bytes]]:
        """Yields the committed entries past the position, moving it along."""
        committed = self._log.committed_until_address
        if self._position >= committed:
            return
        for addresses, entries in self._log.scan_columns(
                self._position, committed, include_markers=self._include_markers):
            for address, entry in zip(addresses, entries):
                # The next frame starts right after this one (scans skip padding and commit
                # records from there), so position is always a place to resume.
                self._position = address + frame_size(len(entry))
                yield address, entry
                if self._stopped:
                    return
        self._position = committed


class Tail(_TailBase):
    """Iterator of (address, entry) that waits for new commits. Made by FasterLog.tail()."""

    def stop(self) -> None:
        """Ends the tail (from any thread): a wait in progress returns within milliseconds."""
        self._stopped = True
        lib.fl_wake(self._log._log)

    def __iter__(self) -> Tail:
        return self

    def __next__(self) -> tuple[int, bytes]:
        return next(self._iterator)

    def _run(self) -> Iterator[tuple[int, bytes]]:
        while not self._stopped:
            before = self._position
            yield from self._available()
            if self._position == before and not self._wait_for_more(self._log):
                return

    def _wait_for_more(self, log: FasterLog) -> bool:
        """Waits for a commit past the position; False when the tail should end quietly."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._stopped:
            left = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S,
                                                               deadline - time.monotonic())
            code = lib.fl_wait_for_commit(log._log, self._position, _timeout_us(max(0.0, left)))
            if code == 0:
                return True
            if code == lib.FL_E_COMPLETED:
                return False
            if code == lib.FL_E_TIMEOUT:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                continue
            if code != lib.FL_E_WOKEN:
                log._fail(code, "tail")
        return False


class _CommitWatcher:
    """One per (log, event loop): watches the commit eventfd and wakes awaiting tasks."""

    def __init__(self, log: FasterLog, loop: asyncio.AbstractEventLoop) -> None:
        self._log = log
        self._loop = loop
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        fd = lib.fl_commit_eventfd(log._log)
        if fd < 0:
            log._fail(fd, "tail_async")
        self._fd = fd
        self._watching = False

    def wait(self, address: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._waiters.append((address, future))
        if not self._watching:
            self._loop.add_reader(self._fd, self._on_commit)
            self._watching = True
        self._on_commit(drain=False)  # a commit may have landed before we started watching
        return future

    def _on_commit(self, drain: bool = True) -> None:
        if drain:
            try:
                os.read(self._fd, _EVENTFD_READ_BYTES)
            except BlockingIOError:
                pass
        state = self._log._snapshot()
        committed, completed, closed = (state.committed_until_address, state.completed,
                                        state.closed)
        still_waiting = []
        for address, future in self._waiters:
            if future.done():
                continue
            if closed:
                future.set_result(lib.FL_E_CLOSED)
            elif committed > address:
                future.set_result(0)
            elif completed:
                future.set_result(lib.FL_E_COMPLETED)
            else:
                still_waiting.append((address, future))
        self._waiters = still_waiting
        if not still_waiting and self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def wake_all(self, code: int) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_result(code)
        self._waiters = []
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False


_watchers: weakref.WeakKeyDictionary[Any, dict[asyncio.AbstractEventLoop, _CommitWatcher]] = (
    weakref.WeakKeyDictionary())


def _watcher(log: FasterLog) -> _CommitWatcher:
    loop = asyncio.get_running_loop()
    per_loop = _watchers.setdefault(log, {})
    watcher = per_loop.get(loop)
    if watcher is None:
        watcher = per_loop[loop] = _CommitWatcher(log, loop)
    return watcher


async def wait_for_commit_async(log: FasterLog, address: int,
                                timeout: float | None = None) -> bool:
    """Waits in the event loop until the entry at `address` is committed. False on timeout;
    LogCompletedError when the log was completed before reaching it."""
    state = log._snapshot()
    if state.closed:
        raise errors.LogClosedError("wait_for_commit_async failed: the log is closed")
    if state.committed_until_address > address:
        return True
    future = _watcher(log).wait(address)
    try:
        code = await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        return False
    if code == lib.FL_E_COMPLETED:
        raise errors.LogCompletedError(
            f"wait_for_commit_async failed: the log was completed before address {address}")
    if code < 0 and code != lib.FL_E_WOKEN:
        log._fail(code, "wait_for_commit_async")
    return code == 0


class AsyncTail(_TailBase):
    """Async iterator of (address, entry) that awaits new commits. Made by log.tail_async()."""

    def stop(self) -> None:
        """Ends the tail: the iteration finishes at its next step."""
        self._stopped = True
        per_loop = _watchers.get(self._log, {})
        for watcher in per_loop.values():
            watcher._loop.call_soon_threadsafe(watcher.wake_all, lib.FL_E_WOKEN)

    def __aiter__(self) -> AsyncTail:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        self._stopped = True
        await self._iterator.aclose()

    async def _run(self) -> AsyncGenerator[tuple[int, bytes], None]:
        log = self._log
        while not self._stopped:
            before = self._position
            for item in self._available():
                yield item
            if self._position != before:
                continue
            future = _watcher(log).wait(self._position)
            try:
                code = await asyncio.wait_for(future, self._timeout)
            except asyncio.TimeoutError:
                return
            if code == lib.FL_E_COMPLETED:
                return
            if code < 0 and code != lib.FL_E_WOKEN:
                log._fail(code, "tail_async")
