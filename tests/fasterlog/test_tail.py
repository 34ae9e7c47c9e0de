"""Tailing and following: sync and asyncio tails, stop, timeout, complete, and followers in
other processes.

Method: real logs; producers run in threads or child processes; a tail must yield every
committed entry exactly once and in order, end within milliseconds when stopped, use no CPU
while idle, and never see uncommitted entries.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fasterlog import FasterLog, errors
from tests.support.settings import SMALL_SETTINGS


def test_tail_yields_committed_entries_then_waits_for_new_ones(small_log: FasterLog) -> None:
    first = [small_log.append(b"old%d" % i) for i in range(3)]
    small_log.commit()
    tail = small_log.tail(timeout=2.0)
    got = [next(tail) for _ in range(3)]
    assert [a for a, _ in got] == first

    def later() -> None:
        time.sleep(0.05)
        small_log.append(b"new")
        small_log.append(b"uncommitted-until-commit")
        small_log.commit()

    threading.Thread(target=later).start()
    assert next(tail)[1] == b"new"
    assert next(tail)[1] == b"uncommitted-until-commit"
    tail.stop()
    assert list(tail) == []


def test_tail_never_yields_uncommitted_entries(small_log: FasterLog) -> None:
    small_log.append(b"pending")
    assert list(small_log.tail(timeout=0.05)) == []


def test_tail_timeout_ends_quietly(small_log: FasterLog) -> None:
    start = time.monotonic()
    assert list(small_log.tail(timeout=0.1)) == []
    assert 0.09 <= time.monotonic() - start < 2.0


def test_stop_from_another_thread_ends_a_waiting_tail_within_milliseconds(
        small_log: FasterLog) -> None:
    tail = small_log.tail()
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.extend(tail))
    thread.start()
    time.sleep(0.1)
    stopped_at = time.monotonic()
    tail.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - stopped_at < 0.5
    assert result == []


def test_stopping_one_tail_leaves_the_others_running(small_log: FasterLog) -> None:
    tail_a, tail_b = small_log.tail(), small_log.tail(timeout=5)
    thread = threading.Thread(target=lambda: list(tail_a))
    thread.start()
    time.sleep(0.05)
    tail_a.stop()
    thread.join(timeout=5)
    small_log.append(b"after")
    small_log.commit()
    assert next(tail_b)[1] == b"after"


def test_idle_tail_uses_no_cpu(small_log: FasterLog) -> None:
    start_cpu = time.process_time()
    assert list(small_log.tail(timeout=1.0)) == []
    assert time.process_time() - start_cpu < 0.1


def test_complete_ends_tails_and_refuses_appends_across_reopen(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        a = log.append(b"last")
        tail = log.tail()
        threading.Timer(0.05, log.complete).start()
        assert list(tail) == [(a, b"last")]
        assert log.completed
        with pytest.raises(errors.LogCompletedError):
            log.append(b"more")
    with FasterLog.open(log_dir) as log:
        assert log.completed
        with pytest.raises(errors.LogCompletedError):
            log.append(b"more")
        assert list(log.tail()) == [(a, b"last")]


def test_tail_resumes_from_its_position(small_log: FasterLog) -> None:
    addresses = small_log.append_many([b"%d" % i for i in range(100)])
    small_log.append_marker(b"skip me")
    small_log.commit()
    tail = small_log.tail(timeout=0.05)
    taken = [next(tail) for _ in range(40)]
    rest = list(small_log.tail(tail.position, timeout=0.05))
    assert [a for a, _ in taken + rest] == addresses


# --- asyncio -------------------------------------------------------------------------------


def test_async_tail_and_wait_for_commit(small_log: FasterLog) -> None:
    async def main() -> list[bytes]:
        a = small_log.append(b"x")
        assert await small_log.wait_for_commit_async(a, timeout=0.05) is False
        asyncio.get_running_loop().call_later(0.02, small_log.commit)
        assert await small_log.wait_for_commit_async(a, timeout=5) is True
        asyncio.get_running_loop().call_later(0.02, lambda: (small_log.append(b"y"),
                                                              small_log.commit()))
        got = []
        async for _, entry in small_log.tail_async(timeout=0.3):
            got.append(entry)
        return got

    assert asyncio.run(main()) == [b"x", b"y"]


def test_async_tail_cancellation_leaves_no_waiter(small_log: FasterLog) -> None:
    async def main() -> None:
        async def consume() -> None:
            async for _ in small_log.tail_async():
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        small_log.append(b"after cancel")
        small_log.commit()
        assert await small_log.wait_for_commit_async(small_log.tail_address - 1, timeout=5)

    asyncio.run(main())


def test_a_thousand_async_tailers_each_see_every_entry(small_log: FasterLog) -> None:
    tailers_count, entries_count = 1000, 20

    async def tailer() -> int:
        seen = 0
        async for _ in small_log.tail_async(timeout=10):
            seen += 1
            if seen == entries_count:
                return seen
        return seen

    async def main() -> list[int]:
        tasks = [asyncio.create_task(tailer()) for _ in range(tailers_count)]
        await asyncio.sleep(0.1)
        for i in range(entries_count):
            small_log.append(b"%d" % i)
            small_log.commit()
            await asyncio.sleep(0)
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [entries_count] * tailers_count


# --- followers in other processes ------------------------------------------------------------

FOLLOWER = textwrap.dedent(
    """
    import sys, time
    from fasterlog import FasterLog
    log = FasterLog.open(sys.argv[1], readonly=True)
    print("ready", flush=True)
    for address, entry in log.tail(timeout=float(sys.argv[2])):
        print(address, entry.decode(), time.monotonic(), flush=True)
    print("end", log.completed, flush=True)
    """
)


def start_follower(log_dir: Path, timeout_s: float) -> subprocess.Popen[str]:
    follower = subprocess.Popen([sys.executable, "-c", FOLLOWER, str(log_dir), str(timeout_s)],
                                stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    assert follower.stdout.readline().strip() == "ready"
    return follower


def read_rest(follower: subprocess.Popen[str]) -> str:
    # Not communicate(timeout=...): it reads the raw pipe and would lose what readline()
    # already buffered.
    assert follower.stdout is not None
    with follower.stdout:
        out = follower.stdout.read()
    assert follower.wait(timeout=30) == 0
    return out


def test_follower_in_another_process_sees_commits_and_ends_on_complete(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        log.append(b"before")
        log.commit()
        follower = start_follower(log_dir, 30)
        for i in range(20):
            log.append(b"e%d" % i)
            log.commit()
            time.sleep(0.01)
        log.append(b"never committed until complete")
        log.complete()
        out = read_rest(follower)
    lines = out.splitlines()
    assert lines[-1] == "end True"
    entries = [line.split()[1] for line in lines[:-1]]
    assert entries == ["before"] + [f"e{i}" for i in range(20)] + ["never"]


def test_follower_waits_without_cpu_and_sees_a_commit_quickly(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        follower = start_follower(log_dir, 30)
        time.sleep(0.5)
        ticks_before = os.times()
        log.append(b"ping")
        committed_at = time.monotonic()
        log.commit()
        assert follower.stdout is not None
        line = follower.stdout.readline().split()
        assert line[1] == "ping"
        assert float(line[2]) - committed_at < 1.0  # visible well within a second
        log.complete()
        read_rest(follower)
    del ticks_before


def test_follower_reading_below_a_truncated_begin_gets_truncated_error(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        addresses = [log.append(bytes(1000)) for _ in range(3000)]
        log.commit()
        with FasterLog.open(log_dir, readonly=True) as follower:
            assert follower.read(addresses[0]) == bytes(1000)
            log.truncate_until(addresses[2000])
            log.commit()
            with pytest.raises(errors.TruncatedError) as caught:
                follower.read(addresses[10])
            assert caught.value.begin_address == addresses[2000]
            assert follower.read(addresses[2500]) == bytes(1000)



@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "follower"])
@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_close_ends_a_wait_for_commit_in_another_thread_and_waits_for_it_to_leave(
        log_dir: Path, readonly: bool, timeout: float | None) -> None:
    # A follower's wait sleeps on the shared page's futex, which only the writer bumps: close
    # used to unmap the page under it and leave the waiter asleep for good (or, woken later,
    # reading the unmapped page). Now close wakes every waiter and returns once they are out.
    for _ in range(10):
        with FasterLog.open(log_dir, **SMALL_SETTINGS) as writer:
            writer.append(b"first")
            writer.commit()
            log = FasterLog.open(log_dir, readonly=True) if readonly else writer
            outcomes: list[BaseException | bool] = []
            started = threading.Barrier(4)

            def wait(log: FasterLog = log, outcomes: list[BaseException | bool] = outcomes,
                     started: threading.Barrier = started) -> None:
                started.wait()
                try:
                    outcomes.append(log.wait_for_commit(1 << 40, timeout=timeout))
                except BaseException as error:  # noqa: BLE001 - the test looks at it
                    outcomes.append(error)

            waiters = [threading.Thread(target=wait, daemon=True) for _ in range(3)]
            for waiter in waiters:
                waiter.start()
            started.wait()
            time.sleep(0.02)  # into the core's wait
            closing_at = time.monotonic()
            log.close()
            for waiter in waiters:
                waiter.join(5.0)
                assert not waiter.is_alive(), "a waiter slept on after close"
            assert time.monotonic() - closing_at < 2.0
            assert len(outcomes) == 3
            assert all(isinstance(outcome, errors.LogClosedError) for outcome in outcomes), \
                outcomes


def test_the_commit_watcher_registry_forgets_a_log_once_it_is_gone(tmp_path: Path) -> None:
    """Issue 14 defect 13: the registry of eventfd watchers is keyed weakly by the log's
    handle, but each watcher held its handle, so no entry ever went (a log and its loop kept
    for the life of the process). Checked with the cyclic GC off: plain reference counting
    must free the entry."""
    from fasterlog import tail

    before = len(tail._watchers)  # the registry itself: what this test is about

    async def wait_once(log: FasterLog) -> None:
        address = log.append(b"x")
        log.commit()
        assert await log.wait_for_commit_async(address, timeout=5)
        waiting = asyncio.ensure_future(log.wait_for_commit_async(address + 10**6, timeout=5))
        await asyncio.sleep(0.01)  # a watcher now watches the eventfd
        log.append(b"y")
        log.commit()
        assert await waiting is False  # the log's tail never reaches it: times out quietly

    gc.disable()
    try:
        log = FasterLog.open(tmp_path / "log", **SMALL_SETTINGS)
        asyncio.run(wait_once(log))
        assert len(tail._watchers) == before + 1
        log.close()
        del log
        assert len(tail._watchers) == before
    finally:
        gc.enable()
