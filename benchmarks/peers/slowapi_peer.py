"""Peer: slowapi 0.1.10 (FastAPI, limits underneath), run inside its own virtual environment.

slowapi is an HTTP integration only: it is measured end to end (section C) and in
the race (section D), through the app, as its documentation sets it up.
"""

from __future__ import annotations

import typing

import _harness as h
from fastapi import FastAPI, Request

_STRATEGIES = {"fw": "fixed-window", "swl": "moving-window", "swc": "sliding-window-counter"}


def _uri(kind: str, servers: dict[str, typing.Any]) -> str:
    if kind == "memory":
        return "memory://"
    return f"redis://{servers['redis_host']}:{servers['redis_port']}"


def _app(kind: str, servers: dict[str, typing.Any], rate: str, strategy: str) -> FastAPI:
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(
        key_func=get_remote_address, storage_uri=_uri(kind, servers), strategy=_STRATEGIES[strategy]
    )
    app = FastAPI()
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    @app.get("/")
    @limiter.limit(rate)
    async def root(request: Request) -> dict[str, str]:
        return {"ok": "1"}

    return app


async def apps(
    kind: str, servers: dict[str, typing.Any], refuse: bool = False
) -> dict[str, typing.Any]:
    """Section C and ``--section http``: bare and decorated FastAPI apps (refuse: 1/hour)."""
    bare = FastAPI()

    @bare.get("/")
    async def root(request: Request) -> dict[str, str]:
        return {"ok": "1"}

    rate = "1/hour" if refuse else "1000000000/hour"
    return {"fastapi-bare": bare, "fastapi-decorator": _app(kind, servers, rate, "fw")}


async def race_apps(
    kind: str, strategy: str, servers: dict[str, typing.Any], instances: int
) -> list[typing.Any]:
    return [_app(kind, servers, "32/hour", strategy) for _ in range(instances)]


def supported(kind: str) -> list[str]:
    return [] if kind == "memcached" else list(_STRATEGIES)


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    from importlib.metadata import version

    out = await h.run_sections(args, None, supported, apps, race_apps)
    out["version"] = version("slowapi")
    return out


http_apps = apps

if __name__ == "__main__":
    h.run_script(main)
