"""FasterLog: the Python face of the C core.

Rules:
1. Every C call that can fail hands its negative code to LogHandle.fail (handle.py), which
   passes it to errors.raise_for (the one funnel from C codes to exceptions); a caller that
   knows more (the size of an entry too large) adds it as the message's detail.
2. Hot paths (append, append_many, scan) avoid per-call allocation: bytes go to C without a
   copy, batches go as one joined buffer plus an array of sizes.
3. cffi releases the GIL around every C call, so commits and waits in one thread never stop
   other threads' appends.
4. The LogHandle holds the C pointer and the primitives the tails share with this module
   (state, waits, wakes, failures): tails get the handle, never this class's members.
"""

from __future__ import annotations

import array
import itertools
import logging
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any, Literal, NoReturn, overload

from . import errors
from ._fasterlog_c import ffi, lib
from ._format import SCAN_COMMITS, SCAN_MARKERS, SCAN_UNCOMMITTED, EntryKind
from .handle import LogHandle, timeout_us
from .tail import AsyncTail, Tail, wait_for_commit_async

__all__ = ["FasterLog"]

_logger = logging.getLogger("fasterlog")
_uring_refusal_reported = False

_BACKENDS = {"auto": lib.FL_IO_AUTO, "io_uring": lib.FL_IO_URING, "plain": lib.FL_IO_PLAIN}
_BACKEND_NAMES = {lib.FL_IO_URING: "io_uring", lib.FL_IO_PLAIN: "plain"}
_SCAN_MARKERS = SCAN_MARKERS
_SCAN_COMMITS = SCAN_COMMITS
_SCAN_UNCOMMITTED = SCAN_UNCOMMITTED
_SCAN_ENTRIES_MAX = 4096
_SCAN_FORMAT_BYTES = _SCAN_ENTRIES_MAX * 24
_SCAN_BUFFER_MIN_BYTES = 1 << 20
_READ_BUFFER_BYTES = 64 << 10
# The members by value: an indexed lookup per scanned frame is about ten times cheaper than
# calling EntryKind(kind).
_ENTRY_KINDS = {kind.value: kind for kind in EntryKind}
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
# Hot functions bound once: an attribute lookup on `lib` costs about 25 ns per call here.
_append_entry = lib.fl_append_entry
_append = lib.fl_append
_commit = lib.fl_commit


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.3g} MiB" if size >= 1 << 20 else f"{size} bytes"


def _as_cdata(entry: Any, operation: str) -> Any:
    """Bytes go to C as they are; other buffers through from_buffer (no copy either)."""
    if isinstance(entry, (str, int, float)) or entry is None:
        raise TypeError(f"{operation} failed: an entry must be bytes-like, not "
                        f"{type(entry).__name__}")
    try:
        return ffi.from_buffer(entry)
    except TypeError:
        raise TypeError(f"{operation} failed: an entry must be a contiguous bytes-like "
                        f"object, not {type(entry).__name__}") from None


class FasterLog:
    """An append-only log in a directory. Create or recover one with FasterLog.open()."""

    # No per-log scratch structs: every call that needs one allocates its own, so that threads
    # sharing a log never see each other's half-written state.
    # `_log` is the handle's pointer itself: the hot calls (append, commit) save a lookup.
    __slots__ = ("__weakref__", "_closed", "_entry_size_max", "_handle", "_log", "_path")

    def __init__(self, handle: Any, path: str) -> None:
        self._handle = LogHandle(handle, path)
        self._log = handle
        self._path = path
        self._closed = False
        settings = ffi.new("fl_settings *")
        lib.fl_get_settings(handle, settings)
        self._entry_size_max = int(settings.page_size_bytes) - lib.FL_FRAME_HEADER_SIZE_BYTES

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        page_size_bytes: int | None = None,
        memory_size_bytes: int | None = None,
        segment_size_bytes: int | None = None,
        io_backend: str = "auto",
        auto_commit_interval_ms: int = 0,
        auto_commit_bytes: int = 0,
        readonly: bool = False,
        direct_io: bool = True,
    ) -> FasterLog:
        """Creates the log in `path`, or recovers the one there to its newest valid commit.

        Sizes left as None take the log's stored values (or the defaults for a new log:
        4 MiB pages, 16 MiB of memory, 1 GiB segments). FASTERLOG_IO_BACKEND=plain in the
        environment forces the plain pread/pwrite backend.
        """
        if io_backend not in _BACKENDS:
            raise errors.SettingsError(f"open failed: io_backend must be one of "
                                       f"{sorted(_BACKENDS)}, not {io_backend!r}")
        forced = os.environ.get("FASTERLOG_IO_BACKEND", "").strip()
        if forced:
            if forced not in _BACKENDS:
                raise errors.SettingsError(f"open failed: FASTERLOG_IO_BACKEND must be one of "
                                           f"{sorted(_BACKENDS)}, not {forced!r}")
            io_backend = forced
        settings = ffi.new("fl_settings *")
        for name, value in (("page_size_bytes", page_size_bytes),
                            ("memory_size_bytes", memory_size_bytes),
                            ("segment_size_bytes", segment_size_bytes),
                            ("auto_commit_bytes", auto_commit_bytes),
                            ("auto_commit_interval_ms", auto_commit_interval_ms)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0 or value >= 1 << 62):
                raise errors.SettingsError(f"open failed: {name} must be a non-negative "
                                           f"integer, not {value!r}")
            setattr(settings, name, value or 0)
        if auto_commit_interval_ms >= 1 << 31:
            raise errors.SettingsError("open failed: auto_commit_interval_ms is too large")
        settings.io_backend = _BACKENDS[io_backend]
        settings.readonly = bool(readonly)
        settings.direct_io = bool(direct_io)
        handle_out = ffi.new("fl_log **")
        info = ffi.new("fl_error_info *")
        text_path = os.fsdecode(os.fspath(path))
        rc = lib.fl_open(os.fsencode(text_path), settings, handle_out, info)
        if rc < 0:
            errors.raise_for(rc, f"open {text_path!r}", info)
        log = cls(ffi.gc(handle_out[0], lib.fl_free), text_path)
        log._report_backend()
        return log

    def _report_backend(self) -> None:
        global _uring_refusal_reported
        state = self._handle.state()
        if state.io_uring_refused and not _uring_refusal_reported:
            _uring_refusal_reported = True
            _logger.warning("io_uring is not available (%s); using the plain pread/pwrite "
                            "backend", os.strerror(-state.io_uring_refused))

    def close(self) -> None:
        """Commits what was appended, records a clean shutdown and releases the directory.
        Safe while other threads use the log: the core refuses their new calls with
        LogClosedError, lets those in flight finish, then closes. A second close (here or in
        another thread) returns once the first has finished."""
        self._closed = True
        rc = lib.fl_close(self._log)
        if rc < 0:
            errors.raise_for(rc, "close")

    def __enter__(self) -> FasterLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed or self._handle.state().closed:  # closed here, or a simulated crash
            return f"<FasterLog {self._path!r} closed>"
        return (f"<FasterLog {self._path!r} begin={self.begin_address} "
                f"committed_until={self.committed_until_address} tail={self.tail_address}>")

    @property
    def c_handle(self) -> Any:
        """The core's `fl_log *` (a cffi pointer), for C code built on fasterlog.h beside this
        class (kvlayer's fl_kv, the test hooks of fasterlog.testing). It stays valid while this
        FasterLog is alive; never free it, and never use it after close() for anything but
        calls the core documents as safe on a closed log."""
        return self._log

    def _fail(self, code: int, operation: str, address: int = 0, info: Any = None, *,
              detail: str = "") -> NoReturn:
        self._handle.fail(code, operation, address, info, detail=detail)

    # ------------------------------------------------------------------ appends

    def append(self, entry: bytes | bytearray | memoryview) -> int:
        """Appends one entry to memory and returns its address. Not durable until a commit."""
        if type(entry) is bytes:
            address: int = _append_entry(self._log, entry, len(entry))
        else:
            data = _as_cdata(entry, "append")
            address = lib.fl_append(self._log, data, len(data), 1, 1)
        if address < 0:
            self._append_failed(address, entry)
        return address

    def try_append(self, entry: bytes | bytearray | memoryview) -> int | None:
        """Like append, but returns None instead of waiting when memory is full of pages that
        are not yet written (backpressure)."""
        data = entry if type(entry) is bytes else _as_cdata(entry, "try_append")
        address: int = lib.fl_append(self._log, data, len(data), 1, 0)
        if address == lib.FL_E_FULL:
            return None
        if address < 0:
            self._append_failed(address, entry)
        return address

    def append_marker(self, payload: bytes | bytearray | memoryview) -> int:
        """Appends a control record: scans skip it unless include_markers=True."""
        data = payload if type(payload) is bytes else _as_cdata(payload, "append_marker")
        address: int = lib.fl_append(self._log, data, len(data), 2, 1)
        if address < 0:
            self._append_failed(address, payload)
        return address

    def _append_failed(self, code: int, entry: Any) -> NoReturn:
        detail = ""
        if code == lib.FL_E_TOO_LARGE:
            detail = self._too_large(len(memoryview(entry).cast("B")))
        self._fail(code, "append", detail=detail)

    def _too_large(self, size: int) -> str:
        """FL_E_TOO_LARGE's detail for an entry of `size` bytes."""
        return f"entry of {_mib(size)} exceeds entry_size_max ({_mib(self._entry_size_max)})"

    def append_many(self, entries: Iterable[bytes | bytearray | memoryview]) -> list[int]:
        """Appends a batch atomically: after a crash either all of it or none survives."""
        if isinstance(entries, (bytes, bytearray, memoryview, str)):
            raise TypeError("append_many failed: pass an iterable of entries, not one entry")
        items = entries if isinstance(entries, (list, tuple)) else list(entries)
        try:
            joined = b"".join(items)
        except TypeError:
            bad = next(e for e in items if isinstance(e, (str, int, float)) or e is None
                       or not hasattr(e, "__buffer__") and not isinstance(e, (bytes, bytearray,
                                                                             memoryview)))
            raise TypeError(f"append_many failed: entries must be bytes-like, not "
                            f"{type(bad).__name__}") from None
        count = len(items)
        if count == 0:
            return []
        sizes = array.array("I", map(len, items))
        addresses = array.array("Q", bytes(8 * count))
        rc = lib.fl_append_batch(self._log, joined, ffi.from_buffer("uint32_t[]", sizes), count,
                                 ffi.from_buffer("uint64_t[]", addresses), 1)
        if rc < 0:
            self._fail(rc, "append_many",
                       detail=self._too_large(max(sizes)) if rc == lib.FL_E_TOO_LARGE else "")
        return addresses.tolist()

    # ------------------------------------------------------------------ commits

    def commit(self, cookie: bytes | None = None) -> int:
        """Makes everything appended so far durable (group commit: concurrent callers share one
        sync) and returns the committed-until address. A cookie, if given, is stored with
        this commit and returned by `cookie` after recovery."""
        if cookie is not None:
            data = cookie if type(cookie) is bytes else _as_cdata(cookie, "commit")
            rc = lib.fl_set_cookie(self._log, data, len(data))
            if rc < 0:
                self._fail(rc, "commit", detail=(
                    f"cookie of {_mib(len(data))} exceeds {_mib(lib.FL_COOKIE_SIZE_MAX_BYTES)}"
                    if rc == lib.FL_E_TOO_LARGE else ""))
        committed: int = _commit(self._log)
        if committed < 0:
            self._fail(committed, "commit")
        return committed

    def wait_for_commit(self, address: int, timeout: float | None = None) -> bool:
        """Waits until the entry at `address` is committed; never issues a commit itself.
        Returns False when `timeout` (seconds) passes first."""
        if not isinstance(address, int) or address < 0:
            raise errors.InvalidAddressError(f"wait_for_commit failed: bad address {address!r}",
                                             0)
        rc = lib.fl_wait_for_commit(self._log, address, timeout_us(timeout))
        if rc in (lib.FL_E_TIMEOUT, lib.FL_E_WOKEN):
            return False
        if rc < 0:
            self._fail(rc, "wait_for_commit")
        return True

    def complete(self) -> int:
        """Marks the log finished, with a commit: later appends raise LogCompletedError, and
        every tail (here and in followers) ends after the last entry. Returns committed-until."""
        committed: int = lib.fl_complete(self._log)
        if committed < 0:
            self._fail(committed, "complete")
        return committed

    @property
    def completed(self) -> bool:
        return bool(self._handle.state().completed)

    def wake(self) -> None:
        """Ends every wait in progress on this log (tails check whether they were stopped)."""
        self._handle.wake()

    def tail(self, from_address: int | None = None, timeout: float | None = None, *,
             include_markers: bool = False) -> Tail:
        """Yields (address, entry) from `from_address` (default: begin) as commits land.
        `timeout`: seconds without a new commit before it ends quietly; stop() ends it from
        any thread; a completed log ends it after the last entry."""
        if from_address is not None:
            self._check_address(from_address, "tail")
        return Tail(self._handle, self.scan_columns, from_address, timeout, include_markers)

    def tail_async(self, from_address: int | None = None, timeout: float | None = None, *,
                   include_markers: bool = False) -> AsyncTail:
        """The asyncio twin of tail(): `async for address, entry in log.tail_async()`."""
        if from_address is not None:
            self._check_address(from_address, "tail_async")
        return AsyncTail(self._handle, self.scan_columns, from_address, timeout, include_markers)

    async def wait_for_commit_async(self, address: int, timeout: float | None = None) -> bool:
        """The asyncio twin of wait_for_commit(), driven by the commit eventfd."""
        self._check_address(address, "wait_for_commit_async")
        return await wait_for_commit_async(self._handle, address, timeout)

    @property
    def cookie(self) -> bytes | None:
        """The cookie of the newest commit (also after recovery), or None."""
        buffer = _new_uncleared("char[]", lib.FL_COOKIE_SIZE_MAX_BYTES)
        size = lib.fl_get_cookie(self._log, buffer, lib.FL_COOKIE_SIZE_MAX_BYTES)
        return None if size < 0 else ffi.buffer(buffer, size)[:]

    @property
    def commit_eventfd(self) -> int:
        """An eventfd that becomes readable whenever a commit completes, or the log is fenced
        (for event loops)."""
        return self._handle.commit_eventfd("commit_eventfd")

    # ------------------------------------------------------------------ reads

    def _check_address(self, address: object, operation: str) -> int:
        if not isinstance(address, int) or isinstance(address, bool):
            raise TypeError(f"{operation} failed: an address must be an int, not "
                            f"{type(address).__name__}")
        if address < 0 or address >= 1 << 63:
            raise errors.InvalidAddressError(f"{operation} failed: address {address} is out of "
                                             "range", address)
        return address

    def read(self, address: int) -> bytes:
        """Returns the entry (or marker) at `address`."""
        address = self._check_address(address, "read")
        kind = ffi.new("int32_t *")
        info = ffi.new("fl_error_info *")
        buffer = _new_uncleared("char[]", _READ_BUFFER_BYTES)
        size = lib.fl_read(self._log, address, buffer, _READ_BUFFER_BYTES, kind, info)
        if size == lib.FL_E_BUFFER:
            needed = int(info.size_needed)
            buffer = _new_uncleared("char[]", needed)
            size = lib.fl_read(self._log, address, buffer, needed, kind, info)
        if size < 0:
            self._fail(size, f"read at {address}", address, info)
        if kind[0] == lib.FL_KIND_COMMIT:
            raise errors.InvalidAddressError(f"read at {address} failed: that is a commit "
                                             "record, not an entry", address)
        entry: bytes = ffi.buffer(buffer, size)[:]
        return entry

    def entry_kind(self, address: int) -> EntryKind:
        """The kind of the frame that starts at `address` (a data entry, a marker or a commit
        record), without copying its payload. Raises InvalidAddressError where no frame
        starts (inside an entry, past the end) and CorruptionError for a damaged frame."""
        address = self._check_address(address, "entry_kind")
        kind = ffi.new("int32_t *")
        info = ffi.new("fl_error_info *")
        # With no room for the payload the core answers FL_E_BUFFER for a good frame of any
        # kind, and sets the kind; every other answer is the frame's error.
        size = lib.fl_read(self._log, address, ffi.new("char[1]"), 0, kind, info)
        if size < 0 and size != lib.FL_E_BUFFER:
            self._fail(size, f"entry_kind at {address}", address, info)
        return EntryKind(kind[0])

    def read_many(self, addresses: Iterable[int]) -> list[bytes]:
        """Returns the entries (or markers) at these addresses, in order: one call into the core
        per buffer-full rather than one per entry."""
        wanted = array.array("Q", addresses)
        count = len(wanted)
        if count == 0:
            return []
        capacity = _SCAN_BUFFER_MIN_BYTES
        buffer = _new_uncleared("char[]", capacity)
        offsets = _new_uncleared("uint32_t[]", count)
        sizes = _new_uncleared("uint32_t[]", count)
        kinds = _new_uncleared("int32_t[]", count)
        layout = _new_uncleared("char[]", 24 * count)
        info = ffi.new("fl_error_info *")
        base = ffi.from_buffer("uint64_t[]", wanted)
        entries: list[bytes] = []
        while len(entries) < count:
            done = len(entries)
            got = lib.fl_read_many(self._log, base + done, count - done, buffer, capacity,
                                   offsets, sizes, kinds, info)
            if got == lib.FL_E_BUFFER:
                capacity = max(capacity * 2, int(info.size_needed))
                buffer = _new_uncleared("char[]", capacity)
                continue
            if got < 0:
                self._fail(got, f"read_many at {int(info.address)}", int(info.address), info)
            if lib.FL_KIND_COMMIT in ffi.unpack(kinds, got):
                bad = wanted[done + ffi.unpack(kinds, got).index(lib.FL_KIND_COMMIT)]
                raise errors.InvalidAddressError(f"read_many failed: {bad} is a commit record, "
                                                 "not an entry", bad)
            layout_size = lib.fl_scan_format(offsets, sizes, got, layout, 24 * count)
            entries.extend(struct.unpack_from(ffi.buffer(layout, layout_size)[:],
                                              ffi.buffer(buffer)))
        return entries

    @overload
    def scan(self, begin: int | None = None, end: int | None = None, *,
             include_markers: bool = False, include_commit_records: bool = False,
             uncommitted: bool = False, zero_copy: Literal[False] = False,
             kinds: Literal[False] = False) -> Iterator[tuple[int, bytes]]: ...

    @overload
    def scan(self, begin: int | None = None, end: int | None = None, *,
             include_markers: bool = False, include_commit_records: bool = False,
             uncommitted: bool = False, zero_copy: Literal[True],
             kinds: Literal[False] = False) -> Iterator[tuple[int, memoryview]]: ...

    @overload
    def scan(self, begin: int | None = None, end: int | None = None, *,
             include_markers: bool = False, include_commit_records: bool = False,
             uncommitted: bool = False, zero_copy: Literal[False] = False,
             kinds: Literal[True]) -> Iterator[tuple[int, EntryKind, bytes]]: ...

    def scan(
        self, begin: int | None = None, end: int | None = None, *,
        include_markers: bool = False, include_commit_records: bool = False,
        uncommitted: bool = False, zero_copy: bool = False, kinds: bool = False,
    ) -> (Iterator[tuple[int, bytes]] | Iterator[tuple[int, memoryview]]
          | Iterator[tuple[int, EntryKind, bytes]]):
        """Yields (address, entry) for the committed entries with begin <= address < end.
        `end` defaults to committed-until when the scan starts. With `uncommitted` (the writer
        only), entries appended but not yet committed are included and `end` defaults to the
        tail. With zero_copy, entries are memoryviews into a buffer that the scan reuses:
        valid only until the next entry. With `kinds`, yields (address, kind, entry) with the
        frame's EntryKind; `include_markers` and `include_commit_records` add those frames
        (a commit record's payload is its raw bytes, FORMAT.md "Commit records")."""
        include = ((_SCAN_MARKERS if include_markers else 0)
                   | (_SCAN_COMMITS if include_commit_records else 0))
        if uncommitted:
            include |= _SCAN_UNCOMMITTED
            if end is None:
                end = self.tail_address
        if kinds:
            if zero_copy:
                raise ValueError("scan failed: kinds=True gives bytes entries; it cannot be "
                                 "combined with zero_copy=True")
            return self._scan_kinds(begin, end, include)
        if zero_copy and not uncommitted:
            return self._scan_views(begin, end, include)
        # chain.from_iterable pulls the pairs straight from each zip in C: no Python frame is
        # resumed per entry.
        chunks = self._scan_chunks(begin, end, include)
        return itertools.chain.from_iterable(itertools.starmap(zip, chunks))

    def _scan_views(self, begin: int | None, end: int | None,
                    include: int) -> Iterator[tuple[int, memoryview]]:
        chunks = self._scan_chunks(begin, end, include, views=True)
        for addresses, (view, starts, lengths) in chunks:
            for address, start, length in zip(addresses, starts, lengths, strict=True):
                yield address, view[start:start + length]

    def _scan_kinds(self, begin: int | None, end: int | None,
                    include: int) -> Iterator[tuple[int, EntryKind, bytes]]:
        for addresses, (entries, kinds) in self._scan_chunks(begin, end, include, kinds=True):
            yield from zip(addresses, map(_ENTRY_KINDS.__getitem__, kinds), entries, strict=True)

    def scan_batches(self, begin: int | None = None, end: int | None = None, *,
                     include_markers: bool = False) -> Iterator[list[tuple[int, bytes]]]:
        """Yields lists of (address, entry), up to 4096 at a time."""
        include = _SCAN_MARKERS if include_markers else 0
        for addresses, entries in self._scan_chunks(begin, end, include):
            yield list(zip(addresses, entries, strict=True))

    def scan_columns(
        self, begin: int | None = None, end: int | None = None, *, include_markers: bool = False
    ) -> Iterator[tuple[list[int], tuple[bytes, ...]]]:
        """The fastest read: yields (addresses, entries) pairs of equal-length sequences, up to
        4096 entries each, without building a tuple per entry."""
        return self._scan_chunks(begin, end, _SCAN_MARKERS if include_markers else 0)

    def _scan_chunks(self, begin: int | None, end: int | None, include: int,
                     views: bool = False, kinds: bool = False) -> Iterator[tuple[list[int], Any]]:
        # One C call fills a buffer with up to 4096 checked frames; one struct.unpack_from
        # turns all their payloads into bytes objects (the per-entry cost is then in C).
        state = self._handle.state()
        if state.closed:  # an empty range would otherwise end quietly
            self._fail(lib.FL_E_CLOSED, "scan")
        position = state.begin_address if begin is None else self._check_address(begin, "scan")
        limit = state.committed_until_address if end is None else self._check_address(end, "scan")
        capacity = max(_SCAN_BUFFER_MIN_BYTES, self._entry_size_max + 64)
        buffer = _new_uncleared("char[]", capacity)
        view = ffi.buffer(buffer)
        memory = memoryview(view)
        addresses = _new_uncleared("uint64_t[]", _SCAN_ENTRIES_MAX)
        offsets = _new_uncleared("uint32_t[]", _SCAN_ENTRIES_MAX)
        sizes = _new_uncleared("uint32_t[]", _SCAN_ENTRIES_MAX)
        kinds_out = _new_uncleared("int32_t[]", _SCAN_ENTRIES_MAX) if kinds else ffi.NULL
        layout = _new_uncleared("char[]", _SCAN_FORMAT_BYTES)
        next_address = ffi.new("uint64_t *")
        info = ffi.new("fl_error_info *")
        while position < limit:
            count = lib.fl_scan(self._log, position, limit, include, buffer, capacity, addresses,
                                offsets, sizes, kinds_out, _SCAN_ENTRIES_MAX, next_address,
                                info)
            if count < 0:
                errors.raise_for(count, f"scan at {position}", info, position)
            advanced = next_address[0]
            if count > 0 and views:
                yield ffi.unpack(addresses, count), (memory, ffi.unpack(offsets, count),
                                                     ffi.unpack(sizes, count))
            elif count > 0:
                layout_size = lib.fl_scan_format(offsets, sizes, count, layout,
                                                 _SCAN_FORMAT_BYTES)
                entries = struct.unpack_from(ffi.buffer(layout, layout_size)[:], view)
                if kinds:
                    yield ffi.unpack(addresses, count), (entries, ffi.unpack(kinds_out, count))
                else:
                    yield ffi.unpack(addresses, count), entries
            elif advanced == position:
                return
            position = advanced

    def verify(self, begin: int | None = None, end: int | None = None) -> int:
        """Checks every frame in [begin, end) (default: the whole committed log) and returns
        the address up to which all is good; raises CorruptionError at the first bad frame."""
        state = self._handle.state()
        position = state.begin_address if begin is None else self._check_address(begin, "verify")
        limit = state.committed_until_address if end is None else self._check_address(end,
                                                                                      "verify")
        good = ffi.new("uint64_t *")
        info = ffi.new("fl_error_info *")
        rc = lib.fl_verify(self._log, position, limit, good, info)
        if rc < 0:
            errors.raise_for(rc, "verify", info, position)
        return int(good[0])

    # ------------------------------------------------------------------ truncation

    def truncate_until(self, address: int, *, force: bool = False) -> None:
        """Moves the begin address to `address` (an entry start, a page start or the
        committed-until address). Whole segment files below it are deleted once the next
        commit has made the new begin durable. It will not pass the durable position of a named
        cursor (RetentionError names the slowest) unless `force` is true."""
        address = self._check_address(address, "truncate_until")
        if not force:
            self.check_retention(address)
        rc = lib.fl_truncate_until(self._log, address)
        if rc < 0:
            self._fail(rc, f"truncate_until {address}", address)

    def check_retention(self, address: int) -> None:
        """Raises RetentionError if truncating the log until `address` would pass the durable
        position of a named cursor (the slowest is named); what truncate_until checks first."""
        if not os.path.isdir(os.path.join(self._path, "cursors")):
            return
        from . import cursors  # the cursor files are part of the log's on-disk format

        positions, damaged = cursors.read_all_checked(self._path)
        for damaged_name, error in damaged.items():
            # A damaged cursor has no position to keep: its consumer cannot resume from it
            # (Consumer raises CorruptionError until the cursor is deleted or rewritten), and
            # letting it pin the log would stop retention for every other cursor until the
            # disk fills. So it is skipped, loudly.
            _logger.warning("truncate_until %d: cursor %r is damaged and not counted (%s); "
                            "delete or rewrite it (fasterlog.cursors.delete / write)",
                            address, damaged_name, error)
        if not positions:
            return
        name, position = min(positions.items(), key=lambda item: item[1])
        if address > position:
            raise errors.RetentionError(
                f"truncate_until {address} failed: cursor {name!r} still needs the log from "
                f"{position} (pass force=True to truncate anyway)", name, position)

    # ------------------------------------------------------------------ state

    @property
    def begin_address(self) -> int:
        return int(self._handle.state().begin_address)

    @property
    def tail_address(self) -> int:
        return int(self._handle.state().tail_address)

    @property
    def flushed_until_address(self) -> int:
        return int(self._handle.state().flushed_until_address)

    @property
    def committed_until_address(self) -> int:
        return int(self._handle.state().committed_until_address)

    @property
    def commit_number(self) -> int:
        return int(self._handle.state().commit_number)

    @property
    def io_backend(self) -> str:
        """The I/O backend in use: "io_uring" or "plain"."""
        return _BACKEND_NAMES[self._handle.state().io_backend]

    @property
    def entry_size_max(self) -> int:
        return self._entry_size_max

    @property
    def closed(self) -> bool:
        return bool(self._handle.state().closed)

    @property
    def fenced(self) -> bool:
        """True once a failed write or sync fenced the log (every later write and commit
        raises LogFencedError; durable data stays readable)."""
        return bool(self._handle.state().fenced_error)

    @property
    def path(self) -> str:
        return self._path

    @property
    def settings(self) -> dict[str, Any]:
        settings = ffi.new("fl_settings *")
        lib.fl_get_settings(self._log, settings)
        state = self._handle.state()
        return {
            "page_size_bytes": int(settings.page_size_bytes),
            "memory_size_bytes": int(settings.memory_size_bytes),
            "segment_size_bytes": int(settings.segment_size_bytes),
            "auto_commit_interval_ms": int(settings.auto_commit_interval_ms),
            "auto_commit_bytes": int(settings.auto_commit_bytes),
            "io_backend": _BACKEND_NAMES[state.io_backend],
            "readonly": bool(state.readonly),
            "direct_io": bool(state.direct_io),
            "epoch": int(state.epoch),
        }
