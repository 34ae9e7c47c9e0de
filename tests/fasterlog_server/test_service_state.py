"""The connection state machine (fasterlog_server/connection.py) without sockets, the command
table's flags (fasterlog_server/dispatch.py), and maxclients against redis-server.

Method: a Server is built on a temporary log but never listens; each test attaches connections
to sinks that record what is written, feeds them bytes as a transport would, and lets the
event loop run the commits. The table's READONLY and WRITE flags are checked by running one
invocation of every flagged command and watching both logs' write counts. maxclients is
checked over loopback sockets, on our server and (when installed) on redis-server 7 with the
same settings: the same bytes must come back.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from fasterlog import FasterLog
from fasterlog_server import Server, ServerSettings, resp
from fasterlog_server.connection import Connection, Event, Flow, State
from fasterlog_server.context import BLOCKING, READONLY, WRITE, Blocked
from fasterlog_server.dispatch import COMMANDS, dispatch
from fasterlog_server.errors import LocalProtocolError
from fasterlog_server.settings import (
    MAXCLIENTS_REPLY,
    READ_SIZE_BYTES,
    REPLIES_BATCH_SIZE_MAX_BYTES,
    STEP_OUTPUT_SIZE_MAX_BYTES,
    TRANSPORT_READ_SIZE_MAX_BYTES,
)
from tests.support.redis_peer import needs_redis, redis_peer
from tests.support.servers import RunningServer

redis = pytest.importorskip("redis")



class RecordingSink:
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)


def with_server(directory: Path, body: Callable[[Server], Awaitable[None]],
                **settings: object) -> None:
    async def main() -> None:
        log = FasterLog.open(directory, page_size_bytes=65536, memory_size_bytes=262144,
                             segment_size_bytes=1 << 20)
        server = Server(log, ServerSettings(port=0, **settings))  # type: ignore[arg-type]
        try:
            await body(server)
        finally:
            await server.close()
            log.close()

    asyncio.run(main())


def attached(server: Server) -> tuple[Connection, RecordingSink]:
    connection = Connection(server.context, server.connections)
    sink = RecordingSink()
    connection.attach(sink)
    return connection, sink


def state(connection: Connection) -> State:
    """The connection's state, read afresh (not narrowed by an earlier assert)."""
    return connection.state


async def settle() -> None:
    """Lets the loop run the commits enlisted so far (LoopCommitter: a few iterations)."""
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_read_is_answered_inside_receive(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.receive(command(b"PING") + command(b"GET", b"missing"))
        assert sink.written == b"+PONG\r\n$-1\r\n"  # no await: answered synchronously
        connection.receive(b"ECHO hi\r\n")
        assert sink.written.endswith(b"$2\r\nhi\r\n")
        assert state(connection) is State.READY

    with_server(tmp_path / "data", body)


def test_a_write_is_held_until_its_commit_and_later_input_waits_behind_it(
        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.receive(command(b"SET", b"k", b"v"))
        assert state(connection) is State.AWAITING_COMMIT and sink.written == b""
        connection.receive(command(b"GET", b"k"))  # buffered: one batch in flight
        assert sink.written == b""
        await settle()
        assert sink.written == b"+OK\r\n$1\r\nv\r\n"
        assert state(connection) is State.READY
        kv_log = server.kv.store.log
        assert kv_log.committed_until_address == kv_log.tail_address

    with_server(tmp_path / "data", body)


def test_end_of_input_answers_what_came_then_closes(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.receive(command(b"XADD", b"s", b"*", b"f", b"v") + command(b"XLEN", b"s"))
        assert connection.input_ended() is True
        assert not sink.closed  # its batch still waits for the commit
        await settle()
        assert sink.written.endswith(b":1\r\n") and sink.closed
        assert state(connection) is State.CLOSED and connection.input is Flow.ENDED

        idle, idle_sink = attached(server)
        idle.input_ended()
        assert idle_sink.closed and state(idle) is State.CLOSED

    with_server(tmp_path / "data", body)


def test_a_malformed_frame_gets_an_error_and_nothing_more_runs(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.receive(b"*1\r\n$x\r\nPING\r\n")
        assert sink.written.startswith(b"-ERR Protocol error") and sink.closed
        assert state(connection) is State.CLOSED
        written = bytes(sink.written)
        connection.receive(command(b"PING"))  # late bytes are dropped, not an error
        assert sink.written == written

    with_server(tmp_path / "data", body)


def paused_behind_a_write(connection: Connection, sink: RecordingSink) -> int:
    """A SET (its batch waits for its commit), then PINGs past READ_SIZE_BYTES: reading
    pauses. Returns the PINGs sent."""
    connection.receive(command(b"SET", b"k", b"v"))
    ping = command(b"PING")
    count = READ_SIZE_BYTES // len(ping) + 1
    connection.receive(ping * count)
    assert not sink.reading and connection.input is Flow.PAUSED
    return count


def test_reading_pauses_past_its_bound_while_a_batch_waits_and_resumes_after(
        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        count = paused_behind_a_write(connection, sink)
        await settle()
        assert sink.written == b"+OK\r\n" + b"+PONG\r\n" * count
        assert sink.reading and connection.input is Flow.OPEN

    with_server(tmp_path / "data", body)


def test_while_replies_wait_for_the_client_its_input_is_read_up_to_the_query_bound(
        tmp_path: Path) -> None:
    # Rule 8: a client that sends a whole pipeline before it reads (redis-py) is read on, or
    # both sides would wait for each other; what it sends still waits for its replies to go.
    query_buffer_size_max_bytes = 1 << 20
    held_max_bytes = query_buffer_size_max_bytes - TRANSPORT_READ_SIZE_MAX_BYTES

    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.writing_paused()  # the socket is full: the client reads nothing yet
        ping = command(b"PING")
        connection.receive(ping * (READ_SIZE_BYTES // len(ping) + 1))
        assert sink.reading and connection.input is Flow.OPEN
        assert sink.written == b""  # nothing runs while replies wait (rule 1)
        sent_count = READ_SIZE_BYTES // len(ping) + 1
        while sink.reading:
            connection.receive(ping * 1000)
            sent_count += 1000
        assert connection.input is Flow.PAUSED
        assert held_max_bytes <= connection.codec.buffered_size_bytes < query_buffer_size_max_bytes
        connection.writing_resumed()  # the client reads: everything runs, in order
        for _ in range(sent_count // 500 + 20):  # a step runs commands_per_step_max (rule 7)
            await asyncio.sleep(0)
        assert sink.written == b"+PONG\r\n" * sent_count
        assert sink.reading and connection.input is Flow.OPEN

    limits = resp.RespLimits(bulk_size_max_bytes=64 << 10,
                             query_buffer_size_max_bytes=query_buffer_size_max_bytes)
    with_server(tmp_path / "data", body, limits=limits)


def test_input_paused_while_a_batch_waits_is_read_again_once_its_replies_wait_for_the_client(
        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        count = paused_behind_a_write(connection, sink)
        connection.writing_paused()
        assert sink.reading and connection.input is Flow.OPEN
        connection.writing_resumed()
        await settle()
        assert sink.written == b"+OK\r\n" + b"+PONG\r\n" * count

    with_server(tmp_path / "data", body)


def test_a_flood_yields_after_commands_per_step_max_and_others_run_in_between(
        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        flooder, flood_sink = attached(server)
        other, other_sink = attached(server)
        flooder.receive(command(b"PING") * 35)
        assert flood_sink.written == b"+PONG\r\n" * 10  # one step: 10 commands
        assert state(flooder) is State.YIELDED
        other.receive(command(b"PING"))  # served now, not after the flood
        assert other_sink.written == b"+PONG\r\n" and state(other) is State.READY
        flooder.receive(command(b"ECHO", b"last"))  # buffered behind the rest, in order
        await asyncio.sleep(0)  # one round: one more step
        assert flood_sink.written == b"+PONG\r\n" * 20
        await settle()
        assert flood_sink.written == b"+PONG\r\n" * 35 + b"$4\r\nlast\r\n"
        assert state(flooder) is State.READY

    with_server(tmp_path / "data", body, commands_per_step_max=10)


def test_a_step_ends_after_its_output_bound_even_when_the_socket_takes_everything(
        tmp_path: Path) -> None:
    """A pipeline of GETs of big values to a reader that takes all it is sent: the step used
    to run all of them (commands_per_step_max), 800 ms for 250 of 4 MB."""
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        other, other_sink = attached(server)
        value = b"v" * 60_000  # a value fits a page (64 KiB here)
        connection.receive(command(b"SET", b"big", value))
        await settle()
        del sink.written[:]
        reply = b"$60000\r\n" + value + b"\r\n"
        count = 2 * STEP_OUTPUT_SIZE_MAX_BYTES // len(reply) + 10
        connection.receive(command(b"GET", b"big") * count)
        assert STEP_OUTPUT_SIZE_MAX_BYTES <= len(sink.written) <= (
            STEP_OUTPUT_SIZE_MAX_BYTES + REPLIES_BATCH_SIZE_MAX_BYTES + len(reply))
        assert state(connection) is State.YIELDED
        other.receive(command(b"PING"))  # served now, not after the pipeline
        assert other_sink.written == b"+PONG\r\n"
        for _ in range(10):
            await asyncio.sleep(0)
        assert sink.written == reply * count and state(connection) is State.READY

    with_server(tmp_path / "data", body)


def test_a_write_flood_commits_each_step_whole_and_exec_is_never_split(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        kv_committer = server.coordinator.kv_committer
        commits_before = kv_committer.commits_count
        connection.receive(command(b"SET", b"k", b"v") * 25)
        await settle()
        assert sink.written == b"+OK\r\n" * 25
        assert kv_committer.commits_count - commits_before == 3  # batches of 10, 10 and 5
        del sink.written[:]
        queued = [command(b"SET", b"t%d" % index, b"v") for index in range(25)]
        commits_before = kv_committer.commits_count
        connection.receive(command(b"MULTI") + b"".join(queued) + command(b"EXEC"))
        await settle()
        assert sink.written == (b"+OK\r\n" + b"+QUEUED\r\n" * 25 + b"*25\r\n" +
                                b"+OK\r\n" * 25)
        assert kv_committer.commits_count - commits_before == 1  # EXEC's 25 SETs, whole
        assert server.kv.get(b"t24") is not None

    with_server(tmp_path / "data", body, commands_per_step_max=10)


def test_a_yielded_flood_pauses_reading_past_its_bound_and_resumes_after(
        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        ping = command(b"PING")
        count = READ_SIZE_BYTES // len(ping) + 100
        connection.receive(ping * count)
        assert state(connection) is State.YIELDED
        assert not sink.reading and connection.input is Flow.PAUSED
        for _ in range(count // 10 + 20):
            await asyncio.sleep(0)
        assert sink.written == b"+PONG\r\n" * count
        assert sink.reading and connection.input is Flow.OPEN

    with_server(tmp_path / "data", body, commands_per_step_max=10)


def test_a_connection_closed_while_yielded_runs_nothing_more(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.receive(command(b"PING") * 25)
        assert state(connection) is State.YIELDED
        connection.lost()
        await settle()
        assert sink.written == b"+PONG\r\n" * 10 and state(connection) is State.CLOSED

    with_server(tmp_path / "data", body, commands_per_step_max=10)


def test_a_blocked_reader_that_hangs_up_is_closed_at_once(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, sink = attached(server)
        connection.receive(command(b"XREAD", b"BLOCK", b"0", b"STREAMS", b"q", b"$"))
        await settle()
        assert state(connection) is State.BLOCKED
        assert server.readers.waiting_count(b"q") == 1
        connection.input_ended()
        assert sink.closed
        connection.lost()  # the transport reports the close: the wait is cancelled
        await settle()
        assert server.readers.waiting_count(b"q") == 0
        assert state(connection) is State.CLOSED

    with_server(tmp_path / "data", body)


def test_events_a_state_does_not_allow_are_refused(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, _ = attached(server)
        with pytest.raises(LocalProtocolError, match="commit_done"):
            connection.commit_done(None)  # no commit was enlisted
        for event in (Event.DONE, Event.BLOCK, Event.UNBLOCK, Event.READING_RESUMED):
            with pytest.raises(LocalProtocolError, match=event.name):
                connection._transition(event)
        assert state(connection) is State.READY and connection.input is Flow.OPEN
        connection.lost()
        for event in (Event.HOLD, Event.CONTINUE, Event.DONE, Event.CLOSE):
            connection._transition(event)  # a closed connection absorbs late batch events
        assert state(connection) is State.CLOSED

    with_server(tmp_path / "data", body)


def test_over_maxclients_a_connection_gets_redis_reply_and_is_closed_in_process(
        tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        first, _ = attached(server)
        second, _ = attached(server)
        refused, refused_sink = attached(server)
        assert refused_sink.written == MAXCLIENTS_REPLY and refused_sink.closed
        assert state(refused) is State.CLOSED and len(server.connections) == 2
        refused.lost()
        first.lost()
        third, third_sink = attached(server)
        third.receive(command(b"PING"))
        assert third_sink.written == b"+PONG\r\n" and len(server.connections) == 2

    with_server(tmp_path / "data", body, maxclients=2)


def test_commands_per_step_max_must_be_positive() -> None:
    for wrong in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="commands_per_step_max"):
            ServerSettings(commands_per_step_max=wrong)  # type: ignore[arg-type]


def test_maxclients_must_be_positive() -> None:
    for wrong in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="maxclients"):
            ServerSettings(maxclients=wrong)  # type: ignore[arg-type]
    assert ServerSettings().maxclients == 10_000  # Redis's default


def test_with_fsync_everysec_lone_writes_are_answered_at_once_and_committed_within_seconds(
        tmp_path: Path) -> None:
    """The lanes serve fsync everysec too (the coordinator says a lone write waits for nothing):
    replies come at once, readers see the entry (blocked ones wake), and the every-second
    commit makes both logs durable."""
    server = RunningServer(tmp_path / "data", fsync="everysec")
    try:
        client = redis.Redis(port=server.port)
        client.xadd("s", {"f": "first"})  # a new stream: the handler creates it
        reader = redis.Redis(port=server.port)
        got: list[object] = []
        thread = threading.Thread(target=lambda: got.append(
            reader.xread({"s": "$"}, block=10_000)))
        thread.start()
        deadline = time.monotonic() + 10
        while not server.server.readers.waiting_count(b"s") and time.monotonic() < deadline:
            time.sleep(0.01)
        added = client.xadd("s", {"f": "lane"})  # one frame alone: the C lane
        thread.join(10)
        assert got == [[[b"s", [(added, {b"f": b"lane"})]]]]
        assert client.set("k", "v") is True and client.get("k") == b"v"
        logs = (server.log, server.server.kv.store.log)
        deadline = time.monotonic() + 10
        while any(log.committed_until_address < log.tail_address for log in logs) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(log.committed_until_address == log.tail_address for log in logs)
        for connection in (client, reader):
            connection.close()
    finally:
        server.stop()


# ---------------------------------------------------------------------- maxclients, sockets


def _ping(sock: socket.socket) -> bytes:
    sock.sendall(b"PING\r\n")
    return sock.recv(100)


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(100):
        data += chunk
    return data


def maxclients_exchange(port: int) -> list[bytes]:
    """With maxclients 2: two clients in, a third refused (what it got before the close),
    and once one of the two has left, a new one in."""
    address = ("127.0.0.1", port)
    first = socket.create_connection(address, timeout=10)
    second = socket.create_connection(address, timeout=10)
    got = [_ping(first), _ping(second)]
    with socket.create_connection(address, timeout=10) as third:
        got.append(_until_closed(third))
    first.close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the first one's close a moment later
        with socket.create_connection(address, timeout=10) as fourth:
            reply = _ping(fourth)
        if reply == b"+PONG\r\n" or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    got.append(reply)
    second.close()
    return got


EXPECTED_EXCHANGE = [b"+PONG\r\n", b"+PONG\r\n", MAXCLIENTS_REPLY, b"+PONG\r\n"]


def test_over_maxclients_a_connection_gets_redis_reply_and_is_closed(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", maxclients=2)
    try:
        assert maxclients_exchange(server.port) == EXPECTED_EXCHANGE
    finally:
        server.stop()


@needs_redis
def test_maxclients_behaves_as_redis_server_does(tmp_path: Path) -> None:
    with redis_peer(tmp_path / "redis", "--maxclients", "2") as port:
        time.sleep(0.1)  # the start probe's connection is gone before the exchange starts
        assert maxclients_exchange(port) == EXPECTED_EXCHANGE


# ---------------------------------------------------------------------- the table's flags


# One invocation of each READONLY command, on the data `_populate` writes.
READONLY_SAMPLES = [
    [b"DBSIZE"], [b"TYPE", b"k"], [b"EXISTS", b"k", b"s"], [b"TTL", b"k"], [b"PTTL", b"k"],
    [b"SCAN", b"0"], [b"GET", b"k"], [b"MGET", b"k", b"s"], [b"XLEN", b"s"],
    [b"XRANGE", b"s", b"-", b"+"], [b"XREVRANGE", b"s", b"+", b"-"],
    [b"XREAD", b"STREAMS", b"s", b"0"], [b"XPENDING", b"s", b"g"], [b"XINFO", b"STREAM", b"s"],
]
# One invocation of each WRITE command, in an order where each one does write.
WRITE_SAMPLES = [
    [b"SET", b"k2", b"v"], [b"MSET", b"a", b"1"], [b"INCR", b"n"], [b"DECR", b"n"],
    [b"INCRBY", b"n", b"2"], [b"DECRBY", b"n", b"2"], [b"DEL", b"k2"],
    [b"XADD", b"s", b"*", b"f", b"v"], [b"XGROUP", b"CREATE", b"s", b"g2", b"$"],
    [b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"1", b"STREAMS", b"s", b">"],
    [b"XCLAIM", b"s", b"g", b"d", b"0", b"1-1"], [b"XACK", b"s", b"g", b"1-1"],
    [b"XREADGROUP", b"GROUP", b"g", b"c", b"COUNT", b"1", b"STREAMS", b"s", b">"],
    [b"XAUTOCLAIM", b"s", b"g", b"e", b"0", b"0"], [b"XDEL", b"s", b"2-1"],
    [b"XTRIM", b"s", b"MAXLEN", b"0"], [b"LOG.TRUNCATE", b"0"],
]
BLOCKING_SAMPLES = [
    [b"XREAD", b"BLOCK", b"10", b"STREAMS", b"s", b"$"],
    [b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"10", b"STREAMS", b"s", b">"],
    [b"WAIT", b"1", b"10"], [b"WAITAOF", b"1", b"1", b"10"],
]


def test_the_samples_cover_every_flagged_command() -> None:
    def flagged(flag: str) -> set[bytes]:
        return {name for name, spec in COMMANDS.items() if flag in spec.flags}

    assert {sample[0] for sample in READONLY_SAMPLES} == flagged(READONLY)
    assert {sample[0] for sample in WRITE_SAMPLES} == flagged(WRITE)
    assert {sample[0] for sample in BLOCKING_SAMPLES} == flagged(BLOCKING)
    assert not flagged(READONLY) & flagged(WRITE)
    assert len(COMMANDS) == 51  # COMMAND COUNT: the same commands as before the table


def test_readonly_commands_write_nothing_and_write_commands_write(tmp_path: Path) -> None:
    async def body(server: Server) -> None:
        connection, _ = attached(server)
        client, coordinator = connection.client, server.coordinator
        for words in ([b"XADD", b"s", b"1-1", b"f", b"v"], [b"XADD", b"s", b"2-1", b"f", b"v"],
                      [b"XGROUP", b"CREATE", b"s", b"g", b"0"], [b"SET", b"k", b"v"],
                      [b"SET", b"n", b"10"]):
            dispatch(server.context, client, words, words[0])
        for words in READONLY_SAMPLES + WRITE_SAMPLES + BLOCKING_SAMPLES:
            await coordinator.commit_batch(True, True)  # each command sees the last one's
            marks, client.wrote = coordinator.marks(), False
            reply, _ = dispatch(server.context, client, words, words[0])
            if isinstance(reply, Blocked) and reply.later is not None:
                reply = await reply.later()  # its work runs off the loop (maintenance.py)
            assert not isinstance(reply, resp.ErrorReply), (words, reply)
            wrote = client.wrote or coordinator.marks() != marks
            spec = COMMANDS[words[0]]
            if words in BLOCKING_SAMPLES:
                assert isinstance(reply, Blocked), words
            elif READONLY in spec.flags:
                assert not wrote, words
            else:
                assert wrote, words
            client.sync_required = False

    with_server(tmp_path / "data", body)
