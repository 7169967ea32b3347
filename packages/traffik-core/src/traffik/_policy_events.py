"""How the failure policy tells what happened: log records and :mod:`traffik.events`."""

from __future__ import annotations

import logging
import typing

from traffik import events
from traffik._circuit import CLOSED, OPEN
from traffik.events import _subscribers

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision
    from traffik.failures import OnError

__all__ = ["circuit_event", "emit_decision", "emit_request_event", "report"]

logger = logging.getLogger("traffik.failures")


def emit_request_event(
    kind: events.EventKind,
    key: str,
    backend: ThrottleBackend[typing.Any, typing.Any],
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
    backend: ThrottleBackend[typing.Any, typing.Any],
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
    backend: ThrottleBackend[typing.Any, typing.Any],
    domain: typing.Hashable = None,
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
    backend: ThrottleBackend[typing.Any, typing.Any],
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
