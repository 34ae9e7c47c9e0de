"""Fuzzing harness for the RESP codec (fasterlog_server.resp) with atheris (libFuzzer for Python).

Goal: on any bytes, fed in any pieces, RespReader and RespParser only ever return commands or
replies, say NEED_MORE, or raise RemoteProtocolError; they never crash, hang or hold more than
their limits. Method: tests/support/resp_fuzz_check.py (byte 0 chooses the piece size and the drain
mode; the rest is fed piece by piece to readers and a parser with small limits, and the
buffered size is checked against the query buffer limit after every step).

Run from the repository root:
    PYTHONPATH=. python tests/support/children/fuzz_resp.py -max_total_time=60 \
    -timeout=1 -rss_limit_mb=1024
(-timeout=1 makes any input that runs over 1 s a failure; -rss_limit_mb bounds memory). Not
collected by pytest (not named test_*): tests/reliability/test_reliability_fuzz.py runs
it in CI for a time budget and records inputs, rate and peak memory.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from tests.support.resp_fuzz_check import one_input  # shared with the mutation fuzzer


def test_one_input(data: bytes) -> None:
    one_input(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
