"""Peer: fastapi-limiter 0.2.0 (FastAPI, pyrate-limiter underneath), in its own virtual environment.

An HTTP integration only: measured end to end (section C) and in the race (section
D), through the app, with a pyrate ``Limiter`` as its README sets it up.
"""

from __future__ import annotations

import typing

import _harness as h
from fastapi import Depends, FastAPI


async def _limiter(
    kind: str, servers: dict[str, typing.Any], rates: list[typing.Any]
) -> typing.Any:
    from pyrate_limiter import InMemoryBucket, Limiter, RedisBucket

    if kind == "memory":
        return Limiter(InMemoryBucket(rates))
    from redis.asyncio import Redis

    client = Redis(host=servers["redis_host"], port=servers["redis_port"])
    bucket = await RedisBucket.init(rates, client, "fastapi-limiter")
    return Limiter(bucket)


async def _app(kind: str, servers: dict[str, typing.Any], rates: list[typing.Any]) -> FastAPI:
    from fastapi_limiter.depends import RateLimiter

    limiter = await _limiter(kind, servers, rates)
    app = FastAPI()

    @app.get("/", dependencies=[Depends(RateLimiter(limiter=limiter))])
    async def root() -> dict[str, str]:
        return {"ok": "1"}

    return app


async def apps(
    kind: str, servers: dict[str, typing.Any], refuse: bool = False
) -> dict[str, typing.Any]:
    """Section C and ``--section http``: bare and ``Depends`` FastAPI apps (refuse: 1/hour)."""
    from pyrate_limiter import Duration, Rate

    bare = FastAPI()

    @bare.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "1"}

    throttled = await _app(kind, servers, [Rate(1 if refuse else 1_000_000_000, Duration.HOUR)])
    return {"fastapi-bare": bare, "fastapi-depends": throttled}


async def race_apps(
    kind: str, strategy: str, servers: dict[str, typing.Any], instances: int
) -> list[typing.Any]:
    from pyrate_limiter import Duration, Rate

    return [await _app(kind, servers, [Rate(32, Duration.HOUR)]) for _ in range(instances)]


def supported(kind: str) -> list[str]:
    return [] if kind == "memcached" else ["swl"]


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    from importlib.metadata import version

    out = await h.run_sections(args, None, supported, apps, race_apps)
    out["version"] = version("fastapi-limiter")
    return out


http_apps = apps

if __name__ == "__main__":
    h.run_script(main)
