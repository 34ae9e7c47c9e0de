"""The server's connection path (fasterlog_server/connection.py): group commit across
connections, replies in order when reads are answered synchronously, back-pressure and the
slow-reader limit, on asyncio's own loop and on uvloop (when installed).

Method: the server runs in a thread (tests/support/servers.py's RunningServer, here with a choice
of event loop) on port 0; clients are redis-py and raw sockets on loopback. Group commit is
checked with the committers' counters: requests answered vs syncs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fasterlog_server import resp
from fasterlog_server.commit import LoopCommitter
from fasterlog_server.settings import (
    COMMIT_GATHER_ITERATIONS_MAX,
    COMMIT_GATHER_MAX_S,
    OUTPUT_HIGH_WATER_BYTES,
    REPLIES_BATCH_SIZE_MAX_BYTES,
    STREAM_CHUNK_SIZE_BYTES,
)
from tests.support.servers import RunningServer, raw_exchange

redis = pytest.importorskip("redis")
redis_asyncio = pytest.importorskip("redis.asyncio")

try:
    import uvloop
except ImportError:  # optional: the asyncio rows still run
    uvloop = None  # type: ignore[assignment]

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop is not installed"))]


class LoopServer(RunningServer):
    def __init__(self, directory: Path, loop_name: str, **settings: object) -> None:
        self.loop_name = loop_name
        super().__init__(directory, **settings)

    def _run(self) -> None:
        if self.loop_name == "uvloop":
            self.loop.close()
            self.loop = uvloop.new_event_loop()
        super()._run()


@pytest.fixture(params=LOOPS)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopServer]:
    server = LoopServer(tmp_path / "data", request.param)
    yield server
    server.stop()


def test_concurrent_writers_share_syncs(running: LoopServer) -> None:
    """Writes of many connections that arrive while a commit runs are covered by the next
    single commit: far fewer syncs than acknowledged writes, and every write is there."""
    clients_count, writes_count = 20, 25

    async def writer(number: int) -> None:
        client = redis_asyncio.Redis(port=running.port)
        for sequence in range(writes_count):
            if sequence % 2:
                await client.set(f"k{number}:{sequence}", b"v")
            else:
                await client.xadd("shared", {"w": number, "n": sequence})
        await client.aclose()

    async def main() -> None:
        await asyncio.gather(*(writer(number) for number in range(clients_count)))

    asyncio.run(main())
    server = running.server
    log_requests = server.coordinator.stream_committer.requests_count
    log_commits = server.coordinator.stream_committer.commits_count
    kv_requests = server.coordinator.kv_committer.requests_count
    kv_commits = server.coordinator.kv_committer.commits_count
    writes = clients_count * writes_count
    assert log_requests + kv_requests >= writes
    # 20 clients each with one write outstanding: most syncs must cover several of them.
    assert log_commits * 3 <= log_requests, (log_commits, log_requests)
    assert kv_commits * 3 <= kv_requests, (kv_commits, kv_requests)
    client = redis.Redis(port=running.port)
    assert client.xlen("shared") == clients_count * ((writes_count + 1) // 2)
    assert client.dbsize() == 1 + clients_count * (writes_count // 2)


def test_a_pipeline_mixing_reads_and_writes_is_answered_in_order(running: LoopServer) -> None:
    """Reads run synchronously on arrival, writes wait for their commit: one pipeline of both
    still gets its replies in order, each read seeing the writes before it."""
    client = redis.Redis(port=running.port)
    pipe = client.pipeline(transaction=False)
    for number in range(200):
        pipe.set(f"k{number % 7}", number)
        pipe.get(f"k{number % 7}")
        pipe.xadd("s", {"n": number})
        pipe.xlen("s")
        pipe.exists(f"k{number % 7}", "missing")
    replies = pipe.execute()
    for number in range(200):
        ok, value, stream_id, length, exists = replies[5 * number:5 * number + 5]
        assert ok is True and value == b"%d" % number and stream_id.count(b"-") == 1
        assert length == number + 1 and exists == 1
    # A second connection's reads go on while the first one's writes are committed.
    other = redis.Redis(port=running.port)
    assert other.get("k0") is not None


def test_two_connections_interleave_without_mixing_replies(running: LoopServer) -> None:
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            client = redis.Redis(port=running.port)
            for sequence in range(100):
                pipe = client.pipeline(transaction=False)
                pipe.set(f"c{number}", sequence)
                pipe.get(f"c{number}")
                pipe.echo(f"{number}:{sequence}")
                assert pipe.execute() == [True, b"%d" % sequence, f"{number}:{sequence}".encode()]
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def test_a_slow_reader_is_held_to_a_bound_then_gets_every_reply(running: LoopServer) -> None:
    """Issue 14 defect 6: the output limit was checked only after a whole batch was answered
    (a GET pipeline of 250 x 4 MB took the server to 1,962 MB). Now replies are counted as
    they are built: while the client does not read, the server holds about one batch's
    replies (REPLIES_BATCH_SIZE_MAX_BYTES) plus the high-water mark plus one reply, and the
    client is paused, not disconnected; once it reads it gets every reply."""
    value = b"x" * (32 << 10)
    redis.Redis(port=running.port).set("big", value)
    commands_count = 1024  # 32 MiB of replies, more than the kernel's socket buffers take
    bound_bytes = REPLIES_BATCH_SIZE_MAX_BYTES + OUTPUT_HIGH_WATER_BYTES + 2 * len(value)
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall,
                                  args=(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * commands_count,))
        sender.start()
        held_max_bytes = 0
        for _ in range(50):  # half a second without reading
            time.sleep(0.01)
            held_max_bytes = max([held_max_bytes, *(
                connection.held_output_size_bytes for connection in running.server.connections)])
        assert 0 < held_max_bytes <= bound_bytes
        expected = b"$%d\r\n%s\r\n" % (len(value), value)
        size = 0
        while size < commands_count * len(expected):
            chunk = sock.recv(1 << 20)
            assert chunk, "closed early"
            size += len(chunk)
        sender.join(30)
        assert size == commands_count * len(expected)


def test_a_reply_built_whole_past_the_output_limit_disconnects(tmp_path: Path) -> None:
    """A reply that is not streamed (EXEC's, built whole), to a client that does not read,
    and that leaves more than output_buffer_size_max_bytes unsent disconnects the client, as
    Redis's client-output-buffer-limit does; the server lives on."""
    server = RunningServer(tmp_path / "data", output_buffer_size_max_bytes=1 << 20)
    try:
        client = redis.Redis(port=server.port)
        client.mset({f"k{index}": b"x" * (32 << 10) for index in range(64)})  # 2 MiB
        mget = b"*65\r\n$4\r\nMGET\r\n" + b"".join(
            b"$%d\r\nk%d\r\n" % (len(b"k%d" % index), index) for index in range(64))
        request = b"*1\r\n$5\r\nMULTI\r\n" + mget * 8 + b"*1\r\n$4\r\nEXEC\r\n"  # 16 MiB
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(request)
            time.sleep(0.5)
            received = 0
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except ConnectionError:
                pass
            assert received < 8 * 64 * (32 << 10)  # cut: what the kernel held, no more
        assert client.ping() is True
        assert len(client.mget([f"k{index}" for index in range(64)])) == 64
    finally:
        server.stop()


def test_a_client_that_sends_much_and_reads_late_gets_every_reply(running: LoopServer) -> None:
    """Back-pressure, not disconnection, below the output limit: reading pauses while the
    output buffer is over its high-water mark, and every reply arrives once read."""
    commands_count = 20_000
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        request = b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n" * commands_count
        sender = threading.Thread(target=sock.sendall, args=(request,))
        sender.start()
        time.sleep(0.3)  # replies pile up meanwhile
        expected = b"$3\r\nabc\r\n" * commands_count
        chunks, size = [], 0
        while size < len(expected):
            chunk = sock.recv(1 << 20)
            assert chunk, "closed early"
            chunks.append(chunk)
            size += len(chunk)
        sender.join(30)
        assert b"".join(chunks) == expected


def test_a_client_that_half_closes_still_gets_its_replies(running: LoopServer) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nf\r\n$1\r\nv\r\n"
                     b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"\r\n") == 5 and data.endswith(b"+OK\r\n$1\r\nv\r\n"), data


def test_inline_and_malformed_input_on_both_loops(running: LoopServer) -> None:
    assert raw_exchange(running.port, b"PING\r\nQUIT\r\n") == b"+PONG\r\n+OK\r\n"
    assert raw_exchange(running.port, b"*1\r\n$x\r\nPING\r\n").startswith(b"-ERR Protocol")


def test_blocked_reader_that_disconnects_stops_waiting(running: LoopServer) -> None:
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n"
                     b"$1\r\nq\r\n$1\r\n$\r\n")
        deadline = time.monotonic() + 10
        while not running.server.readers.waiting_count(b"q") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert running.server.readers.waiting_count(b"q")
    deadline = time.monotonic() + 10
    while running.server.readers.waiting_count(b"q") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running.server.readers.waiting_count(b"q")  # noticed at once, not at the next XADD


def test_a_value_too_big_for_a_record_is_refused_alone(running: LoopServer) -> None:
    """Pending KV writes of many connections share one write_batch: a value that cannot fit a
    record is refused when it is SET, so it cannot fail the others' batch."""
    client = redis.Redis(port=running.port)
    pipe = client.pipeline(transaction=False)
    pipe.set("small", "1")
    pipe.set("huge", b"x" * (1 << 20))
    pipe.set("after", "2")
    ok, refused, after = pipe.execute(raise_on_error=False)
    assert ok is True and after is True
    assert isinstance(refused, redis.ResponseError) and "entry_size_max" in str(refused)
    assert client.mget("small", "huge", "after") == [b"1", None, b"2"]


@pytest.mark.parametrize("kind", ["set", "xadd"])
def test_a_lone_write_too_big_for_a_record_is_refused(running: LoopServer, kind: str) -> None:
    """One SET or XADD alone in its read takes the connection's fast lane (data_received):
    a value too big for a record still gets the error reply, writes nothing and leaves the
    connection usable."""
    client = redis.Redis(port=running.port)
    client.xadd("s", {"f": "first"})
    with pytest.raises(redis.ResponseError, match="entry_size_max"):
        if kind == "set":
            client.set("huge", b"x" * (1 << 20))
        else:
            client.xadd("s", {"f": b"x" * (1 << 20)})
    assert client.get("huge") is None
    assert client.xlen("s") == 1
    assert client.set("after", "1") is True
    assert client.xadd("s", {"f": "after"})
    assert client.xlen("s") == 2


def test_a_lone_client_commits_each_write_at_once(running: LoopServer) -> None:
    """Gathering (fasterlog_server/commit.py LoopCommitter) waits only while more writers arrive: a
    lone client's every write is its own commit, answered without waiting for anyone."""
    client = redis.Redis(port=running.port)
    client.xadd("s", {"n": 0})
    log_commits = running.server.coordinator.stream_committer.commits_count
    kv_commits = running.server.coordinator.kv_committer.commits_count
    for number in range(50):
        client.xadd("s", {"n": number})
        client.set("k", number)
    assert running.server.coordinator.stream_committer.commits_count - log_commits == 50
    assert running.server.coordinator.kv_committer.commits_count - kv_commits == 50


class _CountingLog:
    """A log's commit() for LoopCommitter, failing with `error` when given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.commits_count = 0
        self.error = error

    def commit(self) -> int:
        self.commits_count += 1
        if self.error is not None:
            raise self.error
        return 0


def _commit_sizes(arrivals_count: int, error: Exception | None = None,
                  gather_max_s: float = COMMIT_GATHER_MAX_S,
                  ) -> tuple[list[int], list[list[BaseException | None]]]:
    """Enlists one waiter per loop iteration, each arriving before the commit's check of that
    iteration (as requests read in the same poll do); returns how many waiters each commit
    answered and what each waiter was told."""
    async def main() -> tuple[list[int], list[list[BaseException | None]]]:
        loop = asyncio.get_running_loop()
        committer = LoopCommitter(_CountingLog(error).commit, lambda: None,
                                  gather_max_s=gather_max_s)
        told: list[list[BaseException | None]] = [[] for _ in range(arrivals_count)]
        answered_by: list[int] = []

        class Waiter:
            def __init__(self, index: int) -> None:
                self.index = index

            def commit_done(self, failure: BaseException | None) -> None:
                told[self.index].append(failure)
                answered_by.append(committer.commits_count)

        def arrive(index: int) -> None:
            if index + 1 < arrivals_count:
                loop.call_soon(arrive, index + 1)
            committer.enlist(Waiter(index))

        arrive(0)
        for _ in range(4 * arrivals_count):
            await asyncio.sleep(0)
        return [answered_by.count(number) for number in sorted(set(answered_by))], told

    return asyncio.run(main())


def test_loop_committer_gathers_writers_that_keep_arriving_within_bounds() -> None:
    sizes, told = _commit_sizes(40)
    assert all(outcome == [None] for outcome in told)  # every waiter answered once
    assert sum(sizes) == 40
    # While each iteration brings a new writer the commit waits, up to the iteration bound.
    assert sizes[0] == COMMIT_GATHER_ITERATIONS_MAX + 2
    assert max(sizes) <= COMMIT_GATHER_ITERATIONS_MAX + 2


def test_loop_committer_stops_gathering_at_its_time_bound() -> None:
    sizes, told = _commit_sizes(10, gather_max_s=0.0)
    assert all(outcome == [None] for outcome in told)
    assert max(sizes) <= 2  # the first waiter and the one read beside it, no more


def test_loop_committer_answers_every_waiter_of_a_failed_commit_with_its_error() -> None:
    failure = RuntimeError("sync failed")
    sizes, told = _commit_sizes(12, failure)
    assert sum(sizes) == 12
    assert all(outcome == [failure] for outcome in told)


def read_replies(sock: socket.socket, count: int) -> list[object]:
    parser = resp.RespParser(resp.RespLimits(bulk_size_max_bytes=64 << 20,
                                             query_buffer_size_max_bytes=1 << 30))
    replies: list[object] = []
    while len(replies) < count:
        reply = parser.next_reply()
        if reply is resp.NEED_MORE:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed early"
            parser.feed(chunk)
        else:
            replies.append(reply)
    return replies


@pytest.mark.parametrize("loop_name", LOOPS)
def test_replies_larger_than_the_output_limit_go_whole_to_a_fast_reader(
        tmp_path: Path, loop_name: str) -> None:
    """Issue 14 defect 6, the other way round: a single reply over the output limit cut even
    a client that read as fast as it could (an XRANGE of 74 MB against 64 MiB). MGET and
    XRANGE stream a reply past STREAMED_REPLY_SIZE_MIN_BYTES, so one of 80 MiB (MGET) and one
    of 12 MiB (XRANGE, XREVRANGE) reach a reader against a 1 MiB limit, followed in order by
    the pipeline's next replies; inside EXEC the same MGET is built whole and is the same."""
    server = LoopServer(tmp_path / "data", loop_name, output_buffer_size_max_bytes=1 << 20)
    try:
        client = redis.Redis(port=server.port)
        value = b"v" * (32 << 10)
        client.set("k", value)
        keys_count = 2600  # 2,600 x 32 KiB: 81 MiB
        entries_count = 384  # 12 MiB
        for index in range(entries_count):
            client.xadd("s", {"i": str(index), "pad": value[:30 << 10]})
        mget = b"*%d\r\n$4\r\nMGET\r\n" % (keys_count + 1) + b"$1\r\nk\r\n" * keys_count
        request = (mget + b"*1\r\n$4\r\nPING\r\n" +
                   b"*4\r\n$6\r\nXRANGE\r\n$1\r\ns\r\n$1\r\n-\r\n$1\r\n+\r\n" +
                   b"*4\r\n$9\r\nXREVRANGE\r\n$1\r\ns\r\n$1\r\n+\r\n$1\r\n-\r\n" +
                   b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(request)
            big, pong, forward, backward, single = read_replies(sock, 5)
        assert big == [value] * keys_count
        assert pong == b"PONG"
        assert isinstance(forward, list) and isinstance(backward, list)
        assert [entry[1][1] for entry in forward] == [b"%d" % i for i in range(entries_count)]
        assert backward == forward[::-1]
        assert single == value
        keys = [f"k{index}" for index in range(300)]  # 9.4 MiB: streamed outside EXEC
        client.mset({key: value for key in keys})
        # Inside EXEC the reply is built whole. A fresh connection that does not read yet has
        # socket buffers too small to take it (a reader's buffers, autotuned by the transfers
        # above, once took all 9.4 MiB), so it is over the 1 MiB limit and disconnected.
        names = b"".join(b"$%d\r\n%s\r\n" % (len(key), key.encode()) for key in keys)
        transaction = (b"*1\r\n$5\r\nMULTI\r\n" + b"*%d\r\n$4\r\nMGET\r\n" % (len(keys) + 1) +
                       names + b"*1\r\n$4\r\nEXEC\r\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(transaction)
            time.sleep(0.5)
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
        assert received < len(keys) * len(value), "EXEC's whole reply went out"
        assert client.mget(keys) == [value] * 300
    finally:
        server.stop()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_streamed_reply_to_a_slow_reader_holds_one_piece_at_a_time(
        tmp_path: Path, loop_name: str) -> None:
    """While the client reads nothing, an 81 MiB MGET makes the server hold no more than the
    high-water mark, a piece and an element (before: the whole reply, three times over, 3 GB
    for 250 x 4 MB); other clients are answered meanwhile; then every byte arrives."""
    server = LoopServer(tmp_path / "data", loop_name)
    try:
        client = redis.Redis(port=server.port)
        value = b"v" * (32 << 10)
        client.set("k", value)
        keys_count = 2600
        bound_bytes = OUTPUT_HIGH_WATER_BYTES + STREAM_CHUNK_SIZE_BYTES + 2 * len(value) + \
            REPLIES_BATCH_SIZE_MAX_BYTES
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            sock.settimeout(60)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"*%d\r\n$4\r\nMGET\r\n" % (keys_count + 1) +
                         b"$1\r\nk\r\n" * keys_count)
            held_max_bytes = 0
            for _ in range(30):
                time.sleep(0.01)
                held_max_bytes = max([held_max_bytes, *(
                    connection.held_output_size_bytes
                    for connection in server.server.connections)])
                assert client.ping() is True
            assert 0 < held_max_bytes <= bound_bytes
            assert read_replies(sock, 1) == [[value] * keys_count]
    finally:
        server.stop()
