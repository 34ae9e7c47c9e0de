"""The C files form a DAG (no file calls into a file that, directly or not, calls back into
it), none is longer than the house's 1,000 lines and no function much longer than its 70; and
kvlayer's C code reaches the log only through the core's public header.

Method: every .c file of the C core (fasterlog/csrc) and of kvlayer (kvlayer/csrc) is read with
its comments, strings and preprocessor lines blanked out; top-level braces give the function and
table definitions and their bodies. A file depends on another when one of its bodies names a
non-static `fl_` function or table defined there. The graph of those dependencies must have no
cycle: low-level helpers live low (fl_util.c, fl_frame.c, fl_segments.c), so a file never
reaches up into the file that drives it. The includes are read as written.
"""

from __future__ import annotations

import pathlib
import re
from typing import NamedTuple

import pytest

from tests.support.processes import ROOT

CORE_CSRC = ROOT / "fasterlog" / "csrc"
KV_CSRC = ROOT / "kvlayer" / "csrc"
C_DIRECTORIES = [CORE_CSRC, KV_CSRC]
FILE_LINES_MAX = 1000
# The house's guide is "about 70 lines"; a function may run a little over it, not far.
FUNCTION_LINES_MAX = 80
_NAME = re.compile(r"\bfl_[a-z0-9_]+\b")
_FUNCTION_HEAD = re.compile(r"(\w+)\s*\(([^;{}]*)\)\s*(__attribute__\s*\(\(.*\)\)\s*)?$", re.S)
_TABLE_HEAD = re.compile(r"(\w+)\s*(\[[^\]]*\])?\s*=\s*$")


class Definition(NamedTuple):
    name: str
    is_static: bool
    first_line: int
    last_line: int
    body: str


def _blank(text: str) -> str:
    """The text with comments, string and character literals and preprocessor lines replaced
    by spaces (newlines kept, so line numbers stay right)."""
    out: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("/*", index):
            end = text.index("*/", index + 2) + 2
        elif text.startswith("//", index):
            end = text.find("\n", index)
            end = len(text) if end < 0 else end
        elif text[index] in "\"'":
            end = index + 1
            while text[end] != text[index]:
                end += 2 if text[end] == "\\" else 1
            end += 1
        else:
            out.append(text[index])
            index += 1
            continue
        out.append("".join("\n" if char == "\n" else " " for char in text[index:end]))
        index = end
    lines = "".join(out).split("\n")
    continued = False
    for number, line in enumerate(lines):
        if continued or line.lstrip().startswith("#"):
            continued = line.rstrip().endswith("\\")
            lines[number] = ""
    return "\n".join(lines)


def definitions(path: pathlib.Path) -> list[Definition]:
    """Top-level functions and initialised tables of one C file."""
    text = _blank(path.read_text())
    found: list[Definition] = []
    depth = 0
    head_start = 0
    body_start = 0
    for index, char in enumerate(text):
        if char == ";" and depth == 0:
            head_start = index + 1
        elif char == "{":
            if depth == 0:
                body_start = index
            depth += 1
        elif char == "}":
            depth -= 1
            if depth > 0:
                continue
            head = text[head_start:body_start]
            match = _TABLE_HEAD.search(head) or _FUNCTION_HEAD.search(head)
            if match is not None:
                first = text.count("\n", 0, head_start + len(head) - len(head.lstrip())) + 1
                found.append(Definition(match.group(1), re.search(r"\bstatic\b", head) is not None,
                                        first, text.count("\n", 0, index) + 1,
                                        text[body_start:index + 1]))
            head_start = index + 1
    return found


def c_files() -> list[pathlib.Path]:
    return sorted(path for directory in C_DIRECTORIES for path in directory.glob("*.c"))


def file_graph() -> dict[str, set[str]]:
    """file -> the files whose non-static fl_ definitions its bodies name."""
    parsed = {path.name: definitions(path) for path in c_files()}
    owner: dict[str, str] = {}
    for file_name, found in parsed.items():
        for definition in found:
            if not definition.is_static and definition.name.startswith("fl_"):
                assert definition.name not in owner, f"{definition.name} defined twice"
                owner[definition.name] = file_name
    graph: dict[str, set[str]] = {file_name: set() for file_name in parsed}
    for file_name, found in parsed.items():
        for definition in found:
            for name in _NAME.findall(definition.body):
                target = owner.get(name)
                if target is not None and target != file_name:
                    graph[file_name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


def test_the_parser_sees_the_core_s_entry_points() -> None:
    names = {definition.name for path in c_files() for definition in definitions(path)}
    assert {"fl_open", "fl_append", "fl_commit", "fl_scan", "fl_frame_check"} <= names


@pytest.mark.parametrize("path", c_files(), ids=lambda path: path.name)
def test_no_c_file_is_longer_than_the_limit(path: pathlib.Path) -> None:
    lines_count = len(path.read_text().splitlines())
    assert lines_count <= FILE_LINES_MAX, f"{path.name}: {lines_count} lines"


@pytest.mark.parametrize("path", c_files(), ids=lambda path: path.name)
def test_no_c_function_is_far_longer_than_the_guide(path: pathlib.Path) -> None:
    too_long = [f"{definition.name} ({definition.last_line - definition.first_line + 1} lines)"
                for definition in definitions(path)
                if definition.last_line - definition.first_line + 1 > FUNCTION_LINES_MAX]
    assert not too_long, f"{path.name}: " + ", ".join(too_long)


def test_kv_code_includes_no_internal_header_of_the_core() -> None:
    # struct fl_log (its page ring, positions and mutex) is declared in fl_internal.h only:
    # kvlayer sees the log through fasterlog.h and the fl_core_api table.
    for path in sorted(KV_CSRC.glob("*.[ch]")):
        includes = re.findall(r'#include\s+"([^"]+)"', path.read_text())
        assert "fl_internal.h" not in includes, f"{path.name} includes the core's fl_internal.h"


def test_the_core_knows_nothing_of_kvlayer() -> None:
    build = (ROOT / "fasterlog" / "_build.py").read_text()
    assert "kvlayer" not in build
    core_names = {definition.name for path in CORE_CSRC.glob("*.c")
                  for definition in definitions(path)}
    assert not {name for name in core_names if name.startswith(("fl_kv", "fl_index"))}


def test_c_files_form_no_call_cycle() -> None:
    cycle = find_cycle(file_graph())
    assert cycle is None, "C files call each other in a cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"a"}}, ["a", "a"]),
])
def test_find_cycle_finds_exactly_the_cycles(graph: dict[str, set[str]],
                                             expected: list[str] | None) -> None:
    assert find_cycle(graph) == expected
