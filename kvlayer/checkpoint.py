"""KV checkpoints: snapshot files of the index, checkpoint markers in the log, the commit cookie.

A checkpoint lets an open restore the hash index from a file and replay only the log suffix
written after it, instead of the whole log. FORMAT.md, "KV checkpoints", describes the bytes.
This module holds the pieces that do not need a live store (encoding, decoding, finding and
checking); `KVStore.checkpoint()` and recovery in store.py put them together.

Rules and invariants:
1. A snapshot at position P holds, for every key hash that has a record below P, the address of
   the newest record holding an operation on it and whether that operation was a delete. It is
   a pure function of the records below P: `fold_records` builds it from the previous snapshot
   and the records in between, never from the in-memory index (which has no iteration API).
2. Deleted keys stay in the snapshot as tombstones: a chain head restored without them could
   lie below a key's delete, and a lookup walking back from it would find the key's older put.
   (Compaction, which drops the old puts, is what may later drop the tombstones.)
3. A checkpoint counts only once all of it happened, in this order: the snapshot file is written
   under a temporary name, fsynced, renamed to kv-checkpoints/<P>.snap and the directory fsynced;
   then the marker (msgpack, naming the file with its size and CRC32C) is appended and committed
   together with a cookie listing the kept markers' addresses. A crash before that commit leaves
   a file no marker names; it is never read and is deleted by a later checkpoint.
4. Markers in the log are the source of truth; the cookie is a hint of where they are. Every
   hinted address is checked to hold a KV checkpoint marker before it is used.
5. A snapshot is used only if its size and CRC32C equal the marker's, its header is intact
   (magic, version, header CRC32C), its body CRC32C matches and its position is the marker's.
   Anything else raises CheckpointError, and recovery falls back (store.py).
The marker and snapshot-file mechanism (finding and checking markers, writing, reading and
removing files, the CRC32C) is consumers/checkpoints.py, shared with projections; the bytes of
KV markers, snapshots and the cookie are this module's.
"""

from __future__ import annotations

import logging
import struct
import sys
from array import array
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgpack

from consumers.checkpoints import (
    MarkerFormat,
    crc32c,
    read_snapshot_file,
    remove_snapshot_files,
    write_snapshot_file,
)
from fasterlog import FasterLog

from ._fast import (
    COOKIE_MAGIC,
    ENTRY_ADDRESS_BITS,
    ENTRY_DELETED,
    SNAPSHOT_ENTRY_SIZE_BYTES,
    SNAPSHOT_HEADER_SIZE_BYTES,
    SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
)
from ._kvlayer_c import ffi, lib
from .errors import CheckpointError

__all__ = [
    "Checkpoint",
    "CookieState",
    "Snapshot",
    "crc32c",
    "decode_cookie",
    "decode_snapshot",
    "encode_cookie",
    "encode_marker",
    "encode_snapshot",
    "encode_snapshot_arrays",
    "find_markers",
    "marker_at",
    "parse_marker",
    "read_snapshot",
    "remove_unkept_files",
    "write_snapshot",
]

logger = logging.getLogger("kvlayer.checkpoint")

CHECKPOINT_DIRECTORY_NAME = "kv-checkpoints"
SNAPSHOT_SUFFIX = ".snap"
# SNAPSHOT_VERSION 1 had BLAKE2b key hashes (skipped as unusable). The format's numbers are
# defined once, in _fast (twins of the C constants, checked at import).
# magic, version, index_bits, reserved u8, reserved u16, position, entries_count, live_count,
# body_crc32c, header_crc32c (of the 44 bytes before it)
_SNAPSHOT_HEADER = struct.Struct("<8sIBBHQQQII")
# Invariant: the header layout spells the size the C code and FORMAT.md use. An entry is
# key_hash:u64, word:u64 (address in bits 0..47, bit 63 deleted).
assert _SNAPSHOT_HEADER.size == SNAPSHOT_HEADER_SIZE_BYTES
ENTRY_ADDRESS_MASK = (1 << ENTRY_ADDRESS_BITS) - 1
_ENTRY_RESERVED_BITS = ((1 << 64) - 1) & ~(ENTRY_DELETED | ENTRY_ADDRESS_MASK)
MARKER_KIND = "kv-checkpoint"
MARKER_VERSION = 1
COOKIE_CHECKPOINTS_KEY = "kvlayer.checkpoints"
_COOKIE_PREFIX = struct.Struct("<8sB")  # magic, index bits
checkpoints_kept_count_max = 16  # bounds the cookie (8 bytes per address)

assert SNAPSHOT_HEADER_SIZE_BYTES == 48


class Checkpoint(NamedTuple):
    """One checkpoint marker as recorded in the log."""

    position: int        # the snapshot covers every record below this address
    file_name: str       # inside DIR/kv-checkpoints
    size_bytes: int      # of the snapshot file
    crc32c: int          # of the snapshot file's bytes
    marker_address: int  # where the marker is in the log


class Snapshot(NamedTuple):
    index_bits: int     # the writer's index size at the checkpoint (log2 of buckets)
    position: int
    live_count: int
    hashes: array[int]  # key hashes, strictly increasing
    words: array[int]   # for each hash: the address | ENTRY_DELETED if the newest op deletes

    def entries(self) -> dict[int, int]:
        """hash -> word, the form checkpoints are folded forward in."""
        return dict(zip(self.hashes, self.words, strict=True))


# ---------------------------------------------------------------------- snapshot bytes


def snapshot_file_name(position: int) -> str:
    return f"{position}{SNAPSHOT_SUFFIX}"


def encode_snapshot(position: int, index_bits: int, entries: dict[int, int]) -> bytes:
    """The snapshot file's bytes; entries are sorted by key hash, so equal states give equal
    files."""
    ordered = sorted(entries.items())
    hashes = array("Q", [hash_ for hash_, _ in ordered])
    words = array("Q", [word for _, word in ordered])
    live_count = sum(1 for word in words if not word & ENTRY_DELETED)
    return encode_snapshot_arrays(position, index_bits, hashes, words, live_count)


def encode_snapshot_arrays(position: int, index_bits: int, hashes: array[int],
                           words: array[int], live_count: int) -> bytes:
    """encode_snapshot of entries already sorted by hash (as fl_kv_snapshot_fold gives them)."""
    pairs = array("Q", bytes(16 * len(hashes)))
    pairs[0::2] = hashes
    pairs[1::2] = words
    if sys.byteorder != "little":
        pairs.byteswap()
    body = pairs.tobytes()
    header = _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, index_bits, 0, 0, position,
                                   len(hashes), live_count, crc32c(body), 0)
    return header[:-4] + struct.pack("<I", crc32c(header[:-4])) + body


def decode_snapshot(data: bytes, where: str) -> Snapshot:
    """Checks and decodes a snapshot file; CheckpointError names what is wrong."""
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{where}: {why}")

    if len(data) < SNAPSHOT_HEADER_SIZE_BYTES:
        raise corrupt(f"{len(data)} bytes is shorter than a snapshot header")
    (magic, version, index_bits, reserved_byte, reserved_half, position, entries_count,
     live_count, body_crc, header_crc) = _SNAPSHOT_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION:
        raise corrupt(f"not a version {SNAPSHOT_VERSION} snapshot (magic {magic!r}, "
                      f"version {version})")
    if crc32c(data[:SNAPSHOT_HEADER_SIZE_BYTES - 4]) != header_crc:
        raise corrupt("the header checksum does not match (corrupt)")
    if reserved_byte or reserved_half or index_bits > lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX:
        raise corrupt(f"bad header (index_bits {index_bits})")
    body = data[SNAPSHOT_HEADER_SIZE_BYTES:]
    if len(body) != entries_count * SNAPSHOT_ENTRY_SIZE_BYTES:
        raise corrupt(f"{len(body)} body bytes for {entries_count} entries (truncated)")
    if crc32c(body) != body_crc:
        raise corrupt("the body checksum does not match (corrupt)")
    pairs = array("Q")
    pairs.frombytes(body)
    if sys.byteorder != "little":
        pairs.byteswap()
    hashes, words = pairs[0::2], pairs[1::2]
    # Checked after reading as well as before writing: sorted and distinct hashes, addresses
    # inside the log below the position, and the live count the header says (in C: at 10M
    # keys this loop in Python took seconds).
    bad = ffi.new("uint64_t *")
    found_live = lib.fl_kv_snapshot_check(ffi.from_buffer("uint64_t[]", pairs), entries_count,
                                          position, bad)
    if found_live == lib.FL_E_KV_SNAPSHOT_ORDER:
        raise corrupt("the key hashes are not strictly increasing")
    if found_live == lib.FL_E_KV_SNAPSHOT_WORD:
        word = words[int(bad[0])]
        raise corrupt(f"bad entry word {word:#018x} (reserved bits, or an address outside "
                      f"the log below the position)")
    if found_live != live_count:
        raise corrupt(f"{found_live} live entries, the header says {live_count}")
    return Snapshot(index_bits, position, live_count, hashes, words)


def write_snapshot(directory: str, position: int, data: bytes) -> str:
    """Writes the file durably (rule 3): temporary name, fsync, rename, directory fsync."""
    file_name = snapshot_file_name(position)
    write_snapshot_file(directory, file_name, data)
    return file_name


def read_snapshot(directory: str, checkpoint: Checkpoint) -> Snapshot:
    """The checked snapshot of a checkpoint (rule 5), or CheckpointError."""
    where = (f"load checkpoint at position {checkpoint.position} (marker at "
             f"{checkpoint.marker_address}) failed")
    data = read_snapshot_file(directory, checkpoint, where, CheckpointError)
    snapshot = decode_snapshot(data, where)
    if snapshot.position != checkpoint.position:
        raise CheckpointError(f"{where}: the snapshot is of position {snapshot.position}")
    return snapshot


def _is_snapshot_file(name: str) -> bool:
    return name.endswith((SNAPSHOT_SUFFIX, SNAPSHOT_SUFFIX + ".tmp"))


def remove_unkept_files(directory: str, kept_names: Iterable[str]) -> None:
    """Deletes snapshot files (and leftover temporaries) that no kept checkpoint names."""
    remove_snapshot_files(directory, _is_snapshot_file, kept_names)


# ---------------------------------------------------------------------- markers


def _build_checkpoint(address: int, fields: dict[str, Any]) -> Checkpoint | None:
    checkpoint = Checkpoint(int(fields["position"]), str(fields["file"]),
                            int(fields["size_bytes"]), int(fields["crc32c"]), address)
    if not lib.FL_FIRST_ADDRESS <= checkpoint.position <= address:
        return None
    return checkpoint


MARKERS = MarkerFormat(MARKER_KIND, MARKER_VERSION, _build_checkpoint)


def encode_marker(position: int, file_name: str, size_bytes: int, crc: int) -> bytes:
    return MARKERS.encode(position=position, file=file_name, size_bytes=size_bytes, crc32c=crc)


def parse_marker(address: int, payload: bytes) -> Checkpoint | None:
    """The checkpoint this payload records, or None when it is not a KV checkpoint marker."""
    return MARKERS.decode(address, payload)


def marker_at(log: FasterLog, address: int) -> Checkpoint | None:
    """The checkpoint whose marker is at `address`, or None (rule 4: hints are checked)."""
    return MARKERS.at(log, address)


def find_markers(log: FasterLog) -> list[Checkpoint]:
    """Every KV checkpoint marker in the committed log, oldest first (a full scan)."""
    return list(MARKERS.find(log))


# ---------------------------------------------------------------------- the commit cookie


class CookieState(NamedTuple):
    index_bits: int | None                  # None: not a kvlayer cookie
    checkpoint_addresses: list[int] | None  # newest first; None: unknown (scan for markers)
    shared: dict[str, Any]                  # other users' entries, kept when we rewrite it


def decode_cookie(cookie: bytes | None) -> CookieState:
    """Reads `"kvlayer1" ‖ index_bits:u8 ‖ [msgpack map]`; a bare msgpack map with string keys
    is another user's shared cookie (kept); anything else is ignored."""
    if cookie is None:
        return CookieState(None, None, {})
    if len(cookie) >= _COOKIE_PREFIX.size and cookie.startswith(COOKIE_MAGIC):
        bits = cookie[len(COOKIE_MAGIC)]
        shared = _decode_map(cookie[_COOKIE_PREFIX.size:])
        if bits > lib.FL_INDEX_BUCKETS_COUNT_LOG2_MAX or shared is None:
            return CookieState(None, None, {})
        addresses = shared.pop(COOKIE_CHECKPOINTS_KEY, [])
        if not (isinstance(addresses, list) and all(
                isinstance(address, int) and address > 0 for address in addresses)):
            addresses = None
        # A cookie without a map comes from a kvlayer that wrote no checkpoints: [] is right.
        return CookieState(bits, addresses, shared)
    shared = _decode_map(cookie)
    return CookieState(None, None, shared or {})


def _decode_map(data: bytes) -> dict[str, Any] | None:
    if not data:
        return {}
    try:
        value = msgpack.unpackb(data, raw=False)
    except Exception:  # noqa: BLE001 - not a msgpack map: not ours
        return None
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        return None
    return value


def encode_cookie(index_bits: int, checkpoint_addresses: list[int],
                  shared: dict[str, Any]) -> bytes:
    entries = dict(shared)
    entries[COOKIE_CHECKPOINTS_KEY] = list(checkpoint_addresses)
    encoded: bytes = msgpack.packb(entries)
    return _COOKIE_PREFIX.pack(COOKIE_MAGIC, index_bits) + encoded
