# Types of the C extension built from fasterlog_server/csrc (resp_speedups.c, xadd_lane.c).
from typing import Any

def split(buffer: bytes | bytearray | memoryview, start: int, bulk_size_max_bytes: int,
          arguments_count_max: int, commands_max: int) -> tuple[list[list[bytes]], int]: ...
def xadd_lone(data: bytes, bulk_size_max_bytes: int, arguments_count_max: int,
              streams: dict[bytes, Any], pending: list[bytes],
              entry_size_max: int) -> tuple[bytes, bytes] | None: ...
