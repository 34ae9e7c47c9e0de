"""The on-disk format's constants as Python sees them (FORMAT.md is the document).

Tools that parse files without the C core (tests, dump) use these. Every upper-case name here
is the twin of the C constant FL_<name> (fl_format.h, or fasterlog.h for the scan flags), and
check_constants() runs at import: it fails loudly on a value that drifted from the compiled C
one and on a name that has no C twin, so no number lives here alone. A magic is written as the
bytes it is on disk; its C twin is the little-endian u64 those bytes spell.
"""

from __future__ import annotations

import enum
from typing import Any

FORMAT_VERSION = 1
FIRST_ADDRESS = 64
FRAME_ALIGNMENT_BYTES = 8
FRAME_HEADER_SIZE_BYTES = 12
FRAME_CRC_OFFSET = 0
FRAME_LENGTH_AND_KIND_OFFSET = 4
FRAME_EPOCH_OFFSET = 8
FRAME_CHECKSUMMED_FROM = 4
FRAME_LENGTH_BITS = 28
FRAME_LENGTH_MASK = (1 << 28) - 1
KIND_DATA = 1
KIND_MARKER = 2
KIND_COMMIT = 3
KIND_PADDING = 4
COMMIT_RECORD_FIXED_SIZE_BYTES = 32
COMMIT_NUMBER_OFFSET = 0
COMMIT_BEGIN_ADDRESS_OFFSET = 8
COMMIT_PREVIOUS_ADDRESS_OFFSET = 16
COMMIT_COOKIE_SIZE_OFFSET = 24
COMMIT_FLAGS_OFFSET = 28
COOKIE_SIZE_MAX_BYTES = 65536
NO_COOKIE = 0xFFFFFFFF
COMMIT_FLAG_COMPLETED = 1
META_SIZE_BYTES = 4096
META_MAGIC = b"FLOGMETA"
META_MAGIC_OFFSET = 0
META_VERSION_OFFSET = 8
META_CRC_OFFSET = 12
META_CHECKSUMMED_FROM = 16
META_SALT_OFFSET = 16
META_PAGE_SIZE_OFFSET = 24
META_SEGMENT_SIZE_OFFSET = 32
META_EPOCH_OFFSET = 40
META_FLAGS_OFFSET = 44
META_BEGIN_ADDRESS_OFFSET = 48
META_RECOVERY_START_OFFSET = 56
META_COMMITTED_UNTIL_OFFSET = 64
META_COMMIT_NUMBER_OFFSET = 72
META_FIELDS_END = 80
META_FLAG_CLEAN = 1
SHARED_SIZE_BYTES = 4096
SHARED_MAGIC = b"FLOGSHM\0"
SHARED_VERSION_OFFSET = 8
SHARED_SEQUENCE_OFFSET = 12
SHARED_COMMITTED_UNTIL_OFFSET = 16
SHARED_BEGIN_ADDRESS_OFFSET = 24
SHARED_COMMIT_NUMBER_OFFSET = 32
SHARED_WRITER_PID_OFFSET = 40
SHARED_FLAGS_OFFSET = 48
SHARED_FLAG_COMPLETED = 1
SECTOR_SIZE_BYTES = 4096
PAGE_SIZE_MIN_BYTES = 4096
PAGE_SIZE_MAX_BYTES = 1 << 28
# Not on disk: the `include` mask of fl_scan (what a scan reports besides data entries).
SCAN_MARKERS = 1
SCAN_COMMITS = 2
SCAN_PADDING = 4
SCAN_UNCOMMITTED = 8


class EntryKind(enum.IntEnum):
    """What a frame holds (FORMAT.md, "Frames"): what `FasterLog.scan(kinds=True)` and
    `FasterLog.entry_kind` report. Padding fills a page's end and is never reported."""

    DATA = KIND_DATA
    MARKER = KIND_MARKER
    COMMIT = KIND_COMMIT
    PADDING = KIND_PADDING


def frame_size(payload_size: int) -> int:
    """Bytes a frame with this payload occupies: header plus payload, padded to 8."""
    return (FRAME_HEADER_SIZE_BYTES + payload_size + 7) & ~7


def constant_problems(constants: dict[str, Any], lib: Any, prefix: str = "FL_") -> list[str]:
    """Why the upper-case `constants` do not match `lib`'s: one line per name with no C twin
    (prefix + name) or with a different value. Bytes stand for the little-endian integer they
    spell."""
    problems = []
    for name, value in constants.items():
        if not name.isupper() or name.startswith("_"):
            continue
        if not hasattr(lib, prefix + name):
            problems.append(f"{name} has no C twin {prefix}{name}")
            continue
        expected = int.from_bytes(value, "little") if isinstance(value, bytes) else value
        if getattr(lib, prefix + name) != expected:
            problems.append(f"{name}={value!r} differs from the C core's "
                            f"{prefix}{name}={getattr(lib, prefix + name)}")
    return problems


def check_constants() -> None:
    """Fails (ImportError) when a constant of this module drifted from the compiled C core."""
    from ._fasterlog_c import lib

    problems = constant_problems(dict(globals()), lib)
    if problems:
        raise ImportError("fasterlog: " + "; ".join(problems) + " (rebuild the extension, or "
                          "change FORMAT.md, fl_format.h and fasterlog/_format.py together)")
