"""The machinery of the conformance kit: building, opening and cleaning backends, capabilities.

Nothing here is a test. :class:`KitBase` is the root of the kit's test mixins: it
knows how to build the backend under test (``make_backend``), give every test its
own namespace, open and close backends, read the declared capabilities and skip
tests whose capability is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import time
import typing
import uuid

import pytest

from traffik.backends.base import BackendCapabilities, ThrottleBackend
from traffik.exceptions import BackendError

if typing.TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["CAPABILITY_FLAGS", "AnyBackend", "KitBase", "eventually"]

AnyBackend = ThrottleBackend[typing.Any, typing.Any]

#: The names of the capability flags the kit reads.
CAPABILITY_FLAGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BackendCapabilities))

#: Extra seconds a TTL may take to be observed as expired (coarse server clocks, slow hosts).
TTL_GRACE_S = 3.0

_counter = itertools.count()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05
) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass; return its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


def _accepts_namespace(factory: Callable[..., typing.Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False
    return any(p.name == "namespace" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


class KitBase:
    """Lifecycle and capability helpers shared by every part of the kit."""

    #: Narrow the backend's declared capabilities for this test class (never widen them).
    capabilities: typing.ClassVar[BackendCapabilities | None] = None

    _kit_namespace: str | None = None

    # -- hooks for backend authors ----------------------------------------------

    def make_backend(self, namespace: str) -> AnyBackend:
        """Build (do not initialise) the backend under test, keeping its keys under ``namespace``.

        A ``make_backend(self)`` without the parameter is accepted too: the kit then
        sets ``backend.namespace`` itself before initialising it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define make_backend(self, namespace) returning "
            f"a new, uninitialised backend, for example MyBackend(namespace=namespace)."
        )

    def make_second_backend(self, namespace: str) -> AnyBackend:
        """Build a second instance that shares state with ``make_backend``'s (default: call it again).

        Only used by tests gated on ``shared_state``.
        """
        return self._call_factory(self.make_backend, namespace)

    # -- building and opening ------------------------------------------------------

    def kit_namespace(self) -> str:
        """The namespace of the current test: unique per test (and per hypothesis example)."""
        if self._kit_namespace is None:
            self._kit_namespace = self.fresh_namespace()
        return self._kit_namespace

    @staticmethod
    def fresh_namespace() -> str:
        """A namespace no other test uses."""
        return f"tkit{uuid.uuid4().hex[:10]}{next(_counter)}"

    @staticmethod
    def fresh_key(label: str = "k") -> str:
        """A key name unique within the process (for tests that reuse one namespace)."""
        return f"{label}{next(_counter)}"

    def key(self, label: str = "k") -> str:
        """A fresh key inside the test's namespace."""
        return f"{self.kit_namespace()}:{self.fresh_key(label)}"

    def _call_factory(self, factory: Callable[..., typing.Any], namespace: str) -> AnyBackend:
        if _accepts_namespace(factory):
            backend = factory(namespace=namespace)
        else:
            backend = factory()
            if isinstance(backend, ThrottleBackend):
                backend.namespace = namespace
        if not isinstance(backend, ThrottleBackend):
            pytest.fail(
                f"{type(self).__name__}.{getattr(factory, '__name__', 'make_backend')}() returned "
                f"{backend!r}; it must return a traffik.backends.base.ThrottleBackend."
            )
        return backend

    def build_backend(self, namespace: str | None = None, *, second: bool = False) -> AnyBackend:
        """A new, uninitialised backend for ``namespace`` (default: the test's namespace)."""
        ns = self.kit_namespace() if namespace is None else namespace
        return self._call_factory(self.make_second_backend if second else self.make_backend, ns)

    @contextlib.asynccontextmanager
    async def open_backend(
        self, namespace: str | None = None, *, second: bool = False
    ) -> AsyncIterator[AnyBackend]:
        """Build and initialise a backend; on exit reset its namespace and close it.

        Cleanup re-initialises first, so a test may close the backend itself. It
        never touches keys outside the namespace.
        """
        backend = self.build_backend(namespace, second=second)
        self.kit_capabilities(backend)  # fail loudly on a widened declaration
        await backend.initialize()
        failed = True
        try:
            yield backend
            failed = False
        finally:
            try:
                await backend.initialize()
                await backend.reset()
            except BackendError:
                if not failed:
                    raise
            finally:
                with contextlib.suppress(BackendError):
                    await backend.close()

    # -- capabilities ---------------------------------------------------------------

    def kit_capabilities(self, backend: AnyBackend) -> BackendCapabilities:
        """The capabilities the kit tests: the backend's declaration, narrowed by the test class."""
        declared = type(backend).capabilities
        narrowed = type(self).capabilities
        if narrowed is None:
            return declared
        widened = [
            name
            for name in CAPABILITY_FLAGS
            if getattr(narrowed, name) and not getattr(declared, name)
        ]
        if widened:
            pytest.fail(
                f"{type(self).__name__}.capabilities claims {', '.join(widened)} but "
                f"{type(backend).__name__}.capabilities does not declare it. A test class may only "
                f"narrow the backend's declaration (dataclasses.replace(..., flag=False)); declare "
                f"the capability on the backend class instead."
            )
        return narrowed

    def require(self, backend: AnyBackend, *flags: str) -> BackendCapabilities:
        """Skip the test, naming the flag, unless every capability in ``flags`` is declared."""
        caps = self.kit_capabilities(backend)
        for flag in flags:
            if flag not in CAPABILITY_FLAGS:  # a bug in the kit itself
                raise ValueError(f"Unknown capability flag {flag!r}; known: {CAPABILITY_FLAGS}.")
            if not getattr(caps, flag):
                pytest.skip(
                    f"needs capability '{flag}', which {type(backend).__name__} does not declare "
                    f"(BackendCapabilities.{flag} is False)"
                )
        return caps

    def supports(self, backend: AnyBackend, flag: str) -> bool:
        """True if ``flag`` is declared (and not narrowed away)."""
        return bool(getattr(self.kit_capabilities(backend), flag))
