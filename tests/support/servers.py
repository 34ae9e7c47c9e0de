"""A RESP server in a thread of the test process, one in a child process, and a raw-socket
exchange with them.

RunningServer opens a log with SMALL_SETTINGS in `directory`, serves it on 127.0.0.1 with port
0 (the port it got is `.port`) from a thread running its own event loop, and stop() closes the
server, the loop and the log. Restarting on the same directory is how durability is checked.
ServeProcess runs `python -m fasterlog serve` as a child (kill -9 tests), on a log made with
SERVE_SETTINGS, and reads its port from the start line on stderr.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fasterlog import FasterLog
from fasterlog_server.server import Server, ServerSettings, open_log

from .settings import SMALL_SETTINGS

server_start_timeout_s = 30
serve_process_start_timeout_s = 60
raw_exchange_timeout_s = 10
# The serve child's log sizes: small segments (the server keeps the sizes of an existing log and
# gives its KV log the same), so no test preallocates the default 1 GiB segments.
SERVE_SETTINGS: dict[str, Any] = {"page_size_bytes": 65536, "memory_size_bytes": 1 << 20,
                                  "segment_size_bytes": 4 << 20}


class RunningServer:
    def __init__(self, directory: Path, **settings: object) -> None:
        self.directory = directory
        self.settings = ServerSettings(port=0, **settings)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(server_start_timeout_s)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.log = open_log(str(self.directory), self.settings, **SMALL_SETTINGS)
        self.server = Server(self.log, self.settings)
        self.loop.run_until_complete(self.server.start())
        self.port = self.server.port
        self.started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.log.close()
        self.loop.close()


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Sends `payload` on a fresh connection and returns every byte received until the server
    closes it or is silent for raw_exchange_timeout_s."""
    address = ("127.0.0.1", port)
    with socket.create_connection(address, timeout=raw_exchange_timeout_s) as connection:
        connection.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


class ServeProcess:
    """`python -m fasterlog serve` on `directory` with `arguments`, port read from stderr
    (`started_line`: what the start line says in brackets, where the KV view started)."""

    def __init__(self, directory: Path, *arguments: str) -> None:
        if not directory.exists():
            FasterLog.open(directory, **SERVE_SETTINGS).close()
        self.stderr_path = directory.parent / f"serve-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fasterlog", "serve", "--dir", str(directory),
                 "--port", "0", *arguments], stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + serve_process_start_timeout_s
        while True:
            text = self.stderr_path.read_text(errors="replace")
            found = re.search(r"serving .* on [0-9.]+:(\d+)(?: \((.*)\))?", text)
            if found:
                self.port = int(found.group(1))
                self.started_line = found.group(2) or ""
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"server did not start: {text}")
            time.sleep(0.01)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL of our own child, by pid
        self.process.wait(30)
