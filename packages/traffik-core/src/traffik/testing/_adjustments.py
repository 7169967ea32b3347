"""Kit tests of ``backend.adjust``: refunds and extra charges, exact under concurrency."""

from __future__ import annotations

import asyncio
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import Strategy
from traffik.testing._decisions import _HYPOTHESIS, _HYPOTHESIS_TWO, TASKS, parametrize_strategies
from traffik.testing._support import AnyBackend, KitBase

if typing.TYPE_CHECKING:
    from traffik.strategies import State

__all__ = ["AdjustmentTests", "reference_adjust_run"]

#: Room for every task's unit: the counting tests check the exact count, not a refusal.
ROOMY_RATE = Rate(limit=2 * TASKS, hours=24)

#: One step: (time offset in ms, "decide" or "adjust", cost or delta, age_ms).
Step = tuple[int, str, int, int]
AdjustScenario = tuple[Rate, list[Step]]


def reference_adjust_run(
    strategy: Strategy, rate: Rate, steps: list[tuple[int, str, int, int]]
) -> list[typing.Any]:
    """The Python reference's answers for ``(now_ms, "decide"|"adjust", amount, age_ms)`` steps."""
    state: State | None = None
    out = []
    for now, op, amount, age in steps:
        if op == "decide":
            step = strategy.decide(state, now, rate, amount)
        else:
            step = strategy.adjust(state, now, rate, amount, age)
        if step.write:
            state = step.state
        out.append(step.decision)
    return out


@st.composite
def _adjust_scenarios(draw: st.DrawFn) -> AdjustScenario:
    limit = draw(st.integers(1, 6))
    window = draw(st.sampled_from([2_000, 5_000, 30_000]))
    rate = Rate(limit=limit, milliseconds=window)
    steps: list[Step] = []
    offset = 0
    for _ in range(draw(st.integers(1, 20))):
        offset += draw(
            st.one_of(st.just(0), st.integers(1, max(1, window // limit)), st.integers(0, window))
        )
        if draw(st.booleans()):
            steps.append((offset, "decide", draw(st.integers(1, limit + 1)), 0))
        else:
            delta = draw(st.integers(-(limit + 2), limit + 2))
            age = draw(st.one_of(st.just(0), st.integers(0, window + 10)))
            steps.append((offset, "adjust", delta, min(age, offset)))
    return rate, steps


class AdjustmentTests(KitBase):
    """``adjust`` gives back and charges exactly, under concurrency and against the reference."""

    async def _half_refunded(self, backends: list[AnyBackend], strategy: Strategy) -> None:
        injectable = all(self.supports(b, "injectable_clock") for b in backends)
        key = self.fresh_key("user")
        now = backends[0].now_ms() if injectable else None

        async def one(i: int) -> None:
            backend = backends[i % len(backends)]
            decision = await backend.decide(key, strategy, ROOMY_RATE, 1, now_ms=now)
            assert decision.allowed, f"{strategy.name}: request {i} refused with room for all"
            if i % 2 == 0:
                await backend.adjust(key, strategy, ROOMY_RATE, -1, now_ms=now)

        await asyncio.gather(*(one(i) for i in range(TASKS)))
        after = await backends[0].adjust(key, strategy, ROOMY_RATE, 0, now_ms=now)
        capacity = strategy.capacity(ROOMY_RATE)
        assert after.remaining == capacity - TASKS // 2, (
            f"{strategy.name}: {TASKS} concurrent requests, half of them refunded, left "
            f"remaining={after.remaining}; want {capacity - TASKS // 2} (an update was lost)"
        )

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_adjust_refunds_exactly_under_concurrency(self, strategy: Strategy) -> None:
        async with self.open_backend() as backend:
            await self._half_refunded([backend], strategy)

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_adjust_refunds_exactly_across_instances(self, strategy: Strategy) -> None:
        async with self.open_backend() as first:
            self.require(first, "shared_state")
            async with self.open_backend(second=True) as second:
                await self._half_refunded([first, second], strategy)

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_refund_never_leaves_more_than_the_full_quota(self, strategy: Strategy) -> None:
        rate = Rate(limit=3, hours=24)
        capacity = strategy.capacity(rate)
        async with self.open_backend() as backend:
            fresh = await backend.adjust("user", strategy, rate, -5)
            assert fresh.remaining == capacity, f"{strategy.name}: a fresh key grew: {fresh}"
            assert (await backend.decide("user", strategy, rate, 1)).allowed
            after = await backend.adjust("user", strategy, rate, -10)
            assert after.remaining == capacity, (
                f"{strategy.name}: a refund of 10 after one unit left {after.remaining}, "
                f"want the full quota {capacity}"
            )
            assert not (await backend.decide("user", strategy, rate, capacity + 1)).allowed

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_extra_charge_is_never_refused_and_puts_the_key_in_debt(
        self, strategy: Strategy
    ) -> None:
        rate = Rate(limit=3, hours=24)
        capacity = strategy.capacity(rate)
        async with self.open_backend() as backend:
            assert (await backend.decide("user", strategy, rate, capacity)).allowed
            after = await backend.adjust("user", strategy, rate, 2)
            assert after.remaining == 0, f"{strategy.name}: {after}"
            assert not after.allowed, f"{strategy.name}: {after}"
            refused = await backend.decide("user", strategy, rate, 1)
            assert not refused.allowed, f"{strategy.name}: a key in debt admitted a request"
            # Giving back the extra charge alone does not make room: the debt is paid first
            # (except in the fixed window, whose debt is a full window).
            await backend.adjust("user", strategy, rate, -1)
            assert not (await backend.decide("user", strategy, rate, 1)).allowed or (
                strategy.name == "fw"
            )

    @pytest.mark.asyncio
    async def test_custom_strategies_cannot_be_adjusted(self) -> None:
        async def custom(key: typing.Any, rate: Rate, backend: typing.Any, cost: int) -> float:
            return 0.0

        async with self.open_backend() as backend:
            with pytest.raises(ConfigurationError, match="cannot give units back"):
                await backend.adjust("user", custom, Rate(limit=3, seconds=10), -1)  # type: ignore[arg-type]

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_adjust_rejects_a_delta_that_is_not_an_int(self, strategy: Strategy) -> None:
        async with self.open_backend() as backend:
            for bad in (1.5, True, "1", None):
                with pytest.raises(ValueError, match="whole number"):
                    await backend.adjust("user", strategy, Rate(limit=3, seconds=10), bad)  # type: ignore[arg-type]

    async def _adjust_differential(
        self, backends: list[AnyBackend], strategy: Strategy, scenario: AdjustScenario
    ) -> None:
        rate, offsets = scenario
        loop = asyncio.get_running_loop()
        key = self.fresh_key("user")
        start, real0 = backends[0].now_ms(), loop.time()
        state: State | None = None
        trace: list[tuple[int, str, int, int]] = []
        for i, (offset, op, amount, age) in enumerate(offsets):
            backend = backends[i % len(backends)]
            # Injected time never runs slower than real time (storage TTLs run on real time).
            now = start + offset + int((loop.time() - real0) * 1000)
            trace.append((now - start, op, amount, age))
            where = f"{strategy.name} {rate}; steps (ms after start, op, amount, age): {trace}"
            if op == "decide":
                got = await backend.decide(key, strategy, rate, amount, now_ms=now)
                step = strategy.decide(state, now, rate, amount)
            else:
                got = await backend.adjust(key, strategy, rate, amount, age_ms=age, now_ms=now)
                step = strategy.adjust(state, now, rate, amount, age)
            if step.write:
                state = step.state
            assert got == step.decision, (
                f"step {i} ({op}) answered {got}, the reference answers {step.decision}; {where}"
            )

    @pytest.mark.asyncio
    @parametrize_strategies
    @_HYPOTHESIS
    @given(scenario=_adjust_scenarios())
    async def test_adjust_matches_the_reference(
        self, strategy: Strategy, scenario: AdjustScenario
    ) -> None:
        async with self.open_backend(self.fresh_namespace()) as backend:
            self.require(backend, "injectable_clock")
            await self._adjust_differential([backend], strategy, scenario)

    @pytest.mark.asyncio
    @parametrize_strategies
    @_HYPOTHESIS_TWO
    @given(scenario=_adjust_scenarios())
    async def test_adjust_matches_the_reference_across_instances(
        self, strategy: Strategy, scenario: AdjustScenario
    ) -> None:
        namespace = self.fresh_namespace()
        async with self.open_backend(namespace) as first:
            self.require(first, "injectable_clock", "shared_state")
            async with self.open_backend(namespace, second=True) as second:
                await self._adjust_differential([first, second], strategy, scenario)
