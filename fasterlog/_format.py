"""The on-disk format's constants as Python sees them (FORMAT.md is the document).

Tools that parse files without the C core (tests, dump) use these; check_constants() runs at
import and fails loudly if they drift from the compiled C values.
"""

from __future__ import annotations

import enum

FORMAT_VERSION = 1
FIRST_ADDRESS = 64
FRAME_ALIGNMENT_BYTES = 8
FRAME_HEADER_SIZE_BYTES = 12
FRAME_LENGTH_BITS = 28
FRAME_LENGTH_MASK = (1 << 28) - 1
KIND_DATA = 1
KIND_MARKER = 2
KIND_COMMIT = 3
KIND_PADDING = 4
COMMIT_RECORD_FIXED_SIZE_BYTES = 32
COOKIE_SIZE_MAX_BYTES = 65536
META_SIZE_BYTES = 4096
META_CHECKSUMMED_FROM = 16
SECTOR_SIZE_BYTES = 4096
NO_COOKIE = 0xFFFFFFFF


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


def check_constants() -> None:
    from ._fasterlog_c import lib

    for name, value in list(globals().items()):
        if name.isupper() and hasattr(lib, "FL_" + name) and getattr(lib, "FL_" + name) != value:
            raise ImportError(f"fasterlog: Python constant {name}={value} differs from the C "
                              f"core's {getattr(lib, 'FL_' + name)}; rebuild the extension")
