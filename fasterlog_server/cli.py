"""`fasterlog serve`: the RESP (Redis protocol) server from the command line.

SERVE_COMMAND is the `serve` subcommand as fasterlog_server registers it with the dispatcher
above every layer (fasterlog_cli) through pyproject.toml's "fasterlog.commands" entry points.
It uses the shared CLI support of the log layer (fasterlog/cli_support.py) and imports nothing
above fasterlog_server.

    fasterlog serve [--dir DIR] [--port N] [--bind ADDRESS] [--requirepass P]
                    [--fsync always|everysec] [--kv-checkpoint-bytes N]
"""

from __future__ import annotations

import argparse
import os

from fasterlog.cli_support import EXIT_OK, Command, UsageError
from fasterlog_server import ServerSettings, run

__all__ = ["SERVE_COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=os.path.join(".", "data", "server"),
                        help="data directory (default: ./data/server)")
    parser.add_argument("--port", type=int, default=6380)
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address to listen on; any but loopback needs --requirepass")
    parser.add_argument("--requirepass", default=None)
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always",
                        help="always (default): a write is answered after its commit; "
                        "everysec: answered at once, committed each second (NOT durable per "
                        "reply)")
    parser.add_argument("--kv-checkpoint-bytes", type=int, default=64 << 20,
                        help="checkpoint the KV store by itself once this many bytes were "
                        "committed to its log since the last checkpoint (default 64 MiB; 0: "
                        "only at KV.CHECKPOINT and a clean stop)")


def command_serve(arguments: argparse.Namespace) -> int:
    try:
        settings = ServerSettings(host=arguments.bind, port=arguments.port,
                                  requirepass=arguments.requirepass, fsync=arguments.fsync,
                                  kv_checkpoint_bytes=arguments.kv_checkpoint_bytes)
    except ValueError as error:
        raise UsageError(str(error)) from None
    run(arguments.dir, settings)  # on uvloop when it is installed, else asyncio's own loop
    return EXIT_OK


SERVE_COMMAND = Command(name="serve", help="the RESP (Redis protocol) server: Streams commands "
                        "on a log, durable acknowledgements", order=70,
                        add_arguments=_add_arguments, run=command_serve)
