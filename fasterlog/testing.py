"""Test hooks: crash simulation, fault injection and power-loss states of a real log.

These reach into the real device layer (no mocks): an injected fault replaces one real write or
sync by an error, exactly where the kernel would have returned it. The I/O trace records what
the C core really wrote and synced; `CrashStates` turns it into the directories a power cut
could leave (kill -9 cannot: the page cache survives it).
"""

from __future__ import annotations

import errno as _errno
import os
import random
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from . import errors
from ._fasterlog_c import ffi, lib
from .log import FasterLog

__all__ = [
    "CrashState",
    "CrashStates",
    "IOTrace",
    "OpenPause",
    "ReadPause",
    "TraceOp",
    "cancelled_resent_count",
    "clear_faults",
    "crash_point_names",
    "crc32c",
    "crc32c_portable",
    "inject_fault",
    "pause_read",
    "pause_read_only_open",
    "send_to_kernel_workers",
    "simulate_crash",
    "trace_side_files",
]

_OPS = {"write": lib.FL_FAULT_WRITE, "fsync": lib.FL_FAULT_FSYNC, "any": lib.FL_FAULT_ANY}


def simulate_crash(log: FasterLog) -> None:
    """Drops the log as kill -9 would: no final commit, no clean meta file, lock released.
    Writes already handed to the device may or may not have landed, as in a real crash. The
    FasterLog then reports itself closed, and its close() does nothing."""
    lib.fl_simulate_crash(log.c_handle)


def inject_fault(log: FasterLog, op: str = "any", after: int = 0, errno: int = _errno.EIO,
                 persistent: bool = True, short_write: bool = False) -> None:
    """Makes the (after+1)-th next device operation of kind `op` fail with `errno` (or, with
    short_write, complete with half its bytes); with `persistent`, every later one too."""
    if op not in _OPS:
        raise ValueError(f"inject_fault: op must be one of {sorted(_OPS)}, not {op!r}")
    lib.fl_fault_set(log.c_handle, _OPS[op], after, errno, int(persistent), int(short_write))


def send_to_kernel_workers(log: FasterLog) -> None:
    """From now on (until the next inject_fault or clear_faults) the log's io_uring writes and
    syncs wait in the kernel's workers of the thread that submitted them, as a write that
    cannot go at once does; a thread that ends then leaves them to be cancelled (ECANCELED).
    No effect on the plain backend."""
    lib.fl_fault_set(log.c_handle, lib.FL_FAULT_KERNEL_WORKERS, 0, 0, 1, 0)


def cancelled_resent_count(log: FasterLog) -> int:
    """Writes and syncs the kernel cancelled unrun that the log has sent again since open."""
    state = ffi.new("fl_state *")
    lib.fl_get_state(log.c_handle, state)
    return int(state.cancelled_resent_count)


def clear_faults(log: FasterLog) -> None:
    """Disarms every fault and read pause (a held read goes on)."""
    lib.fl_fault_set(log.c_handle, 0, 0, 0, 0, 0)


# Where a read from a segment file can be held (fasterlog.h, enum fl_fault_op).
_PAUSE_POINTS = {"before-segment-lookup": lib.FL_FAULT_PAUSE_BEFORE_LOOKUP,
                 "before-pread": lib.FL_FAULT_PAUSE_BEFORE_PREAD}
pause_held_max_s = lib.FL_FAULT_PAUSE_MAX_MS / 1000


class ReadPause:
    """One read held at a point of the C core's read path (made by pause_read). As a context
    manager it releases the read on exit, whatever happened."""

    def __init__(self, log: FasterLog, point: str) -> None:
        self._handle = log.c_handle
        self.point = point

    def wait_held(self, timeout_s: float) -> bool:
        """Waits until a read is held at the point; False if none came within `timeout_s`."""
        return int(lib.fl_fault_pause_wait(self._handle, int(timeout_s * 1e6))) == 0

    def release(self) -> bool:
        """Lets the held read go on (and disarms the pause); returns whether one was held.
        Raises TimeoutError if it had gone on by itself after pause_held_max_s."""
        rc = int(lib.fl_fault_pause_release(self._handle))
        if rc == lib.FL_E_TIMEOUT:
            raise TimeoutError(f"read pause {self.point}: the held read went on by itself "
                               f"after {pause_held_max_s:g} s, before the release")
        return rc == 1

    def __enter__(self) -> ReadPause:
        return self

    def __exit__(self, *exc_info: object) -> None:
        lib.fl_fault_pause_release(self._handle)


def pause_read(log: FasterLog, at: str = "before-pread", after: int = 0) -> ReadPause:
    """Holds the (after+1)-th next read from a segment file that reaches point `at`
    ("before-segment-lookup": past its begin check, before it looks its segment up;
    "before-pread": holding the segment's descriptor, before the pread) until the returned
    ReadPause releases it. Replaces any armed fault (as inject_fault does). Reads answered
    from memory never get there."""
    if at not in _PAUSE_POINTS:
        raise ValueError(f"pause_read: at must be one of {sorted(_PAUSE_POINTS)}, not {at!r}")
    rc = int(lib.fl_fault_set(log.c_handle, _PAUSE_POINTS[at], after, 0, 0, 0))
    if rc < 0:
        errors.raise_for(rc, "pause_read")
    return ReadPause(log, at)


# Where a read-only open can be held (fasterlog.h, fl_open_pause_arm).
_OPEN_PAUSE_POINTS = {"before-recovery-scan": lib.FL_FAULT_PAUSE_RECOVERY_BEFORE_SCAN,
                      "after-recovery-scan": lib.FL_FAULT_PAUSE_RECOVERY_AFTER_SCAN}


class OpenPause:
    """The next read-only open in this process, held at a point of its recovery (made by
    pause_read_only_open). As a context manager it releases the open on exit."""

    def __init__(self, point: str) -> None:
        self.point = point

    def wait_held(self, timeout_s: float) -> bool:
        """Waits until an open is held at the point; False if none came within `timeout_s`."""
        return int(lib.fl_open_pause_wait(int(timeout_s * 1e6))) == 0

    def release(self) -> bool:
        """Lets the held open go on (and disarms the pause); returns whether one was held.
        Raises TimeoutError if it had gone on by itself after pause_held_max_s."""
        rc = int(lib.fl_open_pause_release())
        if rc == lib.FL_E_TIMEOUT:
            raise TimeoutError(f"open pause {self.point}: the held open went on by itself "
                               f"after {pause_held_max_s:g} s, before the release")
        return rc == 1

    def __enter__(self) -> OpenPause:
        return self

    def __exit__(self, *exc_info: object) -> None:
        lib.fl_open_pause_release()


def pause_read_only_open(at: str = "after-recovery-scan") -> OpenPause:
    """Holds the next read-only open of any log in this process at point `at`
    ("before-recovery-scan": its meta file read, its recovery scan not begun;
    "after-recovery-scan": the scan done, its damage checks not) until the returned
    OpenPause releases it."""
    if at not in _OPEN_PAUSE_POINTS:
        raise ValueError(f"pause_read_only_open: at must be one of "
                         f"{sorted(_OPEN_PAUSE_POINTS)}, not {at!r}")
    lib.fl_open_pause_arm(_OPEN_PAUSE_POINTS[at])
    return OpenPause(at)


def crc32c(data: bytes, crc: int = 0) -> int:
    """The C core's CRC32C, for tests that build or check frames by hand."""
    return int(lib.fl_crc32c(crc, data, len(data)))


def crc32c_portable(data: bytes, crc: int = 0) -> int:
    """The table-driven CRC32C, to check it agrees with the hardware one."""
    return int(lib.fl_crc32c_portable(crc, data, len(data)))


# ---------------------------------------------------------------------------- I/O trace

_TRACE_OPS = {lib.FL_TRACE_WRITE: "write", lib.FL_TRACE_SYNC: "sync",
              lib.FL_TRACE_CREATE: "create", lib.FL_TRACE_RENAME: "rename",
              lib.FL_TRACE_UNLINK: "unlink", lib.FL_TRACE_EXTEND: "extend",
              lib.FL_TRACE_MARK: "mark", lib.FL_TRACE_FAULT: "fault"}
_TRACE_HEADER = struct.Struct("<IIQQIi")
assert _TRACE_HEADER.size == lib.FL_TRACE_HEADER_SIZE_BYTES


@dataclass(frozen=True)
class TraceOp:
    """One recorded file operation. `path` is absolute (for a rename: the old path, and
    `new_path` the new one); `data` holds a write's bytes (None for a write of zeros)."""

    op: str
    flags: int
    offset: int
    size: int
    path: str
    new_path: str = ""
    data: bytes | None = None

    @property
    def dsync(self) -> bool:
        return bool(self.flags & lib.FL_TRACE_FLAG_DSYNC)

    @property
    def directory(self) -> bool:
        return bool(self.flags & lib.FL_TRACE_FLAG_DIRECTORY)

    @property
    def device(self) -> bool:
        """Went through the device layer, where fl_fault_set can fail it."""
        return bool(self.flags & lib.FL_TRACE_FLAG_DEVICE)


def crash_point_names() -> list[str]:
    """The named crash points of the C core (FASTERLOG_CRASH_AT=name[:count])."""
    buffer = ffi.new("char[1024]")
    lib.fl_crash_points(buffer, 1024)
    names: bytes = ffi.string(buffer)
    return names.decode().split(",")


class IOTrace:
    """Records the C core's file operations while the block runs (one trace per process):

        with IOTrace() as trace:
            log = FasterLog.open(directory, ...)
            ...; log.commit(); trace.mark(count)
        trace.ops  # list[TraceOp]
    """

    def __init__(self, capacity_bytes: int = 256 << 20) -> None:
        self.capacity_bytes = capacity_bytes
        self.ops: list[TraceOp] = []

    def __enter__(self) -> IOTrace:
        if lib.fl_trace_start(self.capacity_bytes) < 0:
            raise MemoryError(f"IOTrace: cannot allocate {self.capacity_bytes} bytes")
        return self

    @staticmethod
    def mark(value: int) -> None:
        """Adds a mark to the trace, e.g. after commit() returned: "value entries acked"."""
        lib.fl_trace_mark(value)

    def __exit__(self, *exc: object) -> None:
        lib.fl_trace_stop()
        self.ops = self.fetch()

    def fetch(self) -> list[TraceOp]:
        size = int(lib.fl_trace_size())
        if size < 0:
            raise OverflowError(f"IOTrace: the trace outgrew its {self.capacity_bytes} bytes")
        buffer = ffi.new("char[]", max(size, 1))
        got = int(lib.fl_trace_copy(buffer, size))
        if got < 0:
            raise OverflowError("IOTrace: the trace outgrew its buffer")
        return parse_trace(bytes(ffi.buffer(buffer, got)))


class _TracedOs:
    """Stands in for the `os` module inside the modules that write side files, recording their
    creates, writes, syncs, links, renames and unlinks into the running IOTrace (in order with
    the C core's records). Everything else goes to the real module."""

    def __init__(self) -> None:
        self._real = os

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def _add(op: int, flags: int, offset: int, size: int, path: str,
             data: bytes | None = None) -> None:
        name = os.fsencode(os.path.abspath(path))
        payload = b"" if data is None else bytes(data)
        lib.fl_trace_add(op, flags, offset, size, name, len(name), payload, len(payload))

    @staticmethod
    def _fd_path(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def open(self, path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        existed = os.path.exists(path)
        fd = os.open(path, flags, mode, **kwargs)  # type: ignore[arg-type]
        if flags & os.O_CREAT and (not existed or flags & os.O_TRUNC):
            self._add(lib.FL_TRACE_CREATE, lib.FL_TRACE_FLAG_TRUNCATE if existed else 0, 0, 0,
                      self._fd_path(fd))
        return fd

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        written = os.pwrite(fd, data, offset)
        if written > 0:
            self._add(lib.FL_TRACE_WRITE, 0, offset, written, self._fd_path(fd), data[:written])
        return written

    def write(self, fd: int, data: bytes) -> int:
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        written = os.write(fd, data)
        if written > 0:
            self._add(lib.FL_TRACE_WRITE, 0, offset, written, self._fd_path(fd),
                      bytes(data[:written]))
        return written

    def _sync(self, fd: int, call: object) -> None:
        call(fd)  # type: ignore[operator]
        import stat
        directory = stat.S_ISDIR(os.fstat(fd).st_mode)
        self._add(lib.FL_TRACE_SYNC, lib.FL_TRACE_FLAG_DIRECTORY if directory else 0, 0, 0,
                  self._fd_path(fd))

    def fsync(self, fd: int) -> None:
        self._sync(fd, os.fsync)

    def fdatasync(self, fd: int) -> None:
        self._sync(fd, os.fdatasync)

    def _rename(self, old: str, new: str, call: object, op: int) -> None:
        old_path, new_path = os.path.abspath(old), os.path.abspath(new)
        call(old, new)  # type: ignore[operator]
        name = os.fsencode(old_path) + b"\0" + os.fsencode(new_path)
        lib.fl_trace_add(op, 0, 0, 0, name, len(name), b"", 0)

    def replace(self, old: str, new: str) -> None:
        self._rename(old, new, os.replace, lib.FL_TRACE_RENAME)

    def rename(self, old: str, new: str) -> None:
        self._rename(old, new, os.rename, lib.FL_TRACE_RENAME)

    def link(self, old: str, new: str) -> None:
        self._rename(old, new, os.link, _TRACE_LINK)

    def unlink(self, path: str) -> None:
        absolute = os.path.abspath(path)
        os.unlink(path)
        self._add(lib.FL_TRACE_UNLINK, 0, 0, 0, absolute)

    remove = unlink


# A hard link (os.link) made by Python code: not a C core operation, so no enum value there.
_TRACE_LINK = 64


class trace_side_files:
    """Inside an IOTrace: also records the side files written in Python (named cursors,
    snapshots through fasterlog.durable) by the given modules, default the cursor and durable
    modules. Directories made by os.makedirs are not recorded (a state keeps its directories)."""

    def __init__(self, *modules: object) -> None:
        if not modules:
            from . import cursors, durable
            modules = (cursors, durable)
        self.modules = modules

    def __enter__(self) -> trace_side_files:
        for module in self.modules:
            module.os = _TracedOs()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        for module in self.modules:
            module.os = os  # type: ignore[attr-defined]


def parse_trace(raw: bytes) -> list[TraceOp]:
    ops = []
    position = 0
    while position < len(raw):
        op, flags, offset, size, name_size, _fd = _TRACE_HEADER.unpack_from(raw, position)
        position += _TRACE_HEADER.size
        name = raw[position:position + name_size].decode(errors="surrogateescape")
        position += name_size
        kind = "link" if op == _TRACE_LINK else _TRACE_OPS[op]
        data = None
        if kind == "write" and not flags & lib.FL_TRACE_FLAG_ZEROS:
            data = raw[position:position + size]
            position += size
        new_path = ""
        if kind in ("rename", "link"):
            name, new_path = name.split("\0", 1)
        ops.append(TraceOp(kind, flags, offset, size, name, new_path, data))
    return ops


# ---------------------------------------------------------------------------- crash states
#
# The model of a power cut (what a POSIX file system on a disk that honours flushes promises):
# - a write reaches the disk only if its file was synced after it (fsync/fdatasync), or it was
#   an RWF_DSYNC write; otherwise any subset of it may have landed, in pieces of 512 B or 4 KiB
#   aligned on the file (the two torn-write grains);
# - a piece that did not land keeps its old bytes; a piece beyond the furthest synced data of
#   the file may instead read as zeros or garbage (a sector caught mid-write); a piece over
#   synced data is old or new, never garbage (sector writes are atomic: the "powersafe overwrite"
#   assumption, stated in RELIABILITY.md);
# - creates, renames and unlinks reach the disk only after a sync of their directory; before
#   that, any prefix of them may have (journaling file systems keep their order);
# - preallocation (fallocate) persists with the file's next sync.


class _Inode:
    __slots__ = ("durable", "pending", "synced_end")

    def __init__(self) -> None:
        self.durable = bytearray()
        self.pending: list[tuple[str, int, int, bytes | None]] = []
        self.synced_end = 0  # end of the furthest synced write of data (not of zeros)

    def make_durable(self, kind: str, offset: int, size: int, data: bytes | None) -> None:
        _apply(self.durable, kind, offset, size, data)
        if kind == "write" and data is not None:
            self.synced_end = max(self.synced_end, offset + size)
        elif kind == "truncate":
            self.synced_end = min(self.synced_end, size)


def _apply(content: bytearray, kind: str, offset: int, size: int, data: bytes | None) -> None:
    if kind == "extend":
        if len(content) < size:
            content.extend(bytes(size - len(content)))
        return
    if kind == "truncate":
        del content[size:]
        return
    end = offset + size
    if len(content) < end:
        content.extend(bytes(end - len(content)))
    content[offset:end] = data if data is not None else bytes(size)


@dataclass
class CrashState:
    """One directory a power cut at `crash_point` could leave, and what was acked by then."""

    crash_point: int
    marks: tuple[int, ...]         # the marks recorded before the crash point, in order
    files: dict[str, bytes]
    notes: list[str] = field(default_factory=list)

    def materialise(self, directory: str) -> None:
        """Writes the state's files into `directory` (created; emptied first)."""
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory)
        for name, content in self.files.items():
            if os.path.dirname(name):
                os.makedirs(os.path.join(directory, os.path.dirname(name)), exist_ok=True)
            with open(os.path.join(directory, name), "wb") as file:
                file.write(content)


class CrashStates:
    """Builds crash states of the log directory `directory` from a trace of its writer.

    Every operation index is a possible crash point (the operations before it happened, the
    rest did not); at each, `states(rng, ...)` draws directories that the model above allows."""

    def __init__(self, ops: list[TraceOp], directory: str) -> None:
        self.directory = os.path.realpath(directory)
        prefix = self.directory + "/"
        self.ops = [op for op in ops if op.op in ("mark", "fault") or op.path == self.directory
                    or op.path.startswith(prefix)]
        self._prefix_length = len(prefix)

    def _name(self, path: str) -> str:
        return path[self._prefix_length:]

    def states(self, rng: random.Random, count: int) -> Iterator[CrashState]:
        """`count` states at crash points drawn uniformly (sorted, so one replay serves all)."""
        points = sorted(rng.randrange(len(self.ops) + 1) for _ in range(count))
        volatile: dict[str, _Inode] = {}
        durable_names: dict[str, _Inode] = {}
        pending_names: list[tuple[str, str, str, _Inode | None]] = []
        marks: list[int] = []
        index = 0
        for point in points:
            while index < point:
                op = self.ops[index]
                index += 1
                if op.op == "mark":
                    marks.append(op.offset)
                elif op.op == "fault":
                    pass
                elif op.op == "create":
                    name = self._name(op.path)
                    inode = volatile.get(name)
                    if inode is None:
                        inode = _Inode()
                        volatile[name] = inode
                        pending_names.append(("link", name, "", inode))
                    elif op.flags & lib.FL_TRACE_FLAG_TRUNCATE:
                        inode.pending.append(("truncate", 0, 0, None))
                elif op.op == "write" or op.op == "extend":
                    inode = volatile[self._name(op.path)]
                    if op.op == "write" and op.dsync:
                        inode.make_durable("write", op.offset, op.size, op.data)
                        # Kept in order among the pending writes too: an earlier unsynced write
                        # to the same bytes must not land over it (the later write wins).
                        if inode.pending:
                            inode.pending.append(("durable", op.offset, op.size, op.data))
                    else:
                        inode.pending.append((op.op, op.offset, op.size, op.data))
                elif op.op == "sync":
                    if op.directory:
                        # Only this directory's entries become durable (its own name is the
                        # parent's business); the other directories' pending operations stay.
                        synced = self._name(op.path) if op.path != self.directory else ""
                        durable_names = {n: i for n, i in durable_names.items()
                                         if os.path.dirname(n) != synced}
                        durable_names.update({n: i for n, i in volatile.items()
                                              if os.path.dirname(n) == synced})
                        pending_names = [p for p in pending_names
                                         if os.path.dirname(p[1]) != synced]
                    else:
                        inode = volatile[self._name(op.path)]
                        for kind, offset, size, data in inode.pending:
                            if kind != "durable":
                                inode.make_durable(kind, offset, size, data)
                        inode.pending = []
                elif op.op == "rename":
                    old, new = self._name(op.path), self._name(op.new_path)
                    volatile[new] = volatile.pop(old)
                    pending_names.append(("rename", old, new, None))
                elif op.op == "link":
                    old, new = self._name(op.path), self._name(op.new_path)
                    volatile[new] = volatile[old]
                    pending_names.append(("hardlink", new, old, volatile[new]))
                elif op.op == "unlink":
                    name = self._name(op.path)
                    volatile.pop(name, None)
                    pending_names.append(("unlink", name, "", None))
            yield self._draw(rng, point, tuple(marks), durable_names, pending_names)

    def _draw(self, rng: random.Random, point: int, marks: tuple[int, ...],
              durable_names: dict[str, _Inode],
              pending_names: list[tuple[str, str, str, _Inode | None]]) -> CrashState:
        notes = []
        names = dict(durable_names)
        kept = rng.randint(0, len(pending_names))
        if kept < len(pending_names):
            notes.append(f"{len(pending_names) - kept} of {len(pending_names)} directory "
                         "operations dropped")
        for kind, name, new, inode in pending_names[:kept]:
            if kind in ("link", "hardlink"):
                assert inode is not None
                names[name] = inode
            elif kind == "rename":
                if name in names:
                    names[new] = names.pop(name)
            else:
                names.pop(name, None)
        files = {}
        # Whole-file behaviour chosen once per state: all pending writes landed, none, or each
        # piece decided on its own (the case that finds ordering bugs).
        mode = rng.choice(("none", "all", "pieces", "pieces"))
        for name, inode in names.items():
            content = bytearray(inode.durable)
            if inode.pending and mode != "none":
                for kind, offset, size, data in inode.pending:
                    if kind == "durable":
                        _apply(content, "write", offset, size, data)
                        continue
                    if mode == "all" or kind != "write":
                        if mode == "all" or rng.random() < 0.5:
                            _apply(content, kind, offset, size, data)
                        continue
                    self._torn_write(rng, content, offset, size, data, inode.synced_end,
                                     notes, name)
            files[name] = bytes(content)
        if mode != "pieces":
            notes.append(f"unsynced writes: {mode}")
        return CrashState(point, marks, files, notes)

    @staticmethod
    def _torn_write(rng: random.Random, content: bytearray, offset: int, size: int,
                    data: bytes | None, synced_end: int, notes: list[str], name: str) -> None:
        grain = rng.choice((512, 4096))
        end = offset + size
        if len(content) < end:
            content.extend(bytes(end - len(content)))
        piece_start = offset
        landed_probability = rng.random()
        while piece_start < end:
            piece_end = min(end, (piece_start // grain + 1) * grain)
            roll = rng.random()
            if roll < landed_probability:
                content[piece_start:piece_end] = (data[piece_start - offset:piece_end - offset]
                                                  if data is not None
                                                  else bytes(piece_end - piece_start))
            elif (roll < landed_probability + (1 - landed_probability) * 0.2
                  and piece_start >= synced_end):
                # A sector caught mid-write: only beyond the furthest synced data, since an
                # overwrite of synced bytes is old or new (sector atomicity).
                if rng.random() < 0.5:
                    content[piece_start:piece_end] = bytes(piece_end - piece_start)
                else:
                    content[piece_start:piece_end] = rng.randbytes(piece_end - piece_start)
                notes.append(f"{name}[{piece_start}:{piece_end}] garbled")
            piece_start = piece_end
