"""Crash tests: a kill -9 of the producer loses nothing acknowledged and invents nothing.

Goal: pin the durability promise of commit() against a real process death. After a SIGKILL at
any instant (inside append, a page flush, commit's fdatasync or a segment switch), reopening the
directory must give back
  1. every entry that a returned commit() covered, in order and byte for byte;
  2. a prefix of what was appended: no gap, no garbage, no duplicate, nothing reordered;
  3. append_many batches wholly or not at all;
  4. the cookie of exactly the commit it recovered to.

Method: tests/support/children/crash_writer.py runs as a child process. Its entries are a pure
function of a seed and a sequence number, so the parent rebuilds the expected bytes on its own.
After each commit() returns the child appends "<count> <committed_until>" to a side file with one
os.write; that file is the child's record of what the log acknowledged. The parent waits until the
child has opened the log, sleeps a random delay, sends SIGKILL, then reopens the log itself and
checks the rules above. Each directory is killed and recovered several times in a chain, so recovery
also meets torn bytes left by an earlier generation of writers. A kill after the child ended by
itself is a test failure (the child never stops on its own unless it crashed).

The random delays and seeds come from one seeded generator per test, so a failing run can be
replayed by its parameters; a failure message names the seed, the chain and the kill.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fasterlog import FasterLog
from fasterlog.testing import crash_point_names
from tests.support.children import crash_writer
from tests.support.figures import record
from tests.support.mode import LONG, scaled

page_size_bytes = 4096
# Four pages of memory keep the ring small, so appends often wait for page flushes.
memory_size_bytes = 4 * page_size_bytes
ready_timeout_s = 30.0
kill_delay_max_s = 0.3


# The child runs this very file, so the parent's expectations come from the code it executes.
writer_path = pathlib.Path(crash_writer.__file__)


class Acknowledged:
    """What the child's side file says the log acknowledged: counts and committed_until."""

    def __init__(self, count: int, committed_until_address: int) -> None:
        self.count = count
        self.committed_until_address = committed_until_address


def _read_acknowledged(ack_path: pathlib.Path, start_count: int) -> Acknowledged:
    if not ack_path.exists():
        return Acknowledged(start_count, 0)
    lines = ack_path.read_bytes().split(b"\n")
    complete = [line for line in lines[:-1] if line]  # the last piece has no newline
    if not complete:
        return Acknowledged(start_count, 0)
    count, committed_until_address = (int(field) for field in complete[-1].split())
    return Acknowledged(count, committed_until_address)


def _wait_for_ready(child: subprocess.Popen[bytes], stderr_path: pathlib.Path) -> int:
    """Wait for the child's "ready <count>" line; return the count it continues from."""
    assert child.stdout is not None
    deadline = time.monotonic() + ready_timeout_s
    line = b""
    while not line.endswith(b"\n"):
        remaining_s = deadline - time.monotonic()
        readable, _, _ = select.select([child.stdout], [], [], max(remaining_s, 0))
        chunk = os.read(child.stdout.fileno(), 256) if readable else b""
        if not chunk:
            child.kill()
            child.wait()
            pytest.fail(f"writer never became ready: {stderr_path.read_text()[-3000:]}")
        line += chunk
    word, count = line.split()
    assert word == b"ready"
    return int(count)


def kill_writer_after(
    mode: str, arguments: dict[str, Any], delay_s: float, scratch: pathlib.Path
) -> tuple[int, Acknowledged]:
    """Run the writer, SIGKILL it delay_s after it opened the log; return (start, acknowledged)."""
    ack_path = scratch / "ack"
    stderr_path = scratch / "stderr"
    ack_path.unlink(missing_ok=True)
    arguments = dict(arguments, ack_path=str(ack_path))
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(writer_path), mode, json.dumps(arguments)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        start_count = _wait_for_ready(child, stderr_path)
        time.sleep(delay_s)
        if child.poll() is not None:
            pytest.fail(f"writer exited on its own ({child.returncode}): {stderr_path.read_text()}")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    return start_count, _read_acknowledged(ack_path, start_count)


def _first_difference(recovered: list[bytes], expected: list[bytes]) -> int:
    for index, (got, want) in enumerate(zip(recovered, expected, strict=False)):
        if got != want:
            return index
    return min(len(recovered), len(expected))


def _check_addresses(addresses: list[int]) -> None:
    assert all(address % 8 == 0 for address in addresses), "an entry address is not 8-aligned"
    assert addresses == sorted(set(addresses)), "entry addresses are not strictly increasing"


def _recover_stream(
    directory: pathlib.Path, settings: dict[str, Any], content_seed: int, acknowledged: Acknowledged
) -> int:
    """Reopen after a kill and check rules 1, 2 and 4; return the recovered count."""
    started = time.perf_counter()
    with FasterLog.open(str(directory), **settings) as log:
        recovery_seconds.append(time.perf_counter() - started)
        scanned = list(log.scan())
        recovered = [entry for _, entry in scanned]
        entry_size_max = log.entry_size_max
        expected = [
            crash_writer.stream_entry(content_seed, sequence_number, entry_size_max)
            for sequence_number in range(max(len(recovered), acknowledged.count))
        ]
        difference = _first_difference(recovered, expected)
        assert difference >= acknowledged.count, (
            f"acknowledged entry {difference} of {acknowledged.count} lost or changed "
            f"(recovered {len(recovered)})"
        )
        assert difference == len(recovered), (
            f"recovered entry {difference} is not what was appended: got "
            f"{recovered[difference][:32]!r} ({len(recovered[difference])} B), want "
            f"{expected[difference][:32]!r} ({len(expected[difference])} B)"
        )
        _check_addresses([address for address, _ in scanned])
        assert log.committed_until_address >= acknowledged.committed_until_address
        # Recovery goes back to one commit; its cookie is the count that commit covered.
        assert log.cookie == (str(len(recovered)).encode() if recovered else None)
        for address, entry in scanned[-3:]:
            assert log.read(address) == entry
        log.verify()
        return len(recovered)


# Time of each FasterLog.open after a kill (the recovery), for the figures.
recovery_seconds: list[float] = []


def _p99_ms(seconds: list[float]) -> float:
    ordered = sorted(seconds)
    return 1000 * ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0


def _chains(chains_count: int, kills_per_chain: int, seed: int) -> Iterator[tuple[int, int, float]]:
    rng = random.Random(seed)
    for chain in range(chains_count):
        for kill in range(kills_per_chain):
            yield chain, kill, rng.uniform(0.0, kill_delay_max_s)


def _run_stream_chains(
    tmp_path: pathlib.Path,
    settings: dict[str, Any],
    seed: int,
    chains_count: int,
    kills_per_chain: int,
) -> list[tuple[int, int, int]]:
    """Kill the stream writer repeatedly; return (start, acknowledged, recovered) per kill."""
    outcomes = []
    for chain, kill, delay_s in _chains(chains_count, kills_per_chain, seed):
        directory = tmp_path / f"chain-{chain}"
        content_seed = seed * 1000 + chain
        arguments = {
            "directory": str(directory),
            "settings": settings,
            "content_seed": content_seed,
            "rhythm_seed": seed * 1000000 + chain * 1000 + kill,
            "group_size_max": 16,
            "entries_max": 1_000_000,
        }
        start_count, acknowledged = kill_writer_after("stream", arguments, delay_s, tmp_path)
        context = f"seed {seed}, chain {chain}, kill {kill}, delay {delay_s:.3f} s"
        try:
            recovered_count = _recover_stream(directory, settings, content_seed, acknowledged)
        except AssertionError as error:
            raise AssertionError(f"{context}: {error}") from error
        assert recovered_count >= start_count, f"{context}: entries from before the restart lost"
        outcomes.append((start_count, acknowledged.count, recovered_count))
    return outcomes


def _assert_kills_landed_mid_stream(outcomes: list[tuple[int, int, int]]) -> None:
    # Without progress between ready and kill the test would prove nothing: most kills must
    # come after at least one acknowledged commit of that child.
    progressed = sum(1 for start, acknowledged, _ in outcomes if acknowledged > start)
    assert progressed >= len(outcomes) // 2, (
        f"only {progressed} of {len(outcomes)} kills progressed"
    )


@pytest.mark.timeout(180 if not LONG else 48 * 3600)
def test_kill_9_mid_stream_keeps_every_acknowledged_entry_and_adds_nothing(
    tmp_path: pathlib.Path,
) -> None:
    # Long mode (--long): 10,000 kills, 200 chains of 50.
    settings = {
        "page_size_bytes": page_size_bytes,
        "memory_size_bytes": memory_size_bytes,
        "segment_size_bytes": 1 << 20,
    }
    # FASTERLOG_KILL_CHAINS overrides the chain count (50 kills each in long mode).
    chains_count = scaled(5, 200, "FASTERLOG_KILL_CHAINS")
    kills_per_chain = scaled(10, 50)
    recovery_seconds.clear()
    outcomes = _run_stream_chains(tmp_path, settings, seed=1, chains_count=chains_count,
                                  kills_per_chain=kills_per_chain)
    assert len(outcomes) == chains_count * kills_per_chain
    _assert_kills_landed_mid_stream(outcomes)
    # Reaching here means every check held: lost, changed, reordered, duplicated all 0.
    record("kill_9_random",
           f"{len(outcomes)} kills -9 at random moments: acknowledged entries lost 0, "
           f"duplicated/reordered/invented 0, failed recoveries 0; recovery p99 "
           f"{_p99_ms(recovery_seconds):.1f} ms (max {1000 * max(recovery_seconds):.1f} ms)",
           {"kills": len(outcomes), "lost": 0, "failed_recoveries": 0,
            "recovery_p99_ms": round(_p99_ms(recovery_seconds), 2)},
           "python3 -m pytest -s tests/reliability/test_crash.py::"
           "test_kill_9_mid_stream_keeps_every_acknowledged_entry_and_adds_nothing")


@pytest.mark.timeout(120)
def test_kill_9_during_segment_switches_keeps_every_acknowledged_entry(
    tmp_path: pathlib.Path,
) -> None:
    # Eight pages per segment: the writer switches segments every few commits, so kills land
    # while a new segment file is created, preallocated or first written.
    segment_size_bytes = 8 * page_size_bytes
    settings = {
        "page_size_bytes": page_size_bytes,
        "memory_size_bytes": memory_size_bytes,
        "segment_size_bytes": segment_size_bytes,
    }
    outcomes = _run_stream_chains(tmp_path, settings, seed=2, chains_count=3, kills_per_chain=8)
    _assert_kills_landed_mid_stream(outcomes)
    for chain in range(3):
        segments = sorted((tmp_path / f"chain-{chain}").glob("segment-*.fl"))
        assert len(segments) >= 4, f"chain {chain} wrote only {len(segments)} segments"


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("segment_pages", [8, 256], ids=["segment-8-pages", "segment-256-pages"])
def test_kill_9_hundreds_of_times_keeps_every_acknowledged_entry(
    tmp_path: pathlib.Path, segment_pages: int
) -> None:
    # The long variant: 300 kills per segment size, for rare windows the default run misses.
    settings = {
        "page_size_bytes": page_size_bytes,
        "memory_size_bytes": memory_size_bytes,
        "segment_size_bytes": segment_pages * page_size_bytes,
    }
    outcomes = _run_stream_chains(
        tmp_path, settings, seed=100 + segment_pages, chains_count=20, kills_per_chain=15
    )
    _assert_kills_landed_mid_stream(outcomes)


def _recover_batches(
    directory: pathlib.Path, settings: dict[str, Any], content_seed: int, acknowledged: Acknowledged
) -> int:
    """Reopen after a kill; check that batches are whole, in order, and all acknowledged."""
    with FasterLog.open(str(directory), **settings) as log:
        entry_size_max = log.entry_size_max
        scanned = list(log.scan())
        grouped: list[list[bytes]] = []
        for _, entry in scanned:
            assert len(entry) >= crash_writer.batch_tag_size_bytes, f"untagged entry {entry!r}"
            if not grouped or crash_writer.batch_index_of(grouped[-1][0]) != (
                crash_writer.batch_index_of(entry)
            ):
                grouped.append([])
            grouped[-1].append(entry)
        for batch_index, batch in enumerate(grouped):
            expected = crash_writer.batch_entries(content_seed, batch_index, entry_size_max)
            assert batch == expected, (
                f"batch {batch_index} of {len(grouped)} is torn or wrong: {len(batch)} entries "
                f"recovered, {len(expected)} appended"
            )
        assert len(grouped) >= acknowledged.count, (
            f"{len(grouped)} batches recovered, {acknowledged.count} acknowledged"
        )
        _check_addresses([address for address, _ in scanned])
        log.verify()
        return len(grouped)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "auto_commit_bytes", [0, page_size_bytes], ids=["explicit-commits", "auto-commit-too"]
)
def test_kill_9_leaves_each_append_many_batch_wholly_present_or_wholly_absent(
    tmp_path: pathlib.Path, auto_commit_bytes: int
) -> None:
    # With auto-commit on, commits also start on their own, possibly while a batch is being
    # copied in; such a commit must not cover half a batch.
    settings = {
        "page_size_bytes": page_size_bytes,
        "memory_size_bytes": 8 * page_size_bytes,
        "segment_size_bytes": 16 * page_size_bytes,
        "auto_commit_bytes": auto_commit_bytes,
    }
    outcomes = []
    seed = 3 + auto_commit_bytes
    for chain, kill, delay_s in _chains(chains_count=2, kills_per_chain=8, seed=seed):
        directory = tmp_path / f"chain-{chain}"
        content_seed = seed * 1000 + chain
        arguments = {
            "directory": str(directory),
            "settings": settings,
            "content_seed": content_seed,
            "rhythm_seed": seed * 1000000 + chain * 1000 + kill,
            "batches_per_commit_max": 4,
            "batches_max": 1_000_000,
        }
        start_count, acknowledged = kill_writer_after("batches", arguments, delay_s, tmp_path)
        context = f"seed {seed}, chain {chain}, kill {kill}, delay {delay_s:.3f} s"
        try:
            recovered_count = _recover_batches(directory, settings, content_seed, acknowledged)
        except AssertionError as error:
            raise AssertionError(f"{context}: {error}") from error
        assert recovered_count >= start_count, f"{context}: batches from before the restart lost"
        outcomes.append((start_count, acknowledged.count, recovered_count))
    _assert_kills_landed_mid_stream(outcomes)


# --- named crash points -------------------------------------------------------------------
# FASTERLOG_CRASH_AT=name:count makes the C core SIGKILL itself the count-th time it passes
# that point, so the kill lands exactly between the two system calls that matter there.
# (point, counts): the meta and segment points also fire while the log opens, so counts
# above 2 land in the middle of the stream.
crash_points = {
    "after-write-before-sync": [1, 3, 8],
    "after-sync-before-meta": [1, 2, 4],
    "segment-create-before-dirsync": [2, 3, 6],
    "meta-after-rename": [1, 3, 5],
}


def _crash_at(arguments: dict[str, Any], point: str, count: int,
              scratch: pathlib.Path) -> tuple[int, Acknowledged]:
    """Runs the stream writer armed to kill itself at `point`; returns (start, acknowledged)."""
    ack_path = scratch / "ack"
    ack_path.unlink(missing_ok=True)
    arguments = dict(arguments, ack_path=str(ack_path))
    environment = dict(os.environ, FASTERLOG_CRASH_AT=f"{point}:{count}")
    child = subprocess.run(
        [sys.executable, str(writer_path), "stream", json.dumps(arguments)],
        stdin=subprocess.DEVNULL, capture_output=True, env=environment, timeout=60, check=False,
    )
    assert child.returncode == -signal.SIGKILL, (
        f"writer armed with {point}:{count} did not die there (exit {child.returncode}): "
        f"{child.stderr.decode()[-2000:]}"
    )
    words = child.stdout.split()
    start_count = int(words[1]) if len(words) >= 2 and words[0] == b"ready" else -1
    return start_count, _read_acknowledged(ack_path, max(start_count, 0))


def test_every_named_crash_point_has_a_test() -> None:
    assert sorted(crash_points) == sorted(crash_point_names())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("point", list(crash_points))
def test_kill_at_named_crash_point_keeps_every_acknowledged_entry(
    tmp_path: pathlib.Path, point: str
) -> None:
    settings = {
        "page_size_bytes": page_size_bytes,
        "memory_size_bytes": memory_size_bytes,
        # Small segments: segment switches and meta rewrites come every few commits.
        "segment_size_bytes": 4 * page_size_bytes,
    }
    directory = tmp_path / "log"
    content_seed = 77
    recovered_count = 0
    kills = 0
    rounds = scaled(2, 20)
    for round_index in range(rounds):
        for count in crash_points[point]:
            arguments = {
                "directory": str(directory), "settings": settings, "content_seed": content_seed,
                "rhythm_seed": round_index * 100 + count, "group_size_max": 16,
                "entries_max": 1_000_000,
            }
            start_count, acknowledged = _crash_at(arguments, point, count, tmp_path)
            kills += 1
            context = f"{point}:{count}, round {round_index}"
            if start_count >= 0:
                assert start_count >= recovered_count, f"{context}: the child lost entries"
            try:
                recovered_count = _recover_stream(directory, settings, content_seed,
                                                  acknowledged)
            except AssertionError as error:
                raise AssertionError(f"{context}: {error}") from error
    assert recovered_count > 0, "the crash points never let a commit through"
    record(f"crash_point[{point}]",
           f"{kills} kills -9 at {point}: acknowledged entries lost 0, failed recoveries 0",
           {"kills": kills, "lost": 0, "failed_recoveries": 0},
           f"python3 -m pytest -s 'tests/reliability/test_crash.py::"
           f"test_kill_at_named_crash_point_keeps_every_acknowledged_entry[{point}]'")
