"""Adjusting a throttle's charge: what a connection was charged, and the failure path.

Every adjustment a throttle makes (``refund``, ``charge_when``, a reservation's
``settle``) goes through :func:`adjust_with_policy`: one ``backend.adjust`` bounded
by the failure policy's timeout, never retried, reported to the circuit breaker of
the key's failure domain; when the backend cannot take it, the adjustment is
dropped (or applied to the fallback backend, with the ``"fallback"`` action), an
``adjustment_dropped`` event says so, and with ``on_error="raise"`` the error
propagates. It never waits longer than the policy allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing

from traffik import events
from traffik._guard.answer import FAILURES
from traffik._guard.emit import circuit_event, emit_request_event
from traffik.exceptions import BackendError, LockTimeoutError
from traffik.failures import fallback_of, guard_of
from traffik.headers import DECISIONS_STATE_KEY, record_in_state, write_recorded_fields

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision
    from traffik.failures import OnError
    from traffik.rates import Rate
    from traffik.strategies import Strategy

    Backend = ThrottleBackend[typing.Any, typing.Any]

__all__ = [
    "CHARGES_STATE_KEY",
    "RESPONSE_STATE_KEY",
    "Charge",
    "adjust_with_policy",
    "charge_of",
    "monotonic_ms",
    "record_adjusted",
    "remember_charge",
]

logger = logging.getLogger("traffik.charging")

#: ``scope["state"]`` key of the charges made on a connection, by throttle uid.
CHARGES_STATE_KEY = "traffik.charges"
#: ``scope["state"]`` key of the response the RateLimit fields were written on (FastAPI's).
RESPONSE_STATE_KEY = "traffik.response"

_monotonic_ns = time.monotonic_ns
_new = tuple.__new__


def monotonic_ms() -> int:
    """This process's monotonic clock in milliseconds (ages of charges)."""
    return _monotonic_ns() // 1_000_000


class Charge(typing.NamedTuple):
    """What a throttle charged a connection: where, how much, and since when."""

    backend: Backend
    key: str
    cost: int
    #: monotonic_ms() taken before the decision: an age measured from it errs long, so a
    #: refund near a window's end is never given to the next window.
    started_ms: int


def remember_charge(
    state: dict[str, typing.Any],
    uid: str,
    backend: Backend,
    key: str,
    cost: int,
    started_ms: int,
) -> Charge:
    """Record that throttle ``uid`` charged ``cost`` to ``key`` on this connection."""
    charges: dict[str, Charge] | None = state.get(CHARGES_STATE_KEY)
    # tuple.__new__: about half the time of the named tuple's own __new__ (per request).
    charge: Charge = _new(Charge, (backend, key, cost, started_ms))
    if charges is None:
        state[CHARGES_STATE_KEY] = {uid: charge}
    else:
        charges[uid] = charge
    return charge


def charge_of(state: typing.Mapping[str, typing.Any] | None, uid: str) -> Charge | None:
    """The last charge throttle ``uid`` made on this connection, or None."""
    if not state:
        return None
    charges: dict[str, Charge] | None = state.get(CHARGES_STATE_KEY)
    return None if charges is None else charges.get(uid)


def record_adjusted(state: dict[str, typing.Any], uid: str, snapshot: Decision, rate: Rate) -> None:
    """Record the quota after an adjustment for the RateLimit fields of this response.

    The fields of a response not started yet then show it; the response FastAPI
    injected into a dependency (kept under :data:`RESPONSE_STATE_KEY`) is rewritten.
    """
    decisions = state.get(DECISIONS_STATE_KEY)
    previous = None if decisions is None else decisions.get(uid)
    if previous is None or not previous.allowed:
        return  # a refused request is not adjusted: its fields stay as they were
    shown = snapshot._replace(
        allowed=True, retry_after_ms=0, limit=rate.limit, policy=previous.policy
    )
    record_in_state(state, uid, shown)
    response = state.get(RESPONSE_STATE_KEY)
    if response is not None:
        write_recorded_fields(state, response)


async def adjust_with_policy(
    backend: Backend,
    key: str,
    strategy: Strategy,
    rate: Rate,
    delta: int,
    age_ms: int,
    *,
    policy: OnError | None = None,
    name: str = "",
) -> Decision | None:
    """``backend.adjust`` under the backend's failure policy; None when it was dropped.

    ``policy`` (the throttle's ``on_backend_error``) overrides the policy's action.
    Bad input (``ValueError``) propagates before any I/O.
    """
    guard = guard_of(backend)
    action: OnError | None = policy
    if action is None and guard is not None:
        action = guard.policy.on_error
    timeout = None if guard is None else guard.policy.timeout
    breaker = None
    epoch = 0
    if guard is not None:
        where = backend.failure_domain(key)
        breaker = guard.breaker(where)
        allowed, change = breaker.allow_call()
        circuit_event(change, backend, where)
        if not allowed:
            return await _dropped(backend, key, strategy, rate, delta, age_ms, action, None, name)
        epoch = breaker.epoch
    call = backend.adjust(key, strategy, rate, delta, age_ms=age_ms)
    try:
        snapshot = await (call if timeout is None else asyncio.wait_for(call, timeout))
    except FAILURES as exc:
        if breaker is not None and not isinstance(exc, LockTimeoutError):
            circuit_event(breaker.record_failure(epoch), backend, backend.failure_domain(key))
        if action is None:
            raise
        return await _dropped(backend, key, strategy, rate, delta, age_ms, action, exc, name)
    if breaker is not None:
        circuit_event(breaker.record_success(epoch), backend, backend.failure_domain(key))
    return snapshot


async def _dropped(
    backend: Backend,
    key: str,
    strategy: Strategy,
    rate: Rate,
    delta: int,
    age_ms: int,
    action: OnError | None,
    error: BaseException | None,
    name: str,
) -> Decision | None:
    what = f"refund of {-delta} units" if delta < 0 else f"extra charge of {delta} units"
    if action == "raise":
        if error is None:
            raise BackendError(
                f"{backend!r} is unavailable (its circuit is open): the {what} on {key!r} "
                f"was not made; on_error='raise'."
            )
        raise BackendError(
            f"{backend!r} failed: {error!r}; the {what} on {key!r} was not made; on_error='raise'."
        ) from error
    detail = f"{what} dropped"
    snapshot = None
    if action is not None and action not in ("allow", "throttle"):
        fallback = await fallback_of(action)
        try:
            snapshot = await fallback.adjust(key, strategy, rate, delta, age_ms=age_ms)
            detail = f"{what} applied to the fallback {fallback!r} instead"
        except FAILURES:
            pass
    logger.warning("traffik: %r could not take the %s on %s (%r)", backend, what, key, error)
    if events.has_subscribers():
        emit_request_event(
            events.ADJUSTMENT_DROPPED, key, backend, name, error=error, detail=detail
        )
    return snapshot
