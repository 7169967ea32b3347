"""traffik-core runs its own conformance kit on InMemoryBackend, and on the documented DictBackend.

``DictBackend`` is the custom backend of ``docs/readme/60-writing-a-backend.md``: it
implements only the abstract primitives, so running the kit on it proves that the
base class's generic ``decide`` (lock, read, transition, write) is correct, and that
the documentation shows a backend that passes.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from traffik.backends.base import ThrottleBackend
from traffik.backends.inmemory import InMemoryBackend
from traffik.testing import BackendConformance

_DOC = Path(__file__).resolve().parents[3] / "docs" / "readme" / "60-writing-a-backend.md"


def _documented_backend() -> type[ThrottleBackend[typing.Any, typing.Any]]:
    text = _DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    source = next((b for b in blocks if "class DictBackend(" in b), None)
    if source is None:
        raise LookupError(f"{_DOC} has no python block defining DictBackend.")
    # Leave out the demo run at the end of the block; the docs test executes it.
    source = source.replace("asyncio.run(main())", "")
    module = types.ModuleType("traffik_docs_dict_backend")
    exec(compile(source, str(_DOC), "exec"), module.__dict__)
    return typing.cast("type[ThrottleBackend[typing.Any, typing.Any]]", module.DictBackend)


DictBackend = _documented_backend()


class TestInMemoryConformance(BackendConformance):
    def make_backend(self, namespace: str) -> InMemoryBackend[typing.Any]:
        return InMemoryBackend(namespace=namespace)


class TestDocumentedDictBackendConformance(BackendConformance):
    def make_backend(self, namespace: str) -> ThrottleBackend[typing.Any, typing.Any]:
        return DictBackend(namespace=namespace)
