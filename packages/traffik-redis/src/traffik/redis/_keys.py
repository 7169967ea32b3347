"""Key text: the hash tag of a state key, and SCAN patterns.

Redis Cluster places a key by the text between its first ``{`` and the next ``}``.
A state key is ``{namespace}:{<escaped throttle key>}:{strategy}``: every key of
one throttle key shares a slot, and since the escaped text holds no brace, a client
identifier cannot choose another tag, end the tag early, or reach another client's
keys (the escaping is one-to-one).
"""

from __future__ import annotations

import re

__all__ = ["escape_tag", "scan_pattern", "tagged_key"]

_TAG_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def escape_tag(text: str) -> str:
    """``text`` with ``%``, ``{`` and ``}`` percent-escaped: safe inside a hash tag, and injective."""
    return text.translate(_TAG_ESCAPES)


def tagged_key(namespace: str, key: str, suffix: str) -> str:
    """``namespace:{escaped key}:suffix``."""
    return f"{namespace}:{{{escape_tag(key)}}}:{suffix}"


def scan_pattern(namespace: str) -> str:
    """A ``SCAN MATCH`` pattern for every key of ``namespace`` (glob characters escaped)."""
    return _GLOB_SPECIAL.sub(r"\\\1", namespace) + ":*"
