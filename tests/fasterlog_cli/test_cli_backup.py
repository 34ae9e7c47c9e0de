"""`fasterlog backup SRC DEST` as a user runs it: against a log another process writes, and
its refusals.

Goal: the command makes a copy that opens and holds a gap-free committed prefix of a log whose
writer (another process) keeps appending, committing and truncating meanwhile; it says what it
copied (text or --json, matching the copy); and every refusal (destination not empty or not a
directory, source not a log or missing, an argument missing) is one "fasterlog: error: ..."
line with a non-zero status that leaves the destination as it was.

Method: the writer is tests/support/children/backup_writer.py (64 KiB segments, a truncation
every 600 entries), started and checked through tests/support/backups.py, the helpers of the
API-level test (tests/reliability/test_damage.py). The CLI runs as a subprocess
(sys.executable -m fasterlog); each copy is opened read-only, verified and scanned.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from fasterlog import FasterLog
from tests.support.backups import consecutive_entries, live_writer
from tests.support.cli import assert_one_error_line, run_cli
from tests.support.settings import CRASH_SETTINGS

backups_count = 4
backup_pause_s = 0.15  # lets the writer commit and truncate between two backups


def segment_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith("segment-"))


def test_backup_of_a_log_another_process_writes_opens_with_a_gap_free_committed_prefix(
        tmp_path: Path) -> None:
    source = tmp_path / "source"
    previous_last = -1
    with live_writer(source) as writer:
        for number in range(backups_count):
            time.sleep(backup_pause_s)
            target = tmp_path / f"copy-{number}"
            if number == 1:
                target.mkdir()  # an empty directory is a valid destination
            result = run_cli("backup", source, target, "--json")
            assert result.returncode == 0, result.stderr.decode()
            assert result.stderr == b""
            info = json.loads(result.stdout)
            first, last, committed = consecutive_entries(target)
            assert info["target"] == str(target)
            assert info["committed_until_address"] == committed
            assert info["segments_count"] == len(segment_files(target))
            assert info["attempts"] >= 1
            with FasterLog.open(target, readonly=True) as copy:
                assert info["begin_address"] == copy.begin_address
                assert info["commit_number"] == copy.commit_number
            assert last > previous_last, "a later backup holds no more than the one before"
            previous_last = last
            shutil.rmtree(target)
        text = run_cli("backup", source, tmp_path / "copy-text")
        assert writer.poll() is None, "the writer stopped during the backups"
    assert text.returncode == 0, text.stderr.decode()
    committed = consecutive_entries(tmp_path / "copy-text")[2]
    assert text.stdout.decode().startswith(
        f"backup of {source} in {tmp_path / 'copy-text'}: committed until {committed} ")
    shutil.rmtree(tmp_path / "copy-text")


@pytest.fixture
def small_log(tmp_path: Path) -> Path:
    """A closed log with a few committed entries (no writer)."""
    directory = tmp_path / "log"
    with FasterLog.open(directory, **CRASH_SETTINGS) as log:
        for index in range(50):
            log.append(b"entry %d" % index)
        log.commit()
    return directory


def test_backup_into_a_directory_that_is_not_empty_is_refused_and_leaves_it_alone(
        small_log: Path, tmp_path: Path) -> None:
    target = tmp_path / "used"
    target.mkdir()
    (target / "keep.txt").write_bytes(b"mine")
    line = assert_one_error_line(run_cli("backup", small_log, target))
    assert line == f"fasterlog: error: backup failed: {str(target)!r} exists and is not empty"
    assert os.listdir(target) == ["keep.txt"] and (target / "keep.txt").read_bytes() == b"mine"


def test_backup_onto_a_file_is_refused_and_leaves_it_alone(small_log: Path,
                                                          tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_bytes(b"mine")
    line = assert_one_error_line(run_cli("backup", small_log, target))
    assert line == (f"fasterlog: error: backup failed: {str(target)!r} exists and is not a "
                    "directory")
    assert target.read_bytes() == b"mine"


def test_backup_of_a_directory_that_is_not_a_log_is_refused_and_creates_nothing(
        tmp_path: Path) -> None:
    source = tmp_path / "not-a-log"
    source.mkdir()
    (source / "notes.txt").write_bytes(b"not a log")
    target = tmp_path / "copy"
    line = assert_one_error_line(run_cli("backup", source, target))
    assert line.startswith(f"fasterlog: error: open '{source}' failed: no log in {source}")
    assert "fasterlog.meta is missing" in line
    assert not target.exists(), "a refused backup left its destination behind"
    assert os.listdir(source) == ["notes.txt"], "the backup wrote into its source"


def test_backup_of_a_missing_source_or_without_a_destination_is_refused(
        tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    line = assert_one_error_line(run_cli("backup", missing, tmp_path / "copy"))
    assert line == f"fasterlog: error: {missing}: no such directory"
    assert not (tmp_path / "copy").exists()
    line = assert_one_error_line(run_cli("backup", missing), status=2)
    assert "the following arguments are required: DEST" in line
