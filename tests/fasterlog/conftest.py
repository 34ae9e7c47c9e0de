"""Fixtures of the log package's tests (log_dir and small_log come from tests/conftest.py)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def io_backend_expected() -> str:
    """The backend FASTERLOG_IO_BACKEND forces for this run, or "auto"."""
    forced = os.environ.get("FASTERLOG_IO_BACKEND", "")
    return forced or "auto"
