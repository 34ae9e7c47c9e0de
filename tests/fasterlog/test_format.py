"""Golden bytes: the on-disk format of FORMAT.md, pinned.

Method: a small pure-Python encoder written from FORMAT.md (independent of the C core) builds
the worked example; its bytes are asserted literally, so any change to the format fails here.
Then real logs written by the C core are read back from their files and compared byte for byte
with the reference encoder, using each log's salt from its meta file.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from fasterlog import FasterLog, testing
from fasterlog import _format as fmt
from tests.support.checksums import crc32c
from tests.support.settings import SMALL_SETTINGS

SETTINGS: dict[str, Any] = dict(SMALL_SETTINGS)


def encode_frame(salt: int, address: int, kind: int, payload: bytes, epoch: int) -> bytes:
    size = fmt.frame_size(len(payload))
    body = struct.pack("<II", len(payload) | kind << fmt.FRAME_LENGTH_BITS, epoch) + payload
    body += bytes(size - 4 - len(body))
    crc = crc32c(struct.pack("<QQ", salt, address) + body)
    return struct.pack("<I", crc) + body


def encode_commit(salt: int, address: int, number: int, begin: int, previous: int,
                  cookie: bytes | None, epoch: int) -> bytes:
    payload = struct.pack("<QQQII", number, begin, previous,
                          fmt.NO_COOKIE if cookie is None else len(cookie), 0)
    return encode_frame(salt, address, fmt.KIND_COMMIT, payload + (cookie or b""), epoch)


def read_meta(log_dir: Path) -> dict[str, int]:
    block = (log_dir / "fasterlog.meta").read_bytes()
    assert len(block) == fmt.META_SIZE_BYTES
    magic, version, crc = struct.unpack_from("<8sII", block)
    assert magic == b"FLOGMETA" and version == fmt.FORMAT_VERSION
    assert crc == crc32c(block[fmt.META_CHECKSUMMED_FROM:])
    names = ("salt", "page_size_bytes", "segment_size_bytes", "epoch", "flags",
             "begin_address", "recovery_start_address", "committed_until_address",
             "commit_number")
    values = struct.unpack_from("<QQQIIQQQQ", block, 16)
    assert block[80:] == bytes(fmt.META_SIZE_BYTES - 80)
    return dict(zip(names, values, strict=True))


WORKED_SALT = 0x0123456789ABCDEF


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert testing.crc32c(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 9
    for size in (0, 1, 7, 8, 9, 100, 1000, len(data)):
        assert testing.crc32c(data[:size]) == crc32c(data[:size])
        assert testing.crc32c_portable(data[:size]) == crc32c(data[:size])


def test_worked_example_bytes_are_pinned() -> None:
    data = encode_frame(WORKED_SALT, 64, fmt.KIND_DATA, b"hello", 1)
    commit = encode_commit(WORKED_SALT, 88, 1, 64, 0, None, 1)
    assert data.hex() == "787308c30500001001000000" "68656c6c6f" "00000000000000"
    assert commit.hex() == (
        "49a744df2000003001000000"
        "0100000000000000" "4000000000000000" "0000000000000000" "ffffffff" "00000000"
        "00000000"
    )
    assert len(data) == 24 and len(commit) == 48


def test_c_core_writes_exactly_the_reference_frames(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SETTINGS) as log:
        a = log.append(b"hello")
        b = log.append(b"")
        m = log.append_marker(b"mark")
        log.commit(cookie=b"ck")
    meta = read_meta(log_dir)
    salt = meta["salt"]
    expected = (encode_frame(salt, a, fmt.KIND_DATA, b"hello", 1)
                + encode_frame(salt, b, fmt.KIND_DATA, b"", 1)
                + encode_frame(salt, m, fmt.KIND_MARKER, b"mark", 1))
    record = m + fmt.frame_size(4)
    expected += encode_commit(salt, record, 1, 64, 0, b"ck", 1)
    raw = (log_dir / "segment-00000000.fl").read_bytes()
    assert raw[:64] == bytes(64)
    assert raw[64:64 + len(expected)] == expected
    assert meta["flags"] & 1  # clean close
    assert meta["committed_until_address"] == record + fmt.frame_size(32 + 2)
    assert meta["recovery_start_address"] == record
    assert meta["commit_number"] == 1
    assert (meta["page_size_bytes"], meta["segment_size_bytes"]) == (
        SMALL_SETTINGS["page_size_bytes"], SMALL_SETTINGS["segment_size_bytes"])


def test_page_end_is_padding_frame_or_zero_gap(log_dir: Path) -> None:
    page = SMALL_SETTINGS["page_size_bytes"]
    with FasterLog.open(log_dir, **SETTINGS) as log:
        # Leave exactly 8 bytes in page 0, then force a new page: an 8-byte zero gap.
        first = log.append(bytes(page - 64 - 8 - 12))
        assert first == 64
        second = log.append(b"next")
        assert second == page
        # Leave 40 bytes in page 1: a padding frame of 28 zero bytes.
        third_size = page - fmt.frame_size(4) - 40 - 12
        third = log.append(bytes(third_size))
        fourth = log.append(bytes(100))
        assert fourth == 2 * page
        log.commit()
    salt = read_meta(log_dir)["salt"]
    raw = (log_dir / "segment-00000000.fl").read_bytes()
    assert raw[page - 8:page] == bytes(8)
    third_size = page - fmt.frame_size(4) - 40 - 12
    pad_address = third + fmt.frame_size(third_size)
    assert pad_address == 2 * page - 40
    assert raw[pad_address:2 * page] == encode_frame(salt, pad_address, fmt.KIND_PADDING,
                                                     bytes(28), 1)


def test_epoch_rises_with_each_writable_open(log_dir: Path) -> None:
    for expected_epoch in (1, 2, 3):
        with FasterLog.open(log_dir, **SETTINGS) as log:
            assert log.settings["epoch"] == expected_epoch
            a = log.append(b"e%d" % expected_epoch)
        salt = read_meta(log_dir)["salt"]
        raw = (log_dir / "segment-00000000.fl").read_bytes()
        assert raw[a:a + 16] == encode_frame(salt, a, fmt.KIND_DATA, b"e%d" % expected_epoch,
                                             expected_epoch)
    FasterLog.open(log_dir, readonly=True).close()
    assert read_meta(log_dir)["epoch"] == 3  # read-only opens change nothing


@pytest.mark.parametrize("name", ["FIRST_ADDRESS", "FRAME_HEADER_SIZE_BYTES", "KIND_COMMIT",
                                  "COOKIE_SIZE_MAX_BYTES", "META_SIZE_BYTES"])
def test_python_constants_equal_the_c_ones(name: str) -> None:
    from fasterlog._fasterlog_c import lib

    assert getattr(fmt, name) == getattr(lib, "FL_" + name)


def test_every_python_constant_has_an_equal_c_twin() -> None:
    from fasterlog._fasterlog_c import lib

    assert fmt.constant_problems(vars(fmt), lib) == []
    assert lib.FL_META_MAGIC == int.from_bytes(b"FLOGMETA", "little")
    assert lib.FL_SHARED_MAGIC == int.from_bytes(b"FLOGSHM\0", "little")


def test_import_check_fails_on_a_constant_without_a_c_twin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fmt, "FRAME_TRAILER_SIZE_BYTES", 4, raising=False)
    with pytest.raises(ImportError, match="FRAME_TRAILER_SIZE_BYTES has no C twin"):
        fmt.check_constants()


@pytest.mark.parametrize("name, value", [("FIRST_ADDRESS", 128), ("META_MAGIC", b"FLOGMETB"),
                                         ("SCAN_COMMITS", 4)])
def test_import_check_fails_on_a_constant_that_differs_from_its_c_twin(
        monkeypatch: pytest.MonkeyPatch, name: str, value: object) -> None:
    monkeypatch.setattr(fmt, name, value)
    with pytest.raises(ImportError, match=f"{name}=.* differs from the C core's FL_{name}"):
        fmt.check_constants()


def test_completed_flag_is_bit_0_of_the_commit_record_flags(log_dir: Path) -> None:
    with FasterLog.open(log_dir, **SETTINGS) as log:
        a = log.append(b"end")
        log.complete()
    meta = read_meta(log_dir)
    salt, record = meta["salt"], a + fmt.frame_size(3)
    raw = (log_dir / "segment-00000000.fl").read_bytes()
    expected = encode_frame(salt, record, fmt.KIND_COMMIT,
                            struct.pack("<QQQII", 1, 64, 0, fmt.NO_COOKIE, 1), 1)
    assert raw[record:record + len(expected)] == expected


def test_shared_page_layout(log_dir: Path) -> None:
    import os

    with FasterLog.open(log_dir, **SETTINGS) as log:
        log.append(b"x")
        committed = log.commit()
        block = (log_dir / "fasterlog.shm").read_bytes()
        magic, version, sequence, until, begin, number, pid, flags = struct.unpack_from(
            "<8sIIQQQQI", block)
        assert (magic, version) == (b"FLOGSHM\0", 1)
        assert (until, begin, number, pid, flags) == (committed, 64, 1, os.getpid(), 0)
        assert sequence >= 2  # published at open and after the commit
