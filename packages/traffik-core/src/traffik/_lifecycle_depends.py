"""What FastAPI sees when a throttle acting on the response lifecycle is a dependency.

``Depends(throttle)`` of such a throttle must end the connection's lifecycle when
the response is over. FastAPI (0.121 and later) exits request-scoped yield
dependencies after the response was sent, so the throttle's signature gains a
keyword parameter solved by :func:`traffik.lifecycle.connection_lifecycle` with
``scope="request"``. Without FastAPI installed the signature is left as it is.
"""

from __future__ import annotations

import inspect
import typing

from traffik.lifecycle import Lifecycle, connection_lifecycle

__all__ = ["LIFECYCLE_PARAMETER", "with_lifecycle_parameter"]

#: Name of the parameter through which FastAPI passes the lifecycle.
LIFECYCLE_PARAMETER = "traffik_lifecycle"


def lifecycle_parameter() -> inspect.Parameter | None:
    """The keyword parameter FastAPI solves with a request-scoped lifecycle, or None."""
    try:
        from fastapi import Depends
    except ImportError:  # pragma: no cover - FastAPI is optional for core
        return None
    return inspect.Parameter(
        LIFECYCLE_PARAMETER,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=typing.Annotated[Lifecycle, Depends(connection_lifecycle, scope="request")],
    )


def with_lifecycle_parameter(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` plus the lifecycle parameter (when FastAPI is installed)."""
    parameter = lifecycle_parameter()
    if parameter is None:
        return signature
    return signature.replace(parameters=[*signature.parameters.values(), parameter])
