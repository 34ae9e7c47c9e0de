"""The `fasterlog` command line: a dispatcher that sits above every layer.

Layering: fasterlog <- consumers <- kvlayer <- fasterlog_server <- fasterlog_cli. This package
may import every layer below it and none imports it; it owns no subcommand. It builds the top
parser from the `Command` objects each package registers in the "fasterlog.commands"
entry-point group (dispatch.py), and runs the one asked for with the shared error handling of
fasterlog/cli_support.py. It is the `fasterlog` console script; `python -m fasterlog_cli` and
`python -m fasterlog` run it too.
"""

from __future__ import annotations

from .dispatch import main

__all__ = ["main"]
