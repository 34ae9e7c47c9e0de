"""Segment files below the begin address are deleted, even those a crash left behind.

Goal: after truncate_until and its commit no segment file wholly below the begin address
remains, and a writer's open deletes the ones an interrupted deletion left (truncation unlinks
files only after the meta file names the new begin, so a crash in between leaves them). Before
the fix, fl_segments_delete_below's walk over files outside its table started at the segment
it had just deleted, stopped at once on ENOENT, and such files stayed forever: disk use grew
with every crash during a truncation.

Method: a real log with 64 KiB segments (tests/support/settings.py CRASH_SETTINGS). The state
a crash between the meta write and the unlinks leaves is made exactly: the segment files are
copied aside before a truncation and put back after its commit (the meta file already names
the new begin). Then the log is reopened (and truncated again) and the directory is listed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fasterlog import FasterLog
from tests.support.settings import CRASH_SETTINGS

SEGMENT_SIZE_BYTES = CRASH_SETTINGS["segment_size_bytes"]
entry = b"e" * 1000


def segment_numbers(directory: Path) -> list[int]:
    return sorted(int(path.name[8:-3]) for path in directory.glob("segment-*.fl"))


def fill_to_segment(log: FasterLog, segment: int) -> None:
    while log.tail_address < (segment + 1) * SEGMENT_SIZE_BYTES:
        log.append(entry)
    log.commit()


def truncate_leaving_files(log: FasterLog, directory: Path, address: int, aside: Path) -> None:
    """truncate_until(address) and its commit, then the deleted files back in place, as a
    crash after the meta write and before the unlinks leaves them."""
    aside.mkdir()
    for path in directory.glob("segment-*.fl"):
        shutil.copy2(path, aside / path.name)
    log.truncate_until(address)
    log.commit()
    for path in aside.iterdir():
        if not (directory / path.name).exists():
            shutil.copy2(path, directory / path.name)
    shutil.rmtree(aside)


def first_address_in(log: FasterLog, segment: int) -> int:
    return next(address for address, _ in log.scan() if address >= segment * SEGMENT_SIZE_BYTES)


def test_files_left_by_an_interrupted_truncation_are_deleted_by_the_next_truncation(
        log_dir: Path, tmp_path: Path) -> None:
    log = FasterLog.open(log_dir, **CRASH_SETTINGS)
    try:
        fill_to_segment(log, 6)
        truncate_leaving_files(log, log_dir, first_address_in(log, 3), tmp_path / "aside")
        assert segment_numbers(log_dir)[:3] == [0, 1, 2]  # the state a crash leaves
    finally:
        log.close()
    log = FasterLog.open(log_dir, **CRASH_SETTINGS)
    try:
        fill_to_segment(log, 8)
        begin = first_address_in(log, 5)
        log.truncate_until(begin)
        log.commit()
        assert log.begin_address == begin
        assert min(segment_numbers(log_dir)) == 5, segment_numbers(log_dir)
        assert log.read(begin) == entry
    finally:
        log.close()


def test_a_writer_open_deletes_files_left_below_the_begin_address(
        log_dir: Path, tmp_path: Path) -> None:
    log = FasterLog.open(log_dir, **CRASH_SETTINGS)
    try:
        fill_to_segment(log, 4)
        begin = first_address_in(log, 2)
        truncate_leaving_files(log, log_dir, begin, tmp_path / "aside")
    finally:
        log.close()
    assert min(segment_numbers(log_dir)) == 0
    with FasterLog.open(log_dir, **CRASH_SETTINGS) as log:
        assert log.begin_address == begin
        assert min(segment_numbers(log_dir)) == 2, segment_numbers(log_dir)
        assert log.read(begin) == entry


def test_repeated_interrupted_truncations_with_reopens_keep_disk_use_bounded(
        log_dir: Path, tmp_path: Path) -> None:
    rounds = 12
    files_count_max = 10  # one truncation of 3 segments left behind, plus the kept ones
    for round_index in range(rounds):
        with FasterLog.open(log_dir, **CRASH_SETTINGS) as log:
            fill_to_segment(log, 3 * round_index + 4)
            keep_from = 3 * round_index + 2
            truncate_leaving_files(log, log_dir, first_address_in(log, keep_from),
                                   tmp_path / f"aside-{round_index}")
        # Every file left below the begin goes at the next open at the latest: never more
        # than one truncation's worth on disk.
        assert len(segment_numbers(log_dir)) <= files_count_max, segment_numbers(log_dir)
    with FasterLog.open(log_dir, **CRASH_SETTINGS):
        numbers = segment_numbers(log_dir)
    assert min(numbers) == 3 * (rounds - 1) + 2, numbers
