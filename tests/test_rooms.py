"""The rooms of the lower layers (fasterlog, consumers, kvlayer): no import cycles, no reaching
into another module's private members, no module over 1,000 lines.

Method: parse every module with ast (no import is run), collect each module's imports of our
packages wherever they stand (top level, inside functions, under `if TYPE_CHECKING:`), and look
for a cycle in that graph; collect every attribute access `name._private` whose object is not
`self` or `cls`, and every `from module import _private` of another of our modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fasterlog", "consumers", "kvlayer")
module_lines_max = 1000
# Accesses of a private member through another name that are right where they stand.
ALLOWED_PRIVATE_ACCESS = {
    # FasterLog.open, a classmethod, reports on the instance it has just made.
    ("fasterlog.log", "log._report_backend"),
}


def _modules() -> dict[str, Path]:
    """Our modules by dotted name, without the command-line modules: the command line is a room
    of its own above every layer (issue 13's dispatcher), checked where it lives."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            if path.stem not in ("cli", "__main__"):
                found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ours that `name` imports, anywhere in its body."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[:len(parent) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in targets if target in known and target != name}


def test_the_lower_layers_have_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    # A package's __init__ re-exports its modules; a module importing its own package's name
    # (`from . import errors`) means the module, which the graph already has.
    for name in graph:
        graph[name] = {target for target in graph[name] if target not in PACKAGES
                       or not name.startswith(target + ".")}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = visiting[visiting.index(name):] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_no_module_reaches_into_another_objects_private_members() -> None:
    problems = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if (name, ast.unparse(node)) not in ALLOWED_PRIVATE_ACCESS:
                    problems.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                problems.extend(f"{name}:{node.lineno}: from {node.module} import {alias.name}"
                                for alias in node.names
                                if alias.name.startswith("_") and node.module is not None)
    assert problems == []


def test_no_module_is_over_a_thousand_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: size for name, size in sizes.items() if size > module_lines_max} == {}


def test_tails_never_import_the_log_module() -> None:
    modules = _modules()
    for name in ("fasterlog.tail", "fasterlog.handle"):
        assert "fasterlog.log" not in _imports(name, modules[name], set(modules)), name
