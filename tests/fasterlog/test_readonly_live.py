"""Read-only opens of a log whose writer goes on: the followers', `fasterlog info`'s and the
online backup's way in. The writer changes the files while the reader's recovery reads them,
so what the reader's scan sees is no one moment's state; that must never be reported as
damage (issue 14: one online backup in 200 under load raised "committed data is damaged ...
(a later commit record is intact)" from its own read-only open of the live source).

Method: a real writer and a real read-only open in this process (the writer's lock is held,
so the reader knows a writer is live). fasterlog.testing.pause_read_only_open holds the
reader's open at a point of its recovery while the writer moves on, exactly where the race
falls, instead of once in hundreds of backups:
  1. after the recovery scan, before its damage checks: the writer commits twice more, so
     past where the scan stopped (the old tail) lie commit records numbered two above the
     last one it saw, which a log that is not moving would only show after damage;
  2. before the scan, its meta file read: the writer moves two segments on, truncates and
     commits, so the segment the old meta file names as the recovery start is deleted, and
     the scan finds nothing where that meta file says data was committed.
Then the open must succeed and the reader must see everything the writer committed. And
real damage beside a live writer is still reported: a cut page in the middle of committed
data raises CorruptionError (after the open's retries).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from fasterlog import FasterLog, errors, metafile
from fasterlog.testing import pause_read_only_open

# Small pages and segments: a commit of a few entries spans pages, a few commits segments.
live_settings = {"page_size_bytes": 4096, "memory_size_bytes": 8 * 4096,
                 "segment_size_bytes": 16 * 4096}
held_timeout_s = 10.0


def _commit_entries(writer: FasterLog, prefix: bytes, count: int) -> list[bytes]:
    entries = [prefix + b"%04d" % index + b"." * 1500 for index in range(count)]
    for entry in entries:
        writer.append(entry)
    writer.commit()
    return entries


def _open_reader_in_thread(log_dir: Path) -> tuple[threading.Thread, list[object]]:
    """Starts a read-only open in a thread; the list gets the FasterLog or the exception."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(FasterLog.open(log_dir, readonly=True))
        except errors.FasterLogError as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _reader_after(thread: threading.Thread, outcome: list[object]) -> FasterLog:
    thread.join(timeout=60)
    assert not thread.is_alive(), "the read-only open did not return"
    assert outcome and isinstance(outcome[0], FasterLog), (
        f"the read-only open of the live log failed: {outcome!r}")
    return outcome[0]


def test_commits_placed_after_the_scan_passed_are_not_damage(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **live_settings) as writer:
        committed = _commit_entries(writer, b"a", 6)
        with pause_read_only_open("after-recovery-scan") as pause:
            thread, outcome = _open_reader_in_thread(log_dir)
            assert pause.wait_held(held_timeout_s), "the read-only open was not held"
            # Two commits of several pages each: the second record lies pages past the old
            # tail and is numbered two above the last commit the scan saw.
            committed += _commit_entries(writer, b"b", 8)
            committed += _commit_entries(writer, b"c", 8)
            assert pause.release()
        reader = _reader_after(thread, outcome)
        with reader:
            assert reader.committed_until_address == writer.committed_until_address
            assert [entry for _, entry in reader.scan()] == committed


def test_a_recovery_start_deleted_by_truncation_meanwhile_is_not_damage(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **live_settings) as writer:
        for round_index in range(4):  # into the second segment: the meta file names it
            _commit_entries(writer, b"a%d" % round_index, 12)
        meta = metafile.read(str(log_dir), "test")
        segment_size = live_settings["segment_size_bytes"]
        start_segment = meta.recovery_start_address // segment_size
        assert start_segment >= 1 and meta.committed_until_address > meta.recovery_start_address
        start_name = f"segment-{start_segment:08d}.fl"
        with pause_read_only_open("before-recovery-scan") as pause:
            thread, outcome = _open_reader_in_thread(log_dir)
            assert pause.wait_held(held_timeout_s), "the read-only open was not held"
            for round_index in range(6):  # two segments further on
                _commit_entries(writer, b"r%d" % round_index, 12)
            begin = writer.committed_until_address
            writer.truncate_until(begin)
            kept = _commit_entries(writer, b"z", 4)  # its sync deletes what lies below begin
            assert not os.path.exists(log_dir / start_name), sorted(os.listdir(log_dir))
            assert pause.release()
        reader = _reader_after(thread, outcome)
        with reader:
            assert reader.begin_address >= begin
            assert reader.committed_until_address == writer.committed_until_address
            assert [entry for _, entry in reader.scan(begin)] == kept


def test_damage_in_committed_data_beside_a_live_writer_is_still_reported(
        log_dir: Path) -> None:
    with FasterLog.open(log_dir, **live_settings) as writer:
        for round_index in range(3):
            _commit_entries(writer, b"d%d" % round_index, 6)
        # Zero one whole page in the middle of what is committed: not a moving tail, it stays.
        page_size = live_settings["page_size_bytes"]
        with open(log_dir / "segment-00000000.fl", "r+b") as segment:
            segment.seek(2 * page_size)
            segment.write(b"\0" * page_size)
            segment.flush()
            os.fsync(segment.fileno())
        with pytest.raises(errors.CorruptionError, match="damaged"):
            FasterLog.open(log_dir, readonly=True)
