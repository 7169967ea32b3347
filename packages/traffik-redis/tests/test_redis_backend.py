"""RedisBackend on a real redis-server: construction, errors, round trips, clocks, reset."""

from __future__ import annotations

import asyncio
import time
import typing

import pytest
import redis.asyncio as aioredis

from traffik.backends.base import ThrottleBackend
from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.strategies import BUILTIN_STRATEGIES, FixedWindowStrategy, Strategy, decode_state
from traffik.testing.servers import RedisServer, find_free_port

pytestmark = pytest.mark.redis

IDS = [s.name for s in BUILTIN_STRATEGIES]


def _commandstats(server: RedisServer) -> dict[str, int]:
    info = server.command("INFO", "commandstats")
    text = info.decode() if isinstance(info, bytes) else str(info)
    calls: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(part.split("=") for part in rest.split(","))
            command = name.removeprefix("cmdstat_")
            if not command.startswith("config"):
                calls[command] = int(fields["calls"])
    return calls


def _server_ms(server: RedisServer) -> int:
    seconds, micros = server.command("TIME")
    return int(seconds) * 1000 + int(micros) // 1000


# -- construction ---------------------------------------------------------------


def test_a_malformed_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a Redis URL"):
        RedisBackend(connection="invalid://url")
    with pytest.raises(ConfigurationError):
        RedisBackend("redis://localhost:notaport/0")


@pytest.mark.parametrize("connection", [None, 42, object()])
@pytest.mark.asyncio
async def test_a_connection_of_the_wrong_kind_is_a_configuration_error(
    connection: typing.Any,
) -> None:
    async def build() -> None:
        await RedisBackend(connection, namespace="x").initialize()

    with pytest.raises(ConfigurationError):
        await build()


def test_the_api_reference_signature_works_positionally() -> None:
    # README API Reference: RedisBackend(connection, namespace, persistent=True).
    backend = RedisBackend("redis://localhost:6379/0", "myapp", False)
    assert (backend.namespace, backend.persistent) == ("myapp", False)
    assert RedisBackend("redis://localhost:6379/0", "myapp").persistent is True


def test_a_namespace_with_a_brace_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="brace"):
        RedisBackend("redis://localhost:6379/0", namespace="app{1}")


def test_readme_defaults() -> None:
    backend = RedisBackend(connection="redis://localhost:6379/0")
    assert backend.namespace == "traffik"
    assert backend.persistent is True
    assert isinstance(backend, ThrottleBackend)
    caps = RedisBackend.capabilities
    assert (caps.shared_state, caps.injectable_clock, caps.distributed_locks) == (True, True, True)
    assert (caps.negative_counters, caps.server_clock) == (True, True)


@pytest.mark.asyncio
async def test_an_unreachable_server_fails_fast_naming_host_and_port() -> None:
    port = find_free_port()
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", namespace="x", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{port}"):
        await backend.initialize()
    assert time.monotonic() - started < 3.0
    assert backend.connection is None


@pytest.mark.asyncio
async def test_a_silent_server_fails_within_the_timeouts() -> None:
    # A listening socket that never answers: connect succeeds, PING hangs.
    writers: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        backend = RedisBackend(
            f"redis://127.0.0.1:{port}/0", namespace="x", connect_timeout=0.3, socket_timeout=0.3
        )
        started = time.monotonic()
        with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{port}"):
            await backend.initialize()
        assert time.monotonic() - started < 3.0
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_use_before_initialize_or_after_close_is_a_connection_error(
    redis_server: RedisServer,
) -> None:
    backend = RedisBackend(redis_server.url, namespace="closed")
    rate = Rate(limit=1, seconds=1)
    with pytest.raises(BackendConnectionError, match="not initialised"):
        await backend.decide("k", FixedWindowStrategy(), rate)
    await backend.initialize()
    await backend.close()
    with pytest.raises(BackendConnectionError):
        await backend.get("closed:k")
    with pytest.raises(BackendConnectionError):
        await backend.peek("k", FixedWindowStrategy(), rate)


@pytest.mark.asyncio
async def test_a_client_passed_in_is_left_open(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        backend = RedisBackend(client, namespace="own")
        async with backend():
            assert backend.connection is client
            assert (
                await backend.decide("k", FixedWindowStrategy(), Rate(limit=2, seconds=9))
            ).allowed
        assert backend.connection is None
        assert await client.ping()  # still usable: the caller closes it
    finally:
        await client.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_factories_build_clients_the_backend_owns(
    redis_server: RedisServer, kind: str
) -> None:
    made: list[aioredis.Redis] = []

    def sync_factory() -> aioredis.Redis:
        made.append(aioredis.Redis(host=redis_server.host, port=redis_server.port, db=0))
        return made[-1]

    async def async_factory() -> aioredis.Redis:
        return sync_factory()

    backend = RedisBackend(sync_factory if kind == "sync" else async_factory, namespace="fac")
    async with backend():
        assert backend.connection is made[0]
        assert (await backend.decide("k", FixedWindowStrategy(), Rate(limit=2, seconds=9))).allowed
    with pytest.raises(BackendConnectionError):
        await backend.get("fac:k")


@pytest.mark.asyncio
async def test_a_factory_returning_a_sync_client_is_a_configuration_error(
    redis_server: RedisServer,
) -> None:
    import redis

    def factory() -> typing.Any:
        return redis.Redis(host=redis_server.host, port=redis_server.port)

    with pytest.raises(ConfigurationError, match=r"redis\.asyncio"):
        await RedisBackend(factory, namespace="bad").initialize()


# -- one round trip, server clock, TTLs -------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_one_evalsha_per_decision(
    make_redis_server: typing.Callable[..., RedisServer], strategy: Strategy
) -> None:
    server = make_redis_server()
    rate = Rate(limit=5, minutes=1)
    async with RedisBackend(server.url, namespace="rt")() as backend:
        await backend.decide("warm-up", strategy, rate)  # the connection is open and ready
        server.command("CONFIG", "RESETSTAT")
        decisions = [await backend.decide("client", strategy, rate) for _ in range(12)]
        stats = _commandstats(server)
    admitted = sum(d.allowed for d in decisions)
    assert admitted == 5
    # commandstats also counts the commands a script runs: one TIME and one GET per
    # decision, one SET per admission. Anything else came from the client.
    want = {"evalsha": 12, "time": 12, "get": 12, "set": admitted}
    assert stats == want, f"expected only the 12 scripts' commands, got {stats}"


@pytest.mark.asyncio
async def test_decisions_use_the_server_clock(redis_server: RedisServer) -> None:
    hour = 3_600_000
    rate = Rate(limit=3, hours=1)
    strategy = FixedWindowStrategy()
    async with RedisBackend(redis_server.url, namespace="clock", persistent=False)() as backend:
        for _attempt in range(3):
            before = _server_ms(redis_server)
            await backend.reset()
            decision = await backend.decide("k", strategy, rate)
            after = _server_ms(redis_server)
            if before // hour == after // hour:
                break
        state = decode_state(await backend.get(backend.state_key("k", strategy)))
        assert state == (before - before % hour, 1)
        assert before + decision.reset_ms - (after - before) <= state[0] + hour
        ttl = await backend.connection.pttl(backend.state_key("k", strategy))  # type: ignore[union-attr]
        assert 0 < ttl <= decision.reset_ms


@pytest.mark.asyncio
async def test_an_explicit_clock_replaces_the_server_clock(redis_server: RedisServer) -> None:
    strategy = FixedWindowStrategy()
    backend = RedisBackend(
        redis_server.url, namespace="myclock", clock=lambda: 7_200_500, persistent=False
    )
    async with backend():
        decision = await backend.decide("k", strategy, Rate(limit=3, hours=1))
        assert decision.reset_ms == 3_600_000 - 500
        assert decode_state(await backend.get(backend.state_key("k", strategy))) == (7_200_000, 1)
        peeked = await backend.peek("k", strategy, Rate(limit=3, hours=1))
        assert (peeked.remaining, peeked.reset_ms) == (1, 3_599_500)


@pytest.mark.asyncio
async def test_unlimited_rates_never_touch_redis(
    make_redis_server: typing.Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    async with RedisBackend(server.url, namespace="unl")() as backend:
        server.command("CONFIG", "RESETSTAT")
        decision = await backend.decide("k", FixedWindowStrategy(), Rate())
        assert decision.allowed
        stats = _commandstats(server)
    assert stats == {}


@pytest.mark.asyncio
async def test_bad_costs_are_rejected_before_redis(redis_server: RedisServer) -> None:
    async with RedisBackend(redis_server.url, namespace="cost")() as backend:
        for cost in (0, -3, 1.5, True):
            with pytest.raises(ValueError, match="cost"):
                await backend.decide("k", FixedWindowStrategy(), Rate(limit=3, seconds=1), cost)  # type: ignore[arg-type]


# -- NOSCRIPT ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=IDS)
async def test_script_flush_heals_itself(redis_server: RedisServer, strategy: Strategy) -> None:
    rate = Rate(limit=3, hours=1)
    async with RedisBackend(redis_server.url, namespace="flush", persistent=False)() as backend:
        assert (await backend.decide("k", strategy, rate)).remaining == 2
        redis_server.command("SCRIPT", "FLUSH")
        assert (await backend.decide("k", strategy, rate)).remaining == 1
        redis_server.command("SCRIPT", "FLUSH")
        assert (await backend.peek("k", strategy, rate)).remaining == 0
        redis_server.command("SCRIPT", "FLUSH")
        assert await backend.increment_with_ttl("flush:counter", 2, ttl=5) == 2


@pytest.mark.asyncio
async def test_a_server_restart_heals_itself(
    make_redis_server: typing.Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    rate = Rate(limit=3, hours=1)
    strategy = FixedWindowStrategy()
    async with RedisBackend(server.url, namespace="restart")() as backend:
        assert (await backend.decide("k", strategy, rate)).remaining == 2
        server.restart()  # data and scripts are gone; the pooled connection is dead
        decision = await backend.decide("k", strategy, rate)
        assert decision.allowed
        assert decision.remaining == 2


@pytest.mark.asyncio
async def test_a_dead_server_is_a_connection_error(
    make_redis_server: typing.Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    backend = RedisBackend(server.url, namespace="dead", connect_timeout=0.5, socket_timeout=0.5)
    async with backend():
        server.kill()
        with pytest.raises(BackendConnectionError, match=f"{server.host}:{server.port}"):
            await backend.decide("k", FixedWindowStrategy(), Rate(limit=3, seconds=1))


# -- pool ---------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_hundreds_of_concurrent_decisions_wait_for_a_connection(
    redis_server: RedisServer, auto_pipeline: bool
) -> None:
    rate = Rate(limit=300, hours=1)
    strategy = FixedWindowStrategy()
    backend = RedisBackend(
        redis_server.url,
        namespace="pool",
        max_connections=4,
        persistent=False,
        auto_pipeline=auto_pipeline,
    )
    async with backend():
        decisions = await asyncio.gather(
            *(backend.decide("k", strategy, rate, now_ms=1_000) for _ in range(500))
        )
    assert sum(d.allowed for d in decisions) == 300


@pytest.mark.asyncio
async def test_a_client_with_a_small_raising_pool_is_gated(redis_server: RedisServer) -> None:
    pool = aioredis.ConnectionPool.from_url(redis_server.url, max_connections=3)
    client = aioredis.Redis.from_pool(pool)
    try:
        rate = Rate(limit=100, hours=1)
        async with RedisBackend(client, namespace="gated", persistent=False)() as backend:
            decisions = await asyncio.gather(
                *(backend.decide("k", FixedWindowStrategy(), rate, now_ms=1) for _ in range(200))
            )
        assert sum(d.allowed for d in decisions) == 100
        async with RedisBackend(client, namespace="gated", persistent=False)() as backend:
            # peek (get_stat) waits at the same gate instead of failing the pool.
            peeks = await asyncio.gather(
                *(backend.peek("k", FixedWindowStrategy(), rate, now_ms=1) for _ in range(200))
            )
        assert all(p.allowed for p in peeks)
        async with RedisBackend(client, namespace="gated", persistent=False)() as backend:
            # So do the primitives and the locks of custom strategies.
            await asyncio.gather(*(backend.increment("gated:n") for _ in range(200)))
            assert await backend.get("gated:n") == "200"

            async def locked_increment() -> None:
                async with await backend.lock("lock:n", blocking_timeout=30):
                    await backend.increment("gated:m")

            await asyncio.gather(*(locked_increment() for _ in range(50)))
            assert await backend.get("gated:m") == "50"
    finally:
        await client.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("max_connections", "auto_pipeline"),
    [(1, True), (1, False), (2, True)],
    # A pool of one connection sends every call through the client; with two, the
    # pipeline holds one of them as its lane.
    ids=["one-connection", "plain", "one-lane"],
)
async def test_a_cancelled_decision_leaves_no_stray_reply_on_its_connection(
    redis_server: RedisServer, max_connections: int, auto_pipeline: bool
) -> None:
    # A decision cancelled while its reply is pending must not leave that reply to be
    # read as the answer to the next decision on the same connection.
    backend = RedisBackend(
        redis_server.url,
        namespace="cxl",
        max_connections=max_connections,
        auto_pipeline=auto_pipeline,
        persistent=False,
        clock=lambda: 1_700_000_000_000,  # counts never cross a window boundary
    )
    strategy = FixedWindowStrategy()
    async with backend():
        await redis_server.cancel_while_paused(
            backend.decide("first", strategy, Rate(limit=5, hours=1), 1)
        )
        for i in range(3):
            got = await backend.decide("second", strategy, Rate(limit=3, hours=1), 1)
            assert (got.limit, got.remaining) == (3, 2 - i)


# -- reset ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_reset_scans_only_its_namespace(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for i in range(2500):
                pipe.set(f"r[1]*:{i}", "1")
            for other in ("r1:x", "r[1]*x:y", "r[1]:z", "other:r[1]*:w"):
                pipe.set(other, "1")
            await pipe.execute()
        backend = RedisBackend(client, namespace="r[1]*")
        async with backend():
            await backend.reset()
        remaining = sorted(k.decode() for k in await client.keys("*r*"))
        assert remaining == ["other:r[1]*:w", "r1:x", "r[1]*x:y", "r[1]:z"]
    finally:
        await client.delete("r1:x", "r[1]*x:y", "r[1]:z", "other:r[1]*:w")
        await client.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["reset", "clear"])
async def test_reset_forgets_refusals_cached_locally(
    redis_server: RedisServer, method: str
) -> None:
    # The default failure policy caches refusals in the process; a reset must drop
    # them, or the client stays refused although Redis no longer holds its state.
    from traffik.failures import decide_with_policy

    rate, strategy = Rate(limit=1, hours=1), FixedWindowStrategy()
    backend = RedisBackend(
        redis_server.url, namespace="rcache", persistent=False, clock=lambda: 1_700_000_000_000
    )
    async with backend():
        assert (await decide_with_policy(backend, "k", strategy, rate, 1)).allowed
        assert not (await decide_with_policy(backend, "k", strategy, rate, 1)).allowed
        await getattr(backend, method)()
        assert (await decide_with_policy(backend, "k", strategy, rate, 1)).allowed


# -- keys ---------------------------------------------------------------------------


def test_state_keys_carry_an_escaped_hash_tag() -> None:
    backend = RedisBackend("redis://localhost:6379/0", namespace="ns")
    strategy = FixedWindowStrategy()
    assert backend.state_key("1.2.3.4:/a", strategy) == "ns:{1.2.3.4:/a}:fw"
    assert backend.state_key("x}{y%", strategy) == "ns:{x%7D%7By%25}:fw"
    assert backend.state_key("x}", strategy) != backend.state_key("x%7D", strategy)


@pytest.mark.asyncio
async def test_a_subclassed_strategy_takes_the_generic_path(
    make_redis_server: typing.Callable[..., RedisServer],
) -> None:
    class Custom(FixedWindowStrategy):
        pass

    server = make_redis_server()
    rate = Rate(limit=2, hours=1)
    async with RedisBackend(server.url, namespace="sub")() as backend:
        server.command("CONFIG", "RESETSTAT")
        got = [await backend.decide("k", Custom(), rate, now_ms=10) for _ in range(3)]
        stats = _commandstats(server)
        assert [d.allowed for d in got] == [True, True, False]
        # Three lock acquisitions (SET NX PX) and two state writes: plain commands,
        # where the decision script would have issued two SETs in total.
        assert stats.get("set") == 5, stats
        assert (await backend.peek("k", Custom(), rate, now_ms=10)).remaining == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("auto_pipeline", [True, False])
async def test_concurrent_decisions_heal_after_script_flush(
    redis_server: RedisServer, auto_pipeline: bool
) -> None:
    # Under load the decisions go out as pipelines of EVALSHA: a NOSCRIPT inside one
    # reloads the script and retries that call.
    rate = Rate(limit=150, hours=1)
    strategy = FixedWindowStrategy()
    backend = RedisBackend(
        redis_server.url, namespace="flushload", persistent=False, auto_pipeline=auto_pipeline
    )
    async with backend():
        redis_server.command("SCRIPT", "FLUSH")
        decisions = await asyncio.gather(
            *(backend.decide("k", strategy, rate, now_ms=1_000) for _ in range(200))
        )
    assert sum(d.allowed for d in decisions) == 150
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(150))
