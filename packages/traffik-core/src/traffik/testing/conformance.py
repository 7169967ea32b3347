"""``BackendConformance``: the test suite every traffik backend must pass.

Subclass it in a ``Test*`` class and implement ``make_backend``::

    from traffik.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        def make_backend(self, namespace):
            return MyBackend(namespace=namespace)

The names of the tests are public API: they only change in a major release, so a
subclass can refer to them (to mark one ``xfail`` with a reason, for instance).
"""

from __future__ import annotations

import pytest

from traffik.testing._adjustments import AdjustmentTests
from traffik.testing._decisions import DecisionTests
from traffik.testing._leases import LeaseTests
from traffik.testing._lifecycle import LifecycleTests
from traffik.testing._locks import LockTests
from traffik.testing._primitives import PrimitiveTests
from traffik.testing._support import CAPABILITY_FLAGS

__all__ = ["BackendConformance", "kit_test_names"]


def _xfail_reason(func: object) -> str | None:
    for mark in getattr(func, "pytestmark", ()):
        if getattr(mark, "name", None) == "xfail":
            reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else None)
            if isinstance(reason, str) and reason.strip():
                return reason
    return None


class BackendConformance(
    PrimitiveTests, LifecycleTests, LockTests, DecisionTests, AdjustmentTests, LeaseTests
):
    """The conformance kit. Subclass it as ``Test<Something>`` and define ``make_backend``.

    * ``make_backend(self, namespace)`` returns a new, uninitialised backend whose keys
      live under ``namespace``; the kit gives each test a unique namespace, initialises
      the backend, and on exit resets only that namespace and closes it.
    * ``make_second_backend(self, namespace)`` returns another instance sharing state
      with the first (default: ``make_backend`` again); used when ``shared_state``.
    * ``capabilities`` (optional) narrows the backend class's declared
      :class:`~traffik.backends.base.BackendCapabilities`; widening it fails.

    Tests needing a capability the backend does not declare skip, naming the flag.
    Overriding or removing a kit test fails ``test_kit_tests_are_not_overridden``
    unless the override is marked ``@pytest.mark.xfail(reason=...)``.
    """

    def test_kit_tests_are_not_overridden(self) -> None:
        problems = []
        for name in kit_test_names():
            original = getattr(BackendConformance, name)
            current = getattr(type(self), name, None)
            if current is original:
                continue
            if not callable(current):
                problems.append(f"{name} was removed")
            elif _xfail_reason(current) is None:
                problems.append(f"{name} was overridden without @pytest.mark.xfail(reason=...)")
        if problems:
            pytest.fail(
                f"{type(self).__name__} changes kit tests: {'; '.join(problems)}. Keep the kit's "
                f"tests as they are, narrow `capabilities` to skip optional ones, or mark a known "
                f"failure with @pytest.mark.xfail(reason='...') on an override."
            )

    def test_capabilities_do_not_widen_the_backend_declaration(self) -> None:
        backend = self.build_backend()
        caps = self.kit_capabilities(backend)  # fails, naming the flags, if widened
        assert all(isinstance(getattr(caps, flag), bool) for flag in CAPABILITY_FLAGS)


def kit_test_names() -> list[str]:
    """The names of every test of the kit (public API)."""
    return sorted(
        name
        for name in dir(BackendConformance)
        if name.startswith("test_") and callable(getattr(BackendConformance, name))
    )
