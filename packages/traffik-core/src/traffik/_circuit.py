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
    """

    __slots__ = (
        "_clock",
        "_delay",
        "_failures",
        "_until",
        "failure_threshold",
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
        self._failures = 0
        self._delay = recovery_time
        self._until = 0.0

    def allow_call(self) -> tuple[bool, str | None]:
        """May the backend be called now? Also returns the new state if this changed it."""
        if self.state == CLOSED:
            return True, None
        now = self._clock()
        if now < self._until:
            return False, None
        # Let one probe through; others keep failing fast until it reports.
        self.state = HALF_OPEN
        self._until = now + self._delay
        return True, HALF_OPEN

    def record_success(self) -> str | None:
        """A call succeeded; returns CLOSED if that closed the circuit."""
        self._failures = 0
        if self.state != CLOSED:
            self.state = CLOSED
            self._delay = self.recovery_time
            return CLOSED
        return None

    def record_failure(self) -> str | None:
        """A call failed; returns OPEN if that opened (or reopened) the circuit."""
        self._failures += 1
        if self.state == HALF_OPEN:
            self._delay = min(self._delay * 2, self.max_recovery_time)
        elif (
            self.state == CLOSED and self._failures < self.failure_threshold
        ) or self.state == OPEN:
            return None
        self.state = OPEN
        self._until = self._clock() + self._delay
        return OPEN

    def retry_after(self) -> float:
        """Seconds until the next probe (0 when closed)."""
        if self.state == CLOSED:
            return 0.0
        return max(0.0, self._until - self._clock())
