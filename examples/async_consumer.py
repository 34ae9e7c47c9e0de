"""An asyncio consumer: python examples/async_consumer.py [DIR]

One event loop runs a producer and its consumers together on the log in DIR (default
./data/async-log):
- a producer task appends sensor readings in small batches and commits each (the commit's
  fdatasync runs in the default executor, so the loop never blocks on the disk);
- a consumer `async for`-s over log.tail_async() and keeps a running average per sensor;
- 100 more tailers follow the same log at once: they all wait on the log's one commit eventfd
  through the event loop, so they add no thread (the script prints the thread count);
- a ProjectionRunner counts readings per sensor with run_async() and checkpoints them;
- a tail whose task is cancelled mid-wait shows that cancellation leaves nothing behind;
- wait_for_commit_async with a timeout, before and after a commit.
The producer ends its run with an "end" reading; every tailer stops there.

Each run appends to the log, so it can be run again with the same DIR; the projection then
resumes from its checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

try:
    import consumers  # noqa: F401 (only checks that the package can be imported)
except ImportError:  # a source checkout where consumers/ is not installed: use the one here
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.projection import Projection, ProjectionRunner  # after the path set-up above
from fasterlog import FasterLog

default_directory = Path("data") / "async-log"
readings_count = 400
batch_entries_count = 20
extra_tailers_count = 100
sensors = ("north", "south", "east")
run_timeout_s = 30.0


class ReadingCounts(Projection[dict[str, Any]]):
    """{sensor: readings seen}, over every run in the log."""

    def apply(self, state: dict[str, Any], address: int, entry: bytes) -> dict[str, Any]:
        reading = json.loads(entry)
        if "sensor" in reading:
            state[reading["sensor"]] = state.get(reading["sensor"], 0) + 1
        return state


async def produce(log: FasterLog, run_start: int) -> int:
    """Appends this run's readings and its end entry; returns the end entry's address."""
    loop = asyncio.get_running_loop()
    for first in range(0, readings_count, batch_entries_count):
        log.append_many([json.dumps({"run_start": run_start, "sensor": sensors[i % 3],
                                     "value": (i * 37) % 100}).encode()
                         for i in range(first, first + batch_entries_count)])
        await loop.run_in_executor(None, log.commit)
        await asyncio.sleep(0.001)
    end_address = log.append(json.dumps({"run_start": run_start, "end": True}).encode())
    await loop.run_in_executor(None, log.commit)
    return end_address


async def average_per_sensor(log: FasterLog, run_start: int) -> dict[str, float]:
    totals: dict[str, list[int]] = {}
    async for _, entry in log.tail_async(run_start, timeout=run_timeout_s):
        reading = json.loads(entry)
        if reading.get("end"):
            break
        totals.setdefault(reading["sensor"], []).append(reading["value"])
    return {sensor: round(sum(values) / len(values), 1)
            for sensor, values in sorted(totals.items())}


async def count_entries(log: FasterLog, run_start: int) -> int:
    count = 0
    async for _, entry in log.tail_async(run_start, timeout=run_timeout_s):
        if b'"end"' in entry:
            return count
        count += 1
    raise RuntimeError("a tailer timed out before the end of the run")


async def show_cancellation(log: FasterLog) -> None:
    async def wait_forever() -> None:
        async for _ in log.tail_async(log.tail_address):
            pass

    task = asyncio.create_task(wait_forever())
    await asyncio.sleep(0.02)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        print("a tail cancelled while it waited ended at once")


async def main_async(log: FasterLog) -> int:
    run_start = log.tail_address
    threads_before = threading.active_count()
    await show_cancellation(log)

    probe = log.append(b'{"probe": true}')
    committed = await log.wait_for_commit_async(probe, timeout=0.05)
    print(f"wait_for_commit_async before any commit: {committed} (timed out after 50 ms)")
    await asyncio.get_running_loop().run_in_executor(None, log.commit)
    print(f"after the commit: {await log.wait_for_commit_async(probe, timeout=5)}")
    run_start = log.tail_address

    runner = ProjectionRunner(log, ReadingCounts(), "reading-counts",
                              checkpoint_every_entries=100)
    projection_task = asyncio.create_task(runner.run_async())
    average_task = asyncio.create_task(average_per_sensor(log, run_start))
    tailer_tasks = [asyncio.create_task(count_entries(log, run_start))
                    for _ in range(extra_tailers_count)]
    await asyncio.sleep(0.05)
    threads_while_waiting = threading.active_count()
    end_address = await produce(log, run_start)

    averages = await average_task
    counts = await asyncio.gather(*tailer_tasks)
    while runner.position <= end_address:  # position: just past the last entry applied
        await asyncio.sleep(0.005)
    runner.stop()
    await projection_task

    print(f"average per sensor: {averages}")
    print(f"{extra_tailers_count} more tailers each saw {counts[0]} readings: "
          f"{'all equal' if len(set(counts)) == 1 else 'DIFFERENT'}")
    print(f"threads: {threads_before} before the tailers, {threads_while_waiting} while "
          f"{extra_tailers_count + 2} tails waited (the executor's workers count too)")
    print(f"projection (every run): {dict(sorted(runner.state.items()))}, checkpointed at "
          f"{runner.checkpoints()[0].position}"
          + ("" if runner.recovered_from is None
             else f", started from the checkpoint at {runner.recovered_from.position}"))
    ok = len(set(counts)) == 1 and counts[0] == readings_count and sum(
        runner.state.values()) % readings_count == 0
    print("every async consumer saw every reading" if ok else "FAILED")
    return 0 if ok else 1


def main(arguments: list[str]) -> int:
    directory = Path(arguments[0]) if arguments else default_directory
    directory.parent.mkdir(parents=True, exist_ok=True)  # FasterLog.open makes only the last part
    with FasterLog.open(directory) as log:
        return asyncio.run(main_async(log))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
