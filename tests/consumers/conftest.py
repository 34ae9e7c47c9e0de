"""Fixtures of the consumers package's tests: none of their own so far; log_dir and small_log
come from tests/conftest.py."""
