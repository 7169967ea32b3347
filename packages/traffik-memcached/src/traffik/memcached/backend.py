"""The Memcached backend: lock-free atomic decisions with ``incr``/``add`` and ``gets``/``cas``."""

from __future__ import annotations

import asyncio
import random
import typing

from traffik.backends.base import BackendCapabilities, Clock, ThrottleBackend, wall_clock_ms
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.memcached._keys import (
    decode_counter,
    decode_value,
    encode_counter,
    encode_text,
    encode_value,
    exptime,
    generation_key,
    item_key,
    namespace_tag,
)
from traffik.memcached._protocol import LINE, VALUES, MemcachedClient
from traffik.memcached.lock import AsyncMemcachedLock
from traffik.strategies._arith import ceil_div
from traffik.strategies._base import decode_state, encode_state
from traffik.strategies.fixed_window import FixedWindowStrategy
from traffik.types import HTTPConnectionT

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

    from traffik.decisions import Decision
    from traffik.memcached._protocol import Reply, Values
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = ["MemcachedBackend"]

_Build = typing.Callable[[str], tuple[bytes, tuple[int, ...]]]

#: How many times an operation is re-run because the generation moved under it.
_GENERATION_ATTEMPTS = 4


def _check_number(name: str, value: object, *, minimum: float, integer: bool = False) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or float(value) < minimum:  # type: ignore[arg-type]
        what = "a whole number" if integer else "a number"
        raise ConfigurationError(f"{name} must be {what} of at least {minimum}, got {value!r}.")


class MemcachedBackend(ThrottleBackend[MemcachedClient, HTTPConnectionT]):
    """Throttling state in memcached, shared by every app host that uses the same server.

    Decisions are atomic without locks: the fixed window is one ``incr`` on a
    counter per window (plus a compensating ``decr`` when it rejects); every other
    strategy runs its Python transition in an optimistic ``gets``/``cas`` loop of at
    most ``max_retries`` retries (with jittered backoff from ``retry_backoff``
    seconds), then raises :class:`~traffik.exceptions.BackendError`.

    Keys from clients are used as is only when short printable ASCII; otherwise they
    are hashed (BLAKE2b-256). :meth:`reset` bumps a generation number folded into
    every key (O(1)); every call reads it in the same round trip, unless
    ``generation_ttl`` (seconds) lets an instance reuse what it read that recently.
    Times come from ``clock`` (this host's wall clock by default; memcached has no
    clock to offer). ``timeout`` bounds every request and ``connect_timeout`` the
    first connection, in seconds. Locks expire after ``lock_ttl`` seconds.
    ``pool_minsize`` is accepted for 1.0.0b2 compatibility and has no effect.
    """

    capabilities = BackendCapabilities(
        shared_state=True,
        injectable_clock=True,
        distributed_locks=True,
        negative_counters=True,
        server_clock=False,
    )

    def __init__(
        self,
        host: str = "localhost",
        port: int = 11211,
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
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ConfigurationError(f"host must be a non-empty string, got {host!r}.")
        _check_number("port", port, minimum=1, integer=True)
        _check_number("pool_size", pool_size, minimum=1, integer=True)
        if pool_minsize is not None:
            _check_number("pool_minsize", pool_minsize, minimum=0, integer=True)
        _check_number("timeout", timeout, minimum=0.001)
        _check_number("connect_timeout", connect_timeout, minimum=0.001)
        _check_number("max_retries", max_retries, minimum=0, integer=True)
        _check_number("retry_backoff", retry_backoff, minimum=0)
        _check_number("lock_ttl", lock_ttl, minimum=0.001)
        _check_number("generation_ttl", generation_ttl, minimum=0)
        super().__init__(
            None,
            namespace=namespace,
            identifier=identifier,
            handle_throttled=handle_throttled,
            persistent=persistent,
            clock=clock or wall_clock_ms,
        )
        self.host = host
        self.port = port
        self.pool_size = pool_size
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.max_retries = max_retries
        self.retry_backoff = float(retry_backoff)
        self.lock_ttl = float(lock_ttl)
        self.generation_ttl = float(generation_ttl)
        self._tag = namespace_tag(namespace)
        self._generation_key = generation_key(self._tag)
        self._generation = 0
        self._generation_read_at = float("-inf")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(host={self.host!r}, port={self.port}, namespace={self.namespace!r})"

    # -- lifecycle ------------------------------------------------------------

    def _client(self) -> MemcachedClient:
        client = self.connection
        if client is None:
            raise BackendConnectionError(
                f"{self!r} is not initialised or was closed; use 'async with backend(...)' "
                f"or await backend.initialize() first."
            )
        return client

    async def initialize(self) -> None:
        if self.connection is not None:
            return
        client = MemcachedClient(
            self.host,
            self.port,
            pool_size=self.pool_size,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
        )
        try:
            await client.connect()
            self.connection = client
            await self._read_generation()
        except BaseException as exc:
            self.connection = None
            await client.close()
            if isinstance(exc, BackendConnectionError):
                raise BackendConnectionError(
                    f"Cannot connect to memcached at {self.host}:{self.port}: {exc}"
                ) from exc
            raise

    async def close(self) -> None:
        client, self.connection = self.connection, None
        if client is not None:
            await client.close()

    async def reset(self) -> None:
        """Forget every key of this namespace at once by moving to a new generation (O(1)).

        Old items are never read again; memcached reclaims them when they expire or
        by LRU eviction. Locks are not generation-scoped and stay held.
        """
        client = self._client()
        (line,) = await client.execute(b"incr %s 1\r\n" % self._generation_key, (LINE,))
        line = typing.cast("bytes", line)
        if line.isdigit():
            self._remember(int(line))
        elif line == b"NOT_FOUND":
            await self._create_generation(at_least=self._generation + 1)
        else:
            raise BackendError(f"memcached answered the generation bump with {line!r}.")

    # -- generations ----------------------------------------------------------

    def _remember(self, generation: int) -> None:
        self._generation = generation
        self._generation_read_at = asyncio.get_running_loop().time()

    async def _read_generation(self) -> None:
        (values,) = await self._client().execute(b"get %s\r\n" % self._generation_key, (VALUES,))
        entry = typing.cast("Values", values).get(self._generation_key)
        if entry is None:
            await self._create_generation()
        else:
            self._remember(int(entry[0]))

    async def _create_generation(self, at_least: int = 0) -> None:
        # A wall-clock start never reuses the generation of an evicted generation key
        # (which would resurrect that generation's items).
        start = max(wall_clock_ms(), at_least)
        value = str(start).encode("ascii")
        client = self._client()
        payload = b"add %s 0 0 %d\r\n%s\r\nget %s\r\n" % (
            self._generation_key,
            len(value),
            value,
            self._generation_key,
        )
        _, values = await client.execute(payload, (LINE, VALUES))
        entry = typing.cast("Values", values).get(self._generation_key)
        self._remember(start if entry is None else int(entry[0]))

    def _prefix(self) -> str:
        return f"{self._tag}~{self._generation}"

    async def _run(self, build: _Build) -> tuple[str, list[Reply]]:
        """Run the commands ``build(prefix)`` returns, in the current generation.

        Unless the cached generation is fresh (``generation_ttl``), the generation
        is read in the same round trip; if it moved, the commands are run again
        under the new one (anything they wrote went to a dead generation).
        """
        client = self._client()
        for _ in range(_GENERATION_ATTEMPTS):
            prefix = self._prefix()
            payload, kinds = build(prefix)
            loop = asyncio.get_running_loop()
            if self.generation_ttl and loop.time() - self._generation_read_at < self.generation_ttl:
                return prefix, await client.execute(payload, kinds)
            replies = await client.execute(
                b"get %s\r\n%s" % (self._generation_key, payload), (VALUES, *kinds)
            )
            entry = typing.cast("Values", replies[0]).get(self._generation_key)
            if entry is None:
                await self._create_generation(at_least=self._generation + 1)
                continue
            generation = int(entry[0])
            self._remember(generation)
            if f"{self._tag}~{generation}" == prefix:
                return prefix, replies[1:]
        raise BackendError(
            f"The generation of namespace {self.namespace!r} kept changing during one call; "
            f"something is calling reset() in a loop."
        )

    # -- primitives -----------------------------------------------------------

    async def get(self, key: str) -> str | None:
        holder: list[bytes] = []

        def build(prefix: str) -> tuple[bytes, tuple[int, ...]]:
            holder[:] = [item_key(prefix, key)]
            return b"get %s\r\n" % holder[0], (VALUES,)

        _, (values,) = await self._run(build)
        entry = typing.cast("Values", values).get(holder[0])
        return None if entry is None else decode_value(entry[0])

    async def multi_get(self, *keys: str) -> list[str | None]:
        if not keys:
            return []
        holder: list[bytes] = []

        def build(prefix: str) -> tuple[bytes, tuple[int, ...]]:
            holder[:] = [item_key(prefix, key) for key in keys]
            return b"get %s\r\n" % b" ".join(dict.fromkeys(holder)), (VALUES,)

        _, (values,) = await self._run(build)
        found = typing.cast("Values", values)
        return [None if (e := found.get(k)) is None else decode_value(e[0]) for k in holder]

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        if expire is not None and expire <= 0:
            raise ValueError(f"expire must be a positive number of seconds, got {expire}.")
        data = encode_value(str(value))
        ttl = 0 if expire is None else exptime(expire)

        def build(prefix: str) -> tuple[bytes, tuple[int, ...]]:
            mk = item_key(prefix, key)
            return b"set %s 0 %d %d\r\n%s\r\n" % (mk, ttl, len(data), data), (LINE,)

        _, (line,) = await self._run(build)
        if line != b"STORED":
            raise BackendError(f"memcached refused to store {key!r}: {line!r}.")

    async def delete(self, key: str) -> bool:
        _, (line,) = await self._run(lambda p: (b"delete %s\r\n" % item_key(p, key), (LINE,)))
        if line not in (b"DELETED", b"NOT_FOUND"):
            raise BackendError(f"memcached answered delete of {key!r} with {line!r}.")
        return line == b"DELETED"

    async def increment(self, key: str, amount: int = 1) -> int:
        return await self._add(key, amount, 0)

    async def decrement(self, key: str, amount: int = 1) -> int:
        return await self._add(key, -amount, 0)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        return await self._add(key, amount, exptime(ttl))

    async def _add(self, key: str, amount: int, ttl: int) -> int:
        """``incr``/``decr`` in place (TTL kept); a missing key is created by ``add`` with ``ttl``."""
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError(f"amount must be an int, got {amount!r}.")
        verb = b"incr" if amount >= 0 else b"decr"
        initial = encode_counter(amount)
        for _ in range(8):
            _, (line,) = await self._run(
                lambda p: (b"%s %s %d\r\n" % (verb, item_key(p, key), abs(amount)), (LINE,))
            )
            line = typing.cast("bytes", line)
            if line[:1].isdigit():
                return decode_counter(line)
            if line.startswith(b"CLIENT_ERROR"):
                raise ValueError(
                    f"The value at {key!r} is not an integer counter; set it to an int first."
                )
            if line != b"NOT_FOUND":
                raise BackendError(f"memcached answered {verb.decode()} of {key!r} with {line!r}.")
            _, (line,) = await self._run(
                lambda p: (
                    b"add %s 0 %d %d\r\n%s\r\n" % (item_key(p, key), ttl, len(initial), initial),
                    (LINE,),
                )
            )
            if line == b"STORED":
                return amount
            # NOT_STORED: another caller created it meanwhile; count on top of theirs.
        raise BackendError(
            f"Counter {key!r} kept vanishing between incr and add; is memcached evicting it?"
        )

    async def expire(self, key: str, seconds: float) -> bool:
        ttl = exptime(seconds)
        _, (line,) = await self._run(
            lambda p: (b"touch %s %d\r\n" % (item_key(p, key), ttl), (LINE,))
        )
        return line == b"TOUCHED"

    async def get_lock(self, name: str) -> AsyncMemcachedLock:
        return AsyncMemcachedLock(self, name, item_key(f"{self._tag}~lock", name), self.lock_ttl)

    # -- decisions ------------------------------------------------------------

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        """Charge ``cost`` to ``key`` atomically: one ``incr`` (fixed window) or a CAS loop."""
        skey = self.state_key(key, strategy)
        if type(strategy) is FixedWindowStrategy:
            return await self._decide_window(skey, strategy, rate, cost, now_ms)
        return await self._decide_cas(skey, strategy, rate, cost, now_ms)

    async def peek(
        self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None
    ) -> Decision:
        skey = self.state_key(key, strategy)
        now = self.clock() if now_ms is None else now_ms
        if type(strategy) is FixedWindowStrategy:
            start = now - now % rate.expire
            used = await self._read_counter(f"{skey}@{start}")
            return strategy.peek((start, used) if used else None, now, rate)
        raw = await self.get(skey)
        return strategy.peek(decode_state(raw), now, rate)

    async def _read_counter(self, key: str) -> int:
        raw = await self.get(key)
        return 0 if raw is None else max(0, int(raw))

    async def _decide_window(
        self, skey: str, strategy: Strategy, rate: Rate, cost: int, now_ms: int | None
    ) -> Decision:
        """Fixed window as one counter per window: ``incr``, and ``decr`` back on overshoot.

        Rejected requests are not charged: the compensating ``decr`` takes their cost
        back. Until it lands (one round trip later) the overshoot is visible to
        concurrent requests, which may then be rejected although they would have
        fitted (only with mixed costs near the limit); the admitted total never
        exceeds the limit. If the ``decr`` is lost (cancelled, crash), the window
        stays over-charged until it ends: it errs on the side of rejecting.
        """
        limit, window = rate.limit, rate.expire
        now = self.clock() if now_ms is None else now_ms
        start = now - now % window
        ckey = f"{skey}@{start}"
        if cost > limit:  # never admissible: charge nothing, report the window
            used = await self._read_counter(ckey)
            return strategy.decide((start, used) if used else None, now, rate, cost).decision
        total = await self._add(ckey, cost, exptime(ceil_div(start + window - now, 1000)))
        before = total - cost
        if total > limit:
            # decr only: if the counter vanished meanwhile there is nothing to give back.
            await self._run(lambda p: (b"decr %s %d\r\n" % (item_key(p, ckey), cost), (LINE,)))
            before = min(before, limit)
        return strategy.decide((start, before) if before > 0 else None, now, rate, cost).decision

    async def _decide_cas(
        self, skey: str, strategy: Strategy, rate: Rate, cost: int, now_ms: int | None
    ) -> Decision:
        """The strategy's own transition between ``gets`` and ``cas`` (``add`` for a new key).

        A lost race re-reads and re-decides, after a random pause that doubles on
        every retry; after ``max_retries`` retries it raises BackendError.
        """
        client = self._client()
        holder: list[bytes] = []

        def build(prefix: str) -> tuple[bytes, tuple[int, ...]]:
            holder[:] = [item_key(prefix, skey)]
            return b"gets %s\r\n" % holder[0], (VALUES,)

        for attempt in range(self.max_retries + 1):
            if attempt:
                pause = self.retry_backoff * (1 << min(attempt, 10))
                await asyncio.sleep(random.uniform(0, min(pause, 0.05)))
            _, (values,) = await self._run(build)
            mk = holder[0]
            entry = typing.cast("Values", values).get(mk)
            state = None if entry is None else decode_state(decode_value(entry[0]))
            now = self.clock() if now_ms is None else now_ms
            step = strategy.decide(state, now, rate, cost)
            if not step.write:
                return step.decision
            command = _write_command(mk, entry, step.state, step.ttl_ms)
            if command is None:
                return step.decision
            (line,) = await client.execute(command, (LINE,))
            if line == b"STORED":
                return step.decision
            if line not in (b"EXISTS", b"NOT_FOUND", b"NOT_STORED"):
                raise BackendError(f"memcached answered the write of {skey!r} with {line!r}.")
        raise BackendError(
            f"Gave up deciding {skey!r} after {self.max_retries + 1} attempts: other requests "
            f"kept changing it (CAS contention). Raise max_retries, or spread the load over more keys."
        )


def _write_command(
    mk: bytes, entry: tuple[bytes, int] | None, state: Sequence[int] | None, ttl_ms: int
) -> bytes | None:
    """``add`` a new state, ``cas`` over the one read, or expire it (``cas`` with exptime -1)."""
    if state is None:
        if entry is None:
            return None
        return b"cas %s 0 -1 0 %d\r\n\r\n" % (mk, entry[1])
    data = encode_text(encode_state(tuple(state)))
    ttl = exptime(ceil_div(ttl_ms, 1000))
    if entry is None:
        return b"add %s 0 %d %d\r\n%s\r\n" % (mk, ttl, len(data), data)
    return b"cas %s 0 %d %d %d\r\n%s\r\n" % (mk, ttl, len(data), entry[1], data)
