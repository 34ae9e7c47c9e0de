"""fasterlog: an append-only log with group commit, io_uring I/O and exact crash recovery.

    from fasterlog import FasterLog
    with FasterLog.open("events") as log:
        address = log.append(b"event")
        log.commit()
"""

from .build_lookup import find_build

# Run from a source checkout after a plain `pip install .`, the compiled core is the installed
# copy's (build_lookup.py says when that is allowed).
__path__ = find_build(__path__, __name__, "_fasterlog_c")

from . import errors
from ._format import EntryKind
from ._format import check_constants as _check_constants
from .errors import (
    CorruptionError,
    EntryTooLarge,
    FasterLogError,
    InvalidAddressError,
    LogClosedError,
    LogFencedError,
    TruncatedError,
)
from .log import FasterLog

_check_constants()

__version__ = "0.1.0"
__all__ = [
    "EntryKind",
    "FasterLog",
    "errors",
    "FasterLogError",
    "CorruptionError",
    "EntryTooLarge",
    "InvalidAddressError",
    "LogClosedError",
    "LogFencedError",
    "TruncatedError",
]
