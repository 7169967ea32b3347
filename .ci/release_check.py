"""Check that the five distributions can be released: `hatch run release-check`.

1. builds the sdist and the wheel of every distribution (``python -m build``);
2. ``twine check --strict`` on all ten files, ``check-wheel-contents`` on the wheels;
3. starts a local package index (pypiserver) on a free loopback port and uploads all
   ten files to it with twine;
4. for each distribution, in a fresh virtual environment, installs it **by name** from
   that index (third-party dependencies come from the default index) and checks that
   only traffik-core is installed beside it, then imports it;
5. in a core-only environment, checks that importing each sibling raises
   ``ModuleNotFoundError`` naming ``pip install traffik-<name>``.

Any failure prints what failed and exits 1. The index this script started is stopped
on every exit path (only that process). Run it from the repository root, in the hatch
environment (it uses that environment's build, twine, check-wheel-contents, pypiserver
and uv).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: distribution -> the module it ships (core: the seed API of ``traffik``)
DISTRIBUTIONS = {
    "traffik-core": "traffik",
    "traffik-redis": "traffik.redis",
    "traffik-memcached": "traffik.memcached",
    "traffik-fastapi": "traffik.fastapi",
    "traffik-starlette": "traffik.starlette",
}
#: the traffik 1.0.0b2 import path each sibling also provides
SEED_PATHS = {
    "traffik-redis": "traffik.backends.redis",
    "traffik-memcached": "traffik.backends.memcached",
    "traffik-fastapi": "traffik.decorators",
    "traffik-starlette": "traffik.middleware",
}
#: how long the index may take to answer after it starts, in seconds
INDEX_START_TIMEOUT = 30.0


class CheckFailed(Exception):
    """A release check failed; the message says which and why."""


def step(title: str) -> None:
    print(f"\n--- {title}", flush=True)


def run(*command: str | Path, what: str, env: dict[str, str] | None = None) -> str:
    """Run ``command``; return its stdout, or raise CheckFailed with its output."""
    args = [str(part) for part in command]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, check=False, env=env, cwd=ROOT
    )
    if result.returncode != 0:
        raise CheckFailed(
            f"{what} failed (exit {result.returncode}): {' '.join(args)}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        path = shutil.which("uv")
        if path is None:
            raise CheckFailed(
                "uv is needed: run this script with `hatch run release-check`."
            ) from None
        return path
    return str(find_uv_bin())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(out: Path) -> list[Path]:
    step("build: sdist and wheel of every distribution")
    for name in DISTRIBUTIONS:
        run(
            sys.executable, "-m", "build", "--installer", "uv", "--outdir", out,
            ROOT / "packages" / name, what=f"building {name}",
        )  # fmt: skip
    files = sorted(out.iterdir())
    for name in DISTRIBUTIONS:
        stem = name.replace("-", "_")
        wheels = [f for f in files if f.name.startswith(f"{stem}-") and f.suffix == ".whl"]
        sdists = [f for f in files if f.name.startswith(f"{stem}-") and f.name.endswith(".tar.gz")]
        if len(wheels) != 1 or len(sdists) != 1:
            raise CheckFailed(f"{name}: expected one wheel and one sdist, got {wheels + sdists}")
    if len(files) != 2 * len(DISTRIBUTIONS):
        raise CheckFailed(f"expected {2 * len(DISTRIBUTIONS)} files, got {files}")
    for f in files:
        print(f"  {f.name}")
    return files


def check_files(files: list[Path]) -> None:
    step("twine check --strict")
    print(
        run(
            sys.executable,
            "-m",
            "twine",
            "--no-color",
            "check",
            "--strict",
            *files,
            what="twine check",
        )
    )
    step("check-wheel-contents")
    wheels = [f for f in files if f.suffix == ".whl"]
    print(run("check-wheel-contents", *wheels, what="check-wheel-contents"))


class Index:
    """A pypiserver on a free loopback port, serving and accepting uploads into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root.parent / "pypiserver.log"

    def start(self) -> None:
        step(f"start pypiserver on {self.url}")
        self.root.mkdir()
        with self.log.open("wb") as log:
            # -a . -P . : no authentication (a throwaway index on loopback only).
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "pypiserver", "run",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "-a", ".", "-P", ".", str(self.root),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + INDEX_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise CheckFailed(
                    f"pypiserver exited with {self.process.returncode}:\n{self.log.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/simple/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise CheckFailed(
                        f"pypiserver did not answer on {self.url} within "
                        f"{INDEX_START_TIMEOUT:.0f} s:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.2)
        print(f"  pid {self.process.pid}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        print(f"\n--- stopped pypiserver (pid {self.process.pid})")

    def upload(self, files: list[Path]) -> None:
        step("twine upload: all ten files")
        run(
            sys.executable, "-m", "twine", "--no-color", "upload", "--non-interactive",
            "--repository-url", f"{self.url}/", "-u", "release-check", "-p", "unused",
            *files, what="twine upload",
        )  # fmt: skip
        served = sorted(p.name for p in self.root.iterdir())
        expected = sorted(f.name for f in files)
        if served != expected:
            raise CheckFailed(f"the index holds {served}, expected {expected}")
        for name in DISTRIBUTIONS:
            with urllib.request.urlopen(f"{self.url}/simple/{name}/", timeout=10) as page:
                links = page.read().decode()
            if links.count("href=") != 2:
                raise CheckFailed(f"{self.url}/simple/{name}/ should list 2 files:\n{links}")
        print(f"  {len(served)} files served")


def fresh_venv(path: Path) -> Path:
    run(uv(), "venv", "--quiet", "--python", sys.executable, path, what=f"creating {path.name}")
    return path / "bin" / "python"


def install(python: Path, index: Index, name: str) -> None:
    # --index comes before the default index (PyPI): with uv's first-index strategy every
    # traffik-* distribution can only come from the local index.
    # Newest versions of the third-party dependencies, whatever the calling environment says.
    env = {k: v for k, v in os.environ.items() if k != "UV_RESOLUTION"}
    run(
        uv(), "pip", "install", "--quiet", "--python", python,
        "--index", f"{index.url}/simple/", name, what=f"installing {name} from {index.url}",
        env=env,
    )  # fmt: skip


def probe(python: Path, script: str) -> dict[str, str]:
    return dict(json.loads(run(python, "-c", script, what="probing imports")))


INSTALLED = """
import json, importlib.metadata as m
print(json.dumps({d.metadata["Name"]: d.version for d in m.distributions()
                  if d.metadata["Name"].startswith("traffik")}))
"""

IMPORTS = """
import importlib, json, sys
out = {}
for module in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
        out[module] = "ok"
    except ImportError as exc:
        out[module] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def imports(python: Path, modules: list[str]) -> dict[str, str]:
    return dict(json.loads(run(python, "-c", IMPORTS, json.dumps(modules), what="importing")))


def check_installs(index: Index, venvs: Path, versions: dict[str, str]) -> None:
    for name, module in DISTRIBUTIONS.items():
        step(f"install {name} by name from the index, in a fresh venv")
        python = fresh_venv(venvs / name)
        install(python, index, name)
        installed = probe(python, INSTALLED)
        expected = {n: versions[n] for n in {"traffik-core", name}}
        if installed != expected:
            raise CheckFailed(f"{name}: installed {installed}, expected exactly {expected}")
        modules = [module] + ([SEED_PATHS[name]] if name in SEED_PATHS else [])
        result = imports(python, modules)
        if set(result.values()) != {"ok"}:
            raise CheckFailed(f"{name}: imports failed: {result}")
        print(f"  installed {installed}; imported {', '.join(modules)}")


def check_missing_siblings(index: Index, venvs: Path) -> None:
    step("core only: every missing sibling names its distribution")
    python = fresh_venv(venvs / "core-only")
    install(python, index, "traffik-core")
    siblings = {m: n for n, m in DISTRIBUTIONS.items() if n != "traffik-core"}
    result = imports(python, list(siblings))
    for module, name in siblings.items():
        message = result[module]
        if not message.startswith("ModuleNotFoundError") or f"pip install {name}" not in message:
            raise CheckFailed(f"core only: import {module} gave {message!r}")
        print(f"  import {module}: {message}")


def versions_of(files: list[Path]) -> dict[str, str]:
    found = {}
    for f in files:
        if f.suffix == ".whl":
            stem, version = f.name.split("-")[:2]
            found[stem.replace("_", "-")] = version
    return found


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="traffik-release-check-") as tmp:
        work = Path(tmp)
        index = Index(work / "index")
        try:
            files = build(work / "dist")
            check_files(files)
            index.start()
            index.upload(files)
            venvs = work / "venvs"
            check_installs(index, venvs, versions_of(files))
            check_missing_siblings(index, venvs)
        except CheckFailed as exc:
            print(f"\nRELEASE CHECK FAILED: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            index.stop()
    print("\nRELEASE CHECK OK: 5 distributions, 10 files built, checked, uploaded, installed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
