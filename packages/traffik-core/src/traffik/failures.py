"""What a throttle does when its backend fails, is slow, or is down.

Every throttle reaches its backend through :func:`decide_with_policy`. For a
backend with a :class:`FailurePolicy` (network backends get
:data:`DEFAULT_NETWORK_POLICY`), a guard composed around the backend bounds the
work in flight (``max_in_flight``, then a FIFO of ``max_waiting``) and each
answer (``timeout``); failures of the server, never the waits of this process,
feed a circuit breaker per failure domain that stops calling a dead server and
probes it for recovery; refusals are remembered in a local block cache; and
when the backend cannot answer, ``on_error`` decides:

- ``"fallback"`` (the default for network backends): decide on a local
  :class:`~traffik.backends.inmemory.InMemoryBackend` with the same rate, so every
  app instance keeps enforcing the limit on its own while the shared store is
  down (the fleet admits at most instances x limit; nobody gets a 500, and
  nobody is locked out);
- ``"allow"``: admit (fail open);
- ``"throttle"``: refuse, with Retry-After until the next recovery probe (fail closed);
- ``"raise"``: let the :class:`~traffik.exceptions.BackendError` propagate;
- a backend instance: decide on that backend instead (for example a second Redis).

For metrics: :func:`observe_backend_calls` reports every backend call the guard
makes (duration and outcome), and :func:`guard_stats` reads each failure domain's
in-flight and waiting counts and circuit state. Both cost nothing while unused.

This module is the guard's public face; the guard itself lives in
``traffik._guard`` (see its docstring for the layout).
"""

from __future__ import annotations

import typing

from traffik._guard.answer import FAILURES, answer_by_policy, call_on
from traffik._guard.blockcache import entry_key
from traffik._guard.emit import CALL_OUTCOMES, BackendCall, emit_decision, observe_calls
from traffik._guard.guard import Guard
from traffik._guard.policy import (
    DEFAULT_NETWORK_POLICY,
    ON_ERROR_ACTIONS,
    FailurePolicy,
    OnError,
)
from traffik._guard.policy import check_on_error as check_on_error  # for throttles
from traffik._guard.registry import DomainStats, backends, forget_refusal, guards, heard_from, stats
from traffik._guard.registry import set_guard as _set_guard
from traffik.backends.inmemory import InMemoryBackend
from traffik.events import _subscribers
from traffik.strategies._base import Strategy

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision
    from traffik.rates import Rate

__all__ = [
    "CALL_OUTCOMES",
    "DEFAULT_NETWORK_POLICY",
    "ON_ERROR_ACTIONS",
    "BackendCall",
    "DomainStats",
    "FailurePolicy",
    "OnError",
    "decide_with_policy",
    "forget_client_refusal",
    "guard_stats",
    "guarded_backends",
    "heard_from",
    "local_fallback_backend",
    "observe_backend_calls",
    "wait_with_policy",
]

CustomStrategy = typing.Callable[..., typing.Awaitable[float]]


def set_guard(backend: ThrottleBackend[typing.Any, typing.Any], guard: Guard) -> Guard:
    """Compose ``guard`` around ``backend`` (tests use it to inject a clock)."""
    if guard.fallback_of is None:
        guard.fallback_of = fallback_of
    return _set_guard(backend, guard)


def guard_of(backend: ThrottleBackend[typing.Any, typing.Any]) -> Guard | None:
    """The guard composed around ``backend`` (None without a failure policy).

    A new guard (fresh breakers and cache) replaces the old one when
    ``backend.failure_policy`` is replaced.
    """
    policy = backend.failure_policy
    if policy is None:
        return None
    guard = guards.get(id(backend))
    if guard is None or guard.policy is not policy:
        guard = _set_guard(backend, Guard(policy, fallback_of=fallback_of))
    return guard


def guard_stats(backend: ThrottleBackend[typing.Any, typing.Any]) -> list[DomainStats]:
    """A read-only snapshot of ``backend``'s failure guard, one :class:`DomainStats` per
    failure domain used so far: calls in flight, requests waiting for a slot, the
    circuit's state, answers heard. Empty for a backend without a policy (or not
    used yet). Cheap: read it when a metrics exporter asks, not per request.
    """
    return stats(backend)


def guarded_backends() -> list[ThrottleBackend[typing.Any, typing.Any]]:
    """Every live backend a failure guard was composed around (for metrics exporters,
    with :func:`guard_stats`)."""
    return typing.cast("list[ThrottleBackend[typing.Any, typing.Any]]", list(backends.values()))


def forget_client_refusal(
    backend: ThrottleBackend[typing.Any, typing.Any], key: str, strategy: Strategy, rate: Rate
) -> None:
    """Make this process's block cache forget the refusal it keeps for throttle key
    ``key`` under ``strategy`` and ``rate`` (that client was just reset)."""
    forget_refusal(backend, entry_key(key, strategy, rate))


def observe_backend_calls(callback: Callable[[BackendCall], None]) -> Callable[[], None]:
    """Call ``callback(call)`` after every backend call a failure guard makes.

    ``call`` is a :class:`BackendCall`: the backend, the failure domain, the
    seconds the call took (until the request stopped waiting for it) and its
    outcome, one of :data:`CALL_OUTCOMES` (``"ok"``, ``"error"``, ``"timeout"``,
    ``"late"``, ``"cancelled"``). Answers given without a call (open circuit,
    block cache, full queue) are not calls; :mod:`traffik.events` reports them.
    Callbacks run inline on the request path: keep them cheap. A failing
    callback is logged and never changes a decision. Returns the function that
    stops the callback. While no callback is registered, calls are not timed.
    """
    return observe_calls(callback)


_fallback: InMemoryBackend[typing.Any] | None = None


async def local_fallback_backend() -> ThrottleBackend[typing.Any, typing.Any]:
    """The process-wide in-memory backend used by the ``"fallback"`` action."""
    global _fallback
    if _fallback is None:
        backend: InMemoryBackend[typing.Any] = InMemoryBackend(
            namespace="traffik-fallback", max_keys=100_000
        )
        await backend.initialize()
        _fallback = backend
    return _fallback


async def fallback_of(action: OnError) -> ThrottleBackend[typing.Any, typing.Any]:
    """The backend a ``"fallback"`` action (or a backend given as the action) decides on."""
    if action == "fallback":
        return await local_fallback_backend()
    return typing.cast("ThrottleBackend[typing.Any, typing.Any]", action)


async def decide_with_policy(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy | CustomStrategy,
    rate: Rate,
    cost: int,
    *,
    policy: OnError | None = None,
    name: str = "",
    shadow: bool = False,
) -> Decision:
    """Ask ``backend`` to decide; when it cannot, answer by its policy (``policy`` overrides the action).

    ``strategy`` is a built-in :class:`~traffik.strategies.Strategy` or a custom
    one (``async (key, rate, backend, cost) -> wait_ms``, its wait turned into a
    decision with ``remaining=-1``, unknown); both take the same path. ``name``
    (the throttle's uid) is the ``policy`` of the events emitted, and every answer,
    whoever gave it, is emitted once as ``allowed`` or ``throttled``
    (``shadow_throttled`` with ``shadow=True``: a shadow throttle's refusal).
    """
    failure_policy = backend.failure_policy
    if isinstance(strategy, Strategy):
        if cost > strategy.capacity(rate):
            # Can never fit: no need to ask anyone.
            decision = strategy.decide(None, 0, rate, cost).decision
        elif failure_policy is None:
            # No failure policy (in-memory backends): errors propagate unless the
            # throttle names an action of its own.
            now = backend.decide_now
            try:
                if now is not None:
                    decision = now(key, strategy, rate, cost)
                else:
                    decision = await backend.decide(key, strategy, rate, cost)
            except FAILURES as exc:
                decision = await _by_action(
                    backend, key, strategy, False, rate, cost, policy, exc, name
                )
        else:
            guard = guards.get(id(backend))
            if guard is None or guard.policy is not failure_policy:
                guard = typing.cast("Guard", guard_of(backend))
            action = failure_policy.on_error if policy is None else policy
            decision = await guard.decide(backend, key, strategy, rate, cost, action, name)
    elif failure_policy is None:
        try:
            decision = await call_on(backend, key, strategy, True, rate, cost)
        except FAILURES as exc:
            decision = await _by_action(backend, key, strategy, True, rate, cost, policy, exc, name)
    else:
        guard = typing.cast("Guard", guard_of(backend))
        action = failure_policy.on_error if policy is None else policy
        decision = await guard.decide_custom(backend, key, strategy, rate, cost, action, name)
    if _subscribers:
        emit_decision(decision, key, backend, name, shadow)
    return decision


async def _by_action(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy | CustomStrategy,
    custom: bool,
    rate: Rate,
    cost: int,
    policy: OnError | None,
    error: BaseException,
    name: str,
) -> Decision:
    """A backend without a failure policy failed: the throttle's own action, if any,
    answers; otherwise the error propagates."""
    if policy is None or policy == "raise":
        raise error
    return await answer_by_policy(
        backend, key, strategy, custom, rate, cost, policy, error, None, name, fallback_of
    )


async def wait_with_policy(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: CustomStrategy,
    rate: Rate,
    cost: int,
    *,
    policy: OnError | None = None,
    name: str = "",
) -> float:
    """Run a custom strategy under the policy and return its wait in milliseconds.

    The same path as :func:`decide_with_policy` (which throttles use), for callers
    that want the seed protocol's ``wait_ms``: 0 when admitted.
    """
    decision = await decide_with_policy(
        backend, key, strategy, rate, cost, policy=policy, name=name
    )
    if decision.allowed:
        return 0.0
    return float("inf") if decision.never else float(decision.retry_after_ms)
