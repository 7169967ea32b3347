"""The failure guard: in-flight bounds, deadlines and how a late call is judged.

The backends here are in-memory ones made slow, stuck or failing on purpose (the
policy logic, not a server, is under test); breaker time comes from an injected
clock. Real servers under load: tests-integration/test_load_exact.py.
"""

from __future__ import annotations

import asyncio
import typing
from collections import Counter

import pytest

from traffik import events
from traffik._guard.guard import Guard
from traffik._guard.inflight import InFlight
from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.failures import FailurePolicy, decide_with_policy, guard_of, set_guard
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy
from traffik.strategies._base import Strategy

FW = FixedWindowStrategy()
pytestmark = pytest.mark.asyncio


class Server(InMemoryBackend):  # type: ignore[type-arg]
    """An in-memory backend that behaves like a server: one call at a time, each
    taking ``service`` seconds; ``stuck`` calls never answer (until released)."""

    capabilities = BackendCapabilities(shared_state=True)

    def __init__(self, service: float = 0.0, **kwargs: typing.Any) -> None:
        super().__init__(namespace="server", **kwargs)
        self.service = service
        self.stuck = False
        self.release = asyncio.Event()
        self.calls = 0
        self._one = asyncio.Lock()

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        self.calls += 1
        await self.before()
        if self.stuck:
            await self.release.wait()
        async with self._one:
            if self.service:
                await asyncio.sleep(self.service)
            return await super().decide(key, strategy, rate, cost, now_ms=now_ms)

    async def before(self) -> None:
        """What a call does before it reaches the store (subclasses stall here)."""


@pytest.fixture
def kinds() -> typing.Iterator[Counter[str]]:
    seen: Counter[str] = Counter()
    unsubscribe = events.subscribe(lambda event: seen.update([event.kind]))
    yield seen
    unsubscribe()


def with_clock(backend: Server, now: list[float]) -> Guard:
    """Give ``backend`` a guard whose breakers read ``now``."""
    assert backend.failure_policy is not None
    return set_guard(backend, Guard(backend.failure_policy, clock=lambda: now[0]))


async def test_a_burst_on_a_slow_but_live_server_is_never_an_outage(kinds: Counter[str]) -> None:
    # 1,000 requests at once on a server answering one call per 2 ms: most of them
    # cannot be answered within the 0.25 s timeout. They are this process's backlog,
    # not a dead server: refused as overload, never a backend_error, fallback or
    # circuit change, and the limit is never exceeded.
    backend = Server(service=0.002, failure_policy=FailurePolicy(timeout=0.25, max_in_flight=8))
    rate = Rate.parse("50/d")
    async with backend():
        decisions = await asyncio.gather(
            *(decide_with_policy(backend, "burst", FW, rate, 1) for _ in range(1000))
        )
    assert sum(d.allowed for d in decisions) == 50
    assert kinds["backend_error"] == kinds["fallback"] == 0
    assert not any(kind.startswith("circuit") for kind in kinds)
    assert kinds["overload"] > 0
    assert backend.calls <= 1000


async def test_a_burst_within_the_bounds_is_exact_and_quiet(kinds: Counter[str]) -> None:
    backend = Server(failure_policy=FailurePolicy(max_in_flight=4))
    rate = Rate.parse("50/d")
    async with backend():
        decisions = await asyncio.gather(
            *(decide_with_policy(backend, "k", FW, rate, 1) for _ in range(1000))
        )
        assert sum(d.allowed for d in decisions) == 50
        assert guard_of(backend) is not None
        slots = typing.cast(Guard, guard_of(backend)).slots()
        assert slots.busy == 0
        assert slots.waiting == 0
    assert set(kinds) <= {"allowed", "throttled", "local_block"}


async def test_beyond_the_waiting_room_requests_are_refused_at_once(kinds: Counter[str]) -> None:
    policy = FailurePolicy(timeout=5.0, max_in_flight=1, max_waiting=2)
    backend = Server(service=0.05, failure_policy=policy)
    rate = Rate.parse("100/d")
    async with backend():
        decisions = await asyncio.gather(
            *(decide_with_policy(backend, f"k{i}", FW, rate, 1) for i in range(5))
        )
    # One in flight, two waiting; the fourth and fifth found the queue full.
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert all(d.retry_after_ms == 1000 for d in decisions[3:])
    assert kinds["overload"] == 2
    assert kinds["backend_error"] == kinds["fallback"] == 0


async def test_a_stuck_server_is_answered_by_policy_within_the_timeout(kinds: Counter[str]) -> None:
    policy = FailurePolicy(on_error="throttle", timeout=0.05, failure_threshold=3)
    backend = Server(failure_policy=policy)
    rate = Rate.parse("100/d")
    now = [100.0]
    async with backend():
        guard = with_clock(backend, now)
        backend.stuck = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        decisions = await asyncio.gather(
            *(decide_with_policy(backend, f"k{i}", FW, rate, 1) for i in range(3))
        )
        assert loop.time() - started < 0.05 + 0.2
        assert not any(d.allowed for d in decisions)
        assert kinds["backend_error"] == 3
        assert guard.breaker().state == "open"
        # Open: later requests are answered at once, without calling the server.
        calls = backend.calls
        assert not (await decide_with_policy(backend, "x", FW, rate, 1)).allowed
        assert backend.calls == calls
        backend.release.set()


async def test_the_deadline_holds_when_the_call_ignores_cancellation() -> None:
    # A client library whose own wait_for swallows the cancellation (Python 3.11)
    # keeps running after the deadline; the answer does not wait for it.
    class Stubborn(Server):
        async def before(self) -> None:
            try:
                await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                await asyncio.sleep(0.5)  # unwinds late, and does not re-raise

    backend = Stubborn(failure_policy=FailurePolicy(on_error="allow", timeout=0.05))
    async with backend():
        loop = asyncio.get_running_loop()
        started = loop.time()
        decision = await decide_with_policy(backend, "k", FW, Rate.parse("1/d"), 1)
        assert loop.time() - started < 0.05 + 0.2
        assert decision.allowed
        slots = typing.cast(Guard, guard_of(backend)).slots()
        assert slots.busy == 1  # the abandoned call still holds its slot
        for _ in range(100):
            if not slots.busy:
                break
            await asyncio.sleep(0.02)
        assert slots.busy == 0


async def test_a_call_in_flight_when_the_circuit_opened_does_not_close_it(
    kinds: Counter[str],
) -> None:
    policy = FailurePolicy(on_error="throttle", timeout=None, failure_threshold=2)
    backend = Server(failure_policy=policy)
    rate = Rate.parse("100/d")
    now = [100.0]
    async with backend():
        guard = with_clock(backend, now)
        backend.stuck = True
        slow = asyncio.ensure_future(decide_with_policy(backend, "slow", FW, rate, 1))
        await asyncio.sleep(0)
        breaker = guard.breaker()
        for _ in range(2):  # two failures reported in the meantime open the circuit
            breaker.record_failure(breaker.epoch)
        assert breaker.state == "open"
        backend.release.set()
        assert (await slow).allowed  # the server did answer it...
        assert breaker.state == "open"  # ...but that says nothing about now
        assert kinds["circuit_closed"] == 0


async def test_a_probe_that_answers_closes_the_circuit() -> None:
    policy = FailurePolicy(on_error="throttle", failure_threshold=1, recovery_time=1.0)
    backend = Server(failure_policy=policy)
    rate = Rate.parse("100/d")
    now = [100.0]
    async with backend():
        guard = with_clock(backend, now)
        guard.breaker().record_failure()
        assert not (await decide_with_policy(backend, "k", FW, rate, 1)).allowed
        now[0] += 1.0
        assert (await decide_with_policy(backend, "k", FW, rate, 1)).allowed
        assert guard.breaker().state == "closed"


async def test_in_flight_slots_are_first_come_first_served() -> None:
    slots = InFlight(1, 10)
    assert slots.try_take()
    order: list[int] = []

    async def waiter(i: int) -> None:
        assert await slots.take(None)
        order.append(i)
        slots.release()

    tasks = [asyncio.ensure_future(waiter(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert slots.waiting == 5
    slots.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert slots.busy == 0


async def test_in_flight_waiters_expire_and_cancelled_ones_give_their_slot_back() -> None:
    slots = InFlight(1, 10)
    assert slots.try_take()
    loop = asyncio.get_running_loop()
    assert await slots.take(loop.time() + 0.01) is None  # expired
    cancelled = asyncio.ensure_future(slots.take(None))
    await asyncio.sleep(0)
    slots.release()  # handed to the waiter...
    cancelled.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert slots.busy == 0
    assert slots.waiting == 0
    assert InFlight(1, 0).try_take()


async def test_in_flight_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="limit"):
        InFlight(0, 1)
    from traffik.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_in_flight"):
        FailurePolicy(max_in_flight=0)
    with pytest.raises(ConfigurationError, match="max_waiting"):
        FailurePolicy(max_waiting=-1)


async def test_a_long_decision_that_keeps_hearing_from_its_server_is_not_a_failure(
    kinds: Counter[str],
) -> None:
    from traffik.failures import heard_from

    class Contended(Server):
        async def before(self) -> None:
            for _ in range(6):  # six lost races, each answered by the server
                await asyncio.sleep(0.02)
                heard_from(self)

    backend = Contended(failure_policy=FailurePolicy(on_error="throttle", timeout=0.05))
    async with backend():
        assert (await decide_with_policy(backend, "k", FW, Rate.parse("1/d"), 1)).allowed
    assert kinds["backend_error"] == kinds["overload"] == 0


async def test_a_guard_goes_with_its_backend_and_needs_no_hash() -> None:
    import gc

    from traffik._guard.registry import guards as _guards

    class Unhashable(Server):
        __hash__ = None  # type: ignore[assignment]

    backend = Unhashable(failure_policy=FailurePolicy())
    await backend.initialize()
    assert (await decide_with_policy(backend, "k", FW, Rate.parse("1/d"), 1)).allowed
    await backend.close()
    key = id(backend)
    assert key in _guards
    del backend
    gc.collect()
    assert key not in _guards
