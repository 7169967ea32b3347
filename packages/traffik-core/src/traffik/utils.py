"""Small helpers of the traffik 1.0.0b2 API: clock, JSON, async checks."""

from __future__ import annotations

import functools
import inspect
import json
import time as _time
import typing

from traffik.backends._locking import AsyncLockContext
from traffik.identifiers import get_ip_address

__all__ = [
    "AsyncLockContext",
    "JSONDecodeError",
    "dump_json",
    "get_ip_address",
    "is_async_callable",
    "load_json",
    "time",
]

JSONDecodeError = json.JSONDecodeError


def time() -> float:
    """Seconds since the Unix epoch (wall clock), comparable across hosts and restarts.

    traffik 1.0.0b2 used the event loop's monotonic clock here, whose values mean
    nothing on another host; custom strategies that store timestamps in a shared
    backend need the wall clock.
    """
    return _time.time()


def dump_json(value: typing.Any) -> str:
    """Compact JSON text."""
    return json.dumps(value, separators=(",", ":"))


def load_json(text: str | bytes) -> typing.Any:
    """Parse JSON text; raises :data:`JSONDecodeError` on bad input."""
    return json.loads(text)


def is_async_callable(obj: typing.Any) -> bool:
    """True for coroutine functions, partials of them and objects with an async ``__call__``."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    return inspect.iscoroutinefunction(obj) or (
        callable(obj) and inspect.iscoroutinefunction(getattr(obj, "__call__", None))
    )
