"""The README's FastAPI and Starlette quick starts run as copied, with what the README names.

For each section, a fresh virtual environment gets exactly the packages of the
section's ``pip install`` line: the traffik distributions as wheels built from this
repository (never from an index), the others (FastAPI, uvicorn, ...) from the package
index. The section's python block is saved as ``app.py``, served by that environment's
``uvicorn app:app``, and called over the network as the section says.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from traffik.testing.servers import find_free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DISTRIBUTIONS = (
    "traffik-core",
    "traffik-redis",
    "traffik-memcached",
    "traffik-fastapi",
    "traffik-starlette",
)


@dataclass(frozen=True)
class QuickStart:
    section: str
    packages: list[str]
    source: str
    command: list[str]  # the uvicorn command the prose gives
    url: str  # the curl URL the prose gives
    calls: int  # how many times the prose says to call it


def _section(title: str) -> str:
    match = re.search(rf"^## {title}\n(.*?)(?=^## )", README, flags=re.DOTALL | re.MULTILINE)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


_WORDS = {"four": 4, "five": 5, "six": 6}


def _quick_start(title: str) -> QuickStart:
    text = _section(title)
    installs = re.findall(r"^```bash\n(pip install [^\n]+)\n```", text, flags=re.MULTILINE)
    assert len(installs) == 1, f"README '## {title}' should give one pip install line"
    (source,) = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    prose = " ".join(text.split())
    run = re.search(r"run `(uvicorn [^`]+)`", prose)
    call = re.search(
        r"`curl -i (http://[^`]+)` (\w+) times|(\w+) times with `curl -i (http://[^`]+)`", prose
    )
    assert run, f"README '## {title}' should say how to serve the app (run `uvicorn ...`)"
    assert call, f"README '## {title}' should say how to call the app (`curl -i ...` N times)"
    times, url = (call.group(2), call.group(1)) if call.group(1) else (call.group(3), call.group(4))
    return QuickStart(
        section=title,
        packages=shlex.split(installs[0])[2:],
        source=source,
        command=shlex.split(run.group(1)),
        url=url,
        calls=_WORDS[times],
    )


QUICK_STARTS = [_quick_start("FastAPI"), _quick_start("Starlette")]


def _uv_env() -> dict[str, str]:
    """uv as a reader runs it: ``hatch run lowest:test`` sets ``UV_RESOLUTION=lowest-direct``,
    which would resolve the README's unpinned ``fastapi``/``uvicorn`` to their first
    releases; a reader gets the newest.
    """
    return {k: v for k, v in os.environ.items() if k != "UV_RESOLUTION"}


def _run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=_uv_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:  # pragma: no cover - uv is in the hatch environments
        path = shutil.which("uv")
        assert path, "uv is needed to build test virtualenvs: install it with 'pip install uv'."
        return path
    return str(find_uv_bin())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The five wheels, built from this repository as tests-integration/test_packaging.py does."""
    out = tmp_path_factory.mktemp("wheels")
    built = {}
    for name in DISTRIBUTIONS:
        _run(
            sys.executable, "-m", "build", "--wheel", "--installer", "uv", "--outdir", out,
            ROOT / "packages" / name,
        )  # fmt: skip
        (wheel,) = out.glob(f"{name.replace('-', '_')}-*.whl")
        built[name] = wheel
    return built


def _reader_env(venv: Path) -> dict[str, str]:
    """A reader's shell with the venv activated: no pytest or repository paths."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "PYTHONPATH", "VIRTUAL_ENV", "HATCH_"))
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for server in started:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def _wait_for_port(port: int, server: subprocess.Popen[str], log: Path) -> None:
    for _ in range(300):  # 30 s at most
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited with {server.returncode}:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"uvicorn did not listen on port {port} within 30 s")


@pytest.mark.parametrize("quick", QUICK_STARTS, ids=[q.section for q in QUICK_STARTS])
def test_quick_start_runs_as_copied(
    quick: QuickStart,
    wheels: dict[str, Path],
    tmp_path: Path,
    served: list[subprocess.Popen[str]],
) -> None:
    venv = tmp_path / "venv"
    uv = _uv()
    _run(uv, "venv", "--quiet", "--no-python-downloads", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    # traffik-* from the local wheels only; everything else by name from the index.
    local = [wheels[name] for name in quick.packages if name in wheels]
    named = [name for name in quick.packages if name not in wheels]
    assert local, f"README '## {quick.section}' installs no traffik distribution"
    _run(uv, "pip", "install", "--quiet", "--python", python, *local, *named)
    installed = _run(uv, "pip", "freeze", "--python", python).stdout
    for name in quick.packages:
        assert re.search(rf"^{name}(==| @ )", installed, re.MULTILINE | re.IGNORECASE), installed
    foreign = sorted(
        set(re.findall(r"^(traffik-\w+)", installed, re.MULTILINE)) - set(quick.packages)
    )
    assert not foreign, f"installed without being named: {foreign}"

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(quick.source, encoding="utf-8")
    assert quick.command[:2] == ["uvicorn", "app:app"], quick.command
    port = find_free_port()
    log = tmp_path / "uvicorn.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [*quick.command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=app_dir,
            env=_reader_env(venv),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served.append(server)
    _wait_for_port(port, server, log)

    url = quick.url.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    with httpx.Client(timeout=10) as client:
        answers = [client.get(url) for _ in range(quick.calls)]
    server.send_signal(signal.SIGINT)
    server.wait(timeout=20)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "ERROR" not in text, text

    statuses = [answer.status_code for answer in answers]
    assert statuses == [200] * (quick.calls - 1) + [429], statuses
    last = answers[-1]
    assert last.headers["ratelimit"].endswith(f";r=0;t={last.headers['retry-after']}"), last.headers
    if quick.section == "FastAPI":
        # The fourth answer as the README shows it (the wait depends on the clock).
        section = _section("FastAPI")
        assert f"ratelimit-policy: {last.headers['ratelimit-policy']}" in section
        assert 'ratelimit-policy: "hello";q=3;w=10' in section
        wait = int(last.headers["retry-after"])
        unit = "second" if wait == 1 else "seconds"
        assert last.json() == {"detail": f"Too many requests. Retry in {wait} {unit}."}
    else:
        assert last.headers["ratelimit-policy"] == '"admin";q=5;w=60', last.headers
