"""Metered-entitlement arithmetic on top of the engine: value, history, validations.

Pure functions; the service layer loads rows, calls these, and maps results to the wire.

Usage functions the caller provides (all return ``Decimal``):

* ``usage_fn(period_start, from_, to)``: the usage the engine burns for ``[from_, to)``.
  SUM/COUNT: the meter's aggregate over ``[from_, to)``. UNIQUE_COUNT:
  ``uniq(period_start, to) - uniq(period_start, from_)`` (``uniq(a, a) = 0``). LATEST: the
  last value in ``[from_, to)`` (0 when there is none). Only events at or after
  ``measureUsageFrom`` may count; the engine never asks for earlier ranges.
* ``window_usage_fn(from_, to)``: the meter's own value for one history window.

``required_usage_range`` tells the service which time range ``usage_fn`` may be asked about,
so it can fetch minute buckets once and answer from memory.

Longer than ~500 lines on purpose: value, validations and history all work on the same spec,
timeline and reset helpers, and callers use them through this one module (``em.``).
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from allotment.domain import limits
from allotment.domain.engine import (
    ENGINE_CONTEXT,
    Aggregation,
    EngineState,
    Phase,
    Reset,
    Segment,
    UsageFn,
    UsageInput,
    evaluate,
    plan_phases,
    run,
    starting_state,
)
from allotment.domain.errors import InvalidInput, InvariantViolation, LimitExceeded, check
from allotment.domain.grants import DEFAULT_ISSUE_AFTER_RESET_PRIORITY, Grant
from allotment.domain.periods import (
    Period,
    Recurrence,
    UsagePeriodInput,
    UsagePeriodTimeline,
    parse_interval,
    period_at,
    validate_usage_period_interval,
)
from allotment.domain.timeutil import ceil_minute, floor_minute, format_rfc3339

ZERO = Decimal(0)
WindowUsageFn = Callable[[datetime, datetime], Decimal]


# --------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeteredSpec:
    """What the engine needs to know about a metered entitlement.

    ``usage_period`` is input 0 of the timeline (the API's ``usagePeriod``); its anchor and
    ``measure_usage_from`` are minute-aligned UTC.
    """

    usage_period: Recurrence
    measure_usage_from: datetime
    is_soft_limit: bool = False
    preserve_overage_at_reset: bool = False
    issue_after_reset: Decimal | None = None
    issue_after_reset_priority: int = DEFAULT_ISSUE_AFTER_RESET_PRIORITY
    aggregation: Aggregation = Aggregation.SUM


@dataclass(frozen=True, slots=True)
class ManualReset:
    """A persisted reset. ``preserve_overage`` is stored resolved (fixes OpenMeter's W4)."""

    at: datetime
    retain_anchor: bool = False
    preserve_overage: bool = False


def make_usage_period(interval: str, anchor: datetime | None, now: datetime) -> Recurrence:
    """Parse ``usagePeriod``: interval >= 1 hour; the anchor defaults to now; floored."""
    duration = parse_interval(interval, field="usagePeriod.interval")
    validate_usage_period_interval(duration)
    return Recurrence(duration, floor_minute((anchor or now).astimezone(UTC)))


def resolve_measure_usage_from(
    value: datetime | str | None, usage_period: Recurrence, now: datetime
) -> datetime:
    """``NOW`` (the default), ``CURRENT_PERIOD_START`` or a time; always floored (§3.5)."""
    if isinstance(value, datetime):
        return floor_minute(value.astimezone(UTC))
    if value is None or value == "NOW":
        return floor_minute(now)
    if value == "CURRENT_PERIOD_START":
        return floor_minute(period_at(usage_period, now).start)
    raise InvalidInput(
        "measureUsageFrom must be NOW, CURRENT_PERIOD_START or a date-time",
        field="measureUsageFrom",
    )


def validate_issue_after_reset(amount: Decimal | None, priority: int | None) -> None:
    if amount is not None and (not amount.is_finite() or amount < 0):
        raise InvalidInput("issueAfterReset must be >= 0", field="issueAfterReset")
    if priority is not None and amount is None:
        raise InvalidInput(
            "IssueAfterResetPriority requires IssueAfterReset", field="issueAfterResetPriority"
        )
    if priority is not None and not 1 <= priority <= 255:
        raise InvalidInput(
            "issueAfterResetPriority must be between 1 and 255", field="issueAfterResetPriority"
        )


@dataclass(frozen=True, slots=True)
class DefaultGrantParams:
    """Parameters of the grant created by ``issueAfterReset`` (§7)."""

    amount: Decimal
    priority: int
    effective_at: datetime
    min_rollover: Decimal
    max_rollover: Decimal
    expires_at: None = None
    recurrence: None = None
    annotations: Mapping[str, bool] = field(default_factory=lambda: {"issueAfterReset": True})


def default_grant_params(spec: MeteredSpec) -> DefaultGrantParams | None:
    """The default grant, or None when ``issueAfterReset`` is unset or 0. It starts at
    ``measureUsageFrom`` and refills to ``amount`` at every reset (min = max = amount)."""
    amount = spec.issue_after_reset
    if amount is None or amount <= 0:
        return None
    return DefaultGrantParams(
        amount, spec.issue_after_reset_priority, spec.measure_usage_from, amount, amount
    )


# --------------------------------------------------------------------------------------------
# Timeline and resets
# --------------------------------------------------------------------------------------------


def timeline(spec: MeteredSpec, manual_resets: Sequence[ManualReset]) -> UsagePeriodTimeline:
    """Input 0 from the spec, then one input per manual reset, in time order."""
    result = UsagePeriodTimeline((UsagePeriodInput(spec.measure_usage_from, spec.usage_period),))
    for reset in sorted(manual_resets, key=lambda r: r.at):
        result = result.with_reset(reset.at, reset.retain_anchor)
    return result


def last_reset(spec: MeteredSpec, manual_resets: Sequence[ManualReset]) -> datetime:
    """Newest persisted reset, else ``measureUsageFrom`` (§3.6)."""
    return max((r.at for r in manual_resets), default=spec.measure_usage_from)


def engine_resets(
    spec: MeteredSpec, manual_resets: Sequence[ManualReset], after: datetime, until: datetime
) -> list[Reset]:
    """Programmatic and manual resets in ``(after, until]`` with their preserve flags."""
    manual = {r.at: r.preserve_overage for r in manual_resets}
    instants = timeline(spec, manual_resets).resets_between(after, until)
    return [Reset(r, manual.get(r, spec.preserve_overage_at_reset)) for r in instants]


# --------------------------------------------------------------------------------------------
# Value at a time (§6)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeteredValue:
    has_access: bool
    balance: Decimal
    usage: Decimal
    overage: Decimal
    total_available_grant_amount: Decimal
    grant_balances: Mapping[str, Decimal]
    start_of_period: datetime
    state: EngineState
    """The engine state at the (rounded-up) read time: a snapshot candidate."""


@dataclass(frozen=True, slots=True)
class ValuePlan:
    """Everything the service needs to fetch before computing a value."""

    at: datetime
    start: EngineState
    resets: tuple[Reset, ...]
    phases: tuple[Phase, ...]
    usage_range: Period


def _start_state(
    spec: MeteredSpec, grants: Sequence[Grant], start_state: EngineState | None, at: datetime
) -> EngineState:
    if start_state is None:
        return starting_state(grants, spec.measure_usage_from)
    if start_state.at > at or start_state.at < spec.measure_usage_from:
        raise InvariantViolation("snapshot must lie between measureUsageFrom and the read time")
    return start_state


def _usage_range(spec: MeteredSpec, start: EngineState, until: datetime) -> Period:
    if spec.aggregation is Aggregation.UNIQUE_COUNT:
        return Period(start.period_start, until)
    return Period(start.at, until)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _under_engine_context(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` under the engine's 60-digit decimal context (the default keeps 28)."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(ENGINE_CONTEXT):
            return fn(*args, **kwargs)

    return wrapper


def plan_value(
    spec: MeteredSpec,
    grants: Sequence[Grant],
    manual_resets: Sequence[ManualReset],
    at: datetime,
    start_state: EngineState | None = None,
) -> ValuePlan:
    """Round ``at`` up to the minute and plan the engine run that answers it."""
    until = ceil_minute(at)
    if until < spec.measure_usage_from:
        before = starting_state(grants, until)
        return ValuePlan(until, before, (), (), Period(until, until))
    start = _start_state(spec, grants, start_state, until)
    resets = tuple(engine_resets(spec, manual_resets, start.at, until))
    phases = tuple(plan_phases(grants, start, until, resets))
    return ValuePlan(until, start, resets, phases, _usage_range(spec, start, until))


def required_usage_range(
    spec: MeteredSpec,
    grants: Sequence[Grant],
    manual_resets: Sequence[ManualReset],
    at: datetime,
    start_state: EngineState | None = None,
) -> Period:
    """The ``[from, to)`` range of events that ``metered_value`` may ask ``usage_fn`` about."""
    return plan_value(spec, grants, manual_resets, at, start_state).usage_range


def _value_of(
    spec: MeteredSpec, grants: Sequence[Grant], state: EngineState, at: datetime
) -> MeteredValue:
    active = {g.id: state.balances.get(g.id, ZERO) for g in grants if g.active_at(at)}
    with localcontext(ENGINE_CONTEXT):  # 60 digits, as inside the engine
        balance = sum(active.values(), ZERO)
        total_available = state.total_grant_usage + balance
    return MeteredValue(
        has_access=spec.is_soft_limit or balance > 0,
        balance=balance,
        usage=state.usage_in_period,
        overage=state.overage,
        total_available_grant_amount=total_available,
        grant_balances=active,
        start_of_period=max(state.period_start, spec.measure_usage_from),
        state=state,
    )


def value_from_usage(
    spec: MeteredSpec, grants: Sequence[Grant], plan: ValuePlan, usage: UsageInput
) -> MeteredValue:
    """Finish a ``plan_value``: ``usage`` maps each planned phase's ``(from_, to)``."""
    result = run(grants, plan.start, plan.at, plan.resets, usage, spec.aggregation)
    return _value_of(spec, grants, result.state, plan.at)


def metered_value(
    spec: MeteredSpec,
    grants: Sequence[Grant],
    manual_resets: Sequence[ManualReset],
    at: datetime,
    usage_fn: UsageFn,
    start_state: EngineState | None = None,
) -> MeteredValue:
    """The entitlement value at ``at`` (§6). The caller checks entitlement activity first.

    ``hasAccess = isSoftLimit or balance > 0``; ``balance`` sums grants active at the
    rounded-up time (a grant expiring exactly then is excluded);
    ``totalAvailableGrantAmount = totalGrantUsage + balance``. ``start_state`` is an optional
    snapshot at or before ``at``; it changes cost, never the result.
    """
    plan = plan_value(spec, grants, manual_resets, at, start_state)

    def per_phase(phase: Phase) -> Decimal:
        return usage_fn(phase.period_start, phase.from_, phase.to)

    return value_from_usage(spec, grants, plan, per_phase)


# --------------------------------------------------------------------------------------------
# Validations (§4.1, §4.3, §8)
# --------------------------------------------------------------------------------------------


def current_period_start(
    spec: MeteredSpec, manual_resets: Sequence[ManualReset], now: datetime
) -> datetime:
    return timeline(spec, manual_resets).current_usage_period(now).start


def validate_grant_effective_at(
    spec: MeteredSpec, manual_resets: Sequence[ManualReset], effective_at: datetime, now: datetime
) -> datetime:
    """Floor ``effectiveAt``; it must not precede the current usage period (at now)."""
    floored = floor_minute(effective_at.astimezone(UTC))
    if floored < current_period_start(spec, manual_resets, now):
        raise InvalidInput(
            "grant effective date is before the current usage period", field="effectiveAt"
        )
    return floored


def validate_void(
    grant: Grant,
    at: datetime | None,
    now: datetime,
    spec: MeteredSpec,
    manual_resets: Sequence[ManualReset],
) -> datetime:
    """The minute at which the grant stops being active (§4.3)."""
    if grant.voided_at is not None:
        raise InvalidInput("grant already voided")
    void_at = (at or now).astimezone(UTC)
    if void_at > now:
        raise InvalidInput("cannot void a grant in the future", field="at")
    floored = floor_minute(void_at)
    if floored < current_period_start(spec, manual_resets, now):
        raise InvalidInput("void time is before the current usage period start", field="at")
    return floored


def validate_reset(
    spec: MeteredSpec,
    manual_resets: Sequence[ManualReset],
    now: datetime,
    effective_at: datetime | None = None,
    retain_anchor: bool = False,
    preserve_overage: bool | None = None,
) -> ManualReset:
    """Check a reset request (§8) and return the reset to persist, flags resolved."""
    requested = (effective_at or now).astimezone(UTC)
    at = floor_minute(requested)
    if at == floor_minute(last_reset(spec, manual_resets)):
        raise InvalidInput(
            f"reset at {format_rfc3339(at)} must be after last reset", field="effectiveAt"
        )
    if requested > now:
        raise InvalidInput(
            f"cannot reset at {format_rfc3339(at)} in the future", field="effectiveAt"
        )
    if at < current_period_start(spec, manual_resets, now):
        raise InvalidInput(
            f"reset at {format_rfc3339(at)} is before current usage period start",
            field="effectiveAt",
        )
    later = timeline(spec, manual_resets).resets_between(at, floor_minute(now))
    if later:
        raise InvalidInput(
            f"reset at {format_rfc3339(at)} is before last reset at {format_rfc3339(later[-1])}",
            field="effectiveAt",
        )
    preserve = spec.preserve_overage_at_reset if preserve_overage is None else preserve_overage
    return ManualReset(at, retain_anchor, preserve)


# --------------------------------------------------------------------------------------------
# History (§10)
# --------------------------------------------------------------------------------------------


class WindowSize(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"
    MONTH = "MONTH"


@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """One window; ``from_``/``to`` are expressed in the requested time zone."""

    from_: datetime
    to: datetime
    usage: Decimal
    balance_at_start: Decimal


@dataclass(frozen=True, slots=True)
class BurndownItem:
    from_: datetime
    to: datetime
    usage: Decimal
    overage: Decimal
    balance_at_start: Decimal
    grant_balances_at_start: Mapping[str, Decimal]
    balance_at_end: Decimal
    grant_balances_at_end: Mapping[str, Decimal]
    grant_usages: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class History:
    windowed: tuple[HistoryWindow, ...]
    burndown: tuple[BurndownItem, ...]


def _window_floor(at: datetime, size: WindowSize, tz: ZoneInfo) -> datetime:
    local = at.astimezone(tz)
    if size is WindowSize.MINUTE:
        return floor_minute(at)
    if size is WindowSize.HOUR:
        return local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    if size is WindowSize.DAY:
        return datetime(local.year, local.month, local.day, tzinfo=tz).astimezone(UTC)
    return datetime(local.year, local.month, 1, tzinfo=tz).astimezone(UTC)


def _window_next(start: datetime, size: WindowSize, tz: ZoneInfo) -> datetime:
    if size is WindowSize.MINUTE:
        return start + timedelta(minutes=1)
    if size is WindowSize.HOUR:
        return start + timedelta(hours=1)
    local = start.astimezone(tz)
    if size is WindowSize.DAY:
        day = local.date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=tz).astimezone(UTC)


def history_windows(start: datetime, to: datetime, size: WindowSize, tz: ZoneInfo) -> list[Period]:
    """Windows on ``tz``'s wall clock (UTC instants) covering ``[start, to)``: the first runs
    from ``start`` itself to the next window boundary (a partial window is **clipped**, not
    dropped), the others are whole windows, and the last is the one that reaches ``to``.
    No window when ``start >= to``. At most ``limits.HISTORY_WINDOWS_MAX`` windows, else
    ``LimitExceeded``."""
    windows: list[Period] = []
    begin, end = start, _window_next(_window_floor(start, size, tz), size, tz)
    while begin < to:
        windows.append(Period(begin, end))
        if len(windows) > limits.HISTORY_WINDOWS_MAX:
            raise LimitExceeded(
                f"history would have more than {limits.HISTORY_WINDOWS_MAX} windows "
                "(HISTORY_WINDOWS_MAX)"
            )
        begin, end = end, _window_next(end, size, tz)
    return windows


def _burndown_item(segment: Segment, grants: Sequence[Grant]) -> BurndownItem:
    shown = [g.id for g in grants if g.active_at(segment.from_)]
    at_start = {gid: segment.balance_at_start.get(gid, ZERO) for gid in shown}
    ends = segment.balance_at_end
    at_end = {gid: ends.get(gid, ZERO) for gid in shown}
    usages: dict[str, Decimal] = {}
    for used in segment.grant_usages:
        usages[used.grant_id] = usages.get(used.grant_id, ZERO) + used.usage
    return BurndownItem(
        segment.from_, segment.to, segment.usage, segment.overage,
        sum(at_start.values(), ZERO), at_start, sum(at_end.values(), ZERO), at_end, usages,
    )  # fmt: skip


def _balance_at(
    segments: Sequence[Segment],
    starts: Sequence[datetime],
    grants: Sequence[Grant],
    at: datetime,
    usage_fn: UsageFn,
) -> Decimal:
    """Exact total balance at ``at`` inside the last segment starting at or before it: the
    segment's active balance minus what its demand (carried overage + usage so far) took."""
    index = bisect_right(starts, at) - 1
    check(index >= 0, f"no burn-down segment covers {at}")
    segment = segments[index]
    total = sum(
        (segment.balance_at_start[g.id] for g in grants if g.active_at(segment.from_)), ZERO
    )
    so_far = usage_fn(segment.period_start, segment.from_, at) if segment.from_ < at else ZERO
    demand = max(segment.overage_at_start + so_far, ZERO)
    return max(total - demand, ZERO)


@_under_engine_context
def history(
    spec: MeteredSpec,
    grants: Sequence[Grant],
    manual_resets: Sequence[ManualReset],
    from_: datetime,
    to: datetime,
    window_size: WindowSize,
    tz: ZoneInfo,
    usage_fn: UsageFn,
    window_usage_fn: WindowUsageFn,
    start_state: EngineState | None = None,
) -> History:
    """The history over ``[s, e]`` (§10) where ``s = max(floor_minute(from_),
    measureUsageFrom)`` and ``e = ceil_minute(to)``; all arithmetic under the engine's
    60-digit context.

    * burn-down: the segments of the engine's run from the state at ``s`` to ``e`` (at least
      one, also when ``s == e``);
    * windowed: the windows of ``history_windows(s, e)`` (the first clipped at ``s``), each
      with ``window_usage_fn`` over it and the exact total balance at its start.

    Both cover the same span, so for SUM and COUNT their usages each sum to the meter's
    usage over ``[s, e)``.
    """
    start_at, end_at = floor_minute(from_.astimezone(UTC)), ceil_minute(to.astimezone(UTC))
    if start_at < spec.measure_usage_from:
        raise InvalidInput("from must not be before measureUsageFrom", field="from")
    if end_at < start_at:
        raise InvalidInput("from must not be after to", field="from")
    run_start = max(start_at, spec.measure_usage_from)
    windows = history_windows(run_start, end_at, window_size, tz)
    start = _start_state(spec, grants, start_state, run_start)
    resets_before = engine_resets(spec, manual_resets, start.at, run_start)
    before = evaluate(grants, start, run_start, resets_before, usage_fn, spec.aggregation)
    resets = engine_resets(spec, manual_resets, run_start, end_at)
    result = evaluate(grants, before.state, end_at, resets, usage_fn, spec.aggregation)
    segments = [s for s in result.segments if s.from_ < s.to or s.termination.rollover]
    starts = [s.from_ for s in segments]
    windowed = tuple(
        HistoryWindow(
            w.start.astimezone(tz),
            w.end.astimezone(tz),
            window_usage_fn(w.start, w.end),
            _balance_at(segments, starts, grants, w.start, usage_fn),
        )
        for w in windows
    )
    burndown = tuple(_burndown_item(s, grants) for s in result.segments)
    return History(windowed, burndown)
