"""Exceptions raised by kvlayer. Every one is a fasterlog FasterLogError.

    FasterLogError (fasterlog.errors)
    └── KVError                               a KV store operation failed
        ├── KeyNotFound (KeyError)            get/delete of a key that is not live
        ├── KeyTypeError (TypeError)          a key that is not bytes-like
        ├── ValueTypeError (TypeError)        a value that is not bytes-like, or an rmw/incr
        │                                     result of the wrong type
        ├── KeyTooLarge (ValueError)          a key above key_size_max_bytes
        ├── ValueTooLarge (ValueError)        a record above the log's entry_size_max
        ├── NotAnIntegerError (ValueError)    incr of a value that is not a decimal integer
        ├── StoreSettingsError (ValueError)   an invalid KVStore.open setting
        ├── StoreClosedError                  the store was closed
        ├── StoreReadOnlyError                a write to a store opened read_only=True
        ├── WaitTimeoutError (TimeoutError)   get(at=)/wait_for did not reach the address in time
        ├── CheckpointError (consumers.errors.CheckpointError)  a snapshot cannot be written,
        │                                     or the one a checkpoint marker names cannot be used
        └── RecordCorruptError (CorruptionError)  a log entry is not a well-formed KV record
                                              (.address)
            └── StoreVersionError             a record of an older format (version 1)

Errors of the log itself (LogFencedError, LogIOError, CorruptionError of a frame) come from
fasterlog.errors unchanged. Messages start with the operation that failed:
"put failed: key of 70000 bytes exceeds key_size_max_bytes (65535)".

The C codes of the KV fast path and of the index (FL_E_KV_RECORD, FL_E_KV_INDEX,
FL_E_INDEX_BUSY) are registered at import with fasterlog.errors.register_code, so that
fasterlog.errors.raise_for, the one funnel from C codes to exceptions, raises these classes.
"""

from __future__ import annotations

from consumers import errors as consumer_errors
from fasterlog.errors import CorruptionError, Failure, FasterLogError, register_code

from ._kvlayer_c import lib

__all__ = [
    "CheckpointError",
    "KVError",
    "KeyNotFound",
    "KeyTooLarge",
    "KeyTypeError",
    "NotAnIntegerError",
    "RecordCorruptError",
    "StoreClosedError",
    "StoreReadOnlyError",
    "StoreSettingsError",
    "StoreVersionError",
    "ValueTooLarge",
    "ValueTypeError",
    "WaitTimeoutError",
]

# fl_kv.c's reason for a version-1 record (BLAKE2b hashes): a StoreVersionError, not corruption.
VERSION_1_WHY = ("record version 1 (BLAKE2b key hashes, an older kvlayer): this kvlayer reads "
                 "version 2 stores only")
_VERSION_1_PREFIX = "record version 1 "


class KVError(FasterLogError):
    """Base of every kvlayer error."""


class KeyNotFound(KVError, KeyError):
    """The key is not live (never written, or deleted)."""

    def __init__(self, message: str, key: bytes) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class KeyTypeError(KVError, TypeError):
    """A key must be bytes-like (bytes, bytearray, memoryview)."""


class ValueTypeError(KVError, TypeError):
    """A value must be bytes-like."""


class KeyTooLarge(KVError, ValueError):
    """The key is longer than key_size_max_bytes."""


class ValueTooLarge(KVError, ValueError):
    """The record (key, value and headers) does not fit one log entry."""


class NotAnIntegerError(KVError, ValueError):
    """incr found a value that is not a decimal integer."""


class StoreSettingsError(KVError, ValueError):
    """An invalid KVStore.open setting (the log's own settings raise SettingsError)."""


class StoreClosedError(KVError):
    """The store was closed."""


class StoreReadOnlyError(KVError):
    """The store was opened read_only=True (a follower): writes go to the writer process."""


class WaitTimeoutError(KVError, TimeoutError):
    """get(key, at=address) or wait_for(address) gave up before the store applied `address`."""


class CheckpointError(KVError, consumer_errors.CheckpointError):
    """A checkpoint cannot be written, or the snapshot a marker names is missing, truncated or
    corrupt. Recovery catches it and falls back to an older checkpoint or a full replay. Both a
    KVError and the checkpoint error every checkpointing consumer shares."""


class RecordCorruptError(KVError, CorruptionError):
    """A log entry passed the log's checksum but is not a well-formed KV record."""


class StoreVersionError(RecordCorruptError):
    """The store was written by an older kvlayer whose records this one does not read (record
    version 1, BLAKE2b key hashes: FORMAT.md "KV records"). Its bytes are intact; export it
    with that kvlayer and import it into a new store."""


# ---------------------------------------------------------------------- the C codes


def _record_error(failure: Failure) -> KVError:
    """FL_E_KV_RECORD: the record at the reported address is not a well-formed KV record; its
    message names the record's read, not the operation that walked into it."""
    address = int(failure.info.address) if failure.info is not None else failure.address
    if failure.detail.startswith(_VERSION_1_PREFIX):
        return StoreVersionError(f"read record at {address} failed: {VERSION_1_WHY}", address)
    return RecordCorruptError(f"read record at {address} failed: {failure.detail}", address)


def _index_conflict(failure: Failure) -> KVError:
    return KVError(f"{failure.operation} failed: an index update conflicted (two writers?)")


def _index_busy(failure: Failure) -> KVError:
    return KVError(f"{failure.operation} failed: another writer is inside the index")


register_code(lib.FL_E_KV_RECORD, _record_error)
register_code(lib.FL_E_KV_INDEX, _index_conflict)
register_code(lib.FL_E_INDEX_BUSY, _index_busy)
