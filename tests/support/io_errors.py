"""The I/O-error sweep: a workload, a fault injected at one of its operation indexes, and the
checks of what the log reported and what a reopen recovers.

Shared by tests/reliability/test_reliability_io_errors.py, which sweeps in its own process
with the release build, and tests/support/children/io_errors_sweep.py, which runs the same
sweep in a child under the AddressSanitizer+UndefinedBehaviorSanitizer build (where ASan
first caught defect 10 of issue 14). No pytest here: the child runs without it, so every
check returns what is wrong instead of asserting.

One run (`run_with_fault`): a fresh log gets inject_fault(op="any", after=index) and the
workload runs until the first error:
  1. the error is a typed FasterLogError (LogIOError, DiskFullError or LogFencedError);
  2. later appends and commits raise LogFencedError; committed_until never moves again;
  3. after a reopen (no fault any more) verify() finds no corruption, every entry whose
     commit returned is there, and what is there is a prefix of what was appended.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fasterlog import FasterLog, errors
from fasterlog import testing as fault_testing
from fasterlog.testing import IOTrace

from .scratch import tmpfs_directory

page_size_bytes = 4096
settings: dict[str, Any] = {
    "page_size_bytes": page_size_bytes,
    "memory_size_bytes": 4 * page_size_bytes,
    "segment_size_bytes": 16 * page_size_bytes,
}
commits_count = 700

variants: dict[str, dict[str, object]] = {
    "eio-persistent": {"errno": errno.EIO, "persistent": True, "short_write": False},
    "eio-transient": {"errno": errno.EIO, "persistent": False, "short_write": False},
    "enospc-persistent": {"errno": errno.ENOSPC, "persistent": True, "short_write": False},
    "short-write": {"errno": errno.EIO, "persistent": False, "short_write": True},
    # What io_uring answers for an operation it cancelled unrun (its submitting thread ended):
    # sent again, so once it surfaces nothing (every commit returns), and from then on it
    # fences once the resubmissions run out.
    "ecanceled-transient": {"errno": errno.ECANCELED, "persistent": False,
                            "short_write": False},
    "ecanceled-persistent": {"errno": errno.ECANCELED, "persistent": True,
                             "short_write": False},
}
# The variants whose fault is sent again instead of surfacing.
resent_variants = ("ecanceled-transient",)


def workload_entries() -> list[list[bytes]]:
    rng = random.Random(6)
    groups = []
    for commit in range(commits_count):
        group = []
        for position in range(rng.randint(1, 6)):
            size = rng.choice((0, 8, 100, 700, 2000, 4000))
            tag = f"{commit}.{position}:".encode()
            group.append((tag * (size // len(tag) + 1))[:size] if size else b"")
        groups.append(group)
    return groups


groups = workload_entries()


@dataclass
class Outcome:
    """One run: what was appended, how many of those a returned commit acknowledged, the
    first error, and what was wrong about the log's behaviour after it."""

    appended: list[bytes] = field(default_factory=list)
    acknowledged: int = 0
    error: errors.FasterLogError | None = None
    problems: list[str] = field(default_factory=list)


def _fenced_afterwards(log: FasterLog) -> list[str]:
    """Rule 2: what a log that failed a commit did wrong when asked to append and commit."""
    problems = []
    committed_until = log.committed_until_address
    attempts: tuple[tuple[str, Callable[[], object]], ...] = (
        ("append", lambda: log.append(b"later")), ("commit", log.commit))
    for name, attempt in attempts:
        try:
            attempt()
        except errors.LogFencedError:
            continue
        except errors.FasterLogError as other:
            problems.append(f"{name} after the failure raised {other!r}, not LogFencedError")
        else:
            problems.append(f"{name} after the failure succeeded")
    if log.committed_until_address != committed_until:
        problems.append(f"committed_until moved from {committed_until} to "
                        f"{log.committed_until_address} after the failure")
    return problems


def run_with_fault(directory: str, fault: dict[str, object] | None, after: int) -> Outcome:
    """Runs the workload with `fault` injected after `after` fault checks (None: no fault)."""
    log = FasterLog.open(directory, **settings)
    outcome = Outcome()
    try:
        if fault is not None:
            fault_testing.inject_fault(log, op="any", after=after, **fault)  # type: ignore[arg-type]
        for group in groups:
            try:
                for entry in group:
                    log.append(entry)
                    outcome.appended.append(entry)
                committed_until = log.commit()
            except errors.FasterLogError as failure:
                outcome.error = failure
                break
            outcome.acknowledged = len(outcome.appended)
            if committed_until != log.committed_until_address:
                outcome.problems.append(f"commit returned {committed_until}, committed_until "
                                        f"says {log.committed_until_address}")
        if outcome.error is not None:
            outcome.problems += _fenced_afterwards(log)
    finally:
        with contextlib.suppress(errors.FasterLogError):
            log.close()
    return outcome


def check_recovered(directory: str, appended: list[bytes], acknowledged: int) -> str:
    """Rule 3, after a reopen: "" or what is wrong."""
    with FasterLog.open(directory, **settings) as log:
        try:
            log.verify()
        except errors.CorruptionError as failure:
            return f"verify found corruption: {failure}"
        recovered = [entry for _, entry in log.scan()]
    if len(recovered) < acknowledged:
        return f"lost acknowledged entries: {len(recovered)} recovered, {acknowledged} acked"
    if recovered != appended[:len(recovered)]:
        return "recovered entries are not a prefix of the appended ones"
    return ""


def count_checks() -> int:
    """Fault checks the workload passes without a fault (a dsync write counts twice: it is
    checked as a write and as a sync)."""
    with tmpfs_directory() as directory, IOTrace() as trace:
        outcome = run_with_fault(os.path.join(directory, "log"), None, 0)
    assert outcome.error is None and outcome.acknowledged == len(outcome.appended), outcome
    return sum(2 if op.dsync else 1 for op in trace.ops if op.device)


@dataclass
class Sweep:
    """A variant swept over some operation indexes: faults that surfaced, what went wrong."""

    indexes: int = 0
    surfaced: int = 0
    failures: list[str] = field(default_factory=list)

    def lost(self) -> int:
        return sum("lost" in failure for failure in self.failures)

    def corrupted(self) -> int:
        return sum("corruption" in failure for failure in self.failures)


def sweep(scratch: str, variant: str, indexes: list[int]) -> Sweep:
    """One fresh log in `scratch` per index, removed after its checks."""
    result = Sweep(indexes=len(indexes))
    for after in indexes:
        directory = os.path.join(scratch, f"log-{after}")
        outcome = run_with_fault(directory, variants[variant], after)
        if outcome.error is not None:
            result.surfaced += 1
            if not isinstance(outcome.error, (errors.LogIOError, errors.LogFencedError)):
                result.failures.append(f"index {after}: untyped error {outcome.error!r}")
        result.failures += [f"index {after}: {problem}" for problem in outcome.problems]
        if variant in resent_variants and outcome.acknowledged != len(outcome.appended):
            result.failures.append(f"index {after}: {outcome.acknowledged} of "
                                   f"{len(outcome.appended)} acknowledged, not all: "
                                   f"{outcome.error!r}")
        problem = check_recovered(directory, outcome.appended, outcome.acknowledged)
        if problem:
            result.failures.append(f"index {after}: {problem}")
        shutil.rmtree(directory)
    return result


def swept_indexes(variant: str, checks_count: int, stride: int) -> list[int]:
    """Every `stride`-th index (a short write needs something written first: from 1)."""
    return list(range(variant == "short-write", checks_count, stride))


def surfaced_problem(variant: str, result: Sweep) -> str:
    """A short write needs a write of two sectors or more, so some indexes pass unharmed; a
    cancellation is sent again and never surfaces; every other fault must surface. "" or
    what is wrong."""
    if variant in resent_variants:
        if result.surfaced:
            return f"{result.surfaced} cancelled operations surfaced instead of being sent again"
    elif variant != "short-write":
        if result.surfaced != result.indexes:
            return f"{result.indexes - result.surfaced} faults never surfaced"
    elif result.surfaced <= result.indexes // 4:
        return f"only {result.surfaced} short writes surfaced"
    return ""
