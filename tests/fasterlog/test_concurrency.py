"""Concurrency: producers, committers and readers in threads over a tiny memory ring.

Method: a ring of four 4 KiB pages forces constant page sealing, slot reuse and waits for
flushes while several threads append entries of random sizes, one thread commits in a loop and
another reads what is committed. Every entry is tagged with its thread and sequence number, so
the final scan checks that nothing was lost, duplicated, reordered within a thread or damaged.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

from fasterlog import FasterLog


def entry(thread: int, sequence: int, size: int) -> bytes:
    head = b"%d:%d:" % (thread, sequence)
    return (head + bytes([sequence % 251]) * size)[: max(size, len(head))]


def test_threads_append_commit_and_read_over_a_tiny_ring(log_dir: Path) -> None:
    log = FasterLog.open(log_dir, page_size_bytes=4096, memory_size_bytes=16384,
                         segment_size_bytes=64 << 10)
    producers_count, per_producer = 4, 1500
    written: list[list[tuple[int, bytes]]] = [[] for _ in range(producers_count)]
    stop = threading.Event()
    failures: list[BaseException] = []

    def producer(k: int) -> None:
        rng = random.Random(k)
        try:
            for i in range(per_producer):
                data = entry(k, i, rng.choice([0, 1, 10, 100, 1000, 3000]))
                if rng.random() < 0.1:
                    batch = [data, entry(k, i, 7)]
                    written[k].extend(zip(log.append_many(batch), batch, strict=True))
                else:
                    written[k].append((log.append(data), data))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    def committer() -> None:
        try:
            while not stop.is_set():
                log.commit()
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    def reader() -> None:
        try:
            while not stop.is_set():
                for address, data in log.scan():
                    assert data, address
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            failures.append(error)

    helpers = [threading.Thread(target=committer), threading.Thread(target=reader)]
    producers = [threading.Thread(target=producer, args=(k,)) for k in range(producers_count)]
    for thread in helpers + producers:
        thread.start()
    for thread in producers:
        thread.join()
    stop.set()
    for thread in helpers:
        thread.join()
    assert not failures, failures
    log.close()

    with FasterLog.open(log_dir) as reopened:
        stored = dict(reopened.scan())
        assert reopened.verify() == reopened.committed_until_address
    expected = [pair for pairs in written for pair in pairs]
    assert len(stored) == len(expected)
    for address, data in expected:
        assert stored[address] == data
