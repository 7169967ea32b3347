"""The Lua scripts: loading them, and which one runs which strategy.

Each built-in strategy is one script (``scripts/<name>.lua``, with the shared
``_prelude.lua`` prepended): one ``EVALSHA`` per decision. A script the server lost
(``NOSCRIPT`` after a restart or ``SCRIPT FLUSH``) is loaded again and the call
retried, as redis-py's ``register_script`` would, without its wrapper per call.
"""

from __future__ import annotations

import hashlib
import re
import typing
from dataclasses import dataclass
from importlib import resources

from redis.exceptions import NoScriptError
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
    "PLANS_MAX",
    "SCRIPT_OF",
    "DecisionPlan",
    "LuaScript",
    "PackedArgs",
    "ScriptSet",
    "decision_args",
    "keep_plan",
    "load_script",
    "pack_args",
    "pack_evalsha",
    "run_script",
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


@dataclass(frozen=True, slots=True)
class LuaScript:
    """One script: its name, its text as sent to Redis, and the SHA1 that ``EVALSHA`` names."""

    name: str
    source: bytes
    sha: str
    #: The SHA1 as ASCII bytes, ready for a packed command.
    sha_bytes: bytes

    @classmethod
    def named(cls, name: str) -> LuaScript:
        source = _source(name).encode("utf-8")
        sha = hashlib.sha1(source).hexdigest()
        return cls(name, source, sha, sha.encode("ascii"))


_CALL = re.compile(r"redis\.p?call\(\s*['\"]([A-Za-z]+)['\"]")


def script_calls(sha: str) -> tuple[str, list[str]] | None:
    """The name of traffik's script ``sha`` and the commands it calls; None if not ours."""
    for name in _ALL_SCRIPTS:
        script = LuaScript.named(name)
        if script.sha == sha:
            calls = {command.upper() for command in _CALL.findall(script.source.decode())}
            return name, sorted(calls)
    return None


class ScriptSet:
    """Every script the backend runs: ``scripts["fw"]`` is a :class:`LuaScript`."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, LuaScript] = {name: LuaScript.named(name) for name in _ALL_SCRIPTS}

    def __getitem__(self, name: str) -> LuaScript:
        return self._by_name[name]

    def sources(self) -> list[bytes]:
        """The text of every script (for ``SCRIPT LOAD`` at start-up)."""
        return [script.source for script in self._by_name.values()]


async def run_script(
    client: typing.Any, script: LuaScript, key: str, args: typing.Sequence[typing.Any]
) -> typing.Any:
    """``EVALSHA`` through ``client`` (a Redis or RedisCluster); on ``NOSCRIPT``, load and retry."""
    try:
        return await client.execute_command("EVALSHA", script.sha, 1, key, *args)
    except NoScriptError:
        await client.script_load(script.source)
        return await client.execute_command("EVALSHA", script.sha, 1, key, *args)


class PackedArgs(typing.NamedTuple):
    """ARGV of a script call, already in the Redis protocol (packed once, sent many times)."""

    size: int
    data: bytes


def pack_args(args: typing.Sequence[int | str]) -> PackedArgs:
    """``args`` as redis-py's pack_command writes them: ints in decimal, text in UTF-8."""
    parts = []
    for arg in args:
        raw = arg.encode("utf-8") if isinstance(arg, str) else b"%d" % arg
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return PackedArgs(len(args), b"".join(parts))


def pack_evalsha(script: LuaScript, key: bytes, args: PackedArgs) -> bytes:
    """``EVALSHA sha 1 key *args`` in the Redis protocol."""
    return b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n$%d\r\n%b\r\n%b" % (
        args.size + 4,
        script.sha_bytes,
        len(key),
        key,
        args.data,
    )


class DecisionPlan(typing.NamedTuple):
    """What a decision on the server clock sends, but the key: worked out once."""

    strategy: Strategy
    rate: Rate
    script: LuaScript
    suffix: str
    args: PackedArgs


#: Decision plans kept per backend (one per strategy, rate and cost in use).
PLANS_MAX = 256


def keep_plan(
    plans: dict[tuple[int, int, int], DecisionPlan], plan: DecisionPlan, cost: int
) -> None:
    """Keep ``plan`` under ``(id(strategy), id(rate), cost)``; the plan holds both objects,
    so their ids cannot be reused while it is kept."""
    if len(plans) >= PLANS_MAX:
        plans.clear()  # strategies and rates are few; this only bounds a leak
    plans[(id(plan.strategy), id(plan.rate), cost)] = plan


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
    strategy.check_exact(rate, capacity)
    return (
        "" if now_ms is None else now_ms,
        rate.limit,
        rate.expire,
        cost if cost <= capacity else capacity + 1,
        capacity,
    )


_new_tuple = tuple.__new__
_DEFAULT_POLICY: str = Decision._field_defaults["policy"]


def to_decision(reply: bytes | str) -> Decision:
    """The :class:`Decision` of a decision script's reply: ``b"1,limit,remaining,reset,retry,window"``.

    Built as the tuple it is (``Decision`` is a named tuple): one per decision, and
    the named tuple's ``__new__`` (a Python function) costs more than the parsing.
    """
    fields: list[bytes] | list[str]
    if isinstance(reply, bytes):
        fields = reply.split(b",")
        admitted = fields[0] == b"1"
    else:  # a client with decode_responses=True
        fields = reply.split(",")
        admitted = fields[0] == "1"
    _, limit, remaining, reset_ms, retry_ms, window_ms = fields
    decision: Decision = _new_tuple(
        Decision,
        (
            admitted,
            int(limit),
            int(remaining),
            int(reset_ms),
            int(retry_ms),
            int(window_ms),
            _DEFAULT_POLICY,
        ),
    )
    return decision
