"""The README's "Writing Custom Strategies" examples, as written, against InMemoryBackend.

The three example blocks below are copied from the 1.0.0b2 README (the public
contract) without changes, except that their "# Usage" parts are collected at the
bottom. ``extract_user_id`` is the helper the priority example assumes. Time comes
from ``traffik.utils.time``, which the tests replace with a controllable clock
through this module's ``time`` global (no sleeping).
"""

from __future__ import annotations

# ruff: noqa: I001, E402, F811
# fmt: off
import pytest
from starlette.requests import Request

from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import ConnectionThrottled
from traffik.rates import Rate
from traffik.throttles import HTTPThrottle

# --- README: Example: Simple Rate Strategy -----------------------------------------
from dataclasses import dataclass
from traffik.backends.base import ThrottleBackend
from traffik.rates import Rate
from traffik.types import Stringable, WaitPeriod
from traffik.utils import time


async def simple_counter_strategy(
    key: Stringable, rate: Rate, backend: ThrottleBackend, cost: int = 1
) -> WaitPeriod:
    """
    Simple counter-based rate limiting.

    Counts requests and resets counter when expired.
    """
    if rate.unlimited:
        return 0.0

    now = time() * 1000  # Current time in milliseconds
    full_key = await backend.get_key(str(key))
    counter_key = f"{full_key}:counter"
    timestamp_key = f"{full_key}:timestamp"

    ttl_seconds = int(rate.expire // 1000) + 1

    async with await backend.lock(f"lock:{counter_key}", blocking=True, blocking_timeout=1):
        # Get current count and timestamp
        count_str = await backend.get(counter_key)
        timestamp_str = await backend.get(timestamp_key)

        if count_str and timestamp_str:
            count = int(count_str)
            timestamp = float(timestamp_str)

            # Check if window has expired
            if now - timestamp > rate.expire:
                # Reset counter for new window
                count = cost
                await backend.set(counter_key, str(count), expire=ttl_seconds)
                await backend.set(timestamp_key, str(now), expire=ttl_seconds)
            else:
                # Increment counter
                count = await backend.increment(counter_key, amount=cost)
        else:
            # First request
            count = cost
            await backend.set(counter_key, str(count), expire=ttl_seconds)
            await backend.set(timestamp_key, str(now), expire=ttl_seconds)

        # Check if limit exceeded
        if count > rate.limit:
            # Calculate wait time until window expires
            timestamp = float(await backend.get(timestamp_key))
            elapsed = now - timestamp
            wait_ms = rate.expire - elapsed
            return max(wait_ms, 0.0)

        return 0.0


# --- README: Example: Adaptive Rate Strategy -------------------------------------------
from dataclasses import dataclass
from traffik.backends.base import ThrottleBackend
from traffik.rates import Rate
from traffik.types import Stringable, WaitPeriod
from traffik.utils import time

@dataclass(frozen=True)
class AdaptiveRateStrategy:
    """
    Adaptive rate limiting that adjusts based on system load.

    Reduces limits during high load, increases during low load.
    """

    load_threshold: float = 0.8  # 80% of limit triggers adaptation
    reduction_factor: float = 0.5  # Reduce to 50% during high load

    async def __call__(
        self, key: Stringable, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> WaitPeriod:
        if rate.unlimited:
            return 0.0

        now = time() * 1000
        window_duration_ms = rate.expire
        current_window = int(now // window_duration_ms)

        full_key = await backend.get_key(str(key))
        counter_key = f"{full_key}:adaptive:{current_window}"
        load_key = f"{full_key}:load"
        ttl_seconds = int(window_duration_ms // 1000) + 1

        async with await backend.lock(f"lock:{counter_key}", blocking=True, blocking_timeout=1):
            # Increment request counter by cost
            count = await backend.increment_with_ttl(counter_key, amount=cost, ttl=ttl_seconds)

            # Calculate current load percentage
            load_percentage = count / rate.limit

            # Determine effective limit based on load
            if load_percentage > self.load_threshold:
                # High load - reduce effective limit
                effective_limit = int(rate.limit * self.reduction_factor)
                await backend.set(load_key, "high", expire=ttl_seconds)
            else:
                # Normal load - use full limit
                effective_limit = rate.limit
                await backend.set(load_key, "normal", expire=ttl_seconds)

            # Check against effective limit
            if count > effective_limit:
                # Calculate wait time
                time_in_window = now % window_duration_ms
                wait_ms = window_duration_ms - time_in_window
                return wait_ms

            return 0.0


# --- README: Example: Priority-Based Strategy ---------------------------------------------
from dataclasses import dataclass
from enum import IntEnum
from traffik.backends.base import ThrottleBackend
from traffik.rates import Rate
from traffik.types import Stringable, WaitPeriod
from traffik.utils import time, dump_json, load_json, JSONDecodeError

class Priority(IntEnum):
    """Request priority levels"""
    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4

@dataclass(frozen=True)
class PriorityQueueStrategy:
    """
    Rate limiting with priority queue.

    Higher priority requests are processed first when at capacity.
    """

    default_priority: Priority = Priority.NORMAL

    def _extract_priority(self, key: str) -> Priority:
        """Extract priority from key (format: "priority:<level>:user:123")"""
        if key.startswith("priority:"):
            try:
                level = int(key.split(":")[1])
                return Priority(level)
            except (ValueError, IndexError):
                pass
        return self.default_priority

    async def __call__(
        self, key: Stringable, rate: Rate, backend: ThrottleBackend, cost: int = 1
    ) -> WaitPeriod:
        if rate.unlimited:
            return 0.0

        now = time() * 1000
        priority = self._extract_priority(str(key))
        full_key = await backend.get_key(str(key))
        queue_key = f"{full_key}:priority_queue"
        ttl_seconds = int(rate.expire // 1000) + 1

        async with await backend.lock(f"lock:{queue_key}", blocking=True, blocking_timeout=1):
            # Get current queue
            queue_json = await backend.get(queue_key)
            if queue_json:
                try:
                    queue = load_json(queue_json)
                except JSONDecodeError:
                    queue = []
            else:
                queue = []

            # Remove expired entries
            queue = [
                entry for entry in queue
                if now - entry["timestamp"] < rate.expire
            ]
            # Count total cost of requests with higher or equal priority
            higher_priority_cost = sum(
                entry.get("cost", 1) for entry in queue
                if entry["priority"] >= priority
            )

            # Check if request can be processed (including current request's cost)
            if higher_priority_cost + cost > rate.limit:
                # Calculate wait time based on oldest high-priority entry
                oldest_high_priority = min(
                    (entry["timestamp"] for entry in queue if entry["priority"] >= priority),
                    default=now
                )
                wait_ms = rate.expire - (now - oldest_high_priority)
                return max(wait_ms, 0.0)

            # Add current request to queue
            queue.append({
                "timestamp": now,
                "priority": priority,
                "key": str(key),
                "cost": cost
            })
            # Sort by priority (descending) and timestamp (ascending)
            queue.sort(key=lambda x: (-x["priority"], x["timestamp"]))
            # Store updated queue
            await backend.set(queue_key, dump_json(queue), expire=ttl_seconds)
            return 0.0
# fmt: on


def extract_user_id(connection: Request) -> str:
    """The helper the priority example assumes: a user id from a header, else the client."""
    return connection.headers.get("X-User", connection.client.host if connection.client else "anon")


# --- the README's "# Usage" parts ------------------------------------------------------


def build_usage_throttles() -> dict[str, HTTPThrottle]:
    throttles = {}
    # Usage
    throttle = HTTPThrottle(
        uid="simple",
        rate="10/m",
        strategy=simple_counter_strategy,
    )
    throttles["simple"] = throttle
    # Usage
    throttle = HTTPThrottle(
        uid="adaptive_api",
        rate="1000/h",
        strategy=AdaptiveRateStrategy(load_threshold=0.7, reduction_factor=0.6),
    )
    throttles["adaptive"] = throttle

    # Usage
    async def priority_identifier(connection):  # type: ignore[no-untyped-def]
        """Extract priority from request headers"""
        priority = connection.headers.get("X-Priority", "2")
        user_id = extract_user_id(connection)
        return f"priority:{priority}:user:{user_id}"

    throttle = HTTPThrottle(
        uid="priority_api",
        rate="100/m",
        strategy=PriorityQueueStrategy(),
        identifier=priority_identifier,
    )
    throttles["priority"] = throttle
    return throttles


# --- tests ------------------------------------------------------------------------------


class FakeTime:
    """Seconds, like traffik.utils.time; advanced by the tests."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setitem(globals(), "time", fake)
    return fake


@pytest.mark.parametrize(
    "make",
    [lambda: simple_counter_strategy, AdaptiveRateStrategy, PriorityQueueStrategy],
    ids=["simple", "adaptive", "priority"],
)
@pytest.mark.anyio
async def test_custom_strategy(make, clock: FakeTime) -> None:  # type: ignore[no-untyped-def]
    """The README's "Testing Custom Strategies" test, run for each example."""
    MyCustomStrategy = make
    backend = InMemoryBackend(namespace="test")
    async with backend(close_on_exit=True):
        strategy = MyCustomStrategy()
        rate = Rate.parse("5/s")

        # The adaptive example lowers its limit past 80% of it: 4 then throttled.
        admitted = 4 if isinstance(strategy, AdaptiveRateStrategy) else 5
        # Test allowing requests
        for i in range(admitted):
            wait = await strategy(f"user:123", rate, backend)  # noqa: F541
            assert wait == 0.0, f"Request {i + 1} should be allowed"

        # Test throttling
        wait = await strategy(f"user:123", rate, backend)  # noqa: F541
        assert wait > 0, "Request 6 should be throttled"

        # Verify wait time is reasonable
        assert wait <= rate.expire, "Wait time should not exceed window"


@pytest.mark.anyio
async def test_simple_counter_window_resets_and_costs_add(clock: FakeTime) -> None:
    backend = InMemoryBackend(namespace="test", clock=lambda: int(clock.now * 1000))
    async with backend():
        rate = Rate.parse("10/m")
        assert await simple_counter_strategy("u", rate, backend, cost=6) == 0.0
        assert await simple_counter_strategy("u", rate, backend, cost=4) == 0.0
        clock.now += 15
        assert await simple_counter_strategy("u", rate, backend) == pytest.approx(45_000)
        clock.now += 45.001
        assert await simple_counter_strategy("u", rate, backend) == 0.0
        assert await simple_counter_strategy("other", rate, backend, cost=10) == 0.0


@pytest.mark.anyio
async def test_adaptive_waits_for_the_next_window(clock: FakeTime) -> None:
    backend = InMemoryBackend(namespace="test", clock=lambda: int(clock.now * 1000))
    async with backend():
        strategy = AdaptiveRateStrategy(load_threshold=1.0)
        rate = Rate.parse("3/10s")
        clock.now = 1_700_000_000.0  # 0 ms into a 10 s window
        for _ in range(3):
            assert await strategy("u", rate, backend) == 0.0
        assert await strategy("u", rate, backend) == pytest.approx(10_000)
        assert await backend.get("test:u:load") == "high"  # 4 > 3 x 1.0
        clock.now += 10
        assert await strategy("u", rate, backend) == 0.0


@pytest.mark.anyio
async def test_priority_queue_orders_and_expires_entries(clock: FakeTime) -> None:
    backend = InMemoryBackend(namespace="test", clock=lambda: int(clock.now * 1000))
    async with backend():
        strategy = PriorityQueueStrategy()
        rate = Rate.parse("2/s")
        key = "priority:3:user:7"
        assert await strategy(key, rate, backend) == 0.0
        clock.now += 0.25
        assert await strategy(key, rate, backend) == 0.0
        assert await strategy(key, rate, backend) == pytest.approx(750)
        queue = load_json(await backend.get("test:priority:3:user:7:priority_queue"))
        assert [entry["priority"] for entry in queue] == [3, 3]
        clock.now += 0.75
        assert await strategy(key, rate, backend) == 0.0  # the first entry left the window


@pytest.mark.anyio
async def test_usage_throttles_run_through_a_request(clock: FakeTime) -> None:
    throttles = build_usage_throttles()
    backend = InMemoryBackend(namespace="readme")
    async with backend():
        for name, limit in (("simple", 10), ("priority", 100)):
            throttle = throttles[name]
            scope = {
                "type": "http",
                "method": "GET",
                "path": f"/{name}",
                "headers": [(b"x-priority", b"3"), (b"x-user", b"alice")],
                "query_string": b"",
                "client": ("203.0.113.9", 1234),
                "app": None,
            }
            for _ in range(limit):
                await throttle(Request(scope))
            with pytest.raises(ConnectionThrottled) as info:
                await throttle(Request(scope))
            assert info.value.status_code == 429
        assert throttles["adaptive"].rate == Rate.parse("1000/h")
