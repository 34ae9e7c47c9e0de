"""The `fasterlog` command line as a user runs it: a subprocess, and its error convention.

Every expected failure of a command is one "fasterlog: error: ..." line on stderr, a non-zero
status (1, or 2 for usage) and no traceback; assert_one_error_line checks exactly that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

cli_timeout_s = 60


def run_cli(*arguments: str | Path | int, cwd: Path | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`python -m fasterlog ARGUMENTS...` with this interpreter; output captured."""
    return subprocess.run([sys.executable, "-m", "fasterlog", *map(str, arguments)],
                          capture_output=True, timeout=cli_timeout_s, cwd=cwd, input=stdin,
                          check=False)


def assert_one_error_line(result: subprocess.CompletedProcess[bytes], status: int = 1) -> str:
    """Asserts the failure convention above and returns the error line."""
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fasterlog: error: "), stderr
    return lines[0]
