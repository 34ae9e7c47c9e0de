"""Every commit syncs every segment it wrote before it returns (issue 14, defect 10's second
half: the segment table's `dirty` flag, written while the preallocation thread moved the
table, could land in the freed copy, and the commit's sync loop then skipped that segment).

Goal: nothing a returned commit acknowledged rests on an unsynced write. The power-loss
states (tests/reliability/test_reliability_power_loss.py) draw random crash points and may
miss a commit whose window is short; this checks every returned commit, from the trace alone.

Method: one writer thread appends entries of varied sizes (up to a page) and commits them
in groups to a log of 4 KiB pages and 16 KiB segments, so most commits span a segment
boundary; the preallocation thread meanwhile creates the segments ahead (growing the segment
table) and truncate_until every few commits makes the next commit delete the oldest
segments (shifting the table). The run is recorded with fasterlog.testing.IOTrace, with a
mark after each commit() returned. Replaying the trace, a segment file is unsynced from a
write of data (through the device, not an RWF_DSYNC one) until its next fsync/fdatasync; at
each mark no segment file may be unsynced, and every segment file written so far must have
had its creation made durable by a sync of the log directory and its preallocated size by a
sync of the file (open takes a segment shorter than that below the committed address for a
cut file, fl_recovery.c; an RWF_DSYNC write makes its own bytes durable, not the size: the
long power-loss run found newest segments cut back to their synced data, refused at open).
The writer is the only thread
that writes data between a commit's return and its mark (the preallocation thread writes
zeros, which hold nothing acknowledged), so at a mark nothing may be pending at all.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import Any

from fasterlog import FasterLog
from fasterlog.testing import IOTrace, TraceOp
from tests.support.figures import record
from tests.support.mode import scaled

page_size_bytes = 4096
settings: dict[str, Any] = {
    "page_size_bytes": page_size_bytes,
    "memory_size_bytes": 4 * page_size_bytes,
    "segment_size_bytes": 4 * page_size_bytes,  # a commit of a few KiB often crosses one
}
# Under the log's entry_size_max (a page less its header).
entry_size_max = page_size_bytes - 64
truncate_every_commits = 7
segments_kept = 3  # truncation keeps about this many segments below the tail


def segment_of(path: str) -> int | None:
    name = os.path.basename(path)
    if name.startswith("segment-") and name.endswith(".fl") and name[8:16].isdigit():
        return int(name[8:16])
    return None


def run_workload(directory: str, seed: int, commits_count: int) -> None:
    """Appends, commits (marking the trace after each returned commit with its
    committed-until address) and truncates; the trace is the caller's."""
    rng = random.Random(seed)
    addresses: list[int] = []
    with FasterLog.open(directory, **settings) as log:
        for commit in range(commits_count):
            for _ in range(rng.randint(1, 6)):
                size = rng.choice((0, 16, 300, 2000, 3000, entry_size_max))
                addresses.append(log.append(bytes([commit % 251]) * size))
            IOTrace.mark(log.commit())
            if commit % truncate_every_commits == truncate_every_commits - 1:
                keep_from = log.tail_address - segments_kept * settings["segment_size_bytes"]
                kept = [address for address in addresses if address >= keep_from]
                if kept and kept[0] > log.begin_address:
                    log.truncate_until(kept[0], force=True)
                    del addresses[:len(addresses) - len(kept)]


@dataclass
class SyncCheck:
    """The replay of one trace: what each returned commit left unsynced."""

    directory: str
    commits: int = 0
    spanning_commits: int = 0  # commits whose writes went to two segment files or more
    dsync_commits: int = 0     # commits made durable by their RWF_DSYNC write alone
    syncs: int = 0
    created: int = 0
    deleted: int = 0
    unsynced_commits: int = 0  # commits that returned over an unsynced write, creation or size
    problems: list[str] = field(default_factory=list)

    def replay(self, ops: list[TraceOp]) -> None:
        unsynced: dict[str, list[tuple[int, int]]] = {}  # path -> its unsynced data writes
        undurable_names: set[str] = set()  # created, no directory sync since
        unsized: set[str] = set()          # preallocated, no sync of the file since
        written: set[str] = set()          # segment files with data, not deleted
        written_since_mark: set[str] = set()
        dsync_since_mark = plain_since_mark = 0
        for op in ops:
            if op.op == "mark":
                self._check_mark(op.offset, unsynced, undurable_names & written,
                                 unsized & written)
                self.commits += 1
                self.spanning_commits += len(written_since_mark) >= 2
                self.dsync_commits += dsync_since_mark > 0 and plain_since_mark == 0
                written_since_mark.clear()
                dsync_since_mark = plain_since_mark = 0
                continue
            if op.path != self.directory and os.path.dirname(op.path) != self.directory:
                continue
            if op.op == "sync" and op.directory:
                if op.path == self.directory:
                    undurable_names.clear()
            elif segment_of(op.path) is None:
                continue
            elif op.op == "create":
                self.created += 1
                undurable_names.add(op.path)
            elif op.op == "unlink":
                self.deleted += 1
                unsynced.pop(op.path, None)
                undurable_names.discard(op.path)
                unsized.discard(op.path)
                written.discard(op.path)
            elif op.op == "sync":
                self.syncs += 1
                unsynced.pop(op.path, None)
                unsized.discard(op.path)
            elif op.op == "extend":
                unsized.add(op.path)
            elif op.op == "write" and op.data is not None:
                written.add(op.path)
                written_since_mark.add(op.path)
                if op.dsync:
                    dsync_since_mark += 1
                else:
                    plain_since_mark += 1
                    unsynced.setdefault(op.path, []).append((op.offset, op.size))

    def _check_mark(self, committed_until: int, unsynced: dict[str, list[tuple[int, int]]],
                    undurable: set[str], unsized: set[str]) -> None:
        self.unsynced_commits += bool(unsynced or undurable or unsized)
        for path, writes in sorted(unsynced.items()):
            self.problems.append(
                f"commit {self.commits} (committed until {committed_until}) returned with "
                f"{len(writes)} unsynced write(s) to {os.path.basename(path)}, first "
                f"[{writes[0][0]}, {writes[0][0] + writes[0][1]})")
        for path in sorted(undurable):
            self.problems.append(
                f"commit {self.commits} (committed until {committed_until}) returned with "
                f"{os.path.basename(path)} written but its creation not made durable")
        for path in sorted(unsized):
            self.problems.append(
                f"commit {self.commits} (committed until {committed_until}) returned with "
                f"{os.path.basename(path)} written but its preallocated size not made durable")


def test_every_commit_syncs_every_segment_it_wrote_before_it_returns(tmp_path: Any) -> None:
    traces_count = scaled(4, 40)
    commits_count = scaled(800, 3000)
    checks: list[SyncCheck] = []
    for trace_index in range(traces_count):
        # The traced writer runs on the real disk (O_DIRECT where it allows), as in production.
        directory = os.path.join(str(tmp_path), f"traced-{trace_index}")
        with IOTrace() as trace:
            run_workload(directory, 4000 + trace_index, commits_count)
        check = SyncCheck(os.path.realpath(directory))
        check.replay(trace.ops)
        checks.append(check)
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    total = {name: sum(getattr(check, name) for check in checks)
             for name in ("commits", "spanning_commits", "dsync_commits", "syncs", "created",
                          "deleted", "unsynced_commits")}
    problems = [problem for check in checks for problem in check.problems]
    assert total["commits"] == traces_count * commits_count
    assert total["spanning_commits"] > total["commits"] // 4, (
        f"too few commits span a segment boundary: {total}")
    assert total["deleted"] > traces_count * 10, f"truncation deleted too few segments: {total}"
    record("commit_sync",
           f"{total['commits']:,} returned commits in {traces_count} traces over 16 KiB segments "
           f"({total['spanning_commits']:,} spanning a segment boundary, "
           f"{total['dsync_commits']:,} made durable by their RWF_DSYNC write alone; segments "
           f"created by preallocation {total['created']:,}, deleted by truncation "
           f"{total['deleted']:,}): commits returned over an unsynced segment write, an "
           f"undurable segment creation or an undurable segment size "
           f"{total['unsynced_commits']}",
           {**total, "traces": traces_count},
           "python3 -m pytest -s tests/reliability/test_reliability_commit_sync.py")
    assert not problems, "\n".join(problems[:10])
