"""Events: what traffik decided and how its backends behave, for logs, metrics and traces.

Subscribe a callback with :func:`subscribe`; it receives every :class:`ThrottleEvent`.
Callbacks run inline on the request path, so keep them cheap (increment a counter,
enqueue a log record). An exception in a callback is logged and swallowed: it
never changes a decision. With no subscriber, emitting costs one truth test.

Example: Prometheus counters (with ``prometheus_client`` installed)::

    from prometheus_client import Counter
    from traffik import events

    DECISIONS = Counter("traffik_events_total", "traffik events", ["kind", "policy"])

    def to_prometheus(event: events.ThrottleEvent) -> None:
        DECISIONS.labels(event.kind, event.policy).inc()

    events.subscribe(to_prometheus)
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from traffik.decisions import Decision

__all__ = [
    "ADJUSTMENT_DROPPED",
    "ALLOWED",
    "BACKEND_ERROR",
    "CIRCUIT_CLOSED",
    "CIRCUIT_HALF_OPEN",
    "CIRCUIT_OPEN",
    "FALLBACK",
    "LOCAL_BLOCK",
    "OVERLOAD",
    "SHADOW_THROTTLED",
    "SLOT_EXPIRED",
    "SLOT_REFUSED",
    "SLOT_TAKEN",
    "THROTTLED",
    "EventKind",
    "ThrottleEvent",
    "emit",
    "subscribe",
    "unsubscribe",
]

logger = logging.getLogger("traffik.events")

EventKind = typing.Literal[
    "allowed",
    "throttled",
    "shadow_throttled",
    "backend_error",
    "fallback",
    "local_block",
    "overload",
    "circuit_open",
    "circuit_half_open",
    "circuit_closed",
    "adjustment_dropped",
    "slot_taken",
    "slot_refused",
    "slot_expired",
]

#: A request was admitted.
ALLOWED: EventKind = "allowed"
#: A request was refused.
THROTTLED: EventKind = "throttled"
#: A shadow throttle would have refused the request; it was let through (``decision``
#: is the refusal it would have sent).
SHADOW_THROTTLED: EventKind = "shadow_throttled"
#: A backend call failed or timed out (``error`` holds the exception).
BACKEND_ERROR: EventKind = "backend_error"
#: The failure policy answered instead of the backend (``detail`` says which action).
FALLBACK: EventKind = "fallback"
#: A refusal answered from the local block cache, without a backend call.
LOCAL_BLOCK: EventKind = "local_block"
#: This process, not the backend, was behind (in-flight queue full, or a call late while
#: the server answered others): the request was refused without counting as a failure.
OVERLOAD: EventKind = "overload"
#: A refund or an extra charge (``throttle.refund``, ``charge_when``, a reservation's
#: ``settle``) did not reach the backend (it failed, was too slow, or its circuit is
#: open) and was dropped; ``detail`` says what was lost, ``error`` why. With the
#: ``"fallback"`` action it was applied to the fallback backend instead (``detail`` says so).
ADJUSTMENT_DROPPED: EventKind = "adjustment_dropped"
#: The circuit breaker opened: the backend is skipped until a probe succeeds.
CIRCUIT_OPEN: EventKind = "circuit_open"
#: The circuit breaker lets one probe call through.
CIRCUIT_HALF_OPEN: EventKind = "circuit_half_open"
#: A probe succeeded: the backend is used again.
CIRCUIT_CLOSED: EventKind = "circuit_closed"
#: A concurrency throttle gave the request a slot (``detail``: "held/limit").
SLOT_TAKEN: EventKind = "slot_taken"
#: A concurrency throttle refused the request: its slots were all held.
SLOT_REFUSED: EventKind = "slot_refused"
#: A slot's lease expired before its request ended (not renewed in time, or its
#: release failed): the slot was free again for others meanwhile.
SLOT_EXPIRED: EventKind = "slot_expired"


@dataclass(frozen=True, slots=True)
class ThrottleEvent:
    """One event. ``policy`` is the throttle uid (or "" for backend-wide events)."""

    kind: EventKind
    policy: str = ""
    key: str = ""
    backend: str = ""
    decision: Decision | None = None
    error: BaseException | None = None
    detail: str = ""


_subscribers: list[Callable[[ThrottleEvent], None]] = []


def subscribe(callback: Callable[[ThrottleEvent], None]) -> Callable[[], None]:
    """Call ``callback`` for every event from now on; returns a function that unsubscribes."""
    if not callable(callback):
        raise TypeError(f"subscribe() needs a callable taking one ThrottleEvent, got {callback!r}.")
    _subscribers.append(callback)
    return lambda: unsubscribe(callback)


def unsubscribe(callback: Callable[[ThrottleEvent], None]) -> None:
    """Stop calling ``callback``; does nothing if it was not subscribed."""
    try:
        _subscribers.remove(callback)
    except ValueError:
        pass


def has_subscribers() -> bool:
    """True when at least one callback is subscribed (lets hot paths skip building events)."""
    return bool(_subscribers)


def emit(event: ThrottleEvent) -> None:
    """Deliver ``event`` to every subscriber; a failing subscriber is logged, never raised."""
    for callback in tuple(_subscribers):
        try:
            callback(event)
        except Exception:
            logger.exception("traffik event subscriber %r failed on %s", callback, event.kind)
