"""`python -m fasterlog`: runs what the installed `fasterlog` console script runs.

The command line is a dispatcher above every layer (fasterlog_cli), and the log package imports
no upper layer, not even here. So this looks up the `fasterlog` console script in this
distribution's own metadata (pyproject.toml's [project.scripts]) and calls it: the same command
line as the script, whichever module provides it, with no upper package named in this layer.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution


def console_script() -> Callable[[], int] | None:
    """The `fasterlog` console script's function, or None when the package is not installed."""
    try:
        found = distribution("fasterlog").entry_points.select(group="console_scripts",
                                                              name="fasterlog")
    except PackageNotFoundError:
        return None
    for entry_point in found:
        script: Callable[[], int] = entry_point.load()
        return script
    return None


if __name__ == "__main__":
    main = console_script()
    if main is None:
        print("fasterlog: error: the fasterlog command line is not installed (no 'fasterlog' "
              "console script in the package metadata; run pip install .)", file=sys.stderr)
        raise SystemExit(1)
    raise SystemExit(main())
