"""The RESP server against real clients: redis-py (sync and asyncio, RESP2 and RESP3) and raw
sockets, on 127.0.0.1 with a real log underneath.

Method: the server runs in a thread with its own event loop on port 0; clients connect over
loopback. Durability is checked by restarting the server on the same directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fasterlog_server.server import ServerSettings
from tests.support.servers import RunningServer, raw_exchange

redis = pytest.importorskip("redis")
redis_asyncio = pytest.importorskip("redis.asyncio")


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_round_trips_streams_commands(running: RunningServer, protocol: int) -> None:
    client = redis.Redis(port=running.port, protocol=protocol)
    assert client.ping() is True
    assert client.echo(b"hi") == b"hi"
    first = client.xadd("s", {"a": "1"})
    second = client.xadd("s", {"b": "2"}, id=f"{int(first.split(b'-')[0]) + 10}-5")
    assert client.xlen("s") == 2
    entries = client.xrange("s")
    assert [e[0] for e in entries] == [first, second]
    assert entries[0][1] == {b"a": b"1"}
    assert [e[0] for e in client.xrevrange("s", count=1)] == [second]
    assert client.xrange("s", min="(" + first.decode()) == entries[1:]
    assert client.type("s") == (b"stream" if protocol == 2 else b"stream")
    assert client.exists("s", "missing") == 1
    assert client.xdel("s", first) == 1
    assert client.xlen("s") == 1
    assert client.dbsize() == 1
    assert client.config_get("appendfsync") == {"appendfsync": "always"} or \
        client.config_get("appendfsync") == {b"appendfsync": b"always"}
    client.close()


def test_explicit_ids_must_grow(running: RunningServer) -> None:
    client = redis.Redis(port=running.port)
    client.xadd("s", {"f": "v"}, id="5-1")
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        client.xadd("s", {"f": "v"}, id="5-1")
    assert client.xadd("s", {"f": "v"}, id="5-*") == b"5-2"
    with pytest.raises(redis.ResponseError, match="greater than 0-0"):
        client.xadd("t", {"f": "v"}, id="0-0")
    assert client.xadd("n", {"f": "v"}, nomkstream=True) is None
    client.close()


def test_maxlen_and_xtrim(running: RunningServer) -> None:
    client = redis.Redis(port=running.port)
    for i in range(10):
        client.xadd("s", {"i": str(i)}, maxlen=5, approximate=False)
    assert client.xlen("s") == 5
    assert client.xrange("s")[0][1] == {b"i": b"5"}
    assert client.xtrim("s", maxlen=2, approximate=False) == 3
    assert client.xlen("s") == 2
    client.close()


def test_acknowledged_writes_survive_a_restart(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    ids = [client.xadd("s", {"n": str(i)}) for i in range(100)]
    pipe = client.pipeline(transaction=False)
    for i in range(100, 200):
        pipe.xadd("s", {"n": str(i)})
    ids += pipe.execute()
    client.close()
    server.stop()
    server = RunningServer(tmp_path / "data")
    client = redis.Redis(port=server.port)
    assert [e[0] for e in client.xrange("s")] == ids
    client.close()
    server.stop()


def test_asyncio_client_with_resp3(running: RunningServer) -> None:
    async def main() -> list[bytes]:
        client = redis_asyncio.Redis(port=running.port, protocol=3)
        ids = await asyncio.gather(*(client.xadd("s", {"k": str(i)}) for i in range(50)))
        await client.aclose()
        return list(ids)

    ids = asyncio.run(main())
    assert len(set(ids)) == 50
    assert redis.Redis(port=running.port).xlen("s") == 50


def test_unknown_command_and_wrong_arity(running: RunningServer) -> None:
    client = redis.Redis(port=running.port)
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client.execute_command("NOSUCH", "x")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        client.execute_command("XLEN")
    client.close()


def test_malformed_frame_gets_an_error_and_a_closed_connection(running: RunningServer) -> None:
    reply = raw_exchange(running.port, b"*1\r\n$x\r\nPING\r\n")
    assert reply.startswith(b"-ERR Protocol error")
    assert redis.Redis(port=running.port).ping() is True  # the server lives on


def test_commands_before_a_malformed_frame_run_and_are_answered_first(
        running: RunningServer) -> None:
    # As in Redis: the pipeline's whole commands before the bad frame run (the SET is durable
    # and answered), then the error, then the connection closes.
    reply = raw_exchange(running.port, b"*3\r\n$3\r\nSET\r\n$6\r\nbefore\r\n$1\r\n1\r\n"
                                       b"*1\r\n$x\r\nPING\r\n")
    assert reply.startswith(b"+OK\r\n-ERR Protocol error"), reply
    assert redis.Redis(port=running.port).get("before") == b"1"


def test_oversized_bulk_is_refused_before_its_payload(running: RunningServer) -> None:
    reply = raw_exchange(running.port, b"*2\r\n$4\r\nECHO\r\n$999999999999\r\n")
    assert reply.startswith(b"-ERR Protocol error")


def test_inline_commands_work(running: RunningServer) -> None:
    assert raw_exchange(running.port, b"PING\r\nQUIT\r\n") == b"+PONG\r\n+OK\r\n"


def test_password_is_required_and_checked(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data", requirepass="s3cret")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=server.port, password="wrong").ping()
    assert redis.Redis(port=server.port, password="s3cret", protocol=3).ping() is True
    server.stop()


def test_non_loopback_bind_without_password_is_refused() -> None:
    with pytest.raises(ValueError, match="needs --requirepass"):
        ServerSettings(host="0.0.0.0")


@pytest.mark.parametrize("kind", ["stream", "string"])
def test_a_failed_group_commit_is_answered_as_an_error_never_as_ok(tmp_path: Path,
                                                                   kind: str) -> None:
    # With fsync always the commit runs on the event loop's thread: when its sync fails, every
    # waiting write gets the error and its connection closes, the log is fenced (later writes
    # refused), reads and the server go on, closing works, and a restart recovers what was
    # acknowledged.
    from fasterlog import testing as fault_testing

    server = RunningServer(tmp_path / "data")
    try:
        client = redis.Redis(port=server.port)
        acknowledged = client.xadd("s", {"f": "v"}) if kind == "stream" else client.set("k", "1")
        log = server.log if kind == "stream" else server.server.kv.store.log
        fault_testing.inject_fault(log, op="fsync")
        with pytest.raises((redis.ResponseError, redis.ConnectionError), match="commit failed"):
            if kind == "stream":
                client.xadd("s", {"f": "lost"})
            else:
                client.set("k", "2")
        other = redis.Redis(port=server.port)
        with pytest.raises(redis.ResponseError, match="fenced|commit failed"):
            if kind == "stream":
                other.xadd("s", {"f": "refused"})
            else:
                other.set("k", "3")
        assert other.ping() is True
        if kind == "stream":
            assert other.xrange("s")[0][0] == acknowledged
        else:
            # As in Redis (memory first, then the AOF), a write answered with an error may be
            # visible to reads until the restart; it is never acknowledged, never recovered.
            assert other.get("k") in (b"1", b"2")
        other.close()
        client.close()
    finally:
        server.stop()
    restarted = RunningServer(tmp_path / "data")
    try:
        client = redis.Redis(port=restarted.port)
        # The acknowledged write is there; the one whose sync failed is in doubt, as after any
        # failed commit (its bytes may have reached the disk); the refused one never is.
        if kind == "stream":
            entries = client.xrange("s")
            assert entries[0][0] == acknowledged
            assert [fields for _, fields in entries[1:]] in ([], [{b"f": b"lost"}])
        else:
            assert client.get("k") in (b"1", b"2")
        client.close()
    finally:
        restarted.stop()


def test_limits_and_auth_attacked_with_raw_sockets_figure(tmp_path: Path) -> None:
    # Issue 6 item 8, in one figure: raw sockets against a password-protected server.
    from tests.support.figures import record

    quit_ = b"*1\r\n$4\r\nQUIT\r\n"  # ends the exchanges that keep the line open

    server = RunningServer(tmp_path / "data", requirepass="s3cret")
    try:
        attacks = {
            # a header announcing more than bulk_size_max_bytes: refused from the header alone
            "oversized bulk length": (b"*2\r\n$4\r\nAUTH\r\n$999999999999\r\n",
                                      b"-ERR Protocol error: invalid bulk length"),
            "oversized multibulk count": (b"*99999999\r\n", b"-ERR Protocol error"),
            "unauthenticated bulk over 16 KiB": (b"*2\r\n$4\r\nECHO\r\n$20000\r\n",
                                                 b"-ERR Protocol error: unauthenticated bulk"),
            "unauthenticated multibulk over 10": (b"*11\r\n",
                                                  b"-ERR Protocol error: unauthenticated multi"),
            "command before AUTH": (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" + quit_, b"-NOAUTH"),
            "wrong password": (b"*2\r\n$4\r\nAUTH\r\n$5\r\nwrong\r\n" + quit_, b"-WRONGPASS"),
            "inline line over the limit": (b"A" * 70000, b"-ERR Protocol error: too big inline"),
        }
        refused = 0
        for name, (payload, expected) in attacks.items():
            reply = raw_exchange(server.port, payload)
            assert reply.startswith(expected), (name, reply[:80])
            refused += 1
        with pytest.raises(ValueError, match="needs --requirepass"):
            ServerSettings(host="0.0.0.0")
        assert redis.Redis(port=server.port, password="s3cret").ping() is True  # still serving
    finally:
        server.stop()
    record("limits_and_auth",
           f"{refused} of {len(attacks)} raw-socket attacks refused as Redis refuses them "
           f"({', '.join(attacks)}); non-loopback bind without a password refused; the server "
           "kept serving",
           {"attacks": len(attacks), "refused": refused},
           "python3 -m pytest -s tests/fasterlog_server/test_service.py::"
           "test_limits_and_auth_attacked_with_raw_sockets_figure")
