"""Decisions per second of RedisBackend against a bare EVALSHA loop (not a test: a script).

    hatch run python benchmarks/micro/redis_backend.py [--url redis://...] [-n 5000]
    hatch run python benchmarks/micro/redis_backend.py --keys 1 --only fw
    hatch run python benchmarks/micro/redis_backend.py --cluster --keys 1000

Without ``--url`` it starts a private redis-server (with ``--cluster``, a 3-master
Redis Cluster) on free ports. Prints, for each built-in strategy (or those named by
``--only``), the median of 5 runs of ``n`` sequential decisions, then the same with
64 concurrent coroutines, each next to a bare ``EVALSHA`` of a trivial script
(``return 1``) through redis.asyncio (a pool of 64 connections, or the cluster
client) in the same run. ``--keys 1`` puts every call on one hot key. ``--guarded``
adds each strategy through the failure guard (``decide_with_policy``) too.
``--rate`` sets the quota (default 100 per second). ``--before REV`` adds traffik-redis as it was at git revision REV (imported under
another name from a temporary copy), for a before/after ratio taken in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from traffik.failures import decide_with_policy
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.strategies import BUILTIN_STRATEGIES
from traffik.testing.servers import RedisClusterServer, RedisServer

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "packages/traffik-redis/src/traffik/redis"
#: A realistic quota: some decisions admit, some reject (``--rate`` changes it).
RATE = "100/s"
RUNS = 5


async def _rate(op: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> float:
    per_task = n // concurrency

    async def worker(w: int) -> None:
        for i in range(per_task):
            await op(w * per_task + i)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - started)


def _backend_at(rev: str, into: Path) -> Any:
    """RedisBackend as it was at ``rev``, imported as ``traffik_redis_before``."""
    archive = into / "before.tar"
    subprocess.run(
        ["git", "archive", "-o", str(archive), rev, SOURCE],
        cwd=ROOT, check=True, timeout=60,
    )  # fmt: skip
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    package = into / "traffik_redis_before"
    (into / SOURCE).rename(package)
    for path in package.rglob("*.py"):
        path.write_text(path.read_text().replace("traffik.redis", "traffik_redis_before"))
    sys.path.insert(0, str(into))
    return importlib.import_module("traffik_redis_before").RedisBackend


async def main(url: str, options: argparse.Namespace) -> None:
    n, keys, rate = options.n, options.keys, Rate.parse(options.rate)
    backend = RedisBackend(url, namespace="bench", persistent=False, cluster=options.cluster)
    olds: list[Any] = []
    if options.before:
        old_class = _backend_at(options.before, Path(tempfile.mkdtemp()))
        olds.append(old_class(url, namespace="old", persistent=False, cluster=options.cluster))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(backend())
        for old in olds:
            await stack.enter_async_context(old())
        client = backend.connection
        assert client is not None
        bare = client.register_script("return 1")
        ops: dict[str, Callable[[int], Awaitable[object]]] = {}

        async def bare_op(i: int) -> object:
            return await bare(keys=[f"bench:{{{i % keys}}}"], args=[])

        ops["bare EVALSHA"] = bare_op
        chosen = [s for s in BUILTIN_STRATEGIES if not options.only or s.name in options.only]
        for strategy in chosen:

            async def op(i: int, strategy: object = strategy) -> object:
                return await backend.decide(f"k{i % keys}", strategy, rate)  # type: ignore[arg-type]

            ops[strategy.name] = op
            for old in olds:

                async def before(i: int, strategy: object = strategy, old: Any = old) -> object:
                    return await old.decide(f"k{i % keys}", strategy, rate)

                ops[f"{strategy.name} (before)"] = before
            if options.guarded:

                async def guarded(i: int, strategy: object = strategy) -> object:
                    return await decide_with_policy(backend, f"k{i % keys}", strategy, rate, 1)  # type: ignore[arg-type]

                ops[f"{strategy.name} (guard)"] = guarded
        for concurrency in options.concurrency:
            for op in ops.values():
                await _rate(op, n // 10, concurrency)  # warm up connections and keys
            # Interleaved runs, so a noisy neighbour slows every candidate alike.
            samples: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(RUNS):
                for name, op in ops.items():
                    samples[name].append(await _rate(op, n, concurrency))
            base = statistics.median(samples["bare EVALSHA"])
            print(
                f"\n{concurrency} coroutine(s), {keys} key(s), median of {RUNS} x {n} calls: "
                "calls/s"
            )
            for name, values in samples.items():
                got = statistics.median(values)
                print(f"  {name:26} {got:9.0f}  ({got / base:4.0%} of bare)")


@contextlib.contextmanager
def _server(cluster: bool) -> Iterator[str]:
    if cluster:
        with RedisClusterServer(replicas_per_master=0) as nodes:
            yield nodes.url
    else:
        with RedisServer() as server:
            yield server.url


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1000, help="distinct keys (1: one hot key)")
    parser.add_argument("--cluster", action="store_true", help="a Redis Cluster URL or server")
    parser.add_argument("--only", type=lambda text: text.split(","), default=None)
    parser.add_argument("--guarded", action="store_true", help="also through the guard")
    parser.add_argument("--rate", default=RATE, help="e.g. 1000000/s: every call admitted")
    parser.add_argument("--before", default=None, help="also traffik-redis at this git revision")
    parser.add_argument(
        "--concurrency", type=lambda text: [int(c) for c in text.split(",")], default=[1, 64]
    )
    options = parser.parse_args()
    if options.url:
        asyncio.run(main(options.url, options))
    else:
        with _server(options.cluster) as url:
            asyncio.run(main(url, options))
