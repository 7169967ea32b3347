"""RateLimit response fields, rendered from the decisions that admitted or refused a request.

Every throttle records its :class:`~traffik.decisions.Decision` on the connection
(:func:`record_decision`; read them back with :func:`get_decisions`). Headers are
rendered from those decisions only, never from a second read of the storage:

- ``RateLimit-Policy: "<uid>";q=<quota>;w=<window s>`` and
  ``RateLimit: "<uid>";r=<remaining>;t=<seconds>`` per draft-ietf-httpapi-ratelimit-headers
  (Structured Field lists, one item per throttle, most restrictive first);
- ``Retry-After`` (delta seconds, rounded up) on refusals, from the throttle's handler;
- optionally the legacy ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` (Reset in
  delta seconds, not an epoch time) for the most restrictive throttle.

``t`` is the number of seconds until the quota is restored for an admitted
request, and until the refused request would be admitted for a refusal, so it
never points later than ``Retry-After``.

FastAPI dependencies put the fields on the injected response. For routes that
call ``await throttle(request)`` directly, add :class:`RateLimitHeadersMiddleware`,
which writes them on every response of a request that recorded decisions.

For maintainers: the fields are merged into a response in one place.
:func:`rate_limit_fields` renders raw ASGI pairs (one decision, the usual case,
costs a cached ``RateLimit-Policy`` value and one formatted ``RateLimit`` value);
:func:`merge_fields` drops every RateLimit field already present and appends the
new ones. Everything that writes fields goes through them: the throttle on
FastAPI's injected response and :func:`write_recorded_fields` (``traffik.fastapi``,
the Starlette decorator), :func:`message_with_fields` on an ASGI response start
(:class:`RateLimitHeadersMiddleware`, ``traffik.starlette``'s middleware), and
:func:`set_response_headers`. Do not add another copy of the loop.
"""

from __future__ import annotations

import functools
import operator
import typing
from collections.abc import Iterable, Mapping

from traffik.decisions import NEVER, Decision

if typing.TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DECISIONS_STATE_KEY",
    "LEGACY_STATE_KEY",
    "MANAGED_FIELDS",
    "RateLimitHeadersMiddleware",
    "get_decisions",
    "merge_fields",
    "message_with_fields",
    "rate_limit_fields",
    "rate_limit_headers",
    "record_decision",
    "record_in_state",
    "recorded_fields",
    "set_response_headers",
    "sf_string",
    "write_recorded_fields",
]

#: Key of ``scope["state"]`` (so ``request.state.traffik_decisions``): uid -> Decision.
DECISIONS_STATE_KEY = "traffik_decisions"
#: Key of ``scope["state"]`` set when a throttle asked for the legacy X-RateLimit fields.
LEGACY_STATE_KEY = "traffik_legacy_headers"

#: Header fields this module writes (lower case), replaced as a whole by the middleware.
MANAGED_FIELDS = frozenset(
    {
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)

_MANAGED_RAW = frozenset(name.encode("latin-1") for name in MANAGED_FIELDS)

_HUGE = 1 << 62

_name_of = operator.itemgetter(0)


@functools.lru_cache(maxsize=1024)
def sf_string(name: str) -> str:
    """``name`` as a Structured Field string: quoted, with ``"`` and ``\\`` escaped.

    Characters an sf-string cannot hold (outside printable ASCII) become ``?``.
    """
    out = []
    for char in name:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.append("?")
    return '"' + "".join(out) + '"'


def _state(connection: typing.Any) -> dict[str, typing.Any]:
    scope = connection if isinstance(connection, dict) else connection.scope
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    return typing.cast("dict[str, typing.Any]", state)


def record_decision(
    connection: typing.Any, uid: str, decision: Decision, legacy: bool = False
) -> None:
    """Remember that throttle ``uid`` decided ``decision`` for this connection (or ASGI scope).

    A later decision of the same throttle replaces the earlier one.
    """
    record_in_state(_state(connection), uid, decision, legacy)


def record_in_state(
    state: dict[str, typing.Any], uid: str, decision: Decision, legacy: bool = False
) -> dict[str, Decision]:
    """:func:`record_decision` on ``scope["state"]`` itself; returns the recorded decisions."""
    decisions: dict[str, Decision] | None = state.get(DECISIONS_STATE_KEY)
    if decisions is None:
        decisions = state[DECISIONS_STATE_KEY] = {uid: decision}
    else:
        decisions[uid] = decision
    if legacy:
        state[LEGACY_STATE_KEY] = True
    return decisions


def get_decisions(connection: typing.Any) -> dict[str, Decision]:
    """The decisions recorded on this connection (or scope), by throttle uid, in call order."""
    scope = connection if isinstance(connection, dict) else connection.scope
    state = scope.get("state")
    if not state:
        return {}
    return dict(state.get(DECISIONS_STATE_KEY) or {})


@functools.lru_cache(maxsize=4096)
def _policy_item(uid: str, limit: int, window_ms: int) -> str:
    # Constant per throttle (and strategy): rendered once.
    return f"{sf_string(uid)};q={limit};w={max(1, -(-window_ms // 1000))}"


#: (uid, limit, window_ms) -> the encoded RateLimit-Policy value of a request with
#: that one decision, and the encoded policy name: constant per throttle, so built
#: once (a plain dict: one lookup per request, bounded like the other caches).
_single: dict[tuple[str, int, int], tuple[bytes, str]] = {}
_SINGLE_MAX = 4096


def _single_raw(uid: str, limit: int, window_ms: int) -> tuple[bytes, str]:
    key = (uid, limit, window_ms)
    found = _single.get(key)
    if found is None:
        if len(_single) >= _SINGLE_MAX:
            _single.clear()
        found = _single[key] = (
            _policy_item(uid, limit, window_ms).encode("latin-1"),
            sf_string(uid),
        )
    return found


def set_response_headers(response: typing.Any, fields: Iterable[tuple[str, str]]) -> None:
    """Put ``fields`` on a Starlette ``response``, replacing fields of the same names."""
    encoded = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in fields]
    _write(response, encoded, frozenset(name for name, _ in encoded))


def _t(decision: Decision) -> int:
    if decision.allowed or decision.retry_after_ms == NEVER:
        return -(-decision.reset_ms // 1000)
    return -(-decision.retry_after_ms // 1000)


def _severity(item: tuple[str, Decision]) -> tuple[bool, int, int]:
    decision = item[1]
    remaining = decision.remaining if decision.remaining >= 0 else _HUGE
    return (decision.allowed, remaining, -_t(decision))


def rate_limit_headers(
    decisions: Mapping[str, Decision] | Iterable[tuple[str, Decision]],
    legacy: bool = False,
    retry_after: bool = False,
) -> list[tuple[str, str]]:
    """The response fields for ``decisions`` (uid -> Decision, or pairs), most restrictive first.

    A decision with a negative ``remaining`` (a custom strategy that cannot tell)
    appears in ``RateLimit-Policy`` only. ``retry_after=True`` adds ``Retry-After``
    (the longest wait of the refusals) when some decision refused.
    """
    items = list(decisions.items() if isinstance(decisions, Mapping) else decisions)
    if not items:
        return []
    if len(items) > 1:
        items.sort(key=_severity)
    elif not legacy:
        # One decision (a refusal's usual case): no lists to join.
        uid, d = items[0]
        single = [("RateLimit-Policy", _policy_item(uid, d.limit, d.window_ms))]
        if d.remaining >= 0:
            single.append(("RateLimit", f"{sf_string(uid)};r={d.remaining};t={_t(d)}"))
        if retry_after and not d.allowed and d.retry_after_ms != NEVER:
            single.append(("Retry-After", str(-(-d.retry_after_ms // 1000))))
        return single
    policy = []
    current = []
    first: tuple[int, int, int] | None = None
    wait = -1
    for uid, d in items:
        policy.append(_policy_item(uid, d.limit, d.window_ms))
        if d.remaining >= 0:
            t = _t(d)
            current.append(f"{sf_string(uid)};r={d.remaining};t={t}")
            if first is None:
                first = (d.limit, d.remaining, t)
        if not d.allowed and d.retry_after_ms != NEVER:
            wait = max(wait, -(-d.retry_after_ms // 1000))
    headers = [("RateLimit-Policy", ",".join(policy))]
    if current:
        headers.append(("RateLimit", ",".join(current)))
    if legacy and first is not None:
        headers.append(("X-RateLimit-Limit", str(first[0])))
        headers.append(("X-RateLimit-Remaining", str(first[1])))
        headers.append(("X-RateLimit-Reset", str(first[2])))
    if retry_after and wait >= 0:
        headers.append(("Retry-After", str(wait)))
    return headers


def rate_limit_fields(
    decisions: Mapping[str, Decision], legacy: bool = False
) -> list[tuple[bytes, bytes]]:
    """:func:`rate_limit_headers` as raw ASGI header pairs (lower-case names, latin-1 bytes).

    The request path renders through here: one decision (the usual case) costs a
    cached policy value and one formatted ``RateLimit`` value, several go through
    :func:`rate_limit_headers`.
    """
    if len(decisions) == 1 and not legacy:
        for uid, d in decisions.items():
            found = _single.get((uid, d.limit, d.window_ms))
            policy, name = _single_raw(uid, d.limit, d.window_ms) if found is None else found
            if d.remaining < 0:
                return [(b"ratelimit-policy", policy)]
            if d.allowed or d.retry_after_ms == NEVER:
                t = (d.reset_ms + 999) // 1000
            else:
                t = (d.retry_after_ms + 999) // 1000
            # An f-string and encode() cost less than bytes %-formatting; the name is
            # ASCII (sf_string), so UTF-8 and latin-1 agree.
            return [
                (b"ratelimit-policy", policy),
                (b"ratelimit", f"{name};r={d.remaining};t={t}".encode()),
            ]
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in rate_limit_headers(decisions, legacy=legacy)
    ]


def merge_fields(
    raw: Iterable[tuple[bytes, bytes]],
    fields: list[tuple[bytes, bytes]],
    replace: frozenset[bytes] = _MANAGED_RAW,
) -> list[tuple[bytes, bytes]]:
    """``raw`` (ASGI header pairs) without the fields named in ``replace``, then ``fields``.

    The one place where RateLimit fields are merged into a response: every
    integration (dependency, decorators, middleware) goes through it, so fields a
    throttle already wrote (for instance on a 429) are replaced, never duplicated.
    ``replace`` defaults to every RateLimit field (:data:`MANAGED_FIELDS`).
    """
    kept = list(raw)
    # Usually none of them is there yet: checked without a Python-level loop.
    if not replace.isdisjoint(map(bytes.lower, map(_name_of, kept))):
        kept = [item for item in kept if item[0].lower() not in replace]
    kept.extend(fields)
    return kept


def _write(
    response: typing.Any, fields: list[tuple[bytes, bytes]], replace: frozenset[bytes]
) -> None:
    raw: list[tuple[bytes, bytes]] = response.raw_headers
    if not raw or replace.isdisjoint(map(bytes.lower, map(_name_of, raw))):
        raw.extend(fields)
    else:
        # In place: ``response.headers`` shares this list.
        raw[:] = merge_fields(raw, fields, replace)


def recorded_fields(
    state: Mapping[str, typing.Any] | None, legacy: bool = False
) -> list[tuple[bytes, bytes]] | None:
    """The raw RateLimit fields for the decisions recorded in ``state`` (``scope["state"]``).

    None when no decision was recorded. The legacy fields are included when
    ``legacy`` or when a throttle of the request asked for them.
    """
    if not state:
        return None
    decisions = state.get(DECISIONS_STATE_KEY)
    if not decisions:
        return None
    return rate_limit_fields(decisions, legacy or bool(state.get(LEGACY_STATE_KEY)))


def write_recorded_fields(
    state: Mapping[str, typing.Any] | None, response: typing.Any, legacy: bool = False
) -> None:
    """Put the RateLimit fields of the decisions in ``state`` on a Starlette ``response``.

    Fields of the same names already on the response are replaced (applying this
    twice never duplicates a field). Nothing happens when no decision was recorded.
    """
    if not state:
        return
    decisions = state.get(DECISIONS_STATE_KEY)
    if decisions:
        legacy = legacy or bool(state.get(LEGACY_STATE_KEY))
        _write(response, rate_limit_fields(decisions, legacy), _MANAGED_RAW)


def message_with_fields(
    message: Message, state: Mapping[str, typing.Any] | None, legacy: bool = False
) -> Message:
    """An ASGI response-start ``message`` with the RateLimit fields of ``state`` merged in.

    The message itself is left alone (its header list may be a response's own):
    a new message is returned when there are fields to add, else ``message``.
    """
    if not state:
        return message
    decisions = state.get(DECISIONS_STATE_KEY)
    if not decisions:
        return message
    fields = rate_limit_fields(decisions, legacy or bool(state.get(LEGACY_STATE_KEY)))
    raw = message.get("headers")
    if raw:
        if _MANAGED_RAW.isdisjoint(map(bytes.lower, map(_name_of, raw))):
            fields = [*raw, *fields]
        else:
            fields = merge_fields(raw, fields)
    return {**message, "headers": fields}


class RateLimitHeadersMiddleware:
    """Pure ASGI middleware: writes the RateLimit fields of the recorded decisions on the response.

    Use it when routes call ``await throttle(request)`` themselves, or when FastAPI
    routes return a ``Response`` object (FastAPI drops the headers of the injected
    response then). Fields written earlier by a throttle are replaced by the
    rendering of every decision recorded for the request. ``legacy=True`` adds the
    ``X-RateLimit-*`` fields for every request.
    """

    def __init__(self, app: ASGIApp, legacy: bool = False) -> None:
        self.app = app
        self.legacy = legacy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            # Created here so inner apps that copy the scope still share this dict.
            state = scope["state"] = {}

        legacy = self.legacy

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = message_with_fields(message, state, legacy)
            await send(message)

        await self.app(scope, receive, send_with_headers)
