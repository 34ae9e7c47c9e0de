"""`python -m fasterlog_cli`: the `fasterlog` command line."""

from fasterlog_cli import main

raise SystemExit(main())
