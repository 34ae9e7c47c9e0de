"""Child process of the I/O-error sweep under the sanitizer builds
(tests/reliability/test_reliability_io_errors.py): every fault variant of
tests/support/io_errors.py at every STRIDE-th operation index, each on a fresh log in SCRATCH.

Run in a child so that an AddressSanitizer or UndefinedBehaviorSanitizer report (which stops
the process, tests/support/sanitizers.py rule 2) is a failed child with its report on stderr,
not a lost test run.

Usage: python -m tests.support.children.io_errors_sweep SCRATCH STRIDE
Prints one JSON line {"operations", "variants": {name: {"indexes", "surfaced", "lost",
"corrupted", "failures": [...]}}, "surfaced_problems": [...]} and exits 0 when nothing was
wrong, 1 otherwise.
"""

from __future__ import annotations

import json
import sys

from tests.support import io_errors

failures_kept_max = 20


def main() -> int:
    scratch, stride = sys.argv[1], int(sys.argv[2])
    checks_count = io_errors.count_checks()
    sweeps = {}
    surfaced_problems = []
    for variant in io_errors.variants:
        result = io_errors.sweep(scratch, variant,
                                 io_errors.swept_indexes(variant, checks_count, stride))
        surfaced_problems.append(io_errors.surfaced_problem(variant, result))
        sweeps[variant] = {"indexes": result.indexes, "surfaced": result.surfaced,
                           "lost": result.lost(), "corrupted": result.corrupted(),
                           "failures": result.failures[:failures_kept_max]}
    print(json.dumps({"operations": checks_count, "variants": sweeps,
                      "surfaced_problems": surfaced_problems}), flush=True)
    wrong = any(surfaced_problems) or any(sweep["failures"] for sweep in sweeps.values())
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
