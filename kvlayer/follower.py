"""Followers and timers: a read-only KVStore that follows the writer, and checkpoints by time.

A follower is `KVStore.open(path, read_only=True)` in any process beside the writer's. It
recovers like the writer (newest checkpoint, then the log after it) up to the committed-until
address it read at open, then applies each commit as it lands: a thread waits in the log core
(the shared futex of fasterlog.shm, no polling) and replays the new records into the index.
`get(key, at=address)` and `wait_for(address)` wait until the follower applied `address`.

Rules:
1. One applier at a time: applying takes the store's write lock, which a follower's user
   cannot take for anything else (writes are refused). Readers take no lock, as in the writer.
2. `applied_until` only moves forward, to a committed-until address, after every record below
   it is in the index; waiters are woken after it moves.
3. Chain floor (store.py, rule 6): the follower reads the begin address B first and the
   committed-until address C after it; once it applied up to C, every copy the writer made
   before truncating at B is in its index, so it may stop chain walks at B.
4. A follower that lags behind a truncation (the records it still had to apply are gone:
   TruncatedError) rebuilds its index from the newest checkpoint, which the writer takes after
   the copies and before the truncation (compaction.py), and swaps it in whole; readers of the
   old index that hit a truncated record retry on the new one. Its cookie is the one of its
   open, so the rebuild finds the checkpoints by scanning the log for their markers.
5. The checkpoint timer sleeps on an Event (no busy thread); writes check the same deadline, so
   a busy store checkpoints on time without the timer and an idle one checkpoints once.
"""

from __future__ import annotations

import logging
import threading
import time

from fasterlog.errors import FasterLogError, TruncatedError

from .core import StoreCore

__all__ = ["catch_up", "start_checkpoint_timer", "start_following", "wait_for"]

logger = logging.getLogger("kvlayer.follower")

# A follower's wait in the core is cut into slices so that close() and signals are noticed.
_WAIT_SLICE_S = 0.5


def catch_up(store: StoreCore) -> int:
    """Applies every commit visible now (rules 2-4); returns the applied-until address."""
    log = store.log
    with store.write_lock:
        if store.closed:
            return store.applied_until
        begin = log.begin_address  # before committed-until: rule 3
        end = log.committed_until_address
        if end > store.applied_until:
            try:
                if store.applied_until < begin:
                    raise TruncatedError("catch up: the log was truncated past the follower",
                                         store.applied_until, begin)
                store.replay(store.applied_until, end)
            except TruncatedError:
                end = _rebuild(store)
            store.applied_until = end
        store.chain_floor = max(store.chain_floor, begin)
    with store.applied:
        store.applied.notify_all()
    return store.applied_until


def _rebuild(store: StoreCore) -> int:
    """Rule 4: a fresh index recovered from the newest checkpoint, swapped in whole."""
    fresh = StoreCore(store.log, store.index.buckets_count_log2(),
                      checkpoints_kept_count=store.checkpoints_kept_count,
                      read_only=True, scan_for_markers=True)
    fresh.recover()
    logger.info("follower of %s: the log was truncated past it; rebuilt from %s",
                store.log.path, fresh.recovered_from or "a full replay")
    store.index = fresh.index  # with its own chain floor (store rule 6)
    store.live_count = fresh.live_count
    store.checkpoints = fresh.checkpoints
    store.base = fresh.base
    return fresh.applied_until


def wait_for(store: StoreCore, address: int, timeout: float | None) -> bool:
    """Waits until the store applied `address` (rule 2); False after `timeout` seconds."""
    if not isinstance(address, int) or isinstance(address, bool) or address < 0:
        raise TypeError(f"wait_for failed: an address must be a non-negative int, not "
                        f"{address!r}")
    if not store.read_only:
        return address < store.log.tail_address
    deadline = None if timeout is None else time.monotonic() + timeout
    following = any(thread.is_alive() for thread in store.feature_threads)
    while store.applied_until <= address:
        if store.closed:
            return False
        if not following:  # no thread applies commits: wait for one in the core ourselves
            left = _WAIT_SLICE_S if deadline is None else min(_WAIT_SLICE_S,
                                                                deadline - time.monotonic())
            if left <= 0:
                return False
            store.log.wait_for_commit(store.applied_until, timeout=left)
            catch_up(store)
            continue
        with store.applied:
            if store.applied_until > address:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            store.applied.wait(_WAIT_SLICE_S if remaining is None
                                else min(remaining, _WAIT_SLICE_S))
    return True


def _follow(store: StoreCore) -> None:
    log = store.log
    stop = store.features_stop
    while not stop.is_set():
        try:
            catch_up(store)
            if not stop.is_set():
                log.wait_for_commit(store.applied_until, timeout=_WAIT_SLICE_S)
        except FasterLogError as error:
            if stop.is_set() or store.closed:
                return
            logger.warning("follower of %s: %s; retrying", log.path, error)
            stop.wait(_WAIT_SLICE_S)


def start_following(store: StoreCore) -> threading.Thread:
    thread = threading.Thread(target=_follow, args=(store,), daemon=True,
                              name=f"kvlayer-follow {store.log.path}")
    thread.start()
    return thread


def _checkpoint_timer(store: StoreCore) -> None:
    interval_s = store.checkpoint_every_ms / 1000
    stop = store.features_stop
    while not stop.wait(max(0.0, store.last_checkpoint_s + interval_s - time.monotonic())):
        if time.monotonic() - store.last_checkpoint_s < interval_s:
            continue  # a write took one meanwhile: sleep until the new deadline
        try:
            with store.write_lock:
                if store.closed:
                    return
                if store.bytes_since_checkpoint or (
                        store.log.tail_address > store.log.committed_until_address):
                    store.checkpoint()
                else:
                    store.last_checkpoint_s = time.monotonic()  # nothing new: no checkpoint
        except FasterLogError as error:
            logger.warning("timed checkpoint of %s failed: %s; the timer stops",
                           store.log.path, error)
            return


def start_checkpoint_timer(store: StoreCore) -> threading.Thread:
    thread = threading.Thread(target=_checkpoint_timer, args=(store,), daemon=True,
                              name=f"kvlayer-checkpoint-timer {store.log.path}")
    thread.start()
    return thread
