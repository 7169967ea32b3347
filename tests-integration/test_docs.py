"""Every code example of the documentation runs: the site's pages, README.md, CONTRIBUTING.md.

- Each ```` ```python ```` block without a file name runs as written, in a fresh module
  (``exec``), with two rewrites only: ``redis://localhost:6379/N`` becomes the session
  Redis server's URL (same database number), and a memcached ``"localhost"``/``11211``
  becomes the session memcached's host and port. Blocks that need a server are found by
  their text and get its marker and fixture.
- A **recipe** is a page whose blocks carry file names (```` ```python title="app.py" ````):
  those files are written side by side into an empty folder, as a reader copies them,
  then the page's ```` ```bash title="terminal" ```` commands run there
  (``python x.py``, ``pytest test_x.py``) and must pass.
- A page whose terminal block runs ``uvicorn`` is served by a real uvicorn on a free
  port and called over the network; its log must show no error or traceback.

A block that is not meant to run (a signature, a shell session, an excerpt) is fenced
``text``, ``bash`` or ``pycon``, never ``python``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from traffik.testing.servers import find_free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKDOWN = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]

_OPEN = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)\s*(.*)$")
_TITLE = re.compile(r"""title=["']([^"']+)["']""")
_REDIS_URL = re.compile(r"redis://localhost:6379(?=[/\"'])")
_MEMCACHED_HOST = re.compile(r"([\"'])localhost\1")
_CLUSTER_URL = re.compile(r"redis://localhost:7000(?=[/\"'])")
#: Calls that show a block really talks to its server (not only builds a backend).
_RUNS = ("asyncio.run(", "TestClient(", ".initialize()")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    title: str  # the file name (or "terminal") given by title="...", else ""
    source: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def needs_redis(self) -> bool:
        return "redis://" in self.source or "RedisBackend" in self.source

    @property
    def needs_memcached(self) -> bool:
        return "MemcachedBackend" in self.source

    @property
    def needs_cluster(self) -> bool:
        """A cluster block that talks to the cluster (one that only builds a backend does not)."""
        cluster = "RedisCluster" in self.source or "cluster=True" in self.source
        return cluster and any(call in self.source for call in _RUNS)


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` (an unclosed fence fails: the page would be broken)."""
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _OPEN.match(lines[index].strip())
        if match is None:
            index += 1
            continue
        fence, start, body = match.group(1), index, []
        indent = len(lines[index]) - len(lines[index].lstrip())
        index += 1
        while index < len(lines):
            stripped = lines[index].strip()
            if len(stripped) >= len(fence) and not stripped.strip(fence[0]):
                break
            body.append(lines[index][indent:])
            index += 1
        else:
            raise AssertionError(f"{path.relative_to(ROOT)}:{start + 1}: a fence is never closed.")
        title = _TITLE.search(match.group(3))
        blocks.append(
            Block(
                path,
                start + 1,
                match.group(2).lower(),
                title.group(1) if title else "",
                "\n".join(body) + "\n",
            )
        )
        index += 1
    return blocks


BLOCKS = [block for path in MARKDOWN for block in code_blocks(path)]
PYTHON = [block for block in BLOCKS if block.language == "python" and not block.title]
TERMINAL = [block for block in BLOCKS if block.title == "terminal"]
SERVED = sorted({block.path for block in TERMINAL if "uvicorn " in block.source})
RECIPES = sorted({block.path for block in TERMINAL} - set(SERVED))


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _param(block: Block) -> typing.Any:
    marks = []
    if block.needs_redis:
        marks.append(pytest.mark.cluster if block.needs_cluster else pytest.mark.redis)
    if block.needs_memcached:
        marks.append(pytest.mark.memcached)
    return pytest.param(block, id=block.where, marks=marks)


# -- the pages as a whole -----------------------------------------------------------------


def test_the_docs_have_examples() -> None:
    assert len(PYTHON) >= 40, f"only {len(PYTHON)} python blocks in the docs"
    assert RECIPES, "no page has a recipe run as a reader copies it"
    assert SERVED, "no page has an example served by uvicorn"


def test_no_python_block_hides_under_another_fence_name() -> None:
    """``py``/``python3`` fences would silently escape execution here."""
    hiding = [f"{b.where} ({b.language})" for b in BLOCKS if b.language in {"py", "python3"}]
    assert not hiding, f"fence these as python (to run them) or text/pycon (not to): {hiding}"


def test_no_placeholder_is_left() -> None:
    """A placeholder line (``BENCH_TABLE``, ``TODO``) must be filled before release."""
    left = []
    for path in MARKDOWN:
        inside = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _OPEN.match(line.strip()):
                inside = not inside
            elif not inside and re.fullmatch(r"\s*(TODO|TBD|FIXME|XXX|[A-Z]+_[A-Z_]+)\b.*", line):
                left.append(f"{_id(path)}:{number}: {line.strip()[:60]}")
    assert not left, f"placeholders left in the docs: {left}"


def test_every_page_is_in_the_site_navigation() -> None:
    """A page missing from mkdocs.yml's nav is built but unreachable."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    missing = [page for page in pages if f": {page}" not in config]
    assert not missing, f"add these pages to the nav of mkdocs.yml: {missing}"


# -- every python block runs -------------------------------------------------------------


def _localise(source: str, request: pytest.FixtureRequest, block: Block) -> str:
    if block.needs_redis:
        if block.needs_cluster:
            host, port = request.getfixturevalue("redis_cluster").nodes[0]
            source = _CLUSTER_URL.sub(f"redis://{host}:{port}", source)
        server = request.getfixturevalue("redis_server")
        source = _REDIS_URL.sub(f"redis://{server.host}:{server.port}", source)
        source = source.replace(
            'host="localhost", port=6379', f'host="{server.host}", port={server.port}'
        )
    if block.needs_memcached:
        server = request.getfixturevalue("memcached_server")
        source = _MEMCACHED_HOST.sub(repr(server.host), source)
        source = re.sub(r"\b11211\b", str(server.port), source)
    return source


@pytest.mark.parametrize("block", [_param(block) for block in PYTHON])
def test_python_block_runs(block: Block, request: pytest.FixtureRequest) -> None:
    source = _localise(block.source, request, block)
    # Pad so that line numbers in tracebacks are the page's line numbers.
    padded = "\n" * block.line + source
    name = f"docs_block_{block.path.stem.replace('-', '_')}_{block.line}"
    module = types.ModuleType(name)
    module.__file__ = str(block.path)
    sys.modules[name] = module  # dataclasses, pydantic and pickle look modules up here
    failure = None
    try:
        exec(compile(padded, str(block.path), "exec"), module.__dict__)
    except Exception:
        failure = traceback.format_exc()
    finally:
        del sys.modules[name]
    if failure is not None:
        pytest.fail(f"The python block at {block.where} failed:\n{failure}", pytrace=False)


# -- recipes: files side by side, run as the page says ------------------------------------


def _write_files(page: Path, folder: Path) -> list[str]:
    names = []
    for block in code_blocks(page):
        if block.title and block.title != "terminal":
            assert "/" not in block.title, f"{block.where}: a file name, not a path"
            (folder / block.title).write_text(block.source, encoding="utf-8")
            names.append(block.title)
    assert names, f"{_id(page)} has terminal commands but no titled file blocks"
    return names


def _commands(page: Path) -> list[list[str]]:
    """The page's terminal commands, with ``python``/``pytest``/``uvicorn`` from this env."""
    commands = []
    for block in code_blocks(page):
        if block.title != "terminal":
            continue
        for line in block.source.splitlines():
            words = shlex.split(line, comments=True)
            if not words or words[0] in {"pip", "curl"}:
                continue  # installs are this environment's; curl is done over httpx here
            tool = {"python": [sys.executable], "pytest": [sys.executable, "-m", "pytest"]}
            tool["uvicorn"] = [sys.executable, "-m", "uvicorn"]
            assert words[0] in tool, f"{block.where}: unknown command {line!r}"
            commands.append(tool[words[0]] + words[1:])
    return commands


def _reader_env() -> dict[str, str]:
    """The environment of a reader: no pytest options or paths of this repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("page", RECIPES, ids=[_id(page) for page in RECIPES])
def test_recipe_runs_as_copied(page: Path, tmp_path: Path) -> None:
    names = _write_files(page, tmp_path)
    for command in _commands(page):
        result = subprocess.run(
            [*command, "-p", "no:cacheprovider"] if "pytest" in command else command,
            cwd=tmp_path,
            env=_reader_env(),
            capture_output=True,
            text=True,
            timeout=110,
        )
        shown = " ".join(command[1:])
        assert result.returncode == 0, (
            f"{_id(page)}: `{shown}` with {names} side by side failed "
            f"(exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        if "pytest" in command:
            assert " passed" in result.stdout, result.stdout
            assert " failed" not in result.stdout, result.stdout


# -- served examples: a real uvicorn on a free port ----------------------------------------


def _wait_for_port(port: int, server: subprocess.Popen[str]) -> None:
    for _ in range(200):  # 20 s at most
        if server.poll() is not None:
            raise AssertionError(f"uvicorn exited with {server.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"uvicorn did not listen on port {port} within 20 s")


def _check_middleware(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        first, second = client.get("/api/a"), client.get("/api/b")
    assert (first.status_code, first.text) == (200, "hello")
    assert first.headers["ratelimit-policy"] == '"api_global";q=100;w=60'
    assert first.headers["ratelimit"].startswith('"api_global";r=99;')
    assert second.headers["ratelimit"].startswith('"api_global";r=98;')


def _check_websocket(port: int) -> None:
    import websockets

    async def chat() -> list[dict[str, typing.Any]]:
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat") as ws:
            replies = []
            for _ in range(4):
                await ws.send(json.dumps({"text": "hi"}))
                replies.append(json.loads(await ws.recv()))
            return replies  # leaving the block closes the socket normally (1000)

    replies = asyncio.run(chat())
    assert replies[:3] == [{"echo": {"text": "hi"}}] * 3
    wait = replies[3]["retry_after"]
    unit = "second" if wait == 1 else "seconds"
    assert replies[3] == {
        "error": f"Too many requests. Retry in {wait} {unit}.",
        "retry_after": wait,
    }


def _check_depends(port: int) -> None:
    """docs/guide/depends.md's usage app: two calls answer what the page shows."""
    page = (DOCS / "guide" / "depends.md").read_text(encoding="utf-8")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        answers = [client.get("/usage").text for _ in range(2)]
    assert "\n".join(answers) in page, answers


#: What to ask each served page's app, over the network.
CHECKS: dict[str, Callable[[int], None]] = {
    "docs/guide/depends.md": _check_depends,
    "docs/guide/middleware.md": _check_middleware,
    "docs/guide/websocket.md": _check_websocket,
}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path], tuple[int, Callable[[], str]]]]:
    """Start the page's ``uvicorn`` command on a free port; stop it (and only it) afterwards."""
    started: list[subprocess.Popen[str]] = []
    log = tmp_path / "uvicorn.log"

    def start(page: Path) -> tuple[int, Callable[[], str]]:
        for name in _write_files(page, tmp_path):
            # A served module must not need test-only packages (TestClient needs httpx2).
            assert "TestClient" not in (tmp_path / name).read_text(), f"{_id(page)}: {name}"
        (command,) = _commands(page)
        port = find_free_port()
        with log.open("w") as out:
            server = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port)],
                cwd=tmp_path,
                env=_reader_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        started.append(server)
        _wait_for_port(port, server)

        def stop() -> str:
            server.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown, as Ctrl+C
            server.wait(timeout=20)
            return log.read_text()

        return port, stop

    yield start
    for server in started:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


@pytest.mark.parametrize("page", SERVED, ids=[_id(page) for page in SERVED])
def test_served_example_answers_over_the_network(
    page: Path, serve: Callable[[Path], tuple[int, Callable[[], str]]]
) -> None:
    check = CHECKS.get(_id(page))
    assert check is not None, f"add a check for {_id(page)} to CHECKS"
    port, stop = serve(page)
    try:
        check(port)
    finally:
        log = stop()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    assert "WARNING" not in log, log  # e.g. "No supported WebSocket library detected"
