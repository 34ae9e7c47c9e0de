"""The long-mode switch: one pytest option, `--long`, and everything that scales with it.

Rules:
1. tests/conftest.py registers `--long` and calls configure() from pytest_configure, which runs
   before any test module is imported; so a test module may read LONG, call scaled() or
   examples() at import time (in a decorator, say). Reading the switch before configure() ran
   raises, rather than silently giving the short mode.
2. Without --long (CI): tests marked `slow` are skipped with a reason, scaled() returns the short
   count, and the hypothesis profile "ci" is loaded. With --long: the slow tests run, scaled()
   returns the long count, and the profile "long" is loaded.
3. A property test says how many examples it wants in CI with examples(count); the loaded
   profile scales that count (the "long" profile by long_examples_factor), so no test pins a
   count that --long cannot raise.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import settings

ci_examples_count = 100  # hypothesis's own default, for a test that does not say
long_examples_factor = 10

_long_mode: bool | None = None  # set once by configure(), from pytest_configure


def configure(long_mode: bool) -> None:
    """Sets the mode and loads its hypothesis profile; tests/conftest.py's pytest_configure
    calls it."""
    global _long_mode
    _long_mode = long_mode
    # deadline=None in both: the machine is shared, so a per-example deadline would measure
    # the neighbours rather than the code.
    settings.register_profile("ci", max_examples=ci_examples_count, deadline=None)
    settings.register_profile("long", max_examples=ci_examples_count * long_examples_factor,
                              deadline=None)
    settings.load_profile("long" if long_mode else "ci")


def is_long() -> bool:
    """Whether this run is the long mode (`--long`)."""
    if _long_mode is None:
        raise RuntimeError("the long-mode switch was read before pytest_configure set it")
    return _long_mode


def __getattr__(name: str) -> bool:
    # `from tests.support.mode import LONG` reads the switch when the importing module loads,
    # which for a test module is after pytest_configure (rule 1).
    if name == "LONG":
        return is_long()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scaled(short: int, long: int, override: str = "") -> int:
    """The count for this mode: `short` in CI, `long` with --long; the environment variable
    named `override`, when set, wins (to shorten a long run, saying so)."""
    if override and os.environ.get(override):
        return int(os.environ[override])
    return long if is_long() else short


def examples(ci_count: int, **options: Any) -> settings:
    """Hypothesis settings for a property test that runs `ci_count` examples in CI: the
    loaded profile scales the count (rule 3); `options` are further settings."""
    loaded = settings.default
    assert loaded is not None, "no hypothesis profile is loaded"
    factor = loaded.max_examples / ci_examples_count
    return settings(max_examples=max(1, round(ci_count * factor)), deadline=None, **options)
