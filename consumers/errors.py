"""Exceptions raised by the consumers package. Every one is a fasterlog FasterLogError.

    FasterLogError (fasterlog.errors)
    └── ConsumerError                       a consumer or cursor operation failed
        ├── UnknownCursorError (KeyError)   no cursor of that name (never made, or deleted)
        ├── CursorNameError (ValueError)    not 1 to 64 characters from A-Z a-z 0-9 _ . -
        ├── CursorInUseError (LockedError)  another consumer holds the cursor (this process
        │                                   or another)
        ├── InvalidSeekError (ValueError)   a seek past committed-until or not to an entry
        │   │                               start (.address)
        │   └── SeekBelowBeginError (TruncatedError)  below the begin address (.begin_address)
        └── CheckpointError                 a checkpoint cannot be written, or the snapshot its
                                            marker names cannot be used (kvlayer's subclasses it)

Errors of the log itself (TruncatedError when a consumer's position was truncated away,
CorruptionError for a damaged cursor file, LogIOError) come from fasterlog.errors unchanged.
Messages start with the operation that failed: "seek failed: address 9000 is past ...".
"""

from __future__ import annotations

from fasterlog.errors import FasterLogError, LockedError, TruncatedError

__all__ = [
    "CheckpointError",
    "ConsumerError",
    "CursorInUseError",
    "CursorNameError",
    "InvalidSeekError",
    "SeekBelowBeginError",
    "UnknownCursorError",
]


class ConsumerError(FasterLogError):
    """Base of the consumers package's errors."""


class UnknownCursorError(ConsumerError, KeyError):
    """No cursor of that name exists (it was never created, or it was deleted)."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class CursorNameError(ConsumerError, ValueError):
    """A cursor name that is not 1 to 64 characters from A-Z a-z 0-9 _ . -"""


class CursorInUseError(ConsumerError, LockedError):
    """Another consumer (in this process or another) holds the cursor open."""

    def __init__(self, message: str, name: str) -> None:
        LockedError.__init__(self, message, 0)
        self.name = name


class InvalidSeekError(ConsumerError, ValueError):
    """A seek to an address past committed-until, or not at the start of an entry."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class SeekBelowBeginError(InvalidSeekError, TruncatedError):
    """A seek below the begin address: that part of the log was truncated."""

    def __init__(self, message: str, address: int, begin_address: int) -> None:
        TruncatedError.__init__(self, message, address, begin_address)


class CheckpointError(ConsumerError):
    """A checkpoint cannot be written, or the one named cannot be used (missing, truncated or
    corrupt snapshot file, or a snapshot its user refused to restore). Shared by every
    checkpointing consumer (consumers/checkpoints.py); kvlayer's CheckpointError is also a
    KVError."""
