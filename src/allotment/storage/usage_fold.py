"""Folding usage rows into a meter's values in Python: one :class:`Accumulator` per (window,
subject, groups) cell, answering the meter's aggregation exactly (AVG rounded once, to 34
significant digits). The meter query's general lane uses it; ``query_totals`` is the
faster lane for SUM, COUNT and AVG and must agree with it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TypeVar

from allotment.domain.meters import Aggregation
from allotment.storage.usage_read import MinuteRow, UniqueRow
from allotment.storage.usage_sums import WIDE

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
            self.sum = r.sum if self.sum is None else WIDE.add(self.sum, r.sum)
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
