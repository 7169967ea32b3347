"""HEAD counts with GET on Starlette: a direct call, the decorator, and the middleware.

Starlette adds HEAD to every GET route and answers it with the GET endpoint; keys
carry the method, so HEAD is keyed as GET. Other methods keep their own budgets.
"""

from __future__ import annotations

import typing

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from traffik.backends.inmemory import InMemoryBackend
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware, throttled
from traffik.throttles import HTTPThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s: the window never rolls over here

Integration = typing.Literal["direct", "decorator", "middleware", "middleware-per-path"]
INTEGRATIONS = ["direct", "decorator", "middleware", "middleware-per-path"]


def build(integration: Integration) -> tuple[Starlette, list[str]]:
    """``/r`` (GET, so HEAD too, and POST) throttled 3/m, counting the endpoint's runs."""
    backend = InMemoryBackend(namespace="head", clock=lambda: NOW)
    throttle = HTTPThrottle("head", "3/m")
    runs: list[str] = []

    async def endpoint(request: Request) -> PlainTextResponse:
        if integration == "direct":
            await throttle(request)
        runs.append(request.method)
        return PlainTextResponse("ok")

    middleware = []
    if integration.startswith("middleware"):
        rule = MiddlewareThrottle(
            throttle, methods={"GET", "POST"}, per_path=integration == "middleware-per-path"
        )
        middleware = [Middleware(ThrottleMiddleware, middleware_throttles=[rule])]
    elif integration == "decorator":
        endpoint = throttled(throttle)(endpoint)
    app = Starlette(
        routes=[Route("/r", endpoint, methods=["GET", "POST"])],
        middleware=middleware,
        lifespan=backend.lifespan,
    )
    return app, runs


@pytest.mark.parametrize("integration", INTEGRATIONS)
def test_head_spends_the_get_budget(integration: Integration) -> None:
    app, runs = build(integration)
    with TestClient(app) as client:
        codes = [
            client.request(method, "/r").status_code
            for method in ("GET", "HEAD", "GET", "HEAD", "GET", "HEAD")
        ]
    assert codes == [200, 200, 200, 429, 429, 429]
    assert runs == ["GET", "HEAD", "GET"]


@pytest.mark.parametrize("integration", ["direct", "decorator", "middleware-per-path"])
def test_other_methods_keep_their_own_budget(integration: Integration) -> None:
    app, _ = build(integration)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.head("/r").status_code == 200
        assert client.get("/r").status_code == 429
        assert [client.post("/r").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_a_get_rule_of_the_middleware_applies_to_head() -> None:
    rule = MiddlewareThrottle(HTTPThrottle("m", "3/m"), methods={"get"})
    assert rule.methods == frozenset({"GET", "HEAD"})
    assert MiddlewareThrottle(HTTPThrottle("p", "3/m"), methods={"POST"}).methods == {"POST"}
