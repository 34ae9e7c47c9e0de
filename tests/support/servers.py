"""A RESP server in a thread of the test process, and a raw-socket exchange with it.

RunningServer opens a log with SMALL_SETTINGS in `directory`, serves it on 127.0.0.1 with port
0 (the port it got is `.port`) from a thread running its own event loop, and stop() closes the
server, the loop and the log. Restarting on the same directory is how durability is checked.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from fasterlog_server.server import Server, ServerSettings, open_log

from .settings import SMALL_SETTINGS

server_start_timeout_s = 30
raw_exchange_timeout_s = 10


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
