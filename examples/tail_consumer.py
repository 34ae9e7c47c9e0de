"""A tailing consumer in another process: python examples/tail_consumer.py [DIR]

The parent is the log's writer (DIR, default ./data/tail-log). It starts a child process, this
same script with --follow, which opens the log with readonly=True and follows the writer's
commits with log.tail(): the child is woken by the writer's commit notification (a futex in
shared memory), it does not poll. The parent then appends numbered orders in small batches,
one commit each, and at last an "end" entry; the child checks that it saw every order of this
run once and in order, reports how long each took from the writer's commit to its eyes, and
exits. The parent checks the child's verdict.

Each run appends to the log; the child follows from the address where this run began, so the
script can be run again with the same DIR.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fasterlog import FasterLog

default_directory = Path("data") / "tail-log"
orders_count = 300
batch_entries_count = 10
# The child gives up when the writer goes quiet this long (a dead parent, say).
follower_idle_timeout_s = 10.0
follower_exit_timeout_s = 30.0


def follow(directory: str, from_address: int, run_id: str) -> int:
    """The child: follow the writer's log read-only until this run's end entry."""
    with FasterLog.open(directory, readonly=True) as log:
        print(f"following {directory} from address {from_address} (pid {os.getpid()})",
              flush=True)
        expected_sequence = 0
        latencies_ms: list[float] = []
        for _, entry in log.tail(from_address, timeout=follower_idle_timeout_s):
            seen_at = time.time()
            record = json.loads(entry)
            if record["run"] != run_id:
                continue
            if record.get("end"):
                break
            if record["sequence"] != expected_sequence:
                print(f"FAILED: expected order {expected_sequence}, got {record['sequence']}")
                return 1
            expected_sequence += 1
            latencies_ms.append((seen_at - record["committed_at"]) * 1000)
        else:
            print(f"FAILED: no end entry within {follower_idle_timeout_s} s of silence")
            return 1
    latencies_ms.sort()
    p50, p99 = (latencies_ms[int(q * (len(latencies_ms) - 1))] for q in (0.5, 0.99))
    print(f"saw all {expected_sequence} orders once and in order; commit to visible "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return 0


def write(directory: Path) -> int:
    """The parent: the writer."""
    run_id = f"{os.getpid()}-{time.time_ns()}"
    directory.parent.mkdir(parents=True, exist_ok=True)  # FasterLog.open makes only the last part
    with FasterLog.open(directory) as log:
        start = log.tail_address
        follower = subprocess.Popen(
            [sys.executable, __file__, "--follow", str(directory), str(start), run_id],
            stdout=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        print(f"writer: started follower pid {follower.pid}")
        print(f"follower | {follower.stdout.readline().rstrip()}")
        for first in range(0, orders_count, batch_entries_count):
            # The commit time goes into the entry before the commit: the follower's latency
            # figure is "from just before commit() to seen", an upper bound.
            committed_at = time.time()
            log.append_many([json.dumps({"run": run_id, "sequence": sequence,
                                         "item": f"widget-{sequence % 7}",
                                         "committed_at": committed_at}).encode()
                             for sequence in range(first, first + batch_entries_count)])
            log.commit()
            time.sleep(0.002)
        log.append(json.dumps({"run": run_id, "end": True}).encode())
        log.commit()
        print(f"writer: appended {orders_count} orders in {orders_count // batch_entries_count} "
              "commits, then the end entry")
        output, _ = follower.communicate(timeout=follower_exit_timeout_s)
    for line in output.splitlines():
        print(f"follower | {line}")
    if follower.returncode != 0:
        print(f"the follower failed (exit status {follower.returncode})")
        return 1
    print("the follower in another process saw every committed order")
    return 0


def main(arguments: list[str]) -> int:
    if arguments[:1] == ["--follow"]:
        return follow(arguments[1], int(arguments[2]), arguments[3])
    return write(Path(arguments[0]) if arguments else default_directory)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
