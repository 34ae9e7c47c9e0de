"""Paths and environment for the child processes the tests start.

A child is started with the repository root (ROOT) first on its PYTHONPATH, so
`python -m tests.support.children.NAME` and the product packages import the checkout's code
whatever the child's working directory is.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # tests/support/processes.py -> the repository


def child_env(**extra: str) -> dict[str, str]:
    """The parent's environment with ROOT first on PYTHONPATH, plus `extra` variables."""
    inherited = os.environ.get("PYTHONPATH", "")
    python_path = f"{ROOT}{os.pathsep}{inherited}" if inherited else str(ROOT)
    return {**os.environ, "PYTHONPATH": python_path, **extra}
