"""The `fasterlog kv` commands, run as a user runs them.

Goal: get/put/del/scan read and write the same store the API sees (text escaped to one line,
raw bytes, JSON, hex keys, values from stdin); checkpoint and compact do their work and print a
JSON report, compact drawing progress on stderr when asked; reads run beside a writer process;
bad input is one "fasterlog: error:" line with status 1 (2 for usage).

Method: stores made with the API in this process; the CLI runs as a subprocess
(sys.executable -m fasterlog); results are checked through the API afterwards.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from kvlayer import KVStore
from tests.support import cli
from tests.support.cli import assert_one_error_line
from tests.support.settings import CRASH_SETTINGS


def run_cli(*arguments: str | Path | int,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """`fasterlog kv ARGUMENTS...`."""
    return cli.run_cli("kv", *arguments, stdin=stdin)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    path = tmp_path / "kv"
    with KVStore.open(path, **CRASH_SETTINGS) as store:
        for i in range(3000):
            store.put(b"k%d" % (i % 100), b"v%d" % i, commit=False)
        store.put(b"binary", bytes([0, 0xFF, 10, 65]))
    return path


def test_get_prints_the_value_as_text_raw_or_json(store_dir: Path) -> None:
    result = run_cli("get", store_dir, "k7")
    assert (result.returncode, result.stdout) == (0, b"v2907\n"), result.stderr
    assert run_cli("get", store_dir, "binary").stdout == b"\\x00\\xff\\nA\n"
    assert run_cli("get", store_dir, "binary", "--format", "raw").stdout == bytes(
        [0, 0xFF, 10, 65])
    record = json.loads(run_cli("get", store_dir, "binary", "--format", "json").stdout)
    assert base64.b64decode(record["value_base64"]) == bytes([0, 0xFF, 10, 65])
    assert run_cli("get", store_dir, b"binary".hex(), "--hex").stdout == b"\\x00\\xff\\nA\n"


def test_put_and_del_change_the_store(store_dir: Path) -> None:
    result = run_cli("put", store_dir, "new key", "new value")
    assert result.returncode == 0, result.stderr
    address = int(result.stdout)
    assert run_cli("put", store_dir, "from-stdin", "-", stdin=b"\x00piped\n").returncode == 0
    assert run_cli("put", store_dir, "00ff", "0102", "--hex").returncode == 0
    assert run_cli("del", store_dir, "k3").returncode == 0
    with KVStore.open(store_dir) as store:
        assert store.get(b"new key") == b"new value"
        assert store.get(b"from-stdin") == b"\x00piped\n"
        assert store.get(b"\x00\xff") == b"\x01\x02"
        assert store.get(b"k3") is None
        assert store.log.begin_address <= address < store.log.committed_until_address


def test_scan_prints_live_pairs_with_prefix_and_limit(store_dir: Path) -> None:
    result = run_cli("scan", store_dir, "--prefix", "k9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert sorted(lines) == sorted(
        ["k9\tv2909"] + [f"k9{i}\tv29{9}{i}" for i in range(10)])
    assert len(run_cli("scan", store_dir, "--limit", "5").stdout.splitlines()) == 5
    records = [json.loads(line) for line in run_cli("scan", store_dir, "--format",
                                                     "json").stdout.splitlines()]
    pairs = {base64.b64decode(r["key_base64"]): base64.b64decode(r["value_base64"])
             for r in records}
    with KVStore.open(store_dir) as store:
        assert pairs == dict(store.items()) and len(pairs) == 101


def test_checkpoint_and_compact_report_and_keep_the_state(store_dir: Path) -> None:
    with KVStore.open(store_dir) as store:
        before = dict(store.items())
    result = run_cli("checkpoint", store_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keys"] == 101
    result = run_cli("compact", store_dir, "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["begin"] > report["begin_before"] and report["keys_copied"] == 101
    assert result.stderr == b""
    with KVStore.open(store_dir) as store:
        assert dict(store.items()) == before
        assert store.log.begin_address == report["begin"]


def test_compact_draws_progress_on_stderr_when_asked(store_dir: Path) -> None:
    result = run_cli("compact", store_dir, "--progress")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    assert "\rcompact" in stderr and "100%" in stderr
    assert stderr.endswith("\r")  # the bar wipes its line when done


def test_reads_run_beside_a_writer_and_writes_are_refused_with_one_line(
        store_dir: Path) -> None:
    with KVStore.open(store_dir) as store:
        store.put(b"live", b"yes")
        assert run_cli("get", store_dir, "live").stdout == b"yes\n"
        assert b"live\tyes" in run_cli("scan", store_dir).stdout
        line = assert_one_error_line(run_cli("put", store_dir, "a", "b"))
        assert "open for writing by process" in line


def test_bad_input_gets_one_error_line(store_dir: Path, tmp_path: Path) -> None:
    assert "not found" in assert_one_error_line(run_cli("get", store_dir, "missing"))
    assert "not found" in assert_one_error_line(run_cli("del", store_dir, "missing"))
    assert "not a directory" in assert_one_error_line(run_cli("get", tmp_path / "nope", "k"))
    assert "hexadecimal" in assert_one_error_line(run_cli("get", store_dir, "zz", "--hex"), 2)
    assert_one_error_line(run_cli("scan", store_dir, "--limit", "-1"), 2)
    assert_one_error_line(run_cli("frobnicate", store_dir), 2)
    assert_one_error_line(run_cli("compact", store_dir, "--until", "x"), 2)
