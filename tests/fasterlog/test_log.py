"""The log's public API: appends, commits, reads, scans, positions and their errors.

Method: real logs in temporary directories (real files, real syncs, the backend chosen by
FASTERLOG_IO_BACKEND); every test reopens or re-reads to check what was really stored.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from fasterlog import EntryKind, FasterLog, errors
from fasterlog._format import FIRST_ADDRESS, frame_size
from tests.support.settings import SMALL_SETTINGS


def test_first_address_is_64_and_addresses_follow_frame_sizes(small_log: FasterLog) -> None:
    first = small_log.append(b"abc")
    second = small_log.append(b"")
    assert first == FIRST_ADDRESS
    assert second == first + frame_size(3)
    assert small_log.tail_address == second + frame_size(0)


def test_round_trip_of_edge_sizes_survives_reopen(log_dir: Path) -> None:
    rng = random.Random(7)
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        entries = [b"", b"x", bytes(log.entry_size_max), rng.randbytes(log.entry_size_max)]
        entries += [rng.randbytes(rng.randrange(0, 3000)) for _ in range(300)]
        addresses = [log.append(entry) for entry in entries]
        log.commit()
        assert [log.read(a) for a in addresses] == entries
    with FasterLog.open(log_dir) as log:
        assert list(log.scan()) == list(zip(addresses, entries, strict=True))
        assert [log.read(a) for a in addresses] == entries


def test_zero_length_entries_are_not_taken_for_padding(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        addresses = [log.append(b"") for _ in range(10000)]  # crosses several pages
        log.commit()
    with FasterLog.open(log_dir) as log:
        assert [a for a, _ in log.scan()] == addresses
        assert all(entry == b"" for _, entry in log.scan())


def test_bytes_like_entries_are_accepted(small_log: FasterLog) -> None:
    a = small_log.append(bytearray(b"ba"))
    b = small_log.append(memoryview(b"mv"))
    c = small_log.try_append(b"try")
    small_log.commit()
    assert [small_log.read(x) for x in (a, b, c)] == [b"ba", b"mv", b"try"]


@pytest.mark.parametrize("bad", ["text", 5, None, 1.5, [b"a"]])
def test_non_bytes_entries_raise_type_error(small_log: FasterLog, bad: object) -> None:
    with pytest.raises(TypeError):
        small_log.append(bad)  # type: ignore[arg-type]
    assert small_log.tail_address == FIRST_ADDRESS


def test_entry_above_maximum_raises_entry_too_large(small_log: FasterLog) -> None:
    with pytest.raises(errors.EntryTooLarge, match="exceeds entry_size_max"):
        small_log.append(bytes(small_log.entry_size_max + 1))
    with pytest.raises(errors.EntryTooLarge):
        small_log.append_many([b"ok", bytes(small_log.entry_size_max + 1)])
    assert small_log.tail_address == FIRST_ADDRESS


def test_append_many_returns_addresses_in_order(small_log: FasterLog) -> None:
    entries = [bytes([i]) * i for i in range(200)]
    addresses = small_log.append_many(entries)
    small_log.commit()
    assert addresses == sorted(addresses)
    assert [small_log.read(a) for a in addresses] == entries
    assert small_log.append_many([]) == []


def test_scan_skips_markers_unless_asked(small_log: FasterLog) -> None:
    a = small_log.append(b"data")
    m = small_log.append_marker(b"checkpoint")
    small_log.commit()
    assert list(small_log.scan()) == [(a, b"data")]
    assert list(small_log.scan(include_markers=True)) == [(a, b"data"), (m, b"checkpoint")]
    assert small_log.read(m) == b"checkpoint"


def test_scan_range_is_half_open(small_log: FasterLog) -> None:
    addresses = [small_log.append(b"%d" % i) for i in range(100)]
    small_log.commit()
    got = [a for a, _ in small_log.scan(addresses[10], addresses[20])]
    assert got == addresses[10:20]


def test_scan_sees_only_committed_entries(small_log: FasterLog) -> None:
    committed = small_log.append(b"one")
    small_log.commit()
    small_log.append(b"two")
    assert list(small_log.scan()) == [(committed, b"one")]


def test_positions_move_as_documented(small_log: FasterLog) -> None:
    assert small_log.begin_address == FIRST_ADDRESS
    a = small_log.append(b"x" * 100)
    assert small_log.tail_address > a
    assert small_log.committed_until_address == FIRST_ADDRESS
    committed = small_log.commit()
    assert committed == small_log.committed_until_address == small_log.tail_address
    assert small_log.flushed_until_address == committed
    assert small_log.commit_number == 1


def test_commit_with_nothing_new_is_free(small_log: FasterLog) -> None:
    small_log.append(b"x")
    first = small_log.commit()
    assert small_log.commit() == first
    assert small_log.commit_number == 1


def test_cookie_survives_recovery(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        assert log.cookie is None
        log.append(b"x")
        log.commit(cookie=b"cursor=17")
        log.append(b"y")
        log.commit()  # the cookie is kept by later commits
    with FasterLog.open(log_dir) as log:
        assert log.cookie == b"cursor=17"


def test_wait_for_commit_waits_and_never_commits(small_log: FasterLog) -> None:
    a = small_log.append(b"x")
    assert small_log.wait_for_commit(a, timeout=0.05) is False
    timer = threading.Timer(0.05, small_log.commit)
    timer.start()
    assert small_log.wait_for_commit(a, timeout=5.0) is True
    timer.join()


def test_group_commit_shares_syncs_between_threads(small_log: FasterLog) -> None:
    threads_count, per_thread = 8, 50
    addresses: list[int] = []
    lock = threading.Lock()

    def producer(k: int) -> None:
        for i in range(per_thread):
            a = small_log.append(b"%d-%d" % (k, i))
            small_log.commit()
            assert small_log.committed_until_address > a
            with lock:
                addresses.append(a)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(addresses) == threads_count * per_thread
    # Each commit call needs a sync unless another thread's commit covered it.
    assert small_log.commit_number <= threads_count * per_thread


def test_try_append_returns_none_when_memory_is_full_of_unflushed_pages(log_dir: Path) -> None:
    with FasterLog.open(
        log_dir, page_size_bytes=4096, memory_size_bytes=8192, segment_size_bytes=1 << 20
    ) as log:
        results = [log.try_append(bytes(1000)) for _ in range(64)]
        assert all(r is None or isinstance(r, int) for r in results)
        log.commit()
        assert log.try_append(b"after") is not None


def test_auto_commit_bounds_how_long_entries_stay_volatile(log_dir: Path) -> None:
    with FasterLog.open(log_dir, auto_commit_interval_ms=5, **SMALL_SETTINGS) as log:
        a = log.append(b"x")
        assert log.wait_for_commit(a, timeout=5.0)


def test_auto_commit_by_bytes(log_dir: Path) -> None:
    with FasterLog.open(log_dir, auto_commit_bytes=4096, **SMALL_SETTINGS) as log:
        last = 0
        for _ in range(100):
            last = log.append(bytes(100))
        assert log.wait_for_commit(last - 4096, timeout=5.0)


def test_use_after_close_raises_log_closed(log_dir: Path) -> None:
    log = FasterLog.open(log_dir, **SMALL_SETTINGS)
    log.close()
    log.close()  # idempotent
    for call in (
        lambda: log.append(b"x"),
        log.commit,
        lambda: log.read(FIRST_ADDRESS),
        lambda: list(log.scan(FIRST_ADDRESS, FIRST_ADDRESS + 8)),
    ):
        with pytest.raises(errors.LogClosedError):
            call()


def test_close_commits_what_was_appended(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        a = log.append(b"kept")
    with FasterLog.open(log_dir) as log:
        assert log.read(a) == b"kept"


@pytest.mark.parametrize(
    "settings",
    [
        {"page_size_bytes": 5000},
        {"page_size_bytes": 1024},
        {"page_size_bytes": 65536, "segment_size_bytes": 65536 * 3 + 1},
        {"page_size_bytes": 65536, "memory_size_bytes": 65536},
        {"io_backend": "carrier-pigeon"},
        {"page_size_bytes": -1},
        {"page_size_bytes": "big"},
    ],
)
def test_bad_settings_raise_settings_error(log_dir: Path, settings: dict[str, object],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTERLOG_IO_BACKEND", raising=False)
    with pytest.raises(errors.SettingsError):
        FasterLog.open(log_dir, **settings)  # type: ignore[arg-type]


def test_a_memory_size_out_of_bounds_is_named_in_bytes_and_pages(log_dir: Path) -> None:
    """The bound is a page count: the message used to read "at most 65536, not 65536" for one
    page of 64 KiB (65,536 pages beside 65,536 bytes; issue 15's papercuts)."""
    with pytest.raises(errors.SettingsError) as raised:
        FasterLog.open(log_dir, page_size_bytes=65536, memory_size_bytes=65536)
    assert ("memory_size_bytes must be a multiple of page_size_bytes (65536) from two pages "
            "(131072 bytes) to 65536 pages (4294967296 bytes), not 65536") in str(raised.value)
    with FasterLog.open(log_dir, page_size_bytes=65536, memory_size_bytes=131072) as log:
        assert log.settings["memory_size_bytes"] == 131072  # nothing left blocks a retry


def test_settings_that_differ_from_the_log_are_refused(log_dir: Path) -> None:
    FasterLog.open(log_dir, **SMALL_SETTINGS).close()
    with pytest.raises(errors.SettingsError, match="differs"):
        FasterLog.open(log_dir, page_size_bytes=128 << 10)
    with FasterLog.open(log_dir) as log:
        assert log.settings["page_size_bytes"] == SMALL_SETTINGS["page_size_bytes"]


def test_bad_addresses_raise_invalid_address(small_log: FasterLog) -> None:
    a = small_log.append(b"0123456789abcdef")
    small_log.commit()
    for bad in (a + 4, a + 8, small_log.tail_address + 64, 0, 8):
        with pytest.raises(errors.InvalidAddressError):
            small_log.read(bad)
    with pytest.raises(errors.InvalidAddressError):
        small_log.read(-1)
    with pytest.raises(TypeError):
        small_log.read("64")  # type: ignore[arg-type]


def test_io_backend_is_named(small_log: FasterLog, io_backend_expected: str) -> None:
    assert small_log.io_backend in ("io_uring", "plain")
    if io_backend_expected != "auto":
        assert small_log.io_backend == io_backend_expected


def test_readonly_open_reads_committed_data_and_refuses_writes(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        a = log.append(b"x")
        log.commit()
        with FasterLog.open(log_dir, readonly=True) as reader:
            assert reader.read(a) == b"x"
            with pytest.raises(errors.ReadOnlyError):
                reader.append(b"y")


def test_readonly_open_of_missing_log_raises_format_error(tmp_path: Path) -> None:
    with pytest.raises(errors.FormatError):
        FasterLog.open(tmp_path, readonly=True)


def test_large_log_crossing_segments_scans_in_order(log_dir: Path) -> None:
    rng = random.Random(3)
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        expected = []
        for i in range(4000):
            entry = rng.randbytes(rng.randrange(0, 2000))
            expected.append((log.append(entry), entry))
            if i % 97 == 0:
                log.commit()
        log.commit()
        assert len(list(log_dir.glob("segment-*.fl"))) >= 4
    with FasterLog.open(log_dir) as log:
        assert list(log.scan()) == expected
        assert log.verify() == log.committed_until_address


def test_zero_copy_scan_yields_views_of_the_same_entries(small_log: FasterLog) -> None:
    entries = [bytes([i % 251]) * (i % 300) for i in range(2000)]
    addresses = small_log.append_many(entries)
    small_log.commit()
    got = [(a, bytes(view)) for a, view in small_log.scan(zero_copy=True)]
    assert got == list(zip(addresses, entries, strict=True))
    columns = [(a, e) for addrs, ents in small_log.scan_columns()
               for a, e in zip(addrs, ents, strict=True)]
    assert columns == got
    assert [pair for batch in small_log.scan_batches() for pair in batch] == got


def test_scan_with_kinds_labels_every_frame_and_entry_kind_agrees(small_log: FasterLog) -> None:
    data = small_log.append_many([b"a", b"b" * 5000])
    marker = small_log.append_marker(b"m")
    small_log.commit()
    last = small_log.append(b"c")
    small_log.commit()
    assert list(small_log.scan(kinds=True)) == [
        (data[0], EntryKind.DATA, b"a"), (data[1], EntryKind.DATA, b"b" * 5000),
        (last, EntryKind.DATA, b"c")]
    with_markers = list(small_log.scan(kinds=True, include_markers=True))
    assert (marker, EntryKind.MARKER, b"m") in with_markers
    frames = list(small_log.scan(kinds=True, include_markers=True, include_commit_records=True))
    commits = [address for address, kind, _ in frames if kind is EntryKind.COMMIT]
    assert len(commits) == 2 and marker < commits[0] < last < commits[1]
    for address, kind, _ in frames:
        assert small_log.entry_kind(address) is kind
    with pytest.raises(errors.InvalidAddressError, match=f"entry_kind at {data[1] + 8} failed"):
        small_log.entry_kind(data[1] + 8)  # inside an entry
    with pytest.raises(ValueError, match="zero_copy"):
        small_log.scan(kinds=True, zero_copy=True)  # type: ignore[call-overload]


def test_truncate_until_a_page_end_keeps_that_address_as_begin(small_log: FasterLog) -> None:
    # A cursor that finished a page stands on its padding frame or zero gap: truncating to it
    # must not move begin past it (a consumer there would find itself below begin).
    page = SMALL_SETTINGS["page_size_bytes"]
    big = page - 64 - 8 - 12  # leaves the 8-byte zero gap at the end of page 0
    a = small_log.append(bytes(big))
    b = small_log.append(b"x")
    small_log.commit()
    small_log.truncate_until(a + frame_size(big), force=True)
    assert small_log.begin_address == page - 8
    assert [e for _, e in small_log.scan()] == [b"x"]
    assert b == page
    size = page - small_log.tail_address % page - 24 - 12  # leaves 24 bytes in the page:
    c = small_log.append(bytes(size))
    d = small_log.append(bytes(20))  # too few for this one, so they become a padding frame
    small_log.commit()
    small_log.truncate_until(c + frame_size(size))
    assert small_log.begin_address == c + frame_size(size) == d - 24
    assert [e for _, e in small_log.scan()] == [bytes(20)]
    assert [e for _, e in small_log.scan(small_log.begin_address)] == [bytes(20)]


def test_read_many_returns_entries_in_the_order_asked(small_log: FasterLog) -> None:
    rng = random.Random(11)
    entries = [rng.randbytes(rng.choice([0, 1, 100, 5000, 60000])) for _ in range(300)]
    addresses = small_log.append_many(entries)
    marker = small_log.append_marker(b"m")
    small_log.commit()
    order = list(range(300))
    rng.shuffle(order)
    got = small_log.read_many([addresses[i] for i in order] + [marker])
    assert got == [entries[i] for i in order] + [b"m"]
    assert small_log.read_many([]) == []
    with pytest.raises(errors.InvalidAddressError):
        small_log.read_many([addresses[0], addresses[0] + 8])


def test_the_writer_can_scan_what_it_has_not_committed(small_log: FasterLog) -> None:
    committed = small_log.append(b"committed")
    small_log.commit()
    pending = [small_log.append(bytes([i]) * 3000) for i in range(100)]  # crosses pages
    assert [a for a, _ in small_log.scan()] == [committed]
    got = list(small_log.scan(uncommitted=True))
    assert [a for a, _ in got] == [committed, *pending]
    assert got[-1][1] == bytes([99]) * 3000


def test_followers_cannot_scan_uncommitted_entries(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SMALL_SETTINGS) as log:
        log.append(b"pending")
        with FasterLog.open(log_dir, readonly=True) as reader:
            assert list(reader.scan(uncommitted=True)) == []
