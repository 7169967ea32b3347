"""The Memcached backend: lock-free atomic decisions with ``incr``/``add`` and ``gets``/``cas``."""

from __future__ import annotations

import asyncio
import typing
import weakref
from collections import defaultdict

from traffik.backends.base import BackendCapabilities, Clock, ThrottleBackend, wall_clock_ms
from traffik.exceptions import BackendConnectionError, BackendError
from traffik.leases import LeaseGrant, release_lease, renew_lease, take_lease
from traffik.memcached._adjustments import adjust_cas, adjust_window
from traffik.memcached._decisions import decide_cas, decide_window
from traffik.memcached._generations import Generations
from traffik.memcached._keys import (
    GLOBAL_PREFIX,
    LOCK_PREFIX,
    decode_value,
    encode_value,
    expired,
    generation_key,
    generation_prefix,
    item_key,
    namespace_tag,
)
from traffik.memcached._leases import on_leases
from traffik.memcached._primitives import count, retime, ttl_fields
from traffik.memcached._protocol import LINE, VALUES, MemcachedClient
from traffik.memcached._servers import (
    Server,
    ServerPool,
    check_number,
    rendezvous,
    seed,
    server_addresses,
)
from traffik.memcached.lock import AsyncMemcachedLock
from traffik.strategies import UNLIMITED_DECISION, check_adjustment, decode_state
from traffik.strategies.fixed_window import FixedWindowStrategy
from traffik.types import HTTPConnectionT

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from traffik.decisions import Decision
    from traffik.failures import FailurePolicy
    from traffik.memcached._protocol import Reply, Values
    from traffik.rates import Rate
    from traffik.strategies import Strategy

__all__ = ["MemcachedBackend"]

_Build = typing.Callable[[list[bytes]], tuple[bytes, tuple[int, ...]]]

#: How many times an operation is re-run because the generation moved under it.
_GENERATION_ATTEMPTS = 4


class MemcachedBackend(ThrottleBackend[ServerPool, HTTPConnectionT]):
    """Throttling state in memcached, shared by every app host that uses the same servers.

    One server is given by ``host`` and ``port``; a pool by ``servers=["host:port",
    ...]`` (not both). Keys are spread over the pool by rendezvous hashing: every
    instance given the same addresses, in any order, puts a key on the same server,
    and adding a server moves about ``1/N`` of the keys. Each server has its own
    ``pool_size`` connections and its own namespace generation. The keys of a server
    that does not answer stay with it (they are never moved to the others, where a
    client would get a fresh quota): they follow ``failure_policy``, with a circuit
    breaker per server (see :meth:`failure_domain`), while the other servers keep
    deciding theirs.

    Decisions are atomic without locks: the fixed window is one ``incr`` on a
    counter per window (plus a compensating ``decr`` when it rejects a request while
    the window still had room; none once it is full); every other
    strategy runs its Python transition in an optimistic ``gets``/``cas`` loop of at
    most ``max_retries`` retries (with jittered backoff from ``retry_backoff``
    seconds), then raises :class:`~traffik.exceptions.BackendError`.

    Keys from clients are used as is only when short printable ASCII; otherwise they
    are hashed (BLAKE2b-256). :meth:`reset` bumps a generation number folded into
    every key (O(1)); every call reads it in the same round trip, unless
    ``generation_ttl`` (seconds) lets an instance reuse what it read that recently.
    Times come from ``clock`` (this host's wall clock by default; memcached has no
    clock to offer). A TTL given to ``set``, ``increment_with_ttl`` or ``expire``
    holds to the millisecond of that clock (the deadline is kept with the item, and
    memcached's whole-second TTL, rounded up, reclaims it later); it never expires
    early. ``timeout`` bounds every request and ``connect_timeout`` the
    first connection, in seconds. Locks expire after ``lock_ttl`` seconds.
    ``failure_policy`` says what throttles do while memcached fails (see
    :mod:`traffik.failures`; default: the network policy).
    ``pool_minsize`` is accepted for 1.0.0b2 compatibility and has no effect.
    """

    capabilities = BackendCapabilities(
        shared_state=True,
        injectable_clock=True,
        distributed_locks=True,
        negative_counters=True,
        server_clock=False,
        leases=True,
    )

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        namespace: str = "memcached",
        pool_size: int = 2,
        persistent: bool = False,
        identifier: typing.Any = None,
        handle_throttled: typing.Any = None,
        *,
        pool_minsize: int | None = None,
        timeout: float = 1.0,
        connect_timeout: float = 2.0,
        max_retries: int = 50,
        retry_backoff: float = 0.0005,
        lock_ttl: float = 10.0,
        generation_ttl: float = 0.0,
        clock: Clock | None = None,
        failure_policy: FailurePolicy | typing.Literal["default"] | None = "default",
        servers: Sequence[str] | None = None,
    ) -> None:
        addresses = server_addresses(host, port, servers)
        check_number("pool_size", pool_size, minimum=1, integer=True)
        if pool_minsize is not None:
            check_number("pool_minsize", pool_minsize, minimum=0, integer=True)
        check_number("timeout", timeout, minimum=0.001)
        check_number("connect_timeout", connect_timeout, minimum=0.001)
        check_number("max_retries", max_retries, minimum=0, integer=True)
        check_number("retry_backoff", retry_backoff, minimum=0)
        check_number("lock_ttl", lock_ttl, minimum=0.001)
        check_number("generation_ttl", generation_ttl, minimum=0)
        super().__init__(
            None,
            namespace=namespace,
            identifier=identifier,
            handle_throttled=handle_throttled,
            persistent=persistent,
            clock=clock or wall_clock_ms,
            failure_policy=failure_policy,
        )
        #: ``"host:port"`` of every server, in the order given.
        self.servers: tuple[str, ...] = tuple(
            f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in addresses
        )
        self._hosts = addresses
        self._seeds = [seed(address) for address in self.servers]
        #: The first (or only) server's host and port.
        self.host, self.port = addresses[0]
        self.pool_size = pool_size
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.retry_backoff = float(retry_backoff)
        self.lock_ttl = float(lock_ttl)
        self.generation_ttl = float(generation_ttl)
        self._tag = namespace_tag(namespace)
        self._own = namespace + ":"
        #: One local lock per state key in use: this instance's requests take turns.
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __repr__(self) -> str:
        if len(self.servers) == 1:
            where = f"host={self.host!r}, port={self.port}"
        else:
            where = f"servers={list(self.servers)!r}"
        return f"{type(self).__name__}({where}, namespace={self.namespace!r})"

    # -- servers --------------------------------------------------------------

    def failure_domain(self, key: str) -> str:
        """The ``"host:port"`` of the server that holds throttle key ``key``.

        The failure policy keeps one circuit breaker per server: a dead server sends
        only its own keys to the policy's action.
        """
        return self.servers[rendezvous(key, self._seeds)]

    def _pool(self) -> ServerPool:
        pool = self.connection
        if pool is None:
            raise BackendConnectionError(
                f"{self!r} is not initialised or was closed; use 'async with backend(...)' "
                f"or await backend.initialize() first."
            )
        return pool

    def _server(self, key: str) -> Server:
        """The server that holds ``key`` (a throttle key, or a primitive's key)."""
        return self._pool().servers[rendezvous(key, self._seeds)]

    # -- lifecycle ------------------------------------------------------------

    async def initialize(self) -> None:
        if self.connection is not None:
            return
        pool = ServerPool(
            [
                Server(
                    address,
                    MemcachedClient(
                        host,
                        port,
                        pool_size=self.pool_size,
                        timeout=self.timeout,
                        connect_timeout=self.connect_timeout,
                    ),
                    Generations(self.generation_ttl),
                )
                for address, (host, port) in zip(self.servers, self._hosts, strict=True)
            ]
        )
        try:
            await pool.connect([self._tag])
            self.connection = pool
        except BaseException:
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self.connection = self.connection, None
        if pool is not None:
            await pool.close()

    async def reset(self) -> None:
        """Forget every key of this namespace at once by moving to a new generation (O(1)).

        Every server's generation moves (each server keeps the generation of its own
        keys); if a server cannot be reached this raises BackendError naming it,
        after moving the others (its keys come back fresh anyway if it lost its
        data; call reset() again once it answers otherwise). Old items are never read
        again; memcached reclaims them when they expire or by LRU eviction. Locks are
        not generation-scoped and stay held.
        """
        servers = self._pool().servers
        results = await asyncio.gather(
            *(s.generations.bump(s.client, self._tag) for s in servers), return_exceptions=True
        )
        failed = [(s, r) for s, r in zip(servers, results, strict=True) if r is not None]
        for _, error in failed:
            if not isinstance(error, BackendError):
                raise error
        if failed:
            detail = "; ".join(f"{s.address}: {e}" for s, e in failed)
            raise BackendError(f"reset() could not reach every memcached server ({detail}).")

    # -- keys and generations ---------------------------------------------------

    def _scope(self, key: str) -> tuple[str | None, str]:
        """``(namespace tag, rest)`` of ``key``; tag None for a key outside any namespace.

        Keys of this backend's namespace (``{namespace}:...``) are scoped by its
        generation; another ``ns:...`` key by the generation of ``ns`` (the text
        before its first colon), so every instance maps a key to the same item.
        """
        if key.startswith(self._own):
            return self._tag, key[len(self._own) :]
        head, colon, rest = key.partition(":")
        if colon and head:
            return namespace_tag(head), rest
        return None, key

    async def _run(
        self, server: Server, keys: Sequence[str], build: _Build
    ) -> tuple[list[bytes], list[Reply]]:
        """Run the commands ``build(item_keys)`` returns for ``keys`` on ``server``, in current generations.

        The generations involved are read in the same round trip (unless cached for
        less than ``generation_ttl`` seconds); if one moved, the commands are run
        again under the new one (anything they wrote went to a dead generation).
        Returns the item keys used and the commands' replies.
        """
        client = server.client
        scopes = [self._scope(key) for key in keys]
        tags = list(dict.fromkeys(tag for tag, _ in scopes if tag is not None))
        generations = server.generations
        for _ in range(_GENERATION_ATTEMPTS):
            known = {tag: generations.get(tag) for tag in tags}
            unknown = [tag for tag, gen in known.items() if gen is None]
            if unknown:
                await generations.load(client, unknown)
                continue
            prefixes = {
                tag: generation_prefix(tag, typing.cast("int", g)) for tag, g in known.items()
            }
            items = [
                item_key(GLOBAL_PREFIX if tag is None else prefixes[tag], rest)
                for tag, rest in scopes
            ]
            payload, kinds = build(items)
            stale = [tag for tag in tags if not generations.fresh(tag)]
            if not stale:
                return items, await client.execute(payload, kinds)
            gen_keys = [generation_key(tag) for tag in stale]
            replies = await client.execute(
                b"get %s\r\n%s" % (b" ".join(gen_keys), payload), (VALUES, *kinds)
            )
            found = typing.cast("Values", replies[0])
            moved = False
            for tag, gen_key in zip(stale, gen_keys, strict=True):
                change = generations.note(tag, found.get(gen_key))
                if change is None:
                    await generations.create(client, tag)
                    moved = True
                elif change:
                    moved = True
            if not moved:
                return items, replies[1:]
        raise BackendError(
            f"The generation of a namespace kept changing during one call on {keys[0]!r}; "
            f"something is calling reset() in a loop."
        )

    # -- primitives -----------------------------------------------------------

    async def get(self, key: str) -> str | None:
        return await self._get_on(self._server(key), key)

    async def _get_on(self, server: Server, key: str) -> str | None:
        items, (values,) = await self._run(
            server, [key], lambda ks: (b"get %s\r\n" % ks[0], (VALUES,))
        )
        return self._alive(typing.cast("Values", values).get(items[0]))

    def _alive(self, entry: tuple[bytes, int, int] | None) -> str | None:
        """The value of a retrieved item, or None if it is missing or past its deadline."""
        if entry is None or expired(entry[2], self.clock()):
            return None
        return decode_value(entry[0])

    async def multi_get(self, *keys: str) -> list[str | None]:
        if not keys:
            return []
        groups: defaultdict[int, list[str]] = defaultdict(list)
        for key in dict.fromkeys(keys):
            groups[rendezvous(key, self._seeds)].append(key)
        servers = self._pool().servers
        found: dict[str, str | None] = {}

        async def fetch(server: Server, group: list[str]) -> None:
            items, (values,) = await self._run(
                server, group, lambda ks: (b"get %s\r\n" % b" ".join(dict.fromkeys(ks)), (VALUES,))
            )
            entries = typing.cast("Values", values)
            for key, item in zip(group, items, strict=True):
                found[key] = self._alive(entries.get(item))

        await asyncio.gather(*(fetch(servers[i], group) for i, group in groups.items()))
        return [found[key] for key in keys]

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        if expire is not None and expire <= 0:
            raise ValueError(f"expire must be a positive number of seconds, got {expire}.")
        data = encode_value(str(value))
        flags, ttl = ttl_fields(self.clock(), expire)
        _, (line,) = await self._run(
            self._server(key),
            [key],
            lambda ks: (
                b"set %s %d %d %d\r\n%s\r\n" % (ks[0], flags, ttl, len(data), data),
                (LINE,),
            ),
        )
        if line != b"STORED":
            raise BackendError(f"memcached refused to store {key!r}: {line!r}.")

    async def delete(self, key: str) -> bool:
        (item,), (values, line) = await self._run(
            self._server(key),
            [key],
            lambda ks: (b"get %s\r\ndelete %s\r\n" % (ks[0], ks[0]), (VALUES, LINE)),
        )
        if line not in (b"DELETED", b"NOT_FOUND"):
            raise BackendError(f"memcached answered delete of {key!r} with {line!r}.")
        # An item past its deadline was already gone (memcached had not reclaimed it yet).
        return (
            line == b"DELETED" and self._alive(typing.cast("Values", values).get(item)) is not None
        )

    async def increment(self, key: str, amount: int = 1) -> int:
        return await count(self, self._server(key), key, amount, None)

    async def decrement(self, key: str, amount: int = 1) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError(f"amount must be an int, got {amount!r}.")
        return await count(self, self._server(key), key, -amount, None)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        if not ttl > 0:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}.")
        return await count(self, self._server(key), key, amount, ttl)

    async def expire(self, key: str, seconds: float) -> bool:
        if seconds <= 0:
            raise ValueError(f"seconds must be a positive number, got {seconds}.")
        return await retime(self, self._server(key), key, seconds)

    async def get_lock(self, name: str) -> AsyncMemcachedLock:
        return AsyncMemcachedLock(self, name, item_key(LOCK_PREFIX, name), self.lock_ttl)

    # -- decisions ------------------------------------------------------------

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        """Charge ``cost`` to ``key`` atomically: one ``incr`` (fixed window) or a CAS loop."""
        server, skey = self._server(key), self.state_key(key, strategy)
        if type(strategy) is FixedWindowStrategy:
            return await decide_window(self, server, skey, strategy, rate, cost, now_ms)
        return await decide_cas(self, server, skey, strategy, rate, cost, now_ms)

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
        """Give back or charge more atomically: a CAS on the window counter (fixed
        window) or the strategy's adjustment in a CAS loop."""
        check_adjustment(strategy, rate, delta, age_ms)  # bad input fails before any I/O
        if rate.unlimited:
            return UNLIMITED_DECISION
        server, skey = self._server(key), self.state_key(key, strategy)
        if type(strategy) is FixedWindowStrategy:
            return await adjust_window(self, server, skey, strategy, rate, delta, age_ms, now_ms)
        return await adjust_cas(self, server, skey, strategy, rate, delta, age_ms, now_ms)

    async def peek(
        self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None
    ) -> Decision:
        server, skey = self._server(key), self.state_key(key, strategy)
        now = self.clock() if now_ms is None else now_ms
        if type(strategy) is FixedWindowStrategy:
            start = now - now % rate.expire
            # A window already full keeps later rejections' charges: more than the limit.
            used = min(await self._read_counter(server, f"{skey}@{start}"), rate.limit)
            return strategy.peek((start, used) if used else None, now, rate)
        raw = await self._get_on(server, skey)
        return strategy.peek(decode_state(raw), now, rate)

    async def reset_key(self, key: str, strategy: Strategy, rate: Rate) -> None:
        """Forget ``key``'s state: its CAS record and, for the fixed window, the counter
        of the current window (both on the server that holds ``key``)."""
        server, skey = self._server(key), self.state_key(key, strategy)
        keys = [skey]
        if type(strategy) is FixedWindowStrategy and rate.expire:
            now = self.clock()
            keys.append(f"{skey}@{now - now % rate.expire}")
        _, replies = await self._run(
            server,
            keys,
            lambda ks: (b"".join(b"delete %s\r\n" % k for k in ks), tuple(LINE for _ in ks)),
        )
        for line in replies:
            if line not in (b"DELETED", b"NOT_FOUND"):
                raise BackendError(f"memcached answered delete of {key!r} with {line!r}.")

    # -- leases (traffik.leases): a CAS loop per operation, see _leases.py -----------

    async def take_lease(
        self, key: str, holder: str, limit: int, lease_ms: int, *, now_ms: int | None = None
    ) -> LeaseGrant:
        return await on_leases(
            self, key, lambda leases, now: take_lease(leases, now, holder, limit, lease_ms), now_ms
        )

    async def renew_lease(
        self, key: str, holder: str, lease_ms: int, *, now_ms: int | None = None
    ) -> bool:
        return await on_leases(
            self, key, lambda leases, now: renew_lease(leases, now, holder, lease_ms), now_ms
        )

    async def release_lease(self, key: str, holder: str, *, now_ms: int | None = None) -> bool:
        return await on_leases(
            self, key, lambda leases, now: release_lease(leases, now, holder), now_ms
        )

    async def _read_counter(self, server: Server, key: str) -> int:
        raw = await self._get_on(server, key)
        return 0 if raw is None else max(0, int(raw))
