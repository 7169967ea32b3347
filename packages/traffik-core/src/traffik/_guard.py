"""The failure guard: the one layer between throttles and a backend with a failure policy.

It owns what :class:`~traffik.failures.FailurePolicy` configures: in-flight
slots, the deadline of each call, a circuit breaker per failure domain, the
block cache, the answers by policy, and the events that say what happened.
Built-in strategies (``backend.decide``) and custom ones (``async (key, rate,
backend, cost) -> wait_ms``) go through the same code.

How a call is judged (the rules the README states):

- a call first takes an in-flight slot of its failure domain; waiting for one is
  this process's queue, never a failure of the server;
- the call runs as a task; the caller waits for it (never through ``wait_for``) until
  the deadline (``timeout`` after the request reached the guard), so no library's
  own ``wait_for`` can swallow the deadline; at the deadline the task is cancelled
  and the caller answers at once, whether or not the task has unwound;
- a call that raised a backend error, or that reached its deadline while the
  server answered *nothing* of its domain since the request arrived, is a failure
  of the server: it feeds the breaker and the policy answers;
- a request that reached its deadline while the server did answer other calls is
  late because of this process (a queue, a busy loop): it gets the overload
  answer (a refusal), which is not a failure and never admits;
- results are reported to the breaker with the epoch the call started in, so a
  call started before the circuit opened never closes it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import typing

from traffik import _instrument, events
from traffik._blockcache import BlockCache, entry_key
from traffik._circuit import CircuitBreaker
from traffik._inflight import InFlight
from traffik._policy_events import circuit_event, emit_decision, emit_request_event, report
from traffik._watch import BEHIND, DONE, Watch, start
from traffik.decisions import NEVER, Decision
from traffik.events import _subscribers
from traffik.exceptions import BackendError, LockTimeoutError, TraffikException

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from traffik.backends.base import ThrottleBackend
    from traffik.failures import FailurePolicy, OnError
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

    Backend = ThrottleBackend[typing.Any, typing.Any]
    #: One decision on a given backend (the guarded one, or a fallback).
    Call = Callable[[Backend], Awaitable[Decision]]
    CustomStrategy = Callable[..., Awaitable[float]]

__all__ = ["FAILURES", "OVERLOAD_RETRY_MS", "Guard", "answer_by_policy", "decision_from_wait"]

logger = logging.getLogger("traffik.failures")

#: Errors of a call that mean "the backend could not answer".
FAILURES = (BackendError, TimeoutError, asyncio.TimeoutError, OSError)
#: Retry-After of the overload answer, in milliseconds.
OVERLOAD_RETRY_MS = 1000


class _Domain:
    """What the guard keeps per failure domain: its breaker and its in-flight slots."""

    __slots__ = ("breaker", "slots")

    def __init__(self, breaker: CircuitBreaker, slots: InFlight) -> None:
        self.breaker = breaker
        self.slots = slots


class Guard:
    """The runtime state behind one backend's :class:`~traffik.failures.FailurePolicy`.

    It holds no reference to the backend (the registry in :mod:`traffik.failures`
    maps backends to guards weakly); each call passes the backend in.
    """

    __slots__ = ("_domains", "abandoned", "cache", "clock", "policy")

    def __init__(self, policy: FailurePolicy, *, clock: Callable[[], float] | None = None) -> None:
        self.policy = policy
        self.clock = clock
        self._domains: dict[Hashable, _Domain] = {}
        #: Calls answered without (cancelled at their deadline) that have not unwound yet.
        self.abandoned: set[asyncio.Task[Decision]] = set()
        self.cache = BlockCache(policy.block_cache_size) if policy.block_cache_size else None

    def _domain(self, domain: Hashable) -> _Domain:
        state = self._domains.get(domain)
        if state is None:
            policy = self.policy
            args = (policy.failure_threshold, policy.recovery_time, policy.max_recovery_time)
            breaker = (
                CircuitBreaker(*args)
                if self.clock is None
                else CircuitBreaker(*args, clock=self.clock)
            )
            state = _Domain(breaker, InFlight(policy.max_in_flight, policy.max_waiting))
            self._domains[domain] = state
        return state

    def breaker(self, domain: Hashable = None) -> CircuitBreaker:
        """The circuit breaker of failure domain ``domain`` (made on first use)."""
        return self._domain(domain).breaker

    def slots(self, domain: Hashable = None) -> InFlight:
        """The in-flight slots of failure domain ``domain``."""
        return self._domain(domain).slots

    async def drain(self, timeout: float = 1.0) -> None:
        """Wait (up to ``timeout`` s) for abandoned calls to unwind, before the backend
        closes the connections they may still use."""
        if self.abandoned:
            for task in self.abandoned:
                task.cancel()
            await asyncio.wait(set(self.abandoned), timeout=timeout)

    # -- entry points ---------------------------------------------------------------

    async def decide(
        self,
        backend: Backend,
        key: str,
        strategy: Strategy,
        rate: Rate,
        cost: int,
        action: OnError,
        name: str,
    ) -> Decision:
        """A built-in strategy's decision: the block cache, then the backend, bounded."""
        cache, cache_key = self.cache, ""
        if cache is not None:
            cache_key = entry_key(key, strategy, rate)
            local = cache.get(cache_key, cost)
            if local is not None:
                if _subscribers:
                    emit_request_event(events.LOCAL_BLOCK, key, backend, name, decision=local)
                return local

        async def call(target: Backend) -> Decision:
            return await target.decide(key, strategy, rate, cost)

        decision, answered = await self._guarded(backend, key, call, rate, cost, action, name, True)
        if answered and cache is not None and not decision.allowed:
            cache.put(cache_key, cost, decision)
        return decision

    async def decide_custom(
        self,
        backend: Backend,
        key: str,
        strategy: CustomStrategy,
        rate: Rate,
        cost: int,
        action: OnError,
        name: str,
    ) -> Decision:
        """A custom strategy's wait as a decision; not cut off by ``timeout`` (it may
        wait for a lock on purpose), otherwise judged as a built-in one."""
        call = custom_call(key, strategy, rate, cost)
        decision, _ = await self._guarded(backend, key, call, rate, cost, action, name, False)
        return decision

    # -- the one failure path ---------------------------------------------------------

    def _abandon(self, task: asyncio.Task[Decision]) -> None:
        """Cancel a call nobody waits for any more; close() lets it unwind first."""
        task.cancel()
        if not task.done():
            self.abandoned.add(task)
            task.add_done_callback(self.abandoned.discard)

    async def _guarded(
        self,
        backend: Backend,
        key: str,
        call: Call,
        rate: Rate,
        cost: int,
        action: OnError,
        name: str,
        bounded: bool,
    ) -> tuple[Decision, bool]:
        """The decision, and True if the backend took it (False: policy or overload)."""
        where = backend.failure_domain(key)
        domain = self._domain(where)
        breaker = domain.breaker
        allowed, change = breaker.allow_call()
        circuit_event(change, backend, where)
        if not allowed:
            return await answer_by_policy(
                backend, key, call, rate, cost, action, None, breaker, name
            ), False
        epoch = breaker.epoch
        policy = self.policy
        watch = Watch(breaker, policy.timeout if bounded else None, policy.max_wait)
        slots = domain.slots
        if not slots.try_take():
            waiter = slots.enqueue()
            if waiter is None:
                return _overload(backend, key, rate, name, full=True), False
            try:
                verdict = await watch.wait(waiter)
            except asyncio.CancelledError:
                slots.leave(waiter)
                raise
            if verdict is not DONE:
                slots.leave(waiter)
                if verdict is BEHIND:
                    return _overload(backend, key, rate, name, full=False), False
                # No slot came free while the server answered nothing for a whole
                # timeout: the calls holding them are stuck (they report the failure).
                silent = _late(backend, watch.timeout)
                return await answer_by_policy(
                    backend, key, call, rate, cost, action, silent, breaker, name
                ), False
        task = start(_attempt(backend, call, probe=change is not None))
        task.add_done_callback(lambda done: _finished(done, slots, breaker))
        try:
            verdict = await watch.wait(task)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        error: BaseException | None
        if verdict is DONE and not task.cancelled():
            error = task.exception()
            if error is None:
                circuit_event(breaker.record_success(epoch), backend, where)
                return task.result(), True
            if not isinstance(error, FAILURES):
                raise error  # a bug or bad input, not an outage
            if not isinstance(error, LockTimeoutError):  # contention, not a dead server
                circuit_event(breaker.record_failure(epoch), backend, where)
        else:
            self._abandon(task)  # not awaited: the answer does not wait for it to unwind
            if verdict is BEHIND:
                return _overload(backend, key, rate, name, full=False), False
            error = _late(backend, watch.timeout)
            circuit_event(breaker.record_failure(epoch), backend, where)
        return await answer_by_policy(
            backend, key, call, rate, cost, action, error, breaker, name
        ), False


def custom_call(key: str, strategy: CustomStrategy, rate: Rate, cost: int) -> Call:
    """A custom strategy run on a given backend, its wait turned into a decision."""

    async def call(target: Backend) -> Decision:
        return decision_from_wait(await strategy(key, rate, target, cost), rate)

    return call


def decision_from_wait(wait_ms: float, rate: Rate) -> Decision:
    """A custom strategy's wait as a Decision; ``remaining=-1`` means unknown."""
    if not wait_ms > 0:  # 0, negative or NaN: admitted
        return Decision(True, rate.limit, -1, 0, 0, rate.expire)
    if math.isinf(wait_ms):
        return Decision(False, rate.limit, -1, rate.expire, NEVER, rate.expire)
    ms = math.ceil(wait_ms)
    return Decision(False, rate.limit, -1, ms, ms, rate.expire)


async def _attempt(backend: Backend, call: Call, *, probe: bool) -> Decision:
    if probe:
        # A recovery probe: the backend may never have connected (app started while it was down).
        await backend.initialize()
    observer = _instrument.call_observer
    if observer is None:
        return await call(backend)
    return await _instrument.observed(observer, backend, call)


def _finished(task: asyncio.Task[Decision], slots: InFlight, breaker: CircuitBreaker) -> None:
    slots.release()
    # Retrieved here, so an abandoned call's error is never "never retrieved".
    if not task.cancelled() and task.exception() is None:
        breaker.heard()  # evidence for every request waiting on this server, at once


def _late(backend: Backend, timeout: float | None) -> BackendError:
    return BackendError(
        f"{backend!r} answered nothing within {timeout} s (the failure policy's timeout)."
    )


def _overload(backend: Backend, key: str, rate: Rate, name: str, *, full: bool) -> Decision:
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
    call: Call,
    rate: Rate,
    cost: int,
    action: OnError,
    error: BaseException | None,
    breaker: CircuitBreaker | None,
    name: str,
) -> Decision:
    """Answer without the backend, as ``action`` says (reporting what happened first)."""
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
    from traffik.failures import fallback_of

    fallback = await fallback_of(action)
    try:
        return await call(fallback)
    except FAILURES:
        logger.warning("traffik: fallback %r failed too; refusing %s", fallback, key)
        return Decision(False, rate.limit, 0, rate.expire, rate.expire, rate.expire)


def emit_answer(
    decision: Decision, key: str, backend: Backend, name: str, shadow: bool = False
) -> None:
    """Emit ALLOWED or THROTTLED (SHADOW_THROTTLED in shadow) for the answer a
    throttle got, whoever gave it."""
    if _subscribers:
        emit_decision(decision, key, backend, name, shadow)
