"""traffik from this repository (the hatch default environment).

The driver imports this module in-process for sections A, C and D; section E runs
it as a script in a fresh process (RSS is only meaningful in a clean process).
Integrations that have not landed yet are reported as "not available yet".
"""

from __future__ import annotations

import typing

import _harness as h

#: The extra row measuring the 1.0.0b2 protocol ``await strategy(key, rate, backend, cost)``.
SEED = "fw-seed"


def version() -> str:
    from importlib.metadata import version as dist_version

    return dist_version("traffik-core")


def _strategies() -> dict[str, typing.Any]:
    from traffik.strategies import BUILTIN_STRATEGIES

    found = {s.name: s for s in BUILTIN_STRATEGIES}
    found[SEED] = found["fw"]
    return found


def _backend(kind: str, servers: dict[str, typing.Any], namespace: str) -> typing.Any:
    if kind == "memory":
        from traffik.backends.inmemory import InMemoryBackend

        return InMemoryBackend(namespace=namespace)
    if kind == "redis":
        from traffik.redis import RedisBackend  # type: ignore[attr-defined]

        return RedisBackend(servers["redis_url"], namespace=namespace)
    from traffik.memcached import MemcachedBackend  # type: ignore[attr-defined]

    return MemcachedBackend(
        host=servers["memcached_host"], port=servers["memcached_port"], namespace=namespace
    )


def available(kind: str) -> str | None:
    """None if ``kind`` can be measured, else why not."""
    try:
        if kind == "redis":
            from traffik.redis import RedisBackend  # type: ignore[attr-defined]  # noqa: F401
        elif kind == "memcached":
            from traffik.memcached import MemcachedBackend  # type: ignore[attr-defined]  # noqa: F401
    except ImportError as exc:
        return f"not available yet ({exc})"
    return None


async def make(
    kind: str, strategy: str, servers: dict[str, typing.Any], instance: int, race: bool = False
) -> tuple[h.Hit, h.Close]:
    from traffik.rates import Rate

    backend = _backend(kind, servers, "bench")
    await backend.initialize()
    strat = _strategies()[strategy]
    rate = Rate(limit=32, hours=1) if race else Rate(limit=100, seconds=1)
    if strategy == SEED:

        async def hit(key: str) -> bool:
            return bool(await strat(key, rate, backend, 1) == 0)

    else:
        decide = backend.decide

        async def hit(key: str) -> bool:
            return bool((await decide(key, strat, rate, 1)).allowed)

    async def close() -> None:
        await backend.close()

    return hit, close


def supported(kind: str) -> list[str]:
    if available(kind) is not None:
        return []
    names = list(h.ALL_STRATEGIES)
    return [*names, SEED] if kind == "memory" else names


# --- section C: apps --------------------------------------------------------------------


async def _endpoint(request: typing.Any) -> typing.Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"ok": "1"})


#: Section C and the admit path of ``--section http``: a limit that is never reached.
ADMIT = "1000000000/h"
#: The refuse path of ``--section http``: after the first request, every one gets a 429.
REFUSE = "1/h"


def _throttle_middleware(kind: str, servers: dict[str, typing.Any], rate: str) -> typing.Any:
    """A ``Middleware`` entry throttling every request, on a backend of its own."""
    from starlette.middleware import Middleware

    from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware  # type: ignore[attr-defined]
    from traffik.throttles import HTTPThrottle  # type: ignore[attr-defined]

    backend = _backend(kind, servers, "e2e-mw")
    throttle = HTTPThrottle(uid=f"e2e-mw-{kind}", rate=rate, backend=backend)
    return backend, Middleware(
        ThrottleMiddleware, middleware_throttles=[MiddlewareThrottle(throttle)], backend=backend
    )


def starlette_apps(
    kind: str, servers: dict[str, typing.Any], rate: str = ADMIT
) -> tuple[dict[str, typing.Any], list[str]]:
    """Bare and throttled Starlette apps; and the variants that could not be built."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    apps: dict[str, typing.Any] = {"starlette-bare": Starlette(routes=[Route("/", _endpoint)])}
    missing: list[str] = []
    try:
        from traffik.throttles import HTTPThrottle  # type: ignore[attr-defined]
    except ImportError as exc:
        return apps, [f"starlette-*: traffik.throttles not available yet ({exc})"]
    backend = _backend(kind, servers, "e2e-st")

    throttle = HTTPThrottle(uid=f"e2e-st-{kind}", rate=rate, backend=backend)

    async def throttled(request: typing.Any) -> typing.Any:
        await throttle(request)
        return await _endpoint(request)

    apps["starlette-endpoint"] = Starlette(
        routes=[Route("/", throttled)], lifespan=backend.lifespan
    )
    try:
        from traffik.starlette import throttled as st_throttled  # type: ignore[attr-defined]

        sbackend = _backend(kind, servers, "e2e-sd")
        sthrottle = HTTPThrottle(uid=f"e2e-sd-{kind}", rate=rate, backend=sbackend)
        apps["starlette-decorator"] = Starlette(
            routes=[Route("/", st_throttled(sthrottle)(_endpoint))], lifespan=sbackend.lifespan
        )
    except ImportError as exc:
        missing.append(f"starlette-decorator: not available yet ({exc})")
    try:
        mbackend, middleware = _throttle_middleware(kind, servers, rate)
        apps["starlette-middleware"] = Starlette(
            routes=[Route("/", _endpoint)], middleware=[middleware], lifespan=mbackend.lifespan
        )
    except ImportError as exc:
        missing.append(f"starlette-middleware: not available yet ({exc})")
    return apps, missing


def fastapi_apps(
    kind: str, servers: dict[str, typing.Any], rate: str = ADMIT
) -> tuple[dict[str, typing.Any], list[str]]:
    """Bare and throttled FastAPI apps; and the variants that could not be built."""
    from fastapi import Depends, FastAPI

    bare = FastAPI()

    @bare.get("/")
    async def root_bare() -> dict[str, str]:
        return {"ok": "1"}

    apps: dict[str, typing.Any] = {"fastapi-bare": bare}
    missing: list[str] = []
    try:
        from traffik.throttles import HTTPThrottle  # type: ignore[attr-defined]
    except ImportError as exc:
        return apps, [f"fastapi-*: traffik.throttles not available yet ({exc})"]
    backend = _backend(kind, servers, "e2e-fa")
    throttle = HTTPThrottle(uid=f"e2e-fa-{kind}", rate=rate, backend=backend)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/", dependencies=[Depends(throttle)])
    async def root() -> dict[str, str]:
        return {"ok": "1"}

    apps["fastapi-depends"] = app
    try:
        try:
            from traffik.fastapi import throttled  # type: ignore[attr-defined]
        except ImportError:
            from traffik.decorators import throttled  # type: ignore[attr-defined]
        dbackend = _backend(kind, servers, "e2e-fd")
        dthrottle = HTTPThrottle(uid=f"e2e-fd-{kind}", rate=rate, backend=dbackend)
        dapp = FastAPI(lifespan=dbackend.lifespan)

        @dapp.get("/")
        @throttled(dthrottle)
        async def droot() -> dict[str, str]:
            return {"ok": "1"}

        apps["fastapi-decorator"] = dapp
    except ImportError as exc:
        missing.append(f"fastapi-decorator: not available yet ({exc})")
    try:
        mbackend, middleware = _throttle_middleware(kind, servers, rate)
        mapp = FastAPI(middleware=[middleware], lifespan=mbackend.lifespan)

        @mapp.get("/")
        async def mroot() -> dict[str, str]:
            return {"ok": "1"}

        apps["fastapi-middleware"] = mapp
    except ImportError as exc:
        missing.append(f"fastapi-middleware: not available yet ({exc})")
    return apps, missing


async def http_apps(
    kind: str, servers: dict[str, typing.Any], refuse: bool = False
) -> dict[str, typing.Any]:
    """Every app of ``--section http`` (Starlette and FastAPI, bare and throttled)."""
    apps: dict[str, typing.Any] = {}
    for factory in (starlette_apps, fastapi_apps):
        built, _ = factory(kind, servers, REFUSE if refuse else ADMIT)
        apps.update(built)
    return apps


async def main(args: dict[str, typing.Any]) -> dict[str, typing.Any]:
    out = await h.run_sections(args, make, supported)
    out["version"] = version()
    return out


if __name__ == "__main__":
    h.run_script(main)
