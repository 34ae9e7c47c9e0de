"""Child process for tests/consumers/test_projection.py: a writer with a checkpointing
projection, killed with SIGKILL by the parent at random moments.

Goal: give the kill -9 test a process that can die anywhere: inside apply, while writing or
fsyncing a snapshot file, between the file and its marker, between the marker and its commit,
while writing the hint or deleting old files, or while appending and committing data.

Method and rules:
1. On start the child opens (and so recovers) the log, makes a ProjectionRunner, lets it load
   its newest checkpoint and catch up, and compares that state with a full replay of the log
   by a fresh projection. It prints one JSON line saying whether they are equal, which
   checkpoint it started from and how many entries it replayed; the parent checks the line.
2. Then the runner follows the log in its own thread (start()), checkpointing every few
   entries, while the main thread appends batches and commits, until the parent kills it.
3. The projection is a hash chain over (address, entry) plus counts, so a lost, repeated or
   reordered entry changes the state.

Usage: python -m tests.support.children.projection_worker LOG_DIRECTORY SEED
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from typing import Any

from consumers.projection import Projection, ProjectionRunner
from fasterlog import FasterLog

from ..settings import SMALL_SETTINGS

projection_name = "chain"
checkpoint_every_entries = 7
batch_entries_count_max = 12


class ChainProjection(Projection[dict[str, Any]]):
    """state: entry count, per-key totals, and a hash chain over every (address, entry)."""

    def initial_state(self) -> dict[str, Any]:
        return {"count": 0, "totals": {}, "chain": b""}

    def apply(self, state: dict[str, Any], address: int, entry: bytes) -> dict[str, Any]:
        key, _, amount = entry.partition(b"=")
        totals = state["totals"]
        totals[key.decode()] = totals.get(key.decode(), 0) + int(amount)
        state["count"] += 1
        state["chain"] = hashlib.blake2b(state["chain"] + address.to_bytes(8, "little") + entry,
                                         digest_size=16).digest()
        return state


def full_replay(log: FasterLog) -> dict[str, Any]:
    projection = ChainProjection()
    state = projection.initial_state()
    for address, entry in log.scan():
        state = projection.apply(state, address, entry)
    return state


def make_runner(log: FasterLog) -> ProjectionRunner[dict[str, Any]]:
    return ProjectionRunner(log, ChainProjection(), projection_name,
                            checkpoint_every_entries=checkpoint_every_entries)


def main(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    log = FasterLog.open(directory, **SMALL_SETTINGS)
    runner = make_runner(log)
    runner.recover()
    start_position = runner.position
    replayed = runner.catch_up()
    expected = full_replay(log)
    report = {"equal": runner.state == expected, "count": expected["count"],
              "replayed": replayed, "start_position": start_position,
              "recovered_from": None if runner.recovered_from is None
              else runner.recovered_from.position}
    print(json.dumps(report), flush=True)
    runner.start()
    sequence = expected["count"]
    while True:
        batch = [b"k%d=%d" % (rng.randrange(5), rng.randrange(1000))
                 for _ in range(rng.randint(1, batch_entries_count_max))]
        if rng.random() < 0.5:
            log.append_many(batch)
        else:
            for entry in batch:
                log.append(entry)
        sequence += len(batch)
        log.commit()
        # A short pause now and then lets the runner keep up, so restarts replay a suffix of
        # a few checkpoints' worth rather than everything the appender outran it by.
        if rng.random() < 0.3:
            time.sleep(rng.uniform(0, 0.002))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
