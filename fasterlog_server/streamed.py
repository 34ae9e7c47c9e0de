"""Streamed replies: an array reply encoded as it is sent, so the server holds a piece of it at
a time (issue 14 defect 6: an MGET of 250 x 4 MB values took 3 GB, the reply built whole).

A command whose reply grows with the data (MGET, XRANGE, XREVRANGE) answers a `Streamed` once
what it read passes settings.STREAMED_REPLY_SIZE_MIN_BYTES: the elements read so far (`head`)
and an iterator of the rest, read when their turn to be sent comes. The connection writes the
header, then `take`s pieces while the socket accepts them (connection.py, state STREAMING).
Inside another reply (EXEC's) it is made whole first (`whole`), as a list would be.

Invariant: the elements number exactly `count` (the header is sent before the rest is read).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from . import resp
from .errors import LocalProtocolError

__all__ = ["Streamed"]


class Streamed:
    __slots__ = ("_elements", "_left_count", "count")

    def __init__(self, count: int, head: list[Any], rest: Iterator[Any]) -> None:
        assert len(head) <= count, "more elements read than the reply holds"
        self.count = count
        self._elements = itertools.chain(head, rest)
        self._left_count = count

    def header(self) -> bytes:
        return b"*%d\r\n" % self.count

    def take(self, size_min_bytes: int, protocol: int) -> bytes | None:
        """The next elements, encoded: at least `size_min_bytes` of them unless they run out
        (one element may be more); None once every element was taken."""
        if not self._left_count:
            return None
        chunks: list[bytes] = []
        size = 0
        for element in self._elements:
            self._left_count -= 1
            chunk = resp.encode(element, protocol)
            chunks.append(chunk)
            size += len(chunk)
            if size >= size_min_bytes or not self._left_count:
                break
        if self._left_count and size < size_min_bytes:
            raise LocalProtocolError(f"Streamed failed: {self._left_count} of {self.count} "
                                     "elements missing")
        return b"".join(chunks)

    def whole(self) -> list[Any]:
        """Every element left, as a list (a streamed reply inside another reply)."""
        elements = list(self._elements)
        if len(elements) != self._left_count:
            raise LocalProtocolError(f"Streamed failed: {len(elements)} elements, "
                                     f"{self._left_count} expected")
        self._left_count = 0
        return elements

    def __repr__(self) -> str:
        return f"Streamed(count={self.count})"
