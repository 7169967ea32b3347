from __future__ import annotations

import math

import pytest

from traffik.decisions import NEVER, Decision


def test_allowed_decision() -> None:
    d = Decision(True, 10, 9, 1000, 0, 1000)
    assert d.wait_ms == 0.0
    assert d.retry_after_s == 0
    assert not d.never
    assert d.policy == "default"


def test_rejected_decision_rounds_seconds_up() -> None:
    d = Decision(False, 10, 0, 1001, 1001, 1000)
    assert d.wait_ms == 1001.0
    assert d.retry_after_s == 2
    assert d.reset_s == 2
    assert Decision(False, 10, 0, 1000, 1000, 1000).retry_after_s == 1
    assert Decision(False, 10, 0, 1, 1, 1000).retry_after_s == 1


def test_never_decision() -> None:
    d = Decision(False, 10, 10, 0, NEVER, 1000)
    assert d.never
    assert math.isinf(d.wait_ms)
    assert d.retry_after_s is None


def test_with_policy_keeps_everything_else() -> None:
    d = Decision(False, 10, 3, 500, 200, 1000)
    renamed = d.with_policy("burst")
    assert renamed.policy == "burst"
    assert (renamed.allowed, renamed.limit, renamed.remaining) == (False, 10, 3)
    assert (renamed.reset_ms, renamed.retry_after_ms, renamed.window_ms) == (500, 200, 1000)


def test_decision_is_frozen() -> None:
    d = Decision(True, 1, 0, 0, 0, 1)
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]
