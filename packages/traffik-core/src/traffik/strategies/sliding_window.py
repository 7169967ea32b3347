"""Sliding windows: an exact log of admitted units, or a weighted pair of counters."""

from __future__ import annotations

from dataclasses import dataclass

from traffik.decisions import NEVER, Decision
from traffik.rates import Rate
from traffik.strategies._adjust import (
    prepare_delta,
    swc_adjust,
    swc_snapshot,
    swl_adjust,
    swl_snapshot,
)
from traffik.strategies._base import State, Strategy, Transition, fast_new, special_step

__all__ = ["SlidingWindowCounterStrategy", "SlidingWindowLogStrategy"]


@dataclass(frozen=True)
class SlidingWindowLogStrategy(Strategy):
    """At most ``limit`` units in any window of the rate's length (exact).

    State: ``(t1, c1, t2, c2, ...)``, the admission times (ascending, one entry per
    millisecond) and costs still inside the window. An admission at ``t`` counts
    until ``t + W``. Memory and time are O(limit) per key in the worst case.
    Rejected requests are not recorded.
    """

    name = "swl"

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        window = rate._expire  # the field behind the property: one lookup less per call
        if cost.__class__ is not int or cost < 1 or not window:
            special = special_step(rate, cost)
            if special is not None:
                return special
            cost = int(cost)
        limit = rate.limit
        kept: State = ()
        if state is not None and not len(state) & 1:
            horizon = now_ms - window
            i, n = 0, len(state)
            while i < n and state[i] <= horizon:
                i += 2
            kept = state[i:] if i else state
        used = sum(kept[1::2])
        if used + cost <= limit:
            if kept and kept[-2] >= now_ms:
                # Same millisecond (or a clock behind the last writer's): merge, keep order.
                entries = (*kept[:-1], kept[-1] + cost)
            else:
                entries = (*kept, now_ms, cost)
            used += cost
            reset = entries[-2] + window - now_ms
            decision = fast_new(Decision, (True, limit, limit - used, reset, 0, window, "default"))
            return fast_new(Transition, (entries, reset, decision, True))
        reset = kept[-2] + window - now_ms if kept else 0
        if cost > limit:
            retry = NEVER
        else:
            # Drop the oldest entries until the cost fits; the last one dropped says when.
            excess = used + cost - limit
            retry = 0
            for i in range(0, len(kept), 2):
                excess -= kept[i + 1]
                if excess <= 0:
                    retry = kept[i] + window - now_ms
                    break
        decision = fast_new(
            Decision, (False, limit, max(0, limit - used), reset, retry, window, "default")
        )
        return fast_new(Transition, (state, reset, decision, False))

    def adjust(
        self, state: State | None, now_ms: int, rate: Rate, delta: int, age_ms: int = 0
    ) -> Transition:
        """Refund by removing the newest entries (while the charge is in the window)."""
        return swl_adjust(state, now_ms, rate, prepare_delta(self, rate, delta, age_ms), age_ms)

    def snapshot(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        return swl_snapshot(state, now_ms, rate)


@dataclass(frozen=True)
class SlidingWindowCounterStrategy(Strategy):
    """Approximates a sliding window from the current and previous fixed windows.

    State: ``(window_start_ms, previous_used, current_used)``. The previous window
    counts in proportion to how much of it the sliding window still covers:
    admitted iff ``previous x (W - elapsed) / W + current + cost <= limit``.
    O(1) memory; rejected requests are not counted. Never more than ``limit``
    units in an aligned window, and fewer than ``2 x limit`` in any window of
    length ``W``.
    """

    name = "swc"

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        window = rate._expire  # the field behind the property: one lookup less per call
        if cost.__class__ is not int or cost < 1 or not window:
            special = special_step(rate, cost)
            if special is not None:
                return special
            cost = int(cost)
        limit = rate.limit
        start = now_ms - now_ms % window
        prev = cur = 0
        if state is not None and len(state) == 3:
            s, p, c = state
            if s >= start:
                # A start ahead of ours (a clock behind the writer's) is honoured.
                start, prev, cur = s, p, c
            elif s == start - window:
                prev = c
        # left: ms until this window ends (more than W if its start is ahead of now).
        left = start + window - now_ms
        weight = left if left < window else window
        budget = limit * window - prev * weight
        if (cur + cost) * window <= budget:
            cur += cost
            reset = left + window
            remaining = (budget - cur * window) // window
            decision = fast_new(Decision, (True, limit, remaining, reset, 0, window, "default"))
            return fast_new(Transition, ((start, prev, cur), reset, decision, True))
        remaining = max(0, (budget - cur * window) // window)
        if cur:
            reset = left + window
        elif prev:
            reset = left
        else:
            reset = 0
        if cost > limit:
            retry = NEVER
        elif cur + cost <= limit:
            # Wait in this window until the previous window's share has shrunk enough.
            retry = left - ((limit - cur - cost) * window) // prev
        else:
            # Wait into the next window, where this window's count becomes the previous one.
            retry = left + window - ((limit - cost) * window) // cur
        decision = fast_new(Decision, (False, limit, remaining, reset, retry, window, "default"))
        return fast_new(Transition, (state, reset, decision, False))

    def adjust(
        self, state: State | None, now_ms: int, rate: Rate, delta: int, age_ms: int = 0
    ) -> Transition:
        """Refund within the window charged (``age_ms`` ago), or charge more in this one."""
        return swc_adjust(state, now_ms, rate, prepare_delta(self, rate, delta, age_ms), age_ms)

    def snapshot(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        return swc_snapshot(state, now_ms, rate)
