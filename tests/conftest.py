"""Fixtures shared by the whole suite: a fresh log directory and an open log with small
settings. Each folder's conftest.py adds the fixtures of its own tests.

The I/O backend comes from FASTERLOG_IO_BACKEND (the test script runs the whole suite once per
backend), so every test here runs against io_uring and against the plain backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fasterlog import FasterLog
from tests.support.settings import SMALL_SETTINGS


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def small_log(log_dir: Path) -> Iterator[FasterLog]:
    log = FasterLog.open(log_dir, **SMALL_SETTINGS)
    try:
        yield log
    finally:
        log.close()
