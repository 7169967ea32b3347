"""RedisBackend: one round trip per decision, the server's clock, Redis Cluster ready."""

from __future__ import annotations

import asyncio
import math
import typing

from redis.asyncio import RedisCluster
from traffik.backends.base import BackendCapabilities, Clock, ThrottleBackend
from traffik.exceptions import (
    BackendConnectionError,
    BackendError,
    ConfigurationError,
)
from traffik.leases import LeaseGrant
from traffik.redis._adjust import adjust_args, adjust_script
from traffik.redis._cluster import ClusterRouter
from traffik.redis._connection import Client, ConnectionSettings, Opened, open_client, validate_url
from traffik.redis._errors import backend_error, gated
from traffik.redis._keys import escape_tag, tagged_key
from traffik.redis._leases import LEASE_SCRIPTS, grant_of, run_lease
from traffik.redis._pipeline import AutoPipeline
from traffik.redis._scan import delete_namespace
from traffik.redis._scripts import (
    SCRIPT_OF,
    DecisionPlan,
    LuaScript,
    ScriptSet,
    decision_args,
    keep_plan,
    pack_args,
    run_script,
    to_decision,
)
from traffik.redis._sentinel import is_sentinel_url
from traffik.redis.lock import DEFAULT_LOCK_TIMEOUT, AsyncRedisLock
from traffik.strategies import UNLIMITED_DECISION, check_cost, decode_state
from traffik.types import HTTPConnectionT

if typing.TYPE_CHECKING:
    from traffik.decisions import Decision
    from traffik.failures import FailurePolicy
    from traffik.rates import Rate
    from traffik.strategies import Strategy

__all__ = ["DEFAULT_MAX_CONNECTIONS", "RedisBackend"]

#: Connections per client built from a URL; more concurrent calls wait for one.
DEFAULT_MAX_CONNECTIONS = 64


class RedisBackend(ThrottleBackend[Client, HTTPConnectionT]):
    """Throttling state in Redis or Redis Cluster, shared by every app instance.

    ``RedisBackend(connection, namespace, persistent=True)`` as in the traffik
    1.0.0b2 API reference; every other parameter is keyword-only.

    ``connection`` is a URL (``redis://host:port/db``, ``rediss://``, ``unix://``, or
    ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``),
    a ``redis.asyncio.Redis`` or ``RedisCluster``, or a zero-argument factory (sync
    or async) returning one. With a Sentinel URL the client follows the primary
    Sentinel names; the URL's user and password go to the Redis servers and to the
    sentinels, and ``sentinel_kwargs`` (a mapping) adds or replaces options of the
    connections to the sentinels only (``{"password": ...}`` when they have their own). Clients built from a URL or a factory are closed by
    :meth:`close`; a client instance you pass in is yours to close. With
    ``cluster=True`` a URL names any node of a Redis Cluster.

    Each built-in strategy runs as one Lua script: one ``EVALSHA`` per decision, no
    lock, time from the server's ``TIME`` (or from ``clock`` if given). Other
    strategies use the generic lock + get + set path of the base class, with locks
    from :class:`~traffik.redis.lock.AsyncRedisLock`.

    On a single Redis with ``auto_pipeline`` (the default), decisions and peeks go
    out on up to two connections the backend takes from the client's pool and
    keeps until :meth:`close` (never the pool's last one), batched into pipelines
    under load. Cluster clients, ``auto_pipeline=False``, and pools of one
    connection send each call through the client on its own.

    URL clients keep at most ``max_connections`` connections; more concurrent calls
    wait up to ``pool_timeout`` seconds for one. ``connect_timeout`` and
    ``socket_timeout`` (seconds) bound connecting and each reply. ``persistent``
    defaults to True: leaving a ``backend(...)`` context keeps the data, since other
    app instances share it. ``failure_policy`` (a :class:`traffik.failures.FailurePolicy`,
    default :data:`~traffik.failures.DEFAULT_NETWORK_POLICY`) says what throttles do
    when Redis fails or is slow.
    """

    capabilities = BackendCapabilities(
        shared_state=True,
        injectable_clock=True,
        distributed_locks=True,
        negative_counters=True,
        server_clock=True,
        leases=True,
    )

    def __init__(
        self,
        connection: typing.Any,
        namespace: str = "traffik",
        persistent: bool = True,
        *,
        identifier: typing.Any = None,
        handle_throttled: typing.Any = None,
        cluster: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        socket_timeout: float = 5.0,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        auto_pipeline: bool = True,
        clock: Clock | None = None,
        failure_policy: FailurePolicy | typing.Literal["default"] | None = "default",
        sentinel_kwargs: typing.Mapping[str, typing.Any] | None = None,
    ) -> None:
        super().__init__(
            None,
            namespace=namespace,
            identifier=identifier,
            handle_throttled=handle_throttled,
            persistent=persistent,
            clock=clock,
            failure_policy=failure_policy,
        )
        if "{" in namespace or "}" in namespace:
            raise ConfigurationError(
                f"namespace {namespace!r} contains a brace; Redis Cluster would read it as a "
                f"hash tag. Use a namespace without '{{' and '}}'."
            )
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 1
        ):
            raise ConfigurationError(
                f"max_connections must be a positive int, got {max_connections!r}."
            )
        for name, value in (
            ("pool_timeout", pool_timeout),
            ("connect_timeout", connect_timeout),
            ("socket_timeout", socket_timeout),
            ("lock_timeout", lock_timeout),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, got {value!r}."
                )
        self._where = "the Redis server"
        self._tls = isinstance(connection, str) and connection.startswith("rediss")
        if isinstance(connection, str):
            self._where = validate_url(connection)
        if sentinel_kwargs is not None and not (
            isinstance(connection, str) and is_sentinel_url(connection)
        ):
            raise ConfigurationError(
                "sentinel_kwargs applies to a redis+sentinel:// URL only; with a client or a "
                "factory, pass the options to redis.asyncio.sentinel.Sentinel yourself."
            )
        elif connection is None:
            raise ConfigurationError(
                "RedisBackend needs a connection: a URL such as 'redis://localhost:6379/0', a "
                "redis.asyncio client, or a factory returning one."
            )
        self._source = connection
        self._settings = ConnectionSettings(
            cluster=cluster,
            max_connections=max_connections,
            pool_timeout=float(pool_timeout),
            connect_timeout=float(connect_timeout),
            socket_timeout=float(socket_timeout),
            sentinel_kwargs=None if sentinel_kwargs is None else dict(sentinel_kwargs),
        )
        self.lock_timeout = float(lock_timeout)
        self._server_clock = clock is None
        self.auto_pipeline = auto_pipeline
        self._opened: Opened | None = None
        self._scripts: ScriptSet | None = None
        # The decision path: lanes to a single Redis, or a router to each master.
        self._pipeline: AutoPipeline | ClusterRouter | None = None
        # By (id(strategy), id(rate), cost); a plan holds both objects, so their ids
        # cannot be reused while it is kept.
        self._plans: dict[tuple[int, int, int], DecisionPlan] = {}

    def __repr__(self) -> str:
        return f"RedisBackend(namespace={self.namespace!r}, server={self._where!r})"

    # -- errors -----------------------------------------------------------------

    def wrap_error(self, operation: str, error: Exception) -> BackendError:
        """A client error as BackendConnectionError (unreachable) or BackendError, naming the server."""
        return backend_error(self._where, operation, error, tls=self._tls)

    def _not_open(self) -> BackendConnectionError:
        return BackendConnectionError(
            f"{self!r} is not initialised or was closed; use 'async with backend(...)' "
            f"or await backend.initialize() first."
        )

    def _client(self) -> Client:
        client = self.connection
        if client is None:
            raise self._not_open()
        return client

    def _ready(self) -> tuple[Opened, ScriptSet]:
        opened, scripts = self._opened, self._scripts
        if opened is None or scripts is None:
            raise self._not_open()
        return opened, scripts

    @property
    def _gate(self) -> asyncio.Semaphore | None:
        # Bounds concurrent commands on a client whose pool raises instead of waiting.
        opened = self._opened
        return None if opened is None else opened.gate

    @property
    def is_cluster(self) -> bool:
        """True when the client is a Redis Cluster client."""
        return isinstance(self.connection, RedisCluster)

    # -- lifecycle ----------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect, check the server answers (within ``connect_timeout``), and load the scripts."""
        if self.connection is not None:
            return
        timeout = self._settings.connect_timeout + self._settings.socket_timeout
        opened: Opened | None = None
        pipeline: AutoPipeline | ClusterRouter | None = None
        try:
            opened = await asyncio.wait_for(open_client(self._source, self._settings), timeout)
            self._where = opened.where
            scripts = ScriptSet()
            await asyncio.wait_for(self._prepare(opened.client, scripts), timeout)
            if not self.auto_pipeline:
                pass
            elif isinstance(opened.client, RedisCluster):
                router = ClusterRouter.open(opened.client, self._settings.pool_timeout)
                pipeline = await asyncio.wait_for(router, timeout)
            else:
                pipeline = AutoPipeline.for_client(opened.client, opened.gate)
        except BaseException:
            await self._discard(opened)
            raise
        if self._opened is not None:  # another task initialised meanwhile
            if isinstance(pipeline, ClusterRouter):
                await pipeline.aclose()
            await self._discard(opened)
            return
        self._opened, self._scripts, self._pipeline = opened, scripts, pipeline
        self.connection = opened.client

    @staticmethod
    async def _prepare(client: Client, scripts: ScriptSet) -> None:
        await client.ping()
        # Load now so that the first decision is one round trip; after a restart or
        # SCRIPT FLUSH, a NOSCRIPT reply loads the script again (run_script, AutoPipeline).
        for source in scripts.sources():
            await client.script_load(source)

    @staticmethod
    async def _discard(opened: Opened | None) -> None:
        if opened is not None and opened.owned:
            try:
                await opened.aclose()
            except Exception:  # the connection is being dropped anyway
                pass

    async def close(self) -> None:
        """Close the client if this backend created it (from a URL or a factory)."""
        opened, self._opened, self._scripts = self._opened, None, None
        pipeline, self._pipeline = self._pipeline, None
        self.connection = None
        try:
            if pipeline is not None:
                await pipeline.aclose()  # its connections go back to the pool(s) first
        finally:
            if opened is not None and opened.owned:
                await opened.aclose()

    async def reset(self) -> None:
        """Delete every key of the namespace: SCAN on every master, UNLINK in batches."""
        await delete_namespace(self._client(), self.namespace)

    # -- primitives -----------------------------------------------------------------

    @gated
    async def get(self, key: str) -> str | None:
        return _text(await self._client().get(key))

    @gated
    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        if expire is None:
            await self._client().set(key, str(value))
            return
        if expire <= 0:
            raise ValueError(f"expire must be a positive number of seconds, got {expire}.")
        await self._client().set(key, str(value), px=max(1, math.ceil(expire * 1000)))

    @gated
    async def delete(self, key: str) -> bool:
        return bool(await self._client().delete(key))

    @gated
    async def increment(self, key: str, amount: int = 1) -> int:
        return int(await self._client().incrby(key, amount))

    @gated
    async def decrement(self, key: str, amount: int = 1) -> int:
        return int(await self._client().decrby(key, amount))

    @gated
    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        if ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl}.")
        opened, scripts = self._ready()
        ttl_ms = max(1, math.ceil(ttl * 1000))
        return int(await run_script(opened.client, scripts["incr_ttl"], key, (amount, ttl_ms)))

    @gated
    async def expire(self, key: str, seconds: float) -> bool:
        return bool(await self._client().pexpire(key, max(1, math.ceil(seconds * 1000))))

    @gated
    async def multi_get(self, *keys: str) -> list[str | None]:
        if not keys:
            return []
        client = self._client()
        if isinstance(client, RedisCluster):
            # MGET must stay in one slot on a cluster; this splits by slot and reorders.
            values = await client.mget_nonatomic(list(keys))
        else:
            values = await client.mget(list(keys))
        return [_text(value) for value in values]

    @gated
    async def get_lock(self, name: str) -> AsyncRedisLock:
        return AsyncRedisLock(self._client(), name, timeout=self.lock_timeout, gate=self._gate)

    def failure_domain(self, key: str) -> typing.Hashable:
        """The master serving ``key``'s slot on a Redis Cluster (``"host:port"``); None
        on a single Redis (one domain).

        Each master has its own circuit breaker and in-flight bound, so a master that
        dies opens its circuit only: the keys of the other masters keep their exact
        decisions, and after a failover the slot's new master starts closed.
        """
        pipeline = self._pipeline
        if isinstance(pipeline, ClusterRouter):
            return pipeline.domain(pipeline.encode(tagged_key(self.namespace, key, "")))
        client = self.connection
        if not isinstance(client, RedisCluster):
            return None
        try:
            node = client.get_node_from_key(tagged_key(self.namespace, key, ""))
        except Exception:  # no slot map yet (the cluster is being reshaped)
            return None
        return None if node is None else node.name

    # -- decisions --------------------------------------------------------------------

    def state_key(self, key: str, strategy: Strategy) -> str:
        """``namespace:{key}:strategy``; the throttle key is escaped into a hash tag."""
        return tagged_key(self.namespace, key, strategy.storage_suffix())

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        """Charge ``cost`` to ``key`` in one EVALSHA (built-in strategies) or the generic path."""
        pipeline = self._pipeline
        if now_ms is None and pipeline is not None and cost.__class__ is int:
            plan = self._plans.get((id(strategy), id(rate), cost))
            if plan is not None:
                # The strategy, rate and cost were checked when the plan was made.
                raw = pipeline.encode(f"{self.namespace}:{{{escape_tag(key)}}}:{plan.suffix}")
                return to_decision(await pipeline.call(plan.script, raw, plan.args))
        name = SCRIPT_OF.get(type(strategy))
        if name is None:
            return await super().decide(key, strategy, rate, cost, now_ms=now_ms)
        check_cost(cost)
        if rate.unlimited:
            return UNLIMITED_DECISION
        if now_ms is None and not self._server_clock:
            now_ms = self.clock()
        args = decision_args(strategy, rate, cost, now_ms)
        opened, scripts = self._ready()
        script, suffix = scripts[name], strategy.storage_suffix()
        skey = tagged_key(self.namespace, key, suffix)
        pipeline = self._pipeline
        if pipeline is not None:
            packed = pack_args(args)
            if now_ms is None:  # the server's clock: the same ARGV every time
                keep_plan(self._plans, DecisionPlan(strategy, rate, script, suffix, packed), cost)
            reply = await pipeline.call(script, pipeline.encode(skey), packed)
        elif opened.gate is None:
            reply = await run_script(opened.client, script, skey, args)
        else:
            async with opened.gate:
                reply = await run_script(opened.client, script, skey, args)
        return to_decision(reply)

    async def adjust(
        self,
        key: str,
        strategy: Strategy,
        rate: Rate,
        delta: int,
        *,
        age_ms: int = 0,
        now_ms: int | None = None,
    ) -> Decision:
        """Give back or charge more in one EVALSHA on the key's server, with its clock.

        Built-in strategies run their adjustment script (one round trip, Redis and
        Redis Cluster alike); other adjustable strategies take the generic path.
        """
        script = adjust_script(strategy)
        if script is None:
            return await super().adjust(key, strategy, rate, delta, age_ms=age_ms, now_ms=now_ms)
        if now_ms is None and not self._server_clock:
            now_ms = self.clock()
        args = adjust_args(strategy, rate, delta, age_ms, now_ms)
        if rate.unlimited:
            return UNLIMITED_DECISION
        now, raw = await self._read_script(script, self.state_key(key, strategy), args)
        return strategy.snapshot(decode_state(raw), now, rate)

    async def peek(
        self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None
    ) -> Decision:
        """The decision a one-unit request would get now, read with the clock of the key's server."""
        if type(strategy) not in SCRIPT_OF:
            return await super().peek(key, strategy, rate, now_ms=now_ms)
        if rate.unlimited:
            return UNLIMITED_DECISION
        if now_ms is None and not self._server_clock:
            now_ms = self.clock()
        _, scripts = self._ready()
        args = ("" if now_ms is None else now_ms,)
        skey = self.state_key(key, strategy)
        now, raw = await self._read_script(scripts["peek"], skey, args)
        return strategy.peek(decode_state(raw), now, rate)

    async def _read_script(
        self, script: LuaScript, skey: str, args: tuple[int | str, ...]
    ) -> tuple[int, typing.Any]:
        """Run a script that replies ``{now_ms, state text}`` (peek, adjustments)."""
        opened, _ = self._ready()
        pipeline = self._pipeline
        if pipeline is not None:
            now, raw = await pipeline.call(script, pipeline.encode(skey), pack_args(args))
        elif opened.gate is None:
            now, raw = await run_script(opened.client, script, skey, args)
        else:
            async with opened.gate:
                now, raw = await run_script(opened.client, script, skey, args)
        return int(now), raw

    # -- leases (traffik.leases): one script per operation, see _leases.py ---------

    def lease_key(self, key: str) -> str:
        """``namespace:{key}:lease``: one hash slot per throttle key."""
        return tagged_key(self.namespace, key, "lease")

    def _lease_now(self, now_ms: int | None) -> int | str:
        if now_ms is None:
            return "" if self._server_clock else self.clock()
        return now_ms

    async def _lease(self, op: str, key: str, args: tuple[int | str, ...]) -> typing.Any:
        # As decide does: the auto-pipeline when there is one, else EVALSHA (gated).
        pipeline = self._pipeline
        if pipeline is not None:
            lease_key = pipeline.encode(self.lease_key(key))
            return await pipeline.call(LEASE_SCRIPTS[op], lease_key, pack_args(args))
        opened, _ = self._ready()
        if opened.gate is None:
            return await run_lease(opened.client, op, self.lease_key(key), args)
        async with opened.gate:
            return await run_lease(opened.client, op, self.lease_key(key), args)

    async def take_lease(
        self, key: str, holder: str, limit: int, lease_ms: int, *, now_ms: int | None = None
    ) -> LeaseGrant:
        args = (holder, limit, lease_ms, self._lease_now(now_ms))
        return grant_of(await self._lease("take", key, args))

    async def renew_lease(
        self, key: str, holder: str, lease_ms: int, *, now_ms: int | None = None
    ) -> bool:
        return bool(await self._lease("renew", key, (holder, lease_ms, self._lease_now(now_ms))))

    async def release_lease(self, key: str, holder: str, *, now_ms: int | None = None) -> bool:
        return bool(await self._lease("release", key, (holder, self._lease_now(now_ms))))


def _text(value: typing.Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
