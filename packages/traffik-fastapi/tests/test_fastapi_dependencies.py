"""user_identifier and tiered through real FastAPI apps."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, Header
from starlette.testclient import TestClient

from traffik import UNLIMITED
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConfigurationError
from traffik.fastapi import throttled, tiered, user_identifier
from traffik.throttles import HTTPThrottle

NOW = 1_699_999_980_000


class User:
    def __init__(self, id: str, plan: str) -> None:
        self.id = id
        self.plan = plan


USERS = {"alice": User("1", "free"), "bob": User("2", "pro"), "root": User("0", "admin")}
calls: list[str] = []


async def current_user(x_user: Annotated[str | None, Header()] = None) -> User | None:
    calls.append("current_user")
    return USERS.get(x_user or "")


def user_key(user: User) -> object:
    return UNLIMITED if user.plan == "admin" else user.id


async def plan(user: Annotated[User | None, Depends(current_user)]) -> str:
    return user.plan if user else "anonymous"


def app_with(*routes_deps: object) -> FastAPI:
    backend = InMemoryBackend(namespace="deps", clock=lambda: NOW)
    return FastAPI(lifespan=backend.lifespan)


def test_user_identifier_keys_by_user_and_falls_back_to_ip() -> None:
    app = app_with()
    per_user = HTTPThrottle(
        "per-user", "1/m", identifier=user_identifier(current_user, key=user_key)
    )

    @app.get("/me", dependencies=[throttled(per_user)])
    async def me(user: Annotated[User | None, Depends(current_user)]) -> dict[str, str | None]:
        return {"id": user.id if user else None}

    calls.clear()
    with TestClient(app) as client:
        assert client.get("/me", headers={"x-user": "alice"}).json() == {"id": "1"}
        # FastAPI's cache: current_user ran once for the throttle and the route.
        assert calls == ["current_user"]
        assert client.get("/me", headers={"x-user": "alice"}).status_code == 429
        # Another user has its own budget; the anonymous visitor is keyed by address.
        assert client.get("/me", headers={"x-user": "bob"}).status_code == 200
        assert client.get("/me").status_code == 200
        assert client.get("/me").status_code == 429
        # key() returned UNLIMITED: exempt.
        for _ in range(3):
            assert client.get("/me", headers={"x-user": "root"}).status_code == 200


def test_user_identifier_needs_throttled() -> None:
    app = app_with()
    per_user = HTTPThrottle("direct", "1/m", identifier=user_identifier(current_user))

    @app.get("/direct", dependencies=[Depends(per_user)])
    async def direct() -> str:
        return "x"

    with TestClient(app) as client, pytest.raises(ConfigurationError, match="throttled"):
        client.get("/direct", headers={"x-user": "alice"})


def test_tiered_picks_the_throttle_per_request() -> None:
    app = app_with()
    free = HTTPThrottle("free", "1/m", identifier=user_identifier(current_user, key=lambda u: u.id))
    pro = HTTPThrottle("pro", "3/m", identifier=user_identifier(current_user, key=lambda u: u.id))
    anonymous = HTTPThrottle("anon", "2/m")

    @app.get("/search")
    @tiered({"free": free, "pro": pro, "admin": None}, plan, default=anonymous)
    async def search() -> str:
        return "results"

    with TestClient(app) as client:
        alice = [client.get("/search", headers={"x-user": "alice"}) for _ in range(2)]
        assert [r.status_code for r in alice] == [200, 429]
        assert alice[0].headers["ratelimit-policy"] == '"free";q=1;w=60'
        bob = [client.get("/search", headers={"x-user": "bob"}).status_code for _ in range(4)]
        assert bob == [200, 200, 200, 429]
        root = [client.get("/search", headers={"x-user": "root"}).status_code for _ in range(5)]
        assert root == [200] * 5
        anon = [client.get("/search").status_code for _ in range(3)]
        assert anon == [200, 200, 429]


def test_tiered_unknown_tier_without_default() -> None:
    app = app_with()

    @app.get("/t", dependencies=[tiered({"free": HTTPThrottle("f", "1/m")}, plan)])
    async def t() -> str:
        return "x"

    with TestClient(app) as client, pytest.raises(ConfigurationError, match="'pro'"):
        client.get("/t", headers={"x-user": "bob"})


def test_tiered_validation() -> None:
    with pytest.raises(ValueError, match="at least one tier"):
        tiered({}, plan)
    with pytest.raises(TypeError, match="not a throttle"):
        tiered({"free": "nope"}, plan)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="tier dependency"):
        tiered({"free": None}, "plan")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dependency callable"):
        user_identifier("user")  # type: ignore[arg-type]
