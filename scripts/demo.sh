#!/usr/bin/env bash
# The main job for now: installs what is needed, then runs the demo on ./data/demo-log
# (append, commit, kill -9 a producer, recover, scan). Run it twice to see recovery of the
# first run's log.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m fasterlog demo "$@"
