"""The failure guard's healthy path, and what it offers metrics.

A healthy guarded call runs in the request's own task: no task, timer or future
per call (the deadlines are kept by one sweep per failure domain). Bounds under
failure: tests/test_guard.py and tests-integration/test_failures_bounds.py.
"""

from __future__ import annotations

import asyncio
import typing

import pytest

from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.exceptions import BackendError
from traffik.failures import (
    CALL_OUTCOMES,
    BackendCall,
    FailurePolicy,
    decide_with_policy,
    guard_stats,
    observe_backend_calls,
)
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy
from traffik.strategies._base import Strategy

FW = FixedWindowStrategy()
RATE = Rate.parse("1000/d")
pytestmark = pytest.mark.asyncio


class Remote(InMemoryBackend):  # type: ignore[type-arg]
    """An in-memory backend that waits a loop turn per call, like a server; ``stuck``
    calls wait until released, ``broken`` ones raise."""

    capabilities = BackendCapabilities(shared_state=True)

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(namespace="remote", **kwargs)
        self.stuck = False
        self.broken = False
        self.release = asyncio.Event()

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        await asyncio.sleep(0)
        if self.stuck:
            await self.release.wait()
        if self.broken:
            raise BackendError("the server is broken (on purpose)")
        return await super().decide(key, strategy, rate, cost, now_ms=now_ms)


class Counts:
    """Tasks, timers and futures the event loop makes while installed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tasks = self.timers = self.futures = 0
        self.loop = loop
        call_at, create_future = loop.call_at, loop.create_future

        def counting_call_at(*args: typing.Any, **kwargs: typing.Any) -> asyncio.TimerHandle:
            self.timers += 1
            return call_at(*args, **kwargs)

        def counting_create_future() -> asyncio.Future[typing.Any]:
            self.futures += 1
            return create_future()

        def factory(
            loop: asyncio.AbstractEventLoop, coro: typing.Any, **kwargs: typing.Any
        ) -> asyncio.Task[typing.Any]:
            self.tasks += 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        monkeypatch.setattr(loop, "call_at", counting_call_at)
        monkeypatch.setattr(loop, "create_future", counting_create_future)
        loop.set_task_factory(factory)  # type: ignore[arg-type]

    def undo(self) -> None:
        self.loop.set_task_factory(None)


async def test_a_healthy_call_costs_no_task_timer_or_future_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = Remote(failure_policy=FailurePolicy(timeout=5.0))
    async with backend():
        await decide_with_policy(backend, "warm", FW, RATE, 1)
        counts = Counts(asyncio.get_running_loop(), monkeypatch)
        try:
            for i in range(300):
                assert (await decide_with_policy(backend, f"k{i}", FW, RATE, 1)).allowed
        finally:
            counts.undo()
    assert counts.tasks == 0
    assert counts.futures == 0
    # The domain's sweep: armed once, re-armed every timeout / 4 while calls are out.
    assert counts.timers <= 2


async def test_observers_see_every_call_with_its_duration_and_outcome() -> None:
    backend = Remote(failure_policy=FailurePolicy(on_error="allow", timeout=0.05))
    seen: list[BackendCall] = []
    stop = observe_backend_calls(seen.append)
    try:
        async with backend():
            await decide_with_policy(backend, "k", FW, RATE, 1)
            backend.broken = True
            await decide_with_policy(backend, "k", FW, RATE, 1)
            backend.broken = False
            backend.stuck = True
            await decide_with_policy(backend, "k", FW, RATE, 1)
            backend.release.set()
    finally:
        stop()
    assert [call.outcome for call in seen] == ["ok", "error", "timeout"]
    assert all(call.backend is backend and call.domain is None for call in seen)
    assert all(outcome in CALL_OUTCOMES for outcome in (call.outcome for call in seen))
    assert 0.04 < seen[2].seconds < 0.5  # about the timeout
    assert seen[0].seconds < seen[2].seconds
    stop()  # twice is harmless
    async with backend():
        await decide_with_policy(backend, "k", FW, RATE, 1)
    assert len(seen) == 3


async def test_a_failing_observer_changes_no_decision(caplog: pytest.LogCaptureFixture) -> None:
    def broken(call: BackendCall) -> None:
        raise RuntimeError("observer bug")

    backend = Remote(failure_policy=FailurePolicy())
    stop = observe_backend_calls(broken)
    try:
        async with backend():
            assert (await decide_with_policy(backend, "k", FW, RATE, 1)).allowed
    finally:
        stop()
    assert "observer failed" in caplog.text


async def test_guard_stats_reads_each_failure_domain() -> None:
    backend = Remote(failure_policy=FailurePolicy())
    assert guard_stats(backend) == []
    async with backend():
        for _ in range(3):
            await decide_with_policy(backend, "k", FW, RATE, 1)
        (stats,) = guard_stats(backend)
        assert stats.domain is None
        assert (stats.in_flight, stats.waiting, stats.circuit, stats.answers) == (0, 0, "closed", 3)
        backend.stuck = True
        out = asyncio.ensure_future(decide_with_policy(backend, "k", FW, RATE, 1))
        await asyncio.sleep(0)
        assert guard_stats(backend)[0].in_flight == 1
        backend.release.set()
        await out
    assert guard_stats(InMemoryBackend()) == []  # no policy, no guard


async def test_a_request_cancelled_during_its_call_gives_the_slot_back() -> None:
    backend = Remote(failure_policy=FailurePolicy(timeout=5.0))
    async with backend():
        backend.stuck = True
        call = asyncio.ensure_future(decide_with_policy(backend, "k", FW, RATE, 1))
        for _ in range(3):
            await asyncio.sleep(0)
        assert guard_stats(backend)[0].in_flight == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert guard_stats(backend)[0].in_flight == 0
        backend.stuck = False
        assert (await decide_with_policy(backend, "k", FW, RATE, 1)).allowed
