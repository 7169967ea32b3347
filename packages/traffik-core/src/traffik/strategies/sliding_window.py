"""Sliding windows: an exact log of admitted units, or a weighted pair of counters."""

from __future__ import annotations

from dataclasses import dataclass

from traffik.decisions import NEVER, Decision
from traffik.rates import Rate
from traffik.strategies._base import State, Strategy, Transition

__all__ = ["SlidingWindowCounterStrategy", "SlidingWindowLogStrategy"]


@dataclass(frozen=True)
class SlidingWindowLogStrategy(Strategy):
    """At most ``limit`` units in any window of the rate's length (exact).

    State: ``(t1, c1, t2, c2, ...)``, the admission times (ascending, one entry per
    millisecond) and costs still inside the window. Memory is O(limit) per key.
    Rejected requests are not recorded.
    """

    name = "swl"

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        limit, window = rate.limit, rate.expire
        horizon = now_ms - window
        entries: list[int] = []
        used = 0
        if state is not None and len(state) % 2 == 0:
            for i in range(0, len(state), 2):
                if state[i] > horizon:
                    entries += (state[i], state[i + 1])
                    used += state[i + 1]
        if used + cost <= limit:
            if entries and entries[-2] == now_ms:
                entries[-1] += cost
            else:
                entries += (now_ms, cost)
            used += cost
            reset = entries[-2] + window - now_ms
            decision = Decision(True, limit, limit - used, reset, 0, window)
            return Transition(tuple(entries), reset, decision)
        reset = entries[-2] + window - now_ms if entries else 0
        if cost > limit:
            retry = NEVER
        else:
            # Drop the oldest entries until the cost fits; the last one dropped says when.
            excess = used + cost - limit
            retry = 0
            for i in range(0, len(entries), 2):
                excess -= entries[i + 1]
                if excess <= 0:
                    retry = entries[i] + window - now_ms
                    break
        decision = Decision(False, limit, limit - used, reset, retry, window)
        return Transition(state, reset, decision, write=False)


@dataclass(frozen=True)
class SlidingWindowCounterStrategy(Strategy):
    """Approximates a sliding window from the current and previous fixed windows.

    State: ``(window_start_ms, previous_used, current_used)``. The previous window
    counts in proportion to how much of it the sliding window still covers:
    admitted iff ``previous x (W - elapsed) / W + current + cost <= limit``.
    O(1) memory; rejected requests are not counted.
    """

    name = "swc"

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        limit, window = rate.limit, rate.expire
        start = now_ms - now_ms % window
        prev = cur = 0
        if state is not None and len(state) == 3:
            s, p, c = state
            if s >= start:
                start, prev, cur = s, p, c
            elif s == start - window:
                prev = c
        elapsed = max(0, now_ms - start)
        weight = window - elapsed if elapsed < window else 0
        budget = limit * window - prev * weight
        if (cur + cost) * window <= budget:
            cur += cost
            remaining = (budget - cur * window) // window
            reset = 2 * window - elapsed
            decision = Decision(True, limit, remaining, reset, 0, window)
            return Transition((start, prev, cur), reset, decision)
        remaining = max(0, (budget - cur * window) // window)
        if cur:
            reset = 2 * window - elapsed
        elif prev:
            reset = weight
        else:
            reset = 0
        if cost > limit:
            retry = NEVER
        elif cur + cost <= limit:
            # Wait in this window until the previous window's share has shrunk enough.
            retry = weight - ((limit - cur - cost) * window) // prev
        else:
            # Wait into the next window, where this window's count becomes the previous one.
            retry = (window - elapsed) + window - ((limit - cost) * window) // cur
        decision = Decision(False, limit, remaining, reset, retry, window)
        return Transition(state, reset, decision, write=False)
