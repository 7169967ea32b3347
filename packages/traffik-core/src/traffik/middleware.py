"""The traffik 1.0.0b2 import path of the throttle middleware (shipped by traffik-starlette)."""

from __future__ import annotations

try:
    from traffik.starlette import MiddlewareThrottle, ThrottleHook, ThrottleMiddleware
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "traffik.middleware needs the traffik-starlette distribution: pip install traffik-starlette"
    ) from exc

__all__ = ["MiddlewareThrottle", "ThrottleHook", "ThrottleMiddleware"]
