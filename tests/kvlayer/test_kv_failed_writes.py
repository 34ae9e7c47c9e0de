"""A write that failed is never read back (issue 14 defect 4, the embedded KVStore).

Goal: after a commit that fails (the disk is full, the sync fails), every read of the store
shows exactly what the log committed, the state a reopen gives: a put that raised DiskFullError
is not returned by get, a delete that raised leaves the key, a put_many (its C fast path and its
checked path) leaves none of its keys, and writes made with commit=False before the failure are
gone too (the fenced log can never commit them). The store keeps reading; writes raise
LogFencedError until a reopen. The follower's read-only check and the timed checkpoint also
hold on put_many's fast path.

Method: real stores on small logs; the failure is the device's own fault layer
(fasterlog.testing.inject_fault, ENOSPC or EIO from the next device operation on), so the
append lands in memory and the commit's write or sync fails, as on a full disk. Each test
compares the store with a reopen of the same directory.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kvlayer.core
from fasterlog import testing as fault_testing
from fasterlog.errors import DiskFullError, FasterLogError, LogFencedError
from kvlayer import KVStore, errors
from tests.support.settings import SMALL_SETTINGS


def open_store(path: Path, **extra: Any) -> KVStore:
    return KVStore.open(path, **SMALL_SETTINGS, **extra)


def contents(store: KVStore, keys: list[bytes]) -> dict[bytes, bytes | None]:
    return {key: store.get(key) for key in keys}


KEYS = [b"a", b"b", b"c", b"fresh"]

# Each write is tried after the fault is set; it must raise and change nothing visible.
FAILING_WRITES: dict[str, Callable[[KVStore], object]] = {
    "put": lambda store: store.put(b"a", b"new"),
    "put-new-key": lambda store: store.put(b"fresh", b"new"),
    "delete": lambda store: store.delete(b"b"),
    "put_many-fast": lambda store: store.put_many({b"a": b"new", b"fresh": b"new"}),
    "put_many-checked": lambda store: store.put_many([(b"a", bytearray(b"new")),
                                                      (b"fresh", b"new")]),
    "write_batch": lambda store: store.write_batch([(b"a", b"new"), (b"c", None)]),
    "incr": lambda store: store.incr(b"c", 5),
    "commit-after-uncommitted": lambda store: (store.put(b"a", b"new", commit=False),
                                               store.delete(b"b", commit=False),
                                               store.commit()),
}


@pytest.mark.parametrize("fault_errno", [errno.ENOSPC, errno.EIO], ids=["enospc", "eio"])
@pytest.mark.parametrize("name", list(FAILING_WRITES))
def test_a_failed_write_is_never_read_back(tmp_path: Path, name: str, fault_errno: int) -> None:
    store = open_store(tmp_path / "kv")
    try:
        store.put_many({b"a": b"old", b"b": b"old", b"c": b"1"})
        before = contents(store, KEYS)
        fault_testing.inject_fault(store.log, "any", errno=fault_errno)
        with pytest.raises(FasterLogError) as raised:
            FAILING_WRITES[name](store)
        if fault_errno == errno.ENOSPC:
            assert isinstance(raised.value, DiskFullError | LogFencedError)
        assert store.log.fenced
        assert contents(store, KEYS) == before
        assert len(store) == 3
        assert dict(store.items()) == {key: value for key, value in before.items()
                                       if value is not None}
        with pytest.raises(LogFencedError):  # later writes are refused, reads go on
            store.put(b"a", b"later")
        assert contents(store, KEYS) == before
    finally:
        store.close()
    with open_store(tmp_path / "kv") as reopened:
        assert contents(reopened, KEYS) == before


def test_a_failed_checkpoint_keeps_the_committed_state(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as store:
        store.put(b"a", b"old")
        store.put(b"a", b"new", commit=False)
        fault_testing.inject_fault(store.log, "any", errno=errno.ENOSPC)
        with pytest.raises(FasterLogError):
            store.checkpoint()
        assert store.get(b"a") == b"old"
        assert store.checkpoints == []


def test_put_many_on_a_follower_raises_store_read_only_error(tmp_path: Path) -> None:
    with open_store(tmp_path / "kv") as writer:
        writer.put(b"a", b"1")
        with open_store(tmp_path / "kv", read_only=True, follow=False) as follower:
            for write in (lambda: follower.put_many({b"a": b"2"}),
                          lambda: follower.put_many([(b"a", bytearray(b"2"))]),
                          lambda: follower.put(b"a", b"2")):
                with pytest.raises(errors.StoreReadOnlyError):
                    write()


def test_put_many_takes_the_timed_checkpoint_when_it_is_due(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A timer interval far longer than the test: only the write's own deadline check can take
    # the checkpoint once the store's clock reads a minute later (the timer thread keeps the
    # sleep it began on the real clock).
    with open_store(tmp_path / "kv", checkpoint_every_ms=60_000) as store:
        store.put_many({b"a": b"1"})
        assert store.checkpoints == []
        later = time.monotonic() + 61

        class Later:
            @staticmethod
            def monotonic() -> float:
                return later

        monkeypatch.setattr(kvlayer.core, "time", Later)
        store.put_many({b"b": b"2"})
        assert len(store.checkpoints) == 1
