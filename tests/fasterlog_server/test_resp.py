"""The RESP codec (fasterlog_server.resp): commands in, replies out, replies in.

Goal: the server reads exactly what Redis reads, refuses what Redis refuses (and a little more,
where Redis is lax), never buffers more than its named limits, and writes replies that redis-py,
redis-cli and hiredis read back as the values meant.

Method: golden bytes for every reply type in RESP2 and RESP3; hypothesis strategies for
commands and reply values, checked by round trips, by splitting every input at every byte offset,
and against hiredis's reader (the C parser redis-py uses); a table of malformed frames, each of
which must raise RemoteProtocolError with Redis's message; and a rough timing of one-byte-at-a-
time feeding at two sizes, which must grow linearly.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from fasterlog_server.errors import LocalProtocolError, RemoteProtocolError
from fasterlog_server.resp import (
    NEED_MORE,
    NULL_ARRAY,
    BigNumber,
    ErrorReply,
    Map,
    Push,
    RespLimits,
    RespParser,
    RespReader,
    Set,
    SimpleString,
    Verbatim,
    encode,
    split_inline,
)
from tests.support.mode import examples

hiredis = pytest.importorskip("hiredis")

QUICK = examples(60, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# Helpers.


def command_bytes(arguments: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(arguments) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in arguments)


def drain_commands(reader: RespReader) -> list[list[bytes]]:
    commands = []
    while (command := reader.next_command()) is not NEED_MORE:
        commands.append(command)
    return commands


def read_commands(pieces: list[bytes], limits: RespLimits | None = None) -> list[list[bytes]]:
    reader = RespReader(limits) if limits else RespReader()
    commands = []
    for piece in pieces:
        reader.feed(piece)
        commands += drain_commands(reader)
    return commands


def drain_replies(parser: RespParser) -> list[Any]:
    replies = []
    while (reply := parser.next_reply()) is not NEED_MORE:
        replies.append(reply)
    return replies


def read_replies(pieces: list[bytes]) -> list[Any]:
    parser = RespParser()
    replies = []
    for piece in pieces:
        parser.feed(piece)
        replies += drain_replies(parser)
    return replies


def canonical(value: Any) -> Any:
    """A form that compares equal only for the same types and values (nan equal to nan)."""
    if isinstance(value, Verbatim):
        return ("Verbatim", value.format, bytes(value))
    if isinstance(value, (SimpleString, ErrorReply)):
        return (type(value).__name__, bytes(value))
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, dict):
        return (type(value).__name__, [(canonical(k), canonical(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [canonical(item) for item in value])
    return (type(value).__name__, value)


def expected_resp3(value: Any) -> Any:
    """What RespParser returns for encode(value, 3)."""
    if isinstance(value, (SimpleString, ErrorReply, Verbatim, BigNumber, bool, float)):
        return value
    if isinstance(value, str):
        return value.encode()
    if value is NULL_ARRAY:
        return None
    if isinstance(value, dict):
        return Map({expected_resp3(k): expected_resp3(v) for k, v in value.items()})
    if isinstance(value, (Set, set, frozenset)):
        return Set(expected_resp3(item) for item in value)
    if isinstance(value, Push):
        return Push(expected_resp3(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [expected_resp3(item) for item in value]
    return value


def expected_resp2(value: Any) -> Any:
    """What RespParser returns for encode(value, 2): RESP3-only types fall back as Redis does."""
    if isinstance(value, (SimpleString, ErrorReply)):
        return value
    if isinstance(value, (Verbatim, bytes)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, BigNumber):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()  # repr gives inf, -inf and nan as RESP spells them.
    if value is NULL_ARRAY:
        return None
    if isinstance(value, dict):
        return [expected_resp2(x) for pair in value.items() for x in pair]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [expected_resp2(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# Strategies.

arguments_st = st.lists(st.binary(max_size=40), min_size=1, max_size=8)
line_text_st = st.text(st.characters(blacklist_characters="\r\n", max_codepoint=0x2FF),
                       max_size=12)
scalar_st = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=8),
    line_text_st.map(SimpleString),
    line_text_st.map(lambda text: ErrorReply("ERR " + text)),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.integers(min_value=-(10**40), max_value=10**40).map(BigNumber),
    st.floats(),
    st.booleans(),
    st.none(),
    st.just(NULL_ARRAY),
    st.builds(Verbatim, st.binary(max_size=12), st.sampled_from(["txt", "mkd", "abc"])),
)
key_st = st.one_of(st.binary(max_size=8), st.integers(min_value=-1000, max_value=1000))


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(key_st, children, max_size=4).map(Map),
        st.lists(children, max_size=4).map(Set),
        st.lists(children, max_size=4).map(Push),
    )


reply_st = st.recursive(scalar_st, containers, max_leaves=12)


# ---------------------------------------------------------------------------------------------
# Writer: golden bytes and round trips.

GOLDEN = [
    # value, RESP2 bytes, RESP3 bytes
    (SimpleString("OK"), b"+OK\r\n", b"+OK\r\n"),
    (ErrorReply("ERR unknown command"), b"-ERR unknown command\r\n", b"-ERR unknown command\r\n"),
    (42, b":42\r\n", b":42\r\n"),
    (-7, b":-7\r\n", b":-7\r\n"),
    (b"hi", b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
    ("é", b"$2\r\n\xc3\xa9\r\n", b"$2\r\n\xc3\xa9\r\n"),
    (b"", b"$0\r\n\r\n", b"$0\r\n\r\n"),
    (None, b"$-1\r\n", b"_\r\n"),
    (NULL_ARRAY, b"*-1\r\n", b"_\r\n"),
    ([b"a", 1], b"*2\r\n$1\r\na\r\n:1\r\n", b"*2\r\n$1\r\na\r\n:1\r\n"),
    ([], b"*0\r\n", b"*0\r\n"),
    (Map({b"k": 1}), b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
    ({b"k": b"v"}, b"*2\r\n$1\r\nk\r\n$1\r\nv\r\n", b"%1\r\n$1\r\nk\r\n$1\r\nv\r\n"),
    (Set([1, 2]), b"*2\r\n:1\r\n:2\r\n", b"~2\r\n:1\r\n:2\r\n"),
    (frozenset([3]), b"*1\r\n:3\r\n", b"~1\r\n:3\r\n"),
    (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
    (math.inf, b"$3\r\ninf\r\n", b",inf\r\n"),
    (-math.inf, b"$4\r\n-inf\r\n", b",-inf\r\n"),
    (math.nan, b"$3\r\nnan\r\n", b",nan\r\n"),
    (True, b":1\r\n", b"#t\r\n"),
    (False, b":0\r\n", b"#f\r\n"),
    (BigNumber(10**20), b"$21\r\n100000000000000000000\r\n", b"(100000000000000000000\r\n"),
    (Verbatim("Some string"), b"$11\r\nSome string\r\n", b"=15\r\ntxt:Some string\r\n"),
    (Push([b"message", b"ch", b"x"]), b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n",
     b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n"),
]


@pytest.mark.parametrize(("value", "resp2", "resp3"), GOLDEN, ids=[repr(g[0]) for g in GOLDEN])
def test_every_type_encodes_to_its_golden_bytes_in_both_protocols(
    value: Any, resp2: bytes, resp3: bytes
) -> None:
    assert encode(value) == encode(value, protocol=2) == resp2
    assert encode(value, protocol=3) == resp3


@pytest.mark.parametrize(("value", "resp2", "resp3"), GOLDEN, ids=[repr(g[0]) for g in GOLDEN])
def test_every_golden_reply_parses_back_to_its_value(value: Any, resp2: bytes,
                                                     resp3: bytes) -> None:
    assert canonical(read_replies([resp3])) == canonical([expected_resp3(value)])
    assert canonical(read_replies([resp2])) == canonical([expected_resp2(value)])


@QUICK
@given(reply_st)
def test_any_reply_round_trips_through_resp3(value: Any) -> None:
    assert canonical(read_replies([encode(value, 3)])) == canonical([expected_resp3(value)])


@QUICK
@given(reply_st)
def test_any_reply_round_trips_through_resp2(value: Any) -> None:
    assert canonical(read_replies([encode(value, 2)])) == canonical([expected_resp2(value)])


@QUICK
@given(reply_st)
def test_parsed_replies_encode_back_to_the_same_bytes(value: Any) -> None:
    data = encode(value, 3)
    assert encode(read_replies([data])[0], 3) == data


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (SimpleString("a\r\nb"), "holds CR or LF"),
        (1 << 63, "outside the 64-bit range"),
        (object(), "has no RESP form"),
        ([b"a", {1, object()}], "has no RESP form"),
    ],
)
def test_encoding_what_resp_cannot_carry_is_our_misuse(value: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        encode(value, 3)


def test_encoding_a_value_that_contains_itself_fails_cleanly() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(LocalProtocolError, match="nesting deeper"):
        encode(loop)


def test_encoding_for_an_unknown_protocol_is_our_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="protocol must be 2 or 3"):
        encode(1, protocol=4)


def test_verbatim_format_must_be_three_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="3 bytes"):
        Verbatim("x", "text")


def test_error_reply_code_is_its_first_word() -> None:
    assert ErrorReply("WRONGTYPE Operation against a key").code == "WRONGTYPE"


# ---------------------------------------------------------------------------------------------
# Reader: commands.


@QUICK
@given(st.lists(arguments_st, min_size=1, max_size=4))
def test_commands_round_trip(commands: list[list[bytes]]) -> None:
    data = b"".join(command_bytes(c) for c in commands)
    assert read_commands([data]) == commands


@QUICK
@given(st.lists(arguments_st, min_size=1, max_size=3))
def test_commands_split_at_every_byte_offset_parse_the_same(commands: list[list[bytes]]) -> None:
    data = b"".join(command_bytes(c) for c in commands)
    for offset in range(len(data) + 1):
        assert read_commands([data[:offset], data[offset:]]) == commands, offset
    assert read_commands([data[i : i + 1] for i in range(len(data))]) == commands


def read_commands_batched(pieces: list[bytes], count_max: int,
                          limits: RespLimits | None = None) -> list[list[bytes]]:
    reader = RespReader(limits or RespLimits())
    commands: list[list[bytes]] = []
    for piece in pieces:
        reader.feed(piece)
        while batch := reader.next_commands(count_max):
            commands += batch
    return commands


@QUICK
@given(st.lists(arguments_st, min_size=1, max_size=3), st.integers(1, 4))
def test_next_commands_fast_path_parses_as_next_command_at_every_split(
        commands: list[list[bytes]], count_max: int) -> None:
    data = b"".join(command_bytes(c) for c in commands) + b"PING\r\n*0\r\n"
    expected = [*commands, [b"PING"]]
    for offset in range(len(data) + 1):
        assert read_commands_batched([data[:offset], data[offset:]], count_max) == expected
    assert read_commands_batched([data[i : i + 1] for i in range(len(data))], 2) == expected


def batches_or_error(data: bytes, piece_size_bytes: int, accelerated: bool,
                     count_max: int = 3) -> list[Any]:
    """Commands one by one as next_commands returned them, then the error's text if any."""
    reader = RespReader(SMALL, accelerated=accelerated)
    got: list[Any] = []
    try:
        for start in range(0, len(data), piece_size_bytes):
            batch = reader.feed_and_take(data[start:start + piece_size_bytes], count_max)
            while batch:
                got += batch
                batch = reader.next_commands(count_max)
    except RemoteProtocolError as error:
        got.append(str(error))
    return got


def one_by_one_or_error(data: bytes, piece_size_bytes: int) -> list[Any]:
    reader = RespReader(SMALL)
    got: list[Any] = []
    try:
        for start in range(0, len(data), piece_size_bytes):
            reader.feed(data[start:start + piece_size_bytes])
            while (command := reader.next_command()) is not NEED_MORE:
                got.append(command)
    except RemoteProtocolError as error:
        got.append(str(error))
    return got


@examples(300)
@given(st.lists(arguments_st, min_size=1, max_size=4), st.data())
def test_the_c_split_and_the_python_fast_path_agree_with_next_command_on_damaged_input(
        commands: list[list[bytes]], data: st.DataObject) -> None:
    # Valid frames with a few bytes changed, inserted or removed, fed in pieces of any size:
    # next_commands through the C split (csrc/resp_split.c) and through the pure-Python fast
    # path must give exactly what next_command gives one command at a time.
    frame = bytearray(b"".join(command_bytes(c) for c in commands))
    for _ in range(data.draw(st.integers(0, 3))):
        at = data.draw(st.integers(0, len(frame)))
        edit = data.draw(st.sampled_from(["set", "insert", "delete"]))
        replacement = data.draw(st.sampled_from([b"0", b"9", b"-", b"+", b"\r", b"\n", b"*",
                                                 b"$", b" ", b"00", b"\r\n", b"*0\r\n"]))
        if edit == "set" and at < len(frame):
            frame[at:at + 1] = replacement
        elif edit == "insert":
            frame[at:at] = replacement
        else:
            del frame[at:at + 1]
    piece_size_bytes = data.draw(st.integers(1, len(frame) + 1))
    reference = one_by_one_or_error(bytes(frame), piece_size_bytes)
    for accelerated in (True, False):
        assert batches_or_error(bytes(frame), piece_size_bytes, accelerated) == reference


def test_next_commands_returns_the_commands_before_a_malformed_frame_then_raises() -> None:
    # As Redis runs the commands it parsed before a protocol error (found by the fuzzer:
    # next_commands raised and dropped them, next_command returned them first).
    for accelerated in (True, False):
        reader = RespReader(SMALL, accelerated=accelerated)
        reader.feed(b"*1\r\n$4\r\nPING\r\nECHO x\r\n*1\r\n:1\r\n")
        assert reader.next_commands(10) == [[b"PING"], [b"ECHO", b"x"]]
        with pytest.raises(RemoteProtocolError, match="expected '\\$', got ':'"):
            reader.next_commands(10)
        with pytest.raises(LocalProtocolError):
            reader.next_commands(10)


def test_the_c_split_takes_large_frames_and_long_pipelines_whole() -> None:
    # Beyond the Python fast path's window and tables: 1,500 commands (more than one call's
    # 1,024), payloads of 100 KiB holding CRLFs.
    big = (b"ab\r\n" * 25_600)
    frames = [[b"SET", b"k%d" % i, big if i % 500 == 0 else b"v"] for i in range(1500)]
    reader = RespReader(RespLimits(), accelerated=True)
    reader.feed(b"".join(command_bytes(c) for c in frames))
    got: list[list[bytes]] = []
    while batch := reader.next_commands(2000):
        got += batch
    assert got == frames
    assert reader.buffered_size_bytes == 0


@pytest.mark.parametrize(("data", "message"), [
    (b"*1\r\n$4\r\nPING\r\n*2\r\n$1\r\na\r\n$01\r\nb\r\n", "invalid bulk length"),
    (b"*1\r\n$4\r\nPING\r\n*2\r\n$1\r\na\r\n$1\r\nbXY", "expected CRLF"),
    (b"*1\r\n$4\r\nPING\r\n*1\r\n$999999999\r\n", "invalid bulk length"),
])
def test_next_commands_leaves_malformed_frames_to_the_reference_path(data: bytes,
                                                                      message: str) -> None:
    reader = RespReader(SMALL)
    reader.feed(data)
    assert reader.next_commands(1) == [[b"PING"]]
    with pytest.raises(RemoteProtocolError, match=message):
        reader.next_commands(10)


inline_word_st = st.binary(min_size=1, max_size=12)


def quote_inline(word: bytes) -> bytes:
    """A double-quoted sdssplitargs form of any bytes."""
    return b'"' + b"".join(
        bytes([c]) if 0x20 < c < 0x7F and c not in b'"\\' else b"\\x%02x" % c for c in word
    ) + b'"'


@QUICK
@given(st.lists(st.lists(inline_word_st, min_size=1, max_size=5), min_size=1, max_size=3),
       st.sampled_from([b"\r\n", b"\n"]))
def test_inline_commands_split_at_every_byte_offset_parse_the_same(
    commands: list[list[bytes]], newline: bytes
) -> None:
    data = b"".join(b" ".join(quote_inline(w) for w in c) + newline for c in commands)
    for offset in range(len(data) + 1):
        assert read_commands([data[:offset], data[offset:]]) == commands, offset


@pytest.mark.parametrize(
    ("line", "arguments"),
    [
        (b"PING", [b"PING"]),
        (b"  set  key   value ", [b"set", b"key", b"value"]),
        (b"set a\tb", [b"set", b"a", b"b"]),
        (b'set "hello world" x', [b"set", b"hello world", b"x"]),
        (b'echo "a\\nb\\r\\t\\b\\a\\"\\\\"', [b"echo", b'a\nb\r\t\b\a"\\']),
        (b'echo "\\x41\\x4a\\xZZ"', [b"echo", b"AJxZZ"]),
        (b"echo 'it\\'s' 'a\\nb'", [b"echo", b"it's", b"a\\nb"]),
        (b'echo ""', [b"echo", b""]),
        (b"echo a\x0bb \x0c c", [b"echo", b"a\x0bb", b"c"]),
        (b'echo a"b"', [b"echo", b"ab"]),
        (b"", []),
        (b"   ", []),
    ],
)
def test_inline_commands_split_as_redis_sdssplitargs_does(
    line: bytes, arguments: list[bytes]
) -> None:
    assert split_inline(line) == arguments


@pytest.mark.parametrize("line", [b'echo "abc', b"echo 'abc", b'echo "a"b', b"echo 'a'b"])
def test_unbalanced_inline_quotes_are_refused(line: bytes) -> None:
    assert split_inline(line) is None
    with pytest.raises(RemoteProtocolError, match="^Protocol error: unbalanced quotes in request"):
        read_commands([line + b"\r\n"])


def test_blank_lines_and_empty_arrays_are_skipped_as_redis_does() -> None:
    data = b"\r\n\n   \r\n*0\r\n*-1\r\n" + command_bytes([b"PING"]) + b"PING\n"
    assert read_commands([data]) == [[b"PING"], [b"PING"]]


def test_inline_and_multibulk_commands_mix_in_one_pipeline() -> None:
    data = b"SET a 1\r\n" + command_bytes([b"GET", b"a"]) + b"GET a\n"
    assert read_commands([data]) == [[b"SET", b"a", b"1"], [b"GET", b"a"], [b"GET", b"a"]]


# ---------------------------------------------------------------------------------------------
# Reader: malformed input and limits.

SMALL = RespLimits(bulk_size_max_bytes=1000, arguments_count_max=4, inline_size_max_bytes=64,
                   query_buffer_size_max_bytes=4096)

MALFORMED = [
    (b"*x\r\n", "invalid multibulk length"),
    (b"*01\r\n", "invalid multibulk length"),
    (b"*+1\r\n", "invalid multibulk length"),
    (b"*-2\r\n", "invalid multibulk length"),
    (b"*\r\n", "invalid multibulk length"),
    (b"*1\rX", "expected '\\\\n' after '\\\\r'"),
    (b"*1\r\n:1\r\n", "expected '\\$', got ':'"),
    (b"*1\r\n$x\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$ 1\r\n", "invalid bulk length"),
    (b"*1\r\n$1\r\nabc", "expected CRLF after the bulk string payload"),
    (b"*1\r\n$1\r\na\n\r", "expected CRLF after the bulk string payload"),
    (b"*1\r\n$1001\r\n", "invalid bulk length"),
    (b"*5\r\n", "multibulk length 5 exceeds arguments_count_max \\(4\\)"),
    (b"*1\r\n$" + b"1" * 70, "too big bulk count string"),
    (b"*" + b"1" * 70, "too big mbulk count string"),
    (b"GET " + b"k" * 70, "too big inline request"),
    (b"GET " + b"k" * 70 + b"\r\n", "too big inline request"),
    (b"GET a\0b\r\n", "NUL byte in inline request"),
    (b"a b c d e\r\n", "too many arguments in inline request"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED, ids=[repr(m[0][:24]) for m in MALFORMED])
def test_malformed_commands_raise_remote_protocol_error_whatever_the_split(
    data: bytes, message: str
) -> None:
    for pieces in ([data], [data[i : i + 1] for i in range(len(data))]):
        with pytest.raises(RemoteProtocolError, match="^Protocol error: " + message):
            read_commands(pieces, SMALL)


def test_an_oversized_bulk_is_refused_before_its_payload_arrives() -> None:
    reader = RespReader()  # Default limits: 512 MiB.
    reader.feed(b"*2\r\n$3\r\nSET\r\n$%d\r\n" % (512 * 1024 * 1024 + 1))
    with pytest.raises(RemoteProtocolError, match="^Protocol error: invalid bulk length$"):
        reader.next_command()


def test_a_bulk_at_the_limit_is_accepted() -> None:
    assert read_commands([command_bytes([b"x" * 1000])], SMALL) == [[b"x" * 1000]]


def test_unauthenticated_clients_get_redis_tighter_limits() -> None:
    reader = RespReader(authentication_required=True)
    reader.feed(b"*11\r\n")
    with pytest.raises(RemoteProtocolError, match="unauthenticated multibulk length"):
        reader.next_command()
    reader = RespReader(authentication_required=True)
    reader.feed(b"*1\r\n$16385\r\n")
    with pytest.raises(RemoteProtocolError, match="unauthenticated bulk length"):
        reader.next_command()
    reader = RespReader(authentication_required=True)
    reader.feed(command_bytes([b"AUTH", b"secret"]))
    assert reader.next_command() == [b"AUTH", b"secret"]
    reader.authentication_required = False
    reader.feed(command_bytes([b"x"] * 11))
    assert reader.next_command() == [b"x"] * 11


def test_the_query_buffer_is_bounded() -> None:
    reader = RespReader(SMALL)
    reader.feed(b"*1\r\n$1000\r\n" + b"x" * 900)
    assert reader.next_command() is NEED_MORE
    with pytest.raises(RemoteProtocolError, match="query buffer of 4097 bytes exceeds"):
        reader.feed(b"y" * 3186)


def test_the_query_buffer_counts_the_arguments_already_parsed() -> None:
    reader = RespReader(RespLimits(bulk_size_max_bytes=1000, query_buffer_size_max_bytes=2100))
    one = b"$1000\r\n" + b"x" * 1000 + b"\r\n"
    reader.feed(b"*4\r\n" + one * 2)
    assert reader.next_command() is NEED_MORE
    assert reader.buffered_size_bytes == 4 + 2 * len(one)
    with pytest.raises(RemoteProtocolError, match="query buffer of 2104 bytes exceeds"):
        reader.feed(b"$1000\r\n" + b"x" * 75)


def test_the_query_buffer_is_emptied_by_each_whole_command() -> None:
    reader = RespReader(SMALL)
    for _ in range(10):
        reader.feed(command_bytes([b"x" * 1000] * 3))
        assert reader.next_command() == [b"x" * 1000] * 3
        assert reader.buffered_size_bytes == 0


def test_a_failed_reader_stays_failed() -> None:
    reader = RespReader()
    reader.feed(b"*x\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_command()
    with pytest.raises(LocalProtocolError, match="next_command failed: the reader failed earlier"):
        reader.next_command()
    with pytest.raises(LocalProtocolError, match="feed failed"):
        reader.feed(command_bytes([b"PING"]))


@pytest.mark.parametrize(
    "fields",
    [
        {"bulk_size_max_bytes": 0},
        {"arguments_count_max": -1},
        {"nesting_depth_max": True},
        {"bulk_size_max_bytes": 2000, "query_buffer_size_max_bytes": 1000},
    ],
)
def test_limits_are_validated(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="^RespLimits failed: "):
        RespLimits(**fields)


# ---------------------------------------------------------------------------------------------
# Parser: replies, malformed replies, and agreement with hiredis.


@QUICK
@given(st.lists(reply_st, min_size=1, max_size=3), st.sampled_from([2, 3]))
def test_replies_split_at_every_byte_offset_parse_the_same(values: list[Any],
                                                           protocol: int) -> None:
    data = b"".join(encode(v, protocol) for v in values)
    replies = read_replies([data])
    assert len(replies) == len(values)
    whole = canonical(replies)
    for offset in range(len(data) + 1):
        assert canonical(read_replies([data[:offset], data[offset:]])) == whole, offset
    assert canonical(read_replies([data[i : i + 1] for i in range(len(data))])) == whole


def as_hiredis(value: Any) -> Any:
    """Our parser's value in hiredis-py's conventions, canonical."""
    if isinstance(value, ErrorReply):
        return ("error", bytes(value).decode(errors="replace"))
    if isinstance(value, BigNumber):
        return ("bytes", b"%d" % value)
    if isinstance(value, bytes):
        return ("bytes", bytes(value))
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, dict):
        return ("dict", [(as_hiredis(k), as_hiredis(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [as_hiredis(item) for item in value])
    return (type(value).__name__, value)


def hiredis_canonical(value: Any) -> Any:
    if isinstance(value, hiredis.ReplyError):
        return ("error", str(value))
    if isinstance(value, bytes):
        return ("bytes", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, dict):
        return ("dict", [(hiredis_canonical(k), hiredis_canonical(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [hiredis_canonical(item) for item in value])
    return (type(value).__name__, value)


_NO_REPLY_YET = object()


def hiredis_replies(data: bytes) -> list[Any]:
    # hiredis returns False both for "no reply yet" and for a RESP3 #f reply: a sentinel of our
    # own tells them apart.
    reader = hiredis.Reader(notEnoughData=_NO_REPLY_YET)
    reader.feed(data)
    replies = []
    while (reply := reader.gets()) is not _NO_REPLY_YET:
        replies.append(reply)
    return replies


def assert_same_as_hiredis(data: bytes) -> None:
    ours = [as_hiredis(reply) for reply in read_replies([data])]
    theirs = [hiredis_canonical(reply) for reply in hiredis_replies(data)]
    assert ours == theirs


@examples(300)
@given(st.lists(reply_st, min_size=1, max_size=4), st.sampled_from([2, 3]))
def test_replies_parse_as_hiredis_parses_them(values: list[Any], protocol: int) -> None:
    assert_same_as_hiredis(b"".join(encode(v, protocol) for v in values))


@pytest.mark.parametrize(
    "data",
    [
        b",1.\r\n,.5\r\n,-.5\r\n,1E+5\r\n,00.5\r\n,-0\r\n,INF\r\n,-Inf\r\n,NaN\r\n,-nan\r\n",
        b",5e-324\r\n,1.7976931348623157e+308\r\n,0e5\r\n",
        b"(-12\r\n(0\r\n:0\r\n:-9223372036854775808\r\n:9223372036854775807\r\n",
        b"%-1\r\n~-1\r\n*-1\r\n$-1\r\n_\r\n>0\r\n*0\r\n%0\r\n",
        b"+\r\n-\r\n$0\r\n\r\n=4\r\ntxt:\r\n",
        b"*1\r\n" * 100 + b":1\r\n",
    ],
)
def test_edge_case_replies_parse_as_hiredis_parses_them(data: bytes) -> None:
    assert_same_as_hiredis(data)


MALFORMED_REPLIES = [
    b":01\r\n", b":+1\r\n", b":-0\r\n", b":9223372036854775808\r\n", b":\r\n",
    b"$01\r\nab\r\n", b"$-2\r\n", b"*-2\r\n", b",1e500\r\n", b",1e-400\r\n", b",+1\r\n",
    b", 1\r\n", b",0x10\r\n", b",1_0\r\n", b",Infinity\r\n", b",.\r\n", b",1e\r\n",
    b"#x\r\n", b"_x\r\n", b"(abc\r\n", b"=2\r\nab\r\n", b"+a\rb\r\n", b"?\r\n",
]


@pytest.mark.parametrize("data", MALFORMED_REPLIES)
def test_malformed_replies_raise_remote_protocol_error_as_hiredis_refuses_them(
    data: bytes,
) -> None:
    with pytest.raises(hiredis.ProtocolError):
        hiredis_replies(data)
    with pytest.raises(RemoteProtocolError, match="^Protocol error: "):
        read_replies([data])


@pytest.mark.parametrize(
    ("data", "hiredis_reads", "message"),
    [
        (b"$1\r\nab\r\n", b"a", "expected CRLF after the bulk string payload"),
        (b"(\r\n", b"", "bad big number value"),
    ],
)
def test_the_parser_refuses_what_hiredis_lets_through(
    data: bytes, hiredis_reads: bytes, message: str
) -> None:
    reader = hiredis.Reader()
    reader.feed(data)
    assert reader.gets() == hiredis_reads  # Its first reply; it may fail on the bytes left over.
    with pytest.raises(RemoteProtocolError, match=message):
        read_replies([data])


def test_big_numbers_are_numbers_where_hiredis_keeps_their_digits() -> None:
    assert hiredis_replies(b"(-0\r\n(007\r\n") == [b"-0", b"007"]
    assert read_replies([b"(-0\r\n(007\r\n"]) == [BigNumber(0), BigNumber(7)]


def test_attributes_are_read_and_dropped() -> None:
    data = b"|1\r\n+ttl\r\n:3\r\n*2\r\n|1\r\n+a\r\n:1\r\n:5\r\n:6\r\n"
    assert read_replies([data]) == [[5, 6]]


def test_map_keys_that_are_arrays_become_tuples() -> None:
    assert read_replies([b"%1\r\n*2\r\n:1\r\n:2\r\n+v\r\n"]) == [{(1, 2): b"v"}]
    with pytest.raises(RemoteProtocolError, match="map key of type Map"):
        read_replies([b"%1\r\n%0\r\n:1\r\n"])


def test_reply_nesting_is_bounded_and_needs_no_recursion() -> None:
    deep = b"*1\r\n" * 5000 + b":1\r\n"
    parser = RespParser(RespLimits(nesting_depth_max=10_000))
    parser.feed(deep)
    reply = parser.next_reply()
    for _ in range(5000):
        reply = reply[0]
    assert reply == 1
    with pytest.raises(RemoteProtocolError, match="nesting deeper than nesting_depth_max"):
        read_replies([deep])


# ---------------------------------------------------------------------------------------------
# Linear time when bytes arrive one at a time.


def seconds_bytewise(feed: Callable[[bytes], None], data: bytes) -> float:
    start = time.perf_counter()
    for index in range(len(data)):
        feed(data[index : index + 1])
    return time.perf_counter() - start


def reader_feeder() -> tuple[Callable[[bytes], None], list[Any]]:
    reader, out = RespReader(), []

    def feed(piece: bytes) -> None:
        reader.feed(piece)
        out.extend(drain_commands(reader))

    return feed, out


def parser_feeder() -> tuple[Callable[[bytes], None], list[Any]]:
    parser, out = RespParser(), []

    def feed(piece: bytes) -> None:
        parser.feed(piece)
        out.extend(drain_replies(parser))

    return feed, out


Feeder = Callable[[], tuple[Callable[[bytes], None], list[Any]]]
INPUTS: dict[str, tuple[Callable[[int], bytes], Feeder]] = {
    "one big bulk": (lambda n: command_bytes([b"SET", b"k", b"v" * n]), reader_feeder),
    "one long inline line": (lambda n: b"SET k " + b"v" * n + b"\r\n", reader_feeder),
    "many small commands": (lambda n: command_bytes([b"PING"]) * (n // 14), reader_feeder),
    "one long simple string": (lambda n: b"+" + b"s" * n + b"\r\n", parser_feeder),
    "one long array": (lambda n: b"*%d\r\n" % (n // 4) + b":1\r\n" * (n // 4), parser_feeder),
}


@pytest.mark.parametrize("name", list(INPUTS))
def test_feeding_one_byte_at_a_time_takes_linear_time(name: str) -> None:
    make, feeder = INPUTS[name]
    timings = []
    for size in (15_000, 60_000):
        best = math.inf
        for _ in range(4):  # best of 4: a loaded machine once stretched one round 10x
            feed, out = feeder()
            best = min(best, seconds_bytewise(feed, make(size)))
            assert out
        timings.append(best)
    # Four times the input: linear work takes about 4x, a quadratic rescan 16x.
    assert timings[1] < 10 * timings[0], timings


# The fast path splits at CRLFs and checks each `$N` against its payload: payloads made of
# CRLFs, `$`, `*` and digits (which split into header lookalikes) must parse as the reference.
tricky_payload_st = st.text(alphabet="\r\n$*019a", max_size=10).map(str.encode)


def outcome(function: Any) -> Any:
    try:
        return function()
    except RemoteProtocolError as error:
        return ("error", str(error))


@QUICK
@given(st.lists(st.lists(tricky_payload_st, min_size=1, max_size=5), min_size=1, max_size=4),
       st.integers(1, 3), st.sampled_from(["default", "small", "tiny bulk"]))
def test_fast_path_agrees_on_payloads_holding_crlf_and_header_lookalikes(
        commands: list[list[bytes]], count_max: int, limits_name: str) -> None:
    limits = {"default": RespLimits(), "small": SMALL,
              "tiny bulk": RespLimits(bulk_size_max_bytes=3, arguments_count_max=3)}[limits_name]
    data = b"".join(command_bytes(c) for c in commands)
    expected = outcome(lambda: read_commands([data], limits))
    for offset in (0, len(data) // 2, len(data)):
        pieces = [data[:offset], data[offset:]]
        batched = functools.partial(read_commands_batched, pieces, count_max, limits)
        assert outcome(batched) == expected
