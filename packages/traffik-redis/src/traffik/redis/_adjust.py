"""Adjustments on Redis: one ``EVALSHA`` that gives units back or charges more.

Each built-in strategy family has an adjustment script (``scripts/adjust_<name>.lua``,
with ``_prelude.lua`` and ``_adjust_prelude.lua`` prepended) mirroring
:mod:`traffik.strategies._adjust`. A script returns the server's time and the state
after; the snapshot the caller gets is computed from them in Python
(``Strategy.snapshot``), so the scripts only carry the transition. They are not
loaded at start-up: the first ``EVALSHA`` that meets ``NOSCRIPT`` loads its script.
"""

from __future__ import annotations

import typing

from traffik.redis._scripts import SCRIPT_OF, LuaScript, _read
from traffik.strategies import check_adjustment

if typing.TYPE_CHECKING:
    from traffik.rates import Rate
    from traffik.strategies import Strategy

__all__ = ["ADJUST_SCRIPTS", "adjust_args", "adjust_script"]

#: The families that have an adjustment script (the decision scripts' names).
ADJUST_SCRIPTS = ("fw", "swl", "swc", "meter", "gcra")

_LOADED: dict[str, LuaScript] = {}


def adjust_source(name: str) -> str:
    """The full text of the adjustment script of family ``name``, as sent to Redis."""
    return "\n".join((_read("_prelude"), _read("_adjust_prelude"), _read(f"adjust_{name}")))


def adjust_script(strategy: Strategy) -> LuaScript | None:
    """The adjustment script of ``strategy``'s exact class, or None (the generic path)."""
    name = SCRIPT_OF.get(type(strategy))
    if name is None:
        return None
    script = _LOADED.get(name)
    if script is None:
        import hashlib

        source = adjust_source(name).encode("utf-8")
        sha = hashlib.sha1(source).hexdigest()
        script = _LOADED[name] = LuaScript(f"adjust_{name}", source, sha, sha.encode("ascii"))
    return script


def adjust_args(
    strategy: Strategy, rate: Rate, delta: int, age_ms: int, now_ms: int | None
) -> tuple[int | str, ...]:
    """ARGV of an adjustment script: now (or ''), limit, window, bounded delta, capacity, age.

    Raises ``ValueError`` for a bad delta or age, as the Python strategy would.
    """
    bounded = check_adjustment(strategy, rate, delta, age_ms)
    return (
        "" if now_ms is None else now_ms,
        rate.limit,
        rate.expire,
        bounded,
        strategy.capacity(rate),
        age_ms,
    )
