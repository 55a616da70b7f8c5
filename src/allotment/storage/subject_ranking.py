"""The subjects with the largest usage of a SUM or COUNT meter over a range, ranked in SQL.

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
from allotment.storage.usage_grains import plan_grains

RANKED = frozenset({Aggregation.SUM, Aggregation.COUNT})


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
    branches: list[str] = []
    params: list[object] = []
    for grain, x, y in plan_grains(lo, hi, []):
        branches.append(
            f"SELECT subject, count, isum, sum FROM {grain.table} "
            f"WHERE meter_id = ? AND {grain.column} >= ? AND {grain.column} < ?"
        )
        params += [meter.id, x, y]
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


def _amount(value: object) -> int | Decimal:
    return value if type(value) is int else dec(value)
