"""A client's session: the state one connection's commands read and change.

Authentication and protocol (AUTH, HELLO, RESET), the MULTI queue and WATCH set, and the
bookkeeping of the batch being run: whether it must commit although it appended nothing, and
which streams it wrote (their blocked readers are woken once the batch is committed). The
connection owns its Client; commands get it as an argument. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Client"]


@dataclass
class Client:
    id: int
    authenticated: bool
    protocol: int = 2
    name: bytes | None = None
    wrote: bool = False  # commit the logs before answering, even with nothing flushed
    sync_required: bool = False  # commit even with fsync everysec (WAITAOF)
    written_keys: set[bytes] = field(default_factory=set)  # streams to wake readers of
    multi: list[list[bytes]] | None = None  # MULTI's queued commands
    multi_error: bool = False  # a command failed to queue: EXEC answers EXECABORT
    multi_size_bytes: int = 0  # what the queue holds (ServerSettings.multi_queue_size_max_bytes)
    multi_overflowed: bool = False  # past a queue bound: the queue is dropped, nothing queues
    watched: set[bytes] = field(default_factory=set)
    dirty: bool = False  # a watched key changed: EXEC answers nil

    def __hash__(self) -> int:
        return self.id
