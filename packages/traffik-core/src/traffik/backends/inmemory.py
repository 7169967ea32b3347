"""The in-memory backend: one process, O(1) per decision, bounded memory."""

from __future__ import annotations

import asyncio
import time as _time
import typing
import weakref
from collections import OrderedDict

from traffik.backends.base import BackendCapabilities, Clock, ThrottleBackend
from traffik.decisions import Decision
from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.strategies._base import decode_state, encode_state

if typing.TYPE_CHECKING:
    from traffik.failures import FailurePolicy
    from traffik.rates import Rate
    from traffik.strategies._base import State, Strategy
    from traffik.types import HTTPConnectionT

__all__ = ["DEFAULT_MAX_KEYS", "AsyncInMemoryLock", "InMemoryBackend", "monotonic_ms"]

#: Default bound on stored keys (about 200-300 bytes each, so a few hundred MB at most).
DEFAULT_MAX_KEYS = 1_000_000

#: Expired entries looked at (from the least recently used end) per write.
_RECLAIM_PER_WRITE = 2

_Store = OrderedDict[str, list[typing.Any]]  # key -> [value (str or State), expires_at_ms or None]


def monotonic_ms() -> int:
    """Milliseconds of a monotonic clock (the in-memory backend's default clock)."""
    return _time.monotonic_ns() // 1_000_000


class AsyncInMemoryLock:
    """A named lock of one process, owned by the handle that acquired it."""

    __slots__ = ("_lock", "_owned", "name")

    def __init__(self, name: str, lock: asyncio.Lock) -> None:
        self.name = name
        self._lock = lock
        self._owned = False

    def locked(self) -> bool:
        return self._lock.locked()

    async def acquire(self, blocking: bool = True, blocking_timeout: float | None = None) -> bool:
        if self._owned:
            raise RuntimeError(f"Lock {self.name!r} is already held by this handle; it is not re-entrant.")
        if not blocking:
            if self._lock.locked():
                return False
            await self._lock.acquire()
        elif blocking_timeout is None:
            await self._lock.acquire()
        else:
            try:
                await asyncio.wait_for(self._lock.acquire(), blocking_timeout)
            except asyncio.TimeoutError:
                return False
        self._owned = True
        return True

    async def release(self) -> None:
        # Only the handle that acquired the lock can release it.
        if self._owned:
            self._owned = False
            self._lock.release()


class InMemoryBackend(ThrottleBackend[_Store, "HTTPConnectionT"]):
    """Keeps state in a dict in this process: for tests, development and single-process apps.

    Every operation is synchronous under the hood (no ``await`` inside a critical
    section), so decisions are atomic without locks and cost O(1) whatever the
    number of keys. Expired entries are dropped when touched and a few at a time on
    every write; beyond ``max_keys`` the least recently used keys are evicted.
    ``clock`` (milliseconds, default monotonic) drives both decisions and expiry.
    """

    capabilities = BackendCapabilities(injectable_clock=True)
    unwrapped_methods = frozenset({"decide"})

    def __init__(
        self,
        namespace: str = "inmemory",
        identifier: typing.Any = None,
        handle_throttled: typing.Any = None,
        persistent: bool = False,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Clock | None = None,
        failure_policy: FailurePolicy | None | typing.Literal["default"] = "default",
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be a positive int, got {max_keys!r}.")
        super().__init__(
            None,
            namespace=namespace,
            identifier=identifier,
            handle_throttled=handle_throttled,
            persistent=persistent,
            clock=clock or monotonic_ms,
            failure_policy=failure_policy,
        )
        self.max_keys = max_keys
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # -- lifecycle ------------------------------------------------------------

    async def initialize(self) -> None:
        if self.connection is None:
            self.connection = OrderedDict()

    async def close(self) -> None:
        self.connection = None

    def _store(self) -> _Store:
        store = self.connection
        if store is None:
            raise BackendConnectionError(
                f"{self!r} is not initialised or was closed; use 'async with backend(...)' "
                f"or await backend.initialize() first."
            )
        return store

    async def reset(self) -> None:
        store = self._store()
        prefix = self.namespace + ":"
        for key in [k for k in store if k.startswith(prefix)]:
            del store[key]

    def __len__(self) -> int:
        """How many keys are stored (expired ones not yet reclaimed included)."""
        return len(self.connection or ())

    # -- storage core (synchronous) ---------------------------------------------

    def _read(self, store: _Store, key: str, now: int) -> typing.Any:
        entry = store.get(key)
        if entry is None:
            return None
        expires = entry[1]
        if expires is not None and expires <= now:
            del store[key]
            return None
        store.move_to_end(key)
        return entry[0]

    def _write(self, store: _Store, key: str, value: typing.Any, expires: int | None) -> None:
        entry = store.get(key)
        if entry is None:
            store[key] = [value, expires]
            if len(store) > self.max_keys:
                store.popitem(last=False)
        else:
            entry[0] = value
            entry[1] = expires
            store.move_to_end(key)
        self._reclaim(store)

    def _reclaim(self, store: _Store) -> None:
        now = self.clock()
        for _ in range(_RECLAIM_PER_WRITE):
            if not store:
                return
            key = next(iter(store))
            expires = store[key][1]
            if expires is None or expires > now:
                return
            del store[key]

    # -- primitives -------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        value = self._read(self._store(), key, self.clock())
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, tuple):
            return encode_state(value)
        return str(value)

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        if expire is not None and expire <= 0:
            raise ValueError(f"expire must be a positive number of seconds, got {expire}.")
        expires = None if expire is None else self.clock() + int(expire * 1000)
        self._write(self._store(), key, str(value), expires)

    async def delete(self, key: str) -> bool:
        store = self._store()
        present = self._read(store, key, self.clock()) is not None
        if present:
            del store[key]
        return present

    def _add(self, key: str, amount: int, ttl: float | None) -> int:
        store = self._store()
        now = self.clock()
        current = self._read(store, key, now)
        if current is None:
            value = amount
            expires = None if ttl is None else now + int(ttl * 1000)
            self._write(store, key, str(value), expires)
            return value
        try:
            value = int(current) + amount
        except (TypeError, ValueError):
            raise ValueError(f"The value at {key!r} is not an integer counter.") from None
        store[key][0] = str(value)
        return value

    async def increment(self, key: str, amount: int = 1) -> int:
        return self._add(key, amount, None)

    async def decrement(self, key: str, amount: int = 1) -> int:
        return self._add(key, -amount, None)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        return self._add(key, amount, ttl)

    async def expire(self, key: str, seconds: float) -> bool:
        store = self._store()
        now = self.clock()
        if self._read(store, key, now) is None:
            return False
        store[key][1] = now + int(seconds * 1000)
        return True

    async def multi_get(self, *keys: str) -> list[str | None]:
        return [await self.get(key) for key in keys]

    async def get_lock(self, name: str) -> AsyncInMemoryLock:
        lock = self._locks.get(name)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[name] = lock
        return AsyncInMemoryLock(name, lock)

    # -- decisions --------------------------------------------------------------

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        store = self.connection
        if store is None:
            store = self._store()  # raises BackendConnectionError
        skey = f"{self.namespace}:{key}:{strategy.storage_suffix()}"
        now = self.clock() if now_ms is None else now_ms
        state = self._state(store, skey, now)
        step = strategy.decide(state, now, rate, cost)
        if step.write:
            if step.state is None:
                store.pop(skey, None)
            else:
                self._write(store, skey, step.state, now + step.ttl_ms)
        return step.decision

    async def peek(self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None) -> Decision:
        store = self._store()
        now = self.clock() if now_ms is None else now_ms
        state = self._state(store, f"{self.namespace}:{key}:{strategy.storage_suffix()}", now)
        return strategy.peek(state, now, rate)

    def _state(self, store: _Store, skey: str, now: int) -> State | None:
        value = self._read(store, skey, now)
        if value is None or isinstance(value, tuple):
            return value
        return decode_state(value)
