"""The strategy contract: a pure transition over a small integer state.

A built-in strategy is a frozen dataclass whose :meth:`Strategy.decide` maps
``(state, now_ms, rate, cost)`` to a :class:`Transition`: the new state, how long
the storage must keep it, and the :class:`~traffik.decisions.Decision`. It does no
I/O, so every backend can run it atomically in its own way (synchronously in
memory, as a Lua script in Redis, in a CAS loop in Memcached, under a lock in a
third-party backend). The Python code here is the reference every native port
must match decision for decision.

State is a tuple of ints (never floats: Lua numbers are doubles, and drift would
make Redis and Python disagree). It is stored as the ASCII text ``"a,b,c"``.
Strategies must stay correct when a stored state outlives its TTL (the TTL only
reclaims memory) and when the clock steps backwards (elapsed time is clamped at 0).
"""

from __future__ import annotations

import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass

from traffik.decisions import NEVER, Decision
from traffik.exceptions import ConfigurationError
from traffik.rates import MAX_EXACT_PRODUCT, Rate
from traffik.types import StrategyStat, Stringable, WaitPeriod

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend

__all__ = [
    "UNLIMITED_DECISION",
    "State",
    "Strategy",
    "Transition",
    "check_cost",
    "decode_state",
    "encode_state",
    "fast_new",
    "not_adjustable",
    "special_step",
]

State = tuple[int, ...]


class Transition(typing.NamedTuple):
    """The result of one step of a strategy."""

    #: The state to store; ``None`` means the key should hold nothing.
    state: State | None
    #: Milliseconds the storage must keep ``state``; after that it is equivalent to no state.
    ttl_ms: int
    decision: Decision
    #: False when the storage needs no write at all (the stored state stays valid).
    write: bool = True


#: ``tuple.__new__``: the hot paths build ``Transition`` and ``Decision`` named tuples
#: with it, skipping their Python-level ``__new__`` (about twice as fast). Every
#: field must then be given, in order.
fast_new = tuple.__new__

#: The decision for a rate that limits nothing (``Rate()``): admitted, no quota to report.
UNLIMITED_DECISION = Decision(True, 0, 0, 0, 0, 0, "unlimited")
_UNLIMITED_STEP = Transition(None, 0, UNLIMITED_DECISION, write=False)


def check_cost(cost: object) -> int:
    """Return ``cost`` as an int if it is a positive whole number, else raise ``ValueError``.

    The error is a :class:`~traffik.exceptions.ConfigurationError` (a ``ValueError``),
    so it reaches the caller unwrapped through any backend.
    """
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise ConfigurationError(
            f"cost must be a positive whole number of units, got {cost!r}; "
            f"pass an int such as cost=1."
        )
    if cost <= 0:
        raise ConfigurationError(
            f"cost must be at least 1, got {cost}; a request cannot refund or skip its quota."
        )
    return int(cost)


def special_step(rate: Rate, cost: object) -> Transition | None:
    """The slow path of every ``decide``: reject a bad cost, short-circuit an unlimited rate.

    Transitions call it when ``cost`` is not a plain positive int or the rate has no
    window. It raises ``ValueError`` for a bad cost, returns the transition of an
    unlimited rate, and returns None when the step may proceed (an int subclass).
    """
    check_cost(cost)
    if rate.unlimited:
        return _UNLIMITED_STEP
    return None


def not_adjustable(strategy: object) -> str:
    """The message of the error raised when ``strategy`` cannot give units back."""
    return (
        f"{strategy!r} cannot give units back or charge more: refunds, charge_when and "
        f"reserve/settle need a built-in strategy (traffik.strategies) or a Strategy "
        f"subclass that implements adjust(). Custom async (key, rate, backend, cost) "
        f"strategies only decide."
    )


def encode_state(state: State) -> str:
    """The stored text of a state: decimal ints joined by commas."""
    return ",".join(map(str, state))


def decode_state(raw: str | bytes | None) -> State | None:
    """Parse stored state text; ``None`` (treated as a fresh key) if absent or corrupt."""
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    if not raw:
        return None
    try:
        return tuple(int(part) for part in raw.split(","))
    except ValueError:
        return None


def _check_positive(
    name: str, value: object, *, allow_none: bool = True, allow_zero: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(
            f"{name} must be a whole number, got {value!r}; pass an int such as {name}=10."
        )
    if value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "at least 1"
        raise ConfigurationError(f"{name} must be {bound}, got {value}; pass None for the default.")


@dataclass(frozen=True)
class Strategy(ABC):
    """Base class of the built-in strategies.

    Subclasses implement :meth:`decide`. They keep the traffik 1.0.0b2 protocol:
    ``await strategy(key, rate, backend, cost) -> wait_ms`` and ``get_stat``.
    """

    #: Stable short name; part of every storage key and of the Lua script's name.
    name: typing.ClassVar[str] = "strategy"

    def capacity(self, rate: Rate) -> int:
        """The largest cost a fresh key admits at once (the limit, unless burst or debt adds)."""
        return rate.limit

    @abstractmethod
    def decide(self, state: State | None, now_ms: int, rate: Rate, cost: int) -> Transition:
        """One atomic step: charge ``cost`` at ``now_ms`` if it fits, and say so."""

    def peek(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        """The decision a one-unit request would get now, without charging anything."""
        return self.decide(state, now_ms, rate, 1).decision

    @property
    def adjustable(self) -> bool:
        """True when this strategy can give units back or charge more (:meth:`adjust`)."""
        return type(self).adjust is not Strategy.adjust

    def adjust(
        self, state: State | None, now_ms: int, rate: Rate, delta: int, age_ms: int = 0
    ) -> Transition:
        """The inverse of a decision: give back ``-delta`` units, or charge ``delta`` more.

        A refund never leaves more than the full quota; a charge is never refused
        and may leave the key in debt (its next requests wait). ``age_ms`` is how
        long ago the refunded charge was made (the window strategies give back only
        within the window charged). The transition's decision is a snapshot of the
        quota after the adjustment (see :mod:`traffik.strategies._adjust`). Built-in
        strategies implement it; this default raises ``ConfigurationError``.
        """
        raise ConfigurationError(not_adjustable(self))

    def snapshot(self, state: State | None, now_ms: int, rate: Rate) -> Decision:
        """The quota of ``state`` now, charging nothing (``remaining``: units left).

        The default derives it from :meth:`peek`; built-in strategies compute it exactly.
        """
        decision = self.peek(state, now_ms, rate)
        if decision.allowed:
            return decision._replace(remaining=decision.remaining + 1)
        return decision

    def storage_suffix(self) -> str:
        """Suffix appended to a throttle key to name this strategy's state."""
        return self.name

    def check_exact(self, rate: Rate, capacity: int) -> None:
        """Raise ``ConfigurationError`` if ``capacity`` over ``rate``'s window cannot be counted exactly.

        Stored state is integer milliseconds times units; ``capacity x window_ms`` must
        stay at most ``2**53 - 1`` so that a port running on doubles (Lua) makes the
        same decisions as the Python reference. A native backend calls it with
        ``self.capacity(rate)`` before running its own version of the transition.
        """
        if capacity * rate.expire > MAX_EXACT_PRODUCT:
            raise ConfigurationError(
                f"{type(self).__name__} capacity {capacity} over a {rate.expire} ms window is too "
                f"large to count exactly (capacity x window_ms must be at most 2**53 - 1); "
                f"use a smaller burst, debt or queue size, or a shorter window."
            )

    async def __call__(
        self,
        key: Stringable,
        rate: Rate,
        backend: ThrottleBackend[typing.Any, typing.Any],
        cost: int = 1,
    ) -> WaitPeriod:
        """Charge ``cost`` to ``key``; return the wait in ms (0.0 admitted, inf never)."""
        # The hot path of the 1.0.0b2 protocol: the checks of check_cost(), rate.unlimited
        # and Decision.wait_ms inlined (a Python call each otherwise).
        if cost.__class__ is not int or cost < 1:
            cost = check_cost(cost)  # before the unlimited shortcut, as decide() does
        if not rate._expire and not rate.limit:
            return 0.0
        key = key if key.__class__ is str else str(key)
        now = getattr(backend, "decide_now", None)
        if now is not None:
            decision = now(key, self, rate, cost)
        else:
            decision = await backend.decide(key, self, rate, cost)
        if decision[0]:  # allowed
            return 0.0
        retry = decision[4]  # retry_after_ms
        return math.inf if retry == NEVER else float(retry)

    async def get_stat(
        self, key: Stringable, rate: Rate, backend: ThrottleBackend[typing.Any, typing.Any]
    ) -> StrategyStat:
        """A snapshot of ``key``: units left and the wait a one-unit request would get."""
        if rate.unlimited:
            return StrategyStat(key=key, rate=rate, hits_remaining=float("inf"), wait_time=0.0)
        decision = await backend.peek(str(key), self, rate)
        remaining = decision.remaining + 1 if decision.allowed else decision.remaining
        return StrategyStat(
            key=key, rate=rate, hits_remaining=float(remaining), wait_time=decision.wait_ms
        )
