"""KV benchmark: kvlayer against a Python dict, lmdb, rocksdb (rocksdict) and sqlite3 (WAL), in
the same run, on the workloads of issue 4's performance targets.

    python3 bench/bench_kv.py            # 1M keys, 3 reps per store
    python3 bench/bench_kv.py --big      # 10M keys
    python3 bench/bench_kv.py --quick    # 100k keys, 1 rep: a smoke run (CI-sized)
    python3 bench/bench_kv.py --report   # also writes bench/RESULTS_KV.md

Keys are 16 random bytes, values 100 bytes. Each (store, rep) runs in a fresh child process, so
memory figures are that store's alone and no store warms the caches of the next. Per rep:
- put: durable batches of 1,000 keys (each store's own sync: kvlayer commit, lmdb sync=True,
  rocksdb WriteOptions.sync, sqlite synchronous=FULL in WAL mode; a dict has no durability);
- get: hot keys one call at a time, in random order;
- get_many: the same keys in batches of 1,000 through each store's batch read (kvlayer
  get_many, rocksdb multi-get, one lmdb read transaction, sqlite IN (...), a dict comprehension);
- memory per key: kvlayer's index bytes (the page ring holds the log, not the index); for the
  dict the process's resident growth; for the disk stores the bytes of their files;
- reopen: kvlayer's full replay (records/s) and its recovery from a checkpoint, beside each
  peer's open time;
- cold get: after `sync; echo 1 > /proc/sys/vm/drop_caches` (needs root; skipped otherwise),
  random gets of keys whose data left memory, one call at a time.
Figures are medians of the reps with (min..max) and each store's ratio to kvlayer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KEY_SIZE_BYTES = 16
VALUE_SIZE_BYTES = 100
BATCH_KEYS = 1000
GET_MANY_BATCH_KEYS = 1000
GETS_MAX = 1_000_000  # hot gets per rep (a random sample when there are more keys)
COLD_GETS = 20_000
STORES = ["kvlayer", "dict", "lmdb", "rocksdb", "sqlite3"]
TARGETS = {"put": 2e6, "get": 2e6, "get_many": 8e6, "replay": 5e6, "memory": 24}


def make_keys(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(KEY_SIZE_BYTES) for _ in range(count)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tree_bytes(path: str) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(folder, name))
    return total


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as file:
            file.write("1\n")
        return True
    except OSError:
        return False


def timed(function: Callable[[], Any]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# ---------------------------------------------------------------------- store adapters
# Each adapter is the code a careful user would write against the store's public API.


class KVLayer:
    def __init__(self, directory: str, count: int) -> None:
        from kvlayer import KVStore

        self.directory = directory
        data_bytes = count * 160  # frames of 16 + 100 bytes plus headers, rounded up
        memory = 64 << 20
        while memory < data_bytes * 5 // 4:
            memory <<= 1
        self.settings = {"memory_size_bytes": memory}
        self.store = KVStore.open(directory, **self.settings)

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.store.put_many(pairs)  # durable: commits before it returns

    def getter(self) -> Callable[[bytes], Any]:
        return self.store.get

    def get_many(self, keys: list[bytes]) -> list[Any]:
        return self.store.get_many(keys)

    def memory_bytes(self, count: int, rss_growth: int) -> int:
        return self.store.index_stats()["memory_bytes"]

    def close(self) -> None:
        self.store.close()

    def reopen(self) -> dict[str, float]:
        from kvlayer import KVStore

        self.store.close()
        result: dict[str, float] = {}
        start = time.perf_counter()
        self.store = KVStore.open(self.directory, **self.settings)
        result["replay_s"] = time.perf_counter() - start
        result["checkpoint_s"] = timed(self.store.checkpoint)
        self.store.close()
        start = time.perf_counter()
        self.store = KVStore.open(self.directory, **self.settings)
        result["recover_s"] = time.perf_counter() - start
        assert self.store.recovered_from is not None
        return result


class DictStore:
    def __init__(self, directory: str, count: int) -> None:
        self.data: dict[bytes, bytes] = {}

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.data.update(pairs)

    def getter(self) -> Callable[[bytes], Any]:
        return self.data.get

    def get_many(self, keys: list[bytes]) -> list[Any]:
        get = self.data.get
        return [get(key) for key in keys]

    def memory_bytes(self, count: int, rss_growth: int) -> int:
        return rss_growth

    def close(self) -> None:
        pass

    def reopen(self) -> dict[str, float]:
        return {}


class LmdbStore:
    def __init__(self, directory: str, count: int) -> None:
        import lmdb

        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.env = lmdb.open(directory, map_size=max(1 << 30, count * 1024), sync=True)
        self.read = self.env.begin()

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True) as transaction:
            for key, value in pairs:
                transaction.put(key, value)
        self.read.abort()
        self.read = self.env.begin()

    def getter(self) -> Callable[[bytes], Any]:
        return self.read.get

    def get_many(self, keys: list[bytes]) -> list[Any]:
        with self.env.begin() as transaction:
            get = transaction.get
            return [get(key) for key in keys]

    def memory_bytes(self, count: int, rss_growth: int) -> int:
        return tree_bytes(self.directory)

    def close(self) -> None:
        self.read.abort()
        self.env.close()

    def reopen(self) -> dict[str, float]:
        import lmdb

        self.close()
        start = time.perf_counter()
        self.env = lmdb.open(self.directory, map_size=1 << 40, sync=True)
        self.read = self.env.begin()
        return {"open_s": time.perf_counter() - start}


class RocksStore:
    def __init__(self, directory: str, count: int) -> None:
        self.directory = directory
        self._open()

    def _open(self) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self.db = Rdict(self.directory, options)
        self.write_options = WriteOptions()
        self.write_options.sync = True

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        put = batch.put
        for key, value in pairs:
            put(key, value)
        self.db.write(batch, self.write_options)

    def getter(self) -> Callable[[bytes], Any]:
        return self.db.get

    def get_many(self, keys: list[bytes]) -> list[Any]:
        return self.db.get(keys)  # type: ignore[return-value, arg-type]

    def memory_bytes(self, count: int, rss_growth: int) -> int:
        return tree_bytes(self.directory)

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> dict[str, float]:
        self.close()
        return {"open_s": timed(self._open)}


class SqliteStore:
    def __init__(self, directory: str, count: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "kv.sqlite")
        self._open()
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) "
                        "WITHOUT ROWID")

    def _open(self) -> None:
        import sqlite3

        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")

    def put_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", pairs)
        self.db.execute("COMMIT")

    def getter(self) -> Callable[[bytes], Any]:
        execute = self.db.execute

        def get(key: bytes) -> Any:
            row = execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
            return None if row is None else row[0]

        return get

    def get_many(self, keys: list[bytes]) -> list[Any]:
        found: dict[bytes, bytes] = {}
        for start in range(0, len(keys), 500):  # under SQLite's default variable limit
            chunk = keys[start:start + 500]
            query = f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(chunk))})"
            found.update(self.db.execute(query, chunk).fetchall())
        return [found.get(key) for key in keys]

    def memory_bytes(self, count: int, rss_growth: int) -> int:
        return tree_bytes(os.path.dirname(self.path))

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> dict[str, float]:
        self.close()
        return {"open_s": timed(self._open)}


ADAPTERS = {"kvlayer": KVLayer, "dict": DictStore, "lmdb": LmdbStore, "rocksdb": RocksStore,
            "sqlite3": SqliteStore}


# ---------------------------------------------------------------------- one rep (child)


def run_rep(store_name: str, count: int, directory: str, cold: bool) -> dict[str, Any]:
    keys = make_keys(count)
    value = random.Random(2).randbytes(VALUE_SIZE_BYTES)
    rng = random.Random(3)
    order = rng.sample(keys, min(count, GETS_MAX))
    result: dict[str, Any] = {"store": store_name, "keys": count}
    rss_before = rss_bytes()
    store: Any = ADAPTERS[store_name](directory, count)
    start = time.perf_counter()
    for begin in range(0, count, BATCH_KEYS):
        store.put_batch([(key, value) for key in keys[begin:begin + BATCH_KEYS]])
    result["put"] = count / (time.perf_counter() - start)
    result["memory_per_key"] = store.memory_bytes(count, rss_bytes() - rss_before) / count

    get = store.getter()
    start = time.perf_counter()
    for key in order:
        get(key)
    result["get"] = len(order) / (time.perf_counter() - start)
    assert get(order[0]) == value and get(b"absent-key-00000") is None

    batches = [order[begin:begin + GET_MANY_BATCH_KEYS]
               for begin in range(0, len(order), GET_MANY_BATCH_KEYS)]
    start = time.perf_counter()
    for batch in batches:
        store.get_many(batch)
    result["get_many"] = len(order) / (time.perf_counter() - start)
    assert store.get_many(order[:3] + [b"absent-key-00000"]) == [value] * 3 + [None]

    reopened = store.reopen()
    if "replay_s" in reopened:
        result["replay"] = count / reopened["replay_s"]
        result["replay_s"] = reopened["replay_s"]
        result["recover_s"] = reopened["recover_s"]
        result["checkpoint_s"] = reopened["checkpoint_s"]
    elif "open_s" in reopened:
        result["open_s"] = reopened["open_s"]

    if cold and store_name != "dict":
        if drop_caches():
            # A fresh open after the drop: kvlayer's page ring then holds nothing older.
            reopened = store.reopen()
            sample = rng.sample(keys, min(count, COLD_GETS))
            get = store.getter()
            start = time.perf_counter()
            for key in sample:
                get(key)
            result["cold_get"] = len(sample) / (time.perf_counter() - start)
        else:
            result["cold_get_skipped"] = "drop_caches needs root"
    store.close()
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


# ---------------------------------------------------------------------- parent: runs, report


def run_child(store_name: str, count: int, cold: bool) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix=f"bench-kv-{store_name}-", dir=os.environ.get(
        "BENCH_KV_DIR"))
    try:
        environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get(
            "PYTHONPATH", ""))
        completed = subprocess.run(
            [sys.executable, __file__, "--child", store_name, "--keys", str(count),
             "--directory", os.path.join(directory, "store")] + (["--cold"] if cold else []),
            capture_output=True, text=True, env=environment, check=False)
        if completed.returncode != 0:
            return {"store": store_name, "error": completed.stderr.strip().splitlines()[-1:]}
        return json.loads(completed.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


METRICS = [  # (key, title, higher is better, format)
    ("put", "put, durable batches of 1,000 (keys/s)", True, "rate"),
    ("get", "get, hot, one at a time (keys/s)", True, "rate"),
    ("get_many", "get_many, batches of 1,000 (keys/s)", True, "rate"),
    ("memory_per_key", "memory per key (B): kvlayer index, dict RSS, peers' files", False, "b"),
    ("replay", "full replay at open (records/s)", True, "rate"),
    ("replay_s", "full replay at open (s)", False, "s"),
    ("recover_s", "open from a checkpoint (s)", False, "s"),
    ("open_s", "peer open (s)", False, "s"),
    ("cold_get", "cold get after drop_caches, one at a time (keys/s)", True, "rate"),
]


def fmt(value: float, kind: str) -> str:
    if kind == "rate":
        return f"{value / 1e6:.2f}M" if value >= 1e6 else f"{value / 1e3:.0f}k"
    if kind == "s":
        return f"{value:.3f}"
    return f"{value:.1f}"


def summarize(runs: dict[str, list[dict[str, Any]]], count: int, reps: int) -> str:
    lines = [(f"{count:,} keys of {KEY_SIZE_BYTES} B, values of {VALUE_SIZE_BYTES} B; medians "
              f"of {reps} reps (min..max); ratio = store / kvlayer (for seconds and bytes, "
              "lower is better)."), ""]
    stores = [name for name in runs if runs[name]]
    lines.append("| metric | " + " | ".join(stores) + " |")
    lines.append("|---" * (len(stores) + 1) + "|")
    reference = {}
    for key, title, _, kind in METRICS:
        cells = []
        for name in stores:
            values = [run[key] for run in runs[name] if key in run]
            if not values:
                cells.append("-")
                continue
            median = statistics.median(values)
            if name == "kvlayer":
                reference[key] = median
            text = fmt(median, kind)
            if len(values) > 1:
                text += f" ({fmt(min(values), kind)}..{fmt(max(values), kind)})"
            if name != "kvlayer" and reference.get(key):
                text += f" ×{median / reference[key]:.2f}"
            cells.append(text)
        if any(cell != "-" for cell in cells):
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    errors = [f"- {name}: {run['error']}" for name in runs for run in runs[name]
              if "error" in run]
    if errors:
        lines += ["", "Failed runs:", *errors]
    lines += ["", "Targets (issue 4) for kvlayer:"]
    kv = runs.get("kvlayer", [])

    def median_of(key: str) -> float | None:
        values = [run[key] for run in kv if key in run]
        return statistics.median(values) if values else None

    for key, target, label in (("put", TARGETS["put"], "put ≥ 2M/s"),
                               ("get", TARGETS["get"], "get ≥ 2M/s"),
                               ("get_many", TARGETS["get_many"], "get_many ≥ 8M/s"),
                               ("replay", TARGETS["replay"], "replay ≥ 5M records/s")):
        value = median_of(key)
        if value is not None:
            state = "met" if value >= target else f"not met ({value / target:.0%} of it)"
            lines.append(f"- {label}: {fmt(value, 'rate')} — {state}")
    memory = median_of("memory_per_key")
    if memory is not None:
        lines.append(f"- index ≤ 24 B/key: {memory:.1f} B — "
                     f"{'met' if memory <= TARGETS['memory'] else 'not met'}")
    recover = median_of("recover_s")
    if recover is not None:
        lines.append(f"- recovery from a checkpoint: {recover:.3f} s at {count:,} keys "
                     f"(target: ≤ 2 s at 10M keys)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--big", action="store_true", help="10M keys")
    parser.add_argument("--quick", action="store_true", help="100k keys, 1 rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-read phase")
    parser.add_argument("--report", action="store_true", help="write bench/RESULTS_KV.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--directory", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(run_rep(arguments.child, arguments.keys, arguments.directory,
                                 arguments.cold)))
        return
    count = 10_000_000 if arguments.big else 100_000 if arguments.quick else arguments.keys
    reps = 1 if arguments.quick else arguments.reps
    cold = not arguments.no_cold
    runs: dict[str, list[dict[str, Any]]] = {}
    started = time.time()
    for rep in range(reps):
        for name in arguments.stores.split(","):
            result = run_child(name, count, cold)
            runs.setdefault(name, []).append(result)
            print(f"rep {rep + 1}/{reps} {name}: " + json.dumps(
                {key: (round(value, 4) if isinstance(value, float) else value)
                 for key, value in result.items()}), flush=True)
    text = summarize(runs, count, reps)
    print()
    print(text)
    if arguments.report:
        load = os.getloadavg()
        header = [
            "# kvlayer benchmark (bench/bench_kv.py)", "",
            (f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
             f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"load average {load[0]:.2f} at the end, {time.time() - started:.0f} s in all. "
             f"Command: `python3 bench/bench_kv.py {' '.join(sys.argv[1:])}`."), ""]
        with open(os.path.join(HERE, "RESULTS_KV.md"), "w") as file:
            file.write("\n".join(header) + text + "\n")


if __name__ == "__main__":
    main()
