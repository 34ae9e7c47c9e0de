"""Named consumers: read a log from a durable cursor, at least once, in threads or asyncio.

    with Consumer(log, "billing") as consumer:
        for address, entry in consumer:
            handle(entry)
            consumer.ack()                 # durable: a restart resumes after this entry

Rules:
1. The resume rule is exclusive, like Kafka's committed offset: the cursor holds the address of
   the next entry to read. ack(a) stores the address just past entry `a`, so `a` and every
   entry before it count as processed; the entry at the stored address is read next.
2. At least once: an entry delivered but not acknowledged when the process dies is delivered
   again after a restart. Nothing acknowledged is delivered again, and nothing is skipped.
3. ack() and seek() are durable before they return (the cursor file's slot write and
   fdatasync, see fasterlog.cursors). poll() and iteration change only the in-memory position.
4. Waiting costs no CPU: a consumer sleeps in the core until committed-until moves (in a
   follower process too, through the shared futex), or in the event loop on the commit eventfd.
   stop() from any thread ends a wait within milliseconds; a completed log ends iteration.
5. A consumer holds its cursor file locked while open: a second consumer of the same name (in
   any process) gets CursorInUseError instead of interleaving positions.

A Consumer is meant for one thread (or one task) at a time; only stop() may come from another.
Invariants: begin <= durable position <= delivered position <= read position <= committed-until
(the first only until a forced truncation passes the cursor, which poll reports as
TruncatedError); the buffer holds exactly the entries in [delivered, read).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, Literal

from fasterlog import FasterLog, cursors, errors, frame_size

from .errors import (
    ConsumerError,
    CursorInUseError,
    CursorNameError,
    InvalidSeekError,
    SeekBelowBeginError,
    UnknownCursorError,
)

__all__ = ["Consumer", "cursor_position", "delete_cursor", "list_cursors"]

# poll() hands out at most this many entries by default. The buffer behind it holds at most one
# chunk of the core's scan (4096 entries or 1 MiB, whichever comes first).
poll_count_default = 1000
Start = Literal["begin", "end"] | int


def _directory(log_or_directory: FasterLog | str | os.PathLike[str]) -> str:
    if isinstance(log_or_directory, FasterLog):
        return log_or_directory.path
    return os.fspath(log_or_directory)


def _checked_name(name: object, operation: str) -> str:
    try:
        return cursors.validate_name(name)
    except (TypeError, ValueError) as error:
        raise CursorNameError(f"{operation} failed: {error}") from None


def list_cursors(log_or_directory: FasterLog | str | os.PathLike[str]) -> dict[str, int]:
    """Every named cursor of the log and its durable position (the next address to read)."""
    return cursors.read_all(_directory(log_or_directory))


def cursor_position(log_or_directory: FasterLog | str | os.PathLike[str], name: str) -> int:
    """The durable position of cursor `name`; UnknownCursorError if there is none."""
    name = _checked_name(name, "cursor_position")
    try:
        return cursors.read(_directory(log_or_directory), name)
    except KeyError:
        raise UnknownCursorError(f"cursor_position failed: no cursor named {name!r}",
                                 name) from None


def delete_cursor(log_or_directory: FasterLog | str | os.PathLike[str], name: str) -> None:
    """Deletes cursor `name` durably: it no longer holds back retention. UnknownCursorError if
    there is none; CursorInUseError while a consumer has it open."""
    name = _checked_name(name, "delete_cursor")
    try:
        cursors.delete(_directory(log_or_directory), name)
    except KeyError:
        raise UnknownCursorError(f"delete_cursor failed: no cursor named {name!r}",
                                 name) from None
    except errors.LockedError:
        raise CursorInUseError(f"delete_cursor failed: cursor {name!r} is open in a consumer",
                               name) from None


class Consumer:
    """Reads a log from the named durable cursor `name`, creating it at `start` ("begin",
    "end" or an entry address) if it does not exist (with create=False: UnknownCursorError).
    The log may be a writer or a read-only follower in another process."""

    def __init__(self, log: FasterLog, name: str, start: Start = "begin", *,
                 create: bool = True) -> None:
        self._log = log
        self.name = _checked_name(name, "Consumer")
        directory = log.path
        salt = cursors.log_salt(directory)
        try:
            try:
                self._cursor = cursors.CursorFile.open(directory, self.name, salt=salt)
            except KeyError:
                if not create:
                    raise UnknownCursorError(f"Consumer failed: no cursor named {name!r} "
                                             "(create=False)", self.name) from None
                self._cursor = cursors.CursorFile.open(
                    directory, self.name, create_position=self._start_position(start),
                    salt=salt)
        except errors.LockedError:
            raise CursorInUseError(f"Consumer failed: cursor {name!r} is open in another "
                                   "consumer", self.name) from None
        self._buffer: deque[tuple[int, bytes]] = deque()
        self._delivered = self._read = self._cursor.position
        self._last_delivered: int | None = None
        self._stopped = False
        self._closed = False
        self._stop_futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._stop_lock = threading.Lock()

    def _start_position(self, start: object) -> int:
        if start == "begin":
            return self._log.begin_address
        if start == "end":
            return self._log.committed_until_address
        if isinstance(start, int) and not isinstance(start, bool):
            return self._checked_seek(start, "Consumer start")
        raise ValueError(f"Consumer failed: start must be 'begin', 'end' or an address, not "
                         f"{start!r}")

    # ------------------------------------------------------------------ positions

    @property
    def position(self) -> int:
        """The durable resume point: the address of the next entry after a restart."""
        return self._cursor.position

    @property
    def delivered_position(self) -> int:
        """Just past the last entry this consumer delivered (not yet durable unless acked)."""
        return self._delivered

    @property
    def lag_bytes(self) -> int:
        """Bytes of log from the durable position to committed-until (framing included)."""
        return max(0, self._log.committed_until_address - self._cursor.position)

    @property
    def lag_entries(self) -> int:
        """Entries from the durable position to committed-until (a scan: costs O(lag))."""
        return count_entries(self._log, self._cursor.position)

    # ------------------------------------------------------------------ reading

    # One implementation for threads and asyncio (httpx's idea): `_fill_steps` decides what to
    # read and when to wait; `_fill` and `_fill_async` only carry out its waits, blocking in the
    # core or awaiting the commit eventfd. poll/iter and their async twins are thin drivers.

    def poll(self, max_count: int = poll_count_default,
             timeout: float | None = None) -> list[tuple[int, bytes]]:
        """Up to `max_count` (address, entry) pairs. Waits for a commit when caught up: at most
        `timeout` seconds (None: until an entry, stop() or a completed log), then returns []."""
        deadline = self._start_poll(max_count, timeout, "poll")
        while not self._buffer:
            if self._stopped or not self._fill(deadline):
                return []
        return self._take(max_count)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        return self.iter()

    def iter(self, timeout: float | None = None) -> Iterator[tuple[int, bytes]]:
        """Yields (address, entry) as commits land; ends on stop(), on a completed log, or after
        `timeout` seconds without a new entry. Entries are delivered one at a time, so leaving
        the loop early loses nothing: the next poll goes on from there."""
        self._check_open("iter")
        while not self._stopped:
            if self._buffer:
                pair = self._buffer.popleft()
                self._note_delivered(*pair)
                yield pair
            elif not self._fill(_deadline(timeout)):
                return

    async def poll_async(self, max_count: int = poll_count_default,
                         timeout: float | None = None) -> list[tuple[int, bytes]]:
        """The asyncio twin of poll(): waits in the event loop, never in a thread."""
        deadline = self._start_poll(max_count, timeout, "poll_async")
        while not self._buffer:
            if self._stopped or not await self._fill_async(deadline):
                return []
        return self._take(max_count)

    async def iter_async(self, timeout: float | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """`async for address, entry in consumer.iter_async()`: as iter(), in the event loop.
        Cancelling the task ends it; nothing delivered is lost (acknowledge as you go)."""
        self._check_open("iter_async")
        while not self._stopped:
            if self._buffer:
                pair = self._buffer.popleft()
                self._note_delivered(*pair)
                yield pair
            elif not await self._fill_async(_deadline(timeout)):
                return

    def _start_poll(self, max_count: object, timeout: float | None, operation: str) -> float | None:
        """Checks a poll's arguments and returns its deadline (None: no limit)."""
        if not isinstance(max_count, int) or max_count < 1:
            raise ValueError(f"{operation} failed: max_count must be a positive int, not "
                             f"{max_count!r}")
        self._check_open(operation)
        return None if timeout is None else time.monotonic() + max(0.0, timeout)

    def _take(self, max_count: int) -> list[tuple[int, bytes]]:
        """Delivers up to `max_count` buffered entries (the buffer is not empty)."""
        taken = [self._buffer.popleft() for _ in range(min(max_count, len(self._buffer)))]
        self._note_delivered(*taken[-1])
        return taken

    def _note_delivered(self, address: int, entry: bytes) -> None:
        self._last_delivered = address
        self._delivered = address + frame_size(len(entry))

    def _fill_steps(self, deadline: float | None) -> Generator[float | None, bool, bool]:
        """The step function: reads the next committed chunk into the buffer. Each time it must
        wait for a commit past the read position it yields the wait's timeout in seconds (None:
        no limit), and the driver sends back False when the log was completed (no commit will
        come). Returns whether the buffer got entries: False when it gave up (deadline passed,
        stopped, or the log completed)."""
        while not self._stopped:
            committed = self._log.committed_until_address
            if self._read < committed:
                self._scan_chunk(committed)
                if self._buffer:
                    return True
                continue  # only markers up to committed-until: look again
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if not (yield remaining):
                return False
        return False

    def _fill(self, deadline: float | None) -> bool:
        """The blocking driver of _fill_steps: waits in the core."""
        steps = self._fill_steps(deadline)
        try:
            timeout = next(steps)
            while True:
                try:
                    self._log.wait_for_commit(self._read, timeout)
                    more = True
                except errors.LogCompletedError:
                    more = False
                timeout = steps.send(more)
        except StopIteration as done:
            filled: bool = done.value
            return filled

    async def _fill_async(self, deadline: float | None) -> bool:
        """The awaiting driver of _fill_steps: waits in the event loop."""
        steps = self._fill_steps(deadline)
        try:
            timeout = next(steps)
            while True:
                try:
                    await self._wait_async(timeout)
                    more = True
                except errors.LogCompletedError:
                    more = False
                timeout = steps.send(more)
        except StopIteration as done:
            filled: bool = done.value
            return filled

    def _scan_chunk(self, committed: int) -> None:
        begin = self._log.begin_address
        if self._read < begin:
            raise errors.TruncatedError(
                f"poll failed: consumer {self.name!r} reads at {self._read}, below the begin "
                f"address {begin} (the log was truncated past it with force=True); "
                "seek_to_beginning() to go on", self._read, begin)
        chunks = self._log.scan_columns(self._read, committed)
        try:
            addresses, entries = next(chunks)
        except StopIteration:
            self._read = committed
            return
        finally:
            chunks.close()  # type: ignore[attr-defined]
        self._buffer.extend(zip(addresses, entries, strict=True))
        self._read = addresses[-1] + frame_size(len(entries[-1]))

    async def _wait_async(self, timeout: float | None) -> None:
        """Waits for a commit past the read position, or for stop() (which, unlike a thread's
        wait in the core, log.wake() cannot reach: it wakes the event loop through a future)."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        with self._stop_lock:
            if self._stopped:
                return
            self._stop_futures.append((loop, stop))
        commit = asyncio.ensure_future(self._log.wait_for_commit_async(self._read, timeout))
        either: list[asyncio.Future[Any]] = [commit, stop]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            with self._stop_lock:
                self._stop_futures.remove((loop, stop))
            if not commit.done():
                commit.cancel()
                await asyncio.gather(commit, return_exceptions=True)
        if commit.done() and not commit.cancelled():
            commit.result()  # raises LogCompletedError (handled by the caller) and the like

    # ------------------------------------------------------------------ acknowledging, seeking

    def ack(self, address: int | None = None) -> int:
        """Durably records that the entry at `address` (default: the last one delivered) and
        all before it were processed; returns the new position (just past that entry)."""
        self._check_open("ack")
        if address is None:
            if self._last_delivered is None:
                return self._cursor.position  # nothing delivered since open or seek
            position = self._delivered
        else:
            position = self._position_after(address)
        if position == self._read and not self._buffer:
            position = self._skip_to_committed(position)
        if position != self._cursor.position:
            self._cursor.write(position)
        return position

    def _skip_to_committed(self, position: int) -> int:
        """When everything read was delivered, reads ahead: if no entry lies before
        committed-until (only a commit record, markers or padding), a caught-up consumer's
        position is committed-until itself, and its lag is 0 bytes as well as 0 entries."""
        committed = self._log.committed_until_address
        if position < committed:
            try:
                self._scan_chunk(committed)
            except errors.TruncatedError:
                return position  # the next poll reports it; the ack itself still stands
        return self._read if not self._buffer else position

    def _position_after(self, address: object) -> int:
        if not isinstance(address, int) or isinstance(address, bool):
            raise TypeError(f"ack failed: an address must be an int, not "
                            f"{type(address).__name__}")
        if address == self._last_delivered:
            return self._delivered
        if address >= self._delivered:
            raise errors.InvalidAddressError(
                f"ack failed: address {address} was not delivered yet (the next entry to "
                f"deliver is at {self._delivered})", address)
        return address + frame_size(len(self._log.read(address)))

    def seek(self, address: int) -> None:
        """Moves the cursor, durably, to `address`: begin, committed-until or an entry's
        address. The entry there is delivered next. SeekBelowBeginError below begin;
        InvalidSeekError past committed-until or inside an entry."""
        self._check_open("seek")
        self._move(self._checked_seek(address, "seek"))

    def seek_to_beginning(self) -> None:
        """Moves the cursor, durably, to the begin address: everything left is read again."""
        self._check_open("seek_to_beginning")
        self._move(self._log.begin_address)

    def seek_to_end(self) -> None:
        """Moves the cursor, durably, to committed-until: only later commits are read."""
        self._check_open("seek_to_end")
        self._move(self._log.committed_until_address)

    def _checked_seek(self, address: object, operation: str) -> int:
        if not isinstance(address, int) or isinstance(address, bool):
            raise TypeError(f"{operation} failed: an address must be an int, not "
                            f"{type(address).__name__}")
        begin, committed = self._log.begin_address, self._log.committed_until_address
        if address < begin:
            raise SeekBelowBeginError(f"{operation} failed: address {address} is below the begin "
                                      f"address {begin} (that part of the log was truncated)",
                                      address, begin)
        if address > committed:
            raise InvalidSeekError(f"{operation} failed: address {address} is past the "
                                   f"committed-until address {committed}", address)
        if address not in (begin, committed):
            try:
                self._log.read(address)
            except errors.TruncatedError as error:  # truncated since we looked
                raise SeekBelowBeginError(f"{operation} failed: {error}", address,
                                          error.begin_address) from None
            except errors.InvalidAddressError:
                raise InvalidSeekError(f"{operation} failed: address {address} is not the "
                                       "start of an entry", address) from None
        return address

    def _move(self, position: int) -> None:
        self._cursor.write(position)
        self._buffer.clear()
        self._delivered = self._read = position
        self._last_delivered = None

    # ------------------------------------------------------------------ ending

    def stop(self) -> None:
        """Ends iteration and any poll in progress (from any thread); later polls return []."""
        with self._stop_lock:
            self._stopped = True
            futures = list(self._stop_futures)
        self._log.wake()
        for loop, future in futures:
            loop.call_soon_threadsafe(_resolve, future)

    def close(self) -> None:
        """Releases the cursor (its durable position stays). Does not acknowledge anything."""
        if not self._closed:
            self._closed = True
            self._stopped = True
            self._cursor.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise ConsumerError(f"{operation} failed: consumer {self.name!r} is closed")

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"position={self.position}"
        return f"<Consumer {self.name!r} {state}>"


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def count_entries(log: FasterLog, position: int) -> int:
    """Data entries from `position` (or begin, if truncated past it) to committed-until."""
    begin, committed = log.begin_address, log.committed_until_address
    start = max(position, begin)
    if start >= committed:
        return 0
    return sum(len(addresses) for addresses, _ in log.scan_columns(start, committed))
