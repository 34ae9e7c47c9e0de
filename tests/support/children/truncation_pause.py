"""Reads held at a pause point of the C core's read path while truncation deletes their
segment: the deterministic form of the truncation race (issue 14 defect 3), run in the test's
own process by tests/reliability/test_truncation_pause.py and as a child under the sanitizer
builds.

Goal: a read, read_many or scan that passed its begin check and is then held, either before it
looks its segment up or between that lookup and its pread, while another thread truncates past
the segment and commits (which deletes the segment file), ends with TruncatedError naming the
new begin address, or succeeds with the right bytes. Never LogIOError EBADF (a pread on a
descriptor the truncation closed), never InvalidAddressError (a lookup that found its segment
gone from the table), never wrong bytes. Before the fix (commit 26f5b31) the first point gave
InvalidAddressError and the second EBADF, every time.

Method: for each call and pause point, a fresh log of 16 KiB segments (four 4 KiB pages, eight
pages of memory) gets entries into its fifth segment and a commit, so segment 0 is read from
its file, not from memory. `fasterlog.testing.pause_read` arms the point; a reader thread reads
segment 0 and is held there; another thread truncates until the start of segment 2 and
commits. Before the lookup the held read holds no lock, so the truncation must finish (within
truncation_done_max_s); between the lookup and the pread the fixed core makes it wait for the
read, so it is given truncation_wait_s to finish (the old core finished in milliseconds). Then
the read is released and its answer checked, and the segment files below the new begin must be
gone. Every wait is bounded; a thread that does not end is reported, not waited for.

Usage: python -m tests.support.children.truncation_pause DIRECTORY
Prints one JSON line (cases, wrong) and exits 0 when nothing was wrong, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fasterlog import FasterLog, errors
from fasterlog._fasterlog_c import ffi, lib
from fasterlog.testing import pause_read
from tests.support.faults import segment_path

pause_settings: dict[str, Any] = {
    "page_size_bytes": 4096,
    "memory_size_bytes": 8 * 4096,
    "segment_size_bytes": 4 * 4096,
}
segments_filled_count = 4  # entries up to the fifth segment: segments 0 and 1 leave memory
truncate_segment_index = 2  # truncation until the start of segment 2 deletes segments 0 and 1
held_wait_s = 10.0
truncation_done_max_s = 10.0
truncation_wait_s = 1.0
thread_join_s = 10.0
calls = ("read", "read_many", "scan")
points = ("before-segment-lookup", "before-pread")


def entry_for(sequence: int) -> bytes:
    return struct.pack("<Q", sequence) + bytes([sequence % 251]) * (100 + sequence % 97)


def fill(log: FasterLog) -> dict[int, bytes]:
    """Appends entries into the fifth segment and commits; returns them by address."""
    segment_size_bytes = pause_settings["segment_size_bytes"]
    end = segments_filled_count * segment_size_bytes + pause_settings["page_size_bytes"]
    entries: dict[int, bytes] = {}
    sequence = 0
    while log.tail_address < end:
        entry = entry_for(sequence)
        entries[log.append(entry)] = entry
        sequence += 1
    log.commit()
    return entries


def head_address(log: FasterLog) -> int:
    state = ffi.new("fl_state *")
    lib.fl_get_state(log.c_handle, state)
    return int(state.head_address)


Pairs = list[tuple[int, bytes]]


def call_for(log: FasterLog, call: str, addresses: list[int]) -> Callable[[], Pairs]:
    """The call under test, answering (address, entry) pairs."""
    first = addresses[0]
    if call == "read":
        return lambda: [(first, log.read(first))]
    if call == "read_many":
        return lambda: list(zip(addresses[:2], log.read_many(addresses[:2]), strict=True))
    return lambda: list(log.scan(first, pause_settings["segment_size_bytes"]))


def judge(answer: dict[str, Any], expected: Pairs, first: int, begin: int) -> tuple[str, str]:
    """(outcome, detail): "right bytes", "truncated" (naming `begin`) or "wrong"."""
    if "error" not in answer:
        pairs = answer["pairs"]
        # A scan may end early only by raising: a success answers every expected entry.
        if pairs == expected:
            return "right bytes", f"{len(pairs)} entries"
        return "wrong", f"wrong bytes: {len(pairs)} pairs, expected {len(expected)}"
    error = answer["error"]
    if isinstance(error, errors.TruncatedError):
        if error.begin_address == begin and first <= error.address < begin:
            return "truncated", str(error)
        return "wrong", (f"TruncatedError naming begin {error.begin_address} for address "
                         f"{error.address} (begin is {begin}): {error}")
    return "wrong", f"{type(error).__name__}: {error}"


def _run(target: Callable[[], object], into: dict[str, Any]) -> threading.Thread:
    def body() -> None:
        try:
            into["pairs"] = target()
        except Exception as error:  # noqa: BLE001 - every exception is an answer to judge
            into["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def _wait_done(thread: threading.Thread, timeout_s: float) -> bool:
    thread.join(timeout_s)
    return not thread.is_alive()


def race(log: FasterLog, directory: str, call: str, point: str) -> dict[str, Any]:
    """One held read racing one truncation; returns the case's result."""
    entries = fill(log)
    segment_size_bytes = pause_settings["segment_size_bytes"]
    begin = truncate_segment_index * segment_size_bytes
    addresses = sorted(address for address in entries if address < segment_size_bytes)
    expected = [(address, entries[address]) for address in addresses]
    if call != "scan":
        expected = expected[: 1 if call == "read" else 2]
    result: dict[str, Any] = {"call": call, "point": point}
    if head_address(log) <= addresses[-1]:
        return {**result, "outcome": "wrong", "detail": "segment 0 is still in memory"}
    answer: dict[str, Any] = {}
    truncation: dict[str, Any] = {}
    with pause_read(log, at=point) as pause:
        reader = _run(call_for(log, call, addresses), answer)
        if not pause.wait_held(held_wait_s):
            pause.release()
            _wait_done(reader, thread_join_s)
            return {**result, "outcome": "wrong", "detail": "the read was never held"}
        def truncate() -> int:
            log.truncate_until(begin, force=True)
            return log.commit()  # deletes the segments wholly below the new begin

        truncator = _run(truncate, truncation)
        started = time.monotonic()
        done = _wait_done(truncator, truncation_wait_s if point == "before-pread"
                          else truncation_done_max_s)
        result["truncation_waited_for_read"] = not done
        result["truncation_s"] = round(time.monotonic() - started, 3)
        held = pause.release()
    ended = _wait_done(reader, thread_join_s) and _wait_done(truncator, thread_join_s)
    if not ended:
        return {**result, "outcome": "wrong", "detail": "a thread did not end", "hung": True}
    outcome, detail = judge(answer, expected, addresses[0], begin)
    problems = []
    if not held:
        problems.append("the read was not held at the release")
    if point == "before-segment-lookup" and not done:
        problems.append("truncation did not finish while the read held no lock")
    if "error" in truncation:
        problems.append(f"truncation raised {truncation['error']!r}")
    if log.begin_address != begin:
        problems.append(f"begin address {log.begin_address}, not {begin}")
    left = [index for index in range(truncate_segment_index) if segment_path(
        Path(directory), index * segment_size_bytes, segment_size_bytes).exists()]
    if left:
        problems.append(f"segments {left} below the begin address were not deleted")
    if problems:
        outcome, detail = "wrong", "; ".join([*problems, detail])
    return {**result, "outcome": outcome, "detail": detail}


def run_cases(directory: str) -> dict[str, Any]:
    """Every call at every point, each on a fresh log under `directory` (removed after)."""
    os.makedirs(directory, exist_ok=True)
    cases = []
    for point in points:
        for call in calls:
            case_directory = os.path.join(directory, f"{call}-{point}")
            log = FasterLog.open(case_directory, **pause_settings)
            result = race(log, case_directory, call, point)
            if not result.get("hung"):
                log.close()  # a hung call would make close wait for it
                shutil.rmtree(case_directory)
            cases.append(result)
    wrong = [f"{case['call']} held {case['point']}: {case['detail']}" for case in cases
             if case["outcome"] == "wrong"]
    return {"cases": cases, "wrong": wrong,
            "truncated": sum(case["outcome"] == "truncated" for case in cases),
            "right_bytes": sum(case["outcome"] == "right bytes" for case in cases),
            "truncation_waited": sum(bool(case.get("truncation_waited_for_read"))
                                     for case in cases)}


def main() -> int:
    counts = run_cases(sys.argv[1])
    print(json.dumps(counts))
    return 1 if counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
