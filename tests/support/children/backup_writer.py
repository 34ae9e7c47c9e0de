"""A writer for the online-backup test: appends numbered entries to the log in argv[1],
commits every few, and truncates now and then so a backup races segment deletion, until
killed (or argv[2] seconds pass). Prints "ready" once the log is open.

Entry i is `i` as 8 little-endian bytes repeated 12 times (96 bytes), so any copy can be
checked alone: its entries must be consecutive numbers, each well formed.
"""

from __future__ import annotations

import sys
import time

from fasterlog import FasterLog
from tests.support.settings import CRASH_SETTINGS

ENTRIES_PER_COMMIT = 7
ENTRIES_PER_TRUNCATION = 600
ENTRIES_KEPT = 400


def entry(index: int) -> bytes:
    return index.to_bytes(8, "little") * 12


def main() -> None:
    directory, seconds = sys.argv[1], float(sys.argv[2])
    deadline = time.monotonic() + seconds
    with FasterLog.open(directory, **CRASH_SETTINGS) as log:
        print("ready", flush=True)
        addresses: list[int] = []
        index = 0
        while time.monotonic() < deadline:
            addresses.append(log.append(entry(index)))
            index += 1
            if index % ENTRIES_PER_COMMIT == 0:
                log.commit()
            if index % ENTRIES_PER_TRUNCATION == 0:
                log.truncate_until(addresses[-ENTRIES_KEPT])
                del addresses[:-ENTRIES_KEPT]


if __name__ == "__main__":
    main()
