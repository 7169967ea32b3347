"""RedisBackend on a real 3-master Redis Cluster: hash tags, cross-slot reads, SCAN on every master."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.cluster import key_slot

from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.redis._keys import escape_tag
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.testing.servers import RedisClusterServer

IDS = [s.name for s in BUILTIN_STRATEGIES]


@given(st.text(), st.text())
def test_escaped_tags_hold_no_brace_and_never_collide(a: str, b: str) -> None:
    assert "{" not in escape_tag(a)
    assert "}" not in escape_tag(a)
    assert (escape_tag(a) == escape_tag(b)) == (a == b)


@given(st.text(max_size=40))
def test_the_slot_follows_the_whole_client_key(key: str) -> None:
    backend = RedisBackend("redis://localhost:6379/0", namespace="ns")
    slots = {key_slot(backend.state_key(key, s).encode()) for s in BUILTIN_STRATEGIES}
    # Every strategy's state of one client key lives in one slot: the escaped key's.
    assert slots == {key_slot(("{" + escape_tag(key) + "}").encode())} or escape_tag(key) == ""


@pytest.mark.cluster
@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_every_strategy_decides_on_the_cluster(
    redis_cluster: RedisClusterServer, strategy: Strategy
) -> None:
    rate = Rate(limit=3, hours=1)
    backend = RedisBackend(redis_cluster.url, namespace="every", cluster=True, persistent=False)
    async with backend():
        # Keys chosen to land on different masters, including brace-laden ones.
        for key in ("a", "b{x}", "c}", "{d", "user:1", "user:2", "user:3"):
            got = [await backend.decide(key, strategy, rate, now_ms=5_000) for _ in range(4)]
            assert [d.allowed for d in got] == [True, True, True, False], key
            assert (await backend.peek(key, strategy, rate, now_ms=5_000)).remaining == 0


@pytest.mark.cluster
@pytest.mark.asyncio
async def test_keys_spread_over_every_master_and_reset_clears_them_all(
    redis_cluster: RedisClusterServer,
) -> None:
    rate = Rate(limit=3, hours=1)
    strategy = BUILTIN_STRATEGIES[0]
    backend = RedisBackend(redis_cluster.url, namespace="spread", cluster=True)
    other = RedisBackend(redis_cluster.url, namespace="spreadx", cluster=True)
    async with backend(), other():
        for i in range(300):
            await backend.decide(f"client-{i}", strategy, rate)
        await other.decide("keep", strategy, rate)
        client = backend.connection
        assert isinstance(client, aioredis.RedisCluster)
        owners = set()
        for node in client.get_primaries():
            _, keys = await client.scan(0, match="spread:*", count=1000, target_nodes=node)
            if keys:
                owners.add(node.name)
        assert len(owners) == len(client.get_primaries()) == 3
        await backend.reset()
        for node in client.get_primaries():
            cursor, left = 0, []
            while True:
                cursors, keys = await client.scan(
                    cursor, match="spread:*", count=1000, target_nodes=node
                )
                left += keys
                cursor = cursors[node.name]
                if cursor == 0:
                    break
            assert left == [], f"{node.name} still holds {left[:3]}"
        assert (await other.peek("keep", strategy, rate)).remaining == 1, "reset crossed namespaces"
        await other.reset()


@pytest.mark.cluster
@pytest.mark.asyncio
async def test_primitives_across_slots(redis_cluster: RedisClusterServer) -> None:
    backend = RedisBackend(redis_cluster.url, namespace="prim", cluster=True, persistent=False)
    async with backend():
        keys = [f"prim:{name}" for name in ("a", "b", "c", "d", "e", "f")]
        assert len({key_slot(k.encode()) for k in keys}) > 1
        for i, key in enumerate(keys[::2]):
            await backend.set(key, str(i))
        assert await backend.multi_get(*keys) == ["0", None, "1", None, "2", None]
        assert await backend.increment_with_ttl("prim:n", 5, ttl=30) == 5
        assert await backend.increment_with_ttl("prim:n", 5, ttl=1) == 10
        ttl = await backend.connection.pttl("prim:n")  # type: ignore[union-attr]
        assert 1000 < ttl <= 30_000, "a later increment_with_ttl changed the TTL"
        async with await backend.lock("lock:x"):
            pass
