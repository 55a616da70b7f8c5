"""Per-meter rollups: every subject's usage of a meter added up per UTC hour and UTC day and
group (``usage_meter_hour`` / ``usage_meter_day``, migration 0850), which a meter query over
all subjects reads instead of the per-subject rollups.

Why: ``usage_hour`` / ``usage_day`` hold one row per subject, bucket and group. With many
subjects and few events per subject and day (10 k customers, 1 M events a month: about 3
events per subject and day), an all-subjects chart of 30 days read about one row per event —
0.6 s for a day of hours, 5–8 s for 30 days on SQLite. Here 30 days in 4 groups are 120 rows.

**Maintained by the fold itself.** ``usage_write.Folded.write`` calls :func:`write` with the
fold it has just upserted into the per-subject grains, in the same transaction: the per-meter
rows are the same cells with the subject dropped. So they inherit what the fold guarantees —
an event counts exactly once (the deferred fold records its events folded in that
transaction; a crash rolls both back), a late event lands in its own hour and day whenever it
arrives, and a reader that folds the tail first (``EventService.settle``) counts every event
stored before it. ``usage_write.delete_rollups`` calls :func:`delete`, and a backfill refills
these rows through the same ``Folded.write``.

**What they answer.** ``count``, the exact ``sum`` and its integer shadow ``isum`` (as in
``usage_hour``: ``isum IS NULL OR isum = sum``): what SUM, COUNT and AVG need
(``query_totals``, the totals lane). MIN, MAX, LATEST and UNIQUE_COUNT read the per-subject
rows as before. Minute rows (ragged range edges, MINUTE windows, window bounds off the hour)
are still per subject.

**Contention.** Every fold touching a meter's current hour upserts the same row; on
PostgreSQL two concurrent folds of one meter's hour wait for each other (rows are written in
one sorted order, after the per-subject grains, so they never deadlock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any, Protocol

from allotment.domain.decimals import EXACT
from allotment.storage import decimal_sql
from allotment.storage.database import Tx, dec

HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
TABLES = {HOUR_US: "usage_meter_hour", DAY_US: "usage_meter_day"}
"""The per-meter table of each grain step (µs)."""
ISUM_MAX = 2**53
"""As ``usage_write.ISUM_MAX``: the bound of the integer shadow ``isum``."""
_CHUNK = 400
_ARRAY_CHUNK = 10_000
_KEY = itemgetter(0)
"""Sort on the key alone: keys are unique, so comparing ``(key, cell)`` pairs only compares
every key twice."""


class Cell(Protocol):
    """What a per-subject rollup cell of ``usage_write`` carries that matters here."""

    @property
    def count(self) -> int: ...

    @property
    def sum(self) -> Decimal | None: ...


MeterCell = tuple[int, Decimal | None]
"""(events, exact sum or None when no event carried a value)"""
SubjectKey = tuple[str, str, int, str]
"""(meter id, subject, bucket start µs, group key): ``usage_write``'s cell key"""


def drop_subjects(
    cells: Mapping[tuple[str, str, int, str], Cell],
) -> dict[tuple[str, int, str], MeterCell]:
    """Per-subject cells keyed ``(meter, subject, bucket, group_key)`` added up per
    ``(meter, bucket, group_key)``, exactly (60 significant digits, like the fold)."""
    out: dict[tuple[str, int, str], MeterCell] = {}
    add = EXACT.add
    get = out.get
    for (meter_id, _subject, bucket, gkey), c in cells.items():
        key = (meter_id, bucket, gkey)
        have = get(key)
        if have is None:
            out[key] = (c.count, c.sum)
            continue
        total, more = have[1], c.sum
        if more is not None:
            total = more if total is None else add(total, more)
        out[key] = (have[0] + c.count, total)
    return out


def int_shadow(value: Decimal | None) -> int | None:
    """The ``isum`` of a sum: the integer when it is one within ``±ISUM_MAX``, else None."""
    # adjusted() > 15: |value| >= 10^16 > ISUM_MAX (and no huge int is ever built)
    if value is None or not value.is_finite() or value.adjusted() > 15:
        return None
    as_int = int(value)
    return as_int if -ISUM_MAX <= as_int <= ISUM_MAX and as_int == value else None


def _upsert_tail(table: str, dialect: str) -> str:
    add = (
        f"dec_add({table}.sum, excluded.sum)"
        if dialect == "postgresql"
        else decimal_sql.add_sql(f"{table}.sum", "excluded.sum", f"{table}.isum", "excluded.isum")
    )
    return (
        f" ON CONFLICT (meter_id, bucket, group_key) DO UPDATE SET "
        f"count = {table}.count + excluded.count, "
        f"sum = {add}, "
        # both sides within ±2^53, so the sum cannot overflow before it is checked
        f"isum = CASE WHEN {table}.isum IS NOT NULL AND excluded.isum IS NOT NULL "
        f"AND abs({table}.isum + excluded.isum) <= {ISUM_MAX} "
        f"THEN {table}.isum + excluded.isum END"
    )


def write(tx: Tx, by_step: Mapping[int, Mapping[SubjectKey, Cell]]) -> None:
    """Add per-subject hour and day cells (``{HOUR_US: cells, DAY_US: cells}``) to the
    per-meter rows, in the caller's transaction, each table's rows in sorted order."""
    for step, table in TABLES.items():
        cells = by_step.get(step)
        if not cells:
            continue
        rows = [
            (meter_id, bucket, gkey, count, total, int_shadow(total))
            for (meter_id, bucket, gkey), (count, total) in sorted(
                drop_subjects(cells).items(), key=_KEY
            )
        ]
        head = f"INSERT INTO {table} (meter_id, bucket, group_key, count, sum, isum) "
        if tx.dialect == "postgresql":
            for start in range(0, len(rows), _ARRAY_CHUNK):
                chunk = rows[start : start + _ARRAY_CHUNK]
                tx.execute(
                    head + "SELECT * FROM unnest(?::text[], ?::bigint[], ?::text[], "
                    "?::bigint[], ?::numeric[], ?::bigint[])" + _upsert_tail(table, tx.dialect),
                    [list(column) for column in zip(*chunk, strict=True)],
                )
            continue
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            tx.execute(
                head
                + "VALUES "
                + ",".join(["(?,?,?,?,?,?)"] * len(chunk))
                + _upsert_tail(table, tx.dialect),
                [v for row in chunk for v in row],
            )


def delete(tx: Tx, meter_id: str) -> None:
    """Forget a meter's per-meter rows (with its other rollups, before a rebuild)."""
    for table in TABLES.values():
        tx.execute(f"DELETE FROM {table} WHERE meter_id = ?", (meter_id,))


def read_totals(
    tx: Tx, meter_id: str, step: int, spans: Sequence[tuple[int, int]]
) -> list[tuple[str, str, int, int, Any]]:
    """Every per-meter row of the ``step`` grain with a bucket in one of the disjoint
    ``spans``, in ``query_totals.TotalRow``'s shape with an empty subject: ``("", group_key,
    bucket, count, total)``, ``total`` the exact sum (None when no event had a value; an
    ``int`` when SQLite answers the integer shadow). One primary-key range scan per span."""
    if not spans:
        return []
    table = TABLES[step]
    branch = (
        f"SELECT '', group_key, bucket, count, coalesce(isum, sum) FROM {table} "
        "WHERE meter_id = ? AND bucket >= ? AND bucket < ?"
    )
    params = [v for lo, hi in spans for v in (meter_id, lo, hi)]
    rows = tx.execute(" UNION ALL ".join([branch] * len(spans)), params)
    # a non-integer sum is TEXT on SQLite (PostgreSQL answers NUMERIC, a Decimal, for all)
    return [r if type(r[4]) is not str else (r[0], r[1], r[2], r[3], dec(r[4])) for r in rows]
