"""The write fence: what the server answers while its logs cannot take writes.

Rules:
1. A failed append or commit (a full disk, a failed sync) fences the log; from that moment the
   server refuses every write command, as redis-server does after a failed AOF write, with
   `-MISCONF Errors writing to the log: <the error>` (`refusal`). A MULTI that queues a write
   meanwhile fails at EXEC with EXECABORT, and an EXEC whose queue holds a write is refused
   whole (Redis 7's execCommandAbort), so no part of a transaction runs on a fenced server.
2. Reads go on. While the committed state is being reloaded (recovery.py: the in-memory
   indexes held the failed writes, and are rebuilt from what the logs committed), commands
   that read or write data answer `-LOADING ...`, as Redis does while it loads its dataset;
   connection commands (PING, HELLO, AUTH, INFO, ...) are answered as always.
3. `active` is the one flag the hot lanes read: while it is set every command goes through the
   dispatcher (dispatch.py), which asks `refuse`.
"""

from __future__ import annotations

from . import resp
from .session import Client

__all__ = ["LOADING_REPLY", "WriteFence"]

LOADING_REPLY = resp.ErrorReply(b"LOADING fasterlog is reloading the committed state after a "
                                b"failed write")


class WriteFence:
    """The fence's state: writable, refusing writes, or refusing writes and reloading."""

    __slots__ = ("active", "loading", "refusal")

    def __init__(self) -> None:
        self.active = False  # rule 3: refusal or loading is set
        self.refusal: resp.ErrorReply | None = None  # rule 1's reply, while writes are refused
        self.loading = False  # rule 2

    def refuse_writes(self, error: BaseException | str) -> None:
        """Rule 1, from now on; `error` says why (the first failure's words are kept)."""
        if self.refusal is None:
            text = " ".join(str(error).split())
            self.refusal = resp.ErrorReply(f"MISCONF Errors writing to the log: {text}; writes "
                                           f"are refused until the log is reopened (reads go "
                                           f"on)")
        self.active = True

    def set_loading(self, loading: bool) -> None:
        self.loading = loading
        self.active = loading or self.refusal is not None

    def accept_writes(self) -> None:
        """The logs were reopened for writing and their state reloaded."""
        self.refusal = None
        self.loading = False
        self.active = False

    def refuse(self, client: Client, name: bytes, writes: bool, touches_data: bool,
               queued_writes: bool) -> resp.ErrorReply | None:
        """The reply that refuses command `name` (None: it may run): `writes` (its WRITE
        flag), `touches_data` (it reads or writes data: READONLY, WRITE or BLOCKING), and for
        EXEC `queued_writes`, whether its transaction queued a write."""
        if name == b"EXEC" and client.multi is not None and (
                self.loading or (self.refusal is not None and queued_writes)):
            client.multi, client.multi_error = None, False  # rule 1: refused whole
            reason = LOADING_REPLY if self.loading else self.refusal
            assert reason is not None
            return resp.ErrorReply(b"EXECABORT Transaction discarded because of: " + reason)
        if self.loading and touches_data:
            refused = LOADING_REPLY
        elif self.refusal is not None and writes:
            refused = self.refusal
        else:
            return None
        if client.multi is not None:
            client.multi_error = True  # rule 1: EXEC answers EXECABORT
        return refused
