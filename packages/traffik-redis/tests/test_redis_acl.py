"""A least-privilege ACL user: exactly the documented ACL passes the kit, less says why.

The ACL below is the one docs/backends/redis-production.md gives; a test checks
that the page and this module agree.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from traffik.exceptions import BackendError
from traffik.rates import Rate
from traffik.redis import RedisBackend
from traffik.redis import _scripts as redis_scripts
from traffik.redis._errors import ACL_COMMANDS
from traffik.redis._scripts import _CALL
from traffik.strategies import FixedWindowStrategy
from traffik.testing import BackendConformance
from traffik.testing.servers import RedisServer

pytestmark = pytest.mark.redis

#: The commands traffik sends (its scripts' inner calls included), as in the docs.
TRAFFIK_COMMANDS = ACL_COMMANDS

DOCS = Path(__file__).resolve().parents[3] / "docs" / "backends" / "redis-production.md"


def set_user(server: RedisServer, name: str, namespace: str, commands: str) -> str:
    """Create (or redefine) ``name`` with ``commands`` on keys ``namespace:*``; return its URL."""
    password = f"pw-{name}"  # the same for every backend of one user
    server.command(
        "ACL", "SETUSER", name, "reset", "on", f">{password}", "resetchannels",
        f"~{namespace}:*", "-@all", *commands.split(),
    )  # fmt: skip
    return f"redis://{name}:{password}@{server.host}:{server.port}/0"


@pytest.fixture(scope="module")
def acl_server() -> typing.Iterator[RedisServer]:
    """A private redis-server whose default user is left as is (the test users are added)."""
    with RedisServer() as server:
        yield server


class TestLeastPrivilegeUserConformance(BackendConformance):
    """Every kit test with a user that may run only traffik's commands on its namespace."""

    @pytest.fixture(autouse=True)
    def _server(self, acl_server: RedisServer) -> None:
        self.server = acl_server

    def make_backend(self, namespace: str) -> RedisBackend:
        url = set_user(self.server, f"u-{namespace}", namespace, TRAFFIK_COMMANDS)
        return RedisBackend(url, namespace=namespace)

    # These three write keys outside the namespace on purpose (to check that reset and
    # clear spare them): the ACL forbids exactly that, so the write is refused.
    _OUTSIDE = "writes keys outside the namespace, which this user may not touch"

    @pytest.mark.xfail(reason=_OUTSIDE, raises=BackendError, strict=True)
    @pytest.mark.asyncio
    async def test_reset_clears_only_its_namespace(self) -> None:
        await super().test_reset_clears_only_its_namespace()

    @pytest.mark.xfail(reason=_OUTSIDE, raises=BackendError, strict=True)
    @pytest.mark.asyncio
    async def test_clear_clears_only_its_namespace(self) -> None:
        await super().test_clear_clears_only_its_namespace()

    @pytest.mark.xfail(reason=_OUTSIDE, raises=BackendError, strict=True)
    @pytest.mark.asyncio
    async def test_reset_spares_another_namespace_on_the_same_server(self) -> None:
        await super().test_reset_spares_another_namespace_on_the_same_server()


def test_the_docs_give_this_acl() -> None:
    text = " ".join(DOCS.read_text(encoding="utf-8").split())
    assert TRAFFIK_COMMANDS in text


@pytest.mark.asyncio
@pytest.mark.parametrize("missing", ["+evalsha", "+time", "+script|load"])
async def test_a_user_without_a_needed_command_is_told_which(
    acl_server: RedisServer, missing: str
) -> None:
    namespace = f"acl-{missing.strip('+').replace('|', '-')}"
    commands = TRAFFIK_COMMANDS.replace(missing + " ", "")
    url = set_user(acl_server, namespace, namespace, commands)
    backend = RedisBackend(url, namespace=namespace, failure_policy=None)

    async def first_decision() -> None:
        await backend.initialize()  # SCRIPT LOAD is refused here, EVALSHA or TIME later
        try:
            await backend.decide("k", FixedWindowStrategy(), Rate.parse("5/m"))
        finally:
            await backend.close()

    with pytest.raises(BackendError) as info:
        await first_decision()
    message = str(info.value)
    assert "lacks a permission traffik needs" in message
    assert missing.strip("+").split("|")[0].upper() in message.upper()


@pytest.mark.asyncio
async def test_a_user_limited_to_another_namespace_is_told_about_the_keys(
    acl_server: RedisServer,
) -> None:
    url = set_user(acl_server, "acl-keys", "other", TRAFFIK_COMMANDS)
    backend = RedisBackend(url, namespace="acl-keys", failure_policy=None)
    async with backend():
        with pytest.raises(BackendError) as info:
            await backend.decide("k", FixedWindowStrategy(), Rate.parse("5/m"))
    message = str(info.value)
    assert "lacks a permission traffik needs" in message
    assert "key" in message.lower()
    assert f"~<namespace>:* {ACL_COMMANDS}" in message


def test_the_documented_acl_covers_every_command_the_scripts_call() -> None:
    # Every Lua file the backend ships (decisions, peeks, leases, adjustments): a
    # script that calls a command the ACL lacks fails only for least-privilege users.
    scripts = Path(redis_scripts.__file__).parent / "scripts"
    called = set()
    for path in scripts.glob("*.lua"):
        called |= {c.lower() for c in _CALL.findall(path.read_text(encoding="utf-8"))}
    granted = {part.lstrip("+") for part in ACL_COMMANDS.split()}
    assert called, "no script found"
    assert called <= granted, f"the ACL lacks {sorted(called - granted)}"
