"""fasterlog_server/heap.py: what survives a full collection is frozen, so the next full
collection walks only what is newer (its pause follows growth, not the whole heap)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

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
