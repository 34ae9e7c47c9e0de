"""Exists because setuptools takes cffi_modules and ext_modules from setup() (pyproject.toml has
the rest): the log core and kvlayer's C code through cffi (two modules: kvlayer's reaches the
core through a table of calls, see kvlayer/_build.py), the service's RESP fast path as a small
C extension."""

from setuptools import Extension, setup

setup(
    cffi_modules=["fasterlog/_build.py:ffibuilder", "kvlayer/_build.py:ffibuilder"],
    ext_modules=[
        Extension(
            "fasterlog_server._resp_speedups",
            sources=["fasterlog_server/csrc/resp_speedups.c", "fasterlog_server/csrc/resp_split.c",
                     "fasterlog_server/csrc/xadd_lane.c"],
            include_dirs=["fasterlog_server/csrc"],
            extra_compile_args=["-std=c11", "-O2", "-UNDEBUG", "-Wall", "-Wextra", "-Werror"],
        ),
    ],
)
