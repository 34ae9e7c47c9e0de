"""The demo: `fasterlog demo` and examples/demo.py, run twice into one directory.

Goal: the README's first command must work on a fresh machine and again on the log it left
behind. Each run kills a writer with SIGKILL mid-stream and must report that every entry it
acknowledged came back; the second run must recover the first run's log and add to it.

Method: run the demo as a user does, as a subprocess: first `python -m fasterlog demo --dir D`,
then `python examples/demo.py --dir D`. Read what it printed, then open D here and check the
log itself: every entry is the demo's event with the next sequence number, no gap, no
duplicate, and `fasterlog verify` passes. A third run with no --dir checks the default place.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from fasterlog import FasterLog
from tests.support.processes import ROOT as repository

demo_timeout_s = 60


def run(*command: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, *map(str, command)], capture_output=True,
                            timeout=demo_timeout_s, cwd=cwd, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 0, f"status {result.returncode}: {stderr}"
    assert "Traceback" not in stderr
    return result.stdout.decode()


def recovered_all_acknowledged(output: str) -> int:
    match = re.search(r"all (\d+) acknowledged entries of the writer were recovered, byte for "
                      r"byte, in order", output)
    assert match, output
    assert int(match.group(1)) > 0
    return int(match.group(1))


def test_demo_twice_recovers_every_acknowledged_entry_and_keeps_the_log(tmp_path: Path) -> None:
    directory = tmp_path / "demo-log"
    first = run("-m", "fasterlog", "demo", "--dir", directory)
    assert "create a new log" in first
    recovered_all_acknowledged(first)
    assert "sent SIGKILL mid-stream" in first
    with FasterLog.open(directory, readonly=True) as log:
        first_count = sum(1 for _ in log.scan())

    second = run(repository / "examples" / "demo.py", "--dir", directory)
    assert "recover the log left there" in second
    assert f"   {first_count} entries, committed until" in second
    recovered_all_acknowledged(second)

    with FasterLog.open(directory, readonly=True) as log:
        events = [json.loads(entry) for batch in log.scan_batches() for _, entry in batch]
        cookie = log.cookie
    assert [event["seq"] for event in events] == list(range(len(events)))
    assert len(events) > first_count
    assert cookie == json.dumps({"entries": len(events)}).encode()
    assert "every checksum is good" in run("-m", "fasterlog", "verify", directory)


def test_demo_without_dir_uses_data_demo_log_under_the_working_directory(tmp_path: Path) -> None:
    output = run("-m", "fasterlog", "demo", cwd=tmp_path)
    recovered_all_acknowledged(output)
    assert (tmp_path / "data" / "demo-log" / "fasterlog.meta").is_file()
