"""The peers, their virtual environments (created lazily with uv) and how to run them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import typing
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
PEERS_DIR = ROOT / "peers"

#: Seconds one peer script may run before it is stopped (each loop inside is bounded too).
SCRIPT_TIMEOUT_S = 300


def _pin(dist: str) -> str:
    """``dist==<version in this environment>``, so peers run on the same framework as traffik."""
    try:
        return f"{dist}=={dist_version(dist)}"
    except PackageNotFoundError:
        return dist


@dataclass(frozen=True)
class Peer:
    """One published implementation, measured in its own virtual environment."""

    name: str
    venv: str
    script: str
    requirements: tuple[str, ...]

    @property
    def python(self) -> Path:
        return VENVS / self.venv / "bin" / "python"


def peers() -> list[Peer]:
    """Every peer, in table order."""
    fastapi, redis = _pin("fastapi"), _pin("redis")
    # The peers of ``--section http`` are served like traffik: uvicorn, uvloop, httptools.
    served = (_pin("uvicorn"), _pin("uvloop"), _pin("httptools"))
    return [
        Peer("traffik 1.0.0b2", "traffik_b2", "traffik_old.py",
             ("traffik[redis,memcached]==1.0.0b2", fastapi, redis)),
        Peer("traffik 1.2.2", "traffik_122", "traffik_old.py",
             ("traffik[redis,memcached]==1.2.2", fastapi, redis, *served)),
        Peer("limits 5.8", "limits", "limits_peer.py", ("limits[async-redis,async-memcached]==5.8.0",)),
        Peer("slowapi 0.1.10", "slowapi", "slowapi_peer.py",
             ("slowapi==0.1.10", fastapi, redis, *served)),
        Peer("fastapi-limiter 0.2", "fastapi_limiter", "fastapi_limiter_peer.py",
             ("fastapi-limiter==0.2.0", fastapi, redis, *served)),
        Peer("pyrate-limiter 4.5", "pyrate", "pyrate_peer.py", ("pyrate-limiter==4.5.1", redis)),
    ]  # fmt: skip


def ensure_venv(peer: Peer, log: typing.Callable[[str], None]) -> str | None:
    """Create or reuse the peer's environment; None when ready, else why it is not."""
    marker = VENVS / peer.venv / ".requirements"
    wanted = "\n".join(peer.requirements)
    if peer.python.exists() and marker.exists() and marker.read_text() == wanted:
        return None
    uv = shutil.which("uv")
    if uv is None:
        return "uv is not on PATH; install it (pip install uv) to build the peer environments"
    log(f"creating {peer.venv} venv: {' '.join(peer.requirements)}")
    path = VENVS / peer.venv
    try:
        if not peer.python.exists():
            subprocess.run(
                [uv, "venv", "-q", "--python", sys.executable, str(path)], check=True, timeout=300
            )
        env = {**clean_env(), "VIRTUAL_ENV": str(path)}
        subprocess.run(
            [uv, "pip", "install", "-q", *peer.requirements], check=True, env=env, timeout=900
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not build its environment ({exc})"
    marker.write_text(wanted)
    return None


def clean_env() -> dict[str, str]:
    # The peer must not see this environment's packages (traffik from the repository).
    env = dict(os.environ)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def run_script(
    python: str | Path, script: str, args: dict[str, typing.Any]
) -> dict[str, typing.Any]:
    """Run ``peers/<script>`` with ``python`` and JSON ``args``; return its JSON result."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [str(python), str(PEERS_DIR / script), json.dumps(args)],
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            env=clean_env(),
            cwd=str(PEERS_DIR),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"errors": [f"{script} timed out after {SCRIPT_TIMEOUT_S} s"]}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"errors": [f"{script} exited with {proc.returncode}: {' | '.join(tail)}"]}
    try:
        result: dict[str, typing.Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"errors": [f"{script} printed no JSON result: {lines[-1][:200]}"]}
    result["seconds"] = time.perf_counter() - start
    return result
