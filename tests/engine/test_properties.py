"""Hypothesis properties of the burn-down engine, including equality with a naive model.

The ``ci`` profile (registered in tests/conftest.py: 200 examples, derandomized) keeps the
suite deterministic; set HYPOTHESIS_PROFILE=dev for random exploration.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from allotment.domain.engine import (
    EngineState,
    Reset,
    RunResult,
    Segment,
    evaluate,
    starting_state,
)
from allotment.domain.grants import Grant, burn_order_key

from .helpers import BASE, grant
from .reference import reference_run

D = Decimal
HORIZON_MINUTES = 2 * 24 * 60


@dataclass(frozen=True)
class Scenario:
    grants: tuple[Grant, ...]
    until: datetime
    resets: tuple[Reset, ...]
    usage: tuple[tuple[datetime, Decimal], ...]

    def usage_fn(self, _period_start: datetime, from_: datetime, to: datetime) -> Decimal:
        return sum((v for at, v in self.usage if from_ <= at < to), D(0))

    def per_minute(self) -> dict[datetime, Decimal]:
        out: dict[datetime, Decimal] = {}
        for at, v in self.usage:
            out[at] = out.get(at, D(0)) + v
        return out

    def run(self, grants: tuple[Grant, ...] | None = None) -> RunResult:
        gs = self.grants if grants is None else grants
        return evaluate(gs, starting_state(gs, BASE), self.until, self.resets, self.usage_fn)


def minutes(lo: int = 0, hi: int = HORIZON_MINUTES) -> st.SearchStrategy[datetime]:
    return st.integers(lo, hi).map(lambda m: BASE + timedelta(minutes=m))


@st.composite
def grants_st(draw: st.DrawFn, index: int) -> Grant:
    effective = draw(minutes(0, HORIZON_MINUTES // 2))
    expires = draw(st.none() | st.integers(1, HORIZON_MINUTES))
    voided = draw(st.none() | st.integers(0, HORIZON_MINUTES))
    low = draw(st.integers(0, 60))
    high = draw(st.integers(low, 150))
    recurrence = draw(st.none() | st.sampled_from(["PT1H", "PT6H", "P1D", "PT90M"]))
    anchor_shift = draw(st.integers(-120, 120))
    return grant(
        f"g{index}",
        draw(st.integers(1, 100)),
        priority=draw(st.integers(0, 3)),
        effective_at=effective,
        expires_at=None if expires is None else effective + timedelta(minutes=expires),
        voided_at=None if voided is None else BASE + timedelta(minutes=voided),
        min_rollover=low,
        max_rollover=high,
        recurrence=recurrence,
        anchor=effective + timedelta(minutes=anchor_shift),
        created_at=BASE + timedelta(seconds=draw(st.integers(0, 3))),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(0, 4))
    grants = tuple(draw(grants_st(i)) for i in range(count))
    until_minutes = draw(st.integers(1, HORIZON_MINUTES))
    until = BASE + timedelta(minutes=until_minutes)
    reset_minutes = draw(st.lists(st.integers(1, until_minutes), max_size=3, unique=True))
    resets = tuple(
        Reset(BASE + timedelta(minutes=m), draw(st.booleans())) for m in sorted(reset_minutes)
    )
    usage = tuple(
        draw(st.lists(st.tuples(minutes(0, until_minutes), st.integers(0, 60).map(D)), max_size=25))
    )
    return Scenario(grants, until, resets, usage)


def _segment_invariants(segment: Segment, grants: tuple[Grant, ...]) -> None:
    by_id = {g.id: g for g in grants}
    used = {u.grant_id: u.usage for u in segment.grant_usages}
    ends = segment.balance_at_end
    assert all(b >= 0 for b in ends.values()), "a balance went negative"
    assert all(by_id[gid].active_at(segment.from_) for gid in used), "inactive grant drawn"
    burnt = sum(used.values(), D(0))
    assert segment.usage + segment.overage_at_start == burnt + segment.overage, "not conserved"
    candidates = sorted(
        (g for g in grants if g.active_at(segment.from_) and segment.balance_at_start[g.id] > 0),
        key=burn_order_key,
    )
    drawn = [g for g in candidates if used.get(g.id, D(0)) > 0]
    assert drawn == candidates[: len(drawn)], "burn order violated"
    assert all(ends[g.id] == 0 for g in drawn[:-1]), "a later grant burnt before exhaustion"
    if segment.overage > 0:
        assert all(ends[g.id] == 0 for g in candidates), "overage while balance remains"


@given(scenarios())
def test_engine_equals_the_naive_minute_by_minute_reference(sc: Scenario) -> None:
    got = sc.run().state
    resets = {r.at: r.preserve_overage for r in sc.resets}
    want = reference_run(sc.grants, BASE, sc.until, resets, sc.per_minute())
    assert dict(got.balances) == want.balances
    assert (got.overage, got.usage_in_period, got.total_grant_usage) == (
        want.overage,
        want.usage_in_period,
        want.total_grant_usage,
    )


@given(scenarios())
def test_segments_conserve_usage_respect_burn_order_and_never_go_negative(
    sc: Scenario,
) -> None:
    result = sc.run()
    for segment in result.segments:
        _segment_invariants(segment, sc.grants)
    carried = D(0)
    for segment in result.segments:
        if segment.termination.rollover:
            carried = segment.overage_at_start
    state = result.state
    assert state.usage_in_period + carried == state.total_grant_usage + state.overage


@given(scenarios())
def test_rollover_lands_within_min_and_max(sc: Scenario) -> None:
    for segment in sc.run().segments:
        if not segment.termination.rollover:
            continue
        at = segment.from_
        for g in sc.grants:
            refilled = g.effective_at == at or g.recurs_at(at)
            if g.active_at(at) and not refilled:
                assert g.min_rollover <= segment.balance_at_start[g.id] <= g.max_rollover


@given(scenarios(), st.randoms(use_true_random=False))
def test_grant_input_order_does_not_matter(sc: Scenario, rnd: random.Random) -> None:
    shuffled = list(sc.grants)
    rnd.shuffle(shuffled)
    assert sc.run(tuple(shuffled)) == sc.run()


@given(scenarios(), st.data())
def test_a_run_resumed_from_any_intermediate_state_equals_one_run(
    sc: Scenario, data: st.DataObject
) -> None:
    whole = sc.run().state
    total = int((sc.until - BASE) / timedelta(minutes=1))
    split = BASE + timedelta(minutes=data.draw(st.integers(0, total)))
    start = starting_state(sc.grants, BASE)
    before = [r for r in sc.resets if r.at <= split]
    after = [r for r in sc.resets if r.at > split]
    first = evaluate(sc.grants, start, split, before, sc.usage_fn).state
    resumed = evaluate(sc.grants, first, sc.until, after, sc.usage_fn).state
    assert resumed == whole


@given(scenarios(), minutes(), st.integers(1, 50))
def test_adding_usage_never_raises_a_balance(sc: Scenario, at: datetime, extra: int) -> None:
    more = Scenario(sc.grants, sc.until, sc.resets, (*sc.usage, (at, D(extra))))
    base_state: EngineState = sc.run().state
    more_state = more.run().state
    for gid, balance in more_state.balances.items():
        assert balance <= base_state.balances[gid]


@given(scenarios(), st.booleans())
def test_a_run_ends_with_its_final_state(sc: Scenario, reset_at_end: bool) -> None:
    """Segments tile ``[start, until]``; the last one ends at ``until`` and shows the final
    balance of every grant still active there; a grant whose activity ends at ``until`` holds 0
    in the state (the expiry-instant rule); a run ending exactly on a reset ends with the
    rollover segment and then the zero-length post-reset segment holding the final state."""
    if reset_at_end and all(r.at != sc.until for r in sc.resets):
        sc = Scenario(sc.grants, sc.until, (*sc.resets, Reset(sc.until, True)), sc.usage)
    result = sc.run()
    segments, state = result.segments, result.state
    assert segments
    assert segments[0].from_ == BASE
    assert all(a.to == b.from_ for a, b in pairwise(segments))
    last = segments[-1]
    assert last.to == sc.until
    ends = last.balance_at_end
    for g in sc.grants:
        if g.active_at(sc.until):
            assert ends[g.id] == state.balances[g.id], g.id
        else:
            assert state.balances[g.id] == 0, g.id
    if any(r.at == sc.until for r in sc.resets):
        rollover, post = segments[-2:]
        assert rollover.termination.rollover
        assert (rollover.from_, rollover.to) == (sc.until, sc.until)
        assert not post.termination.rollover
        assert (post.from_, post.to) == (sc.until, sc.until)
        assert post.balance_at_start == dict(state.balances)
        assert post.overage == state.overage
