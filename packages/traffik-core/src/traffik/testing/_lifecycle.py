"""Kit tests of the lifecycle, namespace isolation, shared state and error wrapping."""

from __future__ import annotations

import pytest

from traffik.exceptions import BackendConnectionError, BackendError
from traffik.rates import Rate
from traffik.strategies import FixedWindowStrategy
from traffik.testing._support import KitBase

__all__ = ["LifecycleTests"]


class LifecycleTests(KitBase):
    """initialize/close, use after close, reset scope, and BackendError wrapping."""

    @pytest.mark.asyncio
    async def test_initialize_is_idempotent(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "v")
            await backend.initialize()
            await backend.initialize()
            assert await backend.get(key) == "v", "a second initialize() lost the data"

    @pytest.mark.asyncio
    async def test_close_is_idempotent(self) -> None:
        async with self.open_backend() as backend:
            await backend.close()
            await backend.close()

    @pytest.mark.asyncio
    async def test_use_before_initialize_raises_backend_connection_error(self) -> None:
        backend = self.build_backend()
        try:
            with pytest.raises(BackendConnectionError):
                await backend.get(self.key())
        finally:
            await backend.close()

    @pytest.mark.asyncio
    async def test_use_after_close_raises_backend_connection_error(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.close()
            with pytest.raises(BackendConnectionError):
                await backend.get(key)
            with pytest.raises(BackendConnectionError):
                await backend.set(key, "v")
            with pytest.raises(BackendConnectionError):
                await backend.increment(key)
            with pytest.raises(BackendConnectionError):
                await backend.decide("user", FixedWindowStrategy(), Rate(limit=5, seconds=10))

    @pytest.mark.asyncio
    async def test_initialize_after_close_works_again(self) -> None:
        async with self.open_backend() as backend:
            await backend.close()
            await backend.initialize()
            key = self.key()
            await backend.set(key, "v")
            assert await backend.get(key) == "v"

    @pytest.mark.asyncio
    async def test_reset_clears_only_its_namespace(self) -> None:
        await self._check_scope("reset")

    @pytest.mark.asyncio
    async def test_clear_clears_only_its_namespace(self) -> None:
        await self._check_scope("clear")

    async def _check_scope(self, method: str) -> None:
        ns = self.kit_namespace()
        inside = [f"{ns}:a", f"{ns}:b:c", await self._backend_key(ns, "d")]
        # The prefix is "namespace:", not "namespace": a sibling namespace survives.
        outside = [f"{ns}2:a", f"{ns}x:b", f"other{ns}:a", f"other:{ns}:a"]
        async with self.open_backend() as backend:
            try:
                for key in inside + outside:
                    await backend.set(key, "v")
                await getattr(backend, method)()
                for key in inside:
                    assert await backend.get(key) is None, f"{method}() left {key!r} in place"
                for key in outside:
                    assert await backend.get(key) == "v", (
                        f"{method}() of namespace {ns!r} deleted {key!r}, which is outside it"
                    )
            finally:
                for key in outside:
                    await backend.delete(key)

    async def _backend_key(self, ns: str, key: str) -> str:
        backend = self.build_backend(ns)
        return await backend.get_key(key)

    @pytest.mark.asyncio
    async def test_reset_clears_decision_state(self) -> None:
        strategy, rate = FixedWindowStrategy(), Rate(limit=2, hours=24)
        async with self.open_backend() as backend:
            for _ in range(2):
                assert (await backend.decide("user", strategy, rate)).allowed
            assert not (await backend.decide("user", strategy, rate)).allowed
            await backend.reset()
            assert (await backend.decide("user", strategy, rate)).allowed, (
                "reset() did not clear the decision state kept under state_key()"
            )

    @pytest.mark.asyncio
    async def test_state_is_shared_between_instances(self) -> None:
        async with self.open_backend() as first:
            self.require(first, "shared_state")
            async with self.open_backend(second=True) as second:
                key = self.key()
                await first.set(key, "v")
                assert await second.get(key) == "v", (
                    "the second instance does not see the first's data"
                )
                assert await second.increment(key + "n", 2) == 2
                assert await first.increment(key + "n", 3) == 5

    @pytest.mark.asyncio
    async def test_reset_spares_another_namespace_on_the_same_server(self) -> None:
        other_ns = self.fresh_namespace()
        async with self.open_backend() as first:
            self.require(first, "shared_state")
            async with self.open_backend(other_ns, second=True) as other:
                mine, theirs = self.key(), f"{other_ns}:k"
                await first.set(mine, "1")
                await other.set(theirs, "2")
                await first.reset()
                assert await first.get(mine) is None
                assert await other.get(theirs) == "2", (
                    "reset() of one namespace deleted another namespace's data on the same server"
                )
                assert await first.get(theirs) == "2"

    @pytest.mark.asyncio
    async def test_client_errors_are_wrapped_in_backend_error(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "not a number")
            with pytest.raises(BackendError):
                await backend.increment(key)
            with pytest.raises(BackendError):
                await backend.increment_with_ttl(key, 1, ttl=10)
