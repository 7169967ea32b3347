"""Guarded decisions per second: what the failure guard costs (not a test: a script).

    hatch run python benchmarks/micro/guard_fast_path.py [--redis] [-n 20000]

Decisions through ``traffik.failures.decide_with_policy`` (the path every throttle
takes) on a backend with a failure policy: by default an in-memory backend made to
look like a server (one loop turn per call, so the guard's own cost dominates);
with ``--redis``, a RedisBackend on a private redis-server. Prints the median of 5
runs, 1 and 64 concurrent callers, in decisions per second of wall-clock time and
of this process's CPU time (steadier on a shared machine). To compare with another
revision, run it again with ``PYTHONPATH=<that revision>/packages/traffik-core/src``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import typing

from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.failures import FailurePolicy, decide_with_policy
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy
from traffik.strategies._base import Strategy

RATE = Rate.parse("1000000000/h")  # never refused: every call reaches the backend
RUNS = 5


class Server(InMemoryBackend):  # type: ignore[type-arg]
    """An in-memory backend with a policy, one loop turn per call (like a server)."""

    capabilities = BackendCapabilities(shared_state=True)

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        await asyncio.sleep(0)
        return await super().decide(key, strategy, rate, cost, now_ms=now_ms)


async def measure(backend: typing.Any, n: int, concurrency: int) -> tuple[float, float]:
    strategy = FixedWindowStrategy()
    per_task = n // concurrency

    async def worker(w: int) -> None:
        for _ in range(per_task):
            await decide_with_policy(backend, f"k{w}", strategy, RATE, 1)

    walls, cpus = [], []
    await asyncio.gather(*(worker(w) for w in range(concurrency)))  # warm-up
    for _ in range(RUNS):
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        walls.append(per_task * concurrency / (time.perf_counter() - wall))
        cpus.append(per_task * concurrency / (time.process_time() - cpu))
    return statistics.median(walls), statistics.median(cpus)


async def main(redis_url: str | None, n: int) -> None:
    if redis_url is None:
        backend: typing.Any = Server(namespace="guard", failure_policy=FailurePolicy())
    else:
        from traffik.redis import RedisBackend

        backend = RedisBackend(redis_url, namespace="guard")
    async with backend():
        for concurrency in (1, 64):
            wall, cpu = await measure(backend, n, concurrency)
            print(f"{concurrency:3} caller(s): {wall:9.0f}/s wall  {cpu:9.0f}/s CPU")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", action="store_true", help="on a private redis-server")
    parser.add_argument("-n", type=int, default=20_000, help="decisions per run")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = None
        if args.redis:
            from traffik.testing.servers import RedisServer

            url = stack.enter_context(RedisServer()).url
        asyncio.run(main(url, args.n))
