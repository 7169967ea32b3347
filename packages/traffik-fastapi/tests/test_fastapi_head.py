"""HEAD counts with GET on FastAPI: Depends, the decorator, and the middleware.

A route that answers HEAD runs its GET endpoint; keys carry the method, so HEAD is
keyed as GET and a client alternating GET and HEAD gets one budget, not two.
Other methods keep budgets of their own.
"""

from __future__ import annotations

import typing

import pytest
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from traffik.backends.inmemory import InMemoryBackend
from traffik.fastapi import throttled
from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware
from traffik.throttles import HTTPThrottle

NOW = 1_699_999_980_000  # a multiple of 60 s: the window never rolls over here

Integration = typing.Literal["depends", "decorator", "middleware"]


def build(integration: Integration) -> tuple[FastAPI, list[int]]:
    """An app with one GET+HEAD route and one POST route on the same path, throttled 3/m."""
    backend = InMemoryBackend(namespace="head", clock=lambda: NOW)
    throttle = HTTPThrottle("head", "3/m")
    runs: list[int] = []
    app = FastAPI(lifespan=backend.lifespan)
    if integration == "middleware":
        app.add_middleware(
            ThrottleMiddleware,
            middleware_throttles=[MiddlewareThrottle(throttle, methods={"GET"}, per_path=True)],
        )
        dependencies: list[typing.Any] = []
    elif integration == "depends":
        dependencies = [Depends(throttle)]
    else:
        dependencies = [throttled(throttle)]

    @app.api_route("/r", methods=["GET", "HEAD"], dependencies=dependencies)
    async def read() -> dict[str, int]:
        runs.append(1)
        return {"ok": 1}

    post_dependencies = dependencies if integration != "middleware" else [Depends(throttle)]

    @app.post("/r", dependencies=post_dependencies)
    async def write() -> dict[str, int]:
        return {"ok": 1}

    return app, runs


@pytest.mark.parametrize("integration", ["depends", "decorator", "middleware"])
def test_head_spends_the_get_budget(integration: Integration) -> None:
    app, runs = build(integration)
    with TestClient(app) as client:
        codes = [
            client.request(method, "/r").status_code
            for method in ("GET", "HEAD", "GET", "HEAD", "GET", "HEAD")
        ]
    assert codes == [200, 200, 200, 429, 429, 429]
    assert len(runs) == 3  # the endpoint ran as often as the limit says, not twice that


@pytest.mark.parametrize("integration", ["depends", "decorator"])
def test_other_methods_keep_their_own_budget(integration: Integration) -> None:
    app, _ = build(integration)
    with TestClient(app) as client:
        for _ in range(3):
            assert client.head("/r").status_code == 200
        assert client.get("/r").status_code == 429
        assert [client.post("/r").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_head_answers_with_the_fields_of_the_get_budget() -> None:
    app, _ = build("depends")
    with TestClient(app) as client:
        client.get("/r")
        head = client.head("/r")
    assert head.status_code == 200
    assert head.headers["ratelimit"] == '"head";r=1;t=60'
    assert head.headers["ratelimit-policy"] == '"head";q=3;w=60'
