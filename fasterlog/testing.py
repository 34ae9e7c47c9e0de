"""Test hooks: crash simulation and fault injection on a real log.

These reach into the real device layer (no mocks): an injected fault replaces one real write or
sync by an error, exactly where the kernel would have returned it.
"""

from __future__ import annotations

import errno as _errno

from ._fasterlog_c import lib
from .log import FasterLog

__all__ = ["simulate_crash", "inject_fault", "clear_faults", "crc32c", "crc32c_portable"]

_OPS = {"write": lib.FL_FAULT_WRITE, "fsync": lib.FL_FAULT_FSYNC, "any": lib.FL_FAULT_ANY}


def simulate_crash(log: FasterLog) -> None:
    """Drops the log as kill -9 would: no final commit, no clean meta file, lock released.
    Writes already handed to the device may or may not have landed, as in a real crash."""
    log._closed = True
    lib.fl_simulate_crash(log._log)


def inject_fault(log: FasterLog, op: str = "any", after: int = 0, errno: int = _errno.EIO,
                 persistent: bool = True, short_write: bool = False) -> None:
    """Makes the (after+1)-th next device operation of kind `op` fail with `errno` (or, with
    short_write, complete with half its bytes); with `persistent`, every later one too."""
    if op not in _OPS:
        raise ValueError(f"inject_fault: op must be one of {sorted(_OPS)}, not {op!r}")
    lib.fl_fault_set(log._log, _OPS[op], after, errno, int(persistent), int(short_write))


def clear_faults(log: FasterLog) -> None:
    lib.fl_fault_set(log._log, 0, 0, 0, 0, 0)


def crc32c(data: bytes, crc: int = 0) -> int:
    """The C core's CRC32C, for tests that build or check frames by hand."""
    return int(lib.fl_crc32c(crc, data, len(data)))


def crc32c_portable(data: bytes, crc: int = 0) -> int:
    """The table-driven CRC32C, to check it agrees with the hardware one."""
    return int(lib.fl_crc32c_portable(crc, data, len(data)))
