"""`python -m fasterlog`: the same command line as the `fasterlog` script (fasterlog.cli)."""

from fasterlog.cli import main

raise SystemExit(main())
