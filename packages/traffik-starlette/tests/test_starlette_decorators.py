"""traffik.starlette.throttled on plain Starlette endpoints."""

from __future__ import annotations

import inspect
import typing

import pytest
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from traffik.backends.inmemory import InMemoryBackend
from traffik.starlette import throttled
from traffik.throttles import HTTPThrottle, WebSocketThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s


def make_app(routes: list[typing.Any]) -> Starlette:
    backend = InMemoryBackend(namespace="dec", clock=lambda: NOW)
    return Starlette(routes=routes, lifespan=backend.lifespan)


def test_async_endpoint_keeps_its_signature_and_gets_headers() -> None:
    @throttled(HTTPThrottle("async", "2/m"))
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    assert list(inspect.signature(endpoint).parameters) == ["request"]
    assert endpoint.__name__ == "endpoint"
    with TestClient(make_app([Route("/e", endpoint)])) as client:
        first = client.get("/e")
        assert first.headers["ratelimit"] == '"async";r=1;t=60'
        assert client.get("/e").status_code == 200
        refused = client.get("/e")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"


def test_sync_endpoint_runs_in_threadpool() -> None:
    import threading

    threads: list[str] = []

    @throttled(HTTPThrottle("sync", "1/m"))
    def endpoint(request: Request) -> Response:
        threads.append(threading.current_thread().name)
        return PlainTextResponse("ok")

    with TestClient(make_app([Route("/e", endpoint)])) as client:
        assert client.get("/e").status_code == 200
        assert client.get("/e").status_code == 429
    assert len(threads) == 1


def test_stacked_and_multiple_throttles_apply_in_order() -> None:
    burst = HTTPThrottle("burst", "2/m")
    sustained = HTTPThrottle("sustained", "3/m")
    extra = HTTPThrottle("extra", "10/m")

    @throttled(extra)
    @throttled(burst, sustained)
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    with TestClient(make_app([Route("/e", endpoint)])) as client:
        response = client.get("/e")
        assert response.headers["ratelimit-policy"].count(";q=") == 3
        assert client.get("/e").status_code == 200
        assert client.get("/e").status_code == 429


def test_http_endpoint_method() -> None:
    class Items(HTTPEndpoint):
        @throttled(HTTPThrottle("cbv", "1/m"))
        async def get(self, request: Request) -> Response:
            return PlainTextResponse("ok")

    with TestClient(make_app([Route("/items", Items)])) as client:
        assert client.get("/items").status_code == 200
        assert client.get("/items").status_code == 429


def test_websocket_endpoint_throttled_at_connect() -> None:
    accepted = 0

    @throttled(WebSocketThrottle("wsdec", "1/m"))
    async def ws(websocket: WebSocket) -> None:
        nonlocal accepted
        await websocket.accept()
        accepted += 1
        await websocket.close()

    with TestClient(make_app([WebSocketRoute("/ws", ws)])) as client:
        with client.websocket_connect("/ws"):
            pass
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass
    assert denied.value.status_code == 429
    assert accepted == 1


def test_rejects_non_throttles() -> None:
    with pytest.raises(TypeError, match="at least one throttle"):
        throttled()
    with pytest.raises(TypeError, match="takes throttles"):
        throttled("x")  # type: ignore[arg-type]
