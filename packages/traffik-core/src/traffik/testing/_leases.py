"""Kit tests of leases (``take_lease``, ``renew_lease``, ``release_lease``): concurrency state.

Each behaves like the reference transitions of :mod:`traffik.leases`: at most
``limit`` live leases per key, under races within one instance and between
instances, and expired leases free their slots. A backend that does not declare
the ``leases`` capability must say so clearly when asked for one.
"""

from __future__ import annotations

import asyncio

import pytest

from traffik.exceptions import ConfigurationError
from traffik.testing._support import AnyBackend, KitBase

__all__ = ["LeaseTests"]

LEASE_MS = 10_000
RACERS = 20
LIMIT = 5


class LeaseTests(KitBase):
    """Leases: limits, renewals, releases, expiry, and races."""

    async def _clocked(self, backend: AnyBackend) -> int:
        self.require(backend, "leases", "injectable_clock")
        return backend.now_ms()

    @pytest.mark.asyncio
    async def test_lease_take_admits_up_to_the_limit_then_refuses(self) -> None:
        async with self.open_backend() as backend:
            now = await self._clocked(backend)
            key = self.key()
            for n in range(1, 4):
                grant = await backend.take_lease(key, f"h{n}", 3, LEASE_MS, now_ms=now)
                assert (grant.taken, grant.held) == (True, n), f"take #{n} gave {grant}"
            refused = await backend.take_lease(key, "h4", 3, LEASE_MS, now_ms=now + 1000)
            assert (refused.taken, refused.held) == (False, 3), refused
            assert refused.retry_after_ms == LEASE_MS - 1000, (
                f"a refusal must say when the earliest lease expires, got {refused}"
            )

    @pytest.mark.asyncio
    async def test_lease_taken_again_by_its_holder_is_renewed_not_counted(self) -> None:
        async with self.open_backend() as backend:
            now = await self._clocked(backend)
            key = self.key()
            await backend.take_lease(key, "a", 2, LEASE_MS, now_ms=now)
            again = await backend.take_lease(key, "a", 2, LEASE_MS, now_ms=now + 5)
            assert (again.taken, again.held) == (True, 1), again

    @pytest.mark.asyncio
    async def test_lease_release_frees_the_slot_once(self) -> None:
        async with self.open_backend() as backend:
            now = await self._clocked(backend)
            key = self.key()
            assert (await backend.take_lease(key, "a", 1, LEASE_MS, now_ms=now)).taken
            assert not (await backend.take_lease(key, "b", 1, LEASE_MS, now_ms=now)).taken
            assert await backend.release_lease(key, "a", now_ms=now + 1) is True
            assert await backend.release_lease(key, "a", now_ms=now + 2) is False
            assert (await backend.take_lease(key, "b", 1, LEASE_MS, now_ms=now + 3)).taken
            assert await backend.release_lease(self.key(), "nobody", now_ms=now) is False

    @pytest.mark.asyncio
    async def test_lease_expired_leases_free_their_slots(self) -> None:
        async with self.open_backend() as backend:
            now = await self._clocked(backend)
            key = self.key()
            assert (await backend.take_lease(key, "a", 1, LEASE_MS, now_ms=now)).taken
            late = now + LEASE_MS - 1
            assert not (await backend.take_lease(key, "b", 1, LEASE_MS, now_ms=late)).taken
            # At its expiry the lease is gone: the slot is free, renew and release say so.
            expired = now + LEASE_MS
            assert await backend.renew_lease(key, "a", LEASE_MS, now_ms=expired) is False
            assert (await backend.take_lease(key, "b", 1, LEASE_MS, now_ms=expired)).taken
            assert await backend.release_lease(key, "a", now_ms=expired) is False

    @pytest.mark.asyncio
    async def test_lease_renewal_keeps_a_slot_past_its_first_expiry(self) -> None:
        async with self.open_backend() as backend:
            now = await self._clocked(backend)
            key = self.key()
            assert (await backend.take_lease(key, "a", 1, LEASE_MS, now_ms=now)).taken
            renewed_at = now + LEASE_MS // 2
            assert await backend.renew_lease(key, "a", LEASE_MS, now_ms=renewed_at) is True
            after_first = now + LEASE_MS + 1
            refused = await backend.take_lease(key, "b", 1, LEASE_MS, now_ms=after_first)
            assert not refused.taken, "a renewed lease expired at its first expiry"
            assert refused.retry_after_ms == renewed_at + LEASE_MS - after_first

    @pytest.mark.asyncio
    async def test_lease_concurrent_takes_never_exceed_the_limit(self) -> None:
        async with self.open_backend() as backend:
            self.require(backend, "leases")
            await self._race([backend], self.key())

    @pytest.mark.asyncio
    async def test_lease_takes_racing_between_instances_never_exceed_the_limit(self) -> None:
        async with self.open_backend() as first:
            self.require(first, "leases", "shared_state")
            async with self.open_backend(second=True) as second:
                await self._race([first, second], self.key())

    async def _race(self, backends: list[AnyBackend], key: str) -> None:
        grants = await asyncio.gather(
            *(
                backends[n % len(backends)].take_lease(key, f"racer{n}", LIMIT, LEASE_MS)
                for n in range(RACERS)
            )
        )
        taken = [g for g in grants if g.taken]
        assert len(taken) == LIMIT, (
            f"{len(taken)} of {RACERS} concurrent takes got a lease with limit {LIMIT}"
        )
        assert sorted(g.held for g in taken) == list(range(1, LIMIT + 1)), grants
        released = await asyncio.gather(
            *(backends[0].release_lease(key, f"racer{n}") for n in range(RACERS))
        )
        assert sum(released) == LIMIT
        assert (await backends[-1].take_lease(key, "after", 1, LEASE_MS)).taken

    @pytest.mark.asyncio
    async def test_lease_unsupported_backend_says_so(self) -> None:
        async with self.open_backend() as backend:
            if self.supports(backend, "leases"):
                pytest.skip(f"{type(backend).__name__} declares the 'leases' capability")
            with pytest.raises(ConfigurationError, match="leases"):
                await backend.take_lease(self.key(), "a", 1, LEASE_MS)
            from traffik.concurrency import ConcurrencyThrottle

            with pytest.raises(ConfigurationError, match=type(backend).__name__):
                ConcurrencyThrottle("kit", 1, backend=backend)
