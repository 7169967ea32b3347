"""traffik.metrics, read back through the OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import typing

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.requests import Request

from traffik import events, metrics
from traffik._guard.emit import observers
from traffik.backends.base import BackendCapabilities
from traffik.backends.inmemory import InMemoryBackend
from traffik.decisions import Decision
from traffik.exceptions import ConnectionThrottled
from traffik.failures import FailurePolicy, decide_with_policy
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy
from traffik.strategies._base import Strategy
from traffik.throttles import HTTPThrottle

RATE = Rate.parse("2/s")
FW = FixedWindowStrategy()


class FlakyBackend(InMemoryBackend):  # type: ignore[type-arg]
    """An in-memory backend with a failure policy whose calls can fail or be slow."""

    capabilities = BackendCapabilities(shared_state=True)
    unwrapped_methods = frozenset()

    def __init__(self, namespace: str = "flaky", **kwargs: typing.Any) -> None:
        super().__init__(namespace=namespace, **kwargs)
        self.down = False
        self.gate: asyncio.Event | None = None

    async def decide(
        self, key: str, strategy: Strategy, rate: Rate, cost: int = 1, *, now_ms: int | None = None
    ) -> Decision:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("connection refused")
        return await super().decide(key, strategy, rate, cost, now_ms=now_ms)


Points = dict[tuple[tuple[str, typing.Any], ...], typing.Any]


class Reader:
    """The in-memory reader, with the points of one metric as {attributes: value}."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def read(self) -> dict[str, typing.Any]:
        data = self.reader.get_metrics_data()
        found: dict[str, typing.Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "traffik"
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str, backend: object = None) -> Points:
        """The points of ``name`` (of ``backend`` only, when given: backends of other
        tests may still be alive, and the observable instruments see them)."""
        metric = self.read().get(name)
        if metric is None:
            return {}
        result: Points = {}
        for point in metric.data.data_points:
            attributes = dict(point.attributes or {})
            if backend is not None and attributes.get("traffik.backend") != repr(backend):
                continue
            key = tuple(sorted(attributes.items()))
            result[key] = point.value if hasattr(point, "value") else point
        return result


@pytest.fixture
def reader() -> typing.Iterator[Reader]:
    recorded = Reader()
    metrics.instrument(meter_provider=recorded.provider)
    yield recorded
    metrics.uninstrument()
    recorded.provider.shutdown()


def attrs(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name.replace("_", ".", 1), value) for name, value in pairs.items()))


def decision_attrs(throttle: str, outcome: str, backend: object) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            {
                "traffik.throttle": throttle,
                "traffik.outcome": outcome,
                "traffik.backend": repr(backend),
            }.items()
        )
    )


def request(client: str = "203.0.113.9") -> Request:
    return Request(
        {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (client, 1)}
    )


@pytest.mark.asyncio
async def test_decisions_are_counted_by_throttle_outcome_and_backend(reader: Reader) -> None:
    backend = InMemoryBackend(namespace="metrics", clock=lambda: 1_699_999_980_000)
    await backend.initialize()
    throttle = HTTPThrottle("search", "2/m", backend=backend)
    for _ in range(2):
        await throttle(request())
    with pytest.raises(ConnectionThrottled):
        await throttle(request())
    points = reader.points("traffik.decisions")
    assert points == {
        decision_attrs("search", "admitted", backend): 2,
        decision_attrs("search", "refused", backend): 1,
    }


@pytest.mark.asyncio
async def test_no_attribute_carries_the_client_identity_or_the_key(reader: Reader) -> None:
    backend = FlakyBackend()
    await backend.initialize()
    throttle = HTTPThrottle("ids", "1/m", backend=backend)
    await throttle(request("198.51.100.42"))
    backend.down = True
    await throttle(request("198.51.100.43"))
    seen = []
    for metric in reader.read().values():
        for point in metric.data.data_points:
            seen.extend(str(value) for value in dict(point.attributes or {}).values())
    assert seen
    assert not [value for value in seen if "198.51.100" in value or "ids:" in value]


@pytest.mark.asyncio
async def test_answers_by_policy_are_their_own_outcome_with_errors_and_fallbacks(
    reader: Reader,
) -> None:
    policy = FailurePolicy(on_error="allow", failure_threshold=2)
    backend = FlakyBackend("policy", failure_policy=policy)
    await backend.initialize()
    backend.down = True
    for _ in range(3):
        decision = await decide_with_policy(backend, "k", FW, RATE, 1, name="pay")
        assert decision.allowed
    assert reader.points("traffik.decisions") == {decision_attrs("pay", "policy", backend): 3}
    where = ("traffik.backend", repr(backend))
    assert reader.points("traffik.fallbacks") == {
        tuple(sorted([where, ("traffik.throttle", "pay"), ("traffik.action", "allow")])): 3
    }
    # Two calls failed; the third found the circuit open and never called.
    assert reader.points("traffik.backend.errors") == {
        tuple(sorted([where, ("traffik.throttle", "pay"), ("error.type", "BackendError")])): 2
    }
    domain = ("traffik.failure_domain", "default")
    assert reader.points("traffik.circuit.transitions") == {
        tuple(sorted([where, domain, ("traffik.circuit.state", "open")])): 1
    }
    assert reader.points("traffik.circuit.state", backend) == {
        tuple(sorted([where, domain, ("traffik.circuit.state", state)])): int(state == "open")
        for state in ("closed", "half_open", "open")
    }


@pytest.mark.asyncio
async def test_overload_is_its_own_outcome_and_calls_in_flight_are_observed(
    reader: Reader,
) -> None:
    policy = FailurePolicy(max_in_flight=1, max_waiting=1, timeout=None)
    backend = FlakyBackend(failure_policy=policy)
    await backend.initialize()
    backend.gate = asyncio.Event()
    first = asyncio.create_task(decide_with_policy(backend, "a", FW, RATE, 1, name="q"))
    second = asyncio.create_task(decide_with_policy(backend, "b", FW, RATE, 1, name="q"))
    await asyncio.sleep(0.01)
    where = ("traffik.backend", repr(backend))
    domain = ("traffik.failure_domain", "default")
    assert reader.points("traffik.backend.calls.active", backend) == {
        tuple(sorted([where, domain])): 1
    }
    assert reader.points("traffik.backend.calls.waiting", backend) == {
        tuple(sorted([where, domain])): 1
    }
    # The line is full: a third call is refused at once, as an overload.
    refused = await decide_with_policy(backend, "c", FW, RATE, 1, name="q")
    assert not refused.allowed
    backend.gate.set()
    await asyncio.gather(first, second)
    assert reader.points("traffik.decisions") == {
        decision_attrs("q", "admitted", backend): 2,
        decision_attrs("q", "overload", backend): 1,
    }
    assert reader.points("traffik.backend.calls.active", backend) == {
        tuple(sorted([where, domain])): 0
    }


@pytest.mark.asyncio
async def test_backend_call_latency_is_a_histogram_in_seconds(reader: Reader) -> None:
    backend = FlakyBackend()
    await backend.initialize()
    for n in range(5):
        await decide_with_policy(backend, f"k{n}", FW, RATE, 1, name="lat")
    backend.down = True
    await decide_with_policy(backend, "k", FW, RATE, 1, name="lat")
    metric = reader.read()["traffik.backend.call.duration"]
    assert metric.unit == "s"
    points = {
        tuple(sorted(dict(point.attributes).items())): point for point in metric.data.data_points
    }
    ok = points[(("traffik.backend", repr(backend)), ("traffik.call.outcome", "ok"))]
    assert ok.count == 5
    assert 0 < ok.sum < 1
    assert tuple(ok.explicit_bounds) == metrics.DURATION_BUCKETS
    failed = points[(("traffik.backend", repr(backend)), ("traffik.call.outcome", "error"))]
    assert failed.count == 1


@pytest.mark.asyncio
async def test_shadow_refusals_have_their_own_outcome(reader: Reader) -> None:
    decision = Decision(False, 2, 0, 500, 500, 1000)
    events.emit(
        events.ThrottleEvent(events.SHADOW_THROTTLED, policy="s", backend="B", decision=decision)
    )
    assert reader.points("traffik.decisions") == {
        (
            ("traffik.backend", "B"),
            ("traffik.outcome", "refused_shadow"),
            ("traffik.throttle", "s"),
        ): 1
    }


@pytest.mark.asyncio
async def test_uninstrument_stops_recording_and_unhooks_everything() -> None:
    recorded = Reader()
    assert not metrics.is_instrumented()
    metrics.instrument(meter_provider=recorded.provider)
    assert metrics.is_instrumented()
    assert events.has_subscribers()
    assert len(observers) == 1
    backend = FlakyBackend()
    await backend.initialize()
    await decide_with_policy(backend, "k", FW, RATE, 1, name="u")
    metrics.uninstrument()
    metrics.uninstrument()  # twice is harmless
    assert not metrics.is_instrumented()
    assert not events.has_subscribers()
    assert observers == []
    await decide_with_policy(backend, "k", FW, RATE, 1, name="u")
    # The counters keep their totals, frozen; the live gauges report nothing.
    assert recorded.points("traffik.decisions") == {decision_attrs("u", "admitted", backend): 1}
    assert recorded.points("traffik.backend.calls.active") == {}
    # Instrumenting the same provider again carries on from the same totals.
    metrics.instrument(meter_provider=recorded.provider)
    await decide_with_policy(backend, "k2", FW, RATE, 1, name="u")
    metrics.uninstrument()
    assert recorded.points("traffik.decisions") == {decision_attrs("u", "admitted", backend): 2}
    recorded.provider.shutdown()


@pytest.mark.asyncio
async def test_instrument_again_replaces_the_previous_provider(reader: Reader) -> None:
    other = Reader()
    metrics.instrument(meter_provider=other.provider)
    backend = InMemoryBackend(namespace="again")
    await backend.initialize()
    await decide_with_policy(backend, "k", FW, RATE, 1, name="r")
    assert reader.points("traffik.decisions") == {}
    assert other.points("traffik.decisions") == {decision_attrs("r", "admitted", backend): 1}
    other.provider.shutdown()


def test_instrument_names_the_extra_when_opentelemetry_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_opentelemetry(name: str, *args: typing.Any, **kwargs: typing.Any) -> typing.Any:
        if name.startswith("opentelemetry"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_opentelemetry)
    with pytest.raises(ImportError, match=r"traffik-core\[opentelemetry\]"):
        metrics.instrument()
    assert not metrics.is_instrumented()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_real_redis_backend_reports_its_call_durations_and_circuit(
    reader: Reader, redis_url: str
) -> None:
    from traffik.redis import RedisBackend

    backend = RedisBackend(redis_url, namespace="metrics-redis", persistent=False)
    async with backend():
        throttle = HTTPThrottle("redis", "100/d", backend=backend)
        for _ in range(3):
            await throttle(request())
        durations = reader.read()["traffik.backend.call.duration"]
        ok = [
            point
            for point in durations.data.data_points
            if dict(point.attributes)
            == {"traffik.backend": repr(backend), "traffik.call.outcome": "ok"}
        ]
        assert len(ok) == 1
        assert ok[0].count == 3
        assert 0 < ok[0].sum < 3
        where = ("traffik.backend", repr(backend))
        domain = ("traffik.failure_domain", "default")
        assert reader.points("traffik.circuit.state", backend) == {
            tuple(sorted([where, domain, ("traffik.circuit.state", s)])): int(s == "closed")
            for s in ("closed", "half_open", "open")
        }
        assert reader.points("traffik.decisions") == {
            decision_attrs("redis", "admitted", backend): 3
        }
