"""XREAD (blocking included) and consumer groups against redis-py 8, sync and asyncio, RESP2
and RESP3: every command round-trips as Redis documents it, blocked readers are woken by other
clients' XADDs without stalling anyone else, and group state survives a restart exactly.

Method: the server runs in a thread with its own event loop on port 0
(tests/support/servers.py's RunningServer); clients connect over loopback, blocked ones from
their own thread or task. redis-cli and redis-benchmark are driven in
tests/fasterlog_server/test_service_tools.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import RunningServer

redis = pytest.importorskip("redis")
redis_asyncio = pytest.importorskip("redis.asyncio")

PROTOCOLS = [2, 3]


def by_key(reply: Any) -> dict[bytes, list[Any]]:
    """XREAD/XREADGROUP as {key: [(id, fields), ...]}, whatever the protocol's shape."""
    if not reply:
        return {}
    if isinstance(reply, dict):  # RESP3: redis-py wraps each key's entries in a list
        return {key: value[0] for key, value in reply.items()}
    return {key: entries for key, entries in reply}


def ids_of(entries: list[Any]) -> list[bytes]:
    return [entry[0] for entry in entries]


def in_thread(function: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(function()), daemon=True)
    thread.start()
    return thread, result


# ---------------------------------------------------------------------- XREAD


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xread_returns_entries_after_the_given_ids(running: RunningServer,
                                                   protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    a = [client.xadd("a", {"n": str(i)}) for i in range(3)]
    b = [client.xadd("b", {"n": str(i)}) for i in range(2)]
    reply = by_key(client.xread({"a": "0", "b": b[0]}))
    assert ids_of(reply[b"a"]) == a and ids_of(reply[b"b"]) == b[1:]
    assert reply[b"a"][0][1] == {b"n": b"0"}
    assert ids_of(by_key(client.xread({"a": "0-0"}, count=2))[b"a"]) == a[:2]
    assert by_key(client.xread({"a": "$"})) == {}
    assert by_key(client.xread({"a": a[-1], "missing": "0"})) == {}
    assert ids_of(by_key(client.xread({"a": "+", "b": "+"}))[b"a"]) == [a[-1]]
    with pytest.raises(redis.ResponseError, match="Unbalanced 'xread' list of streams"):
        client.execute_command("XREAD", "STREAMS", "a", "b", "0")
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xread_block_times_out_with_a_null_reply(running: RunningServer, protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    client.xadd("s", {"f": "v"})
    started = time.monotonic()
    assert not client.xread({"s": "$"}, block=200)
    assert 0.15 < time.monotonic() - started < 5
    client.close()
    hello = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n" if protocol == 3 else b""
    xread = b"*6\r\n$5\r\nXREAD\r\n$5\r\nBLOCK\r\n$2\r\n50\r\n$7\r\nSTREAMS\r\n" \
        b"$1\r\ns\r\n$1\r\n$\r\n"
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as connection:
        connection.sendall(hello + xread)
        received = b""
        expected = b"_\r\n" if protocol == 3 else b"*-1\r\n"
        while not received.endswith(expected):
            chunk = connection.recv(65536)
            assert chunk, received
            received += chunk
    assert received.endswith(b"\r\n" + expected) if hello else received == expected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_blocked_xread_is_woken_by_an_xadd_from_another_client(running: RunningServer,
                                                               protocol: int) -> None:
    reader = redis.Redis(port=running.port, protocol=protocol)
    writer = redis.Redis(port=running.port, protocol=protocol)
    writer.xadd("s", {"old": "1"})
    thread, result = in_thread(lambda: reader.xread({"other": "$", "s": "$"}, block=0))
    time.sleep(0.2)
    assert not result  # blocked; meanwhile other clients are served
    assert writer.ping() is True and writer.xlen("s") == 1
    new_id = writer.xadd("s", {"new": "2"})
    thread.join(10)
    assert by_key(result[0]) == {b"s": [(new_id, {b"new": b"2"})]}
    reader.close()
    writer.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_pipelined_xread_sees_the_xadd_before_it(running: RunningServer,
                                                   protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    client.xadd("s", {"n": "0"})
    pipe = client.pipeline(transaction=False)
    pipe.xadd("s", {"n": "1"})
    pipe.xread({"s": "0"})
    pipe.xread({"s": "$"}, block=50)
    new_id, entries, timed_out = pipe.execute()
    assert ids_of(by_key(entries)[b"s"])[-1] == new_id and not timed_out
    client.close()


def test_asyncio_clients_block_without_stalling_the_server(running: RunningServer) -> None:
    async def main() -> None:
        readers = [redis_asyncio.Redis(port=running.port, protocol=protocol)
                   for protocol in (2, 3, 3)]
        writer = redis_asyncio.Redis(port=running.port, protocol=3)
        waits = [asyncio.create_task(r.xread({"s": "$"}, block=5000)) for r in readers]
        await asyncio.sleep(0.2)
        assert await writer.ping() is True
        new_id = await writer.xadd("s", {"k": "v"})
        replies = await asyncio.wait_for(asyncio.gather(*waits), 10)
        assert all(ids_of(by_key(reply)[b"s"]) == [new_id] for reply in replies)
        for client in (*readers, writer):
            await client.aclose()

    asyncio.run(main())


# ---------------------------------------------------------------------- groups


def nogroup(key: str, group: str) -> str:
    return f"No such key '{key}' or consumer group '{group}'"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xgroup_create_setid_destroy_and_consumers(running: RunningServer,
                                                   protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    with pytest.raises(redis.ResponseError, match="requires the key to exist"):
        client.xgroup_create("s", "g")
    assert client.xgroup_create("s", "g", id="$", mkstream=True) is True
    assert client.exists("s") == 1 and client.xlen("s") == 0
    with pytest.raises(redis.ResponseError, match="BUSYGROUP Consumer Group name already"):
        client.xgroup_create("s", "g")
    assert client.xgroup_createconsumer("s", "g", "alice") == 1
    assert client.xgroup_createconsumer("s", "g", "alice") == 0
    with pytest.raises(redis.ResponseError, match="NOGROUP No such consumer group 'h'"):
        client.xgroup_createconsumer("s", "h", "alice")
    first = client.xadd("s", {"n": "1"})
    assert client.xgroup_setid("s", "g", id="0", entries_read=0) is True
    group = client.xinfo_groups("s")[0]
    assert group["last-delivered-id"] == b"0-0" and group["entries-read"] == 0
    assert group["lag"] == 1 and group["consumers"] == 1
    client.xreadgroup("g", "bob", {"s": ">"})
    assert client.xgroup_delconsumer("s", "g", "bob") == 1
    assert client.xpending("s", "g")["pending"] == 0
    assert [c["name"] for c in client.xinfo_consumers("s", "g")] == [b"alice"]
    assert client.xgroup_destroy("s", "g") == 1
    assert client.xgroup_destroy("s", "g") == 0
    assert client.xinfo_groups("s") == []
    with pytest.raises(redis.ResponseError, match="NOGROUP"):
        client.xreadgroup("g", "alice", {"s": ">"})
    assert first
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xreadgroup_delivers_new_entries_and_the_consumers_history(running: RunningServer,
                                                                   protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(4)]
    client.xgroup_create("s", "g", id="0")
    with pytest.raises(redis.ResponseError, match=nogroup("s", "nope")):
        client.xreadgroup("nope", "c", {"s": ">"})
    assert ids_of(by_key(client.xreadgroup("g", "alice", {"s": ">"}, count=2))[b"s"]) == \
        ids[:2]
    assert ids_of(by_key(client.xreadgroup("g", "bob", {"s": ">"}, noack=True))[b"s"]) == \
        ids[2:]
    assert not client.xreadgroup("g", "bob", {"s": ">"})
    history = by_key(client.xreadgroup("g", "alice", {"s": "0"}))
    assert ids_of(history[b"s"]) == ids[:2] and history[b"s"][0][1] == {b"n": b"0"}
    assert by_key(client.xreadgroup("g", "bob", {"s": "0"})) == {b"s": []}
    pending = client.xpending_range("s", "g", min="-", max="+", count=10)
    assert [p["message_id"] for p in pending] == ids[:2]
    assert [p["times_delivered"] for p in pending] == [2, 2]
    assert {p["consumer"] for p in pending} == {b"alice"}
    client.xdel("s", ids[1])
    again = by_key(client.xreadgroup("g", "alice", {"s": "0"}))[b"s"]
    assert again[1][0] == ids[1] and not again[1][1]  # deleted: id with a null entry
    group = client.xinfo_groups("s")[0]
    assert group["last-delivered-id"] == ids[-1] and group["entries-read"] == 4
    assert group["pending"] == 2 and group["lag"] == 0
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xack_and_xpending_summary_and_extended_forms(running: RunningServer,
                                                      protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(5)]
    client.xgroup_create("s", "g", id="0")
    assert client.xpending("s", "g") == {"pending": 0, "min": None, "max": None,
                                         "consumers": []}
    client.xreadgroup("g", "alice", {"s": ">"}, count=3)
    client.xreadgroup("g", "bob", {"s": ">"})
    summary = client.xpending("s", "g")
    assert summary["pending"] == 5 and summary["min"] == ids[0] and summary["max"] == ids[-1]
    assert summary["consumers"] == [{"name": b"alice", "pending": 3},
                                    {"name": b"bob", "pending": 2}]
    bobs = client.xpending_range("s", "g", "-", "+", 10, consumername="bob")
    assert [p["message_id"] for p in bobs] == ids[3:]
    assert client.xpending_range("s", "g", "(" + ids[0].decode(), "+", 2)[0]["message_id"] \
        == ids[1]
    assert client.xpending_range("s", "g", "-", "+", 10, idle=60_000) == []
    time.sleep(0.05)
    idle = client.xpending_range("s", "g", "-", "+", 10, idle=40)
    assert len(idle) == 5 and all(p["time_since_delivered"] >= 40 for p in idle)
    assert client.xack("s", "g", ids[0], ids[1], "9-9") == 2
    assert client.xack("s", "g", ids[0]) == 0
    assert client.xack("s", "nope", ids[0]) == 0
    assert client.xpending("s", "g")["pending"] == 3
    with pytest.raises(redis.ResponseError, match=nogroup("s", "nope")):
        client.xpending("s", "nope")
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xclaim_and_xautoclaim_move_idle_entries(running: RunningServer, protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(4)]
    client.xgroup_create("s", "g", id="0")
    client.xreadgroup("g", "alice", {"s": ">"})
    assert client.xclaim("s", "g", "bob", 60_000, [ids[0]]) == []  # not idle long enough
    time.sleep(0.05)
    claimed = client.xclaim("s", "g", "bob", 10, [ids[0]])
    assert claimed == [(ids[0], {b"n": b"0"})]
    assert client.xclaim("s", "g", "carol", 0, [ids[1]], justid=True) == [ids[1]]
    rows = {p["message_id"]: p for p in client.xpending_range("s", "g", "-", "+", 10)}
    assert rows[ids[0]]["consumer"] == b"bob" and rows[ids[0]]["times_delivered"] == 2
    assert rows[ids[1]]["consumer"] == b"carol" and rows[ids[1]]["times_delivered"] == 1
    client.xclaim("s", "g", "bob", 0, [ids[2]], idle=5000, retrycount=7)
    row = client.xpending_range("s", "g", ids[2], ids[2], 1)[0]
    assert row["times_delivered"] == 7 and row["time_since_delivered"] >= 5000
    client.xdel("s", ids[3])
    reply = client.execute_command("XAUTOCLAIM", "s", "g", "dave", "0", "0-0", "COUNT", "2")
    assert reply[0] == ids[2] and ids_of(reply[1]) == ids[:2]
    reply = client.execute_command("XAUTOCLAIM", "s", "g", "dave", "0", reply[0])
    assert reply[0] == b"0-0" and ids_of(reply[1]) == [ids[2]] and reply[2] == [ids[3]]
    assert client.xautoclaim("s", "g", "erin", 0, justid=True) == ids[:3]
    assert client.xpending("s", "g")["consumers"] == [{"name": b"erin", "pending": 3}]
    with pytest.raises(redis.ResponseError, match=nogroup("s", "nope")):
        client.xclaim("s", "nope", "bob", 0, [ids[0]])
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xinfo_stream_groups_and_consumers_report_lag_and_entries_read(
        running: RunningServer, protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(5)]
    client.xgroup_create("s", "g1", id="0")
    client.xgroup_create("s", "g2", id="$")
    groups = {g["name"]: g for g in client.xinfo_groups("s")}
    assert groups[b"g1"]["entries-read"] is None and groups[b"g1"]["lag"] == 5
    assert groups[b"g2"]["lag"] == 0
    client.xreadgroup("g1", "c", {"s": ">"}, count=2)
    groups = {g["name"]: g for g in client.xinfo_groups("s")}
    assert groups[b"g1"]["entries-read"] == 2 and groups[b"g1"]["lag"] == 3
    client.xdel("s", ids[3])  # a tombstone ahead of g1: lag can no longer be known
    assert {g["name"]: g for g in client.xinfo_groups("s")}[b"g1"]["lag"] is None
    info = client.xinfo_stream("s")
    assert info["length"] == 4 and info["entries-added"] == 5 and info["groups"] == 2
    assert info["last-generated-id"] == ids[-1] and info["max-deleted-entry-id"] == ids[3]
    assert info["recorded-first-entry-id"] == ids[0]
    assert info["first-entry"][0] == ids[0] and info["last-entry"][0] == ids[-1]
    consumers = client.xinfo_consumers("s", "g1")
    assert consumers[0]["name"] == b"c" and consumers[0]["pending"] == 2
    assert consumers[0]["idle"] >= 0 and consumers[0]["inactive"] >= 0
    with pytest.raises(redis.ResponseError, match="no such key"):
        client.xinfo_groups("missing")
    with pytest.raises(redis.ResponseError, match="NOGROUP No such consumer group 'x'"):
        client.xinfo_consumers("s", "x")
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_blocked_xreadgroup_is_woken_by_an_xadd_from_another_client(running: RunningServer,
                                                                    protocol: int) -> None:
    reader = redis.Redis(port=running.port, protocol=protocol)
    writer = redis.Redis(port=running.port, protocol=protocol)
    reader.xgroup_create("s", "g", id="$", mkstream=True)
    thread, result = in_thread(lambda: reader.xreadgroup("g", "c", {"s": ">"}, block=10_000))
    time.sleep(0.2)
    assert not result
    new_id = writer.xadd("s", {"k": "v"})
    thread.join(10)
    assert ids_of(by_key(result[0])[b"s"]) == [new_id]
    assert writer.xpending("s", "g")["pending"] == 1
    started = time.monotonic()
    assert not reader.xreadgroup("g", "c", {"s": ">"}, block=150)
    assert time.monotonic() - started >= 0.1
    reader.close()
    writer.close()


def test_one_xadd_wakes_one_of_two_blocked_group_readers(running: RunningServer) -> None:
    async def main() -> None:
        first = redis_asyncio.Redis(port=running.port, protocol=3)
        second = redis_asyncio.Redis(port=running.port, protocol=2)
        writer = redis_asyncio.Redis(port=running.port)
        await writer.xgroup_create("s", "g", id="$", mkstream=True)
        waits = [asyncio.create_task(c.xreadgroup("g", name, {"s": ">"}, block=600))
                 for c, name in ((first, "a"), (second, "b"))]
        await asyncio.sleep(0.2)
        await writer.xadd("s", {"k": "v"})
        replies = await asyncio.wait_for(asyncio.gather(*waits), 10)
        assert sorted(bool(reply) for reply in replies) == [False, True]
        for client in (first, second, writer):
            await client.aclose()

    asyncio.run(main())


def test_restart_recovers_groups_pending_entries_and_delivery_counts(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(6)]
    client.xgroup_create("s", "g", id="0")
    client.xgroup_create("s", "gone", id="0")
    client.xgroup_destroy("s", "gone")
    client.xgroup_createconsumer("s", "g", "idle-one")
    client.xreadgroup("g", "alice", {"s": ">"}, count=4)
    client.xreadgroup("g", "alice", {"s": "0"}, count=1)  # ids[0] delivered twice
    client.xclaim("s", "g", "bob", 0, [ids[1]], retrycount=5)
    client.xack("s", "g", ids[2])
    before_pending = client.xpending_range("s", "g", "-", "+", 10)
    before_groups = client.xinfo_groups("s")
    client.close()
    server.stop()

    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    after_pending = client.xpending_range("s", "g", "-", "+", 10)
    def without_idle(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "time_since_delivered"} for row in rows]

    assert without_idle(after_pending) == without_idle(before_pending)
    assert [p["times_delivered"] for p in after_pending] == [2, 5, 1]
    for old, new in zip(before_pending, after_pending, strict=True):
        assert new["time_since_delivered"] >= old["time_since_delivered"]  # times kept
    assert client.xinfo_groups("s") == before_groups
    names = sorted(c["name"] for c in client.xinfo_consumers("s", "g"))
    assert names == [b"alice", b"bob", b"idle-one"]
    assert ids_of(by_key(client.xreadgroup("g", "carol", {"s": ">"}))[b"s"]) == ids[4:]
    client.close()
    server.stop()
