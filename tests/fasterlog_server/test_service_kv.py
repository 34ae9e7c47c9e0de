"""The KV view, transactions and durability commands of the RESP server, against redis-py 8
(sync and asyncio, RESP2 and RESP3) on 127.0.0.1 with real logs underneath.

Covers: GET/SET with every option (expiry honoured and durable), MGET/MSET, INCR family,
DEL/EXISTS/TYPE/DBSIZE/SCAN across stream and string keys, Redis's error replies (WRONGTYPE,
not an integer, syntax, arity), MULTI/EXEC/DISCARD (EXECABORT, nesting), WATCH conflicts on
both kinds of keys, WAITAOF/WAIT, RESET, LOG.* and KV.CHECKPOINT, XINFO STREAM FULL, and a DEL
waking a blocked XREADGROUP. Restarts check that what was acknowledged is recovered.

Method: the server runs in a thread (tests/support/servers.py's RunningServer) on port 0;
clients connect over loopback, a blocked one from its own thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import RunningServer, raw_exchange

redis = pytest.importorskip("redis")
redis_asyncio = pytest.importorskip("redis.asyncio")

PROTOCOLS = [2, 3]


def client_for(running: RunningServer, protocol: int = 2) -> Any:
    return redis.Redis(port=running.port, protocol=protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_get_set_and_their_options(running: RunningServer, protocol: int) -> None:
    client = client_for(running, protocol)
    assert client.get("k") is None
    assert client.set("k", "v1") is True
    assert client.get("k") == b"v1"
    assert client.set("k", "v2", nx=True) is None
    assert client.get("k") == b"v1"
    assert client.set("other", "x", xx=True) is None
    assert client.exists("other") == 0
    assert client.set("k", "v2", xx=True) is True
    assert client.set("k", "v3", get=True) == b"v2"
    assert client.set("new", "n", get=True) is None
    assert client.get("new") == b"n"
    assert client.set("k", "v4", nx=True, get=True) == b"v3"  # NX GET: old value, no write
    assert client.get("k") == b"v3"
    client.set("e", "1", ex=100)
    assert 99 <= client.ttl("e") <= 100
    client.set("e", "2", keepttl=True)
    assert 99 <= client.ttl("e") <= 100
    client.set("e", "3")
    assert client.ttl("e") == -1
    assert client.ttl("missing") == -2
    client.set("p", "1", px=100_000)
    assert 99_000 < client.pttl("p") <= 100_000
    client.set("at", "1", exat=int(time.time()) + 50)
    assert 48 <= client.ttl("at") <= 50
    client.set("pat", "1", pxat=int(time.time() * 1000) + 50_000)
    assert 48 <= client.ttl("pat") <= 50
    with pytest.raises(redis.ResponseError, match="syntax error"):
        client.execute_command("SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        client.execute_command("SET", "k", "v", "EX", "10", "PX", "100")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        client.execute_command("SET", "k", "v", "KEEPTTL", "EX", "10")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        client.execute_command("SET", "k", "v", "EX", "0")
    with pytest.raises(redis.ResponseError, match="not an integer or out of range"):
        client.execute_command("SET", "k", "v", "EX", "ten")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        client.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'set'"):
        client.execute_command("SET", "k")
    client.close()


def test_expired_keys_are_invisible_and_stay_expired_after_a_restart(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    client.set("short", "gone", px=150)
    client.set("long", "kept", ex=1000)
    client.set("plain", "kept")
    assert client.get("short") == b"gone"
    time.sleep(0.3)
    assert client.get("short") is None
    assert client.exists("short") == 0
    assert client.type("short") == b"none"
    assert client.mget("short", "plain") == [None, b"kept"]
    assert client.dbsize() == 2
    client.set("soon", "x", px=400)  # expires while the server is down
    client.close()
    server.stop()
    time.sleep(0.5)
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    assert client.get("soon") is None and client.get("short") is None
    assert client.get("long") == b"kept" and 990 <= client.ttl("long") <= 1000
    assert client.dbsize() == 2
    client.close()
    server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mget_mset_and_counters(running: RunningServer, protocol: int) -> None:
    client = client_for(running, protocol)
    assert client.mset({"a": "1", "b": "2", "c": "x"}) is True
    client.xadd("s", {"f": "v"})
    assert client.mget("a", "b", "missing", "s", "c") == [b"1", b"2", None, None, b"x"]
    assert client.incr("a") == 2
    assert client.incrby("a", 10) == 12
    assert client.decr("a") == 11
    assert client.decrby("a", 20) == -9
    assert client.incr("fresh") == 1
    assert client.get("a") == b"-9"
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        client.incr("c")
    client.set("big", str((1 << 63) - 1))
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        client.incr("big")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        client.incrby("a", "1.5")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        client.set("sp", " 12") and client.incr("sp")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'mset'"):
        client.execute_command("MSET", "a", "1", "b")
    client.set("t", "5", ex=100)
    assert client.incr("t") == 6 and client.ttl("t") > 90  # INCR keeps the TTL
    client.close()


def test_big_values_sharing_an_index_chain_are_one_atomic_mset(tmp_path: Path) -> None:
    """Regression: the pending writes of a batch go to one write_batch, one record per index
    chain; keys sharing a chain whose values passed a page together failed the whole batch
    with ValueTooLarge, and that failed append fenced the server (MSET of 2,000 x 32 KiB on 64
    KiB pages hit it at random). The keys here are picked to share chains."""
    server = RunningServer(tmp_path / "data")
    store = server.server.context.kv.store
    index_bits = store.index_stats()["buckets_count_log2"]
    by_chain: dict[tuple[int, int], list[bytes]] = {}
    keys: list[bytes] = []
    for i in range(5_000_000):  # 3 chains of 3 keys: a few million hashes at 2^24 chains
        key = b"k%d" % i
        hash_ = store.key_hash(key)
        members = by_chain.setdefault((hash_ & ((1 << index_bits) - 1), hash_ >> 48 & 0x3FFF),
                                      [])
        members.append(key)
        if len(members) == 3:
            keys += members
            if len(keys) == 9:
                break
    assert len(keys) == 9
    value_size = store.log.entry_size_max // 2  # two of a chain do not fit one record
    values = {key: bytes([n]) * value_size for n, key in enumerate(keys)}
    client = redis.Redis(port=server.port)
    assert client.mset(values) is True
    assert client.set("after", "1") is True  # still writable: not fenced
    assert client.mget(keys) == [values[key] for key in keys]
    client.close()
    server.stop()
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    assert client.mget(keys) == [values[key] for key in keys]
    assert client.dbsize() == 10
    client.close()
    server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_keys_of_both_kinds(running: RunningServer, protocol: int) -> None:
    client = client_for(running, protocol)
    client.xadd("stream", {"f": "v"})
    client.set("string", "v")
    assert client.type("stream") == b"stream"
    assert client.type("string") == b"string"
    assert client.type("none") == b"none"
    assert client.exists("stream", "string", "none", "string") == 3
    assert client.dbsize() == 2
    wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value"
    with pytest.raises(redis.ResponseError, match=wrongtype):
        client.get("stream")
    with pytest.raises(redis.ResponseError, match=wrongtype):
        client.incr("stream")
    with pytest.raises(redis.ResponseError, match=wrongtype):
        client.xadd("string", {"f": "v"})
    with pytest.raises(redis.ResponseError, match=wrongtype):
        client.xlen("string")
    with pytest.raises(redis.ResponseError, match=wrongtype):
        client.xrange("string")
    with pytest.raises(redis.ResponseError, match=wrongtype):
        client.set("stream", "x", get=True)
    assert client.delete("stream", "string", "none") == 2
    assert client.dbsize() == 0
    client.xadd("s2", {"f": "v"})
    assert client.set("s2", "now a string") is True  # SET replaces any kind, as Redis
    assert client.type("s2") == b"string"
    client.close()


def test_scan_visits_every_key_once_with_match_count_and_type(running: RunningServer) -> None:
    client = redis.Redis(port=running.port)
    strings = {f"user:{i}".encode() for i in range(60)}
    client.mset({key: b"v" for key in strings})
    streams = {f"events:{i}".encode() for i in range(15)}
    for key in streams:
        client.xadd(key, {"f": "v"})
    assert set(client.scan_iter(count=7)) == strings | streams
    seen: list[bytes] = []
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, count=5)
        seen += keys
        if cursor == 0:
            break
    assert sorted(seen) == sorted(strings | streams)  # each exactly once
    assert set(client.scan_iter(match="user:1*")) == {k for k in strings
                                                      if k.startswith(b"user:1")}
    assert set(client.scan_iter(_type="STREAM")) == streams
    assert set(client.scan_iter(_type="string", match="events:*")) == set()
    with pytest.raises(redis.ResponseError, match="invalid cursor"):
        client.execute_command("SCAN", "x")
    client.close()


def test_kv_writes_of_a_pipeline_are_durable_when_answered(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"k{i}", f"v{i}")
    pipe.incr("counter")
    pipe.get("k7")
    assert pipe.execute()[-2:] == [1, b"v7"]
    client.close()
    server.stop()
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    assert client.mget([f"k{i}" for i in range(500)]) == [f"v{i}".encode() for i in range(500)]
    assert client.get("counter") == b"1"
    assert client.dbsize() == 501
    client.close()
    server.stop()


# ---------------------------------------------------------------------- transactions


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_multi_exec_runs_the_queue_atomically(running: RunningServer, protocol: int) -> None:
    client = client_for(running, protocol)
    pipe = client.pipeline(transaction=True)
    pipe.set("a", "1").incr("a").xadd("s", {"f": "v"}, id="1-1").xlen("s").get("a")
    assert pipe.execute() == [True, 2, b"1-1", 1, b"2"]
    assert client.get("a") == b"2"
    # Run-time errors are answered in place; the other commands still run.
    pipe = client.pipeline(transaction=True)
    pipe.set("b", "x").incr("b").set("c", "y")
    replies = pipe.execute(raise_on_error=False)
    assert replies[0] is True and isinstance(replies[1], redis.ResponseError)
    assert client.get("c") == b"y"
    client.close()


def test_multi_errors_as_redis_answers_them(running: RunningServer) -> None:
    connection = redis.Redis(port=running.port, single_connection_client=True)
    assert connection.execute_command("MULTI") == b"OK"
    with pytest.raises(redis.ResponseError, match="MULTI calls can not be nested"):
        connection.execute_command("MULTI")
    assert connection.execute_command("ECHO", "queued?") == b"QUEUED"
    connection.execute_command("SET", "q", "1")
    with pytest.raises(redis.ResponseError, match="unknown command"):
        connection.execute_command("NOSUCH")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        connection.execute_command("GET")
    with pytest.raises(redis.exceptions.ExecAbortError, match="Transaction discarded"):
        connection.execute_command("EXEC")
    assert connection.get("q") is None
    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        connection.execute_command("EXEC")
    with pytest.raises(redis.ResponseError, match="DISCARD without MULTI"):
        connection.execute_command("DISCARD")
    connection.execute_command("MULTI")
    connection.execute_command("SET", "q", "1")
    assert connection.execute_command("DISCARD") == b"OK"
    assert connection.get("q") is None
    connection.execute_command("MULTI")
    with pytest.raises(redis.ResponseError, match="WATCH inside MULTI is not allowed"):
        connection.execute_command("WATCH", "q")
    connection.execute_command("DISCARD")
    connection.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_watch_conflicts_on_string_and_stream_keys(running: RunningServer,
                                                  protocol: int) -> None:
    client = client_for(running, protocol)
    other = client_for(running, protocol)
    client.set("balance", "10")
    for watched, change in (("balance", lambda: other.incr("balance")),
                            ("events", lambda: other.xadd("events", {"f": "v"})),
                            ("gone", lambda: other.set("gone", "1"))):
        with client.pipeline(transaction=True) as pipe:
            pipe.watch(watched)
            pipe.multi()
            pipe.set("result", watched)
            change()
            with pytest.raises(redis.WatchError):
                pipe.execute()
        assert client.get("result") is None
    with client.pipeline(transaction=True) as pipe:  # unchanged: EXEC runs
        pipe.watch("balance")
        value = int(pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", value + 1)
        assert pipe.execute() == [True]
    assert client.get("balance") == b"12"
    with client.pipeline(transaction=True) as pipe:  # UNWATCH forgets the keys
        pipe.watch("balance")
        pipe.unwatch()
        other.incr("balance")
        pipe.multi()
        pipe.get("balance")
        assert pipe.execute() == [b"13"]
    client.close()
    other.close()


def test_asyncio_transactions_and_watch(running: RunningServer) -> None:
    async def main() -> None:
        client = redis_asyncio.Redis(port=running.port, protocol=3)
        other = redis_asyncio.Redis(port=running.port, protocol=3)
        async with client.pipeline(transaction=True) as pipe:
            pipe.set("x", "1").incr("x").xadd("s", {"a": "b"}, id="5-0")
            assert await pipe.execute() == [True, 2, b"5-0"]
        async with client.pipeline(transaction=True) as pipe:
            await pipe.watch("x")
            await other.set("x", "changed")
            pipe.multi()
            pipe.set("x", "mine")
            with pytest.raises(redis.WatchError):
                await pipe.execute()
        assert await client.get("x") == b"changed"
        assert await client.execute_command("WAITAOF", 1, 0, 0) == [1, 0]
        await client.aclose()
        await other.aclose()

    asyncio.run(main())


def test_transaction_is_durable_when_exec_is_answered(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    pipe = client.pipeline(transaction=True)
    for i in range(200):
        pipe.xadd("s", {"i": str(i)})
        pipe.set(f"k{i}", str(i))
    ids = pipe.execute()[::2]
    client.close()
    server.stop()
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    assert [entry[0] for entry in client.xrange("s")] == ids
    assert client.get("k199") == b"199"
    client.close()
    server.stop()


# ---------------------------------------------------------------------- durability, tooling


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_waitaof_wait_and_reset(running: RunningServer, protocol: int) -> None:
    client = client_for(running, protocol)
    client.set("k", "v")
    assert client.execute_command("WAITAOF", 1, 0, 0) == [1, 0]
    assert client.execute_command("WAIT", 0, 0) == 0
    started = time.monotonic()
    assert client.execute_command("WAITAOF", 1, 1, 100) == [1, 0]  # no replicas: times out
    assert client.execute_command("WAIT", 1, 100) == 0
    assert time.monotonic() - started >= 0.2
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.execute_command("WAITAOF", "x", 0, 0)
    connection = client_for(running, protocol)
    connection = redis.Redis(port=running.port, protocol=protocol,
                             single_connection_client=True)
    connection.execute_command("MULTI")
    assert connection.execute_command("RESET") in (b"RESET", "RESET")
    with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
        connection.execute_command("EXEC")
    connection.close()
    client.close()


def test_waitaof_forces_a_sync_with_fsync_everysec(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", fsync="everysec")
    client = redis.Redis(port=server.port)
    client.set("k", "v")
    client.xadd("s", {"f": "v"})
    before = server.log.committed_until_address
    assert client.execute_command("WAITAOF", 1, 0, 0) == [1, 0]
    assert server.log.committed_until_address > before
    assert server.server.kv.store.log.committed_until_address == \
        server.server.kv.store.log.tail_address
    client.close()
    server.stop()


def test_log_extensions_and_kv_checkpoint(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port, protocol=3)
    old = [client.xadd("s", {"i": str(i), "pad": "x" * 2000}) for i in range(100)]
    client.xgroup_create("s", "g", id="0")
    client.xreadgroup("g", "c1", {"s": ">"}, count=3)
    info = client.execute_command("LOG.INFO")
    assert info[b"committed_until_address"] == info[b"tail_address"]
    committed = client.execute_command("LOG.COMMIT")
    assert committed == server.log.tail_address
    client.set("k", "v")
    assert client.execute_command("KV.CHECKPOINT") > 0
    new = [client.xadd("s", {"i": "new"}) for i in range(3)]
    cut = 65536 * 2  # a page start above the first entries (pages are 64 KiB here)
    assert client.execute_command("LOG.TRUNCATE", cut) == b"OK"
    remaining = [entry[0] for entry in client.xrange("s")]
    assert remaining[-3:] == new and len(remaining) < 103 and old[-1] in remaining
    last_id = client.xinfo_stream("s")["last-generated-id"]
    with pytest.raises(redis.ResponseError, match="committed address"):
        client.execute_command("LOG.TRUNCATE", 1 << 50)
    client.close()
    server.stop()
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port, protocol=3)
    assert [entry[0] for entry in client.xrange("s")] == remaining
    info = client.xinfo_stream("s")
    assert info["last-generated-id"] == last_id and info["entries-added"] == 103
    assert client.xpending("s", "g")["pending"] == 3
    assert client.get("k") == b"v"
    assert client.xadd("s", {"f": "v"}) > last_id  # ids never go back
    client.close()
    server.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_xinfo_stream_full(running: RunningServer, protocol: int) -> None:
    client = client_for(running, protocol)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(12)]
    client.xgroup_create("s", "g", id="0")
    client.xreadgroup("g", "alice", {"s": ">"}, count=2)
    full = client.xinfo_stream("s", full=True)
    assert full["length"] == 12 and full["entries-added"] == 12
    assert list(full["entries"]) == ids[:10]
    group = full["groups"][0]
    assert group["name"] == b"g" and group["pel-count"] == 2
    assert [p[0] for p in group["pending"]] == ids[:2]
    consumer = {k.decode() if isinstance(k, bytes) else k: v
                for k, v in group["consumers"][0].items()}
    assert consumer["name"] == b"alice" and consumer["pel-count"] == 2
    everything = client.execute_command("XINFO", "STREAM", "s", "FULL", "COUNT", "0")
    entries = everything[b"entries"] if isinstance(everything, dict) else \
        everything[everything.index(b"entries") + 1]
    assert len(entries) == 12
    client.close()


def test_del_wakes_a_blocked_group_reader(running: RunningServer) -> None:
    client = redis.Redis(port=running.port)
    client.xgroup_create("s", "g", id="$", mkstream=True)
    result: list[Any] = []

    def blocked() -> None:
        reader = redis.Redis(port=running.port)
        try:
            reader.xreadgroup("g", "c", {"s": ">"}, block=0)
        except redis.ResponseError as error:
            result.append(str(error))
        reader.close()

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert client.delete("s") == 1
    thread.join(10)
    assert result and "NOGROUP" in result[0]
    assert time.monotonic() - started < 5
    client.close()


def test_unauthenticated_clients_get_redis_tighter_limits(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", requirepass="s3cret")
    reply = raw_exchange(server.port, b"*2\r\n$4\r\nECHO\r\n$20000\r\n")
    assert reply.startswith(b"-ERR Protocol error: unauthenticated bulk length")
    reply = raw_exchange(server.port, b"*11\r\n")
    assert reply.startswith(b"-ERR Protocol error: unauthenticated multibulk length")
    # After AUTH, in the same pipeline, the normal limits apply.
    big = b"x" * 20000
    reply = raw_exchange(server.port, b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n"
                         b"*2\r\n$4\r\nECHO\r\n$20000\r\n" + big + b"\r\n*1\r\n$4\r\nQUIT\r\n")
    assert reply == b"+OK\r\n$20000\r\n" + big + b"\r\n+OK\r\n"
    server.stop()


def test_commands_past_the_pipeline_depth_are_answered_without_more_input(
        tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", pipeline_depth_max=3)
    reply = raw_exchange(server.port, b"*1\r\n$4\r\nPING\r\n" * 10 + b"QUIT\r\n")
    assert reply == b"+PONG\r\n" * 10 + b"+OK\r\n"
    server.stop()
