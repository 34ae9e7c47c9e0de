"""The rooms and their layers (ARCHITECTURE.md), read from the source and checked at run time.

Rules:
1. The layers depend one way: fasterlog <- consumers <- kvlayer <- fasterlog_server <-
   fasterlog_cli. No module imports a module of a higher layer: at the top, inside a function,
   under `if TYPE_CHECKING:`, or through importlib.import_module / __import__ with a literal.
2. No import cycle between the project's Python modules (every import counts, as in rule 1).
3. No module reaches into another object's private members (`other._name`), and no package
   imports another package's private modules or names (`from fasterlog._format import x`),
   except the few listed with their reason.
4. No module of the project is longer than 1,000 lines, and no function much longer than the
   house's guide of about 70 (FUNCTION_LINES_MAX).
5. At run time, importing every module of a layer loads no module of a layer above it.

Method: parse every .py file of the packages with ast (no code is run), resolve relative
imports, and record for each module the project modules it names: `from package import name`
counts as an import of `package.name` when that is a module, else of `package`. Compiled
extensions (a .pyi stub with no .py) are leaves. Rule 5 imports each layer's modules in a fresh
interpreter and lists the packages it loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ROOT

LAYERS = ["fasterlog", "consumers", "kvlayer", "fasterlog_server", "fasterlog_cli"]
MODULE_LINES_MAX = 1000
# The house's guide is "about 70 lines"; a function may run a little over it, not far.
FUNCTION_LINES_MAX = 80
# Accesses of a private member through another name that are right where they stand.
ALLOWED_PRIVATE_ACCESS = {
    # FasterLog.open, a classmethod, reports on the instance it has just made.
    ("fasterlog.log", "log._report_backend"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _extensions() -> set[str]:
    """The compiled extensions, known by their type stubs (a .pyi with no .py beside it)."""
    return {_module_name(path) for package in LAYERS for path in (ROOT / package).rglob("*.pyi")
            if not path.with_suffix(".py").exists()}


MODULES = _modules()
EXTENSIONS = _extensions()


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imported(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported project module, line) for every import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                known = submodule in MODULES or submodule in EXTENSIONS
                yield (submodule if known else target), node.lineno
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name)
                       and node.func.id in ("import_module", "__import__")))):
            yield node.args[0].value, node.lineno


def _project_imports() -> dict[str, set[tuple[str, int]]]:
    graph: dict[str, set[tuple[str, int]]] = {}
    for module, path in MODULES.items():
        edges = set()
        for name, line in _imported(module, path):
            if name in EXTENSIONS:
                continue  # a compiled leaf: it imports nothing of ours
            while name and name not in MODULES:
                name = name.rpartition(".")[0]  # `import a.b.c` where only a.b is ours
            if name and name != module:
                edges.add((name, line))
        graph[module] = edges
    return graph


GRAPH = _project_imports()


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_the_packages_are_found() -> None:
    assert {module.split(".")[0] for module in MODULES} >= set(LAYERS[:4])


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_higher_layer(layer: str) -> None:
    upward = sorted(f"{module}:{line} imports {target}"
                    for module, edges in GRAPH.items() if module.split(".")[0] == layer
                    for target, line in edges if _layer(target) > _layer(module))
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    edges = {module: {target for target, _ in targets} for module, targets in GRAPH.items()}
    # Tarjan's strongly connected components: a component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_reaches_into_another_objects_private_members() -> None:
    problems = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value
                if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                    continue
                if (module, ast.unparse(node)) not in ALLOWED_PRIVATE_ACCESS:
                    problems.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom):
                # A package's own private modules and names are its own business; another
                # package's are not (`from fasterlog._format import ...` in consumers).
                target = _resolve(module, path.name == "__init__.py", node.level, node.module)
                if (target.split(".")[0] not in LAYERS
                        or target.split(".")[0] == module.split(".")[0]):
                    continue
                private_module = any(part.startswith("_") for part in target.split("."))
                problems.extend(f"{module}:{node.lineno}: from {target} import {alias.name}"
                                for alias in node.names if private_module
                                or (alias.name.startswith("_") and not alias.name.startswith("__")))
            elif isinstance(node, ast.Import):
                problems.extend(f"{module}:{node.lineno}: import {alias.name}"
                                for alias in node.names
                                if alias.name.split(".")[0] in LAYERS
                                and alias.name.split(".")[0] != module.split(".")[0]
                                and any(part.startswith("_") for part in alias.name.split(".")))
    assert not problems, "\n".join(problems)


def test_no_module_is_over_the_line_limit() -> None:
    long = sorted(f"{path.relative_to(ROOT)}: {count} lines" for path in MODULES.values()
                  if (count := len(path.read_text().splitlines())) > MODULE_LINES_MAX)
    assert not long, "\n".join(long)


def test_no_function_is_far_longer_than_the_guide() -> None:
    long = sorted(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines"
                  for path in MODULES.values() for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and (length := (node.end_lineno or node.lineno) - node.lineno + 1)
                  > FUNCTION_LINES_MAX)
    assert not long, "\n".join(long)


@pytest.mark.parametrize("layer", LAYERS)
def test_importing_a_layer_loads_no_layer_above_it(layer: str) -> None:
    modules = sorted(module for module in MODULES if module.split(".")[0] == layer
                     and not module.endswith(("__main__", "._build")))
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {above!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{layer} loads {out.stdout.strip()}"


def test_tails_never_import_the_log_module() -> None:
    # The tails work through the shared handle (fasterlog/handle.py): the log makes them.
    for module in ("fasterlog.tail", "fasterlog.handle"):
        assert "fasterlog.log" not in {target for target, _ in GRAPH[module]}, module
