"""`fasterlog kv ...`: the KV store from the command line.

KV_COMMAND is the `kv` subcommand, arguments and actions, as kvlayer registers it with the
dispatcher above every layer (fasterlog_cli) through pyproject.toml's "fasterlog.commands"
entry points. It uses the shared CLI support of the log layer (fasterlog/cli_support.py) and
imports nothing above kvlayer.

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
    ArgumentParser,
    CliError,
    Command,
    ProgressBar,
    UsageError,
    address_argument,
    escape_text,
)

from .store import KVStore

__all__ = ["KV_COMMAND", "run"]


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
    """Runs the kv action the dispatcher parsed (KV_COMMAND's `run`)."""
    command = _COMMANDS.get(arguments.kv_command)
    if command is None:
        raise UsageError(f"kv: unknown command {arguments.kv_command!r}")
    code = command(arguments)
    return code if code is not None else EXIT_FAILURE


def add_arguments(kv: argparse.ArgumentParser) -> None:
    """The kv actions and their arguments (KV_COMMAND's `add_arguments`)."""
    actions = kv.add_subparsers(dest="kv_command", required=True, metavar="KV_COMMAND",
                                parser_class=ArgumentParser)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument("directory", metavar="DIR")
        return parser

    get = action("get", "print the value of KEY (exit 1 when it is not live)")
    get.add_argument("key", metavar="KEY")
    get.add_argument("--format", choices=("text", "raw", "json"), default="text",
                     help="text: escaped to one line; raw: the bytes; json: base64")
    put = action("put", "set KEY to VALUE durably; prints the record's address")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", help='the value, or "-" to read it from stdin')
    delete = action("del", "delete KEY (exit 1 when it is not live)")
    delete.add_argument("key", metavar="KEY")
    scan = action("scan", "print the live keys and values, one pair per line")
    scan.add_argument("--prefix", help="only keys starting with this")
    scan.add_argument("--limit", type=int, help="at most this many pairs")
    scan.add_argument("--format", choices=("text", "json"), default="text",
                      help="text: KEY<tab>VALUE escaped; json: one object per line, base64")
    action("checkpoint", "write a checkpoint now (prints it as JSON)")
    compact = action("compact", "copy the live records forward and truncate the log; "
                     "prints a JSON report")
    compact.add_argument("--until", type=address_argument, metavar="A",
                         help="compact below this address only (default: all of the log)")
    compact.add_argument("--force", action="store_true",
                         help="truncate even past named cursors")
    progress = compact.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="draw progress on stderr even when it is not a terminal")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="no progress, even on a terminal")
    for parser in (get, put, delete, scan):
        parser.add_argument("--hex", action="store_true",
                            help="KEY, VALUE and --prefix are given in hexadecimal")


KV_COMMAND = Command(name="kv", help="the KV store (kvlayer) in a directory: get, put, del, "
                     "scan, checkpoint, compact", order=80, add_arguments=add_arguments, run=run)
