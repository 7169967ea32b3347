"""traffik-core runs its own conformance kit on InMemoryBackend."""

from __future__ import annotations

from traffik.backends.inmemory import InMemoryBackend
from traffik.testing import BackendConformance


class TestInMemoryConformance(BackendConformance):
    def make_backend(self, namespace: str) -> InMemoryBackend:
        return InMemoryBackend(namespace=namespace)
