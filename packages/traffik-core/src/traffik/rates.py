"""Rates: how many units a client may spend per window.

``Rate(limit=5, seconds=10)`` or ``Rate.parse("5/10s")`` means five units (requests,
by default one unit each) per ten seconds. ``Rate()`` is unlimited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import gcd

__all__ = ["MAX_EXACT_PRODUCT", "Rate"]

#: The largest integer every backend (Lua numbers are IEEE doubles) represents
#: exactly. Strategies keep state as ``tokens x window_ms``; the product of a limit
#: (or a burst) and the window in milliseconds must stay at or below it.
MAX_EXACT_PRODUCT = 2**53 - 1

_UNITS: dict[str, tuple[str, int]] = {}
for _names, _field, _mult in (
    (("ms", "millisecond", "milliseconds"), "milliseconds", 1),
    (("s", "sec", "second", "seconds"), "seconds", 1),
    (("m", "min", "minute", "minutes"), "minutes", 1),
    (("h", "hr", "hour", "hours"), "hours", 1),
    (("d", "day", "days"), "hours", 24),
):
    for _name in _names:
        _UNITS[_name] = (_field, _mult)

#: Units of ``str(rate)``, largest first (each one :meth:`Rate.parse` reads).
_STR_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000), ("ms", 1))

_VALID_UNITS = "ms/millisecond(s), s/sec/second(s), m/min/minute(s), h/hr/hour(s), d/day(s)"
_GRAMMAR = f"write '<limit>/<period>' such as '100/m' or '5/10s' (units: {_VALID_UNITS})"
# ASCII digits only: "\d" would accept other scripts' digits, which int() then reads.
_PERIOD = re.compile(r"([0-9]+)?\s*([a-z]+)", re.ASCII)


@dataclass(frozen=True, eq=False)
class Rate:
    """A quota of ``limit`` units per window of ``milliseconds + seconds + minutes + hours``.

    ``limit == 0`` with an empty window is the unlimited rate. Two rates are equal
    when they allow the same number of units per second (``60/m == 1/s``), and equal
    rates hash alike.
    """

    limit: int = 0
    milliseconds: int = 0
    seconds: int = 0
    minutes: int = 0
    hours: int = 0
    _expire: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("limit", "milliseconds", "seconds", "minutes", "hours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"Rate {name} must be a whole number, got {value!r}. "
                    f"Use an int, for example Rate(limit=5, seconds=10)."
                )
            if value < 0:
                raise ValueError(
                    f"Rate {name} must not be negative, got {value}. "
                    f"Write the window with positive fields, for example Rate(limit=5, seconds=10)."
                )
        expire = (
            self.milliseconds + 1000 * self.seconds + 60_000 * self.minutes + 3_600_000 * self.hours
        )
        object.__setattr__(self, "_expire", expire)
        if self.limit == 0 and expire != 0:
            raise ValueError(
                "A rate with limit 0 admits nothing; for an unlimited rate leave the window "
                "empty too (Rate()), or give a positive limit."
            )
        if self.limit != 0 and expire == 0:
            raise ValueError(
                f"Rate limit {self.limit} needs a window: give milliseconds, seconds, minutes "
                f"or hours, for example Rate(limit={self.limit}, seconds=1)."
            )
        if self.limit * expire > MAX_EXACT_PRODUCT:
            raise ValueError(
                f"Rate {self.limit} per {expire} ms is too large to count exactly "
                f"(limit x window_ms must be at most 2**53 - 1); use a smaller limit or window."
            )

    @property
    def expire(self) -> int:
        """The window in milliseconds (0 for the unlimited rate)."""
        return self._expire

    @property
    def unlimited(self) -> bool:
        """True for ``Rate()``: no limit at all."""
        return self.limit == 0 and self._expire == 0

    def _per(self, unit_ms: int) -> float:
        if self.limit == 0 or self._expire == 0:
            return float("inf")
        return self.limit / (self._expire / unit_ms)

    @property
    def rps(self) -> float:
        """Units per second (``inf`` when unlimited)."""
        return self._per(1000)

    @property
    def rpm(self) -> float:
        """Units per minute (``inf`` when unlimited)."""
        return self._per(60_000)

    @property
    def rph(self) -> float:
        """Units per hour (``inf`` when unlimited)."""
        return self._per(3_600_000)

    @property
    def rpd(self) -> float:
        """Units per day (``inf`` when unlimited)."""
        return self._per(86_400_000)

    def _key(self) -> tuple[int, int]:
        # limit/expire reduced to lowest terms: 60/60000ms and 1/1000ms share a key.
        if self.unlimited:
            return (0, 0)
        g = gcd(self.limit, self._expire)
        return (self.limit // g, self._expire // g)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rate):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        """The rate in the form :meth:`parse` reads, in the largest whole unit:
        ``10/min``, ``5/10s``, ``1000/500ms``, ``2/d``; ``unlimited`` for ``Rate()``.

        ``repr`` keeps the exact fields. Keys and headers never use this text.
        """
        if self.unlimited:
            return "unlimited"
        expire = self._expire
        for unit, ms in _STR_UNITS:
            if expire % ms == 0:
                count = expire // ms
                return f"{self.limit}/{unit}" if count == 1 else f"{self.limit}/{count}{unit}"
        return f"{self.limit}/{expire}ms"  # pragma: no cover - ms divides every window

    @classmethod
    def parse(cls, rate: str) -> Rate:
        """Parse ``"<limit>/<period>"``, for example ``"100/m"``, ``"5/10s"``, ``"1000/500ms"``.

        The period is an optional positive multiplier and a unit: ms, s/sec/second(s),
        m/min/minute(s), h/hr/hour(s), d/day(s). Case and spaces around the parts do
        not matter. Raises ``ValueError`` naming the bad part.
        """
        if not isinstance(rate, str):
            raise ValueError(f"A rate must be a string, got {type(rate).__name__}; {_GRAMMAR}.")
        text = rate.strip()
        if not text:
            raise ValueError(f"The rate string is empty; {_GRAMMAR}.")
        parts = text.split("/")
        if len(parts) != 2:
            raise ValueError(f"Rate {rate!r} must contain exactly one '/'; {_GRAMMAR}.")
        left, right = parts[0].strip(), parts[1].strip().lower()
        # Digits only: no sign, no underscores, no non-ASCII digits (int() takes all three).
        if not left.isascii() or not left.isdigit():
            raise ValueError(
                f"The limit {left!r} in rate {rate!r} is not a whole number written with "
                f"the digits 0-9; {_GRAMMAR}."
            )
        limit = int(left)
        match = _PERIOD.fullmatch(right) if right.isascii() else None
        if match is None:
            raise ValueError(
                f"The period {right!r} in rate {rate!r} is not an optional number followed "
                f"by a unit; {_GRAMMAR}."
            )
        number, unit = match.groups()
        multiplier = int(number) if number is not None else 1
        if multiplier <= 0:
            raise ValueError(
                f"The period {right!r} in rate {rate!r} must be longer than zero; {_GRAMMAR}."
            )
        if unit not in _UNITS:
            raise ValueError(
                f"Unknown unit {unit!r} in rate {rate!r}; valid units are {_VALID_UNITS}."
            )
        if limit == 0:
            raise ValueError(
                f"Rate {rate!r} admits nothing (limit 0); give a positive limit, "
                f"or use Rate() for no limit at all."
            )
        field_name, factor = _UNITS[unit]
        return cls(limit=limit, **{field_name: multiplier * factor})
