"""The open log's C handle and the primitives that FasterLog and the tails share.

FasterLog (log.py) owns one LogHandle per open log and hands it to the tails it makes
(tail.py): they read the log's state, wait for commits, wake waiters and turn a failed call's
code into an exception through it, never through FasterLog's members. So the modules depend
one way: log.py imports tail.py and this module; tail.py imports this module and never log.py.

Rules:
1. Every failed call on the handle goes through `fail`: a fenced log's message says why it was
   fenced (its state holds the first error); every other code goes to errors.raise_for.
2. `state()` is a fresh snapshot per call (an `fl_state` the caller owns): threads sharing a
   log never see each other's half-read state.
3. The pointer stays valid while the FasterLog that made the handle is alive (the core keeps it
   usable after fl_close, answering FL_E_CLOSED, until the garbage collector frees it).
"""

from __future__ import annotations

from typing import Any, NoReturn

from . import errors
from ._fasterlog_c import ffi, lib

__all__ = ["LogHandle", "timeout_us"]


def timeout_us(timeout: float | None) -> int:
    """A wait's timeout for the core: seconds (None: no limit) to microseconds (-1: no limit)."""
    return -1 if timeout is None else max(0, int(timeout * 1e6))


class LogHandle:
    """An open log's `fl_log *` and the calls on it that more than one module makes."""

    __slots__ = ("__weakref__", "path", "pointer")

    def __init__(self, pointer: Any, path: str) -> None:
        self.pointer = pointer
        self.path = path

    def state(self) -> Any:
        """Rule 2: the log's positions and flags now (an `fl_state`)."""
        state = ffi.new("fl_state *")
        lib.fl_get_state(self.pointer, state)
        return state

    def fail(self, code: int, operation: str, address: int = 0, info: Any = None, *,
             detail: str = "") -> NoReturn:
        """Rule 1: raises the exception for the negative code `code` of `operation`."""
        if code == lib.FL_E_FENCED:
            reason = errors.fence_reason(self.state().fenced_error)
            raise errors.LogFencedError(f"{operation} failed: the log is fenced after {reason}; "
                                        "durable data stays readable, reopen to recover")
        errors.raise_for(code, operation, info, address, detail=detail)

    def wake(self) -> None:
        """Ends every wait in progress on this log (fl_wait_for_commit returns FL_E_WOKEN)."""
        lib.fl_wake(self.pointer)

    def wait_for_commit(self, address: int, timeout: float | None) -> int:
        """Sleeps in the core until `address` is committed: 0, or FL_E_TIMEOUT, FL_E_WOKEN,
        FL_E_COMPLETED or another negative code (the caller decides what each means)."""
        code: int = lib.fl_wait_for_commit(self.pointer, address, timeout_us(timeout))
        return code

    def commit_eventfd(self, operation: str) -> int:
        """The eventfd that becomes readable on every commit (and when the log is fenced)."""
        fd = int(lib.fl_commit_eventfd(self.pointer))
        if fd < 0:
            self.fail(fd, operation)
        return fd
