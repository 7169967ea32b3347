"""Kit tests of the storage primitives: get, set, delete, (in|de)crement, TTLs, multi_get."""

from __future__ import annotations

import asyncio
import time

import pytest

from traffik.testing._support import TTL_GRACE_S, KitBase, eventually

__all__ = ["PrimitiveTests"]


class PrimitiveTests(KitBase):
    """Values, missing keys and TTLs of the primitive methods every backend implements.

    A key that must still exist right after being written gets a TTL of 2 s, never 1 s:
    a server with a one-second clock (memcached) may expire a 1 s key at its next tick.
    """

    @pytest.mark.asyncio
    async def test_get_missing_key_returns_none(self) -> None:
        async with self.open_backend() as backend:
            assert await backend.get(self.key()) is None

    @pytest.mark.asyncio
    async def test_set_then_get_returns_the_string(self) -> None:
        async with self.open_backend() as backend:
            for value in ("v", "0", "12", "a,b,c", "", "héllo wörld"):
                key = self.key()
                await backend.set(key, value)
                got = await backend.get(key)
                assert got == value, f"set({key!r}, {value!r}) then get() returned {got!r}"
                assert isinstance(got, str), f"get() must return str, got {type(got).__name__}"

    @pytest.mark.asyncio
    async def test_set_replaces_the_value(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "first")
            await backend.set(key, "second")
            assert await backend.get(key) == "second"

    @pytest.mark.asyncio
    async def test_set_with_expire_expires(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            start = time.monotonic()
            await backend.set(key, "v", expire=2)
            assert await backend.get(key) == "v", "a key set with expire=2 vanished at once"

            async def gone() -> bool:
                return await backend.get(key) is None

            assert await eventually(gone, 2 + TTL_GRACE_S), (
                f"set(expire=2) was still readable {time.monotonic() - start:.1f} s later"
            )

    @pytest.mark.asyncio
    async def test_set_without_expire_clears_a_previous_ttl(self) -> None:
        async with self.open_backend() as backend:
            key, sentinel = self.key(), self.key("sentinel")
            await backend.set(key, "a", expire=1)
            await backend.set(sentinel, "s", expire=1)
            await backend.set(key, "b")

            async def sentinel_gone() -> bool:
                return await backend.get(sentinel) is None

            assert await eventually(sentinel_gone, 1 + TTL_GRACE_S), "set(expire=1) never expired"
            assert await backend.get(key) == "b", (
                "set() without expire must replace the TTL too: the key expired with its old TTL"
            )

    @pytest.mark.asyncio
    async def test_delete_returns_whether_the_key_existed(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "v")
            assert await backend.delete(key) is True
            assert await backend.get(key) is None
            assert await backend.delete(key) is False
            assert await backend.delete(self.key("never")) is False

    @pytest.mark.asyncio
    async def test_increment_missing_key_starts_at_zero(self) -> None:
        async with self.open_backend() as backend:
            assert await backend.increment(self.key()) == 1
            assert await backend.increment(self.key(), 5) == 5

    @pytest.mark.asyncio
    async def test_increment_adds_and_returns_the_new_value(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            assert await backend.increment(key) == 1
            assert await backend.increment(key, 4) == 5
            assert await backend.increment(key, 1) == 6
            assert await backend.get(key) == "6"
            other = self.key()
            await backend.set(other, "40")
            assert await backend.increment(other, 2) == 42

    @pytest.mark.asyncio
    async def test_increment_keeps_the_ttl(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "1", expire=2)
            assert await backend.increment(key) == 2

            async def gone() -> bool:
                return await backend.get(key) is None

            assert await eventually(gone, 2 + TTL_GRACE_S), (
                "increment() removed the key's TTL: it never expired"
            )

    @pytest.mark.asyncio
    async def test_decrement_subtracts(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "10")
            assert await backend.decrement(key, 3) == 7
            assert await backend.decrement(key) == 6
            assert await backend.get(key) == "6"

    @pytest.mark.asyncio
    async def test_decrement_below_zero_goes_negative(self) -> None:
        async with self.open_backend() as backend:
            self.require(backend, "negative_counters")
            key = self.key()
            assert await backend.decrement(key, 2) == -2
            assert await backend.increment(key, 1) == -1
            assert await backend.decrement(key) == -2

    @pytest.mark.asyncio
    async def test_increment_with_ttl_counts_and_expires(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            assert await backend.increment_with_ttl(key, 3, ttl=2) == 3
            assert await backend.increment_with_ttl(key, 2, ttl=2) == 5

            async def gone() -> bool:
                return await backend.get(key) is None

            assert await eventually(gone, 2 + TTL_GRACE_S), (
                "increment_with_ttl(ttl=2) never expired"
            )

    @pytest.mark.asyncio
    async def test_increment_with_ttl_never_extends_the_ttl(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            start = time.monotonic()
            assert await backend.increment_with_ttl(key, 1, ttl=1) == 1
            restarted = False
            while time.monotonic() - start < 1 + TTL_GRACE_S:
                await asyncio.sleep(0.1)
                if await backend.increment_with_ttl(key, 1, ttl=1) == 1:
                    restarted = True
                    break
            assert restarted, (
                f"increment_with_ttl(ttl=1) called every 0.1 s kept the key alive for "
                f"{1 + TTL_GRACE_S} s: a later call must never extend the TTL set at creation"
            )

    @pytest.mark.asyncio
    async def test_expire_sets_a_ttl_on_an_existing_key(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            await backend.set(key, "v")
            assert await backend.expire(key, 2) is True
            assert await backend.get(key) == "v"

            async def gone() -> bool:
                return await backend.get(key) is None

            assert await eventually(gone, 2 + TTL_GRACE_S), "expire(key, 2) never expired the key"

    @pytest.mark.asyncio
    async def test_expire_missing_key_returns_false(self) -> None:
        async with self.open_backend() as backend:
            key = self.key()
            assert await backend.expire(key, 10) is False
            assert await backend.get(key) is None

    @pytest.mark.asyncio
    async def test_multi_get_returns_values_in_order(self) -> None:
        async with self.open_backend() as backend:
            a, b, c = self.key("a"), self.key("b"), self.key("c")
            await backend.set(a, "1")
            await backend.set(c, "3")
            assert await backend.multi_get(a, b, c) == ["1", None, "3"]
            assert await backend.multi_get(c, a) == ["3", "1"]

    @pytest.mark.asyncio
    async def test_multi_get_without_keys_returns_an_empty_list(self) -> None:
        async with self.open_backend() as backend:
            assert await backend.multi_get() == []

    @pytest.mark.asyncio
    async def test_awkward_keys_round_trip(self) -> None:
        # Keys carry client-controlled text (paths, identifiers): spaces, non-ASCII,
        # braces, and more than memcached's 250 bytes must all work and stay distinct.
        ns = self.kit_namespace()
        keys = [
            f"{ns}:user name with spaces",
            f"{ns}:ünïcødé/päth?q=1&r=2",
            f"{ns}:{{tag}}:x",
            f"{ns}:tab\tand\nnewline",
            f"{ns}:" + "x" * 300 + "a",
            f"{ns}:" + "x" * 300 + "b",
        ]
        async with self.open_backend() as backend:
            for i, key in enumerate(keys):
                await backend.set(key, str(i))
            for i, key in enumerate(keys):
                assert await backend.get(key) == str(i), f"key {key[:40]!r}... did not round-trip"
            assert await backend.increment(keys[0], 5) == 5
            assert await backend.delete(keys[4]) is True
            assert await backend.get(keys[5]) == "5"
