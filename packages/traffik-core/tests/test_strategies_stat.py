"""``strategy.get_stat()`` at exactly the limit: the wait of the next one-unit request.

traffik 1.0.0b2 reported ``wait_time == 0`` until a request had exceeded the limit;
traffik reports, at every point, the wait a one-unit request would get now (the same
decision ``peek`` returns), so at exactly the limit ``wait_time > 0``. Refused requests
are not counted by traffik's strategies, so "exceeded" is not a state they could report;
listed in the migration notes.
"""

from __future__ import annotations

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.rates import Rate
from traffik.strategies import BUILTIN_STRATEGIES, Strategy

NOW_MS = 1_000_000_123  # a fixed clock: no window boundary can pass during the test


@pytest.mark.asyncio
@pytest.mark.parametrize("strategy", BUILTIN_STRATEGIES, ids=lambda s: type(s).__name__)
async def test_at_exactly_the_limit_the_stat_reports_the_next_requests_wait(
    strategy: Strategy,
) -> None:
    rate = Rate.parse("3/s")
    async with InMemoryBackend(namespace="stat", clock=lambda: NOW_MS)() as backend:
        fresh = await strategy.get_stat("k", rate, backend)
        assert (fresh.hits_remaining, fresh.wait_time) == (strategy.capacity(rate), 0.0)
        for _ in range(strategy.capacity(rate)):
            assert await strategy("k", rate, backend) == 0.0
        at_limit = await strategy.get_stat("k", rate, backend)
        assert at_limit.hits_remaining == 0
        assert at_limit.wait_time > 0, "at the limit the next request waits"
        # The wait is the one a request made now is refused with.
        assert await strategy("k", rate, backend) == at_limit.wait_time
