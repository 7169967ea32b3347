"""GCRA: the generic cell rate algorithm, one theoretical arrival time per key."""

from __future__ import annotations

from dataclasses import dataclass

from traffik.decisions import NEVER, Decision
from traffik.rates import Rate
from traffik.strategies._adjust import gcra_adjust, gcra_snapshot, prepare_delta
from traffik.strategies._arith import ceil_div
from traffik.strategies._base import (
    State,
    Strategy,
    Transition,
    _check_positive,
    fast_new,
    special_step,
)

__all__ = ["GCRAStrategy"]


@dataclass(frozen=True)
class GCRAStrategy(Strategy):
    """GCRA with a burst tolerance of ``burst`` units (default: the limit).

    State: the theoretical arrival time (TAT) as ``(tat_ms, remainder)`` where the
    exact TAT is ``tat_ms + remainder / limit`` ms; each unit advances it by
    ``window / limit`` ms. Admitted iff the new TAT is at most ``burst`` emission
    intervals ahead of now. Equivalent to a token bucket of ``burst`` tokens.
    """

    name = "gcra"
    burst: int | None = None

    def __post_init__(self) -> None:
        _check_positive("burst", self.burst)

    def capacity(self, rate: Rate) -> int:
        return self.burst if self.burst is not None else rate.limit

    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        window = rate._expire  # the field behind the property: one lookup less per call
        if cost.__class__ is not int or cost < 1 or not window:
            special = special_step(rate, cost)
            if special is not None:
                return special
            cost = int(cost)
        limit = rate.limit
        burst = self.burst
        if burst is None:
            burst = limit  # Rate already keeps limit x window exact
        else:
            self.check_exact(rate, burst)
        tolerance = burst * window
        # ahead: how far the TAT is past now, in units of 1/limit ms (0 if in the past).
        ahead = 0
        if state is not None and len(state) == 2:
            tat_ms, rem = state
            # Bounded by the tolerance (plus any clock skew) when positive, so exact.
            # Not ``tat_ms >= now_ms``: a remainder stored under a smaller limit (a
            # redeploy) can hold whole milliseconds.
            ahead = (tat_ms - now_ms) * limit + rem
            if ahead < 0:
                ahead = 0
        need = cost * window
        if ahead + need <= tolerance:
            ahead += need
            tat = (now_ms + ahead // limit, ahead % limit)
            reset = ceil_div(ahead, limit)
            remaining = (tolerance - ahead) // window
            decision = fast_new(Decision, (True, burst, remaining, reset, 0, window, "default"))
            return fast_new(Transition, (tat, reset, decision, True))
        retry = NEVER if cost > burst else ceil_div(ahead + need - tolerance, limit)
        reset = ceil_div(ahead, limit)
        remaining = max(0, (tolerance - ahead) // window)
        decision = fast_new(Decision, (False, burst, remaining, reset, retry, window, "default"))
        return fast_new(Transition, (state, reset, decision, False))

    def adjust(
        self, state: State | None, now_ms: int, rate: Rate, delta: int, age_ms: int = 0
    ) -> Transition:
        """Refund by moving the TAT back (never before now), or charge more by moving it on."""
        bounded = prepare_delta(self, rate, delta, age_ms)
        return gcra_adjust(state, now_ms, rate, bounded, self.capacity(rate))

    def snapshot(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        return gcra_snapshot(state, now_ms, rate, self.capacity(rate))
