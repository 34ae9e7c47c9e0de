"""A pipeline sent whole before any reply is read, against redis-server 7.0.

Goal: redis-py (and most clients' pipelines) send every command of a pipeline before reading
one reply. redis-server keeps reading and running them while the replies pile up; this server
stops running a client's commands while its unsent replies are over OUTPUT_HIGH_WATER_BYTES
(so a slow reader holds little), and it used to stop reading that client's input too, once
READ_SIZE_BYTES were buffered. When the replies outgrew the sockets' buffers both sides then
waited for each other forever: a pipeline of 100,000 XINFO STREAMs (30 MB of replies) hung. Now
input is still read while the replies wait for the client (up to the query buffer's bound),
so the client finishes sending, reads, and the rest runs as the replies drain.

Method: the same pipeline goes to both servers through redis-py, ours in a thread with a
deadline (a hang fails the test instead of blocking it): 200,000 XRANGEs of a stream's two
entries (12 MB of requests, 45 MB of replies); the replies must be equal. Whether the old code
hung depends on how far the kernel's socket buffers had grown (up to 32 MB on loopback): it
hung in 3 runs of 3 with this pipeline, 2 of 3 with 100,000 XRANGEs of five entries, and
200,000 GETs of 200 bytes (5.4 MB of requests) went through.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_peer import needs_redis, ours_and_redis

redis = pytest.importorskip("redis")

pytestmark = needs_redis

socket_timeout_s = 60
pipeline_timeout_s = 90  # it takes a few seconds; a deadlock takes forever
xranges_count = 200_000
entries_count = 2


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    with ours_and_redis(tmp_path) as ports:
        clients = tuple(redis.Redis(port=port, socket_timeout=socket_timeout_s)
                        for port in ports)
        yield clients
        for client in clients:
            client.close()


def _xranges(client: Any) -> list[Any]:
    for i in range(entries_count):
        client.xadd("events", {"field": f"value-{i}" * 10}, id=f"1-{i + 1}")
    pipe = client.pipeline(transaction=False)
    for _ in range(xranges_count):
        pipe.xrange("events", count=entries_count)
    return list(pipe.execute())


def test_a_pipeline_sent_whole_before_reading_is_answered_as_redis_answers_it(
        both: tuple[Any, Any]) -> None:
    ours, theirs = both
    # In a thread, so that a deadlock fails the test (redis-py's socket timeout did not end
    # it: the old code gave no reply in 120 s).
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(_xranges(ours)), daemon=True)
    worker.start()
    worker.join(pipeline_timeout_s)
    assert not worker.is_alive(), f"no replies in {pipeline_timeout_s} s: the pipeline hung"
    assert results, "the pipeline failed (its error is in the thread's output)"
    their_replies = _xranges(theirs)
    assert len(results[0]) == len(their_replies) == xranges_count
    assert results[0] == their_replies
    # The server is still there for the next request.
    assert ours.ping() and ours.dbsize() == theirs.dbsize()
