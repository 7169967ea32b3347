"""Throttle keys: the public helpers for integrations and backends.

A throttle key is ``{uid}:{route}:{identity}``; a backend stores it under
``{namespace}:{key}:{strategy suffix}``. Every part that comes from a client is
bounded and made of a safe set of characters (no spaces or control characters,
no ``{``/``}``, which Redis Cluster reads as a hash tag), or replaced by ``#`` and a
digest, so a key is safe for every built-in backend.

- :data:`ROUTE_KEY_SCOPE`: a framework integration that throttles a whole area
  (as ``traffik.starlette``'s middleware does) sets this scope key to name the
  area; the throttle then keys by it instead of by method and route.
- :func:`route_part`, :func:`identity_part`: the bounded key part of a path or an
  identity; :func:`digest` is what replaces a part that is too long or unsafe.

These names follow the compatibility policy (CONTRIBUTING.md): they change only in
a major release. The rest of the key machinery is private.
"""

from __future__ import annotations

from traffik._keys import MAX_PART, ROUTE_KEY_SCOPE, digest, identity_part, route_part

__all__ = ["MAX_PART", "ROUTE_KEY_SCOPE", "digest", "identity_part", "route_part"]
