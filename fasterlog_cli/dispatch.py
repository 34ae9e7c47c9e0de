"""The `fasterlog` command: builds the top parser from the subcommands every package registers.

Each package registers its own subcommands as `Command` objects (fasterlog/cli_support.py) in
the "fasterlog.commands" entry-point group (pyproject.toml's [project.entry-points]): the log's
info, dump, verify, demo, tail and cursors (fasterlog/cli.py), `serve` (fasterlog_server/cli.py)
and `kv` (kvlayer/cli.py). An entry point's name is the command's name; its value names the
Command object. So this package knows no command, and no lower package imports this one.

Rules:
1. Only the command asked for is imported: `fasterlog info DIR` loads the log's commands and
   neither kvlayer nor the server. Every registered command is loaded only when the whole list
   is needed: `fasterlog --help`, no command, or a word that names no registered command (for
   argparse's "invalid choice" line). The top parser has no option that takes a value, so the
   first argument is either an option or the command's name.
2. `fasterlog --help` lists the commands by their `order` (ties by name), whatever order the
   installed metadata gives: info, dump, verify, demo, tail, cursors, serve, kv.
3. A command that fails to load (its module raises on import, the entry point names something
   that is not a Command of that name, or two distributions register the same name) never
   gives a traceback and never stops another command. Asked for by name, it ends the run with
   one line, "fasterlog: error: command 'NAME' is unavailable: REASON (entry point NAME =
   VALUE)", and status 1. When every command is loaded (help, usage errors), it is left out of
   the parser and reported in one "fasterlog: warning: ..." line per command on stderr; the
   run goes on as if it were not installed.
4. Expected failures of a command (FasterLogError, OSError, CliError) are one line on stderr
   and status 1 (2 for usage errors); a closed stdout ends the run quietly with status 1;
   Ctrl-C prints "fasterlog: interrupted" and exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points

from fasterlog import __version__, errors
from fasterlog.cli_support import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ArgumentParser,
    CliError,
    Command,
    UsageError,
    error_line,
)

__all__ = ["COMMANDS_GROUP", "CommandLoadError", "build_parser", "load_commands", "main"]

COMMANDS_GROUP = "fasterlog.commands"


class CommandLoadError(Exception):
    """A registered command could not be loaded; the message is one line (rule 3)."""


def registered_commands() -> dict[str, list[EntryPoint]]:
    """The entry points of COMMANDS_GROUP by command name, without loading any of them."""
    found: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=COMMANDS_GROUP):
        found.setdefault(entry_point.name, []).append(entry_point)
    return found


def _load(name: str, candidates: Sequence[EntryPoint]) -> Command:
    where = ", ".join(f"{name} = {entry_point.value}" for entry_point in candidates)

    def unavailable(reason: str) -> CommandLoadError:
        return CommandLoadError(f"command {name!r} is unavailable: {reason} (entry point {where})")

    if len(candidates) > 1:
        raise unavailable(f"registered {len(candidates)} times")
    try:
        command = candidates[0].load()
    except Exception as error:  # noqa: BLE001 - whatever a plugin raises, rule 3 reports it
        raise unavailable(f"{type(error).__name__}: {error_line(error)}") from None
    if not isinstance(command, Command):
        raise unavailable(f"it names a {type(command).__name__}, not a Command")
    if command.name != name:
        raise unavailable(f"it names the command {command.name!r}")
    return command


def load_commands(names: Iterable[str],
                  registered: dict[str, list[EntryPoint]]) -> tuple[list[Command],
                                                                   list[CommandLoadError]]:
    """Loads the named commands; returns those that loaded and the failures of the others."""
    commands: list[Command] = []
    failures: list[CommandLoadError] = []
    for name in names:
        try:
            commands.append(_load(name, registered[name]))
        except CommandLoadError as failure:
            failures.append(failure)
    return commands, failures


def build_parser(commands: Iterable[Command]) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="fasterlog", description="Inspect, check and demonstrate "
                            "fasterlog append-only logs.")
    parser.add_argument("--version", action="version", version=f"fasterlog {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                        parser_class=ArgumentParser)
    for command in sorted(commands, key=lambda command: (command.order, command.name)):
        subparser = subcommands.add_parser(command.name, help=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(run=command.run)
    return parser


def _run(arguments: argparse.Namespace) -> int:
    try:
        return int(arguments.run(arguments))
    except BrokenPipeError:
        # The reader went away (`fasterlog dump DIR | head`): not an error worth a line. Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except (errors.FasterLogError, OSError, CliError) as error:
        print(f"fasterlog: error: {error_line(error)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, UsageError) else EXIT_FAILURE
    except KeyboardInterrupt:
        print("fasterlog: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    """The `fasterlog` console script (and `python -m fasterlog`, `python -m fasterlog_cli`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    registered = registered_commands()
    asked = words[0] if words and words[0] in registered else None
    commands, failures = load_commands([asked] if asked else sorted(registered), registered)
    if asked is not None and failures:
        print(f"fasterlog: error: {failures[0]}", file=sys.stderr)
        return EXIT_FAILURE
    for failure in failures:
        print(f"fasterlog: warning: {failure}", file=sys.stderr)
    return _run(build_parser(commands).parse_args(words))
