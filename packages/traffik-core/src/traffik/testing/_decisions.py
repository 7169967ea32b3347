"""Kit tests of exact counting under concurrency and of ``backend.decide`` for every strategy."""

from __future__ import annotations

import asyncio
import typing
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traffik.backends.base import wall_clock_ms
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.testing._support import AnyBackend, KitBase

if typing.TYPE_CHECKING:
    from traffik.decisions import Decision
    from traffik.strategies import State

__all__ = ["DecisionTests", "reference_run"]

#: Concurrent tasks in the counting tests.
TASKS = 64
#: A long window, so that refills during a test (wall clock) never admit an extra unit.
COUNT_RATE = Rate(limit=10, hours=24)
#: How far ahead a skewed local clock runs in the server-clock test.
SKEW_MS = 10 * 86_400_000

_STRATEGY_IDS = [s.name for s in BUILTIN_STRATEGIES]

parametrize_strategies = pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=_STRATEGY_IDS)


def reference_run(strategy: Strategy, rate: Rate, steps: list[tuple[int, int]]) -> list[Decision]:
    """The decisions of the Python reference for ``(now_ms, cost)`` steps on one fresh key."""
    state: State | None = None
    out = []
    for now, cost in steps:
        step = strategy.decide(state, now, rate, cost)
        if step.write:
            state = step.state
        out.append(step.decision)
    return out


def _summary(decisions: list[Decision]) -> tuple[int, Counter[int]]:
    admitted = [d for d in decisions if d.allowed]
    return len(admitted), Counter(d.remaining for d in admitted)


#: A rate and steps of (time offset in ms, cost, whether to peek first).
Scenario = tuple[Rate, list[tuple[int, int, bool]]]

#: Modest: the servers are real and CI machines small. Each example is a fresh key.
_HYPOTHESIS = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[
        HealthCheck.differing_executors,
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)
#: Fewer examples when every example connects two clients (a cluster client is slow to start).
_HYPOTHESIS_TWO = settings(_HYPOTHESIS, max_examples=8)


@st.composite
def _scenarios(draw: st.DrawFn) -> Scenario:
    """A rate and a sequence of steps; time offsets never go backwards."""
    limit = draw(st.integers(1, 6))
    window = draw(st.sampled_from([2_000, 5_000, 30_000]))
    rate = Rate(limit=limit, milliseconds=window)
    steps = []
    offset = 0
    for _ in range(draw(st.integers(1, 20))):
        offset += draw(
            st.one_of(
                st.just(0),
                st.integers(1, max(1, window // limit)),
                st.integers(0, 2 * window),
            )
        )
        cost = draw(st.one_of(st.just(1), st.integers(1, limit + 2)))
        steps.append((offset, cost, draw(st.booleans())))
    return rate, steps


class DecisionTests(KitBase):
    """Counts stay exact under 64 concurrent tasks; ``decide`` matches the Python reference."""

    async def _increments(self, backends: list[AnyBackend], key: str, *, ttl: bool) -> list[int]:
        async def one(i: int) -> int:
            backend = backends[i % len(backends)]
            if ttl:
                return await backend.increment_with_ttl(key, 1, ttl=600)
            return await backend.increment(key)

        return list(await asyncio.gather(*(one(i) for i in range(TASKS))))

    @pytest.mark.asyncio
    async def test_concurrent_increments_are_exact(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            values = await self._increments([backend], key, ttl=False)
            assert sorted(values) == list(range(1, TASKS + 1)), "concurrent increments lost updates"
            assert await backend.get(key) == str(TASKS)

    @pytest.mark.asyncio
    async def test_concurrent_increment_with_ttl_is_exact(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            values = await self._increments([backend], key, ttl=True)
            assert sorted(values) == list(range(1, TASKS + 1)), (
                "concurrent increment_with_ttl calls lost updates"
            )

    @pytest.mark.asyncio
    async def test_concurrent_increments_across_instances_are_exact(self) -> None:
        async with self.open_backend() as first:
            self.require(first, "shared_state")
            async with self.open_backend(second=True) as second:
                key = self.key()
                values = await self._increments([first, second], key, ttl=False)
                assert sorted(values) == list(range(1, TASKS + 1)), (
                    "increments from two instances lost updates"
                )

    async def _admissions(self, backends: list[AnyBackend], strategy: Strategy) -> None:
        injectable = all(self.supports(b, "injectable_clock") for b in backends)
        for _attempt in range(2):
            key = self.fresh_key("user")
            before = backends[0].now_ms()
            now = before if injectable else None

            async def one(i: int, key: str = key, now: int | None = now) -> Decision:
                return await backends[i % len(backends)].decide(
                    key, strategy, COUNT_RATE, 1, now_ms=now
                )

            decisions = list(await asyncio.gather(*(one(i) for i in range(TASKS))))
            after = backends[0].now_ms()
            expected = reference_run(strategy, COUNT_RATE, [(before, 1)] * TASKS)
            # A fixed window may open mid-test on a wall clock: try once more.
            window = COUNT_RATE.expire
            if injectable or before // window == after // window:
                break
        got_count, got_remaining = _summary(decisions)
        want_count, want_remaining = _summary(expected)
        assert got_count == want_count, (
            f"{strategy.name}: {TASKS} concurrent decisions admitted {got_count}, "
            f"the reference admits {want_count}"
        )
        if injectable:
            assert got_remaining == want_remaining, (
                f"{strategy.name}: the admitted decisions' 'remaining' values {sorted(got_remaining)} "
                f"differ from the reference's {sorted(want_remaining)} (a decision was not atomic)"
            )

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_decide_admits_exactly_the_quota_under_concurrency(
        self, strategy: Strategy
    ) -> None:
        async with self.open_backend() as backend:
            await self._admissions([backend], strategy)

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_decide_admits_exactly_the_quota_across_instances(
        self, strategy: Strategy
    ) -> None:
        async with self.open_backend() as first:
            self.require(first, "shared_state")
            async with self.open_backend(second=True) as second:
                await self._admissions([first, second], strategy)

    @pytest.mark.asyncio
    async def test_server_clock_ignores_the_local_clock(self) -> None:
        rate = Rate(limit=3, hours=24)
        async with self.open_backend() as first:
            self.require(first, "server_clock", "shared_state")
            async with self.open_backend(second=True) as second:
                # If the second instance decided on its own clock, ten days on, every
                # window would have reset and every bucket refilled.
                second.clock = lambda: wall_clock_ms() + SKEW_MS
                for strategy in BUILTIN_STRATEGIES:
                    key = self.fresh_key("user")
                    capacity = strategy.capacity(rate)
                    assert (await first.decide(key, strategy, rate, capacity)).allowed
                    late = await second.decide(key, strategy, rate, 1)
                    assert not late.allowed, (
                        f"{strategy.name}: an instance whose local clock is 10 days ahead admitted "
                        f"a request the server's clock refuses (server_clock is declared)"
                    )

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_decide_rejects_a_cost_above_capacity_forever(self, strategy: Strategy) -> None:
        rate = Rate(limit=3, seconds=10)
        async with self.open_backend() as backend:
            decision = await backend.decide("user", strategy, rate, strategy.capacity(rate) + 1)
            assert not decision.allowed
            assert decision.never, (
                f"{strategy.name}: retry_after_ms={decision.retry_after_ms}, want NEVER"
            )
            assert (await backend.decide("user", strategy, rate, 1)).allowed, (
                "a rejected request was charged"
            )

    @pytest.mark.asyncio
    @parametrize_strategies
    async def test_peek_charges_nothing(self, strategy: Strategy) -> None:
        rate = Rate(limit=3, hours=24)
        async with self.open_backend() as backend:
            for n in range(3):
                seen = await backend.peek("user", strategy, rate)
                assert seen.allowed, f"{strategy.name}: peek #{n + 1} on a fresh key was refused"
                assert seen.remaining == strategy.capacity(rate) - 1, (
                    f"{strategy.name}: peek #{n + 1} saw remaining={seen.remaining}, want "
                    f"{strategy.capacity(rate) - 1}: peek() charged the key"
                )
            assert (
                await backend.decide("user", strategy, rate, strategy.capacity(rate))
            ).allowed, "peek() charged the key: a full-capacity request was rejected afterwards"

    async def _differential(
        self, backends: list[AnyBackend], strategy: Strategy, scenario: Scenario
    ) -> None:
        """Replay ``scenario`` through ``backends`` (in turn) and the reference, step by step."""
        rate, offsets = scenario
        loop = asyncio.get_running_loop()
        key = self.fresh_key("user")
        start, real0 = backends[0].now_ms(), loop.time()
        state: State | None = None
        trace: list[tuple[int, int, bool]] = []
        for i, (offset, cost, peek_first) in enumerate(offsets):
            backend = backends[i % len(backends)]
            # Injected time never runs slower than real time, so a state whose storage
            # TTL (on the server's clock) ran out is also logically expired.
            now = start + offset + int((loop.time() - real0) * 1000)
            trace.append((now - start, cost, peek_first))
            where = f"{strategy.name} {rate}; steps (ms after start, cost, peeked first): {trace}"
            if peek_first:
                seen = await backend.peek(key, strategy, rate, now_ms=now)
                expected = strategy.peek(state, now, rate)
                assert seen == expected, (
                    f"peek at step {i} saw {seen}, the reference sees {expected}; {where}"
                )
            got = await backend.decide(key, strategy, rate, cost, now_ms=now)
            step = strategy.decide(state, now, rate, cost)
            if step.write:
                state = step.state
            assert got == step.decision, (
                f"step {i} decided {got}, the reference decides {step.decision}; {where}"
            )

    @pytest.mark.asyncio
    @parametrize_strategies
    @_HYPOTHESIS
    @given(scenario=_scenarios())
    async def test_decide_matches_the_reference(
        self, strategy: Strategy, scenario: Scenario
    ) -> None:
        async with self.open_backend(self.fresh_namespace()) as backend:
            self.require(backend, "injectable_clock")
            await self._differential([backend], strategy, scenario)

    @pytest.mark.asyncio
    @parametrize_strategies
    @_HYPOTHESIS_TWO
    @given(scenario=_scenarios())
    async def test_decide_matches_the_reference_across_instances(
        self, strategy: Strategy, scenario: Scenario
    ) -> None:
        namespace = self.fresh_namespace()
        async with self.open_backend(namespace) as first:
            self.require(first, "injectable_clock", "shared_state")
            async with self.open_backend(namespace, second=True) as second:
                await self._differential([first, second], strategy, scenario)
