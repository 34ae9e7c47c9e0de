"""Streamed replies: an array (or map) reply encoded as it is sent, so the server holds a piece
of it at a time (issue 14 defect 6: an MGET of 250 x 4 MB values took 3 GB, the reply built
whole).

A command whose reply grows with the data (MGET, XRANGE, XREVRANGE, XREAD, XREADGROUP, XCLAIM,
XAUTOCLAIM, XPENDING, XINFO STREAM FULL) answers a `Streamed` once what it read passes
settings.STREAMED_REPLY_SIZE_MIN_BYTES: the elements read so far (`head`) and an iterator of
the rest, read when their turn to be sent comes. The connection writes the header, then
`take`s pieces while the socket accepts them (connection.py, state STREAMING). Inside another
reply (EXEC's) it is made whole first (`whole`), as a list would be.

Nesting: an element may itself be a Streamed (XREAD's `[[stream, [entries...]], ...]`, the
entries of XAUTOCLAIM's `[next, [entries...], [deleted...]]`); `take` sends its header where
it stands and then its elements, before the next element of the level above. A Streamed may
stand only directly as an element of a Streamed (or be the reply), never inside a plain list
or map, which `resp.encode` would refuse. A map (`Streamed.map`) has its pairs as elements,
key then value; its header is RESP3's `%N`, or RESP2's flat array `*2N`, chosen when it is made
(a command's reply is sent in the protocol it was built for: nothing runs in between).

Invariant: the elements of every level number exactly what its header says (the header is sent
before the rest is read), so a Streamed whose iterator runs short is our bug
(LocalProtocolError), and the connection is dropped rather than answered out of step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from . import resp
from .errors import LocalProtocolError
from .settings import STREAM_ELEMENT_COST_BYTES

__all__ = ["ReplyTooLarge", "Streamed", "size_estimate"]

_MISSING = object()  # next()'s default: an iterator that ran out


class ReplyTooLarge(Exception):
    """A reply built whole passed the budget it was given (`Streamed.whole`)."""


def size_estimate(reply: Any, depth: int = 0) -> int:
    """About the bytes a reply takes encoded (at least its payload): bytes by length, arrays by
    their elements, anything else a few bytes; deep nesting is counted flat past 8 levels."""
    if isinstance(reply, (bytes, bytearray, memoryview)):
        return len(reply) + 16
    if isinstance(reply, (list, tuple)):
        if depth >= 8:
            return 16 * len(reply)
        return 16 + sum(size_estimate(element, depth + 1) for element in reply)
    if isinstance(reply, dict):
        return 16 + sum(size_estimate(key, depth + 1) + size_estimate(value, depth + 1)
                        for key, value in reply.items())
    return 16


class Streamed:
    __slots__ = ("_elements", "_header", "_is_map", "_open", "count", "left_count")

    def __init__(self, count: int, head: list[Any], rest: Iterator[Any], *,
                 map_header: bytes | None = None) -> None:
        """An array of `count` elements: `head`, then those `rest` yields (`map_header`:
        a map's, see `map`)."""
        assert len(head) <= count, "more elements read than the reply holds"
        self.count = count  # elements, keys and values counted apart in a map
        self._header = b"*%d\r\n" % count if map_header is None else map_header
        self._is_map = map_header is not None
        self._elements = itertools.chain(head, rest)
        self.left_count = count  # elements not yet taken, at this level
        # The nested Streamed elements being sent, innermost last (only the outermost uses it).
        self._open: list[Streamed] = []

    @classmethod
    def map(cls, pairs_count: int, head: list[Any], rest: Iterator[Any],
            protocol: int) -> Streamed:
        """A map of `pairs_count` pairs, its elements key, value, key, value..."""
        header = b"%%%d\r\n" % pairs_count if protocol == 3 else b"*%d\r\n" % (2 * pairs_count)
        return cls(2 * pairs_count, head, rest, map_header=header)

    def header(self) -> bytes:
        return self._header

    def next_element(self) -> Any:
        """This level's next element (the caller checked that one is left)."""
        element = next(self._elements, _MISSING)
        if element is _MISSING:
            raise LocalProtocolError(f"Streamed failed: {self.left_count} of {self.count} "
                                     "elements missing")
        self.left_count -= 1
        return element

    def take(self, size_min_bytes: int, protocol: int) -> bytes | None:
        """The next elements, encoded: at least `size_min_bytes` of them unless they run out
        (one element may be more), each element counted STREAM_ELEMENT_COST_BYTES more than
        its bytes (the work of reading and encoding one: a take of small elements, XPENDING's
        rows, is a few hundred of them, not thousands); None once every element, at every
        level, was taken."""
        chunks: list[bytes] = []
        size = 0
        levels = self._open
        while size < size_min_bytes:
            level = levels[-1] if levels else self
            if not level.left_count:
                if level is self:
                    break
                levels.pop()
                continue
            element = level.next_element()
            if element.__class__ is Streamed:
                chunk = element.header()
                levels.append(element)
            else:
                chunk = resp.encode(element, protocol)
            chunks.append(chunk)
            size += len(chunk) + STREAM_ELEMENT_COST_BYTES
        return b"".join(chunks) if chunks else None

    def whole(self, budget: list[int] | None = None) -> Any:
        """Every element, as a list (a Map for a map; a streamed reply inside another reply).
        Only before anything was taken. With `budget` (one int, the bytes left, shared with
        nested replies and the caller), each element's size (`size_estimate`) is taken from it
        as it is read, and ReplyTooLarge is raised, before the next element is read, once it
        is spent: EXEC's reply is bounded while it is built."""
        assert not self._open and self.left_count == self.count, "whole after take"
        elements = []
        for element in self._elements:
            if element.__class__ is Streamed:
                element = element.whole(budget)
            elif budget is not None:
                budget[0] -= size_estimate(element)
            if budget is not None and budget[0] < 0:
                raise ReplyTooLarge
            elements.append(element)
        if len(elements) != self.left_count:
            raise LocalProtocolError(f"Streamed failed: {len(elements)} elements, "
                                     f"{self.left_count} expected")
        self.left_count = 0
        if self._is_map:
            return resp.Map(zip(elements[::2], elements[1::2], strict=True))
        return elements

    def __repr__(self) -> str:
        return f"Streamed(count={self.count})"
