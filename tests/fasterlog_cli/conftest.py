"""Fixtures of the command line's tests: none of their own so far; the subprocess runner and
the one-error-line check are tests/support/cli.py."""
