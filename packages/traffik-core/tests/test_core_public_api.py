"""Every public ``traffik.*`` module declares ``__all__``, and every name it lists exists.

Modules are found on disk under every directory of the ``traffik`` namespace (core and
the installed siblings). A module whose sibling distribution is not installed (a seed
re-export such as ``traffik.backends.redis``) is skipped; if the sibling is installed,
the module must import.
"""

from __future__ import annotations

import importlib
import inspect
import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

import traffik


def _public_modules() -> list[str]:
    found: set[str] = set()
    for root in map(Path, traffik.__path__):
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(part.startswith("_") for part in parts):
                continue
            found.add(".".join(("traffik", *parts)))
    return sorted(found)


PUBLIC_MODULES = _public_modules()

_DISTRIBUTION = re.compile(r"traffik-(?:core|redis|memcached|fastapi|starlette)")


def _installed(name: str) -> bool:
    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


def test_the_namespace_is_found() -> None:
    assert "traffik" in PUBLIC_MODULES
    assert "traffik.rates" in PUBLIC_MODULES
    assert "traffik.testing.servers" in PUBLIC_MODULES


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_module_lists_existing_names_in_all(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A seed re-export of a sibling that is not installed may fail; one whose
        # sibling is installed must import.
        needed = _DISTRIBUTION.search(str(exc))
        if needed and not _installed(needed.group()):
            pytest.skip(f"{module_name} needs {needed.group()}, which is not installed.")
        raise
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} is public but defines no __all__."
    assert isinstance(exported, (list, tuple)), f"{module_name}.__all__ is not a list."
    assert all(isinstance(name, str) for name in exported)
    assert len(set(exported)) == len(exported), f"{module_name}.__all__ has duplicates."
    missing = [name for name in exported if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ lists names it does not define: {missing}"


def test_the_package_has_its_docstring() -> None:
    """``help(traffik)`` shows it: no statement may stand above the docstring."""
    assert traffik.__doc__ is not None
    assert traffik.__doc__.startswith("traffik: rate limiting for Starlette and FastAPI.")


#: The extension API (CONTRIBUTING.md, "Compatibility policy"): what a backend or a
#: framework integration needs, public in core. Siblings import these, never a private
#: module (tests-integration/test_boundaries.py checks that).
EXTENSION_API = {
    "traffik.strategies": [
        "State",
        "Strategy",
        "Transition",
        "UNLIMITED_DECISION",
        "ceil_div",
        "check_cost",
        "decode_state",
        "encode_state",
    ],
    "traffik.backends.base": [
        "BackendCapabilities",
        "Clock",
        "ThrottleBackend",
        "initialize_by_policy",
        "throttle_backend_ctx",
        "wall_clock_ms",
    ],
    "traffik.keys": ["MAX_PART", "ROUTE_KEY_SCOPE", "digest", "identity_part", "route_part"],
    "traffik.decisions": ["Decision"],
    "traffik.exceptions": ["BackendConnectionError", "BackendError", "ConfigurationError"],
}


@pytest.mark.parametrize("module_name", sorted(EXTENSION_API))
def test_extension_api_is_exported_and_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in EXTENSION_API[module_name] if name not in module.__all__]
    assert not missing, f"{module_name}.__all__ lacks extension API names: {missing}"
    for name in EXTENSION_API[module_name]:
        value = getattr(module, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert (value.__doc__ or "").strip(), f"{module_name}.{name} has no docstring."


def test_strategy_check_exact_is_public() -> None:
    from traffik.exceptions import ConfigurationError
    from traffik.rates import Rate
    from traffik.strategies import TokenBucketStrategy

    strategy, rate = TokenBucketStrategy(), Rate.parse("10/s")
    strategy.check_exact(rate, strategy.capacity(rate))  # fits: no error
    with pytest.raises(ConfigurationError, match="too large to count exactly"):
        strategy.check_exact(rate, 2**53)
