"""The producer of the Jepsen-style test (tests/reliability/test_jepsen.py), run as a child process.

    python -m tests.support.children.jepsen_producer DIR HISTORY SEED

It opens (creates or recovers) the log in DIR as its writer and appends numbered entries
forever, in groups, one commit per group, until the test kills it with SIGKILL. Entry number n
is b"<n> " followed by filler of a random size, so frames fall across page ends. The next number
after a restart comes from the cookie of the newest recovered commit (the count of entries), so
the numbers in the log stay contiguous whatever was cut by recovery.

History (HISTORY, opened O_APPEND; each line one os.write, so a kill never tears one):
    ack COUNT          commit() returned: entries 0 .. COUNT-1 are durable (acknowledged)
    truncated ADDRESS  truncate_until(ADDRESS) was accepted (it respects the consumer's cursor)
    refused NAME POS   truncate_until was refused: cursor NAME holds the log at POS
    unaligned POS      truncate_until(POS) was refused as not an entry start (page-end padding)
It prints "ready COUNT" on stdout once the log is open.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

from fasterlog import FasterLog, errors

from ..settings import SMALL_SETTINGS

group_size_max = 20
filler_size_max_bytes = 300
pause_max_s = 0.002  # between groups, so that the log grows a few MiB per test, not more
truncate_every_commits_count = 40
commits_max = 1_000_000  # a bound for a producer whose parent is gone


def entry(number: int, rhythm: random.Random) -> bytes:
    return b"%d " % number + b"." * rhythm.randint(0, filler_size_max_bytes)


def recovered_count(log: FasterLog) -> int:
    cookie = log.cookie
    if cookie is None:
        return 0
    count = json.loads(cookie)["count"]
    assert isinstance(count, int) and count >= 0
    return count


def try_truncate(log: FasterLog, history_fd: int) -> None:
    """Tries to drop the whole committed log; retention refuses and names the slowest cursor,
    and then we truncate up to that cursor's position instead."""
    target = log.committed_until_address
    try:
        log.truncate_until(target)
    except errors.RetentionError as refusal:
        os.write(history_fd, b"refused %s %d\n" % (refusal.cursor.encode(), refusal.position))
        target = refusal.position
        try:
            log.truncate_until(target)
        except errors.InvalidAddressError:
            # The cursor's position is a frame end, which may be page-end padding or a gap:
            # not a place the core lets the begin address go.
            os.write(history_fd, b"unaligned %d\n" % target)
            return
    os.write(history_fd, b"truncated %d\n" % target)


def main(directory: str, history: str, seed: int) -> None:
    rhythm = random.Random(seed)
    history_fd = os.open(history, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    log = FasterLog.open(directory, **SMALL_SETTINGS)
    count = recovered_count(log)
    os.write(1, b"ready %d\n" % count)
    for commit_index in range(1, commits_max):
        group = [entry(count + i, rhythm) for i in range(rhythm.randint(1, group_size_max))]
        if rhythm.random() < 0.5:
            log.append_many(group)
        else:
            for item in group:
                log.append(item)
        count += len(group)
        log.commit(cookie=json.dumps({"count": count}).encode())
        os.write(history_fd, b"ack %d\n" % count)
        if commit_index % truncate_every_commits_count == 0:
            try_truncate(log, history_fd)
        time.sleep(rhythm.uniform(0, pause_max_s))
    raise SystemExit("jepsen producer: never killed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
