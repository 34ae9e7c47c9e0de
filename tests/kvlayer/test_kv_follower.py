"""Tests of read-only KV followers in another process, and of checkpoints by time.

Goal: `KVStore.open(path, read_only=True)` beside a writer process follows its commits; a
`get(key, at=address)` returns the value as of at least that write; a follower stays correct
across the writer's compactions, also when it lags behind a truncation; close stops its thread
at once. `checkpoint_every_ms` checkpoints an idle store once after writes (timer) and a busy
one on time (writes check the deadline), and never without new writes.

Method: the writer is a real child process (tests/support/children/kv_follow_writer.py) driven line
by line over its stdin; every answer is sent after the write's commit returned, and carries the
address the test then passes to `at=`. The test process is the follower.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvlayer import KVStore, errors
from tests.support.processes import ROOT, child_env
from tests.support.settings import CRASH_SETTINGS


class Writer:
    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.children.kv_follow_writer", str(path)],
            cwd=ROOT, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdin is not None
        assert self.process.stdout.readline() == "ready\n"

    def __call__(self, command: str) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        code = self.process.wait(30)
        self.process.stdout.close()
        assert code == 0


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    KVStore.open(tmp_path / "kv", **CRASH_SETTINGS).close()  # created before the follower
    process = Writer(tmp_path / "kv")
    yield process
    process.close()


def test_a_follower_in_another_process_reads_each_write_at_its_address(
        tmp_path: Path, writer: Writer) -> None:
    with KVStore.open(tmp_path / "kv", read_only=True) as follower:
        assert follower.read_only
        model: dict[bytes, bytes] = {}
        for i in range(150):
            key, value = b"k%d" % (i % 37), b"v%d" % i
            address = writer(f"put {key.decode()} {value.decode()}")
            model[key] = value
            assert follower.get(key, at=address, timeout=10) == value
            assert follower.applied_until_address > address
        tail = writer("del k3")
        del model[b"k3"]
        assert follower.get(b"k3", at=tail - 1, timeout=10) is None
        assert follower.wait_for(tail - 1, timeout=10)
        assert len(follower) == len(model)
        assert dict(follower.items()) == model


def test_waiting_for_an_address_not_written_yet_times_out(tmp_path: Path,
                                                          writer: Writer) -> None:
    with KVStore.open(tmp_path / "kv", read_only=True) as follower:
        address = writer("put a 1")
        far = address + (1 << 20)
        started = time.monotonic()
        assert not follower.wait_for(far, timeout=0.2)
        with pytest.raises(errors.WaitTimeoutError):
            follower.get(b"a", at=far, timeout=0.2)
        assert time.monotonic() - started < 3
        with pytest.raises(TimeoutError):  # WaitTimeoutError is a TimeoutError
            follower.get(b"a", at=far, timeout=0.05)


def test_a_follower_stays_correct_across_the_writers_compactions(tmp_path: Path,
                                                                 writer: Writer) -> None:
    with KVStore.open(tmp_path / "kv", read_only=True) as follower:
        stop = threading.Event()
        failures: list[str] = []

        def reader() -> None:  # the m-keys only ever move forward: v<i> with i % 50 fixed
            while not stop.is_set():
                for n in range(50):
                    try:
                        value = follower.get(b"m%d" % n)
                    except Exception as error:  # noqa: BLE001 - reported below
                        failures.append(repr(error))
                        return
                    if value is not None and int(value[1:]) % 50 != n:
                        failures.append(f"m{n} = {value!r}")

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for _ in range(4):
                writer("many 2000")
                tail = writer("compact")
                assert follower.wait_for(tail - 1, timeout=10)
                assert follower.get(b"m49") == b"v1999"
                assert follower.log.begin_address > 64
        finally:
            stop.set()
            thread.join()
        assert not failures, failures[:5]
        assert len(follower) == 50


def test_a_follower_that_lags_behind_a_truncation_rebuilds_from_the_checkpoint(
        tmp_path: Path, writer: Writer) -> None:
    writer("put early 1")
    with KVStore.open(tmp_path / "kv", read_only=True, follow=False) as follower:
        assert follower.get(b"early") == b"1"
        writer("many 3000")
        writer("del early")
        writer("compact")  # truncates past everything the follower applied
        address = writer("put late 2")
        assert follower.get(b"late", at=address, timeout=10) == b"2"
        assert follower.get(b"early") is None
        assert follower.get(b"m7") == b"v2957"
        assert len(follower) == 51
        # Rebuilt from the checkpoint compaction took (found by its marker), not a full replay.
        assert follower.checkpoints and follower.checkpoints[0].position >= (
            follower.log.begin_address)


def test_closing_a_follower_stops_its_thread_at_once(tmp_path: Path, writer: Writer) -> None:
    follower = KVStore.open(tmp_path / "kv", read_only=True)
    assert any(thread.name.startswith("kvlayer-follow") for thread in threading.enumerate())
    started = time.monotonic()
    follower.close()
    assert time.monotonic() - started < 0.5
    assert not any(thread.name.startswith("kvlayer-follow")
                   for thread in threading.enumerate())
    with pytest.raises(errors.StoreClosedError):
        follower.get(b"a")


# --- checkpoints by time ------------------------------------------------------------------------


def timer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith("kvlayer-checkpoint-timer")]


def test_an_idle_store_checkpoints_once_after_writes_when_the_time_is_up(
        tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", checkpoint_every_ms=100, **CRASH_SETTINGS) as store:
        assert len(timer_threads()) == 1
        time.sleep(0.3)
        assert store.checkpoints == []  # nothing written: nothing to checkpoint
        store.put(b"a", b"1")
        deadline = time.monotonic() + 5
        while not store.checkpoints and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(store.checkpoints) == 1  # the timer took it, without another write
        time.sleep(0.35)
        assert len(store.checkpoints) == 1  # and no more while idle
    assert timer_threads() == []
    with KVStore.open(tmp_path / "kv", **CRASH_SETTINGS) as store:
        assert store.recovered_from is not None and store.get(b"a") == b"1"


def test_a_busy_store_checkpoints_on_time(tmp_path: Path) -> None:
    with KVStore.open(tmp_path / "kv", checkpoint_every_ms=50, checkpoints_kept_count=16,
                      **CRASH_SETTINGS) as store:
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < 0.6:
            store.put(b"k%d" % (count % 20), b"%d" % count)
            count += 1
        made = len(store.checkpoints)
        assert 4 <= made <= 16, made


def test_closing_a_store_with_a_timer_is_prompt(tmp_path: Path) -> None:
    store = KVStore.open(tmp_path / "kv", checkpoint_every_ms=60_000, **CRASH_SETTINGS)
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 0.5 and timer_threads() == []


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_time_settings_get_typed_errors(tmp_path: Path, bad: object) -> None:
    with pytest.raises(errors.StoreSettingsError):
        KVStore.open(tmp_path / "kv", checkpoint_every_ms=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_bad_read_only_settings_get_typed_errors(tmp_path: Path, bad: object) -> None:
    with pytest.raises(errors.StoreSettingsError):
        KVStore.open(tmp_path / "kv", read_only=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("spelling", ["read_only", "readonly"])
def test_fasterlogs_readonly_spelling_opens_a_follower_too(tmp_path: Path, spelling: str) -> None:
    """`readonly=` (FasterLog.open's spelling) used to reach the log alone: the store opened
    as a writer on a read-only log, its first put failed with the log's ReadOnlyError and so
    did close (issue 15's papercuts)."""
    with KVStore.open(tmp_path / "kv", **CRASH_SETTINGS) as store:
        store.put(b"a", b"1")
    follower = KVStore.open(tmp_path / "kv", follow=False, **{spelling: True}, **CRASH_SETTINGS)
    try:
        assert follower.get(b"a") == b"1"
        with pytest.raises(errors.StoreReadOnlyError):
            follower.put(b"b", b"2")
    finally:
        follower.close()
    with pytest.raises(errors.StoreSettingsError, match="readonly must be a bool"):
        KVStore.open(tmp_path / "kv", readonly="yes", **CRASH_SETTINGS)
