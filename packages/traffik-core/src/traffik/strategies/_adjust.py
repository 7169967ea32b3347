"""The inverse of a decision: adjustments (give units back, or charge more) and snapshots.

Beside ``decide``, every built-in strategy has a pure ``adjust`` transition
``(state, now_ms, rate, delta, age_ms) -> Transition``:

- ``delta < 0`` gives back up to ``-delta`` units (a refund). It never leaves more
  than the full quota: a counter or a level never drops below zero, a GCRA
  theoretical arrival time never moves before now.
- ``delta > 0`` charges ``delta`` more units without refusing (a settlement that
  cost more than its estimate). The client may go into debt, so its next requests
  wait; the stored usage is bounded at twice the capacity (one full quota of debt),
  except in the fixed window, where a full window is the debt (it has no later
  window to carry more into).
- ``delta == 0`` changes nothing and reports the state.

``age_ms`` is how long ago the charge being refunded was made. The window
strategies give back only within the window that was charged: the fixed window
and the sliding window counter when the charge time (``now - age_ms``) falls in
the current window, the sliding log while the charge is still inside the window
(then it removes the newest entries). The buckets and GCRA have no windows and
ignore it. Extra charges always land now.

The decision of an adjustment's :class:`~traffik.strategies.Transition` is a
*snapshot*: the quota as it stands after the adjustment, charging nothing
(``allowed`` says whether a one-unit request would be admitted now, ``remaining``
counts the units left, ``retry_after_ms`` what a one-unit request would wait).

Native ports (Lua, CAS) mirror the adjustments; snapshots are computed in Python
from the state a port returns. Like ``decide``, everything is integer arithmetic.
"""

from __future__ import annotations

import typing

from traffik.decisions import Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_EXACT_PRODUCT, Rate
from traffik.strategies._arith import ceil_div
from traffik.strategies._base import (
    UNLIMITED_DECISION,
    State,
    Strategy,
    Transition,
    not_adjustable,
)

__all__ = [
    "DEBT_FACTOR",
    "MeterAdjustments",
    "bound_delta",
    "check_adjustable",
    "check_adjustable_strategy",
    "check_adjustment",
    "check_delta",
    "fw_adjust",
    "fw_snapshot",
    "gcra_adjust",
    "gcra_snapshot",
    "meter_adjust",
    "meter_snapshot",
    "prepare_delta",
    "swc_adjust",
    "swc_snapshot",
    "swl_adjust",
    "swl_snapshot",
]

#: The stored usage of a key is at most this many times its capacity (one quota of debt).
DEBT_FACTOR = 2


def check_delta(delta: object) -> int:
    """Return ``delta`` as an int, or raise ``ValueError`` saying what is allowed."""
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise ConfigurationError(
            f"an adjustment must be a whole number of units, got {delta!r}; pass a "
            f"negative int to give units back or a positive int to charge more."
        )
    return int(delta)


def check_adjustable_strategy(strategy: object) -> None:
    """Raise ``ConfigurationError`` unless ``strategy`` can adjust (see ``Strategy.adjustable``)."""
    if not isinstance(strategy, Strategy) or not strategy.adjustable:
        raise ConfigurationError(not_adjustable(strategy))


def check_adjustable(strategy_name: str, rate: Rate, capacity: int) -> None:
    """Raise ``ConfigurationError`` if a key in debt could not be counted exactly.

    A key may hold twice its capacity, and a decision adds one capacity more on top:
    ``4 x capacity x window_ms`` must stay within ``2**53 - 1`` (Lua numbers are doubles).
    """
    if 4 * capacity * rate.expire > MAX_EXACT_PRODUCT:
        raise ConfigurationError(
            f"{strategy_name} capacity {capacity} over a {rate.expire} ms window is too large "
            f"to adjust exactly (4 x capacity x window_ms must be at most 2**53 - 1); use a "
            f"smaller capacity or a shorter window."
        )


def bound_delta(delta: int, capacity: int) -> int:
    """``delta`` bounded to ``±DEBT_FACTOR x capacity`` (larger moves change nothing more).

    Usage is kept within ``[0, DEBT_FACTOR x capacity]``, so a larger adjustment
    could only matter for a state stored under a larger capacity (a redeploy).
    Bounding it keeps every product exact in the native ports.
    """
    bound = DEBT_FACTOR * capacity
    if delta > bound:
        return bound
    if delta < -bound:
        return -bound
    return delta


def prepare_delta(strategy: Strategy, rate: Rate, delta: object, age_ms: object = 0) -> int:
    """Check an adjustment of ``strategy`` under ``rate`` and return ``delta`` bounded.

    Raises ``ValueError`` for a delta that is not an int or an ``age_ms`` that is not
    a non-negative int, and ``ConfigurationError`` for a capacity too large to adjust
    exactly.
    """
    value = check_delta(delta)
    if isinstance(age_ms, bool) or not isinstance(age_ms, int) or age_ms < 0:
        raise ConfigurationError(
            f"age_ms must be a whole number of milliseconds (0 or more), got {age_ms!r}."
        )
    if rate.unlimited:
        return value
    capacity = strategy.capacity(rate)
    check_adjustable(type(strategy).__name__, rate, capacity)
    return bound_delta(value, capacity)


def check_adjustment(strategy: object, rate: Rate, delta: object, age_ms: object = 0) -> int:
    """Check an adjustment before any I/O and return its delta bounded (for backends).

    Raises ``ConfigurationError`` (a ``ValueError``) when ``strategy`` cannot adjust
    (custom seed-protocol strategies), for a delta that is not an int, an ``age_ms``
    that is not a non-negative int, or a capacity too large to adjust exactly.
    """
    check_adjustable_strategy(strategy)
    return prepare_delta(typing.cast("Strategy", strategy), rate, delta, age_ms)


def _add(used: int, delta: int, top: int) -> int:
    """``used + delta`` for a charge, bounded at ``top`` (never lowering a higher usage)."""
    new = used + delta
    if new > top:
        return used if used > top else top
    return new


def _same(state: State | None, ttl_ms: int, decision: Decision) -> Transition:
    return Transition(state, ttl_ms, decision, False)


# -- fixed window ---------------------------------------------------------------------


def _fw_view(state: State | None, now: int, window: int) -> tuple[int, int]:
    start = now - now % window
    if state is not None and len(state) == 2 and state[0] >= start:
        return state[0], state[1]
    return start, 0


def fw_snapshot(state: State | None, now: int, rate: Rate) -> Decision:
    """The fixed window's quota now, charging nothing."""
    window, limit = rate.expire, rate.limit
    if not window:
        return UNLIMITED_DECISION
    start, used = _fw_view(state, now, window)
    left = start + window - now
    allowed = used + 1 <= limit
    return Decision(
        allowed,
        limit,
        max(0, limit - used),
        left if used else 0,
        0 if allowed else left,
        window,
    )


def fw_adjust(state: State | None, now: int, rate: Rate, delta: int, age_ms: int) -> Transition:
    """Fixed window: a refund lowers this window's count if the charge was made in it."""
    window, limit = rate.expire, rate.limit
    if not window:
        return _same(None, 0, UNLIMITED_DECISION)
    start, used = _fw_view(state, now, window)
    new = used
    if delta < 0:
        if now - age_ms >= now - now % window:
            new = used + delta if used + delta > 0 else 0
    elif delta > 0:
        new = _add(used, delta, limit)  # a full window is all the debt it can hold
    if new == used:
        return _same(state, start + window - now, fw_snapshot(state, now, rate))
    after = (start, new)
    return Transition(after, start + window - now, fw_snapshot(after, now, rate))


# -- sliding window log ---------------------------------------------------------------


def _swl_kept(state: State | None, now: int, window: int) -> State:
    if state is None or len(state) & 1:
        return ()
    horizon = now - window
    i, n = 0, len(state)
    while i < n and state[i] <= horizon:
        i += 2
    return state[i:] if i else state


def swl_snapshot(state: State | None, now: int, rate: Rate) -> Decision:
    """The sliding log's quota now, charging nothing."""
    window, limit = rate.expire, rate.limit
    if not window:
        return UNLIMITED_DECISION
    kept = _swl_kept(state, now, window)
    used = sum(kept[1::2])
    reset = kept[-2] + window - now if kept else 0
    if used + 1 <= limit:
        return Decision(True, limit, limit - used, reset, 0, window)
    excess = used + 1 - limit
    retry = 0
    for i in range(0, len(kept), 2):
        excess -= kept[i + 1]
        if excess <= 0:
            retry = kept[i] + window - now
            break
    return Decision(False, limit, max(0, limit - used), reset, retry, window)


def swl_adjust(state: State | None, now: int, rate: Rate, delta: int, age_ms: int) -> Transition:
    """Sliding log: a refund removes the newest entries while the charge is in the window."""
    window, limit = rate.expire, rate.limit
    if not window:
        return _same(None, 0, UNLIMITED_DECISION)
    kept = _swl_kept(state, now, window)
    used = sum(kept[1::2])
    entries = list(kept)
    if delta < 0 and age_ms < window and entries:
        give = -delta
        while give > 0 and entries:
            last = entries[-1]
            if last <= give:
                give -= last
                del entries[-2:]
            else:
                entries[-1] = last - give
                give = 0
    elif delta > 0:
        add = _add(used, delta, DEBT_FACTOR * limit) - used
        if add > 0:
            if entries and entries[-2] >= now:
                entries[-1] += add
            else:
                entries += [now, add]
    after = tuple(entries)
    if after == kept:
        reset = kept[-2] + window - now if kept else 0
        return _same(state, reset, swl_snapshot(state, now, rate))
    if not after:
        return Transition(None, 0, swl_snapshot(None, now, rate))
    return Transition(after, after[-2] + window - now, swl_snapshot(after, now, rate))


# -- sliding window counter -----------------------------------------------------------


def _swc_view(state: State | None, now: int, window: int) -> tuple[int, int, int]:
    start = now - now % window
    prev = cur = 0
    if state is not None and len(state) == 3:
        s, p, c = state
        if s >= start:
            return s, p, c
        if s == start - window:
            prev = c
    return start, prev, cur


def swc_snapshot(state: State | None, now: int, rate: Rate) -> Decision:
    """The sliding window counter's quota now, charging nothing."""
    window, limit = rate.expire, rate.limit
    if not window:
        return UNLIMITED_DECISION
    start, prev, cur = _swc_view(state, now, window)
    left = start + window - now
    weight = left if left < window else window
    budget = limit * window - prev * weight
    remaining = max(0, (budget - cur * window) // window)
    if cur:
        reset = left + window
    elif prev:
        reset = left
    else:
        reset = 0
    if (cur + 1) * window <= budget:
        return Decision(True, limit, remaining, reset, 0, window)
    if cur + 1 <= limit:
        retry = left - ((limit - cur - 1) * window) // prev
    else:
        retry = left + window - ((limit - 1) * window) // cur
    return Decision(False, limit, remaining, reset, retry, window)


def swc_adjust(state: State | None, now: int, rate: Rate, delta: int, age_ms: int) -> Transition:
    """Sliding window counter: a refund lowers this window's count if the charge was made in it."""
    window, limit = rate.expire, rate.limit
    if not window:
        return _same(None, 0, UNLIMITED_DECISION)
    start, prev, cur = _swc_view(state, now, window)
    new = cur
    if delta < 0:
        if now - age_ms >= now - now % window:
            new = cur + delta if cur + delta > 0 else 0
    elif delta > 0:
        new = _add(cur, delta, DEBT_FACTOR * limit)
    ttl = start + 2 * window - now
    if new == cur:
        return _same(state, ttl, swc_snapshot(state, now, rate))
    after = (start, prev, new)
    return Transition(after, ttl, swc_snapshot(after, now, rate))


# -- meter (token and leaky buckets) --------------------------------------------------


def _meter_view(state: State | None, now: int, limit: int) -> tuple[int, int]:
    """``(level, at)`` as :func:`~traffik.strategies._meter.meter_step` reads them."""
    level, at = 0, now
    if state is not None and len(state) == 2:
        level, last = state
        elapsed = now - last
        if elapsed > 0:
            level = 0 if elapsed >= ceil_div(level, limit) else level - elapsed * limit
        elif elapsed < 0:
            at = last
    return level, at


def meter_snapshot(state: State | None, now: int, rate: Rate, capacity: int) -> Decision:
    """A meter's quota now, charging nothing."""
    window, limit = rate.expire, rate.limit
    if not window:
        return UNLIMITED_DECISION
    level, at = _meter_view(state, now, limit)
    lag = at - now
    top = capacity * window
    drain = lag + ceil_div(level, limit)
    remaining = (top - level) // window if level < top else 0
    if level + window <= top:
        return Decision(True, capacity, remaining, drain, 0, window)
    retry = lag + ceil_div(level + window - top, limit)
    return Decision(False, capacity, remaining, drain, retry, window)


def meter_adjust(
    state: State | None, now: int, rate: Rate, delta: int, capacity: int
) -> Transition:
    """A meter: a refund lowers the level (tokens back, up to the capacity), a charge raises it."""
    window, limit = rate.expire, rate.limit
    if not window:
        return _same(None, 0, UNLIMITED_DECISION)
    level, at = _meter_view(state, now, limit)
    new = level
    if delta < 0:
        new = level + delta * window
        if new < 0:
            new = 0
    elif delta > 0:
        new = _add(level, delta * window, DEBT_FACTOR * capacity * window)
    ttl = at - now + ceil_div(new, limit)
    if new == level:
        return _same(state, ttl, meter_snapshot(state, now, rate, capacity))
    after = (new, at)
    return Transition(after, ttl if ttl > 0 else 1, meter_snapshot(after, now, rate, capacity))


# -- GCRA -----------------------------------------------------------------------------


def _gcra_ahead(state: State | None, now: int, limit: int) -> int:
    if state is not None and len(state) == 2:
        ahead = (state[0] - now) * limit + state[1]
        return ahead if ahead > 0 else 0
    return 0


def gcra_snapshot(state: State | None, now: int, rate: Rate, burst: int) -> Decision:
    """GCRA's quota now, charging nothing."""
    window, limit = rate.expire, rate.limit
    if not window:
        return UNLIMITED_DECISION
    ahead = _gcra_ahead(state, now, limit)
    tolerance = burst * window
    reset = ceil_div(ahead, limit)
    remaining = max(0, (tolerance - ahead) // window)
    if ahead + window <= tolerance:
        return Decision(True, burst, remaining, reset, 0, window)
    return Decision(
        False, burst, remaining, reset, ceil_div(ahead + window - tolerance, limit), window
    )


def gcra_adjust(state: State | None, now: int, rate: Rate, delta: int, burst: int) -> Transition:
    """GCRA: a refund moves the theoretical arrival time back (never before now), a charge on."""
    window, limit = rate.expire, rate.limit
    if not window:
        return _same(None, 0, UNLIMITED_DECISION)
    ahead = _gcra_ahead(state, now, limit)
    new = ahead
    if delta < 0:
        new = ahead + delta * window
        if new < 0:
            new = 0
    elif delta > 0:
        new = _add(ahead, delta * window, DEBT_FACTOR * burst * window)
    ttl = ceil_div(new, limit)
    if new == ahead:
        return _same(state, ttl, gcra_snapshot(state, now, rate, burst))
    after = (now + new // limit, new % limit)
    return Transition(after, ttl if ttl > 0 else 1, gcra_snapshot(after, now, rate, burst))


class MeterAdjustments:
    """``adjust`` and ``snapshot`` of the strategies that are a meter of ``capacity(rate)``
    (the token and leaky buckets): a refund lowers the level, a charge raises it."""

    def adjust(
        self, state: State | None, now_ms: int, rate: Rate, delta: int, age_ms: int = 0
    ) -> Transition:
        """Refund by lowering the level (up to a full bucket), or charge more into debt."""
        strategy = typing.cast("Strategy", self)
        bounded = prepare_delta(strategy, rate, delta, age_ms)
        return meter_adjust(state, now_ms, rate, bounded, strategy.capacity(rate))

    def snapshot(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        """The bucket's quota now, charging nothing."""
        return meter_snapshot(state, now_ms, rate, typing.cast("Strategy", self).capacity(rate))
