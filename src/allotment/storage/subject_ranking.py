"""The subjects of a meter's chart grouped by subject: a page of them in key order
(:func:`subjects_after`, the console's default), or the largest by usage, ranked in SQL
(:func:`top_subjects`, the console's ``order=usage``).

Key order walks the primary key ``(meter_id, subject, bucket, …)`` of ``usage_day`` one
subject at a time (a recursive CTE: each step one index seek to the next subject, one to see
whether it has a row in the UTC days around the range, and only then a seek per grain of the
range's plan — whole days, hours, minutes at the edges — to see whether it has one in the
range itself), so a page costs a few seeks per subject passed, never a read of the
range's rows: the worst case, few of many subjects active in the range, passes every subject
of the meter (10 k subjects: tens of ms).

The ranking:

The console's chart grouped by subject draws 8 subjects and lists 50; at 10 k subjects the
meter query itself would build a row per subject and window (30 days by day: ≈ 300 000 rows,
seconds). Here the database adds up each subject's rows of the coarsest grains covering the
range (``usage_grains.plan_grains``: whole UTC days, hours, minutes at the edges) and returns
only the first ``limit`` subjects by total — then the caller queries those subjects alone.

Exact or nothing: PostgreSQL sums NUMERIC exactly. SQLite sums the integer shadow ``isum``
natively; when any row in the range holds a sum that is not one (``isum IS NULL``), the
native ranking could be wrong, so :func:`top_subjects` answers None and the caller takes the
plain path.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from allotment.domain.meters import Aggregation, Meter
from allotment.storage.database import Tx, dec
from allotment.storage.usage_grains import ceil_to, plan_grains
from allotment.storage.usage_write import DAY_GRAIN

RANKED = frozenset({Aggregation.SUM, Aggregation.COUNT})


def subjects_after(tx: Tx, meter: Meter, lo: int, hi: int, after: str, limit: int) -> list[str]:
    """The first ``limit`` subjects after ``after`` (in the database's order of the key:
    code points on SQLite, the database collation on PostgreSQL) with usage of the meter in
    minute-aligned ``[lo, hi)`` (see the module docstring)."""
    exists, params = _per_grain(
        meter, lo, hi, "EXISTS (SELECT 1 FROM {table} WHERE meter_id = ? AND subject = s.k "
        "AND {column} >= ? AND {column} < ?)",
    )  # fmt: skip
    if not exists:
        return []
    day = DAY_GRAIN  # every grain holds every subject; a day's rows are the fewest
    days = (lo - lo % day.step, ceil_to(hi, day.step))  # a first, cheap test: the days around
    rows = tx.execute(
        f"WITH RECURSIVE s(k) AS ("
        f"SELECT min(subject) FROM {day.table} WHERE meter_id = ? AND subject > ? "
        f"UNION ALL SELECT (SELECT min(subject) FROM {day.table} "
        f"WHERE meter_id = ? AND subject > s.k) FROM s WHERE s.k IS NOT NULL) "
        f"SELECT k FROM s WHERE k IS NOT NULL AND EXISTS (SELECT 1 FROM {day.table} "
        f"WHERE meter_id = ? AND subject = s.k AND {day.column} >= ? AND {day.column} < ?) "
        f"AND ({' OR '.join(exists)}) LIMIT ?",
        [meter.id, after, meter.id, meter.id, *days, *params, limit],
    )
    return [str(r[0]) for r in rows]


def top_subjects(
    tx: Tx, meter: Meter, lo: int, hi: int, limit: int
) -> tuple[list[tuple[str, int | Decimal]], int] | None:
    """``(the first limit (subject, total), how many subjects have a total)`` over
    minute-aligned ``[lo, hi)``, ordered by total (largest first) then subject (code point
    order); a subject of a SUM meter none of whose events carried a value has no total. None
    when it cannot be ranked exactly in SQL (see the module docstring), or for another
    aggregation."""
    if meter.aggregation not in RANKED:
        return None
    branches, params = _per_grain(
        meter, lo, hi, "SELECT subject, count, isum, sum FROM {table} "
        "WHERE meter_id = ? AND {column} >= ? AND {column} < ?",
    )  # fmt: skip
    if not branches:
        return [], 0
    pg = tx.dialect == "postgresql"
    if meter.aggregation is Aggregation.COUNT:
        total, flagged = "sum(count)", "0"
    elif pg:
        total, flagged = "sum(sum)", "0"
    else:
        total = "sum(isum)"
        flagged = "sum(count(*) FILTER (WHERE isum IS NULL AND sum IS NOT NULL)) OVER ()"
    counting = meter.aggregation is Aggregation.COUNT
    having = "" if counting else " HAVING count(sum) > 0"  # some event carried a value
    collate = ' COLLATE "C"' if pg else ""
    try:
        rows = tx.execute(
            f"SELECT subject, {total} AS total, {flagged}, count(*) OVER () "
            f"FROM ({' UNION ALL '.join(branches)}) AS r GROUP BY subject{having} "
            f"ORDER BY total DESC, subject{collate} LIMIT ?",
            [*params, limit],
        )
    except sqlite3.OperationalError as exc:
        if "integer overflow" in str(exc).lower():
            return None  # SQLite's native sum overflowed: not exact
        raise
    if not rows:
        return [], 0
    if any(r[2] for r in rows):
        return None  # SQLite: a decimal sum in the range; native integer sums cannot rank it
    top = [(str(r[0]), int(r[1]) if counting else _amount(r[1])) for r in rows]
    return top, int(rows[0][3])


def _per_grain(meter: Meter, lo: int, hi: int, sql: str) -> tuple[list[str], list[object]]:
    """``sql`` for each rollup grain covering ``[lo, hi)`` (``{table}``, ``{column}``), and
    its parameters (the meter, the grain's range)."""
    clauses: list[str] = []
    params: list[object] = []
    for grain, x, y in plan_grains(lo, hi, []):
        clauses.append(sql.format(table=grain.table, column=grain.column))
        params += [meter.id, x, y]
    return clauses, params


def _amount(value: object) -> int | Decimal:
    return value if type(value) is int else dec(value)
