"""The meter query's reads over the usage rollups (``usage_minute``, ``usage_unique``, the
hour and day grains) and raw ``events``.

SQL selects and filters (meter, subjects, minute range), folding in SQL per
:class:`Bucketing` where it may; a ``from``/``to`` inside a minute is read from the raw
events at that edge (:func:`split_range`, :func:`edge_rows`). Amounts come back as exact
Decimals through :func:`~allotment.storage.database.dec`. Group values are decoded from the
canonical ``group_key`` in Python (one decode per distinct key).

Neighbours: ``usage_grains`` (which rollup rows cover a range), ``usage_sums`` (exact sums
in SQL), ``usage_fold`` (rows into values), ``query_totals`` (the SUM/COUNT/AVG lane) and
``subject_usage`` (one subject's usage, for the entitlement engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from allotment.domain.json_bounds import exact_decimal
from allotment.domain.meters import Aggregation, Meter, extract, group_key
from allotment.domain.timeutil import floor_minute_us, to_micros
from allotment.storage.database import Tx, dec_or_none
from allotment.storage.usage_grains import PARAMS_MAX, SPANS_MAX, Segment, plan_grains
from allotment.storage.usage_sums import SumMode, exact_sum, execute_summing, sum_columns
from allotment.storage.usage_write import GRAINS, MINUTE_GRAIN, Grain

_US_PER_MINUTE = 60_000_000


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


_decode_event = msgspec.json.Decoder(float_hook=exact_decimal)


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
