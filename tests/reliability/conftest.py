"""Fixtures of the reliability suite: `scratch`, a fresh directory on tmpfs for the sweeps
(the counts of long and short mode are tests/support/mode.py, the figures
tests/support/figures.py), and `asan_build`, the C core built with AddressSanitizer and
UndefinedBehaviorSanitizer once per session for the race tests (tests/support/sanitizers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import sanitizers
from tests.support.scratch import tmpfs_directory


@pytest.fixture
def scratch(request: pytest.FixtureRequest) -> Iterator[str]:
    """A directory on tmpfs named after the test module, removed after the test."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_reliability_")
    with tmpfs_directory(prefix=f"fasterlog-{module.replace('_', '-')}-") as directory:
        yield directory


@pytest.fixture(scope="session")
def asan_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The core built with -fsanitize=address,undefined (a PYTHONPATH entry)."""
    yield sanitizers.build_or_skip("address", tmp_path_factory)
