"""The ``--section http`` report: per-round ratios to the baseline, medians, targets."""

from __future__ import annotations

import statistics
import typing
from collections import defaultdict

from benchmarks._http import BASELINE, FLOOR
from benchmarks._sections import OWN

Row = dict[str, typing.Any]
Key = tuple[str, str, str, str, str, str]  # impl, through, framework, backend, path, app
METRICS = ("rps", "p50_ms", "p99_ms", "ratio", "p99_ratio", "floor_ratio")
BACKEND_ORDER = {"memory": 0, "redis": 1, "memcached": 2}


def _key(r: Row) -> Key:
    return (r["impl"], r["through"], r["framework"], r["backend"], r["path"], r["app"])


def _med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rows: list[Row]) -> dict[Key, Row]:
    """Per cell: medians over rounds of req/s, p50, p99, ×baseline and p99 ×baseline p99.

    Each cell row carries its ratios to the baseline run beside it (see _http.measure);
    the baseline rows are medians over every pair they were part of.
    """
    per: dict[Key, list[Row]] = defaultdict(list)
    for r in rows:
        per[_key(r)].append(r)
    out: dict[Key, Row] = {}
    for key, rs in per.items():
        out[key] = {
            "rounds": len(rs),
            **{m: _med([r.get(m) for r in rs]) for m in METRICS},
            "requests": sum(r["requests"] for r in rs),
            "non2xx": sum(r["non2xx"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "statuses": sorted({r["status"] for r in rs}),
        }
    return out


def _f(v: float | None, fmt: str, unit: str = "") -> str:
    return "—" if v is None else format(v, fmt) + unit


def _order(key: Key) -> tuple[int, int, int, str]:
    impl = 0 if key[0] == BASELINE else 1 if key[0] == FLOOR else 2 if key[0] == OWN else 3
    return (BACKEND_ORDER.get(key[3], -1), impl, 0 if key[2] == "fastapi" else 1, key[0])


def table(meds: dict[Key, Row], path: str) -> list[str]:
    lines = [
        "| limiter | through | app | backend | ×no limiter | ×floor | req/s | p50 ms | p99 ms "
        "| p99 ×no limiter | non-2xx / requests | socket errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(meds, key=_order):
        m = meds[key]
        if key[4] != path and key[0] != BASELINE:
            continue
        impl, through, framework, backend = key[:4]
        ratio = "1 (baseline)" if impl == BASELINE else _f(m["ratio"], ".2f", "×")
        p99r = "—" if impl == BASELINE else _f(m["p99_ratio"], ".2f", "×")
        floor = _f(m.get("floor_ratio"), ".2f", "×")
        lines.append(
            f"| {impl} | {through} | {framework} | {backend} | {ratio} | {floor} "
            f"| {_f(m['rps'], ',.0f')} "
            f"| {_f(m['p50_ms'], '.2f')} | {_f(m['p99_ms'], '.2f')} | {p99r} "
            f"| {m['non2xx']:,} / {m['requests']:,} | {m['errors']} |"
        )
    return lines


def _best_peer(meds: dict[Key, Row], backend: str, path: str) -> tuple[str, float] | None:
    found = [(k[0], m["ratio"]) for k, m in meds.items()
             if k[0] not in (OWN, BASELINE) and k[3] == backend and k[4] == path
             and m["ratio"] is not None]  # fmt: skip
    return max(found, key=lambda x: x[1]) if found else None


def _own(meds: dict[Key, Row], app: str, backend: str, path: str) -> Row | None:
    for k, m in meds.items():
        if k[0] == OWN and k[5] == app and k[3] == backend and k[4] == path:
            return m
    return None


def _verdict(ok: bool) -> str:
    # Three decimals in the targets: 1.497 must not read as a missed 1.50.
    return "**met**" if ok else "**missed**"


def targets(meds: dict[Key, Row]) -> list[str]:
    """Issue 15's targets, each met or missed, from the medians above."""
    out = ["| target | result |", "|---|---|"]

    def ratio_row(label: str, app: str, backend: str, path: str, floor: float) -> Row | None:
        m = _own(meds, app, backend, path)
        if m is None or m["ratio"] is None:
            out.append(f"| {label} ≥ {floor}× no limiter | not measured |")
            return None
        out.append(f"| {label} ≥ {floor}× no limiter | {_verdict(m['ratio'] >= floor)}: "
                   f"{m['ratio']:.3f}× |")  # fmt: skip
        return m

    def peer_row(label: str, m: Row | None, backend: str, factor: float) -> None:
        best = _best_peer(meds, backend, "admit")
        if m is None or m["ratio"] is None or best is None:
            out.append(f"| {label} ≥ {factor}× the best peer | not measured |")
            return
        x = m["ratio"] / best[1]
        out.append(f"| {label} ≥ {factor}× the best peer | {_verdict(x >= factor)}: {x:.3f}× "
                   f"({best[0]}, {best[1]:.2f}× no limiter) |")  # fmt: skip

    m = ratio_row("in memory, `Depends`", "fastapi-depends", "memory", "admit", 0.88)
    peer_row("in memory, `Depends`", m, "memory", 1.3)
    ratio_row(
        "in memory, `ThrottleMiddleware` (FastAPI)", "fastapi-middleware", "memory", "admit", 0.92
    )
    ratio_row("in memory, `ThrottleMiddleware` (Starlette)", "starlette-middleware", "memory",
              "admit", 0.92)  # fmt: skip
    ratio_row("refused, in memory, `Depends`", "fastapi-depends", "memory", "refuse", 0.88)
    m = ratio_row("Redis, `Depends`", "fastapi-depends", "redis", "admit", 0.75)
    peer_row("Redis, `Depends`", m, "redis", 1.5)
    if m is not None and m["p99_ratio"] is not None:
        out.append(f"| Redis, `Depends`: p99 ≤ 2× no limiter | {_verdict(m['p99_ratio'] <= 2)}: "
                   f"{m['p99_ratio']:.3f}× ({m['p99_ms']:.2f} ms) |")  # fmt: skip
    return out


def targets_21(meds: dict[Key, Row]) -> list[str]:
    """Issue 21's targets through uvicorn, each met or missed, from the medians above."""
    out = ["| target | result |", "|---|---|"]
    m = _own(meds, "starlette-middleware", "memory", "admit")
    if m is None or m["ratio"] is None:
        out.append(
            "| in memory, Starlette `ThrottleMiddleware` ≥ 0.85× no limiter | not measured |"
        )
    else:
        out.append(f"| in memory, Starlette `ThrottleMiddleware` ≥ 0.85× no limiter | "
                   f"{_verdict(m['ratio'] >= 0.85)}: {m['ratio']:.3f}× |")  # fmt: skip
    for backend, factor in (("memory", 1.3), ("redis", 1.5)):
        m = _own(meds, "fastapi-depends", backend, "admit")
        best = _best_peer(meds, backend, "admit")
        label = f"{backend}, FastAPI `Depends` ≥ {factor}× the best peer's ratio"
        if m is None or m["ratio"] is None or best is None:
            out.append(f"| {label} | not measured |")
            continue
        x = m["ratio"] / best[1]
        out.append(f"| {label} | {_verdict(x >= factor)}: {x:.3f}× ({best[0]}, "
                   f"{best[1]:.2f}× no limiter) |")  # fmt: skip
    m = _own(meds, "fastapi-depends", "redis", "admit")
    if m is not None and m["ratio"] is not None:
        out.append(f"| Redis, `Depends` ≥ 0.70× no limiter | {_verdict(m['ratio'] >= 0.70)}: "
                   f"{m['ratio']:.3f}× |")  # fmt: skip
        out.append(f"| Redis, `Depends`: p99 ≤ 2.5× no limiter | "
                   f"{_verdict(m['p99_ratio'] <= 2.5)}: {m['p99_ratio']:.3f}× |")  # fmt: skip
    return out


def render(rows: list[Row], errors: list[str], header: list[str]) -> str:
    meds = summarize(rows)
    out = list(header)
    out += ["", "## Admit path (the limit is never reached)", "", *table(meds, "admit")]
    if any(k[4] == "refuse" for k in meds):
        out += ["", "## Refuse path (every request gets a 429)", "", *table(meds, "refuse")]
    out += ["", "## Targets (issue 21)", "", *targets_21(meds)]
    out += ["", "## Targets (issue 15)", "", *targets(meds)]
    if errors:
        out += ["", "## Errors", "", *(f"- {e}" for e in errors)]
    return "\n".join(out)
