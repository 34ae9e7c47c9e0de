"""Layering: fasterlog <- consumers <- kvlayer <- fasterlog_server <- fasterlog_cli, one way only.

Method: import each layer in a fresh interpreter and list which of our packages got loaded;
a layer may load the ones below it and never one above.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LAYERS = ["fasterlog", "consumers", "kvlayer", "fasterlog_server", "fasterlog_cli"]


@pytest.mark.parametrize("position", range(len(LAYERS)))
def test_a_layer_loads_no_layer_above_it(position: int) -> None:
    layer = LAYERS[position]
    above = LAYERS[position + 1:]
    modules = {"fasterlog": "fasterlog, fasterlog.__main__, fasterlog.cli, fasterlog.cli_support, "
                            "fasterlog.cursors, fasterlog.tail",
               "consumers": "consumers, consumers.consumer, consumers.projection, "
                            "consumers.events",
               "kvlayer": "kvlayer, kvlayer.store, kvlayer.checkpoint, kvlayer.compaction, "
                          "kvlayer.follower, kvlayer.cli",
               "fasterlog_server": "fasterlog_server, fasterlog_server.server, "
                                   "fasterlog_server.resp, fasterlog_server.cli",
               "fasterlog_cli": "fasterlog_cli, fasterlog_cli.dispatch"}[layer]
    code = (f"import sys, {modules}; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(above)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("[]", "set()"), f"{layer} loads {out.stdout.strip()}"
