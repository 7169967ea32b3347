"""``import traffik.redis`` without traffik-redis names the distribution to install.

The siblings share the ``traffik`` namespace, so without one of them Python's own
error is a bare ``No module named 'traffik.redis'``. :class:`MissingSiblingFinder`
sits at the **end** of ``sys.meta_path``: every regular finder (site-packages,
``.pth`` editable installs, editable-install finders) is asked first, so an
installed sibling always wins; only a sibling nobody found reaches it, and it
raises a ``ModuleNotFoundError`` that says what to ``pip install``.
"""

from __future__ import annotations

import sys
import typing

if typing.TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

__all__ = ["SIBLINGS", "MissingSiblingFinder", "install"]

#: The top-level modules of the sibling distributions, and the distribution of each.
SIBLINGS = {
    "traffik.redis": "traffik-redis",
    "traffik.memcached": "traffik-memcached",
    "traffik.fastapi": "traffik-fastapi",
    "traffik.starlette": "traffik-starlette",
}


def missing_message(module: str, distribution: str) -> str:
    """The error text for a sibling module whose distribution is not installed."""
    return (
        f"No module named {module!r}: it is part of the {distribution} distribution, "
        f"which is not installed. Install it with: pip install {distribution}"
    )


class MissingSiblingFinder:
    """A last-resort meta path finder: a sibling module nobody found raises a helpful error."""

    #: Marks the finder across reloads of this module (``isinstance`` would not).
    traffik_missing_sibling_finder = True

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        """Raise ``ModuleNotFoundError`` naming the distribution for a sibling; else None."""
        distribution = SIBLINGS.get(fullname)
        if distribution is None:
            return None
        raise ModuleNotFoundError(missing_message(fullname, distribution), name=fullname)

    def invalidate_caches(self) -> None:
        """Nothing is cached."""


def install() -> None:
    """Append the finder to ``sys.meta_path`` once (importing traffik again adds no second)."""
    if not any(getattr(f, "traffik_missing_sibling_finder", False) for f in sys.meta_path):
        sys.meta_path.append(MissingSiblingFinder())
