"""An in-memory series of one subject's minute rollups, for the entitlement engine.

The meter query service fetches a meter's minute buckets for ``[start, end)`` once
(:meth:`allotment.services.meter_queries.MeterQueryService.usage_series`) and hands back a
:class:`UsageSeries`; the engine then asks it about any minute-aligned sub-range without
touching the database again:

* :meth:`UsageSeries.total` — SUM: the sum of values; COUNT: the number of events (prefix
  sums, O(log n));
* :meth:`UsageSeries.unique` — UNIQUE_COUNT: distinct values (O(log n) after an O(n) pass per
  distinct ``from_``, which the engine keeps fixed at the usage-period start);
* :meth:`UsageSeries.latest` — LATEST: the value of the latest event (O(log n)), 0 if none.

All bounds are half-open ``[from_, to)``, aware datetimes, minute-aligned, inside the fetched
range; anything else is a caller bug (:class:`~allotment.domain.errors.InvariantViolation`).

:class:`GroupFilter` is the exact-match (and ``$ne``/``$in``/``$nin``) predicate on a meter's
groupBy values shared by meter queries and feature filters; a missing group value is ``""``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from allotment.domain.decimals import EXACT
from allotment.domain.errors import InvalidInput, check
from allotment.domain.timeutil import to_micros

ZERO = Decimal(0)
_US_PER_MINUTE = 60_000_000
FILTER_OPERATORS = ("$eq", "$ne", "$in", "$nin")


@dataclass(frozen=True)
class GroupFilter:
    """``key`` ``op`` ``values``: ``$eq``/``$in`` keep rows whose value is one of ``values``,
    ``$ne``/``$nin`` drop them. A group value missing from an event is ``""``."""

    key: str
    op: str
    values: tuple[str, ...]

    def matches(self, groups: Mapping[str, str]) -> bool:
        hit = groups.get(self.key, "") in self.values
        return hit if self.op in ("$eq", "$in") else not hit


def exact_filters(filters: Mapping[str, str] | None) -> tuple[GroupFilter, ...]:
    """``{"model": "gpt-4"}`` (a feature's meterGroupByFilters) as ``$eq`` filters."""
    return tuple(GroupFilter(k, "$eq", (v,)) for k, v in sorted((filters or {}).items()))


def parse_advanced_filters(raw: object, field: str) -> tuple[GroupFilter, ...]:
    """``{"model": {"$in": ["a", "b"]}, "type": {"$eq": "x"}}`` → filters; 400 names ``field``."""
    if not isinstance(raw, Mapping):
        raise InvalidInput(f"{field}: must be a JSON object of groupBy key -> filter", field=field)
    out: list[GroupFilter] = []
    for key, spec in sorted(raw.items()):
        if not isinstance(spec, Mapping) or not spec:
            raise InvalidInput(
                f"{field}[{key}]: must be an object with one of {', '.join(FILTER_OPERATORS)}",
                field=field,
            )
        for op, operand in spec.items():
            out.append(GroupFilter(str(key), op, _operand(op, operand, f"{field}[{key}]", field)))
    return tuple(out)


def _operand(op: object, operand: object, where: str, field: str) -> tuple[str, ...]:
    if op not in FILTER_OPERATORS:
        raise InvalidInput(
            f"{where}: unsupported operator {op!r}; use one of {', '.join(FILTER_OPERATORS)}",
            field=field,
        )
    if op in ("$eq", "$ne"):
        if not isinstance(operand, str):
            raise InvalidInput(f"{where}.{op}: must be a string", field=field)
        return (operand,)
    if not isinstance(operand, list) or not all(isinstance(v, str) for v in operand):
        raise InvalidInput(f"{where}.{op}: must be an array of strings", field=field)
    return tuple(operand)


def matches_all(filters: Iterable[GroupFilter], groups: Mapping[str, str]) -> bool:
    return all(f.matches(groups) for f in filters)


@dataclass(frozen=True)
class MinuteBucket:
    """One minute of one subject's usage, all matching group rows merged.

    ``minute`` is epoch microseconds; ``total`` is the sum (SUM meters) or the event count
    (COUNT meters); ``latest_time``/``latest_value`` the latest event of the minute (LATEST).
    """

    minute: int
    total: Decimal
    latest_time: int | None = None
    latest_value: Decimal | None = None


class UsageSeries:
    """Answers usage questions over ``[start, end)`` from fetched minute buckets."""

    def __init__(
        self,
        start: datetime,
        end: datetime,
        buckets: Iterable[MinuteBucket],
        unique_values: Iterable[tuple[int, str]] = (),
    ) -> None:
        self.start_us = _aligned(start, "start")
        self.end_us = _aligned(end, "end")
        check(self.start_us <= self.end_us, "usage series: start after end")
        ordered = sorted(buckets, key=lambda b: b.minute)
        self._minutes = [b.minute for b in ordered]
        self._prefix = _prefix_sums(b.total for b in ordered)
        latest = [b for b in ordered if b.latest_value is not None and b.latest_time is not None]
        self._latest_minutes = [b.minute for b in latest]
        self._latest_values = [b.latest_value or ZERO for b in latest]
        self._uniques = sorted(set(unique_values))
        self._unique_minutes = [m for m, _ in self._uniques]
        self._first_seen: dict[int, list[int]] = {}

    def _range(self, from_: datetime, to: datetime) -> tuple[int, int]:
        lo, hi = _aligned(from_, "from_"), _aligned(to, "to")
        check(lo <= hi, f"usage series: from_ {from_} after to {to}")
        check(
            self.start_us <= lo and hi <= self.end_us,
            f"usage series: [{from_}, {to}) outside the fetched range",
        )
        return lo, hi

    def total(self, from_: datetime, to: datetime) -> Decimal:
        """SUM: sum of values; COUNT: number of events, in ``[from_, to)``."""
        lo, hi = self._range(from_, to)
        i, j = bisect_left(self._minutes, lo), bisect_left(self._minutes, hi)
        return self._prefix[j] - self._prefix[i]

    def latest(self, from_: datetime, to: datetime) -> Decimal:
        """LATEST: the value of the latest event in ``[from_, to)``; 0 when there is none."""
        lo, hi = self._range(from_, to)
        j = bisect_left(self._latest_minutes, hi)
        if j == 0 or self._latest_minutes[j - 1] < lo:
            return ZERO
        return self._latest_values[j - 1]

    def unique(self, from_: datetime, to: datetime) -> Decimal:
        """UNIQUE_COUNT: the number of distinct values seen in ``[from_, to)``."""
        lo, hi = self._range(from_, to)
        firsts = self._first_seen.get(lo)
        if firsts is None:
            firsts = self._first_seen[lo] = self._first_minutes_from(lo)
        return Decimal(bisect_left(firsts, hi))

    def _first_minutes_from(self, lo: int) -> list[int]:
        """The minute each distinct value is first seen at or after ``lo``, sorted."""
        first: dict[str, int] = {}
        for minute, value in self._uniques[bisect_left(self._unique_minutes, lo) :]:
            first.setdefault(value, minute)
        return sorted(first.values())


def _prefix_sums(values: Iterable[Decimal]) -> list[Decimal]:
    out = [ZERO]
    for v in values:
        out.append(EXACT.add(out[-1], v))
    return out


def _aligned(at: datetime, name: str) -> int:
    check(at.tzinfo is not None, f"usage series: {name} must be timezone-aware")
    us = to_micros(at)
    check(us % _US_PER_MINUTE == 0, f"usage series: {name} {at} is not minute-aligned")
    return us


def merge_minute_rows(
    rows: Sequence[tuple[int, Decimal, int | None, Decimal | None]],
) -> list[MinuteBucket]:
    """Merge ``(minute, total, latest_time, latest_value)`` rows (one per group) per minute.

    Ties on ``latest_time`` across groups keep the greater value, so answers are deterministic.
    """
    merged: dict[int, MinuteBucket] = {}
    for minute, total, lt, lv in rows:
        prev = merged.get(minute)
        if prev is None:
            merged[minute] = MinuteBucket(minute, total, lt, lv)
            continue
        keep_prev = (
            lv is None
            or lt is None
            or (
                prev.latest_time is not None
                and prev.latest_value is not None
                and (prev.latest_time, prev.latest_value) >= (lt, lv)
            )
        )
        best_t, best_v = (prev.latest_time, prev.latest_value) if keep_prev else (lt, lv)
        merged[minute] = MinuteBucket(minute, EXACT.add(prev.total, total), best_t, best_v)
    return [merged[m] for m in sorted(merged)]
