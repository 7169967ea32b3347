"""InMemoryBackend: primitives, expiry on an injected clock, reclamation, the key cap."""

from __future__ import annotations

import time
from collections import OrderedDict

import pytest

from traffik.backends.inmemory import DEFAULT_MAX_KEYS, InMemoryBackend, monotonic_ms
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import (
    FixedWindowStrategy,
    SlidingWindowLogStrategy,
    TokenBucketStrategy,
)


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.mark.asyncio
async def test_primitives() -> None:
    backend = InMemoryBackend(namespace="t")
    async with backend():
        assert await backend.get("a") is None
        await backend.set("a", "1")
        assert await backend.get("a") == "1"
        assert await backend.increment("a") == 2
        assert await backend.increment("a", 5) == 7
        assert await backend.decrement("a", 10) == -3
        assert await backend.increment("fresh", 4) == 4
        assert await backend.decrement("neg") == -1
        assert await backend.multi_get("a", "missing", "fresh") == ["-3", None, "4"]
        assert await backend.multi_get() == []
        assert await backend.delete("a") is True
        assert await backend.delete("a") is False
        assert await backend.get_key("x") == "t:x"


@pytest.mark.asyncio
async def test_ttl_follows_the_injected_clock() -> None:
    clock = Clock()
    backend = InMemoryBackend(clock=clock)
    async with backend():
        await backend.set("k", "v", expire=2)
        clock.now += 1999
        assert await backend.get("k") == "v"
        clock.now += 1
        assert await backend.get("k") is None
        # increment_with_ttl sets the TTL only when it creates the key.
        assert await backend.increment_with_ttl("c", 1, ttl=10) == 1
        clock.now += 6000
        assert await backend.increment_with_ttl("c", 1, ttl=10) == 2
        clock.now += 4000
        assert await backend.get("c") is None
        # increment keeps an existing TTL; expire() sets one; set() replaces it.
        await backend.set("k", "5", expire=1)
        assert await backend.increment("k") == 6
        clock.now += 1000
        assert await backend.get("k") is None
        await backend.set("p", "1")
        assert await backend.expire("p", 3) is True
        assert await backend.expire("missing", 3) is False
        clock.now += 2999
        assert await backend.get("p") == "1"
        await backend.set("p", "2")  # no TTL any more
        clock.now += 10**9
        assert await backend.get("p") == "2"
        assert await backend.expire("p", 0) is True  # expires at once
        assert await backend.get("p") is None


@pytest.mark.asyncio
async def test_bad_values_surface_as_backend_errors() -> None:
    backend = InMemoryBackend()
    async with backend():
        await backend.set("s", "text")
        with pytest.raises(BackendError) as info:
            await backend.increment("s")
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(BackendError):
            await backend.set("s", "v", expire=0)
        # As on Redis: a TTL that is not a positive number of seconds is refused, not
        # stored as an entry that vanishes at once (or never).
        for bad in (0, -1, float("nan")):
            with pytest.raises(BackendError, match="positive number of seconds"):
                await backend.increment_with_ttl("n", 1, ttl=bad)  # type: ignore[arg-type]
            with pytest.raises(BackendError, match="positive number of seconds"):
                await backend.set("s", "v", expire=bad)
        assert await backend.get("n") is None


@pytest.mark.asyncio
async def test_use_before_initialise_or_after_close_raises_connection_error() -> None:
    backend = InMemoryBackend()
    with pytest.raises(BackendConnectionError):
        await backend.get("k")
    with pytest.raises(BackendConnectionError):
        await backend.decide("k", FixedWindowStrategy(), Rate.parse("1/s"))
    await backend.initialize()
    await backend.set("k", "v")
    await backend.close()
    with pytest.raises(BackendConnectionError):
        await backend.get("k")
    await backend.initialize()
    assert await backend.get("k") is None  # state does not survive close()


@pytest.mark.asyncio
async def test_reset_clears_only_the_namespace() -> None:
    backend = InMemoryBackend(namespace="ns")
    async with backend():
        await backend.set("ns:a", "1", expire=60)
        await backend.set("other:b", "2")
        await backend.decide("k", FixedWindowStrategy(), Rate.parse("5/s"))
        await backend.reset()
        assert await backend.get("ns:a") is None
        assert await backend.get("other:b") == "2"
        assert len(backend) == 1
        await backend.clear()
        assert await backend.get("other:b") == "2"


@pytest.mark.asyncio
async def test_empty_backend_is_truthy() -> None:
    backend = InMemoryBackend()
    await backend.initialize()
    assert len(backend) == 0
    assert bool(backend)
    assert (backend or None) is backend


@pytest.mark.asyncio
async def test_strategy_state_is_readable_as_text() -> None:
    clock = Clock(5_000)
    backend = InMemoryBackend(namespace="n", clock=clock)
    async with backend():
        await backend.decide("k", FixedWindowStrategy(), Rate.parse("5/s"))
        assert await backend.get("n:k:fw") == "5000,1"
        # A state written as text (by a generic writer) is read back as state.
        await backend.set("n:k:fw", "5000,5", expire=1)
        decision = await backend.decide("k", FixedWindowStrategy(), Rate.parse("5/s"))
        assert not decision.allowed


@pytest.mark.asyncio
async def test_expired_state_is_ignored_and_reclaimed() -> None:
    clock = Clock()
    backend = InMemoryBackend(clock=clock)
    strategy = FixedWindowStrategy()
    rate = Rate.parse("1/s")
    async with backend():
        for i in range(1000):
            assert (await backend.decide(f"user:{i}", strategy, rate)).allowed
        await backend.set("forever", "x")  # no TTL: never reclaimed
        assert len(backend) == 1001
        clock.now += 5_000
        # Writes reclaim a few expired keys each; no scan of the whole store.
        for _ in range(300):
            clock.now += 1_000
            assert (await backend.decide("hot", strategy, rate)).allowed
        assert len(backend) == 2
        assert await backend.get("forever") == "x"
        assert sum(len(keys) for keys in backend._buckets.values()) == 1
        assert len(backend._bucket_heap) <= 2


@pytest.mark.asyncio
async def test_reclamation_works_past_a_long_lived_least_recent_key() -> None:
    # The old design only looked at the least recently used end, where a key
    # without TTL blocked reclamation of everything behind it.
    clock = Clock()
    backend = InMemoryBackend(clock=clock)
    async with backend():
        await backend.set("pinned", "1")
        for i in range(200):
            await backend.set(f"short:{i}", "1", expire=1)
        clock.now += 10_000
        for i in range(60):
            await backend.set(f"new:{i}", "1", expire=100)
        assert len(backend) == 61


@pytest.mark.asyncio
async def test_max_keys_evicts_the_least_recently_used() -> None:
    backend = InMemoryBackend(max_keys=3)
    async with backend():
        for key in "abc":
            await backend.set(key, key, expire=100)
        assert await backend.get("a") == "a"  # a is now the most recent
        await backend.set("d", "d")
        assert await backend.get("b") is None
        assert [await backend.get(k) for k in "acd"] == ["a", "c", "d"]
        assert len(backend) == 3
        assert sum(len(keys) for keys in backend._buckets.values()) == 2  # a, c


def test_the_api_reference_positional_form_is_not_misread() -> None:
    # README API reference: InMemoryBackend(namespace="inmemory", persistent=False);
    # the second positional parameter is the identifier (as in traffik 1.0.0b2), so
    # InMemoryBackend("ns", True) must fail clearly instead of throttling with True.
    with pytest.raises(ConfigurationError, match="persistent=True"):
        InMemoryBackend("ns", True)
    with pytest.raises(ConfigurationError, match="handle_throttled"):
        InMemoryBackend("ns", None, "not callable")
    assert InMemoryBackend("ns", persistent=True).persistent is True


def test_max_keys_validation_and_default() -> None:
    assert InMemoryBackend().max_keys == DEFAULT_MAX_KEYS == 100_000
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ConfigurationError, match="max_keys"):
            InMemoryBackend(max_keys=bad)  # type: ignore[arg-type]


def test_default_clock_is_monotonic_milliseconds() -> None:
    a = monotonic_ms()
    assert abs(a - time.monotonic() * 1000) < 1000
    assert monotonic_ms() >= a
    assert InMemoryBackend().clock is monotonic_ms


class NoScanDict(OrderedDict):  # type: ignore[type-arg]
    """Fails the test if anything iterates over the whole store."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")

    def keys(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")

    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")


@pytest.mark.asyncio
async def test_decisions_and_primitives_never_scan_the_store() -> None:
    clock = Clock()
    backend = InMemoryBackend(clock=clock, max_keys=5_000)
    await backend.initialize()
    backend.connection = NoScanDict()
    strategies = (FixedWindowStrategy(), TokenBucketStrategy(), SlidingWindowLogStrategy())
    rate = Rate.parse("3/s")
    for i in range(8_000):  # past max_keys: evictions too
        clock.now += 1
        for strategy in strategies:
            await backend.decide(f"k{i % 6_000}", strategy, rate)
        await backend.increment_with_ttl(f"c{i}", 1, ttl=1)
        await backend.get(f"c{i - 5}")
    assert 0 < len(backend) <= 5_000


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_million_keys_stay_within_max_keys() -> None:
    clock = Clock()
    backend = InMemoryBackend(max_keys=100_000, clock=clock)
    strategy = TokenBucketStrategy()
    rate = Rate.parse("10/m")
    async with backend():
        decide = backend.decide
        for i in range(1_000_000):
            await decide(f"client:{i}", strategy, rate)
            if not i % 1000:
                clock.now += 1
        assert len(backend) == 100_000
        assert sum(len(keys) for keys in backend._buckets.values()) == 100_000
        # The most recent keys survived, the oldest were evicted.
        assert not (await decide("client:999999", strategy, rate, 10)).allowed
        assert (await decide("client:0", strategy, rate, 10)).allowed
