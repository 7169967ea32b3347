"""Smoke test of the benchmark suite: a quick in-memory run writes the expected tables.

It runs ``python -m benchmarks --quick`` without peers (no network, no PyPI) and
without servers (memory backend only), then checks the report's rows, not numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("fw", "swl", "swc", "tb", "tbd", "lb", "lbq", "gcra")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    out = tmp_path_factory.mktemp("bench") / "latest.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "A,C,D", "--no-peers",
         "--backends", "memory", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text in proc.stdout  # the report is printed as well as written
    return text, json.loads(out.with_suffix(".json").read_text())


def test_section_a_has_a_row_per_strategy_and_keyspace(
    report: tuple[str, dict[str, object]],
) -> None:
    text, _ = report
    assert "## A. Decisions per second" in text
    assert "| floor | fw | hot |" in text
    for strategy in (*STRATEGIES, "fw-seed"):
        assert f"| traffik (dev) | {strategy} | hot |" in text
        assert f"| traffik (dev) | {strategy} | 10k" in text


def test_rates_are_positive_and_every_decision_counted(
    report: tuple[str, dict[str, object]],
) -> None:
    _, raw = report
    rows = raw["a"]
    assert isinstance(rows, list)
    own = [r for r in rows if r["impl"] == "traffik (dev)"]
    assert len(own) == 2 * (len(STRATEGIES) + 1)
    for row in own:
        assert row["rate"] > 0
        assert 0 < row["allowed"] <= row["ops"]
        if row["keyspace"] == "hot":
            # One key at 100/s: the limit holds inside the quick loop (at most two windows).
            assert row["allowed"] <= 2 * 100 + 20


def test_race_check_admits_exactly_the_limit(report: tuple[str, dict[str, object]]) -> None:
    text, raw = report
    assert "## D. Race check" in text
    races = raw["d"]
    assert isinstance(races, list)
    assert {r["strategy"] for r in races if r["impl"] == "traffik (dev)"} >= set(STRATEGIES)
    for row in races:
        assert row["allowed"] == [32] * len(row["allowed"]), row


def test_end_to_end_section_compares_with_the_bare_app(
    report: tuple[str, dict[str, object]],
) -> None:
    text, _ = report
    assert "## C. End-to-end overhead" in text
    assert "| traffik (dev) | starlette-bare |" in text
    assert "| traffik (dev) | fastapi-bare |" in text
