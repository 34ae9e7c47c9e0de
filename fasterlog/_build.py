"""cffi build script for the C core (API mode).

The cdef is fl_format.h and fasterlog.h read as written, so no declaration or number is
written twice. liburing is linked statically when its archive is present, so the built
module needs no shared liburing at run time.
"""

from __future__ import annotations

import os
import pathlib

import cffi  # type: ignore[import-untyped]  # cffi ships no type hints

CSRC = pathlib.Path(__file__).resolve().parent / "csrc"
SOURCES = [
    "fl_util.c", "fl_crc32c.c", "fl_trace.c", "fl_env.c", "fl_device.c", "fl_frame.c",
    "fl_meta.c", "fl_segments.c", "fl_follow.c", "fl_recovery.c", "fl_zero.c", "fl_drive.c",
    "fl_append.c", "fl_read.c", "fl_commit.c", "fl_open.c", "fl_api.c",
]
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


# The core is called with the GIL held: redefining cffi's wrapper macros stops it from releasing
# the GIL around every call, which makes a 100-byte append about 40 ns (a quarter of the call)
# cheaper here. Calls that may wait release the GIL themselves through fl_blocking_begin/end,
# which the core calls only at its public entry points and never while holding a lock of its
# own (so retaking the GIL can never deadlock against a core lock). This leans on cffi
# emitting Py_BEGIN/END_ALLOW_THREADS in its wrappers: the version is pinned in pyproject.toml
# and tests/fasterlog/test_gil.py checks both halves (appends keep the GIL, waits release it).
PREAMBLE = """
#include "fl_internal.h"

void *fl_blocking_begin(void) { return PyEval_SaveThread(); }
void fl_blocking_end(void *token) { PyEval_RestoreThread((PyThreadState *)token); }

#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""

COMPILE_ARGS = ["-std=c11", "-O2", "-UNDEBUG", "-Wall", "-Wextra", "-Werror", "-pthread"]


def make_builder(extra_compile_args: tuple[str, ...] = (),
                 extra_link_args: tuple[str, ...] = (), absolute_sources: bool = False) -> cffi.FFI:
    """The core's builder; the extra flags come after the release ones (the sanitizer builds
    of tests/support/sanitizers.py add -fsanitize=... and a lower -O). Sources are named
    relative to the repository root, as setuptools wants them, unless `absolute_sources`
    (FFI.compile runs the compiler in its temporary directory)."""
    root = CSRC.parent.parent if absolute_sources else pathlib.Path()
    builder = cffi.FFI()
    builder.cdef((CSRC / "fl_format.h").read_text() + (CSRC / "fasterlog.h").read_text())
    builder.set_source(
        "fasterlog._fasterlog_c",
        PREAMBLE,
        sources=[str(root / "fasterlog" / "csrc" / name) for name in SOURCES],
        include_dirs=[str(CSRC)],
        extra_compile_args=COMPILE_ARGS + list(extra_compile_args),
        extra_link_args=["-pthread", *extra_link_args],
        **_liburing_link(),
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
