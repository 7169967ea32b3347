"""What a refund costs: one adjustment beside one decision, on each backend.

    hatch run python benchmarks/micro/refund_cost.py [-n 2000] [--out benchmarks/results/refunds.md]

Not a test: a script. For the in-memory backend and a private redis-server and
memcached (started here, stopped after), it times, with the fixed window and GCRA:

- ``decide``: ``backend.decide(key, strategy, rate, 1)``, the charge of a request;
- ``adjust``: ``backend.adjust(key, strategy, rate, -1)``, a refund of one unit;
- ``throttle + refund``: ``await throttle(request)`` then ``await throttle.refund(request)``,
  against ``throttle`` alone: what ``refund`` adds to a request through the public API.

Each measure runs ``n`` sequential calls per block, 5 blocks, the measures interleaved
block by block; the table gives the median microseconds per call over the blocks.
Rates are large (a million per hour) so nothing is ever refused. Sequential calls:
the Redis and Memcached times are one round trip each on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
import typing
from pathlib import Path

from starlette.requests import Request

from traffik.backends.inmemory import InMemoryBackend
from traffik.memcached import MemcachedBackend
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.strategies import FixedWindowStrategy, GCRAStrategy, Strategy
from traffik.testing.servers import MemcachedServer, RedisServer
from traffik.throttles import HTTPThrottle

BLOCKS = 5
RATE = Rate(limit=1_000_000, hours=1)
Timed = typing.Callable[[], typing.Awaitable[object]]


def _request() -> Request:
    scope = {"type": "http", "method": "GET", "path": "/b", "headers": [], "query_string": b""}
    return Request({**scope, "client": ("10.1.2.3", 1), "state": {}})


async def _per_call(call: Timed, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n * 1e6


async def _measure(cases: dict[str, Timed], n: int) -> dict[str, float]:
    for call in cases.values():  # warm up: scripts loaded, connections open
        for _ in range(min(n, 200)):
            await call()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(BLOCKS):
        for name, call in cases.items():
            times[name].append(await _per_call(call, n))
    return {name: statistics.median(values) for name, values in times.items()}


def _cases(backend: typing.Any, strategy: Strategy) -> dict[str, Timed]:
    throttle = HTTPThrottle(f"b-{strategy.name}", RATE, strategy=strategy, backend=backend)

    async def throttled() -> None:
        await throttle(_request())

    async def throttled_refunded() -> None:
        request = _request()
        await throttle(request)
        await throttle.refund(request)

    return {
        "decide": lambda: backend.decide("k", strategy, RATE, 1),
        "adjust": lambda: backend.adjust("k", strategy, RATE, -1),
        "throttle": throttled,
        "throttle + refund": throttled_refunded,
    }


async def run(n: int) -> list[tuple[str, str, dict[str, float]]]:
    rows = []
    with RedisServer() as redis_server, MemcachedServer() as memcached_server:
        backends: list[tuple[str, typing.Any]] = [
            ("memory", InMemoryBackend(namespace="bench")),
            ("redis", RedisBackend(redis_server.url, namespace="bench", persistent=False)),
            (
                "memcached",
                MemcachedBackend(memcached_server.host, memcached_server.port, "bench"),
            ),
        ]
        for label, backend in backends:
            async with backend():
                for strategy in (FixedWindowStrategy(), GCRAStrategy()):
                    rows.append(
                        (label, strategy.name, await _measure(_cases(backend, strategy), n))
                    )
    return rows


def report(rows: list[tuple[str, str, dict[str, float]]], n: int) -> str:
    lines = [
        "# What a refund costs",
        "",
        f"`hatch run python benchmarks/micro/refund_cost.py -n {n}`: median µs per call over "
        f"{BLOCKS} blocks of {n} sequential calls, measures interleaved; Python "
        f"{platform.python_version()}, loopback servers started by the script.",
        "",
        "| backend | strategy | decide | adjust (refund) | throttle | throttle + refund | refund adds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, strategy, t in rows:
        added = t["throttle + refund"] - t["throttle"]
        lines.append(
            f"| {label} | {strategy} | {t['decide']:.1f} | {t['adjust']:.1f} | "
            f"{t['throttle']:.1f} | {t['throttle + refund']:.1f} | {added:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="calls per block")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    ns = parser.parse_args()
    text = report(asyncio.run(run(ns.n)), ns.n)
    print(text)
    if ns.out is not None:
        ns.out.write_text(text, encoding="utf-8")
