"""The root README.md: up to date with docs/readme/, and every ``python`` block in it runs.

Each ```` ```python ```` block of README.md is executed as written, in a fresh module
(``exec``), with two rewrites only: ``redis://localhost:6379/N`` becomes the session
Redis server's URL (same database number), and a memcached ``"localhost"``/``11211``
becomes the session memcached's host and port. Blocks that need a server are detected
by their text and get its marker and fixture; the others run without any server.

A failure names the README line where the block starts and the fragment it comes
from; tracebacks point at README.md lines. A block that is not meant to run must be
fenced as ``text``, ``bash`` or ``pycon``, never ``python``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import traceback
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# TRAFFIK_README points the tests at another build (``build_readme.py --output PATH``).
README = Path(os.environ.get("TRAFFIK_README") or ROOT / "README.md")
FRAGMENTS = ROOT / "docs" / "readme"
BUILD = ROOT / "docs" / "build_readme.py"

_OPEN = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
_REDIS_URL = re.compile(r"redis://localhost:6379(?=[/\"'])")
_MEMCACHED_HOST = re.compile(r"([\"'])localhost\1")
_CLUSTER_URL = re.compile(r"redis://localhost:7000(?=[/\"'])")
#: Calls that show a block really talks to its server (not only builds a backend).
_RUNS = ("asyncio.run(", "TestClient(", ".initialize()")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    line: int  # 1-based line of the opening fence
    language: str
    source: str

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


def code_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text`` (unclosed fences fail: the README would be broken)."""
    blocks = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = _OPEN.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, start, body = match.group(1), index, []
        index += 1
        while index < len(lines):
            stripped = lines[index].strip()
            if len(stripped) >= len(fence) and not stripped.strip(fence[0]):
                break
            body.append(lines[index])
            index += 1
        else:
            raise AssertionError(f"README.md line {start + 1}: a code fence is never closed.")
        blocks.append(Block(start + 1, match.group(2).lower(), "\n".join(body) + "\n"))
        index += 1
    return blocks


def fragment_of(block: Block) -> str:
    """``docs/readme/NN-topic.md line L`` holding the block, to edit the right file."""
    first = block.source.splitlines()[0] if block.source.strip() else ""
    for path in sorted(FRAGMENTS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        at = text.find(block.source)
        if at >= 0:
            line = text.count("\n", 0, at)  # the fence is the line before the block
            return f"docs/readme/{path.name} line {line}"
    return f"no fragment holds it verbatim (first line {first!r})"


README_TEXT = README.read_text(encoding="utf-8") if README.exists() else ""
BLOCKS = code_blocks(README_TEXT)
PYTHON = [block for block in BLOCKS if block.language == "python"]


def _param(block: Block) -> typing.Any:
    marks = []
    if block.needs_redis:
        marks.append(pytest.mark.cluster if block.needs_cluster else pytest.mark.redis)
    if block.needs_memcached:
        marks.append(pytest.mark.memcached)
    return pytest.param(block, id=f"README.md:{block.line}", marks=marks)


# -- the README is built from the fragments -------------------------------------------


def test_readme_is_built_from_the_fragments() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--check", "--output", str(README)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_readme_says_it_is_generated() -> None:
    first = README_TEXT.splitlines()[0]
    assert first.startswith("<!--"), first
    assert "docs/build_readme.py" in first, first


def test_readme_has_a_table_of_contents_that_resolves() -> None:
    build_readme = _build_module()
    anchors = {heading.anchor for heading in build_readme.headings(README_TEXT)}
    links = re.findall(r"\]\(#([^)\s]+)\)", README_TEXT)
    assert len(links) > 10, "the table of contents is missing"
    broken = sorted({link for link in links if link not in anchors})
    assert not broken, f"README.md links to anchors that no heading has: {broken}"


def test_no_python_block_hides_under_another_fence_name() -> None:
    """``py``/``python3``/``Python`` fences would silently escape execution here."""
    hiding = [
        f"README.md line {b.line} ({b.language})" for b in BLOCKS if b.language in {"py", "python3"}
    ]
    assert not hiding, f"fence these as python (to run them) or text/pycon (not to): {hiding}"


def test_no_placeholder_is_left() -> None:
    """A fragment's placeholder line (``BENCH_TABLE``, ``TODO``) must be filled before release."""
    lines = README_TEXT.splitlines()
    inside, left = False, []
    for number, line in enumerate(lines, 1):
        if _OPEN.match(line):
            inside = not inside
        elif not inside and re.fullmatch(r"\s*(TODO|TBD|FIXME|XXX|[A-Z]+_[A-Z_]+)\b.*", line):
            left.append(f"README.md line {number}: {line.strip()[:60]}")
    assert not left, f"placeholders left in the README: {left}"


def test_repository_paths_named_in_the_readme_exist() -> None:
    """Files move (benchmarks did): a path the README names must still be there."""
    named = re.findall(
        r"(?<![\w/.-])((?:packages|benchmarks|examples|docs|tests-integration|\.ci)/[\w./-]*)",
        README_TEXT,
    )
    generated = ("dist/", ".venvs/")  # build and benchmark outputs
    missing = sorted(
        {
            path.rstrip(".")
            for path in named
            if not any(part in path for part in generated)
            and not (ROOT / path.rstrip(".")).exists()
        }
    )
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_the_readme_has_python_examples() -> None:
    assert len(PYTHON) >= 20, f"only {len(PYTHON)} python blocks in README.md"


def test_quick_start_commands_are_the_documented_ones() -> None:
    for command in ("pip install hatch", "hatch run demo", "hatch run test"):
        assert command in README_TEXT, command


def test_demo_output_in_the_readme_is_what_the_demo_prints() -> None:
    """The table and timeline pasted in the intro are the demo's real (deterministic) output."""
    from examples import demo

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert demo.main([]) == 0
    printed = [line.rstrip() for line in out.getvalue().splitlines()]
    table = [line for line in printed if line.startswith(("route ", "----", "/"))]
    timeline = [line for line in printed if line.startswith("  /")]
    assert table
    assert timeline
    readme_lines = {line.rstrip() for line in README_TEXT.splitlines()}
    stale = [line for line in table + timeline if line not in readme_lines]
    assert not stale, (
        "docs/readme/00-intro.md shows demo output that `hatch run demo` no longer prints; "
        f"paste the new output. First differing lines: {stale[:3]}"
    )


# -- every python block runs ---------------------------------------------------------------


def _localise(source: str, request: pytest.FixtureRequest, block: Block) -> str:
    if block.needs_redis:
        if block.needs_cluster:
            host, port = request.getfixturevalue("redis_cluster").nodes[0]
            source = _CLUSTER_URL.sub(f"redis://{host}:{port}", source)
        server = request.getfixturevalue("redis_server")
        source = _REDIS_URL.sub(f"redis://{server.host}:{server.port}", source)
    if block.needs_memcached:
        server = request.getfixturevalue("memcached_server")
        source = _MEMCACHED_HOST.sub(repr(server.host), source)
        source = re.sub(r"\b11211\b", str(server.port), source)
    return source


@pytest.mark.parametrize("block", [_param(block) for block in PYTHON])
def test_python_block_runs(block: Block, request: pytest.FixtureRequest) -> None:
    source = _localise(block.source, request, block)
    # Pad so that line numbers in tracebacks are README.md line numbers.
    padded = "\n" * block.line + source
    name = f"readme_block_{block.line}"
    module = types.ModuleType(name)
    module.__file__ = str(README)
    sys.modules[name] = module  # dataclasses, pydantic and pickle look modules up here
    failure = None
    try:
        exec(compile(padded, str(README), "exec"), module.__dict__)
    except Exception:
        failure = traceback.format_exc()
    finally:
        del sys.modules[name]
    if failure is not None:
        pytest.fail(
            f"The python block at README.md line {block.line} "
            f"(from {fragment_of(block)}) failed:\n{failure}",
            pytrace=False,
        )


# -- the build script itself -----------------------------------------------------------------


def _build_module() -> types.ModuleType:
    sys.path.insert(0, str(BUILD.parent))
    try:
        import build_readme
    finally:
        sys.path.remove(str(BUILD.parent))
    return build_readme


def test_anchors_follow_github() -> None:
    build_readme = _build_module()
    assert build_readme.slug("FastAPI: `Depends(throttle)`") == "fastapi-dependsthrottle"
    assert build_readme.slug("The server's clock") == "the-servers-clock"
    assert build_readme.slug("Migrating from traffik 1.0.0b2") == "migrating-from-traffik-100b2"
    assert build_readme.slug("`reset()` and `clear()`") == "reset-and-clear"
    text = "## Locks\n\n```python\n# Locks\n```\n\n### Locks\n"
    assert [h.anchor for h in build_readme.headings(text)] == ["locks", "locks-1"]


def test_build_joins_fragments_in_order_with_contents_and_links(tmp_path: Path) -> None:
    build_readme = _build_module()
    (tmp_path / "00-intro.md").write_text("# Title\n\nWhat it is. See [B](20-b.md#deep).\n")
    (tmp_path / "20-b.md").write_text("## Bee\n\n### Deep\n\nBack to [A](10-a.md).\n")
    (tmp_path / "10-a.md").write_text("## A section\n\n```python\n## not a heading\n```\n")
    warnings: list[str] = []
    text = build_readme.build(tmp_path, tmp_path, warnings)
    lines = text.splitlines()
    assert lines[0] == build_readme.GENERATED
    assert text.index("# Title") < text.index("**Contents**") < text.index("## A section")
    assert text.index("## A section") < text.index("## Bee")
    assert "- [A section](#a-section)\n- [Bee](#bee)\n  - [Deep](#deep)\n" in text
    assert "See [B](#deep)." in text
    assert "Back to [A](#a-section)." in text
    assert "not-a-heading" not in text
    assert warnings == []


def test_build_refuses_a_fragment_without_its_heading(tmp_path: Path) -> None:
    build_readme = _build_module()
    (tmp_path / "00-intro.md").write_text("# Title\n")
    (tmp_path / "10-a.md").write_text("Some text without a heading.\n")
    with pytest.raises(build_readme.BuildError, match=r"10-a\.md must start with a '##' heading"):
        build_readme.build(tmp_path, tmp_path)


def test_check_fails_on_a_stale_readme(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    stale.write_text("old\n")
    result = subprocess.run(
        [sys.executable, str(BUILD), "--check", "--output", str(stale)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "out of date" in result.stderr
