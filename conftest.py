"""Shared pytest fixtures for every test folder of the traffik monorepo.

Real servers, started on free local ports the first time a test asks for them:

- ``redis_server`` / ``redis_url``: one ``redis-server`` for the whole session.
- ``redis_cluster``: one 3-master, 3-replica Redis Cluster for the whole session.
  Do not kill its nodes: failover tests build their own with ``make_redis_cluster``.
- ``redis_sentinel``: one primary, one replica and three sentinels for the whole
  session (``redis_sentinel.url`` is a ``redis+sentinel://`` URL). Do not kill its
  primary: failover tests build their own with ``make_redis_sentinel``.
- ``redis_tls``: test certificates (a private CA, server and client certificates, and
  an unrelated CA), made once with ``openssl``; ``make_redis_server(tls=redis_tls)``
  starts a TLS-only server.
- ``memcached_server``: one ``memcached`` for the whole session.
- ``memcached_pool``: three more ``memcached`` for the whole session (a client-side
  pool: ``MemcachedBackend(servers=[s.address for s in memcached_pool])``).
- ``make_redis_server`` / ``make_memcached_server`` / ``make_redis_cluster`` /
  ``make_redis_sentinel``: factories for private servers a test may kill and restart; everything they
  started is stopped at the end of the test.

Session servers are shared: give every test its own keys (a unique namespace).
If a server binary is missing the test is skipped with a message naming the Debian
package to install; with ``CI=true`` in the environment it fails instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from traffik.testing.servers import (
    MemcachedServer,
    MissingBinaryError,
    RedisClusterServer,
    RedisSentinelServer,
    RedisServer,
    TLSFiles,
    tls_files,
)

_T = TypeVar("_T")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(exc: MissingBinaryError) -> None:
    message = str(exc)
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _build(factory: Callable[[], _T]) -> _T:
    try:
        return factory()
    except MissingBinaryError as exc:
        _missing(exc)
        raise  # unreachable: skip/fail raise


# Hypothesis: the machines running this suite are small and shared, so per-example
# deadlines only produce flaky failures. In CI, examples are derandomized so that a
# run can be reproduced.
try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis comes with traffik-core[testing]
    pass
else:
    _hypothesis_settings.register_profile("traffik", deadline=None)
    _hypothesis_settings.register_profile("traffik-ci", deadline=None, derandomize=True)
    _hypothesis_settings.load_profile(
        os.environ.get("HYPOTHESIS_PROFILE", "traffik-ci" if _in_ci() else "traffik")
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` shared by the whole session (do not kill it)."""
    server = _build(RedisServer)
    with server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session ``redis-server``."""
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """A 3-master, 3-replica Redis Cluster shared by the session (do not kill its nodes)."""
    cluster = _build(RedisClusterServer)
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelServer]:
    """A primary, a replica and three sentinels shared by the session (do not kill them)."""
    group = _build(RedisSentinelServer)
    with group:
        yield group


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """Certificates for TLS servers and clients (a private CA), made once per session."""
    return _build(lambda: tls_files(str(tmp_path_factory.mktemp("tls"))))


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """A ``memcached`` shared by the whole session (do not kill it)."""
    server = _build(MemcachedServer)
    with server:
        yield server


@pytest.fixture(scope="session")
def memcached_pool() -> Iterator[list[MemcachedServer]]:
    """Three ``memcached`` shared by the whole session, for pools (do not kill them)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(_build(MemcachedServer)) for _ in range(3)]


def _factory(build: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    started: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        server = _build(lambda: build(*args, **kwargs))
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in reversed(started):
            if isinstance(server, (RedisClusterServer, RedisSentinelServer)):
                server.stop()
            else:
                server.close()


@pytest.fixture
def make_redis_server() -> Iterator[Callable[..., RedisServer]]:
    """``make_redis_server(port=None, *, extra_args=())`` starts a private redis-server."""
    yield from _factory(RedisServer)


@pytest.fixture
def make_memcached_server() -> Iterator[Callable[..., MemcachedServer]]:
    """``make_memcached_server(port=None, *, extra_args=())`` starts a private memcached."""
    yield from _factory(MemcachedServer)


@pytest.fixture
def make_redis_sentinel() -> Iterator[Callable[..., RedisSentinelServer]]:
    """``make_redis_sentinel(service="mymaster", *, replicas=1, sentinels=3)`` starts a
    private Sentinel group (a primary, replicas, sentinels) a test may kill."""
    yield from _factory(RedisSentinelServer)


@pytest.fixture
def make_redis_cluster() -> Iterator[Callable[..., RedisClusterServer]]:
    """``make_redis_cluster(masters=3, replicas_per_master=1)`` starts a private cluster."""
    yield from _factory(RedisClusterServer)
