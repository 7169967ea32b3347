"""``--section floors``: each integration's throughput as a share of the same app with its floor.

In process: every app (traffik's throttled apps, the bare apps and the floor apps
of ``benchmarks/peers/floor_apps.py``) is an ASGI callable called directly, with
sequential ``GET /`` from one client address (one key). A round measures every
cell once, in an order rotated by the round: the bare app of its framework, then
the floor app and the cell alternately (floor, cell, cell, floor; ``--per-round``
requests each in all), so that a change of machine load weighs on both alike. The
share of a cell in a round is the floor's µs/request over the cell's (the
throughput ratio); the report gives the median over rounds. Times are this
process's CPU time (the machine is shared: waiting for a core is not a cost). Admit path: a limit never reached; refuse path: a limit of 1 per hour,
spent in the warm-up, so every timed request is refused (429).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
import typing
from pathlib import Path

import floor_apps
import traffik_dev
from _asgi import lifespan_start, make_caller

from benchmarks import _peers  # noqa: F401  (puts peers/ on sys.path)
from benchmarks._sections import OWN

#: (framework, traffik app, floor app, how the throttle is applied, target share).
CELLS = (
    ("starlette", "starlette-middleware", "starlette-floor", "ThrottleMiddleware", 0.75),
    ("starlette", "starlette-endpoint", "starlette-floor", "await throttle(request)", 0.75),
    ("starlette", "starlette-decorator", "starlette-floor", "@throttled", 0.75),
    ("fastapi", "fastapi-middleware", "fastapi-floor", "ThrottleMiddleware", 0.90),
    ("fastapi", "fastapi-depends", "fastapi-floor-depends", "Depends(throttle)", 0.95),
    ("fastapi", "fastapi-decorator", "fastapi-floor-depends", "@throttled", 0.95),
)
FLOOR_LABEL = {
    "starlette-floor": "pure-ASGI limiter",
    "fastapi-floor": "pure-ASGI limiter",
    "fastapi-floor-depends": "FastAPI dependency",
}
WARMUP = 200
Log = typing.Callable[[str], None]


def build(refuse: bool, only: list[str] | None) -> dict[str, typing.Any]:
    """The apps of one path: bare, floors and traffik's (memory), by name."""
    rate = traffik_dev.REFUSE if refuse else traffik_dev.ADMIT
    apps: dict[str, typing.Any] = {}
    for factory in (traffik_dev.starlette_apps, traffik_dev.fastapi_apps):
        built, missing = factory("memory", {}, rate)
        if missing:
            raise RuntimeError(f"traffik apps missing: {missing}")
        apps.update(built)
    apps.update(floor_apps.apps(refuse))
    keep = {"starlette-bare", "fastapi-bare", "starlette-raise", "fastapi-raise"}
    for _, app, floor, _, _ in CELLS:
        if not only or any(o in app for o in only):
            keep |= {app, floor}
    return {name: app for name, app in apps.items() if name in keep}


async def _time(call: typing.Callable[[], typing.Awaitable[int]], n: int) -> tuple[float, int]:
    """CPU µs per request over ``n`` sequential requests, and the last status.

    CPU time of this process (``time.process_time``), not wall time: on a machine
    shared with other work, the time this process waits for a core is not its cost.
    """
    status = 0
    start = time.process_time()
    for _ in range(n):
        status = await call()
    return (time.process_time() - start) / n * 1e6, status


async def _abba(
    first: typing.Callable[[], typing.Awaitable[int]],
    second: typing.Callable[[], typing.Awaitable[int]],
    n: int,
) -> tuple[float, float, int, int]:
    """µs/request of two apps timed A B B A (``n`` requests each in all), and statuses."""
    half = max(1, n // 2)
    a1, sa = await _time(first, half)
    b1, sb = await _time(second, half)
    b2, sb2 = await _time(second, half)
    a2, sa2 = await _time(first, half)
    if sa != sa2 or sb != sb2:
        raise RuntimeError(f"an app changed its answer during the round: {sa, sa2, sb, sb2}")
    return (a1 + a2) / 2, (b1 + b2) / 2, sa, sb


#: Requests over which the Python opcodes of an app are counted.
OPCODE_REQUESTS = 20


async def count_opcodes(call: typing.Callable[[], typing.Awaitable[int]]) -> float:
    """Python opcodes executed per request (``sys.settrace``): a count that machine load
    does not change, beside the timings that it does. C code (dict lookups, the
    event loop) is not counted; an opcode is not a fixed time."""
    count = 0

    def tracer(frame: typing.Any, event: str, arg: typing.Any) -> typing.Any:
        nonlocal count
        frame.f_trace_opcodes = True
        if event == "opcode":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        for _ in range(OPCODE_REQUESTS):
            await call()
    finally:
        sys.settrace(None)
    return count / OPCODE_REQUESTS


async def measure(
    apps: dict[str, typing.Any], requests: int, rounds: int, log: Log
) -> dict[str, typing.Any]:
    """Per cell and round: the floor's and the cell's µs/request, timed A B B A; the bare
    app of the framework right before. Cells in an order rotated by the round."""
    callers: dict[str, typing.Callable[[], typing.Awaitable[int]]] = {}
    shutdowns = []
    try:
        for name, app in apps.items():
            state, shutdown = await lifespan_start(app)
            shutdowns.append(shutdown)
            callers[name] = make_caller(app, state)
        for call in callers.values():
            for _ in range(WARMUP):
                await call()
        cells = [c for c in CELLS if c[1] in callers]
        out: dict[str, typing.Any] = {c[1]: [] for c in cells}
        out["opcodes"] = {name: await count_opcodes(call) for name, call in callers.items()}
        for rnd in range(rounds):
            gc.collect()
            shift = rnd % len(cells)
            for framework, app, floor, _, _ in cells[shift:] + cells[:shift]:
                bare, _ = await _time(callers[f"{framework}-bare"], requests // 2)
                raised, raised_status = await _time(callers[f"{framework}-raise"], requests // 2)
                if raised_status != 429:
                    raise RuntimeError(f"{framework}-raise answered {raised_status}, not 429")
                floor_us, cell_us, floor_status, status = await _abba(
                    callers[floor], callers[app], requests
                )
                out[app].append({"bare": bare, "raise": raised, "floor": floor_us, "cell": cell_us,
                                 "status": status, "floor_status": floor_status})  # fmt: skip
            log(f"    round {rnd + 1}/{rounds} done")
        return out
    finally:
        for shutdown in shutdowns:
            await shutdown()


def summarize(times: dict[str, typing.Any], path: str) -> list[dict[str, typing.Any]]:
    """One row per cell: medians of µs/request, and the median share of its floor."""
    rows = []
    ops = times["opcodes"]
    for framework, app, floor, through, target in CELLS:
        if app not in times:
            continue
        rs = times[app]
        shares = [r["floor"] / r["cell"] for r in rs]
        share = statistics.median(shares)
        rows.append({
            "path": path, "framework": framework, "through": through, "app": app,
            "floor": floor, "floor_kind": FLOOR_LABEL[floor],
            "us": statistics.median(r["cell"] for r in rs),
            "floor_us": statistics.median(r["floor"] for r in rs),
            "bare_us": statistics.median(r["bare"] for r in rs),
            "added_us": statistics.median(r["cell"] - r["bare"] for r in rs),
            "floor_added_us": statistics.median(r["floor"] - r["bare"] for r in rs),
            "share": share, "shares": shares, "target": target, "met": share >= target,
            "raise_us": statistics.median(r["raise"] for r in rs),
            "raise_share": statistics.median(r["raise"] / r["cell"] for r in rs),
            "status": rs[-1]["status"], "floor_status": rs[-1]["floor_status"],
            "opcodes": ops[app], "floor_opcodes": ops[floor],
            "bare_opcodes": ops[f"{framework}-bare"],
        })  # fmt: skip
    return rows


def render(rows: list[dict[str, typing.Any]], top: list[str]) -> str:
    lines = [*top]
    for path in ("admit", "refuse"):
        chosen = [r for r in rows if r["path"] == path]
        if not chosen:
            continue
        lines += [
            f"\n## {path.capitalize()} path\n",
            "| integration | floor | ×floor (throughput) | target | µs/request | floor µs | "
            "added over bare µs | floor's added µs | opcodes added (floor's) | status |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in chosen:
            verdict = "met" if r["met"] else "**missed**"
            lines.append(
                f"| {r['framework']}, {r['through']} | {r['floor_kind']} | "
                f"{r['share']:.2f}× | ≥ {r['target']:.2f}× {verdict} | {r['us']:.1f} | "
                f"{r['floor_us']:.1f} | {r['added_us']:.1f} | {r['floor_added_us']:.1f} | "
                f"{r['opcodes'] - r['bare_opcodes']:.0f} "
                f"({r['floor_opcodes'] - r['bare_opcodes']:.0f}) | "
                f"{r['status']} (floor {r['floor_status']}) |"
            )
    refused = [r for r in rows if r["path"] == "refuse"]
    if refused:
        lines += [
            "\nThe floor answers a 429 before the app runs. With traffik a refusal goes "
            "through the app's exception handlers (its contract), so the refused rows are "
            "also compared with the same framework's app refusing every request itself "
            "(an endpoint raising `HTTPException(429)`, no limiter):\n",
            "| integration | ×the app's own 429 (throughput) | µs/request | app's own 429 µs |",
            "|---|---|---|---|",
        ]
        for r in refused:
            lines.append(f"| {r['framework']}, {r['through']} | {r['raise_share']:.2f}× | "
                         f"{r['us']:.1f} | {r['raise_us']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def run(requests: int, rounds: int, paths: list[str], only: list[str] | None,
        log: Log) -> list[dict[str, typing.Any]]:  # fmt: skip
    """Both paths; the rows of the report."""
    rows: list[dict[str, typing.Any]] = []
    for path in paths:
        log(f"floors: {path} path, {rounds} rounds of {requests} requests per app")
        apps = build(path == "refuse", only)
        times = asyncio.run(measure(apps, requests, rounds, log))
        rows += summarize(times, path)
    return rows


def write(rows: list[dict[str, typing.Any]], report: str, out: Path,
          extra: dict[str, typing.Any]) -> None:  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    out.with_suffix(".json").write_text(
        json.dumps({"rows": rows, "impl": OWN, **extra}, indent=1) + "\n"
    )
