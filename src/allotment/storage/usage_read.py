"""Reads over the usage rollups (``usage_minute``, ``usage_unique``) and raw ``events``.

SQL selects and filters (meter, subjects, minute range); amounts come back as exact
Decimals through :func:`~allotment.storage.database.dec`. Group values are decoded from the
canonical ``group_key`` in Python (one decode per distinct key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from allotment.storage.database import Tx, dec_or_none


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One ``usage_minute`` row."""

    subject: str
    minute: int
    group_key: str
    count: int
    sum: Decimal | None
    min: Decimal | None
    max: Decimal | None
    latest_time: int | None
    latest_value: Decimal | None


@dataclass(frozen=True, slots=True)
class UniqueRow:
    """One ``usage_unique`` row: a distinct value seen in a minute."""

    subject: str
    minute: int
    group_key: str
    value: str


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One stored event (``event`` is the CloudEvent JSON text)."""

    subject: str
    time: int
    event: str


def _subject_clause(subjects: Sequence[str] | None) -> tuple[str, list[Any]]:
    if subjects is None:
        return "", []
    marks = ", ".join("?" for _ in subjects)
    return f" AND subject IN ({marks})", list(subjects)


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
    subj_sql, subj_params = _subject_clause(subjects)
    range_sql, range_params = _range_clause("minute", start_us, end_us)
    rows = tx.execute(
        "SELECT subject, minute, group_key, count, sum, min, max, latest_time, latest_value"
        " FROM usage_minute WHERE meter_id = ?" + subj_sql + range_sql,
        [meter_id, *subj_params, *range_params],
    )
    return [
        MinuteRow(
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
        for r in rows
    ]


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
    subj_sql, subj_params = _subject_clause(subjects)
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
    subj_sql, subj_params = _subject_clause(subjects)
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
    subj_sql, subj_params = _subject_clause(subjects)
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
