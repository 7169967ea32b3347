"""The backend conformance kit: prove a traffik backend correct with the suite ours pass.

::

    from traffik.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        def make_backend(self, namespace):
            return MyBackend(namespace=namespace)

Needs the ``testing`` extra (``pip install "traffik-core[testing]"``: pytest,
pytest-asyncio, hypothesis). Run it with plain ``pytest``. ``traffik.testing.servers``
(real Redis and Memcached servers) is a separate module and is not imported here.
"""

from __future__ import annotations

from traffik.testing._decisions import reference_run
from traffik.testing._support import CAPABILITY_FLAGS, eventually
from traffik.testing.conformance import BackendConformance, kit_test_names

__all__ = [
    "CAPABILITY_FLAGS",
    "BackendConformance",
    "eventually",
    "kit_test_names",
    "reference_run",
]
