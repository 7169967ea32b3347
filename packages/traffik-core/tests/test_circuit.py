from __future__ import annotations

import pytest

from traffik._guard.blockcache import BlockCache
from traffik._guard.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from traffik.decisions import Decision


def test_breaker_cycle_with_an_injected_clock() -> None:
    now = [0.0]
    breaker = CircuitBreaker(
        failure_threshold=2, recovery_time=1.0, max_recovery_time=4.0, clock=lambda: now[0]
    )
    assert breaker.allow_call() == (True, None)
    assert breaker.record_failure() is None
    assert breaker.record_failure() == OPEN
    assert breaker.allow_call() == (False, None)
    assert breaker.retry_after() == pytest.approx(1.0)
    now[0] = 1.0
    assert breaker.allow_call() == (True, HALF_OPEN)
    assert breaker.allow_call() == (False, None)  # one probe at a time
    assert breaker.record_failure() == OPEN  # probe failed: wait doubles
    now[0] = 2.5
    assert breaker.allow_call() == (False, None)
    now[0] = 3.0
    assert breaker.allow_call() == (True, HALF_OPEN)
    assert breaker.record_success() == CLOSED
    assert breaker.state == CLOSED


def test_a_lost_probe_is_replaced_after_one_recovery_time() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=1.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 1.0
    assert breaker.allow_call() == (True, HALF_OPEN)
    now[0] = 2.0  # the probe never reported
    assert breaker.allow_call() == (True, HALF_OPEN)


def test_breaker_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError, match="recovery_time"):
        CircuitBreaker(recovery_time=2.0, max_recovery_time=1.0)


def test_block_cache_bounds_and_expiry() -> None:
    now = [0]
    cache = BlockCache(max_entries=2, clock=lambda: now[0])
    refused = Decision(False, 5, 0, 900, 400, 1000)
    cache.put("a", 1, refused)
    cache.put("b", 1, refused)
    cache.put("c", 1, refused)
    assert len(cache) == 2
    assert cache.get("a", 1) is None  # evicted
    now[0] = 100
    local = cache.get("b", 1)
    assert local is not None
    assert local.retry_after_ms == 300
    assert local.reset_ms == 800
    assert cache.get("b", 0) is None  # a smaller cost may fit earlier
    now[0] = 400
    assert cache.get("b", 1) is None
    cache.put("d", 1, Decision(True, 5, 4, 100, 0, 1000))
    cache.put("e", 1, Decision(False, 5, 0, 100, -1, 1000))
    assert cache.get("d", 1) is None
    assert cache.get("e", 1) is None


def test_a_call_started_before_the_circuit_opened_does_not_close_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=1.0, clock=lambda: now[0])
    slow = breaker.epoch  # a call goes out while the circuit is closed
    failing = breaker.epoch
    assert breaker.record_failure(failing) is None
    assert breaker.record_failure(failing) == OPEN
    assert breaker.record_success(slow) is None  # late success of the old epoch
    assert breaker.state == OPEN
    assert breaker.record_failure(slow) is None  # a late failure does not reopen or double
    assert breaker.retry_after() == pytest.approx(1.0)
    now[0] = 1.0
    assert breaker.allow_call() == (True, HALF_OPEN)
    probe = breaker.epoch
    assert breaker.record_success(slow) is None  # still not the probe
    assert breaker.state == HALF_OPEN
    assert breaker.record_success(probe) == CLOSED


def test_a_replaced_probe_cannot_report_for_its_successor() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=1.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 1.0
    breaker.allow_call()
    lost = breaker.epoch
    now[0] = 2.0
    breaker.allow_call()  # the first probe never reported: a second one goes
    second = breaker.epoch
    assert breaker.record_failure(lost) is None
    assert breaker.state == HALF_OPEN
    assert breaker.record_success(second) == CLOSED
