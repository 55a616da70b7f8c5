"""Reads over the usage rollups (``usage_minute``, ``usage_unique``) and raw ``events``.

SQL selects and filters (meter, subjects, minute range); amounts come back as exact
Decimals through :func:`~allotment.storage.database.dec`. Group values are decoded from the
canonical ``group_key`` in Python (one decode per distinct key).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Literal, TypeVar

import msgspec

from allotment.domain.decimals import EXACT
from allotment.domain.errors import check
from allotment.domain.meters import Aggregation, Meter, extract, group_key
from allotment.domain.timeutil import floor_minute_us, to_micros
from allotment.storage.database import Tx, dec, dec_or_none
from allotment.storage.usage_write import (
    DAY_GRAIN,
    DAY_US,
    GRAINS,
    HOUR_GRAIN,
    HOUR_US,
    MINUTE_GRAIN,
    MINUTE_US,
    Grain,
)

_US_PER_MINUTE = 60_000_000
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One ``usage_minute`` row, or several folded in SQL (then ``minute`` is the first and
    ``last`` the last minute folded in)."""

    subject: str
    minute: int
    group_key: str
    count: int
    sum: Decimal | None
    min: Decimal | None
    max: Decimal | None
    latest_time: int | None
    latest_value: Decimal | None
    last: int | None = None


@dataclass(frozen=True, slots=True)
class UniqueRow:
    """One ``usage_unique`` row: a distinct value seen in a minute (or, folded in SQL, first
    seen in ``minute`` and last in ``last``)."""

    subject: str
    minute: int
    group_key: str
    value: str
    last: int | None = None


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One stored event (``event`` is the CloudEvent JSON text)."""

    subject: str
    time: int
    event: str


def subject_clause(subjects: Sequence[str] | None, alias: str = "") -> tuple[str, list[Any]]:
    if subjects is None:
        return "", []
    marks = ", ".join("?" for _ in subjects)
    return f" AND {alias}subject IN ({marks})", list(subjects)


def _range_clause(column: str, start_us: int | None, end_us: int | None) -> tuple[str, list[Any]]:
    sql, params = "", []
    if start_us is not None:
        sql += f" AND {column} >= ?"
        params.append(start_us)
    if end_us is not None:
        sql += f" AND {column} < ?"
        params.append(end_us)
    return sql, params


def minute_rows(
    tx: Tx,
    meter_id: str,
    start_us: int | None,
    end_us: int | None,
    subjects: Sequence[str] | None = None,
) -> list[MinuteRow]:
    """``usage_minute`` rows of a meter with ``start_us <= minute < end_us``."""
    if subjects is not None and not subjects:
        return []
    subj_sql, subj_params = subject_clause(subjects)
    range_sql, range_params = _range_clause("minute", start_us, end_us)
    rows = tx.execute(
        "SELECT subject, minute, group_key, count, sum, min, max, latest_time, latest_value"
        " FROM usage_minute WHERE meter_id = ?" + subj_sql + range_sql,
        [meter_id, *subj_params, *range_params],
    )
    return [_plain_row(r) for r in rows]


def _plain_row(r: Sequence[Any]) -> MinuteRow:
    return MinuteRow(
        subject=r[0],
        minute=int(r[1]),
        group_key=r[2],
        count=int(r[3]),
        sum=dec_or_none(r[4]),
        min=dec_or_none(r[5]),
        max=dec_or_none(r[6]),
        latest_time=None if r[7] is None else int(r[7]),
        latest_value=dec_or_none(r[8]),
    )


def grain_rows(
    tx: Tx,
    meter_id: str,
    grain: Grain,
    spans: Sequence[tuple[int, int]],
    subjects: Sequence[str] | None = None,
) -> list[MinuteRow]:
    """Rows of one grain table with a bucket in one of the (disjoint) ``spans``; ``minute``
    is the bucket start."""
    if (subjects is not None and not subjects) or not spans:
        return []
    subj_sql, subj_params = subject_clause(subjects)
    col = grain.column
    branch = (
        f"SELECT subject, {col}, group_key, count, sum, min, max, latest_time, latest_value "
        f"FROM {grain.table} WHERE meter_id = ?{subj_sql} AND {col} >= ? AND {col} < ?"
    )
    params = [v for lo, hi in spans for v in (meter_id, *subj_params, lo, hi)]
    rows = tx.execute(" UNION ALL ".join([branch] * len(spans)), params)
    return [_plain_row(r) for r in rows]


def unique_rows(
    tx: Tx,
    meter_id: str,
    start_us: int | None,
    end_us: int | None,
    subjects: Sequence[str] | None = None,
) -> list[UniqueRow]:
    """``usage_unique`` rows of a meter with ``start_us <= minute < end_us``."""
    if subjects is not None and not subjects:
        return []
    subj_sql, subj_params = subject_clause(subjects)
    range_sql, range_params = _range_clause("minute", start_us, end_us)
    rows = tx.execute(
        "SELECT subject, minute, group_key, value FROM usage_unique WHERE meter_id = ?"
        + subj_sql
        + range_sql,
        [meter_id, *subj_params, *range_params],
    )
    return [UniqueRow(r[0], int(r[1]), r[2], r[3]) for r in rows]


def raw_events(
    tx: Tx,
    event_type: str,
    start_us: int,
    end_us: int,
    subjects: Sequence[str] | None = None,
) -> list[RawEvent]:
    """Stored events of a type with ``start_us <= time < end_us`` (for partial minutes)."""
    if subjects is not None and not subjects:
        return []
    subj_sql, subj_params = subject_clause(subjects)
    rows = tx.execute(
        "SELECT subject, time, event FROM events WHERE type = ? AND time >= ? AND time < ?"
        + subj_sql,
        [event_type, start_us, end_us, *subj_params],
    )
    return [RawEvent(r[0], int(r[1]), r[2]) for r in rows]


def minute_span(
    tx: Tx,
    meter_id: str,
    start_us: int | None,
    end_us: int | None,
    subjects: Sequence[str] | None = None,
) -> tuple[int, int] | None:
    """The first and last minute with usage in the range, or None when there is none."""
    if subjects is not None and not subjects:
        return None
    subj_sql, subj_params = subject_clause(subjects)
    range_sql, range_params = _range_clause("minute", start_us, end_us)
    row = tx.one(
        "SELECT min(minute), max(minute) FROM usage_minute WHERE meter_id = ?"
        + subj_sql
        + range_sql,
        [meter_id, *subj_params, *range_params],
    )
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def distinct_subjects(tx: Tx, meter_id: str, start_us: int | None, end_us: int | None) -> list[str]:
    """Subjects with usage of the meter in ``[start_us, end_us)`` (minute granularity)."""
    range_sql, range_params = _range_clause("minute", start_us, end_us)
    rows = tx.execute(
        "SELECT DISTINCT subject FROM usage_minute WHERE meter_id = ?"
        + range_sql
        + " ORDER BY subject",
        [meter_id, *range_params],
    )
    return [r[0] for r in rows]


def distinct_group_keys(
    tx: Tx, meter_id: str, start_us: int | None, end_us: int | None
) -> list[str]:
    """Distinct ``group_key`` values of the meter's minutes in ``[start_us, end_us)``."""
    range_sql, range_params = _range_clause("minute", start_us, end_us)
    rows = tx.execute(
        "SELECT DISTINCT group_key FROM usage_minute WHERE meter_id = ?" + range_sql,
        [meter_id, *range_params],
    )
    return [r[0] for r in rows]


# ---------------------------------------------------------------- partial minutes

_decode_event = msgspec.json.Decoder(float_hook=Decimal)


def split_range(
    from_us: int | None, to_us: int | None
) -> tuple[tuple[int | None, int | None] | None, list[tuple[int, int]]]:
    """``[from_us, to_us)`` as a minute-aligned rollup range plus raw-event edge ranges.

    The rollups answer whole minutes; a ``from``/``to`` inside a minute leaves a partial
    minute at that edge, which is read from the raw ``events`` table instead. When both fall
    in the same minute the rollup range is None and the whole range is raw.
    """
    lo = None if from_us is None else -(-from_us // _US_PER_MINUTE) * _US_PER_MINUTE
    hi = None if to_us is None else floor_minute_us(to_us)
    if from_us is not None and to_us is not None and lo is not None and hi is not None:
        if lo >= hi:
            return None, [(from_us, to_us)] if from_us < to_us else []
    edges: list[tuple[int, int]] = []
    if from_us is not None and lo is not None and lo != from_us:
        edges.append((from_us, lo))
    if to_us is not None and hi is not None and hi != to_us:
        edges.append((hi, to_us))
    return (lo, hi), edges


def edge_rows(
    tx: Tx, meter: Meter, start_us: int, end_us: int, subjects: Sequence[str] | None
) -> tuple[list[MinuteRow], list[UniqueRow]]:
    """Raw events in ``[start_us, end_us)`` as one-event rows (``minute`` = the event time),
    extracted with the meter definition exactly as ingest rolls them up."""
    if meter.event_from is not None:
        start_us = max(start_us, to_micros(meter.event_from))
    if start_us >= end_us:
        return [], []
    rows: list[MinuteRow] = []
    uniques: list[UniqueRow] = []
    for ev in raw_events(tx, meter.event_type, start_us, end_us, subjects):
        decoded = _decode_event.decode(ev.event)
        data = decoded.get("data") if isinstance(decoded, dict) else None
        ex = extract(meter, data)
        if isinstance(ex, str):
            continue
        key = group_key(ex.groups)
        v = ex.value
        rows.append(
            MinuteRow(ev.subject, ev.time, key, 1, v, v, v, None if v is None else ev.time, v)
        )
        if ex.unique is not None and meter.aggregation is Aggregation.UNIQUE_COUNT:
            uniques.append(UniqueRow(ev.subject, ev.time, key, ex.unique))
    return rows, uniques


@dataclass(frozen=True)
class Bucketing:
    """How SQL may fold rollup minutes before Python sees them: per bucket
    ``(minute - anchor) // step`` (one bucket when ``step`` is 0), per subject only when
    ``by_subject``, per group only when ``by_group``. Buckets must never straddle a window."""

    anchor: int = 0
    step: int = 0
    by_subject: bool = True
    by_group: bool = True


def fold_sql(b: Bucketing, column: str = "minute") -> tuple[str, list[Any], str]:
    """(select prefix ``subject, group_key, bucket``, its params, GROUP BY list)."""
    bucket, params = ("0", []) if b.step == 0 else (f"({column} - ?) / ?", [b.anchor, b.step])
    subject = "subject" if b.by_subject else "''"
    group = "group_key" if b.by_group else "'{}'"
    keys = [c for c, on in (("subject", b.by_subject), ("group_key", b.by_group)) if on]
    return f"{subject}, {group}, {bucket} AS bucket", params, ", ".join([*keys, "bucket"])


def _folded_columns(aggregation: Aggregation, mode: SumMode) -> str:
    """``isum total, decimal sum rest, min, max`` for a folded select."""
    if aggregation in (Aggregation.SUM, Aggregation.AVG):
        return sum_columns(mode) + ", NULL, NULL"
    if aggregation is Aggregation.MIN:
        return "NULL, NULL, dec_minagg(min), NULL"
    if aggregation is Aggregation.MAX:
        return "NULL, NULL, NULL, dec_maxagg(max)"
    return "NULL, NULL, NULL, NULL"


SumMode = Literal["native", "fast", "exact"]


def execute_summing(
    tx: Tx, statement: Callable[[SumMode], tuple[str, list[Any]]], rest: int
) -> list[Any]:
    """Run a statement whose sums come from :func:`sum_columns` (column ``rest`` holds the
    decimal rest) in the cheapest form that is exact.

    SQLite: first ``native`` (integer sums only, no Python aggregate at all; the rest column
    flags groups that hold a non-integer sum); if any group is flagged, ``fast``; if SQLite's
    integer ``sum()`` overflowed, ``exact`` (decimals only). PostgreSQL's sums are native in
    every form: ``fast`` at once.
    """
    try:
        if tx.dialect == "sqlite":
            rows = tx.execute(*statement("native"))
            if all(r[rest] is None for r in rows):
                return rows
        return tx.execute(*statement("fast"))
    except sqlite3.OperationalError as exc:
        if not _is_overflow(exc):
            raise
        return tx.execute(*statement("exact"))


def folded_minute_rows(
    tx: Tx,
    meter: Meter,
    lo: int | None,
    hi: int | None,
    subjects: Sequence[str] | None,
    b: Bucketing,
    grain: Grain = MINUTE_GRAIN,
    spans: Sequence[tuple[int, int]] | None = None,
) -> list[MinuteRow]:
    """Rows of one grain table (``usage_minute`` by default, ``lo <= minute < hi``; or the
    buckets inside the disjoint ``spans``) folded in SQL per :class:`Bucketing` (not for
    LATEST). ``minute``/``last`` are the first/last bucket start folded in."""
    if subjects is not None and not subjects:
        return []
    if spans is not None and not spans:
        return []
    col = grain.column
    head, head_params, group_by = fold_sql(b, col)
    subj_sql, subj_params = subject_clause(subjects)
    ranges: list[tuple[int | None, int | None]] = [(lo, hi)] if spans is None else list(spans)

    def statement(mode: SumMode) -> tuple[str, list[Any]]:
        # one branch per span (each an index range scan on both engines); a bucket never
        # straddles a window, so rows of one bucket from two branches are folded by Python
        amounts = _folded_columns(meter.aggregation, mode)
        branches, params = [], []
        for a, z in ranges:
            range_sql, range_params = _range_clause(col, a, z)
            branches.append(
                f"SELECT {head}, min({col}), max({col}), sum(count), {amounts} FROM "
                f"{grain.table} WHERE meter_id = ?{subj_sql}{range_sql} GROUP BY {group_by}"
            )
            params += [*head_params, meter.id, *subj_params, *range_params]
        return " UNION ALL ".join(branches), params

    return [
        MinuteRow(
            subject=r[0],
            minute=int(r[3]),
            group_key=r[1],
            count=int(r[5]),
            sum=exact_sum(r[6], r[7]),
            min=dec_or_none(r[8]),
            max=dec_or_none(r[9]),
            latest_time=None,
            latest_value=None,
            last=int(r[4]),
        )
        for r in execute_summing(tx, statement, rest=7)
    ]


def folded_unique_rows(
    tx: Tx,
    meter: Meter,
    lo: int | None,
    hi: int | None,
    subjects: Sequence[str] | None,
    b: Bucketing,
) -> list[UniqueRow]:
    """``usage_unique`` deduplicated in SQL per bucket, subject, group and value."""
    if subjects is not None and not subjects:
        return []
    head, head_params, group_by = fold_sql(b)
    subj_sql, subj_params = subject_clause(subjects)
    range_sql, range_params = _range_clause("minute", lo, hi)
    rows = tx.execute(
        f"SELECT {head}, value, min(minute), max(minute) FROM usage_unique"
        f" WHERE meter_id = ?{subj_sql}{range_sql} GROUP BY {group_by}, value",
        [*head_params, meter.id, *subj_params, *range_params],
    )
    return [UniqueRow(r[0], int(r[4]), r[1], r[3], int(r[5])) for r in rows]


def _whole_minutes(
    tx: Tx,
    meter: Meter,
    lo: int | None,
    hi: int | None,
    subjects: Sequence[str] | None,
    b: Bucketing | None,
) -> tuple[list[MinuteRow], list[UniqueRow]]:
    if meter.aggregation is Aggregation.UNIQUE_COUNT:
        if b is None:
            return [], unique_rows(tx, meter.id, lo, hi, subjects)
        return [], folded_unique_rows(tx, meter, lo, hi, subjects, b)
    if b is None or meter.aggregation is Aggregation.LATEST:
        return minute_rows(tx, meter.id, lo, hi, subjects), []
    return folded_minute_rows(tx, meter, lo, hi, subjects, b), []


SPANS_MAX = 64
"""More disjoint spans than this in one grain: read one grain for the whole range instead."""
PARAMS_MAX = 30_000
"""Bound parameters per statement (SQLite allows 32 766 by default, PostgreSQL 65 535)."""


def plan_grains(lo: int, hi: int, cuts: Sequence[int], spans_max: int = SPANS_MAX) -> list[Segment]:
    """Minute-aligned ``[lo, hi)``, cut at every ``cuts`` point inside it (window bounds), as
    rollup rows that never straddle a cut: each piece by :func:`decompose`, adjacent spans of
    a grain merged. With too many spans, the coarsest grain aligned with every cut instead."""
    points = sorted({lo, hi, *(c for c in cuts if lo < c < hi)})
    by_grain: dict[Grain, list[tuple[int, int]]] = {g: [] for g in GRAINS}
    for a, b in itertools.pairwise(points):
        for grain, x, y in decompose(a, b):
            spans = by_grain[grain]
            if spans and spans[-1][1] == x:
                spans[-1] = (spans[-1][0], y)
            else:
                spans.append((x, y))
    if max(len(spans) for spans in by_grain.values()) <= spans_max:
        return [(g, x, y) for g, spans in by_grain.items() for x, y in spans]
    for grain in reversed(GRAINS):
        if all(p % grain.step == 0 for p in points):
            return [(grain, lo, hi)]
    return [(MINUTE_GRAIN, lo, hi)]


def _whole_by_grain(
    tx: Tx,
    meter: Meter,
    segments: Sequence[Segment],
    subjects: Sequence[str] | None,
    b: Bucketing | None,
) -> list[MinuteRow]:
    rows: list[MinuteRow] = []
    for grain in GRAINS:
        spans = [(x, y) for g, x, y in segments if g is grain]
        if not spans:
            continue
        if b is None or meter.aggregation is Aggregation.LATEST:
            rows += grain_rows(tx, meter.id, grain, spans, subjects)
        else:
            rows += folded_minute_rows(tx, meter, None, None, subjects, b, grain, spans)
    return rows


def read_usage(
    tx: Tx,
    meter: Meter,
    from_us: int | None,
    to_us: int | None,
    subjects: Sequence[str] | None = None,
    bucketing: Bucketing | None = None,
    cuts: Sequence[int] | None = None,
) -> tuple[list[MinuteRow], list[UniqueRow]]:
    """Every usage row of ``meter`` in ``[from_us, to_us)``: rollups for whole minutes
    (folded in SQL when ``bucketing`` is given, except for LATEST), raw events for partial
    edge minutes. Unique rows only for UNIQUE_COUNT.

    With ``cuts`` (the window bounds, sorted; ``[]`` for one window) the whole minutes are
    read from the coarsest rollups that never straddle a cut (:func:`plan_grains`; an open
    ``from``/``to`` is closed by the first/last cut), and a row's ``minute`` is its bucket
    start. Without, every row is a minute row (callers that need each row's minute).
    """
    whole, edges = split_range(from_us, to_us)
    unique = meter.aggregation is Aggregation.UNIQUE_COUNT
    rows: list[MinuteRow] = []
    uniques: list[UniqueRow] = []
    if whole is not None:
        lo = whole[0] if whole[0] is not None or not cuts else cuts[0]
        hi = whole[1] if whole[1] is not None or not cuts else cuts[-1]
        if cuts is None or unique or lo is None or hi is None:
            rows, uniques = _whole_minutes(tx, meter, whole[0], whole[1], subjects, bucketing)
        elif lo < hi:
            per_span = len(subjects or ()) + 5
            plan = plan_grains(lo, hi, cuts, min(SPANS_MAX, PARAMS_MAX // per_span))
            rows = _whole_by_grain(tx, meter, plan, subjects, bucketing)
    for a, b in edges:
        more_rows, more_uniques = edge_rows(tx, meter, a, b, subjects)
        if unique:
            uniques.extend(more_uniques)
        else:
            rows.extend(more_rows)
    return rows, uniques


# ---------------------------------------------------------------- aggregation

AVG_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN)
"""AVG is the one inexact aggregation: ``sum / count`` rounded to 34 significant digits."""


@dataclass(slots=True)
class Accumulator:
    """Folds usage rows of one (window, subject, groups) cell into the meter's value."""

    count: int = 0
    sum: Decimal | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    latest_time: int | None = None
    latest_value: Decimal | None = None
    uniques: set[str] = field(default_factory=set)

    def add(self, r: MinuteRow) -> None:
        self.count += r.count
        if r.sum is not None:
            self.sum = r.sum if self.sum is None else _WIDE.add(self.sum, r.sum)
        if r.min is not None and (self.min is None or r.min < self.min):
            self.min = r.min
        if r.max is not None and (self.max is None or r.max > self.max):
            self.max = r.max
        if (
            r.latest_time is not None
            and r.latest_value is not None
            and (
                self.latest_time is None
                or self.latest_value is None
                or (r.latest_time, r.latest_value) > (self.latest_time, self.latest_value)
            )
        ):
            self.latest_time, self.latest_value = r.latest_time, r.latest_value

    def value(self, aggregation: Aggregation) -> Decimal | None:
        """The aggregate, or None when the cell has no usable value (the row is dropped)."""
        if aggregation is Aggregation.COUNT:
            return Decimal(self.count) if self.count else None
        if aggregation is Aggregation.UNIQUE_COUNT:
            return Decimal(len(self.uniques)) if self.uniques else None
        if aggregation is Aggregation.AVG:
            if self.sum is None or not self.count:
                return None
            return AVG_CONTEXT.divide(self.sum, Decimal(self.count))
        if aggregation is Aggregation.SUM:
            return self.sum
        if aggregation is Aggregation.MIN:
            return self.min
        if aggregation is Aggregation.MAX:
            return self.max
        return self.latest_value


K = TypeVar("K", bound=Hashable)


def fold(
    aggregation: Aggregation,
    rows: Iterable[MinuteRow],
    uniques: Iterable[UniqueRow],
    key_of: Callable[[str, int, str], K | None],
) -> dict[K, Decimal]:
    """Aggregate rows into cells keyed by ``key_of(subject, minute, group_key)`` (None skips
    the row); cells without a usable value are left out."""
    cells: dict[K, Accumulator] = {}
    if aggregation is Aggregation.UNIQUE_COUNT:
        for u in uniques:
            key = key_of(u.subject, u.minute, u.group_key)
            if key is not None:
                acc = cells.get(key)
                if acc is None:
                    acc = cells[key] = Accumulator()
                acc.uniques.add(u.value)
    else:
        for r in rows:
            key = key_of(r.subject, r.minute, r.group_key)
            if key is not None:
                acc = cells.get(key)
                if acc is None:
                    acc = cells[key] = Accumulator()
                acc.add(r)
    out: dict[K, Decimal] = {}
    for key, acc in cells.items():
        value = acc.value(aggregation)
        if value is not None:
            out[key] = value
    return out


# ---------------------------------------------------------------- usage series

SeriesRow = tuple[int, Decimal, int | None, Decimal | None]
"""(minute, total, latest_time, latest_value)"""
_IN_CHUNK = 500


def _key_chunks(group_keys: Sequence[str] | None) -> list[tuple[str, list[Any]]]:
    if group_keys is None:
        return [("", [])]
    keys = list(group_keys)
    return [
        (
            " AND group_key IN (" + ", ".join("?" for _ in chunk) + ")",
            list(chunk),
        )
        for chunk in (keys[i : i + _IN_CHUNK] for i in range(0, len(keys), _IN_CHUNK))
    ]


def series_minutes(
    tx: Tx, meter: Meter, subject: str, lo: int, hi: int, group_keys: Sequence[str] | None
) -> list[SeriesRow]:
    """One subject's minutes in ``[lo, hi)``, folded per minute in SQL (LATEST: one row per
    group, merged by the caller). ``group_keys`` None = every group; otherwise only these.
    Integer sums are added natively (``isum``); only the rest goes through ``dec_sum``."""
    latest = meter.aggregation is Aggregation.LATEST
    count = meter.aggregation is Aggregation.COUNT
    out: list[SeriesRow] = []
    for key_sql, key_params in _key_chunks(group_keys):

        def statement(
            mode: SumMode, key_sql: str = key_sql, key_params: list[Any] = key_params
        ) -> tuple[str, list[Any]]:
            if latest:
                head, tail = "minute, NULL, NULL, NULL, latest_time, latest_value", ""
            elif count:
                head, tail = "minute, sum(count), NULL, NULL, NULL, NULL", " GROUP BY minute"
            else:
                head = f"minute, NULL, {sum_columns(mode)}, NULL, NULL"
                tail = " GROUP BY minute"
            return (
                f"SELECT {head} FROM usage_minute WHERE meter_id = ? AND subject = ?"
                " AND minute >= ? AND minute < ?" + key_sql + tail,
                [meter.id, subject, lo, hi, *key_params],
            )

        for r in execute_summing(tx, statement, rest=3):
            if count:
                total = Decimal(int(r[1] or 0))
            else:
                total = exact_sum(r[2], r[3]) or _ZERO
            out.append((int(r[0]), total, None if r[4] is None else int(r[4]), dec_or_none(r[5])))
    return out


def series_uniques(
    tx: Tx, meter: Meter, subject: str, lo: int, hi: int, group_keys: Sequence[str] | None
) -> list[tuple[int, str]]:
    """(minute, value) pairs of one subject in ``[lo, hi)`` (distinct per minute)."""
    out: list[tuple[int, str]] = []
    for key_sql, key_params in _key_chunks(group_keys):
        rows = tx.execute(
            "SELECT DISTINCT minute, value FROM usage_unique WHERE meter_id = ? AND subject = ?"
            " AND minute >= ? AND minute < ?" + key_sql,
            [meter.id, subject, lo, hi, *key_params],
        )
        out.extend((int(r[0]), r[1]) for r in rows)
    return out


def subject_group_keys(tx: Tx, meter: Meter, subject: str, lo: int, hi: int) -> list[str]:
    """Distinct ``group_key`` of one subject's minutes in ``[lo, hi)``, or a superset: for
    every aggregation but UNIQUE_COUNT, the keys of the UTC days overlapping the range (day
    rows hold every group of their minutes, and are 1/1440 as many)."""
    if meter.aggregation is Aggregation.UNIQUE_COUNT:
        table, column = "usage_unique", "minute"
    else:
        table, column, lo = "usage_day", "bucket", _floor(lo, DAY_US)
    rows = tx.execute(
        f"SELECT DISTINCT group_key FROM {table} WHERE meter_id = ? AND subject = ?"
        f" AND {column} >= ? AND {column} < ?",
        [meter.id, subject, lo, hi],
    )
    return [r[0] for r in rows]


# ---------------------------------------------------------------- grains

Segment = tuple[Grain, int, int]
"""Rows of one grain table with ``lo <= bucket < hi`` (both multiples of the grain's step)."""


_WIDE = EXACT
"""Additions of partial sums keep 60 significant digits, like ingest (the default keeps 28)."""


def _ceil(us: int, step: int) -> int:
    return -(-us // step) * step


def _floor(us: int, step: int) -> int:
    return us - us % step


def decompose(lo: int, hi: int) -> list[Segment]:
    """Minute-aligned ``[lo, hi)`` as the fewest rollup rows: whole UTC days from
    ``usage_day``, whole hours from ``usage_hour``, minutes at the ragged edges."""
    check(lo % MINUTE_US == 0 and hi % MINUTE_US == 0, "decompose: range not minute-aligned")
    if lo >= hi:
        return []
    h_lo, h_hi = _ceil(lo, HOUR_US), _floor(hi, HOUR_US)
    if h_lo >= h_hi:
        return [(MINUTE_GRAIN, lo, hi)]
    out: list[Segment] = []
    d_lo, d_hi = _ceil(h_lo, DAY_US), _floor(h_hi, DAY_US)
    if d_lo >= d_hi:
        out.append((HOUR_GRAIN, h_lo, h_hi))
    else:
        out += [(HOUR_GRAIN, h_lo, d_lo), (DAY_GRAIN, d_lo, d_hi), (HOUR_GRAIN, d_hi, h_hi)]
    out += [(MINUTE_GRAIN, lo, h_lo), (MINUTE_GRAIN, h_hi, hi)]
    return [s for s in out if s[1] < s[2]]


def _is_overflow(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "integer overflow" in str(exc).lower()


def sum_columns(mode: SumMode, alias: str = "") -> str:
    """Two columns whose total is the exact sum: ``sum(isum), dec_sum(sum of the rest)``
    (``fast``); ``NULL, dec_sum(sum)`` (``exact``, after SQLite reported an integer overflow);
    or ``sum(isum), flag`` (``native``: no Python aggregate; ``flag`` is non-NULL when the group
    holds a sum that is not an integer, and then the caller runs the ``fast`` form)."""
    if mode == "native":
        return (
            f"sum({alias}isum), CASE WHEN count(*) FILTER "
            f"(WHERE {alias}isum IS NULL AND {alias}sum IS NOT NULL) > 0 THEN 'decimal' END"
        )
    if mode == "fast":
        # FILTER, not CASE: SQLite then never calls the Python aggregate for integer rows
        return f"sum({alias}isum), dec_sum({alias}sum) FILTER (WHERE {alias}isum IS NULL)"
    return f"NULL, dec_sum({alias}sum)"


def exact_sum(isum: Any, rest: Any) -> Decimal | None:
    """The exact total of ``sum_columns`` (None when no row had a value)."""
    if isum is None and rest is None:
        return None
    total = _ZERO if rest is None else dec(rest)
    return _WIDE.add(total, int(isum)) if isum is not None else total


def range_totals(
    tx: Tx,
    meter: Meter,
    subject: str,
    ranges: Sequence[tuple[int, int]],
    keep: Callable[[str], bool] | None = None,
) -> list[Decimal]:
    """One subject's usage total per minute-aligned range, in one statement: COUNT meters the
    number of events, every other aggregation the sum of values. Each range is read through
    :func:`decompose`; ``keep`` (None = every group) filters groups by ``group_key``."""
    segments: dict[Grain, list[tuple[int, int, int]]] = {g: [] for g in GRAINS}
    for i, (lo, hi) in enumerate(ranges):
        for grain, a, b in decompose(lo, hi):
            segments[grain].append((i, a, b))
    totals = [_ZERO] * len(ranges)
    used = [(g, segs) for g, segs in segments.items() if segs]
    if not used:
        return totals
    count = meter.aggregation is Aggregation.COUNT

    def statement(mode: SumMode) -> tuple[str, list[Any]]:
        # one branch per (range, grain span): each an index range scan on both engines
        gk = "group_key" if keep is not None else "''"
        amounts = "NULL, NULL" if count else sum_columns(mode)
        tail = " GROUP BY group_key" if keep is not None else ""
        selects, params = [], []
        for grain, segs in used:
            col = grain.column
            for i, a, b in segs:
                selects.append(
                    f"SELECT {int(i)}, {gk}, sum(count), {amounts} FROM {grain.table} "
                    f"WHERE meter_id = ? AND subject = ? AND {col} >= ? AND {col} < ?{tail}"
                )
                params += [meter.id, subject, a, b]
        return " UNION ALL ".join(selects), params

    rows = execute_summing(tx, statement, rest=4)
    for r in rows:
        if keep is not None and not keep(r[1]):
            continue
        i = int(r[0])
        if count:
            totals[i] += int(r[2] or 0)
        else:
            totals[i] = _WIDE.add(totals[i], exact_sum(r[3], r[4]) or _ZERO)
    return totals
