"""No phantom writes, and a fenced server that keeps serving (issue 14 defect 4 and item 3).

Goal: when a commit fails (a full disk, a failed sync), every command it covered is answered
with the error and the connection stays open; from then on nothing that was answered with an
error is visible (XLEN, XRANGE/XREVRANGE, XTRIM, consumer groups, GET), reads are answered,
writes are refused with MISCONF; and once the log can be written again the server reopens it by
itself (a new writer epoch) and accepts writes, without a restart. A restart afterwards shows
the same state.

Method: a real server (tests.support.servers.RunningServer, fsync always) over real logs;
the failure is the device's own fault layer (fasterlog.testing.inject_fault: ENOSPC from the
next device operation on) on the stream log or the KV log, so the append lands in memory and
the commit's write fails exactly as on a full disk. Replies are read off a raw socket
(tests.support.raw_client), so a closed connection shows as such.
tests/reliability/test_reliability_full_disk.py runs the same on a real full file system.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from fasterlog import testing as fault_testing
from fasterlog_server import Server, ServerSettings, resp
from fasterlog_server.server import open_log
from fasterlog_server.settings import NEW_LOG_SEGMENT_SIZE_BYTES
from tests.support.fullfs import small_filesystem
from tests.support.raw_client import RawClient, is_error
from tests.support.redis_peer import command
from tests.support.servers import RunningServer

recovery_timeout_s = 30


def wait_until_loaded(client: RawClient) -> None:
    """Until the reload of the committed state is done (reads answer LOADING meanwhile)."""
    deadline = time.monotonic() + recovery_timeout_s
    while is_error(client.call("XLEN", "probe"), b"LOADING"):
        assert time.monotonic() < deadline, "still LOADING"
        time.sleep(0.02)


def wait_until_writable(client: RawClient, key: str = "probe") -> None:
    deadline = time.monotonic() + recovery_timeout_s
    while True:
        reply = client.call("SET", key, "x")
        if reply == b"OK":
            return
        assert is_error(reply, b"MISCONF") or is_error(reply, b"LOADING"), reply
        assert time.monotonic() < deadline, "never writable again"
        time.sleep(0.05)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    running = RunningServer(tmp_path / "data")
    yield running
    running.stop()


def populate(client: RawClient) -> None:
    assert client.call("XADD", "s", "1-1", "f", "one") == b"1-1"
    assert client.call("XADD", "s", "2-1", "f", "two") == b"2-1"
    assert client.call("XGROUP", "CREATE", "s", "g", "0") == b"OK"
    assert client.call("SET", "k", "old") == b"OK"


def committed_view(client: RawClient) -> list[Any]:
    """Every read the failed writes could leak into."""
    return [client.call("XLEN", "s"), client.call("XRANGE", "s", "-", "+"),
            client.call("XREVRANGE", "s", "+", "-"), client.call("XPENDING", "s", "g"),
            client.call("XINFO", "STREAM", "s"), client.call("GET", "k"),
            client.call("GET", "fresh"), client.call("EXISTS", "s2"), client.call("DBSIZE")]


# (log the fault is set on, the failing write, its expected reply when it is the first)
FAILING_WRITES = {
    "xadd": ("streams", ["XADD", "s", "*", "f", "three"]),
    "xadd-new-stream": ("streams", ["XADD", "s2", "*", "f", "v"]),
    "xtrim": ("streams", ["XTRIM", "s", "MAXLEN", "0"]),
    "xdel": ("streams", ["XDEL", "s", "1-1"]),
    "xreadgroup": ("streams", ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
    "set": ("kv", ["SET", "k", "new"]),
    "set-new-key": ("kv", ["SET", "fresh", "new"]),
    "mset": ("kv", ["MSET", "k", "new", "fresh", "new"]),
    "incr-and-del": ("kv", ["DEL", "k"]),
}


@pytest.mark.parametrize("name", list(FAILING_WRITES))
def test_a_failed_write_is_answered_with_an_error_and_never_visible(
        server: RunningServer, name: str) -> None:
    log_name, command = FAILING_WRITES[name]
    client = RawClient(server.port)
    try:
        populate(client)
        before = committed_view(client)
        log = server.server.log if log_name == "streams" else server.server.kv.store.log
        fault_testing.inject_fault(log, "any", errno=errno.ENOSPC)
        reply = client.call(*command)
        assert is_error(reply, b"ERR commit failed"), reply
        reader = RawClient(server.port)  # another client: nothing of the failed write shows
        try:
            wait_until_loaded(reader)
            assert committed_view(reader) == before
        finally:
            reader.close()
        assert client.call("PING") == b"PONG"  # the connection stays open
        # Writes are refused while the log is fenced, reads go on.
        for write in (["XADD", "s", "*", "f", "v"], ["SET", "k", "v"], ["XTRIM", "s",
                                                                         "MAXLEN", "0"]):
            assert is_error(client.call(*write), b"MISCONF Errors writing to the log")
        assert committed_view(client) == before
    finally:
        client.close()


def test_every_reply_of_a_failed_pipeline_is_the_error(server: RunningServer) -> None:
    client = RawClient(server.port)
    try:
        populate(client)
        fault_testing.inject_fault(server.server.log, "any", errno=errno.ENOSPC)
        # One pipeline, in one send, so that it is one batch with one commit.
        client.socket.sendall(b"".join(resp.encode(command) for command in (
            [b"XADD", b"s", b"*", b"f", b"a"], [b"XLEN", b"s"], [b"XADD", b"s", b"*", b"f", b"b"],
            [b"PING"])))
        replies = [client.reply() for _ in range(4)]
        assert all(is_error(reply, b"ERR commit failed") for reply in replies), replies
        assert client.call("PING") == b"PONG"
        wait_until_loaded(client)
        assert client.call("XLEN", "s") == 2
    finally:
        client.close()


def test_a_transaction_on_a_fenced_server_is_refused_whole(server: RunningServer) -> None:
    client = RawClient(server.port)
    try:
        populate(client)
        fault_testing.inject_fault(server.server.log, "any", errno=errno.ENOSPC)
        assert is_error(client.call("XADD", "s", "*", "f", "v"), b"ERR commit failed")
        wait_until_loaded(client)
        assert client.call("MULTI") == b"OK"
        assert is_error(client.call("SET", "k", "v"), b"MISCONF")
        assert is_error(client.call("EXEC"), b"EXECABORT")
        assert client.call("GET", "k") == b"old"
    finally:
        client.close()


def test_the_server_reopens_its_logs_by_itself_and_a_restart_agrees(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = RawClient(server.port)
    try:
        populate(client)
        epoch = server.server.log.settings["epoch"]
        fault_testing.inject_fault(server.server.log, "any", errno=errno.ENOSPC)
        assert is_error(client.call("XADD", "s", "*", "f", "lost"), b"ERR commit failed")
        wait_until_writable(client)  # the fault was on the fenced log, which is gone
        assert server.server.log.settings["epoch"] > epoch
        assert server.server.keeper.reopened_count == 1
        assert client.call("XADD", "s", "3-1", "f", "three") == b"3-1"
        assert client.call("SET", "k", "new") == b"OK"
        view = committed_view(client)
        assert view[0] == 3
    finally:
        client.close()
        server.stop()
    server = RunningServer(tmp_path / "data")
    client = RawClient(server.port)
    try:
        assert committed_view(client) == view
    finally:
        client.close()
        server.stop()


def test_with_fsync_everysec_a_failed_commit_fences_and_the_server_recovers(
        tmp_path: Path) -> None:
    # Replies do not wait for syncs here (not durable per reply): the failure surfaces at the
    # commit every second, in the worker thread's committer; the server must still end with
    # what the log committed, and reopen.
    server = RunningServer(tmp_path / "data", fsync="everysec")
    client = RawClient(server.port)
    try:
        populate(client)
        assert isinstance(client.call("LOG.COMMIT"), int)  # the tail it committed
        fault_testing.inject_fault(server.server.log, "any", errno=errno.ENOSPC)
        reply = client.call("XADD", "s", "*", "f", "unsynced")
        assert isinstance(reply, bytes)  # answered at once (or refused), never hung up on
        deadline = time.monotonic() + recovery_timeout_s
        while server.server.keeper.reopened_count == 0:  # the commit of the next second fails
            assert time.monotonic() < deadline, "never fenced and reopened"
            assert isinstance(client.call("GET", "k"), bytes)  # reads are answered meanwhile
            time.sleep(0.05)
        wait_until_writable(client)
        assert client.call("XLEN", "s") in (2, 3)  # the unsynced entry only if it was synced
        assert client.call("XRANGE", "s", "-", "+")[:2] == [[b"1-1", [b"f", b"one"]],
                                                          [b"2-1", [b"f", b"two"]]]
        assert client.call("PING") == b"PONG"
    finally:
        client.close()
        server.stop()


def test_a_fresh_server_on_a_too_small_disk_fails_with_the_disk_error() -> None:
    """A first open the disk refuses is an error, not an empty read-only log (recovery.py
    rule 4 is for an existing log only)."""
    with small_filesystem(8 << 20) as mount:
        with pytest.raises(OSError) as raised:
            log = open_log(os.path.join(mount, "data"), ServerSettings())  # 64 MiB segments
            log.close()
        assert raised.value.errno == errno.ENOSPC


def test_a_fresh_server_with_default_sizes_starts_and_serves_on_a_disk_of_400_mib() -> None:
    """Issue 14 defect 5: with the log's 1 GiB segments, each preallocated whole, a new server
    needed over 2 GiB of free disk (its stream log and its KV log). Its new logs now get
    NEW_LOG_SEGMENT_SIZE_BYTES segments; a restart keeps them."""
    async def serve_once(directory: str) -> list[Any]:
        log = open_log(directory, ServerSettings())
        server = Server(log, ServerSettings(port=0))
        try:
            await server.start()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(command("XADD", "s", "*", "f", "v") + command("SET", "k", "v") +
                         command("XLEN", "s"))
            replies = [await asyncio.wait_for(reader.readline(), 30)
                       for _ in range(4)]  # $n and the id, +OK, :n
            writer.close()
            await writer.wait_closed()
            return replies
        finally:
            await server.close()
            log.close()

    with small_filesystem(400 << 20) as mount:
        directory = os.path.join(mount, "data")
        first = asyncio.run(serve_once(directory))
        assert first[2:] == [b"+OK\r\n", b":1\r\n"], first
        again = asyncio.run(serve_once(directory))
        assert again[2:] == [b"+OK\r\n", b":2\r\n"], again
        sizes = {os.path.getsize(os.path.join(directory, name))
                 for name in os.listdir(directory) if name.startswith("segment-")}
        assert sizes == {NEW_LOG_SEGMENT_SIZE_BYTES}
