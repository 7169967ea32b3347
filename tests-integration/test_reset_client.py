"""One client's state, for operators (issue 24 item 3), on every backend.

``throttle.client_stat(identity, route)`` reads a client's quota without charging
it; ``throttle.reset_client(identity, route)`` gives it a fresh one and unblocks it:
this process's block cache forgets it at once, another process's within a second.
"""

from __future__ import annotations

import asyncio
import functools
import typing
import uuid

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from traffik._guard.blockcache import MAX_TRUST_MS, BlockCache
from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConfigurationError, ConnectionThrottled
from traffik.failures import guard_of
from traffik.memcached import MemcachedBackend
from traffik.redis import RedisBackend
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.throttles import HTTPThrottle, WebSocketThrottle

Backend = ThrottleBackend[typing.Any, typing.Any]
#: The in-memory backends' clock: fixed, so no window ever rolls over in a test.
NOW = 1_699_999_980_000

BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.cluster),
    pytest.param("memcached", marks=pytest.mark.memcached),
    pytest.param("memcached-pool", marks=pytest.mark.memcached),
]
#: One strategy of each storage shape: a counter (memcached's incr window), a CAS record.
STRATEGIES = [
    s
    for s in BUILTIN_STRATEGIES
    if type(s).__name__ in ("FixedWindowStrategy", "TokenBucketStrategy")
]


async def endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


ROUTE = Route("/items/{item_id}", endpoint)


def request(client: str, item: int = 1) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": f"/items/{item}",
            "headers": [],
            "client": (client, 1234),
            "route": ROUTE,
        }
    )


def make_backend(kind: str, request: pytest.FixtureRequest, namespace: str = "") -> Backend:
    namespace = namespace or f"reset-{uuid.uuid4().hex[:8]}"
    if kind == "memory":
        return InMemoryBackend(namespace=namespace, clock=lambda: NOW)
    if kind == "redis":
        return RedisBackend(request.getfixturevalue("redis_url"), namespace=namespace)
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return RedisBackend(cluster.url, namespace=namespace, cluster=True)
    if kind == "memcached":
        server = request.getfixturevalue("memcached_server")
        return MemcachedBackend(server.host, server.port, namespace=namespace)
    pool = request.getfixturevalue("memcached_pool")
    return MemcachedBackend(servers=[s.address for s in pool], namespace=namespace)


async def admitted(throttle: HTTPThrottle, client: str, item: int = 1) -> bool:
    try:
        await throttle(request(client, item))
    except ConnectionThrottled:
        return False
    return True


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_operator_reads_and_resets_one_client(
    kind: str, strategy: Strategy, request: pytest.FixtureRequest
) -> None:
    backend = make_backend(kind, request)
    async with backend(persistent=False):
        # Per day: a window boundary (midnight UTC, by the servers' clocks) is
        # practically never crossed while the test runs.
        throttle = HTTPThrottle("orders", "2/d", strategy=strategy, backend=backend)
        blocked, other = "203.0.113.7", "198.51.100.20"
        assert [await admitted(throttle, blocked, n) for n in (1, 2, 3)] == [True, True, False]
        assert await admitted(throttle, other)
        assert not await admitted(throttle, blocked)  # answered by the block cache if any

        stat = await throttle.client_stat(blocked, "/items/{item_id}")
        assert stat is not None
        assert stat.hits_remaining == 0
        assert stat.wait_time > 0
        again = await throttle.client_stat(blocked, "/items/{item_id}")
        assert again is not None
        assert again.hits_remaining == 0  # reading charged nothing

        await throttle.reset_client(blocked, "/items/{item_id}")
        fresh = await throttle.client_stat(blocked, "/items/{item_id}")
        assert fresh is not None
        assert fresh.hits_remaining == 2
        assert fresh.wait_time == 0
        # Unblocked at once in this process, with the whole quota back ...
        assert [await admitted(throttle, blocked, n) for n in (4, 5, 6)] == [True, True, False]
        # ... and nobody else's quota moved.
        other_stat = await throttle.client_stat(other, "/items/{item_id}")
        assert other_stat is not None
        assert other_stat.hits_remaining == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS[1:])
async def test_another_process_unblocks_the_client_within_a_second(
    kind: str, request: pytest.FixtureRequest
) -> None:
    operator = make_backend(kind, request)
    # A second backend on the same servers and namespace: another app process.
    worker = make_backend(kind, request, operator.namespace)
    async with operator(persistent=False), worker(persistent=False):
        guard = guard_of(worker)
        assert guard is not None
        now = [0]
        guard.cache = BlockCache(100, clock=lambda: now[0])
        theirs = HTTPThrottle("orders", "2/d", backend=worker)
        ours = HTTPThrottle("orders", "2/d", backend=operator)
        client = "203.0.113.8"
        assert [await admitted(theirs, client, n) for n in (1, 2, 3)] == [True, True, False]

        await ours.reset_client(client, "/items/{item_id}")
        # The worker's block cache still refuses, for less than MAX_TRUST_MS ...
        now[0] = MAX_TRUST_MS - 1
        assert not await admitted(theirs, client)
        stat = await ours.client_stat(client, "/items/{item_id}")
        assert stat is not None
        assert stat.hits_remaining == 2  # nothing was charged
        # ... then asks the backend, which admits.
        now[0] = MAX_TRUST_MS
        assert await admitted(theirs, client)


def test_the_block_cache_trusts_a_refusal_for_one_second_and_keeps_its_retry_after() -> None:
    from traffik.decisions import Decision

    now = [10_000]
    cache = BlockCache(10, clock=lambda: now[0])
    cache.put("k", 1, Decision(False, 2, 0, 60_000, 60_000, 3_600_000))
    now[0] += MAX_TRUST_MS - 1
    local = cache.get("k", 1)
    assert local is not None
    assert local.retry_after_ms == 60_000 - (MAX_TRUST_MS - 1)
    now[0] += 1
    assert cache.get("k", 1) is None
    cache.put("k", 1, Decision(False, 2, 0, 500, 500, 1000))
    now[0] += 499
    assert cache.get("k", 1) is not None
    cache.discard("k")
    assert cache.get("k", 1) is None


@pytest.mark.asyncio
async def test_keys_match_the_request_path_for_ipv6_websockets_and_context_keys() -> None:
    backend = InMemoryBackend(namespace="keys", clock=lambda: NOW)
    async with backend(persistent=False):
        throttle = HTTPThrottle("v6", "1/h", backend=backend)
        # The default identifier keys IPv6 clients by /64: any address of it finds them.
        assert await admitted(throttle, "2001:db8:1:2::5")
        stat = await throttle.client_stat("2001:db8:1:2::99", "/items/{item_id}")
        assert stat is not None
        assert stat.hits_remaining == 0
        # POST has its own budget; HEAD is GET's.
        post = await throttle.client_stat("2001:db8:1:2::5", "/items/{item_id}", method="POST")
        assert post is not None
        assert post.hits_remaining == 1
        head = await throttle.client_stat("2001:db8:1:2::5", "/items/{item_id}", method="HEAD")
        assert head == stat

        ws = WebSocketThrottle("chat", "1/h", backend=backend)
        scope = {"type": "websocket", "path": "/chat", "headers": [], "client": ("10.0.0.1", 1)}
        from starlette.websockets import WebSocket

        async def nothing() -> typing.Any:
            return {}

        socket = WebSocket(scope, receive=nothing, send=nothing)  # type: ignore[arg-type]
        await ws(socket, context_key="msg")
        assert (await ws.client_stat("10.0.0.1", "/chat", context_key="msg")).hits_remaining == 0  # type: ignore[union-attr]
        await ws.reset_client("10.0.0.1", "/chat", context_key="msg")
        assert (await ws.client_stat("10.0.0.1", "/chat", context_key="msg")).hits_remaining == 1  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_bad_calls_say_what_to_do() -> None:
    throttle = HTTPThrottle("lost", "1/h")
    with pytest.raises(ConfigurationError, match="Pass backend="):
        await throttle.client_stat("10.0.0.1", "/x")
    backend = InMemoryBackend(namespace="bad")
    with pytest.raises(ValueError, match="route must be the route template"):
        await throttle.reset_client("10.0.0.1", "", backend=backend)

    async def custom(key: str, rate: typing.Any, backend: typing.Any, cost: int = 1) -> float:
        return 0.0

    odd = HTTPThrottle("odd", "1/h", strategy=custom, backend=backend)
    with pytest.raises(ConfigurationError, match="needs a built-in strategy"):
        await odd.reset_client("10.0.0.1", "/x")


def test_a_middleware_rule_reads_and_resets_its_area() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.testclient import TestClient

    from traffik.starlette import MiddlewareThrottle, ThrottleMiddleware

    backend = InMemoryBackend(namespace="area", clock=lambda: NOW)
    area = MiddlewareThrottle(HTTPThrottle("area", "2/h"), prefix="/items/")
    per_path = MiddlewareThrottle(HTTPThrottle("paths", "3/h"), prefix="/items/", per_path=True)
    app = Starlette(
        routes=[ROUTE],
        middleware=[Middleware(ThrottleMiddleware, middleware_throttles=[area, per_path])],
        lifespan=backend.lifespan,
    )
    with TestClient(app) as client:
        codes = [client.get(f"/items/{n}").status_code for n in (1, 2, 3)]
        assert codes == [200, 200, 429]
        # TestClient's peer is "testclient": that is the identity here.
        stat = client.portal.call(functools.partial(area.client_stat, "testclient", app=app))
        assert stat is not None
        assert stat.hits_remaining == 0
        paths = client.portal.call(
            functools.partial(per_path.client_stat, "testclient", "/items/1", app=app)
        )
        assert paths is not None
        assert paths.hits_remaining == 2  # one request to this very path
        client.portal.call(functools.partial(area.reset_client, "testclient", app=app))
        assert client.get("/items/4").status_code == 200
    with pytest.raises(ValueError, match="per_path=True"):
        asyncio.run(per_path.reset_client("testclient", backend=backend))


@pytest.mark.asyncio
async def test_a_concurrency_throttle_has_no_quota_to_reset() -> None:
    from traffik.concurrency import ConcurrencyThrottle

    slots = ConcurrencyThrottle("slots", 2)
    backend = InMemoryBackend(namespace="slots")
    with pytest.raises(ConfigurationError, match="holds slots for requests in flight"):
        await slots.reset_client("10.0.0.1", "/x", backend=backend)
