"""A RESP client on a raw socket: what comes back is exactly what the server sent.

A client library reconnects after the server closes a connection; tests that check that a
connection stays open (or what a failed write was answered) need to see the close instead.
`call` sends one command and returns its reply, errors as resp.ErrorReply values (not raised).
"""

from __future__ import annotations

import socket
from typing import Any

from fasterlog_server import resp
from fasterlog_server.resp import NEED_MORE, ErrorReply, RespParser

reply_timeout_s = 10


class RawClient:
    """One connection to 127.0.0.1:`port`."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=reply_timeout_s)
        self.parser = RespParser()

    def send(self, *words: bytes | str | int) -> None:
        self.socket.sendall(resp.encode([str(word) if isinstance(word, int) else word
                                         for word in words]))

    def reply(self) -> Any:
        while True:
            value = self.parser.next_reply()
            if value is not NEED_MORE:
                return value
            chunk = self.socket.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.parser.feed(chunk)

    def call(self, *words: bytes | str | int) -> Any:
        self.send(*words)
        return self.reply()

    def close(self) -> None:
        self.socket.close()


def is_error(value: Any, prefix: bytes) -> bool:
    return isinstance(value, ErrorReply) and value.startswith(prefix)
