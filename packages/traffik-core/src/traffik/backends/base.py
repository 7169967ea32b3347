"""The backend contract: storage primitives, one-step decisions, lifecycle.

A backend stores throttling state under keys that start with its namespace. It
offers the traffik 1.0.0b2 primitives (``get``, ``set``, ``increment``, locks, ...)
for custom strategies, and :meth:`ThrottleBackend.decide`, which runs a built-in
strategy's transition atomically. Backends that only implement the primitives get
a correct generic ``decide`` (lock, read, transition, write); the built-in
backends replace it with a native atomic step.

Every exception a backend method raises, other than traffik's own, is wrapped
into :class:`~traffik.exceptions.BackendError` here, at this one boundary.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time as _time
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass

from traffik._guard.policy import DEFAULT_NETWORK_POLICY, FailurePolicy
from traffik._guard.registry import drain_abandoned, forget_local_blocks
from traffik._guard.types import BackendClass
from traffik.backends._context import (
    BACKEND_STATE_KEY,
    ThrottleContext,
    get_throttle_backend,
    initialize_by_policy,
    throttle_backend_ctx,
)
from traffik.backends._locking import AsyncLockContext
from traffik.decisions import Decision
from traffik.exceptions import BackendError, ConfigurationError, TraffikException
from traffik.handlers import connection_throttled
from traffik.identifiers import connection_identifier
from traffik.leases import LeaseGrant
from traffik.lifecycle import observe_routes
from traffik.strategies._adjust import check_adjustment
from traffik.strategies._base import Strategy, decode_state, encode_state
from traffik.types import HTTPConnectionT

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from traffik.rates import Rate
    from traffik.strategies._base import State, Transition
    from traffik.types import AsyncLock

__all__ = [
    "BACKEND_STATE_KEY",
    "BackendCapabilities",
    "Clock",
    "ThrottleBackend",
    "ThrottleContext",
    "build_key",
    "connection_identifier",
    "connection_throttled",
    "get_throttle_backend",
    "initialize_by_policy",
    "throttle_backend_ctx",
    "wall_clock_ms",
]

T = typing.TypeVar("T")

#: A clock: a zero-argument callable returning milliseconds as an int.
Clock = typing.Callable[[], int]

#: How long the generic ``decide`` waits for its per-key lock, in seconds.
GENERIC_DECIDE_LOCK_TIMEOUT = 5.0

#: Methods wrapped so that client errors surface as BackendError.
_WRAPPED = (
    "initialize",
    "close",
    "get",
    "set",
    "delete",
    "increment",
    "decrement",
    "increment_with_ttl",
    "expire",
    "multi_get",
    "get_lock",
    "reset",
    "clear",
    "decide",
    "peek",
    "reset_key",
    "adjust",
    "take_lease",
    "renew_lease",
    "release_lease",
)


#: Methods after which locally cached refusals are forgotten.
_RESETS = frozenset({"reset", "clear"})


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch (the default clock of shared backends)."""
    return _time.time_ns() // 1_000_000


def build_key(namespace: str, key: str, *args: typing.Any, **kwargs: typing.Any) -> str:
    """``namespace:key``; extra arguments are folded into a digest after the namespace."""
    if not args and not kwargs:
        return f"{namespace}:{key}"
    parts = sorted([str(key), *map(str, args), *(f"{k}={v}" for k, v in kwargs.items())])
    digest = hashlib.blake2b(":".join(parts).encode(), digest_size=16).hexdigest()
    return f"{namespace}:{digest}"


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend promises beyond the core contract; the conformance kit reads it.

    A test of the kit that needs a flag skips, naming the flag, when it is False.
    """

    #: Two instances built with the same settings see the same data (Redis, Memcached).
    shared_state: bool = False
    #: ``decide(..., now_ms=...)`` uses the given time instead of the backend's clock.
    injectable_clock: bool = False
    #: Locks exclude holders in other backend instances (and processes).
    distributed_locks: bool = False
    #: ``decrement`` below zero returns negative numbers.
    negative_counters: bool = True
    #: The backend keeps one clock for every app host (a server clock).
    server_clock: bool = False
    #: ``take_lease``/``renew_lease``/``release_lease`` work (concurrency limits).
    leases: bool = False


def _wrap(name: str, func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(func)
    async def wrapper(
        self: ThrottleBackend[typing.Any, typing.Any], *args: typing.Any, **kwargs: typing.Any
    ) -> T:
        try:
            if name == "close":
                await drain_abandoned(self)
            result = await func(self, *args, **kwargs)
        except TraffikException:
            raise
        except Exception as exc:
            raise self.wrap_error(name, exc) from exc
        if name in _RESETS:
            self._forget_local_blocks()
        return result

    wrapper.__traffik_wrapped__ = True  # type: ignore[attr-defined]
    return wrapper


class ThrottleBackend(ABC, typing.Generic[T, HTTPConnectionT]):
    """Storage for throttling state, shared by every throttle that uses it.

    ``connection`` is the client or handle (``None`` until :meth:`initialize`).
    ``namespace`` prefixes every key. ``identifier`` and ``handle_throttled`` are the
    defaults for throttles that do not set their own. ``persistent=False`` makes a
    ``backend(...)`` context reset the namespace's data on exit.
    """

    #: Override in subclasses to declare optional guarantees.
    capabilities: typing.ClassVar[BackendCapabilities] = BackendCapabilities()
    #: Methods a subclass wants left unwrapped (hot paths that cannot raise client errors).
    unwrapped_methods: typing.ClassVar[frozenset[str]] = frozenset()
    #: Shadow mode for every throttle that decides on this backend: decisions are
    #: taken, charged and reported as usual, and nothing is refused (set
    #: ``backend.shadow = True``; read per request, so it can be switched live).
    shadow: bool = False
    #: A backend whose decisions never wait (in memory) may offer ``decide`` as a plain
    #: method, ``decide_now(key, strategy, rate, cost, now_ms)``: the strategy protocol
    #: and the failure layer then skip a coroutine per decision. None otherwise, and
    #: reset to None in a subclass that overrides ``decide`` without it.
    decide_now: typing.ClassVar[typing.Callable[..., Decision] | None] = None

    def __init_subclass__(cls, **kwargs: typing.Any) -> None:
        super().__init_subclass__(**kwargs)
        if "decide" in cls.__dict__ and "decide_now" not in cls.__dict__:
            cls.decide_now = None  # its decide may wait, or do more: always call it
        for name in _WRAPPED:
            if name in cls.unwrapped_methods:
                continue
            func = cls.__dict__.get(name)
            if func is None or getattr(func, "__traffik_wrapped__", False):
                continue
            if not callable(func):
                continue
            setattr(cls, name, _wrap(name, func))

    def __init__(
        self,
        connection: T | None = None,
        *,
        namespace: str,
        identifier: typing.Any = None,
        handle_throttled: typing.Any = None,
        persistent: bool = False,
        clock: Clock | None = None,
        failure_policy: FailurePolicy | typing.Literal["default"] | None = "default",
    ) -> None:
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}.")
        for name, value in (("identifier", identifier), ("handle_throttled", handle_throttled)):
            if value is not None and not callable(value):
                raise ConfigurationError(
                    f"{name} must be an async callable or None, got {value!r}. A value given "
                    f"by position may have landed in the wrong parameter: pass the options "
                    f"after the namespace by name, for example persistent=True."
                )
        self.connection: T | None = connection
        self.namespace = namespace
        self.identifier = identifier or connection_identifier
        self.handle_throttled = handle_throttled or connection_throttled
        self.persistent = persistent
        self.clock: Clock = clock or wall_clock_ms
        if failure_policy == "default":
            failure_policy = DEFAULT_NETWORK_POLICY if self.capabilities.shared_state else None
        elif failure_policy is not None and not isinstance(failure_policy, FailurePolicy):
            raise ConfigurationError(
                f"failure_policy must be a traffik.failures.FailurePolicy or None, got {failure_policy!r}."
            )
        #: What happens when this backend fails (see traffik.failures); None: errors propagate.
        self.failure_policy: FailurePolicy | None = failure_policy

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r})"

    # -- keys -----------------------------------------------------------------

    async def get_key(self, key: str, *args: typing.Any, **kwargs: typing.Any) -> str:
        """The storage key for ``key``: it always starts with ``namespace:``."""
        return build_key(self.namespace, key, *args, **kwargs)

    def state_key(self, key: str, strategy: Strategy) -> str:
        """Where ``strategy`` keeps the state of throttle key ``key``."""
        return f"{self.namespace}:{key}:{strategy.storage_suffix()}"

    async def reset_key(self, key: str, strategy: Strategy, rate: Rate) -> None:
        """Forget the state of throttle key ``key`` under ``strategy`` and ``rate``: its
        next request starts on a fresh quota.

        The default deletes :meth:`state_key`. A backend that keeps a key's state
        elsewhere too (Memcached's fixed-window counters) overrides it. Throttles call
        it from :meth:`~traffik.throttles.BaseThrottle.reset_client`, which also makes
        this process's block cache forget the key.
        """
        await self.delete(self.state_key(key, strategy))

    def wrap_error(self, operation: str, error: Exception) -> BackendError:
        """The :class:`~traffik.exceptions.BackendError` raised for client error ``error``
        of method ``operation``: the one place a backend's errors are translated.

        Override it to say more (which server, whether it was unreachable:
        :class:`~traffik.exceptions.BackendConnectionError`); it is called by the
        wrapper every backend method gets, never twice for one error.
        """
        return BackendError(
            f"{type(self).__name__}.{operation}() failed: {type(error).__name__}: {error}"
        )

    def failure_domain(self, key: str) -> typing.Hashable:
        """Which part of the storage answers throttle key ``key``, for the failure policy.

        The policy keeps one circuit breaker per domain: failures of one domain open
        its circuit only, and keys of other domains keep reaching the backend. A
        backend spread over independent servers (a client-side pool of Memcached
        servers, say) returns the server that holds ``key``; the default, ``None``,
        makes the whole backend one domain. It is called once per decision: keep it
        cheap, and return the same value for the same key while the topology holds.
        """
        return None

    def _forget_local_blocks(self) -> None:
        forget_local_blocks(self)

    def now_ms(self) -> int:
        """The backend's current time in milliseconds (its ``clock``)."""
        return self.clock()

    # -- lifecycle ------------------------------------------------------------

    @abstractmethod
    async def initialize(self) -> None:
        """Open connections and resources. Calling it again is a no-op."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Later calls raise BackendConnectionError until re-initialised."""

    @abstractmethod
    async def reset(self) -> None:
        """Delete every key in this backend's namespace (and nothing outside it)."""

    async def clear(self) -> None:
        """Delete every key in this backend's namespace (an alias of :meth:`reset`)."""
        await self.reset()

    # -- primitives -----------------------------------------------------------

    @abstractmethod
    async def get(self, key: str) -> str | None:
        """The value stored at ``key``, or None."""

    @abstractmethod
    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing value and TTL; ``expire`` in seconds."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""

    @abstractmethod
    async def increment(self, key: str, amount: int = 1) -> int:
        """Atomically add ``amount`` (a missing key counts as 0); keep any TTL; return the new value."""

    async def decrement(self, key: str, amount: int = 1) -> int:
        """Atomically subtract ``amount``; return the new value."""
        return await self.increment(key, -amount)

    async def increment_with_ttl(self, key: str, amount: int = 1, ttl: int = 60) -> int:
        """Atomically add ``amount``; if this created the key, give it ``ttl`` seconds to live.

        A later call never extends the TTL. This default holds a per-key lock.
        """
        async with await self.lock(
            f"lock:incr:{key}", blocking=True, blocking_timeout=GENERIC_DECIDE_LOCK_TIMEOUT
        ):
            value = await self.increment(key, amount)
            if value == amount:
                await self.expire(key, ttl)
            return value

    async def expire(self, key: str, seconds: float) -> bool:
        """Give an existing ``key`` a TTL of ``seconds``; False if it does not exist."""
        async with await self.lock(
            f"lock:expire:{key}", blocking=True, blocking_timeout=GENERIC_DECIDE_LOCK_TIMEOUT
        ):
            value = await self.get(key)
            if value is None:
                return False
            await self.set(key, value, expire=seconds)
            return True

    async def multi_get(self, *keys: str) -> list[str | None]:
        """The values of ``keys``, in order (None for missing ones)."""
        return [await self.get(key) for key in keys]

    @abstractmethod
    async def get_lock(self, name: str) -> AsyncLock:
        """A lock named ``name`` (already namespaced), owned by whoever acquires it."""

    async def lock(
        self,
        name: str,
        release_timeout: float | None = None,
        blocking: bool = True,
        blocking_timeout: float | None = None,
    ) -> AsyncLockContext:
        """``async with await backend.lock("lock:x"): ...``: a context holding lock ``name``.

        Raises :class:`~traffik.exceptions.LockTimeoutError` on entry if the lock is
        not acquired (non-blocking and held, or ``blocking_timeout`` seconds passed).
        """
        full = await self.get_key(name)
        lock = await self.get_lock(full)
        return AsyncLockContext(
            lock,
            full,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            release_timeout=release_timeout,
        )

    # -- decisions ------------------------------------------------------------

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        """Charge ``cost`` to throttle key ``key`` under ``strategy`` and ``rate``, atomically.

        This generic version holds a per-key lock around read, transition and write.
        ``now_ms`` overrides the backend's clock (used by tests).
        """
        skey = self.state_key(key, strategy)
        async with await self.lock(
            f"lock:{skey}", blocking=True, blocking_timeout=GENERIC_DECIDE_LOCK_TIMEOUT
        ):
            state = decode_state(await self.get(skey))
            now = self.now_ms() if now_ms is None else now_ms
            step = strategy.decide(state, now, rate, cost)
            await self._write_step(skey, state, step)
        return step.decision

    async def _write_step(self, skey: str, state: State | None, step: Transition) -> None:
        """Store what a transition says (the generic paths of decide and adjust)."""
        if step.write:
            if step.state is None:
                if state is not None:
                    await self.delete(skey)
            else:
                await self.set(
                    skey, encode_state(step.state), expire=math.ceil(step.ttl_ms / 1000) or 1
                )

    async def peek(
        self, key: str, strategy: Strategy, rate: Rate, *, now_ms: int | None = None
    ) -> Decision:
        """The decision a one-unit request would get now, charging nothing."""
        state = decode_state(await self.get(self.state_key(key, strategy)))
        now = self.now_ms() if now_ms is None else now_ms
        return strategy.peek(state, now, rate)

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
        """Give back ``-delta`` units to throttle key ``key`` or charge ``delta`` more, atomically.

        The inverse of :meth:`decide`: never refused, it may leave the key in debt
        (a charge) and never leaves more than the full quota (a refund); see
        :meth:`Strategy.adjust <traffik.strategies.Strategy.adjust>` for each
        strategy's rules. ``age_ms`` is how long ago the refunded charge was made.
        Returns a snapshot of the quota after the adjustment (``remaining``: units
        left, ``allowed``: whether a one-unit request would be admitted now).
        Strategies that cannot adjust (custom seed-protocol callables) raise
        ``ConfigurationError``. This generic version holds a per-key lock around
        read, transition and write, like the generic :meth:`decide`.
        """
        check_adjustment(strategy, rate, delta, age_ms)  # bad input fails before any I/O
        skey = self.state_key(key, strategy)
        async with await self.lock(
            f"lock:{skey}", blocking=True, blocking_timeout=GENERIC_DECIDE_LOCK_TIMEOUT
        ):
            state = decode_state(await self.get(skey))
            now = self.now_ms() if now_ms is None else now_ms
            step = strategy.adjust(state, now, rate, delta, age_ms)
            await self._write_step(skey, state, step)
        return step.decision

    # -- leases (concurrency limits; see traffik.leases) -------------------------

    def lease_key(self, key: str) -> str:
        """Where the leases of throttle key ``key`` are kept."""
        return f"{self.namespace}:{key}:lease"

    async def take_lease(
        self, key: str, holder: str, limit: int, lease_ms: int, *, now_ms: int | None = None
    ) -> LeaseGrant:
        """Atomically drop expired leases of ``key`` and give ``holder`` one lasting
        ``lease_ms`` if fewer than ``limit`` are live (a live one of ``holder`` is renewed).

        Backends declaring ``capabilities.leases`` implement it (and the two below)
        in one atomic step; this default raises ConfigurationError.
        """
        raise ConfigurationError(_no_leases(self))

    async def renew_lease(
        self, key: str, holder: str, lease_ms: int, *, now_ms: int | None = None
    ) -> bool:
        """Push ``holder``'s live lease on ``key`` to ``lease_ms`` from now; False if gone."""
        raise ConfigurationError(_no_leases(self))

    async def release_lease(self, key: str, holder: str, *, now_ms: int | None = None) -> bool:
        """Remove ``holder``'s lease on ``key``; False if it was not live."""
        raise ConfigurationError(_no_leases(self))

    # -- contexts -------------------------------------------------------------

    def __call__(
        self,
        app: typing.Any = None,
        persistent: bool | None = None,
        close_on_exit: bool | None = None,
    ) -> ThrottleContext:
        """A context that initialises this backend and makes it current.

        With ``app``, the backend is also stored on ``app.state`` for throttles and
        middleware to find. Outermost contexts default to ``persistent=self.persistent``
        and close the backend on exit; a context nested in one of the same backend
        defaults to persistent and leaves it open.
        """
        nested = throttle_backend_ctx.get() is self
        if app is not None:
            setattr(app.state, BACKEND_STATE_KEY, self)
            # Routes whose throttles act on the response lifecycle: observed from
            # their first request (traffik.lifecycle).
            observe_routes(app)
        if persistent is None:
            persistent = True if nested else self.persistent
        if close_on_exit is None:
            close_on_exit = not nested
        return ThrottleContext(self, persistent=persistent, close_on_exit=close_on_exit)

    @typing.no_type_check
    def lifespan(self, app: typing.Any) -> typing.AsyncContextManager[None]:
        """A Starlette/FastAPI ``lifespan``: the backend is open while the app runs, closed after."""
        return _lifespan(self, app)


# A backend is what a failure policy's on_error accepts besides an action name.
BackendClass.register(ThrottleBackend)  # type: ignore[type-abstract]


def _no_leases(backend: ThrottleBackend[typing.Any, typing.Any]) -> str:
    return (
        f"{type(backend).__name__} cannot hold leases (the 'leases' capability, needed by "
        f"ConcurrencyThrottle): use InMemoryBackend, RedisBackend or MemcachedBackend, or "
        f"implement take_lease, renew_lease and release_lease and declare "
        f"BackendCapabilities(leases=True)."
    )


async def _lifespan_gen(
    backend: ThrottleBackend[typing.Any, typing.Any], app: typing.Any
) -> AsyncIterator[None]:
    async with backend(app):
        yield


def _lifespan(
    backend: ThrottleBackend[typing.Any, typing.Any], app: typing.Any
) -> typing.AsyncContextManager[None]:
    import contextlib

    return contextlib.asynccontextmanager(_lifespan_gen)(backend, app)
