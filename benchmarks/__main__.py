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
        "--out", type=Path, default=_peers.ROOT / "results" / "latest.md", help="report path"
    )
    args = parser.parse_args(argv)
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


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    cfg = dict(QUICK if args.quick else FULL)
    started = time.perf_counter()
    load_before = _load()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    peers: list[_peers.Peer] = []
    if not args.no_peers and set(args.sections) & set("ACDE"):
        keep = args.peers.split(",") if args.peers else None
        for peer in _peers.peers():
            if keep is not None and peer.venv not in keep:
                continue
            why = _peers.ensure_venv(peer, log)
            if why is None:
                peers.append(peer)
            else:
                log(f"skipping {peer.name}: {why}")

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
    header = [
        "# traffik benchmarks\n",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `python -m benchmarks "
        f"{' '.join(sys.argv[1:] if argv is None else argv)}`, {args.reps} repetition(s), medians "
        f"shown; {elapsed:.0f} s in all.\n",
        f"Machine: {os.cpu_count()} cores shared with other workloads (load average {load_before} "
        f"before, {_load()} after), so absolute numbers are noisy: compare the ratios, taken side "
        f"by side in the same repetition. Python {platform.python_version()} on {platform.system()}.\n",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in sorted(run.versions.items())) + ".\n",
        f"Loop bounds: {json.dumps(cfg)}.\n",
    ]
    if args.quick:
        header.append("**Quick run: smoke-test numbers, not measurements.**\n")
    report = render(run, header)
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
