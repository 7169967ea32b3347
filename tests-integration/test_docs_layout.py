"""What a newcomer reads: one import path per name, code that fits, short paragraphs.

- **One import path per name.** Each public name is imported from one place in the
  docs: ``traffik`` for what it re-exports (``from traffik import HTTPThrottle``), the
  sibling module for a sibling's names (``from traffik.redis import RedisBackend``),
  else the module that defines it. The 1.0.0b2 paths (``traffik.throttles``,
  ``traffik.backends.redis``, ``traffik.middleware``, ...) still import, and are named
  only on the migration page and in one note of the home page.
- **Code fits its block.** mkdocs-material shows about 88 columns of code before a
  block scrolls sideways: every line of every fenced block is at most 88 columns.
- **No walls of text.** A prose paragraph of more than 100 words is split.

The pages are docs/**/*.md, README.md and CONTRIBUTING.md, as in ``test_docs.py``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKDOWN = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
MIGRATION = DOCS / "migration.md"
#: The one page besides the migration page that may name the 1.0.0b2 paths (in one note).
OLD_PATHS_NOTE = DOCS / "index.md"

MAX_COLUMNS = 88
MAX_WORDS = 100

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
#: Modules that exist only so that 1.0.0b2 code keeps importing (re-exports of a sibling).
OLD_ONLY = re.compile(r"\btraffik\.(?:backends\.redis|backends\.memcached|middleware|decorators)\b")
_FROM = re.compile(r"^\s*from\s+(traffik(?:\.\w+)*)\s+import\s+\(?([\w\s,]+)\)?")
_DOTTED = re.compile(r"\btraffik((?:\.[a-z_]\w*)+)\.([A-Za-z_]\w*)\b")


@dataclass(frozen=True)
class Line:
    path: Path
    number: int
    text: str
    in_code: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.number}"


def _lines(path: Path) -> list[Line]:
    """Every line of ``path``, each marked as inside a fenced block or not (fences excluded)."""
    lines, fence = [], ""
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = _FENCE.match(text)
        if fence:
            if match and text.strip() and not text.strip().strip(fence[0]):
                fence = ""
                continue
            lines.append(Line(path, number, text, in_code=True))
        elif match:
            fence = match.group(1)
        else:
            lines.append(Line(path, number, text, in_code=False))
    return lines


LINES = [line for path in MARKDOWN for line in _lines(path)]


def _recommended() -> dict[str, str]:
    """Public name -> the module the docs import it from."""
    import traffik

    recommended = dict.fromkeys(traffik.__all__, "traffik")
    seen: dict[str, list[str]] = {}
    for sibling in ("traffik.redis", "traffik.memcached", "traffik.fastapi", "traffik.starlette"):
        for name in importlib.import_module(sibling).__all__:
            seen.setdefault(name, []).append(sibling)
    # A name two siblings define (``throttled``: FastAPI's and Starlette's) is two names.
    recommended.update({name: where[0] for name, where in seen.items() if len(where) == 1})
    recommended.pop("__version__")
    return recommended


RECOMMENDED = _recommended()


def _statements(path: Path) -> list[tuple[Line, str]]:
    """The ``from traffik... import`` statements of the page's code, joined across lines."""
    found, lines = [], [line for line in _lines(path) if line.in_code]
    for index, line in enumerate(lines):
        if re.match(r"^\s*from\s+traffik\b", line.text):
            text = line.text
            if "(" in text:
                rest = (candidate.text for candidate in lines[index + 1 :])
                text += " " + " ".join(_until_close(rest))
            found.append((line, text))
    return found


def _until_close(lines: object) -> list[str]:
    taken = []
    for text in lines:  # type: ignore[attr-defined]
        taken.append(text)
        if ")" in text:
            break
    return taken


def test_docs_import_each_name_from_its_one_path() -> None:
    wrong = []
    for path in MARKDOWN:
        if path == MIGRATION:
            continue
        for line, statement in _statements(path):
            match = _FROM.match(statement.replace("\n", " "))
            assert match, f"{line.where}: cannot read {statement!r}"
            module = match.group(1)
            for name in re.findall(r"\w+", match.group(2).split("#")[0]):
                if name == "as":
                    break
                best = RECOMMENDED.get(name, module)
                if best != module:
                    wrong.append(f"{line.where}: import {name} from {best}, not {module}")
    assert not wrong, "\n".join(wrong)


def test_prose_names_each_name_by_its_one_path() -> None:
    """``traffik.throttles.HTTPThrottle`` in a sentence: write ``traffik.HTTPThrottle``."""
    wrong = []
    for line in LINES:
        if line.path == MIGRATION or line.text.lstrip().startswith(":::"):
            continue  # `::: traffik.throttles` is mkdocstrings' module reference
        for module, name in _DOTTED.findall(line.text):
            module = "traffik" + module
            if module.startswith("traffik.testing") or name not in RECOMMENDED:
                continue
            if RECOMMENDED[name] != module and not module.endswith(f".{name}"):
                wrong.append(f"{line.where}: {module}.{name} is {RECOMMENDED[name]}.{name}")
    assert not wrong, "\n".join(wrong)


def test_the_1_0_0b2_paths_are_named_on_the_migration_page_and_in_one_note() -> None:
    paragraphs: set[tuple[Path, int]] = set()
    outside = []
    for path in MARKDOWN:
        if path == MIGRATION:
            continue
        paragraph = 0
        for line in _lines(path):
            if not line.text.strip():
                paragraph += 1
            elif OLD_ONLY.search(line.text):
                if path == OLD_PATHS_NOTE and not line.in_code:
                    paragraphs.add((path, paragraph))
                else:
                    outside.append(f"{line.where}: {line.text.strip()}")
    assert not outside, (
        "a 1.0.0b2 import path outside docs/migration.md and the note of docs/index.md; "
        "use traffik.redis, traffik.memcached, traffik.starlette, traffik.fastapi:\n"
        + "\n".join(outside)
    )
    assert len(paragraphs) == 1, (
        f"docs/index.md names the 1.0.0b2 paths in {len(paragraphs)} paragraphs"
    )


def test_the_migration_page_keeps_the_1_0_0b2_paths() -> None:
    text = MIGRATION.read_text(encoding="utf-8")
    for old in ("traffik.backends.redis", "traffik.middleware", "traffik.decorators"):
        assert old in text, old


# -- layout ---------------------------------------------------------------------------------


def test_code_lines_fit_in_88_columns() -> None:
    long = [
        f"{line.where}: {len(line.text)} columns"
        for line in LINES
        if line.in_code and len(line.text) > MAX_COLUMNS
    ]
    assert not long, f"code lines wider than {MAX_COLUMNS} columns scroll sideways:\n" + "\n".join(
        long
    )


def _prose_paragraphs(path: Path) -> list[tuple[Line, str]]:
    """Prose paragraphs: lines outside code, tables, headings and includes, split at blanks."""
    paragraphs: list[tuple[Line, str]] = []
    current: list[Line] = []

    def close() -> None:
        if current:
            paragraphs.append((current[0], " ".join(line.text.strip() for line in current)))
            current.clear()

    for line in _lines(path):
        stripped = line.text.strip()
        starts_item = re.match(r"^([-*+]|\d+\.)\s", stripped) is not None
        if line.in_code or not stripped or stripped.startswith(("|", "#", "--8<--", ":::")):
            close()
            continue
        if starts_item or stripped.startswith("!!!"):
            close()
        current.append(line)
    close()
    return paragraphs


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_no_paragraph_is_a_wall_of_text(path: Path) -> None:
    walls = []
    for first, text in _prose_paragraphs(path):
        words = len(re.findall(r"[\w`'(\[][^\s]*", text))
        if words > MAX_WORDS:
            walls.append(f"{first.where}: {words} words ({text[:60]}...)")
    assert not walls, f"split paragraphs over {MAX_WORDS} words:\n" + "\n".join(walls)
