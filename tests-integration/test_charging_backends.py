"""64 concurrent requests, half of them refunded, leave exactly the expected count.

On every backend with real servers: in memory, Redis, a 3-master Redis Cluster and
Memcached. Half the requests answer 400 (charged) and half 200 (refunded by
``charge_when``); the other half calls ``throttle.refund`` itself. Whatever the
interleaving, the count left is exact.
"""

from __future__ import annotations

import asyncio
import typing
import uuid

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from traffik.backends.inmemory import InMemoryBackend
from traffik.keys import ROUTE_KEY_SCOPE
from traffik.memcached import MemcachedBackend
from traffik.redis import RedisBackend
from traffik.starlette import ThrottleMiddleware
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.throttles import HTTPThrottle

pytestmark = pytest.mark.asyncio

TASKS = 64
LIMIT = 200


#: Noon of a day: a test never straddles the end of its one-day fixed window.
NOON = 1_700_000_000_000 // 86_400_000 * 86_400_000 + 43_200_000


def _backend(kind: str, request: pytest.FixtureRequest) -> typing.Any:
    namespace = f"chg{uuid.uuid4().hex[:10]}"
    clock = lambda: NOON  # noqa: E731
    if kind == "memory":
        return InMemoryBackend(namespace=namespace, clock=clock)
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
        return RedisBackend(url, namespace=namespace, clock=clock)
    if kind == "cluster":
        url = request.getfixturevalue("redis_cluster").url
        return RedisBackend(url, namespace=namespace, cluster=True, clock=clock)
    server = request.getfixturevalue("memcached_server")
    return MemcachedBackend(server.host, server.port, namespace, clock=clock)


BACKENDS = [
    pytest.param("memory"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.cluster),
    pytest.param("memcached", marks=pytest.mark.memcached),
]
STRATEGY_IDS = [s.name for s in BUILTIN_STRATEGIES]


def _app(throttle: HTTPThrottle) -> Starlette:
    async def work(request: Request) -> Response:
        if request.query_params["how"] == "refund":
            await throttle.refund(request)
        status = 200 if request.query_params["how"] == "ok" else 400
        return PlainTextResponse("done", status_code=status)

    app = Starlette(routes=[Route("/work", work)])
    app.add_middleware(ThrottleMiddleware, middleware_throttles=[throttle])
    return app


def failed(connection: HTTPConnection, status: int) -> bool:
    return status >= 400


def _client_request(app: Starlette) -> Request:
    """A request of the same client (httpx's ASGITransport is 127.0.0.1) to read its quota."""
    scope = {"type": "http", "method": "GET", "path": "/work", "headers": [], "app": app}
    scope.update({"client": ("127.0.0.1", 1), "query_string": b"", "state": {}})
    scope[ROUTE_KEY_SCOPE] = "mw"  # the middleware rule's area (no path: the whole app)
    return Request(scope)


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=STRATEGY_IDS)
async def test_64_concurrent_requests_half_refunded_leave_the_exact_count(
    kind: str, strategy: Strategy, request: pytest.FixtureRequest
) -> None:
    backend = _backend(kind, request)
    throttle = HTTPThrottle("work", f"{LIMIT}/d", strategy=strategy, charge_when=failed)
    app = _app(throttle)
    # Even tasks are given back (by charge_when on a 200, or by refund() before a 400),
    # odd ones stay charged.
    plan = ["ok" if i % 4 == 0 else "refund" if i % 4 == 2 else "fail" for i in range(TASKS)]
    async with backend(app, persistent=False):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answers = await asyncio.gather(*(http.get(f"/work?how={how}") for how in plan))
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * (TASKS // 4) + [400] * (TASKS - TASKS // 4)
        stat = await throttle.stat(_client_request(app))
    assert stat is not None
    assert stat.hits_remaining == strategy.capacity(throttle.rate) - TASKS // 2, (
        f"{kind} {strategy.name}: {stat.hits_remaining} left"
    )
