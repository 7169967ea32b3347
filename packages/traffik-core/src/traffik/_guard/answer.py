"""The calls the guard makes, and the answers it gives without the backend.

A call is named by its parts (strategy, key, rate, cost; built-in or custom), never
by a closure, so that a request builds none: :func:`call_on` starts it on the
guarded backend or on a fallback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import typing

from traffik import events
from traffik._guard.emit import emit_request_event, report
from traffik.decisions import NEVER, Decision
from traffik.events import _subscribers
from traffik.exceptions import BackendError, TraffikException

if typing.TYPE_CHECKING:
    from collections.abc import Coroutine

    from traffik._guard.circuit import CircuitBreaker
    from traffik._guard.policy import OnError
    from traffik._guard.types import Backend, CustomStrategy, FallbackOf
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = [
    "FAILURES",
    "OVERLOAD_RETRY_MS",
    "answer_by_policy",
    "call_on",
    "decision_from_wait",
    "late_error",
    "overload",
]

logger = logging.getLogger("traffik.failures")

#: Errors of a call that mean "the backend could not answer".
FAILURES = (BackendError, TimeoutError, asyncio.TimeoutError, OSError)
#: Retry-After of the overload answer, in milliseconds.
OVERLOAD_RETRY_MS = 1000


def call_on(
    target: Backend,
    key: str,
    strategy: Strategy | CustomStrategy,
    custom: bool,
    rate: Rate,
    cost: int,
) -> Coroutine[typing.Any, typing.Any, Decision]:
    """One decision on ``target``: ``target.decide`` for a built-in strategy, else the
    custom strategy's wait as a decision."""
    if custom:
        return _custom(typing.cast("CustomStrategy", strategy), key, rate, target, cost)
    return target.decide(key, typing.cast("Strategy", strategy), rate, cost)


async def _custom(
    strategy: CustomStrategy, key: str, rate: Rate, target: Backend, cost: int
) -> Decision:
    return decision_from_wait(await strategy(key, rate, target, cost), rate)


async def probe(
    backend: Backend,
    key: str,
    strategy: Strategy | CustomStrategy,
    custom: bool,
    rate: Rate,
    cost: int,
) -> Decision:
    """A recovery probe: the backend may never have connected (app started while it was down)."""
    await backend.initialize()
    return await call_on(backend, key, strategy, custom, rate, cost)


def decision_from_wait(wait_ms: float, rate: Rate) -> Decision:
    """A custom strategy's wait as a Decision; ``remaining=-1`` means unknown."""
    if not wait_ms > 0:  # 0, negative or NaN: admitted
        return Decision(True, rate.limit, -1, 0, 0, rate.expire)
    if math.isinf(wait_ms):
        return Decision(False, rate.limit, -1, rate.expire, NEVER, rate.expire)
    ms = math.ceil(wait_ms)
    return Decision(False, rate.limit, -1, ms, ms, rate.expire)


def late_error(backend: Backend, timeout: float | None) -> BackendError:
    """The error of a call whose server answered nothing for a whole ``timeout``."""
    return BackendError(
        f"{backend!r} answered nothing within {timeout} s (the failure policy's timeout)."
    )


def overload(backend: Backend, key: str, rate: Rate, name: str, *, full: bool) -> Decision:
    """The answer when this process, not the server, is behind: refuse, count nothing."""
    decision = Decision(False, rate.limit, 0, OVERLOAD_RETRY_MS, OVERLOAD_RETRY_MS, rate.expire)
    logger.debug("traffik: %r overloaded in this process; refusing %s", backend, key)
    if _subscribers:
        detail = "queue full" if full else "late"
        emit_request_event(events.OVERLOAD, key, backend, name, decision=decision, detail=detail)
    return decision


async def answer_by_policy(
    backend: Backend,
    key: str,
    strategy: Strategy | CustomStrategy,
    custom: bool,
    rate: Rate,
    cost: int,
    action: OnError,
    error: BaseException | None,
    breaker: CircuitBreaker | None,
    name: str,
    fallback_of: FallbackOf | None,
) -> Decision:
    """Answer without the backend, as ``action`` says (reporting what happened first).

    ``fallback_of(action)`` finds the backend a fallback action decides on.
    """
    if action == "raise":
        if isinstance(error, TraffikException):
            raise error
        if error is None:
            raise BackendError(
                f"{backend!r} is unavailable (its circuit is open); on_error='raise'."
            )
        raise BackendError(f"{backend!r} failed: {error!r}; on_error='raise'.") from error
    report(backend, key, action, error, name)
    if action == "allow":
        return Decision(True, rate.limit, max(0, rate.limit - cost), 0, 0, rate.expire)
    if action == "throttle":
        # Until the next recovery probe; a second if the circuit is still closed.
        wait = breaker.retry_after() if breaker is not None else 0.0
        retry = max(1, math.ceil(wait * 1000)) if wait else 1000
        return Decision(False, rate.limit, 0, retry, retry, rate.expire)
    if fallback_of is None:  # pragma: no cover - traffik.failures always gives one
        raise RuntimeError("This guard has no fallback_of; make guards with guard_of().")
    fallback = await fallback_of(action)
    try:
        return await call_on(fallback, key, strategy, custom, rate, cost)
    except FAILURES:
        logger.warning("traffik: fallback %r failed too; refusing %s", fallback, key)
        return Decision(False, rate.limit, 0, rate.expire, rate.expire, rate.expire)
