"""The default answer to a throttled connection."""

from __future__ import annotations

import math
import typing

from traffik.exceptions import ConnectionThrottled, _seconds_phrase

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection

__all__ = ["connection_throttled"]


async def connection_throttled(
    connection: HTTPConnection, wait_ms: float, *args: typing.Any, **kwargs: typing.Any
) -> typing.NoReturn:
    """Raise :class:`ConnectionThrottled` (429) with ``Retry-After`` rounded up to whole seconds.

    ``detail``, ``status_code`` and ``headers`` keyword arguments override the defaults.
    """
    if math.isinf(wait_ms):
        seconds: int | None = None
        detail = kwargs.get(
            "detail", "Too many requests. This request costs more than the quota allows."
        )
    else:
        seconds = max(0, math.ceil(wait_ms / 1000))
        detail = kwargs.get("detail", f"Too many requests. Retry in {_seconds_phrase(seconds)}.")
    raise ConnectionThrottled(
        wait_period=seconds,
        status_code=kwargs.get("status_code", 429),
        detail=detail,
        headers=kwargs.get("headers"),
        wait_ms=wait_ms,
    )
