"""Figures of the reliability suite: each test prints its figure and records it here.

`record` prints one line ("RELIABILITY <test> [<mode>, <backend>]: <figure>") and, when
FASTERLOG_RESULTS_DIR is set (scripts/reliability.sh sets it), appends a JSON line to
results.jsonl there, from which tests/reliability/report.py writes RELIABILITY.md. The mode is
the run's (tests.support.mode: short in CI, long with --long).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from .mode import is_long


def record(test: str, figure: str, values: dict[str, Any], reproduce: str) -> None:
    """Prints the figure and appends it to the results file when one is asked for.

    `reproduce` is the pytest command of the test, without a mode: in long mode `--long` is
    added, so the command reruns what made the figure."""
    backend = os.environ.get("FASTERLOG_IO_BACKEND", "") or "auto"
    mode = "long" if is_long() else "short"
    if is_long() and "--long" not in reproduce.split():
        reproduce = reproduce.replace("-m pytest ", "-m pytest --long ", 1)
    line = f"RELIABILITY {test} [{mode}, {backend}]: {figure}"
    print(line)
    directory = os.environ.get("FASTERLOG_RESULTS_DIR")
    if not directory:
        return
    os.makedirs(directory, exist_ok=True)
    entry = {
        "test": test,
        "figure": figure,
        "values": values,
        "mode": mode,
        "backend": backend,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reproduce": reproduce,
    }
    with open(os.path.join(directory, "results.jsonl"), "a") as file:
        file.write(json.dumps(entry) + "\n")
