"""Sanitizer builds of the C core, for the race stresses of the reliability suite.

`build(kind, directory)` compiles fasterlog's cffi extension with AddressSanitizer and
UndefinedBehaviorSanitizer (kind "address") or ThreadSanitizer (kind "thread") into
`directory/fasterlog/`, beside a copy of the package's Python modules, so a child started
with `environment(...)` (PYTHONPATH=directory first, LD_PRELOAD of the sanitizer runtime)
imports that build instead of the checkout's. The checkout's own build is never touched.

Rules:
1. CPython is not built with the sanitizer, so its runtime must be loaded first (LD_PRELOAD
   of `gcc -print-file-name=libasan.so` / libtsan.so); `runtime(kind)` is None when gcc has
   none, and the tests skip saying so.
2. CPython keeps memory until exit by design: LeakSanitizer is off (detect_leaks=0). Any other
   report stops the child (halt_on_error=1, and -fno-sanitize-recover for UBSan), so a report
   is a failed child, never a line lost in stderr; the tests also look for the report's
   banner in stderr.
3. AddressSanitizer reserves terabytes of address space: it cannot start under a finite
   RLIMIT_AS (`ulimit -v`). `address_space_blocker()` says why a child cannot run; the child
   raises its soft limit to the hard one when it can (scripts/test.sh sets a soft limit).
4. A child runs its module through `child_command`, which checks that the core it imported
   is the sanitizer build (`python -m` from the checkout would find the checkout's own build
   first and run it, uninstrumented, under the sanitizer runtime).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .processes import ROOT, child_env

FLAGS = {
    "address": ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                "-fno-omit-frame-pointer", "-O1"),
    "thread": ("-fsanitize=thread", "-fno-omit-frame-pointer", "-O1"),
}
RUNTIMES = {"address": "libasan.so", "thread": "libtsan.so"}
# Printed by the runtimes at the start of every report.
REPORT_BANNERS = ("ERROR: AddressSanitizer", "runtime error:", "WARNING: ThreadSanitizer",
                  "ERROR: LeakSanitizer", "ERROR: UndefinedBehaviorSanitizer")
OPTIONS = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
    # TSan: second_deadlock_stack for readable lock reports; the suppressions file names the
    # interpreter's own races (CPython is not instrumented, but its memory is touched by ours).
    "TSAN_OPTIONS": "halt_on_error=1:exitcode=88:second_deadlock_stack=1",
}


def runtime(kind: str) -> str | None:
    """The sanitizer runtime gcc links against, or None when it has none."""
    compiler = shutil.which("gcc")
    if compiler is None:
        return None
    path = subprocess.run([compiler, f"-print-file-name={RUNTIMES[kind]}"], capture_output=True,
                          text=True, check=False).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def address_space_blocker() -> str | None:
    """Why a sanitizer child cannot start here (a hard RLIMIT_AS), or None."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        return (f"the sanitizers reserve terabytes of address space and the hard RLIMIT_AS "
                f"(ulimit -v) here is {hard >> 20} MiB; run without `ulimit -v` (or with "
                "`ulimit -S -v`, as scripts/test.sh does)")
    return None


def raise_address_space_limit() -> None:
    """preexec_fn of a sanitizer child: its soft RLIMIT_AS up to the (infinite) hard one."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def build(kind: str, directory: Path) -> Path:
    """Compiles the core with the `kind` sanitizers into directory/fasterlog (with a copy of
    the package's Python modules) and returns `directory`, the PYTHONPATH entry."""
    from fasterlog._build import make_builder  # the one place the core's build is described

    package = directory / "fasterlog"
    shutil.copytree(ROOT / "fasterlog", package,
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    builder = make_builder(FLAGS[kind], (FLAGS[kind][0],), absolute_sources=True)
    built = Path(builder.compile(tmpdir=str(directory / "build"), verbose=False))
    shutil.copy2(built, package / built.name)
    return directory


build_timeout_s = 240


def build_or_skip(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `kind` build in a fresh temporary directory, compiled in a child process (the
    compiler's setuptools warnings stay out of the test's, which turns them to errors); skips
    the test when this machine cannot run it (rules 1 and 3)."""
    if runtime(kind) is None:
        pytest.skip(f"gcc has no {RUNTIMES[kind]} (install its sanitizer runtime)")
    blocker = address_space_blocker()
    if blocker is not None:
        pytest.skip(blocker)
    directory = tmp_path_factory.mktemp(f"{kind}-build")
    subprocess.run([sys.executable, "-m", "tests.support.sanitizers", kind, str(directory)],
                   check=True, cwd=ROOT, env=child_env(), capture_output=True,
                   timeout=build_timeout_s)
    return directory


def environment(kind: str, python_path: Path, **extra: str) -> dict[str, str]:
    """A child's environment that loads the sanitizer build in `python_path`."""
    library = runtime(kind)
    assert library is not None, f"no {kind} sanitizer runtime"
    env = child_env(**OPTIONS, **extra)
    env["PYTHONPATH"] = f"{python_path}{os.pathsep}{env['PYTHONPATH']}"
    env["LD_PRELOAD"] = library
    # pymalloc hides heap errors from AddressSanitizer: every object goes through malloc.
    env["PYTHONMALLOC"] = "malloc"
    return env


# Run by child_command: the child stops before any test code runs unless it imported the
# sanitizer build (the first PYTHONPATH entry environment() sets), then runs the module.
_CHILD_PROLOGUE = """\
import os, runpy, sys
import fasterlog._fasterlog_c as core
build = os.environ["PYTHONPATH"].split(os.pathsep)[0]
if not core.__file__.startswith(build):
    sys.exit(f"the child imported {core.__file__}, not the sanitizer build in {build}")
del sys.argv[0]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def child_command(module: str, arguments: list[str]) -> list[str]:
    """`python -m module arguments` for a child with environment(...)'s build. -P keeps the
    working directory off the front of sys.path, where -m puts it: from the checkout the
    child would import the checkout's release build, uninstrumented, under the runtime."""
    return [sys.executable, "-P", "-c", _CHILD_PROLOGUE, module, *arguments]


def reports(stderr: str) -> list[str]:
    """The lines of `stderr` that start a sanitizer report."""
    return [line for line in stderr.splitlines() if any(b in line for b in REPORT_BANNERS)]


if __name__ == "__main__":
    # python -m tests.support.sanitizers KIND DIRECTORY: the build in a process of its own
    # (build_or_skip runs it so).
    build(sys.argv[1], Path(sys.argv[2]))
