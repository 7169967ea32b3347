"""traffik for Starlette: a pure ASGI throttle middleware and a route decorator.

- :class:`ThrottleMiddleware` with :class:`MiddlewareThrottle` rules (path regex or
  literal prefix, methods, hook) throttles whole areas of an app, HTTP requests and
  WebSocket handshakes, before routing.
- :func:`throttled` throttles a plain Starlette endpoint ``async def endpoint(request)``.
"""

from __future__ import annotations

from traffik.starlette.__about__ import __version__
from traffik.starlette.decorators import throttled
from traffik.starlette.middleware import ThrottleMiddleware
from traffik.starlette.throttle import MiddlewareThrottle, ThrottleHook

__all__ = [
    "MiddlewareThrottle",
    "ThrottleHook",
    "ThrottleMiddleware",
    "__version__",
    "throttled",
]
