"""The cyclic garbage collector's pauses, kept from growing with the server's state.

Python's full collection (generation 2) walks every container object the process holds. The
server's state grows with the data (about five tracked objects per stream: the Stream, its
__dict__, its id and address lists, its groups), and a full collection runs on the event loop
thread whenever the long-lived objects have grown by a quarter since the last one, so each
pause grows with the data: 47 ms at 100,000 streams here, about ten times that at a million,
and a PING waits for all of it (tests/reliability/test_reliability_held.py, the streams row:
PING p99 43-163 ms while 100,000 streams were made).

So once a full collection has run, what survived it is moved to the permanent generation
(gc.freeze): later full collections walk only what is newer than the last one, and their
pauses follow the growth since, not the whole heap (PING p99 24 ms in the same run).

What this costs: an object frozen while alive that later becomes garbage inside a reference
cycle is never collected (garbage without cycles is freed by reference counting, as always).
The server's long-lived objects are kept free of cycles for that reason (connections, issue
14 defect 13; streams, groups and KV entries hold no back-references). Only the server's own
process is changed: `install` is called by `serve` (the CLI's server), not by an embedding
application that builds a Server itself.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["install"]


def _freeze_after_full_collections(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def install() -> None:
    """Freezes what survives each full collection, from now on in this process (idempotent)."""
    if _freeze_after_full_collections not in gc.callbacks:
        gc.callbacks.append(_freeze_after_full_collections)
