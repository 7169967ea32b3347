"""Deadlines: one sweep per failure domain, and the driver that leaves a call at its deadline.

A guarded request costs no task, timer or future of its own. It registers a
:class:`Pending` with its failure domain's :class:`Sweep` and runs the backend
call in its own task through :func:`drive`. The sweep is one timer per domain
(re-armed while requests are pending) that judges every pending request whose
deadline passed, the way the failures page states it:

- time is judged in windows of ``timeout`` of the server's time; whatever the
  sweep's own wake-ups come late by (a busy event loop, a descheduled process:
  nobody could have read an answer either) moves the deadlines by as much, so
  the server is never charged for time this process lost;
- at the end of a window, if the request's failure domain answered nothing at
  all since the window began, the request gets a few loop turns (an answer
  already read from the socket takes some to reach its caller), then is judged
  SILENT (the server's failure, answered by policy);
- if the domain did answer other calls, the request is BEHIND this process's own
  backlog: it gets another window, up to ``max_wait`` in all, then the overload
  answer.

A verdict reaches the request at once: a request waiting for an in-flight slot
gets its waiter resolved; a request inside a call has its task cancelled, and
:func:`drive`, which stands between the task and the backend's coroutine,
catches that cancellation before the backend's code sees it. It hands the
coroutine to a task of its own to unwind (cancelled, as a task would be) and
answers at once, so no library's own ``wait_for`` swallowing a cancellation can
keep the request past its deadline.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import types
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Coroutine, Generator

    from traffik._guard.circuit import CircuitBreaker

__all__ = ["BEHIND", "SILENT", "Abandoned", "Pending", "Sweep", "drive", "unwind"]

T = typing.TypeVar("T")

#: Loop turns a silent-looking server gets before it is judged (microseconds when idle).
GRACE_TURNS = 6
#: A wake-up later than this (seconds) means the loop lost time.
PUNCTUAL = 0.005
#: Verdicts of the sweep (a pending request's ``verdict`` stays None until it has one,
#: or until its caller marks it ``DONE``).
SILENT = "silent"
BEHIND = "behind"
DONE = "done"


class Abandoned(Exception):
    """Raised by :func:`drive` when the sweep judged the call (its ``verdict`` says how);
    the coroutine unwinds in ``task``, which still holds the call's slot (None: the
    call never started). ``cancelled``: the caller's task was also cancelled by
    someone else meanwhile (the guard re-raises that cancellation)."""

    def __init__(
        self, verdict: str, task: asyncio.Task[typing.Any] | None, cancelled: bool
    ) -> None:
        super().__init__(verdict)
        self.verdict = verdict
        self.task = task
        self.cancelled = cancelled


class Pending:
    """One guarded request, from its arrival at the guard to its answer."""

    __slots__ = ("answers", "deadline", "give_up", "judging", "start", "task", "verdict", "waiter")

    def __init__(
        self, task: asyncio.Task[typing.Any], now: float, sweep: Sweep, answers: int
    ) -> None:
        self.task = task
        self.start = now
        self.deadline = now + sweep.timeout
        self.give_up = now + sweep.max_wait
        self.answers = answers
        self.verdict: str | None = None
        #: The in-flight slot it waits for (None when it holds one, or never waited).
        self.waiter: asyncio.Future[bool] | None = None
        #: Being given its grace turns (the regular sweep leaves it alone meanwhile).
        self.judging = False


class Sweep:
    """The deadlines of one failure domain's requests, kept by one timer."""

    __slots__ = ("_at", "_breaker", "_handle", "_loop", "_pending", "max_wait", "step", "timeout")

    def __init__(self, breaker: CircuitBreaker, timeout: float, max_wait: float) -> None:
        self._breaker = breaker
        self.timeout = timeout
        #: How often the sweep wakes while requests are pending (to notice lost time).
        self.step = timeout / 4
        self.max_wait = max(max_wait, timeout)
        self._pending: collections.deque[Pending] = collections.deque()
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Requests pending (finished ones not yet swept out included)."""
        return len(self._pending)

    def enter(self, loop: asyncio.AbstractEventLoop) -> Pending:
        """Register the current task's request; its caller sets ``verdict = DONE`` when
        it has its answer (finished requests are dropped by the next sweep)."""
        task = asyncio.current_task(loop)
        if task is None:  # pragma: no cover - asyncio always runs coroutines in tasks
            raise RuntimeError("the failure guard must run inside an asyncio task.")
        now = loop.time()
        pending = Pending(task, now, self, self._breaker.answers)
        if self._loop is not loop:
            # First use, or a new event loop (tests): what was pending belongs to the old one.
            self._loop = loop
            self._pending = collections.deque()
            self._handle = None
        self._pending.append(pending)
        if self._handle is None:
            self._arm(loop, min(pending.deadline, now + self.step))
        return pending

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        self._at = at
        self._handle = loop.call_at(at, self._sweep)

    def _rearm(self, at: float) -> None:
        """Make sure the sweep runs at ``at`` at the latest."""
        loop = self._loop
        if loop is None:  # pragma: no cover - only called once entered
            return
        if self._handle is not None:
            if self._at <= at:
                return
            self._handle.cancel()
        self._arm(loop, at)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        self._handle = None
        now = loop.time()
        late = now - self._at
        lost = late if late > PUNCTUAL else 0.0
        answers = self._breaker.answers
        timeout = self.timeout
        live: collections.deque[Pending] = collections.deque()
        suspects: list[Pending] = []
        wake = now + self.step
        for pending in self._pending:
            if pending.verdict is not None:
                continue
            live.append(pending)
            if pending.judging:
                continue
            if lost:
                # Time the loop lost, not the server's (only since the request came).
                pending.deadline += min(lost, now - pending.start)
            if pending.deadline <= now:
                if pending.answers == answers:
                    pending.judging = True
                    suspects.append(pending)
                    continue
                if now >= pending.give_up:
                    live.pop()
                    self._judge(pending, BEHIND)
                    continue
                pending.answers = answers
                pending.deadline = min(now + timeout, pending.give_up)
            if pending.deadline < wake:
                wake = pending.deadline
        self._pending = live
        if suspects:
            loop.call_soon(self._grace, suspects, 1, now)
        if live:
            self._arm(loop, wake)

    def _grace(self, suspects: list[Pending], turn: int, started: float) -> None:
        """A few loop turns for answers already read to reach their callers."""
        loop = self._loop
        assert loop is not None
        answers = self._breaker.answers
        silent = [p for p in suspects if p.verdict is None]
        if not silent:
            return
        # Every suspect had heard the same count when it became one.
        if silent[0].answers == answers:
            if turn < GRACE_TURNS:
                loop.call_soon(self._grace, silent, turn + 1, started)
                return
            lost = loop.time() - started
            for pending in silent:
                pending.judging = False
                if lost > PUNCTUAL:  # the loop was busy during those turns
                    pending.deadline += lost
                    self._rearm(pending.deadline)
                else:
                    self._judge(pending, SILENT)
            return
        # The server answered meanwhile: not silent; behind, or another window.
        for pending in silent:
            pending.judging = False
            if started >= pending.give_up:
                self._judge(pending, BEHIND)
            else:
                pending.answers = answers
                pending.deadline = min(started + self.timeout, pending.give_up)
                self._rearm(pending.deadline)

    def _judge(self, pending: Pending, verdict: str) -> None:
        """Give ``pending`` its verdict, and wake it wherever it waits."""
        pending.verdict = verdict
        waiter = pending.waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(False)
        else:
            pending.task.cancel()  # caught by drive(), before the backend's code sees it


async def unwind(coro: Coroutine[typing.Any, typing.Any, T], error: BaseException) -> T:
    """Finish an abandoned call: ``error`` (a cancellation) thrown in first."""
    return await drive(coro, None, error)


@types.coroutine
def drive(
    coro: Coroutine[typing.Any, typing.Any, T],
    pending: Pending | None,
    error: BaseException | None = None,
) -> Generator[typing.Any, typing.Any, T]:
    """``await coro`` in the caller's task, except that a cancellation that carries the
    sweep's verdict (``pending.verdict`` set) stops here: ``coro`` goes on unwinding in
    a task of its own and :class:`Abandoned` is raised at once.

    With a ``pending`` request, ``coro`` starts one loop turn later (a bare yield, as
    ``asyncio.sleep(0)``): the requests that arrived in the same turn all reach the
    guard first, so a burst does not charge the first call's own timeouts (a client
    library's) with the time this process spends on the others.
    """
    value: typing.Any = None
    if pending is not None and error is None:
        try:
            yield None
        except BaseException as exc:
            coro.close()  # never started
            if pending.verdict is not None and isinstance(exc, asyncio.CancelledError):
                raise Abandoned(pending.verdict, None, _uncancel(pending.task)) from None
            raise
    while True:
        try:
            yielded = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            return typing.cast("T", stop.value)
        try:
            value = yield yielded
            error = None
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown into the caller's task
            if (
                pending is not None
                and pending.verdict is not None
                and isinstance(exc, asyncio.CancelledError)
            ):
                left = asyncio.get_running_loop().create_task(unwind(coro, exc))
                raise Abandoned(pending.verdict, left, _uncancel(pending.task)) from None
            value = None
            error = exc


def _uncancel(task: asyncio.Task[typing.Any]) -> bool:
    """Take back the sweep's cancellation of ``task``; True if someone else asked for
    one meanwhile (counted from Python 3.11; it is then honoured)."""
    if sys.version_info >= (3, 11):
        return task.uncancel() > 0
    return False  # pragma: no cover - Python 3.10 counts no cancellations
