"""I/O errors at every operation index: a failed commit is reported, never acknowledged, and
nothing acknowledged is lost or damaged once the errors stop.

Goal: SQLite-style fault sweeps over the device layer. tests/reliability/test_corruption.py fails a
few chosen writes and syncs; this sweeps the fault over every device operation of a workload of
about 2,000 operations (page writes, RWF_DSYNC writes, fdatasyncs), for EIO and ENOSPC, once
(transient) and from then on (persistent), and short writes.

Method: the workload (appends of varied sizes, commits of 1..6 entries, 4 KiB pages, small
segments) runs once under fasterlog.testing.IOTrace to count its fault checks (a dsync write
is checked as a write and as a sync). Then, for each index i, a fresh log gets
inject_fault(op="any", after=i) and the workload runs until the first error:
  1. the error is a typed FasterLogError (LogIOError, DiskFullError or LogFencedError);
  2. later appends and commits raise LogFencedError; committed_until never moves again;
  3. after a reopen (no fault any more) verify() finds no corruption, every entry whose
     commit returned is there, and what is there is a prefix of what was appended.
CI sweeps a stride of indices; --long sweeps every index.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil

import pytest

from fasterlog import FasterLog, errors
from fasterlog import testing as fault_testing
from fasterlog.testing import IOTrace
from tests.support.figures import record
from tests.support.mode import LONG, scaled
from tests.support.scratch import tmpfs_directory

page_size_bytes = 4096
settings = {
    "page_size_bytes": page_size_bytes,
    "memory_size_bytes": 4 * page_size_bytes,
    "segment_size_bytes": 16 * page_size_bytes,
}
commits_count = 700

variants = {
    "eio-persistent": {"errno": errno.EIO, "persistent": True, "short_write": False},
    "eio-transient": {"errno": errno.EIO, "persistent": False, "short_write": False},
    "enospc-persistent": {"errno": errno.ENOSPC, "persistent": True, "short_write": False},
    "short-write": {"errno": errno.EIO, "persistent": False, "short_write": True},
}


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


def run(directory: str, fault: dict[str, object] | None, after: int
        ) -> tuple[list[bytes], int, errors.FasterLogError | None]:
    """Runs the workload; returns (appended, acknowledged count, first error)."""
    log = FasterLog.open(directory, **settings)
    appended: list[bytes] = []
    acknowledged = 0
    error: errors.FasterLogError | None = None
    try:
        if fault is not None:
            fault_testing.inject_fault(log, op="any", after=after, **fault)  # type: ignore[arg-type]
        for group in groups:
            try:
                for entry in group:
                    log.append(entry)
                    appended.append(entry)
                committed_until = log.commit()
            except errors.FasterLogError as failure:
                error = failure
                break
            acknowledged = len(appended)
            assert committed_until == log.committed_until_address
        if error is not None:
            committed_until = log.committed_until_address
            for attempt in (lambda: log.append(b"later"), log.commit):
                with pytest.raises(errors.LogFencedError):
                    attempt()
            assert log.committed_until_address == committed_until
    finally:
        with contextlib.suppress(errors.FasterLogError):
            log.close()
    return appended, acknowledged, error


def check_recovered(directory: str, appended: list[bytes], acknowledged: int) -> str:
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


@pytest.fixture(scope="module")
def checks_count() -> int:
    """Fault checks the workload passes (a dsync write counts twice)."""
    with tmpfs_directory() as directory, IOTrace() as trace:
        appended, acknowledged, error = run(os.path.join(directory, "log"), None, 0)
    assert error is None and acknowledged == len(appended)
    return sum(2 if op.dsync else 1 for op in trace.ops if op.device)


@pytest.mark.timeout(120 if not LONG else 7200)
@pytest.mark.parametrize("variant", list(variants))
def test_io_error_at_every_operation_index_is_reported_and_loses_nothing_acknowledged(
    scratch: str, checks_count: int, variant: str
) -> None:
    assert checks_count >= 1500, (
        f"the workload should make ~2,000 device operations: {checks_count}")
    stride = scaled(max(1, checks_count // 100), 1)
    indexes = list(range(variant == "short-write", checks_count, stride))
    failures: list[str] = []
    surfaced = 0
    for after in indexes:
        directory = os.path.join(scratch, f"log-{after}")
        appended, acknowledged, error = run(directory, variants[variant], after)
        if error is not None:
            surfaced += 1
            if not isinstance(error, (errors.LogIOError, errors.LogFencedError)):
                failures.append(f"index {after}: untyped error {error!r}")
        problem = check_recovered(directory, appended, acknowledged)
        if problem:
            failures.append(f"index {after}: {problem}")
        shutil.rmtree(directory)
    # A short write needs a write of two sectors or more, so some indexes pass unharmed; every
    # other fault must surface.
    if variant != "short-write":
        assert surfaced == len(indexes), f"{len(indexes) - surfaced} faults never surfaced"
    else:
        assert surfaced > len(indexes) // 4, f"only {surfaced} short writes surfaced"
    record(f"io_errors[{variant}]",
           f"fault at {len(indexes)} of {checks_count} operation indexes (stride {stride}): "
           f"{surfaced} failed commits reported, 0 acknowledged; after reopen corruption "
           f"{sum('corruption' in f for f in failures)}, acknowledged lost "
           f"{sum('lost' in f for f in failures)}, other failures {len(failures)}",
           {"indexes": len(indexes), "operations": checks_count, "stride": stride,
            "surfaced": surfaced, "failures": len(failures)},
           f"python3 -m pytest -s 'tests/reliability/test_reliability_io_errors.py::"
           f"test_io_error_at_every_operation_index_is_reported_and_loses_nothing_"
           f"acknowledged[{variant}]'")
    assert not failures, "\n".join(failures[:10])
