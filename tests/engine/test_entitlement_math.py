"""Metered value, resets, validations and history (engine-semantics §6–§10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from allotment.domain import limits
from allotment.domain.engine import Aggregation
from allotment.domain.entitlement_math import (
    ManualReset,
    MeteredSpec,
    WindowSize,
    default_grant_params,
    engine_resets,
    history,
    history_windows,
    make_usage_period,
    metered_value,
    plan_value,
    required_usage_range,
    resolve_measure_usage_from,
    validate_grant_effective_at,
    validate_issue_after_reset,
    validate_reset,
    validate_void,
    value_from_usage,
)
from allotment.domain.errors import InvalidInput, LimitExceeded
from allotment.domain.periods import P1D, P1M, Period, Recurrence

from .helpers import BASE, events_usage, grant, t

D = Decimal


def spec(**kw: object) -> MeteredSpec:
    base: dict[str, object] = {
        "usage_period": Recurrence(P1M, BASE),
        "measure_usage_from": BASE,
    }
    base.update(kw)
    return MeteredSpec(**base)  # type: ignore[arg-type]


class TestMeteredValue:
    def test_one_grant_one_usage(self) -> None:
        value = metered_value(spec(), [grant("a", 100)], [], t(60), events_usage([(t(1), 1)]))
        assert (value.has_access, value.balance, value.usage, value.overage) == (
            True, D(99), D(1), D(0),
        )  # fmt: skip
        assert value.total_available_grant_amount == D(100)
        assert value.start_of_period == BASE

    def test_read_time_is_rounded_up_to_the_minute(self) -> None:
        usage = events_usage([(t(10) + timedelta(seconds=30), 5)])
        at_10 = metered_value(spec(), [grant("a", 100)], [], t(10), usage)
        at_10_01 = metered_value(spec(), [grant("a", 100)], [], t(10) + timedelta(seconds=1), usage)
        assert (at_10.usage, at_10_01.usage) == (D(0), D(5))

    def test_zero_balance_means_no_access_unless_soft_limit(self) -> None:
        usage = events_usage([(t(1), 100)])
        hard = metered_value(spec(), [grant("a", 100)], [], t(5), usage)
        soft = metered_value(spec(is_soft_limit=True), [grant("a", 100)], [], t(5), usage)
        assert (hard.has_access, hard.balance) == (False, D(0))
        assert (soft.has_access, soft.balance) == (True, D(0))
        nothing = metered_value(spec(), [], [], t(5), events_usage([]))
        assert not nothing.has_access

    def test_grant_expiring_exactly_at_the_read_time_is_excluded(self) -> None:
        grants = [grant("a", 100, expires_at=t(30)), grant("b", 10, priority=2)]
        value = metered_value(spec(), grants, [], t(30), events_usage([]))
        assert value.balance == D(10)
        assert dict(value.grant_balances) == {"b": D(10)}

    def test_grant_effective_exactly_at_the_read_time_is_included(self) -> None:
        grants = [grant("a", 100, effective_at=t(30))]
        value = metered_value(spec(), grants, [], t(30), events_usage([(t(1), 40)]))
        assert (value.balance, value.overage) == (D(60), D(0))

    def test_usage_before_measure_usage_from_is_ignored(self) -> None:
        s = spec(measure_usage_from=t(60))
        value = metered_value(s, [grant("a", 100)], [], t(120), events_usage([(t(1), 40)]))
        assert (value.usage, value.balance) == (D(0), D(100))

    def test_read_before_measure_usage_from(self) -> None:
        s = spec(measure_usage_from=t(60))
        value = metered_value(s, [grant("a", 100)], [], t(30), events_usage([(t(1), 40)]))
        assert (value.usage, value.balance, value.start_of_period) == (D(0), D(100), t(60))

    def test_issue_after_reset_default_grant_with_a_voided_higher_urgency_grant(self) -> None:
        s = spec(issue_after_reset=D(500))
        params = default_grant_params(s)
        assert params is not None
        default = grant(
            "default", params.amount, priority=params.priority,
            effective_at=params.effective_at, min_rollover=500, max_rollover=500,
        )  # fmt: skip
        urgent = grant("urgent", 100, priority=1, expires_at=t(days=10), voided_at=t(60))
        usage = events_usage([(t(10), 10), (t(90), 12)])
        value = metered_value(s, [default, urgent], [], t(120), usage)
        assert value.balance == D(488)
        assert value.usage == D(22)

    def test_default_grant_refills_each_period(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE), issue_after_reset=D(50))
        default = grant("d", 50, min_rollover=50, max_rollover=50)
        usage = events_usage([(t(10), 80), (t(days=1, minutes=5), 20)])
        day1 = metered_value(s, [default], [], t(hours=2), usage)
        day2 = metered_value(s, [default], [], t(days=1, hours=2), usage)
        assert (day1.balance, day1.overage) == (D(0), D(30))
        assert (day2.balance, day2.overage, day2.usage) == (D(30), D(0), D(20))

    def test_snapshot_changes_cost_not_result(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE), preserve_overage_at_reset=True)
        grants = [grant("a", 100, recurrence="PT12H"), grant("b", 30, priority=0, max_rollover=9)]
        usage = events_usage([(t(m), 3) for m in range(0, 3 * 24 * 60, 47)])
        whole = metered_value(s, grants, [], t(days=3), usage)
        for snap_at in (t(hours=12), t(days=1), t(days=2, hours=5)):
            snap = metered_value(s, grants, [], snap_at, usage).state
            resumed = metered_value(s, grants, [], t(days=3), usage, start_state=snap)
            assert resumed == whole

    def test_plan_then_value_from_a_usage_mapping(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE))
        grants = [grant("a", 100, min_rollover=100, max_rollover=100)]
        plan = plan_value(s, grants, [], t(days=1, hours=1))
        assert [r.at for r in plan.resets] == [t(days=1)]
        assert plan.usage_range == Period(BASE, t(days=1, hours=1))
        value = value_from_usage(s, grants, plan, {(p.from_, p.to): D(7) for p in plan.phases})
        assert (value.balance, value.usage) == (D(93), D(7))

    def test_unique_count_range_starts_at_the_period_start(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE), aggregation=Aggregation.UNIQUE_COUNT)
        snap = metered_value(s, [], [], t(hours=5), events_usage([])).state
        got = required_usage_range(s, [], [], t(hours=9), start_state=snap)
        assert got == Period(BASE, t(hours=9))
        s_sum = spec(usage_period=Recurrence(P1D, BASE))
        assert required_usage_range(s_sum, [], [], t(hours=9), snap) == Period(
            t(hours=5), t(hours=9)
        )


class TestResets:
    def test_manual_reset_keeps_its_own_preserve_flag(self) -> None:
        s = spec(preserve_overage_at_reset=False)
        resets = [ManualReset(t(hours=1), retain_anchor=True, preserve_overage=True)]
        got = engine_resets(s, resets, BASE, t(days=40))
        assert [(r.at, r.preserve_overage) for r in got] == [
            (t(hours=1), True),
            (datetime(2024, 2, 1, tzinfo=UTC), False),
        ]

    def test_manual_reset_preserving_overage(self) -> None:
        s = spec(issue_after_reset=D(500))
        default = grant("d", 500, min_rollover=500, max_rollover=500)
        reset = validate_reset(s, [], now=t(hours=2), effective_at=t(60), preserve_overage=True)
        value = metered_value(s, [default], [reset], t(60), events_usage([(t(5), 600)]))
        assert (value.balance, value.overage, value.usage) == (D(400), D(0), D(0))
        assert value.start_of_period == t(60)

    def test_validate_reset_rules(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE))
        now = t(days=2, hours=3)
        ok = validate_reset(s, [], now, t(days=2, hours=1, minutes=0) + timedelta(seconds=20))
        assert ok == ManualReset(t(days=2, hours=1), False, False)
        with pytest.raises(InvalidInput, match="future"):
            validate_reset(s, [], now, now + timedelta(seconds=1))
        with pytest.raises(InvalidInput, match="before current usage period"):
            validate_reset(s, [], now, t(days=1, hours=23))
        with pytest.raises(InvalidInput, match="after last reset"):
            validate_reset(s, [ok], now, ok.at + timedelta(seconds=30))
        with pytest.raises(InvalidInput, match="after last reset") as info:
            validate_reset(spec(), [], t(30), BASE)
        assert info.value.field == "effectiveAt"

    def test_validate_void_rules(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE))
        g = grant("a", 10)
        now = t(days=1, hours=5)
        assert validate_void(g, None, now, s, []) == t(days=1, hours=5)
        with pytest.raises(InvalidInput, match="future"):
            validate_void(g, now + timedelta(minutes=1), now, s, [])
        with pytest.raises(InvalidInput, match="before the current usage period"):
            validate_void(g, t(hours=23), now, s, [])
        with pytest.raises(InvalidInput, match="already voided"):
            validate_void(grant("v", 10, voided_at=t(5)), None, now, s, [])

    def test_validate_grant_effective_at(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE))
        now = t(days=1, hours=5)
        assert validate_grant_effective_at(s, [], t(days=1) + timedelta(seconds=59), now) == t(
            days=1
        )
        assert validate_grant_effective_at(s, [], t(days=9), now) == t(days=9)
        with pytest.raises(InvalidInput) as info:
            validate_grant_effective_at(s, [], t(hours=23, minutes=59), now)
        assert info.value.field == "effectiveAt"


class TestSpecHelpers:
    def test_make_usage_period(self) -> None:
        rec = make_usage_period("month", None, BASE + timedelta(seconds=42))
        assert rec == Recurrence(P1M, BASE)
        with pytest.raises(InvalidInput, match="at least 1 hour"):
            make_usage_period("PT30M", BASE, BASE)

    def test_measure_usage_from(self) -> None:
        rec = Recurrence(P1D, BASE)
        now = t(days=3, hours=4, minutes=5) + timedelta(seconds=9)
        assert resolve_measure_usage_from(None, rec, now) == t(days=3, hours=4, minutes=5)
        assert resolve_measure_usage_from("CURRENT_PERIOD_START", rec, now) == t(days=3)
        assert resolve_measure_usage_from(t(7) + timedelta(seconds=3), rec, now) == t(7)
        with pytest.raises(InvalidInput):
            resolve_measure_usage_from("CREATION_TIME", rec, now)

    def test_issue_after_reset_rules(self) -> None:
        assert default_grant_params(spec(issue_after_reset=D(0))) is None
        params = default_grant_params(spec(issue_after_reset=D(5), issue_after_reset_priority=7))
        assert params is not None
        assert (params.amount, params.priority, params.min_rollover, params.max_rollover) == (
            D(5), 7, D(5), D(5),
        )  # fmt: skip
        assert params.effective_at == BASE
        with pytest.raises(InvalidInput, match="requires"):
            validate_issue_after_reset(None, 3)
        with pytest.raises(InvalidInput):
            validate_issue_after_reset(D(-1), None)


class TestHistory:
    def test_windowed_history_hour_shows_a_mid_window_grant_from_the_next_window(self) -> None:
        grants = [grant("a", 100), grant("b", 50, effective_at=t(hours=5, minutes=30))]
        events = [(t(hours=4, minutes=10), 10), (t(hours=5, minutes=45), 5)]
        usage = events_usage(events)

        def window_usage(from_: datetime, to: datetime) -> Decimal:
            return usage(BASE, from_, to)

        result = history(
            spec(), grants, [], t(hours=4), t(hours=7), WindowSize.HOUR, ZoneInfo("UTC"),
            usage, window_usage,
        )  # fmt: skip
        rows = [(w.from_.hour, w.usage, w.balance_at_start) for w in result.windowed]
        assert rows == [(4, D(10), D(100)), (5, D(5), D(90)), (6, D(0), D(135))]
        spans = [(b.from_, b.to) for b in result.burndown]
        assert spans == [(t(hours=4), t(hours=5, minutes=30)), (t(hours=5, minutes=30), t(hours=7))]
        first = result.burndown[0]
        assert (first.balance_at_start, first.balance_at_end) == (D(100), D(90))
        assert dict(first.grant_usages) == {"a": D(10)}

    def test_day_windows_follow_the_time_zone(self) -> None:
        tz = ZoneInfo("Europe/Budapest")
        windows = history_windows(
            datetime(2024, 3, 30, 12, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC),
            WindowSize.DAY, tz,
        )  # fmt: skip
        assert [w.start for w in windows] == [
            datetime(2024, 3, 30, 12, tzinfo=UTC),  # clipped at the start
            datetime(2024, 3, 30, 23, tzinfo=UTC),
            datetime(2024, 3, 31, 22, tzinfo=UTC),
        ]
        assert windows[0].end == datetime(2024, 3, 30, 23, tzinfo=UTC)
        assert windows[1].end - windows[1].start == timedelta(hours=23)

    def test_a_partial_first_window_is_clipped_not_dropped(self) -> None:
        utc = ZoneInfo("UTC")
        got = history_windows(t(hours=1, minutes=7), t(hours=3), WindowSize.DAY, utc)
        assert got == [Period(t(hours=1, minutes=7), t(days=1))]
        got = history_windows(t(1), t(200), WindowSize.HOUR, utc)
        assert got == [
            Period(t(1), t(hours=1)), Period(t(hours=1), t(hours=2)),
            Period(t(hours=2), t(hours=3)), Period(t(hours=3), t(hours=4)),
        ]  # fmt: skip
        assert history_windows(t(5), t(5), WindowSize.HOUR, utc) == []

    def test_window_count_limit(self) -> None:
        n = limits.HISTORY_WINDOWS_MAX
        utc = ZoneInfo("UTC")
        assert len(history_windows(BASE, t(n), WindowSize.MINUTE, utc)) == n
        with pytest.raises(LimitExceeded, match="HISTORY_WINDOWS_MAX"):
            history_windows(BASE, t(n + 1), WindowSize.MINUTE, utc)

    def test_from_before_measure_usage_from_is_rejected(self) -> None:
        with pytest.raises(InvalidInput) as info:
            history(
                spec(measure_usage_from=t(60)), [], [], t(0), t(120), WindowSize.HOUR,
                ZoneInfo("UTC"), events_usage([]), lambda a, b: D(0),
            )  # fmt: skip
        assert info.value.field == "from"

    def test_history_includes_rollover_segments(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE))
        grants = [grant("a", 100, max_rollover=100)]
        usage = events_usage([(t(hours=23), 30)])
        result = history(
            s, grants, [], BASE, t(days=1, hours=2), WindowSize.DAY, ZoneInfo("UTC"),
            usage, lambda a, b: usage(BASE, a, b),
        )  # fmt: skip
        assert [(w.usage, w.balance_at_start) for w in result.windowed] == [
            (D(30), D(100)), (D(0), D(70)),
        ]  # fmt: skip
        zero = [b for b in result.burndown if b.from_ == b.to]
        assert [(z.from_, z.balance_at_start) for z in zero] == [(t(days=1), D(70))]

    def test_a_fresh_entitlement_shows_its_first_partial_window_and_segments(self) -> None:
        start = t(hours=10, minutes=7)  # measureUsageFrom, not on a DAY or HOUR boundary
        s = spec(measure_usage_from=start, usage_period=Recurrence(P1M, start))
        grants = [grant("default", 1000, effective_at=start, min_rollover=1000,
                        max_rollover=1000)]  # fmt: skip
        usage = events_usage([(t(hours=9), 999), (start, 10), (t(hours=10, minutes=20), 5)])

        def window_usage(a: datetime, b: datetime) -> Decimal:
            return usage(start, a, b)

        got = history(
            s, grants, [], start, t(hours=10, minutes=30) + timedelta(seconds=5), WindowSize.DAY,
            ZoneInfo("UTC"), usage, window_usage,
        )  # fmt: skip
        # the day window is clipped at measureUsageFrom (OpenMeter drops it), and says so
        assert [(w.from_, w.to, w.usage, w.balance_at_start) for w in got.windowed] == [
            (start, t(days=1), D(15), D(1000)),
        ]
        (seg,) = got.burndown
        assert (seg.from_, seg.to) == (start, t(hours=10, minutes=31))  # `to` rounded up
        assert (seg.usage, seg.balance_at_start, seg.balance_at_end) == (D(15), D(1000), D(985))
        hourly = history(
            s, grants, [], start, t(hours=12), WindowSize.HOUR, ZoneInfo("UTC"), usage,
            window_usage,
        )  # fmt: skip
        assert [(w.from_, w.usage) for w in hourly.windowed] == [
            (start, D(15)), (t(hours=11), D(0)),
        ]  # fmt: skip

    def test_a_window_starting_mid_window_is_clipped_at_from(self) -> None:
        grants = [grant("a", 100)]
        usage = events_usage([(t(10), 7), (t(40), 3)])
        got = history(
            spec(), grants, [], t(30), t(hours=2), WindowSize.HOUR, ZoneInfo("UTC"), usage,
            lambda a, b: usage(BASE, a, b),
        )  # fmt: skip
        assert [(w.from_, w.usage, w.balance_at_start) for w in got.windowed] == [
            (t(30), D(3), D(93)), (t(hours=1), D(0), D(90)),
        ]  # fmt: skip
        assert [(b.from_, b.to, b.usage) for b in got.burndown] == [(t(30), t(hours=2), D(3))]

    def test_an_empty_range_still_reports_the_state(self) -> None:
        grants = [grant("a", 100)]
        usage = events_usage([(t(10), 7)])
        got = history(
            spec(), grants, [], t(30), t(30), WindowSize.DAY, ZoneInfo("UTC"), usage,
            lambda a, b: usage(BASE, a, b),
        )  # fmt: skip
        assert got.windowed == ()
        (only,) = got.burndown
        assert (only.from_, only.to, only.balance_at_start, only.usage) == (
            t(30), t(30), D(93), D(0),
        )  # fmt: skip

    def test_history_ending_exactly_on_a_reset_ends_after_it(self) -> None:
        s = spec(usage_period=Recurrence(P1D, BASE))
        grants = [grant("a", 100, max_rollover=50, recurrence="P1D")]
        usage = events_usage([(t(hours=23), 80)])
        got = history(
            s, grants, [], BASE, t(days=1), WindowSize.DAY, ZoneInfo("UTC"), usage,
            lambda a, b: usage(BASE, a, b),
        )  # fmt: skip
        spans = [(b.from_, b.to, b.balance_at_start, b.balance_at_end) for b in got.burndown]
        assert spans == [
            (BASE, t(days=1), D(100), D(20)),
            (t(days=1), t(days=1), D(100), D(100)),  # rollover to 20, refilled after it
            (t(days=1), t(days=1), D(100), D(100)),  # the post-reset state
        ]
        assert [(w.from_, w.usage) for w in got.windowed] == [(BASE, D(80))]

    def test_at_a_grant_expiry_instant(self) -> None:
        grants = [grant("short", 100, expires_at=t(hours=1)), grant("long", 50, priority=2)]
        usage = events_usage([(t(10), 30)])

        def run_to(to: datetime) -> tuple[object, ...]:
            return history(
                spec(), grants, [], BASE, to, WindowSize.HOUR, ZoneInfo("UTC"), usage,
                lambda a, b: usage(BASE, a, b),
            ).burndown  # fmt: skip

        (ending,) = run_to(t(hours=1))
        assert dict(ending.grant_balances_at_end) == {"short": D(70), "long": D(50)}
        first, after = run_to(t(hours=2))
        assert first == ending
        assert dict(after.grant_balances_at_start) == {"long": D(50)}  # expired: not listed
        value = metered_value(spec(), grants, [], t(hours=1), usage)
        assert (value.balance, dict(value.grant_balances)) == (D(50), {"long": D(50)})
