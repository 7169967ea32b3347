"""The adjustment scripts give back and charge exactly as the Python reference.

Hypothesis drives one key through generated sequences of decisions and
adjustments (refunds of every size, extra charges into debt, ages inside and past
the window), with time jumping forwards and backwards. Each step runs in a MULTI
with GET, PTTL and PERSIST, as in test_redis_scripts.py: the stored state, its TTL
and the answer must all be the reference's.
"""

from __future__ import annotations

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traffik.rates import MAX_EXACT_PRODUCT, Rate
from traffik.redis import RedisBackend
from traffik.redis._adjust import adjust_args, adjust_script
from traffik.redis._scripts import SCRIPT_OF, decision_args, to_decision
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
    decode_state,
    encode_state,
)
from traffik.testing.servers import RedisServer

pytestmark = pytest.mark.redis

STRATEGIES: list[Strategy] = [
    FixedWindowStrategy(),
    SlidingWindowLogStrategy(),
    SlidingWindowCounterStrategy(),
    TokenBucketStrategy(burst_size=7),
    TokenBucketWithDebtStrategy(max_debt=3),
    LeakyBucketStrategy(),
    LeakyBucketWithQueueStrategy(queue_size=5),
    GCRAStrategy(),
    GCRAStrategy(burst=4),
]
IDS = [f"{s.name}-{i}" for i, s in enumerate(STRATEGIES)]

#: One step: (clock move in ms, "decide" or "adjust", cost or delta, age_ms).
Step = tuple[int, str, int, int]


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[Rate, int, list[Step]]:
    window = draw(st.one_of(st.sampled_from([1, 7, 1000, 60_000]), st.integers(1, 10**9)))
    limit = draw(st.one_of(st.integers(1, 12), st.integers(1, 10**6)))
    # Room for the widest capacity above (burst 7, debt 3) in debt: 4 x capacity x window.
    limit = max(1, min(limit, MAX_EXACT_PRODUCT // (window * 64)))
    rate = Rate(limit=limit, milliseconds=window)
    move = st.one_of(
        st.just(0),
        st.integers(0, 3),
        st.integers(0, max(1, window // limit)),
        st.integers(0, 3 * window),
        st.integers(-window, 0),
    )
    amount = st.one_of(
        st.integers(-3, 3),
        st.integers(-(limit + 10), limit + 10),
        st.integers(-(2**70), 2**70),  # bounded before Lua; the same effect either way
    )
    age = st.one_of(st.just(0), st.integers(0, 2 * window))
    op = st.one_of(
        st.tuples(move, st.just("decide"), st.integers(1, limit + 3), st.just(0)),
        st.tuples(move, st.just("adjust"), amount, age),
    )
    steps = draw(st.lists(op, min_size=1, max_size=25))
    return rate, draw(st.integers(0, 2**42)), steps


async def _run(
    backend: RedisBackend, skey: str, strategy: Strategy, rate: Rate, now: int, step: Step
) -> tuple[typing.Any, ...]:
    client = backend.connection
    assert client is not None
    _, op, amount, age = step
    if op == "decide":
        script = backend._scripts[SCRIPT_OF[type(strategy)]]  # type: ignore[index]
        args = decision_args(strategy, rate, amount, now)
    else:
        adjust = adjust_script(strategy)
        assert adjust is not None
        await client.script_load(adjust.source)
        script, args = adjust, adjust_args(strategy, rate, amount, age, now)
    async with client.pipeline(transaction=True) as pipe:
        pipe.evalsha(script.sha, 1, skey, *args)
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
async def test_lua_adjusts_as_the_python_reference(
    redis_server: RedisServer, strategy: Strategy, scenario: tuple[Rate, int, list[Step]]
) -> None:
    rate, now, steps = scenario
    backend = RedisBackend(redis_server.url, namespace="adiff")
    await backend.initialize()
    try:
        skey = backend.state_key("client", strategy)
        await backend.delete(skey)
        state: State | None = None
        for i, step in enumerate(steps):
            move, op, amount, age = step
            now += move
            reply, raw, pttl, _ = await _run(backend, skey, strategy, rate, now, step)
            where = f"{strategy!r} {rate} step {i} now={now} steps={steps[: i + 1]}"
            if op == "decide":
                want = strategy.decide(state, now, rate, amount)
                assert to_decision(reply) == want.decision, where
            else:
                want = strategy.adjust(state, now, rate, amount, age)
                server_now, stored = reply
                assert int(server_now) == now, where
                got = strategy.snapshot(decode_state(stored), now, rate)
                assert got == want.decision, where
            if want.write:
                state = want.state
                if state is not None:
                    ttl = max(1, want.ttl_ms)
                    assert max(0, ttl - 250) <= pttl <= ttl, f"TTL {pttl}: {where}"
            want_raw = None if state is None else encode_state(state)
            assert (raw.decode() if raw is not None else None) == want_raw, f"state: {where}"
    finally:
        await backend.reset()
        await backend.close()


@pytest.mark.asyncio
async def test_one_adjustment_is_one_round_trip_on_the_server_clock(
    redis_server: RedisServer,
) -> None:
    strategy, rate = GCRAStrategy(), Rate(limit=10, seconds=60)
    async with RedisBackend(redis_server.url, namespace="adj1", persistent=False)() as backend:
        assert (await backend.decide("client", strategy, rate, 4)).remaining == 6
        client = backend.connection
        assert client is not None
        before = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        after = await backend.adjust("client", strategy, rate, -3)
        calls = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        assert after.remaining == 9
        # One EVALSHA (a NOSCRIPT retry the first time the script is used adds one).
        assert calls - before in (1, 2)
        again = await backend.adjust("client", strategy, rate, -1)
        last = (await client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        assert last - calls == 1
        assert again.remaining == 10
