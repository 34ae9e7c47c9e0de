"""I/O backends: io_uring when the kernel allows it, the plain pread/pwrite backend otherwise;
and the test layers stacked over either (the I/O trace and fault injection).

Method: the refusal is real, not mocked: a child process installs a seccomp filter (as Docker's
default profile does) that makes io_uring_setup fail with EPERM, then opens a log. The layers
are seen from outside: which device writes a trace holds, and which operation a fault fails.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fasterlog import FasterLog, errors
from fasterlog import testing as fault_testing
from tests.support.settings import SMALL_SETTINGS

SETTINGS: dict[str, Any] = dict(SMALL_SETTINGS)

DENY_IO_URING = textwrap.dedent(
    """
    import ctypes, struct
    libc = ctypes.CDLL(None, use_errno=True)
    NR_IO_URING_SETUP = 425
    program = [
        (0x20, 0, 0, 0),                         # load the syscall number
        (0x15, 0, 1, NR_IO_URING_SETUP),         # io_uring_setup?
        (0x06, 0, 0, 0x00050000 | {errno}),      # then fail with errno
        (0x06, 0, 0, 0x7FFF0000),                # else allow
    ]
    raw = b"".join(struct.pack("HBBI", *op) for op in program)
    buffer = ctypes.create_string_buffer(raw)
    prog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buffer))
    prog_buffer = ctypes.create_string_buffer(prog)
    assert libc.prctl(38, 1, 0, 0, 0) == 0               # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, prog_buffer, 0, 0) == 0     # PR_SET_SECCOMP, MODE_FILTER
    """
)

needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64",
                                  reason="the seccomp filter uses x86_64 syscall numbers")


def run_child(code: str, env_backend: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("FASTERLOG_IO_BACKEND", None)
    if env_backend:
        env["FASTERLOG_IO_BACKEND"] = env_backend
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)


@needs_x86_64
@pytest.mark.parametrize("errno_value", [1, 38])  # EPERM, ENOSYS
def test_refused_io_uring_falls_back_to_plain_and_says_so_once(tmp_path: Path,
                                                               errno_value: int) -> None:
    code = DENY_IO_URING.format(errno=errno_value) + textwrap.dedent(
        f"""
        from fasterlog import FasterLog
        for name in ("a", "b"):
            with FasterLog.open({str(tmp_path)!r} + "/" + name) as log:
                a = log.append(b"x")
                log.commit()
                assert log.read(a) == b"x"
                print(log.io_backend)
        """
    )
    result = run_child(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain", "plain"]
    assert result.stderr.count("io_uring is not available") == 1


@needs_x86_64
def test_forcing_io_uring_when_refused_is_an_error(tmp_path: Path) -> None:
    code = DENY_IO_URING.format(errno=1) + textwrap.dedent(
        f"""
        from fasterlog import FasterLog, errors
        try:
            FasterLog.open({str(tmp_path)!r}, io_backend="io_uring")
        except errors.LogIOError as error:
            print("refused", error.errno)
        """
    )
    result = run_child(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused 1"


def test_open_option_forces_plain(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTERLOG_IO_BACKEND", raising=False)
    with FasterLog.open(log_dir, io_backend="plain", **SETTINGS) as log:
        assert log.io_backend == "plain"


def test_environment_variable_forces_plain(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTERLOG_IO_BACKEND", "plain")
    with FasterLog.open(log_dir, io_backend="io_uring", **SETTINGS) as log:
        assert log.io_backend == "plain"


def test_unknown_backend_in_environment_is_a_settings_error(
        log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTERLOG_IO_BACKEND", "floppy")
    with pytest.raises(errors.SettingsError):
        FasterLog.open(log_dir)


def test_io_uring_is_used_when_available(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTERLOG_IO_BACKEND", raising=False)
    with FasterLog.open(log_dir, **SETTINGS) as log:
        if log.io_backend != "io_uring":
            pytest.skip("this kernel refuses io_uring")
        assert log.settings["io_backend"] == "io_uring"


def _device_writes(ops: list[fault_testing.TraceOp], directory: Path) -> int:
    return sum(1 for op in ops if op.op == "write" and op.device
               and op.path.startswith(str(directory)))


def test_trace_records_the_device_writes_of_logs_opened_before_and_during_it(
        tmp_path: Path) -> None:
    # A log open when the trace starts gets the trace layer stacked then; a log opened while
    # it runs gets it at open; after the trace stops, neither records anything more.
    before_dir, during_dir = tmp_path / "before", tmp_path / "during"
    with FasterLog.open(before_dir, **SETTINGS) as before:
        with fault_testing.IOTrace() as trace:
            before.append(b"x" * 100)
            before.commit()
            with FasterLog.open(during_dir, **SETTINGS) as during:
                during.append(b"y" * 100)
                during.commit()
        assert _device_writes(trace.ops, before_dir) >= 1
        assert _device_writes(trace.ops, during_dir) >= 1
        with fault_testing.IOTrace() as later:
            pass
        before.append(b"z" * 100)
        before.commit()
        assert later.fetch() == []


def test_a_fault_armed_after_open_fails_only_its_own_operation(log_dir: Path) -> None:
    # The fault layer is stacked when the fault is armed: the commit before it is untouched,
    # the sync it names fails and fences the log, and what was committed stays readable.
    with FasterLog.open(log_dir, **SETTINGS) as log:
        log.append(b"kept")
        log.commit()
        fault_testing.inject_fault(log, op="fsync")
        log.append(b"lost")
        with pytest.raises(errors.LogIOError):
            log.commit()
        with pytest.raises(errors.LogFencedError):
            log.append(b"refused")
    with FasterLog.open(log_dir, **SETTINGS) as log:
        assert [entry for _, entry in log.scan()] == [b"kept"]


def test_a_cleared_fault_never_fires(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SETTINGS) as log:
        fault_testing.inject_fault(log, op="any", after=1)
        fault_testing.clear_faults(log)
        for index in range(5):
            log.append(b"entry %d" % index)
            log.commit()
        assert len(list(log.scan())) == 5
