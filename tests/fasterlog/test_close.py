"""Close against calls in flight, and the page-fill case that hung appends (issue 14).

Goal: after close() every public call raises LogClosedError, also the ones that used to end
quietly (a scan of an empty range); a wait in progress ends with LogClosedError; a close from
a second thread returns once the first is done; appends whose frames fill pages exactly never
hang. The racing cases (close under appends, commits, reads; truncation under readers) are the
stresses of tests/reliability/test_reliability_races.py.

Method: real logs in temporary directories; the hang runs in a child with a timeout, since a
spinning append cannot be stopped from the test.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from fasterlog import FasterLog, LogClosedError
from tests.support.processes import ROOT, child_env
from tests.support.settings import CRASH_SETTINGS, SMALL_SETTINGS

HANG_SCRIPT = """
import sys
from fasterlog import FasterLog
log = FasterLog.open(sys.argv[1], page_size_bytes=4096, memory_size_bytes=4 * 4096,
                     segment_size_bytes=16 * 4096)
for _ in range(4096 // 16 * 8):  # 16-byte frames: eight rings' worth, no commit
    log.append(b"abcd")
assert log.tail_address > 7 * 4096
log.close()
"""


def test_appends_whose_frames_fill_pages_exactly_never_hang(tmp_path: Path) -> None:
    # Before: the full page was never sealed, so the claim of the next slot waited for a flush
    # that never came (the append spun forever).
    completed = subprocess.run([sys.executable, "-c", HANG_SCRIPT, str(tmp_path / "log")],
                               env=child_env(), cwd=ROOT, capture_output=True, text=True,
                               timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]


def test_every_call_on_a_closed_log_raises_log_closed_error(log_dir: Path) -> None:
    log = FasterLog.open(log_dir, **SMALL_SETTINGS)
    log.append(b"x")
    log.commit()
    empty_end = log.committed_until_address
    log.close()
    calls: list[Callable[[], object]] = [
        lambda: log.append(b"x"), lambda: log.try_append(b"x"),
        lambda: log.append_marker(b"m"), lambda: log.append_many([b"a", b"b"]),
        log.commit, log.complete, lambda: log.read(64), lambda: log.read_many([64]),
        lambda: list(log.scan()), lambda: list(log.scan(empty_end, empty_end)),
        log.verify, lambda: log.truncate_until(64, force=True),
        lambda: log.wait_for_commit(1 << 40, timeout=0.01),
        lambda: list(log.tail(timeout=0.01)),
    ]
    for call in calls:
        with pytest.raises(LogClosedError):
            call()
    assert log.closed
    log.close()  # a second close is a no-op


def test_close_ends_a_wait_in_progress_with_log_closed_error(log_dir: Path) -> None:
    log = FasterLog.open(log_dir, **CRASH_SETTINGS)
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            log.wait_for_commit(1 << 40)
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    log.close()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], LogClosedError)


def test_a_close_from_another_thread_returns_after_the_first_close(log_dir: Path) -> None:
    log = FasterLog.open(log_dir, **CRASH_SETTINGS)
    for _ in range(200):
        log.append(b"e" * 500)
    closers = [threading.Thread(target=log.close) for _ in range(3)]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(timeout=30)
    assert log.closed
    with FasterLog.open(log_dir, **CRASH_SETTINGS) as reopened:
        assert sum(1 for _ in reopened.scan()) == 200
