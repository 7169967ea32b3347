"""The traffik 1.0.0b2 import path of the FastAPI decorator (shipped by traffik-fastapi)."""

from __future__ import annotations

try:
    from traffik.fastapi import DecoratorDepends, ThrottleDepends, apply_throttle, throttled
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "traffik.decorators needs the traffik-fastapi distribution: pip install traffik-fastapi"
    ) from exc

__all__ = ["DecoratorDepends", "ThrottleDepends", "apply_throttle", "throttled"]
