"""Bounded, unambiguous throttle keys built from partly client-controlled text.

A throttle key is ``{uid}:{route}:{identity}``. Every part reaches storage only
if it is short and made of a safe set of characters (no spaces or control
characters, no ``{``/``}``, which Redis Cluster reads as a hash tag, nothing
Memcached rejects); otherwise it is replaced by ``#`` and a digest. ``#`` is in
no safe set, so a digest never equals a literal part. The route part contains no
``:``, so identities (which may, as IPv6 networks do) cannot shift the boundary.
"""

from __future__ import annotations

import hashlib
import re
import typing

__all__ = [
    "MAX_PART",
    "RouteKeys",
    "digest",
    "identity_part",
    "memo_identity_part",
    "route_part",
    "template_part",
]

#: Longest literal part; longer ones are digested.
MAX_PART = 100

#: The method part of keys. HEAD is keyed as GET: Starlette answers HEAD with the GET
#: endpoint of a route, so a HEAD request spends the GET budget (a client alternating
#: GET and HEAD must not get two budgets). Any other method is keyed as "OTHER".
_METHODS = {
    **{m: m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")},
    "HEAD": "GET",
}
_ROUTE_CACHE_SIZE = 1024
_IDENTITY_CACHE_SIZE = 8192

# RFC 3986 path characters without ":" and "%", plus the "|" context separator
# being excluded: raw paths and context keys use this set.
_ROUTE_SAFE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=@/\-]*")
# Route templates may also use "<" and ">" (their "{" and "}" are rewritten to them);
# raw paths never contain them literally, so a raw path cannot equal a template.
_TEMPLATE_SAFE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=@/<>\-]*")
# Identities may contain ":" (IPv6, "user:42") and "|".
_IDENTITY_SAFE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=@/:|\-]*")


def digest(text: str) -> str:
    """``#`` and a 128-bit hex digest of ``text``."""
    return "#" + hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def route_part(text: str) -> str:
    """``text`` (a raw path or context key) if short and safe, else its digest."""
    if len(text) <= MAX_PART and _ROUTE_SAFE.fullmatch(text):
        return text
    return digest(text)


def template_part(template: str) -> str:
    """A route template with ``{param}`` written ``<param>``, bounded like :func:`route_part`."""
    text = template.replace("{", "<").replace("}", ">")
    if len(text) <= MAX_PART and _TEMPLATE_SAFE.fullmatch(text):
        return text
    # Prefixed so that a digested template never equals a digested raw path.
    return digest("route-template:" + template)


def identity_part(text: str) -> str:
    """A client identity if short and safe, else its digest."""
    if len(text) <= MAX_PART and _IDENTITY_SAFE.fullmatch(text):
        return text
    return digest(text)


_identity_parts: dict[str, str] = {}


def memo_identity_part(identity: typing.Any) -> str:
    """:func:`identity_part` of ``str(identity)``, memoised (bounded) for the hot path."""
    text = identity if type(identity) is str else str(identity)
    part = _identity_parts.get(text)
    if part is None:
        part = identity_part(text)
        if len(_identity_parts) >= _IDENTITY_CACHE_SIZE:
            _identity_parts.clear()
        _identity_parts[text] = part
    return part


#: area -> its route part ("*" + the bounded area), for middleware rules.
_area_parts: dict[str, str] = {}

#: Scope key naming the route part explicitly (used by middleware for whole areas).
ROUTE_KEY_SCOPE = "traffik.route_key"


class RouteKeys:
    """The route part of a throttle key for an ASGI scope, with a bounded cache per throttle.

    ``{METHOD}{template}`` when the route is known and ``by_template`` (so every
    path of a route shares it), else ``{METHOD}{path}``; WebSockets use ``ws``
    as the method, and HEAD is keyed as GET (it runs the GET endpoint). A
    ``context_key`` is appended after ``|``.
    """

    __slots__ = ("_cache", "by_template")

    def __init__(self, by_template: bool = True) -> None:
        self.by_template = by_template
        #: id(route) -> (route, root path, raw method -> route part).
        self._cache: dict[int, tuple[typing.Any, str, dict[str | None, str]]] = {}

    def _uncached(self, scope: typing.MutableMapping[str, typing.Any], route: typing.Any) -> str:
        """The route part when the cache has none: the template's (then cached), else
        the raw path's."""
        template = getattr(route, "path_format", None) if route is not None else None
        if type(template) is not str:
            return self._method(scope) + route_part(scope.get("path", ""))
        root_path = scope.get("root_path", "")
        part = self._method(scope) + template_part(root_path + template)
        entry = self._cache.get(id(route))
        if entry is None or entry[0] is not route or entry[1] != root_path:
            if len(self._cache) >= _ROUTE_CACHE_SIZE:
                self._cache.clear()
            entry = self._cache[id(route)] = (route, root_path, {})
        methods = entry[2]
        if len(methods) < _ROUTE_CACHE_SIZE:  # bounded: the raw method is the client's
            methods[scope.get("method")] = part
        return part

    @staticmethod
    def _method(scope: typing.MutableMapping[str, typing.Any]) -> str:
        if scope["type"] == "http":
            return _METHODS.get(scope.get("method", "GET"), "OTHER")
        return "ws"

    def route_key(
        self, scope: typing.MutableMapping[str, typing.Any], context_key: typing.Any = None
    ) -> str:
        """The route part for ``scope`` (and ``context_key``).

        A string at ``scope["traffik.route_key"]`` (:data:`ROUTE_KEY_SCOPE`) replaces
        method and route: middleware sets it so that a whole area shares one budget.
        """
        area = scope.get(ROUTE_KEY_SCOPE)
        if area is not None:
            # "*" starts no method name, so an area never shares a key with a route.
            # Areas are constant per middleware rule: their part is built once.
            part = _area_parts.get(area) if type(area) is str else None
            if part is None:
                part = "*" + route_part(str(area))
                if type(area) is str:
                    if len(_area_parts) >= _ROUTE_CACHE_SIZE:
                        _area_parts.clear()
                    _area_parts[area] = part
        else:
            route = scope.get("route") if self.by_template else None
            # Cached per route object (the entry holds it, so its id is not reused
            # while cached), then per raw method; the root path is checked.
            entry = self._cache.get(id(route)) if route is not None else None
            if entry is not None and entry[0] is route and entry[1] == scope.get("root_path", ""):
                part = entry[2].get(scope.get("method")) or self._uncached(scope, route)
            else:
                part = self._uncached(scope, route)
        if context_key is not None:
            part = f"{part}|{route_part(str(context_key))}"
        return part
