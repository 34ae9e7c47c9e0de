"""The fasterlog network service: a RESP (Redis protocol) front end to the log.

Layering: this package sits above `fasterlog`, `consumers` and `kvlayer`. `fasterlog_server.resp` is the
sans-IO codec (bytes in, commands out; values in, bytes out); only the server module touches
sockets or asyncio streams.
"""

from __future__ import annotations

from fasterlog.build_lookup import find_build

# From a source checkout after a plain `pip install .`: the installed copy's C extension.
__path__ = find_build(__path__, __name__, "_resp_speedups")

from .server import ServerSettings, run

__all__ = ["ServerSettings", "run"]
