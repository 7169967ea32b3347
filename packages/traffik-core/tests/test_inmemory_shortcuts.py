"""The in-memory backend's shortcuts: ``decide_now`` (no coroutine) and the repeated refusal.

Differential checks over generated sequences: tests/test_inmemory_fastpath.py.
"""

from __future__ import annotations

import pytest

from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindowStrategy, SlidingWindowLogStrategy
from traffik.strategies._base import Strategy

pytestmark = pytest.mark.asyncio


class Counting(InMemoryBackend):  # type: ignore[type-arg]
    """Overrides decide: the strategy protocol must call it, not a shortcut around it."""

    calls = 0

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        self.calls += 1
        return await super().decide(key, strategy, rate, cost, now_ms=now_ms)


async def test_decide_now_is_decide_without_the_coroutine() -> None:
    rate = Rate.parse("3/s")
    for strategy in BUILTIN_STRATEGIES:
        a, b = InMemoryBackend(clock=lambda: 5_000), InMemoryBackend(clock=lambda: 5_000)
        async with a(), b():
            assert a.decide_now is not None
            for _ in range(5):
                assert a.decide_now("k", strategy, rate, 1) == await b.decide("k", strategy, rate)
    assert ThrottleBackend.decide_now is None  # a generic backend may wait: no shortcut


async def test_a_subclass_overriding_decide_is_always_called() -> None:
    backend = Counting()
    assert backend.decide_now is None
    rate = Rate.parse("2/s")
    async with backend():
        waits = [await FixedWindowStrategy()("k", rate, backend, 1) for _ in range(3)]
    assert backend.calls == 3
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 0


async def test_a_repeated_refusal_is_the_refusal_a_fresh_step_gives() -> None:
    now = [10_000]
    backend = InMemoryBackend(clock=lambda: now[0])
    swl, rate = SlidingWindowLogStrategy(), Rate.parse("2/s")
    async with backend():
        for _ in range(2):
            assert (await backend.decide("k", swl, rate)).allowed
            now[0] += 100
        first = await backend.decide("k", swl, rate)
        again = await backend.decide("k", swl, rate)  # same state, same millisecond
        state = await backend.get(backend.state_key("k", swl))
        assert state is not None
        fresh = swl.decide(tuple(map(int, state.split(","))), now[0], rate, 1).decision
        assert first == again == fresh
        assert not again.allowed
        # Another cost is another transition: stepped, not taken from the last one.
        fresh2 = swl.decide(tuple(map(int, state.split(","))), now[0], rate, 2).decision
        assert await backend.decide("k", swl, rate, 2) == fresh2 != again
        now[0] += 1
        later = await backend.decide("k", swl, rate)
        assert later.retry_after_ms == again.retry_after_ms - 1  # a new millisecond: a new step
        now[0] += 2_000
        assert (await backend.decide("k", swl, rate)).allowed  # the window moved on
