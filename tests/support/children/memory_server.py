"""A RESP server in its own process for the memory attacks (tests/reliability/
test_reliability_memory.py): argv is the directory, the page size in bytes, then
`name=value` ServerSettings integers. It prints its port, then serves until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

from fasterlog_server import heap
from fasterlog_server.server import Server, ServerSettings, open_log


async def main() -> None:
    heap.install()  # as `serve` does: the rows measure the server users run
    directory, page_size_bytes = sys.argv[1], int(sys.argv[2])
    options = {name: int(value) for name, value in
               (argument.split("=", 1) for argument in sys.argv[3:])}
    settings = ServerSettings(port=0, **options)  # type: ignore[arg-type]
    log = open_log(directory, settings, page_size_bytes=page_size_bytes,
                   memory_size_bytes=4 * page_size_bytes,
                   segment_size_bytes=16 * page_size_bytes)
    server = Server(log, settings)
    await server.start()
    print(server.port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.close()
    log.close()


if __name__ == "__main__":
    asyncio.run(main())
