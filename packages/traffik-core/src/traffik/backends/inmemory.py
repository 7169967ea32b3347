"""The in-memory backend: one process, O(1) per decision, bounded memory.

State lives in an LRU-ordered dict with a coarse expiry wheel (see
``_inmemory_store``): expired entries are reclaimed a few at a time on every write,
and past ``max_keys`` the least recently used key is evicted. Decisions run the
strategy synchronously; the fixed window, the common case, is inlined.
"""

from __future__ import annotations

import math
import time as _time
import typing
import weakref
from collections import OrderedDict

from traffik.backends._inmemory_lock import AsyncInMemoryLock
from traffik.backends._inmemory_lock import LockState as _LockState
from traffik.backends._inmemory_store import BUCKET_SHIFT as _BUCKET_SHIFT
from traffik.backends._inmemory_store import ExpiryWheelStore as _ExpiryWheelStore
from traffik.backends._inmemory_store import Store as _Store
from traffik.backends.base import BackendCapabilities, Clock, ThrottleBackend
from traffik.decisions import NEVER
from traffik.decisions import Decision as _Decision
from traffik.exceptions import BackendConnectionError, ConfigurationError
from traffik.leases import LeaseGrant, release_lease, renew_lease, take_lease
from traffik.strategies._adjust import check_adjustable_strategy
from traffik.strategies._base import decode_state, encode_state, fast_new
from traffik.strategies.fixed_window import FixedWindowStrategy as _FixedWindow
from traffik.types import HTTPConnectionT

if typing.TYPE_CHECKING:
    from traffik._guard.policy import FailurePolicy
    from traffik.decisions import Decision
    from traffik.rates import Rate
    from traffik.strategies._base import State, Strategy

__all__ = ["DEFAULT_MAX_KEYS", "AsyncInMemoryLock", "InMemoryBackend", "monotonic_ms"]

#: Default bound on stored keys. One decision state costs about 500 bytes with a
#: 40-character key (key string, entry, state, LRU link, expiry-set slot), so the
#: default caps a backend near 50 MB.
DEFAULT_MAX_KEYS = 100_000

_monotonic_ns = _time.monotonic_ns


def monotonic_ms() -> int:
    """Milliseconds of a monotonic clock (the in-memory backend's default clock)."""
    return _monotonic_ns() // 1_000_000


def _check_ttl(name: str, seconds: float) -> None:
    if not 0 < seconds < math.inf:  # also refuses NaN
        raise ValueError(
            f"{name} must be a positive number of seconds, got {seconds}; for no TTL "
            f"use set(key, value) without expire, or increment()."
        )


class InMemoryBackend(_ExpiryWheelStore, ThrottleBackend[_Store, HTTPConnectionT]):
    """Keeps state in a dict in this process: for tests, development and single-process apps.

    Every operation is synchronous under the hood (no ``await`` inside a critical
    section), so decisions are atomic without locks and cost O(1) whatever the
    number of keys. Expired entries are dropped when read, and a few at a time on
    every write; beyond ``max_keys`` (default :data:`DEFAULT_MAX_KEYS`) the least
    recently used key is evicted. ``clock`` (a zero-argument callable returning
    milliseconds; default monotonic) drives both decisions and expiry. State does
    not survive ``close()`` whatever ``persistent`` says: it lives in this object.
    """

    capabilities = BackendCapabilities(injectable_clock=True, leases=True)
    unwrapped_methods = frozenset({"decide", "adjust"})

    def __init__(
        self,
        namespace: str = "inmemory",
        identifier: typing.Any = None,
        handle_throttled: typing.Any = None,
        persistent: bool = False,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Clock | None = None,
        failure_policy: FailurePolicy | typing.Literal["default"] | None = "default",
    ) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(
                f"max_keys must be a positive int, got {max_keys!r}; "
                f"for example InMemoryBackend(max_keys=100_000)."
            )
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
        self._buckets: dict[int, set[str]] = {}
        self._bucket_heap: list[int] = []
        self._locks: weakref.WeakValueDictionary[str, _LockState] = weakref.WeakValueDictionary()
        #: Concurrency leases per lease key (traffik.leases); empty sets are dropped.
        self._leases: dict[str, dict[str, int]] = {}
        # The last fixed-window rejection of a full window (reset_ms 0 never matches).
        self._fw_full: Decision = _Decision(False, 0, 0, 0, 0, 0, "default")
        # The last transition that left its (stored, tuple) state as it was: (state,
        # now, strategy, rate, cost, decision). Transitions are pure, so the same
        # state object (held here, so never recycled) at the same millisecond under
        # the same strategy, rate and cost gets the same decision without a step.
        self._unchanged: tuple[typing.Any, ...] = (None, None, None, None, None, None)

    # -- lifecycle ------------------------------------------------------------

    async def initialize(self) -> None:
        if self.connection is None:
            self.connection = OrderedDict()
            self._buckets = {}
            self._bucket_heap = []

    async def close(self) -> None:
        self.connection = None
        self._leases = {}
        self._buckets = {}
        self._bucket_heap = []

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
        self._leases.clear()
        prefix = self.namespace + ":"
        for key in [k for k in store if k.startswith(prefix)]:
            self._drop(store, key, store[key])

    def __len__(self) -> int:
        """How many keys are stored (expired ones not yet reclaimed included)."""
        return len(self.connection or ())

    def __bool__(self) -> bool:
        # An empty backend is still a backend: ``backend or default`` must keep it.
        return True

    # -- primitives -------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        entry = self._live(self._store(), key, self.clock())
        if entry is None:
            return None
        value = entry[0]
        if isinstance(value, str):
            return value
        if isinstance(value, tuple):
            return encode_state(value)
        return str(value)

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        if expire is not None:
            _check_ttl("expire", expire)
        now = self.clock()
        expires = None if expire is None else now + math.ceil(expire * 1000)
        self._put(self._store(), key, str(value), expires, now)

    async def delete(self, key: str) -> bool:
        store = self._store()
        entry = self._live(store, key, self.clock())
        if entry is None:
            return False
        self._drop(store, key, entry)
        return True

    def _add(self, key: str, amount: int, ttl: float | None) -> int:
        store = self._store()
        now = self.clock()
        entry = self._live(store, key, now)
        if entry is None:
            expires = None if ttl is None else now + math.ceil(ttl * 1000)
            self._put(store, key, str(amount), expires, now)
            return amount
        try:
            value = int(entry[0]) + amount
        except (TypeError, ValueError):
            raise ValueError(
                f"The value at {key!r} is not an integer counter; increment only keys "
                f"that hold whole numbers."
            ) from None
        entry[0] = str(value)
        return value

    async def increment(self, key: str, amount: int = 1) -> int:
        return self._add(key, amount, None)

    async def decrement(self, key: str, amount: int = 1) -> int:
        return self._add(key, -amount, None)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        _check_ttl("ttl", ttl)
        return self._add(key, amount, ttl)

    async def expire(self, key: str, seconds: float) -> bool:
        store = self._store()
        now = self.clock()
        entry = self._live(store, key, now)
        if entry is None:
            return False
        expires = now + math.ceil(seconds * 1000)
        if expires <= now:
            self._drop(store, key, entry)
        else:
            self._expire_at(key, entry, expires)
        return True

    async def multi_get(self, *keys: str) -> list[str | None]:
        return [await self.get(key) for key in keys]

    async def get_lock(self, name: str) -> AsyncInMemoryLock:
        state = self._locks.get(name)
        if state is None:
            state = _LockState()
            self._locks[name] = state
        return AsyncInMemoryLock(name, state)

    # -- decisions --------------------------------------------------------------

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        """Charge ``cost`` to ``key`` under ``strategy`` and ``rate`` in one synchronous step."""
        return self._decide(key, strategy, rate, cost, now_ms)

    def _decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, now_ms: int | None = None
    ) -> Decision:
        """:meth:`decide` without the coroutine: ``decide_now`` (see
        :attr:`ThrottleBackend.decide_now`), which a subclass overriding ``decide`` loses."""
        store = self.connection
        if store is None:
            store = self._store()  # raises BackendConnectionError
        if now_ms is not None:
            now = now_ms
        else:
            clock = self.clock
            # The default clock inlined: one Python call less on the hot path.
            now = _monotonic_ns() // 1_000_000 if clock is monotonic_ms else clock()
        if strategy.__class__ is _FixedWindow and cost.__class__ is int and cost > 0:
            # FixedWindowStrategy.decide inlined (same decisions, tested differentially):
            # no strategy call, no Transition, no storage_suffix() call.
            window = rate._expire
            if window:
                skey = f"{self.namespace}:{key}:fw"
                entry = store.get(skey)
                limit = rate.limit
                start = now - now % window
                used = 0
                if entry is not None:
                    state = entry[0]
                    expires = entry[1]
                    if expires is not None and expires <= now:
                        state = None
                    elif state.__class__ is not tuple:
                        state = decode_state(state)
                    if state is not None and len(state) == 2 and state[0] >= start:
                        start, used = state
                else:
                    state = None
                reset = start + window - now
                if used + cost <= limit:
                    used += cost
                    expires = start + window  # now + reset: the end of the window
                    if entry is None:
                        self._put(store, skey, (start, used), expires, now)
                    else:
                        entry[0] = (start, used)
                        store.move_to_end(skey)
                        if expires != entry[1]:  # a new window: the expiry moves
                            if expires >> _BUCKET_SHIFT != entry[2]:
                                self._expire_at(skey, entry, expires)
                            else:
                                entry[1] = expires
                        heap = self._bucket_heap
                        if heap and heap[0] < now >> _BUCKET_SHIFT:
                            self._reclaim(store, now)
                    return fast_new(
                        _Decision, (True, limit, limit - used, reset, 0, window, "default")
                    )
                if entry is not None:
                    if state is None and expires is not None and expires <= now:
                        self._drop(store, skey, entry)
                    else:
                        store.move_to_end(skey)
                if used >= limit and cost <= limit:
                    # A full window: every such rejection in this millisecond is the same
                    # (immutable) Decision, so reuse the last one instead of building it.
                    last = self._fw_full
                    if last[3] == reset and last[1] == limit and last[5] == window:
                        return last
                    last = fast_new(_Decision, (False, limit, 0, reset, reset, window, "default"))
                    self._fw_full = last
                    return last
                return fast_new(
                    _Decision,
                    (
                        False,
                        limit,
                        limit - used if used < limit else 0,
                        reset if used else 0,
                        NEVER if cost > limit else reset,
                        window,
                        "default",
                    ),
                )
        skey = f"{self.namespace}:{key}:{strategy.storage_suffix()}"
        entry = store.get(skey)
        state = None
        stale = False
        if entry is not None:
            expires = entry[1]
            if expires is not None and expires <= now:
                stale = True  # decided as a fresh key; the entry is reused if written
            else:
                state = entry[0]
                if state.__class__ is not tuple:
                    state = decode_state(state)
                else:
                    memo = self._unchanged
                    if (
                        memo[0] is state
                        and memo[1] == now
                        and memo[2] is strategy
                        and memo[3] is rate
                        and memo[4] == cost
                    ):
                        # The same pure transition as the last one that left its state
                        # unchanged (a hot key refused again in the same millisecond).
                        store.move_to_end(skey)
                        return typing.cast("Decision", memo[5])
        new, ttl_ms, decision, write = strategy.decide(state, now, rate, cost)
        if not write and state is not None and new is state:
            self._unchanged = (state, now, strategy, rate, cost, decision)
        if write:
            if new is None:
                if entry is not None:
                    self._drop(store, skey, entry)
            elif entry is None:
                self._put(store, skey, new, now + ttl_ms, now)
            else:
                entry[0] = new
                store.move_to_end(skey)
                expires = now + ttl_ms
                # A new bucket is never below the reclaim horizon (expires > now).
                if expires >> _BUCKET_SHIFT != entry[2]:
                    self._expire_at(skey, entry, expires)
                else:
                    entry[1] = expires
                heap = self._bucket_heap
                if heap and heap[0] < now >> _BUCKET_SHIFT:
                    self._reclaim(store, now)
        elif entry is not None:
            if stale:
                self._drop(store, skey, entry)
            else:
                store.move_to_end(skey)
        return decision

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
        """Give back or charge more in one synchronous step (see ``ThrottleBackend.adjust``)."""
        check_adjustable_strategy(strategy)
        store = self._store()
        now = self.clock() if now_ms is None else now_ms
        skey = f"{self.namespace}:{key}:{strategy.storage_suffix()}"
        entry = self._live(store, skey, now)
        state: State | None = None
        if entry is not None:
            value = entry[0]
            state = value if isinstance(value, tuple) else decode_state(value)
        new, ttl_ms, decision, write = strategy.adjust(state, now, rate, delta, age_ms)
        if write:
            if new is None:
                if entry is not None:
                    self._drop(store, skey, entry)
            elif entry is None:
                self._put(store, skey, new, now + ttl_ms, now)
            else:
                entry[0] = new
                store.move_to_end(skey)
                self._expire_at(skey, entry, now + ttl_ms)
        return decision

    decide_now = _decide

    async def peek(
        self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None
    ) -> Decision:
        """The decision a one-unit request would get now, charging nothing."""
        store = self._store()
        now = self.clock() if now_ms is None else now_ms
        entry = self._live(store, f"{self.namespace}:{key}:{strategy.storage_suffix()}", now)
        state: State | None = None
        if entry is not None:
            value = entry[0]
            state = value if isinstance(value, tuple) else decode_state(value)
        return strategy.peek(state, now, rate)

    # -- leases: the reference transitions of traffik.leases, in one synchronous step --

    async def take_lease(
        self, key: str, holder: str, limit: int, lease_ms: int, *, now_ms: int | None = None
    ) -> LeaseGrant:
        self._store()
        lkey = self.lease_key(key)
        leases = self._leases.get(lkey)
        if leases is None:
            leases = self._leases[lkey] = {}
        now = self.clock() if now_ms is None else now_ms
        grant = take_lease(leases, now, holder, limit, lease_ms)
        if not leases:
            del self._leases[lkey]
        return grant

    async def renew_lease(
        self, key: str, holder: str, lease_ms: int, *, now_ms: int | None = None
    ) -> bool:
        return self._on_leases(
            key, lambda leases, now: renew_lease(leases, now, holder, lease_ms), now_ms
        )

    async def release_lease(self, key: str, holder: str, *, now_ms: int | None = None) -> bool:
        return self._on_leases(key, lambda leases, now: release_lease(leases, now, holder), now_ms)

    def _on_leases(
        self, key: str, step: typing.Callable[[dict[str, int], int], bool], now_ms: int | None
    ) -> bool:
        self._store()
        lkey = self.lease_key(key)
        leases = self._leases.get(lkey)
        if leases is None:
            return False
        done = step(leases, self.clock() if now_ms is None else now_ms)
        if not leases:
            del self._leases[lkey]
        return done
