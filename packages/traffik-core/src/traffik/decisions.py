"""The outcome of one rate-limit decision, and everything a response needs from it."""

from __future__ import annotations

import math
import typing

__all__ = ["NEVER", "Decision"]

#: ``retry_after_ms`` of a request that can never be admitted (its cost exceeds the
#: capacity of the policy). An int so that Lua scripts can return it too.
NEVER = -1


class Decision(typing.NamedTuple):
    """What a strategy decided for one request, computed in one atomic step.

    All times are whole milliseconds, relative to the moment of the decision, so no
    clock needs to be shared with the client. Headers are derived from this object
    only: never from a second read of the storage. Immutable; a named tuple because
    one is built per request and that is several times cheaper than a frozen
    dataclass.
    """

    #: Whether the request was admitted (and its cost charged).
    allowed: bool
    #: The quota: units per window (``q`` of the RateLimit-Policy field).
    limit: int
    #: Units still available after this decision (``r`` of the RateLimit field).
    remaining: int
    #: Milliseconds until the quota is fully restored (``t`` of the RateLimit field).
    reset_ms: int
    #: 0 when admitted; otherwise milliseconds until the same request would be
    #: admitted if nothing else happens meanwhile; :data:`NEVER` if it never can be.
    retry_after_ms: int
    #: The policy window in milliseconds (``w`` of the RateLimit-Policy field).
    window_ms: int
    #: The policy name used in the RateLimit fields.
    policy: str = "default"

    @property
    def never(self) -> bool:
        """True when the request can never be admitted under this policy."""
        return self.retry_after_ms == NEVER

    @property
    def wait_ms(self) -> float:
        """The seed protocol's wait: ``0.0`` admitted, ``inf`` never, else milliseconds."""
        if self.allowed:
            return 0.0
        if self.retry_after_ms == NEVER:
            return math.inf
        return float(self.retry_after_ms)

    @property
    def retry_after_s(self) -> int | None:
        """Whole seconds to wait, rounded up (never earlier than the real wait); None if never."""
        if self.allowed:
            return 0
        if self.retry_after_ms == NEVER:
            return None
        return -(-self.retry_after_ms // 1000)

    @property
    def reset_s(self) -> int:
        """Whole seconds until the quota is fully restored, rounded up."""
        return -(-self.reset_ms // 1000)

    def with_policy(self, policy: str) -> Decision:
        """This decision under another policy name."""
        return self._replace(policy=policy)
