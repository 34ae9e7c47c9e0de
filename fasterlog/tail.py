"""Tailing: follow a log as commits land, in threads or in asyncio.

Rules:
1. A tail yields committed entries only, in address order, each once.
2. Waiting costs no CPU: a thread sleeps in the core (a condition variable in the writer's
   process, a shared futex in a follower's); an event loop watches the log's commit eventfd.
   There is no sleep-polling and no thread per waiter.
3. stop() from any thread ends a tail within milliseconds (the core wakes its waiters);
   `timeout` (seconds without a new commit) ends it quietly; a completed log ends every tail
   once its last entry was yielded.
4. A tail works through the log's LogHandle (handle.py) and the scan it was given; it never
   sees FasterLog, which constructs tails (log.py imports this module, not the other way).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Protocol

from . import errors
from ._fasterlog_c import lib
from ._format import frame_size
from .handle import LogHandle

__all__ = ["AsyncTail", "ColumnScan", "Tail", "wait_for_commit_async"]

_EVENTFD_READ_BYTES = 8
# A thread's wait in the core is cut into slices this long so that Python runs signal handlers
# (Ctrl-C) in time: a condition-variable wait is not interrupted by signals. One wake-up a
# second costs nothing measurable.
_WAIT_SLICE_S = 1.0


class ColumnScan(Protocol):
    """How a tail reads committed entries: FasterLog.scan_columns."""

    def __call__(self, begin: int | None = None, end: int | None = None, *,
                 include_markers: bool = False) -> Iterator[tuple[list[int], tuple[bytes, ...]]]:
        ...


class _TailBase:
    """What the sync and async tails share: the position and reading what is committed."""

    def __init__(self, handle: LogHandle, scan_columns: ColumnScan, from_address: int | None,
                 timeout: float | None, include_markers: bool) -> None:
        self._handle = handle
        self._scan_columns = scan_columns
        self._position = (int(handle.state().begin_address) if from_address is None
                          else from_address)
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
        committed = int(self._handle.state().committed_until_address)
        if self._position >= committed:
            return
        for addresses, entries in self._scan_columns(
                self._position, committed, include_markers=self._include_markers):
            for address, entry in zip(addresses, entries, strict=True):
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
        self._handle.wake()

    def __iter__(self) -> Tail:
        return self

    def __next__(self) -> tuple[int, bytes]:
        item: tuple[int, bytes] = next(self._iterator)
        return item

    def _run(self) -> Iterator[tuple[int, bytes]]:
        while not self._stopped:
            before = self._position
            yield from self._available()
            if self._position == before and not self._wait_for_more():
                return

    def _wait_for_more(self) -> bool:
        """Waits for a commit past the position; False when the tail should end quietly."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while not self._stopped:
            left = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S,
                                                               deadline - time.monotonic())
            code = self._handle.wait_for_commit(self._position, max(0.0, left))
            if code == 0:
                return True
            if code == lib.FL_E_COMPLETED:
                return False
            if code == lib.FL_E_TIMEOUT:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                continue
            if code != lib.FL_E_WOKEN:
                self._handle.fail(code, "tail")
        return False


class _CommitWatcher:
    """One per (log, event loop): watches the commit eventfd and wakes awaiting tasks."""

    def __init__(self, handle: LogHandle, loop: asyncio.AbstractEventLoop) -> None:
        # Weak: the registry (_watchers) is keyed weakly by the handle, and a value that held
        # its key would keep every log's entry (and its loops) forever. A waiter holds the
        # handle while it waits (wait_for_commit_async, AsyncTail), so it is alive then.
        self._handle = weakref.ref(handle)
        self.loop = loop
        self._waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._fd = handle.commit_eventfd("tail_async")
        self._watching = False

    def wait(self, address: int) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self.loop.create_future()
        self._waiters.append((address, future))
        if not self._watching:
            self.loop.add_reader(self._fd, self._on_commit)
            self._watching = True
        self._on_commit(drain=False)  # a commit may have landed before we started watching
        return future

    def _on_commit(self, drain: bool = True) -> None:
        if drain:
            try:
                os.read(self._fd, _EVENTFD_READ_BYTES)
            except BlockingIOError:
                pass
        handle = self._handle()
        if handle is None:  # the log is gone: nobody can be waiting (see __init__)
            self.wake_all(lib.FL_E_CLOSED)
            return
        state = handle.state()
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
            self.loop.remove_reader(self._fd)
            self._watching = False

    def wake_all(self, code: int) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_result(code)
        self._waiters = []
        if self._watching:
            self.loop.remove_reader(self._fd)
            self._watching = False


_watchers: weakref.WeakKeyDictionary[LogHandle,
                                      dict[asyncio.AbstractEventLoop, _CommitWatcher]] = (
    weakref.WeakKeyDictionary())


def _watcher(handle: LogHandle) -> _CommitWatcher:
    loop = asyncio.get_running_loop()
    per_loop = _watchers.setdefault(handle, {})
    watcher = per_loop.get(loop)
    if watcher is None:
        watcher = per_loop[loop] = _CommitWatcher(handle, loop)
    return watcher


async def wait_for_commit_async(handle: LogHandle, address: int,
                                timeout: float | None = None) -> bool:
    """Waits in the event loop until the entry at `address` is committed. False on timeout;
    LogCompletedError when the log was completed before reaching it."""
    state = handle.state()
    if state.closed:
        raise errors.LogClosedError("wait_for_commit_async failed: the log is closed")
    if state.committed_until_address > address:
        return True
    future = _watcher(handle).wait(address)
    try:
        code = await asyncio.wait_for(future, timeout)
    except asyncio.TimeoutError:
        return False
    if code == lib.FL_E_COMPLETED:
        raise errors.LogCompletedError(
            f"wait_for_commit_async failed: the log was completed before address {address}")
    if code < 0 and code != lib.FL_E_WOKEN:
        handle.fail(code, "wait_for_commit_async")
    return code == 0


class AsyncTail(_TailBase):
    """Async iterator of (address, entry) that awaits new commits. Made by log.tail_async()."""

    def stop(self) -> None:
        """Ends the tail: the iteration finishes at its next step."""
        self._stopped = True
        per_loop = _watchers.get(self._handle, {})
        for watcher in per_loop.values():
            watcher.loop.call_soon_threadsafe(watcher.wake_all, lib.FL_E_WOKEN)

    def __aiter__(self) -> AsyncTail:
        return self

    async def __anext__(self) -> tuple[int, bytes]:
        item: tuple[int, bytes] = await self._iterator.__anext__()
        return item

    async def aclose(self) -> None:
        self._stopped = True
        await self._iterator.aclose()

    async def _run(self) -> AsyncGenerator[tuple[int, bytes], None]:
        while not self._stopped:
            before = self._position
            for item in self._available():
                yield item
            if self._position != before:
                continue
            future = _watcher(self._handle).wait(self._position)
            try:
                code = await asyncio.wait_for(future, self._timeout)
            except asyncio.TimeoutError:
                return
            if code == lib.FL_E_COMPLETED:
                return
            if code < 0 and code != lib.FL_E_WOKEN:
                self._handle.fail(code, "tail_async")
