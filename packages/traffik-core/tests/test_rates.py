from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from traffik.rates import MAX_EXACT_PRODUCT, Rate


def test_fields_and_expire_in_milliseconds() -> None:
    rate = Rate(limit=5, milliseconds=7, seconds=2, minutes=3, hours=1)
    assert rate.expire == 7 + 2_000 + 180_000 + 3_600_000
    assert rate.limit == 5
    assert not rate.unlimited


def test_unlimited_rate() -> None:
    assert Rate().unlimited
    assert Rate(0).unlimited
    assert Rate().expire == 0
    assert math.isinf(Rate().rps)
    assert math.isinf(Rate().rpd)
    assert str(Rate()) == "unlimited"


def test_per_unit_properties() -> None:
    rate = Rate(limit=120, minutes=1)
    assert rate.rps == 2.0
    assert rate.rpm == 120.0
    assert rate.rph == 7200.0
    assert rate.rpd == 172_800.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"limit": -1, "seconds": 1}, "limit must not be negative"),
        ({"limit": 5, "seconds": -1}, "seconds must not be negative"),
        ({"limit": 0, "seconds": 1}, "admits nothing"),
        ({"limit": 5}, "needs a window"),
        ({"limit": 5.0, "seconds": 1}, "whole number"),
        ({"limit": True, "seconds": 1}, "whole number"),
        ({"limit": 2**40, "hours": 2**20}, "too large"),
    ],
)
def test_invalid_rates_raise_value_error(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Rate(**kwargs)  # type: ignore[arg-type]


def test_exactness_bound_is_inclusive() -> None:
    # limit x window_ms may reach 2**53 - 1 exactly (a prime window keeps it simple).
    Rate(limit=1, milliseconds=MAX_EXACT_PRODUCT)
    with pytest.raises(ValueError, match="too large"):
        Rate(limit=2, milliseconds=MAX_EXACT_PRODUCT // 2 + 1)


@pytest.mark.parametrize(
    ("text", "limit", "field", "amount"),
    [
        ("5/m", 5, "minutes", 1),
        ("2/5s", 2, "seconds", 5),
        ("10000/d", 10000, "hours", 24),
        ("3/2d", 3, "hours", 48),
        ("1000/500ms", 1000, "milliseconds", 500),
        ("  10  /  5s  ", 10, "seconds", 5),
        ("10/30 seconds", 10, "seconds", 30),
        ("7/SEC", 7, "seconds", 1),
        ("7/Minutes", 7, "minutes", 1),
        ("1/hr", 1, "hours", 1),
        ("1/2 hours", 1, "hours", 2),
        ("9/millisecond", 9, "milliseconds", 1),
        ("9/day", 9, "hours", 24),
        ("007/s", 7, "seconds", 1),
    ],
)
def test_parse_grammar(text: str, limit: int, field: str, amount: int) -> None:
    rate = Rate.parse(text)
    assert rate.limit == limit
    assert getattr(rate, field) == amount
    others = {"milliseconds", "seconds", "minutes", "hours"} - {field}
    assert all(getattr(rate, name) == 0 for name in others)


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("5", "exactly one '/'"),
        ("5/s/s", "exactly one '/'"),
        ("+5/s", "'+5'"),  # int() would accept these three: we do not
        ("1_000/s", "'1_000'"),
        ("\u0665/s", "'\u0665'"),  # ARABIC-INDIC DIGIT FIVE
        ("5/\u0665s", "period"),
        ("-5/s", "'-5'"),
        ("5.5/s", "'5.5'"),
        ("abc/s", "'abc'"),
        ("/s", "''"),
        ("5/", "period"),
        ("5/0s", "longer than zero"),
        ("5/-5s", "period"),
        ("5/5.5s", "period"),
        ("5/5s@", "period"),
        ("5/1_0s", "period"),
        ("0/s", "admits nothing"),
        ("5/msec", "Unknown unit 'msec'"),
        ("5/secs", "Unknown unit 'secs'"),
        ("5/mins", "Unknown unit 'mins'"),
        ("5/hrs", "Unknown unit 'hrs'"),
        ("5/w", "Unknown unit 'w'"),
    ],
)
def test_parse_rejects_bad_strings_naming_the_part_and_the_units(text: str, bad_part: str) -> None:
    with pytest.raises(ValueError) as info:
        Rate.parse(text)
    message = str(info.value)
    assert bad_part in message
    if bad_part != "admits nothing":
        assert "s/sec/second(s)" in message  # the valid units are listed


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        Rate.parse(5)  # type: ignore[arg-type]


def test_equality_is_by_throughput_and_consistent_with_hash() -> None:
    assert Rate.parse("60/m") == Rate.parse("1/s")
    assert hash(Rate.parse("60/m")) == hash(Rate.parse("1/s"))
    assert Rate.parse("1/s") != Rate.parse("2/s")
    assert Rate() == Rate(0)
    assert hash(Rate()) == hash(Rate(0))
    assert Rate() != Rate.parse("1/s")
    assert Rate.parse("1/s") != "1/s"
    assert len({Rate.parse("60/m"), Rate.parse("1/s"), Rate.parse("3600/h")}) == 1


rates = st.builds(
    Rate,
    limit=st.integers(1, 10_000),
    milliseconds=st.integers(0, 5_000),
    seconds=st.integers(0, 100),
    minutes=st.integers(0, 100),
    hours=st.integers(1, 10),
)


@given(rates, rates)
def test_equal_rates_hash_alike(a: Rate, b: Rate) -> None:
    assert (a == b) == (a.limit * b.expire == b.limit * a.expire)
    if a == b:
        assert hash(a) == hash(b)


@given(st.integers(1, 10**6), st.integers(1, 10**4), st.sampled_from(["ms", "s", "m", "h", "d"]))
def test_parse_round_trips_through_expire(limit: int, amount: int, unit: str) -> None:
    scale = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    if limit * amount * scale > MAX_EXACT_PRODUCT:
        with pytest.raises(ValueError, match="too large"):
            Rate.parse(f"{limit}/{amount}{unit}")
        return
    rate = Rate.parse(f"{limit}/{amount}{unit}")
    assert rate.expire == amount * scale
    assert Rate.parse(f"{rate.limit}/{rate.expire}ms") == rate


def test_rate_is_frozen_and_picklable() -> None:
    rate = Rate.parse("5/10s")
    with pytest.raises(AttributeError):
        rate.limit = 6  # type: ignore[misc]
    copy = pickle.loads(pickle.dumps(rate))
    assert copy == rate
    assert copy.expire == 10_000
    assert repr(rate) == "Rate(limit=5, milliseconds=0, seconds=10, minutes=0, hours=0)"
    assert str(rate) == "5/10s"


@pytest.mark.parametrize(
    ("text", "shown"),
    [("10/m", "10/min"), ("5/10s", "5/10s"), ("1000/500ms", "1000/500ms"), ("2/d", "2/d"),
     ("3/48h", "3/2d"), ("7/90s", "7/90s"), ("1/1000ms", "1/s"), ("100/h", "100/h")],
)  # fmt: skip
def test_str_reads_in_the_largest_whole_unit_and_parses_back(text: str, shown: str) -> None:
    rate = Rate.parse(text)
    assert str(rate) == shown
    assert Rate.parse(shown) == rate
    assert Rate.parse(shown).expire == rate.expire
    assert str(Rate()) == "unlimited"
