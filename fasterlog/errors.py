"""Exceptions raised by fasterlog, and the one funnel from C return codes to them.

    FasterLogError
    ├── LogClosedError                  the log was closed
    ├── LogFencedError                  an earlier write or sync failed: writes are refused
    ├── ReadOnlyError                   a write call on a read-only log
    ├── LogCompletedError               an append after complete()
    ├── LockedError                     another process is the writer (.pid)
    ├── RetentionError                  truncate_until would pass a named cursor (.cursor)
    ├── CursorNotFoundError (KeyError)  no named cursor of that name
    ├── CorruptionError                 a checksum or structure check failed (.address)
    ├── MemoryFullError                 the ring holds only unwritten pages (try_append's no)
    ├── NotInMemoryError                a memory-only read cannot answer (ask read)
    ├── BufferTooSmallError (ValueError)  a caller's buffer is too small (.size_needed)
    ├── WaitWokenError (InterruptedError)  a wait was ended by wake()
    ├── EntryTooLarge (ValueError)      an entry above entry_size_max
    ├── InvalidAddressError (ValueError)  out of range, unaligned, not an entry start
    │   └── TruncatedError              below the begin address (.begin_address)
    ├── SettingsError (ValueError)      invalid settings or settings that differ from the log's
    ├── FormatError                     not a fasterlog directory, or an unknown version
    └── LogIOError (OSError)            the operating system failed an I/O call (.errno)
        └── DiskFullError               ENOSPC

Messages start with the operation that failed, e.g. "append failed: entry of 9 MiB exceeds
entry_size_max (4 MiB)".

Rules of the funnel:
1. A failed C call's code becomes an exception in one place, `exception_for` (`raise_for`
   raises it): the table `_BUILDERS` maps each of the core's FL_E_* codes to the function that
   builds its exception, and `-errno` codes become LogIOError (DiskFullError for ENOSPC).
   Every code of fasterlog.h's enum fl_status is in it (tests/fasterlog/test_errors.py reads
   the header and fails on one that is not), and `code_name` names each.
2. Layers above add their own codes with `register_code` (kvlayer's FL_E_KV_* and the index's
   FL_E_INDEX_BUSY, from kvlayer/errors.py), since this package imports none of them. A code may
   be registered once; the log's own codes cannot be replaced.
3. A builder gets a `Failure`: the code, the operation, the core's own words for it (or the
   caller's, who knows the sizes involved) and the address; `Failure.text` puts the operation
   first.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from ._fasterlog_c import ffi, lib


class FasterLogError(Exception):
    """Base of every fasterlog error."""


class LogClosedError(FasterLogError):
    """The log was closed."""


class LogFencedError(FasterLogError):
    """A write or sync failed earlier; the log refuses writes until it is reopened."""


class ReadOnlyError(FasterLogError):
    """A write call on a log opened with readonly=True."""


class LogCompletedError(FasterLogError):
    """The log was marked complete: it takes no more entries."""


class LockedError(FasterLogError):
    """Another process holds the writer lock of the directory."""

    def __init__(self, message: str, pid: int) -> None:
        super().__init__(message)
        self.pid = pid


class RetentionError(FasterLogError):
    """truncate_until would pass a named cursor's durable position (use force=True)."""

    def __init__(self, message: str, cursor: str, position: int) -> None:
        super().__init__(message)
        self.cursor = cursor
        self.position = position


class CursorNotFoundError(FasterLogError, KeyError):
    """No named cursor of that name in the log directory."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CorruptionError(FasterLogError):
    """Stored bytes failed a checksum or structure check; they are never returned as data."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class EntryTooLarge(FasterLogError, ValueError):
    """The entry is larger than entry_size_max (a page minus its frame header)."""


class InvalidAddressError(FasterLogError, ValueError):
    """The address is out of range, unaligned or not the start of an entry."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class TruncatedError(InvalidAddressError):
    """The address lies below the begin address: that part of the log was truncated."""

    def __init__(self, message: str, address: int, begin_address: int) -> None:
        super().__init__(message, address)
        self.begin_address = begin_address


class MemoryFullError(FasterLogError):
    """The memory ring holds only pages not yet written (try_append answers None for it)."""


class NotInMemoryError(FasterLogError):
    """A read that answers only from memory could not: the entry must be read with read()."""


class BufferTooSmallError(FasterLogError, ValueError):
    """A caller's buffer is too small for the entry; `size_needed` is the size that would do."""

    def __init__(self, message: str, size_needed: int) -> None:
        super().__init__(message)
        self.size_needed = size_needed


class WaitWokenError(FasterLogError, InterruptedError):
    """A wait for a commit was ended early by wake() (how tails are stopped)."""


class SettingsError(FasterLogError, ValueError):
    """Invalid settings, or settings that differ from the existing log's."""


class FormatError(FasterLogError):
    """The directory holds no fasterlog log of a known format version."""


class LogIOError(FasterLogError, OSError):
    """The operating system failed an I/O call."""


class DiskFullError(LogIOError):
    """The disk is full (ENOSPC). Nothing committed is lost; the log is fenced."""


@dataclass(frozen=True)
class Failure:
    """What the funnel knows about one failed C call: what a code's builder makes its exception
    from."""

    code: int
    operation: str  # what failed, as the message's first words: "append", "read at 4096"
    detail: str     # the core's own words (fl_error_info.message) or the caller's, else ""
    address: int    # the address the caller asked about (0: none)
    info: Any       # the call's fl_error_info, or None

    def text(self, default: str) -> str:
        """The message: the operation first, then the detail or, without one, `default`."""
        return f"{self.operation} failed: {self.detail or default}"

    @property
    def where(self) -> int:
        """The address the core reported (the frame it found bad), else the caller's."""
        reported = int(self.info.address) if self.info is not None else 0
        return reported or self.address


Builder = Callable[[Failure], BaseException]


def _locked(failure: Failure) -> BaseException:
    holder = int(failure.info.holder_pid) if failure.info is not None else 0
    return LockedError(failure.text("the log is open for writing by another process"), holder)


def _truncated(failure: Failure) -> BaseException:
    begin = int(failure.info.begin_address) if failure.info is not None else 0
    where = failure.where
    return TruncatedError(failure.text(f"address {where} is below the begin address {begin}"),
                          where, begin)


def _invalid_address(failure: Failure) -> BaseException:
    return InvalidAddressError(failure.text(
        f"address {failure.address} is not the start of a readable entry (out of range, "
        "unaligned or inside an entry)"), failure.address)


def _corrupt(failure: Failure) -> BaseException:
    return CorruptionError(failure.text(f"corrupt frame at address {failure.where}"),
                           failure.where)


def _short_write(failure: Failure) -> BaseException:
    return LogIOError(_errno.EIO, failure.text("the device wrote fewer bytes than asked "
                                               "(short write)"))


def _buffer(failure: Failure) -> BaseException:
    needed = int(failure.info.size_needed) if failure.info is not None else 0
    return BufferTooSmallError(failure.text(f"the buffer is too small (needs {needed} bytes)"),
                               needed)


def _simple(error: Callable[[str], BaseException], default: str) -> Builder:
    return lambda failure: error(failure.text(default))


# Rule 1: the core's codes (fasterlog.h, enum fl_status) and their exceptions.
_BUILDERS: dict[int, Builder] = {
    lib.FL_E_CLOSED: _simple(LogClosedError, "the log is closed"),
    lib.FL_E_FENCED: _simple(LogFencedError, "an earlier write or sync failed; the log refuses "
                                             "writes (reopen it to recover)"),
    lib.FL_E_READONLY: _simple(ReadOnlyError, "the log was opened read-only"),
    lib.FL_E_COMPLETED: _simple(LogCompletedError, "the log was completed and takes no more "
                                                   "entries"),
    lib.FL_E_LOCKED: _locked,
    lib.FL_E_CORRUPT: _corrupt,
    lib.FL_E_TRUNCATED: _truncated,
    lib.FL_E_ADDRESS: _invalid_address,
    lib.FL_E_TOO_LARGE: _simple(EntryTooLarge, "entry exceeds entry_size_max"),
    lib.FL_E_SETTINGS: _simple(SettingsError, "invalid settings"),
    lib.FL_E_FORMAT: _simple(FormatError, "not a fasterlog directory"),
    lib.FL_E_SHORT_WRITE: _short_write,
    lib.FL_E_NOMEM: _simple(MemoryError, "out of memory"),
    lib.FL_E_TIMEOUT: _simple(TimeoutError, "timed out"),
    lib.FL_E_FULL: _simple(MemoryFullError, "the memory ring holds only pages not yet written"),
    lib.FL_E_BUFFER: _buffer,
    lib.FL_E_WOKEN: _simple(WaitWokenError, "the wait was ended by wake()"),
    lib.FL_E_NOT_IN_MEMORY: _simple(NotInMemoryError, "the entry is not in memory"),
}
# Each code's name in fasterlog.h (cffi gives the enum's members as `lib` attributes).
_CODE_NAMES: dict[int, str] = {getattr(lib, name): name for name in dir(lib)
                               if name.startswith("FL_E_")}
_CORE_CODES = frozenset(_BUILDERS)
# -errno codes: the operating system's numbers stop below this.
_ERRNO_LIMIT = 4096


def register_code(code: int, build: Builder) -> None:
    """Rule 2: makes `build(failure)` the exception of C code `code` (a negative number that is
    neither an errno nor one of the log's codes). Registering the same builder again (a module
    reloaded) is allowed; another builder for a taken code is a ValueError."""
    if not isinstance(code, int) or code > -_ERRNO_LIMIT:
        raise ValueError(f"register_code failed: {code!r} is not a negative code below "
                         f"-{_ERRNO_LIMIT} (those are errno values)")
    if code in _CORE_CODES:
        raise ValueError(f"register_code failed: code {code} is one of the log's own")
    taken = _BUILDERS.get(code)
    if taken is not None and _name(taken) != _name(build):
        raise ValueError(f"register_code failed: code {code} is taken by {_name(taken)}")
    _BUILDERS[code] = build


def _name(build: Builder) -> str:
    return f"{build.__module__}.{getattr(build, '__qualname__', repr(build))}"


def exception_for(code: int, operation: str, info: Any = None, address: int = 0, *,
                  detail: str = "") -> BaseException:
    """Rule 1: the exception for negative C code `code` from `operation`. `info` is the call's
    fl_error_info (its message, when set, is the detail); `detail` is the caller's own words
    (they win); `address` is the one the caller asked about."""
    if not detail and info is not None and info.message[0] != b"\0":
        detail = ffi.string(info.message).decode(errors="replace")
    failure = Failure(code, operation, detail, address, info)
    build = _BUILDERS.get(code)
    if build is not None:
        return build(failure)
    if -_ERRNO_LIMIT < code < 0:
        number = -code
        message = failure.text(os.strerror(number))
        if number == _errno.ENOSPC:
            return DiskFullError(number, message)
        return LogIOError(number, message)
    return FasterLogError(failure.text(f"error code {code}"))


def raise_for(code: int, operation: str, info: Any = None, address: int = 0, *,
              detail: str = "") -> NoReturn:
    """Raises exception_for(...): the form a failed call's `if rc < 0:` branch uses."""
    raise exception_for(code, operation, info, address, detail=detail)


def code_name(code: int) -> str:
    """The name of a negative C code: FL_E_* for the core's, the errno name for -errno, else
    "error code N"."""
    if code in _CODE_NAMES:
        return _CODE_NAMES[code]
    if -_ERRNO_LIMIT < code < 0:
        return _errno.errorcode.get(-code, f"errno {-code}")
    return f"error code {code}"


def fence_reason(code: int) -> str:
    """Says in words why a log was fenced, for LogFencedError messages."""
    if code == lib.FL_E_SHORT_WRITE:
        return "a short write"
    if -_ERRNO_LIMIT < code < 0:
        return f"{code_name(code)} ({os.strerror(-code)})"
    if code in _CODE_NAMES:
        words = str(exception_for(code, "fence")).removeprefix("fence failed: ")
        return f"{code_name(code)} ({words})"
    return f"error code {code}"
