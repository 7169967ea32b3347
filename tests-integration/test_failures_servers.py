"""Failure policies against real servers that are killed (SIGKILL) and restarted.

Every request must be answered by the configured policy (never a 500), decisions
must go back to the server within a bounded time once it answers again (which
also proves that scripts reload after the restart wiped them), and an app
started while its server is down must serve by policy and recover.
"""

from __future__ import annotations

import asyncio
import typing
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette

from traffik import events
from traffik.backends.base import ThrottleBackend
from traffik.failures import FailurePolicy
from traffik.throttles import HTTPThrottle

pytestmark = pytest.mark.asyncio

#: Fast probes so recovery is observed within a few seconds.
FAST = {"timeout": 0.5, "failure_threshold": 3, "recovery_time": 0.1, "max_recovery_time": 0.5}
RECOVERY_DEADLINE = 20.0


class Recorder:
    """Counts events by kind while subscribed."""

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()

    def __call__(self, event: events.ThrottleEvent) -> None:
        self.kinds[event.kind] += 1


@pytest.fixture
def recorder() -> typing.Iterator[Recorder]:
    rec = Recorder()
    unsubscribe = events.subscribe(rec)
    yield rec
    unsubscribe()


async def _client(app: Starlette, ip: str = "203.0.113.9") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def _statuses(client: httpx.AsyncClient, n: int) -> list[int]:
    return [(await client.get("/")).status_code for _ in range(n)]


async def _until_backend_answers(
    client: httpx.AsyncClient, recorder: Recorder, answered: Callable[[], bool]
) -> list[int]:
    """Send requests until ``answered()`` says the server took decisions again (bounded)."""
    statuses: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECOVERY_DEADLINE
    while loop.time() < deadline:
        statuses.append((await client.get("/")).status_code)
        if answered():
            return statuses
        await asyncio.sleep(0.05)
    raise AssertionError(f"decisions did not return to the server within {RECOVERY_DEADLINE} s")


# -- backends under test ----------------------------------------------------------


def _redis_backend(
    url: str, policy: FailurePolicy, **kwargs: typing.Any
) -> ThrottleBackend[typing.Any, typing.Any]:
    redis = pytest.importorskip("traffik.redis")
    return typing.cast(
        "ThrottleBackend[typing.Any, typing.Any]",
        redis.RedisBackend(url, namespace="failures", failure_policy=policy, **kwargs),
    )


def _evalsha_calls(server: typing.Any) -> int:
    stats = server.command("INFO", "commandstats")
    text = stats.decode() if isinstance(stats, bytes) else str(stats)
    for line in text.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.redis
@pytest.mark.parametrize("action", ["fallback", "allow", "throttle"])
async def test_redis_killed_and_restarted_mid_traffic(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_redis_server: Callable[..., typing.Any],
    recorder: Recorder,
    action: str,
) -> None:
    server = make_redis_server()
    backend = _redis_backend(server.url, FailurePolicy(on_error=action, **FAST))
    app = throttled_app(HTTPThrottle("fail-redis", rate="3/m"))
    async with (
        backend(app),
        await _client(app) as client,
        await _client(app, "203.0.113.10") as other,
    ):
        before = await _statuses(client, 5)
        assert before == [200, 200, 200, 429, 429]

        server.kill()
        # A client already refused stays refused: the local block cache knows it.
        assert await _statuses(client, 3) == [429, 429, 429]
        assert recorder.kinds["local_block"] >= 3
        during = await _statuses(other, 20)
        assert set(during) <= {200, 429}, during
        if action == "allow":
            assert set(during) == {200}
        elif action == "throttle":
            assert set(during) == {429}
            assert int((await other.get("/")).headers["retry-after"]) >= 1
        else:
            # The local limiter enforces the same rate: 3 admitted, then refused.
            assert during[:3] == [200, 200, 200]
            assert set(during[3:]) == {429}
        assert recorder.kinds["fallback"] > 0
        assert recorder.kinds["circuit_open"] >= 1

        server.restart()  # same port, empty data, no scripts loaded
        # (The first client's refusal is still answered locally until it expires, so the
        # other client is the one whose requests probe the server.)
        after = await _until_backend_answers(other, recorder, lambda: _evalsha_calls(server) > 0)
        assert set(after) <= {200, 429}
        assert recorder.kinds["circuit_closed"] >= 1
        # Back on Redis (fresh data): the quota restarts there and is enforced there.
        fallbacks = recorder.kinds["fallback"]
        await _statuses(other, 5)
        assert recorder.kinds["fallback"] == fallbacks


@pytest.mark.redis
async def test_app_started_while_redis_is_down_serves_and_recovers(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_redis_server: Callable[..., typing.Any],
    recorder: Recorder,
) -> None:
    server = make_redis_server()
    server.kill()
    backend = _redis_backend(server.url, FailurePolicy(on_error="fallback", **FAST))
    app = throttled_app(HTTPThrottle("fail-start", rate="3/m"))
    async with backend(app), await _client(app) as client:
        assert await _statuses(client, 4) == [200, 200, 200, 429]
        server.restart()
        after = await _until_backend_answers(client, recorder, lambda: _evalsha_calls(server) > 0)
        assert set(after) <= {200, 429}


@pytest.mark.memcached
@pytest.mark.parametrize("action", ["fallback", "throttle"])
async def test_memcached_killed_and_restarted_mid_traffic(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_memcached_server: Callable[..., typing.Any],
    recorder: Recorder,
    action: str,
) -> None:
    memcached = pytest.importorskip("traffik.memcached")
    server = make_memcached_server()
    backend = memcached.MemcachedBackend(
        host=server.host,
        port=server.port,
        namespace="failures",
        failure_policy=FailurePolicy(on_error=action, **FAST),
    )
    app = throttled_app(HTTPThrottle("fail-mc", rate="3/m"))
    async with (
        backend(app),
        await _client(app) as client,
        await _client(app, "203.0.113.10") as other,
    ):
        assert await _statuses(client, 5) == [200, 200, 200, 429, 429]
        server.kill()
        during = await _statuses(other, 20)
        assert set(during) <= {200, 429}, during
        if action == "throttle":
            assert set(during) == {429}
        else:
            assert during[:3] == [200, 200, 200]
        server.restart()
        closed = recorder.kinds["circuit_closed"]
        after = await _until_backend_answers(
            other, recorder, lambda: recorder.kinds["circuit_closed"] > closed
        )
        assert set(after) <= {200, 429}
        fallbacks = recorder.kinds["fallback"]
        assert await _statuses(other, 1) in ([200], [429])
        assert recorder.kinds["fallback"] == fallbacks


@pytest.mark.memcached
async def test_app_started_while_memcached_is_down_serves_and_recovers(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_memcached_server: Callable[..., typing.Any],
    recorder: Recorder,
) -> None:
    memcached = pytest.importorskip("traffik.memcached")
    server = make_memcached_server()
    server.kill()
    backend = memcached.MemcachedBackend(
        host=server.host,
        port=server.port,
        namespace="failures",
        failure_policy=FailurePolicy(**FAST),
    )
    app = throttled_app(HTTPThrottle("fail-mc-start", rate="3/m"))
    async with backend(app), await _client(app) as client:
        assert await _statuses(client, 4) == [200, 200, 200, 429]
        server.restart()
        closed = recorder.kinds["circuit_closed"]
        after = await _until_backend_answers(
            client, recorder, lambda: recorder.kinds["circuit_closed"] > closed
        )
        assert set(after) <= {200, 429}


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_master_killed_throttling_continues_after_failover(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_redis_cluster: Callable[..., typing.Any],
    recorder: Recorder,
) -> None:
    cluster = make_redis_cluster()
    backend = _redis_backend(cluster.url, FailurePolicy(on_error="fallback", **FAST), cluster=True)
    throttle = HTTPThrottle("fail-cluster", rate="1000/m")
    app = throttled_app(throttle)
    clients = [await _client(app, ip=f"198.51.100.{i}") for i in range(1, 13)]
    async with backend(app):
        for client in clients:  # keys spread over the slots of every master
            assert await _statuses(client, 2) == [200, 200]
        victim = cluster.masters()[0]
        replica = cluster.replica_of(victim)
        cluster.kill_node(*victim)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        promoted = False
        while loop.time() < deadline:
            for client in clients:
                status = (await client.get("/")).status_code
                assert status in (200, 429)
            if replica in cluster.masters():
                promoted = True
                break
            await asyncio.sleep(0.2)
        assert promoted, "the replica was not promoted within 60 s"
        cluster.wait_until_ok(timeout=60)
        # After failover every client is decided by the cluster again (bounded wait).
        deadline = loop.time() + RECOVERY_DEADLINE
        while loop.time() < deadline:
            fallbacks = recorder.kinds["fallback"]
            for client in clients:
                assert (await client.get("/")).status_code == 200
            if recorder.kinds["fallback"] == fallbacks:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("decisions kept falling back after the failover")
    for client in clients:
        await client.aclose()
