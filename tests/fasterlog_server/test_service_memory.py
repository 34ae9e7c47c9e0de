"""Memory the server gives back and bounds (issue 14 defects 6 and 13): connections hold no
reference cycles, so what a closed connection held is freed by reference counting alone; the
output limit counts replies as they are built; MULTI queues, query buffers and idle half-sent
requests are bounded.

Method: a real server in this process, on asyncio's loop and on uvloop, with real sockets on
127.0.0.1. Cycles are looked for with the cyclic GC switched off: weak references to the
connections and their readers must die once the sockets close. Bounds are checked on the
bytes the server sends and on what it holds (its connections' buffered sizes).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import tracemalloc
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from fasterlog import FasterLog
from fasterlog_server import Server, ServerSettings, resp
from tests.support.servers import RunningServer
from tests.support.settings import SMALL_SETTINGS

redis = pytest.importorskip("redis")

try:
    import uvloop
except ImportError:  # optional: the asyncio rows still run
    uvloop = None  # type: ignore[assignment]

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop is not installed"))]


def command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def run_with_server(directory: Path, loop_name: str,
                    body: Callable[[Server], Awaitable[None]], **settings: object) -> None:
    async def main() -> None:
        log = FasterLog.open(directory, **SMALL_SETTINGS)
        server = Server(log, ServerSettings(port=0, **settings))  # type: ignore[arg-type]
        await server.start()
        try:
            await body(server)
        finally:
            await server.close()
            log.close()

    if loop_name == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ defect 13: no cycles

@pytest.mark.parametrize("loop_name", LOOPS)
def test_closed_connections_are_freed_without_the_cyclic_gc(tmp_path: Path,
                                                            loop_name: str) -> None:
    """4 rounds of 8 connections that each send most of a 4 MiB bulk string, one that sends
    a malformed frame and one blocked in XREAD, then hang up (half of them with a reset).
    With the cyclic GC off, every connection and its reader (which holds the buffered bytes)
    must be gone once the sockets are closed: before the fix the reader held a bound method
    of itself and the exception that failed it (whose traceback held the connection), so
    each round's buffers stayed until the cyclic GC ran (RSS 45 -> 525 -> ... -> 1,965 MB in
    the issue's rounds of 60 MiB)."""
    bulk_size_bytes = 4 << 20
    half_sent = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % bulk_size_bytes + \
        b"x" * (bulk_size_bytes - 1024)
    # (sent first, sent once the connections are looked at): the malformed frame fails the
    # reader of a connection the test already holds a weak reference to.
    payloads = [(half_sent, b"")] * 8 + [
        (b"*1\r\n$4\r\nPING", b"XX\r\n"),
        (command(b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$"), b"")]

    async def body(server: Server) -> None:
        loop = asyncio.get_running_loop()
        for round_index in range(4):
            sockets = []
            for first, _ in payloads:
                client = socket.create_connection(("127.0.0.1", server.port))
                client.setblocking(False)
                await loop.sock_sendall(client, first)
                sockets.append(client)
            await wait_until(lambda: len(server.connections) == len(payloads))
            await asyncio.sleep(0.1)  # the last bytes are read
            references = [(weakref.ref(connection), weakref.ref(connection.codec))
                          for connection in server.connections]
            for client, (_, second) in zip(sockets, payloads, strict=True):
                await loop.sock_sendall(client, second)
            await asyncio.sleep(0.05)
            for index, client in enumerate(sockets):
                if index % 2:  # a reset, not a FIN
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                client.close()
            await wait_until(lambda: len(server.connections) == 0)
            for _ in range(5):
                await asyncio.sleep(0.01)  # the transports' last callbacks run
            alive = [connection for connection, codec in references
                     if connection() is not None or codec() is not None]
            assert not alive, f"round {round_index}: {len(alive)} connections still alive"

    gc.collect()
    gc.disable()
    try:
        run_with_server(tmp_path / "data", loop_name, body)
    finally:
        gc.enable()


# ------------------------------------------------------------------ MULTI queue bounds

class RawClient:
    """One connection that sends commands and parses the replies (no client library: its
    response callbacks would reinterpret QUEUED and errors)."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.parser = resp.RespParser()

    def __call__(self, *words: bytes | str) -> Any:
        self.socket.sendall(command(*(w.encode() if isinstance(w, str) else w for w in words)))
        while (reply := self.parser.next_reply()) is resp.NEED_MORE:
            chunk = self.socket.recv(1 << 16)
            assert chunk, "closed by the server"
            self.parser.feed(chunk)
        return reply

    def close(self) -> None:
        self.socket.close()


def test_a_multi_queue_past_its_bounds_is_discarded_and_exec_aborts(tmp_path: Path) -> None:
    """Issue 14 defect 6: MULTI queued without bound (a million commands: 485 MB, EXEC 5.7 s
    on the loop). Past multi_queue_count_max or multi_queue_size_max_bytes the command gets an
    error, the queue is dropped, later commands are refused alike and EXEC answers EXECABORT
    (Redis's answer after a command that failed to queue); nothing of it is applied."""
    server = RunningServer(tmp_path / "data", multi_queue_count_max=5,
                           multi_queue_size_max_bytes=4096)
    client = RawClient(server.port)
    try:
        # The count bound: five queue, the sixth and later are refused.
        assert client("MULTI") == b"OK"
        for index in range(5):
            assert client("SET", f"k{index}", "v") == b"QUEUED"
        for index in range(5, 8):
            refused = client("SET", f"k{index}", "v")
            assert isinstance(refused, resp.ErrorReply)
            assert b"multi_queue_count_max 5 " in refused
        assert client("EXEC").startswith(b"EXECABORT")
        assert client("MGET", *(f"k{index}" for index in range(8))) == [None] * 8
        # The bytes bound: 4 KiB of queued arguments.
        assert client("MULTI") == b"OK"
        assert client("SET", "small", "v") == b"QUEUED"
        assert b"multi_queue_size_max_bytes 4096" in client("SET", "big", b"x" * 4096)
        assert client("EXEC").startswith(b"EXECABORT")
        assert client("GET", "small") is None
        # Within the bounds a transaction runs as before, and DISCARD clears an overflow.
        assert client("MULTI") == b"OK"
        for _ in range(5):
            assert client("SET", "x", "y") == b"QUEUED"
        assert client("EXEC") == [b"OK"] * 5
        assert client("MULTI") == b"OK"
        for _ in range(6):
            client("SET", "x", "z")
        assert client("DISCARD") == b"OK"
        assert client("GET", "x") == b"y"
    finally:
        client.close()
        server.stop()


# ------------------------------------------------------------------ query buffers

def closed_by_server(client: socket.socket, timeout_s: float) -> bool:
    client.settimeout(timeout_s)
    try:
        return client.recv(1 << 16) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_a_half_sent_request_left_idle_is_disconnected_after_request_timeout_s(
        tmp_path: Path) -> None:
    """Issue 14 defect 6: a half-sent bulk was held for as long as its client liked (20 x
    60 MiB: 1,248 MB for 15 s and more). After request_timeout_s without a byte its client is
    disconnected; an idle client with nothing half-sent stays, and so does one that keeps
    sending."""
    server = RunningServer(tmp_path / "data", request_timeout_s=0.5)
    half_sent = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n" + b"x" * 500_000
    idle = socket.create_connection(("127.0.0.1", server.port))
    stalled = socket.create_connection(("127.0.0.1", server.port))
    trickling = socket.create_connection(("127.0.0.1", server.port))
    try:
        stalled.sendall(half_sent)
        trickling.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n")
        for _ in range(10):  # a byte every 0.1 s for a second
            trickling.sendall(b"x")
            assert not closed_by_server(trickling, 0.1)
        assert closed_by_server(stalled, 5)
        assert not closed_by_server(idle, 0.1)
        idle.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert idle.recv(64) == b"+PONG\r\n"
    finally:
        for client in (idle, stalled, trickling):
            client.close()
        server.stop()


def test_past_client_buffers_size_max_bytes_the_biggest_holder_is_disconnected(
        tmp_path: Path) -> None:
    """Issue 14 defect 6: nothing bounded the query buffers of all clients together. With
    client_buffers_size_max_bytes of 8 MiB, four clients that each send 3 MiB of a 4 MiB bulk
    cannot all stay: the biggest holders are cut until the total is within the bound (the
    count never passes it by more than one read), and the server answers others."""
    server = RunningServer(tmp_path / "data", client_buffers_size_max_bytes=8 << 20)
    bulk_size_bytes = 4 << 20
    half_sent = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % bulk_size_bytes + b"x" * (3 << 20)
    clients = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for client in clients:
            client.sendall(half_sent)
        closed = [closed_by_server(client, 2) for client in clients]
        assert 1 <= sum(closed) <= 2
        assert server.server.connections.buffers_size_bytes <= 8 << 20
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as other:
            other.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert other.recv(64) == b"+PONG\r\n"
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_exec_reply_is_bounded_while_it_is_built_and_the_transaction_still_runs(
        tmp_path: Path) -> None:
    """Inside EXEC a streamed reply (MGET, XRANGE...) is built whole, and 200 queued MGETs of
    2 MiB each built 400 MiB before the output limit was looked at. Now EXEC counts its reply
    as it builds it: past output_buffer_size_max_bytes the rest of the queue still runs (a SET
    queued last is applied) but no more of the reply is kept, and the client gets an error
    and is disconnected."""
    server = RunningServer(tmp_path / "data", output_buffer_size_max_bytes=1 << 20)
    try:
        client = redis.Redis(port=server.port)
        client.mset({f"k{index}": b"x" * (32 << 10) for index in range(64)})  # 2 MiB
        mget = resp_command(b"MGET", *(b"k%d" % index for index in range(64)))
        request = (resp_command(b"MULTI") + mget * 200 + resp_command(b"SET", b"last", b"1")
                   + resp_command(b"EXEC"))
        tracemalloc.start()
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(request)
                received = b""
                while chunk := sock.recv(1 << 20):
                    received += chunk
            peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert received.endswith(b"-ERR EXEC reply over the client's output buffer limit "
                                 b"(1048576 bytes): the transaction ran, the connection is "
                                 b"closed\r\n"), received[-200:]
        assert peak_bytes < 48 << 20, f"peak {peak_bytes >> 20} MiB while EXEC ran"
        assert client.get("last") == b"1"  # the queue ran to its end
        assert client.ping() is True
    finally:
        server.stop()


def resp_command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
