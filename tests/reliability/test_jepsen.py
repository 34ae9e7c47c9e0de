"""Jepsen-style check of named consumers under kill -9, from recorded histories.

Goal: the acceptance line of issue 3: with the producer and the consumer processes killed with
SIGKILL at random moments and restarted, at least 50 times, no acknowledged entry is lost
(lost = 0), a consumer never jumps over an entry (skipped = 0) nor goes back within a run
(non-monotonic = 0), and entries are processed twice only at or after the last durable cursor
position before a restart (bad duplicates = 0).

Method: tests/support/children/jepsen_producer.py appends numbered entries to the log (the writer)
and records each acknowledged commit; it also truncates the log as far as retention lets it, so a
cursor that did not hold the log back would show up as lost entries.
tests/support/children/jepsen_consumer.py follows the log read-only from another process with a
named Consumer and records every entry it processed, its durable position when it started, and each
acknowledgement, one os.write per line. This test kills and restarts them, then drains the consumer,
and checks the histories with check() below, which knows nothing of the implementation; the checker
itself is tested on small made-up histories that break each rule. Finally, bad input across
processes: a cursor deleted by another process, seeks past committed-until and below begin in a
follower, and a corrupt cursor file, all with typed errors.
"""

from __future__ import annotations

import bisect
import logging
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consumers import Consumer, CursorInUseError, UnknownCursorError, delete_cursor
from fasterlog import FasterLog, cursors
from tests.support.processes import ROOT
from tests.support.settings import SMALL_SETTINGS

CURSOR_NAME = "jepsen"
rounds_count = 60
kill_delay_max_s = 0.25
early_kill_probability = 0.15  # kill before the child said "ready": mid-import or mid-recovery
child_ready_timeout_s = 30.0
drain_timeout_s = 60.0
time_budget_s = 75.0


# --- the checker ------------------------------------------------------------------------------


@dataclass
class Figures:
    acknowledged_count: int = 0  # entries the producer saw committed
    log_count: int = 0  # entries in the log at the end (its newest cookie)
    processed_count: int = 0  # proc lines, duplicates included
    sessions_count: int = 0
    lost: int = 0
    skipped: int = 0
    non_monotonic: int = 0
    duplicates_allowed: int = 0
    bad_duplicates: int = 0
    phantoms: int = 0  # an address processed with another number than the log holds there
    cursor_regressions: int = 0  # a start position below the last acknowledged one
    problems: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


def parse(lines: list[str]) -> list[tuple[str, ...]]:
    """History lines as tuples of words; a last line cut by a kill (no newline) is dropped."""
    return [tuple(line.split()) for line in lines if line.strip()]


def check(producer: list[tuple[str, ...]], consumer: list[tuple[str, ...]],
          log_entries: list[tuple[int, int]], log_count: int) -> Figures:
    """Checks the histories against the rules of the module docstring. `log_entries` is the
    final log's (address, number) from its begin address; `log_count` its entries count."""
    figures = Figures(log_count=log_count)
    acks = [int(words[1]) for words in producer if words[0] == "ack"]
    figures.acknowledged_count = max(acks, default=0)
    known = dict(log_entries)  # address -> number, also from what was processed
    sessions: list[tuple[int, list[tuple[int, int]], list[int]]] = []
    for words in consumer:
        if words[0] == "start":
            sessions.append((int(words[1]), [], []))
        elif words[0] == "proc":
            sessions[-1][1].append((int(words[1]), int(words[2])))
        elif words[0] == "ack":
            sessions[-1][2].append(int(words[1]))
    figures.sessions_count = len(sessions)
    for _, records, _ in sessions:
        for number, address in records:
            figures.processed_count += 1
            if known.setdefault(address, number) != number:
                figures.phantoms += 1
                figures.note(f"address {address}: processed as {number}, holds {known[address]}")
    addresses = sorted(known)
    processed: set[int] = set()
    last_ack = 0
    for start, records, session_acks in sessions:
        if start < last_ack:
            figures.cursor_regressions += 1
            figures.note(f"started at {start} after an acknowledgement of {last_ack}")
        if records and processed and records[0][0] > max(processed) + 1:
            figures.skipped += records[0][0] - max(processed) - 1
            figures.note(f"restarted at {records[0][0]}, after {max(processed)}")
        _check_session(figures, start, records, processed, last_ack, known, addresses)
        processed.update(number for number, _ in records)
        if session_acks:
            last_ack = session_acks[-1]
    figures.lost = sum(1 for number in range(max(log_count, figures.acknowledged_count))
                       if number not in processed)
    if log_count < figures.acknowledged_count:
        figures.note(f"the log holds {log_count} entries, {figures.acknowledged_count} "
                     "were acknowledged")
    return figures


def _check_session(figures: Figures, start: int, records: list[tuple[int, int]],
                   processed_before: set[int], last_ack: int, known: dict[int, int],
                   addresses: list[int]) -> None:
    if not records:
        return
    first_number, first_address = records[0]
    at_start = bisect.bisect_left(addresses, start)
    if at_start < len(addresses):
        expected = known[addresses[at_start]]
        if first_number > expected:
            figures.skipped += first_number - expected
            figures.note(f"started at {start} (entry {expected}) but processed {first_number} "
                         "first")
    if first_address < start:
        figures.note(f"processed {first_address} below its start position {start}")
    previous: tuple[int, int] | None = None
    for number, address in records:
        if previous is not None:
            if number <= previous[0] or address <= previous[1]:
                figures.non_monotonic += 1
                figures.note(f"{number}@{address} after {previous[0]}@{previous[1]}")
            elif number > previous[0] + 1:
                figures.skipped += number - previous[0] - 1
                figures.note(f"jumped from {previous[0]} to {number}")
        if number in processed_before:
            if address >= last_ack:
                figures.duplicates_allowed += 1
            else:
                figures.bad_duplicates += 1
                figures.note(f"{number}@{address} again, below the acknowledged {last_ack}")
        previous = (number, address)


def history(text: str) -> list[tuple[str, ...]]:
    return parse(textwrap.dedent(text).splitlines())


LOG = [(64, 0), (80, 1), (96, 2), (112, 3)]
PRODUCED = history("ack 2\nack 4")


def test_checker_passes_a_good_history_with_allowed_duplicates() -> None:
    consumer = history("""
        start 64
        proc 0 64
        proc 1 80
        ack 96
        proc 2 96
        start 96
        proc 2 96
        proc 3 112
        ack 128
    """)
    figures = check(PRODUCED, consumer, LOG, 4)
    assert (figures.lost, figures.skipped, figures.non_monotonic, figures.bad_duplicates,
            figures.phantoms, figures.cursor_regressions) == (0, 0, 0, 0, 0, 0)
    assert figures.duplicates_allowed == 1 and figures.sessions_count == 2


@pytest.mark.parametrize("consumer, broken", [
    ("start 64\nproc 0 64\nproc 1 80\nproc 2 96", "lost"),
    ("start 64\nproc 0 64\nproc 2 96\nproc 3 112", "skipped"),
    ("start 64\nproc 0 64\nproc 1 80\nack 96\nstart 112\nproc 3 112", "skipped"),
    ("start 64\nproc 0 64\nproc 2 96\nproc 1 80\nproc 3 112", "non_monotonic"),
    (("start 64\nproc 0 64\nproc 1 80\nproc 2 96\nack 112\nstart 64\nproc 0 64\nproc 1 80\n"
      "proc 2 96\nproc 3 112"), "bad_duplicates"),
    ("start 64\nproc 0 64\nproc 1 80\nproc 7 96\nproc 3 112", "phantoms"),
])
def test_checker_catches_each_broken_rule(consumer: str, broken: str) -> None:
    figures = check(PRODUCED, history(consumer), LOG, 4)
    assert getattr(figures, broken) > 0, figures


# --- processes --------------------------------------------------------------------------------


class Child:
    """A child process of ours that says "ready" on stdout; its stderr goes to a file."""

    def __init__(self, module: str, arguments: list[str], stderr_path: Path) -> None:
        self.module = module
        with open(stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"tests.support.children.{module}", *arguments],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
        self.stderr_path = stderr_path

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + child_ready_timeout_s
        received = b""
        while b"\n" not in received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{self.module} did not get ready in {child_ready_timeout_s} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.process.wait()
                    self.process.stdout.close()
                    pytest.fail(f"{self.module} exited with status {self.process.returncode}:"
                                f"\n{self.stderr_path.read_text()[-3000:]}")
                received += chunk

    def kill(self) -> None:
        exited = self.process.poll() is not None
        if not exited:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()  # closed before any failure, so no pipe is left to GC
        if exited:
            pytest.fail(f"{self.module} exited by itself with status "
                        f"{self.process.returncode}:\n{self.stderr_path.read_text()[-3000:]}")


@dataclass
class Run:
    directory: Path
    producer_history: Path
    consumer_history: Path
    stderr_path: Path
    rhythm: random.Random
    kills: dict[str, int] = field(default_factory=lambda: {"producer": 0, "consumer": 0})

    def start(self, role: str) -> Child:
        seed = str(self.rhythm.randrange(1 << 30))
        if role == "producer":
            arguments = [str(self.directory), str(self.producer_history), seed]
        else:
            arguments = [str(self.directory), str(self.consumer_history), CURSOR_NAME, seed]
        return Child(f"jepsen_{role}", arguments, self.stderr_path)


def run_rounds(run: Run) -> None:
    children = {role: run.start(role) for role in ("producer", "consumer")}
    for child in children.values():
        child.wait_ready()
    started = time.monotonic()
    for _ in range(rounds_count):
        time.sleep(run.rhythm.uniform(0.01, kill_delay_max_s))
        victims = run.rhythm.choice([["producer"], ["consumer"], ["producer", "consumer"]])
        for role in victims:
            children[role].kill()
            run.kills[role] += 1
        for role in victims:
            children[role] = run.start(role)
        if run.rhythm.random() >= early_kill_probability:
            for role in victims:
                children[role].wait_ready()
        assert time.monotonic() - started < time_budget_s, "the kill rounds ran too long"
    for role, child in children.items():
        child.kill()
        run.kills[role] += 1


def drain(run: Run) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.children.jepsen_consumer", str(run.directory),
         str(run.consumer_history), CURSOR_NAME, "0", "--drain"],
        cwd=ROOT, capture_output=True, timeout=drain_timeout_s, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert result.stdout.split()[-1] == b"drained"


def read_lines(path: Path) -> list[str]:
    text = path.read_text() if path.exists() else ""
    lines = text.split("\n")
    return lines[:-1]  # the part after the last newline, if any, was cut by a kill


def test_kill_9_of_producer_and_consumer_loses_and_skips_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "log"
    FasterLog.open(directory, **SMALL_SETTINGS).close()
    cursors.write(directory, CURSOR_NAME, 64)  # before the first truncation can happen
    seed = int(os.environ.get("JEPSEN_SEED", random.randrange(1 << 30)))  # to replay choices
    run = Run(directory, tmp_path / "producer.history", tmp_path / "consumer.history",
              tmp_path / "children.stderr", random.Random(seed))
    started = time.monotonic()
    run_rounds(run)
    drain(run)
    with FasterLog.open(directory, readonly=True) as log:
        log_entries = [(address, int(bytes(entry).split(b" ", 1)[0]))
                       for address, entry in log.scan()]
        log_count = log_entries[-1][1] + 1 if log_entries else 0
        begin = log.begin_address
    producer = parse(read_lines(run.producer_history))
    figures = check(producer, parse(read_lines(run.consumer_history)), log_entries, log_count)
    truncations = sum(1 for words in producer if words[0] == "truncated")
    refusals = sum(1 for words in producer if words[0] == "refused")
    unaligned = sum(1 for words in producer if words[0] == "unaligned")
    with capsys.disabled():
        print(f"\njepsen (seed {seed}): {rounds_count} rounds, kills {run.kills}, "
              f"{time.monotonic() - started:.1f} s; acknowledged {figures.acknowledged_count}, "
              f"in the log {figures.log_count} (begin {begin}), processed "
              f"{figures.processed_count} in {figures.sessions_count} sessions; lost "
              f"{figures.lost}, skipped {figures.skipped}, non-monotonic "
              f"{figures.non_monotonic}, duplicates {figures.duplicates_allowed} (all at or "
              f"after the last durable cursor: bad {figures.bad_duplicates}), phantoms "
              f"{figures.phantoms}, cursor regressions {figures.cursor_regressions}; "
              f"truncations {truncations}, refused by retention {refusals} (then at the "
              f"cursor: not a truncation point {unaligned})")
    assert sum(run.kills.values()) >= rounds_count
    assert figures.sessions_count > run.kills["consumer"] // 2  # most restarts got going
    assert figures.acknowledged_count > 0 and figures.log_count >= figures.acknowledged_count
    assert (figures.lost, figures.skipped, figures.non_monotonic, figures.bad_duplicates,
            figures.phantoms, figures.cursor_regressions) == (0, 0, 0, 0, 0, 0), figures.problems


# --- bad input across processes ---------------------------------------------------------------

FOLLOWER = textwrap.dedent(
    """
    import sys
    from consumers import Consumer, InvalidSeekError, SeekBelowBeginError, UnknownCursorError
    from fasterlog import FasterLog, errors
    log = FasterLog.open(sys.argv[1], readonly=True)
    for name, create in (("gone", False), ("reader", True)):
        try:
            consumer = Consumer(log, name, create=create)
        except UnknownCursorError as error:
            print("unknown", error.name)
            continue
        for target in (int(sys.argv[2]), int(sys.argv[3])):
            try:
                consumer.seek(target)
            except SeekBelowBeginError as error:
                print("below", error.begin_address)
            except InvalidSeekError as error:
                print("past", error.address)
        print("position", consumer.position)
    """
)


def test_cursor_deleted_by_another_process_and_bad_seeks_in_a_follower(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        addresses = log.append_many([b"e%d" % i for i in range(10)])
        log.commit()
        log.truncate_until(addresses[3])
        log.commit()
        log.append(b"appended at committed-until, never committed")
        past = log.append(b"past committed-until")
        with Consumer(log, "gone") as consumer:
            consumer.poll(max_count=2)
            consumer.ack()
            with pytest.raises(CursorInUseError):
                delete_cursor(log_dir, "gone")  # a path works as well as a log
        delete_cursor(log_dir, "gone")
        result = subprocess.run([sys.executable, "-c", FOLLOWER, str(log_dir),
                                 str(addresses[1]), str(past)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n")[:-1] == [
            "unknown gone", f"below {addresses[3]}", f"past {past}",
            f"position {addresses[3]}"]
        with pytest.raises(UnknownCursorError):
            Consumer(log, "gone", create=False)


def test_a_corrupt_cursor_file_stops_a_consumer_process_with_a_typed_error(
        log_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        log.append(b"x")
        log.commit()
        cursors.write(log_dir, "reader", 64)
        path = log_dir / "cursors" / "reader.cursor"
        path.write_bytes(path.read_bytes()[:512] + b"\xff" * 512)
        code = ("import sys\nfrom consumers import Consumer\nfrom fasterlog import FasterLog, "
                "errors\nlog = FasterLog.open(sys.argv[1], readonly=True)\ntry:\n"
                "    Consumer(log, 'reader')\nexcept errors.CorruptionError as error:\n"
                "    print('corrupt', error)\n")
        result = subprocess.run([sys.executable, "-c", code, str(log_dir)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("corrupt cursor read failed: ")
        assert "no valid slot" in result.stdout
        # Retention leaves the damaged cursor out, with a warning naming it (its position is
        # unknown; pinning the log on it would stop retention until the disk fills).
        with caplog.at_level(logging.WARNING, logger="fasterlog"):
            log.truncate_until(log.committed_until_address)
        assert "cursor 'reader' is damaged" in caplog.text
