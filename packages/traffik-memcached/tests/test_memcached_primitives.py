"""TTLs of the primitives to the millisecond on memcached (whose own TTLs are whole seconds).

The backend's clock is injected: each test moves it by hand to either side of a
deadline, while memcached's own (longer) TTL keeps the item in place.
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from traffik.memcached import MemcachedBackend
from traffik.memcached._keys import deadline_flags, expired
from traffik.memcached._protocol import VALUES
from traffik.testing.servers import MemcachedServer

T0 = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(params=["one", "pool"])
async def backend(
    request: pytest.FixtureRequest,
    clock: Clock,
    memcached_server: MemcachedServer,
    memcached_pool: list[MemcachedServer],
    opened: typing.Any,
) -> AsyncIterator[MemcachedBackend]:
    ns = f"mce{uuid.uuid4().hex[:12]}"
    if request.param == "one":
        b = MemcachedBackend(memcached_server.host, memcached_server.port, ns, clock=clock)
    else:
        b = MemcachedBackend(servers=[s.address for s in memcached_pool], namespace=ns, clock=clock)
    async with opened(b):
        yield b


def test_deadlines_are_told_apart_modulo_2_32() -> None:
    for now in (0, 5, 2**32 - 3, T0, 2**40 + 7):
        flags = deadline_flags(now, 1000)
        assert 0 < flags < 2**32
        assert not expired(flags, now)
        assert not expired(flags, now + 999)
        assert expired(flags, now + 1000)
        assert expired(flags, now + 5_000_000)
    assert deadline_flags(2**32 - 1000, 1000) == 1  # 0 means "none": a millisecond later
    assert deadline_flags(T0, 2**31) == 0  # too far: memcached's whole seconds only
    assert not expired(0, T0)


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_set_with_expire_is_gone_at_its_millisecond(
    backend: MemcachedBackend, clock: Clock
) -> None:
    key, other = f"{backend.namespace}:a", f"{backend.namespace}:b"
    await backend.set(key, "v", expire=1)
    await backend.set(other, "w", expire=1.5)
    clock.now = T0 + 999
    assert await backend.get(key) == "v"  # never early
    assert await backend.multi_get(key, other) == ["v", "w"]
    clock.now = T0 + 1000
    assert await backend.get(key) is None
    assert await backend.multi_get(key, other) == [None, "w"]
    clock.now = T0 + 1500
    assert await backend.multi_get(key, other) == [None, None]
    assert await backend.delete(key) is False  # already gone, though memcached still has it
    assert await backend.expire(other, 10) is False


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_memcached_keeps_the_item_until_its_own_ttl_reclaims_it(
    backend: MemcachedBackend, clock: Clock
) -> None:
    key = f"{backend.namespace}:kept"
    await backend.set(key, "v", expire=1)
    clock.now = T0 + 1000
    assert await backend.get(key) is None
    server = backend._server(key)
    (values,) = await server.client.execute(b"get %s\r\n" % _item(backend, key), (VALUES,))
    assert values, "memcached reclaimed the item before its own (rounded-up) TTL"


def _item(backend: MemcachedBackend, key: str) -> bytes:
    from traffik.memcached._keys import generation_prefix, item_key

    server = backend._server(key)
    tag, rest = backend._scope(key)
    assert tag is not None
    return item_key(generation_prefix(tag, server.generations.get(tag) or 0), rest)


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_increment_with_ttl_restarts_at_its_millisecond(
    backend: MemcachedBackend, clock: Clock
) -> None:
    key = f"{backend.namespace}:n"
    assert await backend.increment_with_ttl(key, 1, ttl=1) == 1
    clock.now = T0 + 500
    assert await backend.increment_with_ttl(key, 2, ttl=1) == 3  # the TTL is not extended
    clock.now = T0 + 999
    assert await backend.increment(key, 1) == 4
    assert await backend.get(key) == "4"
    clock.now = T0 + 1000
    assert await backend.get(key) is None
    assert await backend.increment_with_ttl(key, 5, ttl=1) == 5  # a new counter, new deadline
    clock.now = T0 + 1999
    assert await backend.decrement(key, 1) == 4
    clock.now = T0 + 2000
    assert await backend.get(key) is None


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_increment_on_an_expired_key_starts_a_counter_without_ttl(
    backend: MemcachedBackend, clock: Clock
) -> None:
    key = f"{backend.namespace}:c"
    await backend.set(key, "not a number", expire=1)
    clock.now = T0 + 1000
    assert await backend.increment(key, 2) == 2
    clock.now = T0 + 10**9
    assert await backend.get(key) == "2"


@pytest.mark.memcached
@pytest.mark.asyncio
async def test_expire_sets_a_deadline_to_the_millisecond(
    backend: MemcachedBackend, clock: Clock
) -> None:
    key = f"{backend.namespace}:e"
    await backend.set(key, "v")
    await backend.decrement(f"{backend.namespace}:d", 3)
    assert await backend.expire(key, 0.25) is True
    assert await backend.expire(f"{backend.namespace}:d", 0.25) is True
    clock.now = T0 + 249
    assert await backend.multi_get(key, f"{backend.namespace}:d") == ["v", "-3"]
    assert await backend.increment(f"{backend.namespace}:d", 1) == -2  # deadline kept
    clock.now = T0 + 250
    assert await backend.multi_get(key, f"{backend.namespace}:d") == [None, None]
    assert await backend.expire(key, 1) is False
    assert await backend.expire(f"{backend.namespace}:missing", 1) is False


def test_stored_counters_stay_below_2_63_and_1_0_counters_still_read() -> None:
    """memcached scans past the item for a '-' when a stored number is >= 2**63 (strchr).

    With 1.0's offset of 2**63 every positive counter was stored there, and some were
    refused by ``incr`` as non-numeric until they expired (seen on memcached 1.6.18).
    """
    from traffik.memcached._keys import (
        COUNTER_MAX,
        COUNTER_OFFSET,
        decode_counter,
        decode_value,
        encode_counter,
        encode_value,
    )

    for value in (-COUNTER_OFFSET, -1, 0, 1, 10**12, COUNTER_MAX - 1):
        stored = int(encode_counter(value))
        assert 0 <= stored < 2**63
        assert decode_counter(encode_counter(value)) == value
        assert decode_value(encode_value(str(value))) == str(value)
    for value in (-5, 0, 7, 10**15):  # as traffik-memcached 1.0 stored them
        legacy = str(value + 2**63).encode()
        assert decode_counter(legacy) == value
        assert decode_value(legacy) == str(value)
    assert encode_value(str(COUNTER_MAX)).startswith(b"s")  # too large: stored as text
