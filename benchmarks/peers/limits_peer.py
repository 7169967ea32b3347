"""Peer: limits 5.8 (``limits.aio``), run inside its own virtual environment.

Storages are built from URIs as its documentation shows; the async Redis storage
uses its default client (coredis), the async Memcached storage memcachio.
"""

from __future__ import annotations

import typing

import _harness as h
import limits
from limits import RateLimitItemPerHour, RateLimitItemPerSecond
from limits.aio import strategies as S
from limits.storage import storage_from_string

_STRATEGIES = {
    "fw": S.FixedWindowRateLimiter,
    "swl": S.MovingWindowRateLimiter,
    "swc": S.SlidingWindowCounterRateLimiter,
}


def _uri(kind: str, servers: dict[str, typing.Any]) -> str:
    if kind == "memory":
        return "async+memory://"
    if kind == "redis":
        return f"async+redis://{servers['redis_host']}:{servers['redis_port']}"
    return f"async+memcached://{servers['memcached_host']}:{servers['memcached_port']}"


async def make(
    kind: str, strategy: str, servers: dict[str, typing.Any], instance: int, race: bool = False
) -> tuple[h.Hit, h.Close]:
    storage = storage_from_string(_uri(kind, servers))
    limiter = _STRATEGIES[strategy](storage)
    item = RateLimitItemPerHour(32) if race else RateLimitItemPerSecond(100)

    async def hit(key: str) -> bool:
        return bool(await limiter.hit(item, key))

    async def close() -> None:
        return None

    return hit, close


def supported(kind: str) -> list[str]:
    if kind == "memcached":
        return ["fw", "swc"]  # no moving window on Memcached
    return list(_STRATEGIES)


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    out = await h.run_sections(args, make, supported)
    out["version"] = limits.__version__
    return out


if __name__ == "__main__":
    h.run_script(main)
