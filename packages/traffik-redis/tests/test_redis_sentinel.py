"""RedisBackend on a primary behind Sentinel: the URL, the kit, and a failover."""

from __future__ import annotations

import asyncio
import gc
import typing
import warnings

import pytest

from traffik.exceptions import BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.redis._sentinel import parse_sentinel_url
from traffik.strategies import FixedWindowStrategy
from traffik.testing import BackendConformance
from traffik.testing.servers import RedisSentinelServer

# -- the URL -----------------------------------------------------------------------


def test_the_limits_url_form_is_parsed() -> None:
    parsed = parse_sentinel_url("redis+sentinel://u%40x:p%3Aw@h1:26379,h2:26380/cache/3")
    assert parsed.sentinels == (("h1", 26379), ("h2", 26380))
    assert (parsed.service, parsed.db) == ("cache", 3)
    assert parsed.auth() == {"username": "u@x", "password": "p:w"}
    only_password = parse_sentinel_url("redis+sentinel://:secret@h1:26379/cache")
    assert only_password.auth() == {"password": "secret"}
    assert only_password.db == 0
    assert parse_sentinel_url("redis+sentinel://h1:26379/cache").auth() == {}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://h1:26379", "names no service"),
        ("redis+sentinel://h1:26379/", "names no service"),
        ("redis+sentinel://h1/cache", "'h1' is not host:port"),
        ("redis+sentinel://h1:26379,:1/cache", "':1' is not host:port"),
        ("redis+sentinel://h1:99999/cache", "is not host:port"),
        ("redis+sentinel://h1:26379/cache/x", "is not /service_name or /service_name/db"),
        ("redis+sentinel://h1:26379/cache?ssl=1", "pass options as keyword arguments"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match="redis\\+sentinel://") as info:
        RedisBackend(url)
    assert why in str(info.value)


def test_the_password_of_a_bad_url_is_not_shown() -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisBackend("redis+sentinel://me:hunter2@h1:26379")
    assert "hunter2" not in str(info.value)
    assert "me:***@h1:26379" in str(info.value)


def test_sentinel_kwargs_need_a_sentinel_url() -> None:
    with pytest.raises(ConfigurationError, match="redis\\+sentinel:// URL only"):
        RedisBackend("redis://localhost:6379/0", sentinel_kwargs={"password": "x"})


# -- on real servers -----------------------------------------------------------------


@pytest.mark.redis
class TestRedisSentinelConformance(BackendConformance):
    @pytest.fixture(autouse=True)
    def _group(self, redis_sentinel: RedisSentinelServer) -> None:
        self.group = redis_sentinel

    def make_backend(self, namespace: str) -> RedisBackend:
        return RedisBackend(self.group.url, namespace=namespace)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_decisions_go_to_the_primary_sentinel_names(
    redis_sentinel: RedisSentinelServer,
) -> None:
    backend = RedisBackend(redis_sentinel.url, namespace="sentinel-primary")
    async with backend():
        decision = await backend.decide("k", FixedWindowStrategy(), Rate.parse("5/m"))
        assert decision.allowed
        assert "mymaster" in repr(backend)
        key = backend.state_key("k", FixedWindowStrategy())
        assert redis_sentinel.server(*redis_sentinel.primary_address()).command("EXISTS", key)
        await backend.reset()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_sentinel_kwargs_reach_the_sentinel_connections(
    redis_sentinel: RedisSentinelServer,
) -> None:
    # The sentinels have no password: a wrong one given to them alone fails discovery,
    # which proves the option reached them (and only them: the servers have none either).
    backend = RedisBackend(
        redis_sentinel.url,
        namespace="sentinel-kwargs",
        sentinel_kwargs={"username": "nobody", "password": "wrong"},
    )
    with pytest.raises(BackendError, match="No master found for 'mymaster'"):
        await backend.initialize()


#: redis-py's Sentinel client loses connections to the sentinels during a failover
#: (garbage-collected while open: "ResourceWarning: unclosed Connection"), with no
#: traffik code involved: a bare Sentinel(...).master_for() client and 8 tasks calling
#: INCR through a SIGKILL of the primary show it (8 per failover on redis-py 5.0.2,
#: about 1 failover in 4 on 8.2). Failover tests ignore that warning only.
REDIS_PY_SENTINEL_LEAK = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.asyncio
@REDIS_PY_SENTINEL_LEAK
@pytest.mark.parametrize("auto_pipeline", [True, False], ids=["pipelined", "plain"])
async def test_decisions_follow_the_primary_through_a_failover(
    make_redis_sentinel: typing.Callable[..., RedisSentinelServer], auto_pipeline: bool
) -> None:
    """SIGKILL the primary under load: once Sentinel promoted the replica, every lane
    sends its decisions there (with the pipeline, they once kept reconnecting to the
    dead primary's address forever)."""
    group = make_redis_sentinel()
    backend = RedisBackend(
        group.url, namespace="sentinel-failover", auto_pipeline=auto_pipeline, failure_policy=None
    )
    strategy, rate = FixedWindowStrategy(), Rate.parse("100000/m")
    promoted: asyncio.Event = asyncio.Event()
    after_promotion: list[bool] = []

    async def client(i: int) -> None:
        for _ in range(1500):  # bounded by count; ends once enough answers came back
            try:
                await backend.decide(f"c{i}", strategy, rate)
                ok = True
            except BackendError:
                ok = False
                await asyncio.sleep(0.01)
            if promoted.is_set():
                after_promotion.append(ok)
                if sum(after_promotion) >= 200:
                    return
            await asyncio.sleep(0)

    async def failover() -> tuple[str, int]:
        await asyncio.sleep(0.2)
        old = group.kill_primary()
        new = await asyncio.to_thread(group.wait_for_failover, old)
        promoted.set()
        return new

    async with backend():
        results = await asyncio.gather(failover(), *(client(i) for i in range(8)))
        new_primary = group.server(*results[0])
        assert sum(after_promotion) >= 200, "decisions never came back after the failover"
        # Within a few calls of the promotion every lane is on the new primary.
        assert after_promotion[-150:] == [True] * 150
        key = backend.state_key("c0", strategy)
        assert new_primary.command("EXISTS", key) == 1
    forget_lost_sentinel_connections()


def forget_lost_sentinel_connections() -> None:
    """Collect, without a warning, the sentinel connections redis-py loses in a failover
    (see REDIS_PY_SENTINEL_LEAK), here rather than in whichever test runs next."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _client_ids(server: typing.Any) -> set[str]:
    """Ids of the server's client connections, but the one asking."""
    lines = str(server.command("CLIENT", "LIST")).splitlines()
    return {line.split()[0] for line in lines if "cmd=client|list" not in line}


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_lane_that_meets_a_demoted_primary_takes_a_new_connection(
    make_redis_server: typing.Callable[..., typing.Any],
) -> None:
    """A READONLY reply (the server became a replica, as an old primary does when it
    comes back after a failover) fails the call, and the lane drops that connection:
    the next call connects again (through the sentinels, with a Sentinel client)."""
    primary, other = make_redis_server(), make_redis_server()
    backend = RedisBackend(primary.url, namespace="demoted", failure_policy=None)
    strategy, rate = FixedWindowStrategy(), Rate.parse("100/m")
    async with backend():
        await backend.decide("k", strategy, rate)
        primary.command("REPLICAOF", other.host, str(other.port))
        try:
            before = _client_ids(primary)
            with pytest.raises(BackendError, match="ReadOnlyError"):
                await backend.decide("k", strategy, rate)
        finally:
            primary.command("REPLICAOF", "NO", "ONE")
        assert (await backend.decide("k", strategy, rate)).allowed
        assert _client_ids(primary) - before, "the lane kept the connection that met READONLY"
