"""Which rollup rows cover a time range: whole UTC days from ``usage_day``, whole hours from
``usage_hour``, minutes at the ragged edges (:func:`decompose`), and, for a meter query's
windows, the plan that never lets a row straddle a window bound (:func:`plan_grains`).

Pure arithmetic on microseconds; the tables and steps are ``usage_write``'s grains.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from allotment.domain.errors import check
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

Segment = tuple[Grain, int, int]
"""Rows of one grain table with ``lo <= bucket < hi`` (both multiples of the grain's step)."""


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


def ceil_to(us: int, step: int) -> int:
    return -(-us // step) * step


def floor_to(us: int, step: int) -> int:
    return us - us % step


def decompose(lo: int, hi: int) -> list[Segment]:
    """Minute-aligned ``[lo, hi)`` as the fewest rollup rows: whole UTC days from
    ``usage_day``, whole hours from ``usage_hour``, minutes at the ragged edges."""
    check(lo % MINUTE_US == 0 and hi % MINUTE_US == 0, "decompose: range not minute-aligned")
    if lo >= hi:
        return []
    h_lo, h_hi = ceil_to(lo, HOUR_US), floor_to(hi, HOUR_US)
    if h_lo >= h_hi:
        return [(MINUTE_GRAIN, lo, hi)]
    out: list[Segment] = []
    d_lo, d_hi = ceil_to(h_lo, DAY_US), floor_to(h_hi, DAY_US)
    if d_lo >= d_hi:
        out.append((HOUR_GRAIN, h_lo, h_hi))
    else:
        out += [(HOUR_GRAIN, h_lo, d_lo), (DAY_GRAIN, d_lo, d_hi), (HOUR_GRAIN, d_hi, h_hi)]
    out += [(MINUTE_GRAIN, lo, h_lo), (MINUTE_GRAIN, h_hi, hi)]
    return [s for s in out if s[1] < s[2]]
