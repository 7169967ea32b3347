"""The traffik 1.0.0b2 README examples about throttles, run as written (helpers defined here).

No ``from __future__ import annotations`` here: FastAPI must see the README's
annotations as real classes, as it does in the README's own modules.
"""

import typing

import pytest
from starlette.testclient import TestClient

# -- helpers the README leaves to the reader ---------------------------------------------


def extract_user_id(authorization: typing.Any) -> str:
    """``Bearer <role>:<user>`` -> user (the README's placeholder)."""
    if not isinstance(authorization, str) or ":" not in authorization:
        return "anonymous"
    return authorization.rsplit(":", 1)[1]


def extract_role(authorization: typing.Any) -> str:
    if not isinstance(authorization, str) or ":" not in authorization:
        return "user"
    return authorization.split(" ", 1)[-1].split(":", 1)[0]


# -- Quick Start 1: Basic HTTP Throttling with Starlette ----------------------------------


def test_quick_start_1_starlette() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    # Create backend
    backend = InMemoryBackend(namespace="myapp", persistent=False)

    # Create throttle with string rate format
    throttle = HTTPThrottle(
        uid="basic_limit",
        rate="5/10s",  # 5 requests per 10 seconds
    )

    async def throttled_endpoint(request: Request):  # type: ignore[no-untyped-def]
        await throttle(request)
        return JSONResponse({"message": "Success"})

    app = Starlette(
        routes=[
            Route("/api/data", throttled_endpoint, methods=["GET"]),
        ],
        lifespan=backend.lifespan,
    )

    backend.clock = lambda: 1_000_000  # freeze time inside one window
    with TestClient(app) as client:
        codes = [client.get("/api/data").status_code for _ in range(6)]
        last = client.get("/api/data")
    assert codes == [200] * 5 + [429]
    assert last.headers["Retry-After"] == "10"
    assert last.headers["RateLimit"] == '"basic_limit";r=0;t=10'


# -- Quick Start 2: FastAPI with Dependency Injection -----------------------------------


def test_quick_start_2_fastapi() -> None:
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    # Create backend
    backend = InMemoryBackend(namespace="api")

    # Setup lifespan
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        async with backend(app, persistent=True, close_on_exit=True):
            yield

    app = FastAPI(lifespan=lifespan)

    # Create throttle
    throttle = HTTPThrottle(uid="endpoint_limit", rate="10/m")

    @app.get("/api/hello", dependencies=[Depends(throttle)])
    async def say_hello():  # type: ignore[no-untyped-def]
        return {"message": "Hello World"}

    backend.clock = lambda: 60_000 * 1000
    with TestClient(app) as client:
        responses = [client.get("/api/hello") for _ in range(11)]
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert responses[0].json() == {"message": "Hello World"}
    assert responses[0].headers["RateLimit"] == '"endpoint_limit";r=9;t=60'
    assert responses[-1].headers["Retry-After"] == "60"
    assert backend.connection is None  # close_on_exit=True


# -- Quick Start 4: WebSocket Throttling -------------------------------------------------


def test_quick_start_4_websocket() -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.exceptions import ConnectionThrottled
    from traffik.throttles import WebSocketThrottle

    ws_throttle = WebSocketThrottle(uid="ws_messages", rate="3/10s")

    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            try:
                data = await websocket.receive_json()
                await ws_throttle(websocket)  # Rate limit per message

                await websocket.send_json(
                    {
                        "status": "success",
                        "data": data,
                    }
                )
            except ConnectionThrottled as exc:
                await websocket.send_json(
                    {
                        "status": "error",
                        "status_code": exc.status_code,
                        "detail": exc.detail,
                    }
                )
                break

        await websocket.close()

    backend = InMemoryBackend(namespace="ws", clock=lambda: 10_000 * 1000)
    app = Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)], lifespan=backend.lifespan)
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        replies = []
        for i in range(4):
            ws.send_json({"n": i})
            replies.append(ws.receive_json())
    assert [r["status"] for r in replies] == ["success"] * 3 + ["error"]
    assert replies[0]["data"] == {"n": 0}
    assert replies[3]["status_code"] == 429
    assert replies[3]["detail"] == "Too many requests. Retry in 10 seconds."


# -- Custom Throttled Response ----------------------------------------------------------


def test_custom_throttled_response() -> None:
    # The handler's dict detail needs FastAPI's JSON HTTPException handler.
    from fastapi import FastAPI, Request
    from starlette.exceptions import HTTPException
    from starlette.requests import HTTPConnection

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    async def custom_throttled_handler(connection: HTTPConnection, wait_ms: int, *args, **kwargs):  # type: ignore[no-untyped-def]
        wait_seconds = wait_ms // 1000
        raise HTTPException(
            status_code=429,
            detail={
                "error": "rate_limit_exceeded",
                "message": f"Too many requests. Retry in {wait_seconds}s",
                "retry_after": wait_seconds,
            },
            headers={"Retry-After": str(wait_seconds)},
        )

    throttle = HTTPThrottle(
        uid="api",
        rate="100/m",
        handle_throttled=custom_throttled_handler,
    )

    backend = InMemoryBackend(namespace="custom", clock=lambda: 60_000 * 5)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/x")
    async def endpoint(request: Request) -> dict[str, bool]:
        await throttle(request, cost=100)
        return {"ok": True}

    with TestClient(app) as client:
        assert client.get("/x").status_code == 200
        refused = client.get("/x")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "60"
    assert refused.json() == {
        "detail": {
            "error": "rate_limit_exceeded",
            "message": "Too many requests. Retry in 60s",
            "retry_after": 60,
        }
    }


# -- Exempting Connections ----------------------------------------------------------------


def test_exempting_connections() -> None:
    from fastapi import Depends, FastAPI
    from starlette.requests import HTTPConnection

    from traffik import UNLIMITED
    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    async def admin_bypass_identifier(connection: HTTPConnection) -> typing.Any:
        """Bypass throttling for admin users"""
        user_role = extract_role(connection.headers.get("authorization"))
        if user_role == "admin":
            return UNLIMITED  # Admins bypass throttling

        # Regular users get normal identification
        user_id = extract_user_id(connection.headers.get("authorization"))
        return f"user:{user_id}"

    throttle = HTTPThrottle(
        uid="api_limit",
        rate="50/m",
        identifier=admin_bypass_identifier,
    )

    backend = InMemoryBackend(namespace="exempt", clock=lambda: 0)
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/data", dependencies=[Depends(throttle)])
    async def data() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as client:
        admin = {"Authorization": "Bearer admin:1"}
        alice = {"Authorization": "Bearer user:alice"}
        bob = {"Authorization": "Bearer user:bob"}
        assert all(client.get("/data", headers=admin).status_code == 200 for _ in range(60))
        assert [client.get("/data", headers=alice).status_code for _ in range(51)][-2:] == [
            200,
            429,
        ]
        assert client.get("/data", headers=bob).status_code == 200


# -- Multiple Rate Limits per Endpoint ------------------------------------------------------


def test_multiple_rate_limits() -> None:
    from fastapi import Depends, FastAPI

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    backend = InMemoryBackend(namespace="multi", clock=lambda: 0)
    app = FastAPI(lifespan=backend.lifespan)

    # Burst limit: 10 per minute
    burst_limit = HTTPThrottle(uid="burst", rate="10/m")

    # Sustained limit: 100 per hour
    sustained_limit = HTTPThrottle(uid="sustained", rate="100/h")

    @app.get("/api/data", dependencies=[Depends(burst_limit), Depends(sustained_limit)])
    async def get_data():  # type: ignore[no-untyped-def]
        return {"data": "value"}

    with TestClient(app) as client:
        responses = [client.get("/api/data") for _ in range(11)]
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert responses[9].headers["RateLimit"] == '"burst";r=0;t=60,"sustained";r=90;t=3600'
    assert responses[10].headers["Retry-After"] == "60"


# -- Weighted Requests ----------------------------------------------------------------------


def test_weighted_requests() -> None:
    from fastapi import Depends, FastAPI, Request

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.throttles import HTTPThrottle

    backend = InMemoryBackend(namespace="weights", clock=lambda: 0)
    app = FastAPI(lifespan=backend.lifespan)

    # Default cost of 1 per request
    standard_throttle = HTTPThrottle(
        uid="standard",
        rate="100/m",
    )

    # Expensive operations cost more
    expensive_throttle = HTTPThrottle(
        uid="reports",
        rate="100/m",
        cost=5,  # Each request counts as 5 toward the limit
    )

    # Per-request cost override
    async def dynamic_endpoint(request: Request):  # type: ignore[no-untyped-def]
        # Check operation type
        if request.query_params.get("full_export"):
            # Override with higher cost for expensive operation
            await expensive_throttle(request, cost=10)
        else:
            await expensive_throttle(request, cost=2)
        return {"status": "ok"}

    @app.get("/api/data", dependencies=[Depends(standard_throttle)])
    async def get_data():  # type: ignore[no-untyped-def]
        return {"data": "value"}

    @app.get("/api/reports", dependencies=[Depends(expensive_throttle)])
    async def generate_report():  # type: ignore[no-untyped-def]
        return {"report": "data"}

    @app.post("/api/export")
    async def export_data(request: Request):  # type: ignore[no-untyped-def]
        return await dynamic_endpoint(request)

    with TestClient(app) as client:
        reports = [client.get("/api/reports").status_code for _ in range(21)]
        exports = [client.post("/api/export?full_export=1").status_code for _ in range(11)]
        small = [client.post("/api/export").status_code for _ in range(2)]
        data = client.get("/api/data")
    assert reports == [200] * 20 + [429]
    assert exports == [200] * 10 + [429]
    assert small == [429, 429]  # the export budget is spent
    assert data.headers["RateLimit"] == '"standard";r=99;t=60'


# -- Handling Rate Limit Exceptions -------------------------------------------------------------


def test_handling_rate_limit_exceptions() -> None:
    from fastapi import Depends, FastAPI, Request
    from starlette.responses import JSONResponse

    from traffik.backends.inmemory import InMemoryBackend
    from traffik.exceptions import ConnectionThrottled
    from traffik.throttles import HTTPThrottle

    backend = InMemoryBackend(namespace="handler", clock=lambda: 60_000 * 10 + 15_500)
    app = FastAPI(lifespan=backend.lifespan)

    @app.exception_handler(ConnectionThrottled)
    async def throttle_handler(request: Request, exc: ConnectionThrottled):  # type: ignore[no-untyped-def]
        return JSONResponse(
            status_code=429,
            content={
                "error": "rate_limit_exceeded",
                "retry_after_seconds": exc.retry_after,
                "message": exc.detail,
            },
            headers={"Retry-After": str(exc.retry_after)},
        )

    throttle = HTTPThrottle("handled", "1/m")

    @app.get("/h", dependencies=[Depends(throttle)])
    async def h() -> dict[str, bool]:
        return {"ok": True}

    with TestClient(app) as client:
        client.get("/h")
        refused = client.get("/h")
    assert refused.status_code == 429
    assert refused.json() == {
        "error": "rate_limit_exceeded",
        "retry_after_seconds": 45,
        "message": "Too many requests. Retry in 45 seconds.",
    }
    assert refused.headers["Retry-After"] == "45"


# -- Testing (the README's own test, with its fixture) ----------------------------------------

from httpx import ASGITransport, AsyncClient  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from traffik.backends.inmemory import InMemoryBackend  # noqa: E402
from traffik.throttles import HTTPThrottle  # noqa: E402


@pytest.fixture
async def backend():  # type: ignore[no-untyped-def]
    backend = InMemoryBackend(namespace="test", persistent=False)
    async with backend():
        yield backend


@pytest.mark.anyio
async def test_throttling(backend):  # type: ignore[no-untyped-def]
    backend.clock = lambda: 1_000_000  # (added) stay inside one 1 s window
    throttle = HTTPThrottle(uid="test", rate="2/s")

    async def endpoint(request):  # type: ignore[no-untyped-def]
        await throttle(request)
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[Route("/test", endpoint, methods=["GET"])],
        lifespan=backend.lifespan,
    )

    async with AsyncClient(
        transport=ASGITransport(app=app),
        base_url="http://testserver",
    ) as client:
        # First 2 requests succeed
        r1 = await client.get("/test")
        r2 = await client.get("/test")
        assert r1.status_code == 200
        assert r2.status_code == 200

        # Third request throttled
        r3 = await client.get("/test")
        assert r3.status_code == 429


# -- Handling Anonymous Connections -----------------------------------------------------------


@pytest.mark.asyncio
async def test_handling_anonymous_connections() -> None:
    from starlette.requests import HTTPConnection

    from traffik.backends.base import connection_identifier
    from traffik.exceptions import AnonymousConnection

    async def safe_identifier(connection: HTTPConnection) -> str:
        try:
            return await connection_identifier(connection)
        except AnonymousConnection:
            # Fall back to a default identifier
            return f"anonymous:{connection.scope['path']}"

    def connection(client):  # type: ignore[no-untyped-def]
        return HTTPConnection({"type": "http", "path": "/p", "headers": [], "client": client})

    assert await safe_identifier(connection(None)) == "anonymous:/p"
    assert await safe_identifier(connection(("198.51.100.1", 1))) == "198.51.100.1"
