"""Adjustments on a real memcached: the window counter's CAS, and the CAS loop."""

from __future__ import annotations

import asyncio
import typing
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traffik.memcached import MemcachedBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindowStrategy, Strategy
from traffik.testing import reference_adjust_run
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached

IDS = [s.name for s in BUILTIN_STRATEGIES]


def _ns() -> str:
    return f"mca{uuid.uuid4().hex[:12]}"


@pytest.mark.asyncio
async def test_a_refund_frees_a_window_that_rejections_overshot(
    memcached_server: MemcachedServer, opened: typing.Any
) -> None:
    # Rejections of a window already full keep their charge on the counter (one incr,
    # no give-back): the counter reads 5 for a limit of 3. A refund must still free a unit.
    strategy, rate = FixedWindowStrategy(), Rate(limit=3, hours=1)
    backend = MemcachedBackend(memcached_server.host, memcached_server.port, _ns())
    async with opened(backend):
        for _ in range(3):
            assert (await backend.decide("u", strategy, rate, 1)).allowed
        for _ in range(2):
            assert not (await backend.decide("u", strategy, rate, 1)).allowed
        after = await backend.adjust("u", strategy, rate, -1)
        assert after.remaining == 1
        assert (await backend.decide("u", strategy, rate, 1)).allowed
        assert not (await backend.decide("u", strategy, rate, 1)).allowed


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_refunds_from_two_instances_race_exactly(
    memcached_server: MemcachedServer, opened: typing.Any, strategy: Strategy
) -> None:
    rate = Rate(limit=100, hours=24)
    namespace = _ns()
    first = MemcachedBackend(
        memcached_server.host, memcached_server.port, namespace, max_retries=200
    )
    second = MemcachedBackend(
        memcached_server.host, memcached_server.port, namespace, max_retries=200
    )
    async with opened(first, second):
        assert (await first.decide("u", strategy, rate, 80)).allowed
        await asyncio.gather(
            *((first, second)[i % 2].adjust("u", strategy, rate, -1) for i in range(40))
        )
        after = await first.adjust("u", strategy, rate, 0)
        assert after.remaining == strategy.capacity(rate) - 40


@st.composite
def _steps(draw: st.DrawFn) -> tuple[Rate, list[tuple[int, str, int, int]]]:
    limit = draw(st.integers(1, 5) | st.integers(6, 1_000))
    window = draw(st.sampled_from([999, 1_000, 7_000, 3_600_000]))
    now, steps = 10_000_000, []
    for _ in range(draw(st.integers(1, 15))):
        now += draw(st.integers(0, 2 * window))
        if draw(st.booleans()):
            steps.append((now, "decide", draw(st.integers(1, limit + 1)), 0))
        else:
            amount = draw(st.integers(-(2 * limit + 2), 2 * limit + 2))
            steps.append((now, "adjust", amount, draw(st.integers(0, window + 5))))
    return Rate(limit=limit, milliseconds=window), steps


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)
@given(scenario=_steps())
async def test_adjustments_from_two_instances_equal_the_reference(
    memcached_server: MemcachedServer,
    opened: typing.Any,
    strategy: Strategy,
    scenario: tuple[Rate, list[tuple[int, str, int, int]]],
) -> None:
    rate, steps = scenario
    namespace = _ns()
    pair = [
        MemcachedBackend(memcached_server.host, memcached_server.port, namespace) for _ in range(2)
    ]
    async with opened(*pair):
        got = []
        for i, (now, op, amount, age) in enumerate(steps):
            backend = pair[i % 2]
            if op == "decide":
                got.append(await backend.decide("u", strategy, rate, amount, now_ms=now))
            else:
                got.append(
                    await backend.adjust("u", strategy, rate, amount, age_ms=age, now_ms=now)
                )
    assert got == reference_adjust_run(strategy, rate, steps), steps
