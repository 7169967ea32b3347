"""The failure policy: :class:`FailurePolicy`, its ``on_error`` actions, their validation."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from traffik._guard.circuit import CircuitBreaker
from traffik._guard.types import BackendClass
from traffik.exceptions import ConfigurationError

if typing.TYPE_CHECKING:
    from traffik._guard.types import Backend

__all__ = [
    "DEFAULT_NETWORK_POLICY",
    "ON_ERROR_ACTIONS",
    "FailurePolicy",
    "OnError",
    "check_on_error",
]

#: The named actions; a ThrottleBackend instance is accepted too (fall back to it).
ON_ERROR_ACTIONS = ("fallback", "allow", "throttle", "raise")
OnError = typing.Union[str, "Backend"]


def check_on_error(value: object) -> None:
    """Raise ConfigurationError unless ``value`` is a known action or a backend."""
    if isinstance(value, str) and value in ON_ERROR_ACTIONS:
        return
    if isinstance(value, BackendClass):
        return
    raise ConfigurationError(
        f"on_error must be one of {', '.join(map(repr, ON_ERROR_ACTIONS))} or a backend "
        f"instance to fall back to, got {value!r}."
    )


@dataclass(frozen=True)
class FailurePolicy:
    """How a backend's failures are handled (set as ``backend.failure_policy``).

    ``timeout`` (seconds; None: unbounded) is how long the server may stay silent:
    a request whose server answered nothing at all for ``timeout`` while it waited
    is a failure, answered by ``on_error``. At most ``max_in_flight`` calls per
    failure domain are out at once; up to ``max_waiting`` more wait their turn in
    order. A request that is behind this process's own backlog while the server
    keeps answering waits up to ``max_wait`` seconds; beyond that, or with the line
    full, it gets the overload answer: refused (429, Retry-After 1 s), never
    counted as a failure of the server. After ``failure_threshold`` consecutive
    failures the circuit opens for ``recovery_time`` seconds, doubling on each
    failed probe up to ``max_recovery_time``. ``block_cache_size`` refusals are
    kept locally (0: off).
    """

    on_error: OnError = "fallback"
    timeout: float | None = 0.25
    failure_threshold: int = 5
    recovery_time: float = 0.5
    max_recovery_time: float = 5.0
    block_cache_size: int = 10_000
    max_in_flight: int = 256
    max_waiting: int = 10_000
    max_wait: float = 2.0

    def __post_init__(self) -> None:
        check_on_error(self.on_error)
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds or None, got {self.timeout!r}."
            )
        if not self.max_wait > 0:
            raise ConfigurationError(
                f"max_wait must be a positive number of seconds, got {self.max_wait!r}."
            )
        for name, low in (("block_cache_size", 0), ("max_in_flight", 1), ("max_waiting", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{name} must be an int of at least {low}, got {value!r}.")
        # Validates thresholds and times with a clear message.
        try:
            CircuitBreaker(self.failure_threshold, self.recovery_time, self.max_recovery_time)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None


#: The policy network backends (Redis, Memcached) start with.
DEFAULT_NETWORK_POLICY = FailurePolicy()
