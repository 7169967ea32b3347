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

__all__ = ["MAX_PART", "digest", "identity_part", "route_part", "template_part"]

#: Longest literal part; longer ones are digested.
MAX_PART = 100

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
