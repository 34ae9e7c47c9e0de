"""Named durable cursors: where each named consumer of a log resumes, kept in cursor files.

A cursor file `DIR/cursors/<name>.cursor` holds one position: the address of the next entry its
consumer will read (exclusive, like Kafka's committed offset: everything below it was processed).
It is derived state (FORMAT.md, "Cursor files"): losing one costs redelivery, never log data. It
lives in the core package because the core's retention (truncate_until) reads every cursor, and
it imports nothing from the layers above.

Rules:
1. A file is two 512-byte slots. A write goes to slot `sequence % 2` with the next sequence,
   then `fdatasync`; it never touches the other slot, which holds the previous durable
   position. So a crash in the middle of a write leaves the old or the new position, never
   neither, and a reader needs no lock: it takes the valid slot with the highest sequence.
2. A file comes into existence whole: it is written under a temporary name, synced, then
   linked to its final name (link, unlike rename, refuses to replace a cursor another process
   created meanwhile), and the directory is synced.
3. Each slot carries the log's salt (from `fasterlog.meta`): a cursor copied from another log
   is refused, not silently applied to this one.
4. A writer holds `flock(LOCK_EX)` on the file for as long as it keeps it open (a Consumer: its
   whole life), so two writers of one cursor refuse each other with LockedError instead of
   interleaving their positions. Readers take no lock (rule 1).
5. A failed fdatasync is never retried: the CursorFile refuses every later write (the
   fsyncgate lesson, as for the log itself).

Invariants: a valid slot's position is at least FIRST_ADDRESS and below 2**63; its name equals
the file's name; sequences of the two slots differ by one once both were written.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import os
import re
import struct
from dataclasses import dataclass

from . import errors
from ._fasterlog_c import lib
from ._format import FIRST_ADDRESS, META_CHECKSUMMED_FROM, META_SIZE_BYTES

__all__ = [
    "CursorFile",
    "cursor_path",
    "cursors_directory",
    "decode_slot",
    "delete",
    "encode_slot",
    "log_salt",
    "names",
    "read",
    "read_all",
    "validate_name",
    "write",
]

CURSORS_DIRECTORY_NAME = "cursors"
CURSOR_SUFFIX = ".cursor"
CURSOR_MAGIC = b"FLCURSOR"
CURSOR_VERSION = 1
CURSOR_SLOT_SIZE_BYTES = 512
CURSOR_SLOTS_COUNT = 2
CURSOR_FILE_SIZE_BYTES = CURSOR_SLOT_SIZE_BYTES * CURSOR_SLOTS_COUNT
CURSOR_CHECKSUMMED_FROM = 16
CURSOR_NAME_SIZE_MAX_BYTES = 64
POSITION_LIMIT = 1 << 63
# magic, version, crc32c | sequence, position, salt, name length (the name follows at 42).
_SLOT_HEADER = struct.Struct("<8sIIQQQH")
_NAME_OFFSET = _SLOT_HEADER.size
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}", re.ASCII)
_META_MAGIC = b"FLOGMETA"
_META_VERSION = 1
# Opening a file that a deleter unlinks between our open and our lock is retried this often.
_OPEN_ATTEMPTS_MAX = 8

assert _NAME_OFFSET == 42
assert _NAME_OFFSET + CURSOR_NAME_SIZE_MAX_BYTES <= CURSOR_SLOT_SIZE_BYTES


def _crc32c(data: bytes) -> int:
    return int(lib.fl_crc32c(0, data, len(data)))


def validate_name(name: object) -> str:
    """Returns `name` if it is a valid cursor name ([A-Za-z0-9_.-], 1 to 64 characters)."""
    if not isinstance(name, str):
        raise TypeError(f"cursor name must be a str, not {type(name).__name__}")
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"bad cursor name {name!r}: use 1 to {CURSOR_NAME_SIZE_MAX_BYTES} "
                         "characters from A-Z a-z 0-9 _ . -")
    return name


def _validate_position(position: object, operation: str) -> int:
    if not isinstance(position, int) or isinstance(position, bool):
        raise TypeError(f"{operation} failed: a position must be an int, not "
                        f"{type(position).__name__}")
    if not FIRST_ADDRESS <= position < POSITION_LIMIT:
        raise errors.InvalidAddressError(f"{operation} failed: position {position} is out of "
                                         f"range [{FIRST_ADDRESS}, 2**63)", position)
    return position


def cursors_directory(directory: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(directory), CURSORS_DIRECTORY_NAME)


def cursor_path(directory: str | os.PathLike[str], name: str) -> str:
    return os.path.join(cursors_directory(directory), validate_name(name) + CURSOR_SUFFIX)


def log_salt(directory: str | os.PathLike[str]) -> int:
    """The log's salt, read from its meta file (FORMAT.md, "The meta file")."""
    path = os.path.join(os.fspath(directory), "fasterlog.meta")
    try:
        with open(path, "rb") as file:
            block = file.read(META_SIZE_BYTES)
    except FileNotFoundError:
        raise errors.FormatError(f"cursor failed: {os.fspath(directory)!r} holds no fasterlog "
                                 "log (no fasterlog.meta)") from None
    magic, version, crc = struct.unpack_from("<8sII", block.ljust(16, b"\0"))
    if len(block) != META_SIZE_BYTES or magic != _META_MAGIC or version != _META_VERSION \
            or crc != _crc32c(block[META_CHECKSUMMED_FROM:]):
        raise errors.FormatError(f"cursor failed: {path!r} is not a valid fasterlog meta file")
    salt: int = struct.unpack_from("<Q", block, 16)[0]
    return salt


# ---------------------------------------------------------------------- slots


@dataclass(frozen=True)
class Slot:
    """One decoded, checksum-valid slot."""

    sequence: int
    position: int
    salt: int
    name: str


def encode_slot(name: str, sequence: int, position: int, salt: int) -> bytes:
    """The 512 bytes of one slot (FORMAT.md, "Cursor files")."""
    encoded_name = validate_name(name).encode("ascii")
    _validate_position(position, "cursor write")
    assert 0 < sequence < 1 << 64 and 0 <= salt < 1 << 64
    body = struct.pack("<QQQH", sequence, position, salt, len(encoded_name)) + encoded_name
    body = body.ljust(CURSOR_SLOT_SIZE_BYTES - CURSOR_CHECKSUMMED_FROM, b"\0")
    slot = CURSOR_MAGIC + struct.pack("<II", CURSOR_VERSION, _crc32c(body)) + body
    assert len(slot) == CURSOR_SLOT_SIZE_BYTES
    return slot


def decode_slot(data: bytes) -> Slot | str:
    """The slot in `data` (512 bytes), or a reason why it is not valid."""
    if len(data) < CURSOR_SLOT_SIZE_BYTES:
        return "short"
    if data[:CURSOR_SLOT_SIZE_BYTES] == bytes(CURSOR_SLOT_SIZE_BYTES):
        return "empty"
    magic, version, crc, sequence, position, salt, name_size = _SLOT_HEADER.unpack_from(data)
    if magic != CURSOR_MAGIC:
        return "bad magic"
    if version != CURSOR_VERSION:
        return f"unknown version {version}"
    if crc != _crc32c(data[CURSOR_CHECKSUMMED_FROM:CURSOR_SLOT_SIZE_BYTES]):
        return "checksum mismatch"
    if name_size > CURSOR_NAME_SIZE_MAX_BYTES or sequence == 0 \
            or not FIRST_ADDRESS <= position < POSITION_LIMIT:
        return "fields out of range"
    name_bytes = data[_NAME_OFFSET:_NAME_OFFSET + name_size]
    name = name_bytes.decode("ascii", errors="replace")
    if not _NAME_PATTERN.fullmatch(name):
        return "bad name"
    return Slot(sequence, position, salt, name)


def _newest_slot(data: bytes, name: str, salt: int, path: str) -> Slot:
    """The valid slot with the highest sequence; CorruptionError when there is none or it
    belongs to another log or another cursor."""
    decoded = [decode_slot(data[i * CURSOR_SLOT_SIZE_BYTES:(i + 1) * CURSOR_SLOT_SIZE_BYTES])
               for i in range(CURSOR_SLOTS_COUNT)]
    valid = [slot for slot in decoded if isinstance(slot, Slot)]
    if not valid:
        reasons = ", ".join(f"slot {i}: {reason}" for i, reason in enumerate(decoded))
        raise errors.CorruptionError(f"cursor read failed: {path!r} has no valid slot "
                                     f"({reasons})", 0)
    newest = max(valid, key=lambda slot: slot.sequence)
    if newest.salt != salt:
        raise errors.CorruptionError(
            f"cursor read failed: {path!r} belongs to another log (salt {newest.salt:#x}, this "
            f"log's is {salt:#x})", newest.position)
    if newest.name != name:
        raise errors.CorruptionError(f"cursor read failed: {path!r} holds cursor "
                                     f"{newest.name!r}, not {name!r}", newest.position)
    return newest


# ---------------------------------------------------------------------- files


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_cursors_directory(directory: str) -> str:
    path = cursors_directory(directory)
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        _fsync_directory(os.fspath(directory))
    return path


def _create(directory: str, name: str, position: int, salt: int) -> None:
    """Rule 2: a new file appears whole, or (when another process won the race) not ours."""
    parent = _ensure_cursors_directory(directory)
    final = cursor_path(directory, name)
    temporary = f"{final}.tmp.{os.getpid()}-{os.urandom(4).hex()}"  # unique per thread too
    data = bytes(CURSOR_SLOT_SIZE_BYTES) + encode_slot(name, 1, position, salt)
    assert len(data) == CURSOR_FILE_SIZE_BYTES
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(_errno.EIO, "short write", temporary)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.link(temporary, final)
    except FileExistsError:
        pass  # created meanwhile by someone else: theirs stands
    finally:
        os.unlink(temporary)
    _fsync_directory(parent)


def _lock(fd: int, path: str, operation: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise errors.LockedError(f"{operation} failed: cursor file {path!r} is held by another "
                                 "consumer (in this or another process)", 0) from None


class CursorFile:
    """An open, locked cursor file: the one way to change a cursor (rule 4).

    Open with CursorFile.open(); `position` is the durable position; write() makes a new one
    durable before it returns."""

    def __init__(self, fd: int, path: str, name: str, salt: int, slot: Slot) -> None:
        self._fd = fd
        self.path = path
        self.name = name
        self._salt = salt
        self.sequence = slot.sequence
        self.position = slot.position
        self._failed: OSError | None = None

    @classmethod
    def open(cls, directory: str | os.PathLike[str], name: str, *,
             create_position: int | None = None, salt: int | None = None) -> CursorFile:
        """Opens and locks the cursor `name` of the log in `directory`. A missing cursor is
        created at `create_position` if given, else KeyError. LockedError when another
        CursorFile holds it; LogIOError when the operating system fails a call."""
        try:
            return cls._open(os.fspath(directory), name, create_position, salt)
        except OSError as error:
            if isinstance(error, errors.FasterLogError):
                raise
            raise _io_error(error, f"cursor {name!r} open") from error

    @classmethod
    def _open(cls, directory: str, name: str, create_position: int | None,
              salt: int | None) -> CursorFile:
        path = cursor_path(directory, name)
        salt = log_salt(directory) if salt is None else salt
        if create_position is not None:
            _validate_position(create_position, f"cursor {name!r} create")
        for _ in range(_OPEN_ATTEMPTS_MAX):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if create_position is None:
                    raise errors.CursorNotFoundError(
                        f"cursor {name!r} not found in {directory!r}") from None
                _create(directory, name, create_position, salt)
                continue
            try:
                _lock(fd, path, f"cursor {name!r} open")
                if not _same_file(fd, path):
                    os.close(fd)  # deleted (or replaced) between our open and our lock
                    continue
                slot = _newest_slot(os.pread(fd, CURSOR_FILE_SIZE_BYTES, 0), name, salt, path)
            except BaseException:
                os.close(fd)
                raise
            return cls(fd, path, name, salt, slot)
        raise errors.FasterLogError(f"cursor {name!r} open failed: the file kept being deleted "
                                    f"and created under us ({_OPEN_ATTEMPTS_MAX} attempts)")

    def write(self, position: int) -> None:
        """Makes `position` the durable position (rule 1)."""
        if self._fd < 0:
            raise errors.FasterLogError(f"cursor {self.name!r} write failed: the cursor file "
                                        "is closed")
        if self._failed is not None:
            raise errors.LogFencedError(f"cursor {self.name!r} write failed: an earlier sync of "
                                        f"{self.path!r} failed ({self._failed.strerror}); "
                                        "reopen the cursor")
        sequence = self.sequence + 1
        slot = encode_slot(self.name, sequence, position, self._salt)
        try:
            written = os.pwrite(self._fd, slot, (sequence % CURSOR_SLOTS_COUNT)
                                * CURSOR_SLOT_SIZE_BYTES)
            if written != len(slot):
                raise OSError(_errno.EIO, "short write")
            os.fdatasync(self._fd)
        except OSError as error:
            self._failed = error
            raise errors.exception_for(-(error.errno or _errno.EIO), f"cursor {self.name!r} write",
                                       detail=f"{error.strerror} ({self.path})") from error
        self.sequence = sequence
        self.position = position

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def __enter__(self) -> CursorFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A consumer dropped without close() must not keep its cursor locked until exit.
        if getattr(self, "_fd", -1) >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


def _io_error(error: OSError, operation: str) -> BaseException:
    """An operating-system error of a cursor file, through the log's one funnel (errors.py)."""
    number = error.errno or _errno.EIO
    where = f" ({error.filename})" if error.filename else ""
    return errors.exception_for(-number, operation, detail=f"{os.strerror(number)}{where}")


def _same_file(fd: int, path: str) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


# ---------------------------------------------------------------------- module functions


def names(directory: str | os.PathLike[str]) -> list[str]:
    """The names of the cursors of the log in `directory`, sorted."""
    try:
        files = os.listdir(cursors_directory(directory))
    except FileNotFoundError:
        return []
    found = (file[:-len(CURSOR_SUFFIX)] for file in files if file.endswith(CURSOR_SUFFIX))
    return sorted(name for name in found if _NAME_PATTERN.fullmatch(name))


def read(directory: str | os.PathLike[str], name: str, *, salt: int | None = None) -> int:
    """The durable position of cursor `name`; KeyError if there is none, CorruptionError if
    its file holds no valid slot of this log."""
    path = cursor_path(directory, name)
    salt = log_salt(directory) if salt is None else salt
    try:
        with open(path, "rb", buffering=0) as file:
            data = file.read(CURSOR_FILE_SIZE_BYTES)
    except FileNotFoundError:
        raise errors.CursorNotFoundError(
            f"cursor {name!r} not found in {os.fspath(directory)!r}") from None
    except OSError as error:
        raise _io_error(error, f"cursor {name!r} read") from error
    return _newest_slot(data, name, salt, path).position


def read_all(directory: str | os.PathLike[str]) -> dict[str, int]:
    """Every cursor's durable position, by name. A cursor deleted while we look is left out;
    a corrupt one raises CorruptionError (retention must not guess)."""
    positions, damaged = read_all_checked(directory)
    if damaged:
        raise next(iter(damaged.values()))
    return positions


def read_all_checked(directory: str | os.PathLike[str]
                     ) -> tuple[dict[str, int], dict[str, errors.CorruptionError]]:
    """Every cursor's durable position by name, and apart from them the damaged cursors, by
    name, with the CorruptionError reading each raised: one damaged file is reported for that
    cursor alone (truncate_until warns about it and goes on, FasterLog.check_retention)."""
    found = names(directory)
    if not found:
        return {}, {}
    salt = log_salt(directory)
    positions: dict[str, int] = {}
    damaged: dict[str, errors.CorruptionError] = {}
    for name in found:
        try:
            positions[name] = read(directory, name, salt=salt)
        except KeyError:
            continue
        except errors.CorruptionError as error:
            damaged[name] = error
    return positions, damaged


def write(directory: str | os.PathLike[str], name: str, position: int) -> None:
    """Sets cursor `name` to `position` durably, creating it if needed. LockedError while a
    consumer holds it."""
    with CursorFile.open(directory, name, create_position=position) as cursor:
        if cursor.position != position:
            cursor.write(position)


def delete(directory: str | os.PathLike[str], name: str) -> None:
    """Deletes cursor `name` durably. KeyError if there is none; LockedError while a consumer
    holds it."""
    directory = os.fspath(directory)
    path = cursor_path(directory, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise errors.CursorNotFoundError(f"cursor {name!r} not found in {directory!r}") from None
    except OSError as error:
        raise _io_error(error, f"cursor {name!r} delete") from error
    try:
        _lock(fd, path, f"cursor {name!r} delete")
        if not _same_file(fd, path):
            raise errors.CursorNotFoundError(f"cursor {name!r} not found in {directory!r}")
        os.unlink(path)
        _fsync_directory(cursors_directory(directory))
    except OSError as error:
        raise _io_error(error, f"cursor {name!r} delete") from error
    finally:
        os.close(fd)
