"""The property both RESP fuzzers check (tests/fuzz_resp.py under atheris, and the seeded
mutation fuzzer in tests/test_reliability_fuzz.py): on any bytes, fed in any pieces,
RespReader and RespParser only return commands or replies, say NEED_MORE or raise
RemoteProtocolError, and never buffer more than their limit.

The first input byte chooses the piece size (so splits are fuzzed too) and whether the reader
is drained one command at a time or in batches (the server's pipeline path)."""

from __future__ import annotations

from service.errors import RemoteProtocolError
from service.resp import NEED_MORE, RespLimits, RespParser, RespReader

LIMITS = RespLimits(bulk_size_max_bytes=4096, arguments_count_max=64, inline_size_max_bytes=1024,
                    query_buffer_size_max_bytes=16384, nesting_depth_max=16)


def _check_command(command: object) -> None:
    assert isinstance(command, list) and command, command
    assert all(isinstance(argument, bytes) for argument in command), command


def run(reader: RespReader | RespParser, data: bytes, piece_size_bytes: int,
        batched: bool = False) -> None:
    try:
        for start in range(0, len(data), piece_size_bytes):
            reader.feed(data[start : start + piece_size_bytes])
            while True:
                if isinstance(reader, RespReader) and batched:
                    commands = reader.next_commands(8)
                    assert reader.buffered_size_bytes <= LIMITS.query_buffer_size_max_bytes
                    for command in commands:
                        _check_command(command)
                    if not commands:
                        break
                    continue
                result = (reader.next_command() if isinstance(reader, RespReader)
                          else reader.next_reply())
                assert reader.buffered_size_bytes <= LIMITS.query_buffer_size_max_bytes
                if result is NEED_MORE:
                    break
                if isinstance(reader, RespReader):
                    _check_command(result)
    except RemoteProtocolError:
        pass


def one_input(data: bytes) -> None:
    if not data:
        return
    piece_size_bytes = data[0] % 17 + 1 if data[0] < 200 else len(data)
    batched = bool(data[0] & 0x20)
    run(RespReader(LIMITS), data[1:], piece_size_bytes, batched)
    run(RespReader(LIMITS, authentication_required=True), data[1:], piece_size_bytes, batched)
    run(RespParser(LIMITS), data[1:], piece_size_bytes)
