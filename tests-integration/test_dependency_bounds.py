"""The lower bounds the five distributions declare are the versions the suite runs on.

In every environment, each installed dependency satisfies what the distributions declare.
In the ``lowest`` hatch environment (``UV_RESOLUTION=lowest-direct``, run by ``.ci/run``)
each one must be installed at exactly its declared lower bound: if the resolver had to
pick something newer (because another requirement needs it), the declared bound is not
the one tested, and it must be raised to what is installed.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, requires, version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

DISTRIBUTIONS = (
    "traffik-core",
    "traffik-redis",
    "traffik-memcached",
    "traffik-fastapi",
    "traffik-starlette",
)
#: The optional-dependency groups the suite installs (hatch.toml: traffik-core[testing]).
EXTRAS = {"testing"}

LOWEST = os.environ.get("UV_RESOLUTION") == "lowest-direct"


def _declared() -> list[tuple[str, Requirement]]:
    found = []
    for dist in DISTRIBUTIONS:
        try:
            declared = requires(dist) or []
        except PackageNotFoundError:
            continue
        for text in declared:
            req = Requirement(text)
            if req.name.startswith("traffik-"):
                continue  # a sibling: pinned by the compatibility policy, installed locally
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in ("", *EXTRAS)
            ):
                continue
            found.append((dist, req))
    return found


DECLARED = _declared()


def _lower_bound(req: Requirement) -> Version | None:
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "~=", "==")]
    return max(bounds) if bounds else None


def test_the_distributions_declare_dependencies() -> None:
    names = {req.name for _, req in DECLARED}
    assert {"starlette", "fastapi", "redis", "pytest-asyncio", "mirakuru"} <= names, names


@pytest.mark.parametrize(("dist", "req"), DECLARED, ids=[f"{d}:{r.name}" for d, r in DECLARED])
def test_installed_version_meets_the_declared_bound(dist: str, req: Requirement) -> None:
    installed = Version(version(req.name))
    assert req.specifier.contains(installed, prereleases=True), (
        f"{dist} declares {req}, but {req.name} {installed} is installed."
    )
    bound = _lower_bound(req)
    assert bound is not None, f"{dist} declares {req} without a lower bound: add one (>=X.Y)."
    if LOWEST:
        assert installed == bound, (
            f"{dist} declares {req}, but the lowest resolution installed {req.name} "
            f"{installed}: the declared bound is untested; raise it to >={installed}."
        )
