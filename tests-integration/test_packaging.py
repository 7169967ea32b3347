"""The five distributions build, ship disjoint files, and install alone or together.

Builds every sdist and wheel into a temporary directory (``python -m build``), then
installs wheels into fresh virtual environments with ``uv``: traffik-core alone (the
seed paths of the siblings must fail with an ImportError that names the distribution
to install), and all five (every seed import path must work). Dependencies such as
Starlette come from the package index.
"""

from __future__ import annotations

import email.message
import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

#: distribution -> the subpackage of ``traffik`` it ships (None: core owns ``traffik``)
DISTRIBUTIONS: dict[str, str | None] = {
    "traffik-core": None,
    "traffik-redis": "redis",
    "traffik-memcached": "memcached",
    "traffik-fastapi": "fastapi",
    "traffik-starlette": "starlette",
}

#: the traffik 1.0.0b2 import paths (module -> names imported from it in its README)
SEED_IMPORTS: dict[str, list[str]] = {
    "traffik": ["Rate", "UNLIMITED"],
    "traffik.rates": ["Rate"],
    "traffik.types": ["Stringable", "WaitPeriod", "HTTPConnectionT", "AsyncLock"],
    "traffik.exceptions": [
        "TraffikException",
        "ConfigurationError",
        "AnonymousConnection",
        "ConnectionThrottled",
        "BackendError",
        "BackendConnectionError",
    ],
    "traffik.throttles": ["HTTPThrottle", "WebSocketThrottle"],
    "traffik.strategies": [
        "FixedWindowStrategy",
        "SlidingWindowLogStrategy",
        "SlidingWindowCounterStrategy",
        "TokenBucketStrategy",
        "TokenBucketWithDebtStrategy",
        "LeakyBucketStrategy",
        "LeakyBucketWithQueueStrategy",
    ],
    "traffik.backends.base": ["ThrottleBackend", "connection_identifier"],
    "traffik.backends.inmemory": ["InMemoryBackend"],
    "traffik.backends.redis": ["RedisBackend"],
    "traffik.backends.memcached": ["MemcachedBackend"],
    "traffik.middleware": ["ThrottleMiddleware", "MiddlewareThrottle"],
    "traffik.decorators": ["throttled"],
    "traffik.utils": ["time", "dump_json", "load_json", "JSONDecodeError"],
}

#: the top-level module of each sibling distribution
SIBLING_MODULES = {
    "traffik.redis": "traffik-redis",
    "traffik.memcached": "traffik-memcached",
    "traffik.fastapi": "traffik-fastapi",
    "traffik.starlette": "traffik-starlette",
}

#: seed paths that live in a sibling distribution
SIBLING_SEED_PATHS = {
    "traffik.backends.redis": "traffik-redis",
    "traffik.backends.memcached": "traffik-memcached",
    "traffik.middleware": "traffik-starlette",
    "traffik.decorators": "traffik-fastapi",
}


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def _uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        path = shutil.which("uv")
        if path is None:
            pytest.fail("uv is needed to build test virtualenvs: install it with 'pip install uv'.")
        return path
    return str(find_uv_bin())


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for name in DISTRIBUTIONS:
        _run(
            sys.executable, "-m", "build", "--installer", "uv", "--outdir", out,
            ROOT / "packages" / name,
        )  # fmt: skip
    return out


def _wheel(dist_dir: Path, name: str) -> Path:
    wheels = sorted(dist_dir.glob(f"{name.replace('-', '_')}-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if ".dist-info/" not in n and not n.endswith("/")}


@pytest.fixture(scope="module")
def venvs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


def _make_venv(root: Path, name: str, wheels: list[Path]) -> Path:
    uv = _uv()
    venv = root / name
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", python, *wheels)
    return python


def _probe(python: Path, modules: dict[str, list[str]]) -> dict[str, str]:
    """Import each module in ``python``; return module -> "ok" or the error text."""
    script = textwrap.dedent(
        """
        import importlib, json, sys
        modules = json.loads(sys.argv[1])
        out = {}
        for module, names in modules.items():
            try:
                mod = importlib.import_module(module)
                missing = [n for n in names if not hasattr(mod, n)]
                out[module] = "ok" if not missing else f"missing names: {missing}"
            except ImportError as exc:
                out[module] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(out))
        """
    )
    result = _run(python, "-c", script, json.dumps(modules))
    probed: dict[str, str] = json.loads(result.stdout)
    return probed


def test_each_distribution_builds_a_wheel_and_an_sdist(dist_dir: Path) -> None:
    for name in DISTRIBUTIONS:
        stem = name.replace("-", "_")
        _wheel(dist_dir, name)
        sdists = list(dist_dir.glob(f"{stem}-*.tar.gz"))
        assert len(sdists) == 1, sdists
        with tarfile.open(sdists[0]) as sdist:
            members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
        assert {"pyproject.toml", "README.md", "CHANGELOG.md", "LICENSE"} <= members, (
            name,
            members,
        )


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        [path] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(path).decode("utf-8"))


#: The Project-URL labels every distribution declares (PyPI shows them in its sidebar).
PROJECT_URLS = ("Homepage", "Documentation", "Changelog", "Source", "Issues")


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_wheel_metadata_is_publishable(dist_dir: Path, name: str) -> None:
    metadata = _metadata(_wheel(dist_dir, name))
    urls = dict(value.split(", ", 1) for value in metadata.get_all("Project-URL", []))
    assert sorted(urls) == sorted(PROJECT_URLS), urls
    assert all(url.startswith("https://") for url in urls.values()), urls
    assert urls["Changelog"].endswith(f"/packages/{name}/CHANGELOG.md"), urls
    # Every pip shows the License field; older ones ignore License-Expression.
    assert metadata["License"] == "MIT", metadata.items()
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert description.startswith(f"# {name}"), description[:200]
    links = re.findall(r"\]\(([^)]+)\)", description)
    assert links, f"{name}'s description has no links"
    relative = [link for link in links if not link.startswith("https://")]
    assert not relative, f"{name}'s description has links that are dead on an index: {relative}"


def test_wheels_are_disjoint_and_only_core_owns_the_namespace(dist_dir: Path) -> None:
    seen: dict[str, str] = {}
    for name, subpackage in DISTRIBUTIONS.items():
        files = _wheel_files(_wheel(dist_dir, name))
        assert files, f"{name} ships no files"
        if subpackage is None:
            assert "traffik/__init__.py" in files
            assert "traffik/py.typed" in files
            for other in DISTRIBUTIONS.values():
                if other is not None:
                    assert not any(f.startswith(f"traffik/{other}/") for f in files), other
        else:
            strays = {f for f in files if not f.startswith(f"traffik/{subpackage}/")}
            assert not strays, f"{name} ships files outside traffik/{subpackage}/: {strays}"
            assert f"traffik/{subpackage}/__init__.py" in files
            assert f"traffik/{subpackage}/py.typed" in files
        for file in files:
            assert file not in seen, f"{file} is shipped by both {seen[file]} and {name}"
            seen[file] = name


def test_core_alone_names_the_missing_distribution(dist_dir: Path, venvs: Path) -> None:
    python = _make_venv(venvs, "core-only", [_wheel(dist_dir, "traffik-core")])
    core_paths = {m: n for m, n in SEED_IMPORTS.items() if m not in SIBLING_SEED_PATHS}
    assert _probe(python, core_paths) == dict.fromkeys(core_paths, "ok")

    probed = _probe(python, {module: [] for module in SIBLING_SEED_PATHS})
    for module, distribution in SIBLING_SEED_PATHS.items():
        assert probed[module].startswith("ImportError"), (module, probed[module])
        assert distribution in probed[module], (module, probed[module])

    # The siblings' own modules: a ModuleNotFoundError that says what to pip install.
    probed = _probe(python, {module: [] for module in SIBLING_MODULES})
    for module, distribution in SIBLING_MODULES.items():
        assert probed[module].startswith("ModuleNotFoundError"), (module, probed[module])
        assert f"pip install {distribution}" in probed[module], (module, probed[module])

    # An editable install of a sibling beside the core wheel wins over that message.
    _run(
        _uv(),
        "pip",
        "install",
        "--quiet",
        "--python",
        python,
        "-e",
        ROOT / "packages/traffik-redis",
    )
    assert _probe(python, {"traffik.redis": ["RedisBackend"]}) == {"traffik.redis": "ok"}


#: pip 22.3.1 imports ``pkgutil.ImpImporter``, which Python 3.12 removed: it runs on these.
OLD_PIP_PYTHONS = ("3.11", "3.10")


def _old_pip_python() -> str:
    """A Python that pip 22.3.1 runs on: this one if older than 3.12, else one on PATH.

    Under pyenv, ``python3.11`` is a shim that answers only when PYENV_VERSION selects
    a 3.11 (CONTRIBUTING.md, Traps): the candidate must really run. None found: the
    test is skipped, or fails with ``CI=true`` (CI must run it on every Python).
    """
    if sys.version_info < (3, 12):
        return sys.executable
    for version in OLD_PIP_PYTHONS:
        path = shutil.which(f"python{version}")
        if path is None:
            continue
        probe = subprocess.run(
            [path, "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip():
            return probe.stdout.strip()
    message = (
        f"pip 22.3.1 cannot run on Python {sys.version_info.major}.{sys.version_info.minor}"
        f" and no python{' or python'.join(OLD_PIP_PYTHONS)} runs on PATH: install one"
        " (with pyenv: PYENV_VERSION=<current>:3.11.7)."
    )
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def test_an_old_pip_shows_the_license(dist_dir: Path, venvs: Path) -> None:
    """pip 22.3 (2022) knows no License-Expression; it shows the License field."""
    uv, venv = _uv(), venvs / "old-pip"
    _run(uv, "venv", "--quiet", "--no-python-downloads", "--python", _old_pip_python(), venv)
    python = venv / "bin" / "python"
    wheel = _wheel(dist_dir, "traffik-redis")
    _run(uv, "pip", "install", "--quiet", "--python", python, "pip==22.3.1")
    _run(uv, "pip", "install", "--quiet", "--python", python, "--no-deps", wheel)
    shown = _run(python, "-m", "pip", "show", "traffik-redis").stdout.splitlines()
    assert "License: MIT" in shown, shown


def test_all_five_make_every_seed_path_importable(dist_dir: Path, venvs: Path) -> None:
    wheels = [_wheel(dist_dir, name) for name in DISTRIBUTIONS]
    python = _make_venv(venvs, "all", wheels)
    assert _probe(python, SEED_IMPORTS) == dict.fromkeys(SEED_IMPORTS, "ok")

    # Uninstalling a sibling must leave the namespace, and the other siblings, intact.
    _run(_uv(), "pip", "uninstall", "--quiet", "--python", python, "traffik-redis")
    others = {m: n for m, n in SEED_IMPORTS.items() if m != "traffik.backends.redis"}
    assert _probe(python, others) == dict.fromkeys(others, "ok")
    probed = _probe(python, {"traffik.backends.redis": [], "traffik.redis": []})
    assert "traffik-redis" in probed["traffik.backends.redis"]
    assert "pip install traffik-redis" in probed["traffik.redis"]
