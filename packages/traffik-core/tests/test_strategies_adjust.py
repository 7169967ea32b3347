"""The adjustment transitions of the Python reference (traffik.strategies._adjust)."""

from __future__ import annotations

import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    DEBT_FACTOR,
    FixedWindowStrategy,
    GCRAStrategy,
    SlidingWindowCounterStrategy,
    SlidingWindowLogStrategy,
    State,
    Strategy,
    TokenBucketStrategy,
    Transition,
    check_adjustment,
)

IDS = [s.name for s in BUILTIN_STRATEGIES]
all_strategies = pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
WINDOWED = [FixedWindowStrategy(), SlidingWindowCounterStrategy(), SlidingWindowLogStrategy()]


def _usage(strategy: Strategy, state: State | None, rate: Rate, now: int) -> int:
    """Units in use now, from the snapshot (exact while not in debt)."""
    return strategy.capacity(rate) - strategy.snapshot(state, now, rate).remaining


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    limit=st.integers(1, 20),
    window=st.sampled_from([1, 10, 1000, 60_000]),
    start=st.integers(0, 2**40),
)
def test_a_refund_of_a_charge_at_once_restores_the_quota(
    data: st.DataObject, limit: int, window: int, start: int
) -> None:
    strategy = data.draw(st.sampled_from(BUILTIN_STRATEGIES))
    rate = Rate(limit=limit, milliseconds=window)
    state: State | None = None
    now = start
    for cost in data.draw(st.lists(st.integers(1, limit), max_size=5)):
        now += data.draw(st.integers(0, window))
        step = strategy.decide(state, now, rate, cost)
        if step.write:
            state = step.state
    cost = data.draw(st.integers(1, limit))
    before = strategy.snapshot(state, now, rate)
    charged = strategy.decide(state, now, rate, cost)
    if not charged.decision.allowed:
        return
    refunded = strategy.adjust(charged.state, now, rate, -cost)
    assert refunded.decision == before


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    limit=st.integers(1, 10),
    window=st.sampled_from([7, 1000]),
)
def test_usage_stays_between_empty_and_one_quota_of_debt(
    data: st.DataObject, limit: int, window: int
) -> None:
    strategy = data.draw(st.sampled_from(BUILTIN_STRATEGIES))
    rate = Rate(limit=limit, milliseconds=window)
    capacity = strategy.capacity(rate)
    top = capacity if strategy.name == "fw" else DEBT_FACTOR * capacity
    state: State | None = None
    now = 10**9
    for _ in range(data.draw(st.integers(1, 20))):
        now += data.draw(st.integers(0, window // 2))
        amount = data.draw(st.integers(-3 * capacity, 3 * capacity))
        if data.draw(st.booleans()) and amount > 0:
            step = strategy.decide(state, now, rate, amount)
        else:
            step = strategy.adjust(state, now, rate, amount, data.draw(st.integers(0, window)))
        if step.write:
            state = step.state
        seen = strategy.snapshot(state, now, rate)
        assert 0 <= seen.remaining <= capacity
        if seen.remaining == capacity:
            assert seen.allowed
        # A state never holds more than the bound (measured as the level it implies).
        if strategy.name in ("tb", "tbd", "lb", "lbq") and state is not None:
            assert state[0] <= top * window
        if strategy.name == "gcra" and state is not None:
            assert (state[0] - now) * limit + state[1] <= top * window
        if strategy.name == "fw" and state is not None:
            assert state[1] <= top
        if strategy.name == "swc" and state is not None:
            assert state[2] <= top
        if strategy.name == "swl" and state is not None:
            assert sum(state[1::2]) <= top


@pytest.mark.parametrize("strategy", WINDOWED, ids=[s.name for s in WINDOWED])
def test_windows_give_back_only_within_the_window_charged(strategy: Strategy) -> None:
    rate = Rate(limit=5, seconds=1)
    charged = strategy.decide(None, 10_900, rate, 3)
    # The fixed windows: 200 ms later the window of the charge (10 000-11 000) has
    # ended. The sliding log: the charge counts until 11 900.
    later = 11_900 if strategy.name == "swl" else 11_100
    late = strategy.adjust(charged.state, later, rate, -3, age_ms=later - 10_900)
    assert late.decision == strategy.snapshot(charged.state, later, rate)
    assert late.decision.remaining == 5 if strategy.name == "swl" else 2
    # Within the window it is given back.
    soon = strategy.adjust(charged.state, 10_950, rate, -3, age_ms=50)
    assert soon.decision.remaining == 5


def test_the_sliding_log_removes_the_newest_entries() -> None:
    strategy, rate = SlidingWindowLogStrategy(), Rate(limit=10, seconds=1)
    state: State | None = None
    for now, cost in ((1_000, 2), (1_100, 3), (1_200, 1)):
        step = strategy.decide(state, now, rate, cost)
        state = step.state
    step = strategy.adjust(state, 1_300, rate, -2, age_ms=200)
    assert step.state == (1_000, 2, 1_100, 2)
    step = strategy.adjust(step.state, 1_300, rate, -4, age_ms=200)
    assert step.state is None
    assert step.write
    assert step.decision.remaining == 10


def test_gcra_never_moves_its_arrival_time_before_now() -> None:
    strategy, rate = GCRAStrategy(), Rate(limit=10, seconds=1)
    step = strategy.decide(None, 5_000, rate, 4)  # TAT 5 400
    assert step.state == (5_400, 0)
    back = strategy.adjust(step.state, 5_100, rate, -1)
    assert back.state == (5_300, 0)  # one unit is 100 ms
    empty = strategy.adjust(back.state, 5_150, rate, -100)
    assert empty.state == (5_150, 0)


def test_a_token_bucket_refills_up_to_its_capacity_and_debt_makes_clients_wait() -> None:
    strategy, rate = TokenBucketStrategy(burst_size=4), Rate(limit=2, seconds=1)
    step = strategy.decide(None, 0, rate, 4)
    debt = strategy.adjust(step.state, 0, rate, 4)
    assert debt.decision.remaining == 0
    assert not debt.decision.allowed
    # 8 tokens used of 4: one unit fits once 5 have drained, at 2 per second.
    assert debt.decision.retry_after_ms == 2_500
    refund = strategy.adjust(debt.state, 0, rate, -100)
    assert refund.decision.remaining == 4


@all_strategies
def test_bad_adjustments_say_what_is_allowed(strategy: Strategy) -> None:
    rate = Rate(limit=3, seconds=1)
    for bad in (1.5, True, "2", None):
        with pytest.raises(ValueError, match="whole number of units"):
            strategy.adjust(None, 0, rate, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="age_ms must be"):
        strategy.adjust(None, 0, rate, -1, age_ms=-1)


@all_strategies
def test_an_unlimited_rate_adjusts_nothing(strategy: Strategy) -> None:
    step = strategy.adjust(None, 0, Rate(), -5)
    assert step == Transition(None, 0, step.decision, False)
    assert step.decision.allowed


def test_custom_strategies_cannot_adjust() -> None:
    async def custom(key: typing.Any, rate: Rate, backend: typing.Any, cost: int) -> float:
        return 0.0

    with pytest.raises(ConfigurationError, match="cannot give units back"):
        check_adjustment(custom, Rate(limit=1, seconds=1), -1)

    class OnlyDecides(FixedWindowStrategy):
        pass

    assert OnlyDecides().adjustable  # inherits the fixed window's adjustment
    assert all(s.adjustable for s in BUILTIN_STRATEGIES)


def test_a_capacity_too_large_to_adjust_exactly_is_refused() -> None:
    rate = Rate(limit=2**50, milliseconds=2)
    with pytest.raises(ConfigurationError, match="too large to adjust exactly"):
        FixedWindowStrategy().adjust(None, 0, rate, -1)
