"""The failure guard: the one layer between throttles and a backend with a failure policy.

It owns what :class:`~traffik._guard.policy.FailurePolicy` configures: in-flight
slots, deadlines, a circuit breaker per failure domain, the block cache, the
answers by policy, and the events that say what happened. Built-in strategies
(``backend.decide``) and custom ones (``async (key, rate, backend, cost) ->
wait_ms``) go through the same code.

How a call is judged (the rules the failures page states):

- a call first takes an in-flight slot of its failure domain; waiting for one is
  this process's queue, never a failure of the server;
- the call runs in the request's own task; the request's deadline is kept by its
  failure domain's sweep (:mod:`traffik._guard.watch`), which, at the deadline,
  makes the request leave the call (the call unwinds on its own, still holding
  its slot) and answer at once, whatever the client library does with the
  cancellation;
- a call that raised a backend error, or that reached its deadline while the
  server answered *nothing* of its domain since the request arrived, is a failure
  of the server: it feeds the breaker and the policy answers;
- a request that reached its deadline while the server did answer other calls is
  late because of this process (a queue, a busy loop): it gets the overload
  answer (a refusal), which is not a failure and never admits;
- results are reported to the breaker with the epoch the call started in, so a
  call started before the circuit opened never closes it.

A healthy call costs the backend call, one :class:`~traffik._guard.watch.Pending`
record and a few attribute updates: no task, timer or future of its own.
"""

from __future__ import annotations

import asyncio
import functools
import typing

from traffik import events
from traffik._guard.answer import (
    FAILURES,
    answer_by_policy,
    call_on,
    late_error,
    overload,
    probe,
)
from traffik._guard.blockcache import BlockCache, entry_key
from traffik._guard.circuit import CLOSED, CircuitBreaker
from traffik._guard.emit import circuit_event, emit_request_event, observers, report_call
from traffik._guard.inflight import InFlight
from traffik._guard.watch import BEHIND, DONE, Abandoned, Sweep, drive
from traffik.events import _subscribers
from traffik.exceptions import LockTimeoutError

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from traffik._guard.policy import FailurePolicy, OnError
    from traffik._guard.types import Backend, CustomStrategy, FallbackOf
    from traffik.decisions import Decision
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = ["Domain", "Guard"]


class Domain:
    """What the guard keeps per failure domain: its breaker, in-flight slots and sweep."""

    __slots__ = ("breaker", "slots", "sweep")

    def __init__(self, breaker: CircuitBreaker, slots: InFlight, sweep: Sweep | None) -> None:
        self.breaker = breaker
        self.slots = slots
        #: The deadlines of its requests (None when the policy sets no timeout).
        self.sweep = sweep


class Guard:
    """The runtime state behind one backend's failure policy.

    It holds no reference to the backend (the registry maps backends to guards
    weakly); each call passes the backend in. ``fallback_of(action)`` finds the
    backend a ``"fallback"`` action (or a backend given as the action) decides on.
    """

    __slots__ = ("_domains", "abandoned", "cache", "clock", "fallback_of", "policy")

    def __init__(
        self,
        policy: FailurePolicy,
        *,
        clock: Callable[[], float] | None = None,
        fallback_of: FallbackOf | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.fallback_of = fallback_of
        self._domains: dict[Hashable, Domain] = {}
        #: Calls left at their deadline that have not unwound yet.
        self.abandoned: set[asyncio.Task[Decision]] = set()
        self.cache = BlockCache(policy.block_cache_size) if policy.block_cache_size else None

    def _domain(self, where: Hashable) -> Domain:
        state = self._domains.get(where)
        if state is None:
            policy = self.policy
            args = (policy.failure_threshold, policy.recovery_time, policy.max_recovery_time)
            breaker = (
                CircuitBreaker(*args)
                if self.clock is None
                else CircuitBreaker(*args, clock=self.clock)
            )
            timeout = policy.timeout
            sweep = None if timeout is None else Sweep(breaker, timeout, policy.max_wait)
            state = Domain(breaker, InFlight(policy.max_in_flight, policy.max_waiting), sweep)
            self._domains[where] = state
        return state

    def breaker(self, domain: Hashable = None) -> CircuitBreaker:
        """The circuit breaker of failure domain ``domain`` (made on first use)."""
        return self._domain(domain).breaker

    def slots(self, domain: Hashable = None) -> InFlight:
        """The in-flight slots of failure domain ``domain``."""
        return self._domain(domain).slots

    def domains(self) -> dict[Hashable, Domain]:
        """The failure domains used so far (a copy)."""
        return dict(self._domains)

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
        cache = self.cache
        if cache is None:
            return await self._call(backend, key, strategy, False, rate, cost, action, name, "")
        cache_key = entry_key(key, strategy, rate)
        local = cache.get(cache_key, cost)
        if local is not None:
            if _subscribers:
                emit_request_event(events.LOCAL_BLOCK, key, backend, name, decision=local)
            return local
        return await self._call(backend, key, strategy, False, rate, cost, action, name, cache_key)

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
        return await self._call(backend, key, strategy, True, rate, cost, action, name, "")

    # -- the one call path ---------------------------------------------------------------

    async def _call(
        self,
        backend: Backend,
        key: str,
        strategy: Strategy | CustomStrategy,
        custom: bool,
        rate: Rate,
        cost: int,
        action: OnError,
        name: str,
        cache_key: str,
    ) -> Decision:
        """The decision: the backend's, the policy's, or the overload answer.

        A refusal the backend gave is kept in the block cache under ``cache_key``
        (``""``: not cached).
        """
        where = backend.failure_domain(key)
        domain = self._domains.get(where)
        if domain is None:
            domain = self._domain(where)
        breaker = domain.breaker
        probing = False
        if breaker.state is not CLOSED:
            allowed, change = breaker.allow_call()
            circuit_event(change, backend, where)
            if not allowed:
                return await answer_by_policy(
                    backend, key, strategy, custom, rate, cost, action, None, breaker, name,
                    self.fallback_of,
                )  # fmt: skip
            probing = change is not None
        epoch = breaker.epoch
        slots = domain.slots
        sweep = None if custom else domain.sweep
        loop = asyncio.get_running_loop()
        pending = None if sweep is None else sweep.enter(loop)
        if not slots.try_take():
            waiter = slots.enqueue()
            if waiter is None:
                if pending is not None:
                    pending.verdict = DONE
                return overload(backend, key, rate, name, full=True)
            if pending is not None:
                pending.waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                slots.leave(waiter)
                if pending is not None and pending.verdict is None:
                    pending.verdict = DONE
                raise
            if pending is not None:
                pending.waiter = None
                verdict = pending.verdict
                if verdict is not None:  # judged while it waited: it holds no slot
                    slots.leave(waiter)
                    # If SILENT: no slot came free while the server answered nothing
                    # for a whole timeout; the calls holding them report the failure.
                    return await self._judged(
                        verdict, backend, key, strategy, custom, rate, cost, action, breaker, name
                    )
        if probing:
            coro = probe(backend, key, strategy, custom, rate, cost)
        else:
            coro = call_on(backend, key, strategy, custom, rate, cost)
        started = loop.time() if observers else 0.0
        try:
            decision = await coro if pending is None else await drive(coro, pending)
        except Abandoned as left:
            self._left(left.task, slots, breaker)
            verdict = left.verdict
            if observers:
                outcome = "late" if verdict is BEHIND else "timeout"
                report_call(backend, where, loop.time() - started, outcome)
            if left.cancelled:
                raise asyncio.CancelledError from None
            if verdict is not BEHIND:
                circuit_event(breaker.record_failure(epoch), backend, where)
            return await self._judged(
                verdict, backend, key, strategy, custom, rate, cost, action, breaker, name
            )
        except BaseException as exc:
            if pending is not None:
                pending.verdict = DONE
            slots.release()
            failed = isinstance(exc, FAILURES)
            if observers:
                outcome = "cancelled" if isinstance(exc, asyncio.CancelledError) else "error"
                report_call(backend, where, loop.time() - started, outcome)
            if not failed:
                raise  # a bug, bad input or a cancellation: not an outage
            if not isinstance(exc, LockTimeoutError):  # contention, not a dead server
                circuit_event(breaker.record_failure(epoch), backend, where)
            return await answer_by_policy(
                backend, key, strategy, custom, rate, cost, action, exc, breaker, name,
                self.fallback_of,
            )  # fmt: skip
        if pending is not None:
            pending.verdict = DONE
        slots.release()
        breaker.answers += 1  # evidence for every request waiting on this server, at once
        if breaker.failures or breaker.state is not CLOSED:
            circuit_event(breaker.record_success(epoch), backend, where)
        if observers:
            report_call(backend, where, loop.time() - started, "ok")
        if cache_key and not decision.allowed:
            cache = self.cache
            if cache is not None:
                cache.put(cache_key, cost, decision)
        return decision

    def _left(
        self, task: asyncio.Task[Decision] | None, slots: InFlight, breaker: CircuitBreaker
    ) -> None:
        """A call left at its deadline: it keeps its slot until it has unwound."""
        if task is None:  # it never started
            slots.release()
            return
        self.abandoned.add(task)
        task.add_done_callback(functools.partial(_unwound, self.abandoned, slots, breaker))

    async def _judged(
        self,
        verdict: str,
        backend: Backend,
        key: str,
        strategy: Strategy | CustomStrategy,
        custom: bool,
        rate: Rate,
        cost: int,
        action: OnError,
        breaker: CircuitBreaker,
        name: str,
    ) -> Decision:
        """The answer to a request the sweep judged: BEHIND this process's backlog gets
        the overload answer; SILENT, the policy's (the server is not answering)."""
        if verdict is BEHIND:
            return overload(backend, key, rate, name, full=False)
        error = late_error(backend, self.policy.timeout)
        return await answer_by_policy(
            backend,
            key,
            strategy,
            custom,
            rate,
            cost,
            action,
            error,
            breaker,
            name,
            self.fallback_of,
        )


def _unwound(
    abandoned: set[asyncio.Task[Decision]],
    slots: InFlight,
    breaker: CircuitBreaker,
    task: asyncio.Task[Decision],
) -> None:
    abandoned.discard(task)
    slots.release()
    # Retrieved here, so an abandoned call's error is never "never retrieved".
    if not task.cancelled() and task.exception() is None:
        breaker.heard()  # the server did answer, late
