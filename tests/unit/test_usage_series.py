"""UsageSeries: totals by prefix sums, distinct counts, latest values, group filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from allotment.domain.errors import InvalidInput, InvariantViolation
from allotment.domain.timeutil import to_micros
from allotment.domain.usage_series import (
    GroupFilter,
    MinuteBucket,
    UsageSeries,
    exact_filters,
    matches_all,
    merge_minute_rows,
    parse_advanced_filters,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
M = timedelta(minutes=1)


def at(minutes: int) -> datetime:
    return T0 + minutes * M


def us(minutes: int) -> int:
    return to_micros(at(minutes))


def series(buckets: list[MinuteBucket], uniques: tuple[tuple[int, str], ...] = ()) -> UsageSeries:
    return UsageSeries(at(0), at(60), buckets, uniques)


def test_total_is_sum_over_half_open_range() -> None:
    s = series([MinuteBucket(us(m), Decimal(v)) for m, v in [(0, "1.5"), (5, "2"), (10, "0.25")]])
    assert s.total(at(0), at(60)) == Decimal("3.75")
    assert s.total(at(0), at(5)) == Decimal("1.5")
    assert s.total(at(5), at(10)) == Decimal("2")
    assert s.total(at(1), at(5)) == 0
    assert s.total(at(10), at(10)) == 0


def test_total_is_exact_for_many_small_values() -> None:
    s = series([MinuteBucket(us(m), Decimal("0.1")) for m in range(60)])
    assert s.total(at(0), at(60)) == Decimal("6.0")
    assert s.total(at(10), at(13)) == Decimal("0.3")


def test_empty_series_answers_zero() -> None:
    s = series([])
    assert s.total(at(0), at(60)) == 0
    assert s.latest(at(0), at(60)) == 0
    assert s.unique(at(0), at(60)) == 0


def test_latest_is_last_value_in_range() -> None:
    s = series(
        [
            MinuteBucket(us(1), Decimal(1), us(1) + 5, Decimal("10")),
            MinuteBucket(us(7), Decimal(1), us(7) + 1, Decimal("-3")),
            MinuteBucket(us(9), Decimal(0)),  # no latest value recorded
        ]
    )
    assert s.latest(at(0), at(60)) == Decimal("-3")
    assert s.latest(at(0), at(7)) == Decimal("10")
    assert s.latest(at(2), at(7)) == 0
    assert s.latest(at(7), at(8)) == Decimal("-3")


def test_unique_counts_distinct_values_in_range() -> None:
    s = series([], ((us(0), "a"), (us(0), "b"), (us(3), "a"), (us(5), "c"), (us(8), "b")))
    assert s.unique(at(0), at(60)) == 3
    assert s.unique(at(0), at(1)) == 2
    assert s.unique(at(3), at(60)) == 3
    assert s.unique(at(3), at(6)) == 2
    assert s.unique(at(4), at(8)) == 1
    assert s.unique(at(9), at(60)) == 0
    # the cached first-seen list for from_=at(3) still answers other ends correctly
    assert s.unique(at(3), at(4)) == 1


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(at(0) + timedelta(seconds=1), at(5)), (at(0), at(61)), (at(-1), at(5)), (at(5), at(4))],
)
def test_bad_ranges_are_caller_bugs(lo: datetime, hi: datetime) -> None:
    with pytest.raises(InvariantViolation):
        series([]).total(lo, hi)


def test_unaligned_construction_is_a_caller_bug() -> None:
    with pytest.raises(InvariantViolation):
        UsageSeries(at(0) + timedelta(seconds=30), at(5), [])


def test_merge_minute_rows_sums_and_keeps_latest() -> None:
    merged = merge_minute_rows(
        [
            (us(1), Decimal(2), us(1) + 10, Decimal(5)),
            (us(1), Decimal(3), us(1) + 20, Decimal(7)),
            (us(1), Decimal(1), us(1) + 20, Decimal(6)),
            (us(0), Decimal(1), None, None),
        ]
    )
    assert [(b.minute, b.total, b.latest_value) for b in merged] == [
        (us(0), Decimal(1), None),
        (us(1), Decimal(6), Decimal(7)),
    ]


def test_group_filters() -> None:
    assert matches_all(exact_filters({"model": "gpt-4"}), {"model": "gpt-4", "type": "x"})
    assert not matches_all(exact_filters({"model": "gpt-4"}), {"model": "gpt-3"})
    assert not matches_all(exact_filters({"model": "gpt-4"}), {})
    assert matches_all(exact_filters({"model": ""}), {})
    assert GroupFilter("m", "$nin", ("a", "b")).matches({"m": "c"})
    assert not GroupFilter("m", "$ne", ("a",)).matches({"m": "a"})


def test_parse_advanced_filters() -> None:
    parsed = parse_advanced_filters({"model": {"$in": ["a", "b"]}, "type": {"$ne": "x"}}, "f")
    assert parsed == (GroupFilter("model", "$in", ("a", "b")), GroupFilter("type", "$ne", ("x",)))


@pytest.mark.parametrize(
    "raw",
    [[], {"m": "a"}, {"m": {}}, {"m": {"$gt": "1"}}, {"m": {"$eq": 1}}, {"m": {"$in": "a"}}],
)
def test_parse_advanced_filters_rejects(raw: object) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_advanced_filters(raw, "advancedMeterGroupByFilters")
    assert err.value.field == "advancedMeterGroupByFilters"
