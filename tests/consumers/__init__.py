"""Tests of the consumers package: projections and their checkpoints (test_projection) and
event sourcing on the log (test_events). The Consumer over named cursors is tested with the
cursor files in tests/fasterlog/test_cursors.py."""
