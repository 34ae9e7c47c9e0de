"""Writes RELIABILITY.md from the figures a run of the suite recorded (results.jsonl).

Usage: python3 -m tests.reliability.report OUTPUT_MD RESULTS_JSONL... [--command TEXT]
           [--keep PREVIOUS_MD] [--note TEXT]

--keep starts from the figures table of an earlier RELIABILITY.md, so a partial run (one test
in long mode, say) updates its rows and keeps the others, each with its own date; a test the
results hold loses every kept row of it, in any mode or backend (a long run replaces the
short rows of the same test).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from typing import Any

PROMISES = """\
## What is promised

- **An acknowledged commit survives a crash.** Once `commit()` has returned, its entries (and
  everything before them) are recovered after a kill -9 of the process or a power cut, byte for
  byte and in order. Entries appended after the last returned commit may or may not come back;
  when they do, they come back whole and in order (a prefix of what was appended), never
  reordered, duplicated or invented.
- **Corruption is never returned as data.** Every frame carries a CRC32C seeded by the log's
  salt and the frame's address; damage to committed data raises `CorruptionError` naming the
  frame's address, and is never mistaken for a torn tail and silently cut. A torn tail (bytes
  after the newest durable commit) is cut back to that commit.
- **Failed I/O is reported, never acknowledged.** A failed write, a short write, ENOSPC or a
  failed fsync makes the commit raise (`LogIOError`, `DiskFullError` or `LogFencedError`); the
  log is then fenced: later writes raise `LogFencedError`, committed data stays readable, and a
  reopen recovers. A failed fsync is never retried (after one, the kernel may have dropped the
  dirty pages, so a retry that succeeds would prove nothing).
- **Bad protocol input does not bring the service down.** The RESP codec returns commands or
  replies, asks for more bytes, or raises `RemoteProtocolError`; it never crashes, hangs or
  buffers past its limits.

## What is not promised (the assumptions)

- **The disk honours flushes.** Durability rests on `fdatasync`/`fsync` and `RWF_DSYNC`
  writes reaching stable storage when they return. A disk or virtual disk with a volatile
  write cache that ignores flushes (or a file system mounted with `nobarrier`) can lose
  acknowledged commits; no software above it can tell.
- **Sector writes are atomic.** An overwrite of a sector that already holds synced bytes lands
  whole or not at all (512 B, or 4 KiB on 4Kn disks). The power-loss model tears writes only
  at those boundaries and garbles only sectors beyond the furthest synced data. A device that
  tears inside a sector, or garbles a sector it was rewriting with the same bytes, is outside
  the model.
- **POSIX directory semantics.** A create, rename or unlink is durable after an fsync of its
  directory, which the core makes; until then any prefix of them may be lost.
- **Silent corruption is detected, not repaired.** There is one copy; corruption of committed
  data stops reads at the damaged frame (`CorruptionError`), it is not corrected. The CRC32C
  catches every single-bit and short burst error; longer random damage escapes it with
  probability about 2^-32 per damaged frame.
- **Side files written by Python** (named cursors; KV checkpoints and projection snapshots
  through `fasterlog/durable.py`) are in the traced power-loss states for cursors and KV
  checkpoints; projection snapshots share the KV checkpoints' code path but have no traced
  workload of their own. The model keeps directories once created (`os.makedirs` is not
  traced; the layers fsync the parent after creating one).
- **Readers see durable data only**: a read-only open syncs what it recovers (best effort on a
  read-only medium); followers then see only what the writer synced.
- **Memory and the process**: a bug elsewhere in the process that scribbles over the log's
  memory ring before a commit can write garbage that then carries a valid checksum.
"""


def rows_of(markdown_path: str) -> list[dict[str, str]]:
    """The figures table of an earlier RELIABILITY.md, as entries (escaped pipes undone)."""
    entries = []
    with open(markdown_path) as file:
        for line in file:
            if not line.startswith("| ") or line.startswith(("| test ", "|---")):
                continue
            cells = [cell.strip().replace("\\|", "|")
                     for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if len(cells) != 6:
                continue
            test, figure, mode, backend, date, reproduce = cells
            entries.append({"test": test, "figure": figure, "mode": mode, "backend": backend,
                            "date": date, "reproduce": reproduce.strip("`")})
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output")
    parser.add_argument("results", nargs="+", help="results.jsonl files, later ones win")
    parser.add_argument("--command", default="bash scripts/reliability.sh")
    parser.add_argument("--note", default="", help="a paragraph about this run (shortened?)")
    parser.add_argument("--keep", default=None, help="an earlier RELIABILITY.md to update")
    arguments = parser.parse_args()
    entries_by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in rows_of(arguments.keep) if arguments.keep else []:
        entries_by_key[(entry["test"], entry["mode"], entry["backend"])] = dict(entry)
    kept_tests = {key[0] for key in entries_by_key}
    for path in arguments.results:
        with open(path) as file:
            for line in file:
                if line.strip():
                    entry = json.loads(line)
                    if entry["test"] in kept_tests:  # a kept row of it, in any mode, goes
                        kept_tests.discard(entry["test"])
                        entries_by_key = {key: kept for key, kept in entries_by_key.items()
                                          if key[0] != entry["test"]}
                    # A later run of the same test, mode and backend replaces the earlier one.
                    entries_by_key[(entry["test"], entry["mode"], entry["backend"])] = entry
    entries = list(entries_by_key.values())
    dates = sorted({entry["date"] for entry in entries})
    lines = [
        "# Reliability",
        "",
        "Generated by the reliability suite (`tests/reliability/report.py`); do not edit by hand.",
        f"Regenerate with `{arguments.command}` (long mode; `--short` for the CI counts).",
        "",
        (f"Run: {dates[0] if dates else '?'} .. {dates[-1] if dates else '?'} on "
         f"{platform.system()} {platform.release()}, {platform.machine()}, Python "
         f"{platform.python_version()}."),
        "",
        *([arguments.note, ""] if arguments.note else []),
        PROMISES,
        "## Figures",
        "",
        ("Each line is one test of the suite, its figure, the mode and I/O backend it ran with, "
         "the date, and the command that reproduces it. Zero is the bar for every count of "
         "losses, failures and undetected damage."),
        "",
        "| test | figure | mode | backend | date | reproduce |",
        "|---|---|---|---|---|---|",
    ]
    for entry in entries:
        figure = entry["figure"].replace("|", "\\|")
        lines.append(f"| {entry['test']} | {figure} | {entry['mode']} | {entry['backend']} | "
                     f"{entry['date']} | `{entry['reproduce']}` |")
    lines += [
        "",
        "## How the figures are made",
        "",
        ("- **power_loss**: `tests/reliability/test_reliability_power_loss.py`. The C core "
         "records every write (with its bytes), sync, create, rename, unlink and preallocation it "
         "makes (`fasterlog.testing.IOTrace`, the trace layer in `fl_device.c`), plus a mark "
         "after each `commit()` returned. `fasterlog.testing.CrashStates` replays the trace to "
         "random crash points and draws what a power cut could leave there: synced data kept; "
         "later writes kept, dropped or torn at 512 B / 4 KiB, fresh sectors zeroed or garbled; "
         "unsynced directory operations dropped. Each state is recovered and checked."),
        ("- **io_errors**: `tests/reliability/test_reliability_io_errors.py`. EIO, ENOSPC "
         "(persistent and transient) and short writes injected by the device fault layer at each "
         "operation index of a workload of about 2,400 device operations; `io_errors[asan+ubsan]` "
         "runs the same sweep, over a coarser stride in short mode, in a child process under "
         "the AddressSanitizer+UndefinedBehaviorSanitizer build of the core."),
        ("- **commit_sync**: `tests/reliability/test_reliability_commit_sync.py`. The same "
         "trace, of commits spanning 16 KiB segments while preallocation creates segments and "
         "truncation deletes them, replayed to each `commit()` that returned: every segment "
         "file written since its last sync must have been synced (or written with RWF_DSYNC), "
         "its creation made durable by a directory sync and its preallocated size by a sync "
         "of the file."),
        ("- **fsync_failure**: `tests/reliability/test_corruption.py`; the trace counts the syncs "
         "made after a failed one."),
        ("- **kill_9_random / crash_point**: `tests/reliability/test_crash.py`; a child writer is "
         "killed with SIGKILL at random moments, or kills itself at a named point in the C core "
         "(`FASTERLOG_CRASH_AT=name:count`)."),
        "- **bit_flips / random_corruptions**: `tests/reliability/test_corruption.py`.",
        ("- **torn_tail / mid_log_damage**: `tests/reliability/test_corruption.py`. The last "
         "entry and its commit record cut, zeroed or garbled from every byte offset (each case a "
         "fresh copy of the log, reopened, then written to and reopened again); one flipped bit "
         "in a frame that later commits follow, after a clean close and after a crash. These run "
         "whole in CI: they have no long mode."),
        ("- **limits_and_auth**: `tests/fasterlog_server/test_service.py`; raw sockets against a "
         "server with a password: headers over the limits are refused before any payload is sent."),
        ("- **fuzz_resp**: `tests/reliability/test_reliability_fuzz.py` runs "
         "`tests/support/children/fuzz_resp.py` (atheris); hypothesis strategies, hiredis "
         "agreement and every-offset splits are in `tests/fasterlog_server/test_resp.py`."),
        ("- **fuzz_resp_mutations**: `tests/reliability/test_reliability_fuzz.py`, seeded "
         "mutations of valid RESP2/RESP3 frames through the same property "
         "(`tests/support/resp_fuzz_check.py`), without coverage feedback: the volume beside "
         "atheris's guidance. The property also checks that the server's fast paths (the C split "
         "of whole arrays, `feed_and_take`, and the pure-Python split) return exactly what "
         "`next_command` returns one command at a time."),
        ("- **fuzz_xadd_lane**: `tests/fasterlog_server/test_service_xadd_lane.py`, seeded "
         "mutations of XADD frames through the server's C path for a lone XADD "
         "(`fasterlog_server/csrc/xadd_lane.c`): whenever it takes a frame, the pure-Python "
         "reference reader must read exactly that one XADD from it and `StreamStore.add_now` must "
         "make the same record, to the byte, and the same index changes."),
        "",
    ]
    with open(arguments.output, "w") as file:
        file.write("\n".join(lines))


if __name__ == "__main__":
    main()
