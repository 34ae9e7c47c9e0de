"""The meta file (`fasterlog.meta`, FORMAT.md "The meta file") read and written from Python, for
the tools that make a log directory without the core's open: the online backup writes the meta
file of its copy, and repair writes one rebuilt from the segments.

Rules:
1. The block is exactly the core's (fl_meta.c): the same offsets (fasterlog/_format.py, checked
   against the C constants at import) and the same CRC32C over bytes [16, 4096).
2. A write is atomic as the core's is: `fasterlog.meta.tmp` written and synced, renamed over
   `fasterlog.meta`, then the directory synced.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from . import errors
from ._fasterlog_c import lib
from ._format import (
    FORMAT_VERSION,
    META_BEGIN_ADDRESS_OFFSET,
    META_CHECKSUMMED_FROM,
    META_COMMIT_NUMBER_OFFSET,
    META_COMMITTED_UNTIL_OFFSET,
    META_CRC_OFFSET,
    META_EPOCH_OFFSET,
    META_FLAGS_OFFSET,
    META_MAGIC,
    META_MAGIC_OFFSET,
    META_PAGE_SIZE_OFFSET,
    META_RECOVERY_START_OFFSET,
    META_SALT_OFFSET,
    META_SEGMENT_SIZE_OFFSET,
    META_SIZE_BYTES,
    META_VERSION_OFFSET,
)
from .durable import fsync_directory

__all__ = ["META_FILE_NAME", "Meta", "decode", "decode_fields", "encode", "read", "write"]

META_FILE_NAME = "fasterlog.meta"
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class Meta:
    """The fields of one meta block (FORMAT.md, "The meta file")."""

    salt: int
    page_size_bytes: int
    segment_size_bytes: int
    epoch: int
    flags: int
    begin_address: int
    recovery_start_address: int
    committed_until_address: int
    commit_number: int


_U64_FIELDS = (("salt", META_SALT_OFFSET), ("page_size_bytes", META_PAGE_SIZE_OFFSET),
               ("segment_size_bytes", META_SEGMENT_SIZE_OFFSET),
               ("begin_address", META_BEGIN_ADDRESS_OFFSET),
               ("recovery_start_address", META_RECOVERY_START_OFFSET),
               ("committed_until_address", META_COMMITTED_UNTIL_OFFSET),
               ("commit_number", META_COMMIT_NUMBER_OFFSET))
_U32_FIELDS = (("epoch", META_EPOCH_OFFSET), ("flags", META_FLAGS_OFFSET))


def _crc32c(data: bytes | bytearray) -> int:
    return int(lib.fl_crc32c(0, bytes(data), len(data)))


def encode(meta: Meta) -> bytes:
    """The 4096 bytes of `meta`'s block."""
    block = bytearray(META_SIZE_BYTES)
    block[META_MAGIC_OFFSET:META_MAGIC_OFFSET + len(META_MAGIC)] = META_MAGIC
    _U32.pack_into(block, META_VERSION_OFFSET, FORMAT_VERSION)
    for name, offset in _U64_FIELDS:
        _U64.pack_into(block, offset, getattr(meta, name))
    for name, offset in _U32_FIELDS:
        _U32.pack_into(block, offset, getattr(meta, name))
    _U32.pack_into(block, META_CRC_OFFSET, _crc32c(block[META_CHECKSUMMED_FROM:]))
    return bytes(block)


def decode(block: bytes, where: str) -> Meta:
    """The meta in `block`; FormatError or CorruptionError (messages start with `where`)."""
    if len(block) != META_SIZE_BYTES or block[:len(META_MAGIC)] != META_MAGIC \
            or _U32.unpack_from(block, META_VERSION_OFFSET)[0] != FORMAT_VERSION:
        raise errors.FormatError(f"{where}: not a fasterlog {FORMAT_VERSION} meta file")
    if _U32.unpack_from(block, META_CRC_OFFSET)[0] != _crc32c(block[META_CHECKSUMMED_FROM:]):
        raise errors.CorruptionError(f"{where}: fasterlog.meta fails its checksum", 0)
    return decode_fields(block)


def decode_fields(block: bytes) -> Meta:
    """The fields of a 4096-byte block, unchecked: the hints repair takes from a damaged meta
    file, each of them checked against the segments before it is used."""
    assert len(block) == META_SIZE_BYTES
    fields = {name: _U64.unpack_from(block, offset)[0] for name, offset in _U64_FIELDS}
    fields.update({name: _U32.unpack_from(block, offset)[0] for name, offset in _U32_FIELDS})
    return Meta(**fields)


def read(directory: str | os.PathLike[str], where: str) -> Meta:
    """The meta file of the log in `directory`; FormatError when there is none."""
    path = os.path.join(os.fspath(directory), META_FILE_NAME)
    try:
        with open(path, "rb") as file:
            block = file.read(META_SIZE_BYTES + 1)
    except FileNotFoundError:
        raise errors.FormatError(f"{where}: no log in {os.fspath(directory)!r} "
                                 f"({META_FILE_NAME} is missing)") from None
    return decode(block, where)


def write(directory: str | os.PathLike[str], meta: Meta) -> None:
    """Replaces the meta file of `directory` atomically (rule 2)."""
    directory = os.fspath(directory)
    temporary = os.path.join(directory, META_FILE_NAME + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        block = encode(meta)
        if os.pwrite(fd, block, 0) != len(block):
            raise OSError(5, "short write", temporary)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, os.path.join(directory, META_FILE_NAME))
    fsync_directory(directory)
