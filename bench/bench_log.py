#!/usr/bin/env python3
"""Benchmark fasterlog against the stores a user would otherwise pick, on the same workloads.

    python bench/bench_log.py [--reps 3] [--quick] [--only NAME[,NAME]] [--report]

Rules:
1. Every case (one workload on one store in one rep) runs in a fresh child process, in a fresh
   directory under a scratch directory on the same filesystem as this checkout (never tmpfs),
   and that directory is deleted when the case ends.
2. The rep loop is outermost and the order of the stores rotates from rep to rep, so drift in the
   machine (a noisy neighbour, writeback from the previous case) falls on every store alike.
3. A figure is the median (min..max) over reps. A ratio to fasterlog is taken within one rep
   (store / fasterlog, both measured seconds apart) and then the median of those is shown.
4. A store whose library fails to import is reported as skipped; a case that fails or times out
   is reported with its error, and the run goes on.
5. Every case of a run imports the same fasterlog build: a copy of the installed package taken
   at the start (unless --live), and each fasterlog record carries that build's fingerprint.

The parent process only orchestrates and prints; workloads.py holds what is measured and
stores.py the code each store runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

# Run as a script, Python puts this file's directory first on sys.path: its siblings import.
import report
from workloads import WORKLOADS, Workload, scaled_params

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
RESULTS_PATH = os.path.join(BENCH_DIR, "RESULTS.md")
CASE_TIMEOUT_S = 600  # a case that hangs (a deadlock) is killed and reported, the run goes on
STDERR_TAIL_CHARS = 2000
FDATASYNC_OPS_COUNT = 1000
TMPFS_TYPES = ("tmpfs", "ramfs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every case")
    parser.add_argument("--quick", action="store_true", help="sizes / 10, for a smoke run")
    parser.add_argument("--only", default="", help="comma-separated workload or store names")
    parser.add_argument("--report", action="store_true", help=f"also write {RESULTS_PATH}")
    parser.add_argument(
        "--dir",
        help="scratch parent directory (default: the system temp "
        "directory if it is on the checkout's filesystem)",
    )
    parser.add_argument("--json", help="also append every raw result to this JSONL file")
    parser.add_argument("--render", metavar="JSONL", help="only print tables from a --json file")
    parser.add_argument(
        "--live",
        action="store_true",
        help="import fasterlog from where it is installed, not from a copy taken at the start",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one case, JSON spec
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(json.loads(args.child))
    if args.render:
        with open(args.render) as file:
            records = [json.loads(line) for line in file if line.strip()]
        machines = [r for r in records if r["workload"] == "machine"]
        records = [r for r in records if r["workload"] != "machine"]
        machine = machines[-1] if machines else machine_info(tempfile.gettempdir())
        print(report.render(records, machine, {}))
        return 0
    return run_all(args)


def run_child(case: dict[str, Any]) -> int:
    """Run one case in this (fresh) process and print its result as one JSON line."""
    import workloads
    from stores import STORES

    if case["workload"] == "fdatasync_baseline":
        result = workloads.run_fdatasync_baseline(case["directory"], case["params"]["ops_count"])
        print(json.dumps({"status": "ok", **result}), flush=True)
        return 0
    store_class = STORES[case["store"]]
    missing = import_error(store_class.requires)
    if missing:
        print(json.dumps({"status": "skipped", "error": missing}), flush=True)
        return 0
    workload = workloads.WORKLOADS_BY_NAME[case["workload"]]
    result = workload.run(store_class, case["directory"], case["params"])
    print(json.dumps({"status": "ok", **result}), flush=True)
    return 0


def import_error(requires: str) -> str | None:
    """Why "module.attribute[.attribute]" cannot be imported, or None when it can."""
    import importlib

    module_name, *attributes = requires.split(".")
    try:
        found = importlib.import_module(module_name)
        for attribute in attributes:
            found = getattr(found, attribute)
    except (ImportError, AttributeError) as error:
        return f"import failed: {error}"
    return None


def run_all(args: argparse.Namespace) -> int:
    selected = select(args.only)  # first: a bad name must exit before anything is created
    scratch_base = choose_scratch_base(args.dir)
    args.fasterlog_directory = package_directory("fasterlog")
    if args.fasterlog_directory and not args.live:
        args.fasterlog_directory = snapshot_package(args.fasterlog_directory, scratch_base)
    machine = machine_info(scratch_base)
    save_raw(args.json, {"workload": "machine", "store": "-", "status": "info", **machine})
    started = time.time()
    started_date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        records = run_reps(args, selected, scratch_base)
    finally:
        shutil.rmtree(scratch_base, ignore_errors=True)
    meta = {
        "command": " ".join(["python", "bench/bench_log.py", *map(shlex.quote, sys.argv[1:])]),
        "date": started_date,
        "duration_s": time.time() - started,
        "reps": args.reps,
        "quick": args.quick,
        "load_average_end": os.getloadavg(),
    }
    text = report.render(records, machine, meta)
    print(text)
    if args.report:
        with open(RESULTS_PATH, "w") as file:
            file.write(text)
        print(f"wrote {RESULTS_PATH}", file=sys.stderr)
    return 0


def run_reps(
    args: argparse.Namespace, selected: list[tuple[Workload, tuple[str, ...]]], scratch_base: str
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    skipped_stores: dict[str, str] = {}  # store -> import error, so it is tried only once
    for rep in range(args.reps):
        records.append(run_baseline(rep, scratch_base, args.quick))
        save_raw(args.json, records[-1])
        for workload, stores in selected:
            for store in rotated(stores, rep):
                records.append(run_case(workload, store, rep, args, scratch_base, skipped_stores))
                save_raw(args.json, records[-1])
    return records


def select(only: str) -> list[tuple[Workload, tuple[str, ...]]]:
    """The workloads and stores named by --only (either kind of name; none named means all)."""
    names = {name for name in only.split(",") if name}
    workload_names = names & {workload.name for workload in WORKLOADS}
    store_names = names - workload_names
    all_stores = {store for workload in WORKLOADS for store in workload.stores}
    unknown = {name for name in store_names if not any(s.startswith(name) for s in all_stores)}
    if unknown:
        sys.exit(
            f"--only: unknown name(s) {sorted(unknown)}; workloads are "
            f"{[w.name for w in WORKLOADS]}, stores {sorted(all_stores)}"
        )
    selected = []
    for workload in WORKLOADS:
        if workload_names and workload.name not in workload_names:
            continue
        # fasterlog stays in whenever stores are filtered: every ratio is taken against it.
        stores = tuple(
            store
            for store in workload.stores
            if not store_names or store.startswith("fasterlog") or store in store_names
        )
        selected.append((workload, stores))
    return selected


def rotated(stores: tuple[str, ...], rep: int) -> tuple[str, ...]:
    shift = rep % len(stores)
    return stores[shift:] + stores[:shift]


def run_case(
    workload: Workload,
    store: str,
    rep: int,
    args: argparse.Namespace,
    scratch_base: str,
    skipped_stores: dict[str, str],
) -> dict[str, Any]:
    record: dict[str, Any] = {"rep": rep, "workload": workload.name, "store": store}
    if store in skipped_stores:
        return {**record, "status": "skipped", "error": skipped_stores[store]}
    params = scaled_params(workload, args.quick)
    result = run_child_process(
        {"workload": workload.name, "store": store, "params": params}, scratch_base
    )
    record.update(params=params, **result)
    if store.startswith("fasterlog"):
        # fasterlog may be rebuilt while a long run goes on; the report flags mixed builds.
        record["build"] = package_fingerprint(args.fasterlog_directory)
    if record["status"] == "skipped":
        skipped_stores[store] = record["error"]
    progress(record, workload)
    return record


def run_baseline(rep: int, scratch_base: str, quick: bool) -> dict[str, Any]:
    ops_count = FDATASYNC_OPS_COUNT // (10 if quick else 1)
    result = run_child_process(
        {"workload": "fdatasync_baseline", "store": "-", "params": {"ops_count": ops_count}},
        scratch_base,
    )
    return {"rep": rep, "workload": "fdatasync_baseline", "store": "-", **result}


def run_child_process(case: dict[str, Any], scratch_base: str) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix=f"{case['workload']}-{case['store']}-", dir=scratch_base)
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        json.dumps({**case, "directory": directory}),
    ]
    try:
        completed = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=CASE_TIMEOUT_S,
            cwd=REPO_DIR,
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr or ""  # bytes here even in text mode (a CPython quirk)
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        return {
            "status": "failed",
            "error": f"timed out after {CASE_TIMEOUT_S} s",
            "stderr": stderr[-STDERR_TAIL_CHARS:],
            "command": shlex.join(command),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        # Settle the disk before the next case: write back what the deletion dirtied (and, on a
        # filesystem mounted with discard, issue its discards) now, not during the next case.
        os.sync()
    lines = completed.stdout.strip().splitlines()
    if completed.returncode == 0 and lines:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    last_line = completed.stderr.strip().splitlines()[-1:] or [""]
    return {
        "status": "failed",
        "error": f"exit code {completed.returncode}: {last_line[0]}",
        "stderr": completed.stderr[-STDERR_TAIL_CHARS:],
        "command": shlex.join(command),
    }


def progress(record: dict[str, Any], workload: Workload) -> None:
    headline = workload.columns[0]
    if record["status"] == "ok":
        figure = report.format_value(record[headline.metric], headline.kind)
        detail = f"{figure} {headline.header} in {record['seconds']:.2f} s"
    else:
        detail = f"{record['status'].upper()}: {record['error']}"
    print(
        f"[rep {record['rep'] + 1}] {workload.name:13} {record['store']:18} {detail}",
        file=sys.stderr,
        flush=True,
    )


def package_directory(package: str) -> str | None:
    """Where the package would be imported from, without importing it here."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(spec.origin)


def snapshot_package(source: str, scratch_base: str) -> str:
    """Copy the package and make every child import the copy.

    fasterlog is installed in editable mode and may be rebuilt while a run of several minutes
    goes on; a copy taken once keeps every case of the run on one build.
    """
    parent = os.path.join(scratch_base, "snapshot")
    target = os.path.join(parent, os.path.basename(source))
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.tmp"))
    # Children inherit the environment; PYTHONPATH comes before site-packages and its finders.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [parent, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    print(f"fasterlog: using a copy of {source} taken now", file=sys.stderr)
    return target


def package_fingerprint(directory: str | None) -> str:
    """A short hash of the package's Python and compiled files, to tell one build from another."""
    import hashlib

    if directory is None:
        return "not installed"
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith((".py", ".so")):
            with open(os.path.join(directory, name), "rb") as file:
                digest.update(name.encode() + b"\0" + file.read())
    return digest.hexdigest()[:12]


def save_raw(path: str | None, record: dict[str, Any]) -> None:
    if path:
        with open(path, "a") as file:
            file.write(json.dumps(record) + "\n")


def choose_scratch_base(requested: str | None) -> str:
    """A scratch parent on the checkout's filesystem, so results speak for the disk /work is on."""
    candidate = requested or tempfile.gettempdir()
    os.makedirs(candidate, exist_ok=True)
    fs_type, _ = filesystem_of(candidate)
    same_device = os.stat(candidate).st_dev == os.stat(REPO_DIR).st_dev
    if fs_type in TMPFS_TYPES or (not requested and not same_device):
        fallback = os.path.join(BENCH_DIR, ".scratch")  # ignored by bench/.gitignore
        print(
            f"scratch: {candidate} is {fs_type} on another device; using {fallback}",
            file=sys.stderr,
        )
        os.makedirs(fallback, exist_ok=True)
        candidate = fallback
    return tempfile.mkdtemp(prefix="fasterlog-bench-", dir=candidate)


def filesystem_of(path: str) -> tuple[str, str]:
    """(filesystem type, mount point) of the mount that holds path, from /proc/self/mounts."""
    real = os.path.realpath(path)
    best = ("unknown", "")
    with open("/proc/self/mounts") as file:
        for line in file:
            _device, mount_point, fs_type = line.split()[:3]
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[1]):
                best = (fs_type, mount_point)
    return best


def machine_info(scratch_base: str) -> dict[str, Any]:
    import platform
    import sqlite3
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    fs_type, mount_point = filesystem_of(scratch_base)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
        "scratch": f"{scratch_base} ({fs_type} mounted at {mount_point})",
        "versions": {
            "fasterlog": version("fasterlog"),
            "lmdb": version("lmdb"),
            "rocksdict": version("rocksdict"),
            "sqlite": sqlite3.sqlite_version,
        },
    }


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as file:
        for line in file:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
