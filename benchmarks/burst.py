"""A burst of concurrent requests on one throttled route, counted by status and event.

The scenario of issue 14: a FastAPI route with ``Depends(HTTPThrottle(uid="swl",
rate="50/d", strategy=SlidingWindowLogStrategy()))`` on a default backend, one
client firing ``n`` requests at once. :func:`burst` runs it in this process;
:func:`burst_in_processes` runs it in several spawned processes at once (one
shared limit). tests-integration/test_load_exact.py asserts on the counts;

    python -m benchmarks.burst redis redis://127.0.0.1:6379/0 1000

prints them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import typing
from collections import Counter

__all__ = ["BackendSpec", "burst", "burst_in_processes", "make_backend"]

#: ``(kind, address)``: ("redis", url), ("cluster", url) or ("memcached", "host:port").
BackendSpec = tuple[str, str]


def make_backend(spec: BackendSpec, namespace: str) -> typing.Any:
    """A backend of ``spec`` with its default failure policy."""
    kind, address = spec
    if kind in ("redis", "cluster"):
        from traffik.redis import RedisBackend

        return RedisBackend(address, namespace=namespace, cluster=kind == "cluster")
    if kind == "memcached":
        from traffik.memcached import MemcachedBackend

        host, port = address.rsplit(":", 1)
        return MemcachedBackend(host, int(port), namespace=namespace, persistent=True)
    raise ValueError(f"unknown backend kind {kind!r}: use redis, cluster or memcached.")


def _app(backend: typing.Any, limit: int) -> typing.Any:
    from fastapi import Depends, FastAPI

    from traffik.strategies import SlidingWindowLogStrategy
    from traffik.throttles import HTTPThrottle

    throttle = HTTPThrottle(
        uid="swl", rate=f"{limit}/d", strategy=SlidingWindowLogStrategy(), backend=backend
    )
    app = FastAPI()

    @app.get("/", dependencies=[Depends(throttle)])
    async def endpoint() -> dict[str, str]:
        return {"ok": "yes"}

    return app


async def _burst(spec: BackendSpec, namespace: str, n: int, limit: int) -> dict[str, int]:
    import httpx

    from traffik import events

    counts: Counter[str] = Counter()
    unsubscribe = events.subscribe(lambda event: counts.update([f"event:{event.kind}"]))
    backend = make_backend(spec, namespace)
    app = _app(backend, limit)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4321))
    try:
        async with backend(), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.gather(*(client.get("/") for _ in range(n)))
    finally:
        unsubscribe()
    counts.update(f"status:{response.status_code}" for response in responses)
    return dict(counts)


def burst(spec: BackendSpec, namespace: str, n: int = 1000, limit: int = 50) -> dict[str, int]:
    """Fire ``n`` concurrent requests; counts of ``status:NNN`` and ``event:kind``."""
    return asyncio.run(_burst(spec, namespace, n, limit))


def burst_in_processes(
    spec: BackendSpec, namespace: str, processes: int = 3, n: int = 300, limit: int = 50
) -> list[dict[str, int]]:
    """:func:`burst` in ``processes`` spawned processes at once, sharing one limit."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        return pool.starmap(burst, [(spec, namespace, n, limit)] * processes)


if __name__ == "__main__":  # pragma: no cover - a manual tool
    kind, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(burst((kind, address), f"burst-{kind}", count))
