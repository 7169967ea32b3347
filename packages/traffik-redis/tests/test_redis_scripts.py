"""The Lua scripts decide exactly as the Python reference, step by step.

Hypothesis drives one key through generated (time, cost) sequences: time jumps
forwards (past the state's TTL too) and backwards, costs run from 1 to far past the
capacity. Each step runs in a MULTI with the script, GET, PTTL and PERSIST:
keys do not expire inside a transaction, so PTTL reads the TTL the script set
(less the microseconds since), and PERSIST keeps the state for the next step: a
state left over past its TTL is fed to the script just as the reference sees it.
"""

from __future__ import annotations

import re
import typing

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from traffik.decisions import NEVER, Decision
from traffik.rates import MAX_EXACT_PRODUCT, Rate
from traffik.redis import RedisBackend
from traffik.redis._scripts import SCRIPT_OF, _read, decision_args, to_decision
from traffik.strategies import (
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
    encode_state,
)
from traffik.testing.servers import RedisServer

pytestmark = pytest.mark.redis

STRATEGIES: list[Strategy] = [
    FixedWindowStrategy(),
    SlidingWindowLogStrategy(),
    SlidingWindowCounterStrategy(),
    TokenBucketStrategy(),
    TokenBucketStrategy(burst_size=7),
    TokenBucketWithDebtStrategy(max_debt=3),
    TokenBucketWithDebtStrategy(burst_size=2, max_debt=2),
    LeakyBucketStrategy(),
    LeakyBucketWithQueueStrategy(queue_size=5),
    GCRAStrategy(),
    GCRAStrategy(burst=4),
]
IDS = [f"{s.name}-{i}" for i, s in enumerate(STRATEGIES)]

#: A clock step: milliseconds, or a wait named by the previous decision ("retry-1": 1 ms less).
Delta: typing.TypeAlias = "int | str"


@st.composite
def _rates(draw: st.DrawFn) -> Rate:
    window = draw(
        st.one_of(
            st.sampled_from([1, 2, 7, 100, 999, 1000, 60_000, 3_600_000, 86_400_000]),
            st.integers(1, 10**9),
        )
    )
    limit = draw(st.one_of(st.integers(1, 12), st.integers(1, 10**6)))
    # Leave room for the largest capacity above (burst 7, debt 3) within 2**53 - 1.
    limit = max(1, min(limit, MAX_EXACT_PRODUCT // (window * 16)))
    return Rate(limit=limit, milliseconds=window)


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[Rate, int, list[tuple[Delta, int]]]:
    rate = draw(_rates())
    window = rate.expire
    start = draw(st.integers(0, 2**42))
    delta = st.one_of(
        st.just(0),
        st.integers(0, 3),
        st.integers(0, max(1, window // max(1, rate.limit))),
        st.integers(0, 3 * window),  # past the TTL, with the state still there
        st.integers(-window, 0),  # the clock going backwards
        st.integers(-5, 0),
        # Relative to the previous decision: the boundaries where off-by-one errors live.
        st.sampled_from(["retry", "retry-1", "reset", "reset-1"]),
    )
    cost = st.one_of(
        st.just(1),
        st.integers(1, rate.limit + 10),
        st.integers(1, 2**70),  # never admissible: capped before Lua, NEVER either way
    )
    steps = draw(st.lists(st.tuples(delta, cost), min_size=1, max_size=25))
    return rate, start, steps


def _advance(delta: Delta, previous: Decision | None) -> int:
    """Milliseconds to move the clock: ``delta``, or a wait the previous decision named."""
    if isinstance(delta, int):
        return delta
    if previous is None:
        return 0
    name, _, minus = delta.partition("-")
    wait = previous.retry_after_ms if name == "retry" else previous.reset_ms
    return max(0, wait) - (1 if minus else 0)


async def _run_lua(
    backend: RedisBackend, skey: str, strategy: Strategy, rate: Rate, now: int, cost: int
) -> tuple[typing.Any, ...]:
    client = backend.connection
    assert client is not None
    script = backend._scripts[SCRIPT_OF[type(strategy)]]  # type: ignore[index]
    async with client.pipeline(transaction=True) as pipe:
        pipe.evalsha(script.sha, 1, skey, *decision_args(strategy, rate, cost, now))
        pipe.get(skey)
        pipe.pttl(skey)
        pipe.persist(skey)
        return tuple(await pipe.execute())


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=_scenarios())
async def test_lua_decides_as_the_python_reference(
    redis_server: RedisServer,
    strategy: Strategy,
    scenario: tuple[Rate, int, list[tuple[Delta, int]]],
) -> None:
    rate, now, steps = scenario
    backend = RedisBackend(redis_server.url, namespace="diff")
    await backend.initialize()
    try:
        skey = backend.state_key("client", strategy)
        await backend.delete(skey)
        state: State | None = None
        previous: Decision | None = None
        for i, (delta, cost) in enumerate(steps):
            now += _advance(delta, previous)
            reply, raw, pttl, _ = await _run_lua(backend, skey, strategy, rate, now, cost)
            step = strategy.decide(state, now, rate, cost)
            previous = step.decision
            where = f"{strategy!r} {rate} step {i} now={now} cost={cost} steps={steps[: i + 1]}"
            assert to_decision(reply) == step.decision, where
            if step.write:
                assert step.state is not None
                state = step.state
                # Redis 7.0 reads the clock again for PTTL: allow for the time it took.
                ttl = max(1, step.ttl_ms)
                assert max(0, ttl - 250) <= pttl <= ttl, f"TTL {pttl}: {where}"
            else:
                assert pttl in (-1, -2), f"a rejected step wrote the key: {where}"
            want_raw = None if state is None else encode_state(state)
            assert (raw.decode() if raw is not None else None) == want_raw, f"state: {where}"
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
@pytest.mark.parametrize("stored", ["", "garbage", "1,2,x", "1.5,2", "+1,2", ",", "1,,2", "1e3,4"])
async def test_corrupt_state_counts_as_a_fresh_key(
    redis_server: RedisServer, strategy: Strategy, stored: str
) -> None:
    rate = Rate(limit=3, seconds=10)
    now = 1_700_000_000_123
    async with RedisBackend(redis_server.url, namespace="corrupt", persistent=False)() as backend:
        skey = backend.state_key("client", strategy)
        await backend.set(skey, stored)
        got = await backend.decide("client", strategy, rate, 1, now_ms=now)
        assert got == strategy.decide(None, now, rate, 1).decision


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", STRATEGIES, ids=IDS)
async def test_exact_at_the_edge_of_double_precision(
    redis_server: RedisServer, strategy: Strategy
) -> None:
    # limit x window as close to 2**53 as the widest capacity above allows: any
    # float rounding in Lua would show in remaining, reset or retry.
    window = 999_999_937  # a prime, so nothing divides evenly
    limit = MAX_EXACT_PRODUCT // (window * 10)
    rate = Rate(limit=limit, milliseconds=window)
    now = 2**42 + 12_345
    costs = [1, limit // 3, limit, limit - 1, 2, limit * 11, 7]
    async with RedisBackend(redis_server.url, namespace="edge", persistent=False)() as backend:
        state: State | None = None
        for i, cost in enumerate(costs):
            now += window // 7 + i
            got = await backend.decide("client", strategy, rate, cost, now_ms=now)
            step = strategy.decide(state, now, rate, cost)
            if step.write:
                state = step.state
            assert got == step.decision, f"step {i}"
            stored = await backend.get(backend.state_key("client", strategy))
            assert stored == (None if state is None else encode_state(state))
        assert got.retry_after_ms != NEVER or costs[-1] > strategy.capacity(rate)


# States written before a redeploy that lowered the limit or the capacity stay under
# the same key: the scripts must read them as the reference does.
RECONFIGURED: list[tuple[Strategy, Strategy]] = [
    *((s, s) for s in STRATEGIES),
    (TokenBucketStrategy(burst_size=12), TokenBucketStrategy(burst_size=2)),
    (TokenBucketWithDebtStrategy(max_debt=9), TokenBucketWithDebtStrategy()),
    (LeakyBucketWithQueueStrategy(queue_size=12), LeakyBucketWithQueueStrategy(queue_size=1)),
    (GCRAStrategy(burst=12), GCRAStrategy(burst=2)),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("old", "new"), RECONFIGURED, ids=[f"{o!r}->{n!r}" for o, n in RECONFIGURED]
)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_lua_reads_states_of_a_larger_configuration_as_the_reference(
    redis_server: RedisServer, old: Strategy, new: Strategy, data: st.DataObject
) -> None:
    window = data.draw(st.integers(1, 5_000), label="window")
    old_rate = Rate(limit=data.draw(st.integers(2, 12), label="old limit"), milliseconds=window)
    new_window = data.draw(st.one_of(st.just(window), st.integers(1, 5_000)), label="new window")
    new_rate = Rate(limit=data.draw(st.integers(1, old_rate.limit - 1)), milliseconds=new_window)
    now = data.draw(st.integers(0, 2**42), label="start")
    backend = RedisBackend(redis_server.url, namespace="reconf")
    await backend.initialize()
    try:
        skey = backend.state_key("client", old)
        await backend.delete(skey)
        state: State | None = None
        steps = [(old, old_rate, 0, 1)] * data.draw(st.integers(1, 24), label="old steps")
        steps += data.draw(
            st.lists(
                st.tuples(
                    st.just(new), st.just(new_rate), st.integers(0, new_window), st.integers(1, 3)
                ),
                min_size=1,
                max_size=8,
            ),
            label="new steps",
        )
        for i, (strategy, rate, delta, cost) in enumerate(steps):
            now += delta
            reply, raw, _, _ = await _run_lua(backend, skey, strategy, rate, now, cost)
            step = strategy.decide(state, now, rate, cost)
            where = f"step {i} {strategy!r} {rate} now={now} cost={cost} state={state}"
            assert to_decision(reply) == step.decision, where
            if step.write:
                state = step.state
            assert raw.decode() == encode_state(state) if state else raw is None, where
    finally:
        await backend.reset()
        await backend.close()


# -- the prelude's state parser ------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]+")
_DECODE_PROBE = """
local state = decode(ARGV[1])
if state == nil then
  return {0, 0, ''}
end
return {1, #state, encode(state)}
"""


def _integers_or_none(text: str) -> list[int] | None:
    """The rule the scripts follow: every comma-separated part is ``-?[0-9]+``, or the state is fresh."""
    parts = text.split(",")
    if text and all(_INTEGER.fullmatch(part) for part in parts):
        return [int(part) for part in parts]
    return None


_EXACT = st.integers(-(2**53) + 1, 2**53 - 1)


# Each way a text can almost be a list of integers, beside what hypothesis draws.
@example(text="-")
@example(text="1,-")
@example(text="-,1")
@example(text="--1")
@example(text="1-")
@example(text="1-2")
@example(text="-1,-2")
@example(text="1,,2")
@example(text=",1")
@example(text="1,")
@example(text=",")
@example(text="+1")
@example(text=" 1")
@example(text="1.5")
@example(text="1e3")
@example(text="1,2,3,4")
# Lists longer than three numbers are read by cjson and written by table.concat: the
# shapes where those differ from the checked loop (-0, leading zeros, 1e14 and beyond).
@example(text="-0,1,2,3")
@example(text="1,2,3,-00")
@example(text="007,1,-012,3")
@example(text="1,2,99999999999999,100000000000000")
@example(text="-99999999999999,-100000000000000,5,6")
@example(text="0x10,1,2,3")
@example(text="1,2,3,4,")
@example(text="1,2,3,4-5")
@pytest.mark.asyncio
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    text=st.one_of(
        st.text(alphabet="0123456789,-+ .xe", max_size=30),
        st.lists(_EXACT, min_size=1, max_size=150).map(lambda xs: ",".join(map(str, xs))),
        st.lists(_EXACT, min_size=1, max_size=150)
        .map(lambda xs: ",".join(map(str, xs)))
        .flatmap(
            lambda text: st.tuples(
                st.just(text), st.integers(0, len(text)), st.sampled_from(["", ",", "-", "x", "+"])
            ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] :])
        ),
    )
)
async def test_the_prelude_reads_a_state_as_integers_or_as_a_fresh_key(
    redis_server: RedisServer, text: str
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        probe = _read("_prelude") + _DECODE_PROBE
        accepted, count, encoded = await client.eval(probe, 0, text)  # type: ignore[misc]
    finally:
        await client.aclose()
    want = _integers_or_none(text)
    assert (accepted, count) == ((0, 0) if want is None else (1, len(want))), text
    if want is not None and all(abs(n) < 2**53 for n in want):
        assert encoded.decode() == ",".join(map(str, want)), text
