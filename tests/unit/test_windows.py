"""Tumbling windows: DST days, local months, year crossings, the window-count limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from allotment.domain import limits
from allotment.domain.errors import InvalidInput, LimitExceeded
from allotment.domain.windows import (
    WindowGrid,
    WindowSize,
    check_window_count,
    floor_window,
    next_window,
    parse_time_zone,
    parse_window_size,
    total_window,
    window_count,
)

BUD = ZoneInfo("Europe/Budapest")
NY = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_minute_and_hour_windows_in_utc() -> None:
    at = utc(2024, 5, 6, 10, 31, 45, 123)
    assert floor_window(at, WindowSize.MINUTE, UTC) == utc(2024, 5, 6, 10, 31)
    assert floor_window(at, WindowSize.HOUR, UTC) == utc(2024, 5, 6, 10)
    assert next_window(utc(2024, 5, 6, 10), WindowSize.HOUR, UTC) == utc(2024, 5, 6, 11)


def test_hour_windows_follow_half_hour_offsets() -> None:
    start = floor_window(utc(2024, 5, 6, 10, 10), WindowSize.HOUR, KOLKATA)
    assert start == utc(2024, 5, 6, 9, 30)
    assert next_window(start, WindowSize.HOUR, KOLKATA) == utc(2024, 5, 6, 10, 30)


def test_day_window_on_spring_forward_is_23_hours() -> None:
    start = floor_window(utc(2024, 3, 31, 12), WindowSize.DAY, BUD)
    end = next_window(start, WindowSize.DAY, BUD)
    assert start == utc(2024, 3, 30, 23)  # local midnight, CET (+01:00)
    assert end == utc(2024, 3, 31, 22)  # next local midnight, CEST (+02:00)
    assert end - start == timedelta(hours=23)


def test_day_window_on_fall_back_is_25_hours() -> None:
    start = floor_window(utc(2024, 10, 27, 12), WindowSize.DAY, BUD)
    end = next_window(start, WindowSize.DAY, BUD)
    assert start == utc(2024, 10, 26, 22)
    assert end == utc(2024, 10, 27, 23)
    assert end - start == timedelta(hours=25)


def test_hour_windows_across_dst_are_one_hour() -> None:
    grid = WindowGrid.build(utc(2024, 10, 26, 22), utc(2024, 10, 27, 23), WindowSize.HOUR, BUD)
    assert len(grid.bounds) - 1 == 25
    assert {b - a for a, b in zip(grid.bounds, grid.bounds[1:], strict=False)} == {3_600_000_000}


def test_day_grid_over_dst_week() -> None:
    grid = WindowGrid.build(utc(2024, 3, 28, 23), utc(2024, 4, 2, 22), WindowSize.DAY, BUD)
    lengths = [grid.window(i)[1] - grid.window(i)[0] for i in range(len(grid.bounds) - 1)]
    day, dst_day = timedelta(hours=24), timedelta(hours=23)
    assert lengths == [day, day, dst_day, day, day]
    assert window_count(utc(2024, 3, 28, 23), utc(2024, 4, 2, 22), WindowSize.DAY, BUD) == 5


def test_month_windows_in_local_time_and_across_a_year() -> None:
    start = floor_window(utc(2024, 12, 15), WindowSize.MONTH, NY)
    assert start == utc(2024, 12, 1, 5)  # local midnight EST
    end = next_window(start, WindowSize.MONTH, NY)
    assert end == utc(2025, 1, 1, 5)
    # the instant before local New Year belongs to December
    assert floor_window(utc(2025, 1, 1, 4, 59), WindowSize.MONTH, NY) == start
    grid = WindowGrid.build(utc(2024, 11, 20), utc(2025, 2, 3), WindowSize.MONTH, NY)
    starts = [grid.window(i)[0] for i in range(len(grid.bounds) - 1)]
    assert starts == [
        utc(2024, 11, 1, 4),
        utc(2024, 12, 1, 5),
        utc(2025, 1, 1, 5),
        utc(2025, 2, 1, 5),
    ]
    assert window_count(utc(2024, 11, 20), utc(2025, 2, 3), WindowSize.MONTH, NY) == 4


def test_day_windows_across_a_year_in_utc() -> None:
    grid = WindowGrid.build(utc(2024, 12, 30, 12), utc(2025, 1, 2), WindowSize.DAY, UTC)
    assert [grid.window(i)[0].date().isoformat() for i in range(len(grid.bounds) - 1)] == [
        "2024-12-30",
        "2024-12-31",
        "2025-01-01",
    ]


def test_grid_index() -> None:
    grid = WindowGrid.build(utc(2024, 1, 1), utc(2024, 1, 1, 3), WindowSize.HOUR, UTC)
    base = grid.bounds[0]
    assert grid.index(base) == 0
    assert grid.index(base + 3_600_000_000 - 1) == 0
    assert grid.index(base + 3_600_000_000) == 1
    assert grid.index(base - 1) is None
    assert grid.index(grid.bounds[-1]) is None


@pytest.mark.parametrize(
    ("size", "step"),
    [
        (WindowSize.MINUTE, timedelta(minutes=1)),
        (WindowSize.HOUR, timedelta(hours=1)),
        (WindowSize.DAY, timedelta(days=1)),
    ],
)
def test_window_count_limit_at_n_and_n_plus_one(size: WindowSize, step: timedelta) -> None:
    start = utc(2000, 1, 1)
    n = limits.QUERY_WINDOWS_MAX
    assert check_window_count(start, start + n * step, size, UTC) == n
    with pytest.raises(LimitExceeded) as err:
        check_window_count(start, start + n * step + timedelta(microseconds=1), size, UTC)
    assert err.value.field == "windowSize"
    assert "QUERY_WINDOWS_MAX" in err.value.detail


def test_window_count_of_unaligned_and_empty_ranges() -> None:
    assert (
        window_count(utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 1, 1), WindowSize.MINUTE, UTC)
        == 2
    )
    assert window_count(utc(2024, 1, 1), utc(2024, 1, 1), WindowSize.DAY, UTC) == 0
    assert window_count(utc(2024, 1, 1), utc(9999, 1, 1), WindowSize.MINUTE, UTC) > 10**9


def test_parse_window_size_and_zone() -> None:
    assert parse_window_size("DAY") is WindowSize.DAY
    with pytest.raises(InvalidInput) as err:
        parse_window_size("WEEK")
    assert err.value.field == "windowSize"
    assert parse_time_zone(None) is UTC
    assert parse_time_zone("Europe/Budapest") == BUD
    for bad in ("Mars/Olympus", "../etc/passwd", "Europe/", "/etc/localtime"):
        with pytest.raises(InvalidInput) as zerr:
            parse_time_zone(bad)
        assert zerr.value.field == "windowTimeZone"


def test_total_window_rules() -> None:
    t = utc(2024, 1, 1)
    assert total_window(None, None, t, t + timedelta(days=1)) == (
        t,
        t + timedelta(days=1, minutes=1),
    )
    assert total_window(t, t + timedelta(hours=1), None, None) == (t, t + timedelta(hours=1))
    assert total_window(None, None, None, None) is None
    assert total_window(t, None, None, None) is None


def test_sql_buckets_never_straddle_a_window() -> None:
    from allotment.services.meter_queries import MeterQuery, _bucketing

    def step(size: WindowSize, zone: str, lo: datetime, hi: datetime) -> int:
        tz = parse_time_zone(zone)
        grid = WindowGrid.build(lo, hi, size, tz)
        b = _bucketing(MeterQuery(window_size=size, time_zone=tz), grid, True, True)
        assert all((x - b.anchor) % b.step == 0 for x in grid.bounds)
        return b.step

    hour, minute = 3_600_000_000, 60_000_000
    assert step(WindowSize.DAY, "Europe/Budapest", utc(2024, 3, 1), utc(2024, 4, 30)) == hour
    assert step(WindowSize.DAY, "Asia/Kolkata", utc(2024, 3, 1), utc(2024, 4, 30)) == hour
    assert step(WindowSize.MONTH, "America/New_York", utc(2024, 1, 1), utc(2025, 1, 1)) == hour
    # Lord Howe moves its clocks by 30 minutes: only minute buckets fit
    assert step(WindowSize.DAY, "Australia/Lord_Howe", utc(2024, 3, 1), utc(2024, 4, 30)) == minute
    assert step(WindowSize.MINUTE, "UTC", utc(2024, 3, 1), utc(2024, 3, 2)) == minute
