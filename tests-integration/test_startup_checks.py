"""Startup checks (issue 24 item 4): a forgotten lifespan is reported at startup.

With ``ThrottleMiddleware`` in the app, the startup fails naming every throttle that
would have no backend: the middleware's rules, and the routes' throttles (FastAPI
dependencies, ``traffik.fastapi.throttled``, ``traffik.starlette.throttled``, in
mounted routers too). Any app can run the same check with ``check_backends(app)``.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from traffik.backends.inmemory import InMemoryBackend
from traffik.checks import app_throttles, check_backends, missing_backends
from traffik.exceptions import ConfigurationError
from traffik.fastapi import throttled as fastapi_throttled
from traffik.rates import Rate
from traffik.starlette import ThrottleMiddleware
from traffik.starlette import throttled as starlette_throttled
from traffik.testing.servers import find_free_port
from traffik.throttles import HTTPThrottle


def fastapi_app(*, lifespan: object = None, middleware: bool = True) -> FastAPI:
    """Throttles everywhere a FastAPI app can hold them; no backend unless ``lifespan``."""
    app = FastAPI(
        lifespan=lifespan,  # type: ignore[arg-type]
        middleware=[
            Middleware(ThrottleMiddleware, middleware_throttles=[HTTPThrottle("area", "9/m")])
        ]
        if middleware
        else [],
    )

    @app.get("/dep", dependencies=[Depends(HTTPThrottle("dep", "9/m"))])
    async def dep() -> dict[str, str]:
        return {}

    @app.get("/decorated")
    @fastapi_throttled(HTTPThrottle("decorated", "9/m"))
    async def decorated() -> dict[str, str]:
        return {}

    router = APIRouter(dependencies=[Depends(HTTPThrottle("router", "9/m"))])

    @router.get("/inside")
    async def inside() -> dict[str, str]:
        return {}

    app.include_router(router, prefix="/v1")
    return app


UIDS = ("'area' (middleware)", "'dep' (/dep)", "'decorated' (/decorated)", "'router' (/v1/inside)")


def test_a_forgotten_lifespan_fails_the_startup_naming_every_throttle() -> None:
    with pytest.raises(ConfigurationError) as caught, TestClient(fastapi_app()):
        pass
    message = str(caught.value)
    for uid in UIDS:
        assert f"throttle {uid}" in message
    assert "lifespan=backend.lifespan" in message


def test_with_the_lifespan_the_app_starts_and_serves() -> None:
    backend = InMemoryBackend(namespace="startup")
    with TestClient(fastapi_app(lifespan=backend.lifespan)) as client:
        assert client.get("/dep").status_code == 200
        assert client.get("/v1/inside").status_code == 200


class _Collect(logging.Handler):
    """Every record of a logger, as text (uvicorn's own handlers may write elsewhere)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(logging.Formatter().format(record))


def test_uvicorn_reports_a_forgotten_lifespan_and_does_not_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = uvicorn.Config(
        fastapi_app(), host="127.0.0.1", port=find_free_port(), lifespan="on", log_config=None
    )
    server = uvicorn.Server(config)
    collect = _Collect()
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(collect)
    try:
        with caplog.at_level(logging.ERROR):
            try:
                asyncio.run(server.serve())
            except SystemExit as exc:  # recent uvicorn exits (code 3), as its CLI does
                assert exc.code == 3  # noqa: PT017
    finally:
        uvicorn_log.removeHandler(collect)
    assert not server.started
    # Once an earlier test configured uvicorn's logging in this process, its records
    # no longer reach caplog's handler: read them on uvicorn's logger itself too.
    logged = caplog.text + "\n".join(collect.texts)
    assert "ConfigurationError: These throttles have no backend:" in logged
    assert "throttle 'area' (middleware)" in logged
    assert "Application startup failed" in logged


def test_starlette_decorated_and_mounted_routes_are_found() -> None:
    @starlette_throttled(HTTPThrottle("ep", "9/m"))
    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Mount("/api", routes=[Route("/x", endpoint)])])
    assert [(where, t.uid) for where, t in app_throttles(app)] == [("/api/x", "ep")]
    with pytest.raises(ConfigurationError, match=r"throttle 'ep' \(/api/x\)"):
        check_backends(app)


def test_throttles_that_will_find_a_backend_are_not_reported() -> None:
    own = InMemoryBackend(namespace="own")
    app = FastAPI(
        middleware=[
            Middleware(
                ThrottleMiddleware,
                middleware_throttles=[HTTPThrottle("area", "9/m")],
                backend=own,
            )
        ]
    )

    @app.get(
        "/a",
        dependencies=[
            Depends(HTTPThrottle("own", "9/m", backend=own)),
            Depends(HTTPThrottle("ctx", "9/m", context_backend=True)),
            Depends(HTTPThrottle("free", Rate())),
        ],
    )
    async def a() -> dict[str, str]:
        return {}

    assert missing_backends(app) == []
    with TestClient(app):
        pass  # started: "ctx" is resolved per call, by design


def test_a_check_inside_an_active_backend_context_passes() -> None:
    app = fastapi_app(middleware=False)
    assert len(missing_backends(app)) == 3

    async def inside() -> list[str]:
        async with InMemoryBackend(namespace="ctx")():
            return missing_backends(app)

    assert asyncio.run(inside()) == []
