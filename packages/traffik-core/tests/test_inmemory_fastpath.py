"""InMemoryBackend's fixed-window fast path against the pure strategy and the generic path.

``InMemoryBackend.decide`` inlines ``FixedWindowStrategy.decide`` when the strategy is
exactly that class. Two differential checks over generated sequences:

- decisions equal those of the pure ``FixedWindowStrategy().decide`` threaded over a
  dict of states, for several keys on a clock that never steps back (a state past its
  TTL then decides like no state), and for one key on a clock that steps back (the
  reference forgets a state read at or after its expiry, as the backend does);
- a backend on the fast path and one on the generic path (a subclass of the strategy,
  so the exact-type check fails) return the same decisions and leave the same store:
  values, expiries, expiry buckets and LRU order, under a small ``max_keys`` and with
  peek, get, set of raw state text, delete, expire and reset interleaved.
"""

from __future__ import annotations

import asyncio
import typing
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import NEVER, Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy, State
from traffik.strategies._base import UNLIMITED_DECISION


@dataclass(frozen=True)
class GenericFixedWindow(FixedWindowStrategy):
    """The same strategy under another class: InMemoryBackend takes its generic path."""


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


START = 1_000_000_000
KEYS = ("a", "b", "c", "d")
FEW_KEYS = ("a", "b", "c")
# Stored state text of the wrong length, with a window start in the future.
ODD = [f"{START + 10**9}", f"{START + 10**9},1,2"]

rates = st.builds(
    lambda limit, window: Rate(limit=limit, milliseconds=window),
    st.integers(1, 6),
    st.one_of(st.integers(1, 50), st.integers(51, 3_000)),
)
# Mostly small steps forward; sometimes a jump past several windows or a step back.
steps = st.one_of(st.integers(0, 40), st.integers(-2_500, 2_500), st.integers(-50_000, 50_000))
costs = st.integers(1, 8)


def same(a: Decision, b: Decision) -> bool:
    """Equal fields of equal types (``True == 1``, so compare the types as well)."""
    return type(a) is type(b) and a == b and list(map(type, a)) == list(map(type, b))


forward = st.one_of(st.integers(0, 40), st.integers(0, 2_500), st.integers(0, 50_000))


@settings(max_examples=300, deadline=None)
@given(rate=rates, events=st.lists(st.tuples(forward, costs, st.sampled_from(KEYS)), max_size=60))
def test_fast_path_matches_the_pure_strategy(
    rate: Rate, events: list[tuple[int, int, str]]
) -> None:
    # With a clock that never steps back, a state past its TTL decides like no state,
    # so the backend must decide exactly as the strategy threaded over plain states.
    strategy = FixedWindowStrategy()
    clock = Clock(START)
    backend = InMemoryBackend(namespace="fp", clock=clock)
    states: dict[str, State | None] = {}

    async def run() -> None:
        async with backend():
            for step, cost, key in events:
                clock.now += step
                got = await backend.decide(key, strategy, rate, cost)
                new, _ttl, want, write = strategy.decide(states.get(key), clock.now, rate, cost)
                if write:
                    states[key] = new
                assert same(got, want), (key, clock.now, cost, got, want)
                peeked = await backend.peek(key, strategy, rate)
                assert same(peeked, strategy.peek(states.get(key), clock.now, rate))

    asyncio.run(run())


@settings(max_examples=300, deadline=None)
@given(rate=rates, events=st.lists(st.tuples(steps, costs), max_size=60))
def test_fast_path_matches_the_pure_strategy_when_the_clock_steps_back(
    rate: Rate, events: list[tuple[int, int]]
) -> None:
    # A state read at or after its expiry is forgotten (the TTL reclaims it), so a clock
    # stepping back afterwards finds no state: the reference forgets it at the same reads.
    strategy = FixedWindowStrategy()
    clock = Clock(START)
    backend = InMemoryBackend(namespace="back", clock=clock)
    state: State | None = None
    expires = 0

    async def run() -> None:
        nonlocal state, expires
        async with backend():
            for step, cost in events:
                clock.now += step
                if expires <= clock.now:
                    state = None
                got = await backend.decide("k", strategy, rate, cost)
                new, ttl, want, write = strategy.decide(state, clock.now, rate, cost)
                if write:
                    state, expires = new, clock.now + ttl
                assert same(got, want), (clock.now, cost, got, want)

    asyncio.run(run())


Op = tuple[typing.Any, ...]

# Repeats within one millisecond are common under load; two rates may share a key.
ticks = st.one_of(st.just(0), steps)
which = st.sampled_from([0, 0, 0, 1])

ops = st.one_of(
    st.tuples(st.just("decide"), st.sampled_from(FEW_KEYS), ticks, costs, which),
    st.tuples(st.just("decide"), st.sampled_from(FEW_KEYS), ticks, costs, which),
    st.tuples(st.just("decide"), st.sampled_from(FEW_KEYS), ticks, costs, which),
    st.tuples(st.just("decide_at"), st.sampled_from(FEW_KEYS), ticks, costs, which),
    st.tuples(st.just("peek"), st.sampled_from(FEW_KEYS), which),
    st.tuples(st.just("get"), st.sampled_from(FEW_KEYS)),
    st.tuples(
        st.just("set"),
        st.sampled_from(FEW_KEYS),
        st.sampled_from(["", "x", "1,2", "-5,2", f"{START},1", f"{START + 10**9},9", *ODD]),
        st.sampled_from([None, 0.001, 1.0, 5.0]),
    ),
    st.tuples(st.just("delete"), st.sampled_from(FEW_KEYS)),
    st.tuples(st.just("expire"), st.sampled_from(FEW_KEYS), st.sampled_from([0.001, 0.5, 3.0])),
    st.tuples(st.just("reset")),
)


def snapshot(backend: InMemoryBackend) -> tuple[typing.Any, ...]:
    store = backend.connection
    assert store is not None
    buckets = {b: keys for b, keys in backend._buckets.items() if keys}
    return list(store.items()), buckets, sorted(backend._bucket_heap)


@settings(max_examples=300, deadline=None)
@given(
    two_rates=st.tuples(rates, rates),
    max_keys=st.integers(1, 5),
    script=st.lists(ops, max_size=60),
)
def test_fast_path_matches_the_generic_path(
    two_rates: tuple[Rate, Rate], max_keys: int, script: list[Op]
) -> None:
    clock = Clock(START)
    fast = InMemoryBackend(namespace="x", clock=clock, max_keys=max_keys)
    slow = InMemoryBackend(namespace="x", clock=clock, max_keys=max_keys)
    pairs = ((fast, FixedWindowStrategy()), (slow, GenericFixedWindow()))

    async def run() -> None:
        async with fast(), slow():
            for op in script:
                results = []
                if op[0] in ("decide", "decide_at"):
                    _, key, step, cost, rate_index = op
                    rate = two_rates[rate_index]
                    if op[0] == "decide":
                        clock.now += step
                        for backend, strategy in pairs:
                            results.append(await backend.decide(key, strategy, rate, cost))
                    else:  # an explicit now_ms, away from the backend's clock
                        at = clock.now + step
                        for backend, strategy in pairs:
                            results.append(
                                await backend.decide(key, strategy, rate, cost, now_ms=at)
                            )
                    assert same(results[0], results[1]), (op, results)
                elif op[0] == "peek":
                    for backend, strategy in pairs:
                        results.append(await backend.peek(op[1], strategy, two_rates[op[2]]))
                    assert same(results[0], results[1]), (op, results)
                elif op[0] == "reset":
                    for backend, _ in pairs:
                        await backend.reset()
                else:
                    for backend, strategy in pairs:
                        skey = backend.state_key(op[1], strategy)
                        if op[0] == "get":
                            results.append(await backend.get(skey))
                        elif op[0] == "set":
                            await backend.set(skey, op[2], expire=op[3])
                        elif op[0] == "delete":
                            results.append(await backend.delete(skey))
                        else:
                            results.append(await backend.expire(skey, op[2]))
                    assert results[:1] == results[1:], (op, results)
                assert snapshot(fast) == snapshot(slow), op
                assert len(fast) <= max_keys

    asyncio.run(run())


class MyInt(int):
    pass


@pytest.mark.asyncio
@pytest.mark.parametrize("cost", [0, -1, True, 1.0, "1"])
async def test_bad_costs_fail_as_on_the_generic_path(cost: typing.Any) -> None:
    backend = InMemoryBackend(namespace="bad")
    async with backend():
        for strategy in (FixedWindowStrategy(), GenericFixedWindow()):
            with pytest.raises(ConfigurationError):
                await backend.decide("k", strategy, Rate(limit=3, seconds=1), cost)
        assert len(backend) == 0


@pytest.mark.asyncio
async def test_unlimited_rate_and_int_subclass_cost() -> None:
    clock = Clock(START)
    backend = InMemoryBackend(namespace="u", clock=clock)
    async with backend():
        got = await backend.decide("k", FixedWindowStrategy(), Rate(), 5)
        assert got is UNLIMITED_DECISION
        assert len(backend) == 0
        rate = Rate(limit=3, seconds=1)
        for want_allowed in (True, False):
            decision = await backend.decide("k", FixedWindowStrategy(), rate, MyInt(2))
            assert decision.allowed is want_allowed
        never = await backend.decide("k", FixedWindowStrategy(), rate, 4)
        assert never.retry_after_ms == NEVER
        assert never.remaining == 1


@pytest.mark.asyncio
async def test_the_fast_path_does_not_call_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> typing.NoReturn:
        raise AssertionError("FixedWindowStrategy.decide was called: the fast path was not taken")

    clock = Clock(START)
    backend = InMemoryBackend(namespace="f", clock=clock)
    async with backend():
        monkeypatch.setattr(FixedWindowStrategy, "decide", refuse)
        rate = Rate(limit=2, seconds=1)
        decisions = [await backend.decide("k", FixedWindowStrategy(), rate) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1] == Decision(False, 2, 0, 1000, 1000, 1000, "default")


@pytest.mark.asyncio
async def test_full_window_rejections_of_other_rates_in_the_same_millisecond() -> None:
    # Same millisecond, same reset_ms: the reused rejection must still match its rate.
    clock = Clock(START + 990)  # 10 ms left in both a 10 ms and a 1 s window
    backend = InMemoryBackend(namespace="m", clock=clock)
    rates = [Rate(limit=2, milliseconds=10), Rate(limit=2, seconds=1), Rate(limit=3, seconds=1)]
    async with backend():
        for key, rate in zip("abc", rates, strict=True):
            for _ in range(rate.limit):
                assert (await backend.decide(key, FixedWindowStrategy(), rate)).allowed
        for _ in range(2):
            for key, rate in zip("abc", rates, strict=True):
                got = await backend.decide(key, FixedWindowStrategy(), rate)
                want = Decision(False, rate.limit, 0, 10, 10, rate.expire, "default")
                assert same(got, want), (key, rate, got)
