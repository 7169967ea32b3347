"""Fixtures shared by the cross-package scenarios (the servers come from the root conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import typing

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

if typing.TYPE_CHECKING:
    from traffik.throttles import HTTPThrottle

ThrottledApp = typing.Callable[["HTTPThrottle"], Starlette]


def _throttled_app(throttle: HTTPThrottle) -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", endpoint)])


@pytest.fixture
def throttled_app() -> ThrottledApp:
    """Builds a Starlette app with one route, ``/``, that calls ``throttle`` and answers "ok"."""
    return _throttled_app


ServeApp = typing.Callable[[typing.Any], typing.AsyncContextManager[str]]


@contextlib.asynccontextmanager
async def _serve(app: typing.Any) -> typing.AsyncIterator[str]:
    import uvicorn

    from traffik.testing.servers import find_free_port

    port = find_free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    # Bounded by count: uvicorn binds within a few ticks of the loop.
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        server.should_exit = True
        await task
        raise RuntimeError(f"uvicorn did not start on port {port}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def serve_app() -> ServeApp:
    """``async with serve_app(app) as "127.0.0.1:port":`` a real uvicorn in this event loop."""
    return _serve
