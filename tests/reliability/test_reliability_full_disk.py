"""The server on a file system that fills up for real: no acknowledged write lost, no phantom,
and writes resume without a restart once space is back (issue 14 item 7, the full-disk row).

Goal: clients doing XADD and SET on a small tmpfs until the disk is full see every write either
acknowledged or answered with an error, the connection kept open; while the disk is full reads
go on and show no write that was answered with an error; once a filler file is deleted, the
server reopens its logs by itself and acknowledges writes again; a restart while the disk is full
starts read-only and recovers the same way; and after the last restart every acknowledged
write is there and no write answered with an error is.

Method: tests.support.fullfs mounts a tmpfs of `filesystem_bytes` (skipped where mounting is
not allowed) and fills it with a filler file up to `room_bytes`. `clients_count` threads each
own one stream and one key prefix (so each knows exactly what it should see), sending
`XADD s<c> * n <seq> pad <value>` and `SET k<c>:<seq> <value>` over raw sockets
(tests.support.raw_client). A client that is refused checks, once the reload is done, that its
stream's length is its acknowledged count and that the key whose SET failed is missing (a
phantom otherwise). Each round: fill the room, free the filler, wait until every client is
acknowledged again; between rounds the server restarts on a full disk. The check at the end
reads every stream and key after a clean restart.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.figures import record
from tests.support.fullfs import fill, free_bytes, small_filesystem
from tests.support.mode import scaled
from tests.support.raw_client import RawClient, is_error
from tests.support.servers import RunningServer

room_bytes = 3 << 20  # left free by the filler: the clients fill it
clients_count = 4
value_size_bytes = 1024
rounds_count = scaled(1, 3)
# Room for the logs' first segments and every round's writes: each round fills room_bytes,
# then writes on after each recovery, and each log preallocates a segment ahead (measured: a
# round grows the two logs by about 5 MiB).
filesystem_bytes = (6 << 20) + rounds_count * (6 << 20)
full_timeout_s = 60  # the room fills in about a second or two on tmpfs
recovery_timeout_s = 30
writes_after_recovery_count = 20  # per client, acknowledged after each recovery


@dataclass
class Ledger:
    """What one client was told."""

    number: int
    acked_ids: list[bytes] = field(default_factory=list)  # XADD ids, in order
    acked_seqs: set[int] = field(default_factory=set)  # seqs of acknowledged XADDs
    acked_keys: set[bytes] = field(default_factory=set)
    refused_seqs: set[int] = field(default_factory=set)  # XADDs answered with an error
    refused_keys: set[bytes] = field(default_factory=set)
    runtime_phantoms: list[str] = field(default_factory=list)
    refusals_count: int = 0
    sequence: int = 0

    @property
    def stream(self) -> bytes:
        return b"s%d" % self.number


def write_one(client: RawClient, ledger: Ledger) -> bool:
    """One XADD and one SET; True if both were acknowledged."""
    ledger.sequence += 1
    seq = ledger.sequence
    value = (b"%d:%d:" % (ledger.number, seq)).ljust(value_size_bytes, b"v")
    added = client.call("XADD", ledger.stream, "*", "n", str(seq), "pad", value)
    key = b"k%d:%d" % (ledger.number, seq)
    stored = client.call("SET", key, value)
    if isinstance(added, bytes) and not is_error(added, b""):
        ledger.acked_ids.append(added)
        ledger.acked_seqs.add(seq)
    else:
        assert is_error(added, b"ERR commit failed") or is_error(added, b"MISCONF") or \
            is_error(added, b"LOADING"), added
        ledger.refused_seqs.add(seq)
    if stored == b"OK":
        ledger.acked_keys.add(key)
    else:
        assert is_error(stored, b"ERR commit failed") or is_error(stored, b"MISCONF") or \
            is_error(stored, b"LOADING"), stored
        ledger.refused_keys.add(key)
    return key in ledger.acked_keys and seq in ledger.acked_seqs


def check_while_refused(client: RawClient, ledger: Ledger) -> None:
    """The reads a fenced server answers show nothing that was refused (module docstring)."""
    deadline = time.monotonic() + recovery_timeout_s
    while is_error(length := client.call("XLEN", ledger.stream), b"LOADING"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    if length != len(ledger.acked_ids):
        ledger.runtime_phantoms.append(f"XLEN {ledger.stream!r} = {length}, acknowledged "
                                       f"{len(ledger.acked_ids)}")
    for key in list(ledger.refused_keys)[-3:]:
        if client.call("GET", key) is not None:
            ledger.runtime_phantoms.append(f"GET {key!r} after its SET was refused")


def run_until(port: int, ledgers: list[Ledger], stop: threading.Event,
              until_refused: bool) -> list[str]:
    """Each client writes until it is refused (until_refused) or until it is acknowledged
    writes_after_recovery_count times in a row; returns problems."""
    problems: list[str] = []

    def work(ledger: Ledger) -> None:
        client = RawClient(port)
        try:
            streak = 0
            deadline = time.monotonic() + (full_timeout_s if until_refused
                                           else recovery_timeout_s)
            while not stop.is_set():
                if time.monotonic() > deadline:
                    problems.append(f"client {ledger.number}: still "
                                    f"{'acknowledged' if until_refused else 'refused'} "
                                    f"after the deadline")
                    return
                acknowledged = write_one(client, ledger)
                if until_refused and not acknowledged:
                    ledger.refusals_count += 1
                    check_while_refused(client, ledger)
                    return
                if not until_refused:
                    streak = streak + 1 if acknowledged else 0
                    if streak >= writes_after_recovery_count:
                        return
                    if not acknowledged:
                        time.sleep(0.02)
        except Exception as error:  # noqa: BLE001 - a dropped connection is the failure here
            problems.append(f"client {ledger.number}: {type(error).__name__}: {error}")
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(full_timeout_s + recovery_timeout_s)
    return problems


def final_check(port: int, ledgers: list[Ledger]) -> tuple[int, int, int]:
    """(acknowledged lost, phantoms, acknowledged) after a restart."""
    client = RawClient(port)
    lost = phantoms = acknowledged = 0
    try:
        for ledger in ledgers:
            entries = client.call("XRANGE", ledger.stream, "-", "+")
            seqs = [int(fields[1]) for _, fields in entries]
            ids = [entry_id for entry_id, _ in entries]
            acknowledged += len(ledger.acked_ids) + len(ledger.acked_keys)
            lost += len(set(ledger.acked_ids) - set(ids))
            phantoms += len(set(seqs) & ledger.refused_seqs)
            keys = sorted(ledger.acked_keys | ledger.refused_keys)
            values = client.call("MGET", *keys) if keys else []
            for key, value in zip(keys, values, strict=True):
                if key in ledger.acked_keys and value is None:
                    lost += 1
                if key in ledger.refused_keys and value is not None:
                    phantoms += 1
    finally:
        client.close()
    return lost, phantoms, acknowledged


def wait_writable(port: int) -> None:
    client = RawClient(port)
    try:
        deadline = time.monotonic() + recovery_timeout_s
        while client.call("SET", "probe", "x") != b"OK":
            assert time.monotonic() < deadline, "the server did not accept writes again"
            time.sleep(0.05)
    finally:
        client.close()


def test_full_disk_loses_no_acknowledged_write_shows_no_phantom_and_recovers_without_restart(
        ) -> None:
    ledgers = [Ledger(number) for number in range(clients_count)]
    problems: list[str] = []
    started_read_only = reopened_count = refused_total = 0
    with small_filesystem(filesystem_bytes) as mount:
        directory = Path(mount) / "data"
        server = RunningServer(directory)
        stop = threading.Event()
        try:
            for round_number in range(rounds_count):
                filler = fill(mount, f"filler{round_number}", leave_bytes=room_bytes)
                problems += run_until(server.port, ledgers, stop, until_refused=True)
                refused_total = sum(ledger.refusals_count for ledger in ledgers)
                os.unlink(filler)  # space is back: the server must reopen by itself
                reopened_before = server.server.keeper.reopened_count
                problems += run_until(server.port, ledgers, stop, until_refused=False)
                reopened_count += server.server.keeper.reopened_count - reopened_before
                # A restart on a full disk starts read-only, then recovers the same way.
                server.stop()
                filler = fill(mount, f"full{round_number}")
                server = RunningServer(directory)
                started_read_only += not server.server.keeper.writable
                probe = RawClient(server.port)
                try:
                    assert is_error(probe.call("SET", "probe", "x"), b"MISCONF")
                finally:
                    probe.close()
                os.unlink(filler)
                wait_writable(server.port)
                reopened_count += server.server.keeper.reopened_count
            server.stop()
            server = RunningServer(directory)
            lost, phantoms, acknowledged = final_check(server.port, ledgers)
        finally:
            stop.set()
            server.stop()
        free_at_end = free_bytes(mount)
    runtime_phantoms = [p for ledger in ledgers for p in ledger.runtime_phantoms]
    record("full_disk",
           f"{rounds_count} rounds of {clients_count} clients (XADD + SET) on a "
           f"{filesystem_bytes >> 20} MiB tmpfs filled to ENOSPC: {acknowledged} acknowledged, "
           f"{refused_total} clients refused; acknowledged lost {lost}, phantoms "
           f"{phantoms + len(runtime_phantoms)}, connections dropped {len(problems)}; "
           f"recovered without restart {reopened_count} of {2 * rounds_count} times "
           f"(restarted on a full disk read-only {started_read_only} of {rounds_count})",
           {"rounds": rounds_count, "clients": clients_count, "acknowledged": acknowledged,
            "lost": lost, "phantoms": phantoms + len(runtime_phantoms),
            "problems": len(problems), "reopened": reopened_count,
            "started_read_only": started_read_only, "free_at_end_bytes": free_at_end},
           "python3 -m pytest -s 'tests/reliability/test_reliability_full_disk.py::"
           "test_full_disk_loses_no_acknowledged_write_shows_no_phantom_and_recovers_without_"
           "restart'")
    assert problems == []
    assert runtime_phantoms == []
    assert (lost, phantoms) == (0, 0)
    assert refused_total == clients_count * rounds_count
    assert reopened_count == 2 * rounds_count
    assert started_read_only == rounds_count
    assert acknowledged > 0
