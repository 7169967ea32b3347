"""Unit tests of every built-in strategy: pure transitions with explicit times, no sleeping."""

from __future__ import annotations

import math

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import NEVER
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    FixedWindowStrategy,
    GCRAStrategy,
    LeakyBucketStrategy,
    LeakyBucketWithQueueStrategy,
    SlidingWindowCounterStrategy,
    SlidingWindowLogStrategy,
    State,
    Strategy,
    TokenBucketStrategy,
    TokenBucketWithDebtStrategy,
    decode_state,
    default_strategy,
    encode_state,
)

CONFIGURED: tuple[Strategy, ...] = (
    *BUILTIN_STRATEGIES,
    TokenBucketStrategy(burst_size=7),
    TokenBucketWithDebtStrategy(burst_size=3, max_debt=2),
    TokenBucketWithDebtStrategy(max_debt=4),
    LeakyBucketWithQueueStrategy(queue_size=4),
    GCRAStrategy(burst=6),
)
BUCKETS: tuple[Strategy, ...] = tuple(
    s for s in CONFIGURED if s.name in {"tb", "tbd", "lb", "lbq", "gcra"}
)

RATE = Rate(limit=5, seconds=1)
T0 = 1_000_000  # an aligned start: a multiple of every window used here


def ids(strategy: Strategy) -> str:
    return repr(strategy)


def run(
    strategy: Strategy,
    times: list[int],
    rate: Rate = RATE,
    cost: int = 1,
    state: State | None = None,
) -> tuple[list[bool], State | None]:
    allowed = []
    for now in times:
        step = strategy.decide(state, now, rate, cost)
        allowed.append(step.decision.allowed)
        if step.write:
            state = step.state
    return allowed, state


# -- semantics every strategy keeps ---------------------------------------------


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
def test_fresh_key_admits_exactly_its_capacity_back_to_back(strategy: Strategy) -> None:
    capacity = strategy.capacity(RATE)
    allowed, _ = run(strategy, [T0] * (capacity + 3))
    assert allowed == [True] * capacity + [False] * 3


def test_capacities() -> None:
    assert [s.capacity(RATE) for s in CONFIGURED] == [5] * 8 + [7, 5, 9, 4, 6]


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
def test_rejected_request_is_not_charged(strategy: Strategy) -> None:
    _, state = run(strategy, [T0] * strategy.capacity(RATE))
    step = strategy.decide(state, T0 + 1, RATE, 1)
    assert not step.decision.allowed
    assert not step.write
    assert step.state == state
    # Retrying (and being rejected) many times does not push the admission back.
    retry = step.decision.retry_after_ms
    for t in range(T0 + 1, T0 + retry):
        assert not strategy.decide(state, t, RATE, 1).decision.allowed
    assert strategy.decide(state, T0 + 1 + retry, RATE, 1).decision.allowed


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
@pytest.mark.parametrize("cost", [1, 2, 3])
def test_retry_after_is_exact(strategy: Strategy, cost: int) -> None:
    _, state = run(strategy, [T0 + 10] * strategy.capacity(RATE))
    for now in (T0 + 10, T0 + 150, T0 + 499):
        decision = strategy.decide(state, now, RATE, cost).decision
        if decision.allowed:
            continue
        retry = decision.retry_after_ms
        assert retry >= 1
        assert strategy.decide(state, now + retry, RATE, cost).decision.allowed
        assert not strategy.decide(state, now + retry - 1, RATE, cost).decision.allowed


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
def test_cost_above_capacity_is_never_admissible(strategy: Strategy) -> None:
    capacity = strategy.capacity(RATE)
    step = strategy.decide(None, T0, RATE, capacity + 1)
    assert not step.decision.allowed
    assert step.decision.retry_after_ms == NEVER
    assert step.decision.never
    assert math.isinf(step.decision.wait_ms)
    # The full capacity at once is fine on a fresh key.
    assert strategy.decide(None, T0, RATE, capacity).decision.allowed


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
@pytest.mark.parametrize("cost", [0, -1, -100, 1.0, 1.5, True, "1", None])
def test_bad_cost_raises_value_error(strategy: Strategy, cost: object) -> None:
    with pytest.raises(ValueError, match="cost"):
        strategy.decide(None, T0, RATE, cost)  # type: ignore[arg-type]


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
@pytest.mark.parametrize("rate", [RATE, Rate()], ids=["limited", "unlimited"])
async def test_the_seed_protocol_rejects_a_bad_cost_whatever_the_rate(
    strategy: Strategy, rate: Rate
) -> None:
    # As decide() does: cost <= 0 is a ValueError even when the rate limits nothing.
    async with InMemoryBackend()() as backend:
        with pytest.raises(ValueError, match="cost"):
            await strategy("k", rate, backend, 0)


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
def test_unlimited_rate_admits_everything_and_stores_nothing(strategy: Strategy) -> None:
    step = strategy.decide(None, T0, Rate(), 10**9)
    assert step.decision.allowed
    assert not step.write


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (TokenBucketStrategy, {"burst_size": 0}),
        (TokenBucketStrategy, {"burst_size": -3}),
        (TokenBucketStrategy, {"burst_size": 1.5}),
        (TokenBucketStrategy, {"burst_size": True}),
        (TokenBucketWithDebtStrategy, {"burst_size": 0}),
        (TokenBucketWithDebtStrategy, {"max_debt": -1}),
        (TokenBucketWithDebtStrategy, {"max_debt": 0.5}),
        (LeakyBucketWithQueueStrategy, {"queue_size": 0}),
        (LeakyBucketWithQueueStrategy, {"queue_size": "5"}),
        (GCRAStrategy, {"burst": 0}),
        (GCRAStrategy, {"burst": -2}),
    ],
)
def test_bad_parameters_fail_at_construction(
    factory: type[Strategy], kwargs: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        factory(**kwargs)


def test_zero_debt_is_allowed() -> None:
    assert TokenBucketWithDebtStrategy(max_debt=0).capacity(RATE) == 5


def test_burst_too_large_to_count_exactly_is_rejected() -> None:
    strategy = TokenBucketStrategy(burst_size=2**50)
    with pytest.raises(ValueError, match="too large"):
        strategy.decide(None, T0, Rate.parse("1/h"), 1)


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
def test_strategies_are_frozen_dataclasses_with_short_names(strategy: Strategy) -> None:
    with pytest.raises(AttributeError):
        strategy.name = "x"  # type: ignore[misc]
    assert strategy.storage_suffix() == strategy.name
    assert hash(strategy) == hash(type(strategy)(**strategy.__dict__))


@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
def test_corrupt_state_counts_as_fresh(strategy: Strategy) -> None:
    for bad in [(1,), (1, 2, 3, 4, 5)]:
        assert strategy.decide(bad, T0, RATE, strategy.capacity(RATE)).decision.allowed


def test_state_text_round_trip() -> None:
    assert encode_state((1, -2, 30)) == "1,-2,30"
    assert decode_state("1,-2,30") == (1, -2, 30)
    assert decode_state(b"4,5") == (4, 5)
    assert decode_state(None) is None
    assert decode_state("") is None
    assert decode_state("1,x") is None


def test_default_strategy_is_fixed_window() -> None:
    assert isinstance(default_strategy, FixedWindowStrategy)
    assert [s.name for s in BUILTIN_STRATEGIES] == [
        "fw",
        "swl",
        "swc",
        "tb",
        "tbd",
        "lb",
        "lbq",
        "gcra",
    ]


# -- fixed window -----------------------------------------------------------------


def test_fixed_window_is_aligned_to_the_clock_and_reports_reset() -> None:
    fw = FixedWindowStrategy()
    step = fw.decide(None, T0 + 300, RATE, 1)
    d = step.decision
    assert (d.allowed, d.limit, d.remaining, d.reset_ms, d.window_ms) == (True, 5, 4, 700, 1000)
    assert step.state == (T0, 1)
    assert step.ttl_ms == 700
    _, state = run(fw, [T0 + 300] * 5)
    d = fw.decide(state, T0 + 999, RATE, 1).decision
    assert (d.allowed, d.remaining, d.retry_after_ms, d.reset_ms) == (False, 0, 1, 1)
    assert fw.decide(state, T0 + 1000, RATE, 1).decision.allowed


def test_fixed_window_allows_twice_the_limit_across_a_boundary() -> None:
    fw = FixedWindowStrategy()
    allowed, _ = run(fw, [T0 + 999] * 5 + [T0 + 1000] * 5)
    assert allowed == [True] * 10


def test_fixed_window_honours_a_window_ahead_of_the_clock() -> None:
    fw = FixedWindowStrategy()
    _, state = run(fw, [T0 + 1500] * 5)  # written by a host whose clock is ahead
    d = fw.decide(state, T0 + 900, RATE, 1).decision
    assert not d.allowed
    assert d.retry_after_ms == 1100
    assert fw.decide(state, T0 + 2000, RATE, 1).decision.allowed


# -- sliding windows --------------------------------------------------------------


def test_sliding_log_adds_costs_exactly() -> None:
    swl = SlidingWindowLogStrategy()
    rate = Rate.parse("20/m")
    state: State | None = None
    for cost, t in ((5, 0), (10, 1), (3, 2)):
        step = swl.decide(state, T0 + t, rate, cost)
        assert step.decision.allowed
        state = step.state
    assert not swl.decide(state, T0 + 3, rate, 3).decision.allowed
    assert swl.decide(state, T0 + 3, rate, 2).decision.allowed


def test_sliding_log_retry_waits_for_enough_old_entries_to_leave() -> None:
    swl = SlidingWindowLogStrategy()
    rate = Rate(limit=10, seconds=1)
    state: State | None = None
    for cost, t in ((2, 0), (3, 100), (5, 200)):
        state = swl.decide(state, T0 + t, rate, cost).state
    assert state == (T0, 2, T0 + 100, 3, T0 + 200, 5)
    d = swl.decide(state, T0 + 300, rate, 4).decision
    # 2 leaves at +1000 (not enough), 3 more at +1100: 4 fit then.
    assert d.retry_after_ms == 800
    assert d.reset_ms == 900
    assert d.remaining == 0
    # An entry leaves exactly W after it was admitted; old entries are pruned on write.
    step = swl.decide(state, T0 + 1000, rate, 2)
    assert step.decision.allowed
    assert step.state == (T0 + 100, 3, T0 + 200, 5, T0 + 1000, 2)


def test_sliding_log_merges_same_millisecond_and_keeps_order_under_skew() -> None:
    swl = SlidingWindowLogStrategy()
    state = swl.decide(None, T0 + 50, RATE, 1).state
    state = swl.decide(state, T0 + 50, RATE, 1).state
    assert state == (T0 + 50, 2)
    state = swl.decide(state, T0 + 10, RATE, 1).state  # clock behind: merged, stays sorted
    assert state == (T0 + 50, 3)


def test_sliding_counter_weights_the_previous_window() -> None:
    swc = SlidingWindowCounterStrategy()
    _, state = run(swc, [T0 + 500] * 5)
    assert state == (T0, 0, 5)
    # At 25% into the next window the previous 5 count as 3.75: one more unit fits.
    step = swc.decide(state, T0 + 1250, RATE, 1)
    assert step.decision.allowed
    assert step.state == (T0 + 1000, 5, 1)
    assert step.decision.remaining == 0
    d = swc.decide(step.state, T0 + 1250, RATE, 1).decision
    assert not d.allowed
    # 5 x (1000 - e)/1000 + 2 <= 5  <=>  e >= 400.
    assert d.retry_after_ms == 150


def test_sliding_counter_retry_into_the_next_window() -> None:
    swc = SlidingWindowCounterStrategy()
    _, state = run(swc, [T0 + 100] * 5)
    d = swc.decide(state, T0 + 100, RATE, 2).decision
    # Next window starts in 900 ms; then 5 x (1000 - e)/1000 + 2 <= 5 at e = 400.
    assert d.retry_after_ms == 1300
    assert d.reset_ms == 1900


def test_sliding_counter_does_not_count_rejections() -> None:
    # The seed counted rejected hits: 20 req/s offered against 5/s got 5 through in 4 s.
    swc = SlidingWindowCounterStrategy()
    allowed, _ = run(swc, [T0 + i * 50 for i in range(80)])
    assert sum(allowed) >= 15  # ideal 20; the seed admitted 5


# -- buckets ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", BUCKETS, ids=ids)
def test_buckets_refill_one_unit_per_interval(strategy: Strategy) -> None:
    capacity = strategy.capacity(RATE)
    _, state = run(strategy, [T0] * capacity)
    d = strategy.decide(state, T0, RATE, 1).decision
    assert d.retry_after_ms == 200  # 5 per second: one unit every 200 ms
    assert d.reset_ms == capacity * 200
    allowed, _ = run(strategy, [T0 + 200 * i for i in range(1, 11)], state=state)
    assert allowed == [True] * 10


@pytest.mark.parametrize("capacity", [1, 5, 9])
def test_all_buckets_and_gcra_decide_alike_for_the_same_capacity(capacity: int) -> None:
    same = [
        TokenBucketStrategy(burst_size=capacity),
        TokenBucketWithDebtStrategy(burst_size=1, max_debt=capacity - 1),
        LeakyBucketWithQueueStrategy(queue_size=capacity),
        GCRAStrategy(burst=capacity),
    ]
    times = [T0 + t for t in (0, 0, 0, 1, 7, 150, 151, 420, 421, 421, 999, 1500, 1500, 1501)]
    costs = [1, 2, 1, 3, 1, 1, 2, 1, 1, 4, 2, 5, 1, 1]
    outcomes = []
    for strategy in same:
        state: State | None = None
        seen = []
        for now, cost in zip(times, costs, strict=True):
            step = strategy.decide(state, now, RATE, cost)
            d = step.decision
            seen.append((d.allowed, d.remaining, d.reset_ms, d.retry_after_ms))
            if step.write:
                state = step.state
        outcomes.append(seen)
    assert all(o == outcomes[0] for o in outcomes)


def test_token_bucket_with_debt_admits_burst_plus_debt_then_repays() -> None:
    tbd = TokenBucketWithDebtStrategy(burst_size=5, max_debt=3)
    allowed, state = run(tbd, [T0] * 9)
    assert allowed == [True] * 8 + [False]
    d = tbd.decide(state, T0, RATE, 1).decision
    assert d.retry_after_ms == 200


def test_bucket_clock_behind_the_writer_does_not_drain_twice() -> None:
    tb = TokenBucketStrategy()
    _, state = run(tb, [T0 + 1000] * 5)  # written at +1000 by a clock that is ahead
    d = tb.decide(state, T0, RATE, 1).decision  # this host says +0
    assert not d.allowed
    assert d.retry_after_ms == 1200  # 1000 ms of skew, then one interval
    assert tb.decide(state, T0 + 1200, RATE, 1).decision.allowed
    assert not tb.decide(state, T0 + 1199, RATE, 1).decision.allowed


# -- through a backend --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
async def test_through_inmemory_with_an_injected_clock(strategy: Strategy) -> None:
    now = [T0]
    backend = InMemoryBackend(clock=lambda: now[0])
    async with backend():
        capacity = strategy.capacity(RATE)
        for _ in range(capacity):
            assert await strategy("user:1", RATE, backend) == 0.0
        wait = await strategy("user:1", RATE, backend)
        # Sliding counter waits can reach into the next window (up to 2 W).
        assert 0 < wait <= (2 if strategy.name == "swc" else 1) * RATE.expire
        assert await strategy("user:2", RATE, backend) == 0.0  # keys are independent
        now[0] += int(wait) - 1
        assert await strategy("user:1", RATE, backend) > 0
        now[0] += 1
        assert await strategy("user:1", RATE, backend) == 0.0
        assert math.isinf(await strategy("user:3", RATE, backend, cost=capacity + 1))
        assert await strategy("user:3", Rate(), backend, cost=10**6) == 0.0
        with pytest.raises(ValueError, match="cost"):
            await strategy("user:3", RATE, backend, cost=0)


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", CONFIGURED, ids=ids)
async def test_backend_decide_with_now_ms(strategy: Strategy) -> None:
    backend = InMemoryBackend()
    async with backend():
        capacity = strategy.capacity(RATE)
        decisions = [
            await backend.decide("k", strategy, RATE, 1, now_ms=T0) for _ in range(capacity + 1)
        ]
        assert [d.allowed for d in decisions] == [True] * capacity + [False]
        retry = decisions[-1].retry_after_ms
        assert not (await backend.decide("k", strategy, RATE, 1, now_ms=T0 + retry - 1)).allowed
        assert (await backend.decide("k", strategy, RATE, 1, now_ms=T0 + retry)).allowed


@pytest.mark.asyncio
async def test_get_stat_matches_the_seed() -> None:
    now = [T0]
    backend = InMemoryBackend(clock=lambda: now[0])
    rate = Rate.parse("10/s")
    async with backend():
        fw = FixedWindowStrategy()
        stat = await fw.get_stat("k", rate, backend)
        assert (stat.hits_remaining, stat.wait_time) == (10, 0.0)
        for _ in range(3):
            await fw("k", rate, backend)
        assert (await fw.get_stat("k", rate, backend)).hits_remaining == 7
        for _ in range(8):
            await fw("k", rate, backend)
        stat = await fw.get_stat("k", rate, backend)
        assert stat.hits_remaining == 0
        assert stat.wait_time > 0
        assert stat.rate == rate
        assert stat.key == "k"

        tb = TokenBucketStrategy(burst_size=15)
        assert (await tb.get_stat("t", rate, backend)).hits_remaining == 15
        tbd = TokenBucketWithDebtStrategy(max_debt=5)
        assert (await tbd.get_stat("d", rate, backend)).hits_remaining == 15
        lb = LeakyBucketStrategy()
        await lb("l", rate, backend, cost=4)
        assert (await lb.get_stat("l", rate, backend)).hits_remaining == 6
        unlimited = await lb.get_stat("l", Rate(), backend)
        assert math.isinf(unlimited.hits_remaining)
        assert unlimited.wait_time == 0.0
        # A stat records no hit.
        assert (await lb.get_stat("l", rate, backend)).hits_remaining == 6


def test_debt_bucket_takes_max_debt_first_as_the_readme_documents() -> None:
    strategy = TokenBucketWithDebtStrategy(5)
    assert strategy.max_debt == 5
    assert strategy.burst_size is None
    assert strategy.capacity(RATE) == RATE.limit + 5
