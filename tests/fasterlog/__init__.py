"""Tests of the log package, fasterlog: appends, commits and recovery (test_log), tails and
followers (test_tail), cursor files (test_cursors), the on-disk format in golden bytes
(test_format), the I/O backends (test_backend), threads and the GIL (test_gil,
test_concurrency) and the compiled module's type stub (test_stub). They import fasterlog and,
for the Consumer over cursors, consumers; never a higher layer."""
