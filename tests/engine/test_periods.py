"""Durations, calendar arithmetic, recurrences and the usage-period timeline."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from allotment.domain.errors import InvalidInput
from allotment.domain.periods import (
    P1D,
    P1M,
    P1W,
    P1Y,
    Duration,
    ExpirationUnit,
    Period,
    Recurrence,
    UsagePeriodInput,
    UsagePeriodTimeline,
    add_clamped,
    add_overflowing,
    expiration_expires_at,
    interval_iso,
    interval_to_wire,
    iter_boundaries,
    next_recurrence,
    parse_interval,
    period_at,
    validate_usage_period_interval,
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


class TestParseInterval:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [("DAY", P1D), ("week", P1W), ("Month", P1M), ("YEAR", P1Y), ("P1M", P1M)],
    )
    def test_enums_are_case_insensitive(self, text: str, expected: Duration) -> None:
        assert parse_interval(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("PT6H", Duration(hours=6)),
            ("P2W", Duration(weeks=2)),
            ("P3M", Duration(months=3)),
            ("P1Y2M3DT4H5M", Duration(years=1, months=2, days=3, hours=4, minutes=5)),
            ("PT120S", Duration(seconds=120)),
        ],
    )
    def test_iso_strings(self, text: str, expected: Duration) -> None:
        assert parse_interval(text) == expected

    @pytest.mark.parametrize("text", ["P0.5D", "PT1.5H", "P1,5M", "PT0.5S"])
    def test_fractional_components_are_rejected(self, text: str) -> None:
        with pytest.raises(InvalidInput, match="fractional") as info:
            parse_interval(text, field="interval")
        assert info.value.field == "interval"

    @pytest.mark.parametrize("text", ["", "P", "PT", "P0D", "1D", "P1H", "PT30S", "P-1D", "HOUR"])
    def test_invalid_strings_are_rejected(self, text: str) -> None:
        with pytest.raises(InvalidInput):
            parse_interval(text)

    def test_usage_period_minimum_is_one_hour(self) -> None:
        validate_usage_period_interval(parse_interval("PT1H"))
        validate_usage_period_interval(parse_interval("PT60M"))
        validate_usage_period_interval(parse_interval("P1D"))
        with pytest.raises(InvalidInput, match="at least 1 hour"):
            validate_usage_period_interval(parse_interval("PT59M"))


class TestWireForm:
    @pytest.mark.parametrize(
        ("duration", "wire", "iso"),
        [
            (P1D, "DAY", "P1D"),
            (P1W, "WEEK", "P1W"),
            (P1M, "MONTH", "P1M"),
            (P1Y, "YEAR", "P1Y"),
            (Duration(days=7), "P7D", "P7D"),
            (Duration(hours=6), "PT6H", "PT6H"),
            (Duration(years=1, hours=2), "P1YT2H", "P1YT2H"),
        ],
    )
    def test_round_trip(self, duration: Duration, wire: str, iso: str) -> None:
        assert interval_to_wire(duration) == wire
        assert interval_iso(duration) == iso
        assert parse_interval(wire) == duration


class TestClampedArithmetic:
    def test_month_end_clamping_from_jan_31(self) -> None:
        rec = Recurrence(P1M, utc(2025, 1, 31, 15))
        got = [rec.boundary(n) for n in range(1, 11)]
        days = [(2, 28), (3, 31), (4, 30), (5, 31), (6, 30), (7, 31), (8, 31), (9, 30)]
        assert got[:8] == [utc(2025, m, d, 15) for m, d in days]
        assert got[8:] == [utc(2025, 10, 31, 15), utc(2025, 11, 30, 15)]

    def test_month_end_clamping_from_jan_30(self) -> None:
        rec = Recurrence(P1M, utc(2025, 1, 30, 15))
        assert [rec.boundary(n) for n in (1, 2, 3)] == [
            utc(2025, 2, 28, 15),
            utc(2025, 3, 30, 15),
            utc(2025, 4, 30, 15),
        ]

    def test_yearly_from_feb_29(self) -> None:
        rec = Recurrence(P1Y, utc(2024, 2, 29))
        assert [rec.boundary(n) for n in (1, 2, 3, 4)] == [
            utc(2025, 2, 28),
            utc(2026, 2, 28),
            utc(2027, 2, 28),
            utc(2028, 2, 29),
        ]

    def test_negative_n_goes_back_from_the_anchor(self) -> None:
        rec = Recurrence(P1M, utc(2025, 3, 31))
        assert rec.boundary(-1) == utc(2025, 2, 28)
        assert rec.boundary(-2) == utc(2025, 1, 31)
        assert add_clamped(utc(2025, 3, 31), P1W, -1) == utc(2025, 3, 24)

    def test_hours_are_exact_and_days_are_calendar_days(self) -> None:
        assert add_clamped(utc(2025, 3, 29, 23), Duration(hours=6)) == utc(2025, 3, 30, 5)
        assert add_clamped(utc(2025, 3, 29, 23), P1D, 2) == utc(2025, 3, 31, 23)


class TestOverflowingExpiry:
    @pytest.mark.parametrize(
        ("start", "unit", "count", "expected"),
        [
            (utc(2024, 1, 31), ExpirationUnit.MONTH, 1, utc(2024, 3, 2)),
            (utc(2025, 1, 31), ExpirationUnit.MONTH, 1, utc(2025, 3, 3)),
            (utc(2024, 2, 29), ExpirationUnit.YEAR, 1, utc(2025, 3, 1)),
            (utc(2024, 1, 15), ExpirationUnit.MONTH, 13, utc(2025, 2, 15)),
            (utc(2024, 1, 31), ExpirationUnit.WEEK, 1, utc(2024, 2, 7)),
            (utc(2024, 1, 31), ExpirationUnit.DAY, 30, utc(2024, 3, 1)),
            (utc(2024, 1, 31, 23), ExpirationUnit.HOUR, 2, utc(2024, 2, 1, 1)),
        ],
    )
    def test_expires_at(
        self, start: datetime, unit: ExpirationUnit, count: int, expected: datetime
    ) -> None:
        assert expiration_expires_at(start, unit, count) == expected

    def test_overflow_differs_from_clamp(self) -> None:
        assert add_overflowing(utc(2024, 1, 31), P1M) == utc(2024, 3, 2)
        assert add_clamped(utc(2024, 1, 31), P1M) == utc(2024, 2, 29)


class TestPeriodAt:
    def test_boundary_starts_the_new_period(self) -> None:
        rec = Recurrence(P1M, utc(2025, 1, 31, 15))
        assert period_at(rec, utc(2025, 2, 28, 15)) == Period(
            utc(2025, 2, 28, 15), utc(2025, 3, 31, 15)
        )
        assert period_at(rec, utc(2025, 2, 28, 14, 59)) == Period(
            utc(2025, 1, 31, 15), utc(2025, 2, 28, 15)
        )

    def test_before_the_anchor(self) -> None:
        rec = Recurrence(P1D, utc(2025, 1, 10))
        assert period_at(rec, utc(2024, 12, 1, 5)) == Period(utc(2024, 12, 1), utc(2024, 12, 2))

    def test_far_from_anchor(self) -> None:
        rec = Recurrence(P1M, utc(2000, 1, 31))
        assert period_at(rec, utc(2100, 3, 1)) == Period(utc(2100, 2, 28), utc(2100, 3, 31))

    def test_iter_boundaries_is_inclusive(self) -> None:
        rec = Recurrence(P1D, utc(2025, 1, 1))
        got = list(iter_boundaries(rec, utc(2025, 1, 2), utc(2025, 1, 4)))
        assert got == [utc(2025, 1, 2), utc(2025, 1, 3), utc(2025, 1, 4)]
        assert list(iter_boundaries(rec, utc(2025, 1, 2, 1), utc(2025, 1, 2, 2))) == []

    def test_next_recurrence(self) -> None:
        rec = Recurrence(P1Y, utc(2024, 1, 1))
        assert next_recurrence(rec, utc(2025, 6, 1)) == utc(2026, 1, 1)
        assert next_recurrence(rec, utc(2026, 1, 1)) == utc(2026, 1, 1)


class TestTimeline:
    def _timeline(self) -> UsagePeriodTimeline:
        rec = Recurrence(P1M, utc(2025, 1, 1))
        return UsagePeriodTimeline((UsagePeriodInput(utc(2025, 1, 15), rec),))

    def test_first_period_starts_at_measure_usage_from(self) -> None:
        tl = self._timeline()
        assert tl.current_usage_period(utc(2025, 1, 20)) == Period(
            utc(2025, 1, 15), utc(2025, 2, 1)
        )
        assert tl.current_usage_period(utc(2024, 12, 1)) == Period(
            utc(2025, 1, 15), utc(2025, 2, 1)
        )
        assert tl.current_usage_period(utc(2025, 2, 1)) == Period(utc(2025, 2, 1), utc(2025, 3, 1))

    def test_reset_retaining_anchor_shortens_the_period(self) -> None:
        tl = self._timeline().with_reset(utc(2025, 2, 10), retain_anchor=True)
        assert tl.current_usage_period(utc(2025, 2, 9)) == Period(utc(2025, 2, 1), utc(2025, 2, 10))
        assert tl.current_usage_period(utc(2025, 2, 12)) == Period(
            utc(2025, 2, 10), utc(2025, 3, 1)
        )
        assert tl.current_usage_period(utc(2025, 3, 5)) == Period(utc(2025, 3, 1), utc(2025, 4, 1))

    def test_reset_without_anchor_reanchors(self) -> None:
        tl = self._timeline().with_reset(utc(2025, 2, 10), retain_anchor=False)
        assert tl.current_usage_period(utc(2025, 2, 12)) == Period(
            utc(2025, 2, 10), utc(2025, 3, 10)
        )
        assert tl.inputs[0].recurrence.anchor == utc(2025, 1, 1)

    def test_reset_timeline_with_a_later_reanchored_recurrence(self) -> None:
        tl = self._timeline().with_reset(utc(2025, 2, 10), retain_anchor=False)
        assert tl.resets_between(utc(2025, 1, 15), utc(2025, 4, 10)) == [
            utc(2025, 2, 1),
            utc(2025, 2, 10),
            utc(2025, 3, 10),
            utc(2025, 4, 10),
        ]
        assert tl.resets_between(utc(2025, 2, 1), utc(2025, 2, 28)) == [utc(2025, 2, 10)]
