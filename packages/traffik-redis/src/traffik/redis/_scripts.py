"""The Lua scripts: loading them, and which one runs which strategy.

Each built-in strategy is one script (``scripts/<name>.lua``, with the shared
``_prelude.lua`` prepended): one ``EVALSHA`` per decision. Scripts are registered
with redis-py's ``register_script``, which reloads a script after ``NOSCRIPT`` (a
server restart or ``SCRIPT FLUSH``) and retries, so that heals itself.
"""

from __future__ import annotations

import typing
from importlib import resources

from traffik.decisions import Decision
from traffik.strategies import (
    FixedWindowStrategy,
    GCRAStrategy,
    LeakyBucketStrategy,
    LeakyBucketWithQueueStrategy,
    SlidingWindowCounterStrategy,
    SlidingWindowLogStrategy,
    TokenBucketStrategy,
    TokenBucketWithDebtStrategy,
)

if typing.TYPE_CHECKING:
    from traffik.rates import Rate
    from traffik.strategies import Strategy

__all__ = [
    "DECISION_SCRIPTS",
    "SCRIPT_OF",
    "ScriptSet",
    "decision_args",
    "load_script",
    "to_decision",
]

#: The script that runs each built-in strategy class. Matched by exact type: a
#: subclass may change ``decide``, so it takes the generic path instead.
SCRIPT_OF: dict[type[Strategy], str] = {
    FixedWindowStrategy: "fw",
    SlidingWindowLogStrategy: "swl",
    SlidingWindowCounterStrategy: "swc",
    TokenBucketStrategy: "meter",
    TokenBucketWithDebtStrategy: "meter",
    LeakyBucketStrategy: "meter",
    LeakyBucketWithQueueStrategy: "meter",
    GCRAStrategy: "gcra",
}

#: Scripts that decide (all take the same KEYS and ARGV).
DECISION_SCRIPTS = ("fw", "swl", "swc", "meter", "gcra")
#: Every script the backend registers.
_ALL_SCRIPTS = (*DECISION_SCRIPTS, "peek", "incr_ttl")
#: Scripts that use no helper of the prelude.
_STANDALONE = frozenset({"incr_ttl"})


def _read(name: str) -> str:
    return (
        resources.files("traffik.redis")
        .joinpath("scripts")
        .joinpath(f"{name}.lua")
        .read_text("utf-8")
    )


def load_script(name: str) -> str:
    """The full text of script ``name`` as sent to Redis (prelude included)."""
    body = _read(name)
    if name in _STANDALONE:
        return body
    return _read("_prelude") + "\n" + body


_SOURCES: dict[str, str] = {}


def _source(name: str) -> str:
    text = _SOURCES.get(name)
    if text is None:
        text = _SOURCES[name] = load_script(name)
    return text


class ScriptSet:
    """The registered scripts of one client: ``scripts["fw"](keys=..., args=...)``."""

    __slots__ = ("_by_name",)

    def __init__(self, client: typing.Any) -> None:
        self._by_name: dict[str, typing.Any] = {
            name: client.register_script(_source(name)) for name in _ALL_SCRIPTS
        }

    def __getitem__(self, name: str) -> typing.Any:
        return self._by_name[name]

    def sources(self) -> list[str]:
        """The text of every script (for ``SCRIPT LOAD`` at start-up)."""
        return [_source(name) for name in _ALL_SCRIPTS]


def decision_args(
    strategy: Strategy, rate: Rate, cost: int, now_ms: int | None
) -> tuple[int | str, ...]:
    """ARGV of a decision script: now (or '' for the server clock), limit, window, cost, capacity.

    A cost above the capacity can never be admitted and charges nothing, so every
    such cost decides alike: it is capped at ``capacity + 1`` to keep the script's
    products exact. Raises ``ValueError`` as the Python strategy would for a
    capacity too large to count exactly.
    """
    capacity = strategy.capacity(rate)
    strategy._check_exact(rate, capacity)
    return (
        "" if now_ms is None else now_ms,
        rate.limit,
        rate.expire,
        cost if cost <= capacity else capacity + 1,
        capacity,
    )


def to_decision(reply: bytes | str) -> Decision:
    """The :class:`Decision` of a decision script's reply: ``b"1,limit,remaining,reset,retry,window"``."""
    text = reply.decode("ascii") if isinstance(reply, bytes) else reply
    allowed, limit, remaining, reset_ms, retry_ms, window_ms = map(int, text.split(","))
    return Decision(allowed == 1, limit, remaining, reset_ms, retry_ms, window_ms)
