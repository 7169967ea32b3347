"""The failure policy's bound, on real servers: how long an answer may take.

A paused Redis (CLIENT PAUSE) and a Redis Cluster master killed under load must
be answered by policy within the bound the README states: ``timeout`` after the
server went silent, plus a few loop turns and this process's own event loop lag
(measured here by a monitor task). The circuit opens and closes only by
its rules: it does not flap while a master is dead.

A circuit is named by the master the backend's slot map shows for the key. The
dead master's keys are answered by policy until the backend's map shows the
promoted replica; the keys of the other masters never are: their circuits stay
closed.
"""

from __future__ import annotations

import asyncio
import itertools
import typing
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from redis.exceptions import ClusterDownError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

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


#: Requests per user at most, before the kill and after the promotion (the load is
#: bounded by count; each phase ends when every user made its share).
WARM_UP, AFTER, MAX_REQUESTS = 20, 40, 5_000


def _causes(error: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("full_coverage", ["no", "yes"])
async def test_cluster_failover_under_load_keeps_the_bound_and_the_circuit_does_not_flap(
    throttled_app: Callable[[HTTPThrottle], Starlette],
    make_redis_cluster: Callable[..., typing.Any],
    full_coverage: str,
) -> None:
    """One master of a 3+3 cluster SIGKILLed under load: only its keys are answered by
    the failure policy, within the bound; the other masters' keys keep their decisions
    and their circuits stay closed.

    With ``cluster-require-full-coverage yes`` (Redis's default) every master refuses
    every key (CLUSTERDOWN) from the moment the dead master is marked failed until its
    replica is promoted: the other masters' keys are then answered by policy, for that
    reason only (the server's word, never a client stall or a closed connection).
    """
    redis = pytest.importorskip("traffik.redis")
    cluster = make_redis_cluster(extra_args=("--cluster-require-full-coverage", full_coverage))
    backend = redis.RedisBackend(
        cluster.url,
        namespace="failover",
        cluster=True,
        failure_policy=FailurePolicy(on_error="fallback", timeout=TIMEOUT),
    )
    throttle = HTTPThrottle("failover", rate="100000/m")
    app = throttled_app(throttle)
    bare = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    seen: list[events.ThrottleEvent] = []
    times: list[float] = []  # loop time of each event seen
    loop = asyncio.get_running_loop()

    def record(event: events.ThrottleEvent) -> None:
        seen.append(event)
        times.append(loop.time())

    unsubscribe = events.subscribe(record)
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(f"198.51.100.{i}", 1234)),
            base_url="http://t",
        )
        for i in range(1, 25)
    ]
    plain = httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://t")
    latencies: list[tuple[float, float]] = []  # (start, duration)
    bare_latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counts = [0] * len(clients)
    stop = asyncio.Event()

    async def user(n: int, client: httpx.AsyncClient) -> None:
        for _ in range(MAX_REQUESTS):
            if stop.is_set():
                return
            started = loop.time()
            statuses[(await client.get("/")).status_code] += 1
            latencies.append((started, loop.time() - started))
            counts[n] += 1
            await asyncio.sleep(0.01)

    async def bare_user() -> None:  # the app without a limiter, in the same process
        for _ in range(MAX_REQUESTS):
            if stop.is_set():
                return
            started = loop.time()
            assert (await plain.get("/")).status_code == 200
            bare_latencies.append(loop.time() - started)
            await asyncio.sleep(0.01)

    async def until_each_made(share: int) -> None:
        floor = min(counts) + share
        for _ in range(6_000):  # bounded: 60 s at most
            if min(counts) >= floor:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the users made {counts} requests, not {floor} each")

    try:
        async with backend(app):
            victim = cluster.masters()[0]
            replica = cluster.replica_of(victim)
            with LagMonitor() as lag:
                users = [asyncio.ensure_future(user(n, c)) for n, c in enumerate(clients)]
                users.append(asyncio.ensure_future(bare_user()))
                await until_each_made(WARM_UP)  # load before the kill
                # Each client key's master, as the backend routes it before the kill.
                master_of = {
                    event.key: backend.failure_domain(event.key)
                    for event in seen
                    if event.kind in ("allowed", "throttled")
                }
                killed_at = loop.time()
                await asyncio.to_thread(cluster.kill_node, *victim)
                for _ in range(600):  # bounded: 60 s at most
                    if replica in await asyncio.to_thread(cluster.masters):
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the replica was not promoted within 60 s")
                promoted_at = loop.time()
                await until_each_made(AFTER)  # load after the promotion
                stop.set()
                await asyncio.gather(*users)
    finally:
        unsubscribe()
        for client in [*clients, plain]:
            await client.aclose()
    victim_name = f"{victim[0]}:{victim[1]}"
    survivors = {f"{host}:{port}" for host, port in cluster.masters()} - {
        f"{replica[0]}:{replica[1]}"
    }
    answered_by_policy: Counter[str] = Counter()
    for event in seen:
        if event.kind in ("fallback", "backend_error"):
            answered_by_policy[str(master_of.get(event.key))] += event.kind == "fallback"
    by_domain: dict[str, list[str]] = {}
    for event in seen:
        if event.kind.startswith("circuit"):
            by_domain.setdefault(event.detail, []).append(event.kind)
    slowest = max(took for _, took in latencies)
    # How long the dead master's keys were answered by policy, from the kill.
    outage = (
        max(
            (when for when, e in zip(times, seen, strict=True) if e.kind == "fallback"),
            default=killed_at,
        )
        - killed_at
    )
    print(  # the figures the issue reports (run with -s to see them)
        f"\nfailover (full coverage {full_coverage}): promoted after "
        f"{promoted_at - killed_at:.2f} s, the last policy answer {outage:.2f} s after the kill; "
        "fallback answers by "
        f"master {dict(answered_by_policy)} (victim {victim_name}); circuit changes "
        f"{sum(map(len, by_domain.values()))}: {by_domain}; slowest answer "
        f"{slowest * 1000:.0f} ms, without a limiter {max(bare_latencies) * 1000:.0f} ms; "
        f"worst loop lag {lag.worst * 1000:.0f} ms; {sum(statuses.values())} requests"
    )
    assert len(master_of) == len(clients), master_of
    assert set(master_of.values()) == survivors | {victim_name}, master_of  # all 3 used
    assert set(statuses) <= {200, 429}, statuses
    # The dead master's keys were decided by the cluster again once its replica took over.
    assert any(
        e.kind == "allowed" and master_of.get(e.key) == victim_name
        for when, e in zip(times, seen, strict=True)
        if when > promoted_at
    ), "the dead master's keys were not decided again after the promotion"
    # No decision failed inside the client (a write on a connection it had closed).
    failures = [
        error for event in seen if event.kind == "backend_error" for error in _causes(event.error)
    ]
    assert not [e for e in failures if isinstance(e, AttributeError)], failures[:3]
    if full_coverage == "no":
        # The death of one master is invisible to the keys of the others.
        assert set(answered_by_policy) <= {victim_name}, answered_by_policy
        for domain in survivors:
            assert "circuit_open" not in by_domain.get(domain, []), by_domain
    else:
        # The other masters' keys failed only because their server said CLUSTERDOWN.
        refused = [
            _causes(event.error)
            for event in seen
            if event.kind == "backend_error" and master_of.get(event.key) != victim_name
        ]
        assert all(any(isinstance(e, ClusterDownError) for e in chain) for chain in refused), [
            chain[-1]
            for chain in refused
            if not any(isinstance(e, ClusterDownError) for e in chain)
        ][:3]
    # The bound: timeout, plus the stated margin and this process's own lag.
    late = [
        (took, lag.during(start, start + took))
        for start, took in latencies
        if not within_bound(took, lag.during(start, start + took))
    ]
    assert not late, (late, slowest)
    assert victim_name in by_domain, by_domain  # the dead master's circuit opened
    for domain, kinds in by_domain.items():
        # By the rules only: a circuit closes after a probe (half-open) that it let
        # through, never straight from open because an older call came back.
        for before, after in itertools.pairwise(kinds):
            assert (before, after) != ("circuit_open", "circuit_closed"), (domain, kinds)
    # No flapping: the dead master's circuit closes once at most (its slots move to
    # the promoted replica, a domain of its own that starts closed).
    assert by_domain[victim_name].count("circuit_closed") <= 1, by_domain
