"""Group commit: the one module that knows the fsync policy and how a batch waits for its commit.

Rules:
1. With fsync always a write is answered only after a commit that started after the write was
   made, so an acknowledged write survives kill -9 and power loss. With fsync everysec a batch
   appends at once and is answered at once; a task commits every second (redis-server's
   appendfsync everysec, for comparison: not durable per reply).
2. One commit at a time per log. Waiters that arrive while a commit runs share the next one:
   one append (every waiting connection's pending records, `prepare`) and one sync for all.
   With fsync always the event loop's thread commits (`LoopCommitter`, as redis-server's
   appendfsync always); otherwise a worker thread does (`ThreadCommitter`).
3. A waiter is a `CommitWaiter` (`enlist`), whose `commit_done(error)` the commit calls
   directly: no future, done callback or extra loop iteration per request; `request` wraps a
   future in one, for callers that await.
   A committer never calls back from inside `enlist` or `request`: the caller may set up its
   wait after enlisting.
4. A failed append or sync fences the log (fasterlog's rule); every waiter of that commit gets
   the error, and so does every waiter enlisted for a later one (`fail_enlisted`): the
   coordinator's `on_failure` hook (the server's LogKeeper, recovery.py) is told at once, drops
   the pending records and reloads the committed state, so nothing that was answered with an
   error stays visible, and nothing pending before the failure is committed after a reopen.
5. Readers that wait for news see entries below `visible_until_address()`: the committed ones
   with fsync always, every appended one with everysec (whose replies do not wait for syncs).
6. A committer can be held (`hold`, `release`): while held no commit of its log starts (one in
   flight ends first: `idle`), so long work on that log runs in a worker thread without the
   loop ever waiting for it (maintenance.py); waiters enlisted meanwhile share the first commit
   after the release. After each commit that succeeded, `on_success` runs on the loop (the
   automatic KV checkpoint looks there whether one is due).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal, Protocol, TypeAlias

from fasterlog import FasterLog
from fasterlog.errors import FasterLogError

from .keyvalues import KeyValues
from .settings import (
    COMMIT_GATHER_ITERATIONS_MAX,
    COMMIT_GATHER_MAX_S,
    EVERYSEC_COMMIT_INTERVAL_S,
    HELD_OVERLAY_SIZE_MAX_BYTES,
)
from .streams import StreamStore

__all__ = ["CommitCoordinator", "CommitWaiter", "LoopCommitter", "ThreadCommitter"]

_logger = logging.getLogger("fasterlog.service")


class CommitWaiter(Protocol):
    """What `enlist` takes: an object told of the commit that covers it."""

    def commit_done(self, error: BaseException | None) -> None: ...


class _FutureWaiter:
    """`request`'s waiter: resolves its future (unless it was cancelled meanwhile)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def commit_done(self, error: BaseException | None) -> None:
        if not self.future.done():
            if error is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(error)


def _answer(waiters: list[CommitWaiter], error: BaseException | None) -> None:
    for waiter in waiters:
        waiter.commit_done(error)


def _request(committer: ThreadCommitter | LoopCommitter) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    committer.enlist(_FutureWaiter(future))
    return future


class _Holds:
    """Rule 6's hold count, shared by both committers; each says in `_released` what the last
    release does (start the commit the waiters enlisted meanwhile are owed)."""

    _holds_count: int

    @property
    def held(self) -> bool:
        """Rule 6: commits wait for a `release`."""
        return self._holds_count > 0

    def hold(self) -> None:
        """Rule 6: no commit starts until the matching `release` (one in flight goes on)."""
        self._holds_count += 1

    def release(self) -> None:
        """Rule 6: ends a `hold`; the waiters enlisted meanwhile get the next commit."""
        assert self._holds_count > 0, "release without hold"
        self._holds_count -= 1
        if not self._holds_count:
            self._released()

    def _released(self) -> None:
        raise NotImplementedError


class ThreadCommitter(_Holds):
    """Group commit of one log in a worker thread (the sync releases the GIL): every waiter is
    answered by a commit that started after it arrived, and waiters that arrive while a
    commit runs share the next one."""

    def __init__(self, commit: Callable[[], object],
                 prepare: Callable[[], object] = lambda: None,
                 on_failure: Callable[[BaseException], None] = lambda error: None,
                 on_success: Callable[[], None] = lambda: None) -> None:
        self.commit_call = commit  # the log's commit (a reopen gives a new log: `adopt`)
        self._prepare = prepare  # on the event loop, just before each commit: the append
        self._on_failure = on_failure  # after the failed commit's waiters are answered
        self._on_success = on_success  # after a commit's waiters are answered (rule 6)
        self._waiters: list[CommitWaiter] = []  # answered in arrival order
        self._running = False
        self._holds_count = 0  # rule 6: no commit starts while it is not 0
        self._idle_futures: list[asyncio.Future[None]] = []  # `idle` callers, told at the end
        # The task of the commits in progress, kept: the loop holds only a weak reference to
        # a task, which could otherwise be collected mid-commit.
        self._task: asyncio.Task[None] | None = None
        # Waiters served and commits run: requests_count / commits_count is the group size.
        self.requests_count = 0
        self.commits_count = 0
        self.commit_seconds_total = 0.0  # inside the worker: the append's write and sync

    def _timed_commit(self) -> None:
        started = time.perf_counter()
        try:
            self.commit_call()
        finally:
            self.commit_seconds_total += time.perf_counter() - started

    @property
    def running(self) -> bool:
        """A commit is in flight (its worker may still finish it)."""
        return self._running

    def _released(self) -> None:
        if self._waiters and not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def idle(self) -> None:
        """Returns once no commit is in flight (after `hold`, none starts again)."""
        while self._running:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_futures.append(future)
            await future

    def fail_enlisted(self, error: BaseException) -> None:
        """Answers every waiter not yet taken by a commit with `error` (rule 4)."""
        waiters, self._waiters = self._waiters, []
        _answer(waiters, error)

    def request(self) -> asyncio.Future[None]:
        """A future resolved by the next commit that starts after this call."""
        return _request(self)

    def enlist(self, waiter: CommitWaiter) -> None:
        """As `request`, for a waiter the commit calls (rule 3)."""
        self._waiters.append(waiter)
        self.requests_count += 1
        if not self._running and not self._holds_count:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def commit(self) -> None:
        await self.request()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiters and not self._holds_count:  # rule 6: a hold waits for us
                waiters, self._waiters = self._waiters, []
                self.commits_count += 1
                try:
                    # Every connection's pending records in one append, then one sync.
                    self._prepare()
                    await loop.run_in_executor(None, self._timed_commit)
                except Exception as error:  # noqa: BLE001 - a failed commit fences the log:
                    _answer(waiters, error)  # every waiter is told (rule 4)
                    self._on_failure(error)
                    continue
                _answer(waiters, None)
                self._on_success()
        finally:
            self._running = False
            self._task = None  # no cycle through the finished task
            idle_futures, self._idle_futures = self._idle_futures, []
            for future in idle_futures:
                if not future.done():
                    future.set_result(None)

    def close(self) -> None:
        """Nothing to do: its task answers every waiter it took."""


class LoopCommitter(_Holds):
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
    iteration (at most `gather_iterations_max`, and not once `gather_max_s` have passed since
    its first waiter), so clients whose requests arrive one by one share a sync instead of
    splitting into cohorts of a few each. A lone client never waits: an iteration that brings
    nobody new ends the gathering. Same interface as ThreadCommitter."""

    def __init__(self, commit: Callable[[], object], prepare: Callable[[], object], *,
                 on_failure: Callable[[BaseException], None] = lambda error: None,
                 on_success: Callable[[], None] = lambda: None,
                 gather_iterations_max: int = COMMIT_GATHER_ITERATIONS_MAX,
                 gather_max_s: float = COMMIT_GATHER_MAX_S) -> None:
        self.commit_call = commit  # the log's commit (a reopen gives a new log: `adopt`)
        self._prepare = prepare  # the append of every waiter's pending records
        self._on_failure = on_failure  # after the failed commit's waiters are answered
        self._on_success = on_success  # after a commit's waiters are answered (rule 6)
        self._holds_count = 0  # rule 6: no commit starts while it is not 0
        self._gather_iterations_max = gather_iterations_max
        self._gather_max_s = gather_max_s
        self._enlisted: list[CommitWaiter] = []
        self._scheduled = False
        self._seen_count = 0  # waiters seen by the last gathering check
        self._iterations_count = 0
        self._first_enlisted_s = 0.0
        self.requests_count = 0
        self.commits_count = 0
        self.commit_seconds_total = 0.0  # the appends and syncs

    def request(self) -> asyncio.Future[None]:
        return _request(self)

    async def commit(self) -> None:
        await self.request()

    def enlist(self, waiter: CommitWaiter) -> None:
        self._enlisted.append(waiter)
        self.requests_count += 1
        if not self._scheduled and not self._holds_count:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        loop = asyncio.get_running_loop()
        self._seen_count = len(self._enlisted)
        self._iterations_count = 0
        self._first_enlisted_s = loop.time()
        loop.call_soon(self._gather)

    def _released(self) -> None:
        if self._enlisted and not self._scheduled:
            self._schedule()

    async def idle(self) -> None:
        """Its commits run inside one callback: none is ever in flight between two."""

    def _gather(self) -> None:
        if self._holds_count:  # rule 6: the release schedules the commit again
            self._scheduled = False
            return
        count = len(self._enlisted)
        if count > self._seen_count and self._iterations_count < self._gather_iterations_max:
            loop = asyncio.get_running_loop()
            if loop.time() - self._first_enlisted_s < self._gather_max_s:
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

    running = False  # its commits run inside one callback: never in flight between two

    def fail_enlisted(self, error: BaseException) -> None:
        """Answers every waiter not yet committed with `error` (rule 4)."""
        waiters, self._enlisted = self._enlisted, []
        _answer(waiters, error)

    def _run(self) -> None:
        waiters, self._enlisted = self._enlisted, []
        if not waiters:
            return
        self.commits_count += 1
        started = time.perf_counter()
        try:
            self._prepare()
            self.commit_call()
        except Exception as error:  # noqa: BLE001 - a failed append or sync fences the log:
            # every waiter gets the error, later writes are refused
            self.commit_seconds_total += time.perf_counter() - started
            _answer(waiters, error)
            self._on_failure(error)
            return
        self.commit_seconds_total += time.perf_counter() - started
        _answer(waiters, None)
        self._on_success()


Committer: TypeAlias = "ThreadCommitter | LoopCommitter"
LogName: TypeAlias = 'Literal["streams", "kv"]'  # the two logs, as lanes name them
Marks: TypeAlias = "tuple[int, int]"


class CommitCoordinator:
    """The commits of the server's two logs (streams and groups; the KV store's), under the
    fsync policy (rule 1): which committer each log has, what a finished batch waits for, the
    every-second commit and the last one at close."""

    def __init__(self, fsync: str, log: FasterLog, streams: StreamStore,
                 kv: KeyValues) -> None:
        self._log = log
        self._streams = streams
        self._kv = kv
        # Read by every batch: with fsync everysec replies never wait, except for WAITAOF.
        self.replies_wait_for_commit = fsync == "always"
        self.stream_committer: Committer
        self.kv_committer: Committer
        failed, kv_committed = self._failed, self._kv_committed
        if self.replies_wait_for_commit:
            self.stream_committer = LoopCommitter(log.commit, streams.flush, on_failure=failed)
            self.kv_committer = LoopCommitter(kv.store.log.commit, kv.flush, on_failure=failed,
                                              on_success=kv_committed)
        else:
            self.stream_committer = ThreadCommitter(log.commit, streams.flush, failed)
            self.kv_committer = ThreadCommitter(kv.store.log.commit, kv.flush, failed,
                                                kv_committed)
        self._every_second_task: asyncio.Task[None] | None = None
        # Told of every failed append or commit (rule 4): the server's LogKeeper sets it.
        self.on_failure: Callable[[BaseException], None] = lambda error: None
        # After each KV commit that succeeded (rule 6): the server's Maintenance sets it.
        self.on_kv_committed: Callable[[], None] = lambda: None
        # False while the logs are read-only (recovery.py): close() has nothing to commit.
        self.writable = True

    def _failed(self, error: BaseException) -> None:
        """A commit or an append failed (rule 4): the hook, once per failure."""
        self.on_failure(error)

    def _kv_committed(self) -> None:
        self.on_kv_committed()

    def fail_enlisted(self, error: BaseException) -> None:
        """Answers every waiter of both logs not yet taken by a commit with `error`."""
        self.stream_committer.fail_enlisted(error)
        self.kv_committer.fail_enlisted(error)

    @property
    def committing(self) -> bool:
        """A commit of either log is in flight, or long work on one (rule 6: a held
        committer) may still commit it."""
        stream, kv = self.stream_committer, self.kv_committer
        return stream.running or kv.running or stream.held or kv.held

    def adopt(self, log: FasterLog, kv: KeyValues) -> None:
        """After a reopen: commits go to `log` and to `kv`'s store's log (recovery.py)."""
        self._log = log
        self.stream_committer.commit_call = log.commit
        self.kv_committer.commit_call = kv.store.log.commit

    def visible_until_address(self) -> int:
        """Entries below this address are shown to XREAD and XREADGROUP (rule 5)."""
        if self.replies_wait_for_commit:
            return self._log.committed_until_address
        return self._log.tail_address

    def marks(self) -> Marks:
        """Both logs' write counts, taken when a batch starts: `enlist_batch` tells from them
        which logs the batch wrote."""
        return self._streams.writes_count, self._kv.writes_count

    def enlist_batch(self, waiter: CommitWaiter, marks: Marks, wrote: bool,
                     sync_required: bool) -> int:
        """The end of a connection's batch: enlists `waiter` with the commits its replies wait
        for and returns how many (its records stay pending, for the committer's one append).
        0 when none is due: with fsync everysec (the batch is appended now), or for a batch
        that wrote nothing. `wrote`: commit the stream log even with nothing written (a
        command that changed the log otherwise); `sync_required`: commit both logs, whatever
        the policy (WAITAOF, LOG.COMMIT). Raises if an append fails."""
        if not self.replies_wait_for_commit and not sync_required:
            self.append_pending()
            return 0
        count = 0
        if self._streams.writes_count != marks[0] or wrote or sync_required:
            self.stream_committer.enlist(waiter)
            count += 1
        if self._kv.writes_count != marks[1] or sync_required:
            self.kv_committer.enlist(waiter)
            count += 1
        return count

    def lone_write_committer(self, log: LogName) -> Committer | None:
        """What a lone write to `log` (a hot lane: dispatch.LANES) waits for, asked once per
        connection: the log's committer (enlist with it), or None when replies do not wait
        (`append_pending`, then answer)."""
        if not self.replies_wait_for_commit:
            return None
        return self.kv_committer if log == "kv" else self.stream_committer

    def append_pending(self) -> None:
        """Appends both logs' pending records now. Raises if an append fails (the failure
        goes to `on_failure` first)."""
        try:
            self._streams.flush()
            self._kv.flush()
        except Exception as error:  # every failed append: rule 4, then re-raised
            self._failed(error)
            raise

    async def commit_batch(self, wrote: bool, sync_required: bool) -> None:
        """The end of a batch that goes on in a task: appends every pending record now (one
        atomic batch per log), then awaits the commits its replies must wait for (none with
        fsync everysec, unless `sync_required`). Raises if an append or a commit fails."""
        try:
            wrote_streams = self._streams.flush()
            wrote_kv = self._kv.flush()
        except Exception as error:  # every failed append: rule 4, then re-raised
            self._failed(error)
            raise
        if not self.replies_wait_for_commit and not sync_required:
            if wrote_kv and self.overlay_committer() is not None:
                await self.kv_committer.request()
            return
        waits: list[asyncio.Future[None]] = []
        if wrote_streams or wrote or sync_required:
            waits.append(self.stream_committer.request())
        if wrote_kv or sync_required:
            waits.append(self.kv_committer.request())
        if len(waits) == 1:
            await waits[0]
        elif waits:
            await asyncio.gather(*waits)

    def overlay_committer(self) -> Committer | None:
        """With fsync everysec, what a KV write waits for when a checkpoint holds the KV
        committer and the overlay is past HELD_OVERLAY_SIZE_MAX_BYTES (settings.py): the KV
        committer, whose first commit after the checkpoint covers it. None: answer now."""
        if self._kv.held and self._kv.pending_size_bytes > HELD_OVERLAY_SIZE_MAX_BYTES:
            return self.kv_committer
        return None

    async def commit_kv(self) -> None:
        """Commits the KV log, whatever the policy (the expiry sweep's deletes, appended by
        its caller). Raises if it fails."""
        await self.kv_committer.commit()

    def start(self) -> None:
        """On the running loop: with fsync everysec, the commit every second."""
        if not self.replies_wait_for_commit:
            self._every_second_task = asyncio.create_task(self._commit_every_second())

    async def _commit_every_second(self) -> None:
        while True:
            await asyncio.sleep(EVERYSEC_COMMIT_INTERVAL_S)
            if not self.writable:  # read-only logs (recovery.py): nothing to commit
                continue
            try:
                self.append_pending()
                await asyncio.gather(self.stream_committer.commit(),
                                     self.kv_committer.commit())
            except Exception as error:  # noqa: BLE001 - told to on_failure (rule 4); the
                _logger.debug("every-second commit: %s", error)  # next second tries again

    async def close(self) -> None:
        """Stops the every-second commit, appends and commits what is pending in both logs
        (in a worker thread), then answers the waiters still enlisted (that commit covered
        them). A fenced log is logged, not raised: closing goes on."""
        if self._every_second_task is not None:
            self._every_second_task.cancel()
        loop = asyncio.get_running_loop()
        for flush, commit in ((self._streams.flush, self._log.commit),
                              (self._kv.flush, self._kv.store.commit)):
            if not self.writable:
                break
            try:
                flush()
                await loop.run_in_executor(None, commit)
            except FasterLogError as error:
                # What a fenced log refused was answered with an error, never acknowledged;
                # a restart recovers the rest.
                _logger.error("closing: %s", error)
        self.stream_committer.close()
        self.kv_committer.close()
