"""Finding a package's compiled extension when the package is imported from a source checkout.

The project keeps its packages at the top of the repository (fasterlog/, consumers/, kvlayer/,
fasterlog_server/, fasterlog_cli/), so Python run inside a checkout imports them from there,
before the installed copies: `sys.path` starts with the current directory or the script's.
After `pip install .` (not editable) the checkout holds no compiled extension, and without
this module `import fasterlog` there fails with "No module named 'fasterlog._fasterlog_c'".

Rules:
1. A package whose compiled extension sits beside its `__init__` (an installed package, or a
   checkout built in place by `pip install -e .`) is left alone: nothing is read or changed.
2. Otherwise the package's search path is extended, as `pkgutil.extend_path` does, with the
   same package in the other `sys.path` entries, so its extension is found in the installed
   copy while the checkout's Python modules still come first.
3. That is allowed only when the checkout's C sources are byte for byte the ones the installed
   copy was built from (installed packages carry their `csrc/` as package data): otherwise
   ImportError says which two directories differ and how to rebuild. A core built from other
   sources could disagree with the checkout's Python on a struct layout or a constant.
"""

from __future__ import annotations

import hashlib
import os
import pkgutil
import sys

__all__ = ["find_build", "sources_digest"]


def _has_extension(directory: str, extension_name: str) -> bool:
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return any(name.startswith(extension_name + ".") and name.endswith(".so") for name in names)


def sources_digest(package_directory: str, sources_dirname: str = "csrc") -> str | None:
    """SHA-256 over the names and bytes of the C sources and headers (*.c, *.h) in
    `package_directory/sources_dirname`, or None when there are none."""
    directory = os.path.join(package_directory, sources_dirname)
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith((".c", ".h")))
    except OSError:
        return None
    if not names:
        return None
    digest = hashlib.sha256()
    for name in names:
        with open(os.path.join(directory, name), "rb") as source:
            data = source.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def find_build(path: list[str], package_name: str, extension_name: str,
               sources_dirname: str = "csrc") -> list[str]:
    """The package's `__path__`, extended to reach `extension_name` in an installed copy when
    this copy is an unbuilt source checkout (rules 1-3). Call as
    `__path__ = find_build(__path__, __name__, "_fasterlog_c")` at the top of `__init__`."""
    own = path[0] if path else ""
    if not own or _has_extension(own, extension_name):
        return path
    extended = pkgutil.extend_path(list(path), package_name)
    builds = [directory for directory in extended[1:] if _has_extension(directory, extension_name)]
    if not builds:
        return path  # nothing installed either: the import fails with Python's own message
    build = builds[0]
    ours = sources_digest(own, sources_dirname)
    theirs = sources_digest(build, sources_dirname)
    if ours != theirs:
        raise ImportError(
            f"{package_name}: this copy ({own}) has no compiled {extension_name}, and the "
            f"installed one ({build}) was built from other C sources; rebuild with "
            f"`{os.path.basename(sys.executable)} -m pip install .` (or `pip install -e .` to "
            "build in place)")
    path[:] = [own, build] + [directory for directory in path[1:] if directory != build]
    return path
