from __future__ import annotations

import logging

import pytest

from traffik import events


def test_subscribe_emit_unsubscribe() -> None:
    seen: list[str] = []
    unsubscribe = events.subscribe(lambda event: seen.append(event.kind))
    events.emit(events.ThrottleEvent(events.ALLOWED))
    unsubscribe()
    events.emit(events.ThrottleEvent(events.THROTTLED))
    assert seen == ["allowed"]
    assert not events.has_subscribers()


def test_a_failing_subscriber_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: events.ThrottleEvent) -> None:
        raise RuntimeError("boom")

    seen: list[str] = []
    events.subscribe(broken)
    events.subscribe(lambda event: seen.append(event.kind))
    try:
        with caplog.at_level(logging.ERROR, logger="traffik.events"):
            events.emit(events.ThrottleEvent(events.FALLBACK))
    finally:
        events._subscribers.clear()
    assert seen == ["fallback"]
    assert "failed" in caplog.text


def test_subscribe_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        events.subscribe(42)  # type: ignore[arg-type]
