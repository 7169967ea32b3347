"""Medians over repetitions, ratios, and the markdown report."""

from __future__ import annotations

import statistics
import typing
from collections import defaultdict

from benchmarks._sections import FLOOR, OWN, Run

Row = dict[str, typing.Any]
STRATEGY_ORDER = ("fw", "fw-seed", "swl", "swc", "tb", "tbd", "lb", "lbq", "gcra")
METRICS_A = ("rate", "p50_us", "p99_us", "rtt", "commands", "server_us", "rate64", "keys",
             "floor_ratio")  # fmt: skip


def _median(rows: list[Row], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def medians_a(run: Run) -> dict[tuple[str, str, str, str], Row]:
    groups: dict[tuple[str, str, str, str], list[Row]] = defaultdict(list)
    for r in run.a:
        groups[(r["impl"], r["backend"], r["strategy"], r["keyspace"])].append(r)
    out: dict[tuple[str, str, str, str], Row] = {}
    for k, rows in groups.items():
        m: Row = {metric: _median(rows, metric) for metric in METRICS_A}
        m["reps"] = len(rows)
        errs = [r["rate64_error"] for r in rows if r.get("rate64_error")]
        if errs:
            m["rate64_error"] = errs[0]
        out[k] = m
    return out


def _fmt_rate(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def _keys(keyspace: str, m: Row) -> str:
    if keyspace == "hot":
        return "hot"
    n = int(m.get("keys") or 0)
    return "10k" if n >= 10_000 else f"10k (warmed {n})"


def _sort_key(strategy: str) -> int:
    return STRATEGY_ORDER.index(strategy) if strategy in STRATEGY_ORDER else 99


def best_peer(meds: dict[tuple[str, str, str, str], Row], backend: str, strategy: str, keyspace: str,
              metric: str = "rate") -> tuple[str | None, float | None]:  # fmt: skip
    base = "fw" if strategy == "fw-seed" else strategy
    best: tuple[str | None, float | None] = (None, None)
    for (impl, b, s, k), m in meds.items():
        if impl in (OWN, FLOOR) or b != backend or s != base or k != keyspace:
            continue
        v = m.get(metric)
        if v is not None and (best[1] is None or v > best[1]):
            best = (impl, v)
    return best


def section_a(run: Run, lines: list[str]) -> None:
    meds = medians_a(run)
    lines.append("## A. Decisions per second, per backend and strategy\n")
    lines.append(
        "Rate 100/s per key. *hot*: every decision on one key (after the first 100 in a window, "
        "the rejection path); *10k*: keys taken round-robin from 10,000 pre-warmed keys (the "
        "admission path). Sequential: one coroutine awaiting each decision. ×floor is against "
        "the fixed-window floor of the same backend; ×best peer against the fastest peer "
        "offering the same strategy. traffik's ×floor is the median of per-repetition ratios to a "
        "floor case measured just before it. Redis *RTT* is round trips per decision (server "
        "`total_reads_processed`), *cmds* the commands the server ran per decision (commands "
        "called inside a script included; INFO `commandstats`) and *script µs* the time the "
        "server spent in EVAL/EVALSHA per decision (`commandstats` usec, the commands a script "
        "calls included; — without scripts); Memcached *cmds* is storage "
        "operations per decision (`stats`). *@64*: throughput with 64 concurrent coroutines.\n"
    )
    for backend in run.backends:
        rows = {k: m for k, m in meds.items() if k[1] == backend}
        if not rows:
            continue
        remote = backend != "memory"
        lines.append(f"### {backend}\n")
        head = "| impl | strategy | keys | ops/s | ×floor | best peer | ×best peer |"
        if remote:
            head += " p50 µs | p99 µs | RTT | cmds | script µs | @64 ops/s | @64 ×best peer |"
        lines.append(head)
        lines.append("|" + "---|" * (head.count("|") - 1))
        own = sorted(
            [(k, m) for k, m in rows.items() if k[0] in (OWN, FLOOR)],
            key=lambda km: (km[0][0] != FLOOR, _sort_key(km[0][2]), km[0][3] != "hot"),
        )
        for (impl, _, strategy, keyspace), m in own:
            floor = meds.get((FLOOR, backend, "fw", keyspace), {}).get("rate")
            peer, peer_rate = (
                best_peer(meds, backend, strategy, keyspace) if impl == OWN else (None, None)
            )
            to_floor = (
                f"{m['floor_ratio']:.2f}×" if m.get("floor_ratio") else _ratio(m["rate"], floor)
            )
            cells = [impl, strategy, _keys(keyspace, m), _fmt_rate(m["rate"]), to_floor,
                     f"{peer} {_fmt_rate(peer_rate)}" if peer else "—",
                     _ratio(m["rate"], peer_rate) if impl == OWN else "—"]  # fmt: skip
            if remote:
                _, peer64 = best_peer(meds, backend, strategy, keyspace, "rate64")
                cells += [_fmt(m["p50_us"]), _fmt(m["p99_us"]), _fmt(m["rtt"], 2), _fmt(m["commands"], 2),
                          _fmt(m["server_us"]), _fmt_rate(m["rate64"]), _ratio(m["rate64"], peer64) if impl == OWN else "—"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        peer_rows = sorted(
            [(k, m) for k, m in rows.items() if k[0] not in (OWN, FLOOR)],
            key=lambda km: (km[0][0], _sort_key(km[0][2]), km[0][3] != "hot"),
        )
        if peer_rows:
            lines.append(f"Peers on {backend}:\n")
            head = "| peer | strategy | keys | ops/s |"
            if remote:
                head += " p50 µs | p99 µs | RTT | cmds | script µs | @64 ops/s |"
            lines.append(head)
            lines.append("|" + "---|" * (head.count("|") - 1))
            for (impl, _, strategy, keyspace), m in peer_rows:
                cells = [impl, strategy, _keys(keyspace, m), _fmt_rate(m["rate"])]
                if remote:
                    at64 = (
                        _fmt_rate(m["rate64"])
                        if m.get("rate64")
                        else "fails: " + str(m.get("rate64_error", "—"))[:60]
                    )
                    cells += [
                        _fmt(m["p50_us"]),
                        _fmt(m["p99_us"]),
                        _fmt(m["rtt"], 2),
                        _fmt(m["commands"], 2),
                        _fmt(m["server_us"]),
                        at64,
                    ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")


def medians_c(run: Run) -> dict[tuple[str, str, str], Row]:
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in run.c:
        groups[(r["impl"], r["backend"], r["app"])].append(r)
    return {
        k: {
            "us": _median(v, "us"),
            "n": _median(v, "n"),
            "rtt": _median(v, "rtt"),
            "statuses": v[0]["statuses"],
        }
        for k, v in groups.items()
    }


def overheads(run: Run) -> dict[tuple[str, str, str], float]:
    """Per (impl, backend, app): median over repetitions of (throttled − bare) µs, same rep."""
    by_rep: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
    for r in run.c:
        by_rep[(r["impl"], r["backend"], r["rep"])][r["app"]] = r["us"]
    diffs: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (impl, backend, _), apps in by_rep.items():
        for app, us in apps.items():
            if app.endswith("-bare"):
                continue
            bare = apps.get(app.split("-")[0] + "-bare")
            if bare is not None:
                diffs[(impl, backend, app)].append(us - bare)
    return {k: statistics.median(v) for k, v in diffs.items()}


def section_c(run: Run, lines: list[str]) -> None:
    meds = medians_c(run)
    over = overheads(run)
    if not meds:
        return
    lines.append("## C. End-to-end overhead per request (ASGI in-process)\n")
    lines.append(
        "One GET through the whole app, the ASGI scope/receive/send built by hand (no HTTP "
        "client or server), sequentially, limit never reached. Apps are timed in 3 interleaved "
        "rounds (median per app). *overhead* = throttled app − the bare app of the same "
        "framework, measured in the same process and repetition. "
        "×best peer = the best peer's overhead / ours (above 1: we add less).\n"
    )
    for backend in run.backends:
        keys = [k for k in meds if k[1] == backend]
        if not keys:
            continue
        peer_over = [v for (impl, b, _), v in over.items() if b == backend and impl != OWN]
        best = min(peer_over) if peer_over else None
        lines.append(f"### {backend}\n")
        lines.append(
            "| impl | app | µs/request | overhead µs | ×best peer | Redis RTT/request | statuses |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for k in sorted(keys, key=lambda k: (k[0] != OWN, k[0], k[2])):
            m = meds[k]
            o = over.get(k)
            ratio = _ratio(best, o) if (k[0] == OWN and o is not None and o > 0) else "—"
            statuses = ", ".join(f"{s}×{n}" for s, n in m["statuses"].items())
            rtt = _fmt(m["rtt"], 2) if m.get("rtt") is not None else "—"
            lines.append(
                f"| {k[0]} | {k[2]} | {_fmt(m['us'])} | {_fmt(o)} | {ratio} | {rtt} | {statuses} |"
            )
        lines.append("")


def section_d(run: Run, lines: list[str]) -> None:
    if not run.d:
        return
    lines.append("## D. Race check: limit 32, 64 concurrent hits\n")
    lines.append(
        "Each trial sends 64 concurrent decisions for one fresh key with a limit of 32 per "
        "hour, through 1 or 2 backend instances sharing the server. Correct is exactly 32 in "
        "every trial. A cell shows the admitted counts over all trials (run in the first repetition only); "
        "✗ marks a wrong count, *E* decisions that raised instead of answering.\n"
    )
    cells: dict[tuple[str, str, int], dict[str, str]] = defaultdict(dict)
    strategies: set[str] = set()
    merged: dict[tuple[str, str, int, str], tuple[list[int], int]] = {}
    for r in run.d:
        k = (r["impl"], r["backend"], r["instances"], r["strategy"])
        counts, errs = merged.get(k, ([], 0))
        merged[k] = (counts + list(r["allowed"]), errs + sum(r.get("errors", [])))
    for (impl, backend, inst, strategy), (counts, errs) in merged.items():
        strategies.add(strategy)
        lo, hi = min(counts), max(counts)
        text = str(lo) if lo == hi else f"{lo}–{hi}"
        if lo != 32 or hi != 32:
            text += " ✗"
        if errs:
            text += f" E{errs}"
        cells[(impl, backend, inst)][strategy] = text
    order = sorted(strategies, key=_sort_key)
    lines.append("| impl | backend | instances | " + " | ".join(order) + " |")
    lines.append("|" + "---|" * (3 + len(order)))
    for impl, backend, inst in sorted(cells, key=lambda k: (k[0] != OWN, k[0], k[1], k[2])):
        row = cells[(impl, backend, inst)]
        lines.append(
            f"| {impl} | {backend} | {inst} | " + " | ".join(row.get(s, "") for s in order) + " |"
        )
    lines.append("")


def section_e(run: Run, lines: list[str]) -> None:
    if not run.e:
        return
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in run.e:
        groups[(r["impl"], r["strategy"])].append(r)
    lines.append("## E. Memory per 100k keys (in-memory backends)\n")
    lines.append(
        "Growth of the process RSS while one fresh process makes one decision for each of up "
        "to 100,000 distinct keys (bounded in time: fewer keys are extrapolated), the key "
        "strings themselves allocated beforehand.\n"
    )
    floor = (
        statistics.median([r["mb_per_100k"] for r in groups.get((FLOOR, "fw"), [])] or [0]) or None
    )
    lines.append(
        "| impl | strategy | keys measured (< 100000: extrapolated) | MB per 100k keys | ×floor |"
    )
    lines.append("|---|---|---|---|---|")
    for impl, strategy in sorted(
        groups, key=lambda k: (k[0] != FLOOR, k[0] != OWN, k[0], _sort_key(k[1]))
    ):
        rows = groups[(impl, strategy)]
        mb = statistics.median([r["mb_per_100k"] for r in rows])
        keys = int(statistics.median([r["keys"] for r in rows]))
        lines.append(f"| {impl} | {strategy} | {keys} | {mb:.1f} | {_ratio(mb, floor)} |")
    lines.append("")


def section_b(run: Run, lines: list[str]) -> None:
    if not run.b:
        return
    lines.append("## B. redis-benchmark on the same server (physical reference)\n")
    lines.append("| command | clients | requests/s | p50 ms |")
    lines.append("|---|---|---|---|")
    for r in run.b:
        lines.append(
            f"| {r['command']} | {r['clients']} | {_fmt_rate(r['rps'])} | {_fmt(r['p50_ms'], 3)} |"
        )
    meds = medians_a(run)
    seq = [r["rps"] for r in run.b if r["clients"] == 1 and r["command"].startswith("EVALSHA")]
    ours = meds.get((OWN, "redis", "fw", "10k"), {}).get("rate")
    if seq and ours:
        lines.append(
            f"\ntraffik fixed window on Redis, sequential (10k keys): {_fmt_rate(ours)} decisions/s = "
            f"{ours / seq[0]:.2f}× redis-benchmark's EVALSHA with one client ({_fmt_rate(seq[0])}/s, C, no Python)."
        )
    lines.append("")


def targets(run: Run, lines: list[str]) -> None:
    meds = medians_a(run)
    over = overheads(run)
    out: list[str] = []
    for keyspace in ("hot", "10k"):
        m = meds.get((OWN, "memory", "fw", keyspace))
        floor = meds.get((FLOOR, "memory", "fw", keyspace))
        if m is None:
            continue
        peer, rate = best_peer(meds, "memory", "fw", keyspace)
        if rate:
            r = m["rate"] / rate
            out.append(f"- in-memory fixed window ({keyspace}) ≥ 3× best peer: **{'met' if r >= 3 else 'missed'}** "
                       f"({r:.2f}× {peer})")  # fmt: skip
        if m.get("floor_ratio") or (floor and floor.get("rate")):
            r = m["floor_ratio"] or m["rate"] / floor["rate"]  # type: ignore[index]
            out.append(
                f"- in-memory fixed window ({keyspace}) ≥ 0.5× dict floor: **{'met' if r >= 0.5 else 'missed'}** ({r:.2f}×)"
            )
    redis_rows = [(k, m) for k, m in meds.items() if k[0] == OWN and k[1] == "redis"]
    if redis_rows:
        bad_rtt = [
            f"{k[2]}/{k[3]} {m['rtt']:.2f}"
            for k, m in redis_rows
            if m["rtt"] is None or m["rtt"] > 1.05
        ]
        out.append(f"- every Redis strategy 1 round trip: **{'met' if not bad_rtt else 'missed'}**"
                   + (f" ({', '.join(bad_rtt)})" if bad_rtt else ""))  # fmt: skip
        slow = []
        for (_, _, s, k), m in redis_rows:
            floor = meds.get((FLOOR, "redis", "fw", k), {}).get("rate")
            ratio = m.get("floor_ratio") or (m["rate"] / floor if floor else None)
            if ratio is not None and ratio < 0.9:
                slow.append(f"{s}/{k} {ratio:.2f}×")
        out.append(f"- every Redis strategy ≥ 0.9× bare EVALSHA floor (sequential): **{'met' if not slow else 'missed'}**"
                   + (f" ({', '.join(slow)})" if slow else ""))  # fmt: skip
    for (impl, backend, app), o in sorted(over.items()):
        if impl == OWN and backend == "memory" and app.startswith("starlette"):
            out.append(f"- end-to-end overhead in memory ≤ 15 µs/request on Starlette ({app}): "
                       f"**{'met' if o <= 15 else 'missed'}** ({o:.1f} µs)")  # fmt: skip
    if out:
        lines.append("## Targets (reported, not asserted)\n")
        lines.extend(out)
        lines.append("")


def render(run: Run, header: list[str]) -> str:
    lines = list(header)
    targets(run, lines)
    section_a(run, lines)
    section_b(run, lines)
    section_c(run, lines)
    section_d(run, lines)
    section_e(run, lines)
    if run.notes:
        lines.append("## Notes\n")
        lines.extend(f"- {n}" for n in run.notes)
        lines.append("")
    if run.errors:
        lines.append("## Errors raised by implementations (findings, not harness failures)\n")
        lines.extend(f"- {e[:300]}" for e in run.errors)
        lines.append("")
    return "\n".join(lines)
