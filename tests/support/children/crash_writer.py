"""Child process for the crash tests: a producer that tests/reliability/test_crash.py kills with
SIGKILL.

Goal: give the crash tests a writer that can be killed at any instant (inside append, inside a
page flush, inside commit's fdatasync, inside a segment switch) while leaving behind an exact
record of what the log acknowledged before it died.

Method and rules:
1. Entries are a pure function of (content_seed, sequence number), and batches of
   (content_seed, batch index), so the parent rebuilds byte for byte what was appended without
   any message from the child. The functions below are imported by the parent for that.
2. The child first opens (and so recovers) the log, counts what is already there and continues
   from that count, so one directory can be killed and recovered many times in a row.
3. After each commit() returns, the child appends one line "<count> <committed_until>\\n" to the
   acknowledgement file with a single os.write on an O_APPEND descriptor. A line is written only
   after commit() returned, so every line names a prefix that the log promised was durable. The
   line is far shorter than PIPE_BUF and is written in one call, so a kill never leaves half of
   it (and the parent ignores a line without its newline anyway).
4. When everything is written the child sleeps until it is killed; it never exits on its own
   except on error (non-zero exit, traceback on stderr), which the parent reports.

Usage: python tests/support/children/crash_writer.py MODE JSON_ARGUMENTS, MODE one of "stream",
"batches", "hold".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from typing import Any

# A batch holds at most this many entries; a bound the tests rely on when sizing pages.
batch_entries_count_max = 8
# Bytes at the start of every batch entry: u64 batch index, u16 position inside the batch.
batch_tag_size_bytes = 10


def _digest(content_seed: int, kind: str, index: int) -> bytes:
    return hashlib.blake2b(f"{kind}:{content_seed}:{index}".encode(), digest_size=32).digest()


def _fill(pattern: bytes, size_bytes: int) -> bytes:
    repeats = size_bytes // len(pattern) + 1
    return (pattern * repeats)[:size_bytes]


def stream_entry(content_seed: int, sequence_number: int, entry_size_max: int) -> bytes:
    """The entry with this sequence number: sizes from 0 B up to entry_size_max."""
    digest = _digest(content_seed, "stream", sequence_number)
    if sequence_number % 97 == 96:
        size_bytes = entry_size_max  # the largest entry shows up regularly, not only by luck
    elif digest[0] < 26:
        size_bytes = 0
    elif digest[0] < 128:
        size_bytes = 1 + digest[1] % 16
    elif digest[0] < 230:
        size_bytes = 17 + int.from_bytes(digest[2:4], "little") % 500
    else:
        size_bytes = int.from_bytes(digest[4:8], "little") % (entry_size_max + 1)
    pattern = sequence_number.to_bytes(8, "little") + digest
    return _fill(pattern, size_bytes)


def batch_entries(content_seed: int, batch_index: int, entry_size_max: int) -> list[bytes]:
    """The entries of batch number batch_index: 1 to 8 entries, each tagged with the index."""
    digest = _digest(content_seed, "batch", batch_index)
    entries_count = 1 + digest[0] % batch_entries_count_max
    # Keep one batch within about two pages so a batch often straddles a page boundary.
    size_max_bytes = max(batch_tag_size_bytes, entry_size_max // 4)
    entries = []
    for position in range(entries_count):
        tag = batch_index.to_bytes(8, "little") + position.to_bytes(2, "little")
        size_bytes = batch_tag_size_bytes + digest[1 + position] * 7 % (
            size_max_bytes - batch_tag_size_bytes + 1
        )
        entries.append(tag + _fill(digest, size_bytes - batch_tag_size_bytes))
    return entries


def batch_index_of(entry: bytes) -> int:
    return int.from_bytes(entry[:8], "little")


def _open(arguments: dict[str, Any]) -> Any:
    from fasterlog import FasterLog

    return FasterLog.open(arguments["directory"], **arguments["settings"])


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _sleep_until_killed() -> None:
    while True:
        time.sleep(3600)


def run_stream(arguments: dict[str, Any]) -> None:
    log = _open(arguments)
    sequence_number = sum(1 for _ in log.scan())
    rhythm = random.Random(arguments["rhythm_seed"])
    ack_fd = os.open(arguments["ack_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _say(f"ready {sequence_number}")
    entries_max = arguments["entries_max"]
    while sequence_number < entries_max:
        group_size = rhythm.randint(1, arguments["group_size_max"])
        for _ in range(group_size):
            log.append(stream_entry(arguments["content_seed"], sequence_number, log.entry_size_max))
            sequence_number += 1
        # The cookie carries the count so the parent can check that recovery returns the cookie
        # of exactly the commit it recovered to.
        committed_until = log.commit(cookie=str(sequence_number).encode())
        os.write(ack_fd, f"{sequence_number} {committed_until}\n".encode())
    _sleep_until_killed()


def run_batches(arguments: dict[str, Any]) -> None:
    log = _open(arguments)
    batch_index = 0
    for _, entry in log.scan():
        batch_index = batch_index_of(entry) + 1
    rhythm = random.Random(arguments["rhythm_seed"])
    ack_fd = os.open(arguments["ack_path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _say(f"ready {batch_index}")
    while batch_index < arguments["batches_max"]:
        for _ in range(rhythm.randint(1, arguments["batches_per_commit_max"])):
            entries = batch_entries(arguments["content_seed"], batch_index, log.entry_size_max)
            log.append_many(entries)
            batch_index += 1
        committed_until = log.commit()
        os.write(ack_fd, f"{batch_index} {committed_until}\n".encode())
    _sleep_until_killed()


def run_hold(arguments: dict[str, Any]) -> None:
    """Open the log as its writer, commit a few entries, then hold it until stdin closes."""
    log = _open(arguments)
    for entry in arguments["entries"]:
        log.append(entry.encode())
    log.commit()
    _say(f"ready {os.getpid()}")
    sys.stdin.read()
    log.close()


modes = {"stream": run_stream, "batches": run_batches, "hold": run_hold}

if __name__ == "__main__":
    modes[sys.argv[1]](json.loads(sys.argv[2]))
