"""What a throttle does when its backend fails, is slow, or is down.

Every throttle reaches its backend through :func:`decide_with_policy`. For a
backend with a :class:`FailurePolicy` (network backends get
:data:`DEFAULT_NETWORK_POLICY`), each call is bounded by ``timeout``; failures
feed a circuit breaker that stops calling a dead server and probes it for
recovery; refusals are remembered in a local block cache; and when the backend
cannot answer, ``on_error`` decides:

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

import asyncio
import logging
import math
import sys
import typing
from dataclasses import dataclass

from traffik import events
from traffik._blockcache import BlockCache, entry_key
from traffik._circuit import CircuitBreaker
from traffik._policy_events import circuit_event, emit_decision, report
from traffik.decisions import NEVER, Decision
from traffik.events import _subscribers
from traffik.exceptions import BackendError, ConfigurationError, LockTimeoutError

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = [
    "DEFAULT_NETWORK_POLICY",
    "ON_ERROR_ACTIONS",
    "FailurePolicy",
    "OnError",
    "decide_with_policy",
    "local_fallback_backend",
    "wait_with_policy",
]

logger = logging.getLogger("traffik.failures")

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

    ``timeout`` bounds each decision (seconds; None: unbounded). After
    ``failure_threshold`` consecutive failures the circuit opens for
    ``recovery_time`` seconds, doubling on each failed probe up to
    ``max_recovery_time``. ``block_cache_size`` refusals are kept locally (0: off).
    """

    on_error: OnError = "fallback"
    timeout: float | None = 0.25
    failure_threshold: int = 5
    recovery_time: float = 0.5
    max_recovery_time: float = 5.0
    block_cache_size: int = 10_000

    def __post_init__(self) -> None:
        check_on_error(self.on_error)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds or None, got {self.timeout!r}."
            )
        if self.block_cache_size < 0:
            raise ConfigurationError(
                f"block_cache_size must be 0 (off) or more, got {self.block_cache_size}."
            )
        # Validates thresholds and times with a clear message.
        try:
            CircuitBreaker(self.failure_threshold, self.recovery_time, self.max_recovery_time)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None


#: The policy network backends (Redis, Memcached) start with.
DEFAULT_NETWORK_POLICY = FailurePolicy()


class _Guard:
    """The runtime state behind a backend's policy: a breaker per failure domain, a block cache.

    Each :meth:`~traffik.backends.base.ThrottleBackend.failure_domain` of the backend
    (one server of a pool, say) has a circuit breaker of its own, so one dead server
    does not send the keys of the live ones to the fallback.
    """

    __slots__ = ("breakers", "cache", "clock", "policy")

    def __init__(
        self, policy: FailurePolicy, *, clock: typing.Callable[[], float] | None = None
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.breakers: dict[typing.Hashable, CircuitBreaker] = {}
        self.cache = BlockCache(policy.block_cache_size) if policy.block_cache_size else None

    def breaker(self, domain: typing.Hashable = None) -> CircuitBreaker:
        """The circuit breaker of failure domain ``domain`` (made on first use)."""
        breaker = self.breakers.get(domain)
        if breaker is None:
            policy = self.policy
            args = (policy.failure_threshold, policy.recovery_time, policy.max_recovery_time)
            breaker = (
                CircuitBreaker(*args)
                if self.clock is None
                else CircuitBreaker(*args, clock=self.clock)
            )
            self.breakers[domain] = breaker
        return breaker


def _guard_of(backend: ThrottleBackend[typing.Any, typing.Any]) -> _Guard | None:
    policy = backend.failure_policy
    if policy is None:
        return None
    guard: _Guard | None = backend.__dict__.get("_traffik_guard")
    if guard is None or guard.policy is not policy:
        guard = _Guard(policy)
        backend.__dict__["_traffik_guard"] = guard
    return guard


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


async def _fallback_of(action: OnError) -> ThrottleBackend[typing.Any, typing.Any]:
    """The backend a ``"fallback"`` action (or a backend given as the action) decides on."""
    if action == "fallback":
        return await local_fallback_backend()
    return typing.cast("ThrottleBackend[typing.Any, typing.Any]", action)


_T = typing.TypeVar("_T")

if sys.version_info >= (3, 11):

    async def _bounded(awaitable: typing.Awaitable[_T], timeout: float | None) -> _T:
        if timeout is None:
            return await awaitable
        async with asyncio.timeout(timeout):
            return await awaitable

else:  # pragma: no cover - Python 3.10

    async def _bounded(awaitable: typing.Awaitable[_T], timeout: float | None) -> _T:
        if timeout is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, timeout)


async def decide_with_policy(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    *,
    policy: OnError | None = None,
    name: str = "",
) -> Decision:
    """Ask ``backend`` to decide; when it cannot, answer by its policy (``policy`` overrides the action).

    ``name`` (the throttle's uid) is the ``policy`` of the events emitted.
    """
    if backend.failure_policy is None:
        # The local fast path (in-memory backends): nothing to guard.
        try:
            decision = await backend.decide(key, strategy, rate, cost)
        except BackendError as exc:
            if policy is None or policy == "raise":
                raise
            return await _on_error(backend, key, strategy, rate, cost, policy, exc, None, name)
        if _subscribers:
            emit_decision(decision, key, backend, name)
        return decision
    guard = typing.cast(_Guard, _guard_of(backend))

    if cost > strategy.capacity(rate):
        # Can never fit: no need to ask anyone.
        never = strategy.decide(None, 0, rate, cost).decision
        if _subscribers:
            emit_decision(never, key, backend, name)
        return never

    action = guard.policy.on_error if policy is None else policy
    cache = guard.cache
    cache_key = ""
    if cache is not None:
        cache_key = entry_key(key, strategy, rate)
        local = cache.get(cache_key, cost)
        if local is not None:
            if events.has_subscribers():
                events.emit(
                    events.ThrottleEvent(
                        events.LOCAL_BLOCK,
                        policy=name or local.policy,
                        key=key,
                        backend=repr(backend),
                        decision=local,
                    )
                )
            return local

    breaker = guard.breaker(backend.failure_domain(key))
    allowed, change = breaker.allow_call()
    circuit_event(change, backend)
    if not allowed:
        return await _on_error(backend, key, strategy, rate, cost, action, None, breaker, name)
    try:
        if change is not None:
            # A recovery probe: the backend may never have connected (app started while it was down).
            await _bounded(backend.initialize(), guard.policy.timeout)
        decision = await _bounded(backend.decide(key, strategy, rate, cost), guard.policy.timeout)
    except (BackendError, TimeoutError, asyncio.TimeoutError, OSError) as exc:
        circuit_event(breaker.record_failure(), backend)
        if action == "raise":
            if isinstance(exc, BackendError):
                raise
            raise BackendError(
                f"{backend!r} did not answer within {guard.policy.timeout} s: {exc!r}"
            ) from exc
        return await _on_error(backend, key, strategy, rate, cost, action, exc, breaker, name)
    circuit_event(breaker.record_success(), backend)
    if cache is not None and not decision.allowed:
        cache.put(cache_key, cost, decision)
    if events.has_subscribers():
        emit_decision(decision, key, backend, name)
    return decision


async def _on_error(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    action: OnError,
    error: BaseException | None,
    breaker: CircuitBreaker | None,
    name: str = "",
) -> Decision:
    """Answer without the backend, as ``action`` says (and emit the answer's event)."""
    report(backend, key, action, error, name)
    decision = await _answer(backend, key, strategy, rate, cost, action, error, breaker)
    if _subscribers:
        emit_decision(decision, key, backend, name)
    return decision


async def _answer(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    action: OnError,
    error: BaseException | None,
    breaker: CircuitBreaker | None,
) -> Decision:
    if action == "allow":
        return Decision(True, rate.limit, max(0, rate.limit - cost), 0, 0, rate.expire)
    if action == "throttle":
        wait = breaker.retry_after() if breaker is not None else 0.0
        retry = max(1, math.ceil(wait * 1000)) if wait else 1000
        return Decision(False, rate.limit, 0, retry, retry, rate.expire)
    if action == "raise":
        if isinstance(error, BackendError):
            raise error
        raise BackendError(
            f"{backend!r} is unavailable (its circuit is open); on_error='raise'."
        ) from error
    fallback = await _fallback_of(action)
    try:
        return await fallback.decide(key, strategy, rate, cost)
    except BackendError:
        logger.warning("traffik: fallback %r failed too; refusing %s", fallback, key)
        retry = rate.expire if strategy.capacity(rate) >= cost else NEVER
        return Decision(False, rate.limit, 0, rate.expire, retry, rate.expire)


def _decision_from_wait(wait_ms: float, rate: Rate) -> Decision:
    """A custom strategy's wait as a Decision; ``remaining=-1`` means unknown."""
    if not wait_ms > 0:  # 0, negative or NaN: admitted
        return Decision(True, rate.limit, -1, 0, 0, rate.expire)
    if math.isinf(wait_ms):
        return Decision(False, rate.limit, -1, rate.expire, NEVER, rate.expire)
    ms = math.ceil(wait_ms)
    return Decision(False, rate.limit, -1, ms, ms, rate.expire)


#: Errors of a custom strategy that mean "the backend could not answer".
_CUSTOM_FAILURES = (BackendError, TimeoutError, asyncio.TimeoutError, OSError)


async def wait_with_policy(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: typing.Callable[..., typing.Awaitable[float]],
    rate: Rate,
    cost: int,
    *,
    policy: OnError | None = None,
    name: str = "",
) -> float:
    """Run a custom strategy (``async (key, rate, backend, cost) -> wait_ms``) under the policy.

    When it fails because the backend did (a :class:`BackendError`, a lock or call
    timeout, a socket error), the action of ``policy`` or of the backend's
    ``failure_policy`` answers: ``"allow"`` -> 0, ``"throttle"`` -> one second,
    ``"fallback"`` or a backend -> the same strategy on that backend. With neither
    (in-memory backends), or with ``"raise"``, the error propagates. A backend with a
    failure policy also has its circuit breaker here: while it is open the strategy
    is not run and the action answers at once. Custom strategies are not cut off by
    the policy's ``timeout`` (they may wait for a lock on purpose), and a lock
    timeout does not count as a backend failure.
    """
    configured = backend.failure_policy
    action = policy if policy is not None else (configured.on_error if configured else "raise")
    guard = _guard_of(backend) if configured is not None else None
    error: BaseException | None = None
    if guard is not None:
        breaker = guard.breaker(backend.failure_domain(key))
        allowed, change = breaker.allow_call()
        circuit_event(change, backend)
        if not allowed:
            if action == "raise":
                raise BackendError(
                    f"{backend!r} is unavailable (its circuit is open); on_error='raise'."
                )
            return await _custom_on_error(backend, key, strategy, rate, cost, action, None, name)
        try:
            if change is not None:  # a recovery probe: the backend may never have connected
                await _bounded(backend.initialize(), guard.policy.timeout)
            wait = await strategy(key, rate, backend, cost)
        except _CUSTOM_FAILURES as exc:
            if not isinstance(exc, LockTimeoutError):  # contention, not a dead server
                circuit_event(breaker.record_failure(), backend)
            error = exc
        else:
            circuit_event(breaker.record_success(), backend)
            return wait
    else:
        try:
            return await strategy(key, rate, backend, cost)
        except _CUSTOM_FAILURES as exc:
            error = exc
    if action == "raise":
        raise error
    return await _custom_on_error(backend, key, strategy, rate, cost, action, error, name)


async def _custom_on_error(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: typing.Callable[..., typing.Awaitable[float]],
    rate: Rate,
    cost: int,
    action: OnError,
    error: BaseException | None,
    name: str,
) -> float:
    """A custom strategy's answer without the backend, as ``action`` says."""
    report(backend, key, action, error, name)
    if action == "allow":
        return 0.0
    if action == "throttle":
        return 1000.0
    fallback = await _fallback_of(action)
    try:
        return await strategy(key, rate, fallback, cost)
    except _CUSTOM_FAILURES:
        logger.warning("traffik: fallback %r failed too; refusing %s", fallback, key)
        return float(rate.expire)
