"""Online backup: a copy of a log's committed prefix, taken while its writer runs.

`cp -r` of a live log copies segments and the meta file at different moments: the copy's meta
file can name a commit its segments do not hold yet, or a recovery start in a segment a
truncation deleted meanwhile, and then it does not open. `backup(source, target)` instead:

1. reads the source's meta file (its identity, and the commit record recovery may start at),
   then captures the committed-until address (the meta file was written after every commit it
   names, so it never names more than the capture);
2. opens every segment file the captured prefix needs at once (an open descriptor keeps a file
   readable even if a truncation then deletes it), and copies each up to the captured
   committed-until, giving each copy its full segment size (the rest reads as zeros: a clean
   end, never a torn one);
3. writes the copy's meta file, marked clean at exactly the captured committed-until, so its
   recovery checks that every byte up to there is there (FORMAT.md, "Recovery");
4. opens the copy read-only and checks that it recovers to exactly the captured address. When
   a race made it fail (a truncation deleted a needed segment before it was opened, a writer
   restarted between steps 1 and 2), the copy is removed and taken again, at most
   `attempts_max` times; then BackupError.

So a copy made by `backup` always opens, holding every entry up to the captured address. What
is not copied: the cursor files (derived state, FORMAT.md "Cursor files"; consumers then resume
from the begin address, or their cursor files can be copied beside it), the lock and the shared
page. The source's writer is never blocked: the backup only reads its files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, replace

from . import errors, metafile
from ._format import FIRST_ADDRESS, META_FLAG_CLEAN
from .durable import fsync_directory
from .log import FasterLog

__all__ = ["BackupError", "BackupResult", "backup"]

# The copy loop reads this much per call: the memory a backup holds, whatever the log's size.
copy_chunk_size_bytes = 1 << 20
attempts_max_default = 8


class BackupError(errors.FasterLogError):
    """The backup could not take a consistent copy (it says why); nothing is left at the
    target."""


@dataclass(frozen=True)
class BackupResult:
    """What a backup copied: the copy holds every entry below `committed_until_address`."""

    target: str
    committed_until_address: int
    begin_address: int
    commit_number: int
    segments_count: int
    bytes_copied: int
    attempts: int


def _segment_name(segment: int) -> str:
    return f"segment-{segment:08d}.fl"


def _open_segments(source: str, last_segment: int) -> dict[int, int]:
    """Descriptors of the segment files 0..last_segment that exist now, lowest to highest."""
    found = sorted(int(name[8:16]) for name in os.listdir(source)
                   if name.startswith("segment-") and name.endswith(".fl")
                   and name[8:16].isdigit() and int(name[8:16]) <= last_segment)
    descriptors: dict[int, int] = {}
    for segment in found:
        try:
            descriptors[segment] = os.open(os.path.join(source, _segment_name(segment)),
                                           os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # deleted by a truncation since the listing: a gap the check below sees
    return descriptors


def _copy_segment(source_fd: int, target_path: str, copy_size_bytes: int,
                  segment_size_bytes: int) -> int:
    """Copies the first `copy_size_bytes` of a segment; the copy gets its full size."""
    fd = os.open(target_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        offset = 0
        while offset < copy_size_bytes:
            chunk = os.pread(source_fd, min(copy_chunk_size_bytes, copy_size_bytes - offset),
                             offset)
            if not chunk:
                raise BackupError(f"backup failed: {target_path!r}: the source segment ends at "
                                  f"{offset} bytes, below the committed data")
            view = memoryview(chunk)
            while view:
                written = os.pwrite(fd, view, offset)
                offset += written
                view = view[written:]
        os.ftruncate(fd, segment_size_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)
    return copy_size_bytes


def _capture(source: FasterLog | str, reader: FasterLog | None) -> tuple[metafile.Meta, int, int]:
    """Step 1: the source's meta file, then its committed-until and begin addresses."""
    path = source.path if isinstance(source, FasterLog) else source
    meta = metafile.read(path, "backup failed")
    state = source if isinstance(source, FasterLog) else reader
    assert state is not None
    committed = state.committed_until_address
    return meta, committed, state.begin_address


def _take_once(source: FasterLog | str, reader: FasterLog | None,
               target: str) -> BackupResult | str:
    """One attempt: the result, or why the copy raced the writer (the caller retries)."""
    meta, committed, begin = _capture(source, reader)
    path = source.path if isinstance(source, FasterLog) else source
    segment_size = meta.segment_size_bytes
    if meta.committed_until_address > committed:
        return "the meta file is newer than the captured commit"
    last_segment = max(committed - 1, FIRST_ADDRESS) // segment_size
    descriptors = _open_segments(path, last_segment)
    try:
        segments = sorted(descriptors)
        if committed > FIRST_ADDRESS and (not segments or segments[-1] != last_segment
                                          or segments != list(range(segments[0],
                                                                    last_segment + 1))):
            return f"segment files up to {_segment_name(last_segment)} are not all there"
        copied = 0
        for segment in segments:
            end = min(segment_size, committed - segment * segment_size)
            copied += _copy_segment(descriptors[segment],
                                    os.path.join(target, _segment_name(segment)), end,
                                    segment_size)
    finally:
        for fd in descriptors.values():
            os.close(fd)
    metafile.write(target, replace(meta, flags=META_FLAG_CLEAN, begin_address=begin,
                                   committed_until_address=committed))
    fsync_directory(target)
    try:
        with FasterLog.open(target, readonly=True) as copy:
            recovered = copy.committed_until_address
            commit_number = copy.commit_number
            copy_begin = copy.begin_address
    except errors.FasterLogError as error:
        return f"the copy does not open ({error})"
    if recovered != committed:
        return f"the copy recovers to {recovered}, not the captured {committed}"
    return BackupResult(target, committed, copy_begin, commit_number, len(segments), copied, 0)


def _empty_target(target: str) -> None:
    for name in os.listdir(target):
        path = os.path.join(target, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)


def backup(source: FasterLog | str | os.PathLike[str], target: str | os.PathLike[str], *,
           attempts_max: int = attempts_max_default) -> BackupResult:
    """Copies the committed prefix of the log `source` (an open FasterLog, or a directory whose
    writer may be another process) into the new directory `target`; see the module docstring.
    The target must not exist or be an empty directory. Raises BackupError when no consistent
    copy could be taken in `attempts_max` attempts (the target is then removed)."""
    target = os.fspath(target)
    if os.path.exists(target) and not os.path.isdir(target):
        raise BackupError(f"backup failed: {target!r} exists and is not a directory")
    if os.path.exists(target) and os.listdir(target):
        raise BackupError(f"backup failed: {target!r} exists and is not empty")
    created = not os.path.exists(target)
    os.makedirs(target, exist_ok=True)
    reasons: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            reader = None
            if not isinstance(source, FasterLog):
                source = os.fspath(source)
                reader = stack.enter_context(FasterLog.open(source, readonly=True))
            for attempt in range(1, attempts_max + 1):
                outcome = _take_once(source, reader, target)
                if isinstance(outcome, BackupResult):
                    return replace(outcome, attempts=attempt)
                reasons.append(outcome)
                _empty_target(target)
    except BaseException:
        _remove_target(target, created)
        raise
    _remove_target(target, created)
    raise BackupError(f"backup failed: no consistent copy in {attempts_max} attempts "
                      f"(last: {reasons[-1]})")


def _remove_target(target: str, created: bool) -> None:
    if created:
        shutil.rmtree(target, ignore_errors=True)
    else:
        _empty_target(target)
