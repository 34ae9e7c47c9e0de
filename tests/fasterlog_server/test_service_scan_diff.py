"""SCAN against redis-server 7.0: the same keys, options and bad arguments to both servers.

Goal: issue 14 made SCAN a cursor walk over the KV index that costs O(COUNT) (it used to sort
every key on each call); a client that iterates with SCAN must see what it sees on Redis. Redis
promises that a full iteration returns every key present from start to end at least once, and
that the cursor is opaque, so the comparison is of what a full iteration returns for each set
of options (ours must also return no key twice, which Redis does not promise), of the reply's
shape, and byte for byte of the error replies and of the empty database's answer.

Method: both servers get the same strings (some with an expiry past, some in the future) and
streams; each option set is iterated to cursor 0 with redis-py on each, with a bound on the
calls; raw requests compare the bytes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kvlayer
from fasterlog_server import glob
from fasterlog_server.streams import StreamNames
from tests.support.redis_peer import command, exchange, needs_redis, ours_and_redis, redis_peer
from tests.support.servers import RunningServer

redis = pytest.importorskip("redis")

pytestmark = needs_redis

keys_count = 600
iteration_calls_max = 10_000


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    with ours_and_redis(tmp_path) as ports:
        clients = tuple(redis.Redis(port=port) for port in ports)
        yield clients
        for client in clients:
            client.close()


def _populate(client: Any) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(keys_count):
        pipe.set(f"user:{i}", f"v{i}")
    for i in range(50):
        pipe.set(f"session:{i}", "s", px=1 if i % 2 else 600_000)  # odd ones expire at once
    for i in range(20):
        pipe.xadd(f"events:{i}", {"f": "v"})
    pipe.set("we*ird[key]", "x")
    pipe.set(b"bin\x00\xffkey", "x")
    pipe.execute()


def _iterate(client: Any, *options: Any) -> list[bytes]:
    cursor, seen = 0, []
    for _ in range(iteration_calls_max):
        cursor, keys = client.execute_command("SCAN", cursor, *options)  # redis-py: (int, list)
        assert isinstance(keys, list) and all(isinstance(key, bytes) for key in keys)
        seen += keys
        if cursor == 0:
            return seen
    raise AssertionError(f"SCAN {options} did not end in {iteration_calls_max} calls")


OPTION_SETS = [
    (), ("COUNT", 1), ("COUNT", 7), ("COUNT", 1000), ("MATCH", "user:1*"),
    ("MATCH", "user:1*", "COUNT", 3), ("MATCH", "*:4?"), ("MATCH", "nothing*"),
    ("MATCH", "we\\*ird\\[key]"), ("MATCH", "[es]*"), ("TYPE", "string"), ("TYPE", "stream"),
    ("TYPE", "STRING"), ("TYPE", "hash"), ("MATCH", "events:1*", "TYPE", "stream"),
    ("MATCH", "session:*", "TYPE", "string", "COUNT", 5), ("COUNT", 5, "COUNT", 9),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=[" ".join(map(str, o)) or "plain"
                                                      for o in OPTION_SETS])
def test_a_full_iteration_returns_the_keys_redis_returns(both: tuple[Any, Any],
                                                         options: tuple[Any, ...]) -> None:
    ours, theirs = both
    _populate(ours)
    _populate(theirs)
    time.sleep(0.05)  # the 1 ms expiries have passed on both
    our_keys, their_keys = _iterate(ours, *options), _iterate(theirs, *options)
    assert len(our_keys) == len(set(our_keys)), "a key returned twice"
    assert set(our_keys) == set(their_keys)


BAD_REQUESTS = [
    ("SCAN",), ("SCAN", "abc"), ("SCAN", "-1"), ("SCAN", "18446744073709551616"),
    ("SCAN", "0", "COUNT"), ("SCAN", "0", "COUNT", "0"), ("SCAN", "0", "COUNT", "-5"),
    ("SCAN", "0", "COUNT", "x"), ("SCAN", "0", "MATCH"), ("SCAN", "0", "TYPE"),
    ("SCAN", "0", "FOO", "bar"), ("SCAN", "0", "COUNT", "10", "MATCH"),
    ("SCAN", "1.5"), ("SCAN", " 0"),
]


@pytest.mark.parametrize("request_words", BAD_REQUESTS, ids=[" ".join(r) for r in BAD_REQUESTS])
def test_bad_arguments_get_redis_error_reply_and_the_connection_stays(
        both: tuple[Any, Any], request_words: tuple[str, ...]) -> None:
    ours, theirs = both
    payload = command(*request_words) + command("PING")
    ours_port = ours.connection_pool.connection_kwargs["port"]
    theirs_port = theirs.connection_pool.connection_kwargs["port"]
    assert exchange(ours_port, payload) == exchange(theirs_port, payload)


def test_the_empty_database_and_the_last_call_answer_the_same_bytes(
        both: tuple[Any, Any]) -> None:
    ours, theirs = both
    ports = [client.connection_pool.connection_kwargs["port"] for client in both]
    payload = command("SCAN", "0") + command("SCAN", "0", "MATCH", "x*", "COUNT", "100") + \
        command("PING")
    assert exchange(ports[0], payload) == exchange(ports[1], payload) == \
        b"*2\r\n$1\r\n0\r\n*0\r\n" * 2 + b"+PONG\r\n"
    for client in (ours, theirs):
        client.set("only", "1")
    payload = command("SCAN", "0", "COUNT", "100") + command("PING")
    assert exchange(ports[0], payload) == exchange(ports[1], payload) == \
        b"*2\r\n$1\r\n0\r\n*1\r\n$4\r\nonly\r\n+PONG\r\n"


# Bytes that mean something to the glob language, and a few that do not (a high byte too: Redis
# compares class ranges as signed chars).
GLOB_ALPHABET = b"ab*?[]^-\\\xe9"
patterns_count = 400
glob_keys_count = 300


def test_match_patterns_select_the_keys_redis_selects(tmp_path: Path) -> None:
    """fasterlog_server/glob.py against Redis's stringmatchlen: random keys and random patterns
    over the glob's own bytes; redis-server answers SCAN 0 MATCH p COUNT (all) on the keys, and
    ours must select the same keys from the same list."""
    rng = random.Random(1414)
    keys = {bytes(rng.choice(GLOB_ALPHABET) for _ in range(rng.randrange(1, 7)))
            for _ in range(glob_keys_count)}
    with redis_peer(tmp_path / "redis") as port:
        client = redis.Redis(port=port)
        client.mset({key: b"1" for key in keys})
        differences = []
        for _ in range(patterns_count):
            pattern = bytes(rng.choice(GLOB_ALPHABET) for _ in range(rng.randrange(1, 7)))
            if pattern == b"*":
                continue  # SCAN's "no pattern"
            cursor, theirs = client.execute_command("SCAN", 0, "MATCH", pattern, "COUNT",
                                                    10 * glob_keys_count)
            assert cursor == 0
            tokens = glob.compile_pattern(pattern)
            ours = {key for key in keys if glob.matches(tokens, key)}
            if ours != set(theirs):
                differences.append((pattern, sorted(ours ^ set(theirs))[:3]))
        client.close()
    assert not differences, differences[:5]


streams_count = 30_000
scan_step_ms_max = 25.0  # the old step sorted every stream name: about 115 ms here at 30k


def test_a_scan_step_over_many_streams_costs_count_not_streams(tmp_path: Path) -> None:
    server = RunningServer(tmp_path / "data")
    try:
        client = redis.Redis(port=server.port)
        for start in range(0, streams_count, 5000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, start + 5000):
                pipe.xadd(f"stream:{i}", {"f": "v"})
            pipe.execute()
        seen: list[bytes] = []
        slowest_ms, cursor, calls = 0.0, 0, 0
        while calls < iteration_calls_max:
            began = time.perf_counter()
            cursor, keys = client.execute_command("SCAN", cursor, "COUNT", 10)
            slowest_ms = max(slowest_ms, (time.perf_counter() - began) * 1000)
            if slowest_ms >= 10 * scan_step_ms_max:
                break  # the old code's steps: thousands of them would take minutes
            seen += keys
            calls += 1
            if cursor == 0:
                break
        client.close()
    finally:
        server.stop()
    assert slowest_ms < scan_step_ms_max, f"slowest SCAN step {slowest_ms:.1f} ms"
    assert sorted(seen) == sorted(b"stream:%d" % i for i in range(streams_count))


def test_stream_names_page_in_position_order_and_skip_none() -> None:
    names = StreamNames()
    everything = [b"s%d" % i for i in range(5000)]
    for name in everything:
        names.add(name)
    for name in everything[::2]:
        names.remove(name)
    position: int | None = 0
    seen: list[bytes] = []
    while position is not None:
        position, page = names.page(position, 7)
        assert len(page) >= 7 or position is None
        seen += page
    assert seen == sorted(seen, key=lambda name: (kvlayer.key_hash(name) >> 24, name))
    assert sorted(seen) == sorted(everything[1::2])
    with pytest.raises(AssertionError):
        names.remove(b"never added")
