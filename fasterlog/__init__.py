"""fasterlog: an append-only log with group commit, io_uring I/O and exact crash recovery.

    from fasterlog import FasterLog
    with FasterLog.open("events") as log:
        address = log.append(b"event")
        log.commit()

This package holds the log itself: the C core (csrc/, compiled into _fasterlog_c, its format
constants checked by _format.py against FORMAT.md's C header), the typed Python face of it
(log.py FasterLog, over the shared C handle of handle.py), tails that follow commits in threads
or asyncio (tail.py), the named cursor files retention reads (cursors.py), whole-file durable
writes for side files (durable.py), the one funnel from C codes to exceptions (errors.py), test
hooks for crashes, faults and power-loss states (testing.py), the log's own subcommands
(cli.py, which fasterlog_cli finds through an entry point) and the support every package's
subcommands share (cli_support.py), and how a source checkout finds an installed build
(build_lookup.py). It imports nothing of ours: consumers, kvlayer, the server and the command
line stand on it, never the other way round.
"""

from .build_lookup import find_build

# Run from a source checkout after a plain `pip install .`, the compiled core is the installed
# copy's (build_lookup.py says when that is allowed).
__path__ = find_build(__path__, __name__, "_fasterlog_c")

from . import errors
from ._format import EntryKind, frame_size
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
    "frame_size",
]
