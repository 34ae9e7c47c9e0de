"""Redis's glob patterns (stringmatchlen in redis/src/util.c), for SCAN's MATCH and CONFIG GET.

Python's fnmatch is not the same language: it has no backslash escape (`\\*` is a literal star
in Redis), negates a class with `!` where Redis uses `^`, and treats `[` with no `]` as a
literal, where Redis's class runs to the end of the pattern. Redis's rules, kept here:
- `*` any run of bytes, `?` one byte, `\\x` the byte x (a trailing `\\` is itself);
- `[...]` one byte of the class, `[^...]` one byte not in it; inside, `\\x` is x and `a-z` a
  range (its ends may come in either order, and compare as C's signed chars, as Redis's do);
  `]` right after `[` or `[^` closes an empty class; a class with no `]` ends with the pattern;
- the empty string matches only the empty pattern (SCAN treats MATCH `*` as no pattern).

Each token but `*` matches exactly one byte, so the match is the classic two-pointer walk that
backtracks to the last star only: O(len(pattern) x len(string)), never exponential (Redis
added the same bound to its recursion in 7.0.9). Sans-IO, no state.
"""

from __future__ import annotations

from typing import Union

__all__ = ["compile_pattern", "matches"]

_STAR = "*"
_ANY = "?"
# A class: (negated, members), each member a (low, high) range of signed bytes.
_Class = tuple[bool, tuple[tuple[int, int], ...]]
_Token = Union[str, int, _Class]  # noqa: UP007 - a runtime alias (ruff's target is 3.11)


def _signed(byte: int) -> int:
    return byte - 256 if byte >= 128 else byte


def _class(pattern: bytes, position: int) -> tuple[_Class, int]:
    """The class starting after `[` at `position`, and the position after it; the walk is
    stringmatchlen's, member by member."""
    end = len(pattern)
    negated = position < end and pattern[position] == ord("^")
    if negated:
        position += 1
    members: list[tuple[int, int]] = []
    while position < end:
        byte = pattern[position]
        if byte == ord("\\") and end - position >= 2:
            position += 1
            members.append((_signed(pattern[position]),) * 2)
        elif byte == ord("]"):
            return (negated, tuple(members)), position + 1
        elif end - position >= 3 and pattern[position + 1] == ord("-"):
            low, high = sorted((_signed(byte), _signed(pattern[position + 2])))
            members.append((low, high))
            position += 2
        else:
            members.append((_signed(byte),) * 2)
        position += 1
    return (negated, tuple(members)), end  # no `]`: the class runs to the end


def compile_pattern(pattern: bytes) -> list[_Token]:
    """The pattern as tokens: `*`, `?`, a literal byte or a class. Runs of `*` are one."""
    tokens: list[_Token] = []
    position, end = 0, len(pattern)
    while position < end:
        byte = pattern[position]
        if byte == ord("*"):
            if not tokens or tokens[-1] != _STAR:
                tokens.append(_STAR)
            position += 1
        elif byte == ord("?"):
            tokens.append(_ANY)
            position += 1
        elif byte == ord("["):
            token, position = _class(pattern, position + 1)
            tokens.append(token)
        elif byte == ord("\\") and end - position >= 2:
            tokens.append(pattern[position + 1])
            position += 2
        else:
            tokens.append(byte)
            position += 1
    return tokens


def _one(token: _Token, byte: int) -> bool:
    if token == _ANY:
        return True
    if isinstance(token, int):
        return token == byte
    assert isinstance(token, tuple), "a star never reaches here"
    negated, members = token
    value = _signed(byte)
    found = any(low <= value <= high for low, high in members)
    return found != negated


def matches(tokens: list[_Token], string: bytes) -> bool:
    """Whether `string` matches the compiled pattern, as Redis's stringmatchlen answers."""
    if not string:
        return not tokens
    p = i = 0
    star, star_i = -1, 0
    tokens_count = len(tokens)
    while i < len(string):
        if p < tokens_count and tokens[p] == _STAR:
            star, star_i = p, i
            p += 1
        elif p < tokens_count and _one(tokens[p], string[i]):
            p += 1
            i += 1
        elif star >= 0:  # the last star takes one more byte; earlier stars never need to
            p, star_i = star + 1, star_i + 1
            i = star_i
        else:
            return False
    while p < tokens_count and tokens[p] == _STAR:
        p += 1
    return p == tokens_count
