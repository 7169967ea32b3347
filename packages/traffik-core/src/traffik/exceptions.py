"""Exceptions raised by traffik.

::

    TraffikException(Exception)
    ├── ConfigurationError(ValueError)  bad settings or cost, or no backend to use
    ├── BackendError                  a storage call failed (client errors are wrapped)
    │   └── BackendConnectionError    backend unreachable, not initialised, or closed
    ├── LockTimeoutError(TimeoutError)  a lock was not acquired in time
    ├── AnonymousConnection           the client cannot be identified
    └── ConnectionThrottled(starlette.exceptions.HTTPException)  quota exceeded (429)

:func:`build_exception_handler_getter` finds the handler an app registered for an
exception, the way Starlette's ``ExceptionMiddleware`` does (for middleware that
must answer before the app's own exception handling runs).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Mapping
from http import HTTPStatus

from starlette.exceptions import HTTPException

__all__ = [
    "AnonymousConnection",
    "BackendConnectionError",
    "BackendError",
    "ConfigurationError",
    "ConnectionThrottled",
    "LockTimeoutError",
    "TraffikException",
    "build_exception_handler_getter",
]


def _seconds_phrase(seconds: int) -> str:
    """``"1 second"``, ``"2 seconds"``: a whole number of seconds for a sentence."""
    return f"{seconds} second" if seconds == 1 else f"{seconds} seconds"


class TraffikException(Exception):
    """Base class of every exception traffik raises."""


class ConfigurationError(TraffikException, ValueError):
    """The configuration is invalid, or no backend could be resolved at call time.

    Also a ``ValueError``: bad values (a cost, a burst size) raise it, and it passes
    through the backends' error wrapping unchanged instead of becoming a BackendError.
    """


class BackendError(TraffikException):
    """A backend operation failed; the original exception is chained as ``__cause__``."""


class BackendConnectionError(BackendError):
    """The backend is unreachable, or was used before ``initialize()`` or after ``close()``."""


class LockTimeoutError(TraffikException, TimeoutError):
    """A lock could not be acquired within its ``blocking_timeout``."""


class AnonymousConnection(TraffikException):
    """The connection carries no client address, so the default identifier cannot key it."""


class ConnectionThrottled(HTTPException, TraffikException):
    """The client exceeded its quota. An ``HTTPException``: Starlette and FastAPI answer 429.

    ``wait_period`` and ``retry_after`` are both the whole number of seconds to wait
    (``None`` when the request can never be admitted, for instance a cost above the
    quota). ``wait_ms`` is the exact wait in milliseconds.
    """

    def __init__(
        self,
        wait_period: float | None = None,
        status_code: int = 429,
        detail: typing.Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        wait_ms: float | None = None,
    ) -> None:
        seconds: int | None
        if wait_period is None or math.isinf(wait_period):
            seconds = None
        else:
            seconds = max(0, math.ceil(wait_period))
        if detail is None:
            phrase = HTTPStatus(status_code).phrase
            if seconds is None:
                detail = f"{phrase}. This request cannot be admitted."
            else:
                detail = f"{phrase}. Retry after {_seconds_phrase(seconds)}."
        merged = dict(headers or {})
        if seconds is not None:
            merged.setdefault("Retry-After", str(seconds))
        super().__init__(status_code=status_code, detail=detail, headers=merged)
        self.wait_period: int | None = seconds
        self.retry_after: int | None = seconds
        if wait_ms is None and seconds is not None:
            wait_ms = seconds * 1000.0
        self.wait_ms: float | None = wait_ms


def build_exception_handler_getter(
    app: typing.Any,
) -> Callable[[Exception], Callable[..., typing.Any] | None]:
    """A function returning the handler ``app`` would use for an exception, or None.

    Like Starlette's ``ExceptionMiddleware``: for an ``HTTPException`` a handler
    registered for its status code wins, then the first class of the exception's
    MRO with a handler. Starlette's default ``HTTPException`` handler is included
    unless the app replaced it. Handlers are read on each call, so handlers added
    after this function was built are seen too.
    """

    def get_handler(exc: Exception) -> Callable[..., typing.Any] | None:
        handlers: Mapping[typing.Any, Callable[..., typing.Any]] = (
            getattr(app, "exception_handlers", None) or {}
        )
        if isinstance(exc, HTTPException):
            handler = handlers.get(exc.status_code)
            if handler is not None:
                return handler
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return handler
        if isinstance(exc, HTTPException):
            return _default_http_handler()
        return None

    return get_handler


_default_handler: list[Callable[..., typing.Any]] = []


def _default_http_handler() -> Callable[..., typing.Any]:
    """Starlette's default ``HTTPException`` handler, built once (a refusal is common)."""
    if not _default_handler:
        from starlette.middleware.exceptions import ExceptionMiddleware

        _default_handler.append(ExceptionMiddleware(app=None).http_exception)  # type: ignore[arg-type]
    return _default_handler[0]
