"""One subject's usage of one meter, for the entitlement engine: the minute series
(:func:`series_minutes`, :func:`series_uniques`), the group keys it touched, and usage totals
over many ranges in one statement (:func:`range_totals`, read from the coarsest rollups).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from allotment.domain.meters import Aggregation, Meter
from allotment.storage.database import Tx, dec_or_none
from allotment.storage.usage_grains import decompose, floor_to
from allotment.storage.usage_sums import WIDE, SumMode, exact_sum, execute_summing, sum_columns
from allotment.storage.usage_write import DAY_US, GRAINS, Grain

_ZERO = Decimal(0)

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
        table, column, lo = "usage_day", "bucket", floor_to(lo, DAY_US)
    rows = tx.execute(
        f"SELECT DISTINCT group_key FROM {table} WHERE meter_id = ? AND subject = ?"
        f" AND {column} >= ? AND {column} < ?",
        [meter.id, subject, lo, hi],
    )
    return [r[0] for r in rows]


_BRANCHES_PER_STATEMENT = 400
"""``UNION ALL`` branches of one statement: SQLite refuses a compound SELECT of more than 500
(SQLITE_MAX_COMPOUND_SELECT); a read of many usage periods runs as several statements."""
Query = tuple[str, list[Any]]


def range_totals(
    tx: Tx,
    meter: Meter,
    subject: str,
    ranges: Sequence[tuple[int, int]],
    keep: Callable[[str], bool] | None = None,
) -> list[Decimal]:
    """One subject's usage total per minute-aligned range, in one statement per 400 branches
    (``_BRANCHES_PER_STATEMENT``): COUNT meters the
    number of events, every other aggregation the sum of values. Each range is read through
    :func:`decompose`; ``keep`` (None = every group) filters groups by ``group_key``."""
    segments: dict[Grain, list[tuple[int, int, int]]] = {g: [] for g in GRAINS}
    for i, (lo, hi) in enumerate(ranges):
        for grain, a, b in decompose(lo, hi):
            segments[grain].append((i, a, b))
    totals = [_ZERO] * len(ranges)
    branches = [(grain, *seg) for grain, segs in segments.items() for seg in segs]
    if not branches:
        return totals
    count = meter.aggregation is Aggregation.COUNT

    def statement(chunk: Sequence[tuple[Grain, int, int, int]], mode: SumMode) -> Query:
        # one branch per (range, grain span): each an index range scan on both engines
        gk = "group_key" if keep is not None else "''"
        amounts = "NULL, NULL" if count else sum_columns(mode)
        tail = " GROUP BY group_key" if keep is not None else ""
        selects, params = [], []
        for grain, i, a, b in chunk:
            col = grain.column
            selects.append(
                f"SELECT {int(i)}, {gk}, sum(count), {amounts} FROM {grain.table} "
                f"WHERE meter_id = ? AND subject = ? AND {col} >= ? AND {col} < ?{tail}"
            )
            params += [meter.id, subject, a, b]
        return " UNION ALL ".join(selects), params

    for start in range(0, len(branches), _BRANCHES_PER_STATEMENT):
        chunk = branches[start : start + _BRANCHES_PER_STATEMENT]
        rows = execute_summing(tx, functools.partial(statement, chunk), rest=4)
        for r in rows:
            if keep is not None and not keep(r[1]):
                continue
            i = int(r[0])
            if count:
                totals[i] += int(r[2] or 0)
            else:
                totals[i] = WIDE.add(totals[i], exact_sum(r[3], r[4]) or _ZERO)
    return totals
