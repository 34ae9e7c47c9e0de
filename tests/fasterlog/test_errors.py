"""The funnel from C return codes to exceptions (fasterlog/errors.py): one table for every caller.

Method: hand every code the core defines, a few errno values and codes nobody registered to
exception_for and check the class and that the message starts with the operation; check what
register_code accepts and refuses; check that the callers that used to build exceptions by
hand (appends too large, cursor files) now give the same messages through the table.
"""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

from fasterlog import FasterLog, errors
from fasterlog._fasterlog_c import lib
from tests.support.settings import SMALL_SETTINGS

CORE_CODES = {
    "FL_E_CLOSED": errors.LogClosedError,
    "FL_E_FENCED": errors.LogFencedError,
    "FL_E_READONLY": errors.ReadOnlyError,
    "FL_E_COMPLETED": errors.LogCompletedError,
    "FL_E_LOCKED": errors.LockedError,
    "FL_E_CORRUPT": errors.CorruptionError,
    "FL_E_TRUNCATED": errors.TruncatedError,
    "FL_E_ADDRESS": errors.InvalidAddressError,
    "FL_E_TOO_LARGE": errors.EntryTooLarge,
    "FL_E_SETTINGS": errors.SettingsError,
    "FL_E_FORMAT": errors.FormatError,
    "FL_E_SHORT_WRITE": errors.LogIOError,
    "FL_E_NOMEM": MemoryError,
    "FL_E_TIMEOUT": TimeoutError,
    "FL_E_FULL": errors.MemoryFullError,
    "FL_E_BUFFER": errors.BufferTooSmallError,
    "FL_E_WOKEN": errors.WaitWokenError,
    "FL_E_NOT_IN_MEMORY": errors.NotInMemoryError,
}
HEADER = Path(__file__).resolve().parents[2] / "fasterlog" / "csrc" / "fasterlog.h"


def test_every_code_the_header_declares_has_a_name_and_an_exception_of_its_own() -> None:
    # Read from fasterlog.h itself, so a code added there without a table entry fails here
    # (FL_E_FULL, FL_E_BUFFER, FL_E_WOKEN and FL_E_NOT_IN_MEMORY had none: a generic
    # "error code -100004").
    import re

    enum = re.search(r"enum fl_status \{(.*?)\};", HEADER.read_text(), re.S)
    assert enum is not None
    names = re.findall(r"\b(FL_E_[A-Z_]+)\s*=", enum.group(1))
    assert len(names) >= 18
    assert sorted(names) == sorted(CORE_CODES)
    for name in names:
        code = getattr(lib, name)
        assert errors.code_name(code) == name
        error = errors.exception_for(code, "probe")
        assert type(error) is not errors.FasterLogError, name
        assert f"error code {code}" not in str(error), name


def test_a_fence_reason_names_the_code_that_fenced_the_log() -> None:
    reason = errors.fence_reason(lib.FL_E_CLOSED)
    assert reason.startswith("FL_E_CLOSED (") and "-100001" not in reason
    assert errors.fence_reason(-errno.ENOSPC).startswith("ENOSPC (")


@pytest.mark.parametrize("name", sorted(CORE_CODES))
def test_every_core_code_has_its_exception_and_the_operation_first(name: str) -> None:
    error = errors.exception_for(getattr(lib, name), "probe at 64", address=64)
    assert type(error) is CORE_CODES[name]
    message = str(error.args[-1])  # OSError(errno, message) keeps the text last
    assert message.startswith("probe at 64 failed: ")


def test_errno_codes_are_io_errors_and_enospc_is_disk_full() -> None:
    eio = errors.exception_for(-errno.EIO, "commit")
    assert type(eio) is errors.LogIOError and eio.errno == errno.EIO
    assert str(eio) == f"[Errno {errno.EIO}] commit failed: {os.strerror(errno.EIO)}"
    full = errors.exception_for(-errno.ENOSPC, "commit")
    assert type(full) is errors.DiskFullError and full.errno == errno.ENOSPC


def test_an_unknown_code_is_a_plain_fasterlog_error() -> None:
    error = errors.exception_for(-987654, "scan")
    assert type(error) is errors.FasterLogError
    assert str(error) == "scan failed: error code -987654"


def test_the_callers_detail_replaces_the_default_words() -> None:
    error = errors.exception_for(lib.FL_E_TOO_LARGE, "append", detail="entry of 9 MiB exceeds")
    assert str(error) == "append failed: entry of 9 MiB exceeds"


def test_register_code_refuses_core_codes_errno_values_and_a_second_builder() -> None:
    def build(failure: errors.Failure) -> BaseException:
        return errors.FasterLogError(failure.text("registered"))

    with pytest.raises(ValueError, match="one of the log's own"):
        errors.register_code(lib.FL_E_CORRUPT, build)
    with pytest.raises(ValueError, match="errno"):
        errors.register_code(-errno.EIO, build)
    code = -424242
    errors.register_code(code, build)
    errors.register_code(code, build)  # the same builder again: a reloaded module
    assert str(errors.exception_for(code, "probe")) == "probe failed: registered"

    def other(failure: errors.Failure) -> BaseException:
        return errors.FasterLogError("other")

    with pytest.raises(ValueError, match="taken"):
        errors.register_code(code, other)


def test_entries_and_cookies_too_large_say_their_sizes_through_the_table(tmp_path: Path) -> None:
    with FasterLog.open(tmp_path / "log", **SMALL_SETTINGS) as log:
        too_big = bytes(log.entry_size_max + 1)
        with pytest.raises(errors.EntryTooLarge, match=r"^append failed: entry of \d+ bytes "
                                                       r"exceeds entry_size_max \(\d+ bytes\)$"):
            log.append(too_big)
        with pytest.raises(errors.EntryTooLarge, match=r"^append_many failed: entry of "):
            log.append_many([b"small", too_big])
        with pytest.raises(errors.EntryTooLarge, match=r"^commit failed: cookie of 65537 bytes "
                                                       r"exceeds 65536 bytes$"):
            log.commit(cookie=bytes(lib.FL_COOKIE_SIZE_MAX_BYTES + 1))


def test_the_tails_and_the_handle_do_not_import_the_log_module() -> None:
    package = Path(errors.__file__).parent
    for module in ("tail.py", "handle.py"):
        tree = ast.parse((package / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "log" not in imported and "fasterlog.log" not in imported, module


def test_c_handle_is_the_cores_pointer(tmp_path: Path) -> None:
    from fasterlog._fasterlog_c import ffi

    with FasterLog.open(tmp_path / "log", **SMALL_SETTINGS) as log:
        log.append(b"x")
        log.commit()
        state = ffi.new("fl_state *")
        lib.fl_get_state(log.c_handle, state)
        assert int(state.committed_until_address) == log.committed_until_address
