"""cffi build script for kvlayer's C code (API mode): the hash index and the KV fast path.

The module kvlayer._kvlayer_c is an extension of its own, beside fasterlog._fasterlog_c. Python
loads extension modules with RTLD_LOCAL, so this one cannot link against the core's symbols:
its C code reaches the log only through the table the core hands out (fl_core_api_get, in
fasterlog.h), which kvlayer/_fast.py passes to fl_kv_create. The core's cdef is included
(ffibuilder.include), so both modules share one set of C types (an `fl_log *` or an
`fl_error_info *` made by either is good for the other), and this module's `lib` also answers
for the core's functions and constants. The cdef is fl_kv_format.h and fl_kv.h read as written.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import cffi  # type: ignore[import-untyped]  # cffi ships no type hints

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "kvlayer" / "csrc"
CORE_CSRC = ROOT / "fasterlog" / "csrc"
SOURCES = ["fl_index.c", "fl_kv_read.c", "fl_kv_write.c", "fl_kv_fold.c"]

# As in fasterlog/_build.py: the calls keep the GIL (a get is about 1 us, and releasing the
# GIL around each cost a noticeable share of it). A call that reads from disk releases it
# inside the core, through the core's own blocking hooks; this module holds no lock of its own
# across a core call, and the index's writer lock is taken with trylock (fl_index.c rule 2).
# The one exception here: a checkpoint's fold sorts and merges memory of its own for hundreds of
# milliseconds at 10^5-10^6 keys, which must not stop other threads (the server runs it in a
# worker thread beside its event loop), so it releases the GIL through these hooks meanwhile.
PREAMBLE = """
#include "fl_kv_internal.h"

void *fl_kv_blocking_begin(void) { return PyEval_SaveThread(); }
void fl_kv_blocking_end(void *token) { PyEval_RestoreThread((PyThreadState *)token); }

#undef Py_BEGIN_ALLOW_THREADS
#undef Py_END_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#define Py_END_ALLOW_THREADS }
"""


def _core_builder() -> Any:
    """The core's FFI builder, loaded from its build script by path: at build time the core's
    module may not exist yet, so the package cannot be imported."""
    spec = importlib.util.spec_from_file_location("_fasterlog_build",
                                                  ROOT / "fasterlog" / "_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ffibuilder


ffibuilder = cffi.FFI()
ffibuilder.include(_core_builder())
ffibuilder.cdef((CSRC / "fl_kv_format.h").read_text() + (CSRC / "fl_kv.h").read_text())
ffibuilder.set_source(
    "kvlayer._kvlayer_c",
    PREAMBLE,
    sources=[str(pathlib.Path("kvlayer") / "csrc" / name) for name in SOURCES],
    include_dirs=[str(CSRC), str(CORE_CSRC)],
    extra_compile_args=["-std=c11", "-O2", "-UNDEBUG", "-Wall", "-Wextra", "-Werror", "-pthread"],
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
