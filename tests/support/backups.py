"""What the online-backup tests share: a live writer in another process, and the check that a
copy holds a gap-free run of its entries.

The API-level test (tests/reliability/test_damage.py) and the command-line one
(tests/fasterlog_cli/test_cli_backup.py) both back up a log that
tests/support/children/backup_writer.py writes and truncates meanwhile; entry i of that log
is `i` as 8 little-endian bytes repeated 12 times, so any copy can be checked alone.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fasterlog import FasterLog

from .processes import child_env

writer_seconds_max = 120  # the writer stops by itself after this, should its parent die
entry_size_bytes = 96


@contextmanager
def live_writer(source: Path) -> Iterator[subprocess.Popen[str]]:
    """Starts the backup writer on `source` and yields it once its log is open; kills it at
    the end of the block."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.children.backup_writer", str(source),
         str(writer_seconds_max)],
        stdout=subprocess.PIPE, env=child_env(), text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        yield writer
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()


def consecutive_entries(directory: Path) -> tuple[int, int, int]:
    """Opens a copy; returns (first index, last index, committed-until) after checking that
    its checksums hold and its entries are consecutive numbers of the backup writer."""
    with FasterLog.open(directory, readonly=True) as copy:
        assert copy.verify() == copy.committed_until_address
        indexes = []
        for _, entry in copy.scan():
            assert len(entry) == entry_size_bytes and entry == entry[:8] * 12, (
                "an entry is damaged")
            indexes.append(int.from_bytes(entry[:8], "little"))
        committed = copy.committed_until_address
    assert indexes, "the copy holds no entry"
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes))), "a gap in the copy"
    return indexes[0], indexes[-1], committed
