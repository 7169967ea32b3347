"""Rate-limiting strategies.

Each built-in strategy is a frozen dataclass with a pure transition
(:meth:`Strategy.decide`) that every backend runs atomically, and the traffik
1.0.0b2 protocol ``await strategy(key, rate, backend, cost) -> wait_ms``.
"""

from __future__ import annotations

from traffik.strategies._base import (
    State,
    Strategy,
    Transition,
    check_cost,
    decode_state,
    encode_state,
)
from traffik.strategies.fixed_window import FixedWindowStrategy
from traffik.strategies.gcra import GCRAStrategy
from traffik.strategies.leaky_bucket import LeakyBucketStrategy, LeakyBucketWithQueueStrategy
from traffik.strategies.sliding_window import SlidingWindowCounterStrategy, SlidingWindowLogStrategy
from traffik.strategies.token_bucket import TokenBucketStrategy, TokenBucketWithDebtStrategy

__all__ = [
    "BUILTIN_STRATEGIES",
    "FixedWindowStrategy",
    "GCRAStrategy",
    "LeakyBucketStrategy",
    "LeakyBucketWithQueueStrategy",
    "SlidingWindowCounterStrategy",
    "SlidingWindowLogStrategy",
    "State",
    "Strategy",
    "TokenBucketStrategy",
    "TokenBucketWithDebtStrategy",
    "Transition",
    "check_cost",
    "decode_state",
    "default_strategy",
    "encode_state",
]

#: The strategy a throttle uses when none is given.
default_strategy = FixedWindowStrategy()

#: One instance of every built-in strategy class, with default parameters.
BUILTIN_STRATEGIES: tuple[Strategy, ...] = (
    FixedWindowStrategy(),
    SlidingWindowLogStrategy(),
    SlidingWindowCounterStrategy(),
    TokenBucketStrategy(),
    TokenBucketWithDebtStrategy(),
    LeakyBucketStrategy(),
    LeakyBucketWithQueueStrategy(),
    GCRAStrategy(),
)
