"""Damage done to a log's files the way a disk or a crash does it, at offsets from FORMAT.md.

An address A lives in segment file `segment-<A // segment_size_bytes, 8 digits>.fl` at offset
A % segment_size_bytes (segment_path). Every helper works on a closed file in place and
changes only the bytes it names:
- flip_bit / flip_bits: XOR one byte with a mask, so the byte changes whatever it held (writing
  a constant would damage nothing when the byte already held it);
- truncate_to / truncate_tail: cut the file to a size, or drop its last bytes (a torn write);
- zero_range / garble_range: overwrite [offset, end) with zeros (lost sectors read as zeros) or
  with every byte XORed by a non-zero random value (each byte changes); both say whether any
  byte changed.
Losing what was not synced is fasterlog.testing.simulate_crash; faults in the device layer are
fasterlog.testing.inject_fault.
"""

from __future__ import annotations

import os
import random
from pathlib import Path


def segment_path(directory: Path, address: int, segment_size_bytes: int) -> Path:
    """The segment file of the log in `directory` that holds `address`."""
    return directory / f"segment-{address // segment_size_bytes:08d}.fl"


def flip_bits(path: Path, offset: int, mask: int) -> None:
    """XORs the byte at `offset` of the file with `mask` (1 to 255)."""
    assert 0 < mask < 256, mask
    with open(path, "r+b") as file:
        file.seek(offset)
        original = file.read(1)
        assert len(original) == 1, f"{path} has no byte at {offset}"
        file.seek(offset)
        file.write(bytes([original[0] ^ mask]))


def flip_bit(path: Path, offset: int, bit: int = 4) -> None:
    """Flips bit `bit` (0 the lowest) of the byte at `offset` of the file."""
    flip_bits(path, offset, 1 << bit)


def truncate_to(path: Path, size_bytes: int) -> None:
    """Cuts the file to its first `size_bytes` bytes."""
    os.truncate(path, size_bytes)


def truncate_tail(path: Path, size_bytes: int) -> None:
    """Drops the last `size_bytes` bytes of the file."""
    truncate_to(path, max(path.stat().st_size - size_bytes, 0))


def _overwrite(path: Path, offset: int, end: int, damage: bytes) -> bool:
    with open(path, "r+b") as file:
        file.seek(offset)
        original = file.read(end - offset)
        file.seek(offset)
        file.write(damage[: len(original)])
    return damage[: len(original)] != original


def zero_range(path: Path, offset: int, end: int) -> bool:
    """Overwrites bytes [offset, end) with zeros; returns whether any byte changed."""
    return _overwrite(path, offset, end, bytes(end - offset))


def garble_range(path: Path, offset: int, end: int, seed: int) -> bool:
    """XORs every byte of [offset, end) with a non-zero value drawn from `seed`; returns
    whether any byte changed (always, unless the range is empty)."""
    with open(path, "rb") as file:
        file.seek(offset)
        original = file.read(end - offset)
    rng = random.Random(seed)
    return _overwrite(path, offset, end, bytes(byte ^ rng.randint(1, 255) for byte in original))
