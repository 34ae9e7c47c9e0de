#!/usr/bin/env bash
# The test command: installs what is needed, then runs the whole suite once per I/O backend
# (io_uring, then the plain pread/pwrite one). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

status=0
for backend in io_uring plain; do
    echo "=== tests with the ${backend} backend"
    # The slow variants (hundreds of kills) run with: bash scripts/test.sh -m slow
    FASTERLOG_IO_BACKEND=$backend python3 -m pytest -q -m "not slow" "$@" || status=1
done
exit $status
