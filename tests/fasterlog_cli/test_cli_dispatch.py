"""The `fasterlog` dispatcher: subcommands found through entry points, one line per failure.

Goal: the command line looks the same however its commands are registered. `fasterlog --help`
lists every subcommand in its order (info, dump, verify, demo, tail, cursors, backup, repair,
serve, kv), whichever way it is started (`python -m fasterlog`, `python -m fasterlog_cli`, the
`fasterlog` script); a command loads only its own package (info never loads kvlayer or the
server); a command that fails to load gives one error line when asked for and never stops the
others.

Method: subprocesses, as a user runs them. Broken plugins are fake installed distributions: a
`NAME.dist-info` directory with METADATA and entry_points.txt, put on PYTHONPATH, which
importlib.metadata finds like any installed package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fasterlog import FasterLog

cli_timeout_s = 60
COMMANDS_IN_ORDER = ["info", "dump", "verify", "demo", "tail", "cursors", "backup", "repair",
                     "serve", "kv"]


def run(*arguments: str | Path, plugins: Path | None = None, module: str = "fasterlog",
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    if plugins is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(plugins), *filter(None, [environment.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", module, *map(str, arguments)],
                          capture_output=True, text=True, timeout=cli_timeout_s, check=False,
                          env=environment, cwd=cwd)


def listed_commands(help_text: str) -> list[str]:
    """The subcommand names of `fasterlog --help`, in the order shown."""
    block = help_text.split("COMMAND\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^    (\S+)", block, flags=re.MULTILINE)


def fake_distribution(where: Path, name: str, entry_points: str) -> Path:
    info = where / f"{name}-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(entry_points)
    return where


@pytest.fixture
def broken_plugins(tmp_path: Path) -> Path:
    """Two registrations that cannot work: a module that does not exist, and an entry point
    naming something that is not a Command."""
    return fake_distribution(tmp_path / "plugins", "broken_plugin", "[fasterlog.commands]\n"
                             "broken = no_such_module_for_fasterlog:COMMAND\n"
                             "wrong = json:dumps\n")


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "log"
    with FasterLog.open(directory, page_size_bytes=64 << 10, memory_size_bytes=256 << 10,
                        segment_size_bytes=1 << 20) as log:
        log.append(b"an entry")
        log.commit()
    return directory


def assert_one_error_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fasterlog: error: ")
    return lines[0]


def test_help_lists_every_command_in_the_same_order_however_it_is_started() -> None:
    result = run("--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert listed_commands(result.stdout) == COMMANDS_IN_ORDER
    assert run("--help", module="fasterlog_cli").stdout == result.stdout
    script = Path(sys.executable).with_name("fasterlog")
    if script.exists():  # the console script of this environment's install
        assert subprocess.run([script, "--help"], capture_output=True, text=True,
                              timeout=cli_timeout_s, check=True).stdout == result.stdout


def test_an_unknown_command_lists_every_command_in_order() -> None:
    line = assert_one_error_line(run("bogus"), 2)
    choices = re.search(r"\(choose from (.*?)\)", line)
    assert choices, line
    assert re.findall(r"'(\w+)'", choices.group(1)) == COMMANDS_IN_ORDER


def test_a_log_command_loads_neither_kvlayer_nor_the_server(log_dir: Path) -> None:
    code = ("import sys; from fasterlog_cli import main; status = main(['info', sys.argv[1]]); "
            "print(status, sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('consumers', 'kvlayer', 'fasterlog_server')))")
    result = subprocess.run([sys.executable, "-c", code, str(log_dir)], capture_output=True,
                            text=True, timeout=cli_timeout_s, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"


def test_a_command_that_fails_to_import_is_one_error_line(broken_plugins: Path) -> None:
    line = assert_one_error_line(run("broken", "x", plugins=broken_plugins), 1)
    assert line == ("fasterlog: error: command 'broken' is unavailable: ModuleNotFoundError: "
                    "No module named 'no_such_module_for_fasterlog' (entry point broken = "
                    "no_such_module_for_fasterlog:COMMAND)")


def test_an_entry_point_that_is_not_a_command_is_one_error_line(broken_plugins: Path) -> None:
    line = assert_one_error_line(run("wrong", plugins=broken_plugins), 1)
    assert line == ("fasterlog: error: command 'wrong' is unavailable: it names a function, "
                    "not a Command (entry point wrong = json:dumps)")


def test_the_other_commands_work_beside_a_broken_one(broken_plugins: Path, log_dir: Path) -> None:
    result = run("dump", log_dir, "--format", "raw", plugins=broken_plugins)
    assert (result.returncode, result.stdout, result.stderr) == (0, "an entry", "")
    result = run("--help", plugins=broken_plugins)
    assert result.returncode == 0
    assert listed_commands(result.stdout) == COMMANDS_IN_ORDER  # the broken ones left out
    warnings = result.stderr.splitlines()
    assert [line.split(":")[2] for line in warnings] == [" command 'broken' is unavailable",
                                                         " command 'wrong' is unavailable"]
    assert all(line.startswith("fasterlog: warning: ") for line in warnings)


def test_a_command_registered_twice_is_refused_rather_than_picked(tmp_path: Path) -> None:
    plugins = fake_distribution(tmp_path / "plugins", "shadowing_plugin",
                                "[fasterlog.commands]\nverify = json:dumps\n")
    line = assert_one_error_line(run("verify", tmp_path, plugins=plugins), 1)
    assert line.startswith("fasterlog: error: command 'verify' is unavailable: registered 2 "
                           "times (entry point verify = ")


def test_python_m_fasterlog_without_the_console_script_is_one_error_line(tmp_path: Path) -> None:
    # A distribution called fasterlog found first, that registers no console script (run
    # outside the checkout, whose fasterlog.egg-info would come first on sys.path).
    plugins = fake_distribution(tmp_path / "plugins", "fasterlog", "")
    line = assert_one_error_line(run("--help", plugins=plugins, cwd=tmp_path), 1)
    assert "the fasterlog command line is not installed" in line
