"""Throttles: apply a rate to HTTP requests and WebSocket messages.

``await throttle(connection)`` identifies the client, builds a bounded key
(``{uid}:{route}:{identity}``), asks the backend for a
:class:`~traffik.decisions.Decision` in one atomic step, records it on the
connection for the RateLimit headers, and calls the throttled handler (by
default: raise :class:`~traffik.exceptions.ConnectionThrottled`, a 429) when the
request is refused.

For maintainers, the request path. What is constant for a throttle (key prefix,
strategy kind, explicit backend, identifier and handler, failure action) is settled
once, in a :class:`~traffik._plan.ThrottlePlan` built at the first call; route
parts are cached per route (``RouteKeys``), proxy settings read once per app and
identities cached per peer (:mod:`traffik.identifiers`). Per request,
``BaseThrottle._throttle`` runs two steps:

- ``_decide(connection, cost, context_key)``: identity -> key -> one decision
  (:func:`traffik.failures.decide_with_policy`) -> one record on
  ``scope["state"]``; it returns the :class:`~traffik.decisions.Decision`, or None
  when the connection is exempt (``Rate()``, or the identifier returned
  :data:`~traffik.types.UNLIMITED`);
- what to do with it: with a response, one header merge (:mod:`traffik.headers`);
  on a refusal, ``_refuse`` (the wait, the refusal's header fields, the handler).

A new mode (charging without refusing, refunds, concurrency) changes the second
step or adds a setting to the plan; the first stays one call. HEAD is keyed as GET.

As a FastAPI dependency (``Depends(throttle)``) a throttle shows FastAPI only a
``request``/``response`` (HTTP) or ``websocket`` (WebSocket) parameter: ``cost``
and ``context_key`` are for code (``await throttle(request, cost=5)``) and never
become query parameters.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Mapping

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from traffik._charges import RESPONSE_STATE_KEY, monotonic_ms, remember_charge
from traffik._keys import memo_identity_part, route_part
from traffik._lifecycle_depends import with_lifecycle_parameter
from traffik._plan import PLANNED, ThrottlePlan
from traffik.backends._context import get_throttle_backend, throttle_backend_ctx
from traffik.charging import (
    ChargeWhen,
    Reservation,
    charge_by_status,
    check_charge_when,
    refund,
    reserve,
)
from traffik.decisions import NEVER, Decision
from traffik.exceptions import AnonymousConnection, ConfigurationError
from traffik.failures import OnError, check_on_error, decide_with_policy
from traffik.headers import (
    DECISIONS_STATE_KEY,
    LEGACY_STATE_KEY,
    rate_limit_headers,
    write_recorded_fields,
)
from traffik.identifiers import (
    ANONYMOUS,
    _identity_of,
    _warn_anonymous,
    connection_identifier,
)
from traffik.rates import Rate
from traffik.strategies import Strategy, check_cost, default_strategy
from traffik.types import UNLIMITED, HTTPConnectionT, Identifier, StrategyStat, ThrottledHandler

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision

__all__ = ["BaseThrottle", "HTTPThrottle", "ThrottleStrategy", "WebSocketThrottle"]

#: A strategy: a built-in :class:`~traffik.strategies.Strategy`, or any
#: ``async (key, rate, backend, cost) -> wait_ms`` callable.
ThrottleStrategy = typing.Callable[..., typing.Awaitable[float]]

_KEY_BY = ("route", "path")

_HTTP_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter("response", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Response),
    ]
)
_WS_SIGNATURE = inspect.Signature(
    [inspect.Parameter("websocket", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=WebSocket)]
)


def _default_identity(connection: HTTPConnection) -> str:
    """What :func:`~traffik.identifiers.connection_identifier` returns, called synchronously."""
    try:
        return _identity_of(connection)
    except AnonymousConnection:
        _warn_anonymous()
        return ANONYMOUS


class BaseThrottle(typing.Generic[HTTPConnectionT]):
    """A rate applied to connections, keyed per client and route.

    Args:
        uid: Names the throttle. Throttles with the same uid share state for the
            same client and route (across instances and apps), and it is the policy
            name in the RateLimit headers.
        rate: A :class:`~traffik.rates.Rate`, or a string such as ``"100/m"``
            (parsed here; a bad string raises ``ValueError``). ``Rate()`` admits
            everything.
        identifier: ``async (connection) -> identity``. Default: the backend's (the
            client address, :func:`~traffik.identifiers.connection_identifier`).
            Returning :data:`~traffik.types.UNLIMITED` exempts the connection.
        handle_throttled: ``async (connection, wait_ms, *args, **kwargs)``, called on
            a refusal. Default: the backend's (raise
            :class:`~traffik.exceptions.ConnectionThrottled`, a 429).
        strategy: A built-in :class:`~traffik.strategies.Strategy` (default: fixed
            window) or a custom ``async (key, rate, backend, cost) -> wait_ms``.
        backend: The throttle's own backend. Without one, the backend is resolved on
            every call: the active ``async with backend(...)`` context, then
            ``connection.app.state``.
        cost: The units a call charges by default (a positive int).
        context_backend: ``True`` documents that the backend is resolved per call
            (and forbids ``backend=``).
        min_wait_period: The shortest wait, in milliseconds, told to a refused
            client.
        headers: Extra header fields for refused responses.
        on_backend_error: The failure action of this throttle (``"fallback"``,
            ``"allow"``, ``"throttle"``, ``"raise"`` or a backend to fall back to);
            default: the backend's policy (see :mod:`traffik.failures`).
        legacy_headers: Also send ``X-RateLimit-Limit``/``-Remaining``/``-Reset``.
        key_by: ``"route"`` (the route template: ``/items/1`` and ``/items/2``
            share a budget) or ``"path"`` (the concrete path, as traffik 1.0.0b2
            did).
        shadow: Decide and charge as usual but never refuse: a would-be refusal is
            reported (the ``shadow_throttled`` event) and the request goes on. A
            backend with ``shadow = True`` puts every throttle deciding on it in
            shadow.
        shadow_headers: Also send a shadow throttle's RateLimit fields (off by
            default: clients see only the enforcing throttles').
        charge_when: ``(connection, status_code) -> bool``, sync or async, called
            once the response status is known; False gives the request's charge
            back (:mod:`traffik.charging`).

    ``identifier``, ``handle_throttled`` and ``backend`` read the throttle's own
    value, or else the active backend's (inside ``async with backend():``), as in
    traffik 1.0.0b2; None outside any backend context.
    """

    #: What FastAPI sees as the parameters of the throttle used as a dependency.
    _dependency_signature: typing.ClassVar[inspect.Signature | None] = None
    #: The ASGI scope type this throttle keys (WebSocket keys use "ws" as the method).
    _scope_type: typing.ClassVar[str] = "http"
    #: True when the throttle acts on the response lifecycle (:mod:`traffik.lifecycle`):
    #: integrations then observe the connection's status and end for it.
    needs_lifecycle: bool = False

    def __init__(
        self,
        uid: str,
        rate: Rate | str,
        identifier: Identifier | None = None,
        handle_throttled: ThrottledHandler | None = None,
        strategy: Strategy | ThrottleStrategy | None = None,
        backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
        cost: int = 1,
        context_backend: bool = False,
        min_wait_period: float | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        on_backend_error: OnError | None = None,
        legacy_headers: bool = False,
        key_by: str = "route",
        shadow: bool = False,
        shadow_headers: bool = False,
        charge_when: ChargeWhen | None = None,
    ) -> None:
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"uid must be a non-empty string naming the throttle, got {uid!r}.")
        if isinstance(rate, str):
            rate = Rate.parse(rate)
        elif not isinstance(rate, Rate):
            raise ValueError(f"rate must be a Rate or a string like '100/m', got {rate!r}.")
        if context_backend and backend is not None:
            raise ValueError(
                "context_backend=True resolves the backend on every call, so it cannot be "
                "combined with backend=; pass one or the other."
            )
        cost = check_cost(cost)
        if min_wait_period is not None and (
            isinstance(min_wait_period, bool)
            or not isinstance(min_wait_period, (int, float))
            or not min_wait_period >= 0
        ):
            raise ValueError(
                f"min_wait_period must be a number of milliseconds (0 or more), got {min_wait_period!r}."
            )
        if strategy is None:
            strategy = default_strategy
        elif not callable(strategy):
            raise ValueError(
                f"strategy must be a Strategy or an async (key, rate, backend, cost) callable, got {strategy!r}."
            )
        if isinstance(strategy, Strategy) and not rate.unlimited:
            # Surface invalid strategy/rate combinations now rather than on the first request.
            strategy.decide(None, 0, rate, 1)
        if on_backend_error is not None:
            check_on_error(on_backend_error)
        check_charge_when(charge_when, strategy)
        if key_by not in _KEY_BY:
            raise ValueError(f"key_by must be 'route' or 'path', got {key_by!r}.")
        if identifier is not None and not callable(identifier):
            raise ValueError(f"identifier must be an async callable, got {identifier!r}.")
        if handle_throttled is not None and not callable(handle_throttled):
            raise ValueError(
                f"handle_throttled must be an async callable, got {handle_throttled!r}."
            )

        self._plan: ThrottlePlan | None = None
        self.uid = uid
        self.rate: Rate = rate
        self._identifier: Identifier | None = identifier
        self._handle_throttled: ThrottledHandler | None = handle_throttled
        self.strategy = strategy
        self._backend = backend
        self.cost = cost
        self.context_backend = context_backend
        self.min_wait_period = min_wait_period
        self.headers: dict[str, str] = dict(headers or {})
        self.on_backend_error = on_backend_error
        self.legacy_headers = legacy_headers
        self.key_by = key_by
        for name, flag in (("shadow", shadow), ("shadow_headers", shadow_headers)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}.")
        self.shadow = shadow
        self.shadow_headers = shadow_headers
        #: ``(connection, status_code) -> bool``: False refunds the request (traffik.charging).
        self.charge_when = charge_when
        if charge_when is not None:
            self.needs_lifecycle = True
        self._custom_key = type(self).get_key is not BaseThrottle.get_key
        if self._dependency_signature is not None:
            signature = self._dependency_signature
            if self.needs_lifecycle:
                # Depends(throttle) then also solves the request-scoped lifecycle.
                signature = with_lifecycle_parameter(signature)
            self.__signature__ = signature

    def __setattr__(self, name: str, value: typing.Any) -> None:
        # Assigning an option the plan is built from rebuilds the plan at the next call.
        object.__setattr__(self, name, value)
        if name in PLANNED:
            object.__setattr__(self, "_plan", None)

    def _make_plan(self) -> ThrottlePlan:
        """Settle the constant part of the request path (see :mod:`traffik._plan`)."""
        plan = ThrottlePlan(
            uid=self.uid,
            rate=self.rate,
            cost=self.cost,
            strategy=self.strategy,
            backend=self._backend,
            identifier=self._identifier,
            handler=self._handle_throttled,
            policy=self.on_backend_error,
            legacy=self.legacy_headers,
            min_wait=self.min_wait_period,
            headers=self.headers,
            by_template=self.key_by == "route",
            custom_key=self._custom_key,
            shadow=self.shadow,
            shadow_headers=self.shadow_headers,
        )
        self._plan = plan
        return plan

    def __repr__(self) -> str:
        return f"{type(self).__name__}(uid={self.uid!r}, rate={self.rate})"

    @property
    def backend(self) -> ThrottleBackend[typing.Any, typing.Any] | None:
        """The throttle's own backend (``backend=``); without one, the backend active where
        it is read (inside ``async with backend(...)``), as in traffik 1.0.0b2; else None.

        A throttle without its own backend resolves one on every call (the active
        context, then the app's); reading this property never binds one.
        """
        backend = self._backend
        return backend if backend is not None else throttle_backend_ctx.get()

    @backend.setter
    def backend(self, backend: ThrottleBackend[typing.Any, typing.Any] | None) -> None:
        self._backend = backend

    @property
    def identifier(self) -> Identifier | None:
        """The throttle's own identifier; without one, its backend's (:attr:`backend`:
        its own, or the one active where it is read), as in traffik 1.0.0b2; else None."""
        own = self._identifier
        if own is not None:
            return own
        backend = self.backend
        return backend.identifier if backend is not None else None

    @identifier.setter
    def identifier(self, identifier: Identifier | None) -> None:
        self._identifier = identifier

    @property
    def handle_throttled(self) -> ThrottledHandler | None:
        """The throttle's own refusal handler; without one, its backend's (as
        :attr:`identifier`); else None."""
        own = self._handle_throttled
        if own is not None:
            return own
        backend = self.backend
        return backend.handle_throttled if backend is not None else None

    @handle_throttled.setter
    def handle_throttled(self, handler: ThrottledHandler | None) -> None:
        self._handle_throttled = handler

    # -- keys -------------------------------------------------------------------

    async def get_key(
        self, connection: HTTPConnectionT, *args: typing.Any, **kwargs: typing.Any
    ) -> str:
        """The route part of the throttle key; override for custom keying.

        Default: the method and route template (or path, with ``key_by="path"``),
        plus the ``context_key`` keyword when given. Overrides' results are
        bounded like every other key part.
        """
        plan = self._plan or self._make_plan()
        return plan.routes.route_key(connection.scope, kwargs.get("context_key"))

    async def _key(
        self, connection: HTTPConnectionT, identity: typing.Any, context_key: typing.Any
    ) -> str:
        plan = self._plan or self._make_plan()
        if plan.custom_key:
            if context_key is None:
                raw = await self.get_key(connection)
            else:
                raw = await self.get_key(connection, context_key=context_key)
            return f"{plan.prefix}{route_part(str(raw))}:{memo_identity_part(identity)}"
        route = plan.routes.route_key(connection.scope, context_key)
        return f"{plan.prefix}{route}:{memo_identity_part(identity)}"

    # -- resolution --------------------------------------------------------------

    def _resolve_backend(
        self, connection: HTTPConnection
    ) -> ThrottleBackend[typing.Any, typing.Any]:
        backend = self._backend
        if backend is None:
            # Resolved on every call, never cached: apps and tests may come and go.
            backend = get_throttle_backend(connection.scope.get("app"))
        if backend is None:
            raise ConfigurationError(
                f"No backend is available for throttle {self.uid!r}. Pass backend= to the "
                f"throttle, start the app with lifespan=backend.lifespan (or enter "
                f"'async with backend(app)'), or call it inside 'async with backend():'."
            )
        return backend

    async def _identity(
        self, connection: HTTPConnection, backend: ThrottleBackend[typing.Any, typing.Any]
    ) -> typing.Any:
        identifier = self._identifier or backend.identifier
        if identifier is connection_identifier:
            return _default_identity(connection)
        try:
            return await identifier(connection)
        except AnonymousConnection:
            _warn_anonymous()
            return ANONYMOUS

    # -- the call ------------------------------------------------------------------

    async def _decide(
        self, connection: HTTPConnectionT, cost: int | None, context_key: typing.Any
    ) -> Decision | None:
        """Identity -> key -> one decision -> one record on ``scope["state"]``.

        Returns the recorded decision, or None when the connection is exempt
        (``Rate()``, or an identifier returning :data:`~traffik.types.UNLIMITED`):
        nothing was charged or recorded then. Refuses nothing: see :meth:`_throttle`.
        In shadow (the throttle's ``shadow`` or its backend's), the decision is taken,
        charged and reported as usual, then never refused: None is returned (and
        nothing recorded), or with ``shadow_headers`` the decision is recorded and
        an admitted copy returned.
        """
        plan = self._plan or self._make_plan()
        if plan.unlimited:
            return None
        cost = plan.cost if cost is None else check_cost(cost)
        backend = plan.backend
        if backend is None:
            backend = self._resolve_backend(connection)
        identifier = plan.identifier or backend.identifier
        identity: typing.Any
        try:
            if identifier is connection_identifier:
                # The default identifier, without a coroutine of its own.
                identity = _identity_of(connection)
            else:
                identity = await identifier(connection)
                if identity is UNLIMITED:
                    return None
        except AnonymousConnection:
            _warn_anonymous()
            identity = ANONYMOUS
        uid = plan.uid
        scope = connection.scope
        if plan.custom_key:
            key = await self._key(connection, identity, context_key)
        else:
            route = plan.routes.route_key(scope, context_key)
            key = f"{plan.prefix}{route}:{memo_identity_part(identity)}"
        # Taken before the decision: a refund's age then errs long (traffik._charges).
        started = monotonic_ms()
        # Built-in and custom strategies take the same failure path (traffik.failures).
        shadow = plan.shadow or backend.shadow
        decision = await decide_with_policy(
            backend,
            key,
            plan.strategy,
            plan.rate,
            cost,
            policy=plan.policy,
            name=uid,
            shadow=shadow,
        )
        if decision.limit != plan.limit:
            # Burst strategies (GCRA burst=, token bucket burst_size=, leaky bucket
            # queue_size=) decide with their capacity as the limit. The recorded
            # decision, and so RateLimit-Policy's q, carries the configured rate
            # instead: "5/s" with burst=1 reads q=5;w=1, not q=1;w=1 ("1 per
            # second"). r still counts the units available now (up to the burst).
            decision = decision._replace(limit=plan.limit)
        if shadow and not plan.shadow_headers:
            # Charged and reported (decide_with_policy); nothing recorded, so clients
            # see none of its fields, and None: nothing refuses.
            if decision.allowed:
                if scope.get("state") is None:
                    scope["state"] = {}
                self._charged(connection, scope["state"], uid, backend, key, cost, started)
            return None
        # The record (headers.record_in_state, inlined: one call less per request).
        state = scope.get("state")
        if state is None:
            scope["state"] = {DECISIONS_STATE_KEY: {uid: decision}}
        else:
            decisions = state.get(DECISIONS_STATE_KEY)
            if decisions is None:
                state[DECISIONS_STATE_KEY] = {uid: decision}
            else:
                decisions[uid] = decision
        if plan.legacy:
            scope["state"][LEGACY_STATE_KEY] = True
        if decision.allowed:
            self._charged(connection, scope["state"], uid, backend, key, cost, started)
        elif shadow:
            return decision._replace(allowed=True)  # recorded as it is; never refused
        return decision

    def _charged(
        self,
        connection: HTTPConnectionT,
        state: dict[str, typing.Any],
        uid: str,
        backend: ThrottleBackend[typing.Any, typing.Any],
        key: str,
        cost: int,
        started: int,
    ) -> None:
        # What a refund gives back to (traffik.charging), and charge_when's refund.
        remember_charge(state, uid, backend, key, cost, started)
        if self.charge_when is not None:
            charge_by_status(self, connection, self.charge_when)

    async def _refuse(
        self,
        connection: HTTPConnectionT,
        decision: Decision,
        context_key: typing.Any,
        args: tuple[typing.Any, ...],
        kwargs: dict[str, typing.Any],
    ) -> None:
        """Answer a refusal: the wait to tell, the refusal's header fields, the handler."""
        plan = self._plan or self._make_plan()
        # Whole milliseconds (an int) for a finite wait, inf when it can never be admitted.
        wait: float = math.inf if decision.retry_after_ms == NEVER else decision.retry_after_ms
        if plan.min_wait is not None and wait < plan.min_wait:
            wait = math.ceil(plan.min_wait)
        if "headers" not in kwargs:
            state = connection.scope["state"]
            headers = dict(plan.headers)
            legacy = plan.legacy or bool(state.get(LEGACY_STATE_KEY))
            headers.update(rate_limit_headers(state[DECISIONS_STATE_KEY], legacy=legacy))
            kwargs["headers"] = headers
        if context_key is not None:
            kwargs.setdefault("context_key", context_key)
        handler = plan.handler
        if handler is None:
            handler = self._resolve_backend(connection).handle_throttled
        await handler(connection, wait, *args, **kwargs)

    async def _throttle(
        self,
        connection: HTTPConnectionT,
        cost: int | None,
        context_key: typing.Any,
        response: Response | None,
        args: tuple[typing.Any, ...],
        kwargs: dict[str, typing.Any],
    ) -> HTTPConnectionT:
        # The request path: one decision (_decide), then what to do with it.
        decision = await self._decide(connection, cost, context_key)
        if decision is None:
            return connection
        if decision.allowed:
            if response is not None:
                state = connection.scope["state"]
                state[RESPONSE_STATE_KEY] = response  # adjustments rewrite its fields
                write_recorded_fields(state, response)
            return connection
        await self._refuse(connection, decision, context_key, args, kwargs)
        return connection

    async def __call__(
        self,
        connection: HTTPConnectionT,
        cost: int | None = None,
        *args: typing.Any,
        **kwargs: typing.Any,
    ) -> HTTPConnectionT:
        """Charge ``cost`` (default: the throttle's) to this connection; refuse via the handler."""
        return await self._throttle(
            connection, cost, kwargs.pop("context_key", None), None, args, kwargs
        )

    hit = __call__

    async def refund(
        self, connection: HTTPConnectionT, cost: int = 1, *, context_key: typing.Any = None
    ) -> Decision | None:
        """Give ``cost`` units back to the key this throttle charged for ``connection``.

        Returns the quota after the refund, or None when nothing was given back
        (see :func:`traffik.charging.refund`). Raises ``ValueError`` for a cost that
        is not a positive int, ``ConfigurationError`` for a custom strategy.
        """
        return await refund(self, connection, cost, context_key=context_key)

    async def reserve(self, connection: HTTPConnectionT, cost: int) -> Reservation:
        """Charge an estimated ``cost`` now (refused exactly like a call with that cost);
        ``await reservation.settle(actual)`` charges or gives back the difference."""
        return await reserve(self, connection, cost)

    async def stat(
        self, connection: HTTPConnectionT, context_key: typing.Any = None
    ) -> StrategyStat | None:
        """A snapshot for this connection (units left, wait), recording no hit.

        None when the client is exempt or the strategy cannot tell.
        """
        backend = self._resolve_backend(connection)
        identity = await self._identity(connection, backend)
        if identity is UNLIMITED:
            return None
        key = await self._key(connection, identity, context_key)
        get_stat = getattr(self.strategy, "get_stat", None)
        if get_stat is None:
            return None
        return typing.cast("StrategyStat", await get_stat(key, self.rate, backend))

    # -- one client, for operators ---------------------------------------------------

    async def client_stat(
        self,
        identity: typing.Any,
        route: str,
        *,
        method: str = "GET",
        context_key: typing.Any = None,
        backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
        app: typing.Any = None,
        area: str | None = None,
        key_by: str | None = None,
    ) -> StrategyStat | None:
        """The quota of client ``identity`` on ``route``, read without charging it.

        ``identity`` is what the identifier returns for that client: its address for
        the default one (an IPv6 address is grouped into its network as requests
        are), or your identifier's value. ``route`` is the route template
        (``"/items/{item_id}"``; the path with ``key_by="path"``, or what an
        overridden ``get_key`` returns), ``method`` its HTTP method. The backend is
        ``backend``, else the throttle's, else ``app``'s. ``area``: the area a
        ``ThrottleMiddleware`` rule keys by (``MiddlewareThrottle.client_stat``
        passes it; ``route`` is then ignored). ``key_by``: how ``route`` is keyed,
        ``"route"`` or ``"path"`` (default: the throttle's ``key_by``; a middleware
        rule with ``per_path=True`` runs before routing, so it keys by path). None
        when the strategy cannot tell (a custom strategy without ``get_stat``).
        """
        from traffik._clients import resolve

        found, key = resolve(self, identity, route, method, context_key, backend, app, area, key_by)
        get_stat = getattr(self.strategy, "get_stat", None)
        if get_stat is None:
            return None
        return typing.cast("StrategyStat", await get_stat(key, self.rate, found))

    async def reset_client(
        self,
        identity: typing.Any,
        route: str,
        *,
        method: str = "GET",
        context_key: typing.Any = None,
        backend: ThrottleBackend[typing.Any, typing.Any] | None = None,
        app: typing.Any = None,
        area: str | None = None,
        key_by: str | None = None,
    ) -> None:
        """Give client ``identity`` a fresh quota on ``route`` (arguments as in
        :meth:`client_stat`), and unblock it.

        This process's block cache forgets the client at once; another process
        answers from its own block cache for at most one second before asking the
        backend again.
        Needs a built-in strategy (a custom one keeps its state where it chooses).
        """
        from traffik._clients import resolve
        from traffik.failures import forget_client_refusal

        strategy = self.strategy
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                f"reset_client() needs a built-in strategy; throttle {self.uid!r} has the "
                f"custom {strategy!r}, which keeps its state where it chooses: reset it there."
            )
        found, key = resolve(self, identity, route, method, context_key, backend, app, area, key_by)
        await found.reset_key(key, strategy, self.rate)
        forget_client_refusal(found, key, strategy, self.rate)


class HTTPThrottle(BaseThrottle[Request]):
    """Throttle HTTP requests: ``Depends(throttle)`` in FastAPI, or ``await throttle(request)``.

    As a dependency, the RateLimit fields are written on FastAPI's injected
    response. ``await throttle(request, cost=5)`` charges 5 units for this call.
    """

    _dependency_signature = _HTTP_SIGNATURE

    async def __call__(
        self,
        connection: Request | None = None,
        cost: int | None = None,
        *args: typing.Any,
        request: Request | None = None,
        response: Response | None = None,
        traffik_lifecycle: typing.Any = None,
        **kwargs: typing.Any,
    ) -> Request:
        """Charge ``cost`` to ``connection`` (FastAPI passes ``request``/``response``, and
        ``traffik_lifecycle`` when the throttle ``needs_lifecycle``)."""
        if connection is None:
            if request is None:
                raise TypeError("HTTPThrottle needs the request: await throttle(request).")
            connection = request
        return await self._throttle(connection, cost, None, response, args, kwargs)

    hit = __call__


class WebSocketThrottle(BaseThrottle[WebSocket]):
    """Throttle WebSocket messages: call ``await throttle(websocket)`` once per message.

    A refusal raises :class:`~traffik.exceptions.ConnectionThrottled` inside the
    endpoint (catch it to answer on the socket). ``context_key`` separates budgets
    within one connection's route (for example per message type).
    """

    _dependency_signature = _WS_SIGNATURE
    _scope_type = "websocket"

    async def __call__(
        self,
        connection: WebSocket | None = None,
        cost: int | None = None,
        context_key: str | None = None,
        *args: typing.Any,
        websocket: WebSocket | None = None,
        traffik_lifecycle: typing.Any = None,
        **kwargs: typing.Any,
    ) -> WebSocket:
        """Charge ``cost`` to ``connection`` under ``context_key`` (FastAPI passes ``websocket``)."""
        if connection is None:
            if websocket is None:
                raise TypeError("WebSocketThrottle needs the websocket: await throttle(websocket).")
            connection = websocket
        return await self._throttle(connection, cost, context_key, None, args, kwargs)

    hit = __call__
