"""RedisBackend on a real 3-master Redis Cluster: hash tags, cross-slot reads, SCAN on every master."""

from __future__ import annotations

import typing

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


def _node_id(cluster: RedisClusterServer, name: str) -> str:
    host, port = name.rsplit(":", 1)
    raw = cluster.server(host, int(port)).command("CLUSTER", "MYID")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _on(cluster: RedisClusterServer, name: str, *command: str) -> object:
    host, port = name.rsplit(":", 1)
    return cluster.server(host, int(port)).command(*command)


@pytest.mark.cluster
@pytest.mark.asyncio
async def test_a_moved_slot_is_followed_and_the_map_learns_it(
    make_redis_cluster: typing.Callable[..., RedisClusterServer],
) -> None:
    # The slot of a fresh key is given to another master behind the backend's back:
    # the old master answers MOVED, the call goes to the new one, and so do the next.
    cluster = make_redis_cluster(replicas_per_master=0)
    strategy, rate = BUILTIN_STRATEGIES[0], Rate(limit=5, hours=1)
    backend = RedisBackend(cluster.url, namespace="moved", cluster=True, persistent=False)
    async with backend():
        key = "client-1"
        slot = key_slot(backend.state_key(key, strategy).encode())
        old = backend.failure_domain(key)
        new = next(f"{h}:{p}" for h, p in cluster.masters() if f"{h}:{p}" != old)
        assert isinstance(old, str)
        new_id = _node_id(cluster, new)
        for host, port in cluster.masters():  # the new owner first, as redis-cli does
            for name in sorted({new, f"{host}:{port}"}, key=lambda n: n != new):
                _on(cluster, name, "CLUSTER", "SETSLOT", str(slot), "NODE", new_id)
        got = [await backend.decide(key, strategy, rate) for _ in range(3)]
        assert [d.remaining for d in got] == [4, 3, 2]
        assert backend.failure_domain(key) == new
        assert _on(cluster, new, "EXISTS", backend.state_key(key, strategy)) == 1


@pytest.mark.cluster
@pytest.mark.asyncio
async def test_a_slot_being_migrated_is_asked_of_the_importing_master(
    make_redis_cluster: typing.Callable[..., RedisClusterServer],
) -> None:
    # MIGRATING on the owner, IMPORTING on the target: the owner answers ASK for a key
    # it does not hold, and the call runs on the target after ASKING. The slot map
    # does not change (the migration may still be rolled back).
    cluster = make_redis_cluster(replicas_per_master=0)
    strategy, rate = BUILTIN_STRATEGIES[0], Rate(limit=5, hours=1)
    backend = RedisBackend(cluster.url, namespace="asked", cluster=True, persistent=False)
    async with backend():
        key = "client-2"
        skey = backend.state_key(key, strategy)
        slot = str(key_slot(skey.encode()))
        owner = backend.failure_domain(key)
        assert isinstance(owner, str)
        target = next(f"{h}:{p}" for h, p in cluster.masters() if f"{h}:{p}" != owner)
        _on(cluster, target, "CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(cluster, owner))
        _on(cluster, owner, "CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(cluster, target))
        got = [await backend.decide(key, strategy, rate) for _ in range(3)]
        assert [d.remaining for d in got] == [4, 3, 2]
        assert (await backend.peek(key, strategy, rate)).remaining == 1  # one more: 1 left
        assert backend.failure_domain(key) == owner
        assert _on(cluster, target, "CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert _on(cluster, owner, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
