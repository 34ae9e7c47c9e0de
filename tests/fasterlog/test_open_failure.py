"""A failed first open leaves nothing that blocks a retry.

Goal: creating a log on a disk too small for its first segment fails (the preallocation hits
ENOSPC, or the file size limit), and a retry with a smaller segment size must then succeed:
the failed open used to leave its meta file (and a partly allocated segment) behind, so the
retry was refused with SettingsError ("segment_size_bytes ... differs from the log's").

Method: real file systems. A 2 MiB tmpfs mounted for the test (root only; skipped elsewhere)
gives a real ENOSPC; a child process with RLIMIT_FSIZE of 2 MiB gives EFBIG on any machine.
Each then retries with segments that fit, and the log works and survives a reopen.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fasterlog import FasterLog, errors

TOO_LARGE = {"page_size_bytes": 64 << 10, "memory_size_bytes": 256 << 10,
             "segment_size_bytes": 4 << 20}
FITS = {**TOO_LARGE, "segment_size_bytes": 512 << 10}


@contextlib.contextmanager
def small_tmpfs(size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted on a fresh directory (skips the test without root)."""
    mount_point = Path(tempfile.mkdtemp(prefix="fasterlog-small-tmpfs-"))
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                                 str(mount_point)], capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs: {result.stderr.decode().strip()}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
    finally:
        mount_point.rmdir()


def test_failed_first_open_on_a_full_disk_leaves_nothing_and_a_retry_succeeds() -> None:
    with small_tmpfs(2 << 20) as mount_point:
        directory = mount_point / "log"
        with pytest.raises(errors.DiskFullError):
            FasterLog.open(directory, **TOO_LARGE)
        assert sorted(os.listdir(directory)) == ["fasterlog.lock"]
        with FasterLog.open(directory, **FITS) as log:
            address = log.append(b"after the retry")
            log.commit()
        with FasterLog.open(directory) as log:
            assert log.read(address) == b"after the retry"
            assert log.settings["segment_size_bytes"] == FITS["segment_size_bytes"]


CHILD = """
import os, resource, signal, sys
from fasterlog import FasterLog, errors
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = 2 << 20
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
directory, too_large, fits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sizes = {"page_size_bytes": 64 << 10, "memory_size_bytes": 256 << 10}
try:
    FasterLog.open(directory, segment_size_bytes=too_large, **sizes)
except errors.FasterLogError as error:
    print("first open failed:", type(error).__name__)
else:
    sys.exit("the first open should have failed")
print("left:", sorted(os.listdir(directory)))
with FasterLog.open(directory, segment_size_bytes=fits, **sizes) as log:
    log.append(b"x")
    log.commit()
print("retry opened")
"""


def test_failed_first_open_over_the_file_size_limit_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(directory), str(TOO_LARGE["segment_size_bytes"]),
         str(FITS["segment_size_bytes"])],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left: ['fasterlog.lock']" in result.stdout
    assert "retry opened" in result.stdout
