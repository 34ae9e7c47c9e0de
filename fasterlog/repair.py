"""Repair: a lost or damaged meta file (`fasterlog.meta`) rebuilt from the segment files.

The meta file holds the log's identity (salt, page and segment sizes), its epoch and recovery
hints (FORMAT.md, "The meta file"); the segments hold the data and the commit records, the
source of truth. Without a valid meta file the log does not open (FormatError or
CorruptionError). `repair(directory)` writes a new one from what the segments prove:

1. Refusals first, each a typed error that changes nothing: no segment files (RepairError); a
   valid meta file without `force` (RepairError); a writer holding `fasterlog.lock`
   (LockedError). The repair then holds the writer lock itself until it is done, so no writer
   can open the log halfway.
2. The settings: segment_size_bytes is the size of the segment files (every segment is given
   its full size before its first write); the salt is checked against the CRC of the first
   frame, taken from the caller, else the old meta block's salt field, else a cursor file's
   (they carry the log's salt), else solved from the frames: the frame CRC is affine in the
   salt over GF(2), so one frame's CRC fixes the salt modulo the CRC polynomial, which is all
   that any frame's check depends on (a derived salt differs from the lost one only where no
   frame looks: cursor files written with the old one are then refused as another log's);
   page_size_bytes is the one power of two the frames allow (no frame crosses a page end, every
   padding frame and page-end gap ends at one), else the caller's or the old block's if the
   frames allow it; when several fit and none is given, RepairError asks for it.
3. The scan: frames forward from the first segment of the highest run of consecutive segment
   files (a truncation deletes segments below the begin address, possibly leaving older ones
   behind a gap), while they are valid, their epochs never decrease and commit numbers rise by
   one: the recovery rules of FORMAT.md without the meta file's epoch rule. The newest commit
   record seen names the committed prefix (its end, its begin address, its number).
4. Past the scan's end, every frame of the newest session is looked at, as recovery's step 4
   does: a valid commit record numbered two above the recovered one proves a synced commit was
   lost, so CorruptionError (nothing is written). The highest epoch anywhere in the segments
   is noted: the new meta file's epoch is one above it, so no frame at or past committed-until
   carries it and no earlier session's bytes there can be revived (FORMAT.md, Epochs rule 2).
5. The segments the committed prefix needs must all be there at full size (CorruptionError
   naming the file and the range otherwise), as open checks them.
6. The new block: committed_until_address = the recovered end, recovery_start_address = the
   newest commit record, not marked clean. The old block, if any, is first linked to
   `fasterlog.meta.before-repair` (`.2`, `.3`, ... if taken); the new one is written atomically
   (metafile.write: temporary file, fdatasync, rename, directory fsync), so a crash leaves the
   old block or the new one at `fasterlog.meta`, never neither.
7. The repaired log is opened read-only and must recover exactly the prefix of step 3; if not,
   the old state is put back and RepairError says why.

Left as they are: cursor files, KV checkpoints and every other file of the layers above
(derived state); `fasterlog.shm` (the next writer republishes it).

Cost: the segments are read once and every frame is checked in Python, about 15 us a frame
(5.5 s for 300,000 entries of 100 bytes on the development machine): minutes for a GiB of
small entries. Repair is rare and offline, so the scan stays here rather than in the C core.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from . import cursors, errors, metafile
from ._fasterlog_c import lib
from ._format import (
    COMMIT_BEGIN_ADDRESS_OFFSET,
    COMMIT_COOKIE_SIZE_OFFSET,
    COMMIT_FLAG_COMPLETED,
    COMMIT_FLAGS_OFFSET,
    COMMIT_NUMBER_OFFSET,
    COMMIT_RECORD_FIXED_SIZE_BYTES,
    COOKIE_SIZE_MAX_BYTES,
    FIRST_ADDRESS,
    FRAME_ALIGNMENT_BYTES,
    FRAME_CHECKSUMMED_FROM,
    FRAME_HEADER_SIZE_BYTES,
    FRAME_LENGTH_BITS,
    FRAME_LENGTH_MASK,
    KIND_COMMIT,
    KIND_DATA,
    KIND_PADDING,
    META_SIZE_BYTES,
    NO_COOKIE,
    PAGE_SIZE_MAX_BYTES,
    PAGE_SIZE_MIN_BYTES,
    frame_size,
)
from .durable import fsync_directory
from .log import FasterLog

__all__ = ["KEPT_META_NAME", "RepairError", "RepairResult", "repair"]

KEPT_META_NAME = "fasterlog.meta.before-repair"
LOCK_FILE_NAME = "fasterlog.lock"
# Segment bytes are read this much at a time: the memory a repair holds besides one frame.
read_window_size_bytes = 1 << 20
# The salt is solved from the smallest of the first frames, linked by their headers alone.
salt_probe_frames_max = 64
# Kept-aside names tried before giving up (.before-repair, .before-repair.2, ...).
kept_names_max = 1000
EPOCH_MAX = 0xFFFFFFFF
_HEADER = struct.Struct("<III")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_PAIR = struct.Struct("<QQ")
_GAP_SIZE_BYTES = FRAME_ALIGNMENT_BYTES  # a page-end gap is always 8 bytes (FORMAT.md)


class RepairError(errors.FasterLogError):
    """The repair refused (it says why) or could not rebuild a meta file that opens; the
    directory is as it was."""


@dataclass(frozen=True)
class RepairResult:
    """What a repair wrote: the log now opens with every entry below
    `committed_until_address`, and nothing of the `ignored_bytes` frames past it."""

    directory: str
    committed_until_address: int
    begin_address: int
    commit_number: int
    epoch: int
    page_size_bytes: int
    segment_size_bytes: int
    salt: int
    salt_source: str  # "option", "meta", "cursor", "frames" or "new" (no frames at all)
    segments_count: int
    ignored_bytes: int
    kept_meta_path: str | None


# ---------------------------------------------------------------------- reading segments


def _segment_name(segment: int) -> str:
    return f"segment-{segment:08d}.fl"


def _segment_sizes(directory: str) -> dict[int, int]:
    """Index -> size in bytes of every segment file in `directory`."""
    sizes: dict[int, int] = {}
    for name in os.listdir(directory):
        number = name[len("segment-"):-len(".fl")]
        if name.startswith("segment-") and name.endswith(".fl") and len(number) == 8 \
                and number.isdigit():
            sizes[int(number)] = os.stat(os.path.join(directory, name)).st_size
    return sizes


class _Segments:
    """Log bytes read from the segment files through one window; a missing file, or bytes
    past a file's end, read as zeros (as recovery reads them). Holds one descriptor."""

    def __init__(self, directory: str, segment_size_bytes: int, present: set[int]) -> None:
        self.segment_size_bytes = segment_size_bytes
        self._directory = directory
        self._present = present
        self._fd = -1
        self._fd_segment = -1
        self._window_address = 0
        self._window = b""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def _descriptor(self, segment: int) -> int:
        if segment != self._fd_segment:
            self.close()
            self._fd_segment = segment
            if segment in self._present:
                path = os.path.join(self._directory, _segment_name(segment))
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return self._fd

    def read(self, address: int, size: int) -> bytes:
        """Bytes [address, address + size), which must lie in one segment."""
        offset = address - self._window_address
        if 0 <= offset and offset + size <= len(self._window):
            return self._window[offset:offset + size]
        segment, segment_offset = divmod(address, self.segment_size_bytes)
        assert segment_offset + size <= self.segment_size_bytes, "a read crosses a segment"
        length = min(max(size, read_window_size_bytes), self.segment_size_bytes - segment_offset)
        fd = self._descriptor(segment)
        data = os.pread(fd, length, segment_offset) if fd >= 0 else b""
        self._window_address, self._window = address, data.ljust(length, b"\0")
        return self._window[:size]

    def segment_end(self, address: int) -> int:
        return (address // self.segment_size_bytes + 1) * self.segment_size_bytes


# ---------------------------------------------------------------------- frames


def _frame_crc(salt: int, address: int, frame: bytes) -> int:
    seed = lib.fl_crc32c(0, _PAIR.pack(salt, address), _PAIR.size)
    rest = frame[FRAME_CHECKSUMMED_FROM:]
    return int(lib.fl_crc32c(seed, rest, len(rest)))


@dataclass(frozen=True)
class _Frame:
    address: int
    kind: int
    frame_size: int
    epoch: int
    commit_number: int = 0  # commit records only
    begin_address: int = 0


def _header(segments: _Segments, address: int, limit: int) -> tuple[int, int, int] | None:
    """(kind, frame size, epoch) of a header that may start a frame ending by `limit`."""
    if limit - address < FRAME_HEADER_SIZE_BYTES:
        return None
    _crc, length_and_kind, epoch = _HEADER.unpack(segments.read(address, _HEADER.size))
    kind, length = length_and_kind >> FRAME_LENGTH_BITS, length_and_kind & FRAME_LENGTH_MASK
    size = frame_size(length)
    if not KIND_DATA <= kind <= KIND_PADDING or address + size > limit:
        return None
    if kind == KIND_COMMIT and length < COMMIT_RECORD_FIXED_SIZE_BYTES:
        return None
    return kind, size, epoch


def _commit_fields(frame: bytes) -> tuple[int, int] | None:
    """(number, begin address) of a well-formed commit record (FORMAT.md), else None."""
    payload = frame[FRAME_HEADER_SIZE_BYTES:]
    length = _U32.unpack_from(frame, 4)[0] & FRAME_LENGTH_MASK
    cookie_size = _U32.unpack_from(payload, COMMIT_COOKIE_SIZE_OFFSET)[0]
    flags = _U32.unpack_from(payload, COMMIT_FLAGS_OFFSET)[0]
    if flags & ~COMMIT_FLAG_COMPLETED:
        return None
    cookie_room = length - COMMIT_RECORD_FIXED_SIZE_BYTES
    if cookie_size == NO_COOKIE:
        if cookie_room != 0:
            return None
    elif cookie_size != cookie_room or cookie_size > COOKIE_SIZE_MAX_BYTES:
        return None
    return (_U64.unpack_from(payload, COMMIT_NUMBER_OFFSET)[0],
            _U64.unpack_from(payload, COMMIT_BEGIN_ADDRESS_OFFSET)[0])


def _frame_at(segments: _Segments, salt: int, address: int, limit: int,
              at_page_end: bool = False) -> _Frame | None:
    """The valid frame at `address` that ends by `limit`, or None. With `at_page_end`, `limit`
    is the page's end, where a padding frame must end; without (the page size is not known
    yet), `limit` is the segment's end and a padding frame's end is taken as a page end."""
    header = _header(segments, address, limit)
    if header is None:
        return None
    kind, size, epoch = header
    if at_page_end and kind == KIND_PADDING and size != limit - address:
        return None
    frame = segments.read(address, size)
    if _U32.unpack_from(frame, 0)[0] != _frame_crc(salt, address, frame):
        return None
    if kind != KIND_COMMIT:
        return _Frame(address, kind, size, epoch)
    fields = _commit_fields(frame)
    if fields is None:
        return None
    return _Frame(address, kind, size, epoch, fields[0], fields[1])


def _is_gap(segments: _Segments, salt: int, address: int) -> bool:
    """Whether `address` holds a page-end gap: 8 zero bytes before a page boundary (pages are
    at least PAGE_SIZE_MIN_BYTES), followed by a valid frame (so it is not the log's end)."""
    following = address + _GAP_SIZE_BYTES
    if following % PAGE_SIZE_MIN_BYTES or segments.read(address, _GAP_SIZE_BYTES) != bytes(8):
        return False
    return _frame_at(segments, salt, following, segments.segment_end(following)) is not None


# ---------------------------------------------------------------------- the salt


def _probe_frames(segments: _Segments, start: int) -> list[tuple[int, bytes]]:
    """Up to salt_probe_frames_max (address, bytes) of frames linked from `start` by their
    headers alone (no CRC: the salt is what is looked for)."""
    probes: list[tuple[int, bytes]] = []
    position = start
    while len(probes) < salt_probe_frames_max:
        limit = segments.segment_end(position)
        header = _header(segments, position, limit)
        if header is None and (position + _GAP_SIZE_BYTES) % PAGE_SIZE_MIN_BYTES == 0 \
                and segments.read(position, _GAP_SIZE_BYTES) == bytes(8) and probes:
            position += _GAP_SIZE_BYTES
            continue
        if header is None:
            break
        probes.append((position, segments.read(position, header[1])))
        position += header[1]
    return probes


def _solve_salt(address: int, frame: bytes) -> int | None:
    """A non-zero salt under which `frame` passes its CRC at `address`, or None.

    For a fixed message length the CRC is affine over GF(2): crc(salt) = L(salt) ^ crc(0), L
    linear from 64 bits to 32. Each salt bit's column L(e_i) is one CRC; Gaussian elimination
    then solves L(salt) = crc ^ crc(0). L's kernel is the multiples of the CRC polynomial
    whatever the length (x is invertible modulo it), so every frame of the log agrees on
    which salts pass: the one found passes them all."""
    observed = _U32.unpack_from(frame, 0)[0]
    base = _frame_crc(0, address, frame)
    basis: dict[int, tuple[int, int]] = {}  # pivot bit -> (vector, salt bits that make it)
    kernel: list[int] = []
    for bit in range(64):
        vector, combination = _frame_crc(1 << bit, address, frame) ^ base, 1 << bit
        vector, combination = _reduce(basis, vector, combination)
        if vector:
            basis[vector.bit_length() - 1] = (vector, combination)
        else:
            kernel.append(combination)
    residue, salt = _reduce(basis, observed ^ base, 0)
    if residue:
        return None
    if salt == 0 and kernel:
        salt = kernel[0]  # the meta format wants a non-zero salt; a kernel element changes no CRC
    return salt or None


def _reduce(basis: dict[int, tuple[int, int]], vector: int,
            combination: int) -> tuple[int, int]:
    for pivot in range(31, -1, -1):
        if vector >> pivot & 1 and pivot in basis:
            vector ^= basis[pivot][0]
            combination ^= basis[pivot][1]
    return vector, combination


def _cursor_salts(directory: str) -> list[int]:
    """The salts recorded in the valid slots of the cursor files (FORMAT.md, Cursor files)."""
    folder = cursors.cursors_directory(directory)
    salts: list[int] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for name in sorted(os.listdir(folder)):
            if not name.endswith(cursors.CURSOR_SUFFIX):
                continue
            with contextlib.suppress(OSError), open(os.path.join(folder, name), "rb") as file:
                data = file.read(cursors.CURSOR_FILE_SIZE_BYTES)
                for index in range(cursors.CURSOR_SLOTS_COUNT):
                    slot = cursors.decode_slot(data[index * cursors.CURSOR_SLOT_SIZE_BYTES:])
                    if isinstance(slot, cursors.Slot) and slot.salt not in salts:
                        salts.append(slot.salt)
    return salts


def _find_salt(segments: _Segments, start: int, candidates: list[tuple[str, int]],
               where: str) -> tuple[int, str]:
    """The salt and where it came from (step 2 of the module docstring)."""
    probes = _probe_frames(segments, start)
    if not probes:
        if start == FIRST_ADDRESS and segments.read(start, FRAME_HEADER_SIZE_BYTES) \
                == bytes(FRAME_HEADER_SIZE_BYTES):
            # No frame was ever written: any salt serves; keep a known one if there is one.
            for source, salt in candidates:
                if salt:
                    return salt, source
            return secrets.randbits(64) | 1, "new"
        raise RepairError(f"{where}: no frame at address {start}, where the segments start: "
                          "the salt cannot be checked or derived")
    first_address, first = probes[0]
    for source, salt in candidates:
        if salt and _frame_crc(salt, first_address, first) == _U32.unpack_from(first, 0)[0]:
            return salt, source
        if source == "option":
            raise RepairError(f"{where}: salt {salt:#x} does not match the frame at address "
                              f"{first_address}")
    for address, frame in sorted(probes, key=lambda probe: len(probe[1])):
        solved = _solve_salt(address, frame)
        if solved is not None and \
                _frame_crc(solved, first_address, first) == _U32.unpack_from(first, 0)[0]:
            return solved, "frames"
    raise RepairError(f"{where}: the frames at address {start} do not pass their checksum "
                      "under any salt: they are damaged")


# ---------------------------------------------------------------------- the scan


@dataclass
class _Scan:
    """What the forward scan (step 3) found."""

    end_address: int = FIRST_ADDRESS  # the first position that failed
    commit: _Frame | None = None      # the newest commit record
    last_epoch: int = 0               # of the last frame passed
    max_epoch: int = 0
    page_size_min: int = 1            # no frame crosses a multiple of a page size from here
    page_size_max: int = 0            # every page end seen is a multiple of it (0: none seen)

    def pass_frame(self, frame: _Frame) -> None:
        spread = frame.address ^ (frame.address + frame.frame_size - 1)
        self.page_size_min = max(self.page_size_min, 1 << spread.bit_length())
        self.last_epoch = frame.epoch
        self.max_epoch = max(self.max_epoch, frame.epoch)
        if frame.kind == KIND_PADDING:
            self.page_end_at(frame.address + frame.frame_size)

    def page_end_at(self, address: int) -> None:
        lowest_bit = address & -address
        self.page_size_max = lowest_bit if not self.page_size_max \
            else min(self.page_size_max, lowest_bit)


def _scan(segments: _Segments, salt: int, start: int, stop: int) -> _Scan:
    """Step 3: frames forward from `start` while valid, epochs never decrease and commit
    numbers rise by one (the page size is not known yet: frames are bounded by their
    segment, and `_Scan` collects the page sizes they allow)."""
    scan = _Scan()
    position = start
    while position < stop:
        frame = _frame_at(segments, salt, position, segments.segment_end(position))
        if frame is None:
            if not _is_gap(segments, salt, position):
                break
            position += _GAP_SIZE_BYTES
            scan.page_end_at(position)
            continue
        if frame.epoch < scan.last_epoch:
            break
        if frame.kind == KIND_COMMIT:
            if scan.commit is not None and frame.commit_number != scan.commit.commit_number + 1:
                break
            scan.commit = frame
        scan.pass_frame(frame)
        position += frame.frame_size
    scan.end_address = position
    return scan


def _page_size(scan: _Scan, segment_size_bytes: int, option: int | None, hint: int,
               where: str) -> int:
    """Step 2's page size: the one the frames allow, or the caller's or the old block's."""
    fitting = []
    page = PAGE_SIZE_MIN_BYTES
    while page <= min(PAGE_SIZE_MAX_BYTES, segment_size_bytes):
        if page >= scan.page_size_min and (not scan.page_size_max or page <= scan.page_size_max) \
                and segment_size_bytes % page == 0:
            fitting.append(page)
        page *= 2
    fits = ", ".join(str(page) for page in fitting) or "none"
    if option is not None:
        if option not in fitting:
            raise RepairError(f"{where}: page_size_bytes {option} does not fit the frames in the "
                              f"segments (page sizes that fit: {fits})")
        return option
    if len(fitting) == 1:
        return fitting[0]
    if hint in fitting:
        return hint
    if not fitting:
        raise RepairError(f"{where}: no page size fits the frames in the segments (frames "
                          f"need at least {scan.page_size_min}, page ends allow at most "
                          f"{scan.page_size_max}, segments are {segment_size_bytes} bytes)")
    raise RepairError(f"{where}: the page size cannot be derived from the segments (their "
                      f"frames fit any of {fits}): pass page_size_bytes (--page-size)")


@dataclass
class _Past:
    """What lies past the scan's end (step 4)."""

    max_epoch: int = 0
    later_commit: _Frame | None = None


def _look_at(segments: _Segments, salt: int, position: int, page_end: int, epoch_min: int,
             number_min: int, past: _Past) -> int:
    """Checks a frame that may be at `position`; returns where to look next."""
    frame = _frame_at(segments, salt, position, page_end, at_page_end=True)
    if frame is None or frame.epoch < epoch_min:
        return position + FRAME_ALIGNMENT_BYTES
    past.max_epoch = max(past.max_epoch, frame.epoch)
    if frame.kind == KIND_COMMIT and frame.commit_number >= number_min \
            and past.later_commit is None:
        past.later_commit = frame
    return position + frame.frame_size


def _look_past(segments: _Segments, salt: int, page_size: int, scan: _Scan,
               stop: int) -> _Past:
    """Step 4: every 8-aligned position of the rest of the end's page, then every later page
    that starts with a frame of the newest session (pages fill from their start), walked
    frame by frame as recovery's step 4 walks them."""
    past = _Past()
    number_min = (scan.commit.commit_number if scan.commit else 0) + 2
    position = scan.end_address + FRAME_ALIGNMENT_BYTES
    page_end = (scan.end_address // page_size + 1) * page_size
    while position < min(page_end, stop):
        position = _look_at(segments, salt, position, page_end, scan.last_epoch, number_min, past)
    for page_start in range(page_end, stop, page_size):
        position = max(page_start, FIRST_ADDRESS)
        header = _header(segments, position, page_start + page_size)
        if header is None or header[2] < scan.last_epoch:
            continue
        while position < page_start + page_size:
            position = _look_at(segments, salt, position, page_start + page_size,
                                scan.last_epoch, number_min, past)
    return past


# ---------------------------------------------------------------------- refusals and checks


def _highest_run_start(present: set[int]) -> int:
    """The first segment of the highest run of consecutive segment files."""
    segment = max(present)
    while segment - 1 in present:
        segment -= 1
    return segment


@contextlib.contextmanager
def _writer_lock(directory: str, where: str) -> Iterator[None]:
    """Holds the writer lock (`fasterlog.lock`, flock as fl_open.c takes it) for the block;
    LockedError when a writer has the log open. A lock file the repair made is removed again
    when the block fails (a refusal changes nothing)."""
    path = os.path.join(directory, LOCK_FILE_NAME)
    existed = os.path.exists(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).split(b"\n")[0]
            pid = int(text) if text.strip().isdigit() else 0
            raise errors.LockedError(f"{where}: the log in {directory!r} is open for writing by "
                                     f"process {pid}", pid) from None
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    finally:
        os.close(fd)  # releases the flock


def _old_block(directory: str, force: bool, where: str) -> tuple[bytes | None, metafile.Meta]:
    """The old meta block (None when there is none) and its fields as hints (zeros when it is
    missing or too short: each hint is checked against the frames before it is used).
    RepairError when it is valid and `force` is not given."""
    path = os.path.join(directory, metafile.META_FILE_NAME)
    try:
        with open(path, "rb") as file:
            block = file.read(META_SIZE_BYTES + 1)
    except FileNotFoundError:
        return None, metafile.Meta(0, 0, 0, 0, 0, 0, 0, 0, 0)
    try:
        metafile.decode(block, where)
        valid = True
    except errors.FasterLogError:
        valid = False
    if valid and not force:
        raise RepairError(f"{where}: {path!r} is valid: nothing to repair (force=True, or "
                          "--force, rebuilds it from the segments anyway)")
    hints = metafile.decode_fields(block) if len(block) == META_SIZE_BYTES else None
    return block, hints or metafile.Meta(0, 0, 0, 0, 0, 0, 0, 0, 0)


def _segment_size(sizes: dict[int, int], run: list[int], option: int | None, hint: int,
                  where: str) -> int:
    """Step 2's segment size: the caller's, else the old block's when no segment file of the
    run is larger, else the largest file of the run (a shorter one was cut: step 5 says so)."""
    largest = max(sizes[segment] for segment in run)
    if option is not None:
        size = option
    elif hint and hint % PAGE_SIZE_MIN_BYTES == 0 and hint >= largest:
        size = hint
    else:
        size = largest
    if size < PAGE_SIZE_MIN_BYTES or size % PAGE_SIZE_MIN_BYTES:
        raise RepairError(f"{where}: segment_size_bytes {size} is not a positive multiple of "
                          f"{PAGE_SIZE_MIN_BYTES} (pass segment_size_bytes, --segment-size)")
    if largest > size:
        raise RepairError(f"{where}: a segment file is {largest} bytes, larger than "
                          f"segment_size_bytes {size}")
    return size


def _check_segments(sizes: dict[int, int], segment_size_bytes: int, begin: int,
                    committed_until: int, where: str) -> None:
    """Step 5: every segment of [begin, committed_until) is there at its full size."""
    if committed_until <= begin:
        return
    for segment in range(begin // segment_size_bytes,
                         (committed_until - 1) // segment_size_bytes + 1):
        size = sizes.get(segment)
        if size is not None and size >= segment_size_bytes:
            continue
        start = segment * segment_size_bytes
        lost_from = max(begin, start + (size or 0))
        state = "is missing" if size is None else f"is {size} bytes, not {segment_size_bytes}"
        raise errors.CorruptionError(
            f"{where}: committed data is damaged: {_segment_name(segment)} {state}, log "
            f"addresses [{lost_from}, {start + segment_size_bytes}) are lost (committed until "
            f"{committed_until})", lost_from)


# ---------------------------------------------------------------------- writing


def _kept_path(directory: str) -> str:
    for index in range(1, kept_names_max + 1):
        name = KEPT_META_NAME if index == 1 else f"{KEPT_META_NAME}.{index}"
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            return path
    raise RepairError(f"repair failed: {kept_names_max} kept meta files in {directory!r} "
                      f"already: remove some of {KEPT_META_NAME}.*")


def _install(directory: str, meta: metafile.Meta, has_old: bool) -> str | None:
    """Step 6: the old block linked aside, then the new one written atomically."""
    kept = None
    if has_old:
        kept = _kept_path(directory)
        os.link(os.path.join(directory, metafile.META_FILE_NAME), kept)
        fsync_directory(directory)
    try:
        metafile.write(directory, meta)
    except BaseException:
        for path in (kept, os.path.join(directory, metafile.META_FILE_NAME + ".tmp")):
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        raise
    return kept


def _put_back(directory: str, kept: str | None) -> None:
    """Undoes _install: the old block back at fasterlog.meta, or no meta file at all."""
    path = os.path.join(directory, metafile.META_FILE_NAME)
    if kept is not None:
        os.replace(kept, path)
    else:
        os.unlink(path)
    fsync_directory(directory)


def _verify(directory: str, expected: metafile.Meta) -> str | None:
    """Step 7: why the repaired log does not open as expected, or None."""
    try:
        with FasterLog.open(directory, readonly=True) as log:
            got = (log.committed_until_address, log.commit_number, log.begin_address)
    except errors.FasterLogError as error:
        return f"the repaired log does not open ({error})"
    wanted = (expected.committed_until_address, expected.commit_number, expected.begin_address)
    if got != wanted:
        return (f"the repaired log opens with (committed-until, commit number, begin) {got}, "
                f"not {wanted}")
    return None


# ---------------------------------------------------------------------- repair


@dataclass(frozen=True)
class _Rebuilt:
    meta: metafile.Meta
    salt_source: str
    ignored_bytes: int


def _rebuild(directory: str, sizes: dict[int, int], hints: metafile.Meta,
             options: dict[str, int | None], where: str) -> _Rebuilt:
    """Steps 2 to 5: the new meta block, from the segments."""
    run_start = _highest_run_start(set(sizes))
    run = list(range(run_start, max(sizes) + 1))
    segment_size = _segment_size(sizes, run, options["segment_size_bytes"],
                                 hints.segment_size_bytes, where)
    segments = _Segments(directory, segment_size, set(run))
    try:
        start = max(run_start * segment_size, FIRST_ADDRESS)
        stop = (max(sizes) + 1) * segment_size
        candidates = [("option", options["salt"])] if options["salt"] is not None else []
        candidates += [("meta", hints.salt)] + [("cursor", salt)
                                                for salt in _cursor_salts(directory)]
        salt, salt_source = _find_salt(segments, start, candidates, where)
        scan = _scan(segments, salt, start, stop)
        if scan.commit is None and run_start > 0:
            raise errors.CorruptionError(
                f"{where}: committed data is damaged: no commit record in the segments from "
                f"{_segment_name(run_start)} on (segments below it are missing)", start)
        page_size = _page_size(scan, segment_size, options["page_size_bytes"],
                               hints.page_size_bytes, where)
        past = _look_past(segments, salt, page_size, scan, stop)
    finally:
        segments.close()
    if past.later_commit is not None:
        raise errors.CorruptionError(
            f"{where}: committed data is damaged at address {scan.end_address} (commit record "
            f"{past.later_commit.commit_number} at {past.later_commit.address} is intact "
            "beyond it): nothing written", scan.end_address)
    commit = scan.commit
    committed_until = commit.address + commit.frame_size if commit else FIRST_ADDRESS
    begin = commit.begin_address if commit else FIRST_ADDRESS
    _check_segments(sizes, segment_size, begin, committed_until, where)
    epoch = max(scan.max_epoch, past.max_epoch,
                hints.epoch if hints.epoch < EPOCH_MAX - 1 else 0) + 1
    if epoch > EPOCH_MAX:
        raise RepairError(f"{where}: a frame carries the last epoch, {EPOCH_MAX}")
    meta = metafile.Meta(salt=salt, page_size_bytes=page_size, segment_size_bytes=segment_size,
                         epoch=epoch, flags=0, begin_address=begin,
                         recovery_start_address=commit.address if commit else FIRST_ADDRESS,
                         committed_until_address=committed_until,
                         commit_number=commit.commit_number if commit else 0)
    return _Rebuilt(meta, salt_source, max(scan.end_address - committed_until, 0))


def repair(directory: str | os.PathLike[str], *, page_size_bytes: int | None = None,
           segment_size_bytes: int | None = None, salt: int | None = None,
           force: bool = False) -> RepairResult:
    """Rebuilds the missing or damaged meta file of the log in `directory` from its segment
    files (see the module docstring); the settings given are used where the segments cannot
    tell them. Raises RepairError, LockedError or CorruptionError, changing nothing, when it
    refuses."""
    directory = os.fspath(directory)
    where = "repair failed"
    if not os.path.isdir(directory):
        raise RepairError(f"{where}: {directory!r} is not a directory")
    sizes = _segment_sizes(directory)
    if not sizes:
        raise RepairError(f"{where}: no segment files in {directory!r}: nothing to rebuild "
                          "the log from")
    options = {"page_size_bytes": page_size_bytes, "segment_size_bytes": segment_size_bytes,
               "salt": salt}
    with _writer_lock(directory, where):
        old_block, hints = _old_block(directory, force, where)
        rebuilt = _rebuild(directory, _segment_sizes(directory), hints, options, where)
        kept = _install(directory, rebuilt.meta, old_block is not None)
        problem = _verify(directory, rebuilt.meta)
        if problem is not None:
            _put_back(directory, kept)
            raise RepairError(f"{where}: {problem}; the directory is as it was")
    meta = rebuilt.meta
    return RepairResult(directory, meta.committed_until_address, meta.begin_address,
                        meta.commit_number, meta.epoch, meta.page_size_bytes,
                        meta.segment_size_bytes, meta.salt, rebuilt.salt_source,
                        len(sizes), rebuilt.ignored_bytes, kept)
