"""`fasterlog repair`: a lost or damaged meta file rebuilt from the segments (issue 14, defect 11).

Goal: with `fasterlog.meta` deleted, bit-flipped or cut, the log did not open at all
(FormatError or CorruptionError) and there was no way back. After `repair` it opens with exactly
the committed prefix its newest valid commit record names: no uncommitted frame past it comes
back, no committed entry the segments hold is lost, and appends continue. Repair refuses,
changing nothing, when there is nothing to rebuild from, when the meta file is valid (unless
forced), when a writer has the log open, and when the segments show committed data lost.

Method: real logs with 4 KiB pages and 64 KiB segments (CRASH_SETTINGS) in a temporary
directory. The writer "crashes" (simulate_crash: no final commit, no clean meta file); an
uncommitted tail is forged after the last commit record as valid frames of the writer's salt
and epoch (a crash can leave exactly those on disk), so the test knows they are there. The
reliability figure repeats this for random logs, with the meta file deleted at random points.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fasterlog import FasterLog, errors, metafile
from fasterlog import testing as fault_testing
from fasterlog._format import KIND_DATA
from fasterlog.repair import KEPT_META_NAME, RepairError, repair
from tests.support.faults import flip_bit, truncate_to
from tests.support.figures import record
from tests.support.mode import scaled
from tests.support.processes import child_env
from tests.support.settings import CRASH_SETTINGS

SEGMENT_SIZE_BYTES = CRASH_SETTINGS["segment_size_bytes"]
PAGE_SIZE_BYTES = CRASH_SETTINGS["page_size_bytes"]
ENTRIES_PER_COMMIT = 5
child_timeout_s = 60.0


def entry(index: int, size: int = 100) -> bytes:
    return index.to_bytes(4, "little") * (size // 4)


Entries = list[tuple[int, bytes]]  # (address, entry), as scan yields them


def write_log(directory: Path, entries_count: int, *, crash: bool = True) -> Entries:
    """Appends `entries_count` entries of 100 bytes committed in groups, then crashes (or
    closes) the writer; returns the committed entries."""
    log = FasterLog.open(directory, **CRASH_SETTINGS)
    for index in range(entries_count):
        log.append(entry(index))
        if index % ENTRIES_PER_COMMIT == ENTRIES_PER_COMMIT - 1 or index == entries_count - 1:
            log.commit()
    entries = list(log.scan())
    if crash:
        fault_testing.simulate_crash(log)
    else:
        log.close()
    return entries


def forge_uncommitted_tail(directory: Path, count: int) -> int:
    """Writes `count` valid data frames of the writer's salt and epoch after the last commit
    record, in its page, with no commit record after them; returns their bytes (0 when the
    page has no room left)."""
    meta = metafile.read(directory, "test")
    with FasterLog.open(directory, readonly=True) as log:
        address = log.committed_until_address
    written = 0
    for index in range(count):
        payload = b"uncommitted-%04d" % index
        size = (12 + len(payload) + 7) & ~7
        if address % PAGE_SIZE_BYTES + size > PAGE_SIZE_BYTES:
            break
        body = struct.pack("<II", len(payload) | KIND_DATA << 28, meta.epoch) + payload
        body = body.ljust(size - 4, b"\0")
        crc = fault_testing.crc32c(struct.pack("<QQ", meta.salt, address) + body)
        path = directory / f"segment-{address // SEGMENT_SIZE_BYTES:08d}.fl"
        if not path.exists():
            break
        with open(path, "r+b") as file:
            file.seek(address % SEGMENT_SIZE_BYTES)
            file.write(struct.pack("<I", crc) + body)
        address += size
        written += size
    return written


def entries_of(directory: Path) -> Entries:
    with FasterLog.open(directory, readonly=True) as log:
        return list(log.scan())


def payloads(entries: Entries) -> list[bytes]:
    return [data for _, data in entries]


def directory_state(directory: Path, *, segments: bool = True) -> dict[str, bytes]:
    """Every file's name, first 8 KiB and size (without segment files if not `segments`)."""
    state = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and (segments or not path.name.startswith("segment-")):
            data = path.read_bytes()
            state[str(path.relative_to(directory))] = data[:8192] + len(data).to_bytes(8, "little")
    return state


def meta_path(directory: Path) -> Path:
    return directory / metafile.META_FILE_NAME


# ---------------------------------------------------------------------- the regression


def test_a_log_without_its_meta_file_does_not_open(log_dir: Path) -> None:
    write_log(log_dir, 20)
    meta_path(log_dir).unlink()
    with pytest.raises(errors.FormatError, match="without fasterlog.meta"):
        FasterLog.open(log_dir, **CRASH_SETTINGS)
    with pytest.raises(errors.FormatError):
        FasterLog.open(log_dir, readonly=True)


def test_a_deleted_meta_file_is_rebuilt_with_exactly_the_committed_entries(log_dir: Path) -> None:
    committed = write_log(log_dir, 50)  # past page 0: its padding tells the page size
    tail_bytes = forge_uncommitted_tail(log_dir, 6)
    assert tail_bytes > 0
    before = metafile.read(log_dir, "test")
    with FasterLog.open(log_dir, readonly=True) as log:
        committed_until, commit_number = log.committed_until_address, log.commit_number
    meta_path(log_dir).unlink()
    result = repair(log_dir)
    assert (result.committed_until_address, result.commit_number) == (committed_until,
                                                                      commit_number)
    assert result.ignored_bytes == tail_bytes
    assert result.epoch > before.epoch and result.kept_meta_path is None
    assert (result.page_size_bytes, result.segment_size_bytes) == (PAGE_SIZE_BYTES,
                                                                   SEGMENT_SIZE_BYTES)
    assert result.salt_source == "frames"
    assert entries_of(log_dir) == committed
    with FasterLog.open(log_dir, **CRASH_SETTINGS) as log:
        assert list(log.scan()) == committed
        address = log.append(b"after repair")
        log.commit()
    assert address == committed_until  # the forged tail was overwritten, not kept
    assert entries_of(log_dir) == [*committed, (address, b"after repair")]


@pytest.mark.parametrize("damage", ["flip-salt", "flip-committed-until", "flip-page-size",
                                    "cut"])
def test_a_damaged_meta_file_is_rebuilt_and_kept_aside(log_dir: Path, damage: str) -> None:
    committed = write_log(log_dir, 60, crash=False)  # two pages: the frames tell the page size
    original = metafile.read(log_dir, "test")
    path = meta_path(log_dir)
    if damage == "cut":
        truncate_to(path, 100)
    else:
        offset = {"flip-salt": 16, "flip-committed-until": 64, "flip-page-size": 25}[damage]
        flip_bit(path, offset, 3)
    damaged = path.read_bytes()
    with pytest.raises((errors.CorruptionError, errors.FormatError)):
        FasterLog.open(log_dir, readonly=True)
    result = repair(log_dir)
    assert result.kept_meta_path == str(log_dir / KEPT_META_NAME)
    assert Path(result.kept_meta_path).read_bytes() == damaged
    assert entries_of(log_dir) == committed
    # An intact salt field is the log's own salt (its cursors stay valid); a flipped one is
    # refused by the frames and derived from them instead.
    expected_source = {"flip-salt": "frames", "cut": "frames"}.get(damage, "meta")
    assert result.salt_source == expected_source
    if expected_source == "meta":
        assert result.salt == original.salt
    with FasterLog.open(log_dir, **CRASH_SETTINGS) as log:
        log.append(b"more")
        log.commit()
    assert payloads(entries_of(log_dir)) == [*payloads(committed), b"more"]


def test_a_truncated_multi_segment_log_is_rebuilt_with_its_begin_address(log_dir: Path) -> None:
    log = FasterLog.open(log_dir, **CRASH_SETTINGS)
    addresses = []
    for index in range(2000):
        addresses.append(log.append(entry(index)))
        if index % ENTRIES_PER_COMMIT == ENTRIES_PER_COMMIT - 1:
            log.commit()
    cut = next(address for address in addresses if address > 2 * SEGMENT_SIZE_BYTES + 777)
    log.truncate_until(cut)
    log.commit()  # the truncation's segments go after the next commit
    committed = list(log.scan())
    begin = log.begin_address
    fault_testing.simulate_crash(log)
    assert not (log_dir / "segment-00000000.fl").exists()
    assert begin == cut > SEGMENT_SIZE_BYTES
    meta_path(log_dir).unlink()
    result = repair(log_dir)
    assert result.begin_address == begin and result.segments_count >= 3
    assert entries_of(log_dir) == committed
    with FasterLog.open(log_dir, **CRASH_SETTINGS) as log:
        assert log.begin_address == begin
        log.append(b"x")
        log.commit()


def test_a_cursor_file_gives_back_the_exact_salt(log_dir: Path) -> None:
    from fasterlog import cursors

    committed = write_log(log_dir, 60)
    salt = metafile.read(log_dir, "test").salt
    cursors.write(log_dir, "billing", 64)
    meta_path(log_dir).unlink()
    result = repair(log_dir)
    assert (result.salt_source, result.salt) == ("cursor", salt)
    assert cursors.read(log_dir, "billing") == 64
    assert entries_of(log_dir) == committed


def test_the_page_size_is_asked_for_when_the_frames_do_not_tell_it(log_dir: Path) -> None:
    committed = write_log(log_dir, 3)  # 3 entries and a commit: page 0 only, no padding
    meta_path(log_dir).unlink()
    state = directory_state(log_dir)
    with pytest.raises(RepairError, match=r"page size cannot be derived.*--page-size"):
        repair(log_dir)
    assert directory_state(log_dir) == state
    with pytest.raises(RepairError, match="page_size_bytes 2048 does not fit"):
        repair(log_dir, page_size_bytes=2048)
    result = repair(log_dir, page_size_bytes=PAGE_SIZE_BYTES)
    assert result.page_size_bytes == PAGE_SIZE_BYTES
    assert entries_of(log_dir) == committed


def test_open_after_repair_still_reports_a_short_segment(log_dir: Path) -> None:
    write_log(log_dir, 800)
    meta_path(log_dir).unlink()
    repair(log_dir)
    truncate_to(log_dir / "segment-00000000.fl", SEGMENT_SIZE_BYTES // 2)
    with pytest.raises(errors.CorruptionError, match="segment-00000000.fl is"):
        FasterLog.open(log_dir, **CRASH_SETTINGS)


# ---------------------------------------------------------------------- refusals


def test_refusals_change_nothing(log_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RepairError, match="no segment files"):
        repair(empty)
    assert list(empty.iterdir()) == []
    write_log(log_dir, 30, crash=False)
    state = directory_state(log_dir)
    with pytest.raises(RepairError, match="is valid: nothing to repair"):
        repair(log_dir)
    assert directory_state(log_dir) == state
    with FasterLog.open(log_dir, **CRASH_SETTINGS):
        # The writer's preallocation thread may add a segment meanwhile: compare the rest.
        state = directory_state(log_dir, segments=False)
        with pytest.raises(errors.LockedError, match=f"open for writing by process {os.getpid()}"):
            repair(log_dir, force=True)
        assert directory_state(log_dir, segments=False) == state


def test_force_rebuilds_a_valid_meta_file(log_dir: Path) -> None:
    committed = write_log(log_dir, 30, crash=False)
    old = meta_path(log_dir).read_bytes()
    result = repair(log_dir, force=True)
    assert result.salt_source == "meta" and Path(str(result.kept_meta_path)).read_bytes() == old
    assert entries_of(log_dir) == committed
    second = repair(log_dir, force=True)
    assert second.kept_meta_path == str(log_dir / f"{KEPT_META_NAME}.2")


def test_a_missing_middle_segment_is_reported_and_nothing_written(log_dir: Path) -> None:
    write_log(log_dir, 2000)
    assert (log_dir / "segment-00000002.fl").exists()
    (log_dir / "segment-00000001.fl").unlink()
    meta_path(log_dir).unlink()
    state = directory_state(log_dir)
    with pytest.raises(errors.CorruptionError, match="segment-00000001.fl is missing"):
        repair(log_dir)
    assert directory_state(log_dir) == state


def test_damage_before_later_commits_is_reported_not_cut(log_dir: Path) -> None:
    write_log(log_dir, 300)
    with FasterLog.open(log_dir, readonly=True) as log:
        address = [address for address, _ in log.scan()][150]
    meta_path(log_dir).unlink()
    flip_bit(log_dir / "segment-00000000.fl", address + 20)  # a payload byte of entry 150
    state = directory_state(log_dir)
    with pytest.raises(errors.CorruptionError, match="is intact beyond it") as raised:
        repair(log_dir)
    assert raised.value.address == address
    assert directory_state(log_dir) == state


def test_a_given_salt_is_checked_against_the_frames(log_dir: Path) -> None:
    committed = write_log(log_dir, 60)
    salt = metafile.read(log_dir, "test").salt
    meta_path(log_dir).unlink()
    with pytest.raises(RepairError, match=f"salt {salt ^ 1:#x} does not match the frame"):
        repair(log_dir, salt=salt ^ 1)
    result = repair(log_dir, salt=salt)
    assert (result.salt_source, result.salt) == ("option", salt)
    assert entries_of(log_dir) == committed


# ---------------------------------------------------------------------- the command line


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fasterlog", *arguments], capture_output=True,
                          text=True, timeout=child_timeout_s, env=child_env())


def test_the_repair_command_exit_codes_and_messages(log_dir: Path, tmp_path: Path) -> None:
    committed = write_log(log_dir, 40)
    meta_path(log_dir).unlink()
    done = run_cli("repair", str(log_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"repaired {log_dir}: committed until ")
    assert entries_of(log_dir) == committed
    refused = run_cli("repair", str(log_dir))
    assert refused.returncode == 1
    assert refused.stderr.startswith("fasterlog: error: repair failed: ")
    assert "is valid: nothing to repair" in refused.stderr and len(refused.stderr.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    empty = run_cli("repair", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "no segment files" in empty.stderr
    usage = run_cli("repair", str(log_dir), "--page-size", "big")
    assert usage.returncode == 2 and "invalid integer value" in usage.stderr
    forced = run_cli("repair", str(log_dir), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert f'"kept_meta_path": "{log_dir / KEPT_META_NAME}"' in forced.stdout
    help_text = run_cli("repair", "--help").stdout
    assert "--page-size" in help_text and "before-repair" in help_text


# ---------------------------------------------------------------------- the figure


def random_log(directory: Path, rng: random.Random) -> Entries:
    """A log of random entries and commits over 1 to 3 writer sessions, maybe truncated, each
    session crashed with a random uncommitted tail (the next one overwrites it); returns the
    committed entries."""
    for _session in range(rng.randrange(1, 4)):
        log = FasterLog.open(directory, **CRASH_SETTINGS)
        for index in range(rng.randrange(1, 600)):
            log.append(entry(index, rng.choice([0, 4, 100, 400, 2000])))
            if rng.random() < 0.2:
                log.commit()
        log.commit()
        if rng.random() < 0.3 and log.committed_until_address > SEGMENT_SIZE_BYTES:
            log.truncate_until(rng.choice([address for address, _ in log.scan()]))
            log.commit()
        committed = list(log.scan())
        for index in range(rng.randrange(0, 40)):  # uncommitted: it may or may not land
            log.append(entry(index, 48))
        fault_testing.simulate_crash(log)
    return committed


def test_random_logs_repaired_recover_the_committed_prefix_exactly(tmp_path: Path) -> None:
    rng = random.Random(14)
    logs_count = scaled(20, 200)
    mismatches = page_size_asked = tails_on_disk = unopenable = check_refusals = 0
    started_s = time.monotonic()
    for round_index in range(logs_count):
        directory = tmp_path / f"log-{round_index}"
        try:
            committed = random_log(directory, rng)
            if rng.random() < 0.5:
                forge_uncommitted_tail(directory, rng.randrange(1, 30))
        except errors.CorruptionError:
            # The core's own open refused the log before its meta file was touched: in about
            # 1 log in 300, after simulate_crash, a segment page starts with bytes that look
            # like heap pointers (freed ring memory written out?). A core defect, reported
            # apart; repair is not what is measured there.
            unopenable += 1
            continue
        meta_path(directory).unlink()
        try:
            result = repair(directory)
        except RepairError as error:
            if "opens with" in str(error):
                # Its own check refused (and undid) a meta file the log did not open with as
                # scanned: once seen in 400 io_uring logs, the segments changed after the scan
                # (writes of the crashed writer still landing?). The next try must agree.
                check_refusals += 1
                result = repair(directory)
            else:  # a log of one page without padding: asked for, given
                assert "--page-size" in str(error)
                page_size_asked += 1
                result = repair(directory, page_size_bytes=PAGE_SIZE_BYTES)
        tails_on_disk += result.ignored_bytes > 0
        mismatches += entries_of(directory) != committed
        with FasterLog.open(directory, **CRASH_SETTINGS) as log:
            address = log.append(b"after")
            log.commit()
        mismatches += entries_of(directory) != [*committed, (address, b"after")]
    elapsed_s = time.monotonic() - started_s
    record("meta_repair", f"{logs_count} random logs (1 to 3 writer sessions, some truncated, "
           f"each session crashed with a random uncommitted tail), meta deleted, repaired: "
           f"committed prefix recovered exactly, mismatches {mismatches} (an uncommitted "
           f"tail on disk and ignored in {tails_on_disk}; page size asked for "
           f"{page_size_asked}, derived from the frames otherwise; not opening even with "
           f"their meta file, so left out, {unopenable}; refused by repair's own check and "
           f"repaired on a second try {check_refusals}; {elapsed_s:.1f} s)",
           {"logs": logs_count, "mismatches": mismatches, "tails_on_disk": tails_on_disk,
            "page_size_asked": page_size_asked, "unopenable": unopenable,
            "check_refusals": check_refusals},
           "python3 -m pytest -s 'tests/fasterlog/test_repair.py::"
           "test_random_logs_repaired_recover_the_committed_prefix_exactly'")
    assert mismatches == 0
    assert unopenable <= logs_count // 20  # a rare core failure, not a way to pass
