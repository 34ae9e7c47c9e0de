"""Projections: fold a log's entries into a state, with exactly-once checkpoints in the log.

A `Projection` says how one entry changes a state (`apply`) and how a state is saved and loaded
(`snapshot`, `restore`). A `ProjectionRunner` feeds it every data entry of a log in address
order, from a thread (`run`, `start`/`stop`) or from asyncio (`await run_async()`), and
checkpoints it every `checkpoint_every_entries` entries.

Rules:
1. The state after the entries below position P is a pure function of those entries: `apply`
   must be deterministic (no clock, no randomness, no reading other files). That is what makes
   "load a checkpoint, replay the suffix" equal one full replay.
2. A checkpoint at position P is made in this order, and counts only once all of it happened:
   (a) the snapshot of the state after every entry below P is written to
       CHECKPOINTS/<name>-<P>.snap (under a temporary name, fsynced, renamed, directory
       fsynced);
   (b) a marker entry, msgpack {"kind": "checkpoint", "version": 1, "name", "position": P,
       "file", "crc32c", "size_bytes"}, is appended and committed.
   A crash before (b) is durable leaves a file that no marker names: it is never read, and is
   deleted (or overwritten) by a later checkpoint.
3. On restart the runner takes the newest committed checkpoint marker of its name whose file
   exists, has the marker's size and CRC32C, and restores; then it replays only the entries
   from P. The markers in the log are the source of truth. The index file
   CHECKPOINTS/<name>.hint (the addresses of the markers kept) is only a hint of where to look:
   the runner checks each hinted address really holds such a marker and scans forward from the
   newest for later ones; without a usable hint it scans the whole log for markers.
4. A checkpoint that cannot be used (file missing, truncated, wrong checksum, restore() failed,
   or its suffix truncated away) is skipped with a warning on the "consumers.projection"
   logger; the runner falls back to the previous one, and with none left to a full replay.
   `load_checkpoint` raises `CheckpointError` for the same cases.
5. Checkpoints need write access (a marker is appended): run the runner in the writer's
   process. On a read-only log (a follower) a runner loads the writer's checkpoints and writes
   none; on a completed log it writes none either (the log takes no more markers).
6. Only the snapshot files of the newest `checkpoints_kept_count` checkpoints of a name are
   kept; older ones, and files no committed marker names, are deleted after each checkpoint.
7. One runner per (log, name) at a time: two would delete each other's files.
The marker and snapshot-file mechanism is consumers/checkpoints.py, shared with kvlayer; the
marker's fields and the hint file are this module's format.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, NamedTuple, TypeVar

import msgpack

from fasterlog import FasterLog, errors, frame_size

from .checkpoints import (
    MarkerFormat,
    crc32c,
    read_snapshot_file,
    remove_snapshot_files,
    write_snapshot_file,
)
from .errors import CheckpointError

__all__ = ["Checkpoint", "CheckpointError", "Projection", "ProjectionRunner", "crc32c"]

_logger = logging.getLogger("consumers.projection")

CHECKPOINT_MARKER_KIND = "checkpoint"
CHECKPOINT_MARKER_VERSION = 1
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
checkpoint_every_entries_default = 10_000
checkpoints_kept_count_default = 3
# A hint file larger than this is not ours; it is ignored.
hint_size_max_bytes = 64 << 10

S = TypeVar("S")


class Checkpoint(NamedTuple):
    """One checkpoint marker as recorded in the log."""

    name: str
    position: int        # the state covers every data entry below this address
    file_name: str       # inside the checkpoint directory
    crc32c: int          # of the snapshot file's bytes
    size_bytes: int
    marker_address: int  # where the marker entry is in the log


class Projection(Generic[S]):
    """Folds entries into a state. Subclass it and define apply(); states that are dicts (or
    lists) of msgpack types get snapshot() and restore() for free. Tuples come back as lists
    and bytes as bytes, so use lists in a state that must compare equal after a restore."""

    def initial_state(self) -> S:
        """The state before any entry."""
        return {}  # type: ignore[return-value]

    def apply(self, state: S, address: int, entry: bytes) -> S:
        """Returns the state after `entry` (it may change `state` in place and return it).
        Must be deterministic: see the module's rule 1."""
        raise NotImplementedError(f"{type(self).__name__} must define apply()")

    def snapshot(self, state: S) -> bytes:
        """Encodes a state for a checkpoint file."""
        return msgpack.packb(state, use_bin_type=True)

    def restore(self, data: bytes) -> S:
        """Decodes what snapshot() made."""
        state: S = msgpack.unpackb(data, raw=False, strict_map_key=False)
        return state


# ---------------------------------------------------------------------- checkpoint files


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"ProjectionRunner failed: a name must be 1 to 64 characters from "
                         f"A-Z a-z 0-9 _ . -, not {name!r}")
    return name


def marker_format(name: str) -> MarkerFormat[Checkpoint]:
    """The checkpoint markers of projection `name` (the module's rule 2b): consumers'
    checkpoint mechanism with this module's fields."""

    def build(address: int, fields: dict[str, Any]) -> Checkpoint | None:
        if fields.get("name") != name:
            return None  # another projection's
        return Checkpoint(name, int(fields["position"]), str(fields["file"]),
                          int(fields["crc32c"]), int(fields["size_bytes"]), address)

    return MarkerFormat(CHECKPOINT_MARKER_KIND, CHECKPOINT_MARKER_VERSION, build)


def find_checkpoints(log: FasterLog, name: str, begin: int | None = None,
                     end: int | None = None) -> Iterator[Checkpoint]:
    """Yields the checkpoint markers of `name` in [begin, end) (default: the committed log),
    oldest first."""
    end = log.committed_until_address if end is None else end
    return marker_format(name).find(log, begin, end)


def load_checkpoint(checkpoint: Checkpoint, directory: str) -> bytes:
    """The snapshot bytes of a checkpoint, checked against its marker's size and CRC32C.
    Raises CheckpointError when the file is missing, truncated or corrupt."""
    where = f"load checkpoint {checkpoint.name!r} at position {checkpoint.position} failed"
    return read_snapshot_file(directory, checkpoint, where)


# ---------------------------------------------------------------------- the runner


class ProjectionRunner(Generic[S]):
    """Feeds a Projection from a log and checkpoints it; see the module's rules.

    `state` and `position` (the state covers every data entry below `position`) are safe to
    read from other threads; a state the projection changes in place should be read after
    stop(). After a restart, `recovered_from` is the checkpoint the state was loaded from
    (None after a full replay)."""

    def __init__(self, log: FasterLog, projection: Projection[S], name: str, *,
                 checkpoint_every_entries: int = checkpoint_every_entries_default,
                 checkpoint_directory: str | os.PathLike[str] | None = None,
                 checkpoints_kept_count: int = checkpoints_kept_count_default,
                 checkpoint_on_stop: bool = True) -> None:
        for label, value, low in (("checkpoint_every_entries", checkpoint_every_entries, 0),
                                  ("checkpoints_kept_count", checkpoints_kept_count, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"ProjectionRunner failed: {label} must be an integer of at "
                                 f"least {low}, not {value!r}")
        self._log = log
        self._projection = projection
        self._name = _check_name(name)
        self._markers = marker_format(self._name)
        self._directory = os.fspath(checkpoint_directory or os.path.join(log.path,
                                                                        "checkpoints"))
        self._every = checkpoint_every_entries
        self._kept_count = checkpoints_kept_count
        self._checkpoint_on_stop = checkpoint_on_stop
        self._state: S = projection.initial_state()
        self._position = log.begin_address
        self._recovered = False
        self.recovered_from: Checkpoint | None = None
        self._kept: list[Checkpoint] = []  # newest last; their files are the ones kept
        self._applied_since_checkpoint = 0
        self._state_lock = threading.Lock()  # apply versus snapshot
        self._checkpoint_lock = threading.Lock()  # one checkpoint write at a time
        self._control_lock = threading.Lock()  # the running tail versus stop()
        self._tail: Any = None
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> S:
        return self._state

    @property
    def position(self) -> int:
        return self._position

    @property
    def checkpoint_directory(self) -> str:
        return self._directory

    @property
    def writable(self) -> bool:
        """Whether this runner can write checkpoints: a writable log that is not completed."""
        return not self._log.settings["readonly"] and not self._log.completed

    # ------------------------------------------------------------------ recovery

    def recover(self) -> None:
        """Loads the newest usable checkpoint (see rules 3 and 4). run(), start(), catch_up()
        and run_async() call it on first use; calling it again does nothing."""
        if self._recovered:
            return
        candidates = self._candidates()  # newest first
        for tried, checkpoint in enumerate(candidates):
            try:
                state = self._load(checkpoint)
            except CheckpointError as error:
                # Files of checkpoints older than the kept ones were deleted on purpose.
                level = logging.WARNING if tried < self._kept_count else logging.DEBUG
                _logger.log(level, "%s; falling back to %s", error,
                            "an older checkpoint" if tried + 1 < len(candidates)
                            else "a full replay")
                continue
            with self._state_lock:
                self._state, self._position = state, checkpoint.position
            self.recovered_from = checkpoint
            self._kept = [c for c in reversed(candidates)
                          if c.position <= checkpoint.position][-self._kept_count:]
            break
        else:
            if candidates:
                _logger.warning("projection %r: no usable checkpoint; replaying the whole log",
                                self._name)
            with self._state_lock:
                self._position = self._log.begin_address
        self._recovered = True

    def _candidates(self) -> list[Checkpoint]:
        """Committed checkpoint markers of this name, newest first."""
        log = self._log
        committed = log.committed_until_address
        hinted = [c for c in map(self._checkpoint_at, self._read_hint()) if c is not None]
        hinted.sort(key=lambda c: c.marker_address)
        begin = hinted[-1].marker_address if hinted else None
        try:
            later = list(self._markers.find(log, begin, committed))
        except errors.TruncatedError:
            later = []
        found = {c.marker_address: c for c in hinted + later}
        return sorted(found.values(), key=lambda c: c.marker_address, reverse=True)

    def _checkpoint_at(self, address: int) -> Checkpoint | None:
        """The checkpoint marker at a hinted address, if that is really one."""
        return self._markers.at(self._log, address)

    def _load(self, checkpoint: Checkpoint) -> S:
        begin = self._log.begin_address
        if checkpoint.position < begin:
            raise CheckpointError(f"load checkpoint {self._name!r} at position "
                                  f"{checkpoint.position} failed: the log was truncated to "
                                  f"{begin}, so the entries after it are gone")
        return self.load_checkpoint(checkpoint)

    def load_checkpoint(self, checkpoint: Checkpoint) -> S:
        """The state saved by `checkpoint`; CheckpointError when it cannot be used."""
        data = load_checkpoint(checkpoint, self._directory)
        try:
            return self._projection.restore(data)
        except Exception as error:  # whatever restore() raises, the snapshot is unusable
            raise CheckpointError(f"load checkpoint {self._name!r} at position "
                                  f"{checkpoint.position} failed: restore() raised "
                                  f"{type(error).__name__}: {error}") from error

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint marker of this name in the log, newest first (files may be gone)."""
        return list(reversed(list(find_checkpoints(self._log, self._name))))

    # ------------------------------------------------------------------ applying

    def _apply(self, address: int, entry: bytes) -> None:
        with self._state_lock:
            assert address >= self._position, "entries are applied once, in address order"
            self._state = self._projection.apply(self._state, address, entry)
            self._position = address + frame_size(len(entry))
            self._applied_since_checkpoint += 1

    def _checkpoint_due(self) -> bool:
        return (self._every > 0 and self._applied_since_checkpoint >= self._every
                and self.writable)

    def catch_up(self) -> int:
        """Applies every entry committed now and returns how many; checkpoints when due."""
        self.recover()
        applied = 0
        for addresses, entries in self._log.scan_columns(self._position):
            for address, entry in zip(addresses, entries, strict=True):
                self._apply(address, entry)
                applied += 1
                if self._checkpoint_due():
                    self.checkpoint()
        return applied

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self) -> Checkpoint | None:
        """Writes a checkpoint of the current state (rule 2) and returns it; None when the
        state has not moved since the last one. CheckpointError on a read-only or completed
        log, or when the snapshot file cannot be written."""
        # The checkpoint lock is taken first, so checkpoints are written in position order.
        with self._checkpoint_lock:
            with self._state_lock:
                position = self._position
                data = self._projection.snapshot(self._state)
                applied = self._applied_since_checkpoint
                self._applied_since_checkpoint = 0
            try:
                return self._write_checkpoint(position, data)
            except BaseException:
                with self._state_lock:
                    self._applied_since_checkpoint += applied
                raise

    def _write_checkpoint(self, position: int, data: bytes) -> Checkpoint | None:
        """Rule 2, with the checkpoint lock held."""
        if not isinstance(data, bytes):
            raise TypeError(f"checkpoint failed: snapshot() must return bytes, not "
                            f"{type(data).__name__}")
        if self._kept and self._kept[-1].position == position:
            return None
        if not self.writable:
            why = "read-only" if self._log.settings["readonly"] else "completed"
            raise CheckpointError(f"checkpoint {self._name!r} failed: the log is {why}; "
                                  "checkpoints are written by the writer's process")
        file_name = f"{self._name}-{position}.snap"
        try:
            write_snapshot_file(self._directory, file_name, data)
        except OSError as error:
            raise CheckpointError(f"checkpoint {self._name!r} failed: cannot write "
                                  f"{file_name}: {error}") from error
        checksum = crc32c(data)
        marker = self._markers.encode(name=self._name, position=position, file=file_name,
                                      crc32c=checksum, size_bytes=len(data))
        address = self._log.append_marker(marker)
        self._log.commit()
        checkpoint = Checkpoint(self._name, position, file_name, checksum, len(data),
                                address)
        self._kept = [*self._kept, checkpoint][-self._kept_count:]
        try:
            self._write_hint()
            self._delete_old_files()
        except OSError as error:  # the checkpoint is durable; this is housekeeping
            _logger.warning("projection %r: checkpoint at %d written, but updating the hint "
                            "or deleting old snapshot files failed: %s", self._name,
                            position, error)
        return checkpoint

    def _hint_path(self) -> str:
        return os.path.join(self._directory, f"{self._name}.hint")

    def _read_hint(self) -> list[int]:
        try:
            with open(self._hint_path(), "rb") as file:
                fields = msgpack.unpackb(file.read(hint_size_max_bytes), raw=False)
            addresses = fields["marker_addresses"]
            if not all(isinstance(a, int) and not isinstance(a, bool) for a in addresses):
                raise TypeError("marker_addresses holds a non-integer")
            return list(addresses)
        except FileNotFoundError:
            return []
        except Exception as error:  # noqa: BLE001 (a bad hint costs a scan, nothing more)
            _logger.info("projection %r: ignoring hint file %s (%s)", self._name,
                         self._hint_path(), error)
            return []

    def _write_hint(self) -> None:
        # No fsync: a hint lost in a crash only makes the next start scan the log.
        data = msgpack.packb({"marker_addresses": [c.marker_address for c in self._kept]})
        temporary = self._hint_path() + ".tmp"
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, self._hint_path())

    def _delete_old_files(self) -> None:
        pattern = re.compile(re.escape(self._name) + r"-\d+\.snap(\.tmp)?")
        remove_snapshot_files(self._directory, lambda name: bool(pattern.fullmatch(name)),
                              (c.file_name for c in self._kept))

    # ------------------------------------------------------------------ thread runner

    def run(self, timeout: float | None = None) -> None:
        """Follows the log in this thread until stop(), `timeout` seconds without a commit, or
        the end of a completed log; then writes a last checkpoint (if checkpoint_on_stop)."""
        self._stop_requested = False
        self._run(timeout)

    def _run(self, timeout: float | None = None) -> None:
        self.recover()
        with self._control_lock:
            if self._stop_requested:
                return
            self._tail = tail = self._log.tail(self._position, timeout)
        try:
            for address, entry in tail:
                self._apply(address, entry)
                if self._checkpoint_due():
                    self.checkpoint()
        finally:
            with self._control_lock:
                self._tail = None
        self._final_checkpoint()

    def _final_checkpoint(self) -> None:
        if self._checkpoint_on_stop and self._applied_since_checkpoint and self.writable:
            self.checkpoint()

    def start(self, timeout: float | None = None) -> None:
        """Runs run() in a background thread; stop() ends it."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError(f"start failed: projection {self._name!r} is already running")
        self._stop_requested = False
        self._thread_error = None

        def target() -> None:
            try:
                self._run(timeout)
            except BaseException as error:  # noqa: BLE001 (stop() and join() re-raise it)
                self._thread_error = error

        self._thread = threading.Thread(target=target, name=f"projection-{self._name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ends run()/start()/run_async() from any thread, then waits for the background
        thread (if start() made one) and re-raises what it raised."""
        with self._control_lock:
            self._stop_requested = True
            tail = self._tail
        if tail is not None:
            tail.stop()
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Waits for the background thread to end (timeout or completed log) and re-raises
        what it raised."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if not thread.is_alive():
                self._thread = None
                error, self._thread_error = self._thread_error, None
                if error is not None:
                    raise error

    # ------------------------------------------------------------------ asyncio runner

    async def run_async(self, timeout: float | None = None) -> None:
        """The asyncio twin of run(): follows the log with tail_async. Recovery and checkpoint
        writes (file I/O and fsync) run in the default executor so the loop stays free."""
        loop = asyncio.get_running_loop()
        self._stop_requested = False
        if not self._recovered:
            await loop.run_in_executor(None, self.recover)
        with self._control_lock:
            if self._stop_requested:
                return
            self._tail = tail = self._log.tail_async(self._position, timeout)
        try:
            async for address, entry in tail:
                self._apply(address, entry)
                if self._checkpoint_due():
                    await self._checkpoint_in_executor(loop)
        finally:
            with self._control_lock:
                self._tail = None
        if self._checkpoint_on_stop and self._applied_since_checkpoint and self.writable:
            await self._checkpoint_in_executor(loop)

    async def _checkpoint_in_executor(self, loop: asyncio.AbstractEventLoop) -> None:
        # checkpoint() takes the snapshot under the state lock; the loop applies nothing while
        # it waits here, so the snapshot is of the state at the current position.
        checkpoint: Callable[[], Checkpoint | None] = self.checkpoint
        await loop.run_in_executor(None, checkpoint)
