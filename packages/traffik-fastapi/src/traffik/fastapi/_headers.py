"""Reading the decisions throttles recorded on a connection and rendering their fields."""

from __future__ import annotations

import typing

from traffik.headers import (
    DECISIONS_STATE_KEY,
    LEGACY_STATE_KEY,
    MANAGED_FIELDS,
    rate_limit_headers,
)

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.responses import Response

__all__ = ["set_rate_limit_headers"]


def set_rate_limit_headers(connection: HTTPConnection, response: Response) -> None:
    """Put the RateLimit fields of every decision recorded on ``connection`` on ``response``.

    Fields already on the response with the same names are replaced, so applying
    this twice (or after a throttle set them) never duplicates a field.
    """
    state = connection.scope.get("state") or {}
    decisions = state.get(DECISIONS_STATE_KEY)
    if not decisions:
        return
    legacy = bool(state.get(LEGACY_STATE_KEY))
    raw = [
        (name, value)
        for name, value in response.headers.raw
        if name.lower().decode("latin-1") not in MANAGED_FIELDS
    ]
    for name, value in rate_limit_headers(decisions, legacy=legacy):
        raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    response.headers.raw[:] = raw
