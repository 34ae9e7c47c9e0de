"""CONFIG GET and INFO show the server's bounds: Redis's names, compared with redis-server 7.0
under its defaults (which ours share), and ours under `fasterlog-` names.

Method: the same raw requests to our server and to a private redis-server; the parameters
whose defaults differ on purpose (the normal class of client-output-buffer-limit: ours is a
hard 64 MiB, Redis has none) are checked for our value instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_peer import command, exchange, needs_redis, ours_and_redis
from tests.support.servers import RunningServer

redis = pytest.importorskip("redis")


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[RunningServer]:
    server = RunningServer(tmp_path / "data", maxclients=777, multi_queue_count_max=123)
    yield server
    server.stop()


# Defaults we share with Redis (the peer runs with appendonly no, so that one is ours alone).
SAME_AS_REDIS = ["timeout", "maxclients", "MAXclients", "maxcl*", "save", "nothing-like-this",
                 "nothing-*"]


@needs_redis
@pytest.mark.parametrize("name", SAME_AS_REDIS)
def test_redis_named_bounds_answer_as_redis_server_does(tmp_path: Path, name: str) -> None:
    with ours_and_redis(tmp_path) as (ours, theirs):
        payload = command("CONFIG", "GET", name) + command("PING")
        assert exchange(ours, payload) == exchange(theirs, payload)


def test_our_bounds_are_shown_with_the_values_the_server_runs_with(
        ours: RunningServer) -> None:
    client = redis.Redis(port=ours.port, decode_responses=True)
    assert client.config_get("maxclients") == {"maxclients": "777"}
    # Smaller than Redis's on purpose (settings.py): a 64 MiB bulk, 256 MiB of query buffer.
    assert client.config_get("proto-max-bulk-len") == {"proto-max-bulk-len": str(64 << 20)}
    assert client.config_get("client-query-*") == {"client-query-buffer-limit": str(256 << 20)}
    assert client.config_get("client-output-buffer-limit") == {
        "client-output-buffer-limit": f"normal {64 << 20} 0 0 slave 268435456 67108864 60 "
                                      "pubsub 33554432 8388608 60"}
    found = client.config_get("fasterlog-*")
    assert found["fasterlog-multi-queue-count-max"] == "123"
    assert found["fasterlog-request-timeout-ms"] == "30000"
    assert set(found) >= {"fasterlog-pipeline-depth-max", "fasterlog-kv-checkpoint-bytes",
                          "fasterlog-commands-per-step-max",
                          "fasterlog-client-buffers-size-max-bytes",
                          "fasterlog-multi-queue-size-max-bytes"}
    assert client.info()["maxclients"] == 777
    client.close()
