"""Child process for the truncation race stress (tests/reliability/test_reliability_races.py):
appenders, committers, readers, read_many, scanners, a tail and truncate_until, all at once on
one log, for a few seconds.

Goal: a read, scan or tail racing truncate_until ends with TruncatedError (naming a begin
address above what it asked for) or succeeds with the right bytes; never InvalidAddressError,
never LogIOError EBADF from a pread on a descriptor truncation closed, never a crash (issue 14
defect 3); and no acknowledged entry at or above the begin address is ever lost.

Method: entries are self-describing (a u64 sequence number, then `sequence % 199` filler bytes
of value `sequence % 251`), so every reader checks what it got without asking anyone. One
thread appends and commits in small batches and publishes each committed (address, sequence)
pair; one truncates to a recent committed address every few milliseconds (force=True: no
cursors here), over segments of four small pages so whole segment files are deleted all the
time (every other second it pauses, so the segment table also grows); readers pick published
addresses (old ones too, which truncation races most), scanners walk from the begin address,
a tail follows. After the run the log is closed and reopened, and
every acknowledged entry at or above the final begin address must be there, intact.

Usage: python -m tests.support.children.truncate_race DIRECTORY SECONDS SEED
Prints one JSON line (operations, truncated_errors, wrong_errors, acknowledged, lost) and exits
0 when nothing was wrong, 1 otherwise.
"""

from __future__ import annotations

import json
import random
import struct
import sys
import threading
import time
from typing import Any

from fasterlog import FasterLog, errors

# Segments of four 4 KiB pages: truncation deletes whole segment files all the time, and in
# the spells without truncation the segment table soon outgrows its capacity.
race_settings: dict[str, Any] = {
    "page_size_bytes": 4096,
    "memory_size_bytes": 8 * 4096,
    "segment_size_bytes": 4 * 4096,
}
readers_count = 2
scanners_count = 1
published_kept_max = 4096  # the newest committed (address, sequence) pairs readers pick from
wrong_errors_kept_max = 20
truncate_every_s = 0.003
truncate_pause_s = 1.0


def entry_for(sequence: int) -> bytes:
    return struct.pack("<Q", sequence) + bytes([sequence % 251]) * (sequence % 199)


def entry_is_intact(entry: bytes) -> bool:
    return len(entry) >= 8 and entry == entry_for(struct.unpack_from("<Q", entry)[0])


class Race:
    """The shared state of one run: counters, the published pairs, the wrong answers."""

    def __init__(self, log: FasterLog, seconds: float) -> None:
        self.log = log
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.published: list[tuple[int, int]] = []
        self.acknowledged: dict[int, int] = {}  # sequence -> address, every committed entry
        self.operations = 0
        self.truncated_errors = 0
        self.wrong: list[str] = []

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def count(self, operations: int = 1, truncated: int = 0) -> None:
        with self.lock:
            self.operations += operations
            self.truncated_errors += truncated

    def wrong_answer(self, text: str) -> None:
        with self.lock:
            self.wrong.append(text if len(self.wrong) < wrong_errors_kept_max else "")

    def truncated(self, error: errors.TruncatedError, who: str) -> None:
        """A TruncatedError is a right answer when it names a begin above the address."""
        if error.begin_address <= error.address:
            self.wrong_answer(f"{who}: TruncatedError naming begin {error.begin_address} for "
                              f"address {error.address}: {error}")
        self.count(truncated=1)

    def pick(self, rng: random.Random) -> tuple[int, int] | None:
        with self.lock:
            if not self.published:
                return None
            return self.published[rng.randrange(len(self.published))]


def appender(race: Race) -> None:
    sequence = 0
    while race.running():
        batch = [(race.log.append(entry_for(sequence + i)), sequence + i) for i in range(8)]
        sequence += len(batch)
        race.log.commit()
        with race.lock:
            race.acknowledged.update((seq, address) for address, seq in batch)
            race.published.extend(batch)
            del race.published[:-published_kept_max]
        race.count(len(batch) + 1)


def truncator(race: Race, rng: random.Random) -> None:
    while race.running():
        time.sleep(truncate_every_s)
        if int(time.monotonic() / truncate_pause_s) % 2:
            # Every other spell, no truncation: the segment table grows past its capacity
            # (the preallocation thread reallocates it) instead of only shrinking.
            continue
        with race.lock:
            recent = race.published[-rng.randrange(1, 200):] if race.published else []
        if recent:
            race.log.truncate_until(recent[0][0], force=True)
            race.count()


def reader(race: Race, rng: random.Random) -> None:
    while race.running():
        picks = [race.pick(rng) for _ in range(4)]
        chosen = [pick for pick in picks if pick is not None]
        if not chosen:
            time.sleep(0.001)
            continue
        try:
            if rng.random() < 0.5:
                got = [race.log.read(chosen[0][0])]
                expected = [chosen[0][1]]
            else:
                got = race.log.read_many([address for address, _ in chosen])
                expected = [seq for _, seq in chosen]
            for entry, seq in zip(got, expected, strict=True):
                if entry != entry_for(seq):
                    race.wrong_answer(f"reader: wrong bytes for sequence {seq}")
            race.count()
        except errors.TruncatedError as error:
            race.truncated(error, "reader")


def scanner(race: Race) -> None:
    while race.running():
        try:
            for _address, entry in race.log.scan():
                if not entry_is_intact(entry):
                    race.wrong_answer("scan: damaged entry")
            race.count()
        except errors.TruncatedError as error:
            race.truncated(error, "scan")


def follower(race: Race) -> None:
    position = None
    while race.running():
        tail = race.log.tail(position, timeout=0.05)
        try:
            for _address, entry in tail:
                if not entry_is_intact(entry):
                    race.wrong_answer("tail: damaged entry")
                race.count()
                if not race.running():
                    break
            position = tail.position
        except errors.TruncatedError as error:
            race.truncated(error, "tail")
            position = None


def guarded(race: Race, target: Any, *arguments: Any) -> None:
    try:
        target(race, *arguments)
    except Exception as error:  # noqa: BLE001 - every other exception is a wrong answer
        race.wrong_answer(f"{target.__name__}: {type(error).__name__}: {error}")


def lost_after_reopen(directory: str, acknowledged: dict[int, int]) -> tuple[int, int]:
    """Reopens the log; returns (entries kept at or above begin, acknowledged ones missing)."""
    with FasterLog.open(directory, **race_settings) as log:
        begin = log.begin_address
        present = {address: entry for address, entry in log.scan()}
    lost = 0
    for sequence, address in acknowledged.items():
        if address >= begin and present.get(address) != entry_for(sequence):
            lost += 1
    return sum(1 for address in acknowledged.values() if address >= begin), lost


def main() -> int:
    directory, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    log = FasterLog.open(directory, **race_settings)
    race = Race(log, seconds)
    rng = random.Random(seed)

    def own_rng() -> random.Random:
        return random.Random(rng.random())

    threads = [threading.Thread(target=guarded, args=(race, appender)),
               threading.Thread(target=guarded, args=(race, truncator, own_rng())),
               threading.Thread(target=guarded, args=(race, follower))]
    threads += [threading.Thread(target=guarded, args=(race, reader, own_rng()))
                for _ in range(readers_count)]
    threads += [threading.Thread(target=guarded, args=(race, scanner))
                for _ in range(scanners_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    kept, lost = lost_after_reopen(directory, race.acknowledged)
    wrong = [text for text in race.wrong if text]
    print(json.dumps({"operations": race.operations, "truncated_errors": race.truncated_errors,
                      "wrong_errors": wrong, "wrong_errors_count": len(race.wrong),
                      "acknowledged": len(race.acknowledged), "acknowledged_kept": kept,
                      "lost": lost}))
    return 1 if race.wrong or lost else 0


if __name__ == "__main__":
    sys.exit(main())
