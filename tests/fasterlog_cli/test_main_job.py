"""The README's main job: `fasterlog serve` with no arguments, on a fresh machine.

Goal: the first command a user runs (scripts/serve.sh ends in `python3 -m fasterlog serve`)
works in an empty working directory, creates its default data directory ./data/server (whose
parent does not exist yet), answers redis clients, stops gracefully on SIGTERM, and the next
start recovers what was acknowledged. Method: run it as a user does, in a fresh directory,
with only --port added (0: any free port, read back from its first line).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.support.cli import assert_one_error_line, run_cli


def start(cwd: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    stderr_path = cwd / f"serve-{time.monotonic_ns()}.err"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "fasterlog", "serve", "--port", "0"],
                                   cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while True:
        found = re.search(r"serving (\S+) on [0-9.]+:(\d+)", stderr_path.read_text())
        if found:
            return process, int(found.group(2)), Path(found.group(1))
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the server did not start: {stderr_path.read_text()}")
        time.sleep(0.01)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_without_arguments_creates_its_data_directory_and_recovers_after_sigterm(
        tmp_path: Path) -> None:
    process, port, directory = start(tmp_path)
    try:
        assert directory == Path("data/server")
        assert (tmp_path / "data" / "server" / "fasterlog.meta").is_file()
        client = redis.Redis(port=port, socket_timeout=30)
        first = client.xadd("events", {"kind": "signup"})
        assert client.set("user:1", "alice")
        client.close()
    finally:
        assert stop(process) == 0
    process, port, _ = start(tmp_path)
    try:
        client = redis.Redis(port=port, socket_timeout=30)
        assert client.xrange("events") == [(first, {b"kind": b"signup"})]
        assert client.get("user:1") == b"alice"
        client.close()
    finally:
        assert stop(process) == 0


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_on_a_port_out_of_range_is_a_usage_error_that_writes_nothing(
        tmp_path: Path, port: str) -> None:
    """The socket layer takes a port modulo 2^16: `serve --port 70000` served on 4464, after
    creating its two logs (issue 15's papercuts; it was a traceback once)."""
    result = run_cli("serve", "--dir", tmp_path / "data", "--port", port)
    line = assert_one_error_line(result, status=2)
    assert "port must be an int from 0 to 65535" in line
    assert not (tmp_path / "data").exists()
