"""``ConcurrencyThrottle``: at most ``limit`` requests of one client in flight at once.

A rate bounds how many requests start per window; a concurrency limit bounds how
many run at the same time, whatever they cost. Each admitted request (or open
WebSocket) holds a **slot**: a lease in the backend (:mod:`traffik.leases`) taken
before the app runs and released when the response is over (sent completely,
streaming included; the client went away; the app raised), as the response
lifecycle (:mod:`traffik.lifecycle`) reports it. Every integration wires that:
``ThrottleMiddleware`` rules, the Starlette and FastAPI ``throttled`` decorators,
FastAPI ``Depends(throttle)``, and ``async with throttle.hold(connection)``.

A lease lasts ``lease`` seconds unless renewed: a slot held longer than a third of
its lease is renewed every third of a lease while its response runs, so a slot of a
process that died comes back within one lease, and a long response keeps its slot.

A refused request goes through the same ``handle_throttled`` path as a rate
refusal: by default a 429 with ``Retry-After: retry_after`` (1 second by default;
see the class docs for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import secrets
import typing

from starlette.requests import HTTPConnection

from traffik import events
from traffik.exceptions import BackendError, ConfigurationError
from traffik.failures import fallback_of, guard_of
from traffik.leases import LeaseGrant
from traffik.lifecycle import Outcome, attach
from traffik.rates import Rate
from traffik.throttles import BaseThrottle
from traffik.types import UNLIMITED

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from traffik.backends.base import ThrottleBackend

__all__ = ["DEFAULT_LEASE", "DEFAULT_RETRY_AFTER", "ConcurrencyThrottle"]

logger = logging.getLogger("traffik.concurrency")

#: The default lease, in seconds: long enough that renewals (every third of it) are
#: rare, short enough that a crashed process's slots come back within half a minute.
DEFAULT_LEASE = 30.0
#: The default ``Retry-After`` of a refusal, in seconds.
DEFAULT_RETRY_AFTER = 1.0

_CIRCUIT_EVENTS: dict[str, events.EventKind] = {
    "open": events.CIRCUIT_OPEN,
    "closed": events.CIRCUIT_CLOSED,
}

# BaseThrottle adds the request-scoped lifecycle parameter (needs_lifecycle).
_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter(
            "connection", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection
        )
    ]
)


def _positive(name: str, value: object, unit: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ValueError(f"{name} must be a positive number of {unit}, got {value!r}.")
    return float(value)


def require_leases(backend: ThrottleBackend[typing.Any, typing.Any]) -> None:
    """Raise ConfigurationError unless ``backend`` can hold leases."""
    if not backend.capabilities.leases:
        raise ConfigurationError(
            f"{type(backend).__name__} cannot hold leases (the 'leases' capability, needed "
            f"by ConcurrencyThrottle): use InMemoryBackend, RedisBackend or MemcachedBackend, "
            f"or implement take_lease, renew_lease and release_lease and declare "
            f"BackendCapabilities(leases=True)."
        )


class ConcurrencyThrottle(BaseThrottle[HTTPConnection]):
    """At most ``limit`` requests (or WebSockets) of one key in flight at once.

    The key is built as :class:`~traffik.throttles.HTTPThrottle` builds it (uid,
    route, client identity: ``identifier``, ``key_by``, ``get_key`` overrides), and
    an identifier returning :data:`~traffik.types.UNLIMITED` exempts the client.
    ``limit``: a positive int. ``lease`` (seconds, default :data:`DEFAULT_LEASE`):
    how long a slot lasts unless renewed; slots of live requests are renewed every
    ``lease / 3``. ``retry_after`` (seconds, default 1): the ``Retry-After`` of a
    refusal. A slot frees when *any* request of the client finishes, which nobody
    can predict; the earliest lease expiry is only an upper bound (30 s by
    default) that would make clients wait far too long, so the default says "try
    again soon". ``on_backend_error``: as for rate throttles (``"fallback"``: slots
    on a local in-memory backend, per process; ``"allow"``; ``"throttle"``;
    ``"raise"``; or a backend). ``handle_throttled``, ``headers``, ``backend``,
    ``context_backend``: as for rate throttles.
    """

    needs_lifecycle = True
    _dependency_signature = _SIGNATURE

    def __init__(
        self,
        uid: str,
        limit: int,
        *,
        lease: float = DEFAULT_LEASE,
        retry_after: float = DEFAULT_RETRY_AFTER,
        identifier: typing.Any = None,
        handle_throttled: typing.Any = None,
        backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
        context_backend: bool = False,
        headers: Mapping[str, str] | None = None,
        on_backend_error: typing.Any = None,
        key_by: str = "route",
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(
                f"limit must be a positive whole number of requests in flight, got {limit!r}."
            )
        self.lease = _positive("lease", lease, "seconds")
        self.retry_after = _positive("retry_after", retry_after, "seconds")
        self.limit = limit
        self._lease_ms = max(1, math.ceil(self.lease * 1000))
        super().__init__(
            uid,
            Rate(limit=limit, seconds=1),
            identifier=identifier,
            handle_throttled=handle_throttled,
            backend=backend,
            context_backend=context_backend,
            headers=headers,
            on_backend_error=on_backend_error,
            key_by=key_by,
        )
        if backend is not None:
            require_leases(backend)

    def __repr__(self) -> str:
        return f"ConcurrencyThrottle(uid={self.uid!r}, limit={self.limit}, lease={self.lease})"

    async def __call__(
        self,
        connection: HTTPConnection | None = None,
        *args: typing.Any,
        request: HTTPConnection | None = None,
        websocket: HTTPConnection | None = None,
        traffik_lifecycle: typing.Any = None,
        **kwargs: typing.Any,
    ) -> HTTPConnection:
        """Take a slot for ``connection`` until its response is over; refuse via the handler.

        Needs an integration that reports the end of the response (middleware,
        ``throttled``, ``Depends``); elsewhere use :meth:`hold`.
        """
        connection = connection or request or websocket
        if connection is None:
            raise TypeError("ConcurrencyThrottle needs the connection: await throttle(request).")
        lc = attach(connection.scope)
        if not lc.managed:
            raise ConfigurationError(
                f"ConcurrencyThrottle {self.uid!r} needs to know when the response ends, and "
                f"nothing here reports it. Use it through ThrottleMiddleware, throttled(...), "
                f"Depends(throttle), or 'async with throttle.hold(connection):'."
            )
        slot = await self._take(connection)
        if slot is not None:
            lc.on_end(slot.on_end)
            lc.watch_disconnect()
        return connection

    hit = __call__

    @contextlib.asynccontextmanager
    async def hold(self, connection: HTTPConnection) -> AsyncIterator[None]:
        """``async with throttle.hold(connection):`` hold a slot for the block.

        A refusal goes through ``handle_throttled`` on entry (by default it raises
        :class:`~traffik.exceptions.ConnectionThrottled`, a 429).
        """
        slot = await self._take(connection)
        try:
            yield
        finally:
            if slot is not None:
                await slot.release()

    async def stat(self, connection: HTTPConnection, context_key: typing.Any = None) -> None:
        """None: a concurrency throttle has no rate to report (slots are not a quota)."""
        return None

    # -- taking a slot -------------------------------------------------------------

    async def _take(self, connection: HTTPConnection) -> _Slot | None:
        backend = self._resolve_backend(connection)
        require_leases(backend)
        identity = await self._identity(connection, backend)
        if identity is UNLIMITED:
            return None
        key = await self._key(connection, identity, None)
        holder = secrets.token_hex(8)
        answer = await self._take_by_policy(backend, key, holder)
        if answer is None:
            return None  # admitted without a slot by the failure policy ("allow")
        target, grant = answer
        if grant.taken:
            if events.has_subscribers():
                self._emit(events.SLOT_TAKEN, key, target, f"{grant.held}/{self.limit}")
            return _Slot(self, target, key, holder)
        if events.has_subscribers():
            self._emit(events.SLOT_REFUSED, key, target, f"{grant.held}/{self.limit}")
        handler = self.handle_throttled or backend.handle_throttled
        await handler(connection, math.ceil(self.retry_after * 1000), headers=dict(self.headers))
        return None

    async def _take_by_policy(
        self, backend: ThrottleBackend[typing.Any, typing.Any], key: str, holder: str
    ) -> tuple[ThrottleBackend[typing.Any, typing.Any], LeaseGrant] | None:
        # As for rate decisions: the backend's timeout bounds the call, its circuit
        # breaker (shared with the decisions of the same failure domain) skips a
        # backend that keeps failing, and the action answers when it cannot.
        policy = backend.failure_policy
        action = self.on_backend_error
        if action is None and policy is not None:
            action = policy.on_error
        guard = guard_of(backend)
        breaker = None if guard is None else guard.breaker(backend.failure_domain(key))
        epoch = None
        if breaker is not None:
            allowed, change = breaker.allow_call()
            self._circuit(change, key, backend)
            if not allowed:
                error = BackendError(
                    f"{type(backend).__name__} is failing (its circuit is open): no lease taken."
                )
                return await self._by_action(backend, key, holder, action, error)
            epoch = breaker.epoch
        timeout = None if policy is None else policy.timeout
        try:
            call = backend.take_lease(key, holder, self.limit, self._lease_ms)
            grant = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except (BackendError, asyncio.TimeoutError) as exc:
            if breaker is not None:
                self._circuit(breaker.record_failure(epoch), key, backend)
            error = (
                exc
                if isinstance(exc, BackendError)
                else BackendError(
                    f"{type(backend).__name__} took longer than {timeout} s to take a lease."
                )
            )
            return await self._by_action(backend, key, holder, action, error)
        if breaker is not None:
            self._circuit(breaker.record_success(epoch), key, backend)
        return backend, grant

    async def _by_action(
        self,
        backend: ThrottleBackend[typing.Any, typing.Any],
        key: str,
        holder: str,
        action: typing.Any,
        error: BackendError,
    ) -> tuple[ThrottleBackend[typing.Any, typing.Any], LeaseGrant] | None:
        if events.has_subscribers():
            events.emit(
                events.ThrottleEvent(
                    events.BACKEND_ERROR, self.uid, key, type(backend).__name__, error=error
                )
            )
        if action is None or action == "raise":
            raise error
        if events.has_subscribers():
            self._emit(events.FALLBACK, key, backend, str(action))
        if action == "allow":
            return None
        if action == "throttle":
            return backend, LeaseGrant(False, 0, math.ceil(self.retry_after * 1000))
        target = await fallback_of(action)
        require_leases(target)
        return target, await target.take_lease(key, holder, self.limit, self._lease_ms)

    def _circuit(
        self, change: str | None, key: str, backend: ThrottleBackend[typing.Any, typing.Any]
    ) -> None:
        if change is not None and events.has_subscribers():
            kind = _CIRCUIT_EVENTS.get(change, events.CIRCUIT_HALF_OPEN)
            self._emit(kind, key, backend, str(backend.failure_domain(key) or ""))

    def _emit(
        self,
        kind: events.EventKind,
        key: str,
        backend: ThrottleBackend[typing.Any, typing.Any],
        detail: str,
    ) -> None:
        events.emit(
            events.ThrottleEvent(kind, self.uid, key, type(backend).__name__, detail=detail)
        )


class _Slot:
    """One held lease: renewed every third of a lease while held, released once."""

    __slots__ = (
        "_backend",
        "_handle",
        "_holder",
        "_key",
        "_released",
        "_task",
        "_throttle",
        "_timeout",
    )

    def __init__(
        self,
        throttle: ConcurrencyThrottle,
        backend: ThrottleBackend[typing.Any, typing.Any],
        key: str,
        holder: str,
    ) -> None:
        self._throttle = throttle
        self._backend = backend
        self._key = key
        self._holder = holder
        self._released = False
        self._task: asyncio.Task[None] | None = None
        # Renewals and the release are bounded like every backend call of the policy.
        policy = backend.failure_policy
        self._timeout = None if policy is None else policy.timeout
        # A timer, not a task: most requests end before their first renewal.
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            throttle.lease / 3, self._renew_now
        )

    def _renew_now(self) -> None:
        self._handle = None
        if not self._released:
            self._task = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        throttle = self._throttle
        try:
            alive = await self._bounded(
                self._backend.renew_lease(self._key, self._holder, throttle._lease_ms)
            )
        except Exception:
            # The lease stands until it expires; the next renewal tries again.
            logger.warning("renewing a slot of %r failed", throttle.uid, exc_info=True)
            alive = True
        if self._released:
            return
        if not alive:
            self._expired()
            return
        self._handle = asyncio.get_running_loop().call_later(throttle.lease / 3, self._renew_now)

    async def _bounded(self, call: typing.Awaitable[bool]) -> bool:
        if self._timeout is None:
            return await call
        return await asyncio.wait_for(call, self._timeout)

    def _expired(self) -> None:
        if events.has_subscribers():
            self._throttle._emit(events.SLOT_EXPIRED, self._key, self._backend, "")

    async def on_end(self, status: int | None, outcome: Outcome) -> None:
        """The lifecycle callback: the response is over."""
        await self.release()

    async def release(self) -> None:
        """Give the slot back (once); a failed release leaves the lease to expire."""
        if self._released:
            return
        self._released = True
        if self._handle is not None:
            self._handle.cancel()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
        try:
            held = await self._bounded(self._backend.release_lease(self._key, self._holder))
        except Exception:
            logger.warning(
                "releasing a slot of %r failed; it frees when its lease expires",
                self._throttle.uid,
                exc_info=True,
            )
            return
        if not held:
            self._expired()
