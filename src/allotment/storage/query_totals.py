"""The totals lane of the meter query: SUM, COUNT and AVG read as plain tuples.

For these three aggregations a cell's value needs only the number of events and the exact
sum of their values, so the rollup rows are read as ``(subject, group_key, at, count,
total)`` tuples and added up without a :class:`~allotment.storage.usage_read.MinuteRow`
or an :class:`~allotment.storage.usage_fold.Accumulator` per row. Results are the same as
:func:`~allotment.storage.usage_read.read_usage` folded by
:func:`~allotment.storage.usage_fold.fold` (tests/storage/test_query_totals.py checks it on
random data); what changes is the cost of a query returning many rows.

When every fold bucket is at most one rollup row (per subject and group), the statement is a
plain select without ``GROUP BY`` and without an SQL aggregate, and integer totals stay
Python ``int`` until the cell's value is built. A query over every subject (no subject filter,
not grouped by subject) reads its whole hours and days from the per-meter rows
(``meter_rollup``): a few rows per hour and group however many subjects there are.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from allotment.domain.decimals import EXACT, plain
from allotment.domain.meters import Aggregation, Meter
from allotment.storage import meter_rollup
from allotment.storage.database import Tx, dec
from allotment.storage.usage_fold import AVG_CONTEXT
from allotment.storage.usage_grains import PARAMS_MAX, SPANS_MAX, plan_grains
from allotment.storage.usage_read import Bucketing, edge_rows, fold_sql, split_range, subject_clause
from allotment.storage.usage_sums import SumMode, exact_sum, execute_summing, sum_columns
from allotment.storage.usage_write import GRAINS, Grain

TOTAL_AGGREGATIONS = frozenset({Aggregation.SUM, Aggregation.COUNT, Aggregation.AVG})
"""The aggregations whose value is a function of (count, exact sum)."""

Amount = int | Decimal
TotalRow = tuple[str, str, int, int, Amount | None]
"""``(subject, group_key, at, count, total)``: the usage of one fold bucket (``at`` is the
first µs it covers; ``total`` None when no event carried a value)."""


def read_totals(
    tx: Tx,
    meter: Meter,
    from_us: int | None,
    to_us: int | None,
    subjects: Sequence[str] | None,
    bucketing: Bucketing,
    cuts: Sequence[int],
) -> list[TotalRow] | None:
    """:func:`~allotment.storage.usage_read.read_usage` with ``cuts`` for a SUM, COUNT or
    AVG meter, as :data:`TotalRow` tuples; None when the lane does not apply (another
    aggregation, or an open bound that no cut closes), and the caller reads rows instead."""
    if meter.aggregation not in TOTAL_AGGREGATIONS:
        return None
    if subjects is not None and not subjects:
        return []
    whole, edges = split_range(from_us, to_us)
    out: list[TotalRow] = []
    if whole is not None:
        lo = whole[0] if whole[0] is not None or not cuts else cuts[0]
        hi = whole[1] if whole[1] is not None or not cuts else cuts[-1]
        if lo is None or hi is None:
            return None
        if lo < hi:
            per_span = len(subjects or ()) + 5
            plan = plan_grains(lo, hi, cuts, min(SPANS_MAX, PARAMS_MAX // per_span))
            every_subject = subjects is None and not bucketing.by_subject
            for grain in GRAINS:
                spans = [(x, y) for g, x, y in plan if g is grain]
                if not spans:
                    continue
                if every_subject and grain.step in meter_rollup.TABLES:
                    # all subjects added up: the per-meter rows (a few per hour, not one per
                    # subject); the same totals, summed at fold time
                    out += meter_rollup.read_totals(tx, meter.id, grain.step, spans)
                else:
                    out += _grain_totals(tx, meter, subjects, bucketing, grain, spans)
    for a, z in edges:
        rows, _ = edge_rows(tx, meter, a, z, subjects)
        out += [(r.subject, r.group_key, r.minute, r.count, r.sum) for r in rows]
    return out


def _grain_totals(
    tx: Tx,
    meter: Meter,
    subjects: Sequence[str] | None,
    b: Bucketing,
    grain: Grain,
    spans: Sequence[tuple[int, int]],
) -> list[TotalRow]:
    col = grain.column
    subj_sql, subj_params = subject_clause(subjects)
    ranged = _ranged_column(tx, meter, grain, spans, subjects)
    where = f"FROM {grain.table} WHERE meter_id = ?{subj_sql} AND {ranged} >= ? AND {ranged} < ?"
    if b.by_subject and b.by_group and 0 < b.step <= grain.step:
        # A table row is unique per (subject, bucket, group) and its buckets are one grain
        # step (>= the fold step) apart, so no two rows share a fold bucket: nothing to fold.
        # The rows come back in TotalRow's shape; only a non-integer sum (TEXT on SQLite)
        # is converted (PostgreSQL answers NUMERIC, a Decimal, for every row).
        params = [v for lo, hi in spans for v in (meter.id, *subj_params, lo, hi)]
        branch = f"SELECT subject, group_key, {col}, count, coalesce(isum, sum) {where}"
        rows = tx.execute(" UNION ALL ".join([branch] * len(spans)), params)
        return [r if type(r[4]) is not str else (r[0], r[1], r[2], r[3], dec(r[4])) for r in rows]
    head, head_params, group_by = fold_sql(b, col)
    counting = meter.aggregation is Aggregation.COUNT

    def statement(mode: SumMode) -> tuple[str, list[Any]]:
        amounts = "NULL, NULL" if counting else sum_columns(mode)
        branch = f"SELECT {head}, min({col}), sum(count), {amounts} {where} GROUP BY {group_by}"
        params = [v for lo, hi in spans for v in (*head_params, meter.id, *subj_params, lo, hi)]
        return " UNION ALL ".join([branch] * len(spans)), params

    return [
        (r[0], r[1], int(r[3]), int(r[4]), _folded_total(r[5], r[6]))
        for r in execute_summing(tx, statement, rest=6)
    ]


WHOLE_SCAN_SHARE = 0.5
"""SQLite, no subject filter: when the spans cover at least this share of the meter's
bucket range, scan the meter's rows in primary-key order instead of the bucket index."""


def _ranged_column(
    tx: Tx,
    meter: Meter,
    grain: Grain,
    spans: Sequence[tuple[int, int]],
    subjects: Sequence[str] | None,
) -> str:
    """The bucket column as the range condition names it: ``+bucket`` tells SQLite not to
    use the ``(meter_id, bucket)`` index, whose rows it must then fetch one by one from the
    subject-ordered table (2 µs per row at 10 M events, against 1 µs per row for a scan of
    the meter's whole primary-key range). PostgreSQL plans this from its own statistics."""
    col = grain.column
    if tx.dialect != "sqlite" or subjects is not None:
        return col
    first, last = tx.execute(
        f"SELECT (SELECT min({col}) FROM {grain.table} WHERE meter_id = ?),"
        f" (SELECT max({col}) FROM {grain.table} WHERE meter_id = ?)",
        [meter.id, meter.id],
    )[0]
    if first is None:
        return col
    extent = (first, last + grain.step)
    covered = sum(max(0, min(hi, extent[1]) - max(lo, extent[0])) for lo, hi in spans)
    return f"+{col}" if covered >= WHOLE_SCAN_SHARE * (extent[1] - extent[0]) else col


def _folded_total(isum: Any, rest: Any) -> Amount | None:
    if rest is None:
        return None if isum is None else int(isum)
    return exact_sum(isum, rest)


def add(a: Amount, b: Amount) -> Amount:
    """Exact: ints add natively, anything with a Decimal keeps 60 significant digits."""
    if type(a) is int and type(b) is int:
        return a + b
    return EXACT.add(a, b)


Value = int | Decimal
"""A cell's value in plain form: an integer sum or count stays an ``int`` (it renders as the
same JSON number as its Decimal, and building 100 000 Decimals costs more than the fold)."""


def total_value(aggregation: Aggregation, count: int, total: Amount | None) -> Value | None:
    """A cell's value from its event count and exact sum, in plain form (None: the row is
    left out), as :meth:`~allotment.storage.usage_fold.Accumulator.value` answers it."""
    if aggregation is Aggregation.COUNT:
        return count if count else None
    if total is None:
        return None
    if aggregation is Aggregation.AVG:
        return plain(AVG_CONTEXT.divide(Decimal(total), Decimal(count))) if count else None
    return total if type(total) is int else plain(Decimal(total))


G = TypeVar("G", bound=Hashable)


def fold_totals(
    aggregation: Aggregation,
    rows: Iterable[TotalRow],
    window_of: Callable[[int], int | None],
    groups_of: Callable[[str], G],
    by_subject: bool,
) -> dict[tuple[int, str, G], Value]:
    """:func:`~allotment.storage.usage_fold.fold` for :data:`TotalRow` tuples, into cells
    keyed ``(window_of(at), subject or "", groups_of(group_key))`` (a None window skips the
    row); each distinct ``at`` and ``group_key`` is mapped once. Values in plain form
    (:data:`Value`).

    One number per cell (the common all-subjects query folds 90 000 rows into 90 000 cells:
    no per-cell list, no second pass unless a sum is a Decimal), plus, for AVG only, the
    cell's event count."""
    counting = aggregation is Aggregation.COUNT
    averaging = aggregation is Aggregation.AVG
    windows: dict[int, int | None] = {}
    groups: dict[str, G] = {}
    sums: dict[tuple[int, str, G], Amount] = {}
    counts: dict[tuple[int, str, G], int] = {}
    decimals = False
    for subject, gkey, at, count, total in rows:
        amount = count if counting else total
        if amount is None and not averaging:
            continue  # no event of the row carried a value: adds nothing, makes no cell
        i = windows.get(at, -1)
        if i == -1:
            i = windows[at] = window_of(at)
        if i is None:
            continue
        g = groups.get(gkey)
        if g is None:
            g = groups[gkey] = groups_of(gkey)
        key = (i, subject if by_subject else "", g)
        if averaging:  # every event counts, with a value or not
            counts[key] = counts.get(key, 0) + count
        if amount is None:
            continue  # (AVG only) counted above, no value to add
        have = sums.get(key)
        sums[key] = amount if have is None else add(have, amount)
        if type(amount) is not int:
            decimals = True
    if counting:
        return {key: n for key, n in sums.items() if n}
    if averaging:
        out: dict[tuple[int, str, G], Value] = {}
        for key, total in sums.items():
            value = total_value(aggregation, counts[key], total)
            if value is not None:
                out[key] = value
        return out
    if decimals:
        return {key: v if type(v) is int else plain(Decimal(v)) for key, v in sums.items()}
    return sums
