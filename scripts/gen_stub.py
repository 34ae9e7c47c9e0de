"""Writes the type stubs of the compiled cffi modules from their C headers, so a stub never
drifts from its API: fasterlog/_fasterlog_c.pyi (the core) and kvlayer/_kvlayer_c.pyi (the
index and the KV fast path; its lib also answers for the core's names, as cffi's include makes
it do, so its _Lib extends the core's).

Run after changing a header (fasterlog/csrc/fasterlog.h, fl_format.h, kvlayer/csrc/fl_kv.h,
fl_kv_format.h); tests/fasterlog/test_stub.py fails when a stub is stale.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "fasterlog" / "csrc"
STUB = ROOT / "fasterlog" / "_fasterlog_c.pyi"
KV_CSRC = ROOT / "kvlayer" / "csrc"
KV_STUB = ROOT / "kvlayer" / "_kvlayer_c.pyi"


def _members(header: str) -> list[str]:
    constants = set(re.findall(r"\b(FL_[A-Z0-9_]+)\s*=", header))
    constants |= set(re.findall(r"#define (FL_[A-Z0-9_]+) ", header))
    functions = re.findall(r"^([a-z_0-9 ]+?\s*\**)\s*(fl_[a-z0-9_]+)\(", header, re.M)
    lines = [f"    {name}: int" for name in sorted(constants)]
    for result, name in functions:
        returns = "None" if result.strip() == "void" else "Any" if "*" in result else "int"
        lines.append(f"    def {name}(self, *args: Any) -> {returns}: ...")
    return lines


def render() -> str:
    header = (CSRC / "fasterlog.h").read_text() + (CSRC / "fl_format.h").read_text()
    lines = [
        '"""Type stub for the compiled cffi module (made by scripts/gen_stub.py)."""',
        "",
        "from typing import Any",
        "",
        "ffi: Any",
        "",
        "",
        "class _Lib:",
        *_members(header),
        "",
        "",
        "lib: _Lib",
        "",
    ]
    return "\n".join(lines)


def render_kv() -> str:
    header = (KV_CSRC / "fl_kv.h").read_text() + (KV_CSRC / "fl_kv_format.h").read_text()
    lines = [
        '"""Type stub for the compiled cffi module (made by scripts/gen_stub.py)."""',
        "",
        "from typing import Any",
        "",
        "from fasterlog._fasterlog_c import _Lib as _CoreLib",
        "",
        "ffi: Any",
        "",
        "",
        "class _Lib(_CoreLib):",
        *_members(header),
        "",
        "",
        "lib: _Lib",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    STUB.write_text(render())
    KV_STUB.write_text(render_kv())
