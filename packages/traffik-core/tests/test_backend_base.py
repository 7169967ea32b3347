"""The ThrottleBackend ABC: the generic decide path, contexts and lifespan, error wrapping."""

from __future__ import annotations

import asyncio
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from traffik.backends.base import BACKEND_STATE_KEY, ThrottleBackend, get_throttle_backend
from traffik.backends.inmemory import InMemoryBackend
from traffik.exceptions import BackendConnectionError, BackendError, ConfigurationError
from traffik.rates import Rate
from traffik.strategies import (
    BUILTIN_STRATEGIES,
    FixedWindowStrategy,
    GCRAStrategy,
    LeakyBucketWithQueueStrategy,
    Strategy,
    TokenBucketStrategy,
    TokenBucketWithDebtStrategy,
)


class DictBackend(ThrottleBackend[dict, typing.Any]):
    """Only the primitive methods, on a dict with expiry by an injected clock (ms)."""

    def __init__(self, clock: typing.Callable[[], int], **kwargs: typing.Any) -> None:
        super().__init__(None, namespace="dict", clock=clock, **kwargs)
        self.locks: dict[str, asyncio.Lock] = {}
        self.fail_with: BaseException | None = None

    async def initialize(self) -> None:
        if self.connection is None:
            self.connection = {}

    async def close(self) -> None:
        self.connection = None

    def _data(self) -> dict[str, tuple[str, int | None]]:
        if self.connection is None:
            raise BackendConnectionError("DictBackend is closed.")
        if self.fail_with is not None:
            raise self.fail_with
        return self.connection

    async def reset(self) -> None:
        self._data().clear()

    async def get(self, key: str) -> str | None:
        item = self._data().get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= self.clock():
            del self._data()[key]
            return None
        return value

    async def set(self, key: str, value: str, expire: float | None = None) -> None:
        expires = None if expire is None else self.clock() + math.ceil(expire * 1000)
        self._data()[key] = (str(value), expires)

    async def delete(self, key: str) -> bool:
        return self._data().pop(key, None) is not None

    async def increment(self, key: str, amount: int = 1) -> int:
        current = await self.get(key)
        value = int(current or 0) + amount
        expires = self._data()[key][1] if current is not None else None
        self._data()[key] = (str(value), expires)
        return value

    async def get_lock(self, name: str) -> typing.Any:
        from traffik.backends.inmemory import AsyncInMemoryLock, _LockState

        # One shared state per name, as a distributed lock would have.
        states = self.__dict__.setdefault("_lock_states", {})
        return AsyncInMemoryLock(name, states.setdefault(name, _LockState()))


STRATEGIES: tuple[Strategy, ...] = (
    *BUILTIN_STRATEGIES,
    TokenBucketStrategy(burst_size=4),
    TokenBucketWithDebtStrategy(burst_size=2, max_debt=2),
    LeakyBucketWithQueueStrategy(queue_size=3),
    GCRAStrategy(burst=7),
)


@st.composite
def sequences(draw: st.DrawFn) -> tuple[Strategy, Rate, list[tuple[int, int]]]:
    strategy = draw(st.sampled_from(STRATEGIES))
    rate = Rate(
        limit=draw(st.integers(1, 8)),
        milliseconds=draw(st.sampled_from([7, 100, 999, 1000, 1500, 4000])),
    )
    capacity = strategy.capacity(rate)
    now = draw(st.integers(0, 10**10))
    events = []
    for gap, cost in draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(0, 5), st.integers(0, 3 * rate.expire)),
                st.integers(1, capacity + 1),
            ),
            min_size=1,
            max_size=40,
        )
    ):
        now += gap
        events.append((now, cost))
    return strategy, rate, events


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_generic_decide_matches_inmemory(
    scenario: tuple[Strategy, Rate, list[tuple[int, int]]],
) -> None:
    strategy, rate, events = scenario

    async def run() -> None:
        clock = [0]
        generic = DictBackend(clock=lambda: clock[0])
        native = InMemoryBackend(namespace="dict", clock=lambda: clock[0])
        async with generic(), native():
            for now, cost in events:
                clock[0] = now
                expected = await native.decide("k", strategy, rate, cost)
                # Half the calls take the time from the clock, half from now_ms.
                if now % 2:
                    got = await generic.decide("k", strategy, rate, cost)
                else:
                    got = await generic.decide("k", strategy, rate, cost, now_ms=now)
                assert got == expected
                assert await generic.peek("k", strategy, rate) == await native.peek(
                    "k", strategy, rate
                )

    asyncio.run(run())


@pytest.mark.asyncio
async def test_generic_decide_is_atomic_under_concurrency() -> None:
    clock = [1_000_000]
    backend = DictBackend(clock=lambda: clock[0])
    original_get = backend.get

    async def slow_get(key: str) -> str | None:
        await asyncio.sleep(0)  # give every other task a chance to interleave
        return await original_get(key)

    backend.get = slow_get  # type: ignore[method-assign]
    async with backend():
        rate = Rate.parse("10/s")
        for i, strategy in enumerate(STRATEGIES):
            # Strategies of one class share a storage suffix: one key each here.
            key = f"c{i}"
            decisions = await asyncio.gather(
                *(backend.decide(key, strategy, rate) for _ in range(30))
            )
            assert sum(d.allowed for d in decisions) == strategy.capacity(rate)


# -- error wrapping -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_client_errors_are_wrapped_with_the_cause_chained() -> None:
    backend = DictBackend(clock=lambda: 0)
    async with backend():
        backend.fail_with = KeyError("boom")
        with pytest.raises(BackendError, match=r"DictBackend\.get\(\) failed: KeyError") as info:
            await backend.get("k")
        assert isinstance(info.value.__cause__, KeyError)
        with pytest.raises(BackendError) as info:
            await backend.decide("k", FixedWindowStrategy(), Rate.parse("1/s"))
        assert info.value.__cause__ is not None
        backend.fail_with = ConnectionError("down")
        with pytest.raises(BackendError) as info:
            await backend.increment("k")
        assert isinstance(info.value.__cause__, ConnectionError)
        # traffik's own exceptions pass through unchanged.
        backend.fail_with = ConfigurationError("bad")
        with pytest.raises(ConfigurationError):
            await backend.set("k", "v")
        backend.fail_with = None


@pytest.mark.asyncio
@pytest.mark.parametrize("cost", [0, -3, 1.5])
async def test_bad_cost_is_a_value_error_on_every_path(cost: object) -> None:
    generic = DictBackend(clock=lambda: 0)
    native = InMemoryBackend()
    async with generic(), native():
        for backend in (generic, native):
            with pytest.raises(ValueError, match="cost") as info:
                await backend.decide("k", FixedWindowStrategy(), Rate.parse("1/s"), cost)  # type: ignore[arg-type]
            assert not isinstance(info.value, BackendError)
            assert isinstance(info.value, ConfigurationError)


@pytest.mark.asyncio
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, asyncio.CancelledError, SystemExit])
async def test_base_exceptions_are_not_wrapped(exc_type: type[BaseException]) -> None:
    backend = DictBackend(clock=lambda: 0)
    await backend.initialize()
    backend.fail_with = exc_type()
    with pytest.raises(exc_type):
        await backend.get("k")


@pytest.mark.asyncio
async def test_closed_backend_raises_connection_error_unwrapped() -> None:
    backend = DictBackend(clock=lambda: 0)
    with pytest.raises(BackendConnectionError):
        await backend.get("k")


def test_a_backend_missing_primitives_cannot_be_instantiated() -> None:
    class Partial(ThrottleBackend[None, typing.Any]):
        async def initialize(self) -> None: ...

    with pytest.raises(TypeError, match="abstract"):
        Partial(namespace="p")  # type: ignore[abstract]


def test_namespace_must_be_a_non_empty_string() -> None:
    with pytest.raises(ValueError, match="namespace"):
        InMemoryBackend(namespace="")


# -- contexts and lifespan ------------------------------------------------------------


class SpyBackend(InMemoryBackend):
    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []

    async def initialize(self) -> None:
        self.calls.append("initialize")
        await super().initialize()

    async def reset(self) -> None:
        self.calls.append("reset")
        await super().reset()

    async def close(self) -> None:
        self.calls.append("close")
        await super().close()


@pytest.mark.asyncio
async def test_outermost_context_initialises_sets_current_and_closes() -> None:
    backend = SpyBackend()
    assert get_throttle_backend() is None
    async with backend() as entered:
        assert entered is backend
        assert get_throttle_backend() is backend
        await backend.set("k", "v")
    assert get_throttle_backend() is None
    assert backend.calls == ["initialize", "reset", "close"]  # non-persistent: reset, then close
    with pytest.raises(BackendConnectionError):
        await backend.get("k")


@pytest.mark.asyncio
async def test_persistent_backend_is_not_reset() -> None:
    backend = SpyBackend(persistent=True)
    async with backend():
        pass
    assert backend.calls == ["initialize", "close"]


@pytest.mark.asyncio
async def test_nested_contexts_of_the_same_backend_stay_open() -> None:
    backend = SpyBackend()
    async with backend():
        await backend.set("k", "v")
        async with backend():
            assert get_throttle_backend() is backend
        assert backend.calls == ["initialize", "initialize"]  # no reset, no close inside
        assert await backend.get("k") == "v"
    assert backend.calls[-2:] == ["reset", "close"]


@pytest.mark.asyncio
async def test_a_different_backend_nested_inside_uses_its_own_settings() -> None:
    outer, inner = SpyBackend(), SpyBackend(namespace="inner")
    async with outer():
        async with inner():
            assert get_throttle_backend() is inner
        assert get_throttle_backend() is outer
        assert inner.calls == ["initialize", "reset", "close"]
    assert outer.calls == ["initialize", "reset", "close"]


@pytest.mark.asyncio
async def test_explicit_arguments_win() -> None:
    backend = SpyBackend()
    async with backend(persistent=True, close_on_exit=False):
        pass
    assert backend.calls == ["initialize"]
    assert backend.connection is not None


@pytest.mark.asyncio
async def test_app_context_and_lifespan_register_and_close() -> None:
    backend = SpyBackend()
    app = Starlette()
    async with backend(app):
        assert getattr(app.state, BACKEND_STATE_KEY) is backend
    # Unlike 1.0.0b2, a context with an app is not "nested in itself": it cleans up.
    assert backend.calls == ["initialize", "reset", "close"]
    assert get_throttle_backend(app) is backend  # still registered on the app

    lifespan_backend = SpyBackend()
    app2 = Starlette(lifespan=lifespan_backend.lifespan)
    async with lifespan_backend.lifespan(app2):
        assert get_throttle_backend() is lifespan_backend
        assert get_throttle_backend(app2) is lifespan_backend
        await lifespan_backend.set("k", "v")
    assert lifespan_backend.calls == ["initialize", "reset", "close"]
    assert lifespan_backend.connection is None


@pytest.mark.asyncio
async def test_a_restarted_non_persistent_app_starts_fresh() -> None:
    backend = InMemoryBackend()
    app = Starlette()
    rate = Rate.parse("1/h")
    async with backend.lifespan(app):
        assert (await backend.decide("k", FixedWindowStrategy(), rate)).allowed
        assert not (await backend.decide("k", FixedWindowStrategy(), rate)).allowed
    async with backend.lifespan(app):
        assert (await backend.decide("k", FixedWindowStrategy(), rate)).allowed
