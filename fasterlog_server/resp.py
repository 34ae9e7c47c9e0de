"""A sans-IO codec for RESP, the Redis protocol (RESP2 and RESP3).

Three parts, none of which touches a socket (the server module does that):

- `RespReader`, the server side: `feed(bytes)` then `next_command()`, which returns one command
  as a list of bulk strings, or `NEED_MORE` when the buffered bytes hold no whole command. It
  accepts what clients send: arrays of bulk strings (`*2\\r\\n$4\\r\\nECHO\\r\\n$2\\r\\nhi\\r\\n`)
  and inline commands (`ECHO "hi there"\\r\\n`, split as Redis's `sdssplitargs` splits them).
- `encode(value, protocol)`, the server's replies: Python values and the wrapper types below
  (`SimpleString`, `ErrorReply`, `Map`, `Set`, `Push`, `Verbatim`, `BigNumber`, `NULL_ARRAY`)
  become RESP2 or RESP3 bytes.
- `RespParser`, the client side: `feed(bytes)` then `next_reply()`, for replies of every RESP2 and
  RESP3 type. Tests use it to read the server's answers.

Rules and invariants:

1. Input is untrusted. Every buffer has a named bound in `RespLimits`, and a declared length is
   checked against its bound when its header line arrives, before any of its payload is awaited.
2. Malformed input, or input over a limit, raises `RemoteProtocolError` with Redis's message
   where Redis has one. The reader is then failed for good: any later call raises
   `LocalProtocolError`, because the connection must be closed, not resynchronised.
3. Work is linear in the input size however the bytes are split. The buffer is consumed from a
   parse position (`_position`) and compacted only when at least half of it is consumed; a
   partial line remembers how far it was scanned (`_scan_position`); a partial bulk string is
   waited for by comparing lengths, never by rescanning. A whole element is consumed at once or
   not at all, so a parse that needs more data leaves nothing half-applied.
4. Results do not depend on how the input is split: the same bytes fed in any pieces give the
   same commands, replies and errors. Limits are therefore judged on the bytes of one line or
   one element, never on how much happened to arrive in one read. The one exception is
   `query_buffer_size_max_bytes`, which bounds what `feed` may hold and so depends on how often
   the caller drains the reader.
5. Where Redis is lax we are strict, and say so: the CRLF after a bulk payload is checked (Redis
   skips two bytes unseen), a CR in a header must be followed by LF, `*N` with N below -1 is an
   error (Redis treats it as an empty command), and a NUL byte in an inline command is an
   error (Redis's `strchr` stops at it and waits until the line is "too big").
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from ._resp_speedups import split as _split
from .errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DEFAULT_LIMITS",
    "NEED_MORE",
    "NULL_ARRAY",
    "BigNumber",
    "ErrorReply",
    "Map",
    "NeedMore",
    "Push",
    "RespLimits",
    "RespParser",
    "RespReader",
    "Set",
    "SimpleString",
    "Verbatim",
    "encode",
    "parse_integer",
]

_KIB: Final = 1 << 10
_MIB: Final = 1 << 20
_GIB: Final = 1 << 30
_CR: Final = 13
_LF: Final = 10
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
# A buffer is compacted once this many bytes are consumed and they are half of it or more, so
# that compaction costs O(1) per byte consumed and small pipelines do not copy at all.
_COMPACT_AFTER_BYTES: Final = 64 * _KIB


@dataclasses.dataclass(frozen=True)
class RespLimits:
    """Named bounds on what a peer may make us buffer. Defaults follow Redis where it has one.

    bulk_size_max_bytes: largest bulk string (Redis proto-max-bulk-len, 512 MiB). A declared
        length above it is refused when its `$N` line arrives, before the payload.
    arguments_count_max: most arguments in one command, and most elements in one reply
        aggregate. Redis allows up to INT_MAX; a million is far more than any real command
        (MSET, XADD with many fields) and keeps the list of arguments bounded.
    inline_size_max_bytes: longest inline command line, and longest `*N`/`$N` header line
        (Redis PROTO_INLINE_MAX_SIZE, 64 KiB).
    query_buffer_size_max_bytes: most unparsed bytes `feed` may hold (Redis
        client-query-buffer-limit, 1 GiB). Kept at Redis's value: it must hold one command
        with a bulk string of `bulk_size_max_bytes`, and lowering one without the other would
        refuse commands the other allows. A deployment that wants less memory per client
        should lower both (fasterlog entries are much smaller than 512 MiB anyway).
    nesting_depth_max: deepest nesting of reply aggregates (`RespParser` only; commands are flat).
    unauthenticated_arguments_count_max, unauthenticated_bulk_size_max_bytes: the tighter
        bounds Redis applies before AUTH succeeds (10 arguments, 16 KiB), used while
        `RespReader.authentication_required` is true.
    """

    bulk_size_max_bytes: int = 512 * _MIB
    arguments_count_max: int = 1 << 20
    inline_size_max_bytes: int = 64 * _KIB
    query_buffer_size_max_bytes: int = 1 * _GIB
    nesting_depth_max: int = 128
    unauthenticated_arguments_count_max: int = 10
    unauthenticated_bulk_size_max_bytes: int = 16 * _KIB

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RespLimits failed: {field.name} must be a positive int, "
                                 f"not {value!r}")
        if self.query_buffer_size_max_bytes < self.bulk_size_max_bytes + 64:
            raise ValueError("RespLimits failed: query_buffer_size_max_bytes "
                             f"({self.query_buffer_size_max_bytes}) must hold one bulk string "
                             f"of bulk_size_max_bytes ({self.bulk_size_max_bytes}) and its "
                             "framing")


DEFAULT_LIMITS: Final = RespLimits()


class NeedMore(enum.Enum):
    """The type of NEED_MORE: the buffered bytes hold no whole command or reply yet."""

    NEED_MORE = "NEED_MORE"

    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE: Final = NeedMore.NEED_MORE


# ---------------------------------------------------------------------------------------------
# Reply value types. Each subclasses the builtin it carries, so `SimpleString(b"OK") == b"OK"`,
# while `encode` and tests can still tell exactly what kind of reply it is.


class SimpleString(bytes):
    """A status reply, `+OK`: short text without CR or LF."""

    def __new__(cls, value: bytes | str) -> Self:
        return super().__new__(cls, value.encode() if isinstance(value, str) else value)

    def __repr__(self) -> str:
        return f"SimpleString({bytes(self)!r})"


class ErrorReply(bytes):
    """An error reply, `-ERR unknown command`: an upper-case code, a space, a message."""

    def __new__(cls, value: bytes | str) -> Self:
        return super().__new__(cls, value.encode() if isinstance(value, str) else value)

    @property
    def code(self) -> str:
        """The first word, by Redis convention the error's kind: ERR, WRONGTYPE, NOAUTH..."""
        return self.split(b" ", 1)[0].decode(errors="replace")

    def __repr__(self) -> str:
        return f"ErrorReply({bytes(self)!r})"


class Verbatim(bytes):
    """A RESP3 verbatim string, `=15\\r\\ntxt:Some string\\r\\n`; RESP2 sends a bulk string."""

    format: str

    def __new__(cls, value: bytes | str, format: str = "txt") -> Self:
        if len(format.encode()) != 3 or ":" in format:
            raise LocalProtocolError(f"Verbatim failed: format must be 3 bytes, not {format!r}")
        self = super().__new__(cls, value.encode() if isinstance(value, str) else value)
        self.format = format
        return self

    def __repr__(self) -> str:
        return f"Verbatim({bytes(self)!r}, format={self.format!r})"


class BigNumber(int):
    """A RESP3 big number, `(3492890328409238509324850943850943825024385\\r\\n`."""

    def __repr__(self) -> str:
        return f"BigNumber({int(self)})"


class Map(dict[Any, Any]):
    """A RESP3 map, `%N`; RESP2 sends a flat array of keys and values. Plain dicts encode alike."""

    def __repr__(self) -> str:
        return f"Map({dict.__repr__(self)})"


class Set(list[Any]):
    """A RESP3 set, `~N`; RESP2 sends an array. Kept as a list: elements may be unhashable."""

    def __repr__(self) -> str:
        return f"Set({list.__repr__(self)})"


class Push(list[Any]):
    """A RESP3 out-of-band push, `>N` (pub/sub messages, invalidations); RESP2 sends an array."""

    def __repr__(self) -> str:
        return f"Push({list.__repr__(self)})"


class _NullArray(enum.Enum):
    NULL_ARRAY = "NULL_ARRAY"

    def __repr__(self) -> str:
        return "NULL_ARRAY"


# The RESP2 null array `*-1` (a timed-out BLPOP, XREAD without results). None is the null bulk
# string `$-1`. RESP3 has a single null, `_`, for both.
NULL_ARRAY: Final = _NullArray.NULL_ARRAY


# ---------------------------------------------------------------------------------------------
# The shared input buffer.

# Redis's string2ll: an optional minus, then no leading zero, no plus, no spaces; "-0" is refused.
_INTEGER: Final = re.compile(rb"-?[1-9][0-9]*|0")
_BIG_NUMBER: Final = re.compile(rb"-?[0-9]+")
# RESP3 doubles as hiredis reads them: strtod's decimal form without sign '+' or spaces, or
# inf, -inf, nan, -nan in any case. Hexadecimal, "infinity" and underscores are refused.
_DOUBLE: Final = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_DOUBLE_WORDS: Final = {b"inf": math.inf, b"-inf": -math.inf, b"nan": math.nan, b"-nan": math.nan}


class _Buffer:
    """Unparsed input with a parse position, a line scan cache and a failed state."""

    def __init__(self, limits: RespLimits) -> None:
        if not isinstance(limits, RespLimits):
            raise LocalProtocolError(f"reader failed: limits must be RespLimits, not {limits!r}")
        self._limits = limits
        self._buffer = bytearray()
        self._position = 0  # Everything before it is consumed.
        # Offsets counted from the first byte ever fed, across compactions: where _buffer starts
        # and where the command or reply being parsed starts. Its bytes count against the query
        # buffer limit even once parsed into arguments, so that a peer cannot hold
        # arguments_count_max bulk strings of bulk_size_max_bytes each.
        self._buffer_offset = 0
        self._item_offset = 0
        self._scan_position = 0  # A partial line at _position holds no terminator before this.
        # The message of the error that failed the reader (invariant 2). Kept as text, not as
        # the exception: a raised exception holds its traceback, whose frames hold this reader
        # and the connection that called it, a cycle only the cyclic GC would free (with the
        # buffer in it).
        self._failure: str | None = None

    @property
    def buffered_size_bytes(self) -> int:
        """Bytes fed but not yet returned as part of a whole command or reply."""
        return self._buffer_offset + len(self._buffer) - self._item_offset

    def _start_item(self) -> None:
        """Marks _position as the start of the next command or reply."""
        self._item_offset = self._buffer_offset + self._position

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Appends bytes received from the peer. Refuses more than query_buffer_size_max_bytes."""
        self._check_usable("feed")
        size = self.buffered_size_bytes + len(data)
        if size > self._limits.query_buffer_size_max_bytes:
            self._fail(f"Protocol error: query buffer of {size} bytes exceeds "
                       f"query_buffer_size_max_bytes ({self._limits.query_buffer_size_max_bytes})")
        self._buffer += data

    def _check_usable(self, operation: str) -> None:
        if self._failure is not None:
            raise LocalProtocolError(f"{operation} failed: the reader failed earlier with "
                                     f"{self._failure}; close the connection")

    def _fail(self, message: str) -> NoReturn:
        self._failure = message
        raise RemoteProtocolError(message)

    def discard(self) -> None:
        """Gives the buffered bytes back at once (the connection is closed); the reader is
        failed from here on."""
        self._buffer = bytearray()
        self._position = self._scan_position = 0
        self._buffer_offset = self._item_offset = 0
        if self._failure is None:
            self._failure = "the connection is closed"

    def _compact(self) -> None:
        """Drops consumed bytes when that is cheap in amortised terms (invariant 3)."""
        position = self._position
        if position == len(self._buffer) or (
            position >= _COMPACT_AFTER_BYTES and 2 * position >= len(self._buffer)
        ):
            del self._buffer[:position]
            self._scan_position = max(0, self._scan_position - position)
            self._buffer_offset += position
            self._position = 0

    def _line_end(self, terminator: int, size_max_bytes: int, too_long: str) -> int:
        """Index of the terminator ending the line at _position, or -1 if it has not arrived.

        A line longer than size_max_bytes raises too_long whether or not its end has arrived,
        so the outcome does not depend on how the input was split (invariant 4).
        """
        start = self._position
        search_end = start + size_max_bytes + 1
        found = self._buffer.find(terminator, max(start, self._scan_position), search_end)
        if found < 0:
            if len(self._buffer) >= search_end:
                self._fail(too_long)
            self._scan_position = len(self._buffer)
            return -1
        return found

    def _header_line(self, too_long: str) -> bytes | None:
        """The text of a CRLF-terminated header line at _position, or None until it is whole."""
        cr = self._line_end(_CR, self._limits.inline_size_max_bytes, too_long)
        if cr < 0:
            return None
        if cr + 1 >= len(self._buffer):
            self._scan_position = cr  # Found again at once when the LF arrives.
            return None
        if self._buffer[cr + 1] != _LF:
            self._fail("Protocol error: expected '\\n' after '\\r'")
        return bytes(self._buffer[self._position + 1 : cr])

    def _take_payload(self, start: int, size: int) -> bytes | None:
        """The size bytes at start and their CRLF, or None until they have all arrived."""
        end = start + size
        if end + 2 > len(self._buffer):
            return None
        if self._buffer[end] != _CR or self._buffer[end + 1] != _LF:
            self._fail("Protocol error: expected CRLF after the bulk string payload")
        with memoryview(self._buffer) as view:
            return bytes(view[start:end])


def parse_integer(text: bytes) -> int | None:
    """An integer as Redis's string2ll reads it (see _INTEGER), or None; no range check."""
    return int(text) if _INTEGER.fullmatch(text) else None


# ---------------------------------------------------------------------------------------------
# The server side: commands in.


class RespReader(_Buffer):
    """Turns bytes from a client into commands (lists of bulk strings).

    Use: `reader.feed(data)`, then call `reader.next_command()` until it returns NEED_MORE.
    Drain it after every feed: the query buffer limit counts every byte not yet returned.
    Set `authentication_required` while the client has not passed AUTH, for Redis's tighter
    limits on unauthenticated clients.
    """

    def __init__(self, limits: RespLimits = DEFAULT_LIMITS, *,
                 authentication_required: bool = False, accelerated: bool = True) -> None:
        super().__init__(limits)
        self.authentication_required = authentication_required
        self._arguments: list[bytes] = []
        self._arguments_remaining_count = 0  # Bulk strings still due in the current array.
        self._deferred_failure: RemoteProtocolError | None = None  # see next_commands
        self._fast_tables = (_fast_counts(limits.arguments_count_max),
                             _fast_headers(limits.bulk_size_max_bytes))
        # accelerated: whole arrays are split in C (csrc/resp_split.c); False keeps the pure
        # Python fast path, the reference the tests compare the C one against.
        # (Chosen per call, not kept as a bound method: a bound method held by its own object
        # is a reference cycle, and the reader and its buffer would wait for the cyclic GC.)
        self._accelerated = accelerated

    def next_command(self) -> list[bytes] | Literal[NeedMore.NEED_MORE]:
        """The next whole command, or NEED_MORE. Empty commands (blank lines, `*0`) are skipped.

        Raises RemoteProtocolError on malformed input; the reader is unusable afterwards.
        """
        self._check_usable("next_command")
        while True:
            if self._arguments_remaining_count == 0:
                self._start_item()
                if self._position == len(self._buffer):
                    self._compact()
                    return NEED_MORE
                if self._buffer[self._position] == ord("*"):
                    count = self._read_array_header()
                    if count is None:
                        self._compact()
                        return NEED_MORE
                    continue  # An empty array is skipped, as Redis does.
                command = self._read_inline()
                if command is None:
                    self._compact()
                    return NEED_MORE
                if command:
                    return command
                continue  # A blank line is skipped, as Redis does.
            if not self._read_bulk_argument():
                self._compact()
                return NEED_MORE
            if self._arguments_remaining_count == 0:
                command, self._arguments = self._arguments, []
                self._start_item()
                return command

    def next_commands(self, count_max: int) -> list[list[bytes]]:
        """Up to `count_max` whole commands (possibly none): `next_command` in a loop, with a
        fast path for the common frame, an array of bulk strings that has fully arrived.

        The fast path takes only input it can check completely (canonical lengths within the
        limits, CRLFs in place); anything else, including every malformed or partial frame,
        goes to `next_command`, which gives the reference result and error. So the results are
        the same as calling `next_command` `count_max` times; commands before a malformed frame
        are returned first and its error comes from the next call. While `authentication_required`
        it returns one command at a time: an AUTH in a pipeline lifts the tighter limits for
        the commands after it only once it has run.
        """
        commands: list[list[bytes]] = []
        if self._deferred_failure is not None:
            failure, self._deferred_failure = self._deferred_failure, None
            raise failure
        if self.authentication_required:
            command = self.next_command()
            return [] if command is NEED_MORE else [command]
        while len(commands) < count_max:
            if self._arguments_remaining_count == 0 and self._failure is None:
                if self._accelerated:
                    self._take_whole_arrays_c(commands, count_max)
                else:
                    self._take_whole_arrays(commands, count_max)
                if len(commands) >= count_max or not self._buffer:
                    break  # enough, or everything fed is taken (compacted away)
            try:
                command = self.next_command()
            except RemoteProtocolError as failure:
                # The commands before a malformed frame still run, as in Redis (and as with
                # next_command): they are returned now and the error on the next call.
                if not commands:
                    raise
                self._deferred_failure = failure.with_traceback(None)  # no cycle: see _failure
                break
            if command is NEED_MORE:
                break
            commands.append(command)
        return commands

    def feed_and_take(self, data: bytes, count_max: int) -> list[list[bytes]]:
        """`feed(data)` then `next_commands(count_max)`, with the same results, but without
        copying `data` into the buffer when nothing is buffered and it starts with whole
        arrays of bulk strings (the common read: one command, or a pipeline that arrived
        whole): they are split straight from `data` in C, and only the rest is buffered."""
        if self._buffer or self.authentication_required or not self._accelerated or \
                self._failure is not None or self._deferred_failure is not None or \
                self._arguments_remaining_count or not data or data[0] != 42:
            self.feed(data)
            return self.next_commands(count_max)
        limits = self._limits
        commands, size = _split(data, 0, limits.bulk_size_max_bytes,
                                limits.arguments_count_max, count_max)
        # The taken bytes count as fed and consumed (buffered_size_bytes stays exact).
        self._buffer_offset += size
        self._item_offset = self._buffer_offset
        if size == len(data):
            return commands
        try:
            self.feed(memoryview(data)[size:])
            if len(commands) < count_max:
                commands += self.next_commands(count_max - len(commands))
        except RemoteProtocolError as failure:
            if not commands:
                raise
            # The commands before it run first; no traceback kept (no cycle: see _failure).
            self._deferred_failure = failure.with_traceback(None)
        return commands

    def _take_whole_arrays(self, commands: list[list[bytes]], count_max: int) -> None:
        """The fast path of next_commands: whole arrays of bulk strings at _position.

        One split of a bounded window at every CRLF gives the headers and payloads as
        alternate tokens; a command is taken when its count header is canonical and every
        bulk header is exactly `$` and its payload's length (which also proves that the
        payload holds no CRLF and that the CRLF after it is in place). The first token that
        does not fit (a payload holding CRLF, a partial command, anything odd) ends the fast
        path there, and `next_command` takes over."""
        buffer = self._buffer
        position = self._position
        if position >= len(buffer) or buffer[position] != 42:  # not '*'
            return
        # One copy of a bounded window; a command that does not fit goes to the slow path,
        # so a huge bulk arriving in pieces is not copied again at every read.
        with memoryview(buffer) as view:  # one copy, not a bytearray slice and then bytes
            tokens = bytes(view[position:position + _FAST_WINDOW_BYTES]).split(b"\r\n")
        last = len(tokens) - 1  # tokens[last] has no CRLF after it: not usable
        counts, headers = self._fast_tables
        index = 0  # tokens[:index] are whole commands taken
        while index < last:
            count = counts.get(tokens[index])
            if count is None:
                break
            first = index + 1
            end = first + 2 * count
            if end > last:
                break
            arguments = tokens[first + 1:end:2]
            try:
                if tokens[first:end:2] != [headers[len(argument)] for argument in arguments]:
                    break
            except IndexError:  # a payload longer than the table: the slow path checks it
                break
            commands.append(arguments)
            index = end
            if len(commands) >= count_max:
                break
        if index:
            taken = sum(map(len, tokens[:index])) + 2 * index  # each token had its CRLF
            self._position = position + taken
            self._scan_position = self._position
            self._start_item()
            self._compact()

    def _take_whole_arrays_c(self, commands: list[list[bytes]], count_max: int) -> None:
        """_take_whole_arrays with the split done in C (csrc/resp_split.c), which takes the
        same frames under the same rules (anything else ends it and `next_command` decides),
        without a window: one call takes every whole command in the buffer, up to 1,024."""
        buffer = self._buffer
        position = self._position
        if position >= len(buffer) or buffer[position] != 42:  # not '*'
            return
        limits = self._limits
        taken, size = _split(buffer, position, limits.bulk_size_max_bytes,
                             limits.arguments_count_max, count_max - len(commands))
        if size:
            commands += taken
            self._position = position + size
            self._scan_position = self._position
            self._start_item()
            self._compact()

    def _read_array_header(self) -> int | None:
        text = self._header_line("Protocol error: too big mbulk count string")
        if text is None:
            return None
        count = parse_integer(text)
        if count is None or count < -1:
            self._fail("Protocol error: invalid multibulk length")
        if count > self._limits.arguments_count_max:
            self._fail(f"Protocol error: multibulk length {count} exceeds arguments_count_max "
                       f"({self._limits.arguments_count_max})")
        if self.authentication_required and \
                count > self._limits.unauthenticated_arguments_count_max:
            self._fail("Protocol error: unauthenticated multibulk length")
        self._position += len(text) + 3
        self._arguments_remaining_count = max(count, 0)
        return count

    def _read_bulk_argument(self) -> bool:
        """Consumes one `$N` bulk string of the current array; False until it has all arrived."""
        if self._position == len(self._buffer):
            return False
        if self._buffer[self._position] != ord("$"):
            got = chr(self._buffer[self._position])
            self._fail(f"Protocol error: expected '$', got '{got}'")
        text = self._header_line("Protocol error: too big bulk count string")
        if text is None:
            return False
        size = parse_integer(text)
        if size is None or size < 0 or size > self._limits.bulk_size_max_bytes:
            self._fail("Protocol error: invalid bulk length")
        if self.authentication_required and size > self._limits.unauthenticated_bulk_size_max_bytes:
            self._fail("Protocol error: unauthenticated bulk length")
        payload_start = self._position + len(text) + 3
        payload = self._take_payload(payload_start, size)
        if payload is None:
            return False
        self._position = payload_start + size + 2
        self._arguments.append(payload)
        self._arguments_remaining_count -= 1
        return True

    def _read_inline(self) -> list[bytes] | None:
        limit = self._limits.inline_size_max_bytes
        lf = self._line_end(_LF, limit, "Protocol error: too big inline request")
        if lf < 0:
            return None
        end = lf - 1 if lf > self._position and self._buffer[lf - 1] == _CR else lf
        line = bytes(self._buffer[self._position : end])
        if b"\0" in line:
            self._fail("Protocol error: NUL byte in inline request")
        arguments = split_inline(line)
        if arguments is None:
            self._fail("Protocol error: unbalanced quotes in request")
        if len(arguments) > self._limits.arguments_count_max:
            self._fail("Protocol error: too many arguments in inline request")
        self._position = lf + 1
        return arguments


# The fast path's frames: `*N` and `$N` with canonical N (no sign, no leading zero), short
# enough that the limits are checked after the match (at most 10 digits).
_FAST_WINDOW_BYTES: Final = 256 * _KIB
_FAST_ARGUMENTS_MAX: Final = 1024
_FAST_BULK_SIZE_MAX_BYTES: Final = 4096


@functools.lru_cache(maxsize=8)
def _fast_counts(arguments_count_max: int) -> dict[bytes, int]:
    """Canonical `*N` headers the fast path takes, within the limit, to their N."""
    return {b"*%d" % n: n for n in range(1, min(arguments_count_max, _FAST_ARGUMENTS_MAX) + 1)}


@functools.lru_cache(maxsize=8)
def _fast_headers(bulk_size_max_bytes: int) -> list[bytes]:
    """The canonical `$N` header of a payload of N bytes, for N within the limit."""
    return [b"$%d" % n for n in range(min(bulk_size_max_bytes, _FAST_BULK_SIZE_MAX_BYTES) + 1)]

# The unquoted word of sdssplitargs: C isspace() is skipped before a word, but only space, tab,
# CR and LF end one (a vertical tab or form feed inside a word is kept).
_INLINE_WORD: Final = re.compile(rb"[\x0b\x0c]*([^ \t\r\n\x0b\x0c][^ \t\r\n]*)")
_C_SPACE: Final = frozenset(b" \t\n\x0b\x0c\r")
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def split_inline(line: bytes) -> list[bytes] | None:
    """Splits an inline command as Redis's sdssplitargs does; None for unbalanced quotes.

    Words are separated by white space. In "double quotes" the escapes \\n \\r \\t \\b \\a \\xHH
    and \\<any> apply; in 'single quotes' only \\'. A closing quote must be followed by white
    space or the end of the line. The line holds no NUL (the caller refuses it).
    """
    if b'"' not in line and b"'" not in line:
        return _INLINE_WORD.findall(line)
    arguments: list[bytes] = []
    position, size = 0, len(line)
    while True:
        while position < size and line[position] in _C_SPACE:
            position += 1
        if position == size:
            return arguments
        word, position = _split_word(line, position)
        if word is None:
            return None
        arguments.append(word)


def _split_word(line: bytes, position: int) -> tuple[bytes | None, int]:
    """One word of sdssplitargs from position; (None, _) for unbalanced quotes."""
    word = bytearray()
    quote = 0  # The open quote character, or 0 outside quotes.
    size = len(line)
    while True:
        byte = line[position] if position < size else 0
        after = line[position + 1] if position + 1 < size else 0
        if quote == ord('"'):
            if byte == ord("\\") and after == ord("x") and position + 3 < size \
                    and line[position + 2] in _HEX_DIGITS and line[position + 3] in _HEX_DIGITS:
                word.append(int(line[position + 2 : position + 4], 16))
                position += 3
            elif byte == ord("\\") and after:
                position += 1
                word.append(_ESCAPES.get(after, after))
            elif byte == ord('"'):
                if after and after not in _C_SPACE:
                    return None, position
                return bytes(word), position + 1
            elif not byte:
                return None, position
            else:
                word.append(byte)
        elif quote == ord("'"):
            if byte == ord("\\") and after == ord("'"):
                position += 1
                word.append(after)
            elif byte == ord("'"):
                if after and after not in _C_SPACE:
                    return None, position
                return bytes(word), position + 1
            elif not byte:
                return None, position
            else:
                word.append(byte)
        elif byte in (ord(" "), ord("\n"), ord("\r"), ord("\t"), 0):
            return bytes(word), position
        elif byte in (ord('"'), ord("'")):
            quote = byte
        else:
            word.append(byte)
        position += 1


# ---------------------------------------------------------------------------------------------
# The client side: replies in.


class _Frame:
    """An aggregate being filled: its kind byte, how many elements are due, those received."""

    __slots__ = ("items", "kind", "remaining_count")

    def __init__(self, kind: int, remaining_count: int) -> None:
        self.kind = kind
        self.remaining_count = remaining_count
        self.items: list[Any] = []


_AGGREGATES: Final = frozenset(b"*%~>|")
_NOT_YET: Final = object()  # An element not yet whole (next_reply's NEED_MORE, internally).
_DROPPED: Final = object()  # A whole attribute, read and dropped: it is no element.


class RespParser(_Buffer):
    """Turns bytes from a server into replies, RESP2 and RESP3 alike (the type byte says which).

    Values: bulk strings are bytes, `+` SimpleString, `-` and `!` ErrorReply (returned, not
    raised), `:` int, `,` float, `#` bool, `(` BigNumber, `=` Verbatim, `_` and every `-1`
    length None, `*` list, `%` Map, `~` Set, `>` Push. Attributes (`|`) are read and dropped, as
    redis-py does. Map keys that are arrays become tuples so that they can be dict keys.
    On valid input the results equal hiredis's once hiredis's conventions are mapped: it returns
    status and verbatim strings and big numbers as bytes, sets as lists, errors as ReplyError.
    Stricter than hiredis: the CRLF after a bulk payload is checked.
    """

    def __init__(self, limits: RespLimits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self._stack: list[_Frame] = []

    def next_reply(self) -> Any:
        """The next whole reply, or NEED_MORE (compare with `is`). Raises RemoteProtocolError."""
        self._check_usable("next_reply")
        while True:
            if not self._stack:
                self._start_item()
            value = self._read_element()
            if value is _NOT_YET:
                self._compact()
                return NEED_MORE
            while True:  # Place the value, closing every aggregate it completes.
                if isinstance(value, _Frame):
                    if value.remaining_count > 0:
                        if len(self._stack) >= self._limits.nesting_depth_max:
                            self._fail("Protocol error: reply nesting deeper than "
                                       f"nesting_depth_max ({self._limits.nesting_depth_max})")
                        self._stack.append(value)
                        break
                    value = self._close(value)
                if not self._stack:
                    if value is _DROPPED:  # An attribute: the reply follows it.
                        break
                    self._start_item()
                    return value
                top = self._stack[-1]
                if value is not _DROPPED:
                    top.items.append(value)
                    top.remaining_count -= 1
                if top.remaining_count > 0:
                    break
                value = self._close(self._stack.pop())

    def _close(self, frame: _Frame) -> Any:
        items = frame.items
        if frame.kind == ord("*"):
            return items
        if frame.kind == ord("~"):
            return Set(items)
        if frame.kind == ord(">"):
            return Push(items)
        if frame.kind == ord("|"):
            return _DROPPED  # Attributes annotate the next reply; we drop them.
        result = Map()
        for index in range(0, len(items), 2):
            result[self._hashable(items[index])] = items[index + 1]
        return result

    def _hashable(self, key: Any) -> Any:
        if isinstance(key, list):
            key = tuple(self._hashable(item) for item in key)
        try:
            hash(key)
        except TypeError:
            self._fail(f"Protocol error: a map key of type {type(key).__name__} is not supported")
        return key

    def _read_element(self) -> Any:
        """One scalar, or a _Frame for an aggregate header; _NOT_YET until it is whole."""
        if self._position == len(self._buffer):
            return _NOT_YET
        kind = self._buffer[self._position]
        text = self._header_line_of_reply()
        if text is None:
            return _NOT_YET
        line_end = self._position + len(text) + 3
        if kind in b"$=!":
            return self._read_blob(kind, text, line_end)
        if kind in _AGGREGATES:
            count = parse_integer(text)
            if count is None or count < -1:
                self._fail(f"Protocol error: invalid aggregate length {text[:32]!r}")
            if count > self._limits.arguments_count_max:
                self._fail(f"Protocol error: aggregate length {count} exceeds "
                           f"arguments_count_max ({self._limits.arguments_count_max})")
            self._position = line_end
            if count == -1:
                return None
            return _Frame(kind, 2 * count if kind in b"%|" else count)
        value = self._scalar(kind, text)
        self._position = line_end
        return value

    def _header_line_of_reply(self) -> bytes | None:
        # Simple strings and errors may be long (CLIENT LIST is a bulk string, but a script's
        # error message is not), so reply lines are bounded by the bulk size, not the inline one.
        cr = self._line_end(_CR, self._limits.bulk_size_max_bytes, "Protocol error: too big line")
        if cr < 0:
            return None
        if cr + 1 >= len(self._buffer):
            self._scan_position = cr
            return None
        if self._buffer[cr + 1] != _LF:
            self._fail("Protocol error: expected '\\n' after '\\r'")
        return bytes(self._buffer[self._position + 1 : cr])

    def _read_blob(self, kind: int, text: bytes, line_end: int) -> Any:
        size = parse_integer(text)
        if size == -1 and kind != ord("="):
            self._position = line_end
            return None
        if size is None or size < 0 or size > self._limits.bulk_size_max_bytes:
            self._fail("Protocol error: invalid bulk length")
        payload = self._take_payload(line_end, size)
        if payload is None:
            return _NOT_YET
        self._position = line_end + size + 2
        if kind == ord("!"):
            return ErrorReply(payload)
        if kind == ord("="):
            if size < 4 or payload[3] != ord(":"):
                self._fail("Protocol error: verbatim string without its 3-byte format and ':'")
            try:
                return Verbatim(payload[4:], payload[:3].decode("ascii"))
            except (UnicodeDecodeError, LocalProtocolError):
                self._fail("Protocol error: verbatim string format is not 3 ASCII bytes")
        return payload

    def _scalar(self, kind: int, text: bytes) -> Any:
        if kind == ord("+"):
            return SimpleString(text)
        if kind == ord("-"):
            return ErrorReply(text)
        if kind == ord(":"):
            number = parse_integer(text)
            if number is None or not _INT64_MIN <= number <= _INT64_MAX:
                self._fail(f"Protocol error: bad integer value {text[:32]!r}")
            return number
        if kind == ord(","):
            return self._double(text)
        if kind == ord("#"):
            if text not in (b"t", b"f"):
                self._fail(f"Protocol error: bad boolean value {text[:32]!r}")
            return text == b"t"
        if kind == ord("_"):
            if text:
                self._fail(f"Protocol error: bad null value {text[:32]!r}")
            return None
        if kind == ord("("):
            if not _BIG_NUMBER.fullmatch(text):
                self._fail(f"Protocol error: bad big number value {text[:32]!r}")
            return BigNumber(int(text))
        self._fail(f"Protocol error: unexpected reply type byte {chr(kind)!r}")

    def _double(self, text: bytes) -> float:
        word = _DOUBLE_WORDS.get(text.lower())
        if word is not None:
            return word
        if _DOUBLE.fullmatch(text):
            value = float(text)
            if math.isfinite(value) and (value != 0.0 or not _underflows(text)):
                return value
        self._fail(f"Protocol error: bad double value {text[:32]!r}")


def _underflows(text: bytes) -> bool:
    """True when a decimal with a non-zero digit reads as 0.0 (strtod's ERANGE, as hiredis)."""
    mantissa = re.split(rb"[eE]", text, maxsplit=1)[0]
    return re.search(rb"[1-9]", mantissa) is not None


# ---------------------------------------------------------------------------------------------
# Replies out.

_ENCODE_DEPTH_MAX: Final = 64
_LINE_BREAK: Final = re.compile(rb"[\r\n]")
_LINE_BREAKS_TO_SPACES: Final = bytes.maketrans(b"\r\n", b"  ")


def encode(value: Any, protocol: int = 2) -> bytes:
    """The RESP bytes of one reply, for a client speaking RESP2 (the default) or RESP3.

    bytes and str (UTF-8) are bulk strings; None is the null bulk string (`$-1`, RESP3 `_`);
    NULL_ARRAY is `*-1` (RESP3 `_`); int is an integer (64-bit range; use BigNumber beyond);
    float a double (RESP2: a bulk string, as Redis sends scores); bool is `#t`/`#f` (RESP2
    `:1`/`:0`); list and tuple are arrays; dict and Map are maps (RESP2: flat arrays); set,
    frozenset and Set are sets (RESP2: arrays); Push is a push (RESP2: an array); SimpleString,
    ErrorReply, Verbatim and BigNumber are what their names say. Anything else is our own
    misuse and raises LocalProtocolError.
    """
    if protocol not in (2, 3):
        raise LocalProtocolError(f"encode failed: protocol must be 2 or 3, not {protocol!r}")
    chunks: list[bytes] = []
    _encode_into(chunks, value, protocol == 3, 0)
    return b"".join(chunks)


def _encode_into(chunks: list[bytes], value: Any, resp3: bool, depth: int) -> None:
    if depth > _ENCODE_DEPTH_MAX:
        raise LocalProtocolError(f"encode failed: nesting deeper than {_ENCODE_DEPTH_MAX} "
                                 "(a value that contains itself?)")
    if isinstance(value, ErrorReply):
        # An error may quote the client's bytes (an unknown command, a protocol error's
        # "got"): as Redis does (addReplyErrorLength), CR and LF become spaces, so the reply
        # stays one line and the connection lives on.
        if _LINE_BREAK.search(value):  # rare: looked for first, so the common case copies once
            value = ErrorReply(value.translate(_LINE_BREAKS_TO_SPACES))
        chunks.append(b"-" + value + b"\r\n")
    elif isinstance(value, SimpleString):
        if _LINE_BREAK.search(value):  # our own constants only: a line break is our bug
            raise LocalProtocolError(f"encode failed: {value!r} holds CR or LF")
        chunks.append(b"+" + bytes(value) + b"\r\n")
    elif isinstance(value, Verbatim):
        if resp3:
            chunks.append(b"=%d\r\n%s:%s\r\n" % (len(value) + 4, value.format.encode(), value))
        else:
            chunks.append(b"$%d\r\n%s\r\n" % (len(value), value))
    elif isinstance(value, (bytes, bytearray, memoryview, str)):
        data = value.encode() if isinstance(value, str) else bytes(value)
        chunks.append(b"$%d\r\n%s\r\n" % (len(data), data))
    elif value is None or value is NULL_ARRAY:
        chunks.append(b"_\r\n" if resp3 else b"$-1\r\n" if value is None else b"*-1\r\n")
    elif isinstance(value, bool):
        chunks.append((b"#t\r\n" if value else b"#f\r\n") if resp3 else b":%d\r\n" % value)
    elif isinstance(value, BigNumber):
        text = b"%d" % value
        chunks.append(b"(%s\r\n" % text if resp3 else b"$%d\r\n%s\r\n" % (len(text), text))
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise LocalProtocolError(f"encode failed: {value} is outside the 64-bit range of "
                                     "RESP integers (send a BigNumber)")
        chunks.append(b":%d\r\n" % value)
    elif isinstance(value, float):
        text = _format_double(value)
        chunks.append(b",%s\r\n" % text if resp3 else b"$%d\r\n%s\r\n" % (len(text), text))
    elif isinstance(value, dict):
        chunks.append(b"%%%d\r\n" % len(value) if resp3 else b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            _encode_into(chunks, key, resp3, depth + 1)
            _encode_into(chunks, item, resp3, depth + 1)
    elif isinstance(value, (Set, Push, set, frozenset, list, tuple)):
        kind = b"~" if isinstance(value, (Set, set, frozenset)) else b">" if isinstance(
            value, Push) else b"*"
        chunks.append(b"%s%d\r\n" % (kind if resp3 else b"*", len(value)))
        _encode_all(chunks, value, resp3, depth + 1)
    else:
        raise LocalProtocolError(f"encode failed: a {type(value).__name__} has no RESP form")


def _encode_all(chunks: list[bytes], values: Iterable[Any], resp3: bool, depth: int) -> None:
    for item in values:
        _encode_into(chunks, item, resp3, depth)


def _format_double(value: float) -> bytes:
    if math.isnan(value):
        return b"nan"
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    return repr(value).encode()  # The shortest text that reads back as the same float.
