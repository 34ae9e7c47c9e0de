"""The reliability suite: crash and power-loss recovery, corruption, I/O errors, Jepsen-style
kills of a producer and a consumer, and protocol fuzzing.

Each test prints its figure and records it (tests.support.figures.record); report.py writes
RELIABILITY.md from the recorded figures. CI runs the suite in short mode with the rest of the
tests; `--long` (tests.support.mode) gives the long counts, and scripts/reliability.sh runs the
suite that way and writes RELIABILITY.md.
"""
