"""Nothing long on the server's event loop: KV checkpoints and truncation run in a worker thread,
and the server checkpoints its KV store by itself (issue 14, What to build 5).

Method: real servers over loopback sockets, on small segments. The latency test fills a KV
store directly (kvlayer, before the server opens it) so big that its checkpoint takes hundreds
of milliseconds, then PINGs from a second connection while KV.CHECKPOINT runs, and again while
LOG.TRUNCATE cuts a stream log of many segments: p99 and max over at least 20 PINGs. The
restart tests run `fasterlog serve` as a child process and kill it with SIGKILL: after an
automatic checkpoint (a small --kv-checkpoint-bytes) the restarted server must start from that
checkpoint (LOG.INFO's kv_recovered_from, and the line the server logs at start) with every
acknowledged write there; a pipeline holding KV.CHECKPOINT is answered in order, and a write
another client made while the checkpoint ran survives the kill too.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fasterlog import FasterLog
from fasterlog_server import commit
from kvlayer import KVStore
from tests.support.figures import record
from tests.support.mode import scaled
from tests.support.raw_client import RawClient
from tests.support.redis_peer import command
from tests.support.servers import SERVE_SETTINGS, RunningServer, ServeProcess
from tests.support.settings import SMALL_SETTINGS

redis = pytest.importorskip("redis")

_REPLY_TIMEOUT_S = 120
_PINGS_COUNT_MIN = 20


def _fill_kv_store(directory: Path, keys_count: int, settings: dict[str, Any]) -> None:
    """A stream log in `directory` and a KV store beside it (as the server lays them out)
    holding key:0 .. key:N-1 = value:i, written straight through kvlayer (fast, and with no
    checkpoint: the server's first one folds the whole log)."""
    FasterLog.open(directory, **settings).close()
    with KVStore.open(directory / "kv", **settings) as store:
        for start in range(0, keys_count, 20_000):
            # The server's envelope (keyvalues.py): a zero byte, then the value.
            store.write_batch([(b"key:%d" % i, b"\x00value:%d" % i)
                               for i in range(start, min(start + 20_000, keys_count))],
                              commit=False)
        store.commit()


class _PingProbe:
    """PINGs from a thread on its own connection, one at a time, until told to stop and at
    least `count_min` PINGs were answered; keeps each round trip's time."""

    def __init__(self, port: int, count_min: int = _PINGS_COUNT_MIN) -> None:
        self._client = redis.Redis(port=port, socket_timeout=_REPLY_TIMEOUT_S)
        self._client.ping()  # connected before the work starts
        self._count_min = count_min
        self._stop = threading.Event()
        self.latencies_s: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + _REPLY_TIMEOUT_S
        while time.monotonic() < deadline and (
                not self._stop.is_set() or len(self.latencies_s) < self._count_min):
            started = time.perf_counter()
            self._client.ping()
            self.latencies_s.append(time.perf_counter() - started)
            time.sleep(0.002)

    def stop(self) -> tuple[float, float, int]:
        """(p99 ms, max ms, PINGs)."""
        self._stop.set()
        self._thread.join(_REPLY_TIMEOUT_S)
        self._client.close()
        ordered = sorted(self.latencies_s)
        return (ordered[int(len(ordered) * 0.99)] * 1000, ordered[-1] * 1000, len(ordered))


def _timed(client: Any, *command: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    reply = client.execute_command(*command)
    return reply, time.perf_counter() - started


def test_ping_p99_stays_under_100_ms_while_kv_checkpoint_and_log_truncate_run(
        tmp_path: Path) -> None:
    # Before the fix both commands ran on the event loop: with this store a PING waited for
    # the whole checkpoint (hundreds of ms), and LOG.TRUNCATE's commits and segment
    # deletions held the loop as well.
    keys_count = scaled(500_000, 2_000_000)
    directory = tmp_path / "data"
    _fill_kv_store(directory, keys_count, SMALL_SETTINGS)
    server = RunningServer(directory)
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        probe = _PingProbe(server.port)
        position, checkpoint_s = _timed(client, "KV.CHECKPOINT")
        checkpoint_p99_ms, checkpoint_max_ms, checkpoint_pings = probe.stop()
        assert position > 0 and server.server.kv.store.recovered_from is None
        assert client.get("key:7") == b"value:7"
        # A stream log of many segments, then a truncation of most of it.
        pad = b"x" * 4000
        for _ in range(scaled(60, 200)):
            pipe = client.pipeline(transaction=False)
            for _ in range(250):
                pipe.xadd("s", {"pad": pad})
            pipe.execute()
        client.xgroup_create("s", "g", id="0")
        cut = server.log.committed_until_address - (4 << 20)
        cut -= cut % (64 << 10)  # a page start
        segments_before = len(list(directory.glob("segment-*.fl")))
        probe = _PingProbe(server.port)
        reply, truncate_s = _timed(client, "LOG.TRUNCATE", cut)
        truncate_p99_ms, truncate_max_ms, truncate_pings = probe.stop()
        assert reply == b"OK" and server.log.begin_address == cut
        deleted_count = segments_before - len(list(directory.glob("segment-*.fl")))
        assert deleted_count > 0
        assert client.xlen("s") > 0 and client.ping()
        client.close()
    finally:
        server.stop()
    figure = (f"KV.CHECKPOINT over {keys_count} keys took {checkpoint_s * 1000:.0f} ms: "
              f"concurrent PING p99 {checkpoint_p99_ms:.1f} ms, max {checkpoint_max_ms:.1f} ms "
              f"({checkpoint_pings} PINGs); LOG.TRUNCATE of {cut >> 20} MiB ({deleted_count} "
              f"segments deleted) took {truncate_s * 1000:.0f} ms: PING p99 "
              f"{truncate_p99_ms:.1f} ms, max "
              f"{truncate_max_ms:.1f} ms ({truncate_pings} PINGs)")
    record("offloop_ping_latency", figure,
           {"keys": keys_count, "checkpoint_ms": round(checkpoint_s * 1000),
            "checkpoint_ping_p99_ms": round(checkpoint_p99_ms, 1),
            "checkpoint_ping_max_ms": round(checkpoint_max_ms, 1),
            "truncate_ms": round(truncate_s * 1000),
            "truncate_ping_p99_ms": round(truncate_p99_ms, 1),
            "truncate_ping_max_ms": round(truncate_max_ms, 1),
            "segments_deleted": deleted_count},
           "python -m pytest -s tests/fasterlog_server/test_service_offloop.py::"
           "test_ping_p99_stays_under_100_ms_while_kv_checkpoint_and_log_truncate_run")
    assert checkpoint_p99_ms < 100, figure
    assert truncate_p99_ms < 100, figure


def _log_info(client: Any) -> dict[bytes, Any]:
    items = client.execute_command("LOG.INFO")
    if isinstance(items, dict):
        return items
    return dict(zip(items[0::2], items[1::2], strict=True))


def test_kill_9_after_an_automatic_checkpoint_restarts_from_it_with_every_acknowledged_write(
        tmp_path: Path) -> None:
    # Before the fix the server made no KV checkpoint but at a clean stop: after kill -9 a
    # restart replayed the whole KV log.
    directory = tmp_path / "data"
    bound_bytes = 1 << 20
    server = ServeProcess(directory, "--kv-checkpoint-bytes", str(bound_bytes))
    acknowledged = 0
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        info: dict[bytes, Any] = {}
        deadline = time.monotonic() + _REPLY_TIMEOUT_S
        rounds_after = 0
        # Writes until two automatic checkpoints are made, then some more after the last.
        while rounds_after < 3 and time.monotonic() < deadline:
            pipe = client.pipeline(transaction=False)
            for i in range(acknowledged, acknowledged + 1000):
                pipe.set(b"key:%d" % i, b"v%d" % i + b"-" * 100)
            assert all(pipe.execute())
            acknowledged += 1000
            info = _log_info(client)
            if info[b"kv_automatic_checkpoints_count"] >= 2:
                rounds_after += 1
        checkpoint_position = info[b"kv_checkpoint_position"]
        assert checkpoint_position > 0, info
        server.process.kill()
    finally:
        server.kill()
    server = ServeProcess(directory, "--kv-checkpoint-bytes", str(bound_bytes))
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        info = _log_info(client)
        values = client.mget([b"key:%d" % i for i in range(acknowledged)])
        client.close()
    finally:
        server.kill()
    recovered_from = info[b"kv_recovered_from"]
    assert recovered_from >= checkpoint_position, (recovered_from, checkpoint_position)
    assert f"KV view from the checkpoint at {recovered_from}" in server.started_line
    with FasterLog.open(directory / "kv", readonly=True) as kv_log:
        replayed_bytes = kv_log.committed_until_address - recovered_from
    # What the restart replayed: at most about one bound and a pipeline past the checkpoint.
    assert 0 <= replayed_bytes <= 2 * bound_bytes, (replayed_bytes, bound_bytes)
    lost = [i for i, value in enumerate(values) if value != b"v%d" % i + b"-" * 100]
    assert not lost, f"{len(lost)} of {acknowledged} acknowledged writes lost, first {lost[:5]}"


def test_pipelined_checkpoint_answers_in_order_and_a_write_made_during_it_survives_kill_9(
        tmp_path: Path) -> None:
    directory = tmp_path / "data"
    keys_count = scaled(200_000, 1_000_000)
    _fill_kv_store(directory, keys_count, SERVE_SETTINGS)
    server = ServeProcess(directory, "--kv-checkpoint-bytes", "0")
    try:
        pipeline, other = RawClient(server.port), RawClient(server.port)
        for raw in (pipeline, other):
            raw.socket.settimeout(_REPLY_TIMEOUT_S)
        pipeline.socket.sendall(b"".join(
            _encode(*words) for words in (("SET", "a", "1"), ("KV.CHECKPOINT",), ("GET", "a"),
                                          ("SET", "b", "2"), ("GET", "b"), ("GET", "key:5"))))
        time.sleep(0.05)  # the checkpoint is under way
        during = other.call("GET", "key:9")  # reads go on
        written = other.call("SET", "c", "3")  # answered once a commit after it covers it
        replies = [pipeline.reply() for _ in range(6)]
        pipeline.close()
        other.close()
        server.process.kill()
    finally:
        server.kill()
    assert during == b"value:9" and written == b"OK"
    assert replies[0] == b"OK" and isinstance(replies[1], int) and replies[1] > 0, replies
    assert replies[2:] == [b"1", b"OK", b"2", b"value:5"], replies
    server = ServeProcess(directory, "--kv-checkpoint-bytes", "0")
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        info = _log_info(client)
        assert client.mget("a", "b", "c", "key:0", f"key:{keys_count - 1}") == [
            b"1", b"2", b"3", b"value:0", b"value:%d" % (keys_count - 1)]
        assert client.dbsize() == keys_count + 3
        client.close()
    finally:
        server.kill()
    assert info[b"kv_recovered_from"] == replies[1], (info, replies)


def _encode(*words: str) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word.encode()) for word in words)


def test_with_fsync_everysec_writes_during_a_checkpoint_wait_past_the_overlay_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With fsync everysec a write is answered before any commit, so while a checkpoint holds
    the KV committer the overlay took every client's writes for as long as it ran (no bound).
    Past HELD_OVERLAY_SIZE_MAX_BYTES a batch that wrote KV now waits for the commit after the
    checkpoint. The checkpoint is stood in for by holding, as maintenance.py does."""
    monkeypatch.setattr(commit, "HELD_OVERLAY_SIZE_MAX_BYTES", 8 << 10)
    server = RunningServer(tmp_path / "data", fsync="everysec")
    context = server.server.context
    committer = context.coordinator.kv_committer

    def hold() -> None:
        committer.hold()
        context.kv.held = True

    def release() -> None:
        context.kv.held = False
        committer.release()

    try:
        client = redis.Redis(port=server.port, socket_timeout=0.5)
        server.loop.call_soon_threadsafe(hold)
        answered = 0
        with pytest.raises(redis.TimeoutError):
            for i in range(100):  # 100 x 1 KiB: the bound is 8 KiB
                client.set(f"k{i}", b"v" * 1024)
                answered += 1
        assert 5 <= answered <= 9, answered  # answered at once until past the bound
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(command("SET", "late", "1"))
            raw.settimeout(0.3)
            with pytest.raises(TimeoutError):  # still past the bound: no reply while held
                raw.recv(64)
            server.loop.call_soon_threadsafe(release)
            raw.settimeout(10)
            assert raw.recv(64) == b"+OK\r\n"  # answered once the commit after it ran
        reader = redis.Redis(port=server.port)
        assert reader.mget([f"k{i}" for i in range(answered)]) == [b"v" * 1024] * answered
        assert reader.get("late") == b"1"
        reader.close()
        client.close()
    finally:
        server.stop()


# ---------------------------------------------------------------------- the restatement

_CUT_DEPENDENT = (b"length", b"entries", b"recorded-first-entry-id")


def _full(client: Any, key: str) -> dict[bytes, Any]:
    """XINFO STREAM FULL of `key` as a dict, every PEL and entry listed (COUNT 0)."""
    return _as_dict(client.execute_command("XINFO", "STREAM", key, "FULL", "COUNT", "0"))


def _as_dict(reply: Any) -> dict[Any, Any]:
    """redis-py's parse of XINFO STREAM (a dict with str names), or the flat list."""
    if isinstance(reply, dict):
        return {name.encode() if isinstance(name, str) else name: value
                for name, value in reply.items()}
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _without_entries(full: dict[bytes, Any]) -> dict[bytes, Any]:
    """What a truncation at the committed tail must not change: all but the entries."""
    return {name: value for name, value in full.items() if name not in _CUT_DEPENDENT}


def _last_ids(client: Any, keys: list[str]) -> list[Any]:
    # Pipelines of 1,000, so that the check does not hold 100k replies at once. (One pipeline
    # of 100k XINFOs hung once, before the server read on while replies waited for the
    # client: test_service_pipeline_diff.py.)
    ids: list[Any] = []
    for start in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start:start + 1000]:
            pipe.execute_command("XINFO", "STREAM", key)
        ids += [_as_dict(reply)[b"last-generated-id"] for reply in pipe.execute()]
    return ids


def test_log_truncate_restates_100k_streams_and_a_50k_pel_off_the_loop_exactly(
        tmp_path: Path) -> None:
    # Before the fix the restatement ran in one loop step (PING waited for all of it), and
    # the one xgclaim of a 50k PEL passed entry_size_max: LOG.TRUNCATE failed.
    streams_count = scaled(100_000, 100_000)
    pending_count = scaled(50_000, 50_000, "FASTERLOG_TEST_RESTATE_PENDING")
    directory = tmp_path / "data"
    server = RunningServer(directory)
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        keys = [f"s:{i}" for i in range(streams_count)]
        for start in range(0, streams_count, 10_000):
            pipe = client.pipeline(transaction=False)
            for key in keys[start:start + 10_000]:
                pipe.xadd(key, {"f": "v"}, id="5-1")
            pipe.execute()
        for start in range(0, pending_count, 5_000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 5_000, pending_count)):
                pipe.xadd("big", {"f": "v"}, id=f"{i + 1}-0")
            pipe.execute()
        client.xgroup_create("big", "g", id="0")
        for _ in range(0, pending_count, 5_000):
            client.xreadgroup("g", "alice", {"big": ">"}, count=5_000)
        client.xreadgroup("g", "bob", {"big": "0"})  # a consumer with nothing pending
        client.xgroup_create("s:7", "h", id="$")
        before = _without_entries(_full(client, "big"))
        assert before[b"groups"][0][b"pel-count"] == pending_count
        small_before = _without_entries(_full(client, "s:7"))
        last_before = _last_ids(client, keys)
        cut = server.log.committed_until_address
        probe = _PingProbe(server.port)
        reply, truncate_s = _timed(client, "LOG.TRUNCATE", cut)
        p99_ms, max_ms, pings = probe.stop()
        assert reply == b"OK" and server.log.begin_address == cut
        after = _full(client, "big")
        assert _without_entries(after) == before and after[b"length"] == 0
        assert _without_entries(_full(client, "s:7")) == small_before
        assert _last_ids(client, keys) == last_before
        client.close()
    finally:
        server.stop()
    server = RunningServer(directory)  # replays from the new begin
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        assert server.log.begin_address == cut
        assert _full(client, "big") == after
        assert _without_entries(_full(client, "s:7")) == small_before
        assert _last_ids(client, keys) == last_before
        assert client.xpending("big", "g")["pending"] == pending_count
        client.close()
    finally:
        server.stop()
    figure = (f"LOG.TRUNCATE restating {streams_count} streams and a PEL of {pending_count} "
              f"took {truncate_s * 1000:.0f} ms: PING p99 {p99_ms:.1f} ms, max "
              f"{max_ms:.1f} ms ({pings} PINGs); state equal after it and after a restart")
    record("offloop_ping_latency_restatement", figure,
           {"streams": streams_count, "pending": pending_count,
            "truncate_ms": round(truncate_s * 1000), "truncate_ping_p99_ms": round(p99_ms, 1),
            "truncate_ping_max_ms": round(max_ms, 1)},
           "python -m pytest -s tests/fasterlog_server/test_service_offloop.py::"
           "test_log_truncate_restates_100k_streams_and_a_50k_pel_off_the_loop_exactly")
    assert p99_ms < 100, figure


def test_changes_made_during_the_restatement_survive_the_truncation_and_a_restart(
        tmp_path: Path) -> None:
    # One item per loop step: another connection's commands land between the steps of the
    # restatement (checked: they are answered before LOG.TRUNCATE is, which needs fsync
    # everysec: with always their replies wait for the commit after the truncation).
    directory = tmp_path / "data"
    server = RunningServer(directory, fsync="everysec")
    try:
        server.server.context.maintenance.restate_step_items_max = 1
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        other = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        keys = [f"s:{i}" for i in range(20_000)]
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.xadd(key, {"f": "v"}, id="5-1")
        pipe.execute()
        for key in ("first", "last"):
            for i in range(1, 201):
                client.xadd(key, {"f": "v"}, id=f"{i}-0")
            client.xgroup_create(key, "g", id="0")
            client.xreadgroup("g", "alice", {key: ">"}, count=100)
        cut = server.log.committed_until_address
        done = threading.Event()
        replies: list[Any] = []

        def truncate() -> None:
            replies.append(client.execute_command("LOG.TRUNCATE", cut))
            done.set()

        thread = threading.Thread(target=truncate)
        thread.start()
        time.sleep(0.05)  # LOG.TRUNCATE has arrived (20k steps take far longer)
        for key in ("first", "last"):  # restated already, or not yet: both must end right
            other.xack(key, "g", "1-0", "150-0")
            other.xreadgroup("g", "bob", {key: ">"}, count=50)
            other.xclaim(key, "g", "carol", 0, ["2-0", "160-0"])
            other.xadd(key, {"f": "late"}, id="500-0")
        other.xgroup_destroy("s:5", "nothing")  # no such group: a no-op
        other.delete("s:3")
        other.xgroup_create("s:4", "new", id="0", mkstream=True)
        during_truncation = not done.is_set()
        thread.join(_REPLY_TIMEOUT_S)
        assert replies == [b"OK"] and during_truncation
        expected = {key: _full(client, key) for key in ("first", "last", "s:4")}
        assert client.exists("s:3") == 0
        client.close()
        other.close()
    finally:
        server.stop()
    server = RunningServer(directory)
    try:
        client = redis.Redis(port=server.port, socket_timeout=_REPLY_TIMEOUT_S)
        assert {key: _full(client, key) for key in expected} == expected
        assert client.exists("s:3") == 0
        assert server.log.begin_address == cut
        client.close()
    finally:
        server.stop()
