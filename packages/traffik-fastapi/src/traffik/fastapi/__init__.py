"""traffik for FastAPI: the ``throttled`` decorator and dependency helpers.

- :func:`throttled`: throttle a route with a decorator (under ``@app.get``) or in
  ``dependencies=[...]``, without changing its parameters or OpenAPI schema.
- :func:`user_identifier`: key clients by a dependency such as the current user.
- :func:`tiered`: pick the throttle per request from a tier dependency.
"""

from __future__ import annotations

from traffik.fastapi.__about__ import __version__
from traffik.fastapi.decorators import DecoratorDepends, ThrottleDepends, apply_throttle, throttled
from traffik.fastapi.dependencies import DependencyIdentifier, tiered, user_identifier

__all__ = [
    "DecoratorDepends",
    "DependencyIdentifier",
    "ThrottleDepends",
    "__version__",
    "apply_throttle",
    "throttled",
    "tiered",
    "user_identifier",
]
