"""The examples in examples/ run as a user runs them, and do what they say.

Goal: every example (event-sourced bank account, tailing consumer in another process, asyncio
consumer) works on a fresh directory and again on the log it left behind.

Method: run `python examples/X.py DIR` as a subprocess from an unrelated working directory (so
nothing depends on the checkout being on sys.path), twice into one DIR; read what it printed,
then open DIR here and check the log itself against the story the script told.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.events import EventStore
from fasterlog import FasterLog
from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(120)

examples = ROOT / "examples"
example_timeout_s = 60


def run_example(name: str, directory: Path, cwd: Path | None = None) -> str:
    result = subprocess.run([sys.executable, str(examples / name), str(directory)],
                            capture_output=True, text=True, timeout=example_timeout_s,
                            cwd=directory.parent if cwd is None else cwd, check=False)
    assert result.returncode == 0, f"status {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_bank_account_replays_and_checkpoints_agree_twice(tmp_path: Path) -> None:
    directory = tmp_path / "bank"
    first = run_example("bank_account.py", directory)
    assert "create a new bank log" in first
    assert "teller 2: ConflictError" in first
    assert "the retry was deduplicated" in first
    assert "from no checkpoint" in first
    assert "the checkpointed projection, the full replay and every account's stream agree" in first

    second = run_example("bank_account.py", directory)
    assert "alice is already open" in second and "bob is already open" in second
    assert re.search(r"from checkpoint at \d+ \+ \d+ entries replayed", second), second

    printed = re.findall(r"by a full replay of all \d+ events: alice (\S+) EUR, bob (\S+) EUR",
                         second)
    with FasterLog.open(directory) as log, EventStore(log) as store:
        balances = {}
        for account in ("alice", "bob"):
            events = store.read_stream(account)
            assert [e.version for e in events] == list(range(len(events)))
            assert [e.type for e in events].count("AccountOpened") == 1
            sign = {"MoneyDeposited": 1, "MoneyWithdrawn": -1}
            balances[account] = sum(sign.get(e.type, 0) * e.data.get("amount_cents", 0)
                                    for e in events)
            assert balances[account] >= 0
    assert printed == [(f"{balances['alice'] / 100:.2f}", f"{balances['bob'] / 100:.2f}")]


def test_tail_consumer_follower_in_another_process_sees_every_order(tmp_path: Path) -> None:
    directory = tmp_path / "tail"
    for _ in range(2):
        output = run_example("tail_consumer.py", directory)
        assert "follower | saw all 300 orders once and in order" in output, output
        assert "the follower in another process saw every committed order" in output
    with FasterLog.open(directory, readonly=True) as log:
        records = [json.loads(bytes(entry)) for _, entry in log.scan()]
    runs = {r["run"] for r in records}
    assert len(runs) == 2
    for run in runs:
        sequences = [r["sequence"] for r in records if r["run"] == run and "sequence" in r]
        assert sequences == list(range(300))


def test_async_consumer_tailers_and_projection_see_every_reading(tmp_path: Path) -> None:
    directory = tmp_path / "async"
    first = run_example("async_consumer.py", directory)
    assert "a tail cancelled while it waited ended at once" in first
    assert "wait_for_commit_async before any commit: False" in first
    assert "100 more tailers each saw 400 readings: all equal" in first
    assert "every async consumer saw every reading" in first
    threads = re.search(r"threads: (\d+) before the tailers, (\d+) while", first)
    assert threads and int(threads.group(2)) - int(threads.group(1)) <= 4, first

    second = run_example("async_consumer.py", directory)
    assert "started from the checkpoint at" in second
    counts = re.search(r"projection \(every run\): (\{.*?\})", second)
    assert counts is not None
    assert sum(json.loads(counts.group(1).replace("'", '"')).values()) == 800


@pytest.mark.parametrize("name", ["async_consumer.py", "bank_account.py", "tail_consumer.py"])
def test_an_example_creates_the_directories_above_its_log(tmp_path: Path, name: str) -> None:
    """Run as the README says, from a fresh directory, three of the four examples failed with
    `LogIOError: [Errno 2] open 'data/bank-log'`: FasterLog.open creates the log's own
    directory, not its parents (as open(2) does not), and ./data did not exist (issue 15). The
    examples make the parents; the log then holds what the example wrote."""
    directory = tmp_path / "fresh" / "data" / "log"
    try:
        run_example(name, directory, cwd=tmp_path)
        with FasterLog.open(directory, readonly=True) as log:
            assert log.committed_until_address > log.begin_address
    finally:
        shutil.rmtree(tmp_path / "fresh", ignore_errors=True)  # its 1 GiB segment, at once
