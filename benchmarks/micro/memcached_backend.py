"""Measure MemcachedBackend: decisions/s per strategy and memcached commands per decision.

Run from the repository root::

    hatch run python benchmarks/micro/memcached_backend.py
    hatch run python benchmarks/micro/memcached_backend.py --pool

It starts a private memcached on a free port (or uses ``--host``/``--port``) and
prints medians of ``--repeat`` runs: decisions per second sequentially and with 64
concurrent tasks (distinct keys, and one hot key), the server's ``stats`` deltas
per decision, and a bare ``aiomcache`` ``incr`` loop for comparison.

With ``--pool`` it starts three servers instead and compares fixed-window
decisions per second on one of them and on all three (``servers=[...]``), runs
of the two interleaved in every repetition.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import aiomcache

from traffik.memcached import MemcachedBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindowStrategy, Strategy
from traffik.testing.servers import MemcachedServer

STATS = (
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "incr_hits",
    "incr_misses",
    "decr_hits",
)
#: Every decision admits (and so writes): the expensive path.
RATE = Rate(limit=10**9, hours=1)


async def _stats(backend: MemcachedBackend) -> dict[str, int]:
    assert backend.connection is not None
    raw = await backend.connection.stats()
    return {k: raw.get(k.encode(), 0) for k in STATS}


async def _decisions(
    backend: MemcachedBackend, strategy: Strategy, n: int, tasks: int, hot: bool
) -> float:
    run = uuid.uuid4().hex[:8]

    async def worker(w: int) -> None:
        key = f"{run}:hot" if hot else f"{run}:{w}"
        for _ in range(n // tasks):
            await backend.decide(key, strategy, RATE)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    return (n // tasks) * tasks / (time.perf_counter() - started)


async def _contended(backends: list[MemcachedBackend], strategy: Strategy, n: int) -> float:
    """Two instances, 32 tasks each, one hot key: the CAS races happen between instances."""
    key = f"{uuid.uuid4().hex[:8]}:hot2"

    async def worker(w: int) -> None:
        for _ in range(n // 64):
            await backends[w % 2].decide(key, strategy, RATE)

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(64)))
    return (n // 64) * 64 / (time.perf_counter() - started)


async def _bare_incr(host: str, port: int, n: int, tasks: int) -> float:
    client = aiomcache.Client(host, port, pool_size=2)
    await client.set(b"bare", b"0")

    async def worker() -> None:
        for _ in range(n // tasks):
            await client.incr(b"bare", 1)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    rate = (n // tasks) * tasks / (time.perf_counter() - started)
    await client.close()
    return rate


async def main(host: str, port: int, n: int, repeat: int, generation_ttl: float) -> None:
    backend = MemcachedBackend(
        host, port, namespace=f"bench{uuid.uuid4().hex[:6]}", generation_ttl=generation_ttl
    )
    await backend.initialize()
    print(
        f"memcached {host}:{port}, {n} decisions per run, median of {repeat},\n"
        f"pool_size=2, generation_ttl={generation_ttl}"
    )
    names = [s.name for s in BUILTIN_STRATEGIES]
    runs: dict[str, list[list[float]]] = {name: [[], [], []] for name in [*names, "bare"]}
    # Interleave everything in every repetition, so that load from other processes on
    # the machine hits every row alike.
    for _ in range(repeat):
        for strategy in BUILTIN_STRATEGIES:
            row = runs[strategy.name]
            row[0].append(await _decisions(backend, strategy, n, 1, False))
            row[1].append(await _decisions(backend, strategy, n, 64, False))
            row[2].append(await _decisions(backend, strategy, n, 64, True))
        runs["bare"][0].append(await _bare_incr(host, port, n, 1))
        runs["bare"][1].append(await _bare_incr(host, port, n, 64))
        runs["bare"][2].append(0.0)
    print(f"{'strategy':8} {'seq/s':>8} {'64c/s':>8} {'64hot/s':>8}  commands per decision")
    for strategy in BUILTIN_STRATEGIES:
        before = await _stats(backend)
        await _decisions(backend, strategy, n, 1, False)
        after = await _stats(backend)
        per = {k: (after[k] - before[k]) / n for k in STATS}
        ops = " ".join(f"{k}={v:.2f}" for k, v in per.items() if v >= 0.005)
        seq, conc, hot = (statistics.median(r) for r in runs[strategy.name])
        print(f"{strategy.name:8} {seq:8.0f} {conc:8.0f} {hot:8.0f}  {ops}")
    seq, conc, _ = (statistics.median(r) for r in runs["bare"])
    print(f"{'bare incr':8} {seq:8.0f} {conc:8.0f} {'-':>8}  incr_hits=1.00 (aiomcache.Client)")
    other = MemcachedBackend(host, port, namespace=backend.namespace, generation_ttl=generation_ttl)
    await other.initialize()
    print("two instances x 32 tasks on one hot key (races between instances):")
    for strategy in BUILTIN_STRATEGIES[1:]:
        before = await _stats(backend)
        rate = await _contended([backend, other], strategy, n)
        after = await _stats(backend)
        per = {k: (after[k] - before[k]) / n for k in STATS}
        ops = " ".join(f"{k}={v:.2f}" for k, v in per.items() if v >= 0.005)
        print(f"{strategy.name:8} {rate:8.0f}/s  {ops}")
    await other.close()
    await backend.reset()
    await backend.close()


async def pool(addresses: list[str], n: int, repeat: int) -> None:
    """Fixed-window decisions/s on the first server alone and on the pool of all of them."""
    ns = f"bench{uuid.uuid4().hex[:6]}"
    one = MemcachedBackend(servers=addresses[:1], namespace=ns)
    many = MemcachedBackend(servers=addresses, namespace=ns)
    await one.initialize()
    await many.initialize()
    strategy = FixedWindowStrategy()
    runs: dict[str, list[list[float]]] = {"one": [[], []], "pool": [[], []]}
    for _ in range(repeat):
        for name, backend in (("one", one), ("pool", many)):
            runs[name][0].append(await _decisions(backend, strategy, n, 1, False))
            runs[name][1].append(await _decisions(backend, strategy, n, 64, False))
    print(f"fixed window, {n} decisions per run, median of {repeat}, pool_size=2 per server")
    print(f"{'servers':8} {'seq/s':>8} {'64c/s':>8}")
    for name, label in (("one", "1"), ("pool", str(len(addresses)))):
        seq, conc = (statistics.median(r) for r in runs[name])
        print(f"{label:8} {seq:8.0f} {conc:8.0f}")
    for backend in (one, many):
        await backend.reset()
        await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int, default=11211)
    parser.add_argument("-n", type=int, default=3200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--generation-ttl", type=float, default=0.0)
    parser.add_argument(
        "--pool", action="store_true", help="fixed window on one server vs a pool of three"
    )
    args = parser.parse_args()
    if args.pool:
        with MemcachedServer() as a, MemcachedServer() as b, MemcachedServer() as c:
            asyncio.run(pool([a.address, b.address, c.address], args.n, args.repeat))
    elif args.host:
        asyncio.run(main(args.host, args.port, args.n, args.repeat, args.generation_ttl))
    else:
        with MemcachedServer() as server:
            asyncio.run(main(server.host, server.port, args.n, args.repeat, args.generation_ttl))
