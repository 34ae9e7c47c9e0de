"""cffi build script for the C core (API mode).

The cdef is fl_format.h and fasterlog.h read as written, so no declaration or number is
written twice. liburing is linked statically when its archive is present, so the built
module needs no shared liburing at run time.
"""

from __future__ import annotations

import os
import pathlib

import cffi

CSRC = pathlib.Path(__file__).resolve().parent / "csrc"
SOURCES = ["fl_log.c", "fl_recovery.c", "fl_device.c", "fl_meta.c", "fl_crc32c.c"]
LIBURING_ARCHIVES = [
    "/usr/lib/x86_64-linux-gnu/liburing.a",
    "/usr/lib/aarch64-linux-gnu/liburing.a",
    "/usr/lib/liburing.a",
    "/usr/local/lib/liburing.a",
]


def _liburing_link() -> dict[str, list[str]]:
    for archive in LIBURING_ARCHIVES:
        if os.path.exists(archive):
            return {"extra_objects": [archive]}
    return {"libraries": ["uring"]}


ffibuilder = cffi.FFI()
ffibuilder.cdef((CSRC / "fl_format.h").read_text() + (CSRC / "fasterlog.h").read_text())
ffibuilder.set_source(
    "fasterlog._fasterlog_c",
    '#include "fl_internal.h"',
    sources=[str(pathlib.Path("fasterlog") / "csrc" / name) for name in SOURCES],
    include_dirs=[str(CSRC)],
    extra_compile_args=["-std=c11", "-O2", "-UNDEBUG", "-Wall", "-Wextra", "-Werror", "-pthread"],
    extra_link_args=["-pthread"],
    **_liburing_link(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
