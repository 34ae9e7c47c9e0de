"""Checkpoint markers and snapshot files: the mechanism every checkpointing consumer shares.

A consumer that folds the log into a state (a projection, kvlayer's index) checkpoints it as a
snapshot file in a checkpoint directory plus a marker entry in the log that names the file with
its size and CRC32C. Each user keeps its own formats: its markers' msgpack "kind", version and
fields, and its snapshot bytes (consumers/projection.py; kvlayer/checkpoint.py and FORMAT.md
"KV checkpoints"). This module holds what they share: telling a marker of one kind apart,
decoding it, finding markers in the log, and writing, checking and removing snapshot files.

Rules:
1. A marker is a log marker entry holding a msgpack map whose "kind" and "version" are its
   format's; anything else (undecodable, another kind, another version, a missing or mistyped
   field) is not a marker of that format, never an error. A scan decodes only entries that
   hold the msgpack encoding of the kind (`MarkerFormat.needle`).
2. A file name taken from a marker never leads out of the checkpoint directory.
3. A snapshot file is written durably (fasterlog.durable: temporary name, fsync, rename,
   directory fsync) before its marker is appended; the directory itself is made durable the
   first time. A marker whose file did not survive is skipped by its user, never repaired.
4. A snapshot file is used only if its size and CRC32C are the ones its marker recorded;
   otherwise the user's CheckpointError (consumers.errors, or a subclass of it) says why.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import msgpack

from fasterlog import EntryKind, FasterLog, errors
from fasterlog.durable import crc32c, fsync_directory, read_checked_file, write_file_durably

from .errors import CheckpointError

__all__ = [
    "MarkerFormat",
    "SnapshotReference",
    "crc32c",
    "read_snapshot_file",
    "remove_snapshot_files",
    "write_snapshot_file",
]


class SnapshotReference(Protocol):
    """What a decoded marker says about its snapshot file (both users' Checkpoint tuples)."""

    @property
    def position(self) -> int: ...

    @property
    def file_name(self) -> str: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def crc32c(self) -> int: ...

    @property
    def marker_address(self) -> int: ...


R = TypeVar("R", bound=SnapshotReference)


class MarkerFormat(Generic[R]):
    """The markers of one kind (rule 1): `build(address, fields)` turns a decoded map of that
    kind and version into the user's reference (or None when the map is not one of its
    markers, such as another projection's); it may raise KeyError, TypeError or ValueError on
    a missing or mistyped field, which also means "not a marker"."""

    def __init__(self, kind: str, version: int,
                 build: Callable[[int, dict[str, Any]], R | None]) -> None:
        self.kind = kind
        self.version = version
        self.needle: bytes = msgpack.packb(kind)
        self._build = build

    def encode(self, **fields: Any) -> bytes:
        """A marker's payload: the map {"kind", "version", *fields} in that order (the order is
        part of each user's format, so equal checkpoints give equal bytes)."""
        return msgpack.packb({"kind": self.kind, "version": self.version, **fields})

    def decode(self, address: int, payload: bytes) -> R | None:
        """The reference this payload records, or None when it is not such a marker."""
        if self.needle not in payload:
            return None
        try:
            fields = msgpack.unpackb(payload, raw=False)
        except Exception:  # noqa: BLE001 - an undecodable payload is simply not a marker
            return None
        if (not isinstance(fields, dict) or fields.get("kind") != self.kind
                or fields.get("version") != self.version):
            return None
        try:
            reference = self._build(address, fields)
        except (KeyError, TypeError, ValueError):
            return None
        if reference is None or os.path.basename(reference.file_name) != reference.file_name:
            return None  # rule 2
        return reference

    def find(self, log: FasterLog, begin: int | None = None,
             end: int | None = None) -> Iterator[R]:
        """Yields this format's markers in [begin, end) (default: the committed log), oldest
        first."""
        for address, kind, entry in log.scan(begin, end, include_markers=True, kinds=True):
            if kind is EntryKind.MARKER:
                reference = self.decode(address, entry)
                if reference is not None:
                    yield reference

    def at(self, log: FasterLog, address: int) -> R | None:
        """The marker at `address` (a hint's), or None: hints are checked, never trusted."""
        try:
            if not log.begin_address <= address < log.committed_until_address:
                return None
            payload = log.read(address)
        except errors.FasterLogError:  # a bad hint is not an error, just no checkpoint
            return None
        reference = self.decode(address, payload)
        if reference is None or log.entry_kind(address) is not EntryKind.MARKER:
            return None
        return reference


def write_snapshot_file(directory: str, file_name: str, data: bytes) -> None:
    """Rule 3: makes `directory` (durably) if it is missing, then writes the file durably.
    OSError when the operating system refuses; the caller says which checkpoint failed."""
    if not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
        fsync_directory(os.path.dirname(os.path.abspath(directory)))
    write_file_durably(directory, file_name, data)


def read_snapshot_file(directory: str, reference: SnapshotReference, where: str,
                       error: type[CheckpointError] = CheckpointError) -> bytes:
    """Rule 4: the snapshot's bytes, or `error` (its message starting with `where`) when the
    file is missing, truncated or replaced, or corrupt."""
    path = os.path.join(directory, reference.file_name)
    return read_checked_file(path, reference.size_bytes, reference.crc32c, where, error)


def remove_snapshot_files(directory: str, is_snapshot: Callable[[str], bool],
                          kept_names: Iterable[str]) -> None:
    """Deletes the files of `directory` that `is_snapshot` claims (snapshots and leftover
    temporaries of one user) and no kept checkpoint names."""
    kept = set(kept_names)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name not in kept and is_snapshot(name):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
