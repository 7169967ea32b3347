"""The backend conformance kit: prove a traffik backend correct with the suite ours pass.

::

    from traffik.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        def make_backend(self, namespace):
            return MyBackend(namespace=namespace)

The kit needs the ``testing`` extra (``pip install "traffik-core[testing]"``: pytest,
pytest-asyncio, hypothesis) and runs under plain ``pytest``. Its names are imported
lazily, so ``traffik.testing.servers`` (real Redis and Memcached servers, which needs
mirakuru instead) can be used without pytest, and this package never imports it.
"""

from __future__ import annotations

import importlib
import sys
import typing

if typing.TYPE_CHECKING:
    from traffik.testing._adjustments import reference_adjust_run
    from traffik.testing._decisions import reference_run
    from traffik.testing._support import CAPABILITY_FLAGS, eventually
    from traffik.testing.conformance import BackendConformance, kit_test_names

__all__ = [
    "CAPABILITY_FLAGS",
    "BackendConformance",
    "eventually",
    "kit_test_names",
    "reference_adjust_run",
    "reference_run",
]

_HOMES = {
    "CAPABILITY_FLAGS": "traffik.testing._support",
    "BackendConformance": "traffik.testing.conformance",
    "eventually": "traffik.testing._support",
    "kit_test_names": "traffik.testing.conformance",
    "reference_run": "traffik.testing._decisions",
    "reference_adjust_run": "traffik.testing._adjustments",
}

_NEEDED = ("pytest", "pytest_asyncio", "hypothesis")

#: The kit's modules: pytest rewrites their asserts (detailed failure reports), as it
#: does for test modules, if they are registered before their first import.
_KIT_MODULES = (
    "traffik.testing._support",
    "traffik.testing._primitives",
    "traffik.testing._lifecycle",
    "traffik.testing._locks",
    "traffik.testing._decisions",
    "traffik.testing._adjustments",
    "traffik.testing.conformance",
)
_registered = False


def _register_assert_rewrite() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    import pytest

    pytest.register_assert_rewrite(*(name for name in _KIT_MODULES if name not in sys.modules))


def __getattr__(name: str) -> typing.Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'traffik.testing' has no attribute {name!r}")
    for dependency in _NEEDED:
        try:
            importlib.import_module(dependency)
        except ImportError as exc:
            raise ImportError(
                f"traffik.testing.{name} needs {dependency.replace('_', '-')}, which is not "
                f'installed; install the kit\'s dependencies with pip install "traffik-core[testing]".'
            ) from exc
    _register_assert_rewrite()
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
