"""Scratch directories on tmpfs, for sweeps that open and recover a log thousands of times.

Each open writes and syncs the meta file; on tmpfs (/dev/shm, when the machine has one) that
stays fast. What a real disk does is what the I/O traces model, not what this directory does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def tmpfs_directory(prefix: str = "fasterlog-") -> Iterator[str]:
    """A fresh directory on tmpfs (or in the default temporary place), removed on exit."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    directory = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
