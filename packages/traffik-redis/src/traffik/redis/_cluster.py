"""Decisions on a Redis Cluster, routed to each slot's master by traffik itself.

redis-py's ``RedisCluster`` reloads its slot map when one node fails, and while it
does, calls to every node wait; it also closes connections that other calls are
writing on. Under load, the death of one master then costs the keys of the others
(fallback answers, circuits opening on healthy masters). Decisions and peeks
therefore do not go through it:

- each master has a client on a connection pool of its own (the cluster client's
  connection settings, so TLS and credentials carry over) and an
  :class:`~traffik.redis._pipeline.AutoPipeline` on it: a master's failure stays on
  its own connections;
- the slot map comes from ``CLUSTER SLOTS``, loaded at start and again in the
  background after a failure, a ``MOVED`` or a ``CLUSTERDOWN``: no call waits for it,
  and calls for the other masters never notice;
- ``MOVED`` updates the slot and sends the call to the new master; ``ASK`` sends it
  once to the importing master after ``ASKING``;
- while a master in the map fails, the map is loaded again every 0.1 s (backing off
  to 0.25 s), so a promoted replica takes over its slots as soon as the cluster says so.

The cluster client still serves everything else (``reset``, locks, primitives).
"""

from __future__ import annotations

import asyncio
import logging
import typing

from redis.asyncio import BlockingConnectionPool, Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from traffik.redis._connection import _retry
from traffik.redis._pipeline import MAX_IN_FLIGHT, AutoPipeline, checkout_args, key_encoder
from traffik.redis._scripts import LuaScript, PackedArgs, pack_evalsha

if typing.TYPE_CHECKING:
    from redis.asyncio import RedisCluster

__all__ = ["ClusterRouter"]

logger = logging.getLogger("traffik.redis")

#: Redirections (MOVED, ASK) followed for one call at most.
MAX_REDIRECTS = 5
#: Pause between slot map loads while a master fails: first, and at most.
REFRESH_PAUSE = 0.1
REFRESH_PAUSE_MAX = 0.25
#: Connection settings of the cluster client that belong to it alone.
_CLIENT_ONLY = frozenset({"oss_cluster_maint_notifications_handler"})
#: Errors that say a master is unreachable (its slots may be moving to a replica).
_NODE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


class _Master:
    """One master: a client on a pool of its own, and the pipeline on it."""

    __slots__ = ("client", "failing", "host", "name", "pipeline", "pool", "port")

    def __init__(self, host: str, port: int, settings: dict[str, typing.Any], timeout: float):
        self.host, self.port, self.name = host, port, f"{host}:{port}"
        # The lanes, and one connection for ASK redirections and slot map loads.
        self.pool = BlockingConnectionPool(
            max_connections=MAX_IN_FLIGHT + 1, timeout=timeout, host=host, port=port, **settings
        )
        self.client = Redis.from_pool(self.pool)
        self.pipeline = AutoPipeline(self.pool, lanes=MAX_IN_FLIGHT)
        self.failing = False

    async def asking(self, script: LuaScript, key: bytes, args: PackedArgs) -> typing.Any:
        """``EVALSHA`` after ``ASKING`` on one connection (a slot being imported here)."""
        packed = pack_evalsha(script, key, args)
        conn = await self.pool.get_connection(*checkout_args(self.pool))  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command([*conn.pack_command("ASKING"), packed])
            await conn.read_response()
            try:
                return await conn.read_response()
            except NoScriptError:
                load = conn.pack_command("SCRIPT", "LOAD", script.source)
                await conn.send_packed_command([*load, *conn.pack_command("ASKING"), packed])
                await conn.read_response()
                await conn.read_response()
                return await conn.read_response()
        finally:
            await self.pool.release(conn)

    async def aclose(self) -> None:
        await self.pipeline.aclose()
        await self.client.aclose()


class ClusterRouter:
    """Sends each script call to the master of its key's slot (see the module docstring).

    Same interface as :class:`~traffik.redis._pipeline.AutoPipeline`:
    ``await router.call(script, key, args)``.
    """

    def __init__(self, client: RedisCluster, pool_timeout: float) -> None:
        nodes = client.get_nodes()
        if not nodes:
            raise ClusterError(
                "The Redis Cluster client knows no node; call initialize() on it first."
            )
        template = nodes[0]
        settings = {
            name: value
            for name, value in template.connection_kwargs.items()
            if name not in _CLIENT_ONLY and name not in ("host", "port")
        }
        settings["connection_class"] = template.connection_class
        settings.setdefault("retry", _retry())
        self._settings = settings
        self._pool_timeout = pool_timeout
        self._seeds = [(node.host, int(node.port)) for node in nodes]
        self.encode = key_encoder(client.get_encoder())
        self._slots: list[_Master | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._masters: dict[str, _Master] = {}
        self._retired: list[_Master] = []
        self._refresher: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False

    @classmethod
    async def open(cls, client: RedisCluster, pool_timeout: float) -> ClusterRouter:
        """A router with the slot map loaded and the lanes to every master connected."""
        router = cls(client, pool_timeout)
        try:
            await router.refresh()
            masters = {master for master in router._slots if master is not None}
            await asyncio.gather(*(router._warm(master) for master in masters))
        except BaseException:
            await router.aclose()
            raise
        return router

    async def _warm(self, master: _Master) -> None:
        # A master that cannot be reached now fails its own calls later (and its
        # slots move when the cluster promotes a replica): it does not fail startup.
        try:
            await master.pipeline.warm()
        except Exception as exc:
            logger.debug("Connecting to Redis Cluster master %s failed: %r", master.name, exc)
            master.failing = True
            self._refresh_soon()

    def domain(self, key: bytes) -> str | None:
        """``"host:port"`` of the master serving ``key`` in the current map."""
        master = self._slots[key_slot(key)]
        return None if master is None else master.name

    async def call(self, script: LuaScript, key: bytes, args: PackedArgs) -> typing.Any:
        """The reply of ``EVALSHA script 1 key *args`` from the master of ``key``'s slot."""
        slot = key_slot(key)
        master = self._slots[slot]
        if master is None:
            self._refresh_soon()
            raise SlotNotCoveredError(
                f"No master serves slot {slot} in the cluster's slot map; it is being loaded again."
            )
        try:
            reply = await master.pipeline.call(script, key, args)
        except AskError as redirect:  # MovedError too
            return await self._redirected(master, redirect, script, key, args)
        except _NODE_ERRORS:
            master.failing = True
            self._refresh_soon()
            raise
        except (ClusterDownError, TryAgainError):
            self._refresh_soon()
            raise
        if master.failing:
            master.failing = False
        return reply

    async def _redirected(
        self,
        master: _Master,
        redirect: AskError,
        script: LuaScript,
        key: bytes,
        args: PackedArgs,
    ) -> typing.Any:
        for _ in range(MAX_REDIRECTS):
            target = self._master(redirect.host or master.host, redirect.port)
            try:
                if isinstance(redirect, MovedError):
                    self._slots[redirect.slot_id] = target
                    self._refresh_soon()  # a moved slot rarely moves alone
                    return await target.pipeline.call(script, key, args)
                return await target.asking(script, key, args)
            except AskError as again:
                master, redirect = target, again
            except _NODE_ERRORS:
                target.failing = True
                self._refresh_soon()
                raise
        raise ClusterError(
            f"A call for slot {redirect.slot_id} was redirected more than {MAX_REDIRECTS} "
            "times; the cluster is being resharded faster than it answers."
        )

    # -- the slot map -------------------------------------------------------------------

    def _master(self, host: str, port: int) -> _Master:
        name = f"{host}:{port}"
        master = self._masters.get(name)
        if master is None:
            master = self._masters[name] = _Master(host, port, self._settings, self._pool_timeout)
        return master

    def _refresh_soon(self) -> None:
        if self._closed:
            return
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._keep_fresh())
        else:
            self._again = True

    async def _keep_fresh(self) -> None:
        """Load the map; again while a master in it fails (backing off), or when asked to."""
        pause = REFRESH_PAUSE
        while not self._closed:
            self._again = False
            try:
                changed = await self.refresh()
            except Exception as exc:  # every node failed: try again after the pause
                logger.debug("Loading the Redis Cluster slot map failed: %r", exc)
                changed = False
            failing = any(m.failing for m in set(self._slots) if m is not None)
            if not failing and not self._again:
                return
            pause = REFRESH_PAUSE if changed else min(pause * 2, REFRESH_PAUSE_MAX)
            await asyncio.sleep(pause)

    async def refresh(self) -> bool:
        """Load the slot map from the first node that answers; True if it changed.

        The masters in the map are asked first (those not failing before the others);
        the cluster client's nodes only if none of them answers.
        """
        owners = list(dict.fromkeys(m for m in self._slots if m is not None))
        asked: set[str] = set()
        error: BaseException | None = None
        for master in sorted(owners, key=lambda m: m.failing):
            asked.add(master.name)
            try:
                return await self._apply(await self._slots_from(master), master.host)
            except Exception as exc:
                error = exc
        for host, port in self._seeds:
            if f"{host}:{port}" in asked:
                continue
            master = self._master(host, port)
            try:
                return await self._apply(await self._slots_from(master), host)
            except Exception as exc:
                error = exc
        raise error or ClusterError("The Redis Cluster has no node to ask for its slot map.")

    async def _slots_from(self, master: _Master) -> typing.Any:
        timeout = self._settings.get("socket_timeout") or 5.0
        command = master.client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        return await asyncio.wait_for(command, timeout)

    async def _apply(self, reply: typing.Any, asked: str) -> bool:
        slots: list[_Master | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for entry in reply:
            start, end, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            master = self._master(host or asked, int(primary[1]))
            slots[start : end + 1] = [master] * (end - start + 1)
        changed = slots != self._slots
        self._slots = slots
        serving = set(slots)
        for name, master in list(self._masters.items()):
            if master not in serving:
                del self._masters[name]
                if master.pipeline.busy:
                    self._retired.append(master)  # closed with the router
                else:
                    await master.aclose()
        return changed

    async def aclose(self) -> None:
        """Stop loading the map and close every master's connections."""
        self._closed = True
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            try:
                await refresher
            except asyncio.CancelledError:
                pass
        masters = [*self._masters.values(), *self._retired]
        self._masters, self._retired = {}, []
        self._slots = [None] * REDIS_CLUSTER_HASH_SLOTS
        for master in masters:
            await master.aclose()
