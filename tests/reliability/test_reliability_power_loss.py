"""Power loss without root: crash states built from a trace of what the C core really did.

Goal: an acknowledged commit survives a power cut, and recovery returns nothing but a
prefix-consistent run of what was appended. kill -9 (tests/reliability/test_crash.py) cannot show
this: the page cache survives a killed process, so unsynced writes always "land" there.

Method: a writer runs a workload (appends of varied sizes, commits, append_many, truncation,
segment rolls that rewrite the meta file) under fasterlog.testing.IOTrace, which records every
write (with its bytes), sync, create, rename, unlink and preallocation of the core, plus a mark
after each commit() returned. fasterlog.testing.CrashStates replays the trace to random crash
points and draws the directories a power cut could leave there (synced data kept; later writes
kept, dropped or torn at 512 B / 4 KiB with fresh sectors zeroed or garbled; unsynced directory
operations dropped). Each state is written to a directory on tmpfs and opened (recovery runs):
  1. recovery must not raise (a crash state has no damage to synced data);
  2. every entry acknowledged before the crash point and not truncated by then is there;
  3. what comes back is A[s:e] of the appended entries A, byte for byte, in order;
  4. now and then the recovered log must take a new commit and reopen with it.
Marks are (kind << 56 | value): ACKED entries committed, TRUNCATE_ASKED and TRUNCATE_ACKED
entry indexes of a truncate_until before its call and after its commit returned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from fasterlog import FasterLog
from fasterlog.testing import CrashState, CrashStates, IOTrace, simulate_crash
from tests.support.figures import record
from tests.support.mode import scaled

page_size_bytes = 4096
settings: dict[str, Any] = {
    "page_size_bytes": page_size_bytes,
    "memory_size_bytes": 4 * page_size_bytes,
    # Eight pages per segment: a workload of a few hundred KiB rolls segments many times, and
    # each roll rewrites the meta file (create, write, sync, rename, directory sync).
    "segment_size_bytes": 8 * page_size_bytes,
}
ACKED, TRUNCATE_ASKED, TRUNCATE_ACKED = 1, 2, 3
KIND_SHIFT = 56


def mark(kind: int, value: int) -> None:
    IOTrace.mark(kind << KIND_SHIFT | value)


def entry_bytes(seed: int, index: int, rng: random.Random, size_max: int) -> bytes:
    roll = rng.random()
    size = (0 if roll < 0.1 else rng.randint(1, 40) if roll < 0.6
            else rng.randint(41, 1500) if roll < 0.95
            else rng.randint(min(1501, size_max), size_max))
    tag = f"{seed}:{index}:".encode()
    return (tag * (size // len(tag) + 1))[:size] if size >= len(tag) else tag[:size]


def run_workload(directory: str, seed: int, entries_count: int, kind: str) -> list[bytes]:
    """Runs the traced writer; returns the entries in the order they were appended. The
    trace is the caller's. Entries are unique (seed:index:) unless shorter than their tag."""
    rng = random.Random(seed)
    # "auto-commit": a background thread also commits every two pages, racing the explicit
    # commits, and the log ends with complete() (a commit with the completed flag).
    open_settings = (dict(settings, auto_commit_bytes=2 * page_size_bytes)
                     if kind == "auto-commit" else settings)
    log = FasterLog.open(directory, **open_settings)
    appended: list[bytes] = []
    addresses: list[int] = []
    try:
        while len(appended) < entries_count:
            if kind == "batches" and rng.random() < 0.5:
                batch = [entry_bytes(seed, len(appended) + i, rng, 1000)
                         for i in range(rng.randint(1, 6))]
                addresses.extend(log.append_many(batch))
                appended.extend(batch)
            else:
                for _ in range(rng.randint(1, 8)):
                    entry = entry_bytes(seed, len(appended), rng, log.entry_size_max)
                    addresses.append(log.append(entry))
                    appended.append(entry)
            log.commit(cookie=str(len(appended)).encode() if rng.random() < 0.3 else None)
            mark(ACKED, len(appended))
            roll = rng.random()
            if roll < 0.04:
                # A new writer generation: after a clean close, or after a kill -9 (which
                # leaves the zero-ahead writes and the open page's state behind).
                if roll < 0.02:
                    simulate_crash(log)
                else:
                    log.close()
                log = FasterLog.open(directory, **open_settings)
            if kind == "batches" and rng.random() < 0.08 and len(appended) > 20:
                index = rng.randint(len(appended) // 2, len(appended) - 5)
                mark(TRUNCATE_ASKED, index)
                log.truncate_until(addresses[index], force=True)
                log.commit()
                mark(TRUNCATE_ACKED, index)
                mark(ACKED, len(appended))
        if kind == "auto-commit":
            log.complete()
            mark(ACKED, len(appended))
    finally:
        log.close()
    return appended


def check_state(state: CrashState, directory: str, appended: list[bytes],
                index_of: dict[bytes, int], reopen: bool) -> str:
    """Recovers the state in `directory`; returns "" or what is wrong."""
    acked = 0
    truncate_asked = 0
    truncate_acked = 0
    for value in state.marks:
        kind, number = value >> KIND_SHIFT, value & ((1 << KIND_SHIFT) - 1)
        if kind == ACKED:
            acked = number
        elif kind == TRUNCATE_ASKED:
            truncate_asked = max(truncate_asked, number)
        elif kind == TRUNCATE_ACKED:
            truncate_acked = max(truncate_acked, number)
    try:
        log = FasterLog.open(directory, **settings)
    except Exception as error:  # noqa: BLE001 - any failure to recover is the finding
        return f"recovery raised {type(error).__name__}: {error}"
    try:
        try:
            recovered = [entry for _, entry in log.scan()]
        except Exception as error:  # noqa: BLE001 - recovery accepted bytes it cannot read
            return f"scan after recovery raised {type(error).__name__}: {error}"
        if recovered:
            position = next((i for i, e in enumerate(recovered) if e in index_of), None)
            if position is None:  # only short entries: look for the run itself
                start = next((s for s in range(len(appended) - len(recovered) + 1)
                              if appended[s:s + len(recovered)] == recovered), -1)
                if start < 0:
                    return "the recovered entries are no run of appended entries"
            else:
                start = index_of[recovered[position]] - position
            if start < 0:
                return "recovered entries before the first appended one"
            if appended[start:start + len(recovered)] != recovered:
                return (f"recovered {len(recovered)} entries are not appended[{start}:...] "
                        "(garbage, gap, duplicate or reorder)")
        else:
            start = acked
        end = start + len(recovered)
        if start > max(truncate_asked, 0) and recovered:
            return (f"recovered from entry {start}, but truncation was asked only to "
                    f"{truncate_asked}")
        if start < truncate_acked:
            return (f"recovered from entry {start}, below the acknowledged truncation "
                    f"{truncate_acked}")
        if end < acked and acked > start:
            return (f"lost acknowledged entries: recovered up to {end}, acknowledged "
                    f"{acked}")
        if not recovered and acked > truncate_asked:
            return f"recovered nothing, acknowledged {acked} (truncation asked to {truncate_asked})"
        if reopen:
            log.append(b"after-recovery")
            log.commit()
            log.close()
            log = FasterLog.open(directory, **settings)
            again = [entry for _, entry in log.scan()]
            if again != recovered + [b"after-recovery"]:
                return "a commit after recovery did not survive a reopen"
        return ""
    finally:
        log.close()


def unique_index(appended: list[bytes]) -> dict[bytes, int]:
    """Index of each entry that occurs once (only those locate a recovered run; short entries
    repeat)."""
    seen: dict[bytes, int] = {}
    for index, entry in enumerate(appended):
        seen[entry] = -1 if entry in seen else index
    return {entry: index for entry, index in seen.items() if index >= 0}


def acknowledged_entries_kept(_: int, state: CrashState, directory: str, appended: list[bytes],
                              index_of: dict[bytes, int]) -> str:
    return check_state(state, directory, appended, index_of, reopen=False)


class StateTally:
    """The crash states checked so far, the failures, and the first five problems described."""

    def __init__(self) -> None:
        self.checked = self.failures = 0
        self.problems: list[str] = []

    def check(self, states: CrashStates, rng: random.Random, count: int, directory: str,
              seed: int, check: Callable[..., str], *context: Any) -> None:
        """Materialises `count` states of one trace in `directory`, one after the other, and
        tallies what `check(number, state, directory, *context)` finds ("" when sound)."""
        for number, state in enumerate(states.states(rng, count)):
            state.materialise(directory)
            problem = check(number, state, directory, *context)
            self.checked += 1
            if problem:
                self.failures += 1
                if len(self.problems) < 5:
                    self.problems.append(f"seed {seed} state {number} crash point "
                                         f"{state.crash_point}/{len(states.ops)} "
                                         f"({'; '.join(state.notes[:4])}): {problem}")

    def assert_sound(self) -> None:
        assert self.failures == 0, "\n".join(self.problems)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", ["stream", "batches", "auto-commit"])
def test_power_loss_crash_states_keep_every_acknowledged_entry(
    scratch: str, kind: str, tmp_path: Any
) -> None:
    traces_count = scaled(3, 20)
    states_per_trace = scaled(250, 2500)
    entries_count = scaled(300, 600)
    checked = failures = recovery_errors = 0
    trace_ops = 0
    recovery_seconds: list[float] = []
    tally = StateTally()
    for trace_index in range(traces_count):
        seed = 1000 * (kind == "batches") + trace_index
        # The traced writer runs on the real disk (O_DIRECT writes where it allows them); the
        # states are recovered on tmpfs.
        traced = os.path.join(str(tmp_path), f"traced-{trace_index}")
        with IOTrace() as trace:
            appended = run_workload(traced, seed, entries_count, kind)
        trace_ops += len(trace.ops)
        index_of = unique_index(appended)
        state_directory = os.path.join(scratch, "state")

        def check(number: int, state: CrashState, directory: str, appended: list[bytes],
                  index_of: dict[bytes, int]) -> str:
            nonlocal recovery_errors
            started = time.perf_counter()
            problem = check_state(state, directory, appended, index_of,
                                  reopen=number % 10 == 0 and kind != "auto-commit")
            recovery_seconds.append(time.perf_counter() - started)
            recovery_errors += problem.startswith("recovery raised")
            return problem

        tally.check(CrashStates(trace.ops, traced), random.Random(seed), states_per_trace,
                    state_directory, seed, check, appended, index_of)
    checked, failures = tally.checked, tally.failures
    recovery_seconds.sort()
    p99_ms = 1000 * recovery_seconds[int(0.99 * (len(recovery_seconds) - 1))]
    record(f"power_loss[{kind}]",
           f"{checked} crash states from {traces_count} traces ({trace_ops} traced operations): "
           f"failures {failures} (recovery errors {recovery_errors}); recovery p99 {p99_ms:.2f} ms",
           {"states": checked, "failures": failures, "recovery_errors": recovery_errors,
            "traces": traces_count, "traced_operations": trace_ops,
            "recovery_p99_ms": round(p99_ms, 3)},
           f"python3 -m pytest -s "
           f"'tests/reliability/test_reliability_power_loss.py::"
           f"test_power_loss_crash_states_keep_every_acknowledged_entry[{kind}]'")
    tally.assert_sound()


def run_restart_workload(directory: str, seed: int, rng: random.Random) -> list[bytes]:
    """Generation 1 writes a commit whose fsync fails (its bytes stay unsynced in the page
    cache, as after a kill -9 between write and sync); generation 2 recovers those entries
    (it reads them back), appends and commits. Returns the appended entries the final log
    should hold, in order."""
    from fasterlog import errors
    from fasterlog.testing import inject_fault

    appended: list[bytes] = []
    log = FasterLog.open(directory, **settings)
    for _ in range(rng.randint(1, 20)):
        entry = entry_bytes(seed, len(appended), rng, 1500)
        log.append(entry)
        appended.append(entry)
    log.commit()
    mark(ACKED, len(appended))
    inject_fault(log, op="fsync", persistent=False)
    for _ in range(rng.randint(1, 30)):
        entry = entry_bytes(seed, len(appended), rng, 1500)
        log.append(entry)
        appended.append(entry)
    try:
        log.commit()
        mark(ACKED, len(appended))
    except errors.FasterLogError:
        pass
    try:
        log.close()
    except errors.FasterLogError:
        pass
    log = FasterLog.open(directory, **settings)
    recovered = [entry for _, entry in log.scan()]
    assert recovered == appended[:len(recovered)]
    appended = recovered
    for _ in range(rng.randint(1, 4)):
        for _ in range(rng.randint(1, 5)):
            entry = entry_bytes(seed, len(appended) + 100000, rng, 1500)
            log.append(entry)
            appended.append(entry)
        log.commit()
        mark(ACKED, len(appended))
    log.close()
    return appended


@pytest.mark.timeout(600)
def test_power_loss_after_a_restart_keeps_what_the_restarted_writer_acknowledged(
    scratch: str,
) -> None:
    # Regression for what this test found: a writer that restarts after a crash between write
    # and sync reads the previous writer's unsynced commit back from the page cache and builds
    # on it; a power cut then must not lose what the new writer acknowledged.
    traces_count = scaled(20, 400)
    states_per_trace = scaled(50, 250)
    tally = StateTally()
    for trace_index in range(traces_count):
        seed = 5000 + trace_index
        traced = os.path.join(scratch, f"restart-{trace_index}")
        with IOTrace() as trace:
            appended = run_restart_workload(traced, seed, random.Random(seed))
        index_of = unique_index(appended)
        state_directory = os.path.join(scratch, "state")
        tally.check(CrashStates(trace.ops, traced), random.Random(seed), states_per_trace,
                    state_directory, seed, acknowledged_entries_kept, appended, index_of)
    checked, failures = tally.checked, tally.failures
    record("power_loss[restart-after-failed-sync]",
           f"{checked} crash states from {traces_count} traces of a writer restarted over "
           f"unsynced commits: failures {failures}",
           {"states": checked, "failures": failures, "traces": traces_count},
           "python3 -m pytest -s tests/reliability/test_reliability_power_loss.py::"
           "test_power_loss_after_a_restart_keeps_what_the_restarted_writer_acknowledged")
    tally.assert_sound()


CURSOR_ACKED = 4


@pytest.mark.timeout(600)
def test_power_loss_keeps_named_cursors_at_or_past_their_acknowledged_position(
    scratch: str,
) -> None:
    # The side files written in Python go into the same trace (trace_side_files): the cursor
    # file's creation (temporary, fdatasync, link, directory fsync) and its slot writes.
    from fasterlog import cursors
    from fasterlog.testing import trace_side_files

    traces_count = scaled(4, 40)
    states_per_trace = scaled(150, 1500)
    tally = StateTally()
    for trace_index in range(traces_count):
        seed = 7000 + trace_index
        rng = random.Random(seed)
        traced = os.path.join(scratch, f"cursor-{trace_index}")
        written_positions = {64}
        with IOTrace() as trace, trace_side_files():
            log = FasterLog.open(traced, **settings)
            cursor = None
            for commit in range(rng.randint(20, 60)):
                for _ in range(rng.randint(1, 6)):
                    log.append(entry_bytes(seed, commit, rng, 2000))
                committed_until = log.commit()
                mark(ACKED, 0)
                if commit == 3:
                    cursor = cursors.CursorFile.open(traced, "reader", create_position=64)
                    mark(CURSOR_ACKED, 64)
                elif cursor is not None and rng.random() < 0.6:
                    cursor.write(committed_until)
                    written_positions.add(committed_until)
                    mark(CURSOR_ACKED, committed_until)
            assert cursor is not None
            cursor.close()
            log.close()
        states = CrashStates(trace.ops, traced)
        assert any(op.op == "link" for op in states.ops), "the cursor's creation was not traced"
        state_directory = os.path.join(scratch, "state")

        def check(_: int, state: CrashState, directory: str, written_positions: set[int]) -> str:
            acked = [v & ((1 << KIND_SHIFT) - 1) for v in state.marks
                     if v >> KIND_SHIFT == CURSOR_ACKED]
            try:
                with FasterLog.open(directory, **settings):
                    pass
                try:
                    position = cursors.read(directory, "reader")
                except KeyError:
                    return f"cursor missing, acknowledged at {acked[-1]}" if acked else ""
                if position not in written_positions:
                    return f"cursor at {position}, never written"
                if acked and position < acked[-1]:
                    return f"cursor at {position}, acknowledged at {acked[-1]}"
                return ""
            except Exception as error:  # noqa: BLE001 - any failure is the finding
                return f"{type(error).__name__}: {error}"

        tally.check(states, rng, states_per_trace, state_directory, seed, check,
                    written_positions)
    checked, failures = tally.checked, tally.failures
    record("power_loss[named-cursor]",
           f"{checked} crash states from {traces_count} traces with a named cursor (created, "
           f"then rewritten after commits): cursor behind its acknowledged position or "
           f"unreadable: {failures}",
           {"states": checked, "failures": failures, "traces": traces_count},
           "python3 -m pytest -s tests/reliability/test_reliability_power_loss.py::"
           "test_power_loss_keeps_named_cursors_at_or_past_their_acknowledged_position")
    tally.assert_sound()


@pytest.mark.timeout(600)
def test_power_loss_keeps_the_kv_state_at_or_past_its_acknowledged_write(
    scratch: str,
) -> None:
    # KV checkpoints write their index snapshot through fasterlog.durable (temporary, fsync,
    # rename, directory fsync) before the checkpoint marker is committed; a power cut at any
    # point must recover the state of some write at or after the last acknowledged one, with
    # no fallback warning (a committed marker's snapshot is durable by then).
    from fasterlog.testing import trace_side_files
    from kvlayer import KVStore

    checkpoint_logger = logging.getLogger("kvlayer.checkpoint")
    traces_count = scaled(3, 30)
    states_per_trace = scaled(120, 1200)
    tally = StateTally()
    for trace_index in range(traces_count):
        seed = 9000 + trace_index
        rng = random.Random(seed)
        traced = os.path.join(scratch, f"kv-{trace_index}")
        models: list[dict[bytes, bytes]] = [{}]
        with IOTrace() as trace, trace_side_files():
            kv = KVStore.open(traced, checkpoint_every_bytes=0, **settings)
            model: dict[bytes, bytes] = {}
            for operation in range(rng.randint(40, 90)):
                key = b"key-%d" % rng.randrange(12)
                if key in model and rng.random() < 0.2:
                    kv.delete(key)
                    del model[key]
                else:
                    value = b"%d:" % operation * rng.randint(1, 60)
                    kv.put(key, value)
                    model[key] = value
                models.append(dict(model))
                mark(ACKED, len(models) - 1)
                if rng.random() < 0.12:
                    kv.checkpoint()
            kv.close()
        state_directory = os.path.join(scratch, "state")

        def check(_: int, state: CrashState, directory: str,
                  models: list[dict[Any, Any]]) -> str:
            acked = max([v & ((1 << KIND_SHIFT) - 1) for v in state.marks
                         if v >> KIND_SHIFT == ACKED] or [0])
            problem = ""
            caught: list[logging.LogRecord] = []
            handler = logging.Handler(logging.WARNING)
            handler.emit = caught.append  # type: ignore[method-assign]
            checkpoint_logger.addHandler(handler)
            try:
                with KVStore.open(directory, checkpoint_every_bytes=0,
                                  **settings) as recovered_kv:
                    recovered = dict(recovered_kv.items())
                if caught:
                    problem = f"fallback: {caught[0].getMessage()}"
                elif recovered not in models[acked:]:
                    problem = f"state matches no write at or after the acknowledged {acked}"
            except Exception as error:  # noqa: BLE001 - any failure is the finding
                problem = f"{type(error).__name__}: {error}"
            finally:
                checkpoint_logger.removeHandler(handler)
            return problem

        tally.check(CrashStates(trace.ops, traced), rng, states_per_trace, state_directory,
                    seed, check, models)
    checked, failures = tally.checked, tally.failures
    record("power_loss[kv-checkpoints]",
           f"{checked} crash states from {traces_count} traces of KV puts, deletes and "
           f"checkpoints: state behind its acknowledged write, unrecoverable or falling back "
           f"with a warning: {failures}",
           {"states": checked, "failures": failures, "traces": traces_count},
           "python3 -m pytest -s tests/reliability/test_reliability_power_loss.py::"
           "test_power_loss_keeps_the_kv_state_at_or_past_its_acknowledged_write")
    tally.assert_sound()


@pytest.mark.timeout(600)
def test_power_loss_never_takes_back_what_a_reader_was_handed(scratch: str) -> None:
    # A writer's commit whose fsync failed stays in the page cache; a read-only open (a
    # consumer starting) recovers it and hands its entries out. A power cut after that must
    # not take them back: the consumer may already have acted on them.
    from fasterlog import errors
    from fasterlog.testing import inject_fault

    traces_count = scaled(10, 200)
    states_per_trace = scaled(60, 300)
    tally = StateTally()
    for trace_index in range(traces_count):
        seed = 8000 + trace_index
        rng = random.Random(seed)
        traced = os.path.join(scratch, f"reader-{trace_index}")
        appended: list[bytes] = []
        with IOTrace() as trace:
            log = FasterLog.open(traced, **settings)
            for _ in range(rng.randint(1, 10)):
                appended.append(entry_bytes(seed, len(appended), rng, 1500))
                log.append(appended[-1])
            log.commit()
            mark(ACKED, len(appended))
            inject_fault(log, op="fsync", persistent=False)
            for _ in range(rng.randint(2, 30)):
                appended.append(entry_bytes(seed, len(appended), rng, 1500))
                log.append(appended[-1])
            with contextlib.suppress(errors.FasterLogError):
                log.commit()
            simulate_crash(log)
            with FasterLog.open(traced, readonly=True, **settings) as reader:
                handed = [entry for _, entry in reader.scan()]
            mark(ACKED, len(handed))  # what the reader handed out counts as acknowledged
        assert handed == appended[:len(handed)]
        index_of = unique_index(appended)
        state_directory = os.path.join(scratch, "state")
        tally.check(CrashStates(trace.ops, traced), rng, states_per_trace, state_directory,
                    seed, acknowledged_entries_kept, appended, index_of)
    checked, failures = tally.checked, tally.failures
    record("power_loss[reader-after-failed-sync]",
           f"{checked} crash states from {traces_count} traces where a reader recovered a "
           f"commit whose fsync had failed: entries handed out then lost {failures}",
           {"states": checked, "failures": failures, "traces": traces_count},
           "python3 -m pytest -s tests/reliability/test_reliability_power_loss.py::"
           "test_power_loss_never_takes_back_what_a_reader_was_handed")
    tally.assert_sound()
