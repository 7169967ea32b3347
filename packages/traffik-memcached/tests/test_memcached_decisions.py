"""Atomic decisions on a real memcached: races, fixed-window compensation, CAS exhaustion."""

from __future__ import annotations

import asyncio
import socket
import typing
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traffik.exceptions import BackendError
from traffik.memcached import MemcachedBackend
from traffik.memcached._keys import generation_prefix, item_key, namespace_tag
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    FixedWindowStrategy,
    Strategy,
    TokenBucketStrategy,
)
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached

TASKS = 64
IDS = [s.name for s in BUILTIN_STRATEGIES]


def _ns() -> str:
    return f"mcd{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def pair(
    memcached_server: MemcachedServer, opened: typing.Any
) -> AsyncIterator[list[MemcachedBackend]]:
    ns = _ns()
    server = memcached_server
    async with opened(*(MemcachedBackend(server.host, server.port, ns) for _ in range(2))) as two:
        yield two


async def _replay_against_the_reference(
    pair: list[MemcachedBackend],
    strategy: Strategy,
    rate: Rate,
    steps: list[tuple[int, int]],
    *,
    peek: bool = False,
) -> None:
    """Decide ``steps`` (time, cost) alternately on both instances; each must equal the reference.

    With ``peek``, the other instance's peek after every step must equal the reference's too.
    """
    key = f"diff{uuid.uuid4().hex}"
    state = None
    for i, (now, cost) in enumerate(steps):
        step = strategy.decide(state, now, rate, cost)
        if step.write:
            state = step.state
        got = await pair[i % 2].decide(key, strategy, rate, cost, now_ms=now)
        assert got == step.decision, f"step {i} of {steps}"
        if peek:
            seen = await pair[(i + 1) % 2].peek(key, strategy, rate, now_ms=now)
            assert seen == strategy.peek(state, now, rate), f"peek after step {i} of {steps}"


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_64_tasks_over_two_instances_admit_exactly_the_limit(
    pair: list[MemcachedBackend], strategy: Strategy
) -> None:
    # Wall clock (no now_ms), a day-long window: nothing refills during the test.
    rate = Rate(limit=10, hours=24)
    for round_ in range(3):
        key = f"race{round_}"
        decisions = await asyncio.gather(
            *(pair[i % 2].decide(key, strategy, rate) for i in range(TASKS))
        )
        admitted = sorted(d.remaining for d in decisions if d.allowed)
        if isinstance(strategy, FixedWindowStrategy) and len(admitted) == 2 * rate.limit:
            continue  # the day's window turned over mid-test (UTC midnight): try again
        assert admitted == list(range(rate.limit)), f"{strategy.name}: admitted {admitted}"
        assert all(d.retry_after_ms > 0 for d in decisions if not d.allowed)
        break


@pytest.mark.asyncio
async def test_fixed_window_rejections_are_not_charged(pair: list[MemcachedBackend]) -> None:
    strategy, rate = FixedWindowStrategy(), Rate.parse("5/m")
    first, second = pair
    now = 120_000
    assert (await first.decide("u", strategy, rate, 4, now_ms=now)).allowed
    rejected = await second.decide("u", strategy, rate, 3, now_ms=now)
    assert not rejected.allowed
    assert rejected.remaining == 1
    assert (await first.decide("u", strategy, rate, 1, now_ms=now)).allowed
    # The counter holds only the admitted units: the rejection was given back.
    assert (await first.peek("u", strategy, rate, now_ms=now)).remaining == 0
    assert await first.get(f"{first.namespace}:u:fw@{now}") == "5"


@pytest.mark.asyncio
async def test_fixed_window_mixed_costs_race_never_overshoots(pair: list[MemcachedBackend]) -> None:
    strategy, rate = FixedWindowStrategy(), Rate.parse("20/h")
    costs = [1, 3, 7, 2, 5] * 13  # 65 requests, 234 units offered for 20
    decisions = await asyncio.gather(
        *(pair[i % 2].decide("mix", strategy, rate, c, now_ms=0) for i, c in enumerate(costs))
    )
    admitted = sum(c for c, d in zip(costs, decisions, strict=True) if d.allowed)
    assert 0 < admitted <= rate.limit
    # Every compensation landed: the stored count is what was admitted plus the costs of
    # the rejections that found the window full (remaining 0), which give nothing back.
    kept = sum(
        c for c, d in zip(costs, decisions, strict=True) if not d.allowed and not d.remaining
    )
    assert await pair[0].get(f"{pair[0].namespace}:mix:fw@0") == str(admitted + kept)


@st.composite
def _window_steps(draw: st.DrawFn) -> tuple[Rate, list[tuple[int, int]]]:
    limit = draw(st.integers(1, 6) | st.integers(7, 50))
    window = draw(st.sampled_from([1_000, 60_000]))
    now, steps = 10_000_000, []
    for _ in range(draw(st.integers(1, 25))):
        now += draw(st.integers(0, window // 4))
        steps.append((now, draw(st.integers(1, min(limit + 1, 8)))))
    return Rate(limit=limit, milliseconds=window), steps


@pytest.mark.asyncio
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)
@given(scenario=_window_steps())
async def test_fixed_window_with_mixed_costs_equals_the_reference_decision_by_decision(
    pair: list[MemcachedBackend], scenario: tuple[Rate, list[tuple[int, int]]]
) -> None:
    """A full window's rejections give nothing back; no later decision or peek can tell."""
    rate, steps = scenario
    await _replay_against_the_reference(pair, FixedWindowStrategy(), rate, steps, peek=True)


@pytest.mark.asyncio
async def test_a_full_window_rejects_with_one_incr_and_no_decr(
    pair: list[MemcachedBackend],
) -> None:
    strategy, rate = FixedWindowStrategy(), Rate.parse("3/m")
    first, second = pair
    assert (await first.decide("hot", strategy, rate, 3, now_ms=0)).allowed
    assert first.connection is not None
    before = await first.connection.stats()
    for backend in (first, second, first):
        decision = await backend.decide("hot", strategy, rate, 1, now_ms=10)
        assert not decision.allowed
        assert decision.remaining == 0
    after = await first.connection.stats()
    # Stats are server-wide (other tests may run): count only this test's commands...
    assert after[b"incr_hits"] - before[b"incr_hits"] >= 3
    # ...and a decr by anyone would only raise these; three rejections must not.
    decrs = [after[k] - before[k] for k in (b"decr_hits", b"decr_misses")]
    assert decrs == [0, 0]
    # A rejection that found room below the limit still gives its cost back.
    assert (await first.decide("room", strategy, rate, 2, now_ms=0)).allowed
    assert not (await second.decide("room", strategy, rate, 2, now_ms=0)).allowed
    assert (await first.decide("room", strategy, rate, 1, now_ms=0)).allowed
    assert await first.get(f"{first.namespace}:room:fw@0") == "3"


@pytest.mark.asyncio
async def test_cas_retries_exhausted_raise_backend_error(memcached_server: MemcachedServer) -> None:
    """Another client rewrites the state between every gets and cas (a real, forced race)."""
    ns = _ns()
    holder: dict[str, bytes] = {}

    def meddling_clock() -> int:
        # Runs after the backend's gets and before its cas: overwrite the item.
        item = holder.get("item")
        if item is not None:
            with socket.create_connection((memcached_server.host, memcached_server.port)) as s:
                s.sendall(b"set %s 0 60 4\r\ns0,0\r\n" % item)
                assert s.recv(64) == b"STORED\r\n"
        return 1_000

    backend = MemcachedBackend(
        memcached_server.host,
        memcached_server.port,
        namespace=ns,
        max_retries=2,
        retry_backoff=0,
        clock=meddling_clock,
    )
    await backend.initialize()
    try:
        strategy, rate = TokenBucketStrategy(), Rate.parse("5/s")
        assert (await backend.decide("hot", strategy, rate)).allowed  # creates the item
        gen = backend.connection.servers[0].generations.get(namespace_tag(ns))
        holder["item"] = item_key(generation_prefix(namespace_tag(ns), gen), "hot:tb")
        with pytest.raises(BackendError, match="after 3 attempts"):
            await backend.decide("hot", strategy, rate)
        holder.clear()
        assert (await backend.decide("hot", strategy, rate)).allowed
    finally:
        await backend.reset()
        await backend.close()


@st.composite
def _steps(draw: st.DrawFn) -> tuple[Rate, list[tuple[int, int]]]:
    limit = draw(st.integers(1, 5) | st.integers(6, 1_000))
    window = draw(st.sampled_from([1, 999, 1_000, 1_500, 7_000, 3_600_000]))
    now, steps = 10_000_000, []
    for _ in range(draw(st.integers(1, 15))):
        # Time may also step backwards (a host with a clock behind another's).
        now += draw(st.integers(-window, 2 * window))
        steps.append((now, draw(st.integers(1, limit + 1))))
    return Rate(limit=limit, milliseconds=window), steps


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", [s for s in BUILTIN_STRATEGIES if s.name != "fw"], ids=IDS[1:])
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)
@given(scenario=_steps())
async def test_cas_decisions_equal_the_reference_even_when_time_steps_back(
    pair: list[MemcachedBackend], strategy: Strategy, scenario: tuple[Rate, list[tuple[int, int]]]
) -> None:
    rate, steps = scenario
    await _replay_against_the_reference(pair, strategy, rate, steps)


@pytest.mark.asyncio
async def test_a_transition_to_no_state_removes_the_item(pair: list[MemcachedBackend]) -> None:
    """A custom strategy whose transition clears the state: the item is expired by CAS."""
    from dataclasses import dataclass

    from traffik.decisions import Decision
    from traffik.strategies import Transition

    @dataclass(frozen=True)
    class Toggle(Strategy):
        name = "toggle"

        def decide(self, state, now_ms, rate, cost):  # type: ignore[no-untyped-def]
            decision = Decision(True, rate.limit, rate.limit - 1, 1000, 0, rate.expire)
            return Transition(None if state else (now_ms,), 1000, decision)

    backend = pair[0]
    skey = f"{backend.namespace}:t:toggle"
    await backend.decide("t", Toggle(), Rate.parse("1/s"), now_ms=7)
    assert await backend.get(skey) == "7"
    await backend.decide("t", Toggle(), Rate.parse("1/s"), now_ms=8)
    assert await backend.get(skey) is None
    await backend.decide("t", Toggle(), Rate.parse("1/s"), now_ms=9)
    assert await backend.get(skey) == "9"
