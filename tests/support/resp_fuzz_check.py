"""The property both RESP fuzzers check (tests/support/children/fuzz_resp.py under atheris, and
the seeded mutation fuzzer in tests/reliability/test_reliability_fuzz.py): on any bytes, fed in any
pieces, RespReader and RespParser only return commands or replies, say NEED_MORE or raise
RemoteProtocolError, and never buffer more than their limit; and the reader's C fast path
(fasterlog_server/csrc/resp_split.c) gives exactly what the pure-Python reader gives: the same
commands in the same batches, the same error.

The first input byte chooses the piece size (so splits are fuzzed too); the reader is drained
one command at a time (the reference) and in batches through each fast path (the server's
pipeline path), and the three must agree."""

from __future__ import annotations

from fasterlog_server.errors import RemoteProtocolError
from fasterlog_server.resp import NEED_MORE, RespLimits, RespParser, RespReader

LIMITS = RespLimits(bulk_size_max_bytes=4096, arguments_count_max=64, inline_size_max_bytes=1024,
                    query_buffer_size_max_bytes=16384, nesting_depth_max=16)


def _check_command(command: object) -> None:
    assert isinstance(command, list) and command, command
    assert all(isinstance(argument, bytes) for argument in command), command


def run(reader: RespReader | RespParser, data: bytes, piece_size_bytes: int,
        batched: bool = False) -> list[object]:
    """What the reader returned, batch by batch, ending with the error's text if it raised."""
    outcome: list[object] = []
    try:
        for start in range(0, len(data), piece_size_bytes):
            piece = data[start : start + piece_size_bytes]
            fed = False
            if not (isinstance(reader, RespReader) and batched):
                reader.feed(piece)
                fed = True
            while True:
                if isinstance(reader, RespReader) and batched:
                    # As the server reads: feed_and_take first, then next_commands.
                    commands = reader.next_commands(8) if fed else reader.feed_and_take(piece, 8)
                    fed = True
                    assert reader.buffered_size_bytes <= LIMITS.query_buffer_size_max_bytes
                    for command in commands:
                        _check_command(command)
                    outcome.append(commands)
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
                outcome.append(result)
    except RemoteProtocolError as error:
        outcome.append(str(error))
    return outcome


def _flattened(outcome: list[object]) -> list[object]:
    """Batched outcomes as one command per item, as next_command returns them."""
    flat: list[object] = []
    for item in outcome:
        if isinstance(item, list) and (not item or isinstance(item[0], list)):
            flat += item
        else:
            flat.append(item)
    return flat


def one_input(data: bytes) -> None:
    if not data:
        return
    piece_size_bytes = data[0] % 17 + 1 if data[0] < 200 else len(data)
    # The reference (one command at a time) against both fast paths of next_commands, the C
    # split and the pure-Python one: the same commands, then the same error or NEED_MORE.
    reference = run(RespReader(LIMITS), data[1:], piece_size_bytes)
    for accelerated in (True, False):
        batched = run(RespReader(LIMITS, accelerated=accelerated), data[1:], piece_size_bytes,
                      batched=True)
        assert _flattened(batched) == reference, (accelerated, batched, reference)
    run(RespReader(LIMITS, authentication_required=True), data[1:], piece_size_bytes,
        batched=bool(data[0] & 0x20))
    run(RespParser(LIMITS), data[1:], piece_size_bytes)
