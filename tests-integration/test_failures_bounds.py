"""The failure policy's bound, on real servers: how long an answer may take.

A paused Redis (CLIENT PAUSE) and a Redis Cluster master killed under load must
be answered by policy within the bound the README states: ``timeout`` after the
server went silent, plus a few loop turns and this process's own event loop lag
(measured here by a monitor task). The circuit opens and closes only by
its rules: it does not flap while a master is dead.

A circuit is named by the master the client's slot map shows for the key; until
the client learns of the promotion, calls under the dead master's name may reach
the promoted replica (MOVED), so that circuit may close once after the failover.
"""

from __future__ import annotations

import asyncio
import itertools
import typing
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette

from traffik import events
from traffik.failures import FailurePolicy
from traffik.throttles import HTTPThrottle

pytestmark = pytest.mark.asyncio

TIMEOUT = 0.25
#: What the README promises beyond the timeout with a responsive loop (a few loop turns).
MARGIN = 0.1


class LagMonitor:
    """How far behind schedule the event loop ran (a 5 ms ticker), over any interval."""

    TICK = 0.005

    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []  # (when the tick ended, its lag)
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.TICK)
            now = loop.time()
            self.ticks.append((now, max(0.0, now - started - self.TICK)))

    def during(self, start: float, end: float) -> float:
        """The lag of the ticks that overlap ``[start, end]`` (loop time), summed."""
        return sum(
            lag for when, lag in self.ticks if start <= when and when - lag <= end + self.TICK
        )

    @property
    def worst(self) -> float:
        return max((lag for _, lag in self.ticks), default=0.0)

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.ensure_future(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def within_bound(took: float, lag: float) -> bool:
    """The README's bound: timeout plus a few loop turns, plus the time the loop lost
    (counted twice: once as the server's extra window, once as the answer's own delay)."""
    return took <= TIMEOUT + MARGIN + 2 * lag


@pytest.mark.redis
async def test_a_paused_redis_is_answered_by_policy_within_the_bound(
    make_redis_server: Callable[..., typing.Any],
) -> None:
    redis = pytest.importorskip("traffik.redis")
    server = make_redis_server()
    policy = FailurePolicy(on_error="throttle", timeout=TIMEOUT)
    backend = redis.RedisBackend(server.url, namespace="pause", failure_policy=policy)
    kinds: Counter[str] = Counter()
    unsubscribe = events.subscribe(lambda event: kinds.update([event.kind]))
    try:
        async with backend():
            from traffik.failures import decide_with_policy
            from traffik.rates import Rate
            from traffik.strategies import FixedWindowStrategy

            rate, strategy = Rate.parse("100/m"), FixedWindowStrategy()
            assert (await decide_with_policy(backend, "k", strategy, rate, 1)).allowed
            loop = asyncio.get_running_loop()
            with LagMonitor() as lag, server.writes_paused():
                started = loop.time()
                decisions = await asyncio.gather(
                    *(decide_with_policy(backend, f"p{i}", strategy, rate, 1) for i in range(20))
                )
                took = loop.time() - started
        assert not any(d.allowed for d in decisions)  # answered by policy (throttle)
        assert within_bound(took, lag.during(started, started + took)), (took, lag.worst)
        assert took >= TIMEOUT * 0.9  # judged silent only after the timeout
        assert kinds["backend_error"] == 20
    finally:
        unsubscribe()


@pytest.mark.cluster
@pytest.mark.slow
async def test_cluster_failover_under_load_keeps_the_bound_and_the_circuit_does_not_flap(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_redis_cluster: Callable[..., typing.Any],
) -> None:
    redis = pytest.importorskip("traffik.redis")
    cluster = make_redis_cluster()
    backend = redis.RedisBackend(
        cluster.url,
        namespace="failover",
        cluster=True,
        failure_policy=FailurePolicy(on_error="fallback", timeout=TIMEOUT),
    )
    throttle = HTTPThrottle("failover", rate="100000/m")
    app = throttled_app(throttle)
    seen: list[events.ThrottleEvent] = []
    unsubscribe = events.subscribe(seen.append)
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(f"198.51.100.{i}", 1234)),
            base_url="http://t",
        )
        for i in range(1, 25)
    ]
    latencies: list[tuple[float, float]] = []  # (start, duration)
    statuses: Counter[int] = Counter()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    async def user(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started = loop.time()
            statuses[(await client.get("/")).status_code] += 1
            latencies.append((started, loop.time() - started))
            await asyncio.sleep(0.01)

    try:
        async with backend(app):
            victim = cluster.masters()[0]
            replica = cluster.replica_of(victim)
            with LagMonitor() as lag:
                users = [asyncio.ensure_future(user(client)) for client in clients]
                await asyncio.sleep(0.5)  # load before the kill
                await asyncio.to_thread(cluster.kill_node, *victim)
                for _ in range(600):  # bounded: 60 s at most
                    if replica in await asyncio.to_thread(cluster.masters):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the replica was not promoted within 60 s")
                await asyncio.sleep(1.0)  # load after the promotion
                stop.set()
                await asyncio.gather(*users)
    finally:
        unsubscribe()
        for client in clients:
            await client.aclose()
    assert set(statuses) <= {200, 429}, statuses
    assert latencies
    # The bound: timeout, plus the stated margin and this process's own lag.
    late = [
        (took, lag.during(start, start + took))
        for start, took in latencies
        if not within_bound(took, lag.during(start, start + took))
    ]
    assert not late, (late, max(took for _, took in latencies))
    victim_name = f"{victim[0]}:{victim[1]}"
    by_domain: dict[str, list[str]] = {}
    for event in seen:
        if event.kind.startswith("circuit"):
            by_domain.setdefault(event.detail, []).append(event.kind)
    assert victim_name in by_domain, by_domain  # the dead master's circuit opened
    for domain, kinds in by_domain.items():
        # By the rules only: a circuit closes after a probe (half-open) that it let
        # through, never straight from open because an older call came back.
        for before, after in itertools.pairwise(kinds):
            assert (before, after) != ("circuit_open", "circuit_closed"), (domain, kinds)
    # No flapping: the dead master's slots come back (to the promoted replica, which
    # the client may still reach under the old master's name) once at most.
    assert by_domain[victim_name].count("circuit_closed") <= 1, by_domain
