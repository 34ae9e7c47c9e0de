"""The type stubs of the compiled modules match their C headers (scripts/gen_stub.py).

Method: render each stub in this process with scripts/gen_stub.py, from the headers as they are
now, and compare it with the checked-in .pyi, character for character.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from tests.support.processes import ROOT


def _gen_stub() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_stub", ROOT / "scripts" / "gen_stub.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stub, render", [("fasterlog/_fasterlog_c.pyi", "render"),
                                          ("kvlayer/_kvlayer_c.pyi", "render_kv")])
def test_stub_is_generated_from_the_current_headers(stub: str, render: str) -> None:
    assert (ROOT / stub).read_text() == getattr(_gen_stub(), render)(), \
        "run: python scripts/gen_stub.py"
