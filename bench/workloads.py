"""The seven workloads of the benchmark, each run on one store in one fresh directory.

Rules:
1. time.perf_counter() brackets the measured loop only: opening the store, making payloads,
   filling a log that is about to be scanned, and checking the result all stay outside it.
2. Payloads cycle through PAYLOAD_POOL_COUNT distinct random buffers, so no store can profit
   from compression or deduplication, and making them costs nothing inside the loop.
3. Every case checks what it did before it reports a figure: append cases reopen the store and
   scan it back, scan cases compare the count and the last entry. A figure from a store that
   lost or invented entries is worse than no figure, so a mismatch raises.
4. A case returns a flat dict of numbers and short strings; the parent process does the rest.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PAYLOAD_POOL_COUNT = 4096
DROP_CACHES_PATH = "/proc/sys/vm/drop_caches"
FILL_COMMIT_EVERY_COUNT = 1000  # how scan workloads fill their log, untimed
GB = 1e9  # throughput is in decimal gigabytes of payload per second


@dataclass(frozen=True)
class Target:
    """A goal the issue sets for fasterlog's median: metric op value."""

    metric: str
    op: str  # ">=" or "<="
    value: float
    label: str

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.op == ">=" else measured <= self.value


@dataclass(frozen=True)
class Column:
    metric: str
    header: str
    kind: str  # "rate", "gb", "us" or "ms": how the table formats it


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    run: Callable[[Any, str, dict[str, int]], dict[str, Any]]
    params: dict[str, int]  # full size; --quick divides the *_count values by QUICK_DIVISOR
    columns: tuple[Column, ...]  # the first is the headline metric that ratios are taken of
    targets: tuple[Target, ...] = ()
    stores: tuple[str, ...] = ("fasterlog", "file", "sqlite", "lmdb", "rocksdb")
    notes: str = ""


QUICK_DIVISOR = 10
QUICK_SCALED = ("entries_count", "ops_per_thread_count")


def scaled_params(workload: Workload, quick: bool) -> dict[str, int]:
    if not quick:
        return dict(workload.params)
    return {
        key: value // QUICK_DIVISOR if key in QUICK_SCALED else value
        for key, value in workload.params.items()
    }


def make_payloads(entry_size_bytes: int) -> list[bytes]:
    return [os.urandom(entry_size_bytes) for _ in range(PAYLOAD_POOL_COUNT)]


def make_batches(payloads: list[bytes], entries_count: int, batch_count: int) -> list[list[bytes]]:
    """Entries 0..entries_count-1 cut into lists of batch_count (the last may be shorter)."""
    pool_count = len(payloads)
    return [
        [
            payloads[index % pool_count]
            for index in range(start, min(entries_count, start + batch_count))
        ]
        for start in range(0, entries_count, batch_count)
    ]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile, as the peer scripts compute it."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def throughput(entries_count: int, entry_size_bytes: int, elapsed_s: float) -> dict[str, float]:
    return {
        "seconds": elapsed_s,
        "entries_per_s": entries_count / elapsed_s,
        "gb_per_s": entries_count * entry_size_bytes / elapsed_s / GB,
    }


def latency_summary(latencies_s: list[float], unit: str) -> dict[str, float]:
    scale = 1e6 if unit == "us" else 1e3
    return {
        f"p50_{unit}": percentile(latencies_s, 0.50) * scale,
        f"p99_{unit}": percentile(latencies_s, 0.99) * scale,
    }


def check_scan(store: Any, expected_count: int, expected_last: bytes | None) -> None:
    count, last = store.scan()
    if count != expected_count:
        raise AssertionError(f"{store.name}: scan found {count} entries, {expected_count} written")
    if expected_last is not None and last != expected_last:
        raise AssertionError(f"{store.name}: last entry read back differs from the last written")
    if last is not None and type(last) is not bytes:
        raise AssertionError(f"{store.name}: scan delivered {type(last).__name__}, not bytes")


def verify_reopened(
    store_class: Any, directory: str, expected_count: int, expected_last: bytes | None
) -> None:
    store = store_class(directory)
    try:
        check_scan(store, expected_count, expected_last)
    finally:
        store.close()


def describe(store: Any) -> dict[str, Any]:
    return store.describe() if hasattr(store, "describe") else {}


def run_append_batched(
    store_class: Any, directory: str, params: dict[str, int], use_batch_api: bool
) -> dict[str, Any]:
    """Append entries_count entries and commit every commit_every_count of them."""
    entries_count, size = params["entries_count"], params["entry_size_bytes"]
    batches = make_batches(make_payloads(size), entries_count, params["commit_every_count"])
    store = store_class(directory)
    try:
        info = describe(store)
        elapsed_s, latencies_s = _timed_batches(
            store, batches, use_batch_api, params.get("batches_per_commit_count", 1)
        )
    finally:
        store.close()
    verify_reopened(store_class, directory, entries_count, batches[-1][-1])
    return {
        **throughput(entries_count, size, elapsed_s),
        "commits_per_s": len(batches) / elapsed_s,
        **latency_summary(latencies_s, "ms"),
        **info,
    }


def _timed_batches(
    store: Any, batches: list[list[bytes]], use_batch_api: bool, batches_per_commit_count: int
) -> tuple[float, list[float]]:
    append, append_batch, commit = store.append, store.append_batch, store.commit
    perf_counter, latencies_s = time.perf_counter, []
    started = perf_counter()
    batch_started = started
    for index, batch in enumerate(batches, 1):
        if use_batch_api:
            append_batch(batch)
        else:
            for payload in batch:
                append(payload)
        if index % batches_per_commit_count == 0 or index == len(batches):
            commit()
            latencies_s.append(perf_counter() - batch_started)
            batch_started = perf_counter()
    return perf_counter() - started, latencies_s


def run_append_each(store_class: Any, directory: str, params: dict[str, int]) -> dict[str, Any]:
    return run_append_batched(store_class, directory, params, use_batch_api=False)


def run_append_many(store_class: Any, directory: str, params: dict[str, int]) -> dict[str, Any]:
    return run_append_batched(store_class, directory, params, use_batch_api=True)


def run_commit_each(store_class: Any, directory: str, params: dict[str, int]) -> dict[str, Any]:
    """One producer; every append is durable before the next one starts."""
    entries_count, size = params["entries_count"], params["entry_size_bytes"]
    (entries,) = make_batches(make_payloads(size), entries_count, entries_count)
    store = store_class(directory)
    try:
        info = describe(store)
        append_durable, perf_counter, latencies_s = store.append_durable, time.perf_counter, []
        started = perf_counter()
        for payload in entries:
            entry_started = perf_counter()
            append_durable(payload)
            latencies_s.append(perf_counter() - entry_started)
        elapsed_s = perf_counter() - started
    finally:
        store.close()
    verify_reopened(store_class, directory, entries_count, entries[-1])
    return {
        **throughput(entries_count, size, elapsed_s),
        "commits_per_s": entries_count / elapsed_s,
        **latency_summary(latencies_s, "us"),
        **info,
    }


def run_producers(store_class: Any, directory: str, params: dict[str, int]) -> dict[str, Any]:
    """threads_count threads, each appending and waiting until its own entry is durable."""
    threads_count, ops_count = params["threads_count"], params["ops_per_thread_count"]
    payloads = make_payloads(params["entry_size_bytes"])
    store = store_class(directory)
    try:
        info = describe(store)
        elapsed_s, latencies_s = _timed_producers(store, payloads, threads_count, ops_count)
    finally:
        store.close()
    entries_count = threads_count * ops_count
    verify_reopened(store_class, directory, entries_count, None)  # order across threads is free
    return {
        **throughput(entries_count, params["entry_size_bytes"], elapsed_s),
        "acks_per_s": entries_count / elapsed_s,
        **latency_summary(latencies_s, "us"),
        **info,
    }


def _timed_producers(
    store: Any, payloads: list[bytes], threads_count: int, ops_count: int
) -> tuple[float, list[float]]:
    # Every thread gets its handle (sqlite: its connection) before the barrier opens the race,
    # so set-up stays outside the measured interval.
    barrier = threading.Barrier(threads_count + 1)
    latencies_by_thread: list[list[float]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []

    def produce(thread_index: int) -> None:
        producer = store.producer()
        try:
            barrier.wait()
            perf_counter, latencies_s = time.perf_counter, latencies_by_thread[thread_index]
            for op_index in range(ops_count):
                payload = payloads[(thread_index * ops_count + op_index) % len(payloads)]
                op_started = perf_counter()
                producer.append_durable(payload)
                latencies_s.append(perf_counter() - op_started)
        except BaseException as error:  # noqa: BLE001  (the main thread re-raises it)
            errors.append(error)
            barrier.abort()
        finally:
            producer.close()

    threads = [threading.Thread(target=produce, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass  # a producer failed before the start; its error is raised below
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed_s = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed_s, [latency for thread in latencies_by_thread for latency in thread]


def fill(store_class: Any, directory: str, params: dict[str, int]) -> bytes:
    """Write the log that a scan case reads (untimed); returns the last entry written."""
    batches = make_batches(
        make_payloads(params["entry_size_bytes"]), params["entries_count"], FILL_COMMIT_EVERY_COUNT
    )
    store = store_class(directory)
    try:
        for batch in batches:
            store.append_batch(batch)
            store.commit()
    finally:
        store.close()
    return batches[-1][-1]


def drop_page_cache() -> dict[str, Any]:
    """Write back dirty pages, then drop the clean ones, so the next read comes from the disk."""
    os.sync()
    try:
        with open(DROP_CACHES_PATH, "w") as file:
            file.write("1\n")
    except OSError as error:
        return {"cache_dropped": False, "cache_drop_error": f"{DROP_CACHES_PATH}: {error}"}
    return {"cache_dropped": True}


def run_scan(
    store_class: Any, directory: str, params: dict[str, int], cold: bool
) -> dict[str, Any]:
    entries_count, size = params["entries_count"], params["entry_size_bytes"]
    expected_last = fill(store_class, directory, params)
    cache = drop_page_cache() if cold else {}
    store = store_class(directory)  # reopened: warm or cold, no store reads its own write buffers
    try:
        info = describe(store)
        if not cold:
            # Warm means in the page cache for every store: one untimed pass first (fasterlog
            # writes with O_DIRECT, so its data is not cached by the writes themselves).
            store.scan()
        started = time.perf_counter()
        count, last = store.scan()
        elapsed_s = time.perf_counter() - started
    finally:
        store.close()
    if count != entries_count or last != expected_last or type(last) is not bytes:
        raise AssertionError(
            f"{store_class.name}: scan found {count} entries "
            f"(expected {entries_count}), last entry matches: {last == expected_last}"
            f", type {type(last).__name__}"
        )
    return {**throughput(entries_count, size, elapsed_s), **cache, **info}


def run_scan_warm(store_class: Any, directory: str, params: dict[str, int]) -> dict[str, Any]:
    return run_scan(store_class, directory, params, cold=False)


def run_scan_cold(store_class: Any, directory: str, params: dict[str, int]) -> dict[str, Any]:
    return run_scan(store_class, directory, params, cold=True)


FDATASYNC_WRITE_SIZE_BYTES = 4096


def run_fdatasync_baseline(directory: str, ops_count: int) -> dict[str, Any]:
    """What one os.write of 4 KiB plus os.fdatasync costs here: growing a file, or overwriting
    one already written and synced (as a preallocated segment is)."""
    result: dict[str, Any] = {}
    for mode in ("append", "overwrite"):
        latencies_s = _timed_fdatasync(os.path.join(directory, mode), mode, ops_count)
        result[f"{mode}_ops_per_s"] = len(latencies_s) / sum(latencies_s)
        result.update(
            {f"{mode}_{key}": value for key, value in latency_summary(latencies_s, "us").items()}
        )
    return result


def _timed_fdatasync(path: str, mode: str, ops_count: int) -> list[float]:
    buffer = os.urandom(FDATASYNC_WRITE_SIZE_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if mode == "overwrite":
            os.write(fd, bytes(FDATASYNC_WRITE_SIZE_BYTES * ops_count))
            os.fsync(fd)
        perf_counter, latencies_s = time.perf_counter, []
        for index in range(ops_count):
            started = perf_counter()
            os.pwrite(fd, buffer, index * FDATASYNC_WRITE_SIZE_BYTES)
            os.fdatasync(fd)
            latencies_s.append(perf_counter() - started)
    finally:
        os.close(fd)
    return latencies_s


ENTRIES_RATE = Column("entries_per_s", "entries/s", "rate")
GB_RATE = Column("gb_per_s", "GB/s", "gb")
BATCH_LATENCIES = (Column("p50_ms", "commit p50 ms", "ms"), Column("p99_ms", "p99 ms", "ms"))
SCAN_STORES = (
    "fasterlog",
    "fasterlog-batches",
    "fasterlog-columns",  # beyond the contract; skipped when the build lacks scan_columns()
    "file",
    "sqlite",
    "lmdb",
    "rocksdb",
)

WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "append_100B",
        "1. append 100 B entries, commit every 1,000",
        run_append_each,
        {"entries_count": 1_000_000, "entry_size_bytes": 100, "commit_every_count": 1000},
        (ENTRIES_RATE, GB_RATE, *BATCH_LATENCIES),
        (Target("entries_per_s", ">=", 4e6, ">= 4M entries/s"),),
        notes="One append call per entry; peers: file buffers frames and writes them at "
        "commit, sqlite one INSERT per entry, lmdb put(append=True), rocksdb "
        "WriteBatch.put.",
    ),
    Workload(
        "append_1KiB",
        "2. append 1 KiB entries, commit every 1,000",
        run_append_each,
        {"entries_count": 1_000_000, "entry_size_bytes": 1024, "commit_every_count": 1000},
        (GB_RATE, ENTRIES_RATE, *BATCH_LATENCIES),
        (Target("gb_per_s", ">=", 1.5, ">= 1.5 GB/s"),),
    ),
    Workload(
        "append_many",
        "3. batch API, 1,000 x 100 B per batch, commit every 100 batches",
        run_append_many,
        {
            "entries_count": 1_000_000,
            "entry_size_bytes": 100,
            "commit_every_count": 1000,
            "batches_per_commit_count": 100,
        },
        (ENTRIES_RATE, GB_RATE, *BATCH_LATENCIES),
        (Target("entries_per_s", ">=", 15e6, ">= 15M entries/s"),),
        notes="fasterlog append_many; file one join + os.write; sqlite executemany; "
        "lmdb cursor.putmulti(append=True); rocksdb WriteBatch (it has no bulk put).",
    ),
    Workload(
        "commit_each",
        "4. commit after every append, one producer, 100 B",
        run_commit_each,
        {"entries_count": 3000, "entry_size_bytes": 100},
        (
            Column("commits_per_s", "commits/s", "rate"),
            Column("p50_us", "p50 us", "us"),
            Column("p99_us", "p99 us", "us"),
        ),
        (
            Target("commits_per_s", ">=", 8000, ">= 8,000 commits/s"),
            Target("p50_us", "<=", 120, "p50 <= 120 us"),
        ),
    ),
    Workload(
        "producers_16",
        "5. 16 producer threads, each waits until its own 100 B entry is durable",
        run_producers,
        {"threads_count": 16, "ops_per_thread_count": 400, "entry_size_bytes": 100},
        (
            Column("acks_per_s", "acked entries/s", "rate"),
            Column("p50_us", "p50 us", "us"),
            Column("p99_us", "p99 us", "us"),
        ),
        notes="fasterlog: append then commit() in each thread (group commit shares syncs); "
        "file: a lock around write+fdatasync; sqlite: one connection per thread; "
        "lmdb: one write transaction per entry; rocksdb: put(sync=True).",
    ),
    Workload(
        "scan_warm",
        "6. scan warm, 100 B entries delivered as bytes",
        run_scan_warm,
        {"entries_count": 1_000_000, "entry_size_bytes": 100},
        (ENTRIES_RATE, GB_RATE),
        (Target("entries_per_s", ">=", 10e6, ">= 10M entries/s"),),
        stores=SCAN_STORES,
    ),
    Workload(
        "scan_cold",
        "7. scan cold (page cache dropped), 1 KiB entries",
        run_scan_cold,
        {"entries_count": 1_000_000, "entry_size_bytes": 1024},
        (GB_RATE, ENTRIES_RATE),
        (Target("gb_per_s", ">=", 1.5, ">= 1.5 GB/s"),),
        stores=SCAN_STORES,
    ),
)

WORKLOADS_BY_NAME = {workload.name: workload for workload in WORKLOADS}
