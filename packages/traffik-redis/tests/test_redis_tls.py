"""RedisBackend over TLS (``rediss://``) with a private CA, and client certificates."""

from __future__ import annotations

import typing

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from traffik.exceptions import BackendConnectionError
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.redis._errors import ACL_COMMANDS, backend_error
from traffik.strategies import FixedWindowStrategy
from traffik.testing.servers import RedisClusterServer, RedisServer, TLSFiles

pytestmark = pytest.mark.redis

MakeServer = typing.Callable[..., RedisServer]


@pytest.fixture(scope="module")
def tls_server(redis_tls: TLSFiles) -> typing.Iterator[RedisServer]:
    """A TLS-only redis-server that requires a client certificate."""
    with RedisServer(tls=redis_tls, tls_auth_clients="yes") as server:
        yield server


def _url(server: RedisServer, tls: TLSFiles, **kwargs: typing.Any) -> str:
    return f"{server.url}?{tls.url_query(**kwargs)}"


@pytest.mark.asyncio
async def test_a_rediss_url_with_a_private_ca_and_a_client_certificate_works(
    tls_server: RedisServer, redis_tls: TLSFiles
) -> None:
    # (The conformance kit runs over TLS in test_redis_acl.py, with a least-privilege user.)
    backend = RedisBackend(_url(tls_server, redis_tls), namespace="tls-url")
    async with backend():
        strategy, rate = FixedWindowStrategy(), Rate.parse("2/m")
        allowed = [(await backend.decide("k", strategy, rate)).allowed for _ in range(3)]
        assert allowed == [True, True, False]
        lock = await backend.get_lock("tls-url:lock")
        assert await lock.acquire(blocking=False)
        await lock.release()
        await backend.set("tls-url:x", "1")
        assert await backend.get("tls-url:x") == "1"
        await backend.reset()


@pytest.mark.asyncio
async def test_a_client_passed_in_with_an_ssl_context_works(
    tls_server: RedisServer, redis_tls: TLSFiles
) -> None:
    client = Redis(
        host=tls_server.host,
        port=tls_server.port,
        ssl=True,
        ssl_ca_certs=redis_tls.ca_cert,
        ssl_certfile=redis_tls.client_cert,
        ssl_keyfile=redis_tls.client_key,
    )
    try:
        backend = RedisBackend(client, namespace="tls-client")
        async with backend():
            assert (await backend.decide("k", FixedWindowStrategy(), Rate.parse("1/m"))).allowed
            assert not (await backend.decide("k", FixedWindowStrategy(), Rate.parse("1/m"))).allowed
            await backend.reset()
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_wrong_ca_fails_initialize_naming_the_certificate(
    tls_server: RedisServer, redis_tls: TLSFiles
) -> None:
    backend = RedisBackend(
        _url(tls_server, redis_tls, ca_cert=redis_tls.other_ca_cert), namespace="tls-wrong-ca"
    )
    with pytest.raises(BackendConnectionError) as info:
        await backend.initialize()
    message = str(info.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "ssl_ca_certs" in message
    assert "running and reachable" not in message


@pytest.mark.asyncio
async def test_a_missing_client_certificate_fails_initialize_saying_so(
    tls_server: RedisServer, redis_tls: TLSFiles
) -> None:
    backend = RedisBackend(
        _url(tls_server, redis_tls, client_cert=False), namespace="tls-no-client-cert"
    )
    with pytest.raises(BackendConnectionError) as info:
        await backend.initialize()
    message = str(info.value)
    assert "TLS" in message
    assert "ssl_certfile" in message
    assert "running and reachable" not in message


@pytest.mark.asyncio
async def test_plain_redis_to_a_tls_port_fails_initialize_saying_so(
    tls_server: RedisServer,
) -> None:
    url = tls_server.url.replace("rediss://", "redis://")
    backend = RedisBackend(url, namespace="tls-plain", connect_timeout=1, socket_timeout=1)
    with pytest.raises(BackendConnectionError) as info:
        await backend.initialize()
    assert "Redis at" in str(info.value)


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.asyncio
async def test_redis_cluster_over_tls_with_a_least_privilege_user(redis_tls: TLSFiles) -> None:
    """Three TLS-only masters (bus and replication over TLS too), reached through a
    rediss:// URL with the documented ACL plus what redis-py's cluster client reads."""
    # redis-py's cluster client reads the slot map and the command table (and INFO in
    # redis-py 5.0).
    commands = [*ACL_COMMANDS.split(), "+cluster|slots", "+command", "+info"]
    with RedisClusterServer(replicas_per_master=0, tls=redis_tls) as cluster:
        for host, port in cluster.nodes:
            cluster.server(host, port).command(
                "ACL", "SETUSER", "traffik", "on", ">pw", "~tls-cluster:*", "-@all", *commands
            )
        url = cluster.url.replace("rediss://", "rediss://traffik:pw@")
        # Without +cluster|slots, redis-py says the node is not a cluster node: the
        # message says what else it may mean.
        cluster.server(*cluster.nodes[0]).command("ACL", "SETUSER", "no-slots", "on", ">pw")
        cluster.server(*cluster.nodes[0]).command("ACL", "SETUSER", "no-slots", "-@all")
        denied = RedisBackend(
            cluster.url.replace("rediss://", "rediss://no-slots:pw@") + f"?{redis_tls.url_query()}",
            namespace="tls-cluster",
            cluster=True,
        )
        with pytest.raises(BackendConnectionError) as info:
            await denied.initialize()
        # redis-py 8 says "Cluster mode is not enabled", 5.0 names the INFO it may not run.
        assert "+cluster|slots" in str(info.value)
        assert "running and reachable" not in str(info.value)
        backend = RedisBackend(
            f"{url}?{redis_tls.url_query()}", namespace="tls-cluster", cluster=True
        )
        async with backend():
            assert backend.is_cluster
            strategy, rate = FixedWindowStrategy(), Rate.parse("1/m")
            keys = [f"k{i}" for i in range(12)]
            domains = {backend.failure_domain(key) for key in keys}
            assert len(domains) == 3  # the keys reach every master
            assert [(await backend.decide(k, strategy, rate)).allowed for k in keys] == [True] * 12
            assert not any([(await backend.decide(k, strategy, rate)).allowed for k in keys])
            await backend.reset()


@pytest.mark.parametrize("tls", [True, False])
def test_a_reset_during_the_handshake_is_explained_as_tls_only_on_tls(tls: bool) -> None:
    # Under TLS 1.3 the server checks the client certificate after the client's side
    # of the handshake: its reset can reach the client before its alert does.
    error = RedisConnectionError("Error while reading from x:1 : (104, 'Connection reset by peer')")
    message = str(backend_error("x:1", "initialize", error, tls=tls))
    assert ("ssl_certfile" in message) is tls
    assert ("running and reachable" in message) is not tls
