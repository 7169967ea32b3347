"""Token buckets: bursts up to a capacity, refilled continuously at the rate."""

from __future__ import annotations

from dataclasses import dataclass

from traffik.rates import Rate
from traffik.strategies._adjust import MeterAdjustments
from traffik.strategies._base import State, Strategy, Transition, _check_positive
from traffik.strategies._meter import meter_step

__all__ = ["TokenBucketStrategy", "TokenBucketWithDebtStrategy"]


@dataclass(frozen=True)
class TokenBucketStrategy(MeterAdjustments, Strategy):
    """A bucket of ``burst_size`` tokens (default: the limit) refilled at ``limit`` per window.

    A fresh key admits ``burst_size`` units at once; afterwards the rate applies.
    State: ``(level, last_ms)`` with level = tokens spent, scaled by the window.
    """

    name = "tb"
    burst_size: int | None = None

    def __post_init__(self) -> None:
        _check_positive("burst_size", self.burst_size)

    def capacity(self, rate: Rate) -> int:
        return self.burst_size if self.burst_size is not None else rate.limit

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        capacity = self.capacity(rate)
        if capacity != rate.limit:  # Rate already keeps limit x window exact
            self.check_exact(rate, capacity)
        return meter_step(state, now_ms, rate, cost, capacity)


@dataclass(frozen=True)
class TokenBucketWithDebtStrategy(MeterAdjustments, Strategy):
    """A token bucket that may go ``max_debt`` tokens below empty, paid back by later refills.

    A fresh key admits ``burst_size + max_debt`` units at once; a client in debt
    waits until the refill has paid the debt and covers its cost. ``max_debt`` comes
    first, as in the 1.0.0b2 README's API reference (``TokenBucketWithDebtStrategy(5)``
    allows a debt of 5); the 1.0.0b2 code had ``burst_size`` first.
    """

    name = "tbd"
    max_debt: int | None = None
    burst_size: int | None = None

    def __post_init__(self) -> None:
        _check_positive("burst_size", self.burst_size)
        _check_positive("max_debt", self.max_debt, allow_zero=True)

    def capacity(self, rate: Rate) -> int:
        burst = self.burst_size if self.burst_size is not None else rate.limit
        return burst + (self.max_debt or 0)

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        capacity = self.capacity(rate)
        if capacity != rate.limit:  # Rate already keeps limit x window exact
            self.check_exact(rate, capacity)
        return meter_step(state, now_ms, rate, cost, capacity)
