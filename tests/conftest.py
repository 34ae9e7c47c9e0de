"""Shared fixtures: a fresh log directory and an open log with small settings.

The I/O backend comes from FASTERLOG_IO_BACKEND (the test script runs the whole suite once per
backend), so every test here runs against io_uring and against the plain backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def io_backend_expected() -> str:
    forced = os.environ.get("FASTERLOG_IO_BACKEND", "")
    return forced or "auto"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Any]:
    """A RESP server (tests.support.servers.RunningServer) on a fresh log, for the service
    tests; imported here, not at the top, so the log's own tests never load the service."""
    from tests.support.servers import RunningServer

    server = RunningServer(tmp_path / "data")
    yield server
    server.stop()
