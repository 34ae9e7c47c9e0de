"""Turn raw case records into the Markdown tables that bench_log.py prints and --report saves.

Rules:
1. A cell is the median over reps, then (min..max) when there is more than one rep.
2. "x fasterlog" is, for each rep, the store's headline figure divided by fasterlog's headline
   figure from that same rep; the cell is the median of those per-rep ratios. Reps where either
   side is missing are left out rather than paired with another rep's figure.
3. A target is judged on fasterlog's median; every fasterlog row of a workload is judged.
4. Nothing a case failed with is hidden: failures and skips get their own section.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from workloads import WORKLOADS, Target, Workload

BASELINE = "fdatasync_baseline"
REFERENCE_STORE = "fasterlog"
STDERR_TAIL_LINES = 15  # enough for a Python traceback's last frames and its message


def format_value(value: float, kind: str) -> str:
    if kind == "rate":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        return f"{value / 1e3:.1f}k" if value >= 1e3 else f"{value:.0f}"
    if kind == "gb":
        return f"{value:.3f}"
    if kind == "ms":
        return f"{value:.2f}"
    return f"{value:.0f}"  # microseconds


def cell(values: list[float], kind: str) -> str:
    middle = format_value(statistics.median(values), kind)
    if len(values) == 1:
        return middle
    return f"{middle} ({format_value(min(values), kind)}..{format_value(max(values), kind)})"


def render(records: list[dict[str, Any]], machine: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# fasterlog benchmark results", ""]
    lines += render_meta(meta) + render_machine(machine, records, meta) + render_baseline(records)
    for workload in WORKLOADS:
        by_store = ok_results(records, workload.name)
        if by_store or any(r["workload"] == workload.name for r in records):
            lines += render_workload(workload, by_store, records)
    lines += render_targets(records) + render_problems(records)
    return "\n".join(lines) + "\n"


def ok_results(records: list[dict[str, Any]], workload_name: str) -> dict[str, dict[int, Any]]:
    """{store: {rep: record}} for the cases of one workload that succeeded."""
    by_store: dict[str, dict[int, Any]] = {}
    for record in records:
        if record["workload"] == workload_name and record["status"] == "ok":
            by_store.setdefault(record["store"], {})[record["rep"]] = record
    return by_store


def render_meta(meta: dict[str, Any]) -> list[str]:
    if not meta:
        return []
    mode = "quick (sizes / 10)" if meta["quick"] else "full size"
    summary = (
        f"Run on {meta['date']}, {meta['reps']} reps, {mode}, "
        f"{_duration(meta['duration_s'])} in all."
    )
    return [
        summary,
        "",
        "Commands:",
        "",
        "```",
        "pip install -r bench/requirements.txt   # the peers: lmdb, rocksdict",
        "pip install -e .                         # fasterlog itself",
        meta["command"],
        "```",
        "",
    ]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _load_line(machine: dict[str, Any], meta: dict[str, Any]) -> str:
    # Other work on the machine (a build, a test suite) moves every figure; say how busy it was.
    start = " / ".join(f"{value:.2f}" for value in machine.get("load_average_start", ()))
    end = " / ".join(f"{value:.2f}" for value in meta.get("load_average_end", ()))
    return f"- load average (1 / 5 / 15 min) at start {start or '?'}, at end {end or '?'}"


def render_machine(
    machine: dict[str, Any], records: list[dict[str, Any]], meta: dict[str, Any]
) -> list[str]:
    hardware = (
        f"- nproc {machine['nproc']} ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB memory, kernel {machine['kernel']}, "
        f"Python {machine['python']}"
    )
    lines = [
        "## Machine",
        "",
        hardware,
        f"- scratch directory: {machine['scratch']}",
        _load_line(machine, meta),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
    ]
    fasterlog = next(
        (
            r
            for r in records
            if r["store"] == REFERENCE_STORE and r["status"] == "ok" and "io_backend" in r
        ),
        None,
    )
    if fasterlog:
        lines.append(
            f"- fasterlog io_backend {fasterlog['io_backend']}, settings "
            f"{json.dumps(fasterlog['settings'])}, imported from {fasterlog['package_directory']}"
        )
    return lines + render_builds(records) + [""]


def render_builds(records: list[dict[str, Any]]) -> list[str]:
    """Which fasterlog build each case ran; a warning when the build changed mid-run."""
    cases_by_build: dict[str, list[str]] = {}
    for record in records:
        if record.get("build"):
            case = f"{record['workload']} rep {record['rep'] + 1}"
            cases_by_build.setdefault(record["build"], []).append(case)
    if len(cases_by_build) <= 1:
        return [f"- fasterlog build fingerprint {build}" for build in cases_by_build]
    warning = (
        f"- WARNING: fasterlog changed during this run ({len(cases_by_build)} builds); "
        "compare rows from one build only:"
    )
    lines = [warning]
    for build, cases in cases_by_build.items():
        lines.append(f"  - {build}: {cases[0]} .. {cases[-1]} ({len(cases)} cases)")
    return lines


def render_baseline(records: list[dict[str, Any]]) -> list[str]:
    baselines = [r for r in records if r["workload"] == BASELINE and r["status"] == "ok"]
    if not baselines:
        return []
    lines = [
        "## fdatasync baseline (os.pwrite 4 KiB + os.fdatasync, one thread)",
        "",
        "| file | ops/s | p50 us | p99 us |",
        "| --- | --- | --- | --- |",
    ]
    for mode, label in (("append", "growing"), ("overwrite", "already written (preallocated)")):
        cells = [
            cell([r[f"{mode}_{key}"] for r in baselines], kind)
            for key, kind in (("ops_per_s", "rate"), ("p50_us", "us"), ("p99_us", "us"))
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def describe_params(params: dict[str, int]) -> str:
    parts = []
    if "threads_count" in params:
        parts.append(
            f"{params['threads_count']} threads x {params['ops_per_thread_count']:,} "
            f"entries of {params['entry_size_bytes']} B"
        )
    else:
        parts.append(f"{params['entries_count']:,} entries of {params['entry_size_bytes']} B")
    if "commit_every_count" in params:
        parts.append(f"commit every {params['commit_every_count']:,}")
    return ", ".join(parts)


def render_workload(
    workload: Workload, by_store: dict[str, dict[int, Any]], records: list[dict[str, Any]]
) -> list[str]:
    params: dict[str, int] = next(
        (r["params"] for r in records if r["workload"] == workload.name and "params" in r), {}
    )
    headline, others = workload.columns[0], workload.columns[1:]
    lines = [f"## {workload.title}", "", f"{describe_params(params)}." if params else ""]
    if workload.notes:
        lines.append(workload.notes)
    lines += [
        "",
        "| store | "
        + " | ".join([headline.header, "x fasterlog", *[c.header for c in others]])
        + " |",
        "| --- " * (len(others) + 3) + "|",
    ]
    ran = {r["store"] for r in records if r["workload"] == workload.name}
    for store in (store for store in workload.stores if store in ran):
        lines.append(render_row(workload, store, by_store, records))
    return lines + render_cache_note(workload, by_store) + [""]


def render_row(
    workload: Workload,
    store: str,
    by_store: dict[str, dict[int, Any]],
    records: list[dict[str, Any]],
) -> str:
    reps = by_store.get(store)
    width = len(workload.columns) + 1
    if not reps:
        statuses = {
            r["status"] for r in records if r["workload"] == workload.name and r["store"] == store
        }
        status = "skipped" if statuses == {"skipped"} else "failed" if statuses else "not run"
        return f"| {store} | {status} |" + " |" * (width - 1)
    cells = [
        cell([r[column.metric] for r in reps.values()], column.kind) for column in workload.columns
    ]
    cells.insert(1, ratio_cell(reps, by_store.get(REFERENCE_STORE, {}), workload.columns[0].metric))
    return f"| {store} | " + " | ".join(cells) + " |"


def ratio_cell(reps: dict[int, Any], reference: dict[int, Any], metric: str) -> str:
    ratios = [
        record[metric] / reference[rep][metric]
        for rep, record in reps.items()
        if rep in reference and reference[rep][metric]
    ]
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x"


def render_cache_note(workload: Workload, by_store: dict[str, dict[int, Any]]) -> list[str]:
    drops = [r for reps in by_store.values() for r in reps.values() if "cache_dropped" in r]
    failed = [r for r in drops if not r["cache_dropped"]]
    if not drops:
        return []
    if failed:
        warning = (
            f"WARNING: the page cache was NOT dropped in {len(failed)} of {len(drops)} "
            f"cases ({failed[0]['cache_drop_error']}); those reads were warm."
        )
        return ["", warning]
    return ["", f"The page cache was dropped before every one of the {len(drops)} scans."]


def render_targets(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Targets for fasterlog (from the issue)",
        "",
        "| workload | store | target | median | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for workload in WORKLOADS:
        by_store = ok_results(records, workload.name)
        ran = any(r["workload"] == workload.name for r in records)
        for target in workload.targets if ran else ():
            for store in (s for s in workload.stores if s.startswith(REFERENCE_STORE)):
                lines.append(target_row(workload, store, target, by_store.get(store)))
    return lines + [""]


def target_row(workload: Workload, store: str, target: Target, reps: dict[int, Any] | None) -> str:
    kind = next(c.kind for c in workload.columns if c.metric == target.metric)
    if not reps:
        return f"| {workload.name} | {store} | {target.label} | - | NOT MEASURED |"
    median = statistics.median(r[target.metric] for r in reps.values())
    verdict = "met" if target.met(median) else "MISSED"
    return (
        f"| {workload.name} | {store} | {target.label} | {format_value(median, kind)} | {verdict} |"
    )


def render_problems(records: list[dict[str, Any]]) -> list[str]:
    lines = ["## Problems", ""]
    skipped = {r["store"]: r["error"] for r in records if r["status"] == "skipped"}
    lines += [f"- skipped: every case of {store}: {error}" for store, error in skipped.items()]
    failures: dict[tuple[str, str, str], tuple[dict[str, Any], list[int]]] = {}
    for record in (r for r in records if r["status"] == "failed"):
        # The same error in several reps is said once, with the list of its reps.
        key = (record["workload"], record["store"], record["error"])
        failures.setdefault(key, (record, []))[1].append(record["rep"] + 1)
    for record, reps in failures.values():
        lines += render_failure(record, reps)
    if len(lines) == 2:
        lines.append("None: every case ran and read back what it wrote.")
    return lines + [""]


def render_failure(record: dict[str, Any], reps: list[int]) -> list[str]:
    where = f"{record['workload']} on {record['store']} (rep {', '.join(map(str, reps))})"
    lines = [f"- failed: {where}: {record['error']}"]
    if record.get("stderr"):
        tail = record["stderr"].strip().splitlines()[-STDERR_TAIL_LINES:]
        lines += ["", "  ```", *[f"  {line}" for line in tail], "  ```", ""]
    return lines
