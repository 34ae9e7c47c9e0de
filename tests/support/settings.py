"""Log settings the tests open with, named once.

SMALL_SETTINGS keeps a log's files small (the default 1 GiB segment is preallocated on disk,
once per test). CRASH_SETTINGS makes the memory ring tiny (four 4 KiB pages) and segments short
(16 pages), so appends wait for page flushes and a kill lands inside a flush or a segment
switch often.
"""

from __future__ import annotations

from typing import Any

SMALL_SETTINGS: dict[str, Any] = {
    "page_size_bytes": 64 << 10,
    "memory_size_bytes": 256 << 10,
    "segment_size_bytes": 1 << 20,
}
CRASH_SETTINGS: dict[str, Any] = {
    "page_size_bytes": 4096,
    "memory_size_bytes": 4 * 4096,
    "segment_size_bytes": 16 * 4096,
}
