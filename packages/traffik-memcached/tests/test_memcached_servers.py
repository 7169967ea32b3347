"""MemcachedBackend over a pool of servers: addresses, rendezvous hashing, spread and reset."""

from __future__ import annotations

import asyncio
import collections
import typing
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.memcached import MemcachedBackend
from traffik.memcached._servers import parse_address, rendezvous, seed
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindowStrategy, Strategy
from traffik.testing.servers import MemcachedServer

KEYS = [f"user:{i}" for i in range(10_000)]


def _ns() -> str:
    return f"mcp{uuid.uuid4().hex[:12]}"


def _keys_on_every_server(backend: MemcachedBackend, prefix: str, per_server: int) -> list[str]:
    """Keys ``prefix{i}``, ``per_server`` of them on each server of ``backend``."""
    chosen: dict[str, list[str]] = {address: [] for address in backend.servers}
    for i in range(10_000):
        key = f"{prefix}{i}"
        bucket = chosen[backend.failure_domain(key)]
        if len(bucket) < per_server:
            bucket.append(key)
        if all(len(b) == per_server for b in chosen.values()):
            return [k for bucket in chosen.values() for k in bucket]
    raise AssertionError("rendezvous hashing left a server without keys")


def _owners(addresses: list[str]) -> list[str]:
    seeds = [seed(a) for a in addresses]
    return [addresses[rendezvous(key, seeds)] for key in KEYS]


# -- configuration -------------------------------------------------------------


def test_servers_are_given_as_host_port_strings() -> None:
    backend = MemcachedBackend(servers=["10.0.0.1:11211", "cache-b:11212", "[::1]:11213"])
    assert backend.servers == ("10.0.0.1:11211", "cache-b:11212", "[::1]:11213")
    assert (backend.host, backend.port) == ("10.0.0.1", 11211)
    assert "servers=" in repr(backend)
    one = MemcachedBackend(host="cache", port=11300)
    assert one.servers == ("cache:11300",)
    assert parse_address("[::1]:11211") == ("::1", 11211)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"servers": ["a:1"], "host": "b"}, "not both"),
        ({"servers": ["a:1"], "port": 2}, "not both"),
        ({"servers": []}, "non-empty list"),
        ({"servers": "a:1"}, "non-empty list"),
        ({"servers": ["a"]}, "'host:port'"),
        ({"servers": ["a:0"]}, "'host:port'"),
        ({"servers": ["a:70000"]}, "'host:port'"),
        ({"servers": ["a b:1"]}, "'host:port'"),
        ({"servers": [11211]}, "'host:port'"),
        ({"servers": ["a:1", "a:1"]}, "twice"),
    ],
)
def test_bad_server_lists_say_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        MemcachedBackend(**kwargs)  # type: ignore[arg-type]


# -- hashing -------------------------------------------------------------------


def test_keys_spread_evenly_and_the_order_of_servers_does_not_matter() -> None:
    three = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    owners = _owners(three)
    assert owners == _owners(three[::-1])
    for address, count in collections.Counter(owners).items():
        assert 0.28 < count / len(KEYS) < 0.39, f"{address} holds {count} of {len(KEYS)} keys"


def test_adding_a_server_moves_about_one_key_in_n_and_only_to_it() -> None:
    three = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    four = [*three, "10.0.0.4:11211"]
    before, after = _owners(three), _owners(four)
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert all(new == "10.0.0.4:11211" for _, new in moved), "a key moved between old servers"
    assert 0.22 < len(moved) / len(KEYS) < 0.28, f"{len(moved)} of {len(KEYS)} keys moved"


def test_failure_domain_is_the_server_that_decides_the_key() -> None:
    servers = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    backend = MemcachedBackend(servers=servers)
    assert [backend.failure_domain(k) for k in KEYS[:500]] == _owners(servers)[:500]
    assert MemcachedBackend().failure_domain("anything") == "localhost:11211"


# -- a real pool -----------------------------------------------------------------


@pytest_asyncio.fixture
async def pool(
    memcached_pool: list[MemcachedServer], opened: typing.Any
) -> AsyncIterator[list[MemcachedBackend]]:
    """Two instances over the session's three servers, listed in different orders."""
    addresses = [s.address for s in memcached_pool]
    ns = _ns()
    backends = [
        MemcachedBackend(servers=addresses, namespace=ns),
        MemcachedBackend(servers=addresses[::-1], namespace=ns),
    ]
    async with opened(*backends) as two:
        yield two


async def _items(server: MemcachedServer) -> int:
    from traffik.memcached._protocol import MemcachedClient

    client = MemcachedClient(server.host, server.port, pool_size=1, timeout=2, connect_timeout=2)
    try:
        return (await client.stats())[b"curr_items"]
    finally:
        await client.close()


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_every_server_of_the_pool_holds_items(
    pool: list[MemcachedBackend], memcached_pool: list[MemcachedServer]
) -> None:
    before = [await _items(s) for s in memcached_pool]
    rate = Rate(limit=5, hours=1)
    for i, key in enumerate(_keys_on_every_server(pool[0], "client", 10)):
        await pool[i % 2].decide(key, FixedWindowStrategy(), rate)
    grown = [await _items(s) - b for s, b in zip(memcached_pool, before, strict=True)]
    assert all(g >= 10 for g in grown), f"items added per server: {grown}"


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_reset_clears_every_server(pool: list[MemcachedBackend]) -> None:
    first, second = pool
    keys = _keys_on_every_server(first, f"{first.namespace}:k", 10)
    for key in keys:
        await first.set(key, "v")
    assert await second.multi_get(*keys) == ["v"] * len(keys)
    await first.reset()
    assert await second.multi_get(*keys) == [None] * len(keys)
    assert await first.multi_get(*keys) == [None] * len(keys)


@pytest.mark.memcached
@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=[s.name for s in BUILTIN_STRATEGIES])
async def test_64_tasks_over_two_instances_admit_exactly_the_limit_on_the_pool(
    pool: list[MemcachedBackend], strategy: Strategy
) -> None:
    rate = Rate(limit=10, hours=24)
    keys = _keys_on_every_server(pool[0], "race", 2)  # every server races
    for key in keys:
        decisions = await asyncio.gather(
            *(pool[i % 2].decide(key, strategy, rate) for i in range(64))
        )
        admitted = sorted(d.remaining for d in decisions if d.allowed)
        if isinstance(strategy, FixedWindowStrategy) and len(admitted) == 2 * rate.limit:
            continue  # the day's window turned over mid-test (UTC midnight)
        assert admitted == list(range(rate.limit)), f"{strategy.name} {key}: admitted {admitted}"


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_a_server_down_at_start_affects_only_its_keys_and_comes_back(
    make_memcached_server: typing.Callable[..., MemcachedServer],
) -> None:
    up, down = make_memcached_server(), make_memcached_server()
    down.kill()
    backend = MemcachedBackend(servers=[up.address, down.address], namespace=_ns(), timeout=2)
    await backend.initialize()  # one server answers: enough to start
    try:
        keys = _keys_on_every_server(backend, f"{backend.namespace}:", 1)
        mine, theirs = sorted(keys, key=lambda k: backend.failure_domain(k) != up.address)
        assert backend.failure_domain(mine) == up.address
        await backend.set(mine, "here")
        with pytest.raises(BackendConnectionError, match=down.address):
            await backend.set(theirs, "there")  # not moved to the live server
        down.restart()
        await backend.set(theirs, "there")  # back, without re-initialising
        assert await backend.multi_get(mine, theirs) == ["here", "there"]
    finally:
        await backend.close()
    nobody = MemcachedBackend(servers=[down.address], namespace=_ns())
    down.kill()
    with pytest.raises(BackendConnectionError, match="Cannot connect"):
        await nobody.initialize()
