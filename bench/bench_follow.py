#!/usr/bin/env python3
"""Followers: how soon a read-only follower in another process sees a commit, and what it
costs while nothing happens.

    python bench/bench_follow.py [--runs 3] [--commits 1000] [--interval-ms 2] [--idle-s 2]
                                 [--report] [--dir DIR]

Method (one run):
1. A fresh log in a scratch directory on the checkout's filesystem (never tmpfs). This process
   is the writer; a child process opens the log with readonly=True and tails it.
2. The writer appends one entry and commits, at a steady rate (every --interval-ms, on an
   absolute schedule), --commits times, noting time.monotonic() just before commit() and just
   after it returns. The follower notes time.monotonic() when its tail yields each entry.
   CLOCK_MONOTONIC is one clock for every process, so the differences are latencies:
   "from return" = visible - commit() returned: the commit-to-visible latency the target is
   about (it can be slightly negative: the writer wakes the followers just before commit()
   returns to Python); "from call" = visible - commit() called, the sync included, for
   context. 50 untimed commits go first.
3. Idle: the writer commits an "idle-start" entry, does nothing for --idle-s, then commits
   "idle-end" and completes the log. The follower takes os.times() (and time.process_time(),
   finer) at both entries: its CPU while idle, the wake for "idle-end" included.
4. Every figure is the median (min..max) over --runs runs. Targets (issue 3): p99 <= 2 ms,
   idle CPU about 0.

--report writes the tables as the "## Followers" section of bench/RESULTS.md (replacing that
section if present, else appending it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_PATH = os.path.join(BENCH_DIR, "RESULTS.md")
SECTION_TITLE = "## Followers"
PAGE_SIZE_BYTES = 1 << 20
MEMORY_SIZE_BYTES = 8 << 20
SEGMENT_SIZE_BYTES = 64 << 20
CHILD_TIMEOUT_S = 120
TARGET_P99_MS = 2.0
TMPFS_TYPES = ("tmpfs", "ramfs")
IDLE_START = b"idle-start"
IDLE_END = b"idle-end"
WARM_UP = b"warm-up"
WARM_UP_COMMITS_COUNT = 50  # untimed: the first commits also open files and fault pages in


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs; figures are their medians")
    parser.add_argument("--commits", type=int, default=1000, help="timed commits per run")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="time between commits")
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle period of the follower")
    parser.add_argument("--report", action="store_true", help=f"also write {RESULTS_PATH}")
    parser.add_argument("--dir", help="scratch parent directory (default: the system temp "
                        "directory if it is not tmpfs, else bench/)")
    parser.add_argument("--follower", help=argparse.SUPPRESS)  # internal: the child's log
    return parser.parse_args(argv)


# ---------------------------------------------------------------------- the follower child


def run_follower(directory: str) -> int:
    """Tails the log until it is completed, then prints one JSON object on stdout."""
    from fasterlog import FasterLog

    visible: list[tuple[int, float]] = []
    idle: dict[str, list[float]] = {}
    with FasterLog.open(directory, readonly=True) as log:
        print("ready", flush=True)
        for _, entry in log.tail():
            now = time.monotonic()
            if entry.startswith(WARM_UP):
                continue
            if entry == IDLE_START or entry == IDLE_END:
                times = os.times()
                idle[entry.decode()] = [times.user + times.system, time.process_time(), now]
            else:
                visible.append((int(entry), now))
    print(json.dumps({"visible": visible, "idle": idle}), flush=True)
    return 0


# ---------------------------------------------------------------------- the writer


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def open_log(directory: str) -> Any:
    from fasterlog import FasterLog

    return FasterLog.open(directory, page_size_bytes=PAGE_SIZE_BYTES,
                          memory_size_bytes=MEMORY_SIZE_BYTES,
                          segment_size_bytes=SEGMENT_SIZE_BYTES)


def one_run(args: argparse.Namespace, scratch: str) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="follow-", dir=scratch)
    try:
        log = open_log(directory)
        follower = subprocess.Popen([sys.executable, __file__, "--follower", directory],
                                    stdout=subprocess.PIPE, text=True)
        assert follower.stdout is not None
        try:
            if follower.stdout.readline().strip() != "ready":
                raise RuntimeError("the follower did not start")
            called, returned = commit_steadily(log, args)
            log.append(IDLE_START)
            log.commit()
            time.sleep(args.idle_s)
            log.append(IDLE_END)
            log.complete()
            output = follower.stdout.read()
            if follower.wait(timeout=CHILD_TIMEOUT_S) != 0:
                raise RuntimeError(f"the follower failed with status {follower.returncode}")
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.wait()
            log.close()
        return figures(json.loads(output), called, returned, args)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def commit_steadily(log: Any, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    called, returned = [], []
    interval_s = args.interval_ms / 1000
    for _ in range(WARM_UP_COMMITS_COUNT):
        log.append(WARM_UP)
        log.commit()
    next_s = time.monotonic() + interval_s
    for number in range(args.commits):
        log.append(b"%d" % number)
        called.append(time.monotonic())
        log.commit()
        returned.append(time.monotonic())
        pause_s = next_s - time.monotonic()
        if pause_s > 0:
            time.sleep(pause_s)
        next_s += interval_s
    return called, returned


def figures(result: dict[str, Any], called: list[float], returned: list[float],
            args: argparse.Namespace) -> dict[str, float]:
    visible = {int(number): at for number, at in result["visible"]}
    if sorted(visible) != list(range(args.commits)):
        raise RuntimeError("the follower missed entries")
    from_return = [(visible[n] - returned[n]) * 1000 for n in range(args.commits)]
    from_call = [(visible[n] - called[n]) * 1000 for n in range(args.commits)]
    start, end = result["idle"]["idle-start"], result["idle"]["idle-end"]
    idle_wall_s = end[2] - start[2]
    return {
        "return_p50_ms": percentile(from_return, 0.50),
        "return_p99_ms": percentile(from_return, 0.99),
        "return_max_ms": max(from_return),
        "call_p50_ms": percentile(from_call, 0.50),
        "call_p99_ms": percentile(from_call, 0.99),
        "idle_wall_s": idle_wall_s,
        "idle_cpu_ticks_ms": (end[0] - start[0]) * 1000,
        "idle_cpu_ms": (end[1] - start[1]) * 1000,
        "idle_cpu_percent": (end[1] - start[1]) / idle_wall_s * 100,
    }


# ---------------------------------------------------------------------- report


ROWS = [
    ("commit-to-visible p50, from commit() return (ms)", "return_p50_ms", None),
    ("commit-to-visible p99, from commit() return (ms)", "return_p99_ms", TARGET_P99_MS),
    ("commit-to-visible max, from commit() return (ms)", "return_max_ms", None),
    ("commit-to-visible p50, from commit() call (ms)", "call_p50_ms", None),
    ("commit-to-visible p99, from commit() call (ms)", "call_p99_ms", None),
    ("follower CPU while idle, os.times (ms)", "idle_cpu_ticks_ms", None),
    ("follower CPU while idle, process_time (ms)", "idle_cpu_ms", None),
    ("follower CPU while idle (% of one CPU)", "idle_cpu_percent", None),
]


def render(runs: list[dict[str, float]], args: argparse.Namespace, backend: str) -> list[str]:
    def cell(key: str) -> str:
        values = [run[key] for run in runs]
        return (f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})")

    idle_s = statistics.median(run["idle_wall_s"] for run in runs)
    lines = [
        (f"{len(runs)} runs of {args.commits} commits, one every {args.interval_ms:g} ms, then "
         f"{idle_s:.2f} s idle; io_backend {backend}; median (min..max)."),
        "",
        "| figure | median (min..max) | target | result |",
        "| --- | --- | --- | --- |",
    ]
    for label, key, target in ROWS:
        if target is None:
            verdict = ("about 0: met" if key == "idle_cpu_percent"
                       and statistics.median(run[key] for run in runs) < 1.0 else "")
            lines.append(f"| {label} | {cell(key)} | {'about 0' if 'idle' in key else ''} "
                         f"| {verdict} |")
            continue
        median = statistics.median(run[key] for run in runs)
        verdict = "met" if median <= target else "MISSED"
        lines.append(f"| {label} | {cell(key)} | <= {target:g} | {verdict} |")
    return lines


def write_report(lines: list[str], command: str) -> None:
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    section = [SECTION_TITLE, "", f"Run on {date}: `{command}`", "", *lines, ""]
    text = ""
    if os.path.exists(RESULTS_PATH):
        with open(RESULTS_PATH) as file:
            text = file.read()
    start = text.find(f"\n{SECTION_TITLE}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + "\n".join(section) + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(section)
    with open(RESULTS_PATH, "w") as file:
        file.write(text)


def choose_scratch(parent: str | None) -> str:
    base = parent or tempfile.gettempdir()
    if parent is None and filesystem_type(base) in TMPFS_TYPES:
        base = BENCH_DIR
    return tempfile.mkdtemp(prefix="fasterlog-follow-", dir=base)


def filesystem_type(path: str) -> str:
    best, kind = "", ""
    real = os.path.realpath(path)
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            mount_point = fields[1]
            if (real == mount_point or real.startswith(mount_point.rstrip("/") + "/")) \
                    and len(mount_point) > len(best):
                best, kind = mount_point, fields[2]
    return kind


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.follower:
        return run_follower(args.follower)
    scratch = choose_scratch(args.dir)
    try:
        with open_log(os.path.join(scratch, "probe")) as probe:
            backend = probe.io_backend
        runs = []
        for index in range(args.runs):
            runs.append(one_run(args, scratch))
            print(f"run {index + 1}: p99 from return {runs[-1]['return_p99_ms']:.3f} ms, "
                  f"idle CPU {runs[-1]['idle_cpu_ms']:.3f} ms", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    lines = render(runs, args, backend)
    print("\n".join(lines))
    if args.report:
        write_report(lines, " ".join(["python", "bench/bench_follow.py", *sys.argv[1:]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
