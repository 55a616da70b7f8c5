"""Pure rules of the value cache (domain/value_cache.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from allotment.domain.value_cache import (
    HORIZON,
    LAG,
    RING,
    UNCHANGED,
    checkpoint_for,
    earliest_touched,
    floor_hour,
    slot,
)

T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
MUF = datetime(2024, 5, 1, tzinfo=UTC)


def test_checkpoint_is_the_hour_start_lag_before_now() -> None:
    now = T + timedelta(minutes=5)  # 12:05 - 10 min = 11:55 -> 11:00
    assert checkpoint_for(now, now, MUF) == datetime(2024, 5, 1, 11, tzinfo=UTC)
    now = T + timedelta(minutes=15)  # 12:05 -> 12:00
    assert checkpoint_for(now, now, MUF) == T


def test_checkpoint_never_before_measure_usage_from_and_serves_only_its_window() -> None:
    assert checkpoint_for(MUF + timedelta(minutes=3), MUF + timedelta(minutes=3), MUF) == MUF
    now = T + timedelta(minutes=30)
    assert checkpoint_for(T - timedelta(minutes=1), now, MUF) is None  # a past read: plain
    assert checkpoint_for(T + HORIZON, now, MUF) is None  # beyond the horizon: plain
    assert checkpoint_for(T + HORIZON - timedelta(minutes=1), now, MUF) == T
    future = MUF + timedelta(days=3)  # measurement starts in the future
    assert checkpoint_for(future, now, future) == future
    assert checkpoint_for(future - timedelta(minutes=1), now, future) is None


@given(st.integers(0, 10_000_000), st.integers(0, 60 * 24 * 3))
def test_checkpoint_is_an_hour_or_measure_start_at_or_before_the_read(
    minutes: int, ahead: int
) -> None:
    now = MUF + timedelta(minutes=minutes)
    until = now + timedelta(minutes=ahead % 400)
    at = checkpoint_for(until, now, MUF)
    if at is None:
        assert until >= max(MUF, floor_hour(now - LAG)) + HORIZON
    else:
        assert at <= until < at + HORIZON
        assert at == MUF or at == floor_hour(at)
        assert at <= now


def test_earliest_touched() -> None:
    slots: list[int | None] = [None] * RING
    for version, minute in enumerate([50, 10, 70, 30, 90, 20, 60, 80, 40], start=1):
        slots[slot(version)] = minute
    # current version 9 holds the last 8 versions (2..9) in the ring
    assert earliest_touched(9, 9, slots) == UNCHANGED
    assert earliest_touched(8, 9, slots) == 40
    assert earliest_touched(6, 9, slots) == 40  # versions 7, 8, 9: 60, 80, 40
    assert earliest_touched(5, 9, slots) == 20
    assert earliest_touched(1, 9, slots) == 10
    assert earliest_touched(0, 9, slots) is None  # 9 behind: version 1 was overwritten
    assert earliest_touched(10, 9, slots) is None  # went backwards
    fresh: list[int | None] = [None] * RING
    fresh[slot(1)] = 5
    assert earliest_touched(0, 1, fresh) == 5
    assert earliest_touched(0, 2, fresh) is None  # a slot never written
