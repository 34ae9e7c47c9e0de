"""Child process for the close race stress (tests/reliability/test_reliability_races.py): rounds
of threads that append, commit, read, scan and ask for state while another thread closes the
log under them.

Goal: a close racing the log's other calls must never crash the process (the parent counts a
death by signal as a crash: this runs in a child so that a SIGSEGV, or an AddressSanitizer
report, is a failed round and not a lost test run) and must make every call that loses the race
raise LogClosedError, never another error (issue 14 defects 1 and 2).

Method: each round opens a log with a tiny memory ring (appends keep taking the slow path that
waits for page writes, where the crash was), starts `threads` workers and, after a random
delay of a few milliseconds, closes the log from the main thread while they run. A worker
ends at its first LogClosedError; any other exception is a wrong error. After the close every
public call is tried once more and must raise LogClosedError (or answer, for the state
properties). The log is then reopened: it must open, and what was committed must be readable.

Usage: python -m tests.support.children.close_race DIRECTORY ROUNDS SEED
Prints one JSON line {"rounds", "closed_errors", "wrong_errors": [...]} and exits 0 when no
wrong error was seen, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from fasterlog import FasterLog, errors

threads_count = 4
# A ring of four 4 KiB pages and 16-page segments: the slow paths run all the time.
race_settings: dict[str, Any] = {
    "page_size_bytes": 4096,
    "memory_size_bytes": 4 * 4096,
    "segment_size_bytes": 16 * 4096,
}
close_delay_max_s = 0.01
wrong_errors_kept_max = 20


def _worker(log: FasterLog, index: int, wrong: list[str], closed: list[int],
            lock: threading.Lock) -> None:
    rng = random.Random(index)
    entry = bytes([index % 256]) * rng.randrange(16, 900)
    try:
        while True:
            choice = rng.randrange(10)
            if choice < 5:
                log.append(entry)
            elif choice == 5:
                log.append_many([entry] * 3)
            elif choice == 6:
                log.commit()
            elif choice == 7:
                for _ in log.scan():
                    pass
            elif choice == 8:
                committed = log.committed_until_address
                if committed > log.begin_address:
                    log.read(log.begin_address)
            else:
                log.wait_for_commit(log.tail_address, timeout=0.001)
    except errors.LogClosedError:
        with lock:
            closed[0] += 1
    except Exception as error:  # noqa: BLE001 - every other exception is what this counts
        with lock:
            if len(wrong) < wrong_errors_kept_max:
                wrong.append(f"worker {index}: {type(error).__name__}: {error}")
            else:
                wrong.append("")


def _after_close(log: FasterLog) -> list[str]:
    """Every public call on the closed log must raise LogClosedError."""
    calls: list[tuple[str, Callable[[], object]]] = [
        ("append", lambda: log.append(b"x")),
        ("append_many", lambda: log.append_many([b"x", b"y"])),
        ("commit", log.commit),
        ("read", lambda: log.read(64)),
        ("scan", lambda: list(log.scan(64, 128))),
        ("truncate_until", lambda: log.truncate_until(64, force=True)),
        ("wait_for_commit", lambda: log.wait_for_commit(1 << 40, timeout=0.01)),
    ]
    wrong = []
    for name, call in calls:
        try:
            call()
        except errors.LogClosedError:
            continue
        except Exception as error:  # noqa: BLE001 - counted
            wrong.append(f"{name} after close: {type(error).__name__}: {error}")
            continue
        wrong.append(f"{name} after close returned instead of raising LogClosedError")
    if not log.closed:
        wrong.append("closed is False after close")
    return wrong


def run_round(directory: str, seed: int, wrong: list[str]) -> int:
    """One round; returns how many workers ended with LogClosedError."""
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    log = FasterLog.open(directory, **race_settings)
    closed = [0]
    lock = threading.Lock()
    workers = [threading.Thread(target=_worker, args=(log, seed * 100 + i, wrong, closed, lock))
               for i in range(threads_count)]
    for worker in workers:
        worker.start()
    time.sleep(random.Random(seed).uniform(0, close_delay_max_s))
    try:
        log.close()
    except Exception as error:  # noqa: BLE001 - counted
        wrong.append(f"close: {type(error).__name__}: {error}")
    for worker in workers:
        worker.join()
    wrong.extend(_after_close(log))
    with FasterLog.open(directory, **race_settings) as reopened:
        for _ in reopened.scan():
            pass
    return closed[0]


def main() -> int:
    directory, rounds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    wrong: list[str] = []
    closed_errors = 0
    for round_index in range(rounds):
        closed_errors += run_round(os.path.join(directory, "log"), seed + round_index, wrong)
    print(json.dumps({"rounds": rounds, "closed_errors": closed_errors,
                      "wrong_errors": [text for text in wrong if text],
                      "wrong_errors_count": len(wrong)}))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
