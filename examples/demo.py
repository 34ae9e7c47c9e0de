"""The fasterlog demo as a runnable script: python examples/demo.py [--dir DIR].

It appends and commits events, kills a writer process with SIGKILL mid-stream, reopens the log
and shows that every acknowledged entry was recovered. Run it twice: the second run recovers the
first one's log (default ./data/demo-log) and appends more.

The steps live in fasterlog.cli.run_demo, not here, so that `fasterlog demo` also works from an
installed package (examples/ is not installed); read run_demo for the API calls it makes.
"""

from __future__ import annotations

import sys

from fasterlog_cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
