"""The floor apps: the least a rate limiter in each integration can cost.

Every throttled traffik app of the in-process section (``--section floors``) and of
``--section http`` is compared with the same framework's app running one of these
limiters, built here and measured in the same run:

- a minimal pure-ASGI limiter (:class:`FloorLimiter`), the floor of
  ``ThrottleMiddleware`` and of ``await throttle(request)``: a dict fixed window per
  (client, path), two RateLimit fields appended on ``http.response.start``, a plain
  429 with the same fields when the window is spent;
- a minimal FastAPI dependency (:func:`floor_dependency`), the floor of
  ``Depends(throttle)`` and of the ``@throttled`` decorator: the same dict fixed window,
  two header fields set on the injected ``Response``, ``HTTPException(429)`` when spent.

Neither bounds its memory, expires a key, handles proxies, HEAD or WebSockets, or
survives a failing store: they are floors, not limiters to use. The route is the one
of every app measured: ``GET /`` answering ``{"ok": "1"}`` in JSON.
"""

from __future__ import annotations

import time
import typing

from fastapi import HTTPException, Request, Response

#: The admit path's limit (never reached) and the refuse path's (spent by the warm-up).
ADMIT_LIMIT = 1_000_000_000
REFUSE_LIMIT = 1
#: One hour, like traffik's "1000000000/h" and "1/h" of the same paths.
WINDOW_MS = 3_600_000

_monotonic_ns = time.monotonic_ns


class FloorLimiter:
    """Pure ASGI: a dict fixed window per (client, path) and two RateLimit fields."""

    def __init__(self, app: typing.Any, limit: int = ADMIT_LIMIT) -> None:
        self.app = app
        self.limit = limit
        self.windows: dict[tuple[str, str], list[int]] = {}
        self.policy = f'"floor";q={limit};w={WINDOW_MS // 1000}'.encode()

    async def __call__(self, scope: typing.Any, receive: typing.Any, send: typing.Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = _monotonic_ns() // 1_000_000
        start = now - now % WINDOW_MS
        key = (scope["client"][0], scope["path"])
        entry = self.windows.get(key)
        if entry is None or entry[0] != start:
            entry = self.windows[key] = [start, 0]
        reset = (start + WINDOW_MS - now + 999) // 1000
        if entry[1] >= self.limit:
            fields = [(b"ratelimit-policy", self.policy),
                      (b"ratelimit", b'"floor";r=0;t=%d' % reset),
                      (b"retry-after", b"%d" % reset),
                      (b"content-type", b"text/plain; charset=utf-8"),
                      (b"content-length", b"17")]  # fmt: skip
            await send({"type": "http.response.start", "status": 429, "headers": fields})
            await send({"type": "http.response.body", "body": b"Too Many Requests"})
            return
        entry[1] += 1
        value = b'"floor";r=%d;t=%d' % (self.limit - entry[1], reset)
        policy = self.policy

        async def send_with_fields(message: typing.Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"ratelimit-policy", policy),
                    (b"ratelimit", value),
                ]
            await send(message)

        await self.app(scope, receive, send_with_fields)


def floor_dependency(limit: int = ADMIT_LIMIT) -> typing.Callable[..., typing.Any]:
    """A FastAPI dependency ``(request, response)``: the same window, two header fields."""
    windows: dict[tuple[str, str], list[int]] = {}
    policy = f'"floor";q={limit};w={WINDOW_MS // 1000}'

    async def limiter(request: Request, response: Response) -> None:
        scope = request.scope
        now = _monotonic_ns() // 1_000_000
        start = now - now % WINDOW_MS
        key = (scope["client"][0], scope["path"])
        entry = windows.get(key)
        if entry is None or entry[0] != start:
            entry = windows[key] = [start, 0]
        reset = (start + WINDOW_MS - now + 999) // 1000
        if entry[1] >= limit:
            raise HTTPException(
                429,
                "Too Many Requests",
                headers={"RateLimit-Policy": policy, "RateLimit": f'"floor";r=0;t={reset}',
                         "Retry-After": str(reset)},
            )  # fmt: skip
        entry[1] += 1
        headers = response.headers
        headers["RateLimit-Policy"] = policy
        headers["RateLimit"] = f'"floor";r={limit - entry[1]};t={reset}'

    return limiter


async def _endpoint(request: typing.Any) -> typing.Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"ok": "1"})


async def _refuse_429(request: typing.Any) -> typing.Any:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    raise StarletteHTTPException(
        429,
        "Too Many Requests",
        headers={"RateLimit-Policy": '"floor";q=1;w=3600', "RateLimit": '"floor";r=0;t=3600',
                 "Retry-After": "3600"},
    )  # fmt: skip


def apps(refuse: bool = False) -> dict[str, typing.Any]:
    """The floor apps by name: Starlette and FastAPI with :class:`FloorLimiter`, FastAPI
    with :func:`floor_dependency`."""
    from fastapi import Depends, FastAPI
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    limit = REFUSE_LIMIT if refuse else ADMIT_LIMIT
    middleware = [Middleware(FloorLimiter, limit=limit)]
    out: dict[str, typing.Any] = {
        "starlette-floor": Starlette(routes=[Route("/", _endpoint)], middleware=middleware)
    }
    fastapi_mw = FastAPI(middleware=middleware)

    @fastapi_mw.get("/")
    async def root_mw() -> dict[str, str]:
        return {"ok": "1"}

    out["fastapi-floor"] = fastapi_mw
    fastapi_dep = FastAPI()

    @fastapi_dep.get("/", dependencies=[Depends(floor_dependency(limit))])
    async def root_dep() -> dict[str, str]:
        return {"ok": "1"}

    out["fastapi-floor-depends"] = fastapi_dep
    # No limiter: the app refusing every request itself, with HTTPException(429) through
    # its own exception handlers (what a refusal costs where handlers answer it).
    out["starlette-raise"] = Starlette(routes=[Route("/", _refuse_429)])
    fastapi_raise = FastAPI()

    @fastapi_raise.get("/")
    async def root_raise() -> None:
        await _refuse_429(None)

    out["fastapi-raise"] = fastapi_raise
    return out


async def http_apps(
    kind: str, servers: dict[str, typing.Any], refuse: bool = False
) -> dict[str, typing.Any]:
    """The floor apps for ``--section http`` (``kind`` is ignored: the store is a dict)."""
    return apps(refuse)
