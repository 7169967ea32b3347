"""The continuous meter behind the bucket strategies.

A meter holds a ``level``: units in use, scaled by the window length so that
refills are exact integers (the rate drains ``limit`` scaled units per
millisecond). A request of ``cost`` units fits while ``level + cost x W`` stays
within ``capacity x W``. A token bucket of ``burst`` tokens, a leaky bucket of
``limit`` and a bucket with debt are all this meter with different capacities:
for the same capacity they admit exactly the same requests.
"""

from __future__ import annotations

from traffik.decisions import NEVER, Decision
from traffik.rates import Rate
from traffik.strategies._arith import ceil_div
from traffik.strategies._base import State, Transition, fast_new, special_step

__all__ = ["meter_step"]


def meter_step(
    state: State | None, now_ms: int, rate: Rate, cost: int, capacity: int
) -> Transition:
    """One step of a meter of ``capacity`` units refilled at ``rate``. State: ``(level, last_ms)``.

    A stored ``last_ms`` later than ``now_ms`` (this host's clock behind the
    writer's) is kept: the level is taken as of ``last_ms`` and waits count from
    there, so a skewed clock can never drain the same interval twice.
    """
    window = rate._expire  # the field behind the property: one lookup less per call
    if cost.__class__ is not int or cost < 1 or not window:
        special = special_step(rate, cost)
        if special is not None:
            return special
        cost = int(cost)
    limit = rate.limit
    top = capacity * window
    level = 0
    at = now_ms
    if state is not None and len(state) == 2:
        level, last = state
        elapsed = now_ms - last
        if elapsed > 0:
            # Compare before multiplying: elapsed x limit could exceed 2**53 in Lua.
            level = 0 if elapsed >= ceil_div(level, limit) else level - elapsed * limit
        elif elapsed < 0:
            at = last
    lag = at - now_ms
    need = cost * window
    if level + need <= top:
        level += need
        drain = lag + ceil_div(level, limit)
        remaining = (top - level) // window
        decision = fast_new(Decision, (True, capacity, remaining, drain, 0, window, "default"))
        return fast_new(Transition, ((level, at), drain, decision, True))
    retry = NEVER if cost > capacity else lag + ceil_div(level + need - top, limit)
    drain = lag + ceil_div(level, limit)
    # A level above the top: stored under a larger capacity or rate (a redeploy).
    remaining = (top - level) // window if level < top else 0
    decision = fast_new(Decision, (False, capacity, remaining, drain, retry, window, "default"))
    return fast_new(Transition, (state, drain, decision, False))
