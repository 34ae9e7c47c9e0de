"""Projections with exactly-once checkpoints (consumers.projection).

Goal: a projection restarted from its checkpoints has exactly the state of one full replay of
the log, whatever moment its process was killed at, and a checkpoint that cannot be used
(missing, truncated or corrupt snapshot file, snapshot restore() refuses, suffix truncated
away) is skipped with a warning in favour of the previous one or a full replay.

Method: real logs. The kill -9 test runs tests/support/children/projection_worker.py (a writer plus
a checkpointing runner thread) in a child process, SIGKILLs it at random moments, and checks at
every restart and at the end that the recovered state equals a fresh full replay; the projection is
a hash chain over (address, entry), so a lost, repeated or reordered entry shows. The corruption
tests damage snapshot files by hand (flip a byte, delete, truncate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from consumers.errors import ConsumerError
from consumers.projection import (
    Checkpoint,
    CheckpointError,
    Projection,
    ProjectionRunner,
    load_checkpoint,
)
from fasterlog import FasterLog, errors
from tests.support import faults
from tests.support.children.projection_worker import ChainProjection, full_replay, make_runner
from tests.support.processes import ROOT, child_env
from tests.support.settings import SMALL_SETTINGS

pytestmark = pytest.mark.timeout(60)

worker = "tests.support.children.projection_worker"
kills_count = 20
child_start_timeout_s = 30


class CountingProjection(ChainProjection):
    """The worker's hash chain, counting its apply() calls."""

    def __init__(self) -> None:
        self.applied_count = 0

    def apply(self, state: dict[str, Any], address: int, entry: bytes) -> dict[str, Any]:
        self.applied_count += 1
        return super().apply(state, address, entry)


def append_entries(log: FasterLog, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    for _ in range(count):
        log.append(b"k%d=%d" % (rng.randrange(5), rng.randrange(100)))
    log.commit()


def runner_for(log: FasterLog, projection: Projection[Any] | None = None,
               **options: Any) -> ProjectionRunner[Any]:
    options.setdefault("checkpoint_every_entries", 10)
    return ProjectionRunner(log, projection or CountingProjection(), "chain", **options)


@pytest.fixture
def checkpointed_log(log_dir: Path) -> FasterLog:
    """A log of 55 entries whose "chain" projection checkpointed at 10, 20, ... 50 entries."""
    log = FasterLog.open(log_dir, **SMALL_SETTINGS)
    append_entries(log, 55)
    runner = runner_for(log, checkpoint_on_stop=False)
    assert runner.catch_up() == 55
    return log


def restart(log: FasterLog, **options: Any) -> ProjectionRunner[Any]:
    runner = runner_for(log, **options)
    runner.catch_up()
    assert runner.state == full_replay(log)
    return runner


def newest_files(log: FasterLog) -> list[Path]:
    """Kept snapshot files, newest first."""
    files = (Path(log.path) / "checkpoints").glob("chain-*.snap")
    return sorted(files, key=lambda p: int(p.stem.rsplit("-", 1)[1]), reverse=True)


# --- kill -9 --------------------------------------------------------------------------------


def test_projection_restarted_from_checkpoints_equals_a_full_replay_across_kill_9(
        log_dir: Path) -> None:
    rng = random.Random(int(os.environ.get("PROJECTION_KILL_SEED", "20240611")))
    reports = []
    for round_index in range(kills_count):
        child = subprocess.Popen([sys.executable, "-m", worker, str(log_dir), str(round_index)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=ROOT, env=child_env())
        try:
            if round_index % 5 == 4:
                time.sleep(rng.uniform(0.1, 0.4))  # sometimes kill it while it recovers
            else:
                line = child.stdout.readline()  # type: ignore[union-attr]
                assert line, f"worker died: {child.stderr.read()}"  # type: ignore[union-attr]
                report = json.loads(line)
                assert report["equal"], report
                reports.append(report)
                time.sleep(rng.uniform(0.0, 0.25))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=child_start_timeout_s)
            stderr = child.stderr.read()  # type: ignore[union-attr]
            child.stdout.close()  # type: ignore[union-attr]
            child.stderr.close()  # type: ignore[union-attr]
        assert "Traceback" not in stderr, stderr

    with FasterLog.open(log_dir) as log:
        runner = make_runner(log)
        runner.catch_up()
        assert runner.state == full_replay(log)
        assert runner.state["count"] > 0
    started_from_checkpoint = [r for r in reports if r["recovered_from"] is not None]
    assert len(started_from_checkpoint) >= len(reports) - 2, reports
    assert any(r["replayed"] < r["count"] for r in started_from_checkpoint), reports


# --- restarts -------------------------------------------------------------------------------


def test_restart_loads_the_newest_checkpoint_and_replays_only_the_suffix(
        checkpointed_log: FasterLog) -> None:
    projection = CountingProjection()
    runner = runner_for(checkpointed_log, projection)
    runner.recover()
    assert runner.recovered_from is not None
    assert runner.recovered_from.position == runner.position
    assert runner.state["count"] == 50
    runner.catch_up()
    assert projection.applied_count == 5
    assert runner.state == full_replay(checkpointed_log)


def test_restart_after_reopening_the_log_equals_a_full_replay(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        append_entries(log, 33)
        runner_for(log).run(timeout=0)
    with FasterLog.open(log_dir) as log:
        append_entries(log, 4, seed=1)
        projection = CountingProjection()
        runner = runner_for(log, projection)
        runner.catch_up()
        assert runner.recovered_from is not None and runner.recovered_from.position > 64
        assert projection.applied_count == 4
        assert runner.state == full_replay(log)


def test_the_newest_marker_is_found_when_the_hint_file_is_stale_or_garbage(
        checkpointed_log: FasterLog) -> None:
    hint = Path(checkpointed_log.path) / "checkpoints" / "chain.hint"
    newest = runner_for(checkpointed_log).checkpoints()[0]
    oldest_kept = runner_for(checkpointed_log).checkpoints()[2]
    hint.write_bytes(msgpack.packb({"marker_addresses": [oldest_kept.marker_address]}))
    assert restart(checkpointed_log).recovered_from == newest
    hint.write_bytes(b"\x00not msgpack")
    assert restart(checkpointed_log).recovered_from == newest
    hint.write_bytes(msgpack.packb({"marker_addresses": [64, 72, 10**12]}))
    assert restart(checkpointed_log).recovered_from == newest
    hint.unlink()
    assert restart(checkpointed_log).recovered_from == newest


def test_a_data_entry_that_looks_like_a_marker_is_data_not_a_checkpoint(log_dir: Path) -> None:
    class Raw(Projection[dict[str, Any]]):
        def apply(self, state: dict[str, Any], address: int, entry: bytes) -> dict[str, Any]:
            state["count"] = state.get("count", 0) + 1
            return state

    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        (Path(log_dir) / "checkpoints").mkdir()
        (Path(log_dir) / "checkpoints" / "raw-64.snap").write_bytes(msgpack.packb({"count": 99}))
        forged = msgpack.packb({"kind": "checkpoint", "version": 1, "name": "raw",
                                "position": 64, "file": "raw-64.snap",
                                "crc32c": 0, "size_bytes": 0})
        log.append(forged)
        log.commit()
        runner = ProjectionRunner(log, Raw(), "raw")
        assert runner.checkpoints() == []
        runner.catch_up()
        assert runner.recovered_from is None
        assert runner.state == {"count": 1}


def test_checkpoints_of_other_names_are_ignored(checkpointed_log: FasterLog) -> None:
    other = ProjectionRunner(checkpointed_log, CountingProjection(), "other")
    assert other.checkpoints() == []
    other.catch_up()
    assert other.recovered_from is None
    assert other.state == full_replay(checkpointed_log)


# --- corrupt checkpoints --------------------------------------------------------------------


def flip_a_byte(path: Path) -> None:
    faults.flip_bit(path, path.stat().st_size // 2, bit=6)


@pytest.mark.parametrize("damage, message", [
    (flip_a_byte, "CRC32C"),
    (Path.unlink, "missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:-3]), "truncated"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_with_a_warning(
        checkpointed_log: FasterLog, caplog: pytest.LogCaptureFixture, damage: Any,
        message: str) -> None:
    newest, previous = runner_for(checkpointed_log).checkpoints()[:2]
    damage(newest_files(checkpointed_log)[0])
    with pytest.raises(CheckpointError, match=message):
        runner_for(checkpointed_log).load_checkpoint(newest)
    with caplog.at_level(logging.WARNING, logger="consumers.projection"):
        runner = restart(checkpointed_log)
    assert runner.recovered_from == previous
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and message in warnings[0].getMessage()
    assert f"at position {newest.position}" in warnings[0].getMessage()
    # Catching up re-made the checkpoint at the same position: the next start uses it again.
    recovered = restart(checkpointed_log).recovered_from
    assert recovered is not None and recovered.position == newest.position


def test_every_kept_checkpoint_damaged_means_a_full_replay_with_warnings(
        checkpointed_log: FasterLog, caplog: pytest.LogCaptureFixture) -> None:
    files = newest_files(checkpointed_log)
    assert len(files) == 3  # checkpoints_kept_count: older files were deleted
    for path in files:
        flip_a_byte(path)
    projection = CountingProjection()
    with caplog.at_level(logging.WARNING, logger="consumers.projection"):
        runner = runner_for(checkpointed_log, projection)
        runner.catch_up()
    assert runner.recovered_from is None
    assert projection.applied_count == 55
    assert runner.state == full_replay(checkpointed_log)
    texts = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("CRC32C" in t for t in texts) == 3
    assert any("replaying the whole log" in t for t in texts)


def test_a_snapshot_that_restore_refuses_falls_back_with_a_warning(
        checkpointed_log: FasterLog, caplog: pytest.LogCaptureFixture) -> None:
    class Refusing(CountingProjection):
        def restore(self, data: bytes) -> dict[str, Any]:
            raise ValueError("unknown snapshot layout")

    with caplog.at_level(logging.WARNING, logger="consumers.projection"):
        runner = runner_for(checkpointed_log, Refusing())
        runner.catch_up()
    assert runner.recovered_from is None
    assert runner.state == full_replay(checkpointed_log)
    assert any("restore() raised ValueError: unknown snapshot layout" in r.getMessage()
               for r in caplog.records)


def test_load_checkpoint_raises_typed_errors(checkpointed_log: FasterLog) -> None:
    directory = str(Path(checkpointed_log.path) / "checkpoints")
    newest = runner_for(checkpointed_log).checkpoints()[0]
    assert len(load_checkpoint(newest, directory)) == newest.size_bytes
    wrong_size = newest._replace(size_bytes=newest.size_bytes + 1)
    wrong_crc = newest._replace(crc32c=newest.crc32c ^ 1)
    missing = newest._replace(file_name="chain-1.snap")
    for checkpoint, message in ((wrong_size, "truncated"), (wrong_crc, "corrupt"),
                                (missing, "missing")):
        with pytest.raises(CheckpointError, match=message) as caught:
            load_checkpoint(checkpoint, directory)
        assert isinstance(caught.value, ConsumerError)
        assert isinstance(caught.value, errors.FasterLogError)
        assert str(caught.value).startswith("load checkpoint 'chain' at position")


def test_a_checkpoint_whose_suffix_was_truncated_away_is_skipped(
        checkpointed_log: FasterLog, caplog: pytest.LogCaptureFixture) -> None:
    log = checkpointed_log
    newest = runner_for(log).checkpoints()[0]
    addresses = [address for address, _ in log.scan()]
    cut = next(a for a in addresses if a > newest.position)
    log.truncate_until(cut)
    log.commit()
    with caplog.at_level(logging.WARNING, logger="consumers.projection"):
        runner = runner_for(log)
        runner.catch_up()
    assert runner.recovered_from is None
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert runner.state == full_replay(log)


# --- files, followers, completed logs -------------------------------------------------------


def test_only_the_newest_snapshot_files_are_kept_and_strays_are_deleted(
        checkpointed_log: FasterLog) -> None:
    directory = Path(checkpointed_log.path) / "checkpoints"
    (directory / "chain-99999.snap.tmp").write_bytes(b"half written")
    (directory / "chain-77777.snap").write_bytes(b"no marker names this")
    (directory / "chained-64.snap").write_bytes(b"another projection's")
    append_entries(checkpointed_log, 10, seed=3)
    runner = restart(checkpointed_log)
    assert runner.recovered_from is not None
    kept = [c.file_name for c in runner.checkpoints()[:2]]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [*kept, runner.checkpoints()[2].file_name, "chain.hint", "chained-64.snap"])


def test_checkpoint_with_nothing_new_writes_nothing(checkpointed_log: FasterLog) -> None:
    runner = restart(checkpointed_log, checkpoint_every_entries=0)
    first = runner.checkpoint()
    assert isinstance(first, Checkpoint) and first.position == runner.position
    tail = checkpointed_log.tail_address
    assert runner.checkpoint() is None
    assert checkpointed_log.tail_address == tail


def test_a_follower_loads_the_writers_checkpoints_but_writes_none(
        checkpointed_log: FasterLog) -> None:
    with FasterLog.open(checkpointed_log.path, readonly=True) as follower:
        runner = runner_for(follower)
        runner.run(timeout=0)
        assert runner.recovered_from == runner_for(checkpointed_log).checkpoints()[0]
        assert runner.state == full_replay(checkpointed_log)
        assert not runner.writable
        with pytest.raises(CheckpointError, match="read-only"):
            runner.checkpoint()


def test_on_a_completed_log_the_runner_ends_and_writes_no_checkpoint(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        append_entries(log, 25)
        log.complete()
        runner = runner_for(log)
        runner.run()  # no timeout: the completed log ends it
        assert runner.state == full_replay(log)
        assert runner.checkpoints() == []
        with pytest.raises(CheckpointError, match="completed"):
            runner.checkpoint()


def test_bad_names_and_settings_are_refused(small_log: FasterLog) -> None:
    for name in ("", "a/b", "x" * 65, "..\0", 7):
        with pytest.raises(ValueError, match="name"):
            ProjectionRunner(small_log, CountingProjection(), name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpoint_every_entries"):
        ProjectionRunner(small_log, CountingProjection(), "a", checkpoint_every_entries=-1)
    with pytest.raises(ValueError, match="checkpoints_kept_count"):
        ProjectionRunner(small_log, CountingProjection(), "a", checkpoints_kept_count=0)


def test_the_default_snapshot_round_trips_a_msgpack_dict(small_log: FasterLog) -> None:
    projection: Projection[dict[str, Any]] = Projection()
    state: dict[Any, Any] = {"a": [1, 2.5, "x", b"\x00"], "n": {"1": None}, 3: True}
    assert projection.restore(projection.snapshot(state)) == state
    with pytest.raises(NotImplementedError):
        projection.apply({}, 64, b"")


# --- thread and asyncio runners -------------------------------------------------------------


def test_thread_runner_follows_commits_and_stops_within_milliseconds(small_log: FasterLog) -> None:
    runner = runner_for(small_log)
    runner.start()
    for round_index in range(5):
        append_entries(small_log, 7, seed=round_index)
    deadline = time.monotonic() + 5
    # Not `position < committed_until_address`: checkpoint markers lie past the last entry.
    while runner.state["count"] < 35 and time.monotonic() < deadline:
        time.sleep(0.005)
    stopped_at = time.monotonic()
    runner.stop()
    assert time.monotonic() - stopped_at < 0.5
    assert runner.state == full_replay(small_log)
    assert runner.checkpoints()[0].position == runner.position  # checkpoint_on_stop


def test_stop_before_the_thread_reaches_its_tail_still_stops_it(small_log: FasterLog) -> None:
    runner = runner_for(small_log)
    runner.start()
    runner.stop(timeout=5)
    assert not any(t.name == "projection-chain" for t in threading.enumerate())


def test_an_error_in_the_runner_thread_is_raised_by_stop(small_log: FasterLog) -> None:
    class Failing(CountingProjection):
        def apply(self, state: dict[str, Any], address: int, entry: bytes) -> dict[str, Any]:
            raise RuntimeError("bad entry")

    runner = runner_for(small_log, Failing())
    runner.start()
    append_entries(small_log, 1)
    time.sleep(0.1)
    with pytest.raises(RuntimeError, match="bad entry"):
        runner.stop(timeout=5)


def test_async_runner_follows_commits_checkpoints_and_stops(small_log: FasterLog) -> None:
    async def main() -> ProjectionRunner[Any]:
        runner = runner_for(small_log)
        task = asyncio.create_task(runner.run_async())
        for round_index in range(4):
            append_entries(small_log, 6, seed=round_index)
            await asyncio.sleep(0.01)
        while runner.state["count"] < 24:
            await asyncio.sleep(0.005)
        runner.stop()
        await asyncio.wait_for(task, 5)
        return runner

    runner = asyncio.run(main())
    assert runner.state == full_replay(small_log)
    assert len(runner.checkpoints()) >= 2


def test_async_runner_ends_on_timeout_and_can_be_cancelled(small_log: FasterLog) -> None:
    append_entries(small_log, 12)

    async def main() -> None:
        runner = runner_for(small_log)
        await asyncio.wait_for(runner.run_async(timeout=0.05), 5)
        assert runner.state == full_replay(small_log)
        task = asyncio.create_task(runner.run_async())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_projection_markers_keep_their_bytes_and_read_back(tmp_path: Path) -> None:
    # consumers/checkpoints.py is the mechanism; the marker's fields, in this order, are the
    # projection's format (module rule 2b).
    from consumers.checkpoints import MarkerFormat
    from consumers.projection import marker_format

    markers = marker_format("totals")
    payload = markers.encode(name="totals", position=4096, file="totals-4096.snap",
                             crc32c=0xDEADBEEF, size_bytes=12)
    assert payload == msgpack.packb({
        "kind": "checkpoint", "version": 1, "name": "totals", "position": 4096,
        "file": "totals-4096.snap", "crc32c": 0xDEADBEEF, "size_bytes": 12})
    assert markers.decode(640, payload) == Checkpoint("totals", 4096, "totals-4096.snap",
                                                      0xDEADBEEF, 12, 640)
    assert marker_format("other").decode(640, payload) is None  # another projection's
    escaping = markers.encode(name="totals", position=1, file="../x.snap", crc32c=0,
                              size_bytes=0)
    assert markers.decode(640, escaping) is None
    newer = MarkerFormat("checkpoint", 2, lambda address, fields: None).encode(name="totals")
    assert markers.decode(640, newer) is None
    assert markers.decode(640, b"\xc1checkpoint") is None  # undecodable
    with FasterLog.open(tmp_path / "log", **SMALL_SETTINGS) as log:
        log.append(payload)  # a data entry holding a marker's bytes is not a marker
        at = log.append_marker(payload)
        log.commit()
        assert [c.marker_address for c in markers.find(log)] == [at]
        assert markers.at(log, at) is not None
        assert markers.at(log, log.begin_address) is None
        assert markers.at(log, 1 << 40) is None
