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
    ├── EntryTooLarge (ValueError)      an entry above entry_size_max
    ├── InvalidAddressError (ValueError)  out of range, unaligned, not an entry start
    │   └── TruncatedError              below the begin address (.begin_address)
    ├── SettingsError (ValueError)      invalid settings or settings that differ from the log's
    ├── FormatError                     not a fasterlog directory, or an unknown version
    └── LogIOError (OSError)            the operating system failed an I/O call (.errno)
        └── DiskFullError               ENOSPC

Messages start with the operation that failed, e.g. "append failed: entry of 9 MiB exceeds
entry_size_max (4 MiB)".
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Any, NoReturn


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


class SettingsError(FasterLogError, ValueError):
    """Invalid settings, or settings that differ from the existing log's."""


class FormatError(FasterLogError):
    """The directory holds no fasterlog log of a known format version."""


class LogIOError(FasterLogError, OSError):
    """The operating system failed an I/O call."""


class DiskFullError(LogIOError):
    """The disk is full (ENOSPC). Nothing committed is lost; the log is fenced."""


def raise_for(code: int, operation: str, lib: Any, info: Any = None, address: int = 0) -> NoReturn:
    """Turns a negative C return code into the matching exception. The only such place."""
    detail = ""
    if info is not None and info.message[0] != b"\0":
        from ._fasterlog_c import ffi

        detail = ffi.string(info.message).decode(errors="replace")
    info_address = int(info.address) if info is not None else address
    where = info_address or address

    def text(default: str) -> str:
        return f"{operation} failed: {detail or default}"

    if code == lib.FL_E_CLOSED:
        raise LogClosedError(text("the log is closed"))
    if code == lib.FL_E_FENCED:
        raise LogFencedError(text("an earlier write or sync failed; the log refuses writes "
                                  "(reopen it to recover)"))
    if code == lib.FL_E_READONLY:
        raise ReadOnlyError(text("the log was opened read-only"))
    if code == lib.FL_E_COMPLETED:
        raise LogCompletedError(text("the log was completed and takes no more entries"))
    if code == lib.FL_E_LOCKED:
        raise LockedError(text("the log is open for writing by another process"),
                          int(info.holder_pid) if info is not None else 0)
    if code == lib.FL_E_CORRUPT:
        raise CorruptionError(text(f"corrupt frame at address {where}"), where)
    if code == lib.FL_E_TRUNCATED:
        begin = int(info.begin_address) if info is not None else 0
        raise TruncatedError(text(f"address {where} is below the begin address {begin}"),
                             where, begin)
    if code == lib.FL_E_ADDRESS:
        raise InvalidAddressError(text(f"address {address} is not the start of a readable "
                                       "entry (out of range, unaligned or inside an entry)"),
                                  address)
    if code == lib.FL_E_TOO_LARGE:
        raise EntryTooLarge(text("entry exceeds entry_size_max"))
    if code == lib.FL_E_SETTINGS:
        raise SettingsError(text("invalid settings"))
    if code == lib.FL_E_FORMAT:
        raise FormatError(text("not a fasterlog directory"))
    if code == lib.FL_E_SHORT_WRITE:
        raise LogIOError(_errno.EIO, text("the device wrote fewer bytes than asked (short write)"))
    if code == lib.FL_E_NOMEM:
        raise MemoryError(text("out of memory"))
    if code == lib.FL_E_TIMEOUT:
        raise TimeoutError(text("timed out"))
    if -4096 < code < 0:
        number = -code
        message = text(os.strerror(number))
        if number == _errno.ENOSPC:
            raise DiskFullError(number, message)
        raise LogIOError(number, message)
    raise FasterLogError(text(f"error code {code}"))


def fence_reason(code: int, lib: Any) -> str:
    """Says in words why a log was fenced, for LogFencedError messages."""
    if code == lib.FL_E_SHORT_WRITE:
        return "a short write"
    if -4096 < code < 0:
        return f"{_errno.errorcode.get(-code, str(-code))} ({os.strerror(-code)})"
    return f"error code {code}"
