"""Tests of the command line as a user runs it (a subprocess of `python -m fasterlog`): info,
dump and verify (test_cli), tail and cursors (test_cli_consumers), the kv commands
(test_cli_kv), the demo (test_demo) and `fasterlog serve` with no arguments (test_main_job)."""
