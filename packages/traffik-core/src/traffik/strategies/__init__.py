"""Rate-limiting strategies.

Each built-in strategy is a frozen dataclass with a pure transition
(:meth:`Strategy.decide`) that every backend runs atomically, and the traffik
1.0.0b2 protocol ``await strategy(key, rate, backend, cost) -> wait_ms``.

This module is also the strategy half of the extension API for backend authors:
:class:`State` and its stored text (:func:`encode_state`, :func:`decode_state`),
:class:`Transition`, :func:`check_cost`, :meth:`Strategy.check_exact`,
:data:`UNLIMITED_DECISION`, :func:`ceil_div` and :func:`check_adjustment` are public and follow the
compatibility policy (CONTRIBUTING.md): they change only in a major release.
"""

from __future__ import annotations

from traffik.strategies._adjust import DEBT_FACTOR, check_adjustment
from traffik.strategies._arith import ceil_div
from traffik.strategies._base import (
    UNLIMITED_DECISION,
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
    "DEBT_FACTOR",
    "UNLIMITED_DECISION",
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
    "ceil_div",
    "check_adjustment",
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
