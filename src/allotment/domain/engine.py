"""The grant burn-down engine: a pure function of grants, a start state, resets and usage.

No IO, no clock, no logging, ``Decimal`` only (under ``ENGINE_CONTEXT``).

How a caller uses it::

    phases = plan_phases(grants, start, until, resets)      # where usage is needed
    usage  = {(p.from_, p.to): <meter usage in [p.from_, p.to)> for p in phases}
    result = run(grants, start, until, resets, usage, aggregation)

or, with a pure usage function ``usage_fn(period_start, from_, to) -> Decimal``::

    result = evaluate(grants, start, until, resets, usage_fn, aggregation)

``period_start`` is the start of the usage period a phase lies in. SUM and COUNT ignore it;
for UNIQUE_COUNT the caller returns ``uniq(period_start, to) - uniq(period_start, from_)``;
for LATEST the last value in ``[from_, to)`` (grants then act as limits, §5.8).

Model (engine-semantics §5, in our words):

* A run from ``start.at`` to ``until`` is cut into usage periods by the resets. Each period
  is cut into phases at every grant activation, deactivation (expiry, void, delete) and
  recurrence instant. A phase ``[p, q)`` burns ``U(p, q) + overage`` from the grants active
  at ``p`` in burn order; what no grant covers is the new overage (a debt paid by the first
  balance that appears later in the same period).
* **State semantics**: ``EngineState`` at ``t`` includes everything that happens *at* ``t``
  (activations, recurrence refills, a reset at ``t``). A run therefore never re-applies the
  events at ``start.at``, and a run ending at ``until`` applies the refills/activations at
  ``until`` in a final zero-length phase. This makes a run resumed from any intermediate
  state exactly equal to one run (§5.7), at any split point.
* **Segments at the end**: a run that ends exactly on a reset ``R`` ends with the rollover
  segment ``[R, R]`` and then a zero-length segment ``[R, R]`` that reports the post-reset
  state (OpenMeter's "run ending exactly on a reset returns the post-reset state"); so does
  a run of zero length (one ``[t, t]`` segment with the state at ``t``). Every run therefore
  yields at least one segment.
* **A grant at the instant ``E`` its activity ends** (expiry, void, delete) is inactive:
  every state *at* ``E`` holds 0 for it (the final state, a segment or reset at ``E``). What
  it held just before ``E`` expires unused; only the segment that ends at ``E`` shows it, as
  its end balance (start minus usage).
* A reset at ``R``: grants active at ``R`` roll over (``min(max, max(min, balance))``),
  grants not active at ``R`` drop to 0, activations and recurrences at ``R`` are applied
  (so a recurrence at ``R`` refills *after* rollover), and then, when preserving overage,
  the old overage is burnt from the balances of grants **active at R** (W6 fix); any
  remainder opens the new period as overage. Without preservation the overage is forgiven.
* Invariant: a state's ``overage > 0`` implies every active grant's balance is 0.
* Negative usage (a SUM meter with negative values) can pay down overage but never raises a
  balance: a negative demand burns nothing and leaves overage 0.
* LATEST: every active grant is reset to its amount at each phase start. Runs with LATEST
  are not resumable at arbitrary points (a "last value" cannot be split); do not snapshot.

About 500 lines on purpose (a tenth of them this model): the planner (``plan_phases``) and
the run (``run``, ``evaluate``) share one private timeline of events, phases and reset steps,
and the run's state semantics are only right if both cut time at the same instants; split,
each half would have to export that timeline. Its callers' arithmetic on top (value, history)
lives in ``domain/entitlement_math.py``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from decimal import Decimal as Dec
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType

from allotment.domain.errors import InvariantViolation, check
from allotment.domain.grants import Grant, in_burn_order, rollover_balance
from allotment.domain.periods import check_walk, iter_boundaries, periods_spanned
from allotment.domain.timeutil import floor_minute

ENGINE_CONTEXT = Context(
    prec=60, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow]
)
"""Additions and subtractions are exact for values of up to 60 significant digits."""
ZERO = Dec(0)


class Aggregation(StrEnum):
    SUM = "SUM"
    COUNT = "COUNT"
    UNIQUE_COUNT = "UNIQUE_COUNT"
    LATEST = "LATEST"


class BurnReason(StrEnum):
    GRANT_EXHAUSTED = "GRANT_EXHAUSTED"
    SEGMENT_TERMINATION = "SEGMENT_TERMINATION"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineState:
    """The complete engine state at ``at`` (a snapshot). ``period_start`` is the start of the
    usage period containing ``at`` (needed for UNIQUE_COUNT and as ``startOfPeriod``).

    Invariants: minute-aligned UTC instants, ``period_start <= at``, every balance >= 0,
    ``overage >= 0``, ``total_grant_usage >= 0``.
    """

    at: datetime
    period_start: datetime
    balances: Mapping[str, Dec]
    overage: Dec = ZERO
    usage_in_period: Dec = ZERO
    total_grant_usage: Dec = ZERO

    def __post_init__(self) -> None:
        object.__setattr__(self, "balances", MappingProxyType(dict(self.balances)))
        check(floor_minute(self.at) == self.at, f"state time {self.at} not on a minute")
        check(self.period_start <= self.at, "state period_start after its time")
        check(all(b >= 0 for b in self.balances.values()), "negative grant balance in state")
        check(self.overage >= 0, "negative overage in state")
        check(self.total_grant_usage >= 0, "negative total grant usage in state")


def starting_state(grants: Sequence[Grant], at: datetime) -> EngineState:
    """The fresh state at the start of measurement: ``amount`` for grants active at ``at``,
    0 for the rest, no usage and no overage; ``at`` starts a usage period."""
    balances = {g.id: (g.amount if g.active_at(at) else ZERO) for g in grants}
    return EngineState(at=at, period_start=at, balances=balances)


@dataclass(frozen=True, slots=True)
class Reset:
    at: datetime
    preserve_overage: bool = False


@dataclass(frozen=True, slots=True)
class Phase:
    """A half-open time range ``[from_, to)`` over which usage is burnt in one step."""

    period_start: datetime
    from_: datetime
    to: datetime


@dataclass(frozen=True, slots=True)
class GrantUsage:
    grant_id: str
    usage: Dec
    reason: BurnReason


@dataclass(frozen=True, slots=True)
class TerminationReasons:
    """Why a segment ends. ``priority_change``: a grant activates or deactivates at its end;
    ``recurrence``: grants that refill at its end; ``usage_reset``: a reset follows;
    ``rollover``: the segment *is* the zero-length reset transition."""

    priority_change: bool = False
    recurrence: tuple[str, ...] = ()
    usage_reset: bool = False
    rollover: bool = False


@dataclass(frozen=True, slots=True)
class Segment:
    """One phase, or one zero-length reset transition (``termination.rollover``).

    ``balance_at_start`` holds every grant's balance after the events at ``from_`` were
    applied; ``overage_at_start`` is the debt carried into the segment (or, for a rollover,
    the preserved overage); ``usage`` is the metered usage in ``[from_, to)``.
    """

    period_start: datetime
    from_: datetime
    to: datetime
    balance_at_start: Mapping[str, Dec]
    overage_at_start: Dec
    usage: Dec
    overage: Dec
    grant_usages: tuple[GrantUsage, ...]
    termination: TerminationReasons = field(default_factory=TerminationReasons)

    @property
    def balance_at_end(self) -> dict[str, Dec]:
        ends = dict(self.balance_at_start)
        for used in self.grant_usages:
            ends[used.grant_id] -= used.usage
        return ends


@dataclass(frozen=True, slots=True)
class RunResult:
    state: EngineState
    segments: tuple[Segment, ...]


UsageInput = Mapping[tuple[datetime, datetime], Dec] | Callable[[Phase], Dec]
UsageFn = Callable[[datetime, datetime, datetime], Dec]
"""``usage_fn(period_start, from_, to)``: usage to burn for the phase ``[from_, to)``."""


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PhaseStep:
    """``opens``: the phase opens (inactive grants drop to 0, activations/refills when
    ``apply_events``, LATEST limits). The zero-length report of a run that ends on a reset
    (or has zero length) does not: it shows the state as it stands."""

    phase: Phase
    apply_events: bool
    ends_period: bool
    opens: bool = True


@dataclass(frozen=True, slots=True)
class _ResetStep:
    reset: Reset


@dataclass(frozen=True, slots=True)
class _Events:
    """Instants at which grants activate, deactivate or refill (recurrence)."""

    activations: dict[datetime, set[str]]
    deactivations: dict[datetime, set[str]]
    refills: dict[datetime, set[str]]

    def boundaries(self) -> set[datetime]:
        return set(self.activations) | set(self.deactivations) | set(self.refills)

    def raises_balance_at(self, at: datetime) -> bool:
        return bool(self.activations.get(at) or self.refills.get(at))


def _collect_events(grants: Sequence[Grant], start: datetime, until: datetime) -> _Events:
    """Bounded: all recurrences together walk at most ``limits.ENGINE_PERIODS_MAX`` periods."""
    walked = 0
    for g in grants:
        if g.recurrence is not None:
            last = until if g.end is None else min(until, g.end)
            walked += periods_spanned(g.recurrence.interval, max(start, g.effective_at), last)
    check_walk(walked, start, until)
    events = _Events({}, {}, {})
    for g in grants:
        end = g.end
        if end is not None and end <= g.effective_at:
            continue  # never active
        if start <= g.effective_at <= until:
            events.activations.setdefault(g.effective_at, set()).add(g.id)
        if end is not None and start <= end <= until:
            events.deactivations.setdefault(end, set()).add(g.id)
        if g.recurrence is not None:
            last = until if end is None else min(until, end)
            for instant in iter_boundaries(g.recurrence, max(start, g.effective_at), last):
                if g.active_at(instant):
                    events.refills.setdefault(instant, set()).add(g.id)
    return events


def _validate_run(start: EngineState, until: datetime, resets: Sequence[Reset]) -> None:
    check(floor_minute(until) == until, f"run end {until} not on a minute")
    check(start.at <= until, f"run end {until} before its start {start.at}")
    previous = start.at
    for reset in resets:
        check(floor_minute(reset.at) == reset.at, f"reset {reset.at} not on a minute")
        check(previous < reset.at <= until, f"reset {reset.at} out of order or range")
        previous = reset.at


def _plan(
    grants: Sequence[Grant], start: EngineState, until: datetime, resets: Sequence[Reset]
) -> tuple[list[_PhaseStep | _ResetStep], _Events]:
    _validate_run(start, until, resets)
    events = _collect_events(grants, start.at, until)
    boundaries = sorted(events.boundaries())
    cuts = [start.at, *(r.at for r in resets), until]
    steps: list[_PhaseStep | _ResetStep] = []
    period_start = start.period_start
    for i, (a, b) in enumerate(pairwise(cuts)):
        final = i == len(cuts) - 2
        inner = boundaries[bisect_right(boundaries, a) : bisect_left(boundaries, b)]
        points = [a, *inner, b] if a < b else [a]
        for p, q in pairwise(points):
            steps.append(_PhaseStep(Phase(period_start, p, q), p != a, q == b and not final))
        if final and a < b and events.raises_balance_at(b):
            steps.append(_PhaseStep(Phase(period_start, b, b), True, False))
        elif final and a == b:  # a run ending on a reset, or of zero length: report [b, b]
            steps.append(_PhaseStep(Phase(period_start, b, b), False, False, opens=False))
        if not final:
            steps.append(_ResetStep(resets[i]))
            period_start = b
    return steps, events


def plan_phases(
    grants: Sequence[Grant], start: EngineState, until: datetime, resets: Sequence[Reset]
) -> list[Phase]:
    """The phases (``from_ < to``) whose usage ``run`` needs, in time order."""
    steps, _ = _plan(grants, start, until, resets)
    return [s.phase for s in steps if isinstance(s, _PhaseStep) and s.phase.from_ < s.phase.to]


# --------------------------------------------------------------------------------------------
# Burning
# --------------------------------------------------------------------------------------------


def _burn(
    ordered: Sequence[Grant], balances: dict[str, Dec], at: datetime, demand: Dec
) -> tuple[list[GrantUsage], Dec]:
    """Burn ``demand`` from grants active at ``at`` in burn order (mutates ``balances``).

    Returns the usages and the uncovered remainder (>= 0). A negative demand burns nothing.
    """
    usages: list[GrantUsage] = []
    remaining = max(demand, ZERO)
    for g in ordered:
        balance = balances[g.id]
        if balance == 0 or not g.active_at(at):
            continue
        if balance <= remaining:
            used, reason = balance, BurnReason.GRANT_EXHAUSTED
        else:
            used, reason = remaining, BurnReason.SEGMENT_TERMINATION
        balances[g.id] = balance - used
        remaining -= used
        usages.append(GrantUsage(g.id, used, reason))
    return usages, remaining


def _open_phase(
    ordered: Sequence[Grant],
    balances: dict[str, Dec],
    at: datetime,
    events: _Events | None,
    aggregation: Aggregation,
) -> None:
    """Set balances for a phase starting at ``at`` (mutates): inactive grants drop to 0;
    when ``events`` is given, grants activating or refilling at ``at`` start at ``amount``;
    under LATEST every active grant starts at ``amount``."""
    fresh: set[str] = set()
    if events is not None:
        fresh = events.activations.get(at, set()) | events.refills.get(at, set())
    for g in ordered:
        if not g.active_at(at):
            balances[g.id] = ZERO
        elif g.id in fresh or aggregation is Aggregation.LATEST:
            balances[g.id] = g.amount


def _complete_balances(ordered: Sequence[Grant], start: EngineState) -> dict[str, Dec]:
    """Every grant's starting balance; grants missing from the state are seeded like a fresh
    start (``amount`` if active at ``start.at``, else 0). Unknown ids are a caller bug."""
    known = {g.id for g in ordered}
    unknown = set(start.balances) - known
    check(not unknown, f"state has balances for unknown grants {sorted(unknown)}")
    return {
        g.id: start.balances.get(g.id, g.amount if g.active_at(start.at) else ZERO) for g in ordered
    }


def _usage_of(usage: UsageInput, phase: Phase) -> Dec:
    if phase.from_ == phase.to:
        return ZERO
    if callable(usage):
        value = usage(phase)
    else:
        key = (phase.from_, phase.to)
        if key not in usage:
            raise InvariantViolation(f"no usage given for phase {phase.from_}..{phase.to}")
        value = usage[key]
    check(isinstance(value, Dec) and value.is_finite(), "usage must be a finite Decimal")
    return value


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cursor:
    balances: dict[str, Dec]
    overage: Dec
    usage_in_period: Dec
    total_grant_usage: Dec
    period_start: datetime


def _run_phase(
    ordered: Sequence[Grant],
    cur: _Cursor,
    step: _PhaseStep,
    events: _Events,
    usage: UsageInput,
    aggregation: Aggregation,
) -> Segment:
    phase = step.phase
    if step.opens:
        _open_phase(
            ordered, cur.balances, phase.from_, events if step.apply_events else None, aggregation
        )
    at_start = dict(cur.balances)
    overage_at_start = cur.overage
    used_now = _usage_of(usage, phase)
    usages, cur.overage = _burn(ordered, cur.balances, phase.from_, used_now + cur.overage)
    cur.usage_in_period += used_now
    cur.total_grant_usage += sum((u.usage for u in usages), ZERO)
    end = phase.to
    reasons = TerminationReasons(
        priority_change=bool(events.activations.get(end) or events.deactivations.get(end))
        and phase.from_ < end,
        recurrence=tuple(sorted(events.refills.get(end, set()))) if phase.from_ < end else (),
        usage_reset=step.ends_period,
    )
    return Segment(
        phase.period_start, phase.from_, end, at_start, overage_at_start, used_now,
        cur.overage, tuple(usages), reasons,
    )  # fmt: skip


def _run_reset(
    ordered: Sequence[Grant],
    cur: _Cursor,
    reset: Reset,
    events: _Events,
    aggregation: Aggregation,
) -> Segment:
    at = reset.at
    for g in ordered:
        if g.active_at(at):
            cur.balances[g.id] = rollover_balance(g, cur.balances[g.id])
    _open_phase(ordered, cur.balances, at, events, aggregation)
    at_start = dict(cur.balances)
    carry = cur.overage if reset.preserve_overage else ZERO
    usages, cur.overage = _burn(ordered, cur.balances, at, carry)
    cur.usage_in_period = ZERO
    cur.total_grant_usage = sum((u.usage for u in usages), ZERO)
    cur.period_start = at
    reasons = TerminationReasons(rollover=True)
    return Segment(at, at, at, at_start, carry, ZERO, cur.overage, tuple(usages), reasons)


def run(
    grants: Sequence[Grant],
    start: EngineState,
    until: datetime,
    resets: Sequence[Reset],
    usage: UsageInput,
    aggregation: Aggregation = Aggregation.SUM,
) -> RunResult:
    """Burn usage down from ``start`` to ``until`` (both minute-aligned).

    ``resets`` must be ascending with ``start.at < r.at <= until``. ``usage`` maps
    ``(from_, to)`` of every phase from ``plan_phases`` to its usage, or is a function of the
    ``Phase``. Grants missing from ``start.balances`` are seeded (``amount`` if active at
    ``start.at``, else 0). The result does not depend on the order of ``grants``.
    """
    ids = [g.id for g in grants]
    check(len(ids) == len(set(ids)), "duplicate grant ids")
    with localcontext(ENGINE_CONTEXT):
        ordered = in_burn_order(list(grants))
        steps, events = _plan(ordered, start, until, resets)
        cur = _Cursor(
            _complete_balances(ordered, start), start.overage, start.usage_in_period,
            start.total_grant_usage, start.period_start,
        )  # fmt: skip
        segments: list[Segment] = []
        for step in steps:
            if isinstance(step, _ResetStep):
                segments.append(_run_reset(ordered, cur, step.reset, events, aggregation))
            else:
                segments.append(_run_phase(ordered, cur, step, events, usage, aggregation))
        for g in ordered:  # canonical final state: grants inactive at ``until`` hold 0
            if not g.active_at(until):
                cur.balances[g.id] = ZERO
        state = EngineState(
            until, cur.period_start, cur.balances, cur.overage, cur.usage_in_period,
            cur.total_grant_usage,
        )  # fmt: skip
    return RunResult(state, tuple(segments))


def evaluate(
    grants: Sequence[Grant],
    start: EngineState,
    until: datetime,
    resets: Sequence[Reset],
    usage_fn: UsageFn,
    aggregation: Aggregation = Aggregation.SUM,
) -> RunResult:
    """``run`` with a pure ``usage_fn(period_start, from_, to) -> Decimal``."""

    def per_phase(phase: Phase) -> Dec:
        return usage_fn(phase.period_start, phase.from_, phase.to)

    return run(grants, start, until, resets, per_phase, aggregation)
