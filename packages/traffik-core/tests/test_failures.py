"""Failure policies, exercised with a backend whose storage can be switched off.

The real-server versions (Redis and Memcached killed and restarted) live in
tests-integration/test_failures_*.py; these pin the policy logic itself.
"""

from __future__ import annotations

import asyncio
import typing

import pytest

from traffik import events
from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.exceptions import BackendError, ConfigurationError
from traffik.failures import FailurePolicy, decide_with_policy
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy, TokenBucketStrategy
from traffik.strategies._base import Strategy

RATE = Rate.parse("2/s")
FW = FixedWindowStrategy()


class SwitchableBackend(InMemoryBackend):  # type: ignore[type-arg]
    """An in-memory backend that can be made to fail (as a network backend would)."""

    capabilities = BackendCapabilities(shared_state=True)
    unwrapped_methods = frozenset()

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(namespace="switch", **kwargs)
        self.down = False
        self.slow = 0.0
        self.calls = 0

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        self.calls += 1
        if self.slow:
            await asyncio.sleep(self.slow)
        if self.down or self.is_down(key):
            raise ConnectionError("connection refused")
        return await super().decide(key, strategy, rate, cost, now_ms=now_ms)

    def is_down(self, key: str) -> bool:
        """Whether the part of the store holding ``key`` is down (besides ``down``)."""
        return False


@pytest.fixture
def recorded() -> typing.Iterator[list[events.ThrottleEvent]]:
    seen: list[events.ThrottleEvent] = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()


def test_network_backends_get_the_default_policy_and_memory_none() -> None:
    assert SwitchableBackend().failure_policy is not None
    assert InMemoryBackend().failure_policy is None


def test_bad_policies_are_rejected_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="on_error must be one of"):
        FailurePolicy(on_error="open")
    with pytest.raises(ConfigurationError, match="timeout"):
        FailurePolicy(timeout=0)
    with pytest.raises(ConfigurationError, match="failure_threshold"):
        FailurePolicy(failure_threshold=0)
    with pytest.raises(ConfigurationError, match="failure_policy must be"):
        SwitchableBackend(failure_policy="allow")  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize(("action", "allowed"), [("allow", True), ("throttle", False)])
async def test_allow_and_throttle_actions(action: str, allowed: bool) -> None:
    backend = SwitchableBackend(failure_policy=FailurePolicy(on_error=action))
    async with backend():
        backend.down = True
        decision = await decide_with_policy(backend, "k", FW, RATE, 1)
        assert decision.allowed is allowed
        if not allowed:
            assert decision.retry_after_ms > 0


@pytest.mark.asyncio
async def test_raise_action_propagates_a_backend_error() -> None:
    backend = SwitchableBackend(failure_policy=FailurePolicy(on_error="raise"))
    async with backend():
        backend.down = True
        with pytest.raises(BackendError, match="connection refused"):
            await decide_with_policy(backend, "k", FW, RATE, 1)


@pytest.mark.asyncio
async def test_fallback_keeps_enforcing_the_limit_locally(
    recorded: list[events.ThrottleEvent],
) -> None:
    backend = SwitchableBackend(
        failure_policy=FailurePolicy(on_error="fallback", failure_threshold=100)
    )
    async with backend():
        backend.down = True
        results = [
            (await decide_with_policy(backend, "fb-key", FW, RATE, 1)).allowed for _ in range(4)
        ]
    assert results == [True, True, False, False]
    kinds = {event.kind for event in recorded}
    assert {"backend_error", "fallback"} <= kinds


@pytest.mark.asyncio
async def test_fallback_to_a_given_backend() -> None:
    spare = InMemoryBackend(namespace="spare")
    backend = SwitchableBackend(failure_policy=FailurePolicy(on_error=spare))
    async with spare(), backend():
        backend.down = True
        assert (await decide_with_policy(backend, "k", FW, RATE, 1)).allowed
        # The unit was charged on the spare backend: one of two used, so one more fits.
        assert (await spare.peek("k", FW, RATE)).allowed
        assert (await spare.peek("k", FW, RATE)).remaining == 0


@pytest.mark.asyncio
async def test_per_call_override_of_the_action() -> None:
    backend = SwitchableBackend(failure_policy=FailurePolicy(on_error="allow"))
    async with backend():
        backend.down = True
        decision = await decide_with_policy(backend, "k", FW, RATE, 1, policy="throttle")
        assert not decision.allowed


@pytest.mark.asyncio
async def test_a_slow_backend_is_bounded_by_the_timeout() -> None:
    backend = SwitchableBackend(failure_policy=FailurePolicy(on_error="throttle", timeout=0.05))
    async with backend():
        backend.slow = 5.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        decision = await decide_with_policy(backend, "k", FW, RATE, 1)
        assert loop.time() - started < 2.0
        assert not decision.allowed


@pytest.mark.asyncio
async def test_circuit_opens_then_probes_and_recovers(recorded: list[events.ThrottleEvent]) -> None:
    policy = FailurePolicy(
        on_error="allow", failure_threshold=3, recovery_time=0.05, max_recovery_time=0.05
    )
    backend = SwitchableBackend(failure_policy=policy)
    async with backend():
        backend.down = True
        for _ in range(10):
            await decide_with_policy(backend, "k", FW, RATE, 1)
        # Three failures opened the circuit; the other seven never reached the backend.
        assert backend.calls == 3
        assert "circuit_open" in {event.kind for event in recorded}
        backend.down = False
        for _ in range(200):  # bounded polling for the probe window
            await asyncio.sleep(0.01)
            decision = await decide_with_policy(backend, "recover", FW, RATE, 1)
            if backend.calls > 3:
                break
        assert backend.calls > 3
        assert decision.allowed
        assert "circuit_closed" in {event.kind for event in recorded}
        calls = backend.calls
        await decide_with_policy(backend, "recover", FW, RATE, 1)
        assert backend.calls == calls + 1


@pytest.mark.asyncio
async def test_block_cache_answers_refusals_locally_until_retry_after(
    recorded: list[events.ThrottleEvent],
) -> None:
    now = [1_000_000]
    backend = SwitchableBackend(clock=lambda: now[0])
    async with backend():
        for _ in range(2):
            assert (await decide_with_policy(backend, "hot", FW, RATE, 1)).allowed
        refused = await decide_with_policy(backend, "hot", FW, RATE, 1)
        assert not refused.allowed
        calls = backend.calls
        again = await decide_with_policy(backend, "hot", FW, RATE, 1)
        assert not again.allowed
        assert backend.calls == calls  # answered locally
        assert "local_block" in {event.kind for event in recorded}
        assert 0 < again.retry_after_ms <= refused.retry_after_ms


@pytest.mark.asyncio
async def test_block_cache_is_forgotten_on_reset() -> None:
    backend = SwitchableBackend()
    async with backend():
        for _ in range(3):
            await decide_with_policy(backend, "r", FW, RATE, 1)
        await backend.reset()
        calls = backend.calls
        assert (await decide_with_policy(backend, "r", FW, RATE, 1)).allowed
        assert backend.calls == calls + 1


@pytest.mark.asyncio
async def test_smaller_costs_are_not_blocked_by_a_larger_refusal() -> None:
    backend = SwitchableBackend()
    bucket = TokenBucketStrategy()
    rate = Rate.parse("10/s")
    async with backend():
        assert (await decide_with_policy(backend, "c", bucket, rate, 8)).allowed
        assert not (await decide_with_policy(backend, "c", bucket, rate, 5)).allowed
        assert (await decide_with_policy(backend, "c", bucket, rate, 2)).allowed


@pytest.mark.asyncio
async def test_a_cost_above_capacity_is_never_sent_to_the_backend(
    recorded: list[events.ThrottleEvent],
) -> None:
    backend = SwitchableBackend()
    async with backend():
        decision = await decide_with_policy(backend, "big", FW, RATE, 3, name="api")
        assert decision.never
        assert backend.calls == 0
    # Still counted as a refusal of that throttle.
    assert [(e.kind, e.policy) for e in recorded] == [("throttled", "api")]


@pytest.mark.asyncio
async def test_context_starts_when_initialize_fails_and_recovers() -> None:
    class DownAtStart(SwitchableBackend):
        async def initialize(self) -> None:
            if self.down:
                raise ConnectionError("no server yet")
            await super().initialize()

    policy = FailurePolicy(
        on_error="allow", failure_threshold=1, recovery_time=0.02, max_recovery_time=0.02
    )
    backend = DownAtStart(failure_policy=policy)
    backend.down = True
    async with backend():
        assert (await decide_with_policy(backend, "k", FW, RATE, 1)).allowed  # by policy
        backend.down = False
        for _ in range(200):
            await asyncio.sleep(0.01)
            await decide_with_policy(backend, "k", FW, RATE, 1)
            if backend.connection is not None:
                break
        assert backend.connection is not None
        statuses = [
            (await decide_with_policy(backend, "k2", FW, RATE, 1)).allowed for _ in range(3)
        ]
        assert statuses == [True, True, False]


@pytest.mark.asyncio
async def test_raise_policy_does_not_start_without_the_backend() -> None:
    class Down(SwitchableBackend):
        async def initialize(self) -> None:
            raise ConnectionError("no server")

    backend = Down(failure_policy=FailurePolicy(on_error="raise"))
    with pytest.raises(BackendError, match="no server"):
        async with backend():
            pass


class LockFailsBackend(InMemoryBackend):  # type: ignore[type-arg]
    """Locks and reads fail as if the store were down (for lock-based custom strategies)."""

    capabilities = BackendCapabilities(shared_state=True)

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(namespace="lockfail", **kwargs)
        self.down = True

    async def get(self, key: str) -> str | None:
        if self.down:
            raise ConnectionError("connection refused")
        return await super().get(key)


async def counting_strategy(
    key: typing.Any, rate: Rate, backend: typing.Any, cost: int = 1
) -> float:
    """A seed-protocol strategy: admits ``rate.limit`` calls per key, ever."""
    raw = await backend.get(f"{key}:n")
    used = int(raw or 0)
    if used + cost > rate.limit:
        return 1000.0
    await backend.set(f"{key}:n", str(used + cost))
    return 0.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("action", "expected"),
    [("allow", [0.0, 0.0, 0.0]), ("throttle", [1000.0] * 3), ("fallback", [0.0, 0.0, 1000.0])],
)
async def test_custom_strategies_follow_the_policy(action: str, expected: list[float]) -> None:
    from traffik.failures import wait_with_policy

    backend = LockFailsBackend(failure_policy=FailurePolicy(on_error=action))
    async with backend():
        waits = [
            await wait_with_policy(backend, f"custom-{action}", counting_strategy, RATE, 1)
            for _ in range(3)
        ]
    assert waits == expected


@pytest.mark.asyncio
async def test_custom_strategy_errors_propagate_without_a_policy() -> None:
    from traffik.failures import wait_with_policy

    backend = LockFailsBackend(failure_policy=None)
    async with backend():
        with pytest.raises(BackendError, match="connection refused"):
            await wait_with_policy(backend, "k", counting_strategy, RATE, 1)


@pytest.mark.asyncio
async def test_a_throttle_with_a_custom_strategy_answers_by_policy_not_500() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from traffik.throttles import HTTPThrottle

    backend = LockFailsBackend(failure_policy=FailurePolicy(on_error="throttle"))
    throttle = HTTPThrottle(
        "custom-policy", rate="5/s", strategy=counting_strategy, backend=backend
    )

    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request)
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    async with backend():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"


@pytest.mark.asyncio
async def test_a_half_open_circuit_lets_exactly_one_probe_through_a_crowd(
    recorded: list[events.ThrottleEvent],
) -> None:
    from traffik.failures import guard_of as _guard_of

    policy = FailurePolicy(
        on_error="throttle", failure_threshold=1, recovery_time=1.0, max_recovery_time=1.0
    )
    backend = SwitchableBackend(failure_policy=policy)
    async with backend():
        guard = _guard_of(backend)
        assert guard is not None
        now = [100.0]
        guard.breaker()._clock = lambda: now[0]
        backend.down = True
        await decide_with_policy(backend, "k", FW, RATE, 1)  # opens the circuit
        assert backend.calls == 1
        backend.down, backend.slow = False, 0.05
        now[0] += 1.0  # the recovery time has passed
        crowd = await asyncio.gather(
            *(decide_with_policy(backend, f"k{i}", FW, RATE, 1) for i in range(50))
        )
        # One probe reached the backend (and was admitted); the 49 others answered by
        # policy while it was in flight, with a Retry-After until the next probe at most.
        assert backend.calls == 2
        assert sum(d.allowed for d in crowd) == 1
        assert all(0 < d.retry_after_ms <= 1000 for d in crowd if not d.allowed)
        kinds = [event.kind for event in recorded]
        assert kinds.count("circuit_half_open") == 1
        assert kinds.count("circuit_closed") == 1
        assert (await decide_with_policy(backend, "after", FW, RATE, 1)).allowed
        assert backend.calls == 3


@pytest.mark.asyncio
async def test_a_refusal_under_one_strategy_configuration_never_answers_for_another() -> None:
    from traffik.strategies import TokenBucketWithDebtStrategy

    # Same uid and key, so the same stored state; only the allowed debt differs.
    strict = TokenBucketWithDebtStrategy(burst_size=1, max_debt=1)
    lenient = TokenBucketWithDebtStrategy(burst_size=1, max_debt=10)
    rate = Rate.parse("1/m")
    now = [1_000_000]
    backend = SwitchableBackend(clock=lambda: now[0])
    async with backend():
        for _ in range(2):
            assert (await decide_with_policy(backend, "d", strict, rate, 1)).allowed
        assert not (await decide_with_policy(backend, "d", strict, rate, 1)).allowed
        expected = await backend.peek("d", lenient, rate)
        assert expected.allowed  # the backend itself would admit under the lenient debt
        calls = backend.calls
        assert (await decide_with_policy(backend, "d", lenient, rate, 1)).allowed
        assert backend.calls == calls + 1


@pytest.mark.asyncio
async def test_custom_strategies_stop_hammering_a_dead_backend_and_probe_it() -> None:
    from traffik.failures import guard_of as _guard_of
    from traffik.failures import wait_with_policy

    class Counting(LockFailsBackend):
        gets = 0

        async def get(self, key: str) -> str | None:
            self.gets += 1
            return await super().get(key)

    policy = FailurePolicy(
        on_error="allow", failure_threshold=2, recovery_time=1.0, max_recovery_time=1.0
    )
    backend = Counting(failure_policy=policy)
    async with backend():
        guard = _guard_of(backend)
        assert guard is not None
        now = [100.0]
        guard.breaker()._clock = lambda: now[0]
        waits = [
            await wait_with_policy(backend, "c", counting_strategy, RATE, 1) for _ in range(10)
        ]
        assert waits == [0.0] * 10
        assert backend.gets == 2  # the circuit opened after two failures
        backend.down = False
        now[0] += 1.0
        assert await wait_with_policy(backend, "c", counting_strategy, RATE, 1) == 0.0
        assert backend.gets == 3  # the probe ran the strategy and closed the circuit
        assert guard.breaker().state == "closed"


@pytest.mark.asyncio
@pytest.mark.parametrize(("action", "kind"), [("allow", "allowed"), ("throttle", "throttled")])
async def test_answers_by_policy_are_counted_as_allowed_or_throttled_too(
    recorded: list[events.ThrottleEvent], action: str, kind: str
) -> None:
    # A dashboard counting allowed/throttled must not lose the requests answered
    # while the backend is down; every event names the throttle.
    backend = SwitchableBackend(failure_policy=FailurePolicy(on_error=action))
    async with backend():
        backend.down = True
        await decide_with_policy(backend, "k", FW, RATE, 1, name="api")
    assert [(e.kind, e.policy) for e in recorded] == [
        ("backend_error", "api"),
        ("fallback", "api"),
        (kind, "api"),
    ]


@pytest.mark.asyncio
async def test_custom_strategy_failures_name_the_throttle(
    recorded: list[events.ThrottleEvent],
) -> None:
    from traffik.failures import wait_with_policy

    backend = LockFailsBackend(failure_policy=FailurePolicy(on_error="allow"))
    async with backend():
        await wait_with_policy(backend, "k", counting_strategy, RATE, 1, name="api")
    # The same events as a built-in strategy's, emitted by the same code.
    assert [(e.kind, e.policy) for e in recorded] == [
        ("backend_error", "api"),
        ("fallback", "api"),
        ("allowed", "api"),
    ]


def test_any_backend_rejects_a_non_callable_identifier() -> None:
    from traffik.backends.base import ThrottleBackend

    class Minimal(ThrottleBackend[dict, typing.Any]):  # type: ignore[type-arg]
        async def initialize(self) -> None: ...
        async def close(self) -> None: ...
        async def reset(self) -> None: ...
        async def get(self, key: str) -> str | None: ...
        async def set(self, key: str, value: str, expire: float | None = None) -> None: ...
        async def delete(self, key: str) -> bool: ...
        async def increment(self, key: str, amount: int = 1) -> int: ...
        async def get_lock(self, name: str) -> typing.Any: ...

    with pytest.raises(ConfigurationError, match="identifier must be an async callable"):
        Minimal(namespace="m", identifier=True)


class TwoServerBackend(SwitchableBackend):
    """Keys starting with "a" live on server "A", others on "B"; either can be down."""

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self.down_servers: set[str] = set()

    def failure_domain(self, key: str) -> typing.Hashable:
        return "A" if key.startswith("a") else "B"

    def is_down(self, key: str) -> bool:
        return self.failure_domain(key) in self.down_servers


def test_the_default_failure_domain_is_the_whole_backend() -> None:
    backend = SwitchableBackend()
    assert backend.failure_domain("a") is None
    assert backend.failure_domain("b") is None


@pytest.mark.asyncio
async def test_each_failure_domain_has_a_circuit_of_its_own(
    recorded: list[events.ThrottleEvent],
) -> None:
    from traffik.failures import guard_of as _guard_of

    policy = FailurePolicy(
        on_error="throttle", failure_threshold=2, recovery_time=1.0, max_recovery_time=1.0
    )
    backend = TwoServerBackend(failure_policy=policy)
    async with backend():
        guard = _guard_of(backend)
        assert guard is not None
        backend.down_servers = {"A"}
        for i in range(5):
            assert not (await decide_with_policy(backend, f"a{i}", FW, RATE, 1)).allowed
        assert backend.calls == 2  # A's circuit opened after two failures
        assert guard.breaker("A").state == "open"
        # B's keys still reach B and are decided there.
        statuses = [(await decide_with_policy(backend, "b", FW, RATE, 1)).allowed for _ in range(3)]
        assert statuses == [True, True, False]
        assert backend.calls == 5
        assert guard.breaker("B").state == "closed"
    assert [e.kind for e in recorded].count("circuit_open") == 1
