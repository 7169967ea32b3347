"""A throttle built inside ``async with backend():`` reads the backend's identifier and
handler when it has none of its own (traffik 1.0.0b2's ``test_throttle_initialization``)."""

from __future__ import annotations

import typing

import pytest
from fastapi import Depends, FastAPI, HTTPException
from httpx import ASGITransport, AsyncClient
from starlette.requests import Request

from traffik.backends.inmemory import InMemoryBackend
from traffik.throttles import HTTPThrottle, WebSocketThrottle


async def by_header(connection: Request) -> str:
    return connection.headers.get("x-user", "nobody")


async def refuse_with_418(connection: Request, wait_ms: float, *args: typing.Any,
                          **kwargs: typing.Any) -> None:  # fmt: skip
    raise HTTPException(418, "I'm a teapot")


@pytest.mark.asyncio
async def test_throttle_initialization() -> None:
    backend = InMemoryBackend(namespace="fastapi-init")
    async with backend():
        throttle = HTTPThrottle("init-http", "2/s")
        assert throttle.backend is backend
        assert throttle.identifier is backend.identifier
        assert throttle.handle_throttled is backend.handle_throttled
        ws = WebSocketThrottle("init-ws", "2/s")
        assert ws.identifier is backend.identifier
        assert ws.handle_throttled is backend.handle_throttled
        own = HTTPThrottle("init-own", "2/s", identifier=by_header,
                           handle_throttled=refuse_with_418)  # fmt: skip
        assert own.identifier is by_header
        assert own.handle_throttled is refuse_with_418
    # Outside any context, a throttle without its own reads None (nothing is bound).
    assert throttle.identifier is None
    assert throttle.handle_throttled is None
    assert own.identifier is by_header


@pytest.mark.asyncio
async def test_the_backends_identifier_and_handler_are_the_ones_used() -> None:
    backend = InMemoryBackend(
        namespace="fastapi-init-used", identifier=by_header, handle_throttled=refuse_with_418
    )
    throttle = HTTPThrottle("init-used", "1/h")
    app = FastAPI(lifespan=backend.lifespan)

    @app.get("/", dependencies=[Depends(throttle)])
    async def root() -> dict[str, str]:
        return {"ok": "1"}

    async with backend(app):
        assert throttle.identifier is by_header
        assert throttle.handle_throttled is refuse_with_418
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/", headers={"x-user": "ann"})).status_code == 200
            # Another identity (the backend's identifier) has its own budget...
            assert (await client.get("/", headers={"x-user": "bob"})).status_code == 200
            # ...and the backend's handler answers the refusal.
            assert (await client.get("/", headers={"x-user": "ann"})).status_code == 418
