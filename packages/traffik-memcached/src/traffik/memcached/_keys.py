"""Item keys and values: how traffik's keys and strings are laid out in memcached.

Item keys (at most 250 bytes, printable ASCII without spaces)::

    {ns}~gen                 the namespace's generation number (plain digits)
    {ns}+{generation}~{rest} a key ``{namespace}:{rest}`` whose rest is short printable ASCII
    {ns}+{generation}#{hex}  any other key of the namespace: BLAKE2b-256 of rest's UTF-8
    ~{key} or #{hex}         a key outside the namespace: global, never reset
    !lock~{name} or !lock#{hex}  a lock: global (names are namespaced), not generation-scoped

``{ns}`` is the namespace if it is short and made of ``[A-Za-z0-9_.:-]``, else
``%`` and a digest of it. Neither it nor the generation contains ``~``, ``+``,
``#`` or ``!``, so the layout is injective: two different keys never share an item
(short of a BLAKE2b-256 collision). (traffik-memcached 1.0 wrote ``{ns}~{generation}``
with counters in the old encoding below: this layout never reads those items.)

Values: integers are stored as decimal ``value + 2**62`` so that memcached's
unsigned ``incr``/``decr`` work on them and they can still go below zero; any
other string is stored as ``s`` followed by its UTF-8 bytes (never numeric, so
``incr`` on it fails instead of silently counting). The offset keeps stored
numbers below ``2**63``: for a number at or above it, memcached (1.6.18 at least)
looks for a minus sign with ``strchr`` from the item's data on, past its end into
whatever memory follows, and answers ``incr`` with ``CLIENT_ERROR cannot increment
or decrement non-numeric value`` whenever it meets a ``-`` there before a NUL byte:
1.0's offset of ``2**63`` made some counters unusable until they expired. Numbers
stored with that offset (at or above ``3 * 2**61``) are still read correctly.

Deadlines: memcached's TTLs are whole seconds, rounded up (``set`` with 1 s is
readable for up to 2 s). An item the primitives write with a TTL also carries its
deadline, in milliseconds of the backend's clock, in its 32-bit client flags
(modulo ``2**32``; 0: no deadline), and reads treat it as missing from that
millisecond on; memcached's own TTL, never shorter, reclaims it later. TTLs of
``2**31`` ms (24.8 days) or more keep memcached's whole seconds only.
"""

from __future__ import annotations

import hashlib
import math
import re
import time

__all__ = [
    "COUNTER_MAX",
    "COUNTER_OFFSET",
    "GLOBAL_PREFIX",
    "LOCK_PREFIX",
    "MAX_RELATIVE_EXPTIME",
    "deadline_flags",
    "decode_counter",
    "decode_value",
    "encode_counter",
    "encode_text",
    "encode_value",
    "expired",
    "exptime",
    "generation_key",
    "generation_prefix",
    "item_key",
    "namespace_tag",
]

#: Counters are stored as ``value + COUNTER_OFFSET`` (memcached counters are unsigned 64-bit).
COUNTER_OFFSET = 2**62
#: Counters hold ``[-COUNTER_OFFSET, COUNTER_MAX)``: stored, ``[0, 3 * 2**61)``.
COUNTER_MAX = 2**61
#: traffik-memcached 1.0 stored counters as ``value + 2**63``; stored numbers from
#: ``_LEGACY_FLOOR`` on are read that way (counters of up to +-2**61 either way).
_LEGACY_OFFSET = 2**63
_LEGACY_FLOOR = 3 * 2**61
#: Larger exptimes are read by memcached as absolute Unix times (30 days).
MAX_RELATIVE_EXPTIME = 30 * 24 * 3600
MAX_KEY_BYTES = 250
#: Prefix of keys outside the backend's namespace, and of locks.
GLOBAL_PREFIX = ""
LOCK_PREFIX = "!lock"

_SAFE_NAMESPACE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SAFE_KEY = re.compile(r"[\x21-\x7e]+")
_CANONICAL_INT = re.compile(r"-?(0|[1-9][0-9]*)")


def _digest(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def namespace_tag(namespace: str) -> str:
    """The item-key prefix of ``namespace``: itself if short and plain, else a digest."""
    if _SAFE_NAMESPACE.fullmatch(namespace):
        return namespace
    return "%" + _digest(namespace, 16)


def generation_key(tag: str) -> bytes:
    """Where the namespace's generation number lives."""
    return f"{tag}~gen".encode("ascii")


def generation_prefix(tag: str, generation: int) -> str:
    """The item-key prefix of namespace ``tag``'s keys in ``generation``."""
    return f"{tag}+{generation}"


def item_key(prefix: str, key: str) -> bytes:
    """The item key of ``key`` under ``prefix`` (``{ns}+{generation}``, global or lock)."""
    if len(prefix) + 1 + len(key) <= MAX_KEY_BYTES and _SAFE_KEY.fullmatch(key):
        return f"{prefix}~{key}".encode("ascii")
    return f"{prefix}#{_digest(key, 32)}".encode("ascii")


def encode_counter(value: int) -> bytes:
    return str(value + COUNTER_OFFSET).encode("ascii")


def decode_counter(raw: bytes) -> int:
    # memcached pads an incr result that got shorter with spaces.
    return _counter(int(raw.strip()))


def _counter(stored: int) -> int:
    return stored - (_LEGACY_OFFSET if stored >= _LEGACY_FLOOR else COUNTER_OFFSET)


def encode_text(value: str) -> bytes:
    return b"s" + value.encode("utf-8", "surrogatepass")


def encode_value(value: str) -> bytes:
    """Canonical integers from ``-2**62`` to ``2**61 - 1`` become counters; the rest text."""
    if len(value) <= 20 and _CANONICAL_INT.fullmatch(value):
        number = int(value)
        if -COUNTER_OFFSET <= number < COUNTER_MAX:
            return encode_counter(number)
    return encode_text(value)


def decode_value(raw: bytes) -> str:
    """The string stored by :func:`encode_value` (or a counter's current value)."""
    if raw[:1] == b"s":
        return raw[1:].decode("utf-8", "surrogatepass")
    stripped = raw.strip()
    if stripped.isdigit():
        return str(_counter(int(stripped)))
    return raw.decode("utf-8", "replace")  # not written by traffik


def exptime(seconds: float) -> int:
    """The memcached exptime keeping an item at least ``seconds`` (and up to 1 s more).

    memcached's clock ticks in whole seconds, so an item given ``n`` seconds may
    expire after only ``n - 1``: one second is added. Beyond 30 days memcached
    wants an absolute Unix time, taken from this host's clock.
    """
    whole = math.ceil(seconds) + 1
    if whole > MAX_RELATIVE_EXPTIME:
        return int(time.time()) + whole
    return whole


_WRAP = 2**32
_HALF = 2**31


def deadline_flags(now_ms: int, ttl_ms: int) -> int:
    """The client flags of an item that expires ``ttl_ms`` after ``now_ms`` (0: no deadline)."""
    if ttl_ms >= _HALF:
        return 0  # too far to tell from a past deadline modulo 2**32: whole seconds only
    # 0 means "no deadline": one millisecond later is never early.
    return (now_ms + ttl_ms) % _WRAP or 1


def expired(flags: int, now_ms: int) -> bool:
    """True if an item with client ``flags`` is past its deadline at ``now_ms``.

    The deadline is known modulo ``2**32`` ms: one at most ``2**31`` ms away either
    way is told apart correctly (memcached reclaims items within seconds of it).
    """
    if not flags:
        return False
    left = (flags - now_ms) % _WRAP
    return left == 0 or left >= _HALF
