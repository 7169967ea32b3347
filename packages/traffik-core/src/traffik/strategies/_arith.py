"""Integer helpers shared by the strategy transitions (and mirrored in the Lua scripts)."""

from __future__ import annotations

__all__ = ["ceil_div"]


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints with ``b > 0``, without floats."""
    return -(-a // b)
