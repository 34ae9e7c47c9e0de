"""Fuzzing harness for the RESP codec (service.resp) with atheris (libFuzzer for Python).

Goal: on any bytes, fed in any pieces, RespReader and RespParser only ever return commands or
replies, say NEED_MORE, or raise RemoteProtocolError; they never crash, hang or hold more than
their limits. Method: the first input byte chooses the piece size (so splits are fuzzed too);
the rest is fed piece by piece to a reader and a parser with small limits, draining each after
every piece; the buffered size is checked against the query buffer limit after every step.

Run from the repository root: PYTHONPATH=. python tests/fuzz_resp.py -max_total_time=60 \
    -timeout=1 -rss_limit_mb=1024
(-timeout=1 makes any input that runs over 1 s a failure; -rss_limit_mb bounds memory). Not
collected by pytest (the name does not start with test_): tests/test_reliability_fuzz.py runs
it in CI for a time budget and records inputs, rate and peak memory.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from service.errors import RemoteProtocolError
    from service.resp import NEED_MORE, RespLimits, RespParser, RespReader

LIMITS = RespLimits(bulk_size_max_bytes=4096, arguments_count_max=64, inline_size_max_bytes=1024,
                    query_buffer_size_max_bytes=16384, nesting_depth_max=16)


def run(reader: RespReader | RespParser, data: bytes, piece_size_bytes: int) -> None:
    try:
        for start in range(0, len(data), piece_size_bytes):
            reader.feed(data[start : start + piece_size_bytes])
            while True:
                result = (reader.next_command() if isinstance(reader, RespReader)
                          else reader.next_reply())
                assert reader.buffered_size_bytes <= LIMITS.query_buffer_size_max_bytes
                if result is NEED_MORE:
                    break
                if isinstance(reader, RespReader):
                    assert result and all(isinstance(a, bytes) for a in result), result
    except RemoteProtocolError:
        pass


def test_one_input(data: bytes) -> None:
    if not data:
        return
    piece_size_bytes = data[0] % 17 + 1 if data[0] < 200 else len(data)
    run(RespReader(LIMITS), data[1:], piece_size_bytes)
    run(RespReader(LIMITS, authentication_required=True), data[1:], piece_size_bytes)
    run(RespParser(LIMITS), data[1:], piece_size_bytes)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
