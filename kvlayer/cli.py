"""`fasterlog kv ...`: the KV store from the command line.

fasterlog/cli.py defines the arguments and imports this module only when a kv command runs, so
the log layer never loads kvlayer (tests/test_layers.py). It shares the log layer's CLI support
(fasterlog/cli_support.py): errors, exit codes, progress bar and text escaping.

    fasterlog kv get DIR KEY [--format text|raw|json]
    fasterlog kv put DIR KEY VALUE          (VALUE "-": read it from stdin)
    fasterlog kv del DIR KEY
    fasterlog kv scan DIR [--prefix P] [--limit N] [--format text|json]
    fasterlog kv checkpoint DIR
    fasterlog kv compact DIR [--until A] [--force] [--progress | --no-progress]

Keys and values on the command line are UTF-8 text (bytes that are not, with --hex: KEY and
VALUE in hexadecimal). Text output escapes control characters and undecodable bytes, one line
per pair, as `fasterlog tail` does. Reads (get, scan) open the store read-only, so they run
beside a writer; writes open it for writing (LockedError while another process writes).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

from fasterlog.cli_support import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    ProgressBar,
    UsageError,
    escape_text,
)

from .store import KVStore

__all__ = ["run"]


def _argument_bytes(text: str, hex_: bool, what: str) -> bytes:
    if hex_:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"kv: {what} {text!r} is not hexadecimal") from None
    return os.fsencode(text)  # the bytes the user typed, whatever the locale


def _open(directory: str, *, read_only: bool) -> KVStore:
    if not os.path.isdir(directory):
        raise CliError(f"{directory}: not a directory")
    if read_only:
        return KVStore.open(directory, read_only=True, follow=False)
    return KVStore.open(directory)


def _get(arguments: argparse.Namespace) -> int:
    key = _argument_bytes(arguments.key, arguments.hex, "KEY")
    with _open(arguments.directory, read_only=True) as store:
        value = store.get(key)
    if value is None:
        raise CliError(f"kv get: key {escape_text(key)!r} not found")
    if arguments.format == "raw":
        sys.stdout.buffer.write(value)
    elif arguments.format == "json":
        print(json.dumps({"key_base64": base64.b64encode(key).decode(),
                          "value_base64": base64.b64encode(value).decode()}))
    else:
        print(escape_text(value))
    return EXIT_OK


def _put(arguments: argparse.Namespace) -> int:
    key = _argument_bytes(arguments.key, arguments.hex, "KEY")
    if arguments.value == "-":
        value = sys.stdin.buffer.read()
    else:
        value = _argument_bytes(arguments.value, arguments.hex, "VALUE")
    with _open(arguments.directory, read_only=False) as store:
        address = store.put(key, value)
    print(address)
    return EXIT_OK


def _delete(arguments: argparse.Namespace) -> int:
    key = _argument_bytes(arguments.key, arguments.hex, "KEY")
    with _open(arguments.directory, read_only=False) as store:
        if store.get(key) is None:
            raise CliError(f"kv del: key {escape_text(key)!r} not found")
        store.delete(key)
    return EXIT_OK


def _scan(arguments: argparse.Namespace) -> int:
    prefix = _argument_bytes(arguments.prefix or "", arguments.hex, "--prefix")
    if arguments.limit is not None and arguments.limit < 0:
        raise UsageError("kv scan: --limit must not be negative")
    printed = 0
    with _open(arguments.directory, read_only=True) as store:
        out = sys.stdout
        for key, value in store.items():
            if arguments.limit is not None and printed >= arguments.limit:
                break
            if not key.startswith(prefix):
                continue
            if arguments.format == "json":
                out.write(json.dumps({"key_base64": base64.b64encode(key).decode(),
                                      "value_base64": base64.b64encode(value).decode()}) + "\n")
            else:
                out.write(f"{escape_text(key)}\t{escape_text(value)}\n")
            printed += 1
    sys.stdout.flush()
    return EXIT_OK


def _checkpoint(arguments: argparse.Namespace) -> int:
    with _open(arguments.directory, read_only=False) as store:
        made = store.checkpoint()
        print(json.dumps({"position": made.position, "file": made.file_name,
                          "size_bytes": made.size_bytes, "keys": len(store)}))
    return EXIT_OK


def _compact(arguments: argparse.Namespace) -> int:
    enabled = arguments.progress if arguments.progress is not None else sys.stderr.isatty()
    with _open(arguments.directory, read_only=False) as store:
        bar: ProgressBar | None = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                # Asked for explicitly: drawn from the start; on a terminal only after 0.5 s.
                bar = ProgressBar(sys.stderr, total, "compact", enabled=enabled,
                                  delay_s=0.0 if arguments.progress else 0.5)
            bar.update(done)

        try:
            result = store.compact(arguments.until, force=arguments.force, progress=progress)
        finally:
            if bar is not None:
                bar.close()
        report: dict[str, Any] = {
            "begin_before": result.begin_before_address, "begin": result.until_address,
            "records_scanned": result.records_scanned_count,
            "keys_copied": result.keys_copied_count, "bytes_copied": result.bytes_copied,
            "keys": len(store)}
    print(json.dumps(report))
    return EXIT_OK


_COMMANDS = {"get": _get, "put": _put, "del": _delete, "scan": _scan,
             "checkpoint": _checkpoint, "compact": _compact}


def run(arguments: argparse.Namespace) -> int:
    """Runs the kv subcommand fasterlog/cli.py parsed."""
    command = _COMMANDS.get(arguments.kv_command)
    if command is None:
        raise UsageError(f"kv: unknown command {arguments.kv_command!r}")
    code = command(arguments)
    return code if code is not None else EXIT_FAILURE
