#!/usr/bin/env python3
"""redis-benchmark against `fasterlog serve` and against redis-server, in the same run.

Peers: Debian's redis-server with appendonly yes, once with appendfsync always (every reply
synced, as fasterlog's default) and once with everysec (replies not synced). Each server runs
on a private temporary directory and port and is stopped by its pid. Rows (issue 5):
  XADD 100 B, one client, pipeline 1000      -c 1  -P 1000
  XADD 100 B, 50 clients, no pipelining      -c 50 -P 1
  SET and GET (redis-benchmark -t set,get),  -c 50 -P 1
Each row is the median of --reps runs (min..max), with the ratios fasterlog / always and
fasterlog / everysec. Targets: >= 1.0 of always on every row, >= 0.5 of everysec. A second
table gives each server's CPU per request (from /proc/PID/stat around each run).

  python3 bench/bench_service.py [--quick] [--reps 3] [--report]
--report writes bench/RESULTS_SERVICE.md. Needs redis-server and redis-tools
(scripts/setup.sh installs them).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VALUE_100_B = "v" * 100


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rows(quick: bool) -> list[tuple[str, list[str], list[str]]]:
    scale = 10 if quick else 1
    return [
        ("XADD 100 B  -c 1  -P 1000", ["-n", str(1_000_000 // scale), "-c", "1", "-P", "1000"],
         ["XADD", "s", "*", "d", VALUE_100_B]),
        ("XADD 100 B  -c 50 -P 1", ["-n", str(100_000 // scale), "-c", "50", "-P", "1"],
         ["XADD", "s", "*", "d", VALUE_100_B]),
        ("SET  -c 50 -P 1", ["-n", str(100_000 // scale), "-c", "50", "-P", "1", "-t", "set"],
         []),
        ("GET  -c 50 -P 1", ["-n", str(100_000 // scale), "-c", "50", "-P", "1", "-t", "get"],
         []),
    ]


def server_cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process and all its threads so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_count(arguments: list[str]) -> int:
    return int(arguments[arguments.index("-n") + 1])


def run_benchmark(port: int, arguments: list[str], command: list[str]) -> float:
    done = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--csv",
                           *arguments, *command], capture_output=True, text=True, timeout=900,
                          check=False)
    if done.returncode != 0 or "rror" in done.stderr:
        raise RuntimeError(f"redis-benchmark failed: {done.stderr.strip()[:300]}")
    found = [row for row in csv.reader(io.StringIO(done.stdout)) if row and row[0] != "test"]
    if not found:
        raise RuntimeError(f"redis-benchmark printed no result: {done.stdout[:300]}")
    return float(found[-1][1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def start(peer: str, directory: str, port: int) -> subprocess.Popen[bytes]:
    if peer == "fasterlog":
        environment = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "fasterlog", "serve", "--dir",
                   os.path.join(directory, "data"), "--port", str(port)]
    else:
        environment = None
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir",
                   directory, "--appendonly", "yes", "--appendfsync", peer.split()[-1],
                   "--save", "", "--logfile", os.path.join(directory, "redis.log")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=environment)
    wait_for_port(port, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()  # our own child, by pid
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(60)


PEERS = ("fasterlog", "redis always", "redis everysec")


def replies_per_sync(port: int) -> float:
    """Connection batches (a pipelined read's writes) answered per sync on fasterlog's busier
    log (LOG.INFO): group commit at work across connections."""
    done = subprocess.run(["redis-cli", "-p", str(port), "LOG.INFO"], capture_output=True,
                          text=True, timeout=60, check=False)
    words = done.stdout.split()
    info = dict(zip(words[::2], words[1::2], strict=False))  # an odd last word is dropped
    best = 0.0
    for name in ("log", "kv"):
        commits = int(info.get(f"{name}_commits", "0"))
        if commits:
            best = max(best, int(info[f"{name}_commit_requests"]) / commits)
    return best


group_sizes: dict[str, list[float]] = {}
# Server CPU (all threads, user + system) per request: steadier than rates on a shared machine,
# and what decides the rate once the machine is quiet.
cpu_us: dict[tuple[str, str], list[float]] = {}


def per_sync(values: list[float]) -> str:
    median = statistics.median(values) if values else 0.0
    return f"{median:.1f}" if median else "-"


def measure(reps: int, quick: bool) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    for rep in range(reps):
        for peer in PEERS:
            for label, arguments, command in rows(quick):
                # A fresh server per row: each starts from an empty data directory.
                directory = tempfile.mkdtemp(prefix="bench-service-")
                port = free_port()
                process = start(peer, directory, port)
                try:
                    cpu_before = server_cpu_seconds(process.pid)
                    rate = run_benchmark(port, arguments, command)
                    cpu_us.setdefault((peer, label), []).append(
                        (server_cpu_seconds(process.pid) - cpu_before) * 1e6
                        / requests_count(arguments))
                    if peer == "fasterlog":
                        group_sizes.setdefault(label, []).append(replies_per_sync(port))
                finally:
                    stop(process)
                    shutil.rmtree(directory, ignore_errors=True)
                results.setdefault((peer, label), []).append(rate)
                print(f"rep {rep + 1}/{reps} {peer:15} {label:26} {rate:12,.0f} req/s",
                      flush=True)
    return results


def table(results: dict[tuple[str, str], list[float]], quick: bool) -> list[str]:
    lines = ["| row | fasterlog (always) | redis always | redis everysec | vs always | "
             "vs everysec | fasterlog batches per sync |", "|---|---|---|---|---|---|---|"]
    for label, _, _ in rows(quick):
        cells = []
        medians = {}
        for peer in PEERS:
            values = results[(peer, label)]
            medians[peer] = statistics.median(values)
            cells.append(f"{medians[peer]:,.0f} ({min(values):,.0f}..{max(values):,.0f})")
        ours = medians["fasterlog"]
        lines.append(f"| {label} | {' | '.join(cells)} | "
                     f"{ours / medians['redis always']:.2f}x | "
                     f"{ours / medians['redis everysec']:.2f}x | "
                     f"{per_sync(group_sizes.get(label, []))} |")
    lines += ["", "Server CPU per request (µs, user + system, every thread; median of the reps):",
              "", "| row | fasterlog | redis always | redis everysec |", "|---|---|---|---|"]
    for label, _, _ in rows(quick):
        lines.append(f"| {label} | " + " | ".join(
            f"{statistics.median(cpu_us[(peer, label)]):.1f}" for peer in PEERS) + " |")
    return lines


def uvloop_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument("--report", action="store_true", help="write bench/RESULTS_SERVICE.md")
    arguments = parser.parse_args()
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            print(f"bench_service: {tool} is not installed (scripts/setup.sh)", file=sys.stderr)
            return 2
    results = measure(arguments.reps, arguments.quick)
    lines = table(results, arguments.quick)
    print("\n".join(lines))
    if arguments.report:
        load = os.getloadavg()
        version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                 text=True, check=False).stdout.strip()
        text = [
            "# Service benchmark: redis-benchmark against `fasterlog serve` and redis-server",
            "",
            "Produced by `python3 bench/bench_service.py --report"
            f"{' --quick' if arguments.quick else ''} --reps {arguments.reps}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
            f"{os.cpu_count()} cores, load average {load[0]:.1f} at the end (the benchmark's "
            "own included; on a shared machine read the ratios, not the absolute rates).",
            f"Peer: {version}, appendonly yes, private directory and port per run.",
            "fasterlog serve answers every write after the group commit that syncs it "
            "(the same promise as appendfsync always); everysec answers before syncing. "
            f"fasterlog runs on {'uvloop' if uvloop_installed() else 'asyncio'}; "
            "batches per sync is LOG.INFO's count of commit requests (one per connection "
            "and pipelined read that wrote) over syncs run (median): group commit across "
            "connections.",
            "Requests per second, median of the reps (min..max); ratios are fasterlog over "
            "the peer. Targets (issue 5): >= 1.0x of always on every row, >= 0.5x of "
            "everysec.",
            "",
            *lines,
            "",
        ]
        (ROOT / "bench" / "RESULTS_SERVICE.md").write_text("\n".join(text))
        print("wrote bench/RESULTS_SERVICE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
