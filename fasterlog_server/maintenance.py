"""Long work on the server's logs, off the event loop: KV checkpoints (KV.CHECKPOINT, the
automatic ones) and the stream log's truncation (LOG.TRUNCATE).

Rules:
1. One job at a time (`_turn`), its long part in one dedicated worker thread (`_executor`): a
   checkpoint's snapshot (a fold over the keys, a file written and synced, two commits), a
   truncation's two commits (the second deletes the segments below the new begin and rewrites
   the meta file). The loop only starts a job, does its short steps and awaits the rest. The
   command that asked is answered afterwards through the connection's wait for a later reply
   (context.answered_later): other clients are served meanwhile, and the connection's later
   commands wait, so its replies keep their order.
2. While a job works on a log, that log's committer is held (commit.py rule 6): no commit of
   it starts, and waiters enlisted meanwhile share the first commit after the job. A KV
   checkpoint holds the store's write lock, which the loop must never wait for, so the loop
   does not write to the store either: `KeyValues.held` keeps new writes in its overlay (reads
   see them), and the first commit after the checkpoint appends them. So a write made during
   a checkpoint is answered after it, once a commit covers it; reads go on. (With fsync
   everysec replies do not wait for commits: the overlay then holds what clients write during
   one checkpoint, as a commit in flight would hold their pending records.)
3. A checkpoint covers every KV write answered before it started: it flushes the overlay
   first (the connection also commits its own batch before `later()` runs). A KV.CHECKPOINT
   while one is pending shares it (one reply, the same position).
4. Automatic checkpoints: after each KV commit that succeeded, once the KV log holds
   `kv_checkpoint_bytes` committed past its newest checkpoint, one starts (unless one is
   pending), so a restart after kill -9 restores the index from it and replays at most about
   that much. KVStore's own `checkpoint_every_bytes` stays off in the server (its default):
   it would checkpoint inside a flush, on the loop.
5. A job's failure is its reply (`ERR <COMMAND> failed: ...`, or for an automatic checkpoint
   a line in the server's log, and the next try after another `kv_checkpoint_bytes`). A
   failed append or commit fences its log: the coordinator's on_failure is told
   (recovery.py rule 1), whose reload waits for the job's end (`committing` counts a held
   committer). A fenced server refuses both at once, with the fence's own error text.
6. `close` waits for the pending jobs (a clean stop checkpoints after it, server.py), then
   stops the worker.
7. LOG.TRUNCATE's restatement runs on the loop in steps of at most `restate_step_items_max`
   streams, groups, consumers or pending entries (settings.RESTATE_STEP_ITEMS_MAX), yielding
   to the loop between steps and appending each step's records before the next. Why replay
   after the cut still gives the state of the moment the command is answered:
   a. The cut address is committed when the command arrives, and every record not yet
      appended when the restatement starts (ours, and other clients' in between) lands at or
      above the tail, so above the cut: every change made between two steps has its own
      record after the cut; a stream or group made meanwhile has its creating record after
      it, one deleted meanwhile its destroy record.
   b. Each restatement record (xmeta, xgrestate, xgrestateconsumer, xgrestatepending) is
      built from the in-memory state when it is made pending, so it states what is true at
      its place in the log, and it replaces nothing (unlike xgcreate, which replaces a group
      whole): replayed over the full history (a crash before the cut) it changes nothing.
   c. After the cut, an object whose history starts above the cut replays whole. One made
      below the cut is absent until its restatement record: the records about it before
      that are ignored (a group absent) or overwritten by absolute values (xmeta's counters),
      and the restatement carries their effect, since it was made after them; the records
      after it apply to it as they did in memory. A pending entry restated in step 1 and
      acknowledged before step 2 leaves with the xgack after its record; one acknowledged
      before its own step is simply not restated.
   d. A stream or group deleted or replaced (DEL, XGROUP DESTROY then CREATE) between steps
      is not restated further: the new one's records all follow the start (a).
   The commit that makes the restatement durable comes before `truncate_until`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from fasterlog import FasterLog
from fasterlog.errors import FasterLogError
from kvlayer import KVStore

from . import resp
from .commit import CommitCoordinator
from .fence import WriteFence
from .groups import GroupStore
from .keyvalues import KeyValues
from .settings import RESTATE_STEP_ITEMS_MAX, ServerSettings
from .streams import StreamStore

__all__ = ["Maintenance", "failed_reply", "fenced_reply"]

_logger = logging.getLogger("fasterlog.service")
_OK = resp.SimpleString(b"OK")


def failed_reply(operation: str, error: BaseException) -> resp.ErrorReply:
    """A typed error of the log or the store (a fenced log, a full disk, a bad address) as an
    error reply: the client is answered and keeps its connection."""
    return resp.ErrorReply(f"ERR {operation} failed: " + " ".join(str(error).split()))


def fenced_reply(operation: str) -> resp.ErrorReply:
    """What a fenced server answers: its own words, not the store's (while fenced the store
    may be a read-only reload, recovery.py, whose refusal would name read_only)."""
    return resp.ErrorReply(f"ERR {operation} failed: the log is fenced after an I/O error; "
                           "reads go on, writes are refused until it is reopened")


async def _guarded(operation: str, job: Coroutine[Any, Any, Any]) -> Any:
    """A job whose failure is always a reply: the connection awaiting it must be answered."""
    try:
        return await job
    except Exception as error:  # a bug of ours: logged with its traceback, and answered
        _logger.exception("%s failed", operation)
        return failed_reply(operation, error)


class _Context(Protocol):
    """What a job works on: context.ServerContext, which holds the Maintenance (named here
    by what it offers, so the two modules do not import each other). The logs and stores are
    read at each use: a reload swaps them (recovery.py)."""

    settings: ServerSettings
    log: FasterLog
    streams: StreamStore
    groups: GroupStore
    kv: KeyValues
    coordinator: CommitCoordinator
    fence: WriteFence


class Maintenance:
    """Rules 1-6 for one server's context."""

    def __init__(self, context: _Context) -> None:
        self._context = context
        # Rule 1: one thread, made at the first job (a server that never checkpoints has none).
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="fasterlog-maintenance")
        self._turn = asyncio.Lock()
        self._checkpoint_task: asyncio.Task[Any] | None = None  # pending: shared (rule 3)
        # Every job's task, kept: the loop holds a task only weakly.
        self._tasks: set[asyncio.Task[Any]] = set()
        self.checkpoint_bytes = context.settings.kv_checkpoint_bytes
        self.restate_step_items_max = RESTATE_STEP_ITEMS_MAX  # rule 7 (tests make it tiny)
        self._due_address: int | None = None  # rule 4: KV committed-until that triggers one
        self._closing = False
        # What ran (tests and LOG.INFO read them).
        self.checkpoints_count = 0
        self.automatic_checkpoints_count = 0
        context.coordinator.on_kv_committed = self._kv_committed

    def _start(self, operation: str, job: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(_guarded(operation, job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ KV checkpoints

    def kv_checkpoint(self) -> Awaitable[Any]:
        """KV.CHECKPOINT's reply: the position it covers, or an error reply (rules 3, 5)."""
        task = self._checkpoint_task
        if task is None or task.done():
            task = self._start("KV.CHECKPOINT", self._checkpoint(automatic=False))
            self._checkpoint_task = task
        return asyncio.shield(task)  # a client that leaves does not cancel the others' job

    def _kv_committed(self) -> None:
        """Rule 4, after each KV commit that succeeded: costs a comparison unless one is due."""
        if not self.checkpoint_bytes or self._closing:
            return
        store = self._context.kv.store
        committed_until = store.log.committed_until_address
        if self._due_address is None:  # the first commit since the open
            self._due_address = self._next_due(store)
        if committed_until < self._due_address:
            return
        task = self._checkpoint_task
        if task is None or task.done():
            # Not again before the next bound, whatever this one's outcome (rule 5).
            self._due_address = committed_until + self.checkpoint_bytes
            self._checkpoint_task = self._start("KV.CHECKPOINT",
                                                self._checkpoint(automatic=True))

    def _next_due(self, store: KVStore) -> int:
        checkpoints = store.checkpoints
        since = checkpoints[0].position if checkpoints else store.log.begin_address
        return int(since) + self.checkpoint_bytes

    def _refusal(self, command: str) -> Any:
        """A job's reply when it cannot start (rules 5 and 6), or None."""
        if self._context.fence.active:
            return fenced_reply(command)
        if self._closing:
            return resp.ErrorReply(b"ERR %s failed: the server is closing" % command.encode())
        return None

    async def _checkpoint(self, automatic: bool) -> Any:
        async with self._turn:
            context = self._context
            refusal = self._refusal("KV.CHECKPOINT")
            if refusal is not None:
                return refusal
            committer = context.coordinator.kv_committer
            committer.hold()  # rule 2
            kv = context.kv
            store = kv.store
            try:
                await committer.idle()
                if context.fence.active:  # the commit that was in flight failed
                    return fenced_reply("KV.CHECKPOINT")
                try:
                    kv.flush()  # rule 3: what was written before it is in it
                except FasterLogError as error:  # a failed append (commit.py rule 4)
                    context.coordinator.on_failure(error)
                    return failed_reply("KV.CHECKPOINT", error)
                kv.held = True
                try:
                    made = await asyncio.get_running_loop().run_in_executor(
                        self._executor, store.checkpoint)
                finally:
                    kv.held = False
            except FasterLogError as error:  # kvlayer's errors are FasterLogErrors too
                if store.log.fenced:  # its commit failed (rule 5); a snapshot file did not
                    context.coordinator.on_failure(error)
                if automatic:
                    _logger.error("automatic KV checkpoint failed: %s", error)
                return failed_reply("KV.CHECKPOINT", error)
            finally:
                committer.release()
            self.checkpoints_count += 1
            self.automatic_checkpoints_count += automatic
            if self.checkpoint_bytes:
                self._due_address = made.position + self.checkpoint_bytes  # rule 4
            if automatic:
                _logger.info("automatic KV checkpoint at position %d", made.position)
            return made.position

    # ------------------------------------------------------------------ truncation

    def truncate(self, address: int) -> Awaitable[Any]:
        """LOG.TRUNCATE's reply: OK or an error reply. The state that lives in records below
        ADDRESS (each stream's last id and counters, every group) is first restated at the
        tail and committed, so a restart recovers it; then the begin moves, the entries below
        it leave their streams, and a second commit makes the begin durable and deletes the
        segments below it."""
        return asyncio.shield(self._start("LOG.TRUNCATE", self._truncate(address)))

    async def _truncate(self, address: int) -> Any:
        async with self._turn:
            context = self._context
            refusal = self._refusal("LOG.TRUNCATE")
            if refusal is not None:
                return refusal
            committer = context.coordinator.stream_committer
            committer.hold()  # rule 2
            log = context.log
            loop = asyncio.get_running_loop()
            try:
                await committer.idle()
                if context.fence.active:
                    return fenced_reply("LOG.TRUNCATE")
                try:
                    # Rule 7: on the loop, as every batch's records (they are the loop's
                    # state), in bounded steps, each step's records appended before the next.
                    # Every record not yet appended lands at or above the tail.
                    assert address <= log.tail_address, "restatement below the cut"
                    for _ in context.groups.restate_steps(self.restate_step_items_max):
                        context.streams.flush()
                        await asyncio.sleep(0)  # the loop serves others between steps
                        if context.fence.active:  # another append or commit failed
                            return fenced_reply("LOG.TRUNCATE")
                    context.streams.flush()
                    # The commit that makes the whole restatement durable, before the cut.
                    await loop.run_in_executor(self._executor, log.commit)
                except FasterLogError as error:  # a failed append or commit: rule 5
                    context.coordinator.on_failure(error)
                    return failed_reply("LOG.TRUNCATE", error)
                try:
                    # Cheap (no I/O but a cursor check): the begin moves and the streams
                    # forget what is below it in the same step, so no reader on the loop
                    # looks below it.
                    log.truncate_until(address)
                except FasterLogError as error:  # a cursor needs it, not an entry start
                    return failed_reply("LOG.TRUNCATE", error)
                context.streams.forget_below(log.begin_address)
                try:
                    await loop.run_in_executor(self._executor, log.commit)
                except FasterLogError as error:
                    context.coordinator.on_failure(error)
                    return failed_reply("LOG.TRUNCATE", error)
            finally:
                committer.release()
            return _OK

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        """Rule 6."""
        self._closing = True
        pending = list(self._tasks)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
