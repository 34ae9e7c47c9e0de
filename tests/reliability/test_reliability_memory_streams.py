"""Memory attacks through the stream replies (issue 14 item 4): XREAD, XREADGROUP (blocked
too), XCLAIM, XAUTOCLAIM, XINFO STREAM FULL and XPENDING asked for a reply far over the
server's output limit, from a client that reads only after 1 s. Each used to build its whole
reply before the output limit saw it (an XREAD of 100 MiB held several times that); now each
reply is streamed (fasterlog_server/streamed.py), so the server holds about one step of it.

Method: as tests/reliability/test_reliability_memory.py (its probe and helpers), with a server
of its own whose output_buffer_size_max_bytes is 4 MiB (16 MiB in --long, above an entry).
The figure per attack: the server's RSS rise at its peak against the limit plus a margin (one
streamed step, at most STREAM_STEP_SIZE_MAX_BYTES, one element and the allocator's slack:
32 MiB), and PING p99 and max. Acceptance: the reply arrives whole (it is far over the limit,
so a reply built whole disconnects the client), the rise stays within the bound, PING p99
under 100 ms. Short mode: entries of 1 MiB and a PEL of 200,000; --long: 10 MiB (the issue's
size) and 1,000,000.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fasterlog_server import resp
from tests.reliability.test_reliability_memory import (
    MIB,
    command,
    connect,
    read_replies,
    run_attack,
)
from tests.support.mode import scaled

# The server's output_buffer_size_max_bytes here: above one entry, since an element the socket
# cannot take whole is held whole, as in Redis (and far below the replies asked for).
OUTPUT_LIMIT_BYTES = scaled(4, 16) * MIB
BOUND_BYTES = OUTPUT_LIMIT_BYTES + 32 * MIB  # the limit plus the margin (module docstring)
ENTRY_SIZE_BYTES = scaled(1, 10) * MIB
ENTRIES_COUNT = scaled(100, 100)
PENDING_COUNT = scaled(200_000, 1_000_000)
TEST_FILE = "tests/reliability/test_reliability_memory_streams.py"
DELIVERY_COUNT = 50_000  # per XREADGROUP of the PEL's setup: its record fits a page


class StreamsServer:
    """The child server, its big stream's ids and the group `g` whose consumer c0 holds them
    all pending; the stream `pel` with PENDING_COUNT tiny entries pending in `g` too."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process, self.port, self.pid = process, port, process.pid
        self.ids: list[bytes] = []


@pytest.fixture(scope="module")
def streams_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamsServer]:
    page_size_bytes = scaled(4, 16) * MIB  # one entry fits a page
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.children.memory_server",
         str(tmp_path_factory.mktemp("memory_streams") / "data"), str(page_size_bytes),
         f"output_buffer_size_max_bytes={OUTPUT_LIMIT_BYTES}"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.stdout is not None
    server = StreamsServer(child, int(child.stdout.readline()))
    try:
        setup(server)
        yield server
    finally:
        child.terminate()
        child.wait(60)
        child.stdout.close()


def setup(server: StreamsServer) -> None:
    value = b"v" * ENTRY_SIZE_BYTES
    with connect(server.port) as sock:
        for _ in range(ENTRIES_COUNT):
            sock.sendall(command(b"XADD", b"big", b"*", b"f", value))
            server.ids.append(parsed_reply(sock))
        sock.sendall(command(b"XGROUP", b"CREATE", b"big", b"g", b"0"))
        read_replies(sock, 1)
        for _ in range(ENTRIES_COUNT):  # replies of one entry: within the limit
            sock.sendall(command(b"XREADGROUP", b"GROUP", b"g", b"c0", b"COUNT", b"1",
                                 b"STREAMS", b"big", b">"))
            read_replies(sock, 1)
        batch = command(b"XADD", b"pel", b"*", b"f", b"v") * 1000
        for _ in range(PENDING_COUNT // 1000):
            sock.sendall(batch)
            read_replies(sock, 1000)
        sock.sendall(command(b"XGROUP", b"CREATE", b"pel", b"g", b"0"))
        read_replies(sock, 1)
        for _ in range(0, PENDING_COUNT, DELIVERY_COUNT):
            sock.sendall(command(b"XREADGROUP", b"GROUP", b"g", b"c0", b"COUNT",
                                 b"%d" % DELIVERY_COUNT, b"STREAMS", b"pel", b">"))
            read_replies(sock, 1)


def parsed_reply(sock: socket.socket) -> Any:
    """One reply, parsed (a small one: the parser may read past it)."""
    parser = resp.RespParser()
    while (reply := parser.next_reply()) is resp.NEED_MORE:
        chunk = sock.recv(1 << 16)
        assert chunk, "closed by the server"
        parser.feed(chunk)
    return reply


def slow_request(port: int, request: bytes, name: str, outcome: list[int]) -> str:
    """Sends `request`, reads its reply after 1 s; its size in `outcome` (-1: the server cut
    the connection, as it does to a reply built whole over the limit)."""
    with connect(port) as sock:
        sock.sendall(request)
        try:
            size = read_replies(sock, 1, pause_s=1.0)
        except (AssertionError, ConnectionError):
            outcome.append(-1)
            return f"{name}: the client was disconnected (limit {OUTPUT_LIMIT_BYTES // MIB} MiB)"
    outcome.append(size)
    return (f"{name}: a reply of {size / MIB:.0f} MiB (limit {OUTPUT_LIMIT_BYTES // MIB} MiB) "
            "read after 1 s, whole")


def attack_with(server: StreamsServer, name: str, request: bytes, label: str,
                setup_step: Callable[[int], object] | None = None) -> None:
    outcome: list[int] = []
    run_attack(server, name,  # type: ignore[arg-type]
               lambda port: slow_request(port, request, label, outcome), BOUND_BYTES,
               setup=setup_step, test_file=f"{TEST_FILE}::test_{name}")
    assert outcome[0] > 2 * OUTPUT_LIMIT_BYTES, "the reply did not arrive whole"


def new_group(name: bytes, start: bytes = b"0") -> Callable[[int], object]:
    def step(port: int) -> None:
        with connect(port) as sock:
            sock.sendall(command(b"XGROUP", b"CREATE", b"big", name, start))
            read_replies(sock, 1)
    return step


def test_xread(streams_server: StreamsServer) -> None:
    attack_with(streams_server, "xread", command(b"XREAD", b"STREAMS", b"big", b"0"),
                f"XREAD of {ENTRIES_COUNT} entries")


def test_xreadgroup(streams_server: StreamsServer) -> None:
    attack_with(streams_server, "xreadgroup",
                command(b"XREADGROUP", b"GROUP", b"fresh", b"c", b"STREAMS", b"big", b">"),
                f"XREADGROUP of {ENTRIES_COUNT} new entries", new_group(b"fresh"))
    with connect(streams_server.port) as sock:  # the PEL holds exactly what was sent
        sock.sendall(command(b"XPENDING", b"big", b"fresh"))
        assert parsed_reply(sock)[0] == ENTRIES_COUNT


def test_xreadgroup_blocked(streams_server: StreamsServer) -> None:
    """A blocked XREADGROUP woken by a small write whose commit makes every entry new to its
    group (XGROUP SETID back to 0, then an XADD, in one MULTI): its reply is found later."""
    outcome: list[int] = []

    def attack(port: int) -> str:
        with connect(port) as reader, connect(port) as writer:
            reader.sendall(command(b"XREADGROUP", b"GROUP", b"later", b"c", b"BLOCK", b"0",
                                   b"STREAMS", b"big", b">"))
            # Time to block (the server is another process: its blocked count is not seen
            # here). Were it late, it would answer from the entries at once, still whole.
            time.sleep(0.3)
            writer.sendall(command(b"MULTI") + command(b"XGROUP", b"SETID", b"big", b"later",
                                                       b"0") +
                           command(b"XADD", b"big", b"*", b"f", b"small") + command(b"EXEC"))
            read_replies(writer, 4)
            try:
                size = read_replies(reader, 1, pause_s=1.0)
            except (AssertionError, ConnectionError):
                outcome.append(-1)
                return "blocked XREADGROUP woken: the client was disconnected"
        outcome.append(size)
        return (f"blocked XREADGROUP woken, a reply of {size / MIB:.0f} MiB (limit "
                f"{OUTPUT_LIMIT_BYTES // MIB} MiB) read after 1 s, whole")

    run_attack(streams_server, "xreadgroup_blocked", attack,  # type: ignore[arg-type]
               BOUND_BYTES, setup=new_group(b"later", b"$"),
               test_file=f"{TEST_FILE}::test_xreadgroup_blocked")
    assert outcome[0] > 2 * OUTPUT_LIMIT_BYTES, "the reply did not arrive whole"


def test_xclaim(streams_server: StreamsServer) -> None:
    attack_with(streams_server, "xclaim",
                command(b"XCLAIM", b"big", b"g", b"claimer", b"0", *streams_server.ids),
                f"XCLAIM of {ENTRIES_COUNT} entries")


def test_xautoclaim(streams_server: StreamsServer) -> None:
    attack_with(streams_server, "xautoclaim",
                command(b"XAUTOCLAIM", b"big", b"g", b"auto", b"0", b"0-0", b"COUNT",
                        b"%d" % (2 * ENTRIES_COUNT)),
                f"XAUTOCLAIM of {ENTRIES_COUNT} entries")


def test_xinfo_stream_full(streams_server: StreamsServer) -> None:
    attack_with(streams_server, "xinfo_stream_full",
                command(b"XINFO", b"STREAM", b"big", b"FULL", b"COUNT", b"0"),
                f"XINFO STREAM FULL COUNT 0 of {ENTRIES_COUNT} entries")


def test_xpending(streams_server: StreamsServer) -> None:
    attack_with(streams_server, "xpending",
                command(b"XPENDING", b"pel", b"g", b"-", b"+", b"%d" % PENDING_COUNT),
                f"XPENDING of {PENDING_COUNT} rows")
