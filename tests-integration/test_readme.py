"""The root README.md: short, its links and paths resolve, and what it shows is real.

The README is hand-written; the guide is the documentation site built from docs/.
Its code blocks run in ``test_docs.py``, with every page's.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
#: The documentation site, as the README and the package metadata link to it.
SITE = "https://traffik.readthedocs.io/"
MAX_LINES = 250

_LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)|<(https?://[^>\s]+)>")


def _links() -> list[str]:
    return [a or b for a, b in _LINK.findall(TEXT)]


def test_the_readme_is_short() -> None:
    lines = len(TEXT.splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move sections into docs/"


def test_relative_links_point_at_files_of_the_repository() -> None:
    relative = [link for link in _links() if not re.match(r"^[a-z]+:", link)]
    assert relative, "the README links no repository file"
    missing = [link for link in relative if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_site_links_point_at_pages_of_docs() -> None:
    """``https://traffik.readthedocs.io/en/latest/guide/depends/`` needs docs/guide/depends.md."""
    pages = [link for link in _links() if link.startswith(SITE)]
    assert len(pages) >= 15, "the README should link into the documentation site"
    missing = []
    for link in pages:
        path = link.removeprefix(SITE).removeprefix("en/latest/").split("#")[0].strip("/")
        page = ROOT / "docs" / (f"{path}.md" if path else "index.md")
        if not page.exists():
            missing.append(f"{link} (docs/{page.relative_to(ROOT / 'docs')})")
    assert not missing, f"README.md links to site pages that docs/ does not have: {missing}"


def test_repository_paths_named_in_the_readme_exist() -> None:
    """Files move (benchmarks did): a path the README names must still be there."""
    named = re.findall(
        r"(?<![\w/.-])((?:packages|benchmarks|examples|docs|tests-integration|\.ci)/[\w./-]*)",
        TEXT,
    )
    missing = sorted({p.rstrip(".") for p in named if not (ROOT / p.rstrip(".")).exists()})
    assert not missing, f"README.md names paths that do not exist: {missing}"


def test_quick_start_says_what_a_newcomer_needs() -> None:
    for needed in (
        "pip install hatch",
        "hatch run demo",
        "hatch run demo --serve --port",
        "hatch run test",
        'hatch run test -m "not slow"',
        "about 9 minutes",
    ):
        assert needed in TEXT, needed


def test_the_readme_shows_one_fastapi_and_one_starlette_example() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", TEXT, flags=re.DOTALL | re.MULTILINE)
    assert any("FastAPI(" in block for block in blocks)
    assert any("Starlette(" in block for block in blocks)


def test_demo_output_shown_is_what_the_demo_prints() -> None:
    """The table and timeline pasted into pages are the demo's real (deterministic) output."""
    from examples import demo

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert demo.main([]) == 0
    printed = {line.rstrip() for line in out.getvalue().splitlines()}
    for page in (README, ROOT / "docs" / "getting-started.md", ROOT / "docs" / "strategies.md"):
        shown = [
            line.rstrip()
            for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith(("  /", "route ", "----", "/strategies", "/reports", "/area"))
        ]
        assert shown, f"{page.name} shows no demo output"
        stale = [line for line in shown if line not in printed]
        assert not stale, (
            f"{page.relative_to(ROOT)} shows demo output that `hatch run demo` no longer "
            f"prints; paste the new output. First differing lines: {stale[:3]}"
        )
