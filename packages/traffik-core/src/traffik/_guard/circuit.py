"""A circuit breaker: stop calling a backend that keeps failing, probe it now and then."""

from __future__ import annotations

import time as _time
import typing

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


def _monotonic() -> float:
    return _time.monotonic()


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; probes after ``recovery_time`` s.

    While open, :meth:`allow_call` is False and callers answer by policy without
    touching the backend. After the recovery time one probe call is let through
    (half-open); its success closes the circuit, its failure reopens it with the
    recovery time doubled, up to ``max_recovery_time``. A probe that never reports
    (its task was cancelled) is replaced by another after one recovery time, so the
    circuit cannot stick half-open. Thus a backend that comes back is used again
    within ``max_recovery_time`` plus one call.

    Every change of state starts a new :attr:`epoch`. A caller reads it before its
    call and reports with it: a report from an older epoch (a call started before
    the circuit opened, or a probe that was replaced) changes nothing, so a slow
    call that succeeds late cannot close a circuit that other calls opened, and a
    burst of late failures cannot reopen one. :attr:`answers` counts the calls the
    server answered (:meth:`heard`, whatever their epoch): the evidence that it is alive.
    """

    __slots__ = (
        "_clock",
        "_delay",
        "_until",
        "answers",
        "epoch",
        "failure_threshold",
        "failures",
        "max_recovery_time",
        "recovery_time",
        "state",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_time: float = 0.5,
        max_recovery_time: float = 5.0,
        *,
        clock: typing.Callable[[], float] = _monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}.")
        if recovery_time <= 0 or max_recovery_time < recovery_time:
            raise ValueError(
                "recovery_time must be positive and max_recovery_time at least recovery_time, "
                f"got {recovery_time} and {max_recovery_time}."
            )
        self.failure_threshold = failure_threshold
        self.recovery_time = recovery_time
        self.max_recovery_time = max_recovery_time
        self._clock = clock
        self.state = CLOSED
        self.failures = 0
        self._delay = recovery_time
        self._until = 0.0
        self.epoch = 0
        self.answers = 0

    def _enter(self, state: str) -> str:
        self.state = state
        self.epoch += 1
        return state

    def allow_call(self) -> tuple[bool, str | None]:
        """May the backend be called now? Also returns the new state if this changed it."""
        if self.state == CLOSED:
            return True, None
        now = self._clock()
        if now < self._until:
            return False, None
        # Let one probe through (a new epoch: its own); others keep failing fast
        # until it reports.
        self._until = now + self._delay
        return True, self._enter(HALF_OPEN)

    def record_success(self, epoch: int | None = None) -> str | None:
        """A call of ``epoch`` (default: the current one) succeeded; returns CLOSED if
        that closed the circuit."""
        if epoch is not None and epoch != self.epoch:
            return None
        self.failures = 0
        if self.state != CLOSED:
            self._delay = self.recovery_time
            return self._enter(CLOSED)
        return None

    def heard(self) -> None:
        """The server answered a call (counted as soon as the answer is in)."""
        self.answers += 1

    def record_failure(self, epoch: int | None = None) -> str | None:
        """A call of ``epoch`` (default: the current one) failed; returns OPEN if that
        opened (or reopened) the circuit."""
        if (epoch is not None and epoch != self.epoch) or self.state == OPEN:
            return None
        self.failures += 1
        if self.state == HALF_OPEN:
            self._delay = min(self._delay * 2, self.max_recovery_time)
        elif self.failures < self.failure_threshold:
            return None
        self._until = self._clock() + self._delay
        return self._enter(OPEN)

    def retry_after(self) -> float:
        """Seconds until the next probe (0 when closed)."""
        if self.state == CLOSED:
            return 0.0
        return max(0.0, self._until - self._clock())
