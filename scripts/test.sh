#!/usr/bin/env bash
# The test command: installs what is needed, checks the code with ruff and mypy --strict
# (pinned in pyproject.toml, configured there), then runs the whole suite once per I/O backend
# (io_uring, then the plain pread/pwrite one). Extra arguments go to pytest. It exits non-zero
# when a lint, a type check or a test fails; every step runs either way, so one report has all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# A runaway allocation fails its test with MemoryError and a traceback instead of waking the
# machine's OOM killer (an earlier run lost its whole pytest process to it, with no trace of
# which test): 16 GiB of address space per process is far above what any test needs. A soft
# limit only: the sanitizer children of tests/reliability/test_reliability_races.py reserve
# terabytes of address space and raise their own soft limit back (tests/support/sanitizers.py).
ulimit -S -v 16777216 2>/dev/null || true

# Each pass gets its own temporary directory, removed when it ends: many tests open logs with
# the default 1 GiB preallocated segments, a pass leaves about 11 GB behind, and pytest's own
# basetemp keeps the last three sessions (a shared machine's disk filled up that way).
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

status=0
echo "=== ruff check"
python3 -m ruff check . || status=1
echo "=== mypy (strict)"
python3 -m mypy || status=1

for backend in io_uring plain; do
    echo "=== tests with the ${backend} backend"
    # Short mode, as CI runs it: tests marked slow are skipped. The long mode (the slow
    # variants, hundreds of kills, and the long counts) runs with: bash scripts/test.sh --long
    # --durations: the slowest tests are named in every CI log, to keep the run near its aim.
    FASTERLOG_IO_BACKEND=$backend python3 -m pytest -q --durations=15 \
        --basetemp="$scratch/$backend" "$@" || status=1
    rm -rf "${scratch:?}/$backend"
done
exit $status
