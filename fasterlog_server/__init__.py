"""fasterlog_server: a Redis-protocol (RESP) server for fasterlog logs: Streams, consumer groups
and string keys, with every write answered after the group commit that makes it durable. It
holds the sans-IO RESP codec (resp.py, with its C fast paths in csrc/), the stores of streams,
groups and strings kept as log records (streams.py, groups.py, keyvalues.py), the server's
settings and limits, its group commit, the command table and families, the connection state
machine and the asyncio server that runs them (server.py). It may import fasterlog, consumers
and kvlayer, never fasterlog_cli or any other layer above it.
"""

from __future__ import annotations

from fasterlog.build_lookup import find_build

# From a source checkout after a plain `pip install .`: the installed copy's C extension.
__path__ = find_build(__path__, __name__, "_resp_speedups")

from .server import Server, run, serve
from .settings import ServerSettings

__all__ = ["Server", "ServerSettings", "run", "serve"]
