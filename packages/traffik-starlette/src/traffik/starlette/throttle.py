"""``MiddlewareThrottle``: a throttle plus the rules saying which connections it applies to."""

from __future__ import annotations

import copy
import inspect
import re
import typing

from starlette.requests import HTTPConnection
from traffik.charging import ChargeWhen, charge_by_status, check_charge_when
from traffik.keys import ROUTE_KEY_SCOPE
from traffik.throttles import BaseThrottle, HTTPThrottle, WebSocketThrottle

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from starlette.types import Receive, Scope, Send
    from traffik.types import StrategyStat

__all__ = ["MiddlewareThrottle", "ThrottleHook"]

#: ``(connection) -> bool``, sync or async: True if the throttle applies to the connection.
ThrottleHook = typing.Callable[[HTTPConnection], "Awaitable[bool] | bool"]


def _compile_path(path: typing.Any) -> re.Pattern[str] | None:
    if path is None:
        return None
    if isinstance(path, re.Pattern):
        return path
    if isinstance(path, str):
        try:
            return re.compile(path)
        except re.error as exc:
            raise ValueError(
                f"path {path!r} is not a valid regular expression ({exc}); for a literal "
                "prefix use prefix= instead of path=."
            ) from None
    raise TypeError(
        f"path must be a regular-expression string or a compiled pattern, got {path!r}."
    )


def _normalise_methods(methods: typing.Any) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, str):
        raise TypeError(
            f"methods must be a collection of method names such as {{{methods!r}}}, "
            f"not the single string {methods!r}."
        )
    result = set()
    for method in methods:
        if not isinstance(method, str):
            raise TypeError(
                f"methods must contain strings such as 'GET' or 'POST'; got {method!r} "
                f"({type(method).__name__})."
            )
        result.add(method.upper())
    if "GET" in result:
        # Starlette answers HEAD with the GET endpoint: a rule for GET covers HEAD too.
        result.add("HEAD")
    return frozenset(result)


_UNSET: typing.Any = object()


class MiddlewareThrottle:
    """A throttle the :class:`~traffik.starlette.ThrottleMiddleware` applies when all rules match.

    - ``path``: a regular expression matched at the **start** of ``scope["path"]``
      (``re.match``, as traffik 1.0.0b2 did): ``"/api/"`` acts as a prefix, but
      regex characters keep their meaning (``"/v1.0"`` also matches ``"/v1x0"``,
      ``r"/items/\\d+"`` also matches ``"/items/12abc"``). Anchor the end with ``$``
      when needed. A compiled pattern is used as is.
    - ``prefix``: a literal path prefix (no regex), the plain alternative to ``path``.
    - ``methods``: HTTP methods, case-insensitive. ``GET`` includes ``HEAD`` (Starlette
      answers HEAD with the GET endpoint, and both spend one budget). A throttle
      with ``methods`` never applies to WebSocket connections (they have no method).
    - ``hook``: ``(connection) -> bool``, sync or async, checked last.
    - ``charge_when``: ``(connection, status_code) -> bool``, sync or async, called
      once the response status is known; False gives this rule's charge back
      (:mod:`traffik.charging`). It replaces the throttle's own ``charge_when``.

    ``HTTPThrottle`` applies to HTTP requests, ``WebSocketThrottle`` to WebSocket
    handshakes; other throttles to both. The middleware runs before routing, so a
    throttle here limits the **whole matched area per client**: every path it matches
    shares one budget (``"/api/"`` with ``"100/m"`` = 100 API requests per minute per
    client). Pass ``per_path=True`` for one budget per concrete path (traffik
    1.0.0b2's behaviour). ``shadow=True`` runs this rule in shadow (it charges and
    reports, never refuses) on its own copy of the throttle, which keeps enforcing
    wherever else it is used.
    """

    __slots__ = (
        "_area",
        "_http",
        "_websocket",
        "charge_when",
        "hook",
        "methods",
        "path",
        "per_path",
        "prefix",
        "throttle",
    )

    def __init__(
        self,
        throttle: BaseThrottle[typing.Any],
        path: str | re.Pattern[str] | None = None,
        methods: Iterable[str] | None = None,
        hook: ThrottleHook | None = None,
        *,
        prefix: str | None = None,
        per_path: bool = False,
        shadow: bool = False,
        charge_when: ChargeWhen | None = None,
    ) -> None:
        if not isinstance(throttle, BaseThrottle):
            raise TypeError(
                f"MiddlewareThrottle wraps a throttle (HTTPThrottle, WebSocketThrottle...), "
                f"got {throttle!r}."
            )
        if path is not None and prefix is not None:
            raise ValueError("Give path= (a regular expression) or prefix= (literal), not both.")
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string such as '/api/', got {prefix!r}.")
        if hook is not None and not callable(hook):
            raise TypeError(f"hook must be a callable (connection) -> bool, got {hook!r}.")
        if not isinstance(shadow, bool):
            raise TypeError(f"shadow must be True or False, got {shadow!r}.")
        if shadow and not throttle.shadow:
            # This rule's own copy: same uid, so the same budgets, while the throttle
            # keeps enforcing wherever else it is used.
            throttle = copy.copy(throttle)
            throttle.shadow = True
        check_charge_when(charge_when, throttle.strategy)
        self.throttle = throttle
        self.charge_when = charge_when
        self.path = _compile_path(path)
        self.prefix = prefix
        self.methods = _normalise_methods(methods)
        self.hook = hook
        self.per_path = per_path
        self._http = not isinstance(throttle, WebSocketThrottle)
        self._websocket = not isinstance(throttle, HTTPThrottle) and self.methods is None
        label = (
            prefix if prefix is not None else (self.path.pattern if self.path is not None else "")
        )
        #: The route part of this rule's keys: one budget per client for the whole area.
        self._area = f"mw{label}"

    def __repr__(self) -> str:
        rules = []
        if self.path is not None:
            rules.append(f"path={self.path.pattern!r}")
        if self.prefix is not None:
            rules.append(f"prefix={self.prefix!r}")
        if self.methods is not None:
            rules.append(f"methods={sorted(self.methods)!r}")
        if self.hook is not None:
            rules.append(f"hook={getattr(self.hook, '__name__', self.hook)!r}")
        return f"MiddlewareThrottle({self.throttle!r}{''.join(', ' + r for r in rules)})"

    @property
    def needs_lifecycle(self) -> bool:
        """True when this rule acts on the response lifecycle (its throttle's or its own
        ``charge_when``): the middleware then observes the connection."""
        return self.charge_when is not None or self.throttle.needs_lifecycle

    def applies_to(self, scope_type: str) -> bool:
        """Whether this throttle can apply to connections of ``scope_type`` at all."""
        return self._http if scope_type == "http" else scope_type == "websocket" and self._websocket

    def matches(self, scope: Scope) -> bool:
        """Method and path rules (not the hook): cheap, synchronous."""
        if self.methods is not None and scope.get("method", "") not in self.methods:
            return False
        path: str = scope["path"]
        if self.prefix is not None:
            return path.startswith(self.prefix)
        return self.path is None or self.path.match(path) is not None

    async def hook_allows(self, connection: HTTPConnection) -> bool:
        """The hook's verdict (True without a hook)."""
        if self.hook is None:
            return True
        result = self.hook(connection)
        if inspect.isawaitable(result):
            result = await result
        return bool(result)

    async def __call__(self, connection: HTTPConnection) -> HTTPConnection:
        """Apply the throttle if every rule matches (raises when throttled); return ``connection``."""
        scope = connection.scope
        if not self.applies_to(scope["type"]) or not self.matches(scope):
            return connection
        if not await self.hook_allows(connection):
            return connection
        scope.setdefault("state", {})
        await self.hit(connection)
        return connection

    async def client_stat(
        self,
        identity: typing.Any,
        path: str | None = None,
        *,
        method: str = "GET",
        backend: typing.Any = None,
        app: typing.Any = None,
    ) -> StrategyStat | None:
        """The quota client ``identity`` has left under this rule, read without
        charging it: the whole area's (or, with ``per_path``, ``path``'s: the
        middleware runs before routing, so it keys the concrete path). See
        :meth:`traffik.throttles.BaseThrottle.client_stat`."""
        route, area = self._operator_route(path)
        return await self.throttle.client_stat(
            identity, route, method=method, backend=backend, app=app, area=area, key_by="path"
        )

    async def reset_client(
        self,
        identity: typing.Any,
        path: str | None = None,
        *,
        method: str = "GET",
        backend: typing.Any = None,
        app: typing.Any = None,
    ) -> None:
        """Give client ``identity`` a fresh quota under this rule, and unblock it
        (arguments as in :meth:`client_stat`)."""
        route, area = self._operator_route(path)
        await self.throttle.reset_client(
            identity, route, method=method, backend=backend, app=app, area=area, key_by="path"
        )

    def _operator_route(self, path: str | None) -> tuple[str, str | None]:
        if not self.per_path:
            return "", self._area
        if not path:
            raise ValueError(
                "This rule keys each path apart (per_path=True): pass the path whose "
                "quota to read or reset, such as '/items/1'."
            )
        return path, None

    async def hit(
        self,
        connection: HTTPConnection,
        receive: Receive | None = None,
        send: Send | None = None,
    ) -> None:
        """Charge the throttle for ``connection`` (rules already checked).

        Unless ``per_path``, the scope names this rule's area as its route key
        (``scope["traffik.route_key"]``) while the throttle runs, so every path and
        method the rules match shares one budget per client. The key is set on the
        connection's own scope and restored afterwards: no scope copy and no second
        ``Request`` per request. So rules on one connection run one after the other
        (as the middleware and FastAPI's dependencies run them), not gathered
        concurrently. ``receive`` and ``send`` are not used (kept for callers of
        the 1.0 signature).
        """
        if self.per_path:
            await self.throttle(connection)
        else:
            scope = connection.scope
            previous = scope.get(ROUTE_KEY_SCOPE, _UNSET)
            scope[ROUTE_KEY_SCOPE] = self._area
            try:
                await self.throttle(connection)
            finally:
                if previous is _UNSET:
                    scope.pop(ROUTE_KEY_SCOPE, None)
                else:
                    scope[ROUTE_KEY_SCOPE] = previous
        if self.charge_when is not None:
            charge_by_status(self.throttle, connection, self.charge_when)
