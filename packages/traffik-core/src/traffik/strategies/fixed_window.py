"""Fixed window: count units in windows aligned to the clock."""

from __future__ import annotations

from dataclasses import dataclass

from traffik.decisions import NEVER, Decision
from traffik.rates import Rate
from traffik.strategies._adjust import fw_adjust, fw_snapshot, prepare_delta
from traffik.strategies._base import State, Strategy, Transition, fast_new, special_step

__all__ = ["FixedWindowStrategy"]


@dataclass(frozen=True)
class FixedWindowStrategy(Strategy):
    """Up to ``limit`` units per window; windows start at multiples of the window length.

    State: ``(window_start_ms, used)``. Rejected requests are not counted, so a
    client that keeps retrying is admitted as soon as the next window opens. A
    window start later than the current one (a clock behind the writer's) is
    honoured rather than reset, so skewed hosts cannot double the quota.
    Fast and O(1); allows up to twice the limit across a window boundary.
    """

    name = "fw"

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        # InMemoryBackend.decide inlines this transition for this exact class: change
        # both together (tests/test_inmemory_fastpath.py compares them).
        window = rate._expire  # the field behind the property: one lookup less per call
        if cost.__class__ is not int or cost < 1 or not window:
            special = special_step(rate, cost)
            if special is not None:
                return special
            cost = int(cost)
        limit = rate.limit
        start = now_ms - now_ms % window
        used = 0
        if state is not None and len(state) == 2 and state[0] >= start:
            start, used = state
        reset = start + window - now_ms
        if used + cost <= limit:
            used += cost
            decision = fast_new(Decision, (True, limit, limit - used, reset, 0, window, "default"))
            return fast_new(Transition, ((start, used), reset, decision, True))
        retry = NEVER if cost > limit else reset
        remaining = max(0, limit - used)
        decision = fast_new(
            Decision, (False, limit, remaining, reset if used else 0, retry, window, "default")
        )
        return fast_new(Transition, (state, reset, decision, False))

    def adjust(
        self, state: State | None, now_ms: int, rate: Rate, delta: int, age_ms: int = 0
    ) -> Transition:
        """Refund within the window charged (``age_ms`` ago), or charge more in this one."""
        return fw_adjust(state, now_ms, rate, prepare_delta(self, rate, delta, age_ms), age_ms)

    def snapshot(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        return fw_snapshot(state, now_ms, rate)
