"""Writes fasterlog/_fasterlog_c.pyi from the C headers, so the stub never drifts from the API.

Run after changing fasterlog/csrc/fasterlog.h or fl_format.h; tests/fasterlog/test_stub.py fails
when the stub is stale.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "fasterlog" / "csrc"
STUB = ROOT / "fasterlog" / "_fasterlog_c.pyi"


def render() -> str:
    header = (CSRC / "fasterlog.h").read_text() + (CSRC / "fl_format.h").read_text()
    constants = set(re.findall(r"\b(FL_[A-Z0-9_]+)\s*=", header))
    constants |= set(re.findall(r"#define (FL_[A-Z0-9_]+) ", header))
    functions = re.findall(r"^([a-z_0-9 ]+?\**)\s*\**(fl_[a-z0-9_]+)\(", header, re.M)
    lines = [
        '"""Type stub for the compiled cffi module (made by scripts/gen_stub.py)."""',
        "",
        "from typing import Any",
        "",
        "ffi: Any",
        "",
        "",
        "class _Lib:",
    ]
    lines += [f"    {name}: int" for name in sorted(constants)]
    for result, name in functions:
        returns = "None" if result.strip() == "void" else "Any" if "*" in result else "int"
        lines.append(f"    def {name}(self, *args: Any) -> {returns}: ...")
    lines += ["", "", "lib: _Lib", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    STUB.write_text(render())
