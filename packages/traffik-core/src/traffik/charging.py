"""Charge by outcome: refunds, ``charge_when`` and reserve-then-settle.

A throttle charges a request before the app runs. Built on each strategy's
atomic adjustment (``backend.adjust``, the inverse of a decision), a charge can
then be changed:

- ``await throttle.refund(connection, cost=1)`` gives units back to the key this
  throttle charged for this connection (:func:`refund`);
- ``charge_when=(connection, status_code) -> bool`` (on ``HTTPThrottle`` and every
  integration) refunds a request whose response status it answers False for
  (:func:`charge_by_status`); requests in flight count until their status is
  known, and a request that raised or lost its client before the status stays
  charged;
- ``reservation = await throttle.reserve(connection, cost=estimate)`` decides like
  a call with that cost, and ``await reservation.settle(actual)`` charges the
  difference or gives it back (:class:`Reservation`).

Adjustments follow the throttle's failure policy (:mod:`traffik._charges`): they
are never retried, never wait past the policy's timeout, and when dropped an
``adjustment_dropped`` event (:mod:`traffik.events`) says so. Custom strategies
(``async (key, rate, backend, cost) -> wait_ms``) cannot give units back: these
calls raise ``ConfigurationError`` for them, and ``charge_when`` is refused at
construction.
"""

from __future__ import annotations

import inspect
import logging
import typing

from traffik import lifecycle
from traffik._charges import (
    Charge,
    adjust_with_policy,
    charge_of,
    monotonic_ms,
    record_adjusted,
)
from traffik.exceptions import ConfigurationError
from traffik.headers import DECISIONS_STATE_KEY
from traffik.strategies import Strategy
from traffik.strategies._base import not_adjustable
from traffik.types import UNLIMITED

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable

    from starlette.requests import HTTPConnection

    from traffik.decisions import Decision
    from traffik.throttles import BaseThrottle

    Throttle = BaseThrottle[typing.Any]

__all__ = [
    "ChargeWhen",
    "Reservation",
    "charge_by_status",
    "check_charge_when",
    "refund",
    "reserve",
]

logger = logging.getLogger("traffik.charging")

#: ``(connection, status_code) -> bool`` (sync or async): True keeps the charge, False
#: refunds it.
ChargeWhen = typing.Callable[[typing.Any, int], "bool | Awaitable[bool]"]

#: ``scope["state"]`` key of the charges waiting for their status (see charge_by_status).
_ARMED_STATE_KEY = "traffik.charge_when"


def _units(name: str, value: object, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        bound = "0 or more" if zero else "at least 1"
        raise ValueError(
            f"{name} must be a whole number of units, {bound}, got {value!r}; "
            f"for example {name}={0 if zero else 1}."
        )
    return int(value)


def check_adjustable(throttle: Throttle) -> Strategy:
    """The throttle's strategy if it can give units back; else raise ``ConfigurationError``."""
    strategy = throttle.strategy
    if not isinstance(strategy, Strategy) or not strategy.adjustable:
        raise ConfigurationError(f"Throttle {throttle.uid!r}: {not_adjustable(strategy)}")
    return strategy


def check_charge_when(charge_when: object, strategy: object = None) -> None:
    """Raise unless ``charge_when`` is None or a callable, usable with ``strategy``."""
    if charge_when is None:
        return
    if not callable(charge_when):
        raise ConfigurationError(
            f"charge_when must be a callable (connection, status_code) -> bool, sync or "
            f"async, got {charge_when!r}."
        )
    if strategy is not None and (not isinstance(strategy, Strategy) or not strategy.adjustable):
        raise ConfigurationError(f"charge_when cannot be used: {not_adjustable(strategy)}")


async def _charge_for(
    throttle: Throttle, connection: HTTPConnection, context_key: typing.Any
) -> Charge | None:
    """The charge to adjust: the one recorded on the connection, else the key worked out now."""
    charge = charge_of(connection.scope.get("state"), throttle.uid)
    if charge is not None and context_key is None:
        return charge
    if throttle.rate.unlimited:
        return None
    backend = throttle.backend or throttle._resolve_backend(connection)
    identity = await throttle._identity(connection, backend)
    if identity is UNLIMITED:
        return None
    key = await throttle._key(connection, identity, context_key)
    return Charge(backend, key, 0, monotonic_ms())


async def _adjust(
    throttle: Throttle, connection: HTTPConnection, charge: Charge, delta: int
) -> Decision | None:
    strategy = check_adjustable(throttle)
    age = max(0, monotonic_ms() - charge.started_ms)
    snapshot = await adjust_with_policy(
        charge.backend,
        charge.key,
        strategy,
        throttle.rate,
        delta,
        age,
        policy=throttle.on_backend_error,
        name=throttle.uid,
    )
    state = connection.scope.get("state")
    if snapshot is not None and state is not None:
        record_adjusted(state, throttle.uid, snapshot, throttle.rate)
    return snapshot


async def refund(
    throttle: Throttle,
    connection: HTTPConnection,
    cost: int = 1,
    *,
    context_key: typing.Any = None,
) -> Decision | None:
    """Give ``cost`` units back to the key ``throttle`` charged for ``connection``.

    The key is the one the throttle charged on this connection (else the one it
    would charge now). The window strategies give back only within the window
    that was charged. Returns the quota after the refund, or None when there was
    nothing to give back to (an exempt client, an unlimited rate) or the backend
    could not take it (see the module docs).
    """
    cost = _units("cost", cost)
    check_adjustable(throttle)
    charge = await _charge_for(throttle, connection, context_key)
    if charge is None:
        return None
    return await _adjust(throttle, connection, charge, -cost)


class Reservation:
    """Units reserved by :func:`reserve`; :meth:`settle` charges what was really used.

    ``estimate`` is the cost charged when reserving; ``decision`` the admission.
    A reservation never settled stays charged at the estimate.
    """

    __slots__ = ("_charge", "_connection", "_result", "_throttle", "actual", "decision", "estimate")

    def __init__(
        self,
        throttle: Throttle,
        connection: HTTPConnection,
        estimate: int,
        charge: Charge | None,
        decision: Decision | None,
    ) -> None:
        self._throttle = throttle
        self._connection = connection
        self._charge = charge
        self._result: Decision | None = None
        self.estimate = estimate
        self.decision = decision
        #: The units settled (None until :meth:`settle` is called).
        self.actual: int | None = None

    def __repr__(self) -> str:
        return (
            f"Reservation(throttle={self._throttle.uid!r}, estimate={self.estimate}, "
            f"actual={self.actual})"
        )

    @property
    def settled(self) -> bool:
        """True once :meth:`settle` was called."""
        return self.actual is not None

    async def settle(self, actual: int) -> Decision | None:
        """Charge ``actual - estimate`` more, or give the difference back; only once.

        A second call does nothing and returns the first one's result. Returns the
        quota after the adjustment, or None when nothing was adjusted (the same
        count, nothing was charged, or the backend could not take it).
        """
        actual = _units("actual", actual, zero=True)
        if self.actual is not None:
            return self._result
        self.actual = actual
        delta = actual - self.estimate
        charge = self._charge
        if delta == 0 or charge is None:
            return None
        self._result = await _adjust(self._throttle, self._connection, charge, delta)
        return self._result


async def reserve(throttle: Throttle, connection: HTTPConnection, cost: int) -> Reservation:
    """Charge an estimated ``cost`` now, as ``await throttle(connection, cost=cost)`` would.

    A refusal happens exactly as for that call (the handler raises a 429 with the
    same headers). Settle the returned :class:`Reservation` with the real count.
    """
    cost = _units("cost", cost)
    check_adjustable(throttle)
    state = connection.scope.get("state")
    before = charge_of(state, throttle.uid)
    await throttle(connection, cost)
    state = connection.scope.get("state")
    charge = charge_of(state, throttle.uid)
    if charge is before:
        charge = None  # exempt, unlimited, or refused by a handler that did not raise
    decisions = None if state is None else state.get(DECISIONS_STATE_KEY)
    decision = None if decisions is None else decisions.get(throttle.uid)
    return Reservation(throttle, connection, cost, charge, decision)


class _Armed:
    """A charge waiting for its response status, and the predicate that judges it."""

    __slots__ = ("charge", "predicate")

    def __init__(self, charge: Charge, predicate: ChargeWhen) -> None:
        self.charge = charge
        self.predicate = predicate


def charge_by_status(
    throttle: Throttle, connection: HTTPConnection, charge_when: ChargeWhen
) -> None:
    """Refund the charge ``throttle`` just made on ``connection`` if ``charge_when``
    answers False for the response status.

    Called by the throttle (its own ``charge_when``) and by integrations (a rule's or
    a decorator's, which replaces the throttle's for that charge). The status comes
    from :mod:`traffik.lifecycle`; where nothing reports it (a throttle called by
    hand with no integration observing the response), the request stays charged.
    """
    scope = connection.scope
    state = scope.get("state")
    charge = charge_of(state, throttle.uid)
    if charge is None or state is None:
        return
    armed: dict[int, _Armed] | None = state.get(_ARMED_STATE_KEY)
    if armed is None:
        armed = state[_ARMED_STATE_KEY] = {}
    entry = armed.get(id(charge))
    if entry is not None and entry.charge is charge:
        entry.predicate = charge_when
        return
    # Registered even when nothing observes the connection yet: the Starlette
    # decorator observes the response the endpoint returns, after this call.
    lc = lifecycle.attach(scope)
    # A client that leaves a busy endpoint ends the lifecycle at once: then it stays charged.
    lc.watch_disconnect()
    entry = armed[id(charge)] = _Armed(charge, charge_when)

    async def on_status(status: int) -> None:
        armed.pop(id(entry.charge), None)
        if lc.outcome is not None:
            return  # the client left (or the app raised) before the status: charged
        try:
            keep = entry.predicate(connection, status)
            if inspect.isawaitable(keep):
                keep = await keep
        except Exception:
            logger.exception(
                "traffik: charge_when of throttle %r raised; the request stays charged",
                throttle.uid,
            )
            return
        if keep:
            return
        try:
            await _adjust(throttle, connection, entry.charge, -entry.charge.cost)
        except Exception:
            logger.exception(
                "traffik: refunding a request of throttle %r failed; it stays charged",
                throttle.uid,
            )

    lc.on_status(on_status)
