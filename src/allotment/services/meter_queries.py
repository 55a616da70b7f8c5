"""Meter queries and usage reads: the OpenMeter meter query, subjects, groupBy values, and the
in-memory usage series the entitlement engine burns from.

Each call reads in one read transaction; window arithmetic lives in ``domain.windows``, group
filters and the usage series in ``domain.usage_series``, SQL in ``storage.usage_read`` and
``storage.query_totals`` (the meter query), ``storage.subject_usage`` (one subject's usage),
folding in ``storage.usage_fold``; the console's subject ranking in
``storage.subject_ranking``.

A little over 500 lines: one port for every usage read (callers receive one
``MeterQueryService``), and each method here is a thin validate-settle-read step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

import msgspec

from allotment.domain.decimals import EXACT, plain
from allotment.domain.errors import InvalidInput, check
from allotment.domain.meters import Aggregation, Meter, decode_group_key
from allotment.domain.timeutil import (
    MINUTE,
    floor_minute_us,
    from_micros,
    require_aware,
    to_micros,
)
from allotment.domain.usage_series import (
    GroupFilter,
    UsageSeries,
    exact_filters,
    matches_all,
    merge_minute_rows,
)
from allotment.domain.windows import (
    WindowGrid,
    WindowSize,
    check_window_count,
    total_window,
)
from allotment.storage import (
    query_totals,
    subject_ranking,
    subject_usage,
    usage_fold,
    usage_read,
)
from allotment.storage.database import Tx
from allotment.storage.usage_read import MinuteRow, UniqueRow

if TYPE_CHECKING:
    from allotment.clock import Clock
    from allotment.services.meters import MeterService
    from allotment.storage.database import Database

SUBJECT = "subject"
GROUP_BY_VALUES_DEFAULT_RANGE = timedelta(hours=24)


@lru_cache(maxsize=8192)
def _groups(key: str) -> Mapping[str, str]:
    return decode_group_key(key)


def _keep(filters: Sequence[GroupFilter], key: str) -> bool:
    return not filters or matches_all(filters, _groups(key))


@dataclass(frozen=True)
class MeterQuery:
    """A validated-at-the-edge meter query (contract §3.3); meter-specific checks happen in
    :meth:`MeterQueryService.query`. ``subjects`` None means no subject filter."""

    from_: datetime | None = None
    to: datetime | None = None
    window_size: WindowSize | None = None
    time_zone: tzinfo = UTC
    subjects: tuple[str, ...] | None = None
    group_by: tuple[str, ...] = ()
    filters: tuple[GroupFilter, ...] = ()
    filter_field: str = "filterGroupBy"


class MeterQueryRow(msgspec.Struct, frozen=True, gc=False, rename="camel"):
    """One row of a meter query, in the contract's shape: ``msgspec`` encodes a list of them
    as the response's ``data`` as is (``windowStart``/``windowEnd`` in UTC with ``Z``,
    ``subject`` null when not grouped by subject). ``value`` is in plain form (``100``, not
    ``1E+2``); an integer sum or count stays an ``int``, which renders as the same number.

    A query may build 100 000 of them: a Struct is built at plain-tuple speed (a NamedTuple
    costs 2.5× as much), and ``gc=False`` keeps the rows out of the cyclic garbage collector
    (they hold only a number, datetimes, a str and a shared dict, so they cannot form a
    cycle)."""

    value: int | Decimal
    window_start: datetime
    window_end: datetime
    subject: str | None
    group_by: dict[str, str]


@dataclass(frozen=True)
class MeterQueryResult:
    meter: Meter
    query: MeterQuery
    group_by_keys: tuple[str, ...]
    """The requested meter groupBy keys (``subject`` excluded), in request order."""
    by_subject: bool
    rows: list[MeterQueryRow]


CellKey = tuple[int, str, tuple[str, ...]]


class MeterQueryService:
    """Collaborators: the database and clock, ``meters`` (a query names its meter), and
    ``settle`` (``EventService.settle``: folds the unfolded tail of ingest, so that every
    read here counts every event stored before it; None: ingest folds at once)."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        meters: MeterService,
        settle: Callable[..., bool] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._meters = meters
        self._settle = settle

    def settle(self, *, allow_io: bool = True) -> bool:
        """Fold whatever ingest has stored but not folded yet (read-your-writes); without
        ``allow_io`` only check: False when a fold is needed first."""
        return True if self._settle is None else self._settle(allow_io=allow_io)

    def _meter(self, meter_id_or_slug: str | Meter) -> Meter:
        """The live meter; a :class:`Meter` the caller already holds is used as it is (the
        value cache keeps it, guarded by the catalog version: no read per usage fetch)."""
        if isinstance(meter_id_or_slug, Meter):
            return meter_id_or_slug
        return self._meters.get(meter_id_or_slug)

    # ------------------------------------------------------------ meter query

    def query(self, meter_id_or_slug: str, q: MeterQuery) -> MeterQueryResult:
        _check_range(q.from_, q.to)
        meter = self._meter(meter_id_or_slug)
        keys, by_subject = _group_by_keys(meter, q)
        _check_filters(meter, q)
        if q.window_size is not None and q.from_ is not None and q.to is not None:
            check_window_count(q.from_, q.to, q.window_size, q.time_zone)
        lo = None if q.from_ is None else to_micros(q.from_)
        hi = None if q.to is None else to_micros(q.to)
        self.settle()
        with self._db.read() as tx:
            grid = _grid(tx, meter, q, lo, hi)
            if grid is _NO_DATA:
                return MeterQueryResult(meter, q, keys, by_subject, [])
            fold = _bucketing(q, grid, by_subject, bool(keys or q.filters))
            cuts = _cuts(q, grid)
            totals = None
            if cuts is not None:
                totals = query_totals.read_totals(tx, meter, lo, hi, q.subjects, fold, cuts)
            if totals is None:
                rows, uniques = usage_read.read_usage(tx, meter, lo, hi, q.subjects, fold, cuts)
        if totals is not None:
            # the totals lane (SUM, COUNT, AVG with known windows): plain tuples
            if q.filters:
                totals = [t for t in totals if _keep(q.filters, t[1])]
            span = _total_span(totals)
        else:
            rows = [r for r in rows if _keep(q.filters, r.group_key)]
            uniques = [u for u in uniques if _keep(q.filters, u.group_key)]
            span = _minute_span(rows, uniques)
        windows = _windows(q, grid, span)
        if windows is None:
            return MeterQueryResult(meter, q, keys, by_subject, [])
        index, window_of = windows

        def values_of(gkey: str) -> tuple[str, ...]:
            groups = _groups(gkey)
            return tuple(groups.get(k, "") for k in keys)

        if totals is not None:
            cells = query_totals.fold_totals(
                meter.aggregation, totals, index, values_of, by_subject
            )
        else:
            cells = _fold_rows(meter, rows, uniques, index, values_of, by_subject)
        return MeterQueryResult(
            meter, q, keys, by_subject, _result_rows(cells, window_of, keys, by_subject)
        )

    def top_subjects(
        self, meter_id_or_slug: str, from_: datetime, to: datetime, limit: int
    ) -> tuple[list[tuple[str, int | Decimal]], int] | None:
        """The first ``limit`` subjects by usage (SUM, COUNT) over minute-aligned
        ``[from_, to)``, largest first, and how many subjects have usage, ranked by the
        database (``storage.subject_ranking``); None when it cannot rank exactly."""
        meter = self._meter(meter_id_or_slug)
        lo, hi = to_micros(from_), to_micros(to)
        check(lo % _MINUTE_US == 0 and hi % _MINUTE_US == 0 and lo < hi, "top_subjects: range")
        self.settle()
        with self._db.read() as tx:
            return subject_ranking.top_subjects(tx, meter, lo, hi, limit)

    def subjects_after(
        self, meter_id_or_slug: str, from_: datetime, to: datetime, after: str, limit: int
    ) -> list[str]:
        """The first ``limit`` subjects after ``after`` in key order with usage of the meter in
        minute-aligned ``[from_, to)``, read by index (``storage.subject_ranking``)."""
        meter = self._meter(meter_id_or_slug)
        lo, hi = to_micros(from_), to_micros(to)
        check(lo % _MINUTE_US == 0 and hi % _MINUTE_US == 0 and lo < hi, "subjects_after: range")
        self.settle()
        with self._db.read() as tx:
            return subject_ranking.subjects_after(tx, meter, lo, hi, after, limit)

    # ------------------------------------------------------------ subjects, group-by values

    def subjects(
        self, meter_id_or_slug: str, from_: datetime | None, to: datetime | None
    ) -> list[str]:
        """Distinct subjects with usage of the meter in ``[from_, to)``, sorted."""
        _check_range(from_, to)
        meter = self._meter(meter_id_or_slug)
        whole, edges = _split(from_, to)
        found: set[str] = set()
        self.settle()
        with self._db.read() as tx:
            if whole is not None:
                found.update(usage_read.distinct_subjects(tx, meter.id, whole[0], whole[1]))
            for lo, hi in edges:
                rows, _ = usage_read.edge_rows(tx, meter, lo, hi, None)
                found.update(r.subject for r in rows)
        return sorted(found)

    def group_by_values(
        self,
        meter_id_or_slug: str,
        key: str,
        from_: datetime | None,
        to: datetime | None,
        search: str | None = None,
    ) -> list[str]:
        """Distinct values of one groupBy key in ``[from_, to)`` (default: the last 24 h),
        sorted; a missing value shows as ``""``. ``search`` keeps values containing it
        (case-insensitive)."""
        meter = self._meter(meter_id_or_slug)
        if key not in meter.group_by:
            raise InvalidInput(
                f"groupByKey: {key!r} is not a groupBy key of meter {meter.slug}",
                field="groupByKey",
            )
        if from_ is None:
            from_ = (to or self._clock.now()) - GROUP_BY_VALUES_DEFAULT_RANGE
        _check_range(from_, to)
        whole, edges = _split(from_, to)
        found: set[str] = set()
        self.settle()
        with self._db.read() as tx:
            if whole is not None:
                gkeys = usage_read.distinct_group_keys(tx, meter.id, whole[0], whole[1])
                found.update(_groups(g).get(key, "") for g in gkeys)
            for lo, hi in edges:
                rows, _ = usage_read.edge_rows(tx, meter, lo, hi, None)
                found.update(_groups(r.group_key).get(key, "") for r in rows)
        if search:
            found = {v for v in found if search.casefold() in v.casefold()}
        return sorted(found)

    # ------------------------------------------------------------ entitlement usage

    def usage_series(
        self,
        meter_id_or_slug: str | Meter,
        subject: str | Sequence[str],
        group_filters: Mapping[str, str] | None,
        start: datetime,
        end: datetime,
    ) -> UsageSeries:
        """One subject's usage of a meter over minute-aligned ``[start, end)``, fetched once;
        or, given several subjects (a customer's), their usage together, in one read
        transaction (UNIQUE_COUNT counts a value seen under two subjects once).

        ``group_filters`` are exact matches on the meter's groupBy values (a feature's
        meterGroupByFilters). SUM/COUNT answer ``total``, UNIQUE_COUNT ``unique``, LATEST
        ``latest``; for other aggregations ``total`` is the sum of values.
        """
        meter = self._meter(meter_id_or_slug)
        start, end = require_aware(start, "start"), require_aware(end, "end")
        filters = exact_filters(group_filters)
        lo, hi = to_micros(start), to_micros(end)
        subjects = (subject,) if isinstance(subject, str) else tuple(subject)
        uniques: list[tuple[int, str]] = []
        minutes: list[subject_usage.SeriesRow] = []
        self.settle()
        with self._db.read() as tx:
            for one in subjects:
                keys = None
                if filters:
                    found = subject_usage.subject_group_keys(tx, meter, one, lo, hi)
                    keys = [k for k in found if _keep(filters, k)]
                if meter.aggregation is Aggregation.UNIQUE_COUNT:
                    uniques += subject_usage.series_uniques(tx, meter, one, lo, hi, keys)
                else:
                    minutes += subject_usage.series_minutes(tx, meter, one, lo, hi, keys)
        if meter.aggregation is Aggregation.UNIQUE_COUNT:
            return UsageSeries(start, end, [], uniques)
        return UsageSeries(start, end, merge_minute_rows(minutes))

    def usage_totals(
        self,
        meter_id_or_slug: str | Meter,
        subject: str | Sequence[str],
        group_filters: Mapping[str, str] | None,
        ranges: Sequence[tuple[datetime, datetime]],
    ) -> list[Decimal]:
        """One subject's usage total in each minute-aligned ``[from_, to)`` of ``ranges``, in
        one SQL statement: COUNT meters the number of events, other aggregations the sum of
        values (what :meth:`UsageSeries.total` answers; not for UNIQUE_COUNT or LATEST).
        Several subjects (a customer's): their totals added, one statement each.

        Each range reads whole UTC days from ``usage_day``, whole hours from ``usage_hour``
        and minutes only at its ragged edges, so the cost does not grow with event volume.
        ``group_filters`` are exact matches on the meter's groupBy values.
        """
        meter = self._meter(meter_id_or_slug)
        check(
            meter.aggregation not in (Aggregation.UNIQUE_COUNT, Aggregation.LATEST),
            f"usage_totals: not defined for {meter.aggregation} meters (use usage_series)",
        )
        spans: list[tuple[int, int]] = []
        for from_, to in ranges:
            lo = to_micros(require_aware(from_, "from_"))
            hi = to_micros(require_aware(to, "to"))
            check(
                lo % _MINUTE_US == 0 and hi % _MINUTE_US == 0 and lo <= hi,
                f"usage_totals: [{from_}, {to}) is not a minute-aligned range",
            )
            spans.append((lo, hi))
        filters = exact_filters(group_filters)
        keep = (lambda key: _keep(filters, key)) if filters else None
        subjects = (subject,) if isinstance(subject, str) else tuple(subject)
        totals = [Decimal(0)] * len(spans)
        self.settle()
        with self._db.read() as tx:
            for one in subjects:
                part = subject_usage.range_totals(tx, meter, one, spans, keep)
                totals = [EXACT.add(a, b) for a, b in zip(totals, part, strict=True)]
        return totals


# ---------------------------------------------------------------- helpers


def _check_range(from_: datetime | None, to: datetime | None) -> None:
    if from_ is not None and to is not None and from_ >= to:
        raise InvalidInput(
            f"from: must be before to (got from={from_.isoformat()}, to={to.isoformat()})",
            field="from",
        )


def _split(
    from_: datetime | None, to: datetime | None
) -> tuple[tuple[int | None, int | None] | None, list[tuple[int, int]]]:
    return usage_read.split_range(
        None if from_ is None else to_micros(from_), None if to is None else to_micros(to)
    )


def _group_by_keys(meter: Meter, q: MeterQuery) -> tuple[tuple[str, ...], bool]:
    keys: list[str] = []
    for key in q.group_by:
        if key != SUBJECT and key not in meter.group_by:
            raise InvalidInput(f"groupBy: invalid group by: {key}", field="groupBy")
        if key != SUBJECT and key not in keys:
            keys.append(key)
    return tuple(keys), q.subjects is not None or SUBJECT in q.group_by


def _check_filters(meter: Meter, q: MeterQuery) -> None:
    for f in q.filters:
        if f.key not in meter.group_by:
            raise InvalidInput(
                f"{q.filter_field}: {f.key!r} is not a groupBy key of meter {meter.slug}",
                field=q.filter_field,
            )


def _result_rows(
    cells: Mapping[CellKey, int | Decimal],
    window_of: Callable[[int], tuple[datetime, datetime]],
    keys: tuple[str, ...],
    by_subject: bool,
) -> list[MeterQueryRow]:
    """One row per cell, ordered by window, subject and group values. Rows of one window
    share its datetimes and rows of one group its ``groupBy`` dict (never mutated)."""
    order = sorted(cells)  # the keys alone: cheaper to compare than (key, value) pairs
    starts: dict[int, datetime] = {}
    ends: dict[int, datetime] = {}
    for i in {k[0] for k in order}:
        start, end = window_of(i)
        starts[i], ends[i] = start.astimezone(UTC), end.astimezone(UTC)
    groups = {v: dict(zip(keys, v, strict=True)) for v in {k[2] for k in order}}
    if by_subject:
        return [
            MeterQueryRow(cells[k], starts[k[0]], ends[k[0]], k[1], groups[k[2]]) for k in order
        ]
    return [MeterQueryRow(cells[k], starts[k[0]], ends[k[0]], None, groups[k[2]]) for k in order]


def _fold_rows(
    meter: Meter,
    rows: Sequence[MinuteRow],
    uniques: Sequence[UniqueRow],
    index: Callable[[int], int | None],
    values_of: Callable[[str], tuple[str, ...]],
    by_subject: bool,
) -> dict[CellKey, int | Decimal]:
    """The general lane: fold rows per (window, subject, groups); values in plain form."""
    # rows repeat a few bucket starts and group keys: map each distinct one once
    index_of: dict[int, int | None] = {}
    values_by_key: dict[str, tuple[str, ...]] = {}

    def key_of(subject: str, at: int, gkey: str) -> CellKey | None:
        i = index_of.get(at, -1)
        if i == -1:
            i = index_of[at] = index(at)
        if i is None:
            return None
        values = values_by_key.get(gkey)
        if values is None:
            values = values_by_key[gkey] = values_of(gkey)
        return i, subject if by_subject else "", values

    cells = usage_fold.fold(meter.aggregation, rows, uniques, key_of)
    return {key: plain(value) for key, value in cells.items()}


def _total_span(totals: Sequence[query_totals.TotalRow]) -> tuple[int, int] | None:
    """Only whether there is usage matters here: the lane runs with both bounds known."""
    if not totals:
        return None
    at = totals[0][2]
    return floor_minute_us(at), floor_minute_us(at)


def _minute_span(rows: Sequence[MinuteRow], uniques: Sequence[UniqueRow]) -> tuple[int, int] | None:
    items: Sequence[MinuteRow | UniqueRow] = rows or uniques
    if not items:
        return None
    first = min(r.minute for r in items)
    last = max(r.minute if r.last is None else r.last for r in items)
    return floor_minute_us(first), floor_minute_us(last)


_NO_DATA = WindowGrid(())


def _grid(tx: Tx, meter: Meter, q: MeterQuery, lo: int | None, hi: int | None) -> WindowGrid | None:
    """The windows of a windowed query (None without ``windowSize``; ``_NO_DATA`` when an
    open bound has no usage to close it). An open bound is closed by the subjects' usage
    span; windows are tumbling, so a wider span never changes which window a row is in."""
    if q.window_size is None:
        return None
    start, end = q.from_, q.to
    if start is None or end is None:
        span = usage_read.minute_span(tx, meter.id, lo, hi, q.subjects)
        if span is None:
            return _NO_DATA
        start = start if start is not None else from_micros(span[0])
        end = end if end is not None else from_micros(span[1]) + MINUTE
    check_window_count(start, end, q.window_size, q.time_zone)
    return WindowGrid.build(start, end, q.window_size, q.time_zone)


_HOUR_US = 3_600_000_000
_MINUTE_US = 60_000_000


def _bucketing(
    q: MeterQuery, grid: WindowGrid | None, by_subject: bool, by_group: bool
) -> usage_read.Bucketing:
    """SQL folds minutes per window (MINUTE, HOUR, total) or per hour/minute inside DAY and
    MONTH windows (hours when every window boundary is on the hour grid of the first)."""
    if grid is None:
        return usage_read.Bucketing(0, 0, by_subject, by_group)
    anchor = grid.bounds[0]
    step = _MINUTE_US if q.window_size is WindowSize.MINUTE else _HOUR_US
    if any((b - anchor) % step for b in grid.bounds):
        step = _MINUTE_US
    return usage_read.Bucketing(anchor, step, by_subject, by_group)


def _cuts(q: MeterQuery, grid: WindowGrid | None) -> list[int] | None:
    """Where rollup rows must not straddle (the window bounds), so ``read_usage`` may use
    hour and day rows; None (minute rows only) when every row's own minute matters: a total
    with an open ``from``/``to`` (its window comes from the first/last minute with usage),
    or a window bound inside a minute (historical zone offsets with seconds)."""
    if grid is None:
        return [] if q.from_ is not None and q.to is not None else None
    if any(b % _MINUTE_US for b in grid.bounds):
        return None
    return list(grid.bounds)


Windows = tuple[Callable[[int], int | None], Callable[[int], tuple[datetime, datetime]]]


def _windows(
    q: MeterQuery, grid: WindowGrid | None, span: tuple[int, int] | None
) -> Windows | None:
    """How rows map to windows: ``(index_of(µs), window_of(index))``, or None when there is
    nothing to report."""
    if span is None:
        return None
    if grid is not None:
        return grid.index, grid.window
    whole = total_window(q.from_, q.to, from_micros(span[0]), from_micros(span[1]))
    if whole is None:
        return None
    return (lambda _at: 0), (lambda _i: whole)
