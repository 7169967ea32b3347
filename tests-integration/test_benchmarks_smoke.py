"""Smoke test of the benchmark suite: a quick in-memory run writes the expected tables.

It runs ``python -m benchmarks --quick`` without peers (no network, no PyPI) and
without servers (memory backend only), then checks the report's rows, not numbers.
The http section runs one round of one cell per backend and path under uvicorn,
loaded by the harness's count-bounded client, so it needs neither wrk nor timing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("fw", "swl", "swc", "tb", "tbd", "lb", "lbq", "gcra")

pytestmark = pytest.mark.slow


def _bench(out: Path, *args: str) -> tuple[str, dict[str, typing.Any]]:
    """Run ``python -m benchmarks ARGS --out OUT``; the report and its raw JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text in proc.stdout  # the report is printed as well as written
    return text, json.loads(out.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, typing.Any]]:
    out = tmp_path_factory.mktemp("bench") / "latest.md"
    return _bench(out, "--quick", "--only", "A,C,D", "--no-peers", "--backends", "memory")


def test_section_a_has_a_row_per_strategy_and_keyspace(
    report: tuple[str, dict[str, typing.Any]],
) -> None:
    text, _ = report
    assert "## A. Decisions per second" in text
    assert "| floor | fw | hot |" in text
    for strategy in (*STRATEGIES, "fw-seed"):
        assert f"| traffik (dev) | {strategy} | hot |" in text
        assert f"| traffik (dev) | {strategy} | 10k" in text


def test_rates_are_positive_and_every_decision_counted(
    report: tuple[str, dict[str, typing.Any]],
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


def test_race_check_admits_exactly_the_limit(report: tuple[str, dict[str, typing.Any]]) -> None:
    text, raw = report
    assert "## D. Race check" in text
    races = raw["d"]
    assert isinstance(races, list)
    assert {r["strategy"] for r in races if r["impl"] == "traffik (dev)"} >= set(STRATEGIES)
    for row in races:
        assert row["allowed"] == [32] * len(row["allowed"]), row


def test_end_to_end_section_compares_with_the_bare_app(
    report: tuple[str, dict[str, typing.Any]],
) -> None:
    text, _ = report
    assert "## C. End-to-end overhead" in text
    assert "| traffik (dev) | starlette-bare |" in text
    assert "| traffik (dev) | fastapi-bare |" in text


# --- --section http: apps under uvicorn, loaded over real sockets -----------------------------

HTTP_REQUESTS = 100
HTTP_BURSTS = 2  # per app and cell, alternating with its baseline


@pytest.fixture(scope="module")
def http_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, typing.Any]]:
    """One round of two cells per backend, loaded by the count-bounded client (no wrk)."""
    out = tmp_path_factory.mktemp("bench") / "http.md"
    return _bench(out, "--section", "http", "--load", "python", "--requests", str(HTTP_REQUESTS),
                  "--bursts", str(HTTP_BURSTS),
                  "--reps", "1", "--no-peers", "--backends", "memory,redis",
                  "--cells", "fastapi-depends")  # fmt: skip


def test_http_section_serves_every_cell_and_counts_every_request(
    http_report: tuple[str, dict[str, typing.Any]],
) -> None:
    _, raw = http_report
    assert raw["errors"] == []
    cells = {(r["impl"], r["app"], r["backend"], r["path"]): r for r in raw["rows"]}
    for backend in ("memory", "redis"):
        admit = cells["traffik (dev)", "fastapi-depends", backend, "admit"]
        refuse = cells["traffik (dev)", "fastapi-depends", backend, "refuse"]
        assert (admit["status"], refuse["status"]) == (200, 429)
        sent = HTTP_REQUESTS * HTTP_BURSTS
        assert admit["requests"] == refuse["requests"] == sent
        assert (admit["non2xx"], refuse["non2xx"]) == (0, sent)
        assert admit["errors"] == refuse["errors"] == 0
        assert admit["rps"] > 0
        assert 0 < admit["p50_ms"] <= admit["p99_ms"]
    # Every cell is loaded beside its framework's app without a limiter, one burst each.
    bare = [r for r in raw["rows"] if r["impl"] == "no limiter"]
    assert len(bare) == 4
    assert all(r["status"] == 200 and r["non2xx"] == 0 for r in bare)
    assert all(r["requests"] == HTTP_REQUESTS * HTTP_BURSTS for r in bare)
    rows = raw["rows"]
    # Each of traffik's cells is served with the baseline and its floor app: the
    # baseline, then the floor, then the cell.
    for base, floor, cell in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        assert (base["impl"], base["framework"]) == ("no limiter", cell["framework"])
        assert (floor["impl"], floor["app"]) == ("floor", "fastapi-floor-depends")
        assert floor["status"] == cell["status"]
        assert cell["ratio"] == pytest.approx(cell["rps"] / base["rps"])
        assert cell["p99_ratio"] == pytest.approx(cell["p99_ms"] / base["p99_ms"])
        assert cell["floor_ratio"] == pytest.approx(cell["rps"] / floor["rps"])


def test_http_report_has_both_paths_ratios_and_targets(
    http_report: tuple[str, dict[str, typing.Any]],
) -> None:
    text, _ = http_report
    assert "## Admit path" in text
    assert "## Refuse path" in text
    assert "| no limiter | — | fastapi | — | 1 (baseline) |" in text
    rows = [line for line in text.splitlines() if line.startswith("| traffik (dev) | Depends |")]
    assert len(rows) == 4
    assert all(re.search(r"\| \d+\.\d\d× \|", line) for line in rows), rows
    assert "| in memory, `Depends` ≥ 0.88× no limiter | **" in text
    assert "| Redis, `Depends`: p99 ≤ 2× no limiter | **" in text


WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.21ms  820.10us  21.30ms   91.20%
    Req/Sec    10.02k   400.11    10.60k    72.00%
  Latency Distribution
     50%    3.08ms
     75%    3.30ms
     90%    3.61ms
     99%    1.02s
  49875 requests in 5.00s, 7.23MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 49870
Requests/sec:   9974.21
Transfer/sec:      1.45MB
"""


def test_wrk_output_is_parsed_with_units() -> None:
    from benchmarks._load import parse_wrk

    assert parse_wrk(WRK_OUTPUT) == {
        "requests": 49875, "seconds": 5.0, "rps": 9974.21, "p50_ms": 3.08, "p99_ms": 1020.0,
        "errors": 3, "non2xx": 49870,
    }  # fmt: skip
    with pytest.raises(ValueError, match="wrk printed no result"):
        parse_wrk("unable to connect to 127.0.0.1:8000 Connection refused\n")


# --- --section floors: each integration against its floor app, in process --------------------


def test_floors_section_compares_every_integration_with_its_floor(tmp_path: Path) -> None:
    text, raw = _bench(tmp_path / "floors.md", "--section", "floors", "--quick")
    rows = {(r["path"], r["app"]): r for r in raw["rows"]}
    apps = ("starlette-middleware", "starlette-endpoint", "starlette-decorator",
            "fastapi-middleware", "fastapi-depends", "fastapi-decorator")  # fmt: skip
    for path, status in (("admit", 200), ("refuse", 429)):
        for app in apps:
            row = rows[path, app]
            # The throttled app and its floor answered alike: both admitted, or both refused.
            assert (row["status"], row["floor_status"]) == (status, status), row
            assert row["share"] > 0
            assert row["us"] > 0
            assert row["floor_us"] > 0
    assert "| starlette, ThrottleMiddleware | pure-ASGI limiter |" in text
    assert "| fastapi, Depends(throttle) | FastAPI dependency |" in text
