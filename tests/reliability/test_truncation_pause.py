"""Reads held at the segment lookup or the pread while truncation deletes their segment: the
deterministic regression test of issue 14 defect 3 (a scan racing truncate_until raised
InvalidAddressError, reads and scans raised LogIOError EBADF), beside the timed stress of
test_reliability_races.py.

Goal: a read, read_many or scan held past its begin check, before its segment lookup or between
that lookup and its pread, while another thread truncates past the segment and commits, ends
with TruncatedError naming the new begin address or succeeds with the right bytes; never EBADF,
never InvalidAddressError, never wrong bytes. The same in the ASan+UBSan build.

Method: the C core's read pauses (fasterlog.testing.pause_read, armed through fl_fault_set like
the device's faults, one relaxed load on an unarmed read) hold the read exactly there, so every
run meets the race the stress met a few times a minute. The cases are
tests/support/children/truncation_pause.py, run here in the test's process and, for the
sanitizer build, as a child loading that build. With the pauses added to commit 26f5b31 (before
the fix) these cases fail every time: InvalidAddressError held before the lookup, LogIOError
EBADF held before the pread (once in about a hundred, InvalidAddressError there too: the
closed descriptor's number had been reused by another file, whose bytes failed the checks).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from fasterlog import FasterLog
from fasterlog.testing import pause_read
from tests.support import sanitizers
from tests.support.children import truncation_pause
from tests.support.figures import record
from tests.support.processes import ROOT

child_timeout_s = 240
old_code_failure = ("with the pauses on 26f5b31 (before the fix) every case fails: "
                    "InvalidAddressError held before the lookup, LogIOError EBADF held before "
                    "the pread (InvalidAddressError when the closed descriptor's number was "
                    "reused)")


def _figure(counts: dict[str, Any], build: str) -> str:
    cases_count = len(counts["cases"])
    return (f"{cases_count} held reads (read, read_many, scan, each held before its segment "
            f"lookup and before its pread) while truncate_until and a commit delete their "
            f"segment ({build}): errors other than TruncatedError 0, wrong bytes 0 "
            f"(TruncatedError naming the new begin {counts['truncated']}, right bytes "
            f"{counts['right_bytes']}; truncation waited for the held pread in "
            f"{counts['truncation_waited']}); {old_code_failure}")


def _check(counts: dict[str, Any]) -> None:
    assert not counts["wrong"], "\n".join(counts["wrong"]) + "\n" + json.dumps(
        counts["cases"], indent=1)
    assert len(counts["cases"]) == len(truncation_pause.calls) * len(truncation_pause.points)


def _record(name: str, counts: dict[str, Any], build: str) -> None:
    record(name, _figure(counts, build),
           {"cases": len(counts["cases"]), "wrong_errors": 0, "truncated": counts["truncated"],
            "right_bytes": counts["right_bytes"], "build": build},
           f"python3 -m pytest -s tests/reliability/test_truncation_pause.py::{name}")


def test_held_reads_racing_truncation_end_with_truncated_error_or_right_bytes(
        scratch: str) -> None:
    counts = truncation_pause.run_cases(scratch)
    _check(counts)
    _record("test_held_reads_racing_truncation_end_with_truncated_error_or_right_bytes",
            counts, "release build")


def test_held_reads_racing_truncation_under_address_and_undefined_behaviour_sanitizers(
        scratch: str, asan_build: Path) -> None:
    env = sanitizers.environment("address", asan_build)
    completed = subprocess.run(
        sanitizers.child_command("tests.support.children.truncation_pause",
                                 [os.path.join(scratch, "held-reads")]),
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=child_timeout_s,
        preexec_fn=sanitizers.raise_address_space_limit, check=False)
    reports = sanitizers.reports(completed.stderr)
    assert not reports, "sanitizer reports:\n" + "\n".join(reports) + completed.stderr[-4000:]
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"exit {completed.returncode}, no counts; stderr:\n{completed.stderr[-4000:]}"
    counts: dict[str, Any] = json.loads(lines[-1])
    _check(counts)
    assert completed.returncode == 0, completed.stderr[-4000:]
    _record("test_held_reads_racing_truncation_under_address_and_undefined_behaviour_sanitizers",
            counts, "ASan+UBSan build")


def test_a_read_pause_holds_the_disk_read_after_the_ones_it_lets_through_and_no_memory_read(
        scratch: str) -> None:
    # The hook itself: `after` disk reads pass, the next one is held until released, a read
    # answered from memory never reaches the point, and one arming holds one read.
    log = FasterLog.open(os.path.join(scratch, "pause"), **truncation_pause.pause_settings)
    try:
        entries = truncation_pause.fill(log)
        first, second = sorted(entries)[:2]
        newest = max(entries)
        with pause_read(log, at="before-pread", after=1) as pause:
            assert log.read(newest) == entries[newest]  # from memory: not held
            assert log.read(first) == entries[first]  # the one disk read let through
            answer: dict[str, Any] = {}
            reader = threading.Thread(target=lambda: answer.update(entry=log.read(second)))
            reader.start()
            assert pause.wait_held(10.0)
            reader.join(0.2)
            assert reader.is_alive(), "the held read returned before its release"
            assert pause.release()
            reader.join(10.0)
            assert answer == {"entry": entries[second]}
            assert log.read(second) == entries[second]  # disarmed after one
            assert not pause.wait_held(0.05)
            assert not pause.release()
    finally:
        log.close()
