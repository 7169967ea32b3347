"""Property tests of the strategy transitions over generated (time, cost) sequences.

Bounds checked (W = window, L = limit, C = capacity of a bucket strategy):

- fixed window: at most L units per aligned window;
- sliding log: at most L units in any window of length W (admissions t, t' with
  t' - t < W count together);
- sliding counter: at most L units per aligned window, and at most 2L - 1 in any
  window of length W. Proof sketch: units admitted in the part of window k-1 after
  offset e are at most c (its count); units in window k before offset e are at most
  L - c (W - e + 1) / W (the weighted check at their last admission, at offset at
  most e - 1); the sum is at most L + c (e - 1) / W <= L + L (W - 2) / W < 2L;
- buckets and GCRA: units admitted at times in [t, t'] are at most
  C + (t' - t) L / W (what the bucket held, plus what refilled meanwhile).

And for every strategy: a rejected request leaves the state unchanged; retry-after
is exact (admitted after exactly that wait, not 1 ms earlier); reset is exact (the
full capacity fits after exactly that long, not 1 ms earlier); remaining is exact
(that many units fit right now, one more does not).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traffik.decisions import NEVER
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    GCRAStrategy,
    LeakyBucketWithQueueStrategy,
    State,
    Strategy,
    TokenBucketStrategy,
    TokenBucketWithDebtStrategy,
)

STRATEGIES: tuple[Strategy, ...] = (
    *BUILTIN_STRATEGIES,
    TokenBucketStrategy(burst_size=3),
    TokenBucketStrategy(burst_size=12),
    TokenBucketWithDebtStrategy(burst_size=2, max_debt=3),
    LeakyBucketWithQueueStrategy(queue_size=2),
    GCRAStrategy(burst=9),
)

rates = st.builds(
    lambda limit, window: Rate(limit=limit, milliseconds=window),
    st.integers(1, 12),
    st.one_of(st.integers(1, 50), st.integers(51, 5_000)),
)


@st.composite
def scenarios(
    draw: st.DrawFn, backwards: bool = False
) -> tuple[Strategy, Rate, list[tuple[int, int]]]:
    """A strategy, a rate and (time, cost) events; ``backwards``: the clock may step back."""
    strategy = draw(st.sampled_from(STRATEGIES))
    rate = draw(rates)
    window = rate.expire
    capacity = strategy.capacity(rate)
    start = draw(st.integers(0, 10**12))
    gaps = st.one_of(
        st.just(0),
        st.integers(0, 3),
        st.integers(0, max(1, window // rate.limit)),
        st.integers(0, 2 * window),
        # Another host's clock behind the last writer's (skew), by a little or a window.
        *((st.integers(-3, 0), st.integers(-window, 0)) if backwards else ()),
    )
    costs = st.one_of(st.just(1), st.integers(1, capacity), st.integers(1, capacity + 2))
    steps = draw(st.lists(st.tuples(gaps, costs), min_size=1, max_size=60))
    now = start
    events = []
    for gap, cost in steps:
        now += gap
        events.append((now, cost))
    return strategy, rate, events


def replay(
    strategy: Strategy, rate: Rate, events: list[tuple[int, int]]
) -> list[tuple[int, int, State | None, bool]]:
    """(now, cost, state before, allowed) for each event."""
    state: State | None = None
    out = []
    for now, cost in events:
        step = strategy.decide(state, now, rate, cost)
        out.append((now, cost, state, step.decision.allowed))
        if step.write:
            state = step.state
    return out


PROPERTY_SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(scenarios())
def test_never_admits_more_than_capacity_plus_refill(
    scenario: tuple[Strategy, Rate, list[tuple[int, int]]],
) -> None:
    strategy, rate, events = scenario
    limit, window = rate.limit, rate.expire
    admitted = [(now, cost) for now, cost, _, ok in replay(strategy, rate, events) if ok]
    if strategy.name == "fw" or strategy.name == "swc":
        per_window: dict[int, int] = {}
        for now, cost in admitted:
            per_window[now // window] = per_window.get(now // window, 0) + cost
        assert max(per_window.values(), default=0) <= limit
    for i, (t_i, _) in enumerate(admitted):
        total = 0
        for t_j, cost in admitted[i:]:
            total += cost
            span = t_j - t_i
            if strategy.name == "swl" and span < window:
                assert total <= limit
            elif strategy.name == "swc" and span < window:
                assert total <= 2 * limit - 1
            elif strategy.name in {"tb", "tbd", "lb", "lbq", "gcra"}:
                capacity = strategy.capacity(rate)
                assert total * window <= capacity * window + span * limit


@PROPERTY_SETTINGS
@given(scenarios(backwards=True))
def test_rejections_leave_state_unchanged_and_retry_after_is_exact(
    scenario: tuple[Strategy, Rate, list[tuple[int, int]]],
) -> None:
    strategy, rate, events = scenario
    capacity = strategy.capacity(rate)
    for now, cost, state, _ in replay(strategy, rate, events):
        step = strategy.decide(state, now, rate, cost)
        decision = step.decision
        if decision.allowed:
            assert decision.retry_after_ms == 0
            continue
        assert not step.write
        assert step.state == state
        retry = decision.retry_after_ms
        if cost > capacity:
            assert retry == NEVER
            continue
        assert retry >= 1
        # The state is an immutable tuple: trying later times does not change it.
        assert strategy.decide(state, now + retry, rate, cost).decision.allowed
        assert not strategy.decide(state, now + retry - 1, rate, cost).decision.allowed


@PROPERTY_SETTINGS
@given(scenarios(backwards=True))
def test_remaining_and_reset_are_exact(
    scenario: tuple[Strategy, Rate, list[tuple[int, int]]],
) -> None:
    strategy, rate, events = scenario
    capacity = strategy.capacity(rate)
    for now, cost, state, _ in replay(strategy, rate, events):
        step = strategy.decide(state, now, rate, cost)
        after = step.state if step.write else state
        d = step.decision
        assert d.limit == capacity
        assert d.window_ms == rate.expire
        assert 0 <= d.remaining <= capacity
        if d.remaining:
            assert strategy.decide(after, now, rate, d.remaining).decision.allowed
        if d.remaining < capacity:
            assert not strategy.decide(after, now, rate, d.remaining + 1).decision.allowed
        assert d.reset_ms >= 0
        assert strategy.decide(after, now + d.reset_ms, rate, capacity).decision.allowed
        if d.reset_ms:
            assert not strategy.decide(after, now + d.reset_ms - 1, rate, capacity).decision.allowed
        # The stored state is kept at least until the quota is fully restored.
        if step.write:
            assert step.ttl_ms >= d.reset_ms


@PROPERTY_SETTINGS
@given(st.data())
def test_equal_capacity_buckets_and_gcra_make_identical_decisions(data: st.DataObject) -> None:
    rate = data.draw(rates)
    capacity = data.draw(st.integers(1, 15))
    family = [
        TokenBucketStrategy(burst_size=capacity),
        TokenBucketWithDebtStrategy(burst_size=1, max_debt=capacity - 1),
        LeakyBucketWithQueueStrategy(queue_size=capacity),
        GCRAStrategy(burst=capacity),
    ]
    if capacity == rate.limit:
        family.append(BUILTIN_STRATEGIES[5])  # LeakyBucketStrategy
    _, _, events = data.draw(scenarios())
    results = []
    for strategy in family:
        state: State | None = None
        seen = []
        for now, cost in events:
            step = strategy.decide(state, now, rate, cost)
            seen.append(step.decision)
            if step.write:
                state = step.state
        results.append(seen)
    assert all(r == results[0] for r in results)


# A redeploy can lower a limit or a burst while states written under the old
# configuration are still stored under the same key (the key names the strategy, not
# its parameters). Decisions on such a state must stay sane.
RECONFIGURABLE: tuple[tuple[Strategy, Strategy], ...] = (
    *((s, s) for s in BUILTIN_STRATEGIES),
    (TokenBucketStrategy(burst_size=12), TokenBucketStrategy(burst_size=2)),
    (TokenBucketWithDebtStrategy(max_debt=9), TokenBucketWithDebtStrategy(max_debt=0)),
    (LeakyBucketWithQueueStrategy(queue_size=12), LeakyBucketWithQueueStrategy(queue_size=1)),
    (GCRAStrategy(burst=12), GCRAStrategy(burst=2)),
)


@PROPERTY_SETTINGS
@given(st.data())
def test_a_state_written_under_another_configuration_gives_sane_decisions(
    data: st.DataObject,
) -> None:
    old, new = data.draw(st.sampled_from(RECONFIGURABLE))
    window = data.draw(st.integers(1, 5_000))
    old_rate = Rate(limit=data.draw(st.integers(2, 12)), milliseconds=window)
    # The window may change too ("10/s" redeployed as "5/m", or the other way).
    new_window = data.draw(st.one_of(st.just(window), st.integers(1, 5_000)))
    new_rate = Rate(limit=data.draw(st.integers(1, old_rate.limit - 1)), milliseconds=new_window)
    now = data.draw(st.integers(0, 10**12))
    state: State | None = None
    for _ in range(data.draw(st.integers(1, old.capacity(old_rate)))):
        step = old.decide(state, now, old_rate, 1)
        if step.write:
            state = step.state
    now += data.draw(st.one_of(st.just(0), st.integers(0, window)))
    capacity = new.capacity(new_rate)
    for cost in (1, capacity):
        d = new.decide(state, now, new_rate, cost).decision
        where = f"{old!r} -> {new!r}, {old_rate} -> {new_rate}, state {state}: {d}"
        assert 0 <= d.remaining <= capacity, where
        assert d.reset_ms >= 0, where
        if not d.allowed:
            assert d.retry_after_ms >= 1, where
            assert new.decide(state, now + d.retry_after_ms, new_rate, cost).decision.allowed
            # Exact (not 1 ms early) while the window is kept; after a window change a
            # stored window start can be off the new grid, and waits then err long.
            assert (
                new_window != window
                or not new.decide(
                    state, now + d.retry_after_ms - 1, new_rate, cost
                ).decision.allowed
            )
