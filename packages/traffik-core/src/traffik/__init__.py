"""traffik: rate limiting for Starlette and FastAPI.

The curated traffik 1.0.0b2 API is re-exported here by name.
"""

# The namespace line comes after the docstring (a statement above it would leave
# ``traffik.__doc__`` empty) and before the imports, which may live in sibling
# distributions (traffik-redis, traffik-fastapi, ...) sharing the namespace.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from traffik import _missing as _missing_siblings
from traffik.__about__ import __version__
from traffik.backends.base import (
    ThrottleBackend,
    connection_identifier,
    connection_throttled,
    get_throttle_backend,
)
from traffik.backends.inmemory import InMemoryBackend
from traffik.concurrency import ConcurrencyThrottle
from traffik.decisions import Decision
from traffik.rates import Rate
from traffik.throttles import BaseThrottle, HTTPThrottle, WebSocketThrottle
from traffik.types import (
    UNLIMITED,
    AsyncLock,
    ConnectionIdentifier,
    ConnectionThrottledHandler,
    Dependency,
    ExceptionHandler,
    HTTPConnectionT,
    HTTPConnectionTcon,
    LockConfig,
    Matchable,
    Stringable,
    WaitPeriod,
)
from traffik.utils import get_ip_address

__all__ = [
    "UNLIMITED",
    "AsyncLock",
    "BaseThrottle",
    "ConcurrencyThrottle",
    "ConnectionIdentifier",
    "ConnectionThrottledHandler",
    "Decision",
    "Dependency",
    "ExceptionHandler",
    "HTTPConnectionT",
    "HTTPConnectionTcon",
    "HTTPThrottle",
    "InMemoryBackend",
    "LockConfig",
    "Matchable",
    "Rate",
    "Stringable",
    "ThrottleBackend",
    "WaitPeriod",
    "WebSocketThrottle",
    "__version__",
    "connection_identifier",
    "connection_throttled",
    "get_ip_address",
    "get_throttle_backend",
]

# Last: a sibling distribution that is not installed (`import traffik.redis` without
# traffik-redis) fails with a ModuleNotFoundError naming what to pip install.
_missing_siblings.install()
