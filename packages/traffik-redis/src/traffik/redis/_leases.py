"""Leases on Redis and Redis Cluster: one Lua script per operation (take, renew, release).

The scripts (``scripts/lease_*.lua``, with ``scripts/_lease_prelude.lua``) port the
reference transitions of :mod:`traffik.leases` onto a sorted set scored by lease
expiry, with the server's clock (``TIME``) unless the backend keeps its own. One key
per throttle key (``namespace:{key}:lease``, a hash tag), so on a cluster every
operation is one round trip to the key's master.
"""

from __future__ import annotations

import hashlib
import typing

from traffik.leases import LeaseGrant
from traffik.redis._scripts import LuaScript, run_script

if typing.TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["LEASE_SCRIPTS", "grant_of", "run_lease"]


def _script(name: str) -> LuaScript:
    from importlib import resources

    folder = resources.files("traffik.redis").joinpath("scripts")
    prelude = folder.joinpath("_lease_prelude.lua").read_text("utf-8")
    body = folder.joinpath(f"{name}.lua").read_text("utf-8")
    source = (prelude + "\n" + body).encode("utf-8")
    sha = hashlib.sha1(source).hexdigest()
    return LuaScript(name, source, sha, sha.encode("ascii"))


#: The three scripts, by operation.
LEASE_SCRIPTS: dict[str, LuaScript] = {
    op: _script(f"lease_{op}") for op in ("take", "renew", "release")
}


async def run_lease(client: typing.Any, op: str, key: str, args: Sequence[int | str]) -> typing.Any:
    """Run lease script ``op`` on ``key`` (NOSCRIPT loads it and retries)."""
    return await run_script(client, LEASE_SCRIPTS[op], key, args)


def grant_of(reply: typing.Any) -> LeaseGrant:
    """The :class:`~traffik.leases.LeaseGrant` of a ``lease_take`` reply."""
    taken, held, retry = reply
    return LeaseGrant(bool(int(taken)), int(held), max(0, int(retry)))
