"""HEAD counts with GET (issue 14 item 6), on Starlette and FastAPI, through every integration.

A route that answers HEAD runs its GET endpoint (Starlette adds HEAD to every GET
route; FastAPI does when asked). Keys carry the method, so HEAD is keyed as GET:
a client alternating GET and HEAD gets one budget, and the endpoint runs as often
as the limit says. Other methods keep budgets of their own.
"""

from __future__ import annotations

import typing

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from traffik.backends.inmemory import InMemoryBackend
from traffik.fastapi import throttled as fastapi_throttled
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.starlette import throttled as starlette_throttled
from traffik.throttles import HTTPThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s: the window never rolls over here

#: (framework, integration); the middleware keys by area unless "per-path".
CASES = [
    ("fastapi", "depends"),
    ("fastapi", "decorator"),
    ("fastapi", "middleware-per-path"),
    ("starlette", "direct"),
    ("starlette", "decorator"),
    ("starlette", "middleware"),
    ("starlette", "middleware-per-path"),
]


def build(framework: str, integration: str) -> tuple[typing.Any, list[str]]:
    """``/r`` answering GET, HEAD and POST, throttled 3/m; returns the app and the GET/HEAD runs."""
    backend = InMemoryBackend(namespace="head", clock=lambda: NOW)
    throttle = HTTPThrottle("head", "3/m")
    runs: list[str] = []
    middleware = []
    if integration.startswith("middleware"):
        rule = MiddlewareThrottle(
            throttle, methods={"GET", "POST"}, per_path=integration == "middleware-per-path"
        )
        middleware = [Middleware(ThrottleMiddleware, middleware_throttles=[rule])]

    if framework == "fastapi":
        app = FastAPI(lifespan=backend.lifespan, middleware=middleware)
        dependencies: list[typing.Any] = {
            "depends": [Depends(throttle)],
            "decorator": [fastapi_throttled(throttle)],
        }.get(integration, [])

        @app.api_route("/r", methods=["GET", "HEAD"], dependencies=dependencies)
        async def read(request: Request) -> dict[str, int]:
            runs.append(request.method)
            return {"ok": 1}

        @app.post("/r", dependencies=dependencies)
        async def write() -> dict[str, int]:
            return {"ok": 1}

        return app, runs

    async def endpoint(request: Request) -> PlainTextResponse:
        if integration == "direct":
            await throttle(request)
        if request.method != "POST":
            runs.append(request.method)
        return PlainTextResponse("ok")

    if integration == "decorator":
        endpoint = starlette_throttled(throttle)(endpoint)
    routes = [Route("/r", endpoint, methods=["GET", "POST"])]
    return Starlette(routes=routes, middleware=middleware, lifespan=backend.lifespan), runs


@pytest.mark.parametrize(("framework", "integration"), CASES)
def test_head_spends_the_get_budget(framework: str, integration: str) -> None:
    app, runs = build(framework, integration)
    with TestClient(app) as client:
        codes = [
            client.request(method, "/r").status_code
            for method in ("GET", "HEAD", "GET", "HEAD", "GET", "HEAD")
        ]
    assert codes == [200, 200, 200, 429, 429, 429]
    assert runs == ["GET", "HEAD", "GET"]


@pytest.mark.parametrize(("framework", "integration"), [c for c in CASES if c[1] != "middleware"])
def test_other_methods_keep_their_own_budget(framework: str, integration: str) -> None:
    app, _ = build(framework, integration)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.head("/r").status_code == 200
        assert client.get("/r").status_code == 429
        assert [client.post("/r").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_head_answers_with_the_fields_of_the_get_budget() -> None:
    app, _ = build("fastapi", "depends")
    with TestClient(app) as client:
        client.get("/r")
        head = client.head("/r")
    assert head.status_code == 200
    assert head.headers["ratelimit"] == '"head";r=1;t=60'
    assert head.headers["ratelimit-policy"] == '"head";q=3;w=60'


def test_a_get_rule_of_the_middleware_applies_to_head() -> None:
    rule = MiddlewareThrottle(HTTPThrottle("m", "3/m"), methods={"get"})
    assert rule.methods == frozenset({"GET", "HEAD"})
    assert MiddlewareThrottle(HTTPThrottle("p", "3/m"), methods={"POST"}).methods == {"POST"}
