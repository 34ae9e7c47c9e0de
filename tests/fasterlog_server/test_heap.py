"""fasterlog_server/heap.py: what survives a full collection is frozen, so the next full
collection walks only what is newer (its pause follows growth, not the whole heap)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import gc, json, time
from fasterlog_server import heap

def pause():
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started

held = [[i] for i in range(500_000)]  # long-lived containers, as streams are
gc.collect()
walked = min(pause() for _ in range(3))  # every full collection walks them all
heap.install(); heap.install()
installed = sum(callback is gc.callbacks[-1] for callback in gc.callbacks)
gc.collect()  # what survived it is frozen
frozen = gc.get_freeze_count()
print(json.dumps({"walked_s": walked, "frozen_s": min(pause() for _ in range(3)),
                  "frozen": frozen, "installed": installed}))
"""


def test_what_survives_a_full_collection_is_frozen_and_not_walked_again() -> None:
    # In a child: freezing is for the whole process, and the test process must not keep it.
    completed = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                               check=True, timeout=60)
    found = json.loads(completed.stdout)
    assert found["installed"] == 1  # install is idempotent
    assert found["frozen"] >= 500_000
    assert found["frozen_s"] < found["walked_s"] / 5, found
    assert gc.get_freeze_count() == 0


SERVER_CHILD = """
import asyncio, gc, json, sys, weakref
from fasterlog import FasterLog
from fasterlog_server import Server, ServerSettings, heap
from fasterlog_server.connection import ConnectionProtocol

async def main(directory):
    heap.install()
    log = FasterLog.open(directory, page_size_bytes=65536, memory_size_bytes=262144,
                         segment_size_bytes=1 << 20)
    server = Server(log, ServerSettings(port=0))
    await server.start()
    clients = []
    for index in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"*3\\r\\n$3\\r\\nSET\\r\\n$1\\r\\nk\\r\\n$1\\r\\nv\\r\\n" if index % 2
                     else b"*2\\r\\n$4\\r\\nECHO\\r\\n$1\\r\\nx\\r\\n")
        await reader.readline()
        clients.append((reader, writer))
    connections = [weakref.ref(o) for o in gc.get_objects() if isinstance(o, ConnectionProtocol)]
    gc.collect()  # a full collection: the live connections are frozen with the rest
    assert gc.get_freeze_count() > 0
    for _, writer in clients:
        writer.close()
        await writer.wait_closed()
    del clients
    for _ in range(50):
        await asyncio.sleep(0.01)
    alive = sum(ref() is not None for ref in connections)
    await server.close()
    log.close()
    print(json.dumps({"connections": len(connections), "alive": alive}))

asyncio.run(main(sys.argv[1]))
"""


def test_connections_frozen_while_open_are_freed_once_closed(tmp_path: Path) -> None:
    """A frozen object that becomes garbage inside a reference cycle is never collected: the
    connections, long-lived and frozen by any full collection while they are open, must be
    freed by reference counting when they close (issue 14 defect 13's rule)."""
    completed = subprocess.run([sys.executable, "-c", SERVER_CHILD, str(tmp_path / "log")],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.splitlines()[-1])
    assert found["connections"] == 50 and found["alive"] == 0, found
