"""Fixtures of the server's tests: `running`, a RESP server in a thread on a fresh log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import RunningServer


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningServer]:
    """A RESP server (tests.support.servers.RunningServer) on 127.0.0.1, port 0, serving a
    fresh log in tmp_path / "data"; stopped after the test."""
    server = RunningServer(tmp_path / "data")
    yield server
    server.stop()
