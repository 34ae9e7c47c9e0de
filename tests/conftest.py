"""Fixtures shared by the whole suite (a fresh log directory and an open log with small
settings) and the one long-mode switch. Each folder's conftest.py adds the fixtures of its own
tests.

The I/O backend comes from FASTERLOG_IO_BACKEND (the test script runs the whole suite once per
backend), so every test here runs against io_uring and against the plain backend.

The long mode is `--long` (tests/support/mode.py says what it changes): without it, as in CI,
tests marked `slow` are skipped, counts are short and the hypothesis profile is "ci"; with it,
the slow tests run, counts are long and the profile is "long".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fasterlog import FasterLog
from tests.support import mode
from tests.support.settings import SMALL_SETTINGS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="long mode: run the tests marked slow, use the long counts, load the "
                          "hypothesis profile 'long' (CI runs without it)")


def pytest_configure(config: pytest.Config) -> None:
    # The switch used to be an environment variable; a run that still sets it would silently
    # get the short counts, so it is refused.
    if os.environ.get("FASTERLOG_LONG"):
        raise pytest.UsageError("FASTERLOG_LONG is retired: pass --long to pytest instead")
    mode.configure(long_mode=bool(config.getoption("long")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if mode.is_long():
        return
    skip_slow = pytest.mark.skip(reason="a long-running variant: runs with --long")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip_slow)


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
