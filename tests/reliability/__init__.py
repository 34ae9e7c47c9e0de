"""Figures of the reliability suite: each test prints its figure and records it here.

`record` prints one line ("RELIABILITY <test>: <figure>") and, when FASTERLOG_RESULTS_DIR is
set (scripts/reliability.sh sets it), appends a JSON line to results.jsonl there, from which
tests/reliability/report.py writes RELIABILITY.md. The counts come from FASTERLOG_LONG: unset,
the short mode that CI runs; "1", the long mode.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

LONG = os.environ.get("FASTERLOG_LONG", "") == "1"


def scaled(short: int, long: int, override: str = "") -> int:
    """The count for this mode: `short` in CI, `long` with FASTERLOG_LONG=1; the environment
    variable named `override`, when set, wins (to shorten a long run, saying so)."""
    if override and os.environ.get(override):
        return int(os.environ[override])
    return long if LONG else short


def record(test: str, figure: str, values: dict[str, Any], reproduce: str) -> None:
    """Prints the figure and appends it to the results file when one is asked for."""
    backend = os.environ.get("FASTERLOG_IO_BACKEND", "") or "auto"
    line = f"RELIABILITY {test} [{'long' if LONG else 'short'}, {backend}]: {figure}"
    print(line)
    directory = os.environ.get("FASTERLOG_RESULTS_DIR")
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    entry = {
        "test": test,
        "figure": figure,
        "values": values,
        "mode": "long" if LONG else "short",
        "backend": backend,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reproduce": reproduce,
    }
    with open(os.path.join(directory, "results.jsonl"), "a") as file:
        file.write(json.dumps(entry) + "\n")
