"""A small file system that fills up for real: a tmpfs of a few MiB mounted for one test.

`small_filesystem(size_bytes)` mounts a fresh tmpfs (as root: `mount -t tmpfs -o size=...`) on
a temporary directory and unmounts it afterwards; the test is skipped, with the reason, where
mounting is not allowed. `fill(directory)` writes a filler file until the file system refuses
(ENOSPC) and returns its path: deleting it gives the space back. Real ENOSPC from the kernel,
no injected fault, so every layer's handling of a full disk is what runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

mount_timeout_s = 30
fill_chunk_bytes = 64 << 10
fill_bytes_max = 1 << 30  # a bound, in case the mount is larger than asked


@contextlib.contextmanager
def small_filesystem(size_bytes: int) -> Iterator[str]:
    """A tmpfs of `size_bytes` mounted on a fresh directory, unmounted and removed on exit."""
    mount_point = tempfile.mkdtemp(prefix="fasterlog-fullfs-")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs",
                               mount_point], capture_output=True, timeout=mount_timeout_s,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        os.rmdir(mount_point)
        pytest.skip(f"cannot mount a small tmpfs: {error}")
    if done.returncode != 0:
        os.rmdir(mount_point)
        pytest.skip(f"cannot mount a small tmpfs (root needed): "
                    f"{done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", mount_point], capture_output=True,
                       timeout=mount_timeout_s, check=False)
        shutil.rmtree(mount_point, ignore_errors=True)


def fill(directory: str, name: str = "filler", leave_bytes: int = 0) -> str:
    """Writes `directory/name` until ENOSPC (or until only about `leave_bytes` are left);
    returns its path."""
    path = os.path.join(directory, name)
    chunk = b"\xa5" * fill_chunk_bytes
    written = 0
    with open(path, "wb", buffering=0) as filler:
        while written < fill_bytes_max:
            if leave_bytes and free_bytes(directory) - len(chunk) < leave_bytes:
                break
            try:
                written += filler.write(chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
    return path


def free_bytes(directory: str) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
