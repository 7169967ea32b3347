"""A throttle built inside ``async with backend():`` reads the backend's identifier and
handler when it has none of its own (traffik 1.0.0b2's ``test_throttle_initialization``)."""

from __future__ import annotations

import typing

import pytest
from httpx import ASGITransport, AsyncClient
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from traffik.backends.inmemory import InMemoryBackend
from traffik.starlette import throttled
from traffik.throttles import HTTPThrottle


async def by_header(connection: Request) -> str:
    return connection.headers.get("x-user", "nobody")


async def refuse_with_418(connection: Request, wait_ms: float, *args: typing.Any,
                          **kwargs: typing.Any) -> None:  # fmt: skip
    raise HTTPException(418, "I'm a teapot")


@pytest.mark.asyncio
async def test_throttle_initialization_reads_the_backends_identifier_and_handler() -> None:
    backend = InMemoryBackend(
        namespace="starlette-init-used", identifier=by_header, handle_throttled=refuse_with_418
    )
    throttle = HTTPThrottle("init-used", "1/h")

    @throttled(throttle)
    async def root(request: Request) -> JSONResponse:
        return JSONResponse({"ok": "1"})

    app = Starlette(routes=[Route("/", root)], lifespan=backend.lifespan)
    assert throttle.identifier is None
    async with backend(app):
        assert throttle.backend is backend
        assert throttle.identifier is by_header
        assert throttle.handle_throttled is refuse_with_418
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/", headers={"x-user": "ann"})).status_code == 200
            # Another identity (the backend's identifier) has its own budget...
            assert (await client.get("/", headers={"x-user": "bob"})).status_code == 200
            # ...and the backend's handler answers the refusal.
            assert (await client.get("/", headers={"x-user": "ann"})).status_code == 418
