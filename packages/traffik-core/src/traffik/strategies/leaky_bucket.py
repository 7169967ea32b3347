"""Leaky buckets: a level that drains at the rate; requests fit while the bucket has room."""

from __future__ import annotations

from dataclasses import dataclass

from traffik.rates import Rate
from traffik.strategies._adjust import MeterAdjustments
from traffik.strategies._base import State, Strategy, Transition, _check_positive
from traffik.strategies._meter import meter_step

__all__ = ["LeakyBucketStrategy", "LeakyBucketWithQueueStrategy"]


@dataclass(frozen=True)
class LeakyBucketStrategy(MeterAdjustments, Strategy):
    """A bucket of ``limit`` units draining at ``limit`` per window (a leaky bucket as a meter).

    Admitted traffic never exceeds the rate by more than the bucket's size: a fresh
    key admits ``limit`` units back to back, then one unit per ``window / limit``.
    """

    name = "lb"

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        return meter_step(state, now_ms, rate, cost, rate.limit)


@dataclass(frozen=True)
class LeakyBucketWithQueueStrategy(MeterAdjustments, Strategy):
    """A leaky bucket whose queue holds ``queue_size`` units (default: the limit).

    Requests join the queue while it has room and drain at the rate; a request that
    would overflow the queue is rejected. State is O(1): the queue's level, not its
    entries (the entries' order never changes a decision).
    """

    name = "lbq"
    queue_size: int | None = None

    def __post_init__(self) -> None:
        _check_positive("queue_size", self.queue_size)

    def capacity(self, rate: Rate) -> int:
        return self.queue_size if self.queue_size is not None else rate.limit

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        capacity = self.capacity(rate)
        if capacity != rate.limit:  # Rate already keeps limit x window exact
            self.check_exact(rate, capacity)
        return meter_step(state, now_ms, rate, cost, capacity)
