"""consumers: read a fasterlog log from named durable cursors, and build on that.

    from fasterlog import FasterLog
    from consumers import Consumer

    log = FasterLog.open("events", readonly=True)     # or the writer itself
    with Consumer(log, "mailer") as consumer:
        for address, entry in consumer:
            send(entry)
            consumer.ack()

This package holds what reads a log from named durable cursors and builds on it: the Consumer
(consumer.py: at-least-once delivery from a cursor, one step function for threads and asyncio),
projections that fold the log into a state with exactly-once checkpoints (projection.py), the
checkpoint-marker and snapshot-file mechanism every checkpointing consumer shares, kvlayer
included (checkpoints.py), an event store with optimistic concurrency (events.py) and their
errors (errors.py). It may import fasterlog only (the cursor files themselves are part of the
log's format and live in `fasterlog.cursors`); kvlayer and the server stand on it.

The projection and event-store modules are imported on first use (module __getattr__), so that
`import consumers` stays cheap and does not pull msgpack in for a plain consumer.
"""

from __future__ import annotations

import importlib
from typing import Any

from .consumer import Consumer, cursor_position, delete_cursor, list_cursors
from .errors import (
    CheckpointError,
    ConsumerError,
    CursorInUseError,
    CursorNameError,
    InvalidSeekError,
    SeekBelowBeginError,
    UnknownCursorError,
)

_LAZY = {
    "Projection": "projection",
    "ProjectionRunner": "projection",
    "Checkpoint": "projection",
    "EventStore": "events",
    "Event": "events",
    "NewEvent": "events",
    "ConflictError": "events",
    "EventStoreError": "events",
    "StreamState": "events",
    "ANY": "events",
    "NO_STREAM": "events",
    "STREAM_EXISTS": "events",
    "AppendResult": "events",
    "decode_event": "events",
}

__all__ = [
    "CheckpointError",
    "ConflictError",
    "Consumer",
    "ConsumerError",
    "CursorInUseError",
    "CursorNameError",
    "Event",
    "EventStore",
    "InvalidSeekError",
    "Projection",
    "ProjectionRunner",
    "SeekBelowBeginError",
    "UnknownCursorError",
    "cursor_position",
    "delete_cursor",
    "list_cursors",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'consumers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
