"""Assemble the root README.md from the fragments in docs/readme/.

Usage (from the repository root)::

    hatch run python docs/build_readme.py            # write README.md
    hatch run python docs/build_readme.py --check    # exit 1 if README.md is out of date
    hatch run python docs/build_readme.py --output /tmp/README.md

The fragments ``docs/readme/NN-topic.md`` are joined in file-name order. The first
one (``00-intro.md``) starts with the ``# `` title; every other fragment starts with
a ``## `` section heading. A table of contents of the ``##`` and ``###`` headings is
inserted before the first ``##`` heading (that is, after the intro paragraphs).

Links between fragments (``[text](70-failures.md)`` or ``(70-failures.md#anchor)``)
become links to the matching README anchors, and relative links to repository files
are rewritten relative to the repository root, so every fragment reads well on its
own and in the README.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAGMENTS = ROOT / "docs" / "readme"
README = ROOT / "README.md"

GENERATED = (
    "<!-- Generated from docs/readme/*.md by docs/build_readme.py: edit the fragments, "
    "then run `hatch run python docs/build_readme.py`. -->"
)
TOC_TITLE = "**Contents**"

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"(?<!!)\[([^\[\]]*)\]\(([^()\s]+)\)")
_FRAGMENT_NAME = re.compile(r"^\d\d-[\w.-]+\.md$")


class BuildError(Exception):
    """A fragment cannot be assembled; the message names the file and the fix."""


@dataclass
class Heading:
    level: int
    text: str
    anchor: str


def slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"`([^`]*)`", r"\1", text)  # inline code keeps its text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links keep their text
    out = []
    for char in text.strip().lower():
        if char in " -":
            out.append("-")
        elif char == "_" or unicodedata.category(char)[0] in "LN":
            out.append(char)
    return "".join(out)


def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line, True if it is prose (not inside or on a fenced code block line)."""
    prose, fence = [], ""
    for line in lines:
        match = _FENCE.match(line)
        if fence:
            prose.append(False)
            closing = line.strip()
            if match and len(closing) >= len(fence) and not closing.strip(fence[0]):
                fence = ""
        elif match:
            prose.append(False)
            fence = match.group(2)
        else:
            prose.append(True)
    if fence:
        raise BuildError("a fenced code block is never closed")
    return prose


def headings(text: str) -> list[Heading]:
    """The headings of ``text`` outside code blocks, with unique GitHub anchors."""
    lines = text.splitlines()
    seen: dict[str, int] = {}
    found = []
    for line, prose in zip(lines, _outside_fences(lines), strict=True):
        match = _HEADING.match(line) if prose else None
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.append(
            Heading(len(match.group(1)), match.group(2), base if not count else f"{base}-{count}")
        )
    return found


def read_fragments(folder: Path = FRAGMENTS) -> list[tuple[Path, str]]:
    """The fragments in file-name order, each checked for its opening heading."""
    paths = sorted(path for path in folder.glob("*.md") if path.is_file())
    if not paths:
        raise BuildError(f"no fragments found in {folder}; add docs/readme/NN-topic.md files.")
    fragments = []
    for index, path in enumerate(paths):
        if not _FRAGMENT_NAME.match(path.name):
            raise BuildError(
                f"{path.name}: fragment names are two digits, a dash and a topic "
                f"(for example 45-clusters.md), so their order is explicit; rename it."
            )
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            raise BuildError(f"{path.name} is empty; write its section or delete the file.")
        first = text.splitlines()[0]
        want = "# " if index == 0 else "## "
        if not first.startswith(want):
            raise BuildError(
                f"{path.name} must start with a '{want.strip()}' heading (the first fragment "
                f"holds the '# ' title, every other one starts a '## ' section); "
                f"it starts with {first[:60]!r}."
            )
        try:
            _outside_fences(text.splitlines())
        except BuildError as exc:
            raise BuildError(f"{path.name}: {exc}; close it with a matching fence.") from None
        fragments.append((path, text))
    return fragments


def _rewrite_links(
    path: Path,
    text: str,
    anchors: dict[str, str],
    folder: Path,
    root: Path,
    warnings: list[str],
) -> str:
    """Fragment links become README anchors; relative file links become root-relative."""

    def replace(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
            return match.group(0)
        file_part, _, fragment = target.partition("#")
        if file_part in anchors:
            return f"[{label}](#{fragment or anchors[file_part]})"
        if _FRAGMENT_NAME.match(file_part):
            warnings.append(
                f"{path.name} links to {file_part}, which is not in docs/readme/; "
                f"the README shows the link text without a link until it exists."
            )
            return label
        resolved = (folder / file_part).resolve()
        if not resolved.exists():
            warnings.append(f"{path.name} links to {target}, which does not exist.")
            return match.group(0)
        try:
            relative = resolved.relative_to(root).as_posix()
        except ValueError:
            return match.group(0)
        return f"[{label}]({relative}{'#' + fragment if fragment else ''})"

    lines = text.splitlines()
    prose = _outside_fences(lines)
    return "\n".join(
        _LINK.sub(replace, line) if keep else line for line, keep in zip(lines, prose, strict=True)
    )


def unresolved_anchors(text: str) -> list[str]:
    """In-document links (``](#anchor)``) of ``text`` that match no heading."""
    known = {heading.anchor for heading in headings(text)}
    lines = text.splitlines()
    links = (
        anchor
        for line, keep in zip(lines, _outside_fences(lines), strict=True)
        if keep
        for anchor in re.findall(r"\]\(#([^)\s]+)\)", line)
    )
    return sorted({anchor for anchor in links if anchor not in known})


def table_of_contents(body: str) -> str:
    """A nested list of the ``##`` and ``###`` headings of ``body``."""
    items = [TOC_TITLE, ""]
    for heading in headings(body):
        if heading.level in (2, 3):
            indent = "  " * (heading.level - 2)
            items.append(f"{indent}- [{heading.text}](#{heading.anchor})")
    return "\n".join(items)


def build(folder: Path = FRAGMENTS, root: Path = ROOT, warnings: list[str] | None = None) -> str:
    """The README text assembled from the fragments in ``folder``.

    Problems that do not stop the build (links to missing fragments or files, links to
    anchors no heading has) are appended to ``warnings``.
    """
    if warnings is None:
        warnings = []
    fragments = read_fragments(folder)
    joined = "\n\n".join(text for _, text in fragments)
    all_anchors = headings(joined)
    # Each fragment's first heading, anchored as in the assembled document (so a
    # heading repeated in two fragments gets the suffix GitHub gives it).
    anchors: dict[str, str] = {}
    offset = 0
    for path, text in fragments:
        anchors[path.name] = all_anchors[offset].anchor
        offset += len(headings(text))
    body = "\n\n".join(
        _rewrite_links(path, text, anchors, folder, root, warnings) for path, text in fragments
    )

    lines = body.splitlines()
    prose = _outside_fences(lines)
    split = next(
        (
            i
            for i, (line, keep) in enumerate(zip(lines, prose, strict=True))
            if keep and line.startswith("## ")
        ),
        len(lines),
    )
    intro = "\n".join(lines[:split]).rstrip()
    rest = "\n".join(lines[split:])
    toc = table_of_contents(rest)
    parts = [GENERATED, intro, toc, rest] if rest else [GENERATED, intro]
    text = "\n\n".join(part for part in parts if part)
    text = "\n".join(line.rstrip() for line in text.splitlines()).rstrip("\n") + "\n"
    warnings.extend(
        f"a link points to #{anchor}, which no heading has." for anchor in unresolved_anchors(text)
    )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    parser.add_argument(
        "--output", type=Path, default=README, help="where to write (default README.md)"
    )
    args = parser.parse_args(argv)
    warnings: list[str] = []
    try:
        text = build(warnings=warnings)
    except BuildError as exc:
        print(f"build_readme: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"build_readme: warning: {warning}", file=sys.stderr)
    target: Path = args.output
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current == text:
            print(f"{target} is up to date.")
            return 0
        diff = list(
            difflib.unified_diff(
                current.splitlines(),
                text.splitlines(),
                str(target),
                "built from docs/readme",
                lineterm="",
                n=1,
            )
        )
        shown = "\n".join(diff[:40])
        more = f"\n... ({len(diff) - 40} more diff lines)" if len(diff) > 40 else ""
        print(
            f"{target} is out of date with docs/readme/; run "
            f"`hatch run python docs/build_readme.py` and commit the result.\n{shown}{more}",
            file=sys.stderr,
        )
        return 1
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target} ({len(text.splitlines())} lines) from docs/readme/.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
