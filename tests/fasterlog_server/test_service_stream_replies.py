"""The replies of XREAD, XREADGROUP, XCLAIM, XAUTOCLAIM, XPENDING and XINFO STREAM FULL, built
whole and streamed (issue 14 item 4: past STREAMED_REPLY_SIZE_MIN_BYTES their entries are read
as the socket takes the reply, fasterlog_server/streamed.py), compared byte for byte with
redis-server 7.0, in RESP2 and RESP3, blocked readers included.

Method: the same requests go, one connection per server and in the same order, to our server
(RunningServer, a thread of this process, SMALL_SETTINGS: entries up to 64 KiB) and to a
private redis-server (the fixture of test_service_redis_replies.py). Ids are explicit, so the
replies are the same bytes; where a reply holds times (XPENDING's idle, XINFO's times) the
replies are parsed and the times masked. "Streamed" cases hold more than 1 MiB of entries (24
of 60 KB per stream), so our server streams them; the nested forms (several streams, a map in
RESP3, XAUTOCLAIM's middle element) are all there. The Streamed machinery is also checked on
its own: a nested streamed reply's bytes equal the encoding of the same reply built whole.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fasterlog_server import resp
from fasterlog_server.errors import LocalProtocolError
from fasterlog_server.settings import PENDING_ROWS_WHOLE_MAX, STREAMED_REPLY_SIZE_MIN_BYTES
from fasterlog_server.streamed import Streamed
from tests.fasterlog_server.test_service_redis_replies import (
    command,
    needs_redis,
    ours,
    redis_port,
)
from tests.support.servers import RunningServer

__all__ = ["ours", "redis_port"]  # fixtures used here

reply_timeout_s = 30
ENTRY_SIZE_BYTES = 60_000  # under SMALL_SETTINGS' entry_size_max (a 64 KiB page)
BIG_COUNT = 24  # 1.2 MB of entries per big stream: over STREAMED_REPLY_SIZE_MIN_BYTES
assert BIG_COUNT * ENTRY_SIZE_BYTES > STREAMED_REPLY_SIZE_MIN_BYTES
PONG = b"+PONG\r\n"


class Session:
    """One connection: `send` writes requests, `reply` reads one reply's raw bytes (each
    request is followed by a PING, whose +PONG ends what the reply was)."""

    def __init__(self, port: int, protocol: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=reply_timeout_s)
        self.received = b""
        if protocol == 3:
            self.socket.sendall(command("HELLO", "3") + command("PING"))
            self._until_pong()  # HELLO's reply names the server: not compared

    def _until_pong(self) -> bytes:
        while not self.received.endswith(PONG):
            chunk = self.socket.recv(1 << 20)
            assert chunk, "closed by the server"
            self.received += chunk
        data, self.received = self.received[:-len(PONG)], b""
        return data

    def send(self, *words: bytes | str) -> None:
        self.socket.sendall(command(*words) + command("PING"))

    def reply(self) -> bytes:
        return self._until_pong()

    def __call__(self, *words: bytes | str) -> bytes:
        self.send(*words)
        return self.reply()

    def close(self) -> None:
        self.socket.close()


def big_value(index: int) -> bytes:
    return ((b"%d:" % index) * ENTRY_SIZE_BYTES)[:ENTRY_SIZE_BYTES]


def setup_streams(session: Session) -> list[bytes]:
    """Streams `small` (3 entries), `big` and `big2` (BIG_COUNT entries each), a group g on
    each; the replies of the setup."""
    replies = [session("XADD", "small", f"1-{i}", "f", f"v{i}", "g", "h") for i in range(1, 4)]
    for key in ("big", "big2"):
        replies += [session("XADD", key, f"2-{i}", "f", big_value(i))
                    for i in range(1, BIG_COUNT + 1)]
    for key in ("small", "big", "big2"):
        replies.append(session("XGROUP", "CREATE", key, "g", "0"))
    return replies


# The requests compared, in order (they change the groups: each depends on those before).
SEQUENCE: list[tuple[str, ...]] = [
    ("XREAD", "STREAMS", "small", "0"),  # small: built whole
    ("XREAD", "COUNT", "2", "STREAMS", "small", "big", "0", "0"),
    ("XREAD", "STREAMS", "big", "0"),  # streamed
    ("XREAD", "STREAMS", "small", "big", "big2", "1-1", "2-3", "0"),  # nested, later keys
    ("XREAD", "STREAMS", "big", "big2", "small", "2-1", "2-20", "0"),  # streamed, then small
    ("XREAD", "COUNT", "100", "STREAMS", "big", "99-0"),  # nothing: the null array
    ("XREADGROUP", "GROUP", "g", "c1", "COUNT", "2", "STREAMS", "small", ">"),
    ("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "small", "big", ">", ">"),  # streamed
    ("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "big", ">"),  # nothing new
    ("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "big", "small", "0", "0"),  # history
    ("XDEL", "big", "2-2", "2-5"),
    ("XREADGROUP", "GROUP", "g", "c1", "STREAMS", "big", "2-1"),  # history with deleted ones
    ("XCLAIM", "small", "g", "c2", "0", "1-1", "1-3", "1-9"),
    ("XCLAIM", "big", "g", "c2", "0", *(f"2-{i}" for i in range(1, 23))),  # streamed
    ("XCLAIM", "big", "g", "c3", "0", "2-3", "2-4", "JUSTID"),
    ("XPENDING", "big", "g"),
    ("XAUTOCLAIM", "big", "g", "c4", "0", "0-0", "COUNT", "5"),
    ("XAUTOCLAIM", "big", "g", "c4", "0", "0-0", "COUNT", "30"),  # streamed, nested
    ("XAUTOCLAIM", "small", "g", "c4", "0", "0-0", "JUSTID"),
    # Inside EXEC's reply a streamed reply is built whole (Streamed.whole): MULTI, the
    # commands and EXEC go as one request (a PING after each would be queued).
    ("MULTI", "XREAD STREAMS big small 0 0", "XAUTOCLAIM big g c5 0 0-0 COUNT 30", "EXEC"),
    ("XREADGROUP", "GROUP", "g", "c1", "NOACK", "STREAMS", "big2", ">"),  # streamed, NOACK
    ("XPENDING", "big2", "g"),
    ("XACK", "big", "g", "2-1", "2-3"),
    ("XPENDING", "big", "g"),
]
TIMED = {"XPENDING_RANGE": [("XPENDING", "big", "g", "-", "+", "100"),
                            ("XPENDING", "big", "g", "IDLE", "0", "-", "+", "3", "c4"),
                            ("XPENDING", "small", "g", "-", "+", "10")]}


def mask_idle(raw: bytes) -> Any:
    """XPENDING's extended reply parsed, each row's idle time made 0."""
    parser = resp.RespParser()
    parser.feed(raw)
    rows = parser.next_reply()
    assert isinstance(rows, list), raw[:200]
    return [[row[0], row[1], 0, row[3]] for row in rows]


def run(port: int, protocol: int) -> list[Any]:
    session = Session(port, protocol)
    try:
        replies: list[Any] = setup_streams(session)
        for request in SEQUENCE:
            if request[0] == "MULTI":
                session.socket.sendall(b"".join(command(*text.split()) for text in request) +
                                       command("PING"))
                replies.append(session.reply())
            else:
                replies.append(session(*request))
        replies += [mask_idle(session(*request))
                    for request in TIMED["XPENDING_RANGE"]]
        return replies
    finally:
        session.close()


@needs_redis
@pytest.mark.parametrize("protocol", [2, 3])
def test_stream_replies_whole_and_streamed_are_redis_s_bytes(
        ours: RunningServer, redis_port: int, protocol: int) -> None:
    expected = run(redis_port, protocol)
    got = run(ours.port, protocol)
    assert len(got) == len(expected)
    for index, (mine, theirs) in enumerate(zip(got, expected, strict=True)):
        assert mine == theirs, f"reply {index} differs: {str(mine)[:300]} {str(theirs)[:300]}"


def blocked_replies(port: int, protocol: int, is_blocked: Callable[[Session], bool],
                    ) -> list[bytes]:
    """A blocked XREAD and a blocked XREADGROUP each woken by a write whose commit makes more
    than STREAMED_REPLY_SIZE_MIN_BYTES readable at once (a MULTI of BIG_COUNT XADDs; a SETID
    back to 0 and an XADD), so their replies, found later, are streamed."""
    writer, reader = Session(port, protocol), Session(port, protocol)
    try:
        replies = [writer("XADD", "w", "1-1", "f", "v")]
        reader.send("XREAD", "BLOCK", "0", "STREAMS", "w", "$")
        wait_until(lambda: is_blocked(writer))
        transaction = [command("MULTI")] + [
            command("XADD", "w", f"2-{i}", "f", big_value(i)) for i in range(1, BIG_COUNT + 1)]
        writer.socket.sendall(b"".join(transaction) + command("EXEC") + command("PING"))
        replies += [writer.reply(), reader.reply(), writer("XGROUP", "CREATE", "w", "g", "$")]
        reader.send("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "w", ">")
        wait_until(lambda: is_blocked(writer))
        writer.socket.sendall(command("MULTI") + command("XGROUP", "SETID", "w", "g", "0") +
                              command("XADD", "w", "3-1", "f", "last") + command("EXEC") +
                              command("PING"))
        replies += [writer.reply(), reader.reply(), reader("XPENDING", "w", "g")]
        return replies
    finally:
        writer.close()
        reader.close()


def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):  # 10 s at most
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the reader did not block")


@needs_redis
@pytest.mark.parametrize("protocol", [2, 3])
def test_blocked_readers_woken_by_a_big_commit_get_redis_s_bytes(
        ours: RunningServer, redis_port: int, protocol: int) -> None:
    def ours_blocked(_: Session) -> bool:
        return ours.server.context.readers.blocked_count == 1

    def redis_blocked(session: Session) -> bool:
        return b"blocked_clients:1\r\n" in session("INFO", "clients")

    assert blocked_replies(ours.port, protocol, ours_blocked) == \
        blocked_replies(redis_port, protocol, redis_blocked)


def parse(raw: bytes) -> Any:
    parser = resp.RespParser()
    parser.feed(raw)
    return parser.next_reply()


@needs_redis
@pytest.mark.parametrize("protocol", [2, 3])
def test_xinfo_stream_full_s_entries_streamed_are_redis_s(
        ours: RunningServer, redis_port: int, protocol: int) -> None:
    """XINFO STREAM FULL: the entries (streamed past 1 MiB) and the counters are Redis's;
    the groups' times differ, and Redis 7.0 has no active-time, so they are not compared."""
    def full(port: int) -> dict[bytes, Any]:
        session = Session(port, protocol)
        try:
            setup_streams(session)
            session("XREADGROUP", "GROUP", "g", "c1", "COUNT", "3", "STREAMS", "big", ">")
            reply = parse(session("XINFO", "STREAM", "big", "FULL", "COUNT", "0"))
            assert session("XINFO", "STREAM", "big", "FULL")  # COUNT 10: built whole
        finally:
            session.close()
        if isinstance(reply, list):  # RESP2: a flat array
            reply = dict(zip(reply[::2], reply[1::2], strict=True))
        return reply

    mine, theirs = full(ours.port), full(redis_port)
    assert len(mine[b"entries"]) == BIG_COUNT
    for name in (b"length", b"last-generated-id", b"entries-added", b"entries"):
        assert mine[name] == theirs[name], name


@needs_redis
def test_a_big_xpending_streamed_is_redis_s_rows(ours: RunningServer, redis_port: int) -> None:
    """More than PENDING_ROWS_WHOLE_MAX pending rows: our rows are streamed, and they are
    Redis's (idle masked), with and without a consumer filter."""
    rows_count = PENDING_ROWS_WHOLE_MAX + 500

    def pending(port: int) -> list[Any]:
        session = Session(port, 2)
        try:
            requests = [command("XADD", "p", f"1-{i}", "f", "v") for i in range(1, rows_count + 1)]
            session.socket.sendall(b"".join(requests) + command("PING"))
            session.reply()
            session("XGROUP", "CREATE", "p", "g", "0")
            for _ in range(0, rows_count, 4000):  # a delivery record stays within a page
                session("XREADGROUP", "GROUP", "g", "c1", "COUNT", "4000", "STREAMS", "p", ">")
            session("XCLAIM", "p", "g", "c2", "0", *(f"1-{i}" for i in range(1, 100, 3)))
            return [mask_idle(session("XPENDING", "p", "g", "-", "+", str(rows_count))),
                    mask_idle(session("XPENDING", "p", "g", "-", "+", "20", "c2")),
                    mask_idle(session("XPENDING", "p", "g", "IDLE", "0", "(1-5", "+", "30000",
                                      "c1"))]
        finally:
            session.close()

    mine, theirs = pending(ours.port), pending(redis_port)
    assert len(mine[0]) == rows_count
    assert mine == theirs


# ------------------------------------------------------------------ the machinery alone

def nested_reply(protocol: int) -> tuple[Any, Any]:
    """The same reply twice: built whole, and as nested Streamed objects (a map in RESP3 whose
    values are streamed arrays, one of them with a streamed array inside, and an empty one)."""
    def entries(count: int) -> list[Any]:
        return [[b"%d-0" % i, [b"f", b"v" * i]] for i in range(count)]

    whole = resp.Map({b"a": entries(3), b"b": [b"x", entries(2), []], b"c": entries(0)})

    def streamed_form() -> Iterator[Any]:
        yield b"b"
        yield Streamed(3, [b"x"], iter([Streamed(2, [], iter(entries(2))), Streamed(0, [],
                                                                                    iter(()))]))
        yield b"c"
        yield Streamed(0, [], iter(()))

    head = [b"a", Streamed(3, entries(1), iter(entries(3)[1:]))]
    return whole, Streamed.map(3, head, streamed_form(), protocol)


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("chunk_size_bytes", [1, 7, 1 << 20])
def test_a_nested_streamed_reply_is_the_whole_reply_s_bytes(protocol: int,
                                                             chunk_size_bytes: int) -> None:
    whole, streamed = nested_reply(protocol)
    pieces = [streamed.header()]
    while (piece := streamed.take(chunk_size_bytes, protocol)) is not None:
        pieces.append(piece)
    assert b"".join(pieces) == resp.encode(whole, protocol)
    assert resp.encode(nested_reply(protocol)[1].whole(), protocol) == resp.encode(whole,
                                                                                   protocol)


def test_a_streamed_reply_whose_elements_run_short_fails_loudly() -> None:
    streamed = Streamed(2, [], iter([Streamed(3, [b"a"], iter([b"b"]))]))
    streamed.header()
    with pytest.raises(LocalProtocolError, match="1 of 3 elements missing"):
        while streamed.take(1, 2) is not None:
            pass


def test_a_client_that_leaves_mid_reply_leaves_its_entries_pending(ours: RunningServer) -> None:
    """XREADGROUP records its deliveries before the reply is sent: a client that resets its
    connection after the first bytes of a streamed reply leaves every entry of it pending
    (delivered, not received, as in Redis), and another consumer can claim them all."""
    session = Session(ours.port, 2)
    try:
        setup_streams(session)
        with socket.create_connection(("127.0.0.1", ours.port), timeout=10) as leaving:
            leaving.sendall(command("XREADGROUP", "GROUP", "g", "gone", "STREAMS", "big", ">"))
            assert leaving.recv(100)  # the reply has begun
            leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        summary = parse(session("XPENDING", "big", "g"))
        assert summary[0] == BIG_COUNT and summary[3] == [[b"gone", b"%d" % BIG_COUNT]]
        claimed = parse(session("XAUTOCLAIM", "big", "g", "other", "0", "0-0", "COUNT", "100"))
        assert [entry[1] for entry in claimed[1]] == [
            [b"f", big_value(i)] for i in range(1, BIG_COUNT + 1)]
        assert session("PING", "alive") == b"$5\r\nalive\r\n"
    finally:
        session.close()
