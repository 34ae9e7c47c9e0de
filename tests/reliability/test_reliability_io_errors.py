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
The workload and these checks are tests/support/io_errors.py. CI sweeps a stride of indices;
--long sweeps every index.

The same sweep also runs in a child process under the AddressSanitizer+UndefinedBehaviorSanitizer
build of the core (tests/support/children/io_errors_sweep.py, the build of
tests/support/sanitizers.py), where ASan first caught defect 10 of issue 14 (a write into the
segment table after the preallocation thread had moved it): every variant over a coarser
stride in CI, every index with --long; any sanitizer report fails it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import io_errors, sanitizers
from tests.support.figures import record
from tests.support.mode import LONG, scaled
from tests.support.processes import ROOT

# CI sweeps about this many indexes per variant in process, and this many under the
# sanitizers (each run there is several times slower; the four variants stay near 40 s).
indexes_per_variant = 100
sanitized_indexes_per_variant = 150
sanitized_timeout_s = 240 if not LONG else 14400


@pytest.fixture(scope="module")
def checks_count() -> int:
    """Fault checks the workload passes (a dsync write counts twice)."""
    return io_errors.count_checks()


@pytest.mark.timeout(120 if not LONG else 7200)
@pytest.mark.parametrize("variant", list(io_errors.variants))
def test_io_error_at_every_operation_index_is_reported_and_loses_nothing_acknowledged(
    scratch: str, checks_count: int, variant: str
) -> None:
    assert checks_count >= 1500, (
        f"the workload should make ~2,000 device operations: {checks_count}")
    stride = scaled(max(1, checks_count // indexes_per_variant), 1)
    result = io_errors.sweep(scratch, variant,
                             io_errors.swept_indexes(variant, checks_count, stride))
    problem = io_errors.surfaced_problem(variant, result)
    assert not problem, problem
    record(f"io_errors[{variant}]",
           f"fault at {result.indexes} of {checks_count} operation indexes (stride {stride}): "
           f"{result.surfaced} failed commits reported, 0 acknowledged; after reopen corruption "
           f"{result.corrupted()}, acknowledged lost {result.lost()}, other failures "
           f"{len(result.failures)}",
           {"indexes": result.indexes, "operations": checks_count, "stride": stride,
            "surfaced": result.surfaced, "failures": len(result.failures)},
           f"python3 -m pytest -s 'tests/reliability/test_reliability_io_errors.py::"
           f"test_io_error_at_every_operation_index_is_reported_and_loses_nothing_"
           f"acknowledged[{variant}]'")
    assert not result.failures, "\n".join(result.failures[:10])


@pytest.mark.timeout(sanitized_timeout_s + 60)
def test_io_error_sweep_under_address_and_undefined_behaviour_sanitizers(
        scratch: str, checks_count: int, asan_build: Path) -> None:
    stride = scaled(max(1, checks_count // sanitized_indexes_per_variant), 1)
    completed = subprocess.run(
        sanitizers.child_command("tests.support.children.io_errors_sweep",
                                 [scratch, str(stride)]),
        capture_output=True, text=True, env=sanitizers.environment("address", asan_build),
        cwd=ROOT, timeout=sanitized_timeout_s,
        preexec_fn=sanitizers.raise_address_space_limit, check=False)
    reports = sanitizers.reports(completed.stderr)
    assert not reports, ("sanitizer reports:\n" + "\n".join(reports)
                         + completed.stderr[-4000:])
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the child printed no counts (exit {completed.returncode}):\n" + (
        completed.stderr[-4000:])
    counts = json.loads(lines[-1])
    sweeps = counts["variants"]
    failures = [f"{variant}: {failure}" for variant, sweep in sweeps.items()
                for failure in sweep["failures"]]
    problems = [problem for problem in counts["surfaced_problems"] if problem]
    assert completed.returncode in (0, 1), (
        f"the child exited with {completed.returncode}:\n{completed.stderr[-4000:]}")
    indexes = sum(sweep["indexes"] for sweep in sweeps.values())
    surfaced = sum(sweep["surfaced"] for sweep in sweeps.values())
    lost = sum(sweep["lost"] for sweep in sweeps.values())
    corrupted = sum(sweep["corrupted"] for sweep in sweeps.values())
    record("io_errors[asan+ubsan]",
           f"the {len(sweeps)} fault variants at {indexes} operation indexes in all "
           f"(stride {stride} over {counts['operations']}) under the ASan+UBSan build: "
           f"sanitizer reports 0, {surfaced} failed commits reported, 0 acknowledged; after "
           f"reopen corruption {corrupted}, acknowledged lost {lost}, other failures "
           f"{len(failures)}",
           {"indexes": indexes, "operations": counts["operations"], "stride": stride,
            "surfaced": surfaced, "sanitizer_reports": 0, "lost": lost,
            "failures": len(failures), "build": "ASan+UBSan build"},
           "python3 -m pytest -s tests/reliability/test_reliability_io_errors.py::"
           "test_io_error_sweep_under_address_and_undefined_behaviour_sanitizers")
    assert not problems and not failures, "\n".join(problems + failures[:10])
    assert completed.returncode == 0, completed.stderr[-4000:]
