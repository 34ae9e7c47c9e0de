"""The log's own subcommands of `fasterlog`: look into a log directory, check it, run the demo.

    fasterlog info DIR [--json]          positions, commit number, settings, segment files
    fasterlog dump DIR [--from A] [--to A] [--format hex|raw|json] [--markers]
    fasterlog verify DIR [--no-progress] every checksum in the committed range
    fasterlog demo [--dir DIR]           append, commit, kill -9 a writer, recover, check
    fasterlog tail DIR [--from A] [--follow] [--format text|json]
    fasterlog cursors DIR [--json]       named cursors: positions, lag in entries and bytes
    fasterlog backup SRC DEST [--json]   a consistent copy of the committed prefix, online
    fasterlog repair DIR [--page-size N] [--segment-size N] [--salt N] [--force] [--json]
                                         rebuild a lost or damaged fasterlog.meta

Each is a `Command` (fasterlog/cli_support.py) named in pyproject.toml's "fasterlog.commands"
entry-point group; the dispatcher above every layer (fasterlog_cli) builds the parser from
them, next to the `kv` and `serve` commands that kvlayer and fasterlog_server register. This
module imports nothing above the log.

Rules:
1. info, dump, verify, tail and cursors open the log with readonly=True: they never write,
   take no writer lock, and so work while a writer runs (repair, which writes a meta file,
   takes the writer lock and refuses while a writer runs). They see the log as of its newest
   commit on disk when they open it (tail --follow then follows the writer's later commits).
2. Every expected failure (a FasterLogError, an OSError, a missing directory, a bad argument)
   ends the run with one line on stderr, "fasterlog: error: ...", and a non-zero exit status:
   2 for usage errors, 1 for everything else (corruption included). A traceback means a bug.
   The commands raise; the dispatcher prints (fasterlog/cli_support.py, rule 1).
3. Output meant for programs (dump --format json|raw, info --json) goes to stdout alone;
   progress and errors go to stderr.

The demo lives here rather than in examples/demo.py so that `fasterlog demo` works from an
installed wheel, where examples/ is not shipped; examples/demo.py is a thin runnable script that
calls it. Its writer child is this same module, started with `python -c` (see _run_writer_child).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import itertools
import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import errors
from ._format import KIND_COMMIT, KIND_DATA, KIND_MARKER, KIND_PADDING, EntryKind
from .backup import backup
from .cli_support import (
    EXIT_OK,
    CliError,
    Command,
    ProgressBar,
    UsageError,
    address_argument,
    error_line,
    escape_text,
    size_text,
)
from .log import FasterLog
from .repair import repair

__all__ = ["BACKUP_COMMAND", "CURSORS_COMMAND", "DEMO_COMMAND", "DUMP_COMMAND", "INFO_COMMAND",
           "REPAIR_COMMAND", "TAIL_COMMAND", "VERIFY_COMMAND", "demo_writer", "run_demo"]

KIND_NAMES = {KIND_DATA: "data", KIND_MARKER: "marker", KIND_COMMIT: "commit",
              KIND_PADDING: "padding"}

# verify checks the log this many bytes per call, so that progress can be drawn between calls.
verify_chunk_size_bytes = 16 << 20
hexdump_line_size_bytes = 16
cookie_shown_size_bytes_max = 32
scan_entries_count_max = 4096


def _open_readonly(directory: str) -> FasterLog:
    if not os.path.exists(directory):
        raise CliError(f"{directory}: no such directory")
    if not os.path.isdir(directory):
        raise CliError(f"{directory}: not a directory")
    return FasterLog.open(directory, readonly=True)


# ---------------------------------------------------------------------- info


def _segment_files(log: FasterLog) -> list[dict[str, Any]]:
    segment_size_bytes = log.settings["segment_size_bytes"]
    segments = []
    for name in sorted(os.listdir(log.path)):
        if not (name.startswith("segment-") and name.endswith(".fl")):
            continue
        number_text = name[len("segment-"):-len(".fl")]
        first_address = int(number_text) * segment_size_bytes if number_text.isdigit() else None
        try:
            size_bytes = os.stat(os.path.join(log.path, name)).st_size
        except FileNotFoundError:
            continue  # deleted by a writer's truncation between listdir and stat
        segments.append({"name": name, "size_bytes": size_bytes, "first_address": first_address})
    return segments


def log_info(log: FasterLog) -> dict[str, Any]:
    """Everything `fasterlog info` shows, as plain data (the --json output)."""
    settings = log.settings
    cookie = log.cookie
    return {
        "directory": log.path,
        "begin_address": log.begin_address,
        "tail_address": log.tail_address,
        "flushed_until_address": log.flushed_until_address,
        "committed_until_address": log.committed_until_address,
        "commit_number": log.commit_number,
        "epoch": settings["epoch"],
        "io_backend": log.io_backend,
        "readonly": settings["readonly"],
        "page_size_bytes": settings["page_size_bytes"],
        "segment_size_bytes": settings["segment_size_bytes"],
        "memory_size_bytes": settings["memory_size_bytes"],
        "entry_size_max": log.entry_size_max,
        "cookie_size_bytes": None if cookie is None else len(cookie),
        "cookie_hex": None if cookie is None else cookie[:cookie_shown_size_bytes_max].hex(),
        "segments": _segment_files(log),
    }


def format_info(info: dict[str, Any]) -> list[str]:
    cookie = "none"
    if info["cookie_hex"] is not None:
        cut = "..." if info["cookie_size_bytes"] > cookie_shown_size_bytes_max else ""
        cookie = f"{info['cookie_hex']}{cut} ({info['cookie_size_bytes']} bytes)"
    memory = size_text(info["memory_size_bytes"])
    if info["readonly"]:
        # The memory size is not stored with the log: a read-only open reports its own.
        memory += " (this read-only reader's; not stored with the log)"
    segments_size_bytes = sum(segment["size_bytes"] for segment in info["segments"])
    rows = [
        ("directory", info["directory"]),
        ("begin address", info["begin_address"]),
        ("committed-until address", info["committed_until_address"]),
        ("flushed-until address", info["flushed_until_address"]),
        ("tail address", info["tail_address"]),
        ("commit number", info["commit_number"]),
        ("epoch", info["epoch"]),
        ("cookie", cookie),
        ("io backend", info["io_backend"]),
        ("page size", size_text(info["page_size_bytes"])),
        ("segment size", size_text(info["segment_size_bytes"])),
        ("memory size", memory),
        ("entry size max", f"{info['entry_size_max']} bytes"),
        ("segment files", f"{len(info['segments'])}, {size_text(segments_size_bytes)}"),
    ]
    lines = [f"{name:<24} {value}" for name, value in rows]
    for segment in info["segments"]:
        first = segment["first_address"]
        where = "" if first is None else (
            f"  addresses {first} .. {first + info['segment_size_bytes']}")
        lines.append(f"  {segment['name']:<22} {segment['size_bytes']:>12} bytes{where}")
    return lines


def command_info(arguments: argparse.Namespace) -> int:
    with _open_readonly(arguments.directory) as log:
        info = log_info(log)
    if arguments.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(format_info(info)))
    return EXIT_OK


# ---------------------------------------------------------------------- dump


def scan_frames(log: FasterLog, begin: int, end: int,
                markers: bool) -> Iterator[list[tuple[int, EntryKind, bytes]]]:
    """Lists of (address, kind, payload), up to scan_entries_count_max at a time; with
    `markers`, markers and commit records too."""
    frames = log.scan(begin, end, kinds=True, include_markers=markers,
                      include_commit_records=markers)
    while batch := list(itertools.islice(frames, scan_entries_count_max)):
        yield batch


def _hexdump_lines(address: int, kind: int, payload: bytes) -> Iterator[str]:
    yield f"{address} {KIND_NAMES.get(kind, str(kind))} {len(payload)} bytes"
    for offset in range(0, len(payload), hexdump_line_size_bytes):
        chunk = payload[offset:offset + hexdump_line_size_bytes]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        yield f"  {offset:08x}  {chunk.hex(' '):<{hexdump_line_size_bytes * 3}} |{text}|"


def _check_entry_start(log: FasterLog, address: int) -> None:
    """Raises InvalidAddressError unless a frame starts at `address`: a scan reports any frame
    that fails its checks as corrupt, so a --from inside an entry would read as damage."""
    try:
        log.entry_kind(address)
    except (errors.InvalidAddressError, errors.CorruptionError) as error:
        reason = str(error).partition(" failed: ")[2] or str(error)  # the core's reason
        raise CliError(f"dump --from {address} failed: {reason}") from None


def _dump_range(log: FasterLog, arguments: argparse.Namespace) -> tuple[int, int]:
    begin = log.begin_address if arguments.begin is None else arguments.begin
    committed = log.committed_until_address
    end = committed if arguments.end is None else min(arguments.end, committed)
    if begin < log.begin_address:
        raise CliError(f"dump: --from {begin} is below the begin address {log.begin_address} "
                       "(that part of the log was truncated)")
    if begin > committed:
        raise CliError(f"dump: --from {begin} is beyond the committed-until address {committed}")
    if begin < end and begin != log.begin_address:
        _check_entry_start(log, begin)
    return begin, end


def command_dump(arguments: argparse.Namespace) -> int:
    if arguments.begin is not None and arguments.end is not None \
            and arguments.begin > arguments.end:
        raise UsageError(f"dump: --from {arguments.begin} is above --to {arguments.end}")
    with _open_readonly(arguments.directory) as log:
        begin, end = _dump_range(log, arguments)
        binary = sys.stdout.buffer
        for batch in scan_frames(log, begin, end, arguments.markers):
            if arguments.format == "raw":
                binary.write(b"".join(payload for _, _, payload in batch))
                continue
            if arguments.format == "json":
                lines = [json.dumps({"address": address, "kind": KIND_NAMES.get(kind, kind),
                                     "size": len(payload),
                                     "data_base64": base64.b64encode(payload).decode()})
                         for address, kind, payload in batch]
            else:
                lines = [line for frame in batch for line in _hexdump_lines(*frame)]
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    return EXIT_OK


# ---------------------------------------------------------------------- verify


def verify_log(log: FasterLog, progress: ProgressBar | None = None) -> int:
    """Checks every frame from begin to committed-until in chunks, drawing progress between
    them. Returns the committed-until address; raises CorruptionError at the first bad frame."""
    begin = position = log.begin_address
    limit = log.committed_until_address
    while position < limit:
        good = log.verify(position, min(position + verify_chunk_size_bytes, limit))
        if good <= position:
            raise CliError(f"verify failed: stopped at address {position} before the "
                           f"committed-until address {limit}; all is good below {position}")
        position = good
        if progress is not None:
            progress.update(position - begin)
    return limit


def command_verify(arguments: argparse.Namespace) -> int:
    with _open_readonly(arguments.directory) as log:
        begin, limit = log.begin_address, log.committed_until_address
        progress = ProgressBar(sys.stderr, limit - begin, "verify",
                               enabled=not arguments.no_progress and sys.stderr.isatty())
        try:
            good = verify_log(log, progress)
        except errors.CorruptionError as error:
            raise CliError(f"{error}; the log is good from {begin} up to address "
                           f"{error.address}") from None
        finally:
            progress.close()
    print(f"verified {size_text(good - begin)} from {begin} to {good}: every checksum is "
          f"good; last good address {good} (committed-until)")
    return EXIT_OK


# ---------------------------------------------------------------------- demo

# Small sizes: segment files are preallocated whole (the default segment is 1 GiB), and a few
# runs then fill more than one segment. Every open in the demo passes them, so a directory that
# holds a log with other sizes is refused with a SettingsError rather than silently reused.
demo_page_size_bytes = 64 << 10
demo_memory_size_bytes = 512 << 10
demo_segment_size_bytes = 1 << 20
demo_own_events_count = 5
demo_group_size_max = 40  # entries the writer child appends between two commits
# The parent kills the writer after about demo_acks_before_kill_count commits; this bound only
# stops a writer whose parent is gone.
demo_writer_commits_max = 100_000
# The writer pauses this long before each append, as if events trickled in, so that the kill
# lands inside a group of appends about as often as inside a commit.
demo_append_pause_s = 0.0002
demo_acks_before_kill_count = 30
demo_kill_delay_max_s = 0.01
demo_child_timeout_s = 60.0
demo_entries_shown_count = 3
_EVENT_NAMES = ("signup", "login", "add_to_cart", "checkout", "refund", "logout")


def demo_event(sequence_number: int, source: str) -> bytes:
    """The entry with this sequence number: a pure function of its arguments, so the demo can
    check every recovered entry byte for byte without keeping a copy."""
    return json.dumps({"seq": sequence_number, "source": source,
                       "event": _EVENT_NAMES[sequence_number * 7 % len(_EVENT_NAMES)],
                       "amount_cents": sequence_number * 7919 % 10000},
                      separators=(",", ":")).encode()


def _open_demo_log(directory: str | os.PathLike[str]) -> FasterLog:
    return FasterLog.open(directory, page_size_bytes=demo_page_size_bytes,
                          memory_size_bytes=demo_memory_size_bytes,
                          segment_size_bytes=demo_segment_size_bytes)


def _count_cookie(entries_count: int) -> bytes:
    return json.dumps({"entries": entries_count}).encode()


def _entries_count(log: FasterLog) -> int:
    """How many data entries the log holds: the demo stores the count in each commit's cookie,
    so recovery hands it back; a log written by something else is counted by a scan."""
    try:
        count = json.loads(log.cookie or b"")["entries"]
        if isinstance(count, int):
            return count
    except (ValueError, KeyError, TypeError):
        pass
    return sum(len(batch) for batch in log.scan_batches())


def demo_writer(directory: str) -> NoReturn:
    """The demo's child: appends groups of events and commits each group, forever, until the
    parent kills it. It reports on stdout, one os.write per line (shorter than PIPE_BUF, so a
    kill never tears a line): "ready COUNT ADDRESS" after recovery, "appending FROM UNTIL"
    before each group, "ack COUNT ADDRESS" after each commit() returned."""
    def say(line: str) -> None:
        os.write(1, (line + "\n").encode())

    log = _open_demo_log(directory)
    count = _entries_count(log)
    say(f"ready {count} {log.committed_until_address}")
    rhythm = random.Random()
    for _ in range(demo_writer_commits_max):
        until = count + rhythm.randint(1, demo_group_size_max)
        say(f"appending {count} {until}")
        while count < until:
            time.sleep(demo_append_pause_s)
            log.append(demo_event(count, "writer"))
            count += 1
        committed = log.commit(cookie=_count_cookie(count))
        say(f"ack {count} {committed}")
    raise SystemExit(f"demo writer: made {demo_writer_commits_max} commits and was not killed")


class _ChildReport:
    """What the writer child said on its pipe, read line by line with a deadline."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = b""
        self.eof = False
        self.ready_count = self.ready_address = -1
        self.acks_count = 0
        self.acked_count = self.acked_address = -1
        self.attempted_until = -1

    def read_until(self, acks_wanted: int | None, deadline_s: float) -> None:
        """Reads until `acks_wanted` acks were seen (None: until end of file)."""
        while not self.eof and (acks_wanted is None or self.acks_count < acks_wanted):
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                raise CliError("demo failed: the writer child did not report in time")
            readable, _, _ = select.select([self._fd], [], [], remaining_s)
            if not readable:
                continue
            chunk = os.read(self._fd, 65536)
            self.eof = not chunk
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                self._take(line.decode().split())

    def _take(self, words: list[str]) -> None:
        if len(words) != 3 or not (words[1].isdigit() and words[2].isdigit()):
            return  # not one of the writer's reports
        tag, first, second = words[0], int(words[1]), int(words[2])
        if tag == "ready":
            self.ready_count, self.ready_address = first, second
        elif tag == "appending":
            self.attempted_until = second
        elif tag == "ack":
            self.acks_count += 1
            self.acked_count, self.acked_address = first, second


def _writer_complaint(child: subprocess.Popen[bytes]) -> str:
    assert child.stderr is not None
    lines = child.stderr.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def _run_writer_child(directory: Path, say: Callable[[str], None]) -> _ChildReport:
    code = "import sys; from fasterlog.cli import demo_writer; demo_writer(sys.argv[1])"
    child = subprocess.Popen([sys.executable, "-c", code, str(directory)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    report = _ChildReport(child.stdout.fileno())
    try:
        deadline_s = time.monotonic() + demo_child_timeout_s
        report.read_until(demo_acks_before_kill_count, deadline_s)
        if report.eof:
            child.wait()
            raise CliError(f"demo failed: the writer child exited with status {child.returncode}"
                           f" before it was killed: {_writer_complaint(child)}")
        say(f"   writer (pid {child.pid}) opened the log ({report.ready_count} entries) and "
            f"has acknowledged {report.acks_count} commits so far")
        time.sleep(random.uniform(0, demo_kill_delay_max_s))  # land the kill anywhere
        child.send_signal(signal.SIGKILL)
        if child.wait() != -signal.SIGKILL:
            raise CliError(f"demo failed: the writer child exited with status {child.returncode}"
                           f" before the kill landed: {_writer_complaint(child)}")
        report.read_until(None, time.monotonic() + demo_child_timeout_s)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    say(f"   sent SIGKILL mid-stream: the writer died after {report.acks_count} acknowledged "
        f"commits;\n   the last covered entries up to #{report.acked_count - 1} (committed "
        f"until {report.acked_address}); it had begun appending up to "
        f"#{report.attempted_until - 1}")
    return report


def _check_recovery(log: FasterLog, report: _ChildReport,
                    say: Callable[[str], None]) -> list[tuple[int, bytes]]:
    """Checks that the reopened log holds every acknowledged entry of the writer, byte for byte,
    and nothing it never appended; returns the writer's recovered (address, entry) pairs."""
    recovered = [pair for batch in log.scan_batches(report.ready_address) for pair in batch]
    start = report.ready_count
    acknowledged_count = report.acked_count - start
    for index, (address, entry) in enumerate(recovered):
        if entry != demo_event(start + index, "writer"):
            raise CliError(f"demo failed: entry #{start + index} at address {address} is not "
                           "what the writer appended")
    if len(recovered) < acknowledged_count:
        raise CliError(f"demo failed: only {len(recovered)} of the {acknowledged_count} "
                       "acknowledged entries were recovered")
    if start + len(recovered) > report.attempted_until:
        raise CliError("demo failed: recovery returned entries the writer never appended")
    if _entries_count(log) != start + len(recovered):
        raise CliError("demo failed: the recovered cookie does not match the recovered entries")
    say(f"   all {acknowledged_count} acknowledged entries of the writer were recovered, byte "
        "for byte, in order")
    unacknowledged_kept = len(recovered) - acknowledged_count
    if unacknowledged_kept:
        say(f"   {unacknowledged_kept} more entries were durable though never acknowledged "
            "(the kill landed after their commit reached the disk, before the writer reported "
            "it): kept")
    dropped = report.attempted_until - start - len(recovered)
    if dropped:
        say(f"   {dropped} unacknowledged entries after the last durable commit were dropped\n"
            f"   (at most {dropped}: the writer may not have appended all of its last group);\n"
            "   allowed, as no commit() had returned for them")
    else:
        say("   nothing was dropped: the kill landed after the writer's last group was durable")
    say(f"   the recovered commit's cookie says {log.cookie.decode() if log.cookie else None}")
    return recovered


def run_demo(directory: str | os.PathLike[str], out: TextIO | None = None) -> None:
    """The tour: create or recover a log, append and commit, kill -9 a writer mid-stream,
    recover, check every acknowledged entry, show entries and a summary. Run it twice."""
    stream = out if out is not None else sys.stdout

    def say(line: str = "") -> None:
        print(line, file=stream, flush=True)

    path = Path(directory)
    existed = (path / "fasterlog.meta").exists()
    path.mkdir(parents=True, exist_ok=True)
    say(f"fasterlog demo in {path}")
    say(f"1. open {path}: " + ("recover the log left there" if existed else "create a new log"))
    with _open_demo_log(path) as log:
        count = _entries_count(log)
        say(f"   {count} entries, committed until address {log.committed_until_address}, "
            f"commit number {log.commit_number}, io backend {log.io_backend}")
        say(f"2. append {demo_own_events_count} events and commit them")
        own = [(log.append(demo_event(count + i, "demo")), demo_event(count + i, "demo"))
               for i in range(demo_own_events_count)]
        committed = log.commit(cookie=_count_cookie(count + demo_own_events_count))
        say(f"   appended at addresses {[address for address, _ in own]}; committed until "
            f"{committed}")
    say("3. start a writer child that appends groups of events and commits each group,\n"
        "   reporting every acknowledged commit on a pipe; kill it with SIGKILL mid-stream")
    report = _run_writer_child(path, say)
    say("4. reopen the log: recovery finds the newest intact commit")
    with _open_demo_log(path) as log:
        say(f"   recovered: committed until address {log.committed_until_address}, commit "
            f"number {log.commit_number}")
        recovered = _check_recovery(log, report, say)
        say("5. scan: this run's first events and the writer's last recovered ones")
        for address, entry in own[:demo_entries_shown_count] + \
                recovered[-demo_entries_shown_count:]:
            say(f"   {address:>10}  {entry.decode()}")
        say(f"6. verify: every checksum good up to address {verify_log(log)}")
        say("7. summary (what `fasterlog info` shows)")
        for line in format_info(log_info(log)):
            say("   " + line)
    say(f"done: run it again to recover {path} and append more")


def command_demo(arguments: argparse.Namespace) -> int:
    run_demo(arguments.dir)
    return EXIT_OK


# ---------------------------------------------------------------------- tail and cursors

# tail --follow prints as entries arrive; it flushes stdout whenever it has caught up with
# committed-until, so a burst is written in large pieces and a trickle line by line.


def _entry_line(address: int, entry: bytes, output_format: str) -> str:
    if output_format == "json":
        return json.dumps({"address": address, "kind": "data", "size": len(entry),
                           "data_base64": base64.b64encode(entry).decode()})
    # One line per entry whatever its bytes: undecodable bytes and control characters escaped.
    return f"{address} {escape_text(entry)}"


def _tail_start(log: FasterLog, begin: int | None) -> int:
    if begin is None:
        return log.begin_address
    committed = log.committed_until_address
    if begin < log.begin_address:
        raise CliError(f"tail: --from {begin} is below the begin address {log.begin_address} "
                       "(that part of the log was truncated)")
    if begin > committed:
        raise CliError(f"tail: --from {begin} is beyond the committed-until address {committed}")
    if begin not in (log.begin_address, committed):
        try:
            log.read(begin)
        except errors.InvalidAddressError:
            raise CliError(f"tail: --from {begin} is not the start of an entry") from None
    return begin


def _print_tail(log: FasterLog, tail: Any, output_format: str) -> None:
    committed = log.committed_until_address
    for address, entry in tail:
        sys.stdout.write(_entry_line(address, entry, output_format) + "\n")
        if tail.position >= committed:
            committed = log.committed_until_address
            if tail.position >= committed:
                sys.stdout.flush()


def _follow(log: FasterLog, start: int, output_format: str) -> int:
    """Prints entries as commits land until Ctrl-C or a completed log. The tail runs in a
    worker thread: a follower's wait in the core does not return to Python on a signal, while
    the main thread's wait does, and then stops the tail cleanly.

    The main thread waits on an Event the worker sets as its last step, not on join(): on
    Python 3.11 a join() interrupted by Ctrl-C marks the thread stopped while it still runs
    (threading's bpo-45274 cleanup releases the lock the running thread holds), so the next
    join() returned at once, the log was closed under a worker still inside the core's wait,
    and the process died of SIGSEGV about once in a hundred Ctrl-Cs."""
    tail = log.tail(start)
    failure: list[BaseException] = []
    finished = threading.Event()

    def run() -> None:
        try:
            _print_tail(log, tail, output_format)
        except BaseException as error:  # noqa: BLE001 - the main thread re-raises it
            failure.append(error)
        finally:
            finished.set()  # nothing below touches the log

    worker = threading.Thread(target=run, name="fasterlog-tail", daemon=True)
    worker.start()
    try:
        finished.wait()
    except KeyboardInterrupt:
        tail.stop()
        while True:  # the tail ends within milliseconds; the log must not close under it
            try:
                finished.wait()
                break
            except KeyboardInterrupt:
                continue
    worker.join()
    if failure:
        raise failure[0]
    sys.stdout.flush()
    return EXIT_OK


def command_tail(arguments: argparse.Namespace) -> int:
    with _open_readonly(arguments.directory) as log:
        start = _tail_start(log, arguments.begin)
        if arguments.follow:
            return _follow(log, start, arguments.format)
        for addresses, entries in log.scan_columns(start):
            sys.stdout.write("".join(_entry_line(address, entry, arguments.format) + "\n"
                                     for address, entry in zip(addresses, entries, strict=True)))
        sys.stdout.flush()
    return EXIT_OK


def cursors_info(log: FasterLog) -> dict[str, Any]:
    """Every named cursor of the log with its lag (the `cursors --json` output). Lag runs from
    the cursor's durable position to committed-until; one scan counts it for every cursor."""
    from . import cursors

    begin, committed = log.begin_address, log.committed_until_address
    rows: list[dict[str, Any]] = []
    for name in cursors.names(log.path):
        row: dict[str, Any] = {"name": name, "position": None, "lag_entries": None,
                               "lag_bytes": None, "truncated": False, "error": None}
        try:
            position = cursors.read(log.path, name)
        except KeyError:
            continue  # deleted while we looked
        except (errors.FasterLogError, OSError) as error:
            row["error"] = error_line(error)
        else:
            row.update(position=position, lag_entries=0, lag_bytes=max(0, committed - position),
                       truncated=position < begin)
        rows.append(row)
    counted = [row for row in rows if row["error"] is None]
    if counted:
        start = max(begin, min(row["position"] for row in counted))
        for addresses, _ in log.scan_columns(start, committed):
            for row in counted:
                row["lag_entries"] += len(addresses) - bisect.bisect_left(addresses,
                                                                          row["position"])
    return {"directory": log.path, "begin_address": begin, "committed_until_address": committed,
            "cursors": rows}


def format_cursors(info: dict[str, Any]) -> list[str]:
    if not info["cursors"]:
        return [f"no cursors (committed-until address {info['committed_until_address']})"]
    width = max(len("name"), *(len(row["name"]) for row in info["cursors"]))
    lines = [f"{'name':<{width}}  {'position':>14}  {'lag entries':>12}  {'lag bytes':>14}"]
    for row in info["cursors"]:
        if row["error"] is not None:
            lines.append(f"{row['name']:<{width}}  unreadable: {row['error']}")
            continue
        note = "  (below begin: truncated with force)" if row["truncated"] else ""
        lines.append(f"{row['name']:<{width}}  {row['position']:>14}  {row['lag_entries']:>12}"
                     f"  {row['lag_bytes']:>14}{note}")
    lines.append(f"committed-until address {info['committed_until_address']}, begin address "
                 f"{info['begin_address']}")
    return lines


def command_cursors(arguments: argparse.Namespace) -> int:
    with _open_readonly(arguments.directory) as log:
        info = cursors_info(log)
    if arguments.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(format_cursors(info)))
    bad = [row for row in info["cursors"] if row["error"] is not None]
    if bad:
        sys.stdout.flush()
        raise CliError(f"cursors: {len(bad)} unreadable cursor file(s): "
                       + "; ".join(f"{row['name']}: {row['error']}" for row in bad))
    return EXIT_OK


# ---------------------------------------------------------------------- backup


def command_backup(arguments: argparse.Namespace) -> int:
    if not os.path.isdir(arguments.source):
        raise CliError(f"{arguments.source}: no such directory")
    result = backup(arguments.source, arguments.target)
    info = {"target": result.target, "committed_until_address": result.committed_until_address,
            "begin_address": result.begin_address, "commit_number": result.commit_number,
            "segments_count": result.segments_count, "bytes_copied": result.bytes_copied,
            "attempts": result.attempts}
    if arguments.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"backup of {arguments.source} in {result.target}: committed until "
              f"{result.committed_until_address} (begin {result.begin_address}, commit "
              f"{result.commit_number}), {result.segments_count} segment(s), "
              f"{size_text(result.bytes_copied)} copied")
    return EXIT_OK


# ---------------------------------------------------------------------- repair


def command_repair(arguments: argparse.Namespace) -> int:
    if not os.path.isdir(arguments.directory):
        raise CliError(f"{arguments.directory}: no such directory")
    result = repair(arguments.directory, page_size_bytes=arguments.page_size,
                    segment_size_bytes=arguments.segment_size, salt=arguments.salt,
                    force=arguments.force)
    info = {"directory": result.directory,
            "committed_until_address": result.committed_until_address,
            "begin_address": result.begin_address, "commit_number": result.commit_number,
            "epoch": result.epoch, "page_size_bytes": result.page_size_bytes,
            "segment_size_bytes": result.segment_size_bytes, "salt": result.salt,
            "salt_source": result.salt_source, "segments_count": result.segments_count,
            "ignored_bytes": result.ignored_bytes, "kept_meta_path": result.kept_meta_path}
    if arguments.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"repaired {result.directory}: committed until {result.committed_until_address} "
          f"(begin {result.begin_address}, commit {result.commit_number}); page size "
          f"{size_text(result.page_size_bytes)}, segment size "
          f"{size_text(result.segment_size_bytes)}, salt {result.salt:#x} "
          f"(from {result.salt_source}), {result.segments_count} segment file(s)")
    if result.ignored_bytes:
        print(f"ignored {result.ignored_bytes} bytes of uncommitted frames past the last commit")
    if result.kept_meta_path:
        print(f"the old meta file is kept as {result.kept_meta_path}")
    return EXIT_OK


# ---------------------------------------------------------------------- registration
# The dispatcher (fasterlog_cli) finds these through pyproject.toml's "fasterlog.commands"
# entry points; `order` keeps `fasterlog --help` in this order, before serve (70) and kv (80).


def _add_directory_and_json_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="the log directory (its writer may run)")
    parser.add_argument("target", metavar="DEST", help="a new (or empty) directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _integer_argument(text: str) -> int:
    """A size or salt argument (argparse `type=`): decimal or 0x-prefixed, not negative."""
    value = int(text, 0)
    if value < 0:
        raise ValueError(text)
    return value


_integer_argument.__name__ = "integer"  # argparse: "invalid integer value: 'x'"


def _add_repair_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Rebuild a missing or damaged fasterlog.meta from the segment files: the log then "
        "opens with exactly the committed prefix its newest valid commit record names. "
        "Refuses (exit 1, nothing changed) when there are no segment files, when the meta "
        "file is valid (unless --force), when a writer has the log open, and when the "
        "segments show committed data lost. The old meta file is kept as "
        "fasterlog.meta.before-repair; cursor files and KV checkpoints are left as they are.")
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--page-size", type=_integer_argument, metavar="N",
                        help="page_size_bytes, when the frames do not tell it")
    parser.add_argument("--segment-size", type=_integer_argument, metavar="N",
                        help="segment_size_bytes (default: the size of the segment files)")
    parser.add_argument("--salt", type=_integer_argument, metavar="N",
                        help="the log's salt (default: from the old meta block or a cursor "
                        "file, else derived from the frames' checksums)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild even when the meta file is valid")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_dump_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--from", dest="begin", type=address_argument, metavar="A",
                        help="first address (an entry start; default: the begin address)")
    parser.add_argument("--to", dest="end", type=address_argument, metavar="A",
                        help="stop before this address (default: committed-until)")
    parser.add_argument("--format", choices=("hex", "raw", "json"), default="hex",
                        help="hex: address, kind, size and a hex dump; raw: the payloads "
                        "back to back (binary); json: one object per line")
    parser.add_argument("--markers", action="store_true",
                        help="also show markers and commit records")


def _add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar, even on a terminal")


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=os.path.join(".", "data", "demo-log"),
                        help="log directory (default: ./data/demo-log)")


def _add_tail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR")
    parser.add_argument("--from", dest="begin", type=address_argument, metavar="A",
                        help="first address (an entry start; default: the begin address)")
    parser.add_argument("--follow", action="store_true",
                        help="keep printing entries as commits land, until Ctrl-C or complete()")
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: address and entry, escaped to one line; json: one object "
                        "per line, as dump --format json")


INFO_COMMAND = Command(name="info", help="positions, settings and segment files of a log",
                       order=10, add_arguments=_add_directory_and_json_arguments, run=command_info)
DUMP_COMMAND = Command(name="dump", help="print the entries in the committed range",
                       order=20, add_arguments=_add_dump_arguments, run=command_dump)
VERIFY_COMMAND = Command(name="verify", help="check every checksum in the committed range",
                         order=30, add_arguments=_add_verify_arguments, run=command_verify)
DEMO_COMMAND = Command(name="demo", help="append, commit, kill -9 a writer, recover, check",
                       order=40, add_arguments=_add_demo_arguments, run=command_demo)
TAIL_COMMAND = Command(name="tail",
                       help="print the committed entries; --follow: as they land",
                       order=50, add_arguments=_add_tail_arguments, run=command_tail)
CURSORS_COMMAND = Command(name="cursors", help="named cursors: positions and lag", order=60,
                          add_arguments=_add_directory_and_json_arguments, run=command_cursors)
BACKUP_COMMAND = Command(name="backup", order=62,
                         help="copy the committed prefix of a log, while its writer runs",
                         add_arguments=_add_backup_arguments, run=command_backup)
REPAIR_COMMAND = Command(name="repair", order=64,
                         help="rebuild a lost or damaged meta file from the segments",
                         add_arguments=_add_repair_arguments, run=command_repair)
