"""How the guard tells what happened: log records, :mod:`traffik.events`, call observers.

Call observers are the hook for metrics (:func:`traffik.failures.observe_backend_calls`):
each backend call the guard makes is reported once, with its duration and outcome.
Nothing is measured or built while nobody observes.
"""

from __future__ import annotations

import logging
import typing

from traffik import events
from traffik._guard.circuit import CLOSED, OPEN
from traffik.events import _subscribers

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from traffik._guard.policy import OnError
    from traffik._guard.types import Backend
    from traffik.decisions import Decision

__all__ = [
    "CALL_OUTCOMES",
    "BackendCall",
    "circuit_event",
    "emit_decision",
    "emit_request_event",
    "observe_calls",
    "observers",
    "report",
    "report_call",
]

logger = logging.getLogger("traffik.failures")


def emit_request_event(
    kind: events.EventKind,
    key: str,
    backend: Backend,
    name: str,
    *,
    decision: Decision | None = None,
    error: BaseException | None = None,
    detail: str = "",
) -> None:
    """Emit one event about a request of throttle ``name`` (callers check for subscribers
    first); ``policy`` falls back to the decision's when the throttle has no name."""
    policy = name or (decision.policy if decision is not None else "")
    events.emit(
        events.ThrottleEvent(
            kind,
            policy=policy,
            key=key,
            backend=repr(backend),
            decision=decision,
            error=error,
            detail=detail,
        )
    )


def emit_decision(
    decision: Decision,
    key: str,
    backend: Backend,
    name: str = "",
    shadow: bool = False,
) -> None:
    """Emit ALLOWED or THROTTLED (SHADOW_THROTTLED for a shadow throttle) for
    ``decision`` of throttle ``name`` (callers check for subscribers first)."""
    if decision.allowed:
        kind = events.ALLOWED
    else:
        kind = events.SHADOW_THROTTLED if shadow else events.THROTTLED
    emit_request_event(kind, key, backend, name, decision=decision)


def circuit_event(
    kind: str | None,
    backend: Backend,
    domain: Hashable = None,
) -> None:
    """Log and emit a change of the circuit of failure domain ``domain`` (``kind`` None:
    nothing changed); the event's ``detail`` names the domain if there are several."""
    if kind is None:
        return
    name = {OPEN: events.CIRCUIT_OPEN, CLOSED: events.CIRCUIT_CLOSED}.get(
        kind, events.CIRCUIT_HALF_OPEN
    )
    where = f"{backend!r}" if domain is None else f"{backend!r} ({domain})"
    if kind == OPEN:
        logger.warning("traffik: %s keeps failing; answering by policy until it recovers", where)
    elif kind == CLOSED:
        logger.info("traffik: %s answers again", where)
    if events.has_subscribers():
        detail = "" if domain is None else str(domain)
        events.emit(events.ThrottleEvent(name, backend=repr(backend), detail=detail))


def report(
    backend: Backend,
    key: str,
    action: OnError,
    error: BaseException | None,
    name: str = "",
) -> None:
    """Log and emit what happened before the policy answers (``name``: the throttle's uid)."""
    if error is not None:
        logger.debug("traffik: %r failed on %s: %r", backend, key, error)
        if _subscribers:
            emit_request_event(events.BACKEND_ERROR, key, backend, name, error=error)
    if _subscribers:
        detail = action if isinstance(action, str) else repr(action)
        emit_request_event(events.FALLBACK, key, backend, name, error=error, detail=detail)


#: How a backend call ended: answered; raised a backend error; judged silent at its
#: deadline (a failure of the server); judged behind this process's backlog (the
#: overload answer); or cancelled by the request's own caller.
CALL_OUTCOMES = ("ok", "error", "timeout", "late", "cancelled")


class BackendCall(typing.NamedTuple):
    """One backend call made by the failure guard, as call observers see it."""

    #: The backend called.
    backend: Backend
    #: Its failure domain for the key (``None``: the whole backend).
    domain: Hashable
    #: Seconds from the call's start (after any wait for an in-flight slot) to its end,
    #: or to the moment the request stopped waiting for it (``timeout``, ``late``).
    seconds: float
    #: One of :data:`CALL_OUTCOMES`.
    outcome: str


#: The call observers (a list, so that checking for none is one truth test).
observers: list[Callable[[BackendCall], None]] = []


def observe_calls(callback: Callable[[BackendCall], None]) -> Callable[[], None]:
    """Call ``callback`` after every guarded backend call; returns the function that stops it."""
    observers.append(callback)

    def stop() -> None:
        if callback in observers:
            observers.remove(callback)

    return stop


def report_call(backend: Backend, domain: Hashable, seconds: float, outcome: str) -> None:
    """Tell every observer about one call (callers check for observers first)."""
    call = BackendCall(backend, domain, seconds, outcome)
    for callback in tuple(observers):
        try:
            callback(call)
        except Exception:  # an observer must never change a decision
            logger.exception("traffik: a backend call observer failed")
