"""`fasterlog serve` as a real process, driven by Redis's own tools and by signals.

- redis-cli (Debian redis-tools) runs commands and a `--pipe` mass insert;
- redis-benchmark runs SET/GET and a custom XADD, pipelined and with several clients, and
  must finish without an error reply;
- SIGTERM and SIGINT stop the server gracefully (exit status 0, no new connections), and a
  restart recovers every acknowledged write;
- kill -9 during concurrent XADDs from several clients, 30 rounds in the default run (200 in
  the slow one): every XADD that got an ID back is present after the restart, each client's
  entries in the order it sent them, none twice.

Method: the server is `python -m fasterlog serve --port 0` on a temporary directory; the port
is read from its start-up line. Clients are redis-py connections in threads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from fasterlog import FasterLog  # noqa: E402

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
needs_redis_cli = pytest.mark.skipif(REDIS_CLI is None, reason="redis-cli is not installed "
                                     "(scripts/setup.sh installs redis-tools)")
needs_redis_benchmark = pytest.mark.skipif(REDIS_BENCHMARK is None,
                                           reason="redis-benchmark is not installed "
                                           "(scripts/setup.sh installs redis-tools)")


class ServerProcess:
    """`fasterlog serve` in a child process; stderr goes to a file we read the port from."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.directory = directory
        if not directory.exists():
            # Small segments: the server keeps the sizes of an existing log (and gives its KV
            # log the same), so the test does not preallocate the default 1 GiB segments.
            FasterLog.open(directory, page_size_bytes=65536, memory_size_bytes=1 << 20,
                           segment_size_bytes=4 << 20).close()
        self.stderr_path = directory.parent / f"serve-{time.monotonic_ns()}.err"
        self._stderr = open(self.stderr_path, "wb")  # closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fasterlog", "serve", "--dir", str(directory),
             "--port", "0", *extra], stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + 30
        while True:
            text = self.stderr_path.read_text(errors="replace")
            found = re.search(r"serving .* on [0-9.]+:(\d+)", text)
            if found:
                self.port = int(found.group(1))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"server did not start: {text}")
            time.sleep(0.01)

    def client(self, **options: Any) -> Any:
        return redis.Redis(port=self.port, socket_timeout=30, **options)

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # our own child, by pid
        self.wait()

    def wait(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout)
        self._stderr.close()
        return code


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    yield process
    process.kill()


def run_tool(*arguments: str, stdin: bytes | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(arguments, input=stdin, capture_output=True, timeout=timeout,
                          check=False)


# ---------------------------------------------------------------------- redis-cli


@needs_redis_cli
def test_redis_cli_commands(server: ServerProcess) -> None:
    def cli(*words: str) -> str:
        done = run_tool(REDIS_CLI, "-p", str(server.port), *words)  # type: ignore[arg-type]
        assert done.returncode == 0, done.stderr
        return done.stdout.decode().strip()

    assert cli("PING") == "PONG"
    assert cli("SET", "greeting", "hello world") == "OK"
    assert cli("GET", "greeting") == "hello world"
    assert cli("INCR", "counter") == "1"
    assert cli("INCRBY", "counter", "41") == "42"
    stream_id = cli("XADD", "events", "*", "kind", "signup")
    assert re.fullmatch(r"\d+-\d+", stream_id)
    assert cli("XLEN", "events") == "1"
    assert cli("TYPE", "events") == "stream"
    assert cli("TYPE", "greeting") == "string"
    assert cli("EXISTS", "events", "greeting", "nothing") == "2"
    assert cli("DBSIZE") == "3"
    assert "WRONGTYPE" in cli("GET", "events")
    assert "wrong number of arguments" in cli("XLEN")
    assert cli("XRANGE", "events", "-", "+").split("\n")[0] == stream_id
    assert cli("-3", "WAITAOF", "1", "0", "0").split("\n") == ["1", "0"]
    assert cli("DEL", "events", "greeting") == "2"


@needs_redis_cli
def test_redis_cli_pipe_mass_insert(server: ServerProcess) -> None:
    def frame(*words: bytes) -> bytes:
        return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w)
                                                   for w in words)

    payload = b"".join(frame(b"SET", b"key:%d" % i, b"value:%d" % i) for i in range(2000))
    payload += b"".join(frame(b"XADD", b"mass", b"*", b"n", b"%d" % i) for i in range(2000))
    done = run_tool(REDIS_CLI, "-p", str(server.port), "--pipe",  # type: ignore[arg-type]
                    stdin=payload)
    assert done.returncode == 0, done.stderr
    assert b"errors: 0, replies: 4000" in done.stdout
    client = server.client()
    assert client.xlen("mass") == 2000
    assert client.get("key:1999") == b"value:1999"
    assert client.dbsize() == 2001


# ---------------------------------------------------------------------- redis-benchmark


def benchmark_rows(output: bytes) -> dict[str, float]:
    rows = {}
    for line in output.decode().splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if len(cells) >= 2 and cells[0] != "test":
            rows[cells[0]] = float(cells[1])
    return rows


@needs_redis_benchmark
def test_redis_benchmark_set_get_and_xadd_complete_without_errors(
        server: ServerProcess) -> None:
    port = str(server.port)
    done = run_tool(REDIS_BENCHMARK, "-p", port, "-n", "2000", "-c", "10",  # type: ignore[arg-type]
                    "-t", "set,get", "--csv")
    assert done.returncode == 0, done.stderr
    assert b"rror" not in done.stderr + done.stdout, done.stderr
    rows = benchmark_rows(done.stdout)
    assert rows.keys() == {"SET", "GET"} and min(rows.values()) > 0
    value = "v" * 100
    for options in (["-c", "1", "-P", "100", "-n", "5000"], ["-c", "20", "-P", "1", "-n", "1000"]):
        done = run_tool(REDIS_BENCHMARK, "-p", port, "--csv", *options,  # type: ignore[arg-type]
                        "XADD", "bench", "*", "d", value)
        assert done.returncode == 0, done.stderr
        assert b"rror" not in done.stderr + done.stdout, done.stderr
        assert min(benchmark_rows(done.stdout).values()) > 0
    client = server.client()
    assert client.xlen("bench") == 6000
    assert len(client.get("key:__rand_int__")) == 3  # redis-benchmark SETs 3 bytes (-d 3)


# ---------------------------------------------------------------------- shutdown and crashes


class Writer(threading.Thread):
    """XADDs (and, when asked, SETs) in a loop until the connection fails; keeps what was
    acknowledged."""

    def __init__(self, port: int, number: int, *, pipeline_size: int = 1,
                 with_kv: bool = False) -> None:
        super().__init__(daemon=True)
        self.port, self.number = port, number
        self.pipeline_size, self.with_kv = pipeline_size, with_kv
        self.acked: list[tuple[bytes, int]] = []  # (stream id, sequence number)
        self.acked_keys: list[int] = []
        self.stopping = False

    def run(self) -> None:
        try:
            # No retries: a retried XADD could be written twice, and the test wants to see the
            # connection fail at once when the server dies.
            client = redis.Redis(port=self.port, socket_timeout=30,
                                 retry=Retry(NoBackoff(), 0))
            sequence = 0
            while not self.stopping:
                pipe = client.pipeline(transaction=False)
                sent = []
                for _ in range(self.pipeline_size):
                    pipe.xadd("shared", {"w": str(self.number), "n": str(sequence)})
                    if self.with_kv:
                        pipe.set(f"k:{self.number}:{sequence}", str(sequence))
                    sent.append(sequence)
                    sequence += 1
                replies = pipe.execute()
                step = 2 if self.with_kv else 1
                for sequence_sent, reply in zip(sent, replies[::step], strict=True):
                    self.acked.append((reply, sequence_sent))
                if self.with_kv:
                    self.acked_keys += sent
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass


def check_recovered(port: int, writers: list[Writer], history: dict[int, list[int]]) -> None:
    """Every acknowledged XADD is present; per writer in the order sent, none twice."""
    client = redis.Redis(port=port, socket_timeout=30)
    entries = client.xrange("shared")
    present: dict[bytes, tuple[int, int]] = {}
    per_writer: dict[int, list[int]] = {}
    for stream_id, fields in entries:
        number, sequence = int(fields[b"w"]), int(fields[b"n"])
        present[stream_id] = (number, sequence)
        per_writer.setdefault(number, []).append(sequence)
    for writer in writers:
        for stream_id, sequence in writer.acked:
            assert present.get(stream_id) == (writer.number, sequence), \
                f"acknowledged {stream_id!r} of writer {writer.number} lost"
    for number, sequences in per_writer.items():
        assert len(sequences) == len(set(sequences)), f"writer {number}: duplicates"
        assert sequences == sorted(sequences), f"writer {number}: out of order"
        history[number] = sequences
    client.close()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT],
                         ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_and_a_restart_recovers_every_acked_write(
        tmp_path: Path, number: int) -> None:
    directory = tmp_path / "data"
    server = ServerProcess(directory)
    writers = [Writer(server.port, i, pipeline_size=1 + 10 * i, with_kv=True) for i in range(3)]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    server.signal(number)
    assert server.wait() == 0
    for writer in writers:
        writer.join(10)
        assert not writer.is_alive()
    assert sum(len(writer.acked) for writer in writers) > 0
    with pytest.raises(OSError):  # nobody listens any more
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    server = ServerProcess(directory)
    check_recovered(server.port, writers, {})
    client = server.client()
    for writer in writers:
        keys = [f"k:{writer.number}:{i}" for i in writer.acked_keys]
        assert client.mget(keys) == [str(i).encode() for i in writer.acked_keys] if keys \
            else True
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def kill_rounds(tmp_path: Path, rounds: int) -> None:
    directory = tmp_path / "data"
    writers_all: list[Writer] = []
    history: dict[int, list[int]] = {}
    for round_number in range(rounds):
        server = ServerProcess(directory)
        try:  # a failing check or a timeout must not leave the server running
            if writers_all:
                check_recovered(server.port, writers_all, history)
            writers = [Writer(server.port, 4 * round_number + i,
                              pipeline_size=(1, 1, 5, 20)[i]) for i in range(4)]
            for writer in writers:
                writer.start()
            time.sleep(0.03 + 0.03 * (round_number % 3))
            os.kill(server.process.pid, signal.SIGKILL)
        finally:
            server.kill()
        for writer in writers:
            writer.join(10)
        writers_all += writers
    server = ServerProcess(directory)
    try:
        check_recovered(server.port, writers_all, history)
    finally:
        server.kill()
    acked = sum(len(writer.acked) for writer in writers_all)
    print(f"kill -9 rounds: {rounds}, acknowledged XADDs: {acked}, lost: 0, duplicated: 0, "
          "out of order: 0")
    assert acked > rounds  # the rounds did write


def test_kill_9_during_concurrent_xadds_loses_no_acknowledged_write(tmp_path: Path) -> None:
    kill_rounds(tmp_path, 30)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # each round checks the whole stream so far: 200 rounds take minutes
def test_kill_9_during_concurrent_xadds_many_rounds(tmp_path: Path) -> None:
    kill_rounds(tmp_path, 200)
