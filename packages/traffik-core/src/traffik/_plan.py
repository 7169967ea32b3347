"""A throttle's plan: everything about its request path that is settled before a request.

:class:`~traffik.throttles.BaseThrottle` builds one :class:`ThrottlePlan` at its
first call (again after one of its options is assigned) and reads only the plan on
the request path. What depends on the connection (the backend when the throttle
has none of its own, the identity, the route part of the key) is looked up per
request; everything else is here.

Extending the request path (maintainers): add the setting to the plan here, read
it in ``BaseThrottle._decide`` (identity -> key -> decision -> record) or
``BaseThrottle._throttle`` (what to do with the decision), and list the throttle
attribute it comes from in ``PLANNED`` so that assigning it rebuilds the plan.
"""

from __future__ import annotations

import typing

from traffik._keys import RouteKeys, route_part
from traffik.strategies import Strategy

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.failures import OnError
    from traffik.rates import Rate
    from traffik.types import Identifier, ThrottledHandler

__all__ = ["PLANNED", "ThrottlePlan"]

#: Throttle attributes a plan is built from: assigning one of them rebuilds the plan.
PLANNED = frozenset(
    {
        "uid",
        "rate",
        "identifier",
        "handle_throttled",
        "strategy",
        "backend",
        "_backend",
        "_identifier",
        "_handle_throttled",
        "cost",
        "min_wait_period",
        "headers",
        "on_backend_error",
        "legacy_headers",
        "key_by",
        "shadow",
        "shadow_headers",
    }
)


class ThrottlePlan:
    """The constant part of one throttle's request path.

    - ``uid``, ``rate``, ``limit`` (``rate.limit``), ``unlimited``: ``Rate()``
      admits everything without a backend call;
    - ``cost``: the default units of a call;
    - ``strategy`` and ``builtin`` (a :class:`~traffik.strategies.Strategy`, whose
      decision the backend takes in one step, or a custom ``async (key, rate,
      backend, cost) -> wait_ms``);
    - ``backend``: the throttle's own (``backend=``), else None (resolved per call);
    - ``identifier``, ``handler``: the throttle's own, else None (the backend's);
    - ``policy``: the failure action (``on_backend_error``), None for the backend's;
    - ``prefix``: ``"{uid}:"`` as it starts every key; ``routes``: the route part
      per scope (cached per route); ``custom_key``: ``get_key`` is overridden;
    - ``legacy``, ``min_wait``, ``headers``: for the recorded decision and refusals;
    - ``shadow``, ``shadow_headers``: decide but never refuse (and whether its fields
      are sent); a backend's ``shadow`` adds to it per request.
    """

    __slots__ = (
        "backend",
        "builtin",
        "cost",
        "custom_key",
        "handler",
        "headers",
        "identifier",
        "legacy",
        "limit",
        "min_wait",
        "policy",
        "prefix",
        "rate",
        "routes",
        "shadow",
        "shadow_headers",
        "strategy",
        "uid",
        "unlimited",
    )

    def __init__(
        self,
        *,
        uid: str,
        rate: Rate,
        cost: int,
        strategy: typing.Any,
        backend: ThrottleBackend[typing.Any, typing.Any] | None,
        identifier: Identifier | None,
        handler: ThrottledHandler | None,
        policy: OnError | None,
        legacy: bool,
        min_wait: float | None,
        headers: dict[str, str],
        by_template: bool,
        custom_key: bool,
        shadow: bool = False,
        shadow_headers: bool = False,
    ) -> None:
        self.uid = uid
        self.rate = rate
        self.limit = rate.limit
        self.unlimited = rate.unlimited
        self.cost = cost
        self.strategy = strategy
        self.builtin = isinstance(strategy, Strategy)
        self.backend = backend
        self.identifier = identifier
        self.handler = handler
        self.policy = policy
        self.legacy = legacy
        self.min_wait = min_wait
        self.headers = headers
        self.prefix = f"{route_part(uid)}:"
        self.routes = RouteKeys(by_template=by_template)
        self.custom_key = custom_key
        self.shadow = shadow
        self.shadow_headers = shadow_headers
