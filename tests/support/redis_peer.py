"""A private redis-server for differential tests: the same requests go to it and to ours.

Debian's redis-server 7.0 (scripts/setup.sh installs it), started on 127.0.0.1 on a free port
with persistence off and its files in the test's directory, and stopped by its own pid. Tests
that need it are marked `needs_redis` and skip, saying why, where it is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .servers import RunningServer

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed "
                                 "(scripts/setup.sh installs it)")
redis_start_timeout_s = 30
redis_stop_timeout_s = 30
reply_timeout_s = 10


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def redis_peer(directory: Path, *arguments: str, port: int | None = None) -> Iterator[int]:
    """Runs redis-server with `arguments` (e.g. "--maxclients", "2") and yields its port once
    it accepts connections."""
    assert REDIS_SERVER is not None, "mark the test needs_redis"
    port = free_port() if port is None else port
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory),
         "--logfile", str(directory / "redis.log"), *arguments],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + redis_start_timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, f"redis-server exited {process.returncode}"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()  # our own child, by pid
        process.wait(redis_stop_timeout_s)


@contextmanager
def ours_and_redis(directory: Path) -> Iterator[tuple[int, int]]:
    """Our server (in `directory`/data, default settings) and a redis-server (in
    `directory`/redis) for a differential test: yields their ports, ours first."""
    ours = RunningServer(directory / "data")
    try:
        with redis_peer(directory / "redis") as port:
            yield ours.port, port
    finally:
        ours.stop()


def command(*words: bytes | str) -> bytes:
    """A RESP array of bulk strings."""
    data = [word.encode() if isinstance(word, str) else word for word in words]
    return b"*%d\r\n" % len(data) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in data)


def exchange(port: int, payload: bytes) -> bytes:
    """Sends `payload` (which ends with PING where the connection should stay open) on a fresh
    connection and returns what comes back until the PING's reply or a close (b"<EOF>"
    appended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=reply_timeout_s) as connection:
        connection.sendall(payload)
        received = b""
        while not received.endswith(b"+PONG\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                return received + b"<EOF>"
            received += chunk
    return received
