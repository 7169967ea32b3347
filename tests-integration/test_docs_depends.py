"""docs/guide/depends.md: the answers the "Cost" section shows are the app's real answers.

The section's app runs under Starlette's TestClient; the page's shown responses
(status line, RateLimit fields, body) must be what it answers, except ``t`` (the
seconds left in the current window, which depends on the clock).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from starlette.testclient import TestClient

PAGE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "depends.md"
TEXT = PAGE.read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = TEXT.index(f"## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end != -1 else len(TEXT)]


def _load(source: str) -> types.ModuleType:
    module = types.ModuleType("docs_depends_cost")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, str(PAGE), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module


def _shown(text: str) -> list[str]:
    return [re.sub(r";t=\d+", ";t=T", line) for line in text.splitlines() if line]


def test_cost_answers_are_what_the_page_shows() -> None:
    section = _section("Cost")
    (source,) = re.findall(r"^```python\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    (shown,) = re.findall(r"^```text\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    app = _load(source).app
    lines = []
    with TestClient(app) as client:
        for response in (client.post("/export?full=1"), client.get("/reports")):
            assert len(response.headers.get_list("ratelimit")) == 1, response.headers
            lines += [
                f"HTTP/1.1 {response.status_code} OK",
                f"ratelimit-policy: {response.headers['ratelimit-policy']}",
                f"ratelimit: {response.headers['ratelimit']}",
                response.text,
            ]
    assert _shown("\n".join(lines)) == _shown(shown)


def test_cost_says_when_the_fields_appear_and_that_budgets_are_separate() -> None:
    section = " ".join(_section("Cost").split())
    assert "When the fields appear." in section
    assert "`/export` and `/reports` keep separate budgets." in section
