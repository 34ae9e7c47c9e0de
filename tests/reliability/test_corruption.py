"""Corruption, torn-tail, fault and misuse tests for the fasterlog core.

Goal: show that the log never hands back bytes it was not given and never drops bytes it
acknowledged without saying so. Concretely:
  1. every entry size from 0 B to entry_size_max round-trips across close and reopen;
  2. a torn tail (the last entry or its commit record zeroed or garbled) is cut back to
     the newest complete commit, and the log goes on working from there;
  3. every single-bit flip inside the committed range is reported as CorruptionError naming
     the damaged frame, and damage in the middle is never mistaken for a torn tail;
  4. failed writes and fsyncs fence the log: the failing call reports the errno, later writes
     raise LogFencedError, committed data stays readable and survives a reopen;
  5. one writer per directory; truncation frees whole segments; misuse raises typed errors.

Method: the tests write small logs (4 KiB pages, a few pages of memory, small segments), then
damage the files directly, at offsets computed from the on-disk layout in the contract: an
address A lives in segment A // segment_size_bytes at offset A % segment_size_bytes; a frame
is a 12-byte header (u32 crc32c, u32 length_and_kind with the kind in the top 4 bits, u32
epoch), the payload, and zeros up to the next multiple of 8; a frame never spans a page; each
commit() appends a commit record frame, whose end is committed_until_address. The layout is
asserted on a pristine log before any damage, so a format change fails with a clear message
instead of a confusing one. Fault injection goes through fasterlog.testing.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from fasterlog import FasterLog, errors
from fasterlog import testing as fault_testing
from tests.support.children import crash_writer
from tests.support.faults import flip_bit, garble_range, segment_path, zero_range
from tests.support.figures import record
from tests.support.mode import LONG, scaled

# --- The on-disk layout from the contract ------------------------------------------------
frame_header_size_bytes = 12
frame_alignment_bytes = 8
length_mask = (1 << 28) - 1
kind_data = 1
kind_marker = 2
kind_commit_record = 3
kind_page_padding = 4
kind_names = {
    kind_data: "data",
    kind_marker: "marker",
    kind_commit_record: "commit record",
    kind_page_padding: "page padding",
}
first_address = 64

page_size_bytes = 4096
small_settings: dict[str, int] = {
    "page_size_bytes": page_size_bytes,
    "memory_size_bytes": 4 * page_size_bytes,
    "segment_size_bytes": 1 << 20,
}


def align_up(value: int, alignment: int = frame_alignment_bytes) -> int:
    return (value + alignment - 1) // alignment * alignment


def frame_size_bytes(payload_size_bytes: int) -> int:
    return align_up(frame_header_size_bytes + payload_size_bytes)


def open_log(directory: pathlib.Path, **overrides: Any) -> FasterLog:
    return FasterLog.open(str(directory), **{**small_settings, **overrides})


def payload(index: int, size_bytes: int) -> bytes:
    """Deterministic, index-specific bytes, so a misplaced entry never compares equal."""
    pattern = index.to_bytes(4, "little") + hashlib.blake2b(str(index).encode()).digest()
    return (pattern * (size_bytes // len(pattern) + 1))[:size_bytes]


def entries_of(log: FasterLog) -> list[bytes]:
    return [entry for _, entry in log.scan()]


def scanned_pairs(log: FasterLog) -> list[tuple[int, bytes]]:
    return [(address, entry) for address, entry in log.scan()]


def read_file_range(path: pathlib.Path, offset: int, size_bytes: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(size_bytes)


@dataclass(frozen=True)
class Frame:
    """One frame found by walking a segment file; "kind" is a name from kind_names."""

    start: int
    end: int
    kind: str
    payload_end: int

    def part_at(self, address: int) -> str:
        if self.kind in ("page tail", "unframed"):
            return self.kind
        offset = address - self.start
        if offset < frame_header_size_bytes:
            return ("crc32c", "length_and_kind", "epoch")[offset // 4]
        return "payload" if address < self.payload_end else "alignment padding"


def read_header(data: bytes, offset: int) -> tuple[int, int, int, int]:
    """(crc, payload length, kind, epoch) of the frame header at offset in data."""
    crc, length_and_kind, epoch = struct.unpack_from("<III", data, offset)
    return crc, length_and_kind & length_mask, length_and_kind >> 28, epoch


def walk_frames(data: bytes, base_address: int, begin: int, end: int) -> list[Frame]:
    """Frames covering [begin, end) of a segment whose first byte has address base_address."""
    frames = []
    address = begin
    while address < end:
        page_end = (address // page_size_bytes + 1) * page_size_bytes
        offset = address - base_address
        if page_end - address < frame_header_size_bytes:
            frames.append(Frame(address, page_end, "page tail", page_end))
            address = page_end
            continue
        crc, length, kind, _ = read_header(data, offset)
        if crc == 0 and length == 0 and kind == 0:
            frames.append(Frame(address, page_end, "unframed", page_end))
            address = page_end
            continue
        assert kind in kind_names, f"unknown frame kind {kind} at {address}"
        frame_end = address + frame_size_bytes(length)
        assert frame_end <= page_end, f"frame at {address} spans a page"
        frames.append(Frame(address, frame_end, kind_names[kind], address + 12 + length))
        address = frame_end
    assert address == end, f"frames overrun the range end {end}"
    return frames


# --- 1. Round trips ------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page_size", [4096, 65536])
def test_entries_of_every_size_round_trip_across_close_and_reopen(
    log_dir: Any, page_size: int
) -> None:
    settings = {
        "page_size_bytes": page_size,
        "memory_size_bytes": 4 * page_size,
        "segment_size_bytes": 16 * page_size,
    }
    entry_size_max = page_size - frame_header_size_bytes
    rng = random.Random(page_size)
    sizes = [0, 1, 2, 3, 4, 7, 8, 9, 12, 13, 16, 17, entry_size_max - 1, entry_size_max, 0]
    sizes += [rng.randint(0, entry_size_max) for _ in range(60)]
    sizes += [rng.randint(0, 64) for _ in range(60)]
    entries = [payload(index, size) for index, size in enumerate(sizes)]
    with open_log(pathlib.Path(log_dir), **settings) as log:
        assert log.entry_size_max == entry_size_max
        addresses = [log.append(entry) for entry in entries]
        assert addresses[0] == first_address
        assert all(address % frame_alignment_bytes == 0 for address in addresses)
        log.commit()
        assert [log.read(address) for address in addresses] == entries
        assert scanned_pairs(log) == list(zip(addresses, entries, strict=True))
    with open_log(pathlib.Path(log_dir), **settings) as log:
        assert [log.read(address) for address in addresses] == entries
        assert scanned_pairs(log) == list(zip(addresses, entries, strict=True))
        assert log.verify() == log.committed_until_address


@pytest.mark.timeout(30)
def test_bytes_like_entries_are_stored_as_their_bytes(log_dir: Any) -> None:
    with open_log(pathlib.Path(log_dir)) as log:
        sources: list[Any] = [bytearray(b"array"), memoryview(b"view"), memoryview(b"xsliced")[1:]]
        addresses = [log.append(source) for source in sources]
        log.commit()
        assert [log.read(address) for address in addresses] == [b"array", b"view", b"sliced"]


@pytest.mark.timeout(30)
def test_entry_one_byte_over_entry_size_max_raises_entry_too_large_and_appends_nothing(
    log_dir: Any,
) -> None:
    with open_log(pathlib.Path(log_dir)) as log:
        assert log.entry_size_max == page_size_bytes - frame_header_size_bytes
        log.append(b"before")
        tail_address = log.tail_address
        oversized = b"x" * (log.entry_size_max + 1)
        with pytest.raises(errors.EntryTooLarge) as raised:
            log.append(oversized)
        assert isinstance(raised.value, ValueError)
        with pytest.raises(errors.EntryTooLarge):
            log.try_append(oversized)
        with pytest.raises(errors.EntryTooLarge):
            log.append_many([b"fits", oversized])
        assert log.tail_address == tail_address
        log.commit()
        assert entries_of(log) == [b"before"]


# --- 2. Torn tail --------------------------------------------------------------------------


@dataclass
class TornTailLog:
    directory: pathlib.Path
    entries: list[bytes]
    committed_until_addresses: list[int]  # committed_until after each entry's commit
    damage_begin: int  # the last entry's frame starts here ...
    damage_end: int  # ... and its commit record ends here
    commit_record_payload_end: int  # bytes from here to damage_end are the record's padding


def write_one_commit_per_entry_then_crash(
    directory: pathlib.Path, last_entry_size_bytes: int
) -> TornTailLog:
    sizes = [0, 1, 13, 300, 1000, last_entry_size_bytes]
    entries = [payload(index, size) for index, size in enumerate(sizes)]
    log = open_log(directory)
    addresses, committed_until_addresses = [], []
    for index, entry in enumerate(entries):
        addresses.append(log.append(entry))
        committed_until_addresses.append(log.commit(cookie=str(index + 1).encode()))
    fault_testing.simulate_crash(log)
    # Check the layout the damage offsets rely on, before any damage.
    last_address, last_end = addresses[-1], committed_until_addresses[-1]
    assert committed_until_addresses[-2] <= last_address
    assert last_end // page_size_bytes == last_address // page_size_bytes, "pick other sizes"
    assert last_end < small_settings["segment_size_bytes"], "all of it is in segment 0"
    data = segment_path(directory, 0, small_settings["segment_size_bytes"]).read_bytes()
    _, length, kind, _ = read_header(data, last_address)
    assert (kind, length) == (kind_data, last_entry_size_bytes), "entry header not as specified"
    record_address = last_address + frame_size_bytes(last_entry_size_bytes)
    _, record_length, record_kind, _ = read_header(data, record_address)
    assert record_kind == kind_commit_record, "no commit record right after the last entry"
    assert record_address + frame_size_bytes(record_length) == last_end
    assert data[last_address + 12 + last_entry_size_bytes : record_address] == bytes(
        record_address - last_address - 12 - last_entry_size_bytes
    ), "alignment padding is not zeros"
    return TornTailLog(
        directory,
        entries,
        committed_until_addresses,
        damage_begin=last_address,
        damage_end=last_end,
        commit_record_payload_end=record_address + 12 + record_length,
    )


def damage_segment(path: pathlib.Path, offset: int, end: int, how: str, seed: int) -> bool:
    """Damage bytes [offset, end) of the file; return whether any byte changed."""
    if how == "zero":
        return zero_range(path, offset, end)
    return garble_range(path, offset, end, seed)  # every byte really changes


def _check_recovered_prefix(log: FasterLog, torn: TornTailLog, allowed_counts: set[int]) -> int:
    recovered = entries_of(log)
    assert len(recovered) in allowed_counts, f"recovered {len(recovered)} entries"
    assert recovered == torn.entries[: len(recovered)], "recovered entries are not the prefix"
    assert log.committed_until_address == torn.committed_until_addresses[len(recovered) - 1]
    assert log.cookie == str(len(recovered)).encode()
    assert log.verify() == log.committed_until_address
    return len(recovered)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("last_entry_size_bytes", [0, 5, 100])
# A segment file cut short is not a torn write (segments are preallocated, and a synced one
# keeps its size): it is reported, tests/reliability/test_damage.py sweeps those cuts.
@pytest.mark.parametrize("how", ["zero", "garble"])
def test_torn_tail_is_cut_back_to_the_last_complete_commit(
    tmp_path_factory: pytest.TempPathFactory, how: str, last_entry_size_bytes: int
) -> None:
    pristine = tmp_path_factory.mktemp("pristine") / "log"
    torn = write_one_commit_per_entry_then_crash(pristine, last_entry_size_bytes)
    entries_count = len(torn.entries)
    scratch = tmp_path_factory.mktemp("cases")
    outcomes = {"exact prefix": 0, "prefix keeping the padding-damaged commit": 0}
    for address in range(torn.damage_begin, torn.damage_end):
        case = scratch / f"damaged-at-{address}"
        shutil.copytree(pristine, case)
        path = segment_path(case, address, small_settings["segment_size_bytes"])
        offset = address % small_settings["segment_size_bytes"]
        end = torn.damage_end % small_settings["segment_size_bytes"]
        changed = damage_segment(path, offset, end, how, seed=address)
        if not changed:
            allowed = {entries_count}  # zeroing bytes that were zero already
        elif address >= torn.commit_record_payload_end:
            # Only the commit record's trailing alignment padding is damaged. A core that
            # checks padding drops the commit, one that does not keeps it; both are sound.
            allowed = {entries_count - 1, entries_count}
        else:
            allowed = {entries_count - 1}
        context = f"{how} from address {address} (last entry at {torn.damage_begin})"
        try:
            with open_log(case) as log:
                recovered_count = _check_recovered_prefix(log, torn, allowed)
                outcomes["exact prefix" if len(allowed) == 1 or recovered_count < entries_count
                         else "prefix keeping the padding-damaged commit"] += 1
                # The log goes on from the cut: a new commit lands and survives a reopen.
                log.append(b"after recovery")
                log.commit(cookie=b"after")
            with open_log(case) as log:
                assert entries_of(log) == torn.entries[:recovered_count] + [b"after recovery"]
                assert log.cookie == b"after"
        except (AssertionError, errors.FasterLogError) as error:
            raise AssertionError(f"{context}: {error!r}") from error
        shutil.rmtree(case)
    cases = torn.damage_end - torn.damage_begin
    record(f"torn_tail[{how}-{last_entry_size_bytes}]",
           f"last record and commit ({cases} B) {how} from each of their {cases} byte offsets: "
           f"recovered exactly the complete-record prefix {outcomes['exact prefix']}, kept a "
           f"commit whose alignment padding alone was damaged "
           f"{outcomes['prefix keeping the padding-damaged commit']}, wrong 0; the log goes on "
           "after each cut",
           {"cases": cases, "wrong": 0, **outcomes},
           "python3 -m pytest -s 'tests/reliability/test_corruption.py::"
           f"test_torn_tail_is_cut_back_to_the_last_complete_commit[{how}-"
           f"{last_entry_size_bytes}]'")


# --- 3. Bit flips and damage in the middle -------------------------------------------------

region_begin = page_size_bytes  # page boundaries are frame boundaries
region_size_bytes = 64 * 1024
region_end = region_begin + region_size_bytes


@pytest.fixture(scope="module")
def flip_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[pathlib.Path, list[Frame]]]:
    """A cleanly closed log whose committed range covers [region_begin, region_end) and more.

    Its frames mix data entries of many sizes (with and without alignment padding), markers,
    commit records and page padding, so every kind of byte is in the flipped region.
    """
    directory = tmp_path_factory.mktemp("flip") / "log"
    rng = random.Random(7)
    with open_log(directory) as log:
        index = 0
        # Four pages past the region keep it clear of the tail page a reader may keep in memory.
        while log.committed_until_address < region_end + 4 * page_size_bytes:
            log.append(payload(index, rng.choice([0, 1, 5, 12, 100, rng.randint(0, 900)])))
            if index % 23 == 22:
                log.append_marker(b"marker %d" % index)
            if index % 5 == 4:
                log.commit(cookie=b"%d" % index)
            index += 1
        log.commit()
    data = segment_path(directory, region_begin, 1 << 20).read_bytes()
    frames = walk_frames(data, 0, region_begin, region_end)
    kinds = {frame.kind for frame in frames}
    assert {"data", "marker", "commit record", "page padding"} <= kinds, kinds
    yield directory, frames


def sweep_bit_flips(directory: pathlib.Path, frames: list[Frame], bit_positions: list[int]) -> None:
    """Flip each bit of the region in turn and demand CorruptionError naming its frame."""
    path = segment_path(directory, region_begin, small_settings["segment_size_bytes"])
    file_offset = region_begin % small_settings["segment_size_bytes"]
    region = read_file_range(path, file_offset, region_size_bytes)
    starts = [frame.start for frame in frames]
    missed: list[tuple[str, str]] = []  # (part of the frame, description)
    misreported: list[str] = []
    with open_log(directory, readonly=True) as log:
        assert log.verify(region_begin, region_end) == region_end
        fd = os.open(path, os.O_RDWR)
        try:
            for bit in bit_positions:
                byte_index = bit >> 3
                address = region_begin + byte_index
                frame = frames[bisect.bisect_right(starts, address) - 1]
                original = region[byte_index]
                os.pwrite(fd, bytes((original ^ (1 << (bit & 7)),)), file_offset + byte_index)
                try:
                    log.verify(region_begin, region_end)
                except errors.CorruptionError as error:
                    if error.address != frame.start:
                        misreported.append(f"bit {bit}: named {error.address}, damaged {frame}")
                except errors.FasterLogError as error:
                    misreported.append(f"bit {bit} in {frame}: {error!r}")
                else:
                    part = frame.part_at(address)
                    missed.append((part, f"bit {bit & 7} of {address} ({part} of {frame})"))
                finally:
                    os.pwrite(fd, bytes((original,)), file_offset + byte_index)
        finally:
            os.close(fd)
        assert log.verify(region_begin, region_end) == region_end
    parts = sorted({part for part, _ in missed})
    first = [description for _, description in missed[:10]]
    assert not missed, f"{len(missed)} flips undetected, in {parts}; first: {first}"
    assert not misreported, f"{len(misreported)} flips misreported; first: {misreported[:10]}"


# A full sweep takes about 15 s per backend, so it runs by default: no sampling needed.
@pytest.mark.timeout(300)
def test_every_single_bit_flip_in_a_committed_64_kib_region_raises_corruption_error(
    flip_log: tuple[pathlib.Path, list[Frame]],
) -> None:
    directory, frames = flip_log
    sweep_bit_flips(directory, frames, list(range(region_size_bytes * 8)))
    bits = region_size_bytes * 8
    record("bit_flips", f"every single-bit flip of a committed 64 KiB region: {bits} of {bits} "
           "detected (CorruptionError naming the damaged frame), 0 undetected",
           {"flips": bits, "detected": bits, "undetected": 0},
           "python3 -m pytest -s tests/reliability/test_corruption.py::"
           "test_every_single_bit_flip_in_a_committed_64_kib_region_raises_corruption_error")


def random_corruption(rng: random.Random, region: bytes) -> tuple[int, bytes]:
    """A multi-byte corruption of the region: (offset, new bytes), never equal to the old."""
    while True:
        size = rng.choice((2, 3, 4, 8, 12, 16, 64, 512, rng.randint(2, 4096)))
        offset = rng.randrange(region_size_bytes - size + 1)
        how = rng.randrange(5)
        old = region[offset:offset + size]
        if how == 0:
            new = rng.randbytes(size)  # garbage
        elif how == 1:
            new = bytes(size)  # a zeroed run (lost sectors read as zeros)
        elif how == 2:
            new = b"\xff" * size
        elif how == 3:  # bytes from elsewhere in the log: valid-looking frames misplaced
            source = rng.randrange(region_size_bytes - size + 1)
            new = region[source:source + size]
        else:  # a few scattered bit flips inside the run
            changed = bytearray(old)
            for _ in range(rng.randint(2, 8)):
                changed[rng.randrange(size)] ^= 1 << rng.randrange(8)
            new = bytes(changed)
        if new != old:
            return offset, new


def sweep_random_corruptions(directory: pathlib.Path, frames: list[Frame], count: int,
                             seed: int) -> tuple[int, list[str], list[str]]:
    """Applies `count` random multi-byte corruptions one at a time; verify must report each
    as CorruptionError naming the frame of the first changed byte. Returns (trials, missed,
    misreported)."""
    path = segment_path(directory, region_begin, small_settings["segment_size_bytes"])
    file_offset = region_begin % small_settings["segment_size_bytes"]
    region = read_file_range(path, file_offset, region_size_bytes)
    starts = [frame.start for frame in frames]
    rng = random.Random(seed)
    missed: list[str] = []
    misreported: list[str] = []
    with open_log(directory, readonly=True) as log:
        fd = os.open(path, os.O_RDWR)
        try:
            for trial in range(count):
                offset, new = random_corruption(rng, region)
                old = region[offset:offset + len(new)]
                first = offset + next(i for i in range(len(new)) if new[i] != old[i])
                frame = frames[bisect.bisect_right(starts, region_begin + first) - 1]
                os.pwrite(fd, new, file_offset + offset)
                try:
                    log.verify(region_begin, region_end)
                except errors.CorruptionError as error:
                    if error.address != frame.start:
                        misreported.append(f"trial {trial}: {len(new)} B at {offset}: named "
                                           f"{error.address}, first damage in {frame}")
                except errors.FasterLogError as error:
                    misreported.append(f"trial {trial}: {error!r}")
                else:
                    missed.append(f"trial {trial}: {len(new)} B at {offset} ({frame})")
                finally:
                    os.pwrite(fd, old, file_offset + offset)
        finally:
            os.close(fd)
        assert log.verify(region_begin, region_end) == region_end
    return count, missed, misreported


@pytest.mark.timeout(120 if not LONG else 7200)
def test_random_multi_byte_corruptions_in_a_committed_region_are_all_detected(
    flip_log: tuple[pathlib.Path, list[Frame]],
) -> None:
    # Long mode (--long): 1,000,000 corruptions; CI: a 20,000 sample.
    directory, frames = flip_log
    trials, missed, misreported = sweep_random_corruptions(
        directory, frames, scaled(20_000, 1_000_000), seed=11)
    record("random_corruptions",
           f"{trials} random multi-byte corruptions (2 B..4 KiB: garbage, zeros, 0xff, bytes "
           f"copied from elsewhere, scattered flips) of a committed 64 KiB region: undetected "
           f"{len(missed)}, misreported {len(misreported)}",
           {"trials": trials, "undetected": len(missed), "misreported": len(misreported)},
           "python3 -m pytest -s tests/reliability/test_corruption.py::"
           "test_random_multi_byte_corruptions_in_a_committed_region_are_all_detected")
    assert not missed, f"{len(missed)} corruptions undetected; first: {missed[:5]}"
    assert not misreported, f"{len(misreported)} misreported; first: {misreported[:5]}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damaged_part", ["crc32c", "payload"])
@pytest.mark.parametrize("ending", ["clean-close", "crash-with-later-commits"])
def test_corrupted_frame_in_the_middle_is_reported_with_its_address_and_never_cut(
    log_dir: Any, ending: str, damaged_part: str
) -> None:
    directory = pathlib.Path(log_dir)
    entries = [payload(index, 200) for index in range(40)]
    log = open_log(directory)
    addresses = []
    for commit_index in range(10):
        addresses += log.append_many(entries[commit_index * 4 : commit_index * 4 + 4])
        committed_until_address = log.commit()
    if ending == "clean-close":
        log.close()
    else:
        fault_testing.simulate_crash(log)
    victim = 17  # in the fifth of ten commits: five complete commits follow it
    victim_address = addresses[victim]
    damaged_address = victim_address + (0 if damaged_part == "crc32c" else 12 + 50)
    flip_bit(segment_path(directory, damaged_address, 1 << 20), damaged_address % (1 << 20))
    reproduce = ("python3 -m pytest -s 'tests/reliability/test_corruption.py::"
                 "test_corrupted_frame_in_the_middle_is_reported_with_its_address_and_never_cut"
                 f"[{ending}-{damaged_part}]'")
    try:
        log = open_log(directory)
    except errors.CorruptionError as error:  # refusing to open is a fine way to report it
        assert error.address == victim_address
        record(f"mid_log_damage[{ending}-{damaged_part}]",
               f"one flipped bit in the {damaged_part} of a frame with 5 commits after it: open "
               "raises CorruptionError naming its address; silently cut 0",
               {"silently_cut": 0, "reported_at": "open"}, reproduce)
        return
    with log:
        assert log.committed_until_address >= committed_until_address, "log silently cut"
        with pytest.raises(errors.CorruptionError) as raised:
            log.read(victim_address)
        assert raised.value.address == victim_address
        scanned = []
        with pytest.raises(errors.CorruptionError) as raised:
            for _, entry in log.scan():
                scanned.append(entry)
        assert raised.value.address == victim_address
        assert scanned == entries[:victim]
        with pytest.raises(errors.CorruptionError) as raised:
            log.verify()
        assert raised.value.address == victim_address
        # Undamaged neighbours stay readable.
        assert log.read(addresses[victim - 1]) == entries[victim - 1]
        assert log.read(addresses[victim + 1]) == entries[victim + 1]
    record(f"mid_log_damage[{ending}-{damaged_part}]",
           f"one flipped bit in the {damaged_part} of a frame with 5 commits after it: read, "
           "scan and verify raise CorruptionError naming its address, its neighbours stay "
           "readable; silently cut 0",
           {"silently_cut": 0, "reported_at": "read"}, reproduce)


# --- 4. Fault injection --------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    op: str
    errno: int = errno.EIO
    after: int = 0
    persistent: bool = True
    short_write: bool = False
    # One entry per commit keeps each commit's write to one sector; a short write needs a
    # write of two sectors or more, so that case commits many entries at once in big pages.
    entries_per_commit: int = 1
    page_size_bytes: int = page_size_bytes


faults = {
    "write-eio": Fault("write"),
    "write-enospc": Fault("write", errno=errno.ENOSPC),
    "write-short": Fault("write", short_write=True, entries_per_commit=20, page_size_bytes=65536),
    "write-eio-on-a-later-commit": Fault("write", after=3),
    "write-eio-in-multi-page-commits": Fault("write", after=2, entries_per_commit=15),
    "fsync-eio": Fault("fsync"),
    "fsync-eio-on-a-later-commit": Fault("fsync", after=2),
    # The device would succeed on retry, but a failed fsync is never retried: still fenced.
    "fsync-eio-once": Fault("fsync", persistent=False),
}


def _append_and_commit_until_failure(
    log: FasterLog, entries: list[bytes], entries_per_commit: int
) -> tuple[int, int, errors.FasterLogError]:
    """Append and commit in groups; return (acknowledged count, committed_until, error)."""
    acknowledged = 0
    committed_until_address = log.committed_until_address
    for group_start in range(0, len(entries), entries_per_commit):
        group = entries[group_start : group_start + entries_per_commit]
        try:
            for entry in group:
                log.append(entry)
            committed_until_address = log.commit()
        except errors.FasterLogError as error:
            return acknowledged, committed_until_address, error
        acknowledged = group_start + len(group)
    pytest.fail("the injected fault never surfaced")


def _check_first_error(error: errors.FasterLogError, fault: Fault) -> None:
    # The failing call says what went wrong: with the I/O error itself, or (when the failure
    # happened in a flush the call waited on) with LogFencedError naming the cause.
    reason = "short write" if fault.short_write else errno.errorcode[fault.errno]
    if isinstance(error, errors.LogFencedError):
        assert reason in str(error), repr(error)
        return
    expected = errors.DiskFullError if fault.errno == errno.ENOSPC else errors.LogIOError
    assert isinstance(error, expected), repr(error)
    assert error.errno == (errno.EIO if fault.short_write else fault.errno)
    if fault.short_write:
        assert reason in str(error), repr(error)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(faults.values()), ids=list(faults))
def test_failed_write_or_fsync_fences_the_log_and_keeps_acknowledged_data(
    log_dir: Any, fault: Fault
) -> None:
    directory = pathlib.Path(log_dir)
    settings = {
        "page_size_bytes": fault.page_size_bytes,
        "memory_size_bytes": 4 * fault.page_size_bytes,
        "segment_size_bytes": 16 * fault.page_size_bytes,
    }
    entries = [payload(index, 700) for index in range(400)]
    log = open_log(directory, **settings)
    for entry in entries[:5]:
        log.append(entry)
        log.commit()
    fault_testing.inject_fault(
        log,
        op=fault.op,
        after=fault.after,
        errno=fault.errno,
        persistent=fault.persistent,
        short_write=fault.short_write,
    )
    later, committed_until_address, error = _append_and_commit_until_failure(
        log, entries[5:], fault.entries_per_commit
    )
    acknowledged = 5 + later
    _check_first_error(error, fault)
    assert log.committed_until_address == committed_until_address
    with pytest.raises(errors.LogFencedError):
        log.append(b"after the fault")
    with pytest.raises(errors.LogFencedError):
        log.append_many([b"after", b"the fault"])
    with pytest.raises(errors.LogFencedError):
        log.commit()
    assert log.committed_until_address == committed_until_address
    assert entries_of(log) == entries[:acknowledged]
    assert log.read(first_address) == entries[0]
    # close() may report the fence once more; what matters is what a reopen finds.
    with contextlib.suppress(errors.LogFencedError):
        log.close()
    with open_log(directory, **settings) as log:
        recovered = entries_of(log)
        assert recovered[:acknowledged] == entries[:acknowledged], "acknowledged entries lost"
        # Bytes of the failed commit may have reached the disk anyway; then they are whole.
        assert recovered == entries[: len(recovered)]
        assert len(recovered) <= acknowledged + fault.entries_per_commit
        log.append(b"reopened")
        log.commit()
        assert entries_of(log)[-1] == b"reopened"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["plain", "io_uring"])
def test_a_failed_fsync_is_called_once_never_retried_and_fences_the_log(
    log_dir: Any, backend: str
) -> None:
    # fsyncgate: after a failed fsync the kernel may have dropped the dirty pages, so a retry
    # that succeeds proves nothing. The trace shows every sync the core makes: after the failed
    # one, none at all, through close and later commits; a reopen recovers the durable part.
    settings = {**small_settings, "io_backend": backend}
    directory = pathlib.Path(log_dir)
    entries = [payload(index, 3000) for index in range(40)]
    try:
        log = open_log(directory, **settings)
    except errors.LogIOError:
        pytest.skip("io_uring refused here")
    with fault_testing.IOTrace() as trace:
        for entry in entries[:10]:
            log.append(entry)
        log.commit()
        fault_testing.inject_fault(log, op="fsync", persistent=False)
        for entry in entries[10:20]:  # more than a page: the commit needs an fdatasync
            log.append(entry)
        with pytest.raises(errors.FasterLogError) as failure:
            log.commit()
        assert not isinstance(failure.value, errors.LogFencedError) or "EIO" in str(failure.value)
        with pytest.raises(errors.LogFencedError):
            log.append(b"refused")
        with pytest.raises(errors.LogFencedError):
            log.commit()
        assert entries_of(log) == entries[:10]  # durable data stays readable
        with contextlib.suppress(errors.LogFencedError):
            log.close()
    faults = [i for i, op in enumerate(trace.ops) if op.op == "fault"]
    assert len(faults) == 1, f"{len(faults)} injected fsync failures, want 1"
    later_syncs = [op for op in trace.ops[faults[0]:] if op.op == "sync"]
    assert later_syncs == [], f"syncs after the failed one: {later_syncs}"
    fsync_calls = 1 + len(later_syncs)
    with open_log(directory, **settings) as log:
        recovered = entries_of(log)
        assert recovered[:10] == entries[:10]
        assert recovered == entries[:len(recovered)]
    record(f"fsync_failure[{backend}]",
           f"fsync calls for the failed commit: {fsync_calls} (no retry); later append and "
           "commit refused with LogFencedError; durable data readable; reopen recovers",
           {"fsync_calls": fsync_calls},
           "python3 -m pytest -s tests/reliability/test_corruption.py::"
           "test_a_failed_fsync_is_called_once_never_retried_and_fences_the_log")


# --- 5. Locking, truncation, misuse --------------------------------------------------------

writer_path = pathlib.Path(crash_writer.__file__)


@contextlib.contextmanager
def holder_process(
    directory: pathlib.Path, entries: list[str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process holding the log open as its writer until its stdin closes."""
    arguments = {"directory": str(directory), "settings": small_settings, "entries": entries}
    child = subprocess.Popen(
        [sys.executable, str(writer_path), "hold", json.dumps(arguments)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        line = child.stdout.readline()
        assert line == f"ready {child.pid}\n".encode(), f"holder failed: {line!r}"
        yield child
    finally:
        child.stdin.close()  # tells a live holder to close the log and exit
        child.wait(timeout=20)
        child.stdout.close()


@pytest.mark.timeout(60)
def test_second_writer_is_refused_with_locked_error_naming_the_holder_pid(log_dir: Any) -> None:
    directory = pathlib.Path(log_dir)
    with holder_process(directory, ["first", "second"]) as holder:
        with pytest.raises(errors.LockedError) as raised:
            open_log(directory)
        assert raised.value.pid == holder.pid
        assert str(holder.pid) in str(raised.value)
        with open_log(directory, readonly=True) as reader:
            assert entries_of(reader) == [b"first", b"second"]
            with pytest.raises(errors.FasterLogError):
                reader.append(b"readers do not write")
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=20) == 0
    with open_log(directory) as log:  # the lock went with the holder
        assert entries_of(log) == [b"first", b"second"]


@pytest.mark.timeout(60)
def test_writer_lock_dies_with_a_killed_holder(log_dir: Any) -> None:
    directory = pathlib.Path(log_dir)
    with holder_process(directory, ["kept"]) as holder:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=20)
    with open_log(directory) as log:
        assert entries_of(log) == [b"kept"]


@pytest.mark.timeout(30)
def test_second_writer_in_the_same_process_is_refused(log_dir: Any) -> None:
    # POSIX record locks (fcntl) do not conflict inside one process; this catches them.
    directory = pathlib.Path(log_dir)
    with open_log(directory) as log:
        log.append(b"mine")
        log.commit()
        with pytest.raises(errors.LockedError) as raised:
            open_log(directory)
        assert raised.value.pid == os.getpid()
        assert log.append(b"still mine")


@pytest.mark.timeout(60)
def test_truncate_until_deletes_whole_segments_below_begin_after_the_next_commit(
    log_dir: Any,
) -> None:
    directory = pathlib.Path(log_dir)
    segment_size_bytes = 4 * page_size_bytes
    settings = {"segment_size_bytes": segment_size_bytes}
    entries = [payload(index, 1000) for index in range(60)]
    with open_log(directory, **settings) as log:
        addresses = log.append_many(entries[:3])
        for entry in entries[3:]:
            addresses.append(log.append(entry))
        log.commit()
        assert addresses[-1] // segment_size_bytes >= 3, "the log should span four segments"
        # New begin: the second entry of segment 2, so segment 2 stays and 0 and 1 go.
        kept = next(i for i, a in enumerate(addresses) if a // segment_size_bytes == 2) + 1
        new_begin = addresses[kept]
        log.truncate_until(new_begin)
        assert log.begin_address == new_begin
        log.commit()
        assert not segment_path(directory, 0, segment_size_bytes).exists()
        assert not segment_path(directory, segment_size_bytes, segment_size_bytes).exists()
        assert segment_path(directory, new_begin, segment_size_bytes).exists()
        _check_truncated(log, addresses, entries, kept)
    with open_log(directory, **settings) as log:
        assert log.begin_address == new_begin
        assert not segment_path(directory, 0, segment_size_bytes).exists()
        _check_truncated(log, addresses, entries, kept)


def _check_truncated(log: FasterLog, addresses: list[int], entries: list[bytes], kept: int) -> None:
    for below in (addresses[0], addresses[kept - 1]):
        with pytest.raises(errors.TruncatedError) as raised:
            log.read(below)
        assert isinstance(raised.value, errors.InvalidAddressError)
        assert raised.value.begin_address == addresses[kept]
    assert log.read(addresses[kept]) == entries[kept]
    assert scanned_pairs(log) == list(zip(addresses[kept:], entries[kept:], strict=True))


@pytest.mark.timeout(30)
def test_truncate_until_inside_the_first_segment_keeps_its_file(log_dir: Any) -> None:
    directory = pathlib.Path(log_dir)
    with open_log(directory) as log:
        addresses = [log.append(payload(index, 100)) for index in range(10)]
        log.commit()
        log.truncate_until(addresses[5])
        log.commit()
        assert segment_path(directory, 0, small_settings["segment_size_bytes"]).exists()
        assert [entry for _, entry in log.scan()] == [payload(i, 100) for i in range(5, 10)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", ["text", 7, None, 1.5, [b"list"]], ids=repr)
def test_non_bytes_entry_raises_type_error_and_appends_nothing(log_dir: Any, value: Any) -> None:
    with open_log(pathlib.Path(log_dir)) as log:
        log.append(b"ok")
        tail_address = log.tail_address
        with pytest.raises(TypeError):
            log.append(value)
        with pytest.raises(TypeError):
            log.append_many([b"fine", value])
        assert log.tail_address == tail_address
        log.commit()
        assert entries_of(log) == [b"ok"]


@pytest.mark.timeout(30)
def test_read_at_an_address_that_is_not_an_entry_start_raises_invalid_address_error(
    log_dir: Any,
) -> None:
    with open_log(pathlib.Path(log_dir)) as log:
        inner_address = log.append(b"inner entry")
        log.commit()
        inner_frame = read_file_range(
            segment_path(pathlib.Path(log_dir), 0, 1 << 20),
            inner_address,
            frame_size_bytes(len(b"inner entry")),
        )
        # An entry whose payload holds a copy of a valid frame at an 8-aligned address: a
        # read there must not take it for a real entry.
        outer_address = log.append(b"\0" * 4 + inner_frame + payload(1, 100))
        last_address = log.append(payload(2, 300))
        commit_record_address = last_address + frame_size_bytes(300)
        log.commit()
        candidates = [outer_address + 8, outer_address + 16, last_address + 24, last_address + 296]
        candidates += [commit_record_address, 0, first_address - 8]
        for address in candidates:
            with pytest.raises(errors.InvalidAddressError):
                log.read(address)
        for address in (outer_address + 1, outer_address + 4, first_address + 3):
            with pytest.raises(errors.InvalidAddressError):
                log.read(address)
        for address in (log.tail_address, log.tail_address + 8, log.tail_address + (1 << 30)):
            with pytest.raises(errors.InvalidAddressError):
                log.read(address)
        with pytest.raises(errors.InvalidAddressError):
            log.read(-8)
        assert log.read(outer_address)[4:] == inner_frame + payload(1, 100)


@pytest.mark.timeout(30)
def test_every_operation_after_close_raises_log_closed_error(log_dir: Any) -> None:
    log = open_log(pathlib.Path(log_dir))
    address = log.append(b"entry")
    log.commit()
    log.close()
    operations: dict[str, Callable[[], object]] = {
        "append": lambda: log.append(b"x"),
        "append_many": lambda: log.append_many([b"x"]),
        "try_append": lambda: log.try_append(b"x"),
        "append_marker": lambda: log.append_marker(b"x"),
        "commit": lambda: log.commit(),
        "read": lambda: log.read(address),
        "scan": lambda: list(log.scan()),
        "scan_batches": lambda: list(log.scan_batches()),
        "verify": lambda: log.verify(),
        "truncate_until": lambda: log.truncate_until(address),
        "wait_for_commit": lambda: log.wait_for_commit(address, timeout=0.1),
    }
    not_refused = []
    for name, operation in operations.items():
        try:
            operation()
        except errors.LogClosedError:
            continue
        except Exception as error:  # noqa: BLE001 - reported below with the operation's name
            not_refused.append(f"{name} raised {error!r}")
        else:
            not_refused.append(f"{name} returned")
    assert not not_refused, f"after close(): {not_refused}"


bad_settings = {
    "page-not-a-power-of-two": {"page_size_bytes": 5000},
    "page-three-pages": {"page_size_bytes": 3 * 4096, "segment_size_bytes": 12 * 4096},
    "page-below-4096": {"page_size_bytes": 2048},
    "page-zero": {"page_size_bytes": 0},
    "segment-not-a-page-multiple": {"segment_size_bytes": 4096 * 16 + 512},
    "segment-smaller-than-a-page": {"segment_size_bytes": 2048},
    "memory-below-two-pages": {"memory_size_bytes": 4096},
    "unknown-io-backend": {"io_backend": "floppy"},
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("overrides", list(bad_settings.values()), ids=list(bad_settings))
def test_bad_settings_raise_settings_error(log_dir: Any, overrides: dict[str, Any]) -> None:
    with pytest.raises(errors.SettingsError) as raised:
        open_log(pathlib.Path(log_dir), **overrides)
    assert isinstance(raised.value, ValueError)
