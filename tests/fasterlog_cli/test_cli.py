"""The `fasterlog` command line: info, dump, verify and its error reporting.

Goal: pin what a user sees. info reports the log's positions and settings; dump gives back the
committed entries exactly, in every format; verify passes a good log and, after one flipped byte
in a committed frame, exits 1 with one line naming that frame's address; every expected failure
is one "fasterlog: error: ..." line on stderr with a non-zero status and no traceback.

Method: real logs in temporary directories, made in this process with small settings (64 KiB
pages, 1 MiB segments); the CLI runs as a subprocess (sys.executable -m fasterlog), exactly as a
user runs it. Corruption is a byte flipped in the segment file at offset address %
segment_size_bytes, where the format puts that address.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fasterlog import FasterLog
from fasterlog._format import FRAME_HEADER_SIZE_BYTES
from fasterlog.cli_support import ProgressBar
from fasterlog.testing import simulate_crash
from tests.support import faults
from tests.support.cli import assert_one_error_line, cli_timeout_s, run_cli
from tests.support.settings import SMALL_SETTINGS


@dataclass
class MadeLog:
    directory: Path
    entries: list[tuple[int, bytes]]  # (address, payload) of every data entry, in order
    marker: tuple[int, bytes]
    committed_until_address: int
    commit_number: int
    cookie: bytes


@pytest.fixture
def made_log(tmp_path: Path) -> MadeLog:
    """A closed log of about 200 KiB: entries of edge sizes (0 bytes, binary, one that fills a
    page), a marker and two commits, spread over several pages."""
    directory = tmp_path / "log"
    rng = random.Random(11)
    with FasterLog.open(directory, **SMALL_SETTINGS) as log:
        payloads = [b"", b"x", bytes(range(256)), bytes(log.entry_size_max)]
        payloads += [rng.randbytes(rng.randrange(0, 3000)) for _ in range(120)]
        entries = [(log.append(payload), payload) for payload in payloads[:60]]
        marker = (log.append_marker(b"checkpoint"), b"checkpoint")
        log.commit()
        entries += [(log.append(payload), payload) for payload in payloads[60:]]
        log.commit(cookie=b"cookie-" + bytes(range(60)))
        committed_until_address = log.committed_until_address
    with FasterLog.open(directory, readonly=True) as log:
        # close() adds a final commit; take the numbers a reader sees.
        committed_until_address = log.committed_until_address
        commit_number = log.commit_number
        cookie = log.cookie
    assert cookie is not None
    return MadeLog(directory, entries, marker, committed_until_address, commit_number, cookie)


def flip_byte(made: MadeLog, address: int, offset_in_frame: int) -> None:
    segment_size_bytes = SMALL_SETTINGS["segment_size_bytes"]
    path = faults.segment_path(made.directory, address, segment_size_bytes)
    faults.flip_bit(path, address % segment_size_bytes + offset_in_frame)


# ---------------------------------------------------------------------- info


def test_info_json_reports_positions_settings_and_segments(made_log: MadeLog) -> None:
    result = run_cli("info", made_log.directory, "--json")
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(result.stdout)
    assert info["begin_address"] == made_log.entries[0][0]
    assert info["committed_until_address"] == made_log.committed_until_address
    assert info["flushed_until_address"] == made_log.committed_until_address
    assert info["tail_address"] == made_log.committed_until_address
    assert info["commit_number"] == made_log.commit_number
    assert info["page_size_bytes"] == SMALL_SETTINGS["page_size_bytes"]
    assert info["segment_size_bytes"] == SMALL_SETTINGS["segment_size_bytes"]
    assert info["memory_size_bytes"] > 0
    assert info["epoch"] >= 1
    assert info["io_backend"] in ("io_uring", "plain")
    if os.environ.get("FASTERLOG_IO_BACKEND") == "plain":
        assert info["io_backend"] == "plain"
    assert info["cookie_size_bytes"] == len(made_log.cookie)
    assert info["cookie_hex"] == made_log.cookie[:32].hex()  # truncated to 32 bytes
    assert {"name": "segment-00000000.fl", "size_bytes": SMALL_SETTINGS["segment_size_bytes"],
            "first_address": 0} in info["segments"]


def test_info_text_names_every_field(made_log: MadeLog) -> None:
    result = run_cli("info", made_log.directory)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    for label in ("begin address", "committed-until address", "flushed-until address",
                  "tail address", "commit number", "epoch", "cookie", "io backend", "page size",
                  "segment size", "memory size", "segment files", "segment-00000000.fl"):
        assert label in text
    assert re.search(rf"committed-until address\s+{made_log.committed_until_address}\n", text)
    assert f"{made_log.cookie[:32].hex()}... ({len(made_log.cookie)} bytes)" in text
    assert "64 KiB" in text and "1 MiB" in text


def test_info_works_while_a_writer_holds_the_log(made_log: MadeLog) -> None:
    with FasterLog.open(made_log.directory) as writer:
        writer.append(b"while the writer runs")
        committed = writer.commit()
        result = run_cli("info", made_log.directory, "--json")
        assert result.returncode == 0, result.stderr.decode()
        assert json.loads(result.stdout)["committed_until_address"] == committed


# ---------------------------------------------------------------------- dump


def test_dump_json_round_trips_every_entry(made_log: MadeLog) -> None:
    result = run_cli("dump", made_log.directory, "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {record["kind"] for record in records} == {"data"}
    assert [(r["address"], base64.b64decode(r["data_base64"])) for r in records] == \
        made_log.entries
    assert [r["size"] for r in records] == [len(payload) for _, payload in made_log.entries]


def test_dump_with_markers_adds_markers_and_commit_records(made_log: MadeLog) -> None:
    result = run_cli("dump", made_log.directory, "--format", "json", "--markers")
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    frames = [(r["address"], r["kind"], base64.b64decode(r["data_base64"])) for r in records]
    assert [(a, p) for a, kind, p in frames if kind == "data"] == made_log.entries
    assert [(a, p) for a, kind, p in frames if kind == "marker"] == [made_log.marker]
    commits = [p for _, kind, p in frames if kind == "commit"]
    assert len(commits) == made_log.commit_number
    assert commits[-1].endswith(made_log.cookie)
    assert [a for a, _, _ in frames] == sorted(a for a, _, _ in frames)


def test_dump_raw_writes_the_payloads_back_to_back(made_log: MadeLog) -> None:
    result = run_cli("dump", made_log.directory, "--format", "raw")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"".join(payload for _, payload in made_log.entries)


def parse_hexdump(text: str) -> list[tuple[int, str, bytes]]:
    """Reads `fasterlog dump` hex output back: (address, kind, payload) per frame."""
    frames: list[tuple[int, str, bytes]] = []
    sizes: list[int] = []
    for line in text.splitlines():
        if not line.startswith(" "):  # "ADDRESS KIND SIZE bytes"
            address_text, kind, size_text, _ = line.split()
            frames.append((int(address_text), kind, b""))
            sizes.append(int(size_text))
            continue
        # "  OFFSET  HEX BYTES ... |TEXT|"
        address, kind, payload = frames[-1]
        offset_text, hex_text = line.split("|")[0].split(maxsplit=1)
        assert int(offset_text, 16) == len(payload)
        frames[-1] = (address, kind, payload + bytes.fromhex(hex_text))
    assert [len(payload) for _, _, payload in frames] == sizes
    return frames


def test_dump_hex_shows_address_kind_size_and_every_byte(made_log: MadeLog) -> None:
    result = run_cli("dump", made_log.directory)  # hex is the default format
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert f"{made_log.entries[2][0]} data 256 bytes\n" in text
    assert "  00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|" in text
    frames = parse_hexdump(text)
    assert [(address, payload) for address, _, payload in frames] == made_log.entries


def test_dump_from_and_to_select_a_range(made_log: MadeLog) -> None:
    first, stop = made_log.entries[3][0], made_log.entries[70][0]
    result = run_cli("dump", made_log.directory, "--format", "json", "--from", hex(first),
                     "--to", str(stop))
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["address"], base64.b64decode(r["data_base64"])) for r in records] == \
        made_log.entries[3:70]


def test_dump_from_inside_an_entry_is_an_error_naming_the_address(made_log: MadeLog) -> None:
    inside = made_log.entries[2][0] + 8
    result = run_cli("dump", made_log.directory, "--from", str(inside))
    line = assert_one_error_line(result, 1)
    assert f"address {inside} is not the start" in line


# ---------------------------------------------------------------------- verify


def test_verify_passes_on_a_good_log_and_prints_the_last_good_address(made_log: MadeLog) -> None:
    result = run_cli("verify", made_log.directory)
    assert result.returncode == 0, result.stderr.decode()
    assert f"last good address {made_log.committed_until_address}" in result.stdout.decode()
    assert result.stderr == b""  # no progress bar: stderr is not a terminal


@pytest.mark.parametrize("offset_in_frame", [0, 5, FRAME_HEADER_SIZE_BYTES + 100],
                         ids=["checksum", "length", "payload"])
def test_verify_fails_naming_the_address_of_a_flipped_frame(made_log: MadeLog,
                                                            offset_in_frame: int) -> None:
    address = made_log.entries[90][0]
    flip_byte(made_log, address, offset_in_frame)
    result = run_cli("verify", made_log.directory)
    line = assert_one_error_line(result, 1)
    assert f"corrupt frame at address {address}" in line
    assert f"good from {made_log.entries[0][0]} up to address {address}" in line


def test_verify_reports_damage_that_recovery_finds_at_open(made_log: MadeLog) -> None:
    # After a crash, open itself checks the committed frames of the newest segment and refuses
    # damaged ones; verify must still say where, in one line.
    with FasterLog.open(made_log.directory) as log:
        log.append(b"one more")
        log.commit()
        simulate_crash(log)
    address = made_log.entries[90][0]
    flip_byte(made_log, address, FRAME_HEADER_SIZE_BYTES + 100)
    line = assert_one_error_line(run_cli("verify", made_log.directory), 1)
    assert str(address) in line


def test_progress_bar_waits_for_its_delay_draws_in_place_and_wipes_its_line() -> None:
    stream = io.StringIO()
    quiet = ProgressBar(stream, 100, "verify", enabled=False, delay_s=0)
    quiet.update(50)
    quiet.close()
    patient = ProgressBar(stream, 100, "verify", enabled=True, delay_s=3600)
    patient.update(50)
    patient.close()
    assert stream.getvalue() == ""
    bar = ProgressBar(stream, 1 << 30, "verify", enabled=True, delay_s=0)
    bar.update(1 << 29)
    bar.update(1 << 30)  # the last update is drawn even inside the redraw interval
    drawn = stream.getvalue()
    assert drawn.startswith("\rverify  50% [###############...............] 512 MiB of 1 GiB")
    assert "verify 100% [" + "#" * 30 + "] 1 GiB of 1 GiB" in drawn
    bar.close()
    assert stream.getvalue().endswith("\r")
    assert "\n" not in stream.getvalue()


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("arguments, status, words", [
    (["info", "{tmp}/missing"], 1, "no such directory"),
    (["dump", "{tmp}"], 1, "fasterlog.meta is missing"),
    (["verify", "{tmp}/file"], 1, "not a directory"),
    (["info", "{log}", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ([], 2, "required: COMMAND"),
    (["dump", "{log}", "--from", "twelve"], 2, "invalid address value: 'twelve'"),
    (["dump", "{log}", "--from", "200", "--to", "100"], 2, "--from 200 is above --to 100"),
    (["dump", "{log}", "--from", "1000000000"], 1, "beyond the committed-until address"),
    (["dump", "{log}", "--format", "xml"], 2, "invalid choice: 'xml'"),
])
def test_errors_are_one_line_with_a_nonzero_status(made_log: MadeLog, tmp_path: Path,
                                                   arguments: list[str], status: int,
                                                   words: str) -> None:
    (tmp_path / "file").write_text("not a log")
    filled = [a.format(tmp=tmp_path, log=made_log.directory) for a in arguments]
    line = assert_one_error_line(run_cli(*filled), status)
    assert words in line


def test_a_reader_that_goes_away_ends_dump_quietly(tmp_path: Path) -> None:
    # `fasterlog dump DIR | head`: a closed pipe is not worth an error line or a traceback.
    # Several scan batches (4096 entries each), so that a write meets the closed pipe: CPython
    # reports no error for one large write that the pipe cut short.
    directory = tmp_path / "many"
    with FasterLog.open(directory, **SMALL_SETTINGS) as log:
        log.append_many([b"%8d" % n for n in range(10_000)])
    with subprocess.Popen([sys.executable, "-m", "fasterlog", "dump", str(directory)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as child:
        assert child.stdout is not None and child.stderr is not None
        child.stdout.read(100)
        child.stdout.close()
        stderr = child.stderr.read()
        child.wait(timeout=cli_timeout_s)
    assert stderr == b""
    assert child.returncode == 1


def test_version_and_help_exit_zero() -> None:
    assert run_cli("--version").stdout.decode().startswith("fasterlog ")
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("info", "dump", "verify", "demo"):
        assert command in result.stdout.decode()
