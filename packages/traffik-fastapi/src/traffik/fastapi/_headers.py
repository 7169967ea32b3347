"""Writing the RateLimit fields of the decisions recorded on a connection on a response."""

from __future__ import annotations

import typing

from traffik.headers import write_recorded_fields

if typing.TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.responses import Response

__all__ = ["set_rate_limit_headers"]


def set_rate_limit_headers(connection: HTTPConnection, response: Response) -> None:
    """Put the RateLimit fields of every decision recorded on ``connection`` on ``response``.

    Fields already on the response with the same names are replaced, so applying
    this twice (or after a throttle set them) never duplicates a field. The merge
    itself is :func:`traffik.headers.write_recorded_fields` (written once, in core).
    """
    write_recorded_fields(connection.scope.get("state"), response)
