#!/usr/bin/env bash
# The main job: installs what is needed, then runs the RESP (Redis protocol) server on
# 127.0.0.1:6380 with its data in ./data/server. redis-cli -p 6380, redis-py and
# redis-benchmark talk to it unchanged. Extra arguments go to `fasterlog serve`
# (--dir, --port, --bind, --requirepass, --fsync). Stop it with Ctrl-C or SIGTERM: it commits
# and closes, and the next start recovers every acknowledged write.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m fasterlog serve "$@"
