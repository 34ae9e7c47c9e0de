"""What every `fasterlog` subcommand shares, whichever package registers it.

The command line is a dispatcher (fasterlog_cli) above every layer; each package registers its
own subcommands with it as `Command` objects, named in the "fasterlog.commands" entry-point
group of pyproject.toml: the log's in fasterlog/cli.py, `kv` in kvlayer/cli.py, `serve` in
fasterlog_server/cli.py. This module sits in the bottom layer so that all of them can use it
without importing one another; it imports nothing above `fasterlog`.

Rules every command keeps (the dispatcher enforces the first two):
1. An expected failure (a FasterLogError, an OSError, a CliError) ends the run with one line on
   stderr, "fasterlog: error: ..." (`error_line` makes it), and a non-zero status: EXIT_USAGE
   for usage errors (UsageError, and argparse's own through `ArgumentParser`), EXIT_FAILURE for
   everything else, corruption included. A traceback means a bug.
2. A command's `run` returns its exit status; it raises rather than printing its own errors.
3. Output meant for programs goes to stdout alone; progress and errors go to stderr. Text output
   shows any bytes on one line (`escape_text`), so one entry or pair is one line.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TextIO

from . import errors

__all__ = [
    "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "TEXT_ESCAPES",
    "ArgumentParser", "CliError", "Command", "ProgressBar", "UsageError", "address_argument",
    "error_line", "escape_text", "size_text",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An expected failure of our own making; the dispatcher prints it as one line, exits 1."""


class UsageError(CliError):
    """Arguments that make no sense together; the dispatcher prints one line and exits 2."""


@dataclass(frozen=True)
class Command:
    """One subcommand, as a package registers it in the "fasterlog.commands" entry-point group
    (the entry point's name is `name`). The dispatcher adds a parser called `name` with `help`,
    lets `add_arguments` fill it (nested subcommands included), and calls `run` with the parsed
    arguments. `order` places it in `fasterlog --help` (lower first; ties by name)."""

    name: str
    help: str
    order: int
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class ArgumentParser(argparse.ArgumentParser):
    """Reports usage errors in one line, "fasterlog: error: ...", and exits 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("fasterlog").strip()
        where = f"{command}: " if command else ""
        hint = f"fasterlog {command} --help" if command else "fasterlog --help"
        self.exit(EXIT_USAGE, f"fasterlog: error: {where}{message} (see '{hint}')\n")


def error_line(error: BaseException) -> str:
    """The text of an expected failure, on one line (rule 1)."""
    if isinstance(error, errors.LogIOError) and error.strerror:
        text = error.strerror  # our messages already name the operation and the path
    elif isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def address_argument(text: str) -> int:
    """An address argument (argparse `type=`): decimal or 0x-prefixed hexadecimal, not
    negative."""
    value = int(text, 0)
    if value < 0:
        raise ValueError(text)
    return value


address_argument.__name__ = "address"  # argparse names the type in "invalid address value: 'x'"


def size_text(size_bytes: int) -> str:
    """A size for people: "1.5 MiB", "512 bytes"."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size_bytes >= 1 << shift:
            return f"{size_bytes / (1 << shift):.4g} {unit}"
    return f"{size_bytes} bytes"


# Text output escapes control characters and the backslash; bytes that are not UTF-8 arrive as
# surrogates (surrogateescape) and are shown as \xNN.
TEXT_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(32), 127)}
TEXT_ESCAPES.update({0xDC00 + byte: f"\\x{byte:02x}" for byte in range(128, 256)})
TEXT_ESCAPES.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r", ord("\\"): "\\\\"})


def escape_text(data: bytes) -> str:
    """Any bytes as one line of text: UTF-8 shown as it is, control characters, the backslash
    and undecodable bytes escaped (TEXT_ESCAPES)."""
    return data.decode("utf-8", errors="surrogateescape").translate(TEXT_ESCAPES)


class ProgressBar:
    """One line on a terminal, redrawn in place: "verify  42% [#####.....] 1.2 GiB of 3 GiB".

    It draws nothing unless enabled (the caller passes stream.isatty()) and nothing until
    `delay_s` has passed, so short runs stay quiet; close() wipes the line it drew.
    """

    width_chars = 30
    redraw_interval_s = 0.1

    def __init__(self, stream: TextIO, total: int, label: str, *, enabled: bool,
                 delay_s: float = 0.5) -> None:
        self._stream = stream
        self._total = max(total, 1)
        self._label = label
        self._enabled = enabled
        self._started_s = time.monotonic()
        self._delay_s = delay_s
        self._drawn_s: float | None = None
        self._line_size = 0

    def update(self, done: int) -> None:
        now_s = time.monotonic()
        if not self._enabled or now_s - self._started_s < self._delay_s:
            return
        if self._drawn_s is not None and now_s - self._drawn_s < self.redraw_interval_s \
                and done < self._total:
            return
        fraction = min(done / self._total, 1.0)
        filled = int(fraction * self.width_chars)
        line = (f"{self._label} {fraction:4.0%} [{'#' * filled}{'.' * (self.width_chars - filled)}]"
                f" {size_text(done)} of {size_text(self._total)}")
        self._stream.write("\r" + line.ljust(self._line_size))
        self._stream.flush()
        self._drawn_s = now_s
        self._line_size = len(line)

    def close(self) -> None:
        if self._drawn_s is not None:
            self._stream.write("\r" + " " * self._line_size + "\r")
            self._stream.flush()
            self._drawn_s = None
