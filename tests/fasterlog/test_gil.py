"""The GIL: appends keep it (cheaper calls), every call that may wait releases it.

Method: a Python thread counts while another thread sits in a waiting call of the core; if
the waiting call held the GIL, the counter could not move. If cffi ever released the GIL itself
again (our wrapper-macro override lost), the core's own release would run without the GIL and
the interpreter would abort: these tests would fail loudly rather than slow down silently.
"""

from __future__ import annotations

import threading
import time

from fasterlog import FasterLog


def count_while(call: object) -> int:
    counter = 0
    done = threading.Event()

    def waiter() -> None:
        call()  # type: ignore[operator]
        done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    while not done.is_set():
        counter += 1
    thread.join()
    return counter


def test_wait_for_commit_releases_the_gil(small_log: FasterLog) -> None:
    a = small_log.append(b"x")
    counted = count_while(lambda: small_log.wait_for_commit(a, timeout=0.3))
    assert counted > 10_000


def test_commit_releases_the_gil_for_other_threads(small_log: FasterLog) -> None:
    # A commit that held the GIL would leave the counter at 0 in every round. One that releases
    # it usually lets the counter run, but not always: when the sync is short, the committing
    # thread may take the GIL back before the counting thread wakes (CPython's GIL is not fair;
    # seen once in a ThreadSanitizer build). So rounds are repeated, within a bound.
    start = time.perf_counter()
    rounds_max, counted = 20, 0
    for _ in range(rounds_max):
        for _ in range(200):
            small_log.append(bytes(1000))
        counted = count_while(lambda: [small_log.commit() for _ in range(20)
                                       if small_log.append(b"more") >= 0])
        if counted > 0 or time.perf_counter() - start > 20:
            break
    assert counted > 0
    assert time.perf_counter() - start < 30


def test_appends_from_many_threads_keep_every_entry(small_log: FasterLog) -> None:
    threads_count, per_thread = 4, 5000
    results: list[list[int]] = [[] for _ in range(threads_count)]

    def producer(k: int) -> None:
        results[k] = [small_log.append(b"%d:%d" % (k, i)) for i in range(per_thread)]

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    small_log.commit()
    entries = dict(small_log.scan())
    for k, addresses in enumerate(results):
        assert [entries[a] for a in addresses] == [b"%d:%d" % (k, i) for i in range(per_thread)]
