"""The per-throttle plan: settled once, rebuilt when an option is assigned afterwards."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConnectionThrottled
from traffik.headers import get_decisions
from traffik.rates import Rate
from traffik.throttles import HTTPThrottle


def _request(client: str = "10.0.0.1") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/plan", "headers": [],
                    "client": (client, 1234), "query_string": b""})  # fmt: skip


@pytest.mark.asyncio
async def test_assigning_options_after_a_call_takes_effect() -> None:
    backend = InMemoryBackend(namespace="plan")
    async with backend():
        throttle = HTTPThrottle("plan", "1/h", backend=backend)
        first = _request()
        await throttle(first)
        assert get_decisions(first)["plan"].limit == 1
        throttle.rate = Rate.parse("5/h")
        second = _request()
        await throttle(second)  # a new limit: admitted again
        assert get_decisions(second)["plan"].limit == 5

        async def by_name(connection: Request) -> str:
            return "someone"

        throttle.identifier = by_name
        assert throttle.identifier is by_name
        throttle.cost = 5
        await throttle(_request())  # "someone" spends 5 of 5...
        with pytest.raises(ConnectionThrottled):
            await throttle(_request())  # ...then needs 5 more
        throttle.uid = "plan-renamed"
        renamed = _request()
        await throttle(renamed)  # another uid, another budget
        assert list(get_decisions(renamed)) == ["plan-renamed"]


@pytest.mark.asyncio
async def test_the_plan_is_built_once_and_reused() -> None:
    backend = InMemoryBackend(namespace="plan-once")
    async with backend():
        throttle = HTTPThrottle("plan-once", "100/h", backend=backend)
        await throttle(_request())
        plan = throttle._plan
        assert plan is not None
        await throttle(_request("10.0.0.2"))
        assert throttle._plan is plan
        throttle.legacy_headers = True
        assert throttle._plan is None
