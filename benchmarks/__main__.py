"""``python -m benchmarks``: traffik against its peers, side by side in one run.

Starts its own Redis and Memcached on loopback, builds one virtual environment per
peer under benchmarks/.venvs (lazily, with uv), and repeats every measurement
``--reps`` times, each repetition running every implementation one after another,
so that ratios are taken under the same machine load. Writes the markdown report
to benchmarks/results/latest.md (and raw results next to it as JSON) and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import typing
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

from benchmarks import _peers
from benchmarks._report import render
from benchmarks._sections import Run, redis_benchmark, run_in_process, run_memory, run_peers

SECTIONS = "ABCDE"
BACKENDS = ("memory", "redis", "memcached")

FULL = {"ops": 20_000, "ops_mem": 400_000, "seconds": 0.25, "warm_s": 0.4, "trials": 3,
        "e_keys": 100_000, "e_seconds": 10.0, "bench_n": 100_000}  # fmt: skip
QUICK = {"ops": 300, "ops_mem": 20_000, "seconds": 0.05, "warm_s": 0.05, "trials": 1,
         "e_keys": 5_000, "e_seconds": 1.0, "bench_n": 5_000}  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--section",
        choices=("micro", "http", "floors"),
        default="micro",
        help="micro: sections A to E (default); http: apps under uvicorn loaded by wrk "
        "(results/http.md); floors: each integration in process against the same app "
        "with its floor limiter (results/floors.md)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few seconds (1 repetition, tiny loops)",
    )
    parser.add_argument(
        "--only", default=SECTIONS, help="sections to run, e.g. A,C (default: all of A,B,C,D,E)"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions (default 3, 1 with --quick)"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="measure traffik and the floors only"
    )
    parser.add_argument(
        "--peers", default=None, help="comma-separated peer venv names to keep (e.g. limits,pyrate)"
    )
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: memory,redis,memcached"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="report path (default results/latest.md or http.md)"
    )
    http = parser.add_argument_group("--section http")
    http.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of one wrk burst (default 2, 1 with --quick)",
    )
    http.add_argument(
        "--bursts",
        type=int,
        default=None,
        help="bursts per app and cell, alternating with its baseline (default 2, 1 with --quick)",
    )
    http.add_argument("--paths", default="admit,refuse", help="comma-separated: admit,refuse")
    http.add_argument(
        "--cells",
        default=None,
        help="comma-separated parts of app names to keep, e.g. depends,middleware",
    )
    http.add_argument(
        "--load",
        choices=("wrk", "python"),
        default="wrk",
        help="wrk (default), or a count-bounded Python client (smoke runs)",
    )
    http.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="requests per cell with --load python (default 2000)",
    )
    floors = parser.add_argument_group("--section floors")
    floors.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 15, 1 with --quick)"
    )
    floors.add_argument(
        "--per-round",
        type=int,
        default=None,
        help="requests per app and round (default 2000, 200 with --quick)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        name = {"http": "http.md", "floors": "floors.md"}.get(args.section, "latest.md")
        args.out = _peers.ROOT / "results" / name
    if args.rounds is None:
        args.rounds = 1 if args.quick else 15
    if args.per_round is None:
        args.per_round = 200 if args.quick else 2000
    if args.rounds < 1 or args.per_round < 1:
        parser.error("--rounds and --per-round must be at least 1.")
    if args.duration is None:
        args.duration = 1.0 if args.quick else 2.0
    if args.bursts is None:
        args.bursts = 1 if args.quick else 2
    args.paths = [p for p in ("admit", "refuse") if p in args.paths.split(",")]
    args.cells = args.cells.split(",") if args.cells else None
    if args.duration < 1 or args.requests < 1 or args.bursts < 1:
        parser.error("--duration must be at least 1 (second), --requests and --bursts at least 1.")
    args.sections = [s for s in SECTIONS if s in args.only.upper()]
    args.backends = [b for b in BACKENDS if b in args.backends.split(",")]
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        parser.error("--reps must be at least 1.")
    return args


def _version(dist: str) -> str:
    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return "not installed"


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        return "not found"
    return out.strip().splitlines()[0] if out.strip() else "?"


def _load() -> str:
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return "?"


@contextlib.contextmanager
def servers(backends: list[str], sections: list[str]) -> typing.Iterator[dict[str, typing.Any]]:
    """Private Redis and Memcached on free loopback ports, for this run only."""
    from traffik.testing.servers import MemcachedServer, RedisServer

    info: dict[str, typing.Any] = {}
    with contextlib.ExitStack() as stack:
        if "redis" in backends or "B" in sections:
            redis = stack.enter_context(RedisServer())
            info.update(redis_host=redis.host, redis_port=redis.port, redis_url=redis.url)
        if "memcached" in backends:
            memcached = stack.enter_context(MemcachedServer(extra_args=("-m", "256")))
            info.update(memcached_host=memcached.host, memcached_port=memcached.port)
        yield info


def ready_peers(args: argparse.Namespace, log: typing.Callable[[str], None],
                only: typing.Container[str] | None = None) -> list[_peers.Peer]:  # fmt: skip
    """The peers asked for (and in ``only``, if given), their environments built."""
    peers: list[_peers.Peer] = []
    keep = args.peers.split(",") if args.peers else None
    for peer in _peers.peers():
        if (keep is not None and peer.venv not in keep) or (only and peer.venv not in only):
            continue
        why = _peers.ensure_venv(peer, log)
        if why is None:
            peers.append(peer)
        else:
            log(f"skipping {peer.name}: {why}")
    return peers


def header(args: argparse.Namespace, argv: list[str], title: str, what: str, elapsed: float,
           load_before: str, versions: dict[str, str]) -> list[str]:  # fmt: skip
    """The report's title, command, machine, versions and bounds."""
    lines = [
        f"# {title}\n",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `python -m benchmarks "
        f"{' '.join(argv)}`, {args.reps} {what}, medians shown; {elapsed:.0f} s in all.\n",
        f"Machine: {os.cpu_count()} cores shared with other workloads (load average {load_before} "
        f"before, {_load()} after), so absolute numbers are noisy: compare the ratios, taken side "
        f"by side in the same {what.split('(')[0].rstrip()}. Python {platform.python_version()} "
        f"on {platform.system()}.\n",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in sorted(versions.items())) + ".\n",
    ]
    return lines


def main_http(args: argparse.Namespace, argv: list[str]) -> int:
    """``--section http``: apps under uvicorn, loaded by wrk; results/http.md and .json."""
    from benchmarks import _http, _http_report

    started, load_before = time.perf_counter(), _load()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    peers = [] if args.no_peers else ready_peers(args, log, _http.PEER_APPS)
    with servers(args.backends, []) as info:
        state = _http.run(args, info, peers, log)
    versions = _http.versions()
    for backend, cmd in (
        ("redis", ["redis-server", "--version"]),
        ("memcached", ["memcached", "-V"]),
    ):
        if backend in args.backends:
            versions[backend] = _tool_version(cmd)
    for peer in peers:
        versions[peer.name] = " ".join(r for r in peer.requirements if r.startswith(
            ("traffik", "slowapi", "fastapi-limiter")))  # fmt: skip
    top = header(args, argv, "traffik through a real server (--section http)",
                 "round(s)", time.perf_counter() - started, load_before, versions)  # fmt: skip
    load = (f"wrk, 1 thread, {_http.CONNECTIONS} connections, a {_http.WARM_S:g} s warm-up, "
            f"then {args.bursts} burst(s) of {args.duration:g} s per app" if args.load == "wrk"
            else f"a count-bounded Python client, {_http.CONNECTIONS} connections, "
            f"{args.bursts} burst(s) of {args.requests} requests per app")  # fmt: skip
    top.append(
        f"Setup: each app in its own uvicorn process (uvloop, httptools, 1 worker, no access "
        f"log), {state.pinning}; load: {load}; one client address (so one rate-limit key). "
        "Each cell is served beside its framework's app without a limiter and the load "
        "alternates between the two (ABBA): *×no limiter* is the cell's requests/s over that "
        "baseline's in the same pair, *p99 ×no limiter* likewise; medians over rounds (the "
        "baseline rows: medians over every pair). Peers are FastAPI apps, compared with FastAPI "
        "without a limiter. Admit path: a limit never reached; refuse path: 1 per hour, spent "
        "in the warm-up, so every measured request gets a 429 (non-2xx = requests).\n"
    )
    if args.quick or args.load == "python":
        top.append("**Smoke run: not a measurement.**\n")
    report = _http_report.render(state.rows, state.errors, top)
    _http.write(state, report, args.out, {"versions": versions, "argv": argv,
                                          "duration_s": args.duration, "bursts": args.bursts,
                                          "load": args.load})  # fmt: skip
    print(report)
    log(f"wrote {args.out}")
    return 0


def main_floors(args: argparse.Namespace, argv: list[str]) -> int:
    """``--section floors``: in process, each integration against its floor app."""
    from benchmarks import _floors

    started, load_before = time.perf_counter(), _load()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    rows = _floors.run(args.per_round, args.rounds, args.paths, args.cells, log)
    versions = {d: _version(d) for d in ("starlette", "fastapi")}
    top = header(args, argv, "traffik against its floors, in process (--section floors)",
                 "round(s)", time.perf_counter() - started, load_before, versions)  # fmt: skip
    top.append(_floors.__doc__.split("\n\n", 1)[1].replace("\n", " ").strip() + "\n")
    top.append(
        "*×floor* is the share of the floor app's throughput (1.00× = as fast as the "
        "floor); *added over bare* is the app's µs/request minus the same framework's app "
        "without a limiter, in the same round (median), and *floor's added* the floor's. "
        "*Opcodes added* counts the Python opcodes one request executes beyond the bare "
        "app's (`sys.settrace`, after the timings): unlike the times, machine load does "
        "not move it, but C code is not counted and an opcode is not a fixed time.\n"
    )
    if args.quick:
        top.append("**Smoke run: not a measurement.**\n")
    report = _floors.render(rows, top)
    _floors.write(rows, report, args.out, {"argv": argv, "versions": versions,
                                           "rounds": args.rounds, "per_round": args.per_round})  # fmt: skip
    print(report)
    log(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.section == "http":
        return main_http(args, argv)
    if args.section == "floors":
        return main_floors(args, argv)
    cfg = dict(QUICK if args.quick else FULL)
    started = time.perf_counter()
    load_before = _load()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    peers: list[_peers.Peer] = []
    if not args.no_peers and set(args.sections) & set("ACDE"):
        peers = ready_peers(args, log)

    with servers(args.backends, args.sections) as info:
        run = Run(cfg, info, args.backends, log)
        if "redis" in args.backends:
            run.versions["redis-server"] = _tool_version(["redis-server", "--version"])
        if "memcached" in args.backends:
            run.versions["memcached"] = _tool_version(["memcached", "-V"])
        for rep in range(args.reps):
            log(f"repetition {rep + 1}/{args.reps}")
            # Timings (A, C) every repetition; the race check (D) is about correctness: once.
            sections = [s for s in args.sections if s in "AC" or (s == "D" and rep == 0)]
            if sections:
                log(f"  traffik (dev) and floors: {','.join(sections)}")
                run_in_process(run, sections, rep)
                run_peers(run, peers, sections, rep)
            if "E" in args.sections and rep == 0:
                # RSS growth is nearly deterministic: one repetition, in fresh processes.
                log("  memory per 100k keys (fresh processes)")
                run_memory(run, peers, rep)
        if "B" in args.sections and "redis_port" in info:
            log("redis-benchmark")
            redis_benchmark(run)
    for dist in ("starlette", "fastapi", "redis", "aiomcache"):
        run.versions.setdefault(dist, _version(dist))
    elapsed = time.perf_counter() - started
    top = header(args, argv, "traffik benchmarks", "repetition(s)", elapsed, load_before,
                 run.versions)  # fmt: skip
    top.append(f"Loop bounds: {json.dumps(cfg)}.\n")
    if args.quick:
        top.append("**Quick run: smoke-test numbers, not measurements.**\n")
    report = render(run, top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    raw = {"a": run.a, "b": run.b, "c": run.c, "d": run.d, "e": run.e, "notes": run.notes,
           "errors": run.errors, "versions": run.versions, "cfg": cfg}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(report)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
