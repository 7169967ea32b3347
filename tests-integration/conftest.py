"""Fixtures shared by the cross-package scenarios (the servers come from the root conftest.py)."""

from __future__ import annotations

import typing

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

if typing.TYPE_CHECKING:
    from traffik.throttles import HTTPThrottle

ThrottledApp = typing.Callable[["HTTPThrottle"], Starlette]


def _throttled_app(throttle: HTTPThrottle) -> Starlette:
    async def endpoint(request: Request) -> PlainTextResponse:
        await throttle(request)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", endpoint)])


@pytest.fixture
def throttled_app() -> ThrottledApp:
    """Builds a Starlette app with one route, ``/``, that calls ``throttle`` and answers "ok"."""
    return _throttled_app
