"""The auto-pipeline's own connections (lanes): NOSCRIPT in a batch, cancellation, the pool."""

from __future__ import annotations

import asyncio
import inspect
import typing

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.strategies import FixedWindowStrategy, GCRAStrategy
from traffik.testing.servers import RedisServer

pytestmark = pytest.mark.redis

#: A fixed clock: counts never cross a window boundary.
NOW_MS = 1_700_000_000_000


def _calls(server: RedisServer, command: str) -> int:
    info = server.command("INFO", "commandstats")
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


@pytest.mark.asyncio
async def test_a_batch_reloads_only_the_scripts_it_lost(
    make_redis_server: typing.Callable[..., RedisServer],
) -> None:
    # Two connections: the pipeline takes one lane, so while the first call is out
    # every later one queues, and they all leave together as one batch.
    server = make_redis_server()
    fw, gcra = FixedWindowStrategy(), GCRAStrategy()
    rate = Rate(limit=40, hours=1)
    backend = RedisBackend(server.url, namespace="lost", max_connections=2, persistent=False)
    async with backend():
        server.command("SCRIPT", "FLUSH")
        server.command("CONFIG", "RESETSTAT")
        decisions = await asyncio.gather(
            backend.decide("a", fw, rate, now_ms=NOW_MS),  # alone: reloads fw
            *(
                backend.decide(key, strategy, rate, now_ms=NOW_MS)
                for _ in range(30)
                for key, strategy in (("a", fw), ("b", gcra))
            ),  # one batch: fw runs, gcra is lost and sent again after its reload
        )
        # fw once for the first call, gcra once for the batch: nothing else reloaded.
        assert _calls(server, "script|load") == 2
        assert _calls(server, "evalsha") == 1 + 1 + 60 + 30
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == len(decisions) == 61
    fw_remaining = [decisions[0].remaining, *(d.remaining for d in decisions[1::2])]
    assert fw_remaining == list(range(39, 8, -1))
    assert sorted(d.remaining for d in decisions[2::2]) == list(range(10, 40))


@pytest.mark.asyncio
async def test_closing_gives_the_lanes_back_to_a_client_passed_in(
    redis_server: RedisServer,
) -> None:
    # A pool that raises when exhausted: after close, every one of its connections
    # can be in use at once again, so the backend kept none.
    pool = aioredis.ConnectionPool.from_url(redis_server.url, max_connections=3)
    client = aioredis.Redis.from_pool(pool)
    try:
        rate = Rate(limit=1000, hours=1)
        async with RedisBackend(client, namespace="giveback", persistent=False)() as backend:
            await asyncio.gather(
                *(backend.decide("k", FixedWindowStrategy(), rate) for _ in range(100))
            )
        waits = await asyncio.gather(*(client.blpop(["giveback:none"], 0.1) for _ in range(3)))
        assert waits == [None, None, None]
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_command_larger_than_the_socket_takes_at_once(redis_server: RedisServer) -> None:
    # A 4 MB key: the socket cannot take the command in one send, so the rest is
    # drained (under the socket timeout) before the reply is read.
    key = "k" * (4 * 1024 * 1024)
    rate = Rate(limit=3, hours=1)
    async with RedisBackend(redis_server.url, namespace="big", persistent=False)() as backend:
        got = [await backend.decide(key, FixedWindowStrategy(), rate) for _ in range(4)]
        assert [d.remaining for d in got] == [2, 1, 0, 0]
        assert (await backend.decide("small", FixedWindowStrategy(), rate)).remaining == 2


@pytest.mark.asyncio
async def test_a_decision_plan_is_kept_per_strategy_rate_and_cost(
    redis_server: RedisServer,
) -> None:
    # Decisions on the server clock reuse their packed arguments: the plan of one
    # (strategy, rate, cost) must never answer for another, and a cost that is not an
    # int (True == 1 as a dict key) is still refused.
    strategy = FixedWindowStrategy()
    small, large = Rate(limit=3, hours=1), Rate(limit=5, hours=1)
    async with RedisBackend(redis_server.url, namespace="plans", persistent=False)() as backend:
        got = [await backend.decide("k", strategy, rate) for rate in (small, large) * 2]
        assert [(d.limit, d.remaining) for d in got] == [(3, 2), (5, 3), (3, 0), (5, 1)]
        assert (await backend.decide("c", strategy, large, 2)).remaining == 3
        assert (await backend.decide("c", strategy, large, 1)).remaining == 2
        assert (await backend.decide("c", GCRAStrategy(), large, 1)).remaining == 4
        for cost in (True, 1.0, 0):
            with pytest.raises(ValueError, match="cost"):
                await backend.decide("c", strategy, large, cost)  # type: ignore[arg-type]
        # Many rates (past the bound on kept plans): each decides under its own limit.
        rates = [Rate(limit=n, hours=1) for n in range(1, 400)]
        for rate in rates:
            assert (
                await backend.decide(f"r{rate.limit}", strategy, rate)
            ).remaining == rate.limit - 1
        for rate in rates[:5]:
            assert (await backend.decide(f"r{rate.limit}", strategy, rate)).limit == rate.limit


@pytest.mark.asyncio
@pytest.mark.parametrize("concurrent", [1, 20], ids=["alone", "batch"])
async def test_a_reply_timeout_drops_the_connection_and_no_stray_reply_is_read(
    make_redis_server: typing.Callable[..., RedisServer], concurrent: int
) -> None:
    # Writes paused past socket_timeout: the calls fail with a timeout (never a None
    # taken for a reply), their connection is dropped, and the replies the server still
    # owes are never read as the answers of later calls.
    server = make_redis_server()
    strategy, rate = FixedWindowStrategy(), Rate(limit=100, hours=1)
    backend = RedisBackend(server.url, namespace="late", socket_timeout=0.2, persistent=False)
    async with backend():
        assert (await backend.decide("k", strategy, rate)).remaining == 99
        with server.writes_paused():
            results = await asyncio.gather(
                *(backend.decide("k", strategy, rate) for _ in range(concurrent)),
                return_exceptions=True,
            )
        assert all(isinstance(r, BackendConnectionError) for r in results), results
        assert all("socket_timeout" in str(r) for r in results), results
        # The paused calls ran when the pause ended (the server got them): each later
        # decision reads its own reply, in order.
        got = [(await backend.decide("k", strategy, rate)).remaining for _ in range(3)]
        first = got[0]
        assert got == [first, first - 1, first - 2]
        assert (await backend.peek("k", strategy, rate)).remaining == first - 3


class _CountingPool(aioredis.BlockingConnectionPool):
    """A real pool that counts the connections handed out (for the lanes' checkouts)."""

    taken = 0

    async def get_connection(self, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        self.taken += 1
        return await super().get_connection(*args, **kwargs)


# The lanes read get_connection's signature (redis-py before 5.3 requires a command
# name): the counting pool shows its parent's.
_CountingPool.get_connection.__signature__ = inspect.signature(  # type: ignore[attr-defined]
    aioredis.BlockingConnectionPool.get_connection
)


@pytest.mark.asyncio
async def test_a_lane_drops_a_broken_connection_and_takes_one_afresh_from_the_pool(
    redis_server: RedisServer,
) -> None:
    # The server closes the lane's connection: the next decision fails on it, gives it
    # back to the pool and runs again on a connection the pool hands out (so a Sentinel
    # pool could send it to a new primary), not on the old one reconnected in place.
    pool = _CountingPool.from_url(redis_server.url, max_connections=4, retry=Retry(NoBackoff(), 1))
    client = aioredis.Redis.from_pool(pool)
    strategy, rate = FixedWindowStrategy(), Rate(limit=10, hours=1)
    try:
        async with RedisBackend(client, namespace="afresh", persistent=False)() as backend:
            assert (await backend.decide("k", strategy, rate)).remaining == 9
            taken = pool.taken  # initialize's commands, and the lane's connection
            assert (await backend.decide("k", strategy, rate)).remaining == 8
            assert pool.taken == taken  # the lane keeps its connection while it works
            redis_server.command("CLIENT", "KILL", "TYPE", "normal")
            assert (await backend.decide("k", strategy, rate)).remaining == 7
            assert pool.taken == taken + 1
            assert (await backend.decide("k", strategy, rate)).remaining == 6
            assert pool.taken == taken + 1
    finally:
        await client.aclose()
