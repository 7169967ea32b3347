"""Turning the ``connection`` argument into a redis.asyncio client.

``connection`` is a URL (``redis://``, ``rediss://``, ``unix://``, or
``redis+sentinel://``: see ``_sentinel``), a ``Redis`` or ``RedisCluster`` instance, or
a zero-argument factory (sync or async) returning one. Clients built from a URL or a factory belong
to the backend, which closes them; an instance passed in belongs to the caller.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from traffik.exceptions import ConfigurationError
from traffik.redis._sentinel import is_sentinel_url, parse_sentinel_url

__all__ = ["Client", "ConnectionSettings", "Opened", "describe_url", "open_client", "validate_url"]

Client: typing.TypeAlias = "Redis | RedisCluster"


@dataclass(frozen=True)
class ConnectionSettings:
    """How the backend builds clients from a URL."""

    cluster: bool
    max_connections: int
    pool_timeout: float
    connect_timeout: float
    socket_timeout: float
    #: Options of the connections to the sentinels (a ``redis+sentinel://`` URL).
    sentinel_kwargs: typing.Mapping[str, typing.Any] | None = None


@dataclass(frozen=True)
class Opened:
    """A client ready for use."""

    client: Client
    #: True when the backend created it and must close it.
    owned: bool
    #: Bounds concurrent commands when the client's pool would raise instead of waiting.
    gate: asyncio.Semaphore | None
    #: "host:port" (or the socket path) for error messages.
    where: str
    #: The Sentinel a ``redis+sentinel://`` URL made: its clients close with ``client``.
    sentinel: Sentinel | None = None

    async def aclose(self) -> None:
        """Close the client and the sentinel clients (call only when ``owned``)."""
        try:
            await self.client.aclose()
        finally:
            if self.sentinel is not None:
                for node in self.sentinel.sentinels:
                    await node.aclose()


def validate_url(url: str) -> str:
    """Check a Redis URL; return "host:port" for messages. Raises ConfigurationError."""
    if is_sentinel_url(url):
        return parse_sentinel_url(url).describe()
    try:
        kwargs = parse_url(url)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{url!r} is not a Redis URL ({exc}); use redis://host:port/db, rediss:// for TLS, "
            f"unix:///path/to/socket or redis+sentinel://host:port[,host:port...]/service."
        ) from None
    return describe_url(kwargs)


def describe_url(kwargs: typing.Mapping[str, typing.Any]) -> str:
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _describe_client(client: Client) -> str:
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes() or client.nodes_manager.startup_nodes.values()
        return ", ".join(sorted(f"{node.host}:{node.port}" for node in nodes)) or "the cluster"
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return f"service {pool.service_name!r} (Sentinel)"
    return describe_url(pool.connection_kwargs)


def _retry() -> Retry:
    # One quick retry on a broken connection (a server restart, an idle socket the
    # server closed). Timeouts are not retried: the script may have run already, and
    # running it twice would charge the client twice.
    return Retry(
        ExponentialBackoff(cap=0.1, base=0.01), 1, supported_errors=(RedisConnectionError,)
    )


def _from_url(url: str, settings: ConnectionSettings) -> Client:
    common: dict[str, typing.Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
    }
    if settings.cluster:
        return RedisCluster.from_url(url, max_connections=settings.max_connections, **common)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.max_connections,
        timeout=settings.pool_timeout,
        retry=_retry(),
        **common,
    )
    return Redis.from_pool(pool)


def _from_sentinel_url(url: str, settings: ConnectionSettings) -> tuple[Redis, Sentinel]:
    parsed = parse_sentinel_url(url)
    common: dict[str, typing.Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.socket_timeout,
        **parsed.auth(),
    }
    sentinel = Sentinel(
        parsed.sentinels,
        sentinel_kwargs={**common, **(settings.sentinel_kwargs or {})},
        **common,
    )
    client = sentinel.master_for(
        parsed.service, db=parsed.db, max_connections=settings.max_connections, retry=_retry()
    )
    return client, sentinel


def _gate(client: Client, settings: ConnectionSettings) -> asyncio.Semaphore | None:
    if isinstance(client, RedisCluster):
        # A cluster node raises MaxConnectionsError past its pool size: queue here instead.
        nodes = client.get_nodes()
        per_node = min((node.max_connections for node in nodes), default=settings.max_connections)
        return asyncio.Semaphore(min(settings.max_connections, per_node))
    pool = client.connection_pool
    if isinstance(pool, BlockingConnectionPool):
        return None
    return asyncio.Semaphore(
        max(1, int(getattr(pool, "max_connections", settings.max_connections)))
    )


async def open_client(source: typing.Any, settings: ConnectionSettings) -> Opened:
    """Build or fetch the client for ``source`` (connections open lazily or in ``initialize``)."""
    owned = True
    sentinel: Sentinel | None = None
    if isinstance(source, str) and is_sentinel_url(source):
        client: typing.Any
        client, sentinel = _from_sentinel_url(source, settings)
        return Opened(client, owned, _gate(client, settings), _describe_client(client), sentinel)
    if isinstance(source, str):
        client = _from_url(source, settings)
    elif isinstance(source, (Redis, RedisCluster)):
        client, owned = source, False
    elif callable(source):
        client = source()
        if inspect.isawaitable(client) and not isinstance(client, (Redis, RedisCluster)):
            client = await client
    else:
        raise ConfigurationError(
            f"connection must be a Redis URL, a redis.asyncio Redis or RedisCluster, or a "
            f"zero-argument factory returning one; got {type(source).__name__}."
        )
    if not isinstance(client, (Redis, RedisCluster)):
        raise ConfigurationError(
            f"The connection factory returned {type(client).__name__}; it must return a "
            f"redis.asyncio.Redis or redis.asyncio.RedisCluster (not the synchronous redis.Redis)."
        )
    if isinstance(client, RedisCluster):
        # Connects to the startup nodes and learns the slot map.
        await client.initialize()
    return Opened(client, owned, _gate(client, settings), _describe_client(client))
