"""Example-based tests of the burn-down engine (engine-semantics §4–§5)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from allotment.domain.engine import (
    Aggregation,
    BurnReason,
    EngineState,
    Phase,
    Reset,
    evaluate,
    plan_phases,
    run,
    starting_state,
)
from allotment.domain.errors import InvariantViolation
from allotment.domain.grants import Grant

from .helpers import BASE, events_usage, grant, t

D = Decimal


def total(state: EngineState, grants: list[Grant], at: datetime) -> Decimal:
    return sum((state.balances[g.id] for g in grants if g.active_at(at)), D(0))


def until_state(
    grants: list[Grant],
    until: datetime,
    events: list[tuple[datetime, int]],
    resets: list[Reset] | None = None,
    aggregation: Aggregation = Aggregation.SUM,
) -> EngineState:
    start = starting_state(grants, BASE)
    result = evaluate(grants, start, until, resets or [], events_usage(events), aggregation)
    return result.state


class TestOverage:
    def test_overage_is_burnt_from_a_grant_issued_later_in_the_same_period(self) -> None:
        grants = [grant("a", 500), grant("b", 8000, effective_at=t(hours=2))]
        events = [(t(10), 1000), (t(hours=3), 1000)]
        state = until_state(grants, t(hours=4), events)
        assert total(state, grants, t(hours=4)) == D(6500)
        assert state.overage == 0
        assert state.usage_in_period == D(2000)

    def test_overage_before_a_grant_becomes_effective_is_burnt_when_it_activates(self) -> None:
        grants = [grant("a", 100, effective_at=t(hours=1))]
        before = until_state(grants, t(30), [(t(5), 50)])
        assert before.overage == D(50)
        after = until_state(grants, t(hours=1), [(t(5), 50)])
        assert after.overage == 0
        assert after.balances["a"] == D(50)

    def test_recurring_grant_refills_and_carried_overage_is_burnt_from_the_refill(self) -> None:
        grants = [grant("a", 100, recurrence="P1D")]
        state = until_state(grants, t(days=1), [(t(10), 150)])
        assert state.balances["a"] == D(50)
        assert state.overage == 0
        assert state.total_grant_usage == D(150)

    def test_no_grant_means_everything_is_overage(self) -> None:
        state = until_state([], t(hours=1), [(t(1), 100)])
        assert state.overage == D(100)
        assert state.usage_in_period == D(100)


class TestBurnOrder:
    def test_priority_then_expiry_then_created_at_then_id(self) -> None:
        grants = [
            grant("z-noexp", 10, priority=1),
            grant("late-exp", 10, priority=1, expires_at=t(days=9)),
            grant("early-exp", 10, priority=1, expires_at=t(days=5)),
            grant("prio0", 10, priority=0),
            grant("a-noexp", 10, priority=1, created_at=BASE + timedelta(seconds=1)),
            grant("b-noexp", 10, priority=1),
        ]
        start = starting_state(grants, BASE)
        result = evaluate(grants, start, t(hours=1), [], events_usage([(t(1), 55)]))
        burnt = [(u.grant_id, u.usage) for u in result.segments[0].grant_usages]
        assert burnt == [
            ("prio0", D(10)),
            ("early-exp", D(10)),
            ("late-exp", D(10)),
            ("b-noexp", D(10)),
            ("z-noexp", D(10)),
            ("a-noexp", D(5)),
        ]
        reasons = [u.reason for u in result.segments[0].grant_usages]
        assert reasons[-1] is BurnReason.SEGMENT_TERMINATION
        assert reasons[0] is BurnReason.GRANT_EXHAUSTED

    def test_voided_grant_stops_burning_at_void_time(self) -> None:
        grants = [grant("a", 100, voided_at=t(30)), grant("b", 100, priority=2)]
        state = until_state(grants, t(60), [(t(10), 20), (t(40), 30)])
        assert state.balances["a"] == 0
        assert state.balances["b"] == D(70)


class TestResets:
    def test_rollover_is_clamped_between_min_and_max(self) -> None:
        grants = [
            grant("keep", 100, min_rollover=0, max_rollover=50),
            grant("floor", 100, priority=2, min_rollover=80, max_rollover=200),
        ]
        state = until_state(grants, t(hours=2), [(t(5), 160)], [Reset(t(hours=1))])
        # keep: 100 -> 0 -> min(50, max(0, 0)) = 0; floor: 100 -> 40 -> max(80, 40) = 80
        assert state.balances == {"keep": D(0), "floor": D(80)}
        assert state.usage_in_period == 0

    def test_default_v1_rollover_empties_the_grant(self) -> None:
        grants = [grant("a", 100, min_rollover=0, max_rollover=0)]
        state = until_state(grants, t(hours=2), [(t(5), 10)], [Reset(t(hours=1))])
        assert state.balances["a"] == 0

    def test_recurrence_at_the_reset_instant_is_applied_after_rollover(self) -> None:
        grants = [grant("a", 100, recurrence="P1D", max_rollover=10)]
        state = until_state(grants, t(days=1, hours=1), [(t(5), 30)], [Reset(t(days=1))])
        assert state.balances["a"] == D(100)

    def test_preserve_overage_burns_from_the_refilled_default_grant(self) -> None:
        grants = [grant("default", 500, min_rollover=500, max_rollover=500)]
        reset = Reset(t(hours=1), preserve_overage=True)
        state = until_state(grants, t(hours=1), [(t(5), 600)], [reset])
        assert (state.balances["default"], state.overage) == (D(400), D(0))

    def test_preserve_overage_without_rollover_keeps_the_overage(self) -> None:
        grants = [grant("a", 500)]
        reset = Reset(t(hours=1), preserve_overage=True)
        state = until_state(grants, t(hours=1), [(t(5), 600)], [reset])
        assert (state.balances["a"], state.overage) == (D(0), D(100))
        assert state.usage_in_period == 0

    def test_without_preserve_the_overage_is_forgiven(self) -> None:
        grants = [grant("a", 500)]
        state = until_state(grants, t(hours=1), [(t(5), 600)], [Reset(t(hours=1))])
        assert state.overage == 0

    def test_w6_preserved_overage_never_burns_from_a_grant_inactive_at_the_reset(self) -> None:
        expiring = grant("expiring", 100, expires_at=t(hours=1))
        keeper = grant("keeper", 50, priority=2, min_rollover=50, max_rollover=50)
        # A snapshot that still holds a balance for a grant that ends exactly at R.
        start = EngineState(
            at=t(59), period_start=BASE, balances={"expiring": D(100), "keeper": D(50)},
            overage=D(0),
        )  # fmt: skip
        reset = Reset(t(hours=1), preserve_overage=True)
        result = evaluate(
            [expiring, keeper], start, t(hours=1), [reset], events_usage([(t(59), 170)])
        )
        # 170 burns 100 from expiring and 50 from keeper, 20 overage is carried into R;
        # keeper refills to 50 at R and pays it; the expired grant plays no part.
        assert result.state.balances == {"expiring": D(0), "keeper": D(30)}
        assert result.state.overage == 0
        rollover = next(s for s in result.segments if s.termination.rollover)
        assert [u.grant_id for u in rollover.grant_usages] == ["keeper"]


class TestLatest:
    def test_latest_grants_act_as_limits(self) -> None:
        grants = [grant("a", 100), grant("b", 75, effective_at=t(hours=1))]
        start = starting_state(grants, BASE)

        def latest(_ps: datetime, from_: datetime, to: datetime) -> Decimal:
            return D(15) if from_ < t(hours=1) else D(10)

        result = evaluate(grants, start, t(hours=2), [], latest, Aggregation.LATEST)
        assert total(result.state, grants, t(hours=2)) == D(165)
        assert result.state.usage_in_period == D(25)


class TestResumeAndInputs:
    def test_resume_from_an_intermediate_state_equals_one_run(self) -> None:
        grants = [
            grant("a", 100, recurrence="PT6H", expires_at=t(days=2)),
            grant("b", 300, priority=3, effective_at=t(hours=5), max_rollover=100),
        ]
        usage = events_usage([(t(m), 7) for m in range(0, 60 * 30, 37)])
        resets = [Reset(t(hours=12), True), Reset(t(hours=24))]
        start = starting_state(grants, BASE)
        whole = evaluate(grants, start, t(hours=30), resets, usage).state
        for split in (t(hours=6), t(hours=12), t(hours=5), t(77)):
            first = evaluate(grants, start, split, [r for r in resets if r.at <= split], usage)
            rest = [r for r in resets if r.at > split]
            resumed = evaluate(grants, first.state, t(hours=30), rest, usage).state
            assert resumed == whole, split

    def test_missing_grants_are_seeded_and_unknown_ones_rejected(self) -> None:
        grants = [grant("a", 100)]
        start = EngineState(at=BASE, period_start=BASE, balances={})
        result = evaluate(grants, start, t(10), [], events_usage([]))
        assert result.state.balances == {"a": D(100)}
        bad = EngineState(at=BASE, period_start=BASE, balances={"zzz": D(1)})
        with pytest.raises(InvariantViolation):
            evaluate(grants, bad, t(10), [], events_usage([]))

    def test_plan_phases_then_run_with_a_mapping(self) -> None:
        grants = [grant("a", 100), grant("b", 50, effective_at=t(30), expires_at=t(90))]
        start = starting_state(grants, BASE)
        phases = plan_phases(grants, start, t(120), [Reset(t(60))])
        assert phases == [
            Phase(BASE, BASE, t(30)),
            Phase(BASE, t(30), t(60)),
            Phase(t(60), t(60), t(90)),
            Phase(t(60), t(90), t(120)),
        ]
        usage = {(p.from_, p.to): D(10) for p in phases}
        result = run(grants, start, t(120), [Reset(t(60))], usage)
        assert result.state.usage_in_period == D(20)
        with pytest.raises(InvariantViolation):
            run(grants, start, t(120), [Reset(t(60))], {})

    def test_w5_deleted_at_is_floored_to_the_minute(self) -> None:
        g = grant("a", 100, deleted_at=t(30) + timedelta(seconds=30))
        assert g.deleted_at == t(30)
        assert not g.active_at(t(30))
        state = until_state([g], t(60), [(t(30) + timedelta(seconds=10), 5)])
        assert state.overage == D(5)

    def test_w1_usage_added_for_an_earlier_time_changes_the_result(self) -> None:
        grants = [grant("a", 100)]
        before = until_state(grants, t(60), [(t(50), 10)])
        late = until_state(grants, t(60), [(t(50), 10), (t(5), 20)])
        assert (before.balances["a"], late.balances["a"]) == (D(90), D(70))

    def test_negative_usage_never_raises_a_balance_but_pays_overage(self) -> None:
        grants = [grant("a", 10, effective_at=t(30))]
        state = until_state(grants, t(20), [(t(1), 15), (t(10), -5)])
        assert state.overage == D(10)
        split = [grant("b", 10), grant("c", 1, priority=9, effective_at=t(5))]
        state = until_state(split, t(20), [(t(1), 5), (t(10), -50)])
        assert (state.balances["b"], state.balances["c"]) == (D(5), D(1))


class TestRunEnds:
    """What a run reports at its very end: on a reset, at zero length, at a grant's expiry."""

    def test_run_ending_exactly_on_a_reset_ends_with_the_post_reset_state(self) -> None:
        grants = [grant("default", 500, min_rollover=500, max_rollover=500)]
        reset = Reset(t(hours=1), preserve_overage=True)
        result = evaluate(grants, starting_state(grants, BASE), t(hours=1), [reset],
                          events_usage([(t(5), 600)]))  # fmt: skip
        *_, burnt, rollover, post = result.segments
        assert (burnt.from_, burnt.to, burnt.termination.usage_reset) == (BASE, t(hours=1), True)
        assert (rollover.from_, rollover.to, rollover.termination.rollover) == (
            t(hours=1), t(hours=1), True,
        )  # fmt: skip
        # the rollover refills to 500 and burns the preserved 100; the last segment is the
        # zero-length state after the reset, exactly the run's final state
        assert (rollover.balance_at_start["default"], rollover.overage_at_start) == (D(500), D(100))
        assert (post.from_, post.to, post.termination.rollover) == (t(hours=1), t(hours=1), False)
        assert post.balance_at_start == dict(result.state.balances) == {"default": D(400)}
        assert (post.overage_at_start, post.overage, post.usage) == (D(0), D(0), D(0))
        assert post.balance_at_end == post.balance_at_start

    def test_post_reset_segment_keeps_an_unpaid_preserved_overage(self) -> None:
        grants = [grant("a", 500)]
        reset = Reset(t(hours=1), preserve_overage=True)
        result = evaluate(grants, starting_state(grants, BASE), t(hours=1), [reset],
                          events_usage([(t(5), 600)]))  # fmt: skip
        post = result.segments[-1]
        assert (post.from_, post.to) == (t(hours=1), t(hours=1))
        assert post.balance_at_start == {"a": D(0)}
        assert (post.overage_at_start, post.overage) == (D(100), D(100))
        assert result.state.overage == D(100)

    def test_recurrence_at_the_reset_instant_is_applied_after_rollover_at_the_run_end(
        self,
    ) -> None:
        grants = [grant("a", 100, recurrence="P1D", max_rollover=10)]
        usage = events_usage([(t(5), 30)])
        result = evaluate(grants, starting_state(grants, BASE), t(days=1), [Reset(t(days=1))],
                          usage)  # fmt: skip
        rollover, post = result.segments[-2:]
        assert rollover.termination.rollover
        assert not post.termination.rollover
        # rolled over to min(10, 70) = 10, then refilled by the recurrence at R to 100
        assert rollover.balance_at_start == post.balance_at_start == {"a": D(100)}
        assert result.state.balances == {"a": D(100)}
        later = evaluate(grants, starting_state(grants, BASE), t(days=1, hours=1),
                         [Reset(t(days=1))], usage)  # fmt: skip
        assert later.state.balances == {"a": D(100)}

    def test_resuming_from_the_state_at_a_reset_equals_one_run(self) -> None:
        grants = [grant("a", 100, recurrence="PT6H", max_rollover=40),
                  grant("b", 50, priority=2, min_rollover=20, max_rollover=50)]  # fmt: skip
        usage = events_usage([(t(m), 9) for m in range(0, 60 * 20, 41)])
        resets = [Reset(t(hours=6), True), Reset(t(hours=12))]
        start = starting_state(grants, BASE)
        whole = evaluate(grants, start, t(hours=20), resets, usage)
        first = evaluate(grants, start, t(hours=12), resets, usage)
        assert first.segments[-1].balance_at_start == dict(first.state.balances)
        rest = evaluate(grants, first.state, t(hours=20), [], usage)
        assert rest.state == whole.state
        # the resumed run starts from the reported post-reset state, and never re-applies R
        assert rest.segments[0].balance_at_start == first.segments[-1].balance_at_start

    def test_a_zero_length_run_reports_its_state_in_one_segment(self) -> None:
        grants = [grant("a", 100), grant("b", 10, effective_at=t(30))]
        start = evaluate(grants, starting_state(grants, BASE), t(30), [],
                         events_usage([(t(1), 120)])).state  # fmt: skip
        result = evaluate(grants, start, t(30), [], events_usage([]))
        (only,) = result.segments
        assert (only.from_, only.to, only.usage) == (t(30), t(30), D(0))
        assert only.balance_at_start == dict(start.balances) == {"a": D(0), "b": D(0)}
        assert result.state == start

    def test_at_its_expiry_instant_a_grant_holds_zero_in_every_state(self) -> None:
        grants = [grant("short", 100, expires_at=t(hours=1)), grant("long", 100, priority=2)]
        usage = events_usage([(t(10), 30), (t(hours=1), 5)])
        start = starting_state(grants, BASE)
        at_expiry = evaluate(grants, start, t(hours=1), [], usage)
        # the segment that ends at E shows what expires unused (start minus usage) ...
        (seg,) = at_expiry.segments
        assert (seg.from_, seg.to) == (BASE, t(hours=1))
        assert seg.balance_at_end == {"short": D(70), "long": D(100)}
        # ... and the state at E holds 0 for it, with no extra report segment
        assert at_expiry.state.balances == {"short": D(0), "long": D(100)}
        past = evaluate(grants, start, t(hours=2), [], usage)
        after = next(s for s in past.segments if s.from_ == t(hours=1))
        assert after.balance_at_start == {"short": D(0), "long": D(100)}
        assert past.state.balances == {"short": D(0), "long": D(95)}
        resumed = evaluate(grants, at_expiry.state, t(hours=2), [], usage)
        assert resumed.state == past.state

    def test_a_grant_expiring_at_a_reset_rolls_nothing_over(self) -> None:
        grants = [grant("short", 100, expires_at=t(hours=1), min_rollover=100, max_rollover=100)]
        result = evaluate(grants, starting_state(grants, BASE), t(hours=1), [Reset(t(hours=1))],
                          events_usage([(t(10), 30)]))  # fmt: skip
        rollover, post = result.segments[-2:]
        assert rollover.balance_at_start == post.balance_at_start == {"short": D(0)}
        assert result.state.balances == {"short": D(0)}
