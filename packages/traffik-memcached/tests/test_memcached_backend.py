"""MemcachedBackend against a real memcached: keys, generations, counters, configuration."""

from __future__ import annotations

import asyncio
import typing
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from traffik.exceptions import BackendError, ConfigurationError
from traffik.memcached import MemcachedBackend
from traffik.memcached._keys import item_key, namespace_tag
from traffik.memcached._protocol import LINE, VALUES
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, Strategy
from traffik.testing.servers import MemcachedServer

pytestmark = pytest.mark.memcached

HOSTILE_KEYS = [
    "x" * 10_000,
    "user name with spaces",
    "line\nbreak\r\nand\ttab",
    "nul\x00byte and \x7f del",
    "ünïcødé ✓ 鍵",
    "lone surrogate \udc80",
    "",
    "~looks~like~a~layout#deadbeef",
]


def _ns() -> str:
    return f"mct{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def backend(
    memcached_server: MemcachedServer, opened: typing.Any
) -> AsyncIterator[MemcachedBackend]:
    b = MemcachedBackend(memcached_server.host, memcached_server.port, namespace=_ns())
    async with opened(b):
        yield b


def _raw(backend: MemcachedBackend):  # the (only) server's client, for items as stored
    assert backend.connection is not None
    return backend.connection.servers[0].client


@pytest.mark.asyncio
@pytest.mark.parametrize("raw", HOSTILE_KEYS, ids=lambda k: repr(k[:12]))
async def test_hostile_keys_never_reach_the_server_raw(backend: MemcachedBackend, raw: str) -> None:
    key = f"{backend.namespace}:{raw}"
    await backend.set(key, "v")
    assert await backend.get(key) == "v"
    assert await backend.increment(key + ":n", 2) == 2
    for strategy in BUILTIN_STRATEGIES:
        decision = await backend.decide(raw, strategy, Rate.parse("2/m"), 1, now_ms=1_000)
        assert decision.allowed, strategy.name
    # Keys outside the namespace are escaped too.
    await backend.set(raw, "outside")
    assert await backend.get(raw) == "outside"


def test_item_keys_are_bounded_printable_and_injective() -> None:
    prefix = "ns~1700000000000"
    keys = [*HOSTILE_KEYS, "a", "a ", "a\n", "#" + "0" * 64, "~", "x" * 233, "x" * 234]
    items = [item_key(prefix, k) for k in keys]
    assert len(set(items)) == len(keys), "two different keys share an item"
    for item in items:
        assert len(item) <= 250
        assert all(0x21 <= b <= 0x7E for b in item), item
    # A short printable key stays readable; a long or unsafe one is hashed.
    assert item_key(prefix, "user:1.2.3.4") == b"ns~1700000000000~user:1.2.3.4"
    assert b"#" in item_key(prefix, "x" * 300)
    # Namespaces are injective as well, and never contain the layout's separators.
    tags = {namespace_tag(n) for n in ["a", "a~1", "a#", "a b", "é", "a" * 65, "a" * 64]}
    assert len(tags) == 7
    assert all("~" not in t and "#" not in t and "!" not in t for t in tags)


@pytest.mark.asyncio
async def test_different_hostile_keys_do_not_share_state(backend: MemcachedBackend) -> None:
    for i, raw in enumerate(HOSTILE_KEYS):
        await backend.set(f"{backend.namespace}:{raw}", str(i))
    for i, raw in enumerate(HOSTILE_KEYS):
        assert await backend.get(f"{backend.namespace}:{raw}") == str(i)


@pytest.mark.asyncio
async def test_decrement_below_zero_and_back(backend: MemcachedBackend) -> None:
    key = f"{backend.namespace}:counter"
    assert await backend.decrement(key, 5) == -5
    assert await backend.get(key) == "-5"
    assert await backend.decrement(key) == -6
    assert await backend.increment(key, 10) == 4
    await backend.set(key, "-3")
    assert await backend.increment(key) == -2
    await backend.set(key, "not a number")
    with pytest.raises(BackendError, match="not an integer counter") as raised:
        await backend.increment(key)
    # The message says what memcached answered and what the item holds.
    assert "cannot increment or decrement non-numeric value" in str(raised.value)
    assert "holds b'snot a number'" in str(raised.value)
    # Integer-looking text that is not canonical round-trips as text.
    await backend.set(key, "007")
    assert await backend.get(key) == "007"


@pytest.mark.asyncio
async def test_reset_is_one_generation_bump_seen_by_other_instances(
    memcached_server: MemcachedServer,
) -> None:
    ns = _ns()
    a = MemcachedBackend(memcached_server.host, memcached_server.port, namespace=ns)
    b = MemcachedBackend(memcached_server.host, memcached_server.port, namespace=ns)
    other = MemcachedBackend(memcached_server.host, memcached_server.port, namespace=ns + "x")
    for x in (a, b, other):
        await x.initialize()
    try:
        rate = Rate.parse("1/h")
        strategy = BUILTIN_STRATEGIES[3]
        assert (await a.decide("u", strategy, rate, now_ms=5)).allowed
        assert not (await b.decide("u", strategy, rate, now_ms=5)).allowed
        await other.set(f"{ns}x:k", "kept")
        tag = namespace_tag(ns)
        (before,) = await _raw(a).execute(b"get %s~gen\r\n" % tag.encode(), (VALUES,))
        await a.reset()
        (after,) = await _raw(a).execute(b"get %s~gen\r\n" % tag.encode(), (VALUES,))
        gen_key = f"{tag}~gen".encode()
        assert int(after[gen_key][0]) == int(before[gen_key][0]) + 1
        # b learns about the bump on its very next call (default generation_ttl=0).
        assert (await b.decide("u", strategy, rate, now_ms=5)).allowed
        assert await other.get(f"{ns}x:k") == "kept"
    finally:
        for x in (a, b, other):
            await x.reset()
            await x.close()


@pytest.mark.asyncio
async def test_generation_ttl_trades_freshness_of_resets_for_a_command(
    memcached_server: MemcachedServer,
) -> None:
    ns = _ns()
    a = MemcachedBackend(memcached_server.host, memcached_server.port, namespace=ns)
    b = MemcachedBackend(
        memcached_server.host, memcached_server.port, namespace=ns, generation_ttl=3600
    )
    await a.initialize()
    await b.initialize()
    try:
        await a.set(f"{ns}:k", "old")
        assert await b.get(f"{ns}:k") == "old"
        await a.reset()
        assert await a.get(f"{ns}:k") is None
        # b trusts its cached generation for an hour: it still sees the old generation.
        assert await b.get(f"{ns}:k") == "old"
        await b.reset()  # its own reset is seen at once
        assert await b.get(f"{ns}:k") is None
    finally:
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_evicted_generation_key_acts_as_a_reset(backend: MemcachedBackend) -> None:
    key = f"{backend.namespace}:k"
    await backend.set(key, "v")
    gen_key = f"{namespace_tag(backend.namespace)}~gen".encode()
    (line,) = await _raw(backend).execute(b"delete %s\r\n" % gen_key, (LINE,))
    assert line == b"DELETED"
    assert await backend.get(key) is None
    await backend.set(key, "w")
    assert await backend.get(key) == "w"


@pytest.mark.asyncio
async def test_set_expire_and_touch_keep_items_at_least_their_ttl(
    backend: MemcachedBackend,
) -> None:
    key = f"{backend.namespace}:ttl"
    await backend.set(key, "v", expire=1)
    assert await backend.get(key) == "v"  # never expires early on memcached's coarse clock
    assert await backend.expire(key, 1)
    assert await backend.get(key) == "v"
    with pytest.raises(BackendError):
        await backend.set(key, "v", expire=0)


def test_constructor_follows_the_readme_and_validates() -> None:
    b = MemcachedBackend(host="localhost", port=11211, namespace="myapp", pool_size=10)
    assert (b.host, b.port, b.namespace, b.pool_size, b.persistent) == (
        "localhost",
        11211,
        "myapp",
        10,
        False,
    )
    d = MemcachedBackend()
    assert (d.host, d.port, d.namespace, d.pool_size) == ("localhost", 11211, "memcached", 2)
    assert d.capabilities.injectable_clock
    assert d.capabilities.shared_state
    assert not d.capabilities.server_clock
    for kwargs in (
        {"port": 0},
        {"pool_size": 0},
        {"timeout": 0},
        {"max_retries": -1},
        {"lock_ttl": 0},
        {"generation_ttl": -1},
        {"host": ""},
    ):
        with pytest.raises(ConfigurationError):
            MemcachedBackend(**kwargs)  # type: ignore[arg-type]


def test_seed_import_path_reexports_the_backend() -> None:
    from traffik.backends import memcached as seed_path

    assert seed_path.MemcachedBackend is MemcachedBackend


def _strategy_names() -> list[str]:
    return [s.name for s in BUILTIN_STRATEGIES]


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=_strategy_names())
async def test_peek_after_decide_matches_the_reference(
    backend: MemcachedBackend, strategy: Strategy
) -> None:
    rate = Rate.parse("3/10s")
    for _ in range(2):
        await backend.decide("p", strategy, rate, 1, now_ms=20_000)
    seen = await backend.peek("p", strategy, rate, now_ms=20_500)
    state = None
    for _ in range(2):
        state = strategy.decide(state, 20_000, rate, 1).state
    assert seen == strategy.peek(state, 20_500, rate)


async def _fill(client: typing.Any, tag: bytes) -> None:
    """Store items of every small size until memcached (``-M``: no eviction) refuses each."""
    for size in range(1, 200, 6):
        for batch in range(1_000):
            replies = await asyncio.gather(
                *(
                    # A key of its own: a refused set deletes the item it would replace.
                    client.execute(
                        b"set %s%d~%d.%d 0 0 %d\r\n%s\r\n"
                        % (tag, size, batch, i, size, b"v" * size),
                        (LINE,),
                    )
                    for i in range(200)
                )
            )
            if any(r[0] != b"STORED" for r in replies):
                break
        else:
            raise AssertionError(f"memcached never ran out of memory for {size}-byte values")


@pytest.mark.asyncio
async def test_a_server_out_of_memory_fails_decisions_naming_it(
    make_memcached_server: typing.Callable[..., MemcachedServer],
) -> None:
    server = make_memcached_server(extra_args=["-M", "-m", "2"])
    ns = _ns()
    backend = MemcachedBackend(server.host, server.port, namespace=ns, timeout=5)
    await backend.initialize()
    try:
        await _fill(_raw(backend), b"fill~")
        # The counter's add is refused: said so at once, not retried as if it raced.
        with pytest.raises(BackendError, match="out of memory"):
            await backend.increment(f"{ns}:new-counter", 1)
        # A namespace whose generation cannot be stored does not get a private one.
        other = MemcachedBackend(server.host, server.port, namespace=_ns() + "-x")
        with pytest.raises(BackendError, match="did not store the generation"):
            await other.initialize()
    finally:
        await backend.close()
