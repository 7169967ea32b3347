"""A griffe extension for the API reference: Sphinx roles in docstrings become code.

traffik's docstrings cross-reference with Sphinx roles (``:class:`~traffik.rates.Rate```),
which Markdown would show verbatim. This turns each into inline code of the name a
reader sees in Sphinx: the last dotted part with ``~``, else the whole path.
"""

from __future__ import annotations

import re
import typing

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`"
)


def _code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring once griffe has loaded its object."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: typing.Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
