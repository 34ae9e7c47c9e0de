"""Damage from outside the crash model is reported, never taken for a torn tail.

Goal: a power cut or a kill can only tear the newest, unsynced writes, and recovery cuts those
back silently (tests/reliability/test_reliability_power_loss.py). Other damage — a segment file
cut short or deleted by hand, a lost meta file, one corrupted cursor file — must be reported
as what it is, with the addresses it costs, or be repairable:
  1. the newest segment cut in half after a crash: CorruptionError naming the segment and the
     lost range (it used to open and silently drop the acknowledged entries past the cut);
  2. a deleted middle (or first) segment: CorruptionError at open naming the range (it used to
     open, and reads there raised InvalidAddressError);
  3. a torn tail within the crash model (the bytes after the newest commit) is still cut back
     silently;
  4. an online backup (fasterlog.backup) of a log that another process writes and truncates
     always opens, holding the committed prefix it captured (defect 12: `cp -r` did not).

Method: real logs with 4 KiB pages and 64 KiB segments in a temporary directory; entries are
committed in groups, the writer "crashes" (fasterlog.testing.simulate_crash: no final commit,
no clean meta file), then the files are damaged directly and the log is reopened.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from fasterlog import FasterLog, errors
from fasterlog import testing as fault_testing
from fasterlog.backup import BackupError, backup
from tests.support.backups import consecutive_entries, live_writer
from tests.support.faults import truncate_to
from tests.support.figures import record
from tests.support.mode import scaled
from tests.support.settings import CRASH_SETTINGS

SEGMENT_SIZE_BYTES = CRASH_SETTINGS["segment_size_bytes"]
ENTRY = b"e" * 100  # a 112-byte frame
ENTRIES_PER_COMMIT = 5


def segment_file(directory: Path, segment: int) -> Path:
    return directory / f"segment-{segment:08d}.fl"


def write_committed(directory: Path, until_segment: int, *, crash: bool = True) -> list[int]:
    """Writes entries in committed groups until they fill 90 % of segment `until_segment`;
    returns their addresses."""
    log = FasterLog.open(directory, **CRASH_SETTINGS)
    addresses: list[int] = []
    stop = until_segment * SEGMENT_SIZE_BYTES + SEGMENT_SIZE_BYTES * 9 // 10
    index = 0
    while not addresses or addresses[-1] < stop:
        addresses.append(log.append(ENTRY + index.to_bytes(4, "little")))
        if index % ENTRIES_PER_COMMIT == ENTRIES_PER_COMMIT - 1:
            log.commit()
        index += 1
    log.commit()
    if crash:
        fault_testing.simulate_crash(log)
    else:
        log.close()
    return addresses


def newest_segment(directory: Path) -> int:
    return max(int(name[8:16]) for name in os.listdir(directory) if name.startswith("segment-"))


def test_newest_segment_cut_in_half_after_a_crash_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    addresses = write_committed(directory, 2)
    # The newest segment holding committed entries (files past it are preallocated ahead).
    segment = addresses[-1] // SEGMENT_SIZE_BYTES
    cut_bytes = SEGMENT_SIZE_BYTES // 2
    lost = [a for a in addresses if a >= segment * SEGMENT_SIZE_BYTES + cut_bytes]
    assert len(lost) > 50, "the layout changed: too few entries past the cut"
    truncate_to(segment_file(directory, segment), cut_bytes)
    with pytest.raises(errors.CorruptionError) as caught:
        FasterLog.open(directory, **CRASH_SETTINGS)
    message = str(caught.value)
    assert f"segment-{segment:08d}.fl is {cut_bytes} bytes" in message
    assert caught.value.address == segment * SEGMENT_SIZE_BYTES + cut_bytes
    # Reported, not repaired: a second open says the same (nothing was cut meanwhile).
    with pytest.raises(errors.CorruptionError):
        FasterLog.open(directory, readonly=True)


def test_segment_cut_at_any_offset_is_reported_never_cut_silently(tmp_path: Path) -> None:
    """Every cut of the newest segment, at each byte of its last entry and commit record and
    at each page start before them, is CorruptionError naming the cut (the old core cut the
    log back silently when the cut was in the newest commits)."""
    pristine = tmp_path / "pristine"
    log = FasterLog.open(pristine, **CRASH_SETTINGS)
    last_address = 0
    while last_address < SEGMENT_SIZE_BYTES * 3 // 4:
        last_address = log.append(ENTRY)
        committed = log.commit()
    fault_testing.simulate_crash(log)
    cuts = [*range(4096, last_address - last_address % 4096, 4096),
            *range(last_address, committed)]
    reported = 0
    for cut in cuts:
        case = tmp_path / f"cut-at-{cut}"
        shutil.copytree(pristine, case)
        truncate_to(segment_file(case, 0), cut)
        with pytest.raises(errors.CorruptionError) as caught:
            FasterLog.open(case, **CRASH_SETTINGS)
        assert caught.value.address == cut, f"cut at {cut}: {caught.value}"
        assert "segment-00000000.fl is" in str(caught.value)
        reported += 1
        shutil.rmtree(case)
    record("segment_cut", f"the newest segment cut at {len(cuts)} offsets (each byte of the "
           f"last entry and commit, each page start before): reported with the cut address "
           f"{reported}, opened silently 0",
           {"cuts": len(cuts), "reported": reported, "silent": 0},
           "python3 -m pytest -s 'tests/reliability/test_damage.py::"
           "test_segment_cut_at_any_offset_is_reported_never_cut_silently'")


@pytest.mark.parametrize("which", ["middle", "first"])
def test_deleted_segment_is_reported_at_open_with_its_range(tmp_path: Path, which: str) -> None:
    directory = tmp_path / "log"
    addresses = write_committed(directory, 3, crash=which == "middle")
    last = addresses[-1] // SEGMENT_SIZE_BYTES
    assert last >= 3
    segment = 1 if which == "middle" else 0
    segment_file(directory, segment).unlink()
    for readonly in (False, True):
        with pytest.raises(errors.CorruptionError) as caught:
            FasterLog.open(directory, readonly=readonly)
        message = str(caught.value)
        start = max(64, segment * SEGMENT_SIZE_BYTES)
        assert f"segment-{segment:08d}.fl is missing" in message
        assert f"[{start}, {(segment + 1) * SEGMENT_SIZE_BYTES})" in message
        assert caught.value.address == start


def test_torn_tail_after_a_crash_is_still_cut_silently(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    log = FasterLog.open(directory, **CRASH_SETTINGS)
    kept = [log.append(ENTRY) for _ in range(300)]
    committed = log.commit()
    for _ in range(20):
        log.append(ENTRY)  # never committed: a torn tail
    fault_testing.simulate_crash(log)
    with FasterLog.open(directory, **CRASH_SETTINGS) as reopened:
        assert reopened.committed_until_address == committed
        assert [reopened.read(a) for a in kept] == [ENTRY] * len(kept)


def test_truncated_log_with_deleted_old_segments_opens(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    addresses = write_committed(directory, 3, crash=False)
    with FasterLog.open(directory, **CRASH_SETTINGS) as log:
        log.truncate_until(addresses[len(addresses) * 3 // 4])
        log.commit()
    assert not segment_file(directory, 0).exists()
    with FasterLog.open(directory, **CRASH_SETTINGS) as log:
        assert log.read(addresses[-1])[:100] == ENTRY


# --- Online backup ----------------------------------------------------------------------


def test_online_backups_of_a_live_log_always_open_with_the_committed_prefix(
        tmp_path: Path) -> None:
    """Backups of a log another process writes and truncates: each opens, recovers to exactly
    the address it captured, and holds a gap-free run of entries that only grows (defect 12:
    `cp -r` of such a log could not be opened in 7 of 12 tries)."""
    backups_count = scaled(12, 200)
    source = tmp_path / "source"
    with live_writer(source) as writer:
        time.sleep(0.2)
        previous_last = -1
        attempts = 0
        for number in range(backups_count):
            result = backup(source, tmp_path / f"copy-{number}")
            attempts += result.attempts
            first, last, committed = consecutive_entries(tmp_path / f"copy-{number}")
            assert committed == result.committed_until_address
            assert last >= previous_last, "a later backup holds less"
            previous_last = last
            shutil.rmtree(tmp_path / f"copy-{number}")
            time.sleep(0.02)
        assert writer.poll() is None, "the writer stopped during the backups"
    record("online_backup", f"{backups_count} backups of a log written and truncated by "
           f"another process: opened {backups_count}, failures 0, each a gap-free committed "
           f"prefix ({attempts} attempts in all, retries after a race "
           f"{attempts - backups_count})",
           {"backups": backups_count, "opened": backups_count, "failures": 0,
            "attempts": attempts},
           "python3 -m pytest -s 'tests/reliability/test_damage.py::"
           "test_online_backups_of_a_live_log_always_open_with_the_committed_prefix'")


def test_backup_of_an_open_log_in_this_process_and_into_a_used_directory(tmp_path: Path) -> None:
    log = FasterLog.open(tmp_path / "source", **CRASH_SETTINGS)
    try:
        addresses = [log.append(ENTRY) for _ in range(700)]
        committed = log.commit()
        log.append(b"not committed")
        result = backup(log, tmp_path / "copy")
        assert result.committed_until_address == committed
        with FasterLog.open(tmp_path / "copy", **CRASH_SETTINGS) as copy:
            assert [copy.read(a) for a in addresses] == [ENTRY] * len(addresses)
            copy.append(b"the copy is a log of its own")
            copy.commit()
        with pytest.raises(BackupError, match="not empty"):
            backup(log, tmp_path / "copy")
    finally:
        log.close()
