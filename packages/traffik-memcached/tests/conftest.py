"""Fixtures of the traffik-memcached tests (the servers come from the root conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from traffik.memcached import MemcachedBackend

OpenBackends = Callable[..., contextlib.AbstractAsyncContextManager[list[MemcachedBackend]]]


@contextlib.asynccontextmanager
async def _opened(*backends: MemcachedBackend) -> AsyncIterator[list[MemcachedBackend]]:
    for backend in backends:
        await backend.initialize()
    try:
        yield list(backends)
    finally:
        await backends[0].reset()
        for backend in backends:
            await backend.close()


@pytest.fixture
def opened() -> OpenBackends:
    """``async with opened(a, b): ...`` initialises backends of one namespace, then resets and closes them."""
    return _opened
