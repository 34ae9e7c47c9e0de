"""The consumer of the Jepsen-style test (tests/reliability/test_jepsen.py), run as a child process.

    python -m tests.support.children.jepsen_consumer DIR HISTORY NAME SEED [--drain]

It follows the log in DIR as a read-only follower (the producer is another process) with the
named durable cursor NAME (which the test creates beforehand) and processes entries: processing
is appending a line to HISTORY. It acknowledges every few entries. Without --drain it runs until
the test kills it with SIGKILL; with --drain it stops once it has processed everything committed
(the producer is dead by then) and acknowledges the last entry.

History (HISTORY, opened O_APPEND; each line one os.write, so it is flushed per record and a
kill never tears one):
    start POSITION     the cursor's durable position when this process opened it
    proc NUMBER ADDRESS   the entry NUMBER at ADDRESS was processed
    ack POSITION       ack() returned: POSITION is durable
It prints "ready" on stdout once the consumer is open.
"""

from __future__ import annotations

import os
import random
import sys

from consumers import Consumer
from fasterlog import FasterLog

ack_every_max_count = 7
poll_count_max = 50
poll_timeout_s = 0.5
drain_idle_polls_count = 3


def main(directory: str, history: str, name: str, seed: int, drain: bool) -> None:
    rhythm = random.Random(seed)
    history_fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    log = FasterLog.open(directory, readonly=True)
    consumer = Consumer(log, name, create=False)
    os.write(history_fd, b"start %d\n" % consumer.position)
    os.write(1, b"ready\n")
    ack_every = rhythm.randint(1, ack_every_max_count)
    since_ack = idle_polls = 0
    while not drain or idle_polls < drain_idle_polls_count:
        timeout = 0.05 if drain else poll_timeout_s
        batch = consumer.poll(max_count=rhythm.randint(1, poll_count_max), timeout=timeout)
        idle_polls = 0 if batch else idle_polls + 1
        for address, entry in batch:
            number = int(entry.split(b" ", 1)[0])
            os.write(history_fd, b"proc %d %d\n" % (number, address))
            since_ack += 1
            if since_ack >= ack_every:
                os.write(history_fd, b"ack %d\n" % consumer.ack(address))
                since_ack = 0
                ack_every = rhythm.randint(1, ack_every_max_count)
    os.write(history_fd, b"ack %d\n" % consumer.ack())
    consumer.close()
    log.close()
    os.write(1, b"drained\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), "--drain" in sys.argv[5:])
