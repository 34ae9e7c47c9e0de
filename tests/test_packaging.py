"""A plain `pip install .` into a fresh virtual environment works inside the checkout and out.

Method: copy the files git tracks (as they are in the working tree, so no build output comes
along) to a temporary directory, install that copy into a new venv with pip (build isolation
on, as a user's install), then run `import fasterlog`, `python -m fasterlog info` and
`fasterlog demo` with the copy as the current directory and with an unrelated one. Inside the
copy Python finds the copy's packages first, which hold no compiled core: they must use the
installed build (fasterlog/build_lookup.py), and refuse it once the copy's C sources differ.
"""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 600
IMPORT_EVERY_MODULE = """
import importlib, pkgutil
for name in ("fasterlog", "consumers", "kvlayer", "fasterlog_server", "fasterlog_cli"):
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        if not module.name.endswith(("__main__", "._build")):
            importlib.import_module(module.name)
import fasterlog
print(fasterlog.__file__)
"""


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                             check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing to copy")
    return [name for name in out.stdout.decode().split("\0") if name]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the checkout copy, the venv's bin directory) after `pip install .` of the copy."""
    base = tmp_path_factory.mktemp("packaging")
    checkout = base / "checkout"
    for name in _tracked_files():
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    environment = base / "venv"
    venv.create(environment, with_pip=True)
    bin_directory = environment / "bin"
    subprocess.run([str(bin_directory / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "."], cwd=checkout, check=True,
                   capture_output=True, timeout=INSTALL_TIMEOUT_S)
    # pip builds under build/ and installs from there: the packages in the checkout must still
    # hold no compiled extension, or the test would not show what it claims.
    packages = ("fasterlog", "consumers", "kvlayer", "fasterlog_server")
    assert not [path for package in packages for path in (checkout / package).rglob("*.so")]
    return checkout, bin_directory


def _run(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(arguments, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_import_and_demo_work_after_a_plain_install(installed: tuple[Path, Path], where: str,
                                                    tmp_path: Path) -> None:
    checkout, bin_directory = installed
    cwd = checkout if where == "inside" else tmp_path
    python = str(bin_directory / "python")
    # Every module of every package, so that a subpackage left out of the wheel fails here.
    imported = _run([python, "-c", IMPORT_EVERY_MODULE], cwd)
    assert imported.returncode == 0, imported.stderr
    expected_root = checkout if where == "inside" else bin_directory.parent
    assert Path(imported.stdout.strip()).is_relative_to(expected_root)
    demo_directory = tmp_path / "demo-log"
    demo = _run([str(bin_directory / "fasterlog"), "demo", "--dir", str(demo_directory)], cwd)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    info = _run([python, "-m", "fasterlog", "info", str(demo_directory)], cwd)
    assert info.returncode == 0, info.stderr
    assert "committed" in info.stdout


def test_a_checkout_whose_c_sources_differ_refuses_the_installed_build(
        installed: tuple[Path, Path], tmp_path: Path) -> None:
    checkout, bin_directory = installed
    changed = tmp_path / "changed"
    shutil.copytree(checkout / "fasterlog", changed / "fasterlog")
    header = changed / "fasterlog" / "csrc" / "fasterlog.h"
    header.write_text(header.read_text() + "\n/* changed after the install */\n")
    result = _run([str(bin_directory / "python"), "-c", "import fasterlog"], changed)
    assert result.returncode != 0
    assert "was built from other C sources" in result.stderr, result.stderr

