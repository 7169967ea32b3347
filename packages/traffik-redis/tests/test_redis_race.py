"""64 concurrent tasks over two backend instances admit exactly the quota, for every strategy."""

from __future__ import annotations

import asyncio

import pytest

from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.testing.servers import RedisClusterServer, RedisServer

IDS = [s.name for s in BUILTIN_STRATEGIES]
TASKS = 64
RATE = Rate(limit=10, hours=24)  # refills one unit per 2.4 hours: nothing refills mid-test
DAY = 86_400_000


async def _server_day(backend: RedisBackend) -> int:
    client = backend.connection
    assert client is not None
    seconds, _ = await client.time()
    return int(seconds) * 1000 // DAY


async def _race(backends: list[RedisBackend], strategy: Strategy) -> int:
    for _attempt in range(2):
        day = await _server_day(backends[0])
        await backends[0].reset()
        decisions = await asyncio.gather(
            *(backends[i % 2].decide("client", strategy, RATE) for i in range(TASKS))
        )
        if await _server_day(backends[0]) == day:  # no window opened meanwhile (UTC midnight)
            break
    return sum(d.allowed for d in decisions)


@pytest.mark.redis
@pytest.mark.asyncio
@pytest.mark.parametrize("auto_pipeline", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_race_on_a_single_node(
    redis_server: RedisServer, strategy: Strategy, auto_pipeline: bool
) -> None:
    one = RedisBackend(
        redis_server.url, namespace="race", persistent=False, auto_pipeline=auto_pipeline
    )
    two = RedisBackend(
        redis_server.url, namespace="race", persistent=False, auto_pipeline=auto_pipeline
    )
    async with one(), two():
        assert await _race([one, two], strategy) == RATE.limit


@pytest.mark.cluster
@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_race_on_a_cluster(redis_cluster: RedisClusterServer, strategy: Strategy) -> None:
    one = RedisBackend(redis_cluster.url, namespace="race", cluster=True, persistent=False)
    two = RedisBackend(redis_cluster.url, namespace="race", cluster=True, persistent=False)
    async with one(), two():
        assert await _race([one, two], strategy) == RATE.limit
