"""Whole files written so that a crash leaves either the old file or the new one, and read back
only when they match what the writer recorded. Shared by every layer that keeps side files
(projection snapshots, KV checkpoints): the log itself never needs them.
"""

from __future__ import annotations

import os

from ._fasterlog_c import lib


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC32C (Castagnoli) of `data`, the checksum of every frame (the core's, SSE4.2 when
    the CPU has it): for the side files of upper layers."""
    return int(lib.fl_crc32c(0, bytes(data), len(data)))


def fsync_directory(directory: str) -> None:
    """Makes the directory's entries (a create, a rename) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(directory: str, file_name: str, data: bytes) -> None:
    """Writes `file_name` under a temporary name, fsyncs it, renames it into place and fsyncs
    the directory: after a crash the name holds all of `data` or does not exist."""
    temporary = os.path.join(directory, file_name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, os.path.join(directory, file_name))
    fsync_directory(directory)


def read_checked_file(path: str, size_bytes: int, crc32c: int, where: str,
                      error: type[Exception]) -> bytes:
    """The file's bytes if their size and CRC32C are the recorded ones; else `error` saying
    what is wrong (missing, truncated or replaced, corrupt), its message starting with `where`."""
    try:
        with open(path, "rb") as file:
            data = file.read(size_bytes + 1)
    except FileNotFoundError:
        raise error(f"{where}: snapshot file {path} is missing") from None
    except OSError as failure:
        raise error(f"{where}: cannot read {path}: {failure}") from failure
    if len(data) != size_bytes:
        raise error(f"{where}: snapshot file {path} has {len(data)}"
                    f"{'+' if len(data) > size_bytes else ''} bytes, the marker says "
                    f"{size_bytes} (truncated or replaced)")
    actual = int(lib.fl_crc32c(0, data, len(data)))
    if actual != crc32c:
        raise error(f"{where}: snapshot file {path} has CRC32C {actual:#010x}, the marker says "
                    f"{crc32c:#010x} (corrupt)")
    return data
