"""What a throttle does when its backend fails (placeholder: the failure-policy work fills it in).

:func:`decide_with_policy` is the single entry point throttles use to reach a
backend's ``decide``; failure policies, timeouts, circuit breaking, the local
block cache and events all hook in here.
"""

from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    from traffik.backends.base import ThrottleBackend
    from traffik.decisions import Decision
    from traffik.rates import Rate
    from traffik.strategies._base import Strategy

__all__ = ["decide_with_policy"]


async def decide_with_policy(
    backend: ThrottleBackend[typing.Any, typing.Any],
    key: str,
    strategy: Strategy,
    rate: Rate,
    cost: int,
    *,
    policy: typing.Any = None,
) -> Decision:
    """Ask ``backend`` to decide; on a backend failure apply ``policy`` (or the backend's)."""
    return await backend.decide(key, strategy, rate, cost)
