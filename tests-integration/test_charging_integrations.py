"""charge_when through every integration: the login example, errors, headers, disconnects."""

from __future__ import annotations

import asyncio
import logging
import typing

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from traffik.backends.inmemory import InMemoryBackend
from traffik.failures import FailurePolicy
from traffik.fastapi import throttled as fastapi_throttled
from traffik.lifecycle import LifecycleObserver, attach
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.starlette import throttled as starlette_throttled
from traffik.throttles import HTTPThrottle

if typing.TYPE_CHECKING:
    from conftest import ServeApp  # type: ignore[import-not-found]

pytestmark = pytest.mark.asyncio


def failed(connection: HTTPConnection, status: int) -> bool:
    """Count only failed attempts: 4xx and 5xx answers."""
    return status >= 400


def client(app: typing.Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def attempts(app: typing.Any, passwords: list[str]) -> list[int]:
    async with client(app) as http:
        return [(await http.post("/login", json={"password": p})).status_code for p in passwords]


# -- the login example: 5 failed logins per 15 minutes, successes never counted ---------


def fastapi_login(how: str) -> FastAPI:
    backend: InMemoryBackend[typing.Any] = InMemoryBackend(namespace="login")
    app = FastAPI(lifespan=backend.lifespan)
    if how == "router":
        # Routes included from an APIRouter are observed through the middleware only;
        # routes of the app are observed from their first request once the backend is
        # entered.
        app.add_middleware(LifecycleObserver)
        router = APIRouter()
        guard: typing.Any = Depends(HTTPThrottle("login", "5/15m", charge_when=failed))

        @router.post("/login", dependencies=[guard])
        async def routed_login(body: dict[str, str]) -> dict[str, bool]:
            if body.get("password") != "secret":
                raise HTTPException(status_code=401, detail="wrong password")
            return {"ok": True}

        app.include_router(router)
        return app
    if how == "depends":
        guard = Depends(HTTPThrottle("login", "5/15m", charge_when=failed))
    else:
        guard = fastapi_throttled(HTTPThrottle("login", "5/15m"), charge_when=failed)

    @app.post("/login", dependencies=[guard])
    async def login(body: dict[str, str]) -> dict[str, bool]:
        if body.get("password") != "secret":
            raise HTTPException(status_code=401, detail="wrong password")
        return {"ok": True}

    return app


def starlette_login(how: str) -> Starlette:
    backend: InMemoryBackend[typing.Any] = InMemoryBackend(namespace="login")

    async def login(request: Request) -> Response:
        body = await request.json()
        if body.get("password") != "secret":
            return PlainTextResponse("wrong password", status_code=401)
        return PlainTextResponse("welcome")

    if how == "decorator":
        endpoint = starlette_throttled(HTTPThrottle("login", "5/15m"), charge_when=failed)(login)
        return Starlette(
            routes=[Route("/login", endpoint, methods=["POST"])], lifespan=backend.lifespan
        )
    app = Starlette(routes=[Route("/login", login, methods=["POST"])], lifespan=backend.lifespan)
    rule = MiddlewareThrottle(HTTPThrottle("login", "5/15m"), path="/login", charge_when=failed)
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[rule])
    return app


LOGINS = [
    *(("fastapi", how) for how in ("depends", "decorator", "router")),
    *(("starlette", how) for how in ("decorator", "middleware")),
]


@pytest.mark.parametrize(("framework", "how"), LOGINS)
async def test_five_failed_logins_lock_out_and_successes_never_count(
    framework: str, how: str
) -> None:
    app = fastapi_login(how) if framework == "fastapi" else starlette_login(how)
    # Frozen mid-window: the test never straddles the end of its 15-minute window.
    backend = InMemoryBackend(namespace="login", clock=lambda: 450_000)
    async with backend(app):
        # Ten successful logins and four failures: never locked out.
        statuses = await attempts(app, ["secret"] * 10 + ["wrong"] * 4 + ["secret"] * 10)
        assert statuses == [200] * 10 + [401] * 4 + [200] * 10
        # The fifth failure is still answered; from then on every attempt is refused.
        assert await attempts(app, ["wrong", "wrong", "secret"]) == [401, 429, 429]


# -- a charge_when that raises, or a request that raises, stays charged --------------


async def test_a_charge_when_that_raises_leaves_the_request_charged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(connection: HTTPConnection, status: int) -> bool:
        raise RuntimeError("bug in charge_when")

    throttle = HTTPThrottle("t", "2/m", charge_when=broken)
    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    backend = InMemoryBackend(namespace="broken", clock=lambda: 30_000)
    with caplog.at_level(logging.ERROR, logger="traffik.charging"):
        async with backend(app), client(app) as http:
            assert [(await http.get("/")).status_code for _ in range(3)] == [200, 200, 429]
    assert "charge_when of throttle 't' raised" in caplog.text


async def test_async_charge_when_and_the_headers_of_a_refunded_response() -> None:
    async def only_errors(connection: HTTPConnection, status: int) -> bool:
        await asyncio.sleep(0)
        return status >= 500

    # Mid-window: a refund's age (real time) must fall in the window of the charge.
    backend = InMemoryBackend(namespace="hdr", clock=lambda: 90_000)
    throttle = HTTPThrottle("t", "3/m", charge_when=only_errors)
    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    async with backend(app), client(app) as http:
        for _ in range(5):
            response = await http.get("/")
            assert response.status_code == 200
            # The refund happened as the response started: its fields show it (a
            # full quota, nothing to restore).
            assert response.headers["RateLimit"] == '"t";r=3;t=0'


async def test_a_request_that_raises_before_its_status_stays_charged() -> None:
    calls: list[int] = []

    def judge(connection: HTTPConnection, status: int) -> bool:
        calls.append(status)
        return False

    async def boom(request: Request) -> Response:
        raise RuntimeError("the endpoint failed")

    throttle = HTTPThrottle("t", "2/m", charge_when=judge)
    app = Starlette(routes=[Route("/", boom)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    backend = InMemoryBackend(namespace="raise", clock=lambda: 30_000)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with backend(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert [(await http.get("/")).status_code for _ in range(3)] == [500, 500, 429]
    assert calls == [], "charge_when was called although no status was sent"


async def test_a_client_leaving_before_the_status_stays_charged(serve_app: ServeApp) -> None:
    started = asyncio.Event()
    ended = asyncio.Event()
    release = asyncio.Event()
    judged: list[int] = []

    async def slow(request: Request) -> Response:
        attach(request.scope).on_end(lambda status, outcome: ended.set())
        started.set()
        await release.wait()
        return PlainTextResponse("late")

    def judge(connection: HTTPConnection, status: int) -> bool:
        judged.append(status)
        return False

    throttle = HTTPThrottle("t", "1/m", charge_when=judge)
    app = Starlette(routes=[Route("/slow", slow)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    backend = InMemoryBackend(namespace="gone", clock=lambda: 30_000)
    async with backend(app), serve_app(app) as address:
        host, port = address.split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /slow HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(started.wait(), 5)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(ended.wait(), 5)  # the disconnect ended it, status unknown
        release.set()
        async with httpx.AsyncClient() as http:
            refused = await http.get(f"http://{address}/slow")
    assert refused.status_code == 429
    assert judged == []


async def test_a_charge_when_on_a_throttle_nobody_observes_leaves_it_charged() -> None:
    throttle = HTTPThrottle("manual", "1/m", charge_when=failed)

    async def endpoint(request: Request) -> Response:
        await throttle(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    backend = InMemoryBackend(namespace="manual", clock=lambda: 30_000)
    async with backend(app), client(app) as http:
        assert [(await http.get("/")).status_code for _ in range(2)] == [200, 429]


async def test_a_refund_in_a_fastapi_endpoint_shows_on_its_response() -> None:
    backend = InMemoryBackend(namespace="fa", clock=lambda: 90_000)
    throttle = HTTPThrottle("jobs", "10/m")
    app = FastAPI()

    @app.post("/jobs", dependencies=[Depends(throttle)])
    async def jobs(request: Request) -> dict[str, bool]:
        await throttle.refund(request)  # the job was cancelled
        return {"cancelled": True}

    async with backend(app), client(app) as http:
        first = await http.post("/jobs")
        second = await http.post("/jobs")
    assert first.headers["RateLimit"] == '"jobs";r=10;t=0'
    assert second.headers["RateLimit"] == '"jobs";r=10;t=0'


class _NoAdjust(InMemoryBackend):  # type: ignore[type-arg]
    """Decides, but every adjustment fails as if the store went away."""

    async def adjust(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        raise ConnectionError("the store went away")


async def test_a_refund_the_backend_cannot_take_never_breaks_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = FailurePolicy(on_error="raise", timeout=0.05)
    backend = _NoAdjust(namespace="down", clock=lambda: 30_000, failure_policy=policy)
    throttle = HTTPThrottle("t", "2/m", charge_when=failed)
    app = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    with caplog.at_level(logging.ERROR, logger="traffik.charging"):
        async with backend(app), client(app) as http:
            # The refunds of the 200s fail (on_error="raise"): answered, and charged.
            assert [(await http.get("/")).status_code for _ in range(3)] == [200, 200, 429]
    assert "refunding a request of throttle 't' failed; it stays charged" in caplog.text
