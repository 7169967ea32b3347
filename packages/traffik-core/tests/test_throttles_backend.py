"""``throttle.backend``: the throttle's own backend, else the one active where it is read.

traffik 1.0.0b2 returned the backend of the enclosing ``async with backend(...)`` for a
throttle built without one; reading the property must never bind it (a throttle resolves
its backend on every call, so it never sticks to a closed one).
"""

from __future__ import annotations

import pytest

from traffik.backends.inmemory import InMemoryBackend
from traffik.throttles import HTTPThrottle


@pytest.mark.asyncio
async def test_backend_is_the_active_one_inside_a_context_and_none_outside() -> None:
    throttle = HTTPThrottle("backend-prop", "2/s")
    first, second = InMemoryBackend(namespace="first"), InMemoryBackend(namespace="second")
    assert throttle.backend is None
    async with first():
        assert throttle.backend is first
        async with second():
            assert throttle.backend is second  # the innermost context
        assert throttle.backend is first
    assert throttle.backend is None, "reading the property must not bind the backend"


@pytest.mark.asyncio
async def test_an_explicit_backend_wins_over_the_context() -> None:
    own, active = InMemoryBackend(namespace="own"), InMemoryBackend(namespace="active")
    throttle = HTTPThrottle("backend-own", "2/s", backend=own)
    assert throttle.backend is own
    async with active():
        assert throttle.backend is own


@pytest.mark.asyncio
async def test_assigning_a_backend_sets_the_throttles_own() -> None:
    throttle = HTTPThrottle("backend-set", "2/s")
    backend = InMemoryBackend(namespace="assigned")
    throttle.backend = backend
    assert throttle.backend is backend
    throttle.backend = None
    async with backend():
        assert throttle.backend is backend
    assert throttle.backend is None
