"""Durations, calendar arithmetic, recurrences and the usage-period timeline.

All instants are aware UTC datetimes; all calendar arithmetic runs on the UTC wall clock.

Two kinds of month arithmetic exist, on purpose (engine-semantics §3.3 and §4.1):

* ``add_clamped`` (usage periods and grant recurrences): years and months clamp the day of
  month to the last day of the target month: Jan 31 + P1M = Feb 28/29.
* ``add_overflowing`` (grant ``expiresAt`` only): the day overflows into the next month, the
  way Go's ``time.AddDate`` normalises: 2024-01-31 + 1 MONTH = 2024-03-02. OpenMeter computes
  expiry this way and clients can observe ``expiresAt``, so we keep it.

Boundaries of a recurrence are always computed from the anchor (``anchor + n × interval``),
never by stepping from the previous boundary, so there is no drift.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from allotment.domain import limits
from allotment.domain.errors import InvalidInput, LimitExceeded, check
from allotment.domain.timeutil import format_rfc3339

# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Duration:
    """A whole-number ISO-8601 duration. Components are kept as given (P1W is not P7D)."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def is_positive(self) -> bool:
        parts = (self.years, self.months, self.weeks, self.days, self.hours, self.minutes)
        return all(p >= 0 for p in (*parts, self.seconds)) and any((*parts, self.seconds))

    def has_calendar_part(self) -> bool:
        return bool(self.years or self.months or self.weeks or self.days)

    def fixed_part(self) -> timedelta:
        """The part that is an exact amount of time (hours, minutes, seconds)."""
        return timedelta(hours=self.hours, minutes=self.minutes, seconds=self.seconds)

    def approximate(self) -> timedelta:
        """A rough length (average month and year) used only to guess a boundary index."""
        hours = self.years * 8766 + self.months * 730  # 365.25 and ~30.44 days
        return timedelta(hours=hours, days=self.weeks * 7 + self.days) + self.fixed_part()


P1D = Duration(days=1)
P1W = Duration(weeks=1)
P1M = Duration(months=1)
P1Y = Duration(years=1)
PT1H = Duration(hours=1)

_ENUM_TO_DURATION: dict[str, Duration] = {"DAY": P1D, "WEEK": P1W, "MONTH": P1M, "YEAR": P1Y}

_ISO_DURATION = re.compile(
    r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
_FRACTIONAL = re.compile(r"\d[.,]\d*[YMWDHS]|[.,]\d+[YMWDHS]")


_INTERVAL_MAX = timedelta(hours=limits.INTERVAL_YEARS_MAX * 8766)
_COMPONENT_MAX = limits.INTERVAL_YEARS_MAX * 366 * 24 * 60 * 60  # no component can be larger


def _too_long(text: str, field: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {text[:40]!r} is longer than {limits.INTERVAL_YEARS_MAX} years "
        "(INTERVAL_YEARS_MAX)",
        field=field,
    )


def parse_interval(text: str, field: str = "interval") -> Duration:
    """Parse ``DAY|WEEK|MONTH|YEAR`` (case-insensitive) or a whole-number ISO-8601 duration.

    Rejected with ``InvalidInput``: fractional components (``P0.5D``), a zero or empty
    duration, and seconds that are not whole minutes (the engine resolution is one minute).
    """
    value = text.strip()
    enum_value = _ENUM_TO_DURATION.get(value.upper())
    if enum_value is not None:
        return enum_value
    upper = value.upper()
    if _FRACTIONAL.search(upper):
        raise InvalidInput(
            f"{field}: fractional duration components are not supported", field=field
        )
    match = _ISO_DURATION.match(upper)
    if match is None or upper.endswith("T"):
        raise InvalidInput(f"{field}: {text!r} is not an ISO-8601 duration", field=field)
    parts = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if any(v > _COMPONENT_MAX for v in parts.values()):
        raise _too_long(text, field)
    duration = Duration(**parts)
    if not duration.is_positive():
        raise InvalidInput(f"{field}: the duration must be positive", field=field)
    if duration.approximate() > _INTERVAL_MAX:
        raise _too_long(text, field)
    if duration.seconds % 60:
        raise InvalidInput(f"{field}: seconds must be whole minutes", field=field)
    return duration


def interval_iso(duration: Duration) -> str:
    """The ISO-8601 text of a duration, components in canonical order."""
    date = "".join(
        f"{n}{unit}"
        for n, unit in (
            (duration.years, "Y"),
            (duration.months, "M"),
            (duration.weeks, "W"),
            (duration.days, "D"),
        )
        if n
    )
    time = "".join(
        f"{n}{unit}"
        for n, unit in ((duration.hours, "H"), (duration.minutes, "M"), (duration.seconds, "S"))
        if n
    )
    return "P" + date + (("T" + time) if time else "")


def interval_to_wire(duration: Duration) -> str:
    """The API's ``interval`` field: the enum name when the duration equals one, else ISO."""
    for name, enum_duration in _ENUM_TO_DURATION.items():
        if duration == enum_duration:
            return name
    return interval_iso(duration)


def validate_usage_period_interval(duration: Duration, field: str = "usagePeriod.interval") -> None:
    """Entitlement usage periods must be at least one hour long (PT1H ok, PT59M rejected)."""
    if duration.has_calendar_part():
        return
    if duration.fixed_part() < timedelta(hours=1):
        raise InvalidInput("UsagePeriod must be at least 1 hour", field=field)


# --------------------------------------------------------------------------------------------
# Calendar arithmetic
# --------------------------------------------------------------------------------------------


def _shift_months_clamped(at: datetime, months: int) -> datetime:
    if months == 0:
        return at
    index = at.year * 12 + (at.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return at.replace(year=year, month=month, day=day)


def _shift_months_overflowing(at: datetime, months: int) -> datetime:
    index = at.year * 12 + (at.month - 1) + months
    year, month = divmod(index, 12)
    first = at.replace(year=year, month=month + 1, day=1)
    return first + timedelta(days=at.day - 1)


def add_clamped(at: datetime, duration: Duration, n: int = 1) -> datetime:
    """``at + n × duration``; years then months clamp the day of month, then days, then time.

    ``n`` may be negative. Weeks and days are calendar days; hours and minutes are exact.
    """
    shifted = _shift_months_clamped(at, duration.years * 12 * n)
    shifted = _shift_months_clamped(shifted, duration.months * n)
    days = (duration.weeks * 7 + duration.days) * n
    return shifted + timedelta(days=days) + duration.fixed_part() * n


def add_overflowing(at: datetime, duration: Duration, n: int = 1) -> datetime:
    """Like ``add_clamped`` but month and year steps overflow the day (Jan 31 + P1M = Mar 2).

    Years and months are applied together, as one month count, like Go's ``AddDate``.
    """
    shifted = _shift_months_overflowing(at, (duration.years * 12 + duration.months) * n)
    days = (duration.weeks * 7 + duration.days) * n
    return shifted + timedelta(days=days) + duration.fixed_part() * n


class ExpirationUnit(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"


_EXPIRATION_DURATION: dict[ExpirationUnit, Duration] = {
    ExpirationUnit.HOUR: PT1H,
    ExpirationUnit.DAY: P1D,
    ExpirationUnit.WEEK: P1W,
    ExpirationUnit.MONTH: P1M,
    ExpirationUnit.YEAR: P1Y,
}


def expiration_expires_at(effective_at: datetime, unit: ExpirationUnit, count: int) -> datetime:
    """``effectiveAt + count × unit`` with OVERFLOWING months (OpenMeter-compatible)."""
    return add_overflowing(effective_at, _EXPIRATION_DURATION[unit], count)


# --------------------------------------------------------------------------------------------
# Periods and recurrences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval ``[start, end)``."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        check(self.start <= self.end, f"period start {self.start} after end {self.end}")

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


@dataclass(frozen=True, slots=True)
class Recurrence:
    """Instants ``anchor + n × interval`` for every whole number n (month ends clamp)."""

    interval: Duration
    anchor: datetime

    def __post_init__(self) -> None:
        check(self.interval.is_positive(), "recurrence interval must be positive")
        check(self.anchor.tzinfo is not None, "recurrence anchor must be aware")

    def boundary(self, n: int) -> datetime:
        return add_clamped(self.anchor, self.interval, n)


def _index_at(rec: Recurrence, at: datetime) -> int:
    """The largest k with ``boundary(k) <= at``."""
    k = (at - rec.anchor) // rec.interval.approximate()
    for _ in range(limits.RECURRENCE_ITERATIONS_MAX):
        if rec.boundary(k) > at:
            k -= 1
        elif rec.boundary(k + 1) <= at:
            k += 1
        else:
            return k
    raise LimitExceeded("recurrence: RECURRENCE_ITERATIONS_MAX exceeded")


def periods_spanned(interval: Duration, start: datetime, end: datetime) -> int:
    """About how many ``interval``-long periods ``[start, end]`` holds (average months)."""
    if end <= start:
        return 0
    return (end - start) // interval.approximate() + 1


def check_walk(periods: int, start: datetime, end: datetime) -> None:
    """A 400 naming ``time`` when a computation would walk more than
    ``limits.ENGINE_PERIODS_MAX`` periods (usage periods and grant recurrences together):
    the bound on the CPU one value or history read may take."""
    if periods > limits.ENGINE_PERIODS_MAX:
        shown = f"{format_rfc3339(start)} to {format_rfc3339(end)}"
        raise LimitExceeded(
            f"time: from {shown} spans about {periods} usage periods and grant recurrences; "
            f"one read walks at most {limits.ENGINE_PERIODS_MAX} (ENGINE_PERIODS_MAX)",
            field="time",
        )


def period_at(rec: Recurrence, at: datetime) -> Period:
    """The period ``[b(k), b(k+1))`` containing ``at``; a boundary starts the new period."""
    k = _index_at(rec, at)
    return Period(rec.boundary(k), rec.boundary(k + 1))


def iter_boundaries(rec: Recurrence, start: datetime, end: datetime) -> Iterator[datetime]:
    """Recurrence instants ``b`` with ``start <= b <= end``, in order (both ends inclusive).

    Bounded by ``limits.RECURRENCE_ITERATIONS_MAX``; raises ``LimitExceeded`` beyond it.
    """
    if end < start:
        return
    k = _index_at(rec, start)
    if rec.boundary(k) < start:
        k += 1
    for _ in range(limits.RECURRENCE_ITERATIONS_MAX):
        instant = rec.boundary(k)
        if instant > end:
            return
        yield instant
        k += 1
    raise LimitExceeded("recurrence: RECURRENCE_ITERATIONS_MAX exceeded")


def next_recurrence(rec: Recurrence, at: datetime) -> datetime:
    """The first recurrence instant ``>= at`` (the grant's ``nextRecurrence``)."""
    k = _index_at(rec, at)
    instant = rec.boundary(k)
    return instant if instant == at else rec.boundary(k + 1)


# --------------------------------------------------------------------------------------------
# Usage-period timeline
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsagePeriodInput:
    """From ``starts_at`` on, usage periods follow ``recurrence`` (until the next input)."""

    starts_at: datetime
    recurrence: Recurrence


@dataclass(frozen=True, slots=True)
class UsagePeriodTimeline:
    """Ordered inputs; input 0 starts at ``measureUsageFrom``, each reset appends one.

    Invariant: ``starts_at`` strictly increases.
    """

    inputs: tuple[UsagePeriodInput, ...]

    def __post_init__(self) -> None:
        check(len(self.inputs) > 0, "usage-period timeline needs at least one input")
        for before, after in zip(self.inputs, self.inputs[1:], strict=False):
            check(before.starts_at < after.starts_at, "timeline inputs must strictly increase")

    def _index_in_force(self, at: datetime) -> int:
        index = 0
        for i, item in enumerate(self.inputs):
            if item.starts_at <= at:
                index = i
        return index

    def input_in_force(self, at: datetime) -> UsagePeriodInput:
        return self.inputs[self._index_in_force(at)]

    def current_usage_period(self, at: datetime) -> Period:
        """The usage period containing ``at`` (the first one when ``at`` precedes input 0)."""
        i = self._index_in_force(at)
        item = self.inputs[i]
        period = period_at(item.recurrence, max(at, item.starts_at))
        start = max(period.start, item.starts_at)
        end = period.end
        if i + 1 < len(self.inputs) and self.inputs[i + 1].starts_at < end:
            end = self.inputs[i + 1].starts_at
        return Period(start, end)

    def with_reset(self, at: datetime, retain_anchor: bool) -> UsagePeriodTimeline:
        """The timeline after a reset at ``at`` (which must follow every existing input)."""
        in_force = self.input_in_force(at)
        anchor = in_force.recurrence.anchor if retain_anchor else at
        recurrence = Recurrence(in_force.recurrence.interval, anchor)
        return UsagePeriodTimeline((*self.inputs, UsagePeriodInput(at, recurrence)))

    def resets_between(self, after: datetime, until: datetime) -> list[datetime]:
        """Every reset instant ``r`` with ``after < r <= until``, ascending, no duplicates.

        Resets are the starts of inputs 1.. and the ends of the periods walked from input 0.
        Bounded by ``limits.RECURRENCE_ITERATIONS_MAX`` periods.
        """
        instants = {i.starts_at for i in self.inputs[1:] if after < i.starts_at <= until}
        shortest = min((i.recurrence.interval for i in self.inputs), key=Duration.approximate)
        check_walk(periods_spanned(shortest, after, until), after, until)
        period = self.current_usage_period(after)
        for _ in range(limits.RECURRENCE_ITERATIONS_MAX):
            if period.end > until:
                return sorted(instants)
            if period.end > after:
                instants.add(period.end)
            period = self.current_usage_period(period.end)
        raise LimitExceeded("usage period: RECURRENCE_ITERATIONS_MAX exceeded")


def ensure_utc(at: datetime, field: str = "time") -> datetime:
    """An aware datetime converted to UTC; naive input is rejected."""
    if at.tzinfo is None:
        raise InvalidInput(f"{field}: a time zone offset is required", field=field)
    return at.astimezone(UTC)
