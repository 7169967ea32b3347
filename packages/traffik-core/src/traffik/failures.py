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
"""

from __future__ import annotations

import typing
import weakref
from dataclasses import dataclass

from traffik import _instrument
from traffik._circuit import CircuitBreaker
from traffik._guard import FAILURES, Guard, answer_by_policy, custom_call, emit_answer
from traffik.exceptions import ConfigurationError

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = [
    "DEFAULT_NETWORK_POLICY",
    "ON_ERROR_ACTIONS",
    "FailurePolicy",
    "OnError",
    "decide_with_policy",
    "heard_from",
    "local_fallback_backend",
    "wait_with_policy",
]

#: The named actions; a ThrottleBackend instance is accepted too (fall back to it).
ON_ERROR_ACTIONS = ("fallback", "allow", "throttle", "raise")
OnError = typing.Union[str, "ThrottleBackend[typing.Any, typing.Any]"]


def check_on_error(value: object) -> None:
    """Raise ConfigurationError unless ``value`` is a known action or a backend."""
    if isinstance(value, str) and value in ON_ERROR_ACTIONS:
        return
    from traffik.backends.base import ThrottleBackend

    if isinstance(value, ThrottleBackend):
        return
    raise ConfigurationError(
        f"on_error must be one of {', '.join(map(repr, ON_ERROR_ACTIONS))} or a backend "
        f"instance to fall back to, got {value!r}."
    )


@dataclass(frozen=True)
class FailurePolicy:
    """How a backend's failures are handled (set as ``backend.failure_policy``).

    ``timeout`` (seconds; None: unbounded) is how long the server may stay silent:
    a request whose server answered nothing at all for ``timeout`` while it waited
    is a failure, answered by ``on_error``. At most ``max_in_flight`` calls per
    failure domain are out at once; up to ``max_waiting`` more wait their turn in
    order. A request that is behind this process's own backlog while the server
    keeps answering waits up to ``max_wait`` seconds; beyond that, or with the line
    full, it gets the overload answer: refused (429, Retry-After 1 s), never
    counted as a failure of the server. After ``failure_threshold`` consecutive
    failures the circuit opens for ``recovery_time`` seconds, doubling on each
    failed probe up to ``max_recovery_time``. ``block_cache_size`` refusals are
    kept locally (0: off).
    """

    on_error: OnError = "fallback"
    timeout: float | None = 0.25
    failure_threshold: int = 5
    recovery_time: float = 0.5
    max_recovery_time: float = 5.0
    block_cache_size: int = 10_000
    max_in_flight: int = 256
    max_waiting: int = 10_000
    max_wait: float = 2.0

    def __post_init__(self) -> None:
        check_on_error(self.on_error)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds or None, got {self.timeout!r}."
            )
        if not self.max_wait > 0:
            raise ConfigurationError(
                f"max_wait must be a positive number of seconds, got {self.max_wait!r}."
            )
        for name, low in (("block_cache_size", 0), ("max_in_flight", 1), ("max_waiting", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{name} must be an int of at least {low}, got {value!r}.")
        # Validates thresholds and times with a clear message.
        try:
            CircuitBreaker(self.failure_threshold, self.recovery_time, self.max_recovery_time)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None


#: The policy network backends (Redis, Memcached) start with.
DEFAULT_NETWORK_POLICY = FailurePolicy()

#: The guard of each backend with a policy, by id(backend); an entry goes when its
#: backend is collected (weakref.finalize), so a backend need not be hashable.
_guards: dict[int, Guard] = {}


def set_guard(backend: ThrottleBackend[typing.Any, typing.Any], guard: Guard) -> Guard:
    """Compose ``guard`` around ``backend`` (tests use it to inject a clock)."""
    key = id(backend)
    if key not in _guards:
        weakref.finalize(backend, _guards.pop, key, None)
        _instrument.track(backend)
    _guards[key] = guard
    return guard


def guard_of(backend: ThrottleBackend[typing.Any, typing.Any]) -> Guard | None:
    """The guard composed around ``backend`` (None without a failure policy).

    A new guard (fresh breakers and cache) replaces the old one when
    ``backend.failure_policy`` is replaced.
    """
    policy = backend.failure_policy
    if policy is None:
        return None
    guard = _guards.get(id(backend))
    if guard is None or guard.policy is not policy:
        guard = set_guard(backend, Guard(policy))
    return guard


def heard_from(
    backend: ThrottleBackend[typing.Any, typing.Any], domain: typing.Hashable = None
) -> None:
    """Tell the failure guard that failure domain ``domain`` of ``backend`` (what
    :meth:`~traffik.backends.base.ThrottleBackend.failure_domain` returns for the
    key) just answered a round trip.

    The guard judges a server silent when no call of its failure domain finished
    for a whole ``timeout``. A backend whose one decision may take many round trips
    (a compare-and-swap loop losing races to other processes, with pauses between
    attempts) calls this after each reply, so a long contended decision is not
    mistaken for a dead server. Cheap; a no-op for backends without a policy.
    """
    guard = _guards.get(id(backend))
    if guard is not None:
        guard.breaker(domain).heard()


async def drain_abandoned(backend: ThrottleBackend[typing.Any, typing.Any]) -> None:
    """Let calls abandoned at their deadline unwind (bounded) before ``backend`` closes."""
    guard = _guards.get(id(backend))
    if guard is not None:
        await guard.drain()


def forget_local_blocks(backend: ThrottleBackend[typing.Any, typing.Any]) -> None:
    """Drop the refusals cached for ``backend`` (its data was reset)."""
    guard = _guards.get(id(backend))
    if guard is not None and guard.cache is not None:
        guard.cache.clear()


_fallback: ThrottleBackend[typing.Any, typing.Any] | None = None


async def local_fallback_backend() -> ThrottleBackend[typing.Any, typing.Any]:
    """The process-wide in-memory backend used by the ``"fallback"`` action."""
    global _fallback
    if _fallback is None:
        from traffik.backends.inmemory import InMemoryBackend

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


CustomStrategy = typing.Callable[..., typing.Awaitable[float]]


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
    from traffik.strategies._base import Strategy

    if isinstance(strategy, Strategy) and cost > strategy.capacity(rate):
        # Can never fit: no need to ask anyone.
        decision = strategy.decide(None, 0, rate, cost).decision
    else:
        decision = await _decide(backend, key, strategy, rate, cost, policy, name)
    emit_answer(decision, key, backend, name, shadow)
    return decision


async def _decide(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy | CustomStrategy,
    rate: Rate,
    cost: int,
    policy: OnError | None,
    name: str,
) -> Decision:
    from traffik.strategies._base import Strategy

    guard = guard_of(backend)
    if guard is None:
        # No failure policy (in-memory backends): errors propagate unless the
        # throttle names an action of its own.
        call = _call_of(key, strategy, rate, cost)
        try:
            return await call(backend)
        except FAILURES as exc:
            if policy is None or policy == "raise":
                raise
            return await answer_by_policy(backend, key, call, rate, cost, policy, exc, None, name)
    action = guard.policy.on_error if policy is None else policy
    if isinstance(strategy, Strategy):
        return await guard.decide(backend, key, strategy, rate, cost, action, name)
    return await guard.decide_custom(backend, key, strategy, rate, cost, action, name)


def _call_of(
    key: str, strategy: Strategy | CustomStrategy, rate: Rate, cost: int
) -> typing.Callable[[ThrottleBackend[typing.Any, typing.Any]], typing.Awaitable[Decision]]:
    from traffik.strategies._base import Strategy

    if not isinstance(strategy, Strategy):
        return custom_call(key, strategy, rate, cost)
    builtin = strategy

    async def call(target: ThrottleBackend[typing.Any, typing.Any]) -> Decision:
        return await target.decide(key, builtin, rate, cost)

    return call


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
