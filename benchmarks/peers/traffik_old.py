"""Peer: a published traffik (1.0.0b2 or 1.2.2), run inside its own virtual environment.

Both releases keep the seed protocol ``await strategy(key, rate, backend, cost) -> wait_ms``
and the same backend constructors, so one script serves both.
"""

from __future__ import annotations

import typing

import _harness as h

import traffik
from traffik import strategies as S
from traffik.backends.inmemory import InMemoryBackend
from traffik.rates import Rate

_STRATEGIES: dict[str, typing.Callable[[], typing.Any]] = {
    "fw": S.FixedWindowStrategy,
    "swl": S.SlidingWindowLogStrategy,
    "swc": S.SlidingWindowCounterStrategy,
    "tb": S.TokenBucketStrategy,
    "tbd": S.TokenBucketWithDebtStrategy,
    "lb": S.LeakyBucketStrategy,
    "lbq": S.LeakyBucketWithQueueStrategy,
}
if hasattr(S, "GCRAStrategy"):
    _STRATEGIES["gcra"] = S.GCRAStrategy


def version() -> str:
    return str(getattr(traffik, "__version__", "?"))


def _backend(kind: str, servers: dict[str, typing.Any], namespace: str) -> typing.Any:
    if kind == "memory":
        return InMemoryBackend(namespace=namespace)
    if kind == "redis":
        from traffik.backends.redis import RedisBackend

        return RedisBackend(connection=servers["redis_url"], namespace=namespace)
    from traffik.backends.memcached import MemcachedBackend

    return MemcachedBackend(
        host=servers["memcached_host"], port=servers["memcached_port"], namespace=namespace
    )


async def make(
    kind: str, strategy: str, servers: dict[str, typing.Any], instance: int, race: bool = False
) -> tuple[h.Hit, h.Close]:
    backend = _backend(kind, servers, "bench")
    await backend.initialize()
    rate = Rate(limit=32, hours=1) if race else Rate(limit=100, seconds=1)
    if strategy == "gcra":
        # 1.2.2's GCRA defaults to no burst; allow a burst of ``limit`` like the others.
        interval = rate.expire / rate.limit
        strat = _STRATEGIES[strategy](burst_tolerance_ms=(rate.limit - 1) * interval)
    else:
        strat = _STRATEGIES[strategy]()

    async def hit(key: str) -> bool:
        return bool(await strat(key, rate, backend, 1) == 0)

    async def close() -> None:
        await backend.close()

    return hit, close


async def apps(
    kind: str, servers: dict[str, typing.Any], refuse: bool = False
) -> dict[str, typing.Any]:
    """Section C and ``--section http``: bare and ``Depends`` FastAPI apps (refuse: 1/h)."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI

    from traffik.throttles import HTTPThrottle

    backend = _backend(kind, servers, "e2e")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> typing.AsyncIterator[None]:
        async with backend(app, persistent=True, close_on_exit=True):
            yield

    bare = FastAPI()
    throttled = FastAPI(lifespan=lifespan)
    rate = "1/h" if refuse else "1000000000/h"
    throttle = HTTPThrottle(uid=f"e2e-{kind}", rate=rate, backend=backend)

    @bare.get("/")
    async def root_bare() -> dict[str, str]:
        return {"ok": "1"}

    @throttled.get("/", dependencies=[Depends(throttle)])
    async def root() -> dict[str, str]:
        return {"ok": "1"}

    return {"fastapi-bare": bare, "fastapi-depends": throttled}


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    def supported(kind: str) -> list[str]:
        return [s for s in args.get("strategies", h.ALL_STRATEGIES) if s in _STRATEGIES]

    out = await h.run_sections(args, make, supported, apps)
    out["version"] = version()
    return out


http_apps = apps

if __name__ == "__main__":
    h.run_script(main)
