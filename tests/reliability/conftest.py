"""Fixtures of the reliability suite: none of their own so far; the counts of long and short
mode and the recorded figures are in tests/reliability/__init__.py."""
