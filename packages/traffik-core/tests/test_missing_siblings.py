"""A sibling distribution that is not installed: its import names what to pip install.

Core alone is simulated in a subprocess by narrowing ``traffik.__path__`` to core's own
directory (so no sibling is found, whatever this environment has installed). The real
core-only virtualenv is tested by tests-integration/test_packaging.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from traffik._missing import SIBLINGS, MissingSiblingFinder, install

CORE_ONLY = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import traffik

    core = str(Path(traffik.__file__).parent)
    traffik.__path__[:] = [core]
    for name in {names!r}:
        try:
            __import__(name)
        except ModuleNotFoundError as exc:
            print(name, exc.name, exc, sep="|")
        else:
            print(name, "IMPORTED", sep="|")
    """
)


def test_core_alone_names_the_distribution_of_every_sibling() -> None:
    names = sorted(SIBLINGS)
    out = subprocess.run(
        [sys.executable, "-c", CORE_ONLY.format(names=names)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(out) == len(names), out
    for line, name in zip(out, names, strict=True):
        module, exc_name, message = line.split("|")
        assert module == name
        assert exc_name == name, f"{name}: ModuleNotFoundError.name is {exc_name!r}"
        assert f"pip install {SIBLINGS[name]}" in message, message


def test_installed_siblings_still_import() -> None:
    """The finder comes after Python's path finder, so an installed (here editable) sibling wins."""
    from importlib.machinery import PathFinder

    finders = [f for f in sys.meta_path if getattr(f, "traffik_missing_sibling_finder", False)]
    assert len(finders) == 1, "importing traffik must install the finder exactly once"
    assert sys.meta_path.index(finders[0]) > sys.meta_path.index(PathFinder)
    for name in SIBLINGS:
        pytest.importorskip(name)  # installed in the workspace environment


def test_the_finder_ignores_everything_else() -> None:
    finder = MissingSiblingFinder()
    assert finder.find_spec("traffik.rates") is None
    assert finder.find_spec("traffik.redis.backend") is None  # only the top-level module
    assert finder.find_spec("redis") is None
    with pytest.raises(ModuleNotFoundError, match="pip install traffik-memcached"):
        finder.find_spec("traffik.memcached")


def test_installing_again_adds_no_second_finder() -> None:
    install()
    assert (
        sum(bool(getattr(f, "traffik_missing_sibling_finder", False)) for f in sys.meta_path) == 1
    )
