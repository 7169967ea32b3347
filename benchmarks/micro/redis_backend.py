"""Decisions per second of RedisBackend against a bare EVALSHA loop (not a test: a script).

    hatch run python benchmarks/micro/redis_backend.py [--url redis://...] [-n 5000]

Without ``--url`` it starts a private redis-server on a free port. Prints, for each
built-in strategy, the median of 5 runs of ``n`` sequential decisions, then the same
with 64 concurrent coroutines, each next to a bare ``EVALSHA`` of a trivial script
(``return 1``) through redis.asyncio in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.testing.servers import RedisServer

RATE = Rate(limit=100, seconds=1)  # a realistic quota: some decisions admit, some reject
KEYS = 1000
RUNS = 5


async def _rate(op: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> float:
    per_task = n // concurrency

    async def worker(w: int) -> None:
        for i in range(per_task):
            await op(w * per_task + i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - started)


async def main(url: str, n: int) -> None:
    async with RedisBackend(url, namespace="bench", persistent=False)() as backend:
        client = backend.connection
        assert client is not None
        bare = client.register_script("return 1")
        ops: dict[str, Callable[[int], Awaitable[object]]] = {}

        async def bare_op(i: int) -> object:
            return await bare(keys=[f"bench:{i % KEYS}"], args=[])

        ops["bare EVALSHA"] = bare_op
        for strategy in BUILTIN_STRATEGIES:

            async def op(i: int, strategy: object = strategy) -> object:
                return await backend.decide(f"k{i % KEYS}", strategy, RATE)  # type: ignore[arg-type]

            ops[strategy.name] = op
        for concurrency in (1, 64):
            for op in ops.values():
                await _rate(op, n // 10, concurrency)  # warm up connections and keys
            # Interleaved runs, so a noisy neighbour slows every candidate alike.
            samples: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(RUNS):
                for name, op in ops.items():
                    samples[name].append(await _rate(op, n, concurrency))
            base = statistics.median(samples["bare EVALSHA"])
            print(f"\n{concurrency} coroutine(s), median of {RUNS} x {n} calls: calls/s")
            for name, values in samples.items():
                got = statistics.median(values)
                print(f"  {name:14} {got:9.0f}  ({got / base:4.0%} of bare)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("-n", type=int, default=5000)
    options = parser.parse_args()
    if options.url:
        asyncio.run(main(options.url, options.n))
    else:
        with RedisServer() as server:
            asyncio.run(main(server.url, options.n))
