"""``python -m benchmarks.leases``: the cost of a concurrency slot, taken and released.

For each backend (memory, Redis, a 3-master Redis Cluster, Memcached; the servers are
started here on loopback), one sequential client repeats:

- **slot**: ``take_lease`` then ``release_lease`` (what a ConcurrencyThrottle pays per
  request: two round trips on a network backend);
- **floor**: one ``decide`` of a fixed-window rate on the same backend and key space
  (what a rate throttle pays: one round trip), measured just before it.

Each repetition runs the floor then the slot for every backend, ``--reps`` times;
the report gives medians of the per-operation time and of the slot/floor ratio.
Writes ``benchmarks/results/leases.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import time
import typing
import uuid
from pathlib import Path

from traffik.backends.inmemory import InMemoryBackend
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy

RESULTS = Path(__file__).parent / "results" / "leases.md"


async def _time_slots(backend: typing.Any, n: int) -> float:
    key = f"bench-{uuid.uuid4().hex[:6]}"
    start = time.perf_counter()
    for i in range(n):
        holder = f"h{i}"
        await backend.take_lease(key, holder, 1_000_000, 30_000)
        await backend.release_lease(key, holder)
    return (time.perf_counter() - start) / n


async def _time_floor(backend: typing.Any, n: int) -> float:
    key = f"bench-{uuid.uuid4().hex[:6]}"
    strategy, rate = FixedWindowStrategy(), Rate(limit=1_000_000_000, seconds=60)
    start = time.perf_counter()
    for _ in range(n):
        await backend.decide(key, strategy, rate, 1)
    return (time.perf_counter() - start) / n


async def measure(
    backends: dict[str, typing.Any], n: int, reps: int
) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {
        name: {"floor": [], "slot": []} for name in backends
    }
    for backend in backends.values():
        await backend.initialize()
    try:
        for backend in backends.values():  # warm up
            await _time_floor(backend, max(1, n // 10))
            await _time_slots(backend, max(1, n // 10))
        for _ in range(reps):
            for name, backend in backends.items():
                results[name]["floor"].append(await _time_floor(backend, n))
                results[name]["slot"].append(await _time_slots(backend, n))
    finally:
        for backend in backends.values():
            with contextlib.suppress(Exception):
                await backend.reset()
            await backend.close()
    return results


def render(results: dict[str, dict[str, list[float]]], n: int, reps: int, command: str) -> str:
    lines = [
        "# Concurrency slots: take + release, against one rate decision",
        "",
        f"`{command}` on {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other work (load average before: "
        f"{os.getloadavg()[0]:.2f}); {n} operations per measurement, median of {reps} "
        "repetitions, one sequential client, servers on loopback.",
        "",
        "| backend | rate decision (floor) | slot: take + release | slot / floor |",
        "|---|---:|---:|---:|",
    ]
    for name, row in results.items():
        floor = statistics.median(row["floor"])
        slot = statistics.median(row["slot"])
        ratios = [s / f for s, f in zip(row["slot"], row["floor"], strict=True)]
        lines.append(
            f"| {name} | {floor * 1e6:.1f} µs | {slot * 1e6:.1f} µs | "
            f"{statistics.median(ratios):.2f}× |"
        )
    lines += [
        "",
        "A slot costs two backend calls (take before the app runs, release when the",
        "response is over), a rate decision one. On Redis each call is one script",
        "(EVALSHA) round trip, as a decision is; on Memcached each lease call is a",
        "`gets` and a `cas` (two round trips) where a fixed-window decision is mostly",
        "one `incr`. In memory, the slot also prunes and counts its key's leases.",
        "Renewals (every lease / 3) only touch responses longer than a third of their",
        "lease.",
        "",
    ]
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    from traffik.memcached import MemcachedBackend
    from traffik.redis import RedisBackend
    from traffik.testing.servers import MemcachedServer, RedisClusterServer, RedisServer

    with RedisServer() as redis, RedisClusterServer() as cluster, MemcachedServer() as mc:
        backends = {
            "memory": InMemoryBackend(namespace="bench-leases"),
            "redis": RedisBackend(redis.url, namespace="bench-leases"),
            "redis cluster (3 masters)": RedisBackend(
                cluster.url, namespace="bench-leases", cluster=True
            ),
            "memcached": MemcachedBackend(mc.host, mc.port, namespace="bench-leases"),
        }
        results = await measure(backends, args.n, args.reps)
    command = " ".join(["hatch run python -m benchmarks.leases", *argv])
    report = render(results, args.n, args.reps, command)
    RESULTS.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    asyncio.run(main())
