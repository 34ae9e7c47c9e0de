"""Named durable cursors: the cursor files of fasterlog.cursors, retention, and the Consumer.

Goal: pin the cursor file format (golden bytes of FORMAT.md's worked example), show that a
write is atomic (a torn newest slot falls back to the previous position), that a cursor of
another log or another name is refused with a typed error, that truncate_until respects the
slowest cursor unless forced, and that a Consumer delivers every committed entry once per
session, resumes after its last acknowledgement (exclusive rule), seeks, reports lag, waits
without polling and stops from another thread or task.

Method: real logs with small settings in temporary directories; damage is done at the offsets
FORMAT.md gives (tests/support/faults.py, or a plain file write for a torn slot); an
independent struct-based encoder (with the table CRC32C of tests/support/checksums.py) checks
the bytes the module writes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from consumers import (
    Consumer,
    CursorInUseError,
    CursorNameError,
    InvalidSeekError,
    SeekBelowBeginError,
    UnknownCursorError,
    cursor_position,
    delete_cursor,
    list_cursors,
)
from fasterlog import FasterLog, cursors, errors
from fasterlog._format import frame_size
from tests.support import faults
from tests.support.checksums import crc32c
from tests.support.settings import SMALL_SETTINGS

WORKED_SALT = 0x0123456789ABCDEF
SLOT = cursors.CURSOR_SLOT_SIZE_BYTES


def reference_slot(name: str, sequence: int, position: int, salt: int) -> bytes:
    """A slot encoded from FORMAT.md alone."""
    body = struct.pack("<QQQH", sequence, position, salt, len(name)) + name.encode()
    body += bytes(512 - 16 - len(body))
    return b"FLCURSOR" + struct.pack("<II", 1, crc32c(body)) + body


def salt_of(log_dir: Path) -> int:
    value: int = struct.unpack_from("<Q", (log_dir / "fasterlog.meta").read_bytes(), 16)[0]
    return value


@pytest.fixture
def made_log(log_dir: Path) -> FasterLog:
    log = FasterLog.open(log_dir, **SMALL_SETTINGS)
    log.append_many([b"entry-%d" % i for i in range(10)])
    log.commit()
    return log


# --- the file format --------------------------------------------------------------------------


def test_worked_example_slot_bytes_are_pinned() -> None:
    slot = cursors.encode_slot("billing", 2, 136, WORKED_SALT)
    assert slot == reference_slot("billing", 2, 136, WORKED_SALT)
    assert slot[:49].hex() == (
        "464c435552534f52" "01000000" "8206a076" "0200000000000000" "8800000000000000"
        "efcdab8967452301" "0700" "62696c6c696e67")
    assert slot[49:] == bytes(463)
    decoded = cursors.decode_slot(slot)
    assert decoded == cursors.Slot(sequence=2, position=136, salt=WORKED_SALT, name="billing")


def test_writes_alternate_slots_with_rising_sequences(made_log: FasterLog, log_dir: Path) -> None:
    salt = salt_of(log_dir)
    path = log_dir / "cursors" / "reader.cursor"
    cursors.write(log_dir, "reader", 64)
    raw = path.read_bytes()
    assert len(raw) == 1024
    assert raw[:SLOT] == bytes(SLOT)  # creation writes sequence 1 into slot 1
    assert raw[SLOT:] == reference_slot("reader", 1, 64, salt)
    cursors.write(log_dir, "reader", 80)
    cursors.write(log_dir, "reader", 96)
    raw = path.read_bytes()
    assert raw[SLOT:] == reference_slot("reader", 3, 96, salt)
    assert raw[:SLOT] == reference_slot("reader", 2, 80, salt)
    assert cursors.read(log_dir, "reader") == 96
    assert sorted(os.listdir(log_dir / "cursors")) == ["reader.cursor"]


def test_a_torn_newest_slot_falls_back_to_the_previous_position(made_log: FasterLog,
                                                                log_dir: Path) -> None:
    cursors.write(log_dir, "reader", 64)
    cursors.write(log_dir, "reader", 80)  # sequence 2, in slot 0
    path = log_dir / "cursors" / "reader.cursor"
    with open(path, "r+b") as file:  # a crash halfway through writing sequence 3 to slot 1
        file.seek(SLOT + 24)
        file.write(struct.pack("<Q", 999_999))
    assert cursors.read(log_dir, "reader") == 80
    cursors.write(log_dir, "reader", 112)  # sequence 3 again, into the torn slot
    assert cursors.read(log_dir, "reader") == 112


@pytest.mark.parametrize("damage", ["bit flip in both slots", "zeroed", "short file"])
def test_a_file_without_a_valid_slot_is_a_corruption_error(made_log: FasterLog, log_dir: Path,
                                                           damage: str) -> None:
    cursors.write(log_dir, "reader", 64)
    cursors.write(log_dir, "reader", 80)
    path = log_dir / "cursors" / "reader.cursor"
    if damage == "bit flip in both slots":
        faults.flip_bit(path, 30, bit=0)
        faults.flip_bit(path, SLOT + 30, bit=0)
    elif damage == "zeroed":
        faults.zero_range(path, 0, path.stat().st_size)
    else:
        faults.truncate_to(path, 100)
    with pytest.raises(errors.CorruptionError, match="no valid slot"):
        cursors.read(log_dir, "reader")
    with pytest.raises(errors.CorruptionError):
        cursors.read_all(log_dir)
    with pytest.raises(errors.CorruptionError):
        Consumer(made_log, "reader")


def test_a_damaged_cursor_is_reported_for_itself_and_does_not_block_retention(
        log_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Issue 14 defect 11: one corrupted cursor file made truncate_until raise for the whole log.
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        addresses = log.append_many([b"entry-%d" % i for i in range(10)])
        log.commit()
        cursors.write(log_dir, "good", addresses[5])
        cursors.write(log_dir, "bad", addresses[2])
        faults.zero_range(log_dir / "cursors" / "bad.cursor", 0, 2 * SLOT)
        with Consumer(log, "good") as consumer:  # the other cursors open as before
            assert consumer.position == addresses[5]
        with pytest.raises(errors.CorruptionError, match="bad.cursor"):
            Consumer(log, "bad")
        with caplog.at_level("WARNING", logger="fasterlog"):
            log.truncate_until(addresses[4])  # past the damaged cursor's old position
        assert "cursor 'bad' is damaged" in caplog.text
        assert log.begin_address == addresses[4]
        with pytest.raises(errors.RetentionError, match="'good'"):
            log.truncate_until(addresses[6])  # the sound cursor still holds the log


def test_a_cursor_copied_from_another_log_is_refused(made_log: FasterLog, log_dir: Path,
                                                     tmp_path: Path) -> None:
    other = tmp_path / "other"
    FasterLog.open(other, **SMALL_SETTINGS).close()
    cursors.write(other, "reader", 64)
    (log_dir / "cursors").mkdir()
    shutil.copy(other / "cursors" / "reader.cursor", log_dir / "cursors" / "reader.cursor")
    with pytest.raises(errors.CorruptionError, match="belongs to another log"):
        cursors.read(log_dir, "reader")
    shutil.copy(log_dir / "cursors" / "reader.cursor", log_dir / "cursors" / "renamed.cursor")
    with pytest.raises(errors.CorruptionError):
        cursors.read(log_dir, "renamed")


def test_a_renamed_cursor_file_is_refused(made_log: FasterLog, log_dir: Path) -> None:
    cursors.write(log_dir, "reader", 64)
    os.rename(log_dir / "cursors" / "reader.cursor", log_dir / "cursors" / "thief.cursor")
    with pytest.raises(errors.CorruptionError, match="holds cursor 'reader'"):
        cursors.read(log_dir, "thief")


@pytest.mark.parametrize("name", ["", "a" * 65, "a/b", "..\\x", "white space", "é", "a\n",
                                  "nul\0"])
def test_bad_names_are_refused_everywhere(made_log: FasterLog, log_dir: Path, name: str) -> None:
    with pytest.raises(ValueError):
        cursors.write(log_dir, name, 64)
    with pytest.raises(CursorNameError):
        Consumer(made_log, name)
    with pytest.raises(CursorNameError):
        delete_cursor(made_log, name)
    assert not (log_dir / "cursors").exists() or os.listdir(log_dir / "cursors") == []


def test_good_names_of_every_allowed_character_work(made_log: FasterLog, log_dir: Path) -> None:
    for name in ("a", "A-z_0.9", "." * 3, "x" * 64):
        cursors.write(log_dir, name, 64)
    assert cursors.read_all(log_dir) == {"...": 64, "A-z_0.9": 64, "a": 64, "x" * 64: 64}


def test_read_all_ignores_temporary_and_foreign_files(made_log: FasterLog, log_dir: Path) -> None:
    cursors.write(log_dir, "reader", 80)
    (log_dir / "cursors" / "reader.cursor.tmp.123").write_bytes(bytes(1024))
    (log_dir / "cursors" / "bad name.cursor").write_bytes(bytes(1024))
    (log_dir / "cursors" / "notes.txt").write_text("hello")
    assert cursors.read_all(log_dir) == {"reader": 80}
    assert cursors.read_all(log_dir / "nowhere") == {}


def test_positions_out_of_range_are_refused(made_log: FasterLog, log_dir: Path) -> None:
    for position in (0, 63, 1 << 63):
        with pytest.raises(errors.InvalidAddressError):
            cursors.write(log_dir, "reader", position)
    with pytest.raises(TypeError):
        cursors.write(log_dir, "reader", "64")  # type: ignore[arg-type]


def test_an_open_cursor_refuses_a_second_writer_and_deletion(made_log: FasterLog,
                                                             log_dir: Path) -> None:
    with cursors.CursorFile.open(log_dir, "reader", create_position=64) as held:
        with pytest.raises(errors.LockedError):
            cursors.write(log_dir, "reader", 80)
        with pytest.raises(errors.LockedError):
            cursors.delete(log_dir, "reader")
        held.write(96)
        assert cursors.read(log_dir, "reader") == 96  # readers take no lock
    cursors.delete(log_dir, "reader")
    with pytest.raises(KeyError):
        cursors.read(log_dir, "reader")
    with pytest.raises(KeyError):
        cursors.delete(log_dir, "reader")


def test_operating_system_failures_are_log_io_errors(made_log: FasterLog, log_dir: Path) -> None:
    (log_dir / "cursors").write_text("a file where the directory belongs")
    with pytest.raises(errors.LogIOError, match="cursor 'reader' open failed"):
        cursors.write(log_dir, "reader", 64)


def test_a_failed_sync_is_never_retried(made_log: FasterLog, log_dir: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with Consumer(made_log, "reader") as consumer:
        consumer.poll(max_count=2)

        def failing_sync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing_sync)
        with pytest.raises(errors.LogIOError, match="cursor 'reader' write failed"):
            consumer.ack()
        monkeypatch.undo()
        with pytest.raises(errors.LogFencedError):
            consumer.ack()  # the page cache may hold the slot, but the disk may not
    with Consumer(made_log, "reader") as consumer:  # reopening starts afresh
        consumer.poll(max_count=2)
        consumer.ack()
        assert consumer.position > 64


def test_concurrent_creators_agree_on_one_file(made_log: FasterLog, log_dir: Path) -> None:
    results: list[int] = []
    barrier = threading.Barrier(8)

    def create(position: int) -> None:
        barrier.wait()
        for _ in range(50):
            try:
                with cursors.CursorFile.open(log_dir, "raced", create_position=position) as f:
                    results.append(f.position)
                    return
            except errors.LockedError:
                time.sleep(0.001)

    threads = [threading.Thread(target=create, args=(64 + 16 * i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert cursors.read(log_dir, "raced") == results[0]
    assert os.listdir(log_dir / "cursors") == ["raced.cursor"]


def test_importing_the_core_and_its_cursors_loads_no_upper_layer() -> None:
    code = ("import sys, fasterlog, fasterlog.cursors, fasterlog.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('consumers', 'kvlayer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "[]"


# --- retention --------------------------------------------------------------------------------


def test_truncate_until_stops_at_the_slowest_cursor_unless_forced(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        addresses = log.append_many([b"e%d" % i for i in range(10)])
        log.commit()
        log.truncate_until(addresses[5])  # no cursor: nothing holds it back
        cursors.write(log_dir, "fast", addresses[9])
        cursors.write(log_dir, "slow", addresses[7])
        log.check_retention(addresses[7])  # the check alone, as truncate_until makes it
        with pytest.raises(errors.RetentionError):
            log.check_retention(addresses[8])
        with pytest.raises(errors.RetentionError) as caught:
            log.truncate_until(addresses[8])
        assert (caught.value.cursor, caught.value.position) == ("slow", addresses[7])
        assert "slow" in str(caught.value)
        assert log.begin_address == addresses[5]
        log.truncate_until(addresses[7])  # up to the slowest position itself is allowed
        delete_cursor(log, "slow")
        log.truncate_until(addresses[9])
        with pytest.raises(errors.RetentionError):
            log.truncate_until(log.committed_until_address)
        log.truncate_until(log.committed_until_address, force=True)
        assert log.begin_address == log.committed_until_address


def test_a_consumer_passed_by_a_forced_truncation_gets_truncated_error(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        addresses = log.append_many([b"e%d" % i for i in range(10)])
        log.commit()
        with Consumer(log, "behind") as consumer:
            log.truncate_until(addresses[4], force=True)
            with pytest.raises(errors.TruncatedError) as caught:
                consumer.poll(timeout=0)
            assert caught.value.begin_address == addresses[4]
            consumer.seek_to_beginning()
            assert [entry for _, entry in consumer.poll(timeout=0)] == [
                b"e%d" % i for i in range(4, 10)]


# --- the Consumer -----------------------------------------------------------------------------


def test_consumer_resumes_after_its_last_ack(made_log: FasterLog) -> None:
    with Consumer(made_log, "reader") as consumer:
        first = consumer.poll(max_count=4)
        assert [entry for _, entry in first] == [b"entry-%d" % i for i in range(4)]
        assert consumer.ack(first[1][0]) == first[2][0]  # exclusive: next to read
        assert consumer.position == first[2][0]
    with Consumer(made_log, "reader") as consumer:
        assert [entry for _, entry in consumer.poll(max_count=3)] == [
            b"entry-2", b"entry-3", b"entry-4"]
        consumer.ack()
    with Consumer(made_log, "reader") as consumer:
        rest = consumer.poll(timeout=0)
        assert [entry for _, entry in rest] == [b"entry-%d" % i for i in range(5, 10)]
        consumer.ack()
        assert consumer.position == made_log.committed_until_address
        assert consumer.poll(timeout=0) == []
    assert list_cursors(made_log) == {"reader": made_log.committed_until_address}
    assert cursor_position(made_log.path, "reader") == made_log.committed_until_address


def test_breaking_out_of_iteration_loses_no_entry(made_log: FasterLog) -> None:
    with Consumer(made_log, "reader") as consumer:
        seen = []
        for _, entry in consumer.iter(timeout=0.01):
            seen.append(entry)
            if len(seen) == 3:
                break
        seen += [entry for _, entry in consumer.poll(max_count=2)]
        seen += [entry for _, entry in consumer.iter(timeout=0.01)]
        assert seen == [b"entry-%d" % i for i in range(10)]


def test_start_applies_only_when_the_cursor_is_new(made_log: FasterLog) -> None:
    addresses = [address for address, _ in made_log.scan()]
    with Consumer(made_log, "from-end", start="end") as consumer:
        assert consumer.position == made_log.committed_until_address
        assert consumer.poll(timeout=0) == []
    with Consumer(made_log, "from-6", start=addresses[6]) as consumer:
        assert consumer.poll(max_count=1)[0] == (addresses[6], b"entry-6")
    with Consumer(made_log, "from-6", start="end") as consumer:
        assert consumer.position == addresses[6]  # the existing cursor wins
    with pytest.raises(ValueError):
        Consumer(made_log, "bad-start", start="middle")  # type: ignore[arg-type]
    with pytest.raises(InvalidSeekError):
        Consumer(made_log, "bad-start", start=addresses[6] + 8)


def test_ack_rules(made_log: FasterLog) -> None:
    addresses = [address for address, _ in made_log.scan()]
    with Consumer(made_log, "reader") as consumer:
        assert consumer.ack() == addresses[0]  # nothing delivered: nothing changes
        consumer.poll(max_count=5)
        assert consumer.ack(addresses[2]) == addresses[3]
        with pytest.raises(errors.InvalidAddressError, match="not delivered yet"):
            consumer.ack(addresses[5])
        with pytest.raises(errors.InvalidAddressError):
            consumer.ack(addresses[1] + 8)  # not an entry start
        assert consumer.ack() == addresses[5]


def test_seek_bad_input_has_typed_errors(made_log: FasterLog) -> None:
    addresses = [address for address, _ in made_log.scan()]
    made_log.truncate_until(addresses[2])
    with Consumer(made_log, "reader", start=addresses[3]) as consumer:
        with pytest.raises(SeekBelowBeginError) as below:
            consumer.seek(addresses[1])
        assert isinstance(below.value, errors.TruncatedError)
        assert below.value.begin_address == addresses[2]
        with pytest.raises(InvalidSeekError, match="past the committed-until") as past:
            consumer.seek(made_log.committed_until_address + 8)
        assert past.value.address == made_log.committed_until_address + 8
        with pytest.raises(InvalidSeekError, match="not the start of an entry"):
            consumer.seek(addresses[4] + 4)
        with pytest.raises(TypeError):
            consumer.seek("64")  # type: ignore[arg-type]
        assert consumer.position == addresses[3]  # a refused seek changes nothing
        consumer.seek(addresses[8])
        assert consumer.position == addresses[8]
        assert consumer.poll(max_count=1) == [(addresses[8], b"entry-8")]
        consumer.seek_to_beginning()
        assert consumer.poll(max_count=1) == [(addresses[2], b"entry-2")]
        consumer.seek_to_end()
        assert consumer.poll(timeout=0) == []
    assert cursor_position(made_log, "reader") == made_log.committed_until_address


def test_unknown_and_busy_cursors_have_typed_errors(made_log: FasterLog) -> None:
    with pytest.raises(UnknownCursorError) as unknown:
        Consumer(made_log, "never-made", create=False)
    assert isinstance(unknown.value, KeyError) and unknown.value.name == "never-made"
    with pytest.raises(UnknownCursorError):
        delete_cursor(made_log, "never-made")
    with pytest.raises(UnknownCursorError):
        cursor_position(made_log, "never-made")
    consumer = Consumer(made_log, "reader")
    with pytest.raises(CursorInUseError):
        Consumer(made_log, "reader")
    with pytest.raises(CursorInUseError):
        delete_cursor(made_log, "reader")
    consumer.close()
    with pytest.raises(Exception, match="closed"):
        consumer.poll()
    delete_cursor(made_log, "reader")
    assert list_cursors(made_log) == {}
    with pytest.raises(UnknownCursorError):
        Consumer(made_log, "reader", create=False)


def test_lag_counts_entries_and_bytes_to_committed_until(made_log: FasterLog) -> None:
    with Consumer(made_log, "reader") as consumer:
        assert consumer.lag_entries == 10
        assert consumer.lag_bytes == made_log.committed_until_address - 64
        consumer.poll(max_count=4)
        assert consumer.lag_entries == 10  # lag runs from the durable position
        consumer.ack()
        assert consumer.lag_entries == 6
        made_log.append_marker(b"not an entry")
        made_log.append(b"one more")
        made_log.commit()
        assert consumer.lag_entries == 7
        consumer.poll(timeout=0)  # the rest of the chunk read before "one more" landed
        assert consumer.poll(timeout=0)[-1][1] == b"one more"
        consumer.ack()
        assert (consumer.lag_entries, consumer.lag_bytes) == (0, 0)


def test_positions_at_page_padding_and_page_end_gaps_resume(log_dir: Path) -> None:
    page = SMALL_SETTINGS["page_size_bytes"]
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        gap_maker = log.append(bytes(page - 64 - 8 - 12))  # leaves an 8-byte gap
        after_gap = log.append(b"after gap")
        log.append(bytes(page - frame_size(9) - 40 - 12))  # leaves a 40-byte padding frame
        after_padding = log.append(b"after padding".ljust(100, b"."))
        log.commit()
        addresses = [address for address, _ in log.scan()]
        assert after_gap == page and after_padding == 2 * page
        with Consumer(log, "reader") as consumer:
            for address in addresses:
                consumer.seek(address)
                delivered = consumer.poll(max_count=1)
                assert delivered[0][0] == address
                end = consumer.ack()
                if address == addresses[-1]:  # caught up: past the commit record too
                    assert end == log.committed_until_address
                else:
                    assert end == address + frame_size(len(delivered[0][1]))
                with Consumer(log, "resumed", start=address) as resumed:
                    resumed.poll(max_count=1)
                    resumed.ack()
                    following = resumed.poll(timeout=0)  # from the frame end: gap, padding
                    assert [a for a, _ in following] == addresses[addresses.index(address) + 1:]
                delete_cursor(log, "resumed")
        assert gap_maker == 64


def test_poll_waits_for_a_commit_and_stop_ends_a_wait_from_another_thread(
        made_log: FasterLog) -> None:
    with Consumer(made_log, "reader", start="end") as consumer:
        threading.Timer(0.05, lambda: (made_log.append(b"late"), made_log.commit())).start()
        started = time.monotonic()
        assert [entry for _, entry in consumer.poll(timeout=10)] == [b"late"]
        assert time.monotonic() - started < 5
        started = time.monotonic()
        assert consumer.poll(timeout=0.1) == []
        assert 0.09 <= time.monotonic() - started < 2
        threading.Timer(0.1, consumer.stop).start()
        started_cpu, started = time.process_time(), time.monotonic()
        assert list(consumer) == []
        assert time.monotonic() - started < 2
        assert time.process_time() - started_cpu < 0.05  # slept in the core, no polling loop
        assert consumer.poll(timeout=None) == []  # stopped for good


def test_stopping_one_consumer_leaves_another_waiting(made_log: FasterLog) -> None:
    with Consumer(made_log, "a", start="end") as first, \
            Consumer(made_log, "b", start="end") as second:
        got: list[list[tuple[int, bytes]]] = []
        thread = threading.Thread(target=lambda: got.append(second.poll(timeout=10)))
        thread.start()
        time.sleep(0.05)
        first.stop()  # wakes every waiter of the log: `second` must go back to sleep
        time.sleep(0.05)
        assert thread.is_alive()
        made_log.append(b"for b")
        made_log.commit()
        thread.join(timeout=10)
        assert [entry for _, entry in got[0]] == [b"for b"]


def test_iteration_ends_when_the_log_is_completed(made_log: FasterLog) -> None:
    with Consumer(made_log, "reader") as consumer:
        threading.Timer(0.05, made_log.complete).start()
        assert len(list(consumer)) == 10


def test_sync_and_async_drivers_deliver_the_same_and_end_on_a_completed_log(
        made_log: FasterLog) -> None:
    # One step function behind both (consumer.py): markers only up to committed-until are
    # looked past, polls wait for the next commit, a completed log ends both.
    made_log.append_marker(b"not for consumers")
    made_log.commit()

    def late_commits() -> None:
        time.sleep(0.05)
        made_log.append(b"late")
        made_log.commit()
        time.sleep(0.05)
        made_log.complete()

    threading.Thread(target=late_commits).start()
    with Consumer(made_log, "sync") as consumer:
        polled = consumer.poll(max_count=4)
        iterated = list(consumer)
    seen_sync = [entry for _, entry in polled + iterated]

    async def main() -> list[bytes]:
        with Consumer(made_log, "async") as consumer:
            polled = await consumer.poll_async(max_count=4)
            iterated = [pair async for pair in consumer.iter_async()]
            return [entry for _, entry in polled + iterated]

    assert seen_sync == asyncio.run(main())
    assert seen_sync == [b"entry-%d" % i for i in range(10)] + [b"late"]


def test_async_iteration_timeout_stop_and_cancellation(made_log: FasterLog) -> None:
    async def main() -> None:
        with Consumer(made_log, "async") as consumer:
            seen = [entry async for _, entry in consumer.iter_async(timeout=0.05)]
            assert seen == [b"entry-%d" % i for i in range(10)]
            consumer.ack()
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: (made_log.append(b"late"), made_log.commit()))
            assert [entry for _, entry in await consumer.poll_async(timeout=10)] == [b"late"]

            async def forever() -> None:
                async for _ in consumer.iter_async():
                    pass

            task = asyncio.create_task(forever())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            threading.Timer(0.05, consumer.stop).start()  # from another thread
            started = time.monotonic()
            assert await consumer.poll_async() == []
            assert time.monotonic() - started < 2

    asyncio.run(main())
