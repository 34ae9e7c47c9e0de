"""The type stub of the compiled module matches the C headers (scripts/gen_stub.py).

Method: render the stub in this process with scripts/gen_stub.py, from the headers as they are
now, and compare it with the checked-in fasterlog/_fasterlog_c.pyi, character for character.
"""

from __future__ import annotations

import importlib.util

from tests.support.processes import ROOT


def test_stub_is_generated_from_the_current_headers() -> None:
    spec = importlib.util.spec_from_file_location("gen_stub", ROOT / "scripts" / "gen_stub.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stub = (ROOT / "fasterlog" / "_fasterlog_c.pyi").read_text()
    assert stub == module.render(), "run: python scripts/gen_stub.py"
